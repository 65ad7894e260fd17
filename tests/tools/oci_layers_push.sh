#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# oci_layers_push.sh LAYOUT DEST_REF LAYER...
#
# Build an OCI image layout by hand from layer directories or tar files (lowest
# layer first) and push it with `skopeo copy` to a plain-HTTP loopback registry.
# A directory is packed with GNU tar first (pax format, so xattrs, long names and
# nanosecond mtimes survive; numeric owners; entries sorted; atime and ctime left
# out), a .tar is used as it is. Each tar is gzipped with `gzip -n` (no name, no
# timestamp: the same layer gives the same digest). The config carries the diff_ids
# (sha256 of each uncompressed tar), the manifest the gzip layers.
# Prints the manifest digest on stdout. Exit 0 pushed, 1 failed, 2 usage.
set -euo pipefail
[ $# -ge 3 ] || { sed -n '3,12p' "$0" >&2; exit 2; }
out=$1 ref=$2
shift 2
case "$ref" in 127.*|localhost:*) ;; *) echo "oci_layers_push.sh: loopback registries only: $ref" >&2; exit 2;; esac
for t in tar gzip jq skopeo sha256sum; do
	command -v "$t" > /dev/null || { echo "oci_layers_push.sh: $t is not installed" >&2; exit 1; }
done
rm -rf "$out"
mkdir -p "$out/blobs/sha256" "$out/tars"
echo '{"imageLayoutVersion":"1.0.0"}' > "$out/oci-layout"

# put FILE: store FILE as a blob; prints "sha256:<hex> <size>"
put() {
	local d s
	d=$(sha256sum "$1" | cut -d' ' -f1)
	s=$(stat -c %s "$1")
	mv -f "$1" "$out/blobs/sha256/$d"
	echo "sha256:$d $s"
}

layers='[]' diffids='[]' n=0
for l in "$@"; do
	n=$((n + 1))
	tarf=$out/tars/layer$n.tar
	if [ -d "$l" ]; then
		# the layer's own entries, not "./": a layer tar does not carry the root
		(cd "$l" && find . -mindepth 1 -maxdepth 1 -printf '%P\n' | LC_ALL=C sort |
			tar --sort=name --numeric-owner --xattrs --xattrs-include='*' --format=pax \
				--pax-option=delete=atime,delete=ctime -cf "$tarf" -T -) ||
			{ echo "oci_layers_push.sh: tar of $l failed" >&2; exit 1; }
	else
		cp "$l" "$tarf"
	fi
	diffids=$(jq -c --arg d "sha256:$(sha256sum "$tarf" | cut -d' ' -f1)" '. + [$d]' <<< "$diffids")
	gzip -n -6 -c "$tarf" > "$out/layer.tmp"
	read -r dg sz < <(put "$out/layer.tmp")
	layers=$(jq -c --arg d "$dg" --argjson s "$sz" \
		'. + [{mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", digest: $d, size: $s}]' <<< "$layers")
done
jq -cn --argjson ids "$diffids" '{architecture: "amd64", os: "linux", created: "2024-01-01T00:00:00Z",
	config: {Cmd: ["/bin/true"], WorkingDir: "/"}, rootfs: {type: "layers", diff_ids: $ids}}' | tr -d '\n' > "$out/cfg.tmp"
read -r cd cs < <(put "$out/cfg.tmp")
jq -cn --arg cd "$cd" --argjson cs "$cs" --argjson l "$layers" '{schemaVersion: 2,
	mediaType: "application/vnd.oci.image.manifest.v1+json",
	config: {mediaType: "application/vnd.oci.image.config.v1+json", digest: $cd, size: $cs},
	layers: $l}' | tr -d '\n' > "$out/man.tmp"
read -r md ms < <(put "$out/man.tmp")
jq -n --arg d "$md" --argjson s "$ms" '{schemaVersion: 2, manifests: [{
	mediaType: "application/vnd.oci.image.manifest.v1+json", digest: $d, size: $s,
	annotations: {"org.opencontainers.image.ref.name": "x"},
	platform: {architecture: "amd64", os: "linux"}}]}' > "$out/index.json"
timeout 120 skopeo copy --quiet --retry-times 2 --dest-tls-verify=false "oci:$out:x" "docker://$ref" >&2 ||
	{ echo "oci_layers_push.sh: skopeo copy to $ref failed" >&2; exit 1; }
echo "$md"
