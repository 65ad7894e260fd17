#!/usr/bin/env bash
# The per-host connection cap is shared by every registry client in a process:
# 4 clients x 4 threads (each client allowing 8 requests) read ranges of one
# blob through a proxy that holds every range request 200 ms, under a cap of 3
# and then of 12. The peak concurrency the process reaches must equal the cap
# (reached, never exceeded), the proxy log must agree, and every byte matches.
set -euo pipefail
. "$(dirname "$0")/reglib.sh"
W=$(mktemp -d /tmp/lazyimg-t46.XXXXXX)
REG_DIRS=()
cleanup() { reg_cleanup; rm -rf "$W"; }
trap cleanup EXIT
trap 'exit 1' INT TERM HUP
HOSTCAP=$TOP/$BUILD/tests/hostcap

start_registry "$W/reg"
push_small_image "$W/img"
start_faultproxy "$W/fp" "$REGISTRY_HOST"
fp_set "$PROXY_CTL" "delay 0.2" "scope ranges"
# the largest layer of small:v1 (random and text files)
digest=$(curl -sf -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
	"http://$REGISTRY_HOST/v2/small/manifests/v1" | jq -r '.layers | max_by(.size) | .digest')
reg_check "found a layer to read ($digest)" '[ -n "$digest" ] && [ "$digest" != null ]'

# peak_in_log FROM_LINE: the most range requests the proxy had open at once (a
# request ends 20 ms before its log line: the proxy logs after the client has its bytes)
peak_in_log() {
	tail -n +"$(($1 + 1))" "$PROXY_LOG" | awk -F'\t' '$5 != "-" { printf "%.3f 1\n%.3f -1\n", $1 - $9, $1 - 0.02 }' |
		sort -n -k1,1 -k2,2n | awk '{ c += $2; if (c > m) m = c } END { print m + 0 }'
}

for cap in 3 12; do
	mark=$(wc -l < "$PROXY_LOG")
	if out=$(timeout 120 "$HOSTCAP" "$PROXY_HOST/small:v1" "$digest" "$cap" 4 4 2>&1); then
		reg_ok "cap $cap: $out"
	else
		reg_bad "cap $cap: $out"
	fi
	n=$(tail -n +"$((mark + 1))" "$PROXY_LOG" | awk -F'\t' '$5 != "-"' | wc -l)
	p=$(peak_in_log "$mark")
	reg_check "cap $cap: the proxy saw $n range requests (want 64), at most $p at once (want <= $cap)" \
		'[ "$n" -eq 64 ] && [ "$p" -le "$cap" ]'
done
reg_finish
