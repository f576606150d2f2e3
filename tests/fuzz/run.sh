#!/bin/bash
# Runs the libFuzzer targets built by `make fuzz` (build-fuzz/fuzz/).
#   tests/fuzz/run.sh BUILD_DIR TARGET...
# FUZZ_SECONDS (default 60) each target fuzzes for, from a writable copy
# of its seed corpus (tests/fuzz/corpus/<target>/) plus its regression
# inputs (tests/fuzz/regressions/<target>/) under BUILD_DIR/work/: the
# repository is never written. FUZZ_SECONDS=0 only replays the seeds and
# the regressions, once each (make fuzz-regress). A crash, a leak or a
# broken invariant fails the target and prints the reproducer's path
# (BUILD_DIR/artifacts/<target>/crash-...), to replay with
#   BUILD_DIR/fuzz/<target> PATH
# Prints a line per target (inputs run, inputs/s), then
# "integration (fuzz, ...): N passed, N failed" for tests/run-all.sh.
set -u
build=$1
shift
here=$(cd "$(dirname "$0")" && pwd)
secs=${FUZZ_SECONDS:-60}
label=${RUN_LABEL:-fuzz, $secs s each}
[ "$secs" -eq 0 ] && label=${RUN_LABEL:-fuzz, seeds and regressions}
passed=0
failed=0
start=$(date +%s)
for t in "$@"; do
	bin=$build/fuzz/$t
	work=$build/work/$t
	art=$build/artifacts/$t
	log=$build/work/$t.log
	rm -rf "$work"
	mkdir -p "$work" "$art"
	for d in "$here/corpus/$t" "$here/regressions/$t"; do
		if [ -d "$d" ] && [ -n "$(ls -A "$d")" ]; then
			cp "$d"/* "$work"/
		fi
	done
	t0=$(date +%s.%N)
	# Nothing to replay: libFuzzer would read its input from stdin.
	[ -n "$(ls -A "$work")" ] || echo >"$work/empty-line"
	if [ "$secs" -eq 0 ]; then
		# Each seed and regression input once.
		"$bin" -artifact_prefix="$art/" "$work"/* >"$log" 2>&1
	else
		dict=()
		[ -f "$here/dict/$t.dict" ] && dict=(-dict="$here/dict/$t.dict")
		"$bin" -max_total_time="$secs" -timeout=10 -print_final_stats=1 \
			"${dict[@]}" -artifact_prefix="$art/" "$work" >"$log" 2>&1
	fi
	rc=$?
	t1=$(date +%s.%N)
	runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
	rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
	files=$(ls "$work" | wc -l)
	if [ "$rc" -eq 0 ]; then
		passed=$((passed + 1))
		printf '%s: ok, %s inputs, %s/s, %.1f s, corpus %d files\n' "$t" \
			"${runs:-$files}" "${rate:--}" "$(awk "BEGIN { print $t1 - $t0 }")" "$files"
	else
		failed=$((failed + 1))
		echo "$t: FAILED (exit $rc); the end of $log:"
		tail -n 40 "$log"
		sed -n 's/.*Test unit written to \(.*\)$/reproducer: \1/p' "$log"
	fi
done
echo "== fuzzing took $(($(date +%s) - start)) s"
echo "integration ($label): $passed passed, $failed failed"
[ "$failed" -eq 0 ]
