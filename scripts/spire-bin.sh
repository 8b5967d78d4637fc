#!/usr/bin/env bash
# Builds spire-server (pinned in tools/spire/go.mod) into a versioned cache
# folder and prints its path. Does nothing when the binary is already there.
# MESHFED_SPIRE_SERVER points at an existing binary instead.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [[ -n "${MESHFED_SPIRE_SERVER:-}" ]]; then
  echo "$MESHFED_SPIRE_SERVER"
  exit 0
fi
version=v1.13.3
cache="${MESHFED_TESTENV_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/meshfed/testenv}/spire-$version"
bin="$cache/spire-server"
if [[ -x "$bin" ]]; then
  echo "$bin"
  exit 0
fi
mkdir -p "$cache"
echo "building spire-server $version into $cache (about 12 minutes on 2 cores, once)" >&2
(cd tools/spire && GOFLAGS=-mod=mod go build -o "$bin.tmp" github.com/spiffe/spire/cmd/spire-server)
mv "$bin.tmp" "$bin"
echo "$bin"
