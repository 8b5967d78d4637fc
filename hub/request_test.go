package hub

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/meshfed/meshfed/federation"
	fedv1 "github.com/meshfed/meshfed/federation/v1"
	"github.com/meshfed/meshfed/hub/fsm"
	"github.com/meshfed/meshfed/hub/internal/hubpb"
	"github.com/meshfed/meshfed/internal/clientconfig"
	"github.com/meshfed/meshfed/internal/hubdial"
	"github.com/meshfed/meshfed/internal/requestid"
)

// lossyForwards makes followers lose the leader's answer to their next n
// forwarded writes after the leader applied them, as a connection that
// breaks at the wrong moment would.
type lossyForwards struct {
	lose atomic.Int64 // answers still to lose
	lost atomic.Int64 // answers lost
}

func (l *lossyForwards) install(c *Config) {
	c.hooks.afterForward = func(resp *hubpb.ApplyResponse, err error) (*hubpb.ApplyResponse, error) {
		if err == nil && l.lose.Add(-1) >= 0 {
			l.lost.Add(1)
			return nil, status.Error(codes.Unavailable, "test: connection lost before the leader's answer arrived")
		}
		return resp, err
	}
}

// adminVia dials only server i, with the CLI's write retry (fast backoff)
// and a count of the calls that reach the wire.
func (h *testHub) adminVia(i int, calls *atomic.Int64) fedv1.AdminClient {
	h.t.Helper()
	s := h.Server(i)
	var cfg *clientconfig.Config
	waitFor(h.t, 10*time.Second, "admin.yaml", func() (err error) {
		cfg, err = clientconfig.Load(h.Server(h.Leader(10 * time.Second)).AdminConfigPath())
		return err
	})
	cfg.Hubs = []string{s.GRPCAddr()}
	count := func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		calls.Add(1)
		return invoker(ctx, method, req, reply, cc, opts...)
	}
	policy := requestid.RetryPolicy{MaxAttempts: 5, InitialBackoff: 20 * time.Millisecond, MaxBackoff: 100 * time.Millisecond}
	tlsCfg, err := cfg.TLS()
	if err != nil {
		h.t.Fatal(err)
	}
	conn, err := hubdial.Dial(cfg.Hubs, tlsCfg, grpc.WithChainUnaryInterceptor(requestid.RetryWrites(requestid.AdminWrites, policy), count))
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { _ = conn.Close() })
	return fedv1.NewAdminClient(conn)
}

// aFollower returns the index of a running server that is not the leader.
func (h *testHub) aFollower(leader int) int {
	for i := range h.cfgs {
		if i != leader && h.Server(i) != nil {
			return i
		}
	}
	h.t.Fatal("no follower")
	return -1
}

