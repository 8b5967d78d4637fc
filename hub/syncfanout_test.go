package hub

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/meshfed/meshfed/federation"
	fedv1 "github.com/meshfed/meshfed/federation/v1"
)

// on returns a copy of a whose calls go to the hub server at addr only,
// dialled with opts.
func (a *testAgent) on(t testing.TB, addr string, opts ...grpc.DialOption) *testAgent {
	t.Helper()
	c, err := grpc.NewClient("passthrough:///"+addr, append([]grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(a.tls))}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	b := *a
	b.conn = c
	return &b
}

// clusterStatus is the status Admin reports for cluster.
func clusterStatus(admin fedv1.AdminClient, cluster string) (*fedv1.ClusterRecord, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := admin.DescribeCluster(ctx, &fedv1.DescribeClusterRequest{Name: cluster})
	if err != nil {
		return nil, err
	}
	return resp.GetCluster(), nil
}

func waitStatus(t testing.TB, admin fedv1.AdminClient, cluster, want string, timeout time.Duration) {
	t.Helper()
	waitFor(t, timeout, cluster+" "+want, func() error {
		c, err := clusterStatus(admin, cluster)
		if err != nil {
			return err
		}
		if c.GetStatus() != want {
			return fmt.Errorf("status %q", c.GetStatus())
		}
		return nil
	})
}

// reasonOf is the ErrorInfo reason of a gRPC error, or "".
func reasonOf(err error) string {
	for _, d := range status.Convert(err).Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetDomain() == federation.ErrorDomain {
			return info.GetReason()
		}
	}
	return ""
}

