package hub

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	fedv1 "github.com/meshfed/meshfed/federation/v1"
)

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// createTokens writes n tokens for cluster through admin, retrying
// Unavailable (outcome unknown: it may also have been applied), and returns
// the IDs that were acknowledged.
func createTokens(t *testing.T, admin fedv1.AdminClient, cluster string, n int) []string {
	t.Helper()
	var ids []string
	for len(ids) < n {
		resp, err := admin.CreateToken(ctxT(t, 10*time.Second), &fedv1.CreateTokenRequest{Cluster: cluster})
		if status.Code(err) == codes.Unavailable {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, resp.GetInfo().GetId())
	}
	return ids
}

func tokenSet(t *testing.T, admin fedv1.AdminClient) (map[string]bool, error) {
	resp, err := admin.ListTokens(ctxT(t, 10*time.Second), &fedv1.ListTokensRequest{})
	if err != nil {
		return nil, err
	}
	set := map[string]bool{}
	for _, tok := range resp.GetTokens() {
		set[tok.GetId()] = true
	}
	return set, nil
}

func requireAll(t *testing.T, have map[string]bool, want []string) {
	t.Helper()
	for _, id := range want {
		if !have[id] {
			t.Fatalf("acknowledged token %s is missing (have %d tokens)", id, len(have))
		}
	}
}

func TestLeaderKill(t *testing.T) {
	h := newTestHub(t, 3)
	before := createTokens(t, h.Admin(), "east", 5)
	old := h.Leader(10 * time.Second)
	h.Kill(old)
	var alive []int
	for i := 0; i < 3; i++ {
		if i != old {
			alive = append(alive, i)
		}
	}
	newLeader := h.Leader(15 * time.Second)
	if newLeader == old {
		t.Fatalf("leader is still the killed server %d", old)
	}
	admin := h.Admin(alive...)
	after := createTokens(t, admin, "east", 5)
	have, err := tokenSet(t, admin)
	if err != nil {
		t.Fatal(err)
	}
	requireAll(t, have, append(before, after...))
}

func TestLaggingFollowerServesOnlyWhenCaughtUp(t *testing.T) {
	h := newTestHub(t, 3)
	leader := h.Leader(10 * time.Second)
	follower := (leader + 1) % 3
	h.Kill(follower)
	var others []int
	for i := 0; i < 3; i++ {
		if i != follower {
			others = append(others, i)
		}
	}
	admin := h.Admin(others...)
	acked := createTokens(t, admin, "west", 200)

	// Writes continue while the follower restarts.
	stop := make(chan struct{})
	var mu sync.Mutex
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			ids := createTokens(t, admin, "west", 1)
			mu.Lock()
			acked = append(acked, ids...)
			mu.Unlock()
		}
	}()
	h.Start(follower)
	// Reads only from the restarted follower: each either fails with
	// Unavailable or includes every write acknowledged before it began.
	only := h.Admin(follower)
	served := 0
	deadline := time.Now().Add(30 * time.Second)
	for served < 20 && time.Now().Before(deadline) {
		mu.Lock()
		want := append([]string(nil), acked...)
		mu.Unlock()
		have, err := tokenSet(t, only)
		if err != nil {
			if status.Code(err) != codes.Unavailable {
				t.Fatalf("read from lagging follower: %v", err)
			}
			continue
		}
		requireAll(t, have, want)
		served++
	}
	close(stop)
	wg.Wait()
	if served < 20 {
		t.Fatalf("follower served only %d reads in 30s", served)
	}
}

func TestInstallSnapshotToLaggingFollower(t *testing.T) {
	h := newTestHub(t, 3, func(c *Config) {
		c.SnapshotThreshold = 50
		c.TrailingLogs = 10
		c.SnapshotInterval = time.Hour // snapshots are taken explicitly below
		c.walSegmentSize = 8 << 10     // so that compaction really drops entries
	})
	leader := h.Leader(10 * time.Second)
	follower := (leader + 1) % 3
	h.Kill(follower)
	var others []int
	for i := 0; i < 3; i++ {
		if i != follower {
			others = append(others, i)
		}
	}
	admin := h.Admin(others...)
	acked := createTokens(t, admin, "north", 300)
	leader = h.Leader(10 * time.Second)
	if err := h.Server(leader).raft.Snapshot().Error(); err != nil {
		t.Fatal(err)
	}
	// With only 10 trailing logs kept, the follower can catch up only from
	// the snapshot.
	s := h.Start(follower)
	waitFor(t, 20*time.Second, "snapshot installed on the follower", func() error {
		if n := s.raft.Stats()["last_snapshot_index"]; n == "0" {
			return errors.New("no snapshot on follower yet")
		}
		return nil
	})
	h.WaitReady(20 * time.Second)
	have, err := tokenSet(t, h.Admin(follower))
	if err != nil {
		t.Fatal(err)
	}
	requireAll(t, have, acked)
}

