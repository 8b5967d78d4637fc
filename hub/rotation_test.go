package hub

import (
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	fedv1 "github.com/meshfed/meshfed/federation/v1"
)

// publishBundle publishes the stream's cluster's bundle and waits for the
// result.
func (s *syncStream) publishBundle(nonce uint64, b *fedv1.TrustBundle) (*fedv1.PublishResult, error) {
	if err := s.stream.Send(&fedv1.SyncRequest{Msg: &fedv1.SyncRequest_PublishBundle{PublishBundle: &fedv1.PublishBundle{Nonce: nonce, Bundle: b}}}); err != nil {
		return nil, err
	}
	m, err := s.next(func(m *fedv1.SyncResponse) bool { return m.GetPublishResult().GetNonce() == nonce })
	if err != nil {
		return nil, err
	}
	return m.GetPublishResult(), nil
}

func (s *syncStream) ack(bundles map[string]uint64) {
	s.t.Helper()
	a := &fedv1.Ack{Revision: s.revision}
	for td, seq := range bundles {
		a.Bundles = append(a.Bundles, &fedv1.BundleSequence{TrustDomain: td, SequenceNumber: seq})
	}
	if err := s.stream.Send(&fedv1.SyncRequest{Msg: &fedv1.SyncRequest_Ack{Ack: a}}); err != nil {
		s.t.Fatal(err)
	}
}

func memberOf(resp *fedv1.RotationStatusResponse, cluster string) *fedv1.MemberBundleStatus {
	for _, m := range resp.GetMembers() {
		if m.GetCluster() == cluster {
			return m
		}
	}
	return nil
}