// A cluster connecting and disconnecting is not a change other agents
// receive: the next delta east gets after west came and went is the policy
// written after that, and no cluster record it receives carries a status.
func TestConnectAndDisconnectSendNoDeltaToOtherAgents(t *testing.T) {
	h := newTestHub(t, 3)
	admin := h.Admin()
	east := joinCluster(t, admin, "east")
	west := joinCluster(t, admin, "west")
	se, err := east.sync(0, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := se.next(func(m *fedv1.SyncResponse) bool { return len(se.clusters) == 2 }); err != nil {
		t.Fatal(err)
	}
	for name, c := range se.clusters {
		if c.GetStatus() != "" || c.GetLastSeenMs() != 0 {
			t.Errorf("streamed record of %s carries status %q last_seen %d, want neither", name, c.GetStatus(), c.GetLastSeenMs())
		}
	}
	waitStatus(t, admin, "east", "connected", 10*time.Second)

	sw, err := west.sync(0, "")
	if err != nil {
		t.Fatal(err)
	}
	waitStatus(t, admin, "west", "connected", 10*time.Second)
	sw.cancel()
	waitStatus(t, admin, "west", "disconnected", 10*time.Second)

	resp, err := admin.PutPolicy(ctxT(t, 10*time.Second), &fedv1.PutPolicyRequest{Policy: testPolicy("p", "v")})
	if err != nil {
		t.Fatal(err)
	}
	m, err := se.next(func(m *fedv1.SyncResponse) bool { return m.GetDelta() != nil })
	if err != nil {
		t.Fatal(err)
	}
	d := m.GetDelta()
	if d.GetRevision() != resp.GetRevision() || len(d.GetClusters()) != 0 || len(d.GetPolicies()) != 1 {
		t.Fatalf("first delta after west connected and disconnected: revision %d, %d clusters, %d policies; want the policy's (revision %d) alone",
			d.GetRevision(), len(d.GetClusters()), len(d.GetPolicies()), resp.GetRevision())
	}
}

// bigExport is an export of roughly 150 KB, to fill a stream's flow
// control window in a few deltas.
func bigExport(name string, ready uint32) *fedv1.ExportedService {
	s := svc("default", name, ready)
	s.Endpoints = nil
	for g := range 64 {
		labels := map[string]string{}
		for l := range 8 {
			labels[fmt.Sprintf("k%d", l)] = strings.Repeat(string(rune('a'+g%26)), 250)
		}
		s.Endpoints = append(s.Endpoints, &fedv1.EndpointGroup{Zone: fmt.Sprintf("z%d", g), Ready: ready, Labels: labels})
	}
	return s
}

// An agent that stops reading is dropped once a send has waited
// SyncSendTimeout, with reason SLOW_CONSUMER, while another agent keeps
// receiving every change; the slow one then resumes from its revision.
func TestSlowConsumerIsDroppedWhileOthersKeepReceiving(t *testing.T) {
	const sendTimeout = 300 * time.Millisecond
	h := newTestHub(t, 3, func(c *Config) { c.SyncSendTimeout = sendTimeout })
	admin := h.Admin()
	east := joinCluster(t, admin, "east")
	west := joinCluster(t, admin, "west")
	slow := joinCluster(t, admin, "slow")
	// Small fixed windows (no BDP growth): a few deltas fill them.
	slowOn := slow.on(t, h.Server(0).GRPCAddr(), grpc.WithInitialWindowSize(1<<16), grpc.WithInitialConnWindowSize(1<<16))
	ss, err := slowOn.sync(0, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := ss.waitRevision(1); err != nil { // the initial state; then it stops reading
		t.Fatal(err)
	}
	se, err := east.sync(0, "")
	if err != nil {
		t.Fatal(err)
	}
	sw, err := west.on(t, h.Server(0).GRPCAddr()).sync(0, "")
	if err != nil {
		t.Fatal(err)
	}
	dropped := func() float64 {
		var m dto.Metric
		if err := h.Server(0).metrics.slowConsumers.Write(&m); err != nil {
			t.Fatal(err)
		}
		return m.GetCounter().GetValue()
	}
	var last uint64
	for i := uint32(1); dropped() == 0; i++ {
		if i > 200 {
			t.Fatalf("published %d large exports and the stream that stopped reading was not dropped", i)
		}
		res, err := se.publish(uint64(i), []*fedv1.ExportedService{bigExport("big", i)})
		if err != nil || res.GetError() != "" {
			t.Fatalf("publish %d: %v %v", i, err, res)
		}
		last = res.GetRevision()
		// The other agent on the same server gets every change meanwhile.
		if err := sw.waitRevision(last); err != nil {
			t.Fatalf("west stalled at revision %d (want %d) while slow was not reading: %v", sw.revision, last, err)
		}
	}
	// The slow agent reads what was buffered, then the hub's verdict.
	_, err = ss.next(func(*fedv1.SyncResponse) bool { return false })
	if status.Code(err) != codes.Unavailable || reasonOf(err) != federation.ReasonSlowConsumer {
		t.Fatalf("slow stream ended with %v (reason %q), want Unavailable with reason %s", err, reasonOf(err), federation.ReasonSlowConsumer)
	}
	resumed, err := slowOn.sync(ss.revision, "")
	if err != nil {
		t.Fatal(err)
	}
	resumed.exports = ss.exports
	if err := resumed.waitRevision(last); err != nil {
		t.Fatal(err)
	}
	if resumed.resets != 0 || resumed.exports["east/default/big"].GetService().GetEndpoints()[0].GetReady() == 0 {
		t.Fatalf("resume from %d: %d resets, export %v", ss.revision, resumed.resets, resumed.exports["east/default/big"] != nil)
	}
}

// A server that crashes with a stream open does not leave its cluster
// "connected": the lease lapses within ConnectionLease, as Admin on the
// surviving servers shows.
func TestCrashedServersConnectionLapsesWithinTheLease(t *testing.T) {
	const lease = time.Second
	h := newTestHub(t, 3, func(c *Config) { c.ConnectionLease = lease })
	leader := h.Leader(10 * time.Second)
	follower := (leader + 1) % 3
	var others []int
	for i := range 3 {
		if i != follower {
			others = append(others, i)
		}
	}
	admin := h.Admin(others...)
	east := joinCluster(t, admin, "east")
	st, err := east.on(t, h.Server(follower).GRPCAddr()).sync(0, "")
	if err != nil {
		t.Fatal(err)
	}
	defer st.cancel()
	waitStatus(t, admin, "east", "connected", 10*time.Second)
	// Renewed, not just written once: still connected after several leases.
	var renewed int64
	for i := range 4 {
		waitFor(t, 10*time.Second, "a renewal", func() error {
			cc := h.Server(leader).fsm.Store().Read().ConnectionsOf("east")
			if len(cc) != 1 || cc[0].GetRenewedMs() == renewed {
				return fmt.Errorf("leases %v", cc)
			}
			if i > 0 && cc[0].GetSinceMs() == cc[0].GetRenewedMs() {
				return fmt.Errorf("lease %v restarted, not renewed", cc[0])
			}
			renewed = cc[0].GetRenewedMs()
			return nil
		})
		if c, err := clusterStatus(admin, "east"); err != nil || c.GetStatus() != "connected" {
			t.Fatalf("east with its stream open, renewal %d: %v %v", i, c.GetStatus(), err)
		}
	}

	killed := time.Now()
	h.Kill(follower)
	waitStatus(t, admin, "east", "disconnected", 10*time.Second)
	took := time.Since(killed)
	t.Logf("disconnected %v after the server holding the stream was killed (lease %v)", took, lease)
	// The lease plus a consistent read's worth of slack.
	if took > lease+time.Second {
		t.Errorf("disconnected after %v, want within the lease %v (+1s)", took, lease)
	}
	c, err := clusterStatus(admin, "east")
	if err != nil {
		t.Fatal(err)
	}
	if c.GetLastSeenMs() < killed.Add(-lease).UnixMilli() || c.GetLastSeenMs() > killed.UnixMilli() {
		t.Errorf("last_seen_ms %d, want the last renewal, within a lease before the kill (%d)", c.GetLastSeenMs(), killed.UnixMilli())
	}
}

// A removed cluster's stream is refused with reason CLUSTER_REMOVED, both
// when it is open at the removal and when it reconnects.
func TestRemovedClusterIsRefusedWithReason(t *testing.T) {
	h := newTestHub(t, 1)
	admin := h.Admin()
	east := joinCluster(t, admin, "east")
	st, err := east.sync(0, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := admin.RemoveCluster(ctxT(t, 10*time.Second), &fedv1.RemoveClusterRequest{Name: "east"}); err != nil {
		t.Fatal(err)
	}
	_, err = st.next(func(*fedv1.SyncResponse) bool { return false })
	if status.Code(err) != codes.PermissionDenied || reasonOf(err) != federation.ReasonClusterRemoved {
		t.Fatalf("open stream at removal: %v (reason %q), want PermissionDenied with reason %s", err, reasonOf(err), federation.ReasonClusterRemoved)
	}
	_, err = east.sync(0, "")
	if reasonOf(err) != federation.ReasonClusterRemoved {
		t.Fatalf("reconnect after removal: %v (reason %q), want reason %s", err, reasonOf(err), federation.ReasonClusterRemoved)
	}
}
