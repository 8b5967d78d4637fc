#!/usr/bin/env bash
# install.sh installs meshfed into the clusters of scripts/kind/up.sh, from
# deploy/, the steps of testenv's kind backend (docs/testing.md) by hand:
#   1. pod routes between the clusters' nodes (hub servers advertise pod IPs);
#   2. meshfed's image (scripts/kind/meshfed-image.sh, FROM scratch) into
#      every cluster with `kind load docker-image`;
#   3. the CRDs (deploy/kustomize/crds) into every cluster;
#   4. the hub (deploy/kustomize/hub, image tag kind) into the first cluster,
#      with a fresh encrypt key, until its three servers are ready;
#   5. an agent (deploy/kustomize/agent) per cluster: a token from the hub,
#      the join/ component until the credentials Secret exists, then the
#      plain Deployment; until `meshfed clusters list` shows it connected.
# Gateways and workloads are not installed (see docs/testing.md).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
export PATH="$here/bin:$PATH"
readonly CACHE_ROOT=${MESHFED_KIND_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/meshfed/kind}
readonly CLUSTERS=${KIND_CLUSTERS:-central:eu-central:eu-central-1a east:us-east:us-east-1a west:us-west:us-west-1a}
readonly IMAGE=meshfed:kind
kind="$CACHE_ROOT/kind-v0.33.0/kind"

log() { printf 'kind-install: %s\n' "$*" >&2; }
die() {
	log "error: $*"
	exit 1
}
kc() {
	local c=$1
	shift
	kubectl --kubeconfig "$CACHE_ROOT/clusters/$c.kubeconfig" "$@"
}

names=()
declare -A region zone
for c in $CLUSTERS; do
	IFS=: read -r n r z <<<"$c"
	names+=("$n")
	region[$n]=$r
	zone[$n]=$z
	[[ -s $CACHE_ROOT/clusters/$n.kubeconfig ]] || die "cluster $n: no kubeconfig; run make kind-up first"
done
hubc=${names[0]}

# 1. routes: every node gets, for each node of every other cluster, a route
# to that node's pod range via its address on the Docker network "kind".
declare -A cidr ip
for n in "${names[@]}"; do
	while read -r node c a; do
		cidr[$node]=$c
		ip[$node]=$a
		echo "$n $node" >>"$CACHE_ROOT/clusters/.nodes.$$"
	done < <(kc "$n" get nodes -o jsonpath='{range .items[*]}{.metadata.name} {.spec.podCIDR} {.status.addresses[?(@.type=="InternalIP")].address}{"\n"}{end}')
done
while read -r na a; do
	while read -r nb b; do
		[[ $na == "$nb" ]] && continue
		docker exec "$a" ip route replace "${cidr[$b]}" via "${ip[$b]}"
	done <"$CACHE_ROOT/clusters/.nodes.$$"
done <"$CACHE_ROOT/clusters/.nodes.$$"
rm -f "$CACHE_ROOT/clusters/.nodes.$$"
log "routes between the clusters' pod ranges added"

# 2. image
"$here/meshfed-image.sh" "$IMAGE"
for n in "${names[@]}"; do "$kind" load docker-image "$IMAGE" --name "meshfed-$n" >/dev/null; done
log "$IMAGE loaded into every cluster"

# 3. CRDs
for n in "${names[@]}"; do kc "$n" apply -k "$root/deploy/kustomize/crds" >/dev/null; done
for n in "${names[@]}"; do kc "$n" wait --for condition=Established crd --all --timeout 60s >/dev/null; done

# overlay DIR BASE [COMPONENT] [CLUSTER]: a kustomization in DIR over BASE
# (relative paths: kustomize refuses absolute ones) with the image tag kind.
overlay() {
	local dir=$1 base=$2 comp=${3:-} n=${4:-}
	mkdir -p "$dir"
	{
		printf 'apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - %s\n' "$(realpath --relative-to="$dir" "$base")"
		printf 'images:\n  - name: meshfed\n    newTag: kind\n'
		[[ -n $comp ]] && printf 'components:\n  - %s\n' "$(realpath --relative-to="$dir" "$comp")"
		if [[ -n $n ]]; then
			printf 'configMapGenerator:\n  - name: meshfed-agent\n    behavior: merge\n    literals: [cluster=%s, region=%s, zone=%s, gateway-address=%s]\n' \
				"$n" "${region[$n]}" "${zone[$n]}" "$(kc "$n" get nodes -o jsonpath='{.items[0].status.addresses[?(@.type=="InternalIP")].address}')"
		fi
	} >"$dir/kustomization.yaml"
}

# 4. hub
if ! kc "$hubc" -n meshfed-system get statefulset meshfed-hub >/dev/null 2>&1; then
	kc "$hubc" create namespace meshfed-system >/dev/null
	kc "$hubc" -n meshfed-system create secret generic meshfed-hub-encrypt \
		--from-literal=encrypt-key="$(docker run --rm "$IMAGE" hub keygen)" >/dev/null
	overlay "$CACHE_ROOT/overlays/hub" "$root/deploy/kustomize/hub"
	kc "$hubc" apply -k "$CACHE_ROOT/overlays/hub" >/dev/null
fi
kc "$hubc" -n meshfed-system rollout status statefulset/meshfed-hub --timeout 5m
hub() { kc "$hubc" -n meshfed-system exec meshfed-hub-0 -c hub -- /meshfed "$@" --config /var/lib/meshfed/admin.yaml; }

# 5. agents
for n in "${names[@]}"; do
	if kc "$n" -n meshfed-system get secret meshfed-agent-credentials >/dev/null 2>&1; then
		log "agent $n: credentials stored already"
	else
		token=$(hub token create --cluster "$n" -o json | jq -r .token)
		[[ -n $token && $token != null ]] || die "no token for $n"
		kc "$n" create namespace meshfed-system --dry-run=client -o yaml | kc "$n" apply -f - >/dev/null
		kc "$n" -n meshfed-system delete secret meshfed-join-token --ignore-not-found >/dev/null
		kc "$n" -n meshfed-system create secret generic meshfed-join-token --from-literal=token="$token" >/dev/null
		overlay "$CACHE_ROOT/overlays/$n/join" "$root/deploy/kustomize/agent" "$root/deploy/kustomize/agent/join" "$n"
		kc "$n" apply -k "$CACHE_ROOT/overlays/$n/join" >/dev/null
		ok=""
		for _ in $(seq 1 150); do
			if kc "$n" -n meshfed-system get secret meshfed-agent-credentials >/dev/null 2>&1; then ok=1 && break; fi
			sleep 2
		done
		[[ -n $ok ]] || die "agent $n: no credentials after 5 min: $(kc "$n" -n meshfed-system get pods 2>&1; kc "$n" -n meshfed-system logs deploy/meshfed-agent --tail 5 2>&1)"
	fi
	overlay "$CACHE_ROOT/overlays/$n/agent" "$root/deploy/kustomize/agent" "" "$n"
	kc "$n" apply -k "$CACHE_ROOT/overlays/$n/agent" >/dev/null
	kc "$n" -n meshfed-system rollout status deployment/meshfed-agent --timeout 5m
	kc "$n" -n meshfed-system delete secret meshfed-join-token --ignore-not-found >/dev/null
	log "agent $n running"
done
hub clusters list
