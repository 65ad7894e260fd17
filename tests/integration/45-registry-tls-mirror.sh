#!/usr/bin/env bash
# TLS and mirrors, against real docker-registry instances on 127.0.0.1.
#  - origin: registry-up.sh --tls (self-signed CA). The nydus image is converted on a
#    plain-HTTP registry and copied to the origin with skopeo (--preserve-digests).
#  - mount with --ca-file CA works and the tree equals the source; without --ca-file
#    (and without --insecure), or with another CA, mount fails with a clear TLS error.
#  - mirror: the plain-HTTP registry holding the same image, --mirror http://HOST:PORT.
#    Its access log shows the manifest and blob requests (with ?ns=<origin host>),
#    the origin's shows none; once the mirror is stopped, reads of uncached files
#    fail over to the origin and still return the source bytes, and a new mount works.
set -euo pipefail
. "$(dirname "$0")/reglib.sh"
W=$(mktemp -d /tmp/lazyimg-t45.XXXXXX)
MNT=$W/mnt
REG_DIRS=()
cleanup() {
	reg_cleanup
	awk -v w="$W/" 'index($2, w) == 1 { f = 1 } END { exit !f }' /proc/mounts || rm -rf "$W"
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP
export LC_ALL=C
TLS_RE='certificate|SSL|TLS|verif'

# read_files FILES...: cmp each with the source (bounded); prints the number of failures
read_files() {
	local f nf=0
	for f in "$@"; do
		timeout 60 cmp "$MNT/$f" "$W/rootfs/$f" > "$W/cmp.out" 2>&1 || { nf=$((nf + 1)); sed 's/^/    | /' "$W/cmp.out" >&2; }
	done
	echo "$nf"
}
# v2_gets LOG FROM_LINE: request URIs of the GETs under /v2/<repo>/ after FROM_LINE
v2_gets() { tail -n +"$(($2 + 1))" "$1" | grep -oE '"(GET|HEAD) /v2/[^/ ]+/[^ ]*' | sed 's/^"//' || true; }

echo "== registries"
start_registry "$W/mirror"
M_HOST=$REGISTRY_HOST M_LOG=$REGISTRY_LOG M_DIR=$REGISTRY_DIR
push_small_image "$W/img"
unpack_small "$W/img" "$W/rootfs"
small_nydus v1-nydus
start_registry_clean "$W/origin" --tls
O_HOST=$REGISTRY_HOST O_LOG=$REGISTRY_LOG CA=$REGISTRY_CA
timeout 120 skopeo copy -q --preserve-digests --src-tls-verify=false --dest-cert-dir "$REGISTRY_CERT_DIR" \
	"docker://$M_HOST/small:v1-nydus" "docker://$O_HOST/small:v1-nydus" || reg_die "skopeo copy to the TLS registry failed"
dm=$(curl -sI -H 'Accept: application/vnd.oci.image.manifest.v1+json' "http://$M_HOST/v2/small/manifests/v1-nydus" | tr -d '\r' | awk -F': ' 'tolower($1) == "docker-content-digest" { print $2 }')
do_=$(curl -sI --cacert "$CA" -H 'Accept: application/vnd.oci.image.manifest.v1+json' "https://$O_HOST/v2/small/manifests/v1-nydus" | tr -d '\r' | awk -F': ' 'tolower($1) == "docker-content-digest" { print $2 }')
[ -n "$dm" ] && [ "$dm" = "$do_" ] || reg_die "the two registries do not hold the same manifest ($dm vs $do_)"
echo "mirror $M_HOST (http), origin $O_HOST (https, CA $CA): both hold small:v1-nydus $dm"
REF=$O_HOST/small:v1-nydus

echo "== TLS"
if reg_mount "$MNT" --ca-file "$CA" --no-prefetch --cache-dir "$W/cache1" "$REF"; then
	reg_ok "mount https://$O_HOST with --ca-file"
	if tree_same "$W/rootfs" "$MNT"; then reg_ok "the tree read over TLS equals the source"; else reg_bad "tree differs"; fi
	reg_umount "$MNT"
else
	reg_bad "mount with --ca-file failed: $(cat "$MNT.err")"
fi
# tls_fail DESCRIPTION ARGS...: lazyimg mount ARGS fails, with a message about TLS
tls_fail() {
	local what=$1 rc=0 err; shift
	err=$(timeout -k 5 120 "$LAZYIMG" mount "$@" "$REF" "$MNT" 2>&1 >/dev/null) || rc=$?
	if [ "$rc" -eq 0 ]; then
		reg_bad "$what: mount succeeded"; reg_umount "$MNT"
	elif grep -qiE -- "$TLS_RE" <<< "$err"; then
		reg_ok "$what: exit $rc, \"$(grep -iE -- "$TLS_RE" <<< "$err" | tail -n 1 | head -c 220)\""
		n=$(grep -c "retrying" <<< "$err" || true)
		[ "$n" -eq 0 ] || echo "  note: the certificate failure was retried $n times before giving up (it cannot succeed)"
	else
		reg_bad "$what: exit $rc, but the message does not say it is a TLS problem: $(tr '\n' ' ' <<< "$err" | head -c 400)"
	fi
}
t0=$(reg_now)
tls_fail "mount without --ca-file (self-signed CA unknown to the system)" --no-prefetch --cache-dir "$W/cache2"
echo "  (took $(reg_secs "$t0" "$(reg_now)") s)"
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj "/CN=some-other-ca" \
	-keyout "$W/other.key" -out "$W/other-ca.crt" 2>/dev/null
tls_fail "mount with --ca-file of another CA" --ca-file "$W/other-ca.crt" --no-prefetch --cache-dir "$W/cache2"
reg_is_mounted "$MNT" && reg_die "$MNT mounted after failed mounts"
# --insecure means plain HTTP here: against an HTTPS-only registry it cannot work (informational)
err=$(timeout -k 5 60 "$LAZYIMG" mount --insecure --cache-dir "$W/cache2" "$REF" "$MNT" 2>&1 >/dev/null) &&
	{ echo "  note: --insecure mounted the HTTPS registry"; reg_umount "$MNT"; } ||
	echo "  note: --insecure against the HTTPS registry: $(tr '\n' ' ' <<< "$err" | head -c 200)"

echo "== mirror first"
mmark=$(wc -l < "$M_LOG"); omark=$(wc -l < "$O_LOG")
reg_mount "$MNT" --ca-file "$CA" --mirror "http://$M_HOST" --no-prefetch --cache-dir "$W/cache3" "$REF" ||
	reg_die "mount with --mirror failed: $(cat "$MNT.err")"
FIRST=(etc/hello.txt data/many/f01.txt data/many/f02.txt blobs/random-1m.bin)
n=$(read_files "${FIRST[@]}")
[ "$n" -eq 0 ] && reg_ok "${#FIRST[@]} files read with --mirror equal the source" || reg_bad "$n file(s) failed with --mirror"
sleep 0.3
v2_gets "$M_LOG" "$mmark" > "$W/m.gets"; v2_gets "$O_LOG" "$omark" > "$W/o.gets"
sed 's/^/  mirror log: /' "$W/m.gets" | head -n 8
nm=$(grep -c '/blobs/' "$W/m.gets" || true); nmm=$(grep -c '/manifests/' "$W/m.gets" || true)
no=$(wc -l < "$W/o.gets")
[ "$nmm" -ge 1 ] && [ "$nm" -ge 3 ] && reg_ok "the mirror served the manifest ($nmm) and the blobs ($nm requests)" ||
	reg_bad "the mirror's log shows $nmm manifest and $nm blob requests"
[ "$no" -eq 0 ] && reg_ok "the origin got no repository request while the mirror worked" ||
	reg_bad "the origin got $no repository requests although the mirror was up: $(head -n 3 "$W/o.gets" | tr '\n' ' ')"
nns=$(grep -c "[?&]ns=$O_HOST" "$W/m.gets" || true)
[ "$nns" -eq "$(wc -l < "$W/m.gets")" ] && reg_ok "every mirror request carries ?ns=$O_HOST" ||
	reg_bad "$nns of $(wc -l < "$W/m.gets") mirror requests carry ns=$O_HOST"

echo "== mirror down: fail over to the origin"
bash "$PEERS/registry-up.sh" --stop --dir "$M_DIR" > /dev/null
curl -s -o /dev/null --max-time 2 "http://$M_HOST/v2/" && reg_die "the mirror still answers after --stop"
omark=$(wc -l < "$O_LOG")
MORE=(data/many/f10.txt data/many/f11.txt data/many/f12.txt blobs/random-4m.bin data/replaced/new)
t0=$(reg_now)
n=$(read_files "${MORE[@]}")
secs=$(reg_secs "$t0" "$(reg_now)")
[ "$n" -eq 0 ] && reg_ok "with the mirror down, ${#MORE[@]} uncached files read correctly ($secs s)" ||
	reg_bad "with the mirror down, $n of ${#MORE[@]} files failed ($secs s)"
sleep 0.3
nob=$(v2_gets "$O_LOG" "$omark" | grep -c '/blobs/' || true)
# (neighbouring chunks share requests: fewer requests than files is fine)
[ "$nob" -ge 1 ] && reg_ok "the origin served them ($nob blob requests)" || reg_bad "the origin served no blob request"
echo "  stats: $(timeout 10 "$LAZYIMG" stats "$MNT")"
# a dead mirror is remembered: the first failure sets it aside, later reads go straight
# to the origin instead of paying for the mirror again (it is retried after 30 s)
nd=$(grep -c "skipping it for" "$MNT.log" || true)
[ "$nd" -ge 1 ] && [ "$nd" -le 2 ] && reg_ok "the dead mirror was set aside once ($nd log line(s)), not once per request" ||
	reg_bad "the dead mirror was set aside $nd times for ${#MORE[@]} files"
reg_umount "$MNT"
t0=$(reg_now)
if reg_mount "$MNT" --ca-file "$CA" --mirror "http://$M_HOST" --no-prefetch --cache-dir "$W/cache4" "$REF"; then
	reg_ok "a new mount with the mirror down works ($(reg_secs "$t0" "$(reg_now)") s)"
	n=$(read_files etc/hello.txt blobs/random-1m.bin)
	[ "$n" -eq 0 ] && reg_ok "and reads through it equal the source" || reg_bad "$n file(s) failed"
	reg_umount "$MNT"
else
	reg_bad "mount with the mirror down failed: $(cat "$MNT.err")"
fi
reg_finish
