#!/usr/bin/env bash
# conformance.sh runs the MCS API project's conformance suite against a
# testenv federation: `testenv up --clusters 2 --pods` (two clusters with
# simulated pods, a hub, an agent and a gateway each), then, in the given
# checkout of kubernetes-sigs/mcs-api (kept outside this repository; its code
# is never copied in):
#
#   go -C <checkout>/conformance test . -contexts c1,c2 -kubeconfig <file>
#
# Usage: scripts/conformance.sh <path to a kubernetes-sigs/mcs-api checkout>
#
# The suite's results go to $CONFORMANCE_OUT (default .conformance/): the
# go test output (conformance.log), Ginkgo's JSON and JUnit reports, and the
# federation's process logs (testenv/, kept). The exit status is the
# suite's. $CONFORMANCE_ARGS adds flags for the suite, e.g.
# CONFORMANCE_ARGS='-ginkgo.label-filter=!Connectivity&&!DNS'.
# See docs/testing.md for what passes and why.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
readonly GO=${GO:-go}
log() { printf 'conformance: %s\n' "$*" >&2; }
die() {
	log "error: $*"
	exit 2
}

[[ $# -eq 1 && -n $1 ]] || die "usage: $0 <path to a kubernetes-sigs/mcs-api checkout> (make conformance MCS_API=...)"
MCS_API=$(cd "$1" && pwd) || die "$1: no such folder"
[[ -f $MCS_API/conformance/go.mod ]] || die "$MCS_API/conformance/go.mod: not a kubernetes-sigs/mcs-api checkout"
case $MCS_API/ in
"$PWD"/*) die "$MCS_API is inside this repository; check mcs-api out elsewhere" ;;
esac

OUT=${CONFORMANCE_OUT:-.conformance}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
rm -rf "$OUT/testenv"
readonly OUT KUBECONFIG_FILE="$OUT/kubeconfig"

log "building testenv and meshfed"
"$GO" build -o "$OUT/testenv-cmd" ./testenv/cmd/testenv
"$GO" build -o "$OUT/meshfed" ./cmd/meshfed

log "starting the federation (testenv up --clusters 2 --pods); its output: $OUT/testenv.log"
MESHFED_BINARY="$OUT/meshfed" "$OUT/testenv-cmd" up --clusters 2 --pods \
	--kubeconfig "$KUBECONFIG_FILE" --dir "$OUT/testenv" >"$OUT/testenv.log" 2>&1 &
up_pid=$!
stop() {
	if kill -0 "$up_pid" 2>/dev/null; then
		log "stopping the federation"
		kill -TERM "$up_pid" 2>/dev/null || true
		wait "$up_pid" 2>/dev/null || true
	fi
}
trap stop EXIT

deadline=$((SECONDS + 300))
until [[ -s $KUBECONFIG_FILE ]]; do
	kill -0 "$up_pid" 2>/dev/null || {
		cat "$OUT/testenv.log" >&2
		die "testenv up exited before it was ready"
	}
	((SECONDS < deadline)) || die "testenv up not ready after 300 s; see $OUT/testenv.log"
	sleep 1 # polling a file another process writes; there is no event to wait on
done
sed -n '/^CLUSTER/,$p' "$OUT/testenv.log" >&2

log "running the suite in $MCS_API/conformance ($(git -C "$MCS_API" describe --tags --always 2>/dev/null || echo 'no git'))"
set +e
# shellcheck disable=SC2086 # CONFORMANCE_ARGS is split on purpose
"$GO" -C "$MCS_API/conformance" test -v . -count=1 -timeout 60m -args \
	-contexts c1,c2 -kubeconfig "$KUBECONFIG_FILE" \
	-ginkgo.v -ginkgo.json-report "$OUT/report.json" -ginkgo.junit-report "$OUT/junit.xml" \
	${CONFORMANCE_ARGS:-} 2>&1 | tee "$OUT/conformance.log"
status=${PIPESTATUS[0]}
set -e
log "suite exit status $status; reports in $OUT"
exit "$status"
