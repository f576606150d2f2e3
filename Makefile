# cerebras-proxy: a FastCGI proxy for the Cerebras chat-completions API.
#
#   make            build build/cerebras-proxy
#   make run        build, start Redis + nginx + workers on http://localhost:8000/
#   make status     the keys, budgets and scheduler of that stack (JSON=1: as JSON)
#   make test       unit tests, then integration tests against real Redis and nginx
#   make asan       the same build under AddressSanitizer/UBSan (build-asan/)
#   make tsan       the binary under ThreadSanitizer (build-tsan/)
#   make fuzz       libFuzzer targets (clang, build-fuzz/), each run for
#                   FUZZ_SECONDS (default 60) from tests/fuzz/corpus/
#   make fuzz-regress  replay the fuzz seeds and regression inputs, once each
#   make test-asan  the nginx integration suite against the asan binary,
#                   failing on any AddressSanitizer/UBSan report
#   make test-multihost  three hosts in network namespaces sharing one Redis (root)
#   make bench      benchmarks against direct HTTPS and nginx proxy_pass (build/bench/)
#   make clean
#
# Project flags are added to the user's CFLAGS, never replace them.
# WERROR=0 turns warnings back into warnings.

CC       ?= cc
CFLAGS   ?= -O2 -g
WERROR   ?= 1
PKG_CONFIG ?= pkg-config
BUILD    ?= build

WARN := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
        -Wwrite-strings -Wformat=2 -Wno-format-nonliteral
ifeq ($(WERROR),1)
WARN += -Werror
endif

# pkg-config when it knows the library, a plain -l otherwise.
pc_cflags = $(shell $(PKG_CONFIG) --cflags $(1) 2>/dev/null)
pc_libs   = $(or $(shell $(PKG_CONFIG) --libs $(1) 2>/dev/null),$(2))

DEP_CFLAGS := $(call pc_cflags,libcurl) $(call pc_cflags,hiredis) $(call pc_cflags,libssl) \
              $(call pc_cflags,jansson)
DEP_LIBS   := $(call pc_libs,libcurl,-lcurl) $(call pc_libs,hiredis,-lhiredis) \
              $(call pc_libs,libssl,-lssl) $(call pc_libs,libcrypto,-lcrypto) \
              $(call pc_libs,jansson,-ljansson) -lfcgi -pthread

ALL_CFLAGS := -std=c11 -D_GNU_SOURCE $(WARN) -MMD -MP -iquote shared $(DEP_CFLAGS) $(CFLAGS)
ALL_LDFLAGS := $(LDFLAGS)

