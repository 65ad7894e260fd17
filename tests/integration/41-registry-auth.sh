#!/usr/bin/env bash
# Registry authentication, against a real docker-registry on 127.0.0.1.
# (a) htpasswd basic auth: convert needs credentials (given in the environment);
#     mount works with them (environment or a docker config.json via --auth-file)
#     and fails with a message naming the auth problem without them or with a
#     wrong password; neither the password nor base64(user:pass) reaches the
#     server log (debug level) or lazyimg's stderr.
# (b) bearer tokens from tests/tools/tokenserver.py (RS256 JWTs trusted by the
#     registry through rootcertbundle) that live 4 s: reads of uncached files keep
#     working across several expiries, with tokens renewed both when the token
#     server says so (expires_in 4) and when it does not (expires_in 600, the
#     registry answers 401: renegotiation); no token appears in the server log.
set -euo pipefail
. "$(dirname "$0")/reglib.sh"
W=$(mktemp -d /tmp/lazyimg-t41.XXXXXX)
MNT=$W/mnt
REG_DIRS=()
cleanup() {
	reg_cleanup
	awk -v w="$W/" 'index($2, w) == 1 { f = 1 } END { exit !f }' /proc/mounts || rm -rf "$W"
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP
export LC_ALL=C
# credentials only from where each step says: no ~/.docker/config.json, no environment
export DOCKER_CONFIG=$W/no-docker-config
unset LAZYIMG_REGISTRY_USER LAZYIMG_REGISTRY_PASSWORD
U=tester P=testpass
UP64=$(printf '%s:%s' "$U" "$P" | base64 -w0)
# with_creds CMD...: CMD (a program or a function) with the credentials in its environment
with_creds() { LAZYIMG_REGISTRY_USER=$U LAZYIMG_REGISTRY_PASSWORD=$P "$@"; }
AUTH_RE='unauthori[sz]ed|credential|authenticat|401'

# must_fail_msg DESCRIPTION CMD...: CMD exits non-zero and its stderr matches $AUTH_RE
must_fail_msg() {
	local what=$1 rc=0 err; shift
	err=$(timeout -k 5 60 "$@" 2>&1 >/dev/null) || rc=$?
	if [ "$rc" -eq 0 ]; then
		reg_bad "$what: succeeded, want a failure"
	elif ! grep -qiE -- "$AUTH_RE" <<< "$err"; then
		reg_bad "$what: exit $rc, but the message does not name the auth problem (/$AUTH_RE/): $(tr '\n' ' ' <<< "$err" | head -c 400)"
	else
		reg_ok "$what: exit $rc, \"$(grep -iE -- "$AUTH_RE" <<< "$err" | head -n 1 | head -c 200)\""
	fi
	printf '%s\n' "$err" >> "$W/all-stderr"
}

# no_secret DESCRIPTION FILE...: neither the password nor base64(user:pass) in the files
no_secret() {
	local what=$1 f hit=""; shift
	for f in "$@"; do
		[ -e "$f" ] || continue
		grep -qF -- "$P" "$f" && hit+=" $f:password"
		grep -qF -- "$UP64" "$f" && hit+=" $f:base64(user:pass)"
		grep -qiE 'authorization:' "$f" && hit+=" $f:Authorization-header"
	done
	if [ -z "$hit" ]; then reg_ok "$what: no password, base64(user:pass) or Authorization header in $# file(s)"
	else reg_bad "$what: credentials leaked:$hit"; fi
}

# read_group MNT FILES...: cmp each with the source; prints the number of failures
read_group() {
	local m=$1 f nf=0; shift
	for f in "$@"; do
		if ! timeout 30 cmp "$m/$f" "$W/rootfs/$f" > "$W/cmp.out" 2>&1; then
			nf=$((nf + 1)); sed 's/^/    | /' "$W/cmp.out" >&2
		fi
	done
	echo "$nf"
}

mkdir -p "$MNT"
echo "== (a) htpasswd basic auth"
start_registry "$W/regb" --auth basic
push_small_image "$W/img" --creds "$U:$P"
unpack_small "$W/img" "$W/rootfs"
SRC=$REGISTRY_HOST/small:v1 DST=$REGISTRY_HOST/small:v1-nydus
echo "registry $REGISTRY_HOST (basic auth), source image pushed with credentials"

must_fail_msg "convert without credentials" "$LAZYIMG" convert -q --insecure "$SRC" "$DST"
must_fail_msg "convert with a wrong password" env LAZYIMG_REGISTRY_USER=$U LAZYIMG_REGISTRY_PASSWORD=wrong-pass \
	"$LAZYIMG" convert -q --insecure "$SRC" "$DST"
if LAZYIMG_LOG=3 with_creds timeout -k 5 120 "$LAZYIMG" convert -q --insecure "$SRC" "$DST" 2>> "$W/all-stderr"; then
	reg_ok "convert (pull + push) with LAZYIMG_REGISTRY_USER/PASSWORD"
else
	reg_die "convert with credentials failed: $(tail -n 5 "$W/all-stderr")"
fi

must_fail_msg "mount without credentials" "$LAZYIMG" mount --insecure --cache-dir "$W/cache-a0" "$DST" "$MNT"
must_fail_msg "mount with a wrong password (environment)" env LAZYIMG_REGISTRY_USER=$U LAZYIMG_REGISTRY_PASSWORD=wrong-pass \
	"$LAZYIMG" mount --insecure --cache-dir "$W/cache-a0" "$DST" "$MNT"
printf '{"auths":{"%s":{"auth":"%s"}}}\n' "$REGISTRY_HOST" "$(printf '%s:wrong-pass' "$U" | base64 -w0)" > "$W/bad-config.json"
must_fail_msg "mount with a wrong password (--auth-file)" "$LAZYIMG" mount --insecure --auth-file "$W/bad-config.json" \
	--cache-dir "$W/cache-a0" "$DST" "$MNT"
reg_is_mounted "$MNT" && reg_die "$MNT is mounted after failed mounts"

if LAZYIMG_LOG=3 with_creds reg_mount "$MNT" --insecure --no-prefetch --cache-dir "$W/cache-a1" "$DST"; then
	reg_ok "mount with LAZYIMG_REGISTRY_USER/PASSWORD (server pid ${REG_SERVER_PID[$MNT]})"
else
	reg_die "mount with credentials failed: $(cat "$MNT.err")"
fi
if tree_same "$W/rootfs" "$MNT"; then reg_ok "whole tree equals the unpacked source"
else reg_bad "tree differs from the source"; fi
reg_umount "$MNT"
cat "$MNT.err" >> "$W/all-stderr"
cp "$MNT.log" "$W/log-basic-env"

# docker config.json: {"auths": {"HOST:PORT": {"auth": base64(user:pass)}}}, as written by docker login
printf '{"auths":{"%s":{"auth":"%s"}}}\n' "$REGISTRY_HOST" "$UP64" > "$W/config.json"
if LAZYIMG_LOG=3 reg_mount "$MNT" --insecure --no-prefetch --auth-file "$W/config.json" --cache-dir "$W/cache-a2" "$DST"; then
	reg_ok "mount with --auth-file config.json (auths.\"$REGISTRY_HOST\".auth)"
	n=$(read_group "$MNT" etc/hello.txt blobs/random-1m.bin data/many/f07.txt)
	[ "$n" -eq 0 ] && reg_ok "3 files read through it equal the source" || reg_bad "$n file(s) differ"
	reg_umount "$MNT"
else
	reg_bad "mount with --auth-file failed: $(cat "$MNT.err")"
fi
cat "$MNT.err" >> "$W/all-stderr"
cp "$MNT.log" "$W/log-basic-file"
# "https://HOST:PORT/v2/" keys (scheme and path) name the same host
printf '{"auths":{"https://%s/v2/":{"username":"%s","password":"%s"}}}\n' "$REGISTRY_HOST" "$U" "$P" > "$W/config2.json"
if reg_mount "$MNT" --insecure --no-prefetch --auth-file "$W/config2.json" --cache-dir "$W/cache-a3" "$DST" &&
	[ "$(read_group "$MNT" etc/hello.txt)" -eq 0 ]; then
	reg_ok "mount with --auth-file keyed \"https://$REGISTRY_HOST/v2/\" and username/password"
else
	reg_bad "mount with --auth-file keyed https://HOST/v2/ (username/password) failed: $(cat "$MNT.err")"
fi
reg_umount "$MNT"
# docker credential helpers: "credsStore" for every registry, "credHelpers" per
# registry (ahead of the store), each a docker-credential-NAME program on PATH
# answering `get` with the server on stdin
mkdir -p "$W/helpers"
cat > "$W/helpers/docker-credential-t41store" <<EOF
#!/bin/sh
read -r server
echo "\$1 \$server" >> "$W/helper-calls"
printf '{"ServerURL":"%s","Username":"%s","Secret":"%s"}\n' "\$server" "$U" "$P"
EOF
cat > "$W/helpers/docker-credential-t41none" <<EOF
#!/bin/sh
echo "credentials not found in native keychain"
exit 1
EOF
chmod +x "$W/helpers/"docker-credential-*
printf '{"auths":{"%s":{}},"credsStore":"t41store"}\n' "$REGISTRY_HOST" > "$W/config-store.json"
if PATH="$W/helpers:$PATH" reg_mount "$MNT" --insecure --no-prefetch --auth-file "$W/config-store.json" \
	--cache-dir "$W/cache-a4" "$DST" && [ "$(read_group "$MNT" etc/hello.txt blobs/random-1m.bin)" -eq 0 ]; then
	reg_ok "mount with credsStore: the helper's user and secret work"
else
	reg_bad "mount with credsStore failed: $(cat "$MNT.err")"
fi
reg_umount "$MNT"
cat "$MNT.log" >> "$W/log-helper" 2>/dev/null || true
grep -qx "get $REGISTRY_HOST" "$W/helper-calls" && reg_ok "the helper was asked 'get' for $REGISTRY_HOST" ||
	reg_bad "helper calls: $(cat "$W/helper-calls" 2>/dev/null)"
printf '{"credsStore":"t41none","credHelpers":{"%s":"t41store"}}\n' "$REGISTRY_HOST" > "$W/config-helpers.json"
if PATH="$W/helpers:$PATH" reg_mount "$MNT" --insecure --no-prefetch --auth-file "$W/config-helpers.json" \
	--cache-dir "$W/cache-a5" "$DST" && [ "$(read_group "$MNT" etc/hello.txt)" -eq 0 ]; then
	reg_ok "credHelpers for this registry comes before a failing credsStore"
else
	reg_bad "mount with credHelpers failed: $(cat "$MNT.err")"
fi
reg_umount "$MNT"
cat "$MNT.log" >> "$W/log-helper" 2>/dev/null || true
printf '{"credsStore":"t41none"}\n' > "$W/config-none.json"
PATH="$W/helpers:$PATH" must_fail_msg "mount whose credential helper fails" "$LAZYIMG" mount --insecure \
	--auth-file "$W/config-none.json" --cache-dir "$W/cache-a6" "$DST" "$MNT"
grep -q "docker-credential-t41none.*credentials not found in native keychain" "$W/all-stderr" &&
	reg_ok "the error names the helper and passes on its message" || reg_bad "helper failure not named: $(tail -n 3 "$W/all-stderr")"
no_secret "basic auth: server logs (LAZYIMG_LOG=3) and lazyimg stderr" "$W/log-basic-env" "$W/log-basic-file" "$W/log-helper" "$W/all-stderr"
stop_registries; REG_DIRS=()

echo "== (b) bearer tokens that expire after 4 s"
start_registry_clean "$W/regt" --auth token
TOK_PORT=${REGISTRY_TOKEN_REALM#http://127.0.0.1:}; TOK_PORT=${TOK_PORT%%/*}
# replace registry-up.sh's token server (600 s tokens) by ours on the same port
oldpid=$(cat "$REGISTRY_DIR/tokenserver.pid")
kill "$oldpid"
for _ in $(seq 50); do kill -0 "$oldpid" 2>/dev/null || break; sleep 0.1; done
kill -0 "$oldpid" 2>/dev/null && reg_die "registry-up.sh's token server $oldpid did not stop"
mkfifo "$W/tok.ready"
echo '{"expires_in": 600, "valid": 600}' > "$W/tok.json"
python3 "$TOOLS/tokenserver.py" --port "$TOK_PORT" --key "$REGISTRY_DIR/token/signer.key" \
	--cert "$REGISTRY_DIR/token/signer.crt" --user "$U" --password "$P" --settings "$W/tok.json" \
	--count-file "$W/tokens.count" --tokens-file "$W/tokens.txt" --notify "$W/tok.ready" 2> "$W/tok.err" &
TOK_PID=$!
REG_PIDS+=("$TOK_PID")
echo "$TOK_PID" > "$REGISTRY_DIR/tokenserver.pid"   # registry-up.sh --stop stops it too
reg_fifo_read "$W/tok.ready" 10 > /dev/null || reg_die "token server did not start: $(cat "$W/tok.err")"
: > "$W/tokens.count"
echo "registry $REGISTRY_HOST, token server pid $TOK_PID at $REGISTRY_TOKEN_REALM"
SRC=$REGISTRY_HOST/small:v1 DST=$REGISTRY_HOST/small:v1-nydus
push_small_image "$W/img" --creds "$U:$P"
tokens() { wc -l < "$W/tokens.count"; }
t0=$(tokens)
if with_creds timeout -k 5 120 "$LAZYIMG" convert -q --insecure "$SRC" "$DST" 2>> "$W/all-stderr"; then
	reg_ok "convert (pull + push scope) with credentials through the token server ($(( $(tokens) - t0 )) tokens)"
else
	reg_die "convert against the token registry failed: $(tail -n 5 "$W/all-stderr")"
fi
grep -q "repository:small:.*push" "$W/tokens.count" && reg_ok "a push token was issued to $U" ||
	reg_bad "no push-scoped token was issued: $(cat "$W/tokens.count")"

# expires_in EXP, registry accepts VALID seconds; read groups of cold files with sleeps past expiry
ALL=(); for i in $(seq -w 1 50); do ALL+=("data/many/f$i.txt"); done
run_expiry_phase() {
	local name=$1 exp_in=$2 valid=$3 cache=$4 mark t1 t2 nerr=0 g n401
	printf '{"expires_in": %d, "valid": %d}\n' "$exp_in" "$valid" > "$W/tok.json"
	mark=$(wc -l < "$REGISTRY_LOG")
	t1=$(tokens)
	if ! LAZYIMG_LOG=3 with_creds reg_mount "$MNT" --insecure --no-prefetch --cache-dir "$cache" "$DST"; then
		reg_bad "$name: mount failed: $(cat "$MNT.err")"; return
	fi
	n=$(read_group "$MNT" etc/hello.txt "${ALL[@]:0:5}")
	nerr=$((nerr + n))
	for g in 1 2 3 4; do
		sleep $((valid + 1))
		n=$(read_group "$MNT" "${ALL[@]:$((g * 10)):10}")
		echo "  after $((g * (valid + 1))) s: 10 uncached files read, $n failed; tokens issued so far: $(( $(tokens) - t1 ))"
		nerr=$((nerr + n))
	done
	n=$(read_group "$MNT" blobs/random-4m.bin blobs/text-16m.txt)
	nerr=$((nerr + n))
	t2=$(tokens)
	n401=$(tail -n +"$((mark + 1))" "$REGISTRY_LOG" | grep -cE '"GET /v2/[^"]*" 401 ' || true)
	nget=$(tail -n +"$((mark + 1))" "$REGISTRY_LOG" | grep -cE '"GET /v2/' || true)
	echo "  $name: $((t2 - t1)) tokens issued for $nget registry GETs, $n401 of them answered 401; stats: $(timeout 10 "$LAZYIMG" stats "$MNT")"
	[ $((t2 - t1)) -lt $((nget / 2)) ] ||
		echo "  note: about one token per registry request: the client renews tokens that expire within 10 s before every request, so a token shorter-lived than that is never reused"
	[ "$nerr" -eq 0 ] && reg_ok "$name: 48 files read across 4 expiries of the token, all equal to the source (no EIO)" ||
		reg_bad "$name: $nerr file read(s) failed or differed"
	[ $((t2 - t1)) -gt 1 ] && reg_ok "$name: the token was renewed ($((t2 - t1)) tokens issued for this mount)" ||
		reg_bad "$name: only $((t2 - t1)) token(s) issued although each lives $valid s"
	[ "$(reg_stat "$MNT" read_errors)" = 0 ] && reg_ok "$name: lazyimg stats read_errors 0" ||
		reg_bad "$name: lazyimg stats read_errors $(reg_stat "$MNT" read_errors)"
	reg_umount "$MNT"
	cat "$MNT.log" >> "$W/log-token"
	cat "$MNT.err" >> "$W/all-stderr"
	LAST_N401=$n401
}
# the token server says how long its tokens live: the client renews before they expire
run_expiry_phase "expires_in 4" 4 4 "$W/cache-b1"
# the token server says 600 s but the registry rejects tokens after 4 s: the client must
# renegotiate on the registry's 401 (discard the token, fetch a new one, retry)
run_expiry_phase "expires_in 600, rejected by the registry after 4 s" 600 4 "$W/cache-b2"
[ "$LAST_N401" -gt 1 ] && reg_ok "the registry did reject expired tokens ($LAST_N401 401s) and reads went on" ||
	reg_bad "expected the registry to answer 401 to expired tokens, saw $LAST_N401"

# A burst of concurrent reads when the token is due must cause one token fetch, not one per
# reader (registry-protocol.md 4.5: serialise token fetches per host and scope; and the
# comment in authenticate(): "another thread may have renewed it while we waited").
# The reactive case goes through tests/tools/faultproxy.py delaying every answer by 0.3 s,
# and the token server takes 0.5 s, so that all eight requests carry the expired token and
# meet the registry's 401 together, whatever the scheduling.
start_faultproxy "$W/fp" "$REGISTRY_HOST"
burst_phase() {
	local name=$1 exp_in=$2 valid=$3 wait_s=$4 cache=$5 host=$6 plan=$7 i t1 t2 rc nbad=0 pids=()
	printf '{"expires_in": %d, "valid": %d, "delay": 0.5}\n' "$exp_in" "$valid" > "$W/tok.json"
	if ! with_creds reg_mount "$MNT" --insecure --no-prefetch --cache-dir "$cache" "$host/small:v1-nydus"; then
		reg_bad "$name: mount failed: $(cat "$MNT.err")"; return
	fi
	[ "$(read_group "$MNT" etc/hello.txt)" -eq 0 ] || reg_bad "$name: first read failed"
	sleep "$wait_s"
	fp_set "$PROXY_CTL" "$plan"
	t1=$(tokens)
	for i in 41 42 43 44 45 46 47 48; do
		timeout 60 cmp "$MNT/data/many/f$i.txt" "$W/rootfs/data/many/f$i.txt" > "$W/burst$i.out" 2>&1 &
		pids+=($!)
	done
	for i in "${pids[@]}"; do rc=0; wait "$i" || rc=$?; [ "$rc" -eq 0 ] || nbad=$((nbad + 1)); done
	t2=$(tokens)
	fp_set "$PROXY_CTL" pass
	[ "$nbad" -eq 0 ] && reg_ok "$name: 8 concurrent readers of cold files all got the source bytes" ||
		reg_bad "$name: $nbad of 8 concurrent readers failed: $(cat "$W"/burst4*.out | head -c 300)"
	[ $((t2 - t1)) -eq 1 ] && reg_ok "$name: the burst of 8 concurrent reads caused 1 token fetch" ||
		reg_bad "$name: the burst of 8 concurrent reads caused $((t2 - t1)) token fetches (want 1: one fetch per expiry, shared by all readers)"
	reg_umount "$MNT"
	cat "$MNT.log" >> "$W/log-token"
}
# proactive: a token is renewed once less than min(10 s, a fifth of its lifetime) is
# left: for expires_in 12 that is after 9.6 s (wait 10.5 s, before the registry's 12 s)
burst_phase "burst when the token is due for renewal (expires_in 12, 10.5 s old)" 12 12 10.5 "$W/cache-b5" "$REGISTRY_HOST" pass
# reactive: the registry rejects the token (401) for every reader of the burst
burst_phase "burst after the registry stopped accepting the token (valid 4 s, 5 s old)" 600 4 5 "$W/cache-b6" \
	"$PROXY_HOST" "$(printf 'scope all\ndelay 0.3')"

# --auth-file against the token registry: the token server gets Basic user:pass from it
printf '{"expires_in": 600, "valid": 600}\n' > "$W/tok.json"
printf '{"auths":{"%s":{"auth":"%s"}}}\n' "$REGISTRY_HOST" "$UP64" > "$W/config.json"
t1=$(tokens)
if LAZYIMG_LOG=3 reg_mount "$MNT" --insecure --no-prefetch --auth-file "$W/config.json" --cache-dir "$W/cache-b3" "$DST" &&
	[ "$(read_group "$MNT" etc/hello.txt blobs/random-1m.bin)" -eq 0 ]; then
	if tail -n +"$((t1 + 1))" "$W/tokens.count" | grep -q "^[0-9]* $U "; then
		reg_ok "mount with --auth-file: tokens issued to $U (the token server checked Basic credentials)"
	else
		reg_bad "mount with --auth-file: the tokens issued were anonymous: $(tail -n +"$((t1 + 1))" "$W/tokens.count")"
	fi
else
	reg_bad "mount with --auth-file against the token registry failed: $(cat "$MNT.err")"
fi
reg_umount "$MNT"
cat "$MNT.log" >> "$W/log-token"
# wrong credentials: the token server answers 401
printf '{"auths":{"%s":{"auth":"%s"}}}\n' "$REGISTRY_HOST" "$(printf '%s:wrong-pass' "$U" | base64 -w0)" > "$W/bad-config.json"
must_fail_msg "mount with wrong credentials (token server refuses them)" "$LAZYIMG" mount --insecure \
	--auth-file "$W/bad-config.json" --cache-dir "$W/cache-b4" "$DST" "$MNT"

no_secret "token auth: server logs (LAZYIMG_LOG=3) and lazyimg stderr" "$W/log-token" "$W/all-stderr"
leaks=0
while read -r tok; do
	sig=${tok##*.}
	grep -qF -- "$sig" "$W/log-token" "$W/all-stderr" && leaks=$((leaks + 1))
done < "$W/tokens.txt"
[ "$leaks" -eq 0 ] && reg_ok "none of the $(wc -l < "$W/tokens.txt") tokens issued appears in the server logs or stderr" ||
	reg_bad "$leaks token(s) appear in the server logs or stderr"
reg_finish
