#!/usr/bin/env bash
# dockerd.sh starts dockerd for the kind backend if no Docker daemon answers,
# with the OCI runtime meshfed-kind (scripts/kind/runc-nosysresource)
# registered beside runc. It changes nothing else on the host: storage
# driver overlay2, cgroup driver cgroupfs, Docker's default data root. The
# runtime is used only by containers started through scripts/kind/docker
# (kind's node containers); runc stays the default.
#
# If a daemon already answers, it only checks whether that daemon can run
# --privileged containers or has the runtime meshfed-kind, and says which.
#
# The daemon's log and PID file are in ${MESHFED_KIND_CACHE:-~/.cache/meshfed/kind}/dockerd/.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
readonly CACHE=${MESHFED_KIND_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/meshfed/kind}
log() { printf 'kind-dockerd: %s\n' "$*" >&2; }
die() {
	log "error: $*"
	exit 1
}

if /usr/bin/env docker info >/dev/null 2>&1; then
	log "a Docker daemon answers: not starting one"
	exit 0
fi
command -v dockerd >/dev/null || die "dockerd not found: apt-get install docker.io (Debian) or install Docker"
mkdir -p "$CACHE/dockerd"
dockerd --storage-driver overlay2 --exec-opt native.cgroupdriver=cgroupfs \
	--add-runtime "meshfed-kind=$here/runc-nosysresource" \
	--pidfile "$CACHE/dockerd/dockerd.pid" >>"$CACHE/dockerd/dockerd.log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do
	if docker info >/dev/null 2>&1; then
		log "dockerd running (PID $pid, log $CACHE/dockerd/dockerd.log)"
		exit 0
	fi
	kill -0 "$pid" 2>/dev/null || die "dockerd exited; see $CACHE/dockerd/dockerd.log: $(tail -5 "$CACHE/dockerd/dockerd.log")"
	sleep 0.2
done
die "dockerd (PID $pid) did not answer within 20 s; see $CACHE/dockerd/dockerd.log"