func TestFullRestartLosesNothing(t *testing.T) {
	h := newTestHub(t, 3)
	admin := h.Admin()
	acked := createTokens(t, admin, "south", 50)
	agent := joinCluster(t, admin, "south")
	st, err := agent.sync(0, "")
	if err != nil {
		t.Fatal(err)
	}
	res, err := st.publish(1, []*fedv1.ExportedService{svc("default", "reviews", 2)})
	if err != nil || res.GetError() != "" {
		t.Fatalf("publish: %v %v", err, res)
	}
	st.cancel()
	for i := 0; i < 3; i++ {
		h.Kill(i)
	}
	for i := 0; i < 3; i++ {
		h.Start(i)
	}
	h.Leader(20 * time.Second)
	h.WaitReady(20 * time.Second)
	admin = h.Admin()
	var have map[string]bool
	waitFor(t, 10*time.Second, "tokens readable", func() error {
		have, err = tokenSet(t, admin)
		return err
	})
	requireAll(t, have, acked)
	svcs, err := admin.ListServices(ctxT(t, 10*time.Second), &fedv1.ListServicesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(svcs.GetServices()) != 1 || svcs.GetServices()[0].GetKey() != "default/reviews" {
		t.Fatalf("services after restart: %v", svcs)
	}
}

func TestTokenRace(t *testing.T) {
	h := newTestHub(t, 3)
	admin := h.Admin()
	ctx := ctxT(t, 20*time.Second)
	tok, err := admin.CreateToken(ctx, &fedv1.CreateTokenRequest{Cluster: "east"})
	if err != nil {
		t.Fatal(err)
	}
	const racers = 2
	errs := make([]error, racers)
	var wg sync.WaitGroup
	for i := 0; i < racers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a, _, err := join(ctx, tok.GetToken(), "east")
			if a != nil {
				_ = a.conn.Close()
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	ok, denied := 0, 0
	for _, err := range errs {
		switch status.Code(err) {
		case codes.OK:
			ok++
		case codes.PermissionDenied:
			denied++
		default:
			t.Fatalf("unexpected join error: %v", err)
		}
	}
	if ok != 1 || denied != 1 {
		t.Fatalf("concurrent joins: %d succeeded, %d denied; want 1 and 1 (%v)", ok, denied, errs)
	}

	t.Run("expired", func(t *testing.T) {
		tok, err := admin.CreateToken(ctx, &fedv1.CreateTokenRequest{Cluster: "exp", TtlSeconds: 1})
		if err != nil {
			t.Fatal(err)
		}
		expiry := time.UnixMilli(tok.GetInfo().GetExpiresAtMs())
		<-time.After(time.Until(expiry) + 10*time.Millisecond) // waiting out a real TTL, not synchronising
		_, _, err = join(ctx, tok.GetToken(), "exp")
		if status.Code(err) != codes.PermissionDenied {
			t.Fatalf("expired token: %v, want PermissionDenied", err)
		}
	})
	t.Run("other cluster", func(t *testing.T) {
		tok, err := admin.CreateToken(ctx, &fedv1.CreateTokenRequest{Cluster: "bound"})
		if err != nil {
			t.Fatal(err)
		}
		_, _, err = join(ctx, tok.GetToken(), "intruder")
		if status.Code(err) != codes.PermissionDenied {
			t.Fatalf("token for another cluster: %v, want PermissionDenied", err)
		}
		// The refusal changed nothing: the rightful cluster can still use it.
		a, _, err := join(ctx, tok.GetToken(), "bound")
		if err != nil {
			t.Fatalf("rightful join after refusal: %v", err)
		}
		_ = a.conn.Close()
	})
	t.Run("revoked", func(t *testing.T) {
		tok, err := admin.CreateToken(ctx, &fedv1.CreateTokenRequest{Cluster: "rev"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := admin.RevokeToken(ctx, &fedv1.RevokeTokenRequest{Id: tok.GetInfo().GetId()}); err != nil {
			t.Fatal(err)
		}
		_, _, err = join(ctx, tok.GetToken(), "rev")
		if status.Code(err) != codes.PermissionDenied {
			t.Fatalf("revoked token: %v, want PermissionDenied", err)
		}
	})
}

func TestAgentMayWriteOnlyItsOwnCluster(t *testing.T) {
	h := newTestHub(t, 3)
	admin := h.Admin()
	east := joinCluster(t, admin, "east")
	joinCluster(t, admin, "west")

	_, err := east.sync(0, "west")
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("east syncing as west: %v, want PermissionDenied", err)
	}
	// An agent certificate is not an admin credential.
	_, err = fedv1.NewAdminClient(east.conn).RemoveCluster(ctxT(t, 5*time.Second), &fedv1.RemoveClusterRequest{Name: "west"})
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("agent calling admin: %v, want PermissionDenied", err)
	}
	// Publishing as itself works, and lands under its own name only.
	st, err := east.sync(0, "")
	if err != nil {
		t.Fatal(err)
	}
	res, err := st.publish(7, []*fedv1.ExportedService{svc("default", "ratings", 1)})
	if err != nil || res.GetError() != "" {
		t.Fatalf("publish: %v %v", err, res)
	}
	if err := st.waitRevision(res.GetRevision()); err != nil {
		t.Fatal(err)
	}
	if _, ok := st.exports["east/default/ratings"]; !ok || len(st.exports) != 1 {
		t.Fatalf("exports seen by east: %v", st.exports)
	}
}

func TestSyncDeltasAndResume(t *testing.T) {
	h := newTestHub(t, 3)
	admin := h.Admin()
	east := joinCluster(t, admin, "east")
	west := joinCluster(t, admin, "west")
	se, err := east.sync(0, "")
	if err != nil {
		t.Fatal(err)
	}
	sw, err := west.sync(0, "")
	if err != nil {
		t.Fatal(err)
	}
	var last *fedv1.PublishResult
	for i := 0; i < 10; i++ {
		last, err = se.publish(uint64(i+1), []*fedv1.ExportedService{svc("default", fmt.Sprintf("svc%d", i), uint32(i))})
		if err != nil || last.GetError() != "" {
			t.Fatalf("publish %d: %v %v", i, err, last)
		}
	}
	if err := sw.waitRevision(last.GetRevision()); err != nil {
		t.Fatal(err)
	}
	if len(sw.exports) != 10 {
		t.Fatalf("west sees %d exports, want 10", len(sw.exports))
	}
	// West disconnects; east changes things; west resumes from its revision
	// and gets a delta, not a reset.
	resumeFrom := sw.revision
	sw.cancel()
	last, err = se.publish(100, []*fedv1.ExportedService{svc("default", "svc0", 42)}, "default/svc1")
	if err != nil || last.GetError() != "" {
		t.Fatalf("publish: %v %v", err, last)
	}
	sw2, err := west.sync(resumeFrom, "")
	if err != nil {
		t.Fatal(err)
	}
	sw2.exports = sw.exports
	if err := sw2.waitRevision(last.GetRevision()); err != nil {
		t.Fatal(err)
	}
	if sw2.resets != 0 {
		t.Fatalf("resume from %d gave a full reset", resumeFrom)
	}
	if _, gone := sw2.exports["east/default/svc1"]; gone {
		t.Fatal("deleted export still present after resume")
	}
	if got := sw2.exports["east/default/svc0"].GetService().GetEndpoints()[0].GetReady(); got != 42 {
		t.Fatalf("svc0 ready = %d after resume, want 42", got)
	}
	// Removing a cluster withdraws its exports from everyone.
	if _, err := admin.RemoveCluster(ctxT(t, 10*time.Second), &fedv1.RemoveClusterRequest{Name: "east"}); err != nil {
		t.Fatal(err)
	}
	if _, err := sw2.next(func(*fedv1.SyncResponse) bool { return len(sw2.exports) == 0 }); err != nil {
		t.Fatal(err)
	}
	// And the removed cluster's agent is refused from then on.
	if _, err := east.sync(0, ""); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("removed cluster syncing: %v, want PermissionDenied", err)
	}
}

func TestInvalidInputNamesFieldAndBound(t *testing.T) {
	h := newTestHub(t, 1)
	admin := h.Admin()
	ctx := ctxT(t, 10*time.Second)
	_, err := admin.CreateToken(ctx, &fedv1.CreateTokenRequest{Cluster: "Bad_Name"})
	if status.Code(err) != codes.InvalidArgument || !containsAll(status.Convert(err).Message(), "cluster", "63") {
		t.Fatalf("bad cluster name: %v", err)
	}
	_, err = admin.CreateToken(ctx, &fedv1.CreateTokenRequest{Cluster: "ok", TtlSeconds: 10 * 24 * 3600})
	if status.Code(err) != codes.InvalidArgument || !containsAll(status.Convert(err).Message(), "ttl_seconds", "86400") {
		t.Fatalf("ttl too long: %v", err)
	}
	a := joinCluster(t, admin, "east")
	st, err := a.sync(0, "")
	if err != nil {
		t.Fatal(err)
	}
	bad := svc("default", "reviews", 1)
	for i := 0; i < MaxPortsPerService; i++ {
		bad.Ports = append(bad.Ports, &fedv1.ServicePort{Port: uint32(9000 + i), Protocol: "TCP"})
	}
	res, err := st.publish(1, []*fedv1.ExportedService{bad})
	if err != nil {
		t.Fatal(err)
	}
	if res.GetErrorCode() != codes.InvalidArgument.String() || !containsAll(res.GetError(), "publish.upserts[0].ports", "64") {
		t.Fatalf("too many ports: %v", res)
	}
	// An exported label the ServiceImports could not carry.
	bad = svc("default", "reviews", 1)
	bad.ExportedLabels = map[string]string{"tier": strings.Repeat("v", 64)}
	res, err = st.publish(2, []*fedv1.ExportedService{bad})
	if err != nil {
		t.Fatal(err)
	}
	if res.GetErrorCode() != codes.InvalidArgument.String() || !containsAll(res.GetError(), "publish.upserts[0].exported_labels[tier]", "63") {
		t.Fatalf("exported label value too long: %v", res)
	}
}

func containsAll(s string, subs ...string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}

// Add starts a new server that joins the running ones (bootstrap-expect 0).
func (h *testHub) Add(name string) int {
	h.t.Helper()
	return h.AddWith(name, func(c *Config) { c.BootstrapExpect = 0 })
}

func voters(t *testing.T, s *Server) []string {
	t.Helper()
	f := s.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, srv := range f.Configuration().Servers {
		ids = append(ids, string(srv.ID))
	}
	sort.Strings(ids)
	return ids
}

func TestDeadServerRemovedAndReplaced(t *testing.T) {
	h := newTestHub(t, 3, func(c *Config) { c.DeadServerGrace = 2 * time.Second })
	leader := h.Leader(10 * time.Second)
	victim := (leader + 1) % 3
	victimName := h.cfgs[victim].Name
	h.Kill(victim)
	waitFor(t, 30*time.Second, "dead server removed from the raft configuration", func() error {
		l := h.Server(h.Leader(10 * time.Second))
		for _, id := range voters(t, l) {
			if id == victimName {
				return fmt.Errorf("%s still a member: %v", id, voters(t, l))
			}
		}
		return nil
	})
	// A replacement joins the same way and becomes a voter.
	r := h.Add("s9")
	waitFor(t, 30*time.Second, "replacement is a voter", func() error {
		got := voters(t, h.Server(h.Leader(10*time.Second)))
		if len(got) != 3 || !slices.Contains(got, "s9") {
			return fmt.Errorf("voters %v", got)
		}
		return nil
	})
	h.WaitReady(20 * time.Second)
	// It serves consistent reads of data written before it existed.
	acked := createTokens(t, h.Admin(), "late", 3)
	have, err := tokenSet(t, h.Admin(r))
	if err != nil {
		t.Fatal(err)
	}
	requireAll(t, have, acked)
}

func TestRemovedClusterCredentialsStopWorking(t *testing.T) {
	h := newTestHub(t, 3)
	admin := h.Admin()
	old := joinCluster(t, admin, "east")
	st, err := old.sync(0, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := admin.RemoveCluster(ctxT(t, 10*time.Second), &fedv1.RemoveClusterRequest{Name: "east"}); err != nil {
		t.Fatal(err)
	}
	// The open stream is closed, not left receiving the catalog.
	_, err = st.next(func(*fedv1.SyncResponse) bool { return false })
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("open stream after removal: %v, want PermissionDenied", err)
	}
	// The cluster rejoins with a new token; the old certificate stays refused.
	fresh := joinCluster(t, admin, "east")
	if _, err := old.sync(0, ""); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("superseded certificate: %v, want PermissionDenied", err)
	}
	if _, err := fresh.sync(0, ""); err != nil {
		t.Fatalf("new credentials: %v", err)
	}
}