// A write whose answer is lost after the leader applied it is retried by
// the follower once and then by the client, with one request ID: the
// retried CreateToken returns the token the hub stored, and RotateCA
// rotates once.
func TestRetriedWriteAfterALostAnswerActsOnce(t *testing.T) {
	var loss lossyForwards
	h := newTestHub(t, 3, loss.install)
	leader := h.Leader(10 * time.Second)
	follower := h.aFollower(leader)
	var calls atomic.Int64
	admin := h.adminVia(follower, &calls)

	// The follower's forward and its own retry are both lost: the client
	// hears Unavailable and retries with the same ID.
	loss.lose.Store(2)
	created, err := admin.CreateToken(ctxT(t, 20*time.Second), &fedv1.CreateTokenRequest{Cluster: "idem"})
	if err != nil {
		t.Fatalf("CreateToken with lost answers: %v", err)
	}
	if loss.lost.Load() != 2 || calls.Load() != 2 {
		t.Fatalf("%d answers lost, %d calls; want 2 lost (forward and its retry) and 2 calls (the client retried)", loss.lost.Load(), calls.Load())
	}
	list, err := h.Admin().ListTokens(ctxT(t, 10*time.Second), &fedv1.ListTokensRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, tok := range list.GetTokens() {
		if tok.GetCluster() == "idem" {
			ids = append(ids, tok.GetId())
		}
	}
	if len(ids) != 1 || ids[0] != created.GetInfo().GetId() {
		t.Fatalf("tokens for cluster idem: %v, want exactly the one returned (%s)", ids, created.GetInfo().GetId())
	}
	// The token returned is the token stored: its secret joins.
	if _, _, err := join(ctxT(t, 20*time.Second), created.GetToken(), "idem"); err != nil {
		t.Fatalf("join with the token a retried CreateToken returned: %v", err)
	}

	// RotateCA: one rotation for one request, however many attempts.
	loss.lose.Store(2)
	calls.Store(0)
	rot, err := admin.RotateCA(ctxT(t, 20*time.Second), &fedv1.RotateCARequest{Cluster: "idem"})
	if err != nil {
		t.Fatalf("RotateCA with lost answers: %v", err)
	}
	if calls.Load() != 2 || loss.lost.Load() != 4 {
		t.Fatalf("%d calls, %d answers lost in all; want 2 and 4", calls.Load(), loss.lost.Load())
	}
	desc, err := h.Admin().DescribeCluster(ctxT(t, 10*time.Second), &fedv1.DescribeClusterRequest{Name: "idem"})
	if err != nil {
		t.Fatal(err)
	}
	if got := desc.GetCluster().GetCaRotation(); got != 1 || rot.GetCaRotation() != 1 {
		t.Fatalf("ca_rotation %d (answered %d) after one RotateCA, want 1", got, rot.GetCaRotation())
	}

	// A write the client does not name gets the hub's own ID: the
	// follower's single retry is enough, and it too acts once.
	loss.lose.Store(1)
	plain := h.Admin(follower)
	rot, err = plain.RotateCA(ctxT(t, 20*time.Second), &fedv1.RotateCARequest{Cluster: "idem"})
	if err != nil {
		t.Fatalf("unnamed RotateCA with one lost answer: %v", err)
	}
	if rot.GetCaRotation() != 2 {
		t.Fatalf("ca_rotation %d after the second RotateCA, want 2", rot.GetCaRotation())
	}
}

// A token created for a named request is the same on every server: the
// same ID sent to another server returns the same token string.
func TestNamedCreateTokenIsTheSameOnEveryServer(t *testing.T) {
	h := newTestHub(t, 3)
	id := requestid.New()
	var tokens []string
	for i := range 3 {
		ctx := metadata.AppendToOutgoingContext(ctxT(t, 10*time.Second), requestid.MetadataKey, id)
		resp, err := h.Admin(i).CreateToken(ctx, &fedv1.CreateTokenRequest{Cluster: "same", TtlSeconds: 600})
		if err != nil {
			t.Fatalf("server %d: %v", i, err)
		}
		tokens = append(tokens, resp.GetToken())
	}
	if tokens[0] != tokens[1] || tokens[1] != tokens[2] {
		t.Fatalf("one request on three servers gave different tokens:\n%s", strings.Join(tokens, "\n"))
	}
	jt, err := federation.ParseJoinToken(tokens[0])
	if err != nil {
		t.Fatal(err)
	}
	// Another ID is another token.
	ctx := metadata.AppendToOutgoingContext(ctxT(t, 10*time.Second), requestid.MetadataKey, requestid.New())
	other, err := h.Admin().CreateToken(ctx, &fedv1.CreateTokenRequest{Cluster: "same", TtlSeconds: 600})
	if err != nil {
		t.Fatal(err)
	}
	if other.GetInfo().GetId() == jt.ID {
		t.Fatal("two request IDs gave one token")
	}
}

// Bad request IDs are refused before anything is proposed, naming the
// metadata key and the bound; an ID reused for another request is refused
// by the FSM.
func TestRequestIDIsValidatedAndNotReusable(t *testing.T) {
	h := newTestHub(t, 1)
	admin := h.Admin()
	for _, bad := range []string{"short", strings.Repeat("x", requestid.MaxLength+1), "has/slash-in-the-middle"} {
		ctx := metadata.AppendToOutgoingContext(ctxT(t, 10*time.Second), requestid.MetadataKey, bad)
		_, err := admin.RotateCA(ctx, &fedv1.RotateCARequest{Cluster: "east"})
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), requestid.MetadataKey) {
			t.Errorf("request ID %.20q: %v, want InvalidArgument naming %s", bad, err, requestid.MetadataKey)
		}
	}
	ctx := metadata.AppendToOutgoingContext(ctxT(t, 10*time.Second), requestid.MetadataKey, "short")
	_, err := admin.RotateCA(ctx, &fedv1.RotateCARequest{Cluster: "east"})
	if msg := status.Convert(err).Message(); !strings.Contains(msg, "want 16 to 128") {
		t.Errorf("%q does not state the bound", msg)
	}

	id := requestid.New()
	ctx = metadata.AppendToOutgoingContext(ctxT(t, 10*time.Second), requestid.MetadataKey, id)
	if _, err := admin.PutPolicy(ctx, &fedv1.PutPolicyRequest{Policy: testPolicy("p1", "v")}); err != nil {
		t.Fatal(err)
	}
	_, err = admin.PutPolicy(ctx, &fedv1.PutPolicyRequest{Policy: testPolicy("p2", "v")})
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), "request_id") {
		t.Fatalf("ID reused for another policy: %v, want InvalidArgument naming request_id", err)
	}
	list, err := admin.ListPolicies(ctxT(t, 10*time.Second), &fedv1.ListPoliciesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.GetPolicies()) != 1 {
		t.Fatalf("%d policies, want 1: the reused ID took effect", len(list.GetPolicies()))
	}
}

