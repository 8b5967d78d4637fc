#!/usr/bin/env bash
# kwok-bin.sh builds kwok (sigs.k8s.io/kwok, pinned in tools/kwok/go.mod)
# into a versioned cache folder, with its configuration beside it:
#
#   ${MESHFED_TESTENV_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/meshfed/testenv}/kwok-<version>/kwok
#   ${MESHFED_TESTENV_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/meshfed/testenv}/kwok-<version>/kwok.yaml
#
# kwok.yaml is kwok's own stock "fast" stages, the ones `kwokctl create
# cluster` configures by default (node-initialize, node-heartbeat-with-lease,
# pod-ready, pod-complete, pod-delete), concatenated from the kwok module's
# kustomize/stage folder in the Go module cache: meshfed writes none of them.
#
# It does nothing when both files are already there. A cold build takes
# about 2 minutes on 2 cores. MESHFED_KWOK names an existing kwok binary
# instead (the stages are still written).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

readonly TOOLS_DIR=tools/kwok
readonly GO=${GO:-go}
log() { printf 'kwok-bin: %s\n' "$*" >&2; }
die() {
	log "error: $*"
	exit 1
}

VERSION=$(awk '$1 == "sigs.k8s.io/kwok" && $2 ~ /^v/ { print $2; exit }' "$TOOLS_DIR/go.mod")
[[ -n $VERSION ]] || die "cannot read the kwok version from $TOOLS_DIR/go.mod"
readonly VERSION
readonly DEST="${MESHFED_TESTENV_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/meshfed/testenv}/kwok-$VERSION"

need_bin=1
if [[ -n ${MESHFED_KWOK:-} ]]; then
	[[ -x $MESHFED_KWOK ]] || die "MESHFED_KWOK=$MESHFED_KWOK is not an executable file"
	need_bin=0
fi
if [[ -x $DEST/kwok ]]; then need_bin=0; fi
if ((!need_bin)) && [[ -s $DEST/kwok.yaml ]]; then
	exit 0
fi

mkdir -p "$DEST"
exec 9>"$DEST/.lock"
if ! flock -n 9; then
	log "another build holds $DEST/.lock; waiting for it"
	flock 9
fi

if [[ ! -s $DEST/kwok.yaml ]]; then
	moddir=$(cd "$TOOLS_DIR" && GOFLAGS=-mod=mod "$GO" mod download -json "sigs.k8s.io/kwok@$VERSION" |
		awk -F'"' '$2 == "Dir" { print $4; exit }')
	[[ -d $moddir ]] || die "sigs.k8s.io/kwok@$VERSION: no module folder"
	tmp=$(mktemp "$DEST/.kwok.yaml.XXXXXX")
	first=1
	for f in node/fast/node-initialize.yaml node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
		pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml; do
		[[ -s $moddir/kustomize/stage/$f ]] || die "$moddir/kustomize/stage/$f is missing"
		((first)) || echo '---' >>"$tmp"
		first=0
		cat "$moddir/kustomize/stage/$f" >>"$tmp"
	done
	chmod 0644 "$tmp"
	mv -f "$tmp" "$DEST/kwok.yaml"
	log "wrote kwok's stock stages to $DEST/kwok.yaml"
fi

if ((need_bin)) && [[ ! -x $DEST/kwok ]]; then
	tmp=$(mktemp "$DEST/.kwok.XXXXXX")
	log "building sigs.k8s.io/kwok/cmd/kwok $VERSION into $DEST/kwok"
	start=$SECONDS
	if ! (cd "$TOOLS_DIR" && GOFLAGS=-mod=mod "$GO" build -ldflags "-s -w" -o "$tmp" sigs.k8s.io/kwok/cmd/kwok); then
		rm -f "$tmp"
		die "building kwok failed"
	fi
	chmod 0755 "$tmp"
	mv -f "$tmp" "$DEST/kwok"
	log "built kwok in $((SECONDS - start))s"
fi
