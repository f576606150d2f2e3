# cerebras-proxy: a FastCGI proxy for the Cerebras chat-completions API.
#
#   make            build build/cerebras-proxy
#   make run        build, start Redis + nginx + workers on http://localhost:8000/
#   make test       unit tests, then integration tests against real Redis and nginx
#   make asan       the same build under AddressSanitizer/UBSan (build-asan/)
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

DEP_CFLAGS := $(call pc_cflags,libcurl) $(call pc_cflags,hiredis)
DEP_LIBS   := $(call pc_libs,libcurl,-lcurl) $(call pc_libs,hiredis,-lhiredis) -lfcgi

ALL_CFLAGS := -std=c11 -D_GNU_SOURCE $(WARN) -MMD -MP -Ishared $(DEP_CFLAGS) $(CFLAGS)
ALL_LDFLAGS := $(LDFLAGS)

SHARED_SRC := $(wildcard shared/*.c)
SHARED_OBJ := $(SHARED_SRC:%.c=$(BUILD)/%.o)
FCGI_OBJ   := $(BUILD)/fcgi/main.o
UNIT_SRC   := $(wildcard tests/unit/test_*.c)
UNIT_BIN   := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)

BIN := $(BUILD)/cerebras-proxy

.PHONY: all run test unit asan deps test-deps clean format check-format
all: $(BIN)

$(BIN): $(FCGI_OBJ) $(SHARED_OBJ)
	$(CC) $(ALL_CFLAGS) -o $@ $(filter %.o,$^) $(ALL_LDFLAGS) $(DEP_LIBS)

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
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

unit: $(UNIT_BIN)
	@bash tests/run-unit.sh $(UNIT_BIN)

# The whole suite: unit tests, then the integration suite (real redis-server,
# real nginx, worker processes, mock HTTPS upstream). One summary line at the end.
test: test-deps
	@$(MAKE) --no-print-directory all $(UNIT_BIN)
	@if command -v clang-format >/dev/null; then $(MAKE) --no-print-directory check-format; \
	 else echo "clang-format is not installed: code style not checked"; fi
	@bash tests/run-all.sh $(BIN) $(UNIT_BIN)

asan:
	@$(MAKE) --no-print-directory BUILD=build-asan \
	    CFLAGS="-O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined" \
	    LDFLAGS="-fsanitize=address,undefined" all $(UNIT_SRC:tests/unit/%.c=build-asan/tests/%)

format:
	clang-format -i fcgi/*.c shared/*.c shared/*.h tests/unit/*.c tests/unit/*.h

check-format:
	@clang-format --dry-run --Werror fcgi/*.c shared/*.c shared/*.h tests/unit/*.c tests/unit/*.h

clean:
	rm -rf build build-asan

-include $(SHARED_OBJ:.o=.d) $(FCGI_OBJ:.o=.d) $(UNIT_BIN:=.d)