// The hub records each member's acknowledged bundle sequences (only
// increases), never streams them, and tells the rotating cluster it may
// switch once every member that is connected or recently seen holds its
// new bundle; a member never seen does not hold it up.
func TestBundleAcksGateTheRotatingClusterAndAreNotStreamed(t *testing.T) {
	h := newTestHub(t, 1)
	admin := h.Admin()
	ctx := ctxT(t, 60*time.Second)
	agents := map[string]*testAgent{}
	streams := map[string]*syncStream{}
	for _, c := range []string{"east", "north", "west"} {
		agents[c] = joinCluster(t, admin, c)
		st, err := agents[c].sync(0, "")
		if err != nil {
			t.Fatal(err)
		}
		streams[c] = st
	}
	joinCluster(t, admin, "south") // joined, never connected
	const westTD = "west.meshfed.local"
	waitFor(t, 10*time.Second, "every stream connected", func() error {
		resp, err := admin.ListClusters(ctx, &fedv1.ListClustersRequest{})
		if err != nil {
			return err
		}
		for _, c := range resp.GetClusters() {
			if c.GetName() != "south" && c.GetStatus() != "connected" {
				return fmt.Errorf("%s is %s", c.GetName(), c.GetStatus())
			}
		}
		return nil
	})

	// west starts a rotation: its bundle of sequence 2 holds two roots.
	nb := mustBundle(westTD)
	nb.X509Authorities = append(nb.X509Authorities, mustBundle(westTD).GetX509Authorities()...)
	nb.SequenceNumber = 2
	res, err := streams["west"].publishBundle(1<<62+1, nb)
	if err != nil || res.GetErrorCode() != "" {
		t.Fatalf("publish bundle: %v %v", res, err)
	}
	if err := streams["north"].waitRevision(res.GetRevision()); err != nil {
		t.Fatal(err)
	}
	west := fedv1.NewSyncClient(agents["west"].conn)
	rotation := func() *fedv1.RotationStatusResponse {
		t.Helper()
		resp, err := west.RotationStatus(ctx, &fedv1.RotationStatusRequest{SequenceNumber: 2})
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	resp := rotation()
	if resp.GetReady() || resp.GetPublishedSequence() != 2 || resp.GetTrustDomain() != westTD || len(resp.GetMembers()) != 3 {
		t.Fatalf("before any ack: %v", resp)
	}
	if m := memberOf(resp, "south"); m.GetCounted() {
		t.Errorf("a member never seen counts: %v", m)
	}
	if m := memberOf(resp, "east"); !m.GetCounted() || m.GetHolds() {
		t.Errorf("east before its ack: %v", m)
	}

	streams["east"].ack(map[string]uint64{westTD: 2})
	waitFor(t, 10*time.Second, "east's ack recorded", func() error {
		if m := memberOf(rotation(), "east"); m.GetAppliedSequence() != 2 || !m.GetHolds() {
			return fmt.Errorf("east: %v", m)
		}
		return nil
	})
	if resp := rotation(); resp.GetReady() {
		t.Fatalf("ready while north, connected, has not acknowledged: %v", resp)
	}
	// An older ack does not lower the record.
	streams["east"].ack(map[string]uint64{westTD: 1})

	// Nothing of the acks reached the other streams: the next delta north
	// receives is the export published now, alone.
	if res, err := streams["east"].publish(1, []*fedv1.ExportedService{svc("shop", "cart", 1)}); err != nil || res.GetErrorCode() != "" {
		t.Fatalf("publish: %v %v", res, err)
	}
	m, err := streams["north"].next(func(m *fedv1.SyncResponse) bool { return m.GetDelta() != nil })
	if err != nil {
		t.Fatal(err)
	}
	if d := m.GetDelta(); len(d.GetExports()) != 1 || len(d.GetClusters()) != 0 || len(d.GetBundles()) != 0 {
		t.Fatalf("north's next delta after the acks: %d clusters, %d bundles, %d exports; want the export alone", len(d.GetClusters()), len(d.GetBundles()), len(d.GetExports()))
	}

	// north disconnects before acknowledging: seen just now, it still
	// holds the rotation up.
	streams["north"].cancel()
	waitFor(t, 10*time.Second, "north disconnected", func() error {
		if m := memberOf(rotation(), "north"); m.GetStatus() != "disconnected" {
			return fmt.Errorf("north: %v", m)
		}
		return nil
	})
	if resp := rotation(); resp.GetReady() || !memberOf(resp, "north").GetCounted() {
		t.Fatalf("a member seen %v ago does not hold the rotation: %v", RotationSeenWindow, resp)
	}
	// It comes back and acknowledges: the rotation may switch.
	st, err := agents["north"].sync(0, "")
	if err != nil {
		t.Fatal(err)
	}
	st.ack(map[string]uint64{westTD: 2, "north.meshfed.local": 1})
	waitFor(t, 10*time.Second, "ready", func() error {
		if resp := rotation(); !resp.GetReady() {
			return fmt.Errorf("not ready: %v", resp)
		}
		return nil
	})
	if m := memberOf(rotation(), "east"); m.GetAppliedSequence() != 2 {
		t.Errorf("east's record went down to %d after an older ack", m.GetAppliedSequence())
	}
	// A sequence the hub does not hold yet is never ready.
	if resp, err := west.RotationStatus(ctx, &fedv1.RotationStatusRequest{SequenceNumber: 3}); err != nil || resp.GetReady() {
		t.Errorf("sequence 3, not published: %v %v", resp, err)
	}

	// The operator's view, per cluster.
	ts, err := admin.TrustStatus(ctx, &fedv1.TrustStatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var westSt *fedv1.ClusterTrustStatus
	for _, c := range ts.GetClusters() {
		if c.GetCluster() == "west" {
			westSt = c
		}
	}
	if westSt.GetSequenceNumber() != 2 || westSt.GetRoots() != 2 || westSt.GetTrustDomain() != westTD || len(westSt.GetMembers()) != 3 {
		t.Fatalf("trust status of west: %v", westSt)
	}
	for _, m := range westSt.GetMembers() {
		if want := m.GetCluster() != "south"; m.GetHolds() != want {
			t.Errorf("trust status: %s holds = %v, want %v", m.GetCluster(), m.GetHolds(), want)
		}
	}
}

// An Ack with a malformed trust domain ends the stream with
// InvalidArgument.
func TestAckWithInvalidTrustDomainIsRefused(t *testing.T) {
	h := newTestHub(t, 1)
	a := joinCluster(t, h.Admin(), "east")
	st, err := a.sync(0, "")
	if err != nil {
		t.Fatal(err)
	}
	st.ack(map[string]uint64{"Not A Domain": 1})
	_, err = st.next(func(*fedv1.SyncResponse) bool { return false })
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("stream after a bad ack: %v, want InvalidArgument", err)
	}
}
