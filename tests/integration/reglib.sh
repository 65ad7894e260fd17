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