// The leader honours the caller's deadline: a write whose deadline passed
// before the leader got to propose it is refused with DeadlineExceeded and
// never applied.
func TestLeaderRefusesAWriteWhoseDeadlinePassed(t *testing.T) {
	var slow atomic.Bool
	h := newTestHub(t, 3, func(c *Config) {
		c.hooks.beforePropose = func(ctx context.Context) {
			if slow.Load() {
				<-ctx.Done() // a leader too busy to propose before the caller gives up
			}
		}
	})
	leader := h.Leader(10 * time.Second)
	follower := h.aFollower(leader)
	admin := h.Admin()
	joinCluster(t, admin, "late")

	// Forwarded: the follower's caller gives up while the leader is slow.
	slow.Store(true)
	_, err := h.Admin(follower).RotateCA(ctxT(t, 300*time.Millisecond), &fedv1.RotateCARequest{Cluster: "late"})
	slow.Store(false)
	if status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("RotateCA past its deadline: %v, want DeadlineExceeded", err)
	}

	// On the leader itself, called with a deadline already past.
	s := h.Server(leader)
	b, err := fsm.Encode(fsm.RotateCAType, &hubpb.CmdRotateCA{Cluster: "late"})
	if err != nil {
		t.Fatal(err)
	}
	past, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Millisecond))
	defer cancel()
	last := s.raft.LastIndex()
	_, err = (&internalService{s: s}).Apply(past, &hubpb.ApplyRequest{Command: b})
	if status.Code(err) != codes.DeadlineExceeded || !strings.Contains(status.Convert(err).Message(), "not applied") {
		t.Fatalf("Internal.Apply past its deadline: %v, want DeadlineExceeded saying it was not applied", err)
	}
	if _, err := s.propose(past, fsm.RotateCAType, &hubpb.CmdRotateCA{Cluster: "late"}); status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("propose past its deadline: %v, want DeadlineExceeded", err)
	}
	if s.raft.State() == raft.Leader && s.raft.LastIndex() != last {
		t.Errorf("leader's last index moved from %d to %d: a write past its deadline was proposed", last, s.raft.LastIndex())
	}

	// Nothing rotated. A later write makes sure everything proposed so far
	// has been applied before the check.
	if _, err := admin.PutPolicy(ctxT(t, 10*time.Second), &fedv1.PutPolicyRequest{Policy: testPolicy("after", "v")}); err != nil {
		t.Fatal(err)
	}
	desc, err := admin.DescribeCluster(ctxT(t, 10*time.Second), &fedv1.DescribeClusterRequest{Name: "late"})
	if err != nil {
		t.Fatal(err)
	}
	if got := desc.GetCluster().GetCaRotation(); got != 0 {
		t.Fatalf("ca_rotation %d: a write whose caller's deadline had passed was applied", got)
	}
}
