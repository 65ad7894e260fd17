#!/usr/bin/env bash
# `lazyimg snapshotter` at the gRPC level, without containerd: raw calls made
# with tests/tools/grpcpoke (gRPC core client) check the status codes
# containerd relies on, malformed and unknown calls, a burst of concurrent
# Prepares (one wins per key), List with bad filters, persistence across a
# restart and a corrupt metadata file refused at start. The server must stay
# up throughout and exit cleanly.
set -euo pipefail
: "${LAZYIMG:?run through tests/run.sh}"
: "${TOP:=$(cd "$(dirname "$0")/../.." && pwd)}"
: "${BUILD:=build}"
POKE=$TOP/$BUILD/tests/grpcpoke
W=$(mktemp -d /tmp/lazyimg-t71.XXXXXX)
SOCK=$W/s.sock ROOT=$W/root
PID=
NCHECK=0 NFAIL=0
M=/containerd.services.snapshots.v1.Snapshots
ok() { NCHECK=$((NCHECK + 1)); echo "ok: $*"; }
bad() { NCHECK=$((NCHECK + 1)); NFAIL=$((NFAIL + 1)); echo "FAIL: $*"; }
cleanup() {
	[ -n "$PID" ] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null
	rm -rf "$W"
}
trap cleanup EXIT

start() {
	"$LAZYIMG" snapshotter --root "$ROOT" --address "$SOCK" --no-remote --log-level info >> "$W/log" 2>&1 &
	PID=$!
	for _ in $(seq 100); do
		[ -S "$SOCK" ] && "$POKE" "$SOCK" $M/Stat "" > /dev/null 2>&1 && return 0
		sleep 0.1
	done
	echo "FAIL: snapshotter did not start"; cat "$W/log"; exit 1
}
stop() {
	kill "$PID"
	local rc=0
	wait "$PID" || rc=$?
	PID=
	return $rc
}
hex() { printf '%s' "$1" | od -An -tx1 | tr -d ' \n'; }
# protobuf string field: tag byte (hex) + length + bytes (strings < 128 bytes)
pstr() { printf '%s%02x%s' "$1" "${#2}" "$(hex "$2")"; }
# call METHOD HEX -> "status N ..." line; the details go to $W/details
call() { "$POKE" "$SOCK" "$M/$1" "$2" > "$W/out" 2>&1 || { cat "$W/out"; return 1; }; head -n 1 "$W/out"; sed -n 2p "$W/out" > "$W/details"; }
expect() { # NAME METHOD HEX CODE
	local got
	got=$(call "$2" "$3" | cut -d' ' -f2)
	[ "$got" = "$4" ] && ok "$1: status $got ($(cat "$W/details"))" || bad "$1: status $got, expected $4 ($(cat "$W/details"))"
}

start
expect "unknown method" Nope "" 12
expect "undecodable request" Prepare ffffffff 3
expect "Stat of an unknown key" Stat "$(pstr 12 nope)" 5
expect "Mounts of an unknown key" Mounts "$(pstr 12 nope)" 5
expect "Usage of an unknown key" Usage "$(pstr 12 nope)" 5
expect "Remove of an unknown key" Remove "$(pstr 12 nope)" 5
expect "Prepare on a missing parent" Prepare "$(pstr 12 a)$(pstr 1a nope)" 5
grep -q "parent\|nope" "$W/details" && ok "the message names the missing parent" || bad "message: $(cat "$W/details")"
expect "Prepare with an empty key" Prepare "$(pstr 1a "")" 3
expect "Prepare" Prepare "$(pstr 12 base)" 0
expect "Prepare of an existing key" Prepare "$(pstr 12 base)" 6
expect "Prepare on an active parent" Prepare "$(pstr 12 b2)$(pstr 1a base)" 3
expect "Commit of an unknown key" Commit "$(pstr 12 c)$(pstr 1a nope)" 5
expect "Commit" Commit "$(pstr 12 layer1)$(pstr 1a base)" 0
expect "Prepare another" Prepare "$(pstr 12 base2)" 0
expect "Commit onto an existing name" Commit "$(pstr 12 layer1)$(pstr 1a base2)" 6
expect "Remove of an active snapshot" Remove "$(pstr 12 base2)" 0
expect "Commit of a committed snapshot" Commit "$(pstr 12 x)$(pstr 1a layer1)" 3
expect "View on a committed parent" View "$(pstr 12 v1)$(pstr 1a layer1)" 0
expect "Remove of a parent with children" Remove "$(pstr 12 layer1)" 9
expect "List with a malformed filter" List "$(pstr 12 'kind=x')" 3
expect "List" List "" 0
expect "Cleanup" Cleanup "" 0