// TestGatewayAddressesAndLocalityFollowTheAgent: an agent states its
// gateway addresses and locality at every Sync session; when they changed
// since join, the hub records them and the other clusters see the change.
// Invalid ones refuse the session, naming the field.
func TestGatewayAddressesAndLocalityFollowTheAgent(t *testing.T) {
	h := newTestHub(t, 3)
	admin := h.Admin()
	east := joinCluster(t, admin, "east")
	west := joinCluster(t, admin, "west")
	ws, err := west.sync(0, "")
	if err != nil {
		t.Fatal(err)
	}
	moved := &fedv1.SyncHello{Locality: &fedv1.Locality{Region: "r-east", Zone: "z-east-b"}, GatewayAddresses: []string{"10.9.0.1:15443", "10.9.0.2:15443"}}
	if _, err := east.syncHello(0, moved); err != nil {
		t.Fatal(err)
	}
	stop := time.AfterFunc(20*time.Second, ws.cancel) // a bound on the wait
	defer stop.Stop()
	if _, err := ws.next(func(*fedv1.SyncResponse) bool {
		c := ws.clusters["east"]
		return c.GetLocality().GetZone() == "z-east-b" && len(c.GetGatewayAddresses()) == 2 && c.GetGatewayAddresses()[1] == "10.9.0.2:15443"
	}); err != nil {
		t.Fatalf("west never saw east's new gateways and zone: %v (last %v)", err, ws.clusters["east"])
	}
	// (An unchanged hello writes nothing: TestUpdateClusterEndpointChangesOnlyWhatDiffers
	// in hub/fsm; here every session also writes the connection status.)
	for field, bad := range map[string]*fedv1.SyncHello{
		"hello.gateway_addresses[0]": {GatewayAddresses: []string{"no-port"}},
		"hello.locality.zone":        {Locality: &fedv1.Locality{Region: "r", Zone: "Not A Zone"}},
	} {
		_, err := east.syncHello(0, bad)
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), field) {
			t.Errorf("hello with a bad %s: %v, want InvalidArgument naming it", field, err)
		}
	}
}

