#!/usr/bin/env bash
# Runs tests/run.sh once per build directory given and prints the combined
# closing line "N passed, N failed". Sanitizer builds get strict options.
set -u
cd "$(dirname "$0")/.."
tp=0 tf=0 rc=0
for b in "$@"; do
	echo "== suite: $b"
	out=$(mktemp)
	if [ "${b%-san}" != "$b" ]; then
		export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
		export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
		# same tests, smaller bulk: the 100k-entry round trip runs at full size in the release pass
		export LAZYIMG_T30_FILES=20000
	else
		unset ASAN_OPTIONS UBSAN_OPTIONS LAZYIMG_T30_FILES
	fi
	BUILD=$b tests/run.sh 2>&1 | tee "$out"
	[ "${PIPESTATUS[0]}" -eq 0 ] || rc=1
	line=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$out" | tail -n 1)
	rm -f "$out"
	p=$(echo "$line" | sed -E 's/^([0-9]+) passed.*/\1/'); f=$(echo "$line" | sed -E 's/.* ([0-9]+) failed.*/\1/')
	[ -n "$line" ] || { p=0; f=1; rc=1; }
	tp=$((tp + p)); tf=$((tf + f))
done
echo "$tp passed, $tf failed"
exit $rc
