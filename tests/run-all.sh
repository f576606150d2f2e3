#!/bin/bash
# The whole suite (`make test`): unit tests, then the scheduler's Lua
# scripts run directly on a real redis-server, then the integration tests
# behind real nginx, then the proxy's integration tests again behind real
# Apache with mod_fcgid, then once more behind nginx with threaded workers
# (WORKER_THREADS=3), then three hosts in network namespaces sharing one
# Redis (skipped, and said so, without root); with TSAN_BIN, the thread
# pool's tests under ThreadSanitizer before the hosts. Last, with ASAN_BIN,
# the nginx integration suite under AddressSanitizer+UBSan
# (tests/run-asan.sh), and with FUZZ_BUILD and FUZZ_TARGETS each libFuzzer
# target briefly (FUZZ_CI_SECONDS, 6 s each), its seeds and regression
# inputs first (tests/fuzz/run.sh).
# Ends with one line "Total: N passed, N failed".
# Usage: tests/run-all.sh PROXY_BINARY UNIT_TEST_BINARY...
set -u
bin=$1
shift
here=$(cd "$(dirname "$0")" && pwd)
log=$(mktemp)
# The proxy's own test modules (tests/integration/harness.py), which the
# Apache and threaded passes run again: all but test_deploy, test_pool (its
# own ThreadSanitizer pass), test_supervisor, test_logs and test_hardening (behind
# nginx only: the key echo and log escaping do not depend on the server,
# and 150 queued requests would need 150 mod_fcgid processes); client
# access runs behind Apache too (Authorization reaches mod_fcgid workers
# only with CGIPassAuth).
# The threaded pass leaves out test_metrics (its classes set 3 threads per
# process themselves) and test_health (readiness reads the shared state,
# whatever the thread count).
threads_tests="test_http test_scheduling test_failures test_lifecycle test_budgets test_front test_endpoints"
proxy_tests="$threads_tests test_metrics test_health"
apache_tests="$proxy_tests test_access"
trap 'rm -f "$log"' EXIT
start=$(date +%s)

echo "== unit tests"
bash "$here/run-unit.sh" "$@" 2>&1 | tee -a "$log"
unit_rc=${PIPESTATUS[0]}

echo "== the Lua scripts (shared/lua/) on a real redis-server"
python3 "$here/redis/run.py" 2>&1 | tee -a "$log"
redis_rc=${PIPESTATUS[0]}

echo "== the mock upstream's emulation of Cerebras' rate limits (tests/mock_limits_check.py)"
python3 "$here/mock_limits_check.py" 2>&1 | tee -a "$log"
mock_rc=${PIPESTATUS[0]}

echo "== integration tests behind nginx (redis-server, workers, mock HTTPS upstream)"
CEREBRAS_PROXY_BIN="$bin" PROXY_SERVER=nginx python3 "$here/integration/run.py" 2>&1 | tee -a "$log"
int_rc=${PIPESTATUS[0]}

echo "== integration tests behind Apache + mod_fcgid"
CEREBRAS_PROXY_BIN="$bin" PROXY_SERVER=apache python3 "$here/integration/run.py" $apache_tests 2>&1 | tee -a "$log"
apache_rc=${PIPESTATUS[0]}

echo "== the proxy's integration tests again behind nginx, 3 threads per worker process"
WORKER_THREADS=3 RUN_LABEL="nginx, threads" CEREBRAS_PROXY_BIN="$bin" PROXY_SERVER=nginx \
	python3 "$here/integration/run.py" $threads_tests 2>&1 | tee -a "$log"
threads_rc=${PIPESTATUS[0]}

# ThreadSanitizer build (make tsan; TSAN_BIN): the thread pool's tests and
# the threaded drain, failing on any report ThreadSanitizer writes.
tsan_rc=0
if [ -n "${TSAN_BIN:-}" ]; then
	echo "== the thread pool's tests again under ThreadSanitizer"
	tsan_dir=$(mktemp -d)
	TSAN_OPTIONS="log_path=$tsan_dir/report halt_on_error=0" RUN_LABEL="nginx, ThreadSanitizer" \
		CEREBRAS_PROXY_BIN="$TSAN_BIN" PROXY_SERVER=nginx \
		python3 "$here/integration/run.py" test_pool test_scheduling.TestThreads test_lifecycle.TestDrain \
		2>&1 | tee -a "$log"
	tsan_rc=${PIPESTATUS[0]}
	if compgen -G "$tsan_dir/report*" >/dev/null; then
		echo "ThreadSanitizer reported:"
		cat "$tsan_dir"/report*
		tsan_rc=1
	fi
	rm -rf "$tsan_dir"
fi

echo "== several hosts in network namespaces sharing one Redis"
python3 "$here/multihost/run.py" "$bin" 2>&1 | tee -a "$log"
multi_rc=${PIPESTATUS[0]}

# AddressSanitizer+UBSan build (make asan; ASAN_BIN): the nginx
# integration suite, failing on any report (tests/run-asan.sh).
asan_rc=0
if [ -n "${ASAN_BIN:-}" ]; then
	echo "== the integration tests behind nginx again under AddressSanitizer+UBSan"
	bash "$here/run-asan.sh" "$ASAN_BIN" 2>&1 | tee -a "$log"
	asan_rc=${PIPESTATUS[0]}
fi

# libFuzzer targets (make fuzz-build; FUZZ_BUILD, FUZZ_TARGETS): each
# replays its seeds and regressions, then fuzzes briefly.
fuzz_rc=0
fuzz_built=1
for t in ${FUZZ_TARGETS:-}; do
	[ -x "${FUZZ_BUILD:-}/fuzz/$t" ] || fuzz_built=0
done
if [ -n "${FUZZ_BUILD:-}" ] && [ -n "${FUZZ_TARGETS:-}" ] && [ "$fuzz_built" -eq 0 ]; then
	echo "== the fuzz targets are not built (no clang): not run"
elif [ -n "${FUZZ_BUILD:-}" ] && [ -n "${FUZZ_TARGETS:-}" ]; then
	echo "== the parsers under libFuzzer, ${FUZZ_CI_SECONDS:-6} s each (make fuzz for longer)"
	# shellcheck disable=SC2086 # FUZZ_TARGETS is a list of names
	FUZZ_SECONDS=${FUZZ_CI_SECONDS:-6} RUN_LABEL="fuzz, brief" \
		bash "$here/fuzz/run.sh" "$FUZZ_BUILD" $FUZZ_TARGETS 2>&1 | tee -a "$log"
	fuzz_rc=${PIPESTATUS[0]}
fi

passed=0
failed=0
while read -r p f; do
	passed=$((passed + p))
	failed=$((failed + f))
done < <(sed -n 's/^\(unit\|integration\)[^:]*: \([0-9]*\) passed, \([0-9]*\) failed.*/\2 \3/p' "$log")
if [ "$unit_rc" -ne 0 ] || [ "$redis_rc" -ne 0 ] || [ "$int_rc" -ne 0 ] || [ "$apache_rc" -ne 0 ] || [ "$multi_rc" -ne 0 ] || [ "$threads_rc" -ne 0 ] || [ "$tsan_rc" -ne 0 ] || [ "$mock_rc" -ne 0 ] || [ "$asan_rc" -ne 0 ] || [ "$fuzz_rc" -ne 0 ]; then
	[ "$failed" -eq 0 ] && failed=1
fi
echo "== took $(( $(date +%s) - start )) s"
echo "Total: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
