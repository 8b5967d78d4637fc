#!/usr/bin/env bash
# down.sh deletes every kind cluster named meshfed-* (what scripts/kind/up.sh
# and testenv's kind backend create) and their kubeconfigs. The node image and
# the build cache stay (scripts/kind/images.sh).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
readonly here
export PATH="$here/bin:$PATH"
readonly CACHE_ROOT=${MESHFED_KIND_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/meshfed/kind}
kind="$CACHE_ROOT/kind-v0.33.0/kind"
if ! docker info >/dev/null 2>&1; then
	echo "kind-down: Docker does not answer: no clusters to delete" >&2
	exit 0
fi
[[ -x $kind ]] || {
	echo "kind-down: $kind not built: no clusters were created by scripts/kind/up.sh" >&2
	exit 0
}
for c in $("$kind" get clusters 2>/dev/null | grep '^meshfed-' || true); do
	"$kind" delete cluster --name "$c"
	rm -f "$CACHE_ROOT/clusters/${c#meshfed-}.kubeconfig"
done
