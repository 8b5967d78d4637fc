package agent

import (
	"fmt"
	"testing"

	fedv1 "github.com/meshfed/meshfed/federation/v1"
	gatewayv1 "github.com/meshfed/meshfed/gateway/v1"
)

func bigGatewayConfig(n int) *gatewayConfig {
	c := emptyGatewayConfig()
	for i := range n {
		k := fmt.Sprintf("default/svc-%04d", i)
		c.imports[k] = &gatewayv1.Import{Service: k, Ports: []*gatewayv1.ImportPort{{Port: &fedv1.ServicePort{Name: "http", Port: 80}, EgressPort: uint32(15000 + i)}}}
	}
	c.bundles["east.meshfed.local"] = &fedv1.TrustBundle{TrustDomain: "east.meshfed.local", SequenceNumber: 1}
	c.clusters["east"] = &gatewayv1.RemoteCluster{Name: "east"}
	c.hub = &gatewayv1.HubState{Revision: 7, Connected: true}
	return c
}

func TestDiffGatewayConfig(t *testing.T) {
	cur := bigGatewayConfig(3)
	snap, changed := diffGatewayConfig(nil, cur)
	if !changed || !snap.GetSnapshot() || len(snap.GetImports()) != 3 || len(snap.GetBundles()) != 1 || len(snap.GetClusters()) != 1 {
		t.Fatalf("snapshot %v", snap)
	}
	if _, changed := diffGatewayConfig(cur, bigGatewayConfig(3)); changed {
		t.Fatal("equal configs differ")
	}
	next := bigGatewayConfig(2) // svc-0002 gone
	next.imports["default/svc-0000"] = &gatewayv1.Import{Service: "default/svc-0000"}
	d, changed := diffGatewayConfig(cur, next)
	if !changed || d.GetSnapshot() || len(d.GetImports()) != 1 || d.GetImports()[0].GetService() != "default/svc-0000" ||
		len(d.GetRemovedImports()) != 1 || d.GetRemovedImports()[0] != "default/svc-0002" || len(d.GetBundles()) != 0 {
		t.Fatalf("delta %v", d)
	}
	hubOnly := bigGatewayConfig(3)
	hubOnly.hub = &gatewayv1.HubState{Revision: 7}
	if d, changed := diffGatewayConfig(cur, hubOnly); !changed || d.GetHub().GetConnected() {
		t.Fatalf("a hub state change: changed %v, %v", changed, d)
	}
}

func TestSplitDelta(t *testing.T) {
	d, _ := diffGatewayConfig(nil, bigGatewayConfig(1200))
	parts := splitDelta(d)
	if len(parts) != 3 {
		t.Fatalf("%d parts, want 3 (1202 upserts, %d per message)", len(parts), maxGatewayDeltaItems)
	}
	seen := map[string]bool{}
	for i, p := range parts {
		if n := len(p.GetImports()) + len(p.GetBundles()) + len(p.GetClusters()); n > maxGatewayDeltaItems {
			t.Errorf("part %d has %d upserts", i, n)
		}
		if p.GetMore() != (i < len(parts)-1) {
			t.Errorf("part %d: more=%v", i, p.GetMore())
		}
		if p.GetSnapshot() != (i == 0) {
			t.Errorf("part %d: snapshot=%v", i, p.GetSnapshot())
		}
		if p.GetHub().GetRevision() != 7 {
			t.Errorf("part %d: hub %v", i, p.GetHub())
		}
		for _, im := range p.GetImports() {
			seen[im.GetService()] = true
		}
	}
	if len(seen) != 1200 {
		t.Errorf("%d imports across the parts, want 1200", len(seen))
	}
	if len(parts[0].GetBundles()) != 1 || len(parts[0].GetClusters()) != 1 {
		t.Error("bundles and clusters must come first")
	}
	if small := splitDelta(&gatewayv1.StreamResponse{Imports: []*gatewayv1.Import{{}}}); len(small) != 1 || small[0].GetMore() {
		t.Errorf("a small delta is split: %v", small)
	}
}

func TestGatewayConfigReuse(t *testing.T) {
	prev := bigGatewayConfig(3)
	cur := bigGatewayConfig(3)
	cur.imports["default/svc-0001"] = &gatewayv1.Import{Service: "default/svc-0001"} // changed
	cur.reuse(prev)
	if cur.imports["default/svc-0000"] != prev.imports["default/svc-0000"] || cur.hub != prev.hub || cur.bundles["east.meshfed.local"] != prev.bundles["east.meshfed.local"] {
		t.Error("equal messages are not shared")
	}
	if cur.imports["default/svc-0001"] == prev.imports["default/svc-0001"] {
		t.Error("a changed message was replaced by the old one")
	}
	d, _ := diffGatewayConfig(prev, cur)
	if len(d.GetImports()) != 1 || d.GetImports()[0].GetService() != "default/svc-0001" {
		t.Errorf("delta %v, want only svc-0001", d.GetImports())
	}
}

// Workloads ride the gateway config like the rest: upserts counted in the
// split, removals cut into messages of maxGatewayDeltaRemovals, the self
// in the first part of a split snapshot.
func TestWorkloadsInTheGatewayConfig(t *testing.T) {
	cur := emptyGatewayConfig()
	cur.self = &gatewayv1.Self{Cluster: "east"}
	for i := range 1000 {
		a := fmt.Sprintf("10.0.%d.%d", i/250, i%250)
		cur.workloads[a] = &gatewayv1.Workload{Address: a, Namespace: "shop", ServiceAccount: "checkout"}
	}
	d, changed := diffGatewayConfig(nil, cur)
	if !changed || len(d.GetWorkloads()) != 1000 {
		t.Fatalf("snapshot: changed %v, %d workloads", changed, len(d.GetWorkloads()))
	}
	parts := splitDelta(d)
	n := 0
	for i, p := range parts {
		n += len(p.GetWorkloads())
		if up := len(p.GetWorkloads()) + len(p.GetImports()); up > maxGatewayDeltaItems {
			t.Errorf("part %d: %d upserts", i, up)
		}
		if p.GetMore() != (i < len(parts)-1) {
			t.Errorf("part %d: more=%v", i, p.GetMore())
		}
	}
	if n != 1000 || parts[0].GetSelf().GetCluster() != "east" || !parts[0].GetSnapshot() {
		t.Fatalf("%d workloads in %d parts; first part self %v snapshot %v", n, len(parts), parts[0].GetSelf(), parts[0].GetSnapshot())
	}
	// Removing many: removals in bounded messages.
	next := emptyGatewayConfig()
	next.self = cur.self
	big := &gatewayv1.StreamResponse{RemovedWorkloads: make([]string, 2*maxGatewayDeltaRemovals+1)}
	if parts := splitDelta(big); len(parts) != 4 || len(parts[1].GetRemovedWorkloads()) != maxGatewayDeltaRemovals || len(parts[3].GetRemovedWorkloads()) != 1 {
		t.Fatalf("%d parts for %d removals", len(parts), len(big.GetRemovedWorkloads()))
	}
	d, _ = diffGatewayConfig(cur, next)
	if len(d.GetRemovedWorkloads()) != 1000 {
		t.Fatalf("%d removals, want 1000", len(d.GetRemovedWorkloads()))
	}
}