# a burst of concurrent Prepares: 20 keys twice each, every key created exactly once
for i in $(seq 20); do
	for _ in 1 2; do "$POKE" "$SOCK" $M/Prepare "$(pstr 12 "c$i")$(pstr 1a layer1)" > "$W/burst.$i.$RANDOM$RANDOM" 2>&1 & done
done
wait $(jobs -p | grep -v "^$PID$") 2>/dev/null || true
n0=$(cat "$W"/burst.* | grep -c '^status 0 ' || true)
n6=$(cat "$W"/burst.* | grep -c '^status 6 ' || true)
[ "$n0" -eq 20 ] && [ "$n6" -eq 20 ] && ok "40 concurrent Prepares of 20 keys: 20 created, 20 already exists" ||
	bad "concurrent Prepares: $n0 created, $n6 already exists"
n=$(jq '.snapshots | length' "$ROOT/metadata.json")
[ "$n" -eq 22 ] && ok "metadata holds 22 snapshots" || bad "metadata holds $n snapshots, expected 22"
[ "$(find "$ROOT/snapshots" -mindepth 1 -maxdepth 1 | wc -l)" -eq 22 ] && ok "one directory per snapshot" ||
	bad "$(find "$ROOT/snapshots" -mindepth 1 -maxdepth 1 | wc -l) directories for 22 snapshots"
out=$(call List "")
case "$out" in "status 0 messages 1 "*) ok "List streams the snapshots ($out)" ;; *) bad "List: $out" ;; esac

# restart: everything is still there
stop && ok "SIGTERM: clean exit" || bad "snapshotter exited non-zero on SIGTERM"
start
expect "Stat after a restart" Stat "$(pstr 12 c7)" 0
id=$(jq -r '.snapshots[] | select(.key == "c7") | .id' "$ROOT/metadata.json")
[ -d "$ROOT/snapshots/$id/fs" ] && ok "c7 has its directory (id $id)" || bad "no directory for c7"
expect "Remove after a restart" Remove "$(pstr 12 c7)" 0
[ ! -e "$ROOT/snapshots/$id" ] && ok "Remove deleted the directory" || bad "directory of c7 still there"
stop || bad "second stop"

# systemd socket activation (as a .socket unit would start it): the socket
# comes as fd 3, bound and listening before lazyimg runs, and is served
rm -f "$SOCK"
systemd-socket-activate -l "$SOCK" "$LAZYIMG" snapshotter --root "$ROOT" --address "$SOCK" --no-remote \
	--log-level info >> "$W/log" 2>&1 &
PID=$!
for _ in $(seq 50); do [ -S "$SOCK" ] && break; sleep 0.1; done
expect "Stat through a socket systemd made" Stat "$(pstr 12 nope)" 5
grep -q "serving containerd snapshots on $SOCK (systemd)" "$W/log" &&
	ok "the snapshotter used the socket from systemd (fd 3)" || bad "systemd's socket not used: $(grep -m1 'serving containerd' "$W/log" | tail -n 1)"
stop || bad "stop of the socket-activated snapshotter"

# a corrupt metadata file: refused with a clear message, file left alone
cp "$ROOT/metadata.json" "$W/good.json"
head -c 100 "$W/good.json" > "$ROOT/metadata.json"
if timeout 20 "$LAZYIMG" snapshotter --root "$ROOT" --address "$SOCK" --no-remote 2> "$W/err"; then
	bad "started on a truncated metadata file"
else
	grep -q "metadata: not valid JSON" "$W/err" && ok "truncated metadata refused: $(grep -m1 'not valid' "$W/err")" ||
		bad "unclear error: $(cat "$W/err")"
fi
cmp -s <(head -c 100 "$W/good.json") "$ROOT/metadata.json" && ok "the corrupt file was left as it was" ||
	bad "the corrupt file was changed"

if grep -qE 'ERROR: (Address|Leak)Sanitizer|runtime error:' "$W/log" "$W/err"; then
	bad "sanitizer report: $(grep -m1 -hE 'Sanitizer|runtime error:' "$W/log" "$W/err")"
fi
echo "$NCHECK checks, $NFAIL failed"
[ "$NFAIL" -eq 0 ] || { tail -n 20 "$W/log"; exit 1; }
echo PASS
