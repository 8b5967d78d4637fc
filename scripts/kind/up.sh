#!/usr/bin/env bash
# up.sh creates meshfed's kind clusters from the node image that
# scripts/kind/images.sh built (no registry): by default three, central,
# east and west, one node each (control plane, schedulable), named
# meshfed-<cluster>, with the address ranges of testenv's kind backend
# (pods 10.<10·(i+1)>.0.0/16, services 10.<100+10·(i+1)>.0.0/16) and the
# topology labels of deploy/kind/*.yaml, then installs meshfed into them
# (scripts/kind/install.sh: hub in the first, an agent in each). Kubeconfigs go to
# ${MESHFED_KIND_CACHE:-~/.cache/meshfed/kind}/clusters/<cluster>.kubeconfig.
#
# Environment:
#   KIND_CLUSTERS      clusters to create, "name:region:zone" words
#                      (default "central:eu-central:eu-central-1a
#                      east:us-east:us-east-1a west:us-west:us-west-1a")
#   KIND_NODE_IMAGE    node image (default: the one images.sh builds if it
#                      is in Docker, else kind's default kindest/node, which
#                      kind pulls: so on a laptop with registry access the
#                      targets work unchanged)
#   KIND_WORKERS       workers per cluster besides the control plane (default 0)
#   KIND_INSTALL       1 (default): then install meshfed (scripts/kind/install.sh)
#
# Run through `make kind-up`. `make kind-down` (scripts/kind/down.sh)
# deletes the clusters.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
readonly here
export PATH="$here/bin:$PATH" # the docker shim: kind's --privileged nodes get the runtime meshfed-kind
readonly CACHE_ROOT=${MESHFED_KIND_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/meshfed/kind}
readonly KIND_VERSION=v0.33.0
readonly CLUSTERS=${KIND_CLUSTERS:-central:eu-central:eu-central-1a east:us-east:us-east-1a west:us-west:us-west-1a}
readonly WORKERS=${KIND_WORKERS:-0}

log() { printf 'kind-up: %s\n' "$*" >&2; }
die() {
	log "error: $*"
	exit 1
}

"$here/dockerd.sh"
image=${KIND_NODE_IMAGE:-$("$here/images.sh" node-image)}
image_args=(--image "$image")
if [[ -z ${KIND_NODE_IMAGE:-} ]] && ! docker image inspect "$image" >/dev/null 2>&1; then
	# Not built here: kind's own default node image, which kind pulls (a
	# laptop with registry access). Offline, `make kind-images` builds one.
	log "node image $image not built (make kind-images builds it with no registry): using kind's default node image, which needs registry access"
	image="kind's default node image"
	image_args=()
fi

kind="$CACHE_ROOT/kind-$KIND_VERSION/kind"
if [[ ! -x $kind ]]; then
	log "building kind $KIND_VERSION into $kind"
	(cd "$here/tools" && GOBIN="$(dirname "$kind")" CGO_ENABLED=0 "${GO:-go}" install "sigs.k8s.io/kind@$KIND_VERSION")
fi

mkdir -p "$CACHE_ROOT/clusters"
i=0
for c in $CLUSTERS; do
	IFS=: read -r name region zone <<<"$c"
	[[ -n $name && -n $region && -n $zone ]] || die "KIND_CLUSTERS: \"$c\": want name:region:zone"
	i=$((i + 1))
	((i <= 9)) || die "KIND_CLUSTERS: at most 9 clusters (address ranges 10.10 to 10.90)"
	kc="meshfed-$name"
	if "$kind" get clusters 2>/dev/null | grep -qx "$kc"; then
		log "$kc exists: not creating it"
		continue
	fi
	cfg="$CACHE_ROOT/clusters/$name.yaml"
	{
		printf 'kind: Cluster\napiVersion: kind.x-k8s.io/v1alpha4\nname: %s\n' "$kc"
		printf 'networking:\n  podSubnet: 10.%d.0.0/16\n  serviceSubnet: 10.%d.0.0/16\n' $((10 * i)) $((100 + 10 * i))
		printf 'nodes:\n'
		printf '  - role: control-plane\n    labels:\n      topology.kubernetes.io/region: %s\n      topology.kubernetes.io/zone: %s\n' "$region" "$zone"
		for ((w = 0; w < WORKERS; w++)); do
			printf '  - role: worker\n    labels:\n      topology.kubernetes.io/region: %s\n      topology.kubernetes.io/zone: %s\n' "$region" "$zone"
		done
	} >"$cfg"
	log "creating $kc from $image"
	start=$SECONDS
	"$kind" create cluster --config "$cfg" "${image_args[@]}" --kubeconfig "$CACHE_ROOT/clusters/$name.kubeconfig" --wait 5m ||
		die "kind create cluster $kc failed (kind export logs --name $kc /tmp/$kc-logs shows the node's journal)"
	log "$kc ready in $((SECONDS - start)) s"
done
[[ ${KIND_INSTALL:-1} == 1 ]] || exit 0
start=$SECONDS
"$here/install.sh"
log "meshfed installed in $((SECONDS - start)) s"
