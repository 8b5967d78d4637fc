package hub

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	"github.com/meshfed/meshfed/federation"
	fedv1 "github.com/meshfed/meshfed/federation/v1"
	"github.com/meshfed/meshfed/hub/fsm"
	"github.com/meshfed/meshfed/hub/state"
)

// maximalExport is the largest export validateExport accepts (~2.5 MiB):
// every endpoint group with every label at the longest key and value.
func maximalExport(t testing.TB, name string) *fedv1.ExportedService {
	svc := &fedv1.ExportedService{Namespace: "big", Name: name}
	for p := range MaxPortsPerService {
		svc.Ports = append(svc.Ports, &fedv1.ServicePort{Name: fmt.Sprintf("p%d", p), Port: uint32(8000 + p), Protocol: "TCP"})
	}
	for g := range MaxEndpointGroups {
		labels := map[string]string{}
		for l := range MaxLabels {
			k := fmt.Sprintf("%02d-%03d-", l, g)
			labels[k+strings.Repeat("k", MaxLabelKeyLength-len(k))] = strings.Repeat("v", MaxLabelValueLength)
		}
		svc.Endpoints = append(svc.Endpoints, &fedv1.EndpointGroup{Zone: fmt.Sprintf("z%d", g), Labels: labels, Ready: 1})
	}
	if err := validateExport("svc", svc); err != nil {
		t.Fatal(err)
	}
	return svc
}

func TestSplitDeltaKeepsEveryMessageUnderTheByteLimit(t *testing.T) {
	big := maximalExport(t, "a")
	if n := proto.Size(big); n < 2<<20 || n > MaxMessageSize {
		t.Fatalf("maximal export is %d bytes, want 2..4 MiB", n)
	}
	d := &state.Delta{Revision: 99, Reset: true, Removed: map[string][]string{}}
	for i := range 30 { // 30 × 2.5 MiB: far above the agents' 64 MiB limit in one message
		svc := proto.Clone(big).(*fedv1.ExportedService)
		svc.Name = fmt.Sprintf("s%d", i)
		d.Exports = append(d.Exports, &fedv1.ExportRecord{Cluster: "big", Service: svc})
	}
	for i := range 2000 {
		d.Clusters = append(d.Clusters, &fedv1.ClusterRecord{Name: fmt.Sprintf("c%d", i)})
	}
	d.RemovedExports = []state.ExportID{{Cluster: federation.MustClusterName("gone"), Service: federation.MustServiceKey("ns/a")}}
	msgs := splitDelta(d)
	var exports, clusters, removed int
	for i, m := range msgs {
		if n := proto.Size(&fedv1.SyncResponse{Msg: &fedv1.SyncResponse_Delta{Delta: m}}); n > MaxDeltaBytes {
			t.Fatalf("message %d is %d bytes, at most %d", i, n, MaxDeltaBytes)
		}
		if n := len(m.GetClusters()) + len(m.GetExports()) + len(m.GetRemovedExports()); n > MaxDeltaRecords {
			t.Fatalf("message %d has %d records, at most %d", i, n, MaxDeltaRecords)
		}
		if (m.GetRevision() != 0) != (i == len(msgs)-1) {
			t.Fatalf("message %d of %d has revision %d: only the last carries it", i, len(msgs), m.GetRevision())
		}
		if m.GetReset_() != (i == 0) {
			t.Fatalf("message %d: reset %v, want only on the first", i, m.GetReset_())
		}
		exports += len(m.GetExports())
		clusters += len(m.GetClusters())
		removed += len(m.GetRemovedExports())
	}
	if exports != 30 || clusters != 2000 || removed != 1 {
		t.Fatalf("split carries %d exports, %d clusters, %d removals; want 30, 2000, 1", exports, clusters, removed)
	}
}

// A member publishes maximal exports up to its byte quota; the next is
// refused naming the bound, and every other agent still gets the whole
// catalog in messages its default gRPC receive limit (4 MiB) takes.
func TestClusterAtItsExportQuotaLeavesEveryOtherAgentSyncing(t *testing.T) {
	h := newTestHub(t, 3)
	admin := h.Admin()
	big := joinCluster(t, admin, "big")
	bs, err := big.sync(0, "")
	if err != nil {
		t.Fatal(err)
	}
	per := proto.Size(maximalExport(t, "x"))
	fits := fsm.MaxExportBytesPerCluster / per
	for i := range fits {
		res, err := bs.publishRetrying(uint64(i+1), []*fedv1.ExportedService{maximalExport(t, fmt.Sprintf("s%d", i))})
		if err != nil {
			t.Fatal(err)
		}
		if res.GetErrorCode() != "" {
			t.Fatalf("export %d of %d within the quota: %s %s", i, fits, res.GetErrorCode(), res.GetError())
		}
	}
	res, err := bs.publishRetrying(100, []*fedv1.ExportedService{maximalExport(t, "over")})
	if err != nil {
		t.Fatal(err)
	}
	if res.GetErrorCode() != codes.ResourceExhausted.String() || !strings.Contains(res.GetError(), fmt.Sprint(fsm.MaxExportBytesPerCluster)) {
		t.Fatalf("export past the quota: %s %q, want ResourceExhausted naming %d", res.GetErrorCode(), res.GetError(), fsm.MaxExportBytesPerCluster)
	}
	// Shrinking is allowed at the quota.
	if res, err := bs.publishRetrying(101, nil, "big/s0"); err != nil || res.GetErrorCode() != "" {
		t.Fatalf("delete at the quota: %v %s %s", err, res.GetErrorCode(), res.GetError())
	}

	for i, name := range []string{"east", "west", "north"} {
		a := joinCluster(t, admin, name)
		conn, err := a.dial(h.Server(i).GRPCAddr()) // gRPC's default 4 MiB receive limit
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = conn.Close() })
		a.conn = conn
		st, err := a.sync(0, "")
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		waitExports := func() error {
			_, err := st.next(func(*fedv1.SyncResponse) bool {
				n := 0
				for k := range st.exports {
					if strings.HasPrefix(k, "big/") {
						n++
					}
				}
				return n == fits-1
			})
			return err
		}
		done := make(chan error, 1)
		go func() { done <- waitExports() }()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("%s syncing the catalog: %v", name, err)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("%s: the catalog did not arrive in 30 s", name)
		}
	}
}
