#!/usr/bin/env bash
# Builds every libFuzzer target (fuzz/fuzz_NAME.c) in build-fuzz/ and runs each for SECONDS
# (default 60), starting from a scratch copy of fuzz/corpus/NAME/ so the tree is never written.
# Exits non-zero if any target crashes, leaks, times out or fails to build; the reproducer is
# left in build-fuzz/fuzz-run/NAME/.
# Usage: scripts/fuzz.sh [SECONDS]
set -euo pipefail

seconds=${1:-60}
case $seconds in
'' | *[!0-9]*) echo "usage: $0 [SECONDS]" >&2; exit 2 ;;
esac

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=$root/build-fuzz
jobs=$(nproc 2>/dev/null || echo 2)

CC=clang cmake -S "$root" -B "$build" -DCMAKE_C_COMPILER=clang -DTUSK_FUZZ=ON -DTUSK_TESTS=OFF >/dev/null
cmake --build "$build" -j"$jobs"

# Sanitizer reports must end the run with a stack, and UBSan must count as a crash.
export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1:strict_string_checks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}

failed=()
shopt -s nullglob
for src in "$root"/fuzz/fuzz_*.c; do
	target=$(basename "$src" .c)
	name=${target#fuzz_}
	work=$build/fuzz-run/$name
	rm -rf "$work"
	mkdir -p "$work/corpus"
	if [ -d "$root/fuzz/corpus/$name" ]; then
		cp -R "$root/fuzz/corpus/$name/." "$work/corpus/"
	fi

	echo "fuzz.sh: $target for ${seconds}s ($(find "$work/corpus" -type f | wc -l) seeds)" >&2
	# max_len: room for the largest startup packet (10240) plus a typed message after it.
	if "$build/$target" -max_total_time="$seconds" -max_len=12288 -timeout=10 -rss_limit_mb=2048 \
		-print_final_stats=1 -artifact_prefix="$work/" "$work/corpus" >"$work/log" 2>&1; then
		grep -E '^(#[0-9]+ +DONE|stat::number_of_executed_units|stat::average_exec_per_sec)' "$work/log" >&2 || true
	else
		echo "fuzz.sh: $target FAILED, see $work/log and $work/crash-* / leak-* / timeout-*" >&2
		tail -n 40 "$work/log" >&2
		failed+=("$target")
	fi
done

if [ ${#failed[@]} -ne 0 ]; then
	echo "fuzz.sh: failed: ${failed[*]}" >&2
	exit 1
fi
echo "fuzz.sh: all targets clean" >&2
