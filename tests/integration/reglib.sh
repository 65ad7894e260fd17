# Shared helpers for the registry tests (sourced). Starts real peers on
# 127.0.0.1 through ../shared/peers and stops them by pid in cleanup.
PEERS=${LAZYIMG_PEERS:-$TOP/../shared/peers}

free_port() {
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# start_registry DIR [registry-up.sh args...]: exports REGISTRY_HOST, REGISTRY_LOG, ...
start_registry() {
	local dir=$1; shift
	local port
	port=$(free_port)
	# the token server takes port+1: make sure it is free too
	while ! python3 -c "import socket,sys; s=socket.socket(); s.bind(('127.0.0.1',$port+1))" 2>/dev/null; do
		port=$(free_port)
	done
	bash "$PEERS/registry-up.sh" --dir "$dir" --port "$port" "$@" > "$dir.env.out" 2>&1 || {
		cat "$dir.env.out" >&2; return 1; }
	set -a; . "$dir/registry.env"; set +a
	REG_DIRS+=("$dir")
}

stop_registries() {
	local d
	for d in "${REG_DIRS[@]:-}"; do
		[ -n "$d" ] && bash "$PEERS/registry-up.sh" --stop --dir "$d" >/dev/null 2>&1 || true
	done
}

# push_small_image WORKDIR: the 3-layer synthetic OCI image as $REGISTRY_HOST/small:v1
push_small_image() {
	local work=$1; shift
	bash "$PEERS/build-test-images.sh" --work "$work" --registry "$REGISTRY_HOST" --no-debian "$@" \
		> "$work.build.log" 2>&1 || { tail -20 "$work.build.log" >&2; return 1; }
}

# registry_blob_gets LOG FROM_LINE: "status bytes digest" for each blob GET after FROM_LINE
registry_blob_gets() {
	tail -n +"$(($2 + 1))" "$1" | grep -E '"GET /v2/[^ ]*/blobs/sha256:' |
		sed -E 's|.*"GET /v2/[^ ]*/blobs/(sha256:[0-9a-f]+) HTTP[^"]*" ([0-9]+) ([0-9]+).*|\2 \3 \1|'
}

# ---------------------------------------------------------------------------
# Helpers of the registry auth/fault/restart/concurrency/TLS tests (41-45).
# Everything started here is recorded (REG_PIDS, REG_MOUNTS, REG_SERVER_PID)
# and reg_cleanup stops exactly that, by pid. Results: reg_ok / reg_bad print
# one line each and the script goes on; reg_finish exits 1 if any check failed.
REG_PIDS=()
REG_MOUNTS=()
declare -gA REG_SERVER_PID=()
REG_NCHECK=0
REG_NFAIL=0
REG_T0=$(date +%s)
TOOLS=${TOOLS:-$TOP/tests/tools}

reg_ok() { REG_NCHECK=$((REG_NCHECK + 1)); echo "ok: $*"; }
reg_bad() { REG_NCHECK=$((REG_NCHECK + 1)); REG_NFAIL=$((REG_NFAIL + 1)); echo "FAIL: $*"; }
reg_die() { echo "FAIL: $*"; echo "aborting"; exit 1; }
reg_check() { if eval "$2"; then reg_ok "$1"; else reg_bad "$1"; fi; }
reg_finish() {
	echo "$REG_NCHECK checks, $REG_NFAIL failed ($(( $(date +%s) - REG_T0 )) s)"
	[ "$REG_NFAIL" -eq 0 ] || exit 1
	echo PASS
	exit 0
}
reg_now() { date +%s.%N; }
reg_secs() { python3 -c "import sys; print('%.1f' % (float(sys.argv[2]) - float(sys.argv[1])))" "$1" "$2"; }

# reg_is_mounted MNT
reg_is_mounted() { awk -v m="$1" '$2 == m { f = 1 } END { exit !f }' /proc/mounts; }

# reg_serves PID MNT: PID is a `lazyimg mount ... MNT` process (not a zombie)
reg_serves() {
	local args=() st
	[ -r "/proc/$1/cmdline" ] || return 1
	st=$(sed -E 's/^[0-9]+ \(.*\) ([A-Z]).*/\1/' "/proc/$1/stat" 2>/dev/null) || return 1
	[ "$st" != Z ] && [ "$st" != X ] || return 1
	{ mapfile -d '' args < "/proc/$1/cmdline"; } 2>/dev/null || return 1
	[ "${#args[@]}" -ge 3 ] && [ "$(basename -- "${args[0]}")" = lazyimg ] &&
		[ "${args[1]}" = mount ] && [ "${args[${#args[@]} - 1]}" = "$2" ]
}

# reg_server_pid MNT: pid of the background server of MNT
reg_server_pid() {
	local p
	for p in /proc/[0-9]*; do
		p=${p#/proc/}
		reg_serves "$p" "$1" && { echo "$p"; return 0; }
	done
	return 1
}

# reg_mount MNT ARGS...: `lazyimg mount --log-file MNT.log ARGS MNT` (MNT absolute); its
# stderr goes to MNT.err. Records the server pid. Returns lazyimg's status.
reg_mount() {
	local mnt=$1 rc=0; shift
	mkdir -p "$mnt"
	REG_MOUNTS+=("$mnt")
	timeout -k 5 90 "$LAZYIMG" mount --log-file "$mnt.log" "$@" "$mnt" 2> "$mnt.err" || rc=$?
	if [ "$rc" -ne 0 ]; then
		return "$rc"
	fi
	REG_SERVER_PID[$mnt]=$(reg_server_pid "$mnt") || { echo "no server process found for $mnt"; return 1; }
	return 0
}

# reg_umount MNT: lazyimg umount (else umount -l), then wait for the server to exit
reg_umount() {
	local mnt=$1 p=${REG_SERVER_PID[$1]:-}
	if reg_is_mounted "$mnt"; then
		timeout -k 5 30 "$LAZYIMG" umount "$mnt" || umount -l "$mnt" || true
	fi
	for _ in $(seq 100); do
		{ [ -n "$p" ] && reg_serves "$p" "$mnt"; } || break
		sleep 0.1
	done
	if [ -n "$p" ] && reg_serves "$p" "$mnt"; then
		echo "server $p of $mnt still running after umount: killing it"
		kill -9 "$p" 2>/dev/null || true
	fi
	REG_SERVER_PID[$mnt]=
}

# reg_cleanup: unmount everything reg_mount mounted, stop recorded pids and registries
reg_cleanup() {
	local m p
	for m in "${REG_MOUNTS[@]:-}"; do
		[ -n "$m" ] || continue
		if reg_is_mounted "$m"; then
			timeout -k 5 20 "$LAZYIMG" umount "$m" >/dev/null 2>&1 || umount -l "$m" 2>/dev/null || true
		fi
		p=${REG_SERVER_PID[$m]:-}
		if [ -n "$p" ] && reg_serves "$p" "$m"; then
			kill "$p" 2>/dev/null || true
			sleep 0.5
			reg_serves "$p" "$m" && kill -9 "$p" 2>/dev/null || true
		fi
	done
	for p in "${REG_PIDS[@]:-}"; do
		[ -n "$p" ] && kill "$p" 2>/dev/null || true
	done
	stop_registries
}

# reg_stat MNT KEY: one field of `lazyimg stats MNT`
reg_stat() {
	timeout 10 "$LAZYIMG" stats "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$2"
}

# reg_fifo_read FIFO SECONDS: the readiness line a helper writes to FIFO once it listens
reg_fifo_read() { timeout "$2" head -n 1 "$1"; }

# start_faultproxy DIR UPSTREAM_HOST:PORT [faultproxy args...]: sets PROXY_HOST,
# PROXY_PORT, PROXY_LOG, PROXY_CTL (control file, starts as "pass"), PROXY_PID
start_faultproxy() {
	local dir=$1 up=$2; shift 2
	mkdir -p "$dir"
	PROXY_LOG=$dir/proxy.log PROXY_CTL=$dir/control
	: > "$PROXY_LOG"
	echo pass > "$PROXY_CTL"
	rm -f "$dir/ready"; mkfifo "$dir/ready"
	python3 "$TOOLS/faultproxy.py" --upstream "$up" --control "$PROXY_CTL" --log "$PROXY_LOG" \
		--notify "$dir/ready" "$@" 2> "$dir/proxy.err" &
	PROXY_PID=$!
	REG_PIDS+=("$PROXY_PID")
	PROXY_PORT=$(reg_fifo_read "$dir/ready" 10) || { cat "$dir/proxy.err" >&2; return 1; }
	PROXY_HOST=127.0.0.1:$PROXY_PORT
}

# fp_set CTLFILE LINE...: replace the fault plan (atomically: the proxy sees all or nothing)
fp_set() {
	local f=$1; shift
	printf '%s\n' "$@" > "$f.tmp"
	mv -f "$f.tmp" "$f"
}

# fp_lines LOG FROM_LINE: proxy log lines after FROM_LINE, in request order (seq)
fp_lines() { tail -n +"$(($2 + 1))" "$1" | sort -t "$(printf '\t')" -k2,2n; }

# small_nydus TAG [convert args...]: convert $REGISTRY_HOST/small:v1 to small:TAG
small_nydus() {
	local tag=$1; shift
	timeout -k 5 120 "$LAZYIMG" convert -q --insecure "$@" "$REGISTRY_HOST/small:v1" "$REGISTRY_HOST/small:$tag"
}

# unpack_small IMGWORK DEST: the source image's layers unpacked with whiteouts (the oracle)
unpack_small() {
	python3 "$TOOLS/oci_unpack.py" "$2" "$1/small/l1.tar" "$1/small/l2.tar" "$1/small/l3.tar"
}

# tree_same SRC MNT [SECONDS]: every entry of MNT equals SRC (content, types, link targets);
# prints the differences. Bounded by a timeout (default 120 s).
tree_same() {
	local out rc=0
	out=$(timeout -k 5 "${3:-120}" diff -r --no-dereference "$1" "$2" 2>&1) || rc=$?
	[ "$rc" -eq 0 ] && return 0
	printf '%s\n' "$out" | head -n 20 | sed 's/^/    | /'
	[ "$rc" -eq 124 ] && echo "    | (diff timed out)"
	return 1
}

# start_registry_clean DIR [registry-up.sh args...]: start_registry for a second (third...)
# registry in one script. start_registry exports REGISTRY_HOST, REGISTRY_LOG, ... and
# docker-registry reads REGISTRY_* environment variables as configuration overrides
# (REGISTRY_LOG=/path breaks its `log:` section), so un-export them first; the values stay.
start_registry_clean() {
	local v
	for v in $(compgen -e | grep '^REGISTRY_' || true); do export -n "$v"; done
	start_registry "$@"
}
