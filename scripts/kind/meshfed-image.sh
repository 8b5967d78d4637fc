#!/usr/bin/env bash
# meshfed-image.sh builds meshfed's image FROM scratch, with no registry
# (deploy/Dockerfile's bases, golang and distroless, cannot be pulled here):
# `go build` of ./cmd/meshfed on the host (CGO_ENABLED=0, as the Dockerfile
# does), then `docker import` of a tree with /meshfed, /etc/passwd and
# /etc/group naming the distroless nonroot user 65532, and /tmp; the image
# runs as 65532:65532 with ENTRYPOINT ["/meshfed"], as deploy/Dockerfile's.
#
# Usage: meshfed-image.sh [TAG]   (default meshfed:kind)
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
tag=${1:-meshfed:kind}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/tree/etc" "$work/tree/tmp"
chmod 1777 "$work/tree/tmp"
version=$(git -C "$root" describe --tags --always --dirty 2>/dev/null || echo dev)
commit=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)
(cd "$root" && CGO_ENABLED=0 "${GO:-go}" build -trimpath -ldflags "-s -w -X main.version=$version -X main.commit=$commit" -o "$work/tree/meshfed" ./cmd/meshfed)
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$work/tree/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' >"$work/tree/etc/group"
tar -C "$work/tree" --numeric-owner --owner=0 --group=0 --sort=name -cf "$work/meshfed.tar" .
old=$(docker image inspect -f '{{ .Id }}' "$tag" 2>/dev/null || true)
docker import --change 'USER 65532:65532' --change 'ENTRYPOINT ["/meshfed"]' "$work/meshfed.tar" "$tag" >/dev/null
# the previous build, now untagged (kept if a container still uses it)
if [[ -n $old && $old != "$(docker image inspect -f '{{ .Id }}' "$tag")" ]]; then
	docker rmi "$old" >/dev/null 2>&1 || true
fi
echo "meshfed-image: $tag ($version)" >&2
