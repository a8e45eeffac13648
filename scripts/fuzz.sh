#!/usr/bin/env bash
# Builds every libFuzzer target (fuzz/fuzz_NAME.c) in build-fuzz/ and runs each for SECONDS
# (default 60), starting from a scratch copy of fuzz/corpus/NAME/ so the tree is never written.
# Exits non-zero if any target crashes, leaks, times out or fails to build; the reproducer is
# left in build-fuzz/fuzz-run/NAME/.
# Usage: scripts/fuzz.sh [SECONDS]
# FUZZ_JOBS=N runs up to N targets at once (default 1), each still for SECONDS; with
# FUZZ_START_FILE=PATH only the first runner starts at once and the others once PATH exists
# (CI: the ASan build holds the other core until then, and writes PATH when it ends).
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

fuzz_one() { # fuzz_one TARGET_SOURCE: runs it; returns non-zero if it failed
	local src=$1 target name work
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
		grep -E '^(#[0-9]+ +DONE|stat::number_of_executed_units|stat::average_exec_per_sec)' "$work/log" |
			sed "s/^/$target: /" >&2 || true
	else
		echo "fuzz.sh: $target FAILED, see $work/log and $work/crash-* / leak-* / timeout-*" >&2
		tail -n 40 "$work/log" >&2
		return 1
	fi
}

shopt -s nullglob
sources=("$root"/fuzz/fuzz_*.c)
jobs_wanted=${FUZZ_JOBS:-1}
case $jobs_wanted in
'' | *[!0-9]* | 0) echo "$0: FUZZ_JOBS must be a positive number" >&2; exit 2 ;;
esac
state=$build/fuzz-run/.queue
mkdir -p "$state"
echo 0 >"$state/next"
: >"$state/failed"

# Each runner takes the next target off the shared queue until none is left.
runner() {
	local i
	while :; do
		i=$(flock "$state/lock" bash -c 'read -r i <"$1"; echo $((i + 1)) >"$1"; echo "$i"' _ "$state/next")
		[ "$i" -lt ${#sources[@]} ] || return 0
		fuzz_one "${sources[$i]}" || basename "${sources[$i]}" .c >>"$state/failed"
	done
}

pids=()
runner &
pids+=($!)
for ((k = 1; k < jobs_wanted; k++)); do
	(
		if [ -n "${FUZZ_START_FILE:-}" ]; then
			while [ ! -e "$FUZZ_START_FILE" ]; do
				sleep 1
				# nothing left to take: the first runner had the whole queue
				[ "$(flock "$state/lock" cat "$state/next")" -lt ${#sources[@]} ] || exit 0
			done
		fi
		runner
	) &
	pids+=($!)
done
for p in "${pids[@]}"; do
	wait "$p"
done
mapfile -t failed <"$state/failed"

if [ ${#failed[@]} -ne 0 ]; then
	echo "fuzz.sh: failed: ${failed[*]}" >&2
	exit 1
fi
echo "fuzz.sh: all targets clean" >&2
