package mcsconflict

import (
	"strings"
	"testing"

	fedv1 "github.com/meshfed/meshfed/federation/v1"
)

func rec(cluster string, rev uint64, mutate func(*fedv1.ExportedService)) *fedv1.ExportRecord {
	s := &fedv1.ExportedService{Namespace: "default", Name: "web", Ports: []*fedv1.ServicePort{{Name: "http", Port: 80, Protocol: "HTTP"}}}
	if mutate != nil {
		mutate(s)
	}
	return &fedv1.ExportRecord{Cluster: cluster, CreateRevision: rev, Service: s}
}

// Resolve orders nothing itself: Sort puts the oldest first (ties by
// cluster name); each younger export is judged against it, and the oldest
// carries the union of the reasons of those that conflict with it.
func TestResolve(t *testing.T) {
	recs := []*fedv1.ExportRecord{
		rec("south", 9, func(s *fedv1.ExportedService) { s.Headless = true }),
		rec("west", 4, nil),
		rec("north", 7, func(s *fedv1.ExportedService) { s.Ports[0].Port = 8080 }),
		rec("east", 4, nil),
	}
	Sort(recs)
	var order []string
	for _, r := range recs {
		order = append(order, r.GetCluster())
	}
	if got := strings.Join(order, ","); got != "east,west,north,south" {
		t.Fatalf("order %s, want east,west,north,south", got)
	}
	c := Resolve(recs)
	if c[1].Reason != "" || c[1].PortClash {
		t.Errorf("west (same as east): %+v, want no conflict", c[1])
	}
	if c[2].Reason != "PortConflict" || !c[2].PortClash || !strings.Contains(c[2].Message, "from cluster east, wins") {
		t.Errorf("north: %+v, want a port clash that east wins", c[2])
	}
	if c[3].Reason != "TypeConflict" || c[3].PortClash {
		t.Errorf("south: %+v, want a type conflict, ports fine", c[3])
	}
	if c[0].Reason != "PortConflict,TypeConflict" || !strings.Contains(c[0].Message, "north, south") || c[0].PortClash {
		t.Errorf("east (oldest): %+v, want both reasons in Reasons order naming north and south", c[0])
	}
	if len(Resolve(nil)) != 0 {
		t.Error("Resolve(nil) is not empty")
	}
}
