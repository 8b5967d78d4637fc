#!/usr/bin/env bash
# testenv-bins.sh builds the Kubernetes binaries that testenv runs, from
# source through the Go module proxy, into a versioned cache folder:
#
#   ${MESHFED_TESTENV_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/meshfed/testenv}/k8s-v1.36.3-etcd-v3.6.8/
#
# Usage: testenv-bins.sh [BINARY...]
#
#   BINARY is etcd, kube-apiserver (the default: both), or
#   kube-controller-manager (only for clusters started with
#   testenv.Cluster.Controllers, e.g. `testenv up --pods`; see
#   docs/testing.md). kwok is built by scripts/kwok-bin.sh.
#
# It does nothing for a binary that is already there. The versions come from
# the tools module tools/testenv/go.mod (k8s.io/kubernetes and
# go.etcd.io/etcd/server/v3); testenv's Go code names the same folder and a
# test keeps the two in step.
#
# A cold build takes about 9 minutes on 2 cores for kube-apiserver, about
# 35 s for etcd, and about 5 more minutes for kube-controller-manager once
# kube-apiserver is built (they share most packages in the Go build cache).
# Two runs at once are serialized by a lock in the cache folder.
#
# Environment:
#   MESHFED_TESTENV_CACHE   cache root (default $XDG_CACHE_HOME/meshfed/testenv
#                           or ~/.cache/meshfed/testenv)
#   MESHFED_KUBE_APISERVER  an existing kube-apiserver binary: not built
#   MESHFED_ETCD            an existing etcd binary: not built
#   MESHFED_KUBE_CONTROLLER_MANAGER
#                           an existing kube-controller-manager binary: not built
#   GO                      the go command (default go)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

readonly TOOLS_DIR=tools/testenv
readonly GO=${GO:-go}

log() { printf 'testenv-bins: %s\n' "$*" >&2; }
die() {
	log "error: $*"
	exit 1
}

# modversion prints the version that tools/testenv/go.mod requires of module $1.
modversion() {
	awk -v m="$1" '$1 == m && $2 ~ /^v/ { print $2; exit }' "$TOOLS_DIR/go.mod"
}

K8S_VERSION=$(modversion k8s.io/kubernetes)
ETCD_VERSION=$(modversion go.etcd.io/etcd/server/v3)
[[ -n $K8S_VERSION && -n $ETCD_VERSION ]] || die "cannot read versions from $TOOLS_DIR/go.mod"
readonly K8S_VERSION ETCD_VERSION

readonly CACHE_ROOT=${MESHFED_TESTENV_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/meshfed/testenv}
readonly DEST="$CACHE_ROOT/k8s-$K8S_VERSION-etcd-$ETCD_VERSION"

# check_override reports whether env var $1 names an existing binary; it fails
# if the variable is set but the file is not executable.
check_override() {
	local name=$1 path=${!1:-}
	[[ -n $path ]] || return 1
	[[ -x $path ]] || die "$name=$path is not an executable file"
	log "$name=$path: not building"
	return 0
}

# override_var prints the environment variable that overrides binary $1.
override_var() {
	case $1 in
	etcd) echo MESHFED_ETCD ;;
	kube-apiserver) echo MESHFED_KUBE_APISERVER ;;
	kube-controller-manager) echo MESHFED_KUBE_CONTROLLER_MANAGER ;;
	kube-scheduler) echo MESHFED_KUBE_SCHEDULER ;;
	*) die "unknown binary $1: must be etcd, kube-apiserver, kube-controller-manager or kube-scheduler" ;;
	esac
}

wanted=("$@")
if ((${#wanted[@]} == 0)); then
	wanted=(etcd kube-apiserver)
fi
needed=()
for b in "${wanted[@]}"; do
	var=$(override_var "$b")
	if check_override "$var"; then continue; fi
	if [[ -x $DEST/$b ]]; then continue; fi
	needed+=("$b")
done
if ((${#needed[@]} == 0)); then
	exit 0
fi

mkdir -p "$DEST"
exec 9>"$DEST/.lock"
if ! flock -n 9; then
	log "another build holds $DEST/.lock; waiting for it"
	flock 9
fi

# build OUT PKG LDFLAGS builds package PKG of the tools module into $DEST/OUT,
# through a temporary file so that a half-written binary is never picked up.
build() {
	local out=$1 pkg=$2 ldflags=$3
	if [[ -x $DEST/$out ]]; then
		return 0 # built by the run we waited for
	fi
	local tmp
	tmp=$(mktemp "$DEST/.$out.XXXXXX")
	log "building $pkg into $DEST/$out"
	local start=$SECONDS
	if ! (cd "$TOOLS_DIR" && GOFLAGS=-mod=mod "$GO" build -ldflags "$ldflags" -o "$tmp" "$pkg"); then
		rm -f "$tmp"
		die "building $pkg failed"
	fi
	chmod 0755 "$tmp"
	mv -f "$tmp" "$DEST/$out"
	log "built $out in $((SECONDS - start))s"
}

minor=${K8S_VERSION#v1.}
minor=${minor%%.*}
readonly K8S_LDFLAGS="-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/component-base/version.gitTreeState=clean"
for b in "${needed[@]}"; do
	case $b in
	etcd) build etcd go.etcd.io/etcd/server/v3 "-s -w" ;;
	*) build "$b" "k8s.io/kubernetes/cmd/$b" "$K8S_LDFLAGS" ;;
	esac
done
log "binaries in $DEST"
