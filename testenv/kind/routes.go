package kind

import (
	"fmt"
	"net/netip"
	"sort"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/kind/pkg/cluster/nodes"
)

// Pod routing between clusters.
//
// Every hub server advertises its pod IP: it is in the join token, in the
// credentials the hub hands out at join, and in the Raft and gossip
// membership. So agents in the other clusters must reach the first
// cluster's pod IPs, and a Service (NodePort or otherwise) in front of the
// hub is not enough: the agent dials the addresses the hub gave it. kind
// clusters share the Docker network "kind" and their pod ranges do not
// overlap (see [Configs]), so the backend makes the pod networks routable
// to each other, as kindnet does between the nodes of one cluster: every
// node gets, for every node of every other cluster, a route to that node's
// pod range via that node's address on the "kind" network.

// NodeAddr is one node of a cluster as routing sees it.
type NodeAddr struct {
	Cluster      string
	Node         string         // the node name, which is also its container's name
	IP           netip.Addr     // on the "kind" network
	PodCIDRs     []netip.Prefix // the node's pod ranges
	ControlPlane bool           // labelled node-role.kubernetes.io/control-plane
}

// controlPlaneLabel marks control-plane nodes (kubeadm sets it).
const controlPlaneLabel = "node-role.kubernetes.io/control-plane"

// Route is one route to add on a node: Dst via Via.
type Route struct {
	Node string
	Dst  netip.Prefix
	Via  netip.Addr
}

// NodeAddrs reads the routing view of a cluster's nodes: each node's first
// IPv4 InternalIP and its IPv4 pod ranges. A node without either is an
// error (its pod range is assigned when it registers; wait for it).
func NodeAddrs(cluster string, ns []corev1.Node) ([]NodeAddr, error) {
	var out []NodeAddr
	for _, n := range ns {
		_, cp := n.Labels[controlPlaneLabel]
		a := NodeAddr{Cluster: cluster, Node: n.Name, ControlPlane: cp}
		for _, addr := range n.Status.Addresses {
			ip, err := netip.ParseAddr(addr.Address)
			if addr.Type == corev1.NodeInternalIP && err == nil && ip.Is4() {
				a.IP = ip
				break
			}
		}
		if !a.IP.IsValid() {
			return nil, fmt.Errorf("kind: cluster %s: node %s: status.addresses: no IPv4 InternalIP", cluster, n.Name)
		}
		cidrs := n.Spec.PodCIDRs
		if len(cidrs) == 0 && n.Spec.PodCIDR != "" {
			cidrs = []string{n.Spec.PodCIDR}
		}
		for _, c := range cidrs {
			p, err := netip.ParsePrefix(c)
			if err != nil {
				return nil, fmt.Errorf("kind: cluster %s: node %s: spec.podCIDRs: %w", cluster, n.Name, err)
			}
			if p.Addr().Is4() {
				a.PodCIDRs = append(a.PodCIDRs, p.Masked())
			}
		}
		if len(a.PodCIDRs) == 0 {
			return nil, fmt.Errorf("kind: cluster %s: node %s: spec.podCIDRs: no IPv4 pod range assigned yet", cluster, n.Name)
		}
		out = append(out, a)
	}
	return out, nil
}

// RoutePlan returns the routes that make every cluster's pod ranges
// reachable from every node of every other cluster, sorted by node and
// destination. Overlapping pod ranges or node addresses are an error: they
// cannot be routed.
func RoutePlan(addrs []NodeAddr) ([]Route, error) {
	seenIP := map[netip.Addr]string{}
	var all []struct {
		owner NodeAddr
		p     netip.Prefix
	}
	for _, a := range addrs {
		if !a.IP.IsValid() {
			return nil, fmt.Errorf("kind: node %s/%s: ip: not set", a.Cluster, a.Node)
		}
		if other, ok := seenIP[a.IP]; ok {
			return nil, fmt.Errorf("kind: node %s/%s: ip %s is also node %s's", a.Cluster, a.Node, a.IP, other)
		}
		seenIP[a.IP] = a.Cluster + "/" + a.Node
		for _, p := range a.PodCIDRs {
			for _, o := range all {
				if o.p.Overlaps(p) {
					return nil, fmt.Errorf("kind: node %s/%s: pod range %s overlaps %s of node %s/%s", a.Cluster, a.Node, p, o.p, o.owner.Cluster, o.owner.Node)
				}
			}
			all = append(all, struct {
				owner NodeAddr
				p     netip.Prefix
			}{a, p})
		}
	}
	var routes []Route
	for _, on := range addrs {
		for _, to := range addrs {
			if to.Cluster == on.Cluster {
				continue // kindnet routes within a cluster
			}
			for _, p := range to.PodCIDRs {
				routes = append(routes, Route{Node: on.Node, Dst: p, Via: to.IP})
			}
		}
	}
	sort.Slice(routes, func(i, j int) bool {
		if routes[i].Node != routes[j].Node {
			return routes[i].Node < routes[j].Node
		}
		return routes[i].Dst.String() < routes[j].Dst.String()
	})
	return routes, nil
}

// AddRoutes adds each route to the node of ns with its name, with `ip route
// replace` in the node's container (so adding twice is harmless). A route
// for a node not in ns is an error.
func AddRoutes(ns []nodes.Node, routes []Route) error {
	byName := map[string]nodes.Node{}
	for _, n := range ns {
		byName[n.String()] = n
	}
	for _, r := range routes {
		n, ok := byName[r.Node]
		if !ok {
			return fmt.Errorf("kind: route %s via %s: no node %q", r.Dst, r.Via, r.Node)
		}
		if err := n.Command("ip", "route", "replace", r.Dst.String(), "via", r.Via.String()).Run(); err != nil {
			return fmt.Errorf("kind: node %s: ip route replace %s via %s: %w", r.Node, r.Dst, r.Via, err)
		}
	}
	return nil
}

// Routable reports an error naming the first address (host:port) whose IP
// is in none of prefixes: the hub addresses an agent would dial must be in
// a routed pod range.
func Routable(addrs []string, prefixes []netip.Prefix) error {
	if len(addrs) == 0 {
		return fmt.Errorf("kind: hub addresses: none")
	}
	for i, s := range addrs {
		ap, err := netip.ParseAddrPort(s)
		if err != nil {
			return fmt.Errorf("kind: hub addresses[%d]: %q: %w", i, s, err)
		}
		ok := false
		for _, p := range prefixes {
			if p.Contains(ap.Addr().Unmap()) {
				ok = true
				break
			}
		}
		if !ok {
			return fmt.Errorf("kind: hub addresses[%d]: %s is in no routed pod range %v", i, ap.Addr(), prefixes)
		}
	}
	return nil
}

// GatewayAddress picks the address imported services' EndpointSlices point
// at in a cluster: the IP of its first worker node by name (the first node
// when there is no worker). No east-west gateway runs there yet; it is where
// one on the host network would listen.
func GatewayAddress(addrs []NodeAddr) (netip.Addr, error) {
	var best *NodeAddr
	for i := range addrs {
		a := &addrs[i]
		switch {
		case best == nil,
			best.ControlPlane && !a.ControlPlane,
			best.ControlPlane == a.ControlPlane && a.Node < best.Node:
			best = a
		}
	}
	if best == nil {
		return netip.Addr{}, fmt.Errorf("kind: gateway address: no nodes")
	}
	return best.IP, nil
}
