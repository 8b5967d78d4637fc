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
#      plain Deployment, with --gateway NODE-IP:15443 (what remote gateways
#      dial); until `meshfed clusters list` shows it connected;
#   6. a gateway (deploy/kustomize/gateway) per cluster: one replica, its
#      QUIC ingress on the node's UDP 15443 (a hostPort: kind-cni chains
#      the portmap plugin), so NODE-IP:15443 reaches it from the other
#      clusters' gateways on the Docker network;
#   7. CoreDNS forwarding clusterset.local to the agent
#      (deploy/kustomize/agent/coredns-clusterset.md, done by a script);
#   8. the sample workloads (scripts/kind/samples.yaml), as in `make dev`:
#      default/reviews (HTTP 8080) in east and west, two instances each,
#      default/ratings (TCP echo 9090) in central; until every cluster
#      imports what the others export.
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
				"$n" "${region[$n]}" "${zone[$n]}" "$(nodeip "$n")"
			printf 'patches:\n  - target: {kind: Deployment, name: meshfed-agent}\n    patch: |-\n      - op: add\n        path: /spec/template/spec/containers/0/args/-\n        value: --gateway=%s:15443\n' "$(nodeip "$n")"
		fi
	} >"$dir/kustomization.yaml"
}

nodeip() { kc "$1" get nodes -o jsonpath='{.items[0].status.addresses[?(@.type=="InternalIP")].address}'; }

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

# 6. gateways
for n in "${names[@]}"; do
	dir="$CACHE_ROOT/overlays/$n/gateway"
	overlay "$dir" "$root/deploy/kustomize/gateway"
	cat >>"$dir/kustomization.yaml" <<-'EOF'
		patches:
		  - target: {kind: Deployment, name: meshfed-gateway}
		    patch: |-
		      - op: replace
		        path: /spec/replicas
		        value: 1
		      - op: add
		        path: /spec/template/spec/containers/0/ports/0/hostPort
		        value: 15443
	EOF
	kc "$n" apply -k "$dir" >/dev/null
done
for n in "${names[@]}"; do
	kc "$n" -n meshfed-system rollout status deployment/meshfed-gateway --timeout 5m
done
log "gateways running"

# 7. CoreDNS: clusterset.local to the agent's DNS Service
for n in "${names[@]}"; do
	corefile=$(kc "$n" -n kube-system get configmap coredns -o jsonpath='{.data.Corefile}')
	if grep -q '^clusterset.local:53' <<<"$corefile"; then
		continue
	fi
	ip=$(kc "$n" -n meshfed-system get svc meshfed-agent-dns -o jsonpath='{.spec.clusterIP}')
	corefile+=$'\n'"clusterset.local:53 {"$'\n'"    errors"$'\n'"    cache 5"$'\n'"    forward . $ip:53"$'\n'"}"
	kc "$n" -n kube-system patch configmap coredns --type merge -p "$(jq -n --arg c "$corefile" '{data: {Corefile: $c}}')" >/dev/null
	kc "$n" -n kube-system rollout restart deployment coredns >/dev/null
done
for n in "${names[@]}"; do
	kc "$n" -n kube-system rollout status deployment/coredns --timeout 3m >/dev/null
done
log "CoreDNS forwards clusterset.local to the agents"

# 8. sample workloads
sample() { # CLUSTER NAME REPLICAS KIND PORT PORT_NAME APP_PROTOCOL
	sed -e "s|@CLUSTER@|$1|g" -e "s|@ZONE@|${zone[$1]}|g" -e "s|@NAME@|$2|g" -e "s|@REPLICAS@|$3|g" \
		-e "s|@KIND@|$4|g" -e "s|@PORT@|$5|g" -e "s|@PORT_NAME@|$6|g" -e "s|@APP_PROTOCOL@|$7|g" "$here/samples.yaml" |
		kc "$1" apply -f - >/dev/null
}
for n in "${names[@]}"; do
	case $n in
	east | west) sample "$n" reviews 2 http 8080 http http ;;
	central) sample "$n" ratings 1 tcp 9090 tcp tcp ;;
	esac
done
for n in "${names[@]}"; do
	for d in $(kc "$n" -n default get deployments -o name); do
		kc "$n" -n default rollout status "$d" --timeout 3m >/dev/null
	done
done
# Every cluster imports what the others export: a ServiceImport with the
# clusters behind it.
for n in "${names[@]}"; do
	for svc in reviews ratings; do
		want=0
		for m in "${names[@]}"; do
			[[ $m == "$n" ]] && continue
			kc "$m" -n default get serviceexport "$svc" >/dev/null 2>&1 && want=1
		done
		((want)) || continue
		ok=""
		for _ in $(seq 1 90); do
			if kc "$n" -n default get serviceimport "$svc" >/dev/null 2>&1; then ok=1 && break; fi
			sleep 2
		done
		[[ -n $ok ]] || die "cluster $n: no ServiceImport $svc after 3 min"
	done
done
log "sample workloads exported and imported"
hub clusters list
