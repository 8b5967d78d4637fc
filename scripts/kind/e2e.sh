#!/usr/bin/env bash
# e2e.sh is `make e2e-kind`: the cross-cluster stories (package e2e/kind,
# built with the tag e2ekind) against the clusters of `make kind-up`, with
# real pods, kube-proxy and CoreDNS:
#   1. a pod in central calls reviews.default.svc.clusterset.local;
#   2. east's reviews pods are deleted under load: west answers, nothing fails;
#   3. east's gateway pod is deleted under load: west answers, nothing fails,
#      and east answers again once its new gateway is up.
# The clusters' kubeconfigs are in ${MESHFED_KIND_CACHE:-~/.cache/meshfed/kind}/clusters/.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
export PATH="$here/bin:$PATH"
command -v kubectl >/dev/null || { echo "e2e-kind: kubectl is needed on PATH" >&2; exit 1; }
cd "$root"
exec "${GO:-go}" test -tags e2ekind -count=1 -v -timeout 20m ./e2e/kind/ "$@"
