package kind

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/kind/pkg/cluster/nodes"
)

func node(name, ip, podCIDR string, controlPlane bool) corev1.Node {
	n := corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{}}}
	if controlPlane {
		n.Labels[controlPlaneLabel] = ""
	}
	n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeHostName, Address: name}}
	if ip != "" {
		n.Status.Addresses = append(n.Status.Addresses, corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: ip})
	}
	if podCIDR != "" {
		n.Spec.PodCIDR, n.Spec.PodCIDRs = podCIDR, []string{podCIDR}
	}
	return n
}

// The nodes of two clusters created from Configs: east's pods in
// 10.10.0.0/16, west's in 10.20.0.0/16.
func eastWestAddrs(t *testing.T) []NodeAddr {
	t.Helper()
	east, err := NodeAddrs("east", []corev1.Node{
		node("meshfed-east-control-plane", "172.18.0.2", "10.10.0.0/24", true),
		node("meshfed-east-worker", "172.18.0.3", "10.10.1.0/24", false),
	})
	if err != nil {
		t.Fatal(err)
	}
	west, err := NodeAddrs("west", []corev1.Node{
		node("meshfed-west-control-plane", "172.18.0.4", "10.20.0.0/24", true),
		node("meshfed-west-worker", "172.18.0.5", "10.20.1.0/24", false),
	})
	if err != nil {
		t.Fatal(err)
	}
	return append(east, west...)
}

// TestRoutePlan: every node gets a route to each node of the other cluster's
// pod range via that node, and none within its own cluster (kindnet's job).
func TestRoutePlan(t *testing.T) {
	routes, err := RoutePlan(eastWestAddrs(t))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range routes {
		got = append(got, r.Node+": "+r.Dst.String()+" via "+r.Via.String())
	}
	want := []string{
		"meshfed-east-control-plane: 10.20.0.0/24 via 172.18.0.4",
		"meshfed-east-control-plane: 10.20.1.0/24 via 172.18.0.5",
		"meshfed-east-worker: 10.20.0.0/24 via 172.18.0.4",
		"meshfed-east-worker: 10.20.1.0/24 via 172.18.0.5",
		"meshfed-west-control-plane: 10.10.0.0/24 via 172.18.0.2",
		"meshfed-west-control-plane: 10.10.1.0/24 via 172.18.0.3",
		"meshfed-west-worker: 10.10.0.0/24 via 172.18.0.2",
		"meshfed-west-worker: 10.10.1.0/24 via 172.18.0.3",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("routes\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	// One cluster: nothing to route.
	if routes, err := RoutePlan(eastWestAddrs(t)[:2]); err != nil || len(routes) != 0 {
		t.Errorf("one cluster: routes %v, err %v", routes, err)
	}
}

func TestRoutePlanRejects(t *testing.T) {
	overlap := eastWestAddrs(t)
	overlap[3].PodCIDRs = []netip.Prefix{netip.MustParsePrefix("10.10.0.0/16")}
	sameIP := eastWestAddrs(t)
	sameIP[2].IP = sameIP[0].IP
	noIP := eastWestAddrs(t)
	noIP[1].IP = netip.Addr{}
	for name, addrs := range map[string][]NodeAddr{"overlap": overlap, "same ip": sameIP, "no ip": noIP} {
		if _, err := RoutePlan(addrs); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func TestNodeAddrsRejects(t *testing.T) {
	for name, n := range map[string]corev1.Node{
		"no InternalIP": node("a", "", "10.10.0.0/24", false),
		"IPv6 only":     node("a", "fc00::2", "10.10.0.0/24", false),
		"no pod range":  node("a", "172.18.0.2", "", false),
		"bad pod range": node("a", "172.18.0.2", "10.10.0.0/99", false),
	} {
		_, err := NodeAddrs("east", []corev1.Node{n})
		if err == nil || !strings.Contains(err.Error(), "east") || !strings.Contains(err.Error(), "node a") {
			t.Errorf("%s: err = %v, want one naming the cluster and node", name, err)
		}
	}
}

func TestAddRoutes(t *testing.T) {
	cp := newFakeNode(t, "meshfed-east-control-plane", nil)
	w := newFakeNode(t, "meshfed-east-worker", nil)
	routes, err := RoutePlan(eastWestAddrs(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := AddRoutes([]nodes.Node{cp, w}, routes[:4]); err != nil {
		t.Fatal(err)
	}
	want := []string{"ip route replace 10.20.0.0/24 via 172.18.0.4", "ip route replace 10.20.1.0/24 via 172.18.0.5"}
	for _, n := range []*fakeNode{cp, w} {
		if got := n.commands(); !reflect.DeepEqual(got, want) {
			t.Errorf("%s ran %q, want %q", n, got, want)
		}
	}
	// A route for a node that is not there.
	if err := AddRoutes([]nodes.Node{cp}, routes[4:5]); err == nil || !strings.Contains(err.Error(), "meshfed-west-control-plane") {
		t.Errorf("err = %v, want one naming the missing node", err)
	}
}

// TestRoutable: the hub addresses in a token must be in the routed pod
// ranges of the hub's cluster; a pod IP is, a node port on the host is not.
func TestRoutable(t *testing.T) {
	east := eastWestAddrs(t)[:2]
	var ranges []netip.Prefix
	for _, a := range east {
		ranges = append(ranges, a.PodCIDRs...)
	}
	if err := Routable([]string{"10.10.1.7:7400", "10.10.1.8:7400", "10.10.0.9:7400"}, ranges); err != nil {
		t.Error(err)
	}
	for name, addrs := range map[string][]string{
		"node address": {"10.10.1.7:7400", "172.18.0.2:30400"},
		"other pods":   {"10.20.1.7:7400"},
		"no port":      {"10.10.1.7"},
		"none":         nil,
	} {
		if err := Routable(addrs, ranges); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func TestGatewayAddress(t *testing.T) {
	east := eastWestAddrs(t)[:2]
	if ip, err := GatewayAddress(east); err != nil || ip.String() != "172.18.0.3" {
		t.Errorf("got %v, %v; want the worker's 172.18.0.3", ip, err)
	}
	// Reversed order, a second worker: still the first worker by name.
	w2 := NodeAddr{Cluster: "east", Node: "meshfed-east-worker2", IP: netip.MustParseAddr("172.18.0.9")}
	if ip, _ := GatewayAddress([]NodeAddr{w2, east[1], east[0]}); ip.String() != "172.18.0.3" {
		t.Errorf("got %v, want 172.18.0.3", ip)
	}
	// Only a control plane.
	if ip, _ := GatewayAddress(east[:1]); ip.String() != "172.18.0.2" {
		t.Errorf("got %v, want the control plane's 172.18.0.2", ip)
	}
	if _, err := GatewayAddress(nil); err == nil {
		t.Error("no nodes: no error")
	}
}