# The Lua scripts (shared/lua/*.lua) are compiled in as C strings.
LUA_SRC    := $(wildcard shared/lua/*.lua)
LUA_C      := $(BUILD)/gen/lua_scripts.c
SHARED_SRC := $(wildcard shared/*.c)
SHARED_OBJ := $(SHARED_SRC:%.c=$(BUILD)/%.o) $(LUA_C:.c=.o)
FCGI_SRC   := $(wildcard fcgi/*.c)
FCGI_OBJ   := $(FCGI_SRC:%.c=$(BUILD)/%.o)
UNIT_SRC   := $(wildcard tests/unit/test_*.c)
UNIT_BIN   := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)

BIN := $(BUILD)/cerebras-proxy

.PHONY: all run status test unit asan tsan deps test-deps clean format check-format \
        test-multihost bench fuzz fuzz-build fuzz-regress test-asan asan-bin
all: $(BIN)

$(BIN): $(FCGI_OBJ) $(SHARED_OBJ)
	$(CC) $(ALL_CFLAGS) -o $@ $(filter %.o,$^) $(ALL_LDFLAGS) $(DEP_LIBS)

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -c -o $@ $<

$(LUA_C): $(LUA_SRC) shared/lua/embed.sh
	@mkdir -p $(dir $@)
	sh shared/lua/embed.sh $(LUA_SRC) > $@.tmp && mv $@.tmp $@

$(LUA_C:.c=.o): $(LUA_C)
	$(CC) $(ALL_CFLAGS) -c -o $@ $<

$(BUILD)/tests/%: tests/unit/%.c $(SHARED_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -o $@ $(filter %.c %.o,$^) $(ALL_LDFLAGS) $(DEP_LIBS) -lcmocka

# Installs missing Debian packages when run as root; otherwise prints the command.
deps:
	@sh deploy/deps.sh

test-deps:
	@sh deploy/deps.sh test

run: deps
	@$(MAKE) --no-print-directory all
	@python3 deploy/stack.py run $(BIN)

# `cerebras-proxy status` against the stack `make run` started on PORT
# (default 8000); JSON=1 for --json.
status: all
	@python3 deploy/stack.py status $(BIN) $(if $(filter 1,$(JSON)),--json)

unit: $(UNIT_BIN)
	@bash tests/run-unit.sh $(UNIT_BIN)

# The whole suite: unit tests, then the integration suite (real redis-server,
# real nginx, worker processes, mock HTTPS upstream). One summary line at the end.
test: test-deps
	@$(MAKE) --no-print-directory all $(UNIT_BIN)
	@$(MAKE) --no-print-directory tsan
	@$(MAKE) --no-print-directory asan-bin
	@if command -v $(FUZZ_CC) >/dev/null; then $(MAKE) --no-print-directory fuzz-build; \
	 else echo "$(FUZZ_CC) is not installed: the fuzz targets are not built nor run"; fi
	@if command -v clang-format >/dev/null; then $(MAKE) --no-print-directory check-format; \
	 else echo "clang-format is not installed: code style not checked"; fi
	@TSAN_BIN=build-tsan/cerebras-proxy ASAN_BIN=build-asan/cerebras-proxy \
	    FUZZ_BUILD=build-fuzz FUZZ_TARGETS="$(FUZZ_TARGETS)" \
	    bash tests/run-all.sh $(BIN) $(UNIT_BIN)

test-multihost: test-deps
	@$(MAKE) --no-print-directory all
	@python3 tests/multihost/run.py $(BIN)

bench: test-deps
	@$(MAKE) --no-print-directory all
	@python3 deploy/bench $(BIN) $(BUILD)/bench

ASAN_CFLAGS := -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
asan:
	@$(MAKE) --no-print-directory BUILD=build-asan CFLAGS="$(ASAN_CFLAGS)" \
	    LDFLAGS="-fsanitize=address,undefined" all $(UNIT_SRC:tests/unit/%.c=build-asan/tests/%)

# The binary alone (what make test and test-asan need).
asan-bin:
	@$(MAKE) --no-print-directory BUILD=build-asan CFLAGS="$(ASAN_CFLAGS)" \
	    LDFLAGS="-fsanitize=address,undefined" all

# ThreadSanitizer build of the binary (build-tsan/), for the threaded mode:
#   CEREBRAS_PROXY_BIN=build-tsan/cerebras-proxy TSAN_OPTIONS=log_path=/tmp/tsan \
#     python3 tests/integration/run.py test_scheduling.TestThreads test_lifecycle.TestDrain
tsan:
	@$(MAKE) --no-print-directory BUILD=build-tsan \
	    CFLAGS="-O1 -g -fsanitize=thread" LDFLAGS="-fsanitize=thread" all

# libFuzzer targets (tests/fuzz/fuzz_*.c), one per parser that sees outside
# input, linked with shared/*.c built by clang with the same sanitizers
# into build-fuzz/. clang's libFuzzer is in libclang-rt-14-dev on Debian 12.
#   make fuzz [FUZZ_SECONDS=60]   fuzz each target in turn
#   make fuzz-regress             replay seeds and regressions only
#   build-fuzz/fuzz/fuzz_usage INPUT   replay one input
FUZZ_CC      ?= clang
FUZZ_SECONDS ?= 60
FUZZ_TARGETS := $(patsubst tests/fuzz/%.c,%,$(wildcard tests/fuzz/fuzz_*.c))
FUZZ_SAN     := -fsanitize=address,undefined -fno-sanitize-recover=undefined \
                -fno-omit-frame-pointer

fuzz-build:
	@$(MAKE) --no-print-directory BUILD=build-fuzz CC=$(FUZZ_CC) \
	    CFLAGS="-O1 -g $(FUZZ_SAN) -fsanitize=fuzzer-no-link" \
	    LDFLAGS="$(FUZZ_SAN) -fsanitize=fuzzer" $(FUZZ_TARGETS:%=build-fuzz/fuzz/%)

fuzz: fuzz-build
	@FUZZ_SECONDS=$(FUZZ_SECONDS) bash tests/fuzz/run.sh build-fuzz $(FUZZ_TARGETS)

fuzz-regress: fuzz-build
	@FUZZ_SECONDS=0 bash tests/fuzz/run.sh build-fuzz $(FUZZ_TARGETS)

$(BUILD)/fuzz/%: tests/fuzz/%.c $(SHARED_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -iquote tests/fuzz -o $@ $(filter %.c %.o,$^) $(ALL_LDFLAGS) $(DEP_LIBS)

-include $(FUZZ_TARGETS:%=$(BUILD)/fuzz/%.d)

# The nginx integration suite against the AddressSanitizer/UBSan binary
# (make asan); fails if a sanitizer wrote any report (tests/run-asan.sh).
test-asan: test-deps asan-bin
	@bash tests/run-asan.sh build-asan/cerebras-proxy

format:
	clang-format -i fcgi/*.c shared/*.c shared/*.h tests/unit/*.c tests/unit/*.h \
	    tests/fuzz/*.c tests/fuzz/*.h

check-format:
	@clang-format --dry-run --Werror fcgi/*.c shared/*.c shared/*.h tests/unit/*.c tests/unit/*.h \
	    tests/fuzz/*.c tests/fuzz/*.h

clean:
	rm -rf build build-asan build-tsan build-fuzz

-include $(SHARED_OBJ:.o=.d) $(FCGI_OBJ:.o=.d) $(UNIT_BIN:=.d)

# -- install / uninstall ------------------------------------------------------
#   make install [PREFIX=/usr/local] [SYSCONFDIR=/etc] [DESTDIR=staging dir]
# installs the binary, the systemd units (with @BINDIR@/@SYSCONFDIR@ filled
# in), the example configurations, and SYSCONFDIR/cerebras-proxy/env (mode
# 0600, from deploy/cerebras-proxy.env.example) only if it does not exist yet.
# systemd looks for units in /usr/local/lib/systemd/system and
# /usr/lib/systemd/system, hence UNITDIR. `make uninstall` removes what
# install put, except the env file (it holds the API keys).
PREFIX     ?= /usr/local
BINDIR     ?= $(PREFIX)/bin
SYSCONFDIR ?= /etc
DOCDIR     ?= $(PREFIX)/share/doc/cerebras-proxy
UNITDIR    ?= $(PREFIX)/lib/systemd/system
DESTDIR    ?=

UNITS := cerebras-proxy.socket cerebras-proxy.service cerebras-proxy-listen.service
DOCS  := nginx.conf.example apache.conf.example deploy/cerebras-proxy.env.example
ENVFILE = $(DESTDIR)$(SYSCONFDIR)/cerebras-proxy/env

.PHONY: install uninstall
install: $(BIN)
	install -D -m 0755 $(BIN) "$(DESTDIR)$(BINDIR)/cerebras-proxy"
	install -d -m 0755 "$(DESTDIR)$(UNITDIR)"
	@set -e; for u in $(UNITS); do \
	    dst="$(DESTDIR)$(UNITDIR)/$$u"; \
	    echo "render deploy/systemd/$$u -> $$dst"; \
	    sed -e 's|@BINDIR@|$(BINDIR)|g' -e 's|@SYSCONFDIR@|$(SYSCONFDIR)|g' \
	        "deploy/systemd/$$u" > "$$dst.tmp"; \
	    if grep -n '@[A-Za-z_]*@' "$$dst.tmp"; then \
	        echo "$$u: placeholder left unsubstituted" >&2; rm -f "$$dst.tmp"; exit 1; fi; \
	    install -m 0644 "$$dst.tmp" "$$dst"; rm -f "$$dst.tmp"; \
	done
	install -d -m 0755 "$(DESTDIR)$(DOCDIR)"
	@set -e; for f in $(DOCS); do \
	    if [ -f "$$f" ]; then install -m 0644 "$$f" "$(DESTDIR)$(DOCDIR)/"; \
	        echo "install $$f -> $(DESTDIR)$(DOCDIR)/"; fi; \
	done
	@if [ -e "$(ENVFILE)" ]; then \
	    echo "keeping existing $(ENVFILE)"; \
	else \
	    install -D -m 0600 deploy/cerebras-proxy.env.example "$(ENVFILE)" && \
	    echo "created $(ENVFILE) (mode 0600): put CEREBRAS_API_KEYS in it"; \
	fi

uninstall:
	rm -f "$(DESTDIR)$(BINDIR)/cerebras-proxy"
	rm -f $(foreach u,$(UNITS),"$(DESTDIR)$(UNITDIR)/$(u)")
	rm -f $(foreach f,$(notdir $(DOCS)),"$(DESTDIR)$(DOCDIR)/$(f)")
	rmdir "$(DESTDIR)$(DOCDIR)" 2>/dev/null || true
	@if [ -e "$(ENVFILE)" ]; then echo "kept $(ENVFILE) (remove it yourself: it holds the API keys)"; fi