// A Service with 53/TCP and 53/UDP is valid in Kubernetes and for the agent
// (the contract's one validation); the hub accepts it too, and refuses the
// same port twice over one transport.
func TestHubAcceptsOnePortNumberOverTCPAndUDP(t *testing.T) {
	h := newTestHub(t, 1)
	a := joinCluster(t, h.Admin(), "east")
	st, err := a.sync(0, "")
	if err != nil {
		t.Fatal(err)
	}
	dns := &fedv1.ExportedService{Namespace: "kube-system", Name: "dns", Ports: []*fedv1.ServicePort{
		{Name: "dns-tcp", Port: 53, Protocol: "TCP"}, {Name: "dns", Port: 53, Protocol: "UDP"}}}
	if err := fedv1.ValidateExportedService("spec", dns); err != nil {
		t.Fatalf("the agent's side refuses it: %v", err)
	}
	res, err := st.publish(1, []*fedv1.ExportedService{dns})
	if err != nil {
		t.Fatal(err)
	}
	if res.GetErrorCode() != "" {
		t.Fatalf("53/TCP + 53/UDP refused: %s %s", res.GetErrorCode(), res.GetError())
	}
	twice := proto.Clone(dns).(*fedv1.ExportedService)
	twice.Ports[1].Protocol = "GRPC" // TCP again
	res, err = st.publish(2, []*fedv1.ExportedService{twice})
	if err != nil {
		t.Fatal(err)
	}
	if res.GetErrorCode() != codes.InvalidArgument.String() || !containsAll(res.GetError(), "publish.upserts[0].ports[1].port", "twice") {
		t.Fatalf("53 twice over TCP: %v", res)
	}
}
