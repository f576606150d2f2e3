#!/bin/bash
# The integration suite behind nginx against the AddressSanitizer/UBSan
# binary (make asan; make test-asan runs this). Fails on any test failure
# and on any report a sanitizer wrote.
#   tests/run-asan.sh ASAN_BINARY [unittest names...]   (default: all)
# Every process started with the environment given here (the workers
# through deploy/stack.py, which passes os.environ on) writes its reports
# to log_path files in a private directory. A test that starts the binary
# with an environment of its own (test_deploy's --check-config runs, the
# supervisor tests) has its reports on its stderr instead: the stack
# directories are kept (KEEP_STACK_DIR=1, under a private TMPDIR) and
# their logs searched for reports too. The same directories give the
# number of requests nginx served and the mock upstream received.
# Prints the suite's "integration (nginx, ASan+UBSan): ..." line.
set -u
bin=$1
shift
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/reports" "$tmp/stacks"
# test_deploy runs the binary as other users (a dynamic uid, www-data):
# they must reach the stacks under TMPDIR and write their reports.
chmod 0755 "$tmp" "$tmp/stacks"
chmod 1777 "$tmp/reports"
start=$(date +%s)

# detect_leaks=1: LeakSanitizer runs when a worker exits (SIGTERM, drain).
# halt_on_error=0 keeps ASan going where the build allows it to recover;
# UBSan aborts anyway (-fno-sanitize-recover=undefined), after its report.
ASAN_OPTIONS="log_path=$tmp/reports/asan detect_leaks=${ASAN_DETECT_LEAKS:-1} halt_on_error=0 abort_on_error=0" \
UBSAN_OPTIONS="log_path=$tmp/reports/ubsan print_stacktrace=1 halt_on_error=1" \
	TMPDIR="$tmp/stacks" KEEP_STACK_DIR=1 RUN_LABEL="nginx, ASan+UBSan" \
	CEREBRAS_PROXY_BIN="$bin" PROXY_SERVER=nginx \
	python3 "$here/integration/run.py" "$@"
rc=$?

served=$(cat "$tmp"/stacks/*/nginx-access.log 2>/dev/null | wc -l)
upstream=$(cat "$tmp"/stacks/*/mock-requests.jsonl 2>/dev/null | wc -l)
echo "ASan+UBSan run: $served requests served by nginx, $upstream upstream requests to the mock," \
	"$(($(date +%s) - start)) s"
if compgen -G "$tmp/reports/*" >/dev/null; then
	echo "AddressSanitizer/UBSan reported:"
	cat "$tmp"/reports/*
	rc=1
fi
# Reports on the stderr of processes the suite started with an
# environment of its own.
found=$(grep -rlE 'ERROR: (AddressSanitizer|LeakSanitizer)|runtime error: ' \
	"$tmp/stacks" 2>/dev/null)
if [ -n "$found" ]; then
	echo "sanitizer reports in these logs:"
	for f in $found; do
		echo "== $f"
		grep -E -A 30 'ERROR: (AddressSanitizer|LeakSanitizer)|runtime error: ' "$f" | head -n 80
	done
	rc=1
fi
exit "$rc"
