#!/usr/bin/env bash
# Runs the test suite: unit programs, fuzz-corpus replays, and the scripts in
# tests/integration (real FUSE mounts). Usage: [ONLY=regex] tests/run.sh [unit|fuzz|integration]...
# Exit codes of each test: 0 pass, 77 skip (missing kernel feature only), else fail.
# Ends with the line "N passed, N failed" and exits non-zero on any failure.
set -u
cd "$(dirname "$0")/.."
export BUILD=${BUILD:-build}
export TOP=$PWD
case $BUILD in /*) export LAZYIMG=$BUILD/bin/lazyimg ;; *) export LAZYIMG=$TOP/$BUILD/bin/lazyimg ;; esac
export LAZYIMG_FIXTURES=${LAZYIMG_FIXTURES:-$TOP/../shared/fixtures}
export TEST_TIMEOUT=${TEST_TIMEOUT:-300}
kinds=("$@")
[ ${#kinds[@]} -eq 0 ] && kinds=(unit fuzz integration)

pass=0 fail=0 skip=0
failed=()
logdir=$TOP/$BUILD/test-logs
mkdir -p "$logdir"

if [ ! -d "$LAZYIMG_FIXTURES/rafs" ]; then
	echo "fixtures not found at $LAZYIMG_FIXTURES (set LAZYIMG_FIXTURES)" >&2
	echo "0 passed, 1 failed"
	exit 1
fi

run_one() { # name, command...
	local name=$1; shift
	# ONLY=regex runs just the tests whose name (e.g. integration/46-registry-hostcap) matches
	if [ -n "${ONLY:-}" ] && ! [[ $name =~ $ONLY ]]; then return 0; fi
	local log=$logdir/${name//\//_}.log start rc
	start=$(date +%s.%N)
	timeout -k 10 "$TEST_TIMEOUT" "$@" >"$log" 2>&1
	rc=$?
	local secs
	secs=$(printf '%.1f' "$(echo "$(date +%s.%N) - $start" | bc)")
	case $rc in
	0) pass=$((pass + 1)); printf '  PASS  %-40s %6ss\n' "$name" "$secs" ;;
	77) skip=$((skip + 1)); printf '  SKIP  %-40s (%s)\n' "$name" "$(tail -n 1 "$log")" ;;
	*) fail=$((fail + 1)); failed+=("$name")
	   printf '  FAIL  %-40s rc=%d, log %s\n' "$name" "$rc" "$log"
	   # the failed checks first: CI shows only the end of this output
	   grep -m 10 -E '^(FAIL|not ok)' "$log" | sed 's/^/        ! /'
	   tail -n 25 "$log" | sed 's/^/        | /' ;;
	esac
}

for kind in "${kinds[@]}"; do
	case $kind in
	unit)
		for t in "$BUILD"/tests/test_*; do
			[ -x "$t" ] && run_one "unit/$(basename "$t")" "$t"
		done ;;
	fuzz)
		# every fuzz target replays its seed corpus plus the bad inputs of its module
		for t in "$BUILD"/tests/fuzz_*; do
			[ -x "$t" ] || continue
			n=$(basename "$t"); n=${n#fuzz_}
			args=()
			[ -d tests/fuzz/corpus/$n ] && args+=(tests/fuzz/corpus/$n)
			[ -d tests/bad/${n%%_*} ] && args+=(tests/bad/${n%%_*})
			# real images seed the replay in place: fixtures are never copied into the repo
			[ "$n" = rafs ] && args+=("$LAZYIMG_FIXTURES/rafs")
			# eStargz: both targets share tests/bad/stargz and read the fixtures in place
			case $n in estargz_*) args+=(tests/bad/stargz "$LAZYIMG_FIXTURES/estargz") ;; esac
			run_one "fuzz/$n" "$t" "${args[@]}"
		done ;;
	integration)
		for t in tests/integration/[0-9]*.sh; do
			[ -f "$t" ] && run_one "integration/$(basename "$t" .sh)" bash "$t"
		done ;;
	*) echo "unknown test kind $kind" >&2; exit 2 ;;
	esac
done

[ ${#failed[@]} -gt 0 ] && printf 'failed: %s\n' "${failed[*]}"
[ "$skip" -gt 0 ] && echo "$pass passed, $fail failed, $skip skipped" || echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
