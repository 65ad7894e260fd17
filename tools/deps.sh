#!/usr/bin/env bash
# Installs the Debian 12 packages lazyimg needs to build, test, fuzz and bench (run as root).
set -euo pipefail
pkgs=(
	build-essential pkg-config clang bc
	libfuse3-dev fuse3 libcurl4-openssl-dev liburing-dev libzstd-dev liblz4-dev libssl-dev
	zlib1g-dev libxxhash-dev libjson-c-dev libyajl-dev libdeflate-dev
	libprotobuf-c-dev protobuf-c-compiler libprotobuf-dev libgrpc-dev gnuplot-nox iproute2 containerd runc
	python3 b3sum attr tree erofs-utils util-linux kmod procps debootstrap
	golang-go golang-github-containerd-stargz-snapshotter-dev stargz-snapshotter busybox-static
	python3-prometheus-client systemd
	docker-registry skopeo jq apache2-utils curl openssl
)
missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	export DEBIAN_FRONTEND=noninteractive
	apt-get update
	apt-get install -y --no-install-recommends "${missing[@]}"
fi
# FUSE needs its device node; containers sometimes lack it
[ -e /dev/fuse ] || { mknod /dev/fuse c 10 229 && chmod 666 /dev/fuse; } || true
echo "deps: all packages present"
