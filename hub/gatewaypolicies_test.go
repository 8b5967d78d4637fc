package hub

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/meshfed/meshfed/federation/policy"
	fedv1 "github.com/meshfed/meshfed/federation/v1"
)

// sendGatewayPolicies sends a GatewayPolicies message on the stream.
func (s *syncStream) sendGatewayPolicies(replicas ...*fedv1.GatewayReplicaPolicies) error {
	return s.stream.Send(&fedv1.SyncRequest{Msg: &fedv1.SyncRequest_GatewayPolicies{GatewayPolicies: &fedv1.GatewayPolicies{Replicas: replicas}}})
}

// statusRows is a PolicyStatus answer as "policy cluster gateway revision
// current rejected error" lines.
func statusRows(resp *fedv1.PolicyStatusResponse) []string {
	var out []string
	for _, p := range resp.GetPolicies() {
		for _, g := range p.GetGateways() {
			out = append(out, fmt.Sprintf("%s %s %s %d %v %d %s", p.GetName(), g.GetCluster(), g.GetGateway(), g.GetRevision(), g.GetCurrent(), g.GetRejectedRevision(), g.GetError()))
		}
	}
	return out
}

// An agent's GatewayPolicies, sent on a stream served by a follower, are
// recorded (the follower forwards the write to the leader) without
// moving the revision or sending a delta; Admin PolicyStatus, also asked
// of a follower, shows per member and gateway replica the revision in
// force, whether it is current, and a rejection with its reason; a member
// with no report shows as such; a dry run names the replicas of the
// clusters it touches. An invalid message ends the stream with
// InvalidArgument naming the field and the bound.
func TestPolicyStatusThroughAFollower(t *testing.T) {
	h := newTestHub(t, 3)
	leader := h.Leader(30 * time.Second)
	follower := (leader + 1) % 3
	admin := h.Admin(follower)
	ctx := ctxT(t, 60*time.Second)

	east := joinCluster(t, h.Admin(), "east")
	joinCluster(t, h.Admin(), "west")
	conn, err := east.dial(h.Server(follower).GRPCAddr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	east.conn = conn
	se, err := east.sync(0, "")
	if err != nil {
		t.Fatal(err)
	}
	if res, err := se.publish(1, []*fedv1.ExportedService{svc("default", "reviews", 2)}); err != nil || res.GetErrorCode() != "" {
		t.Fatalf("publish: %v %v", res, err)
	}
	first, err := admin.ApplyPolicies(ctx, &fedv1.ApplyPoliciesRequest{Policies: []*fedv1.TrafficPolicy{docProto(t, reviewsDoc), testPolicy("cart", "v1")}})
	if err != nil {
		t.Fatal(err)
	}
	second, err := admin.ApplyPolicies(ctx, &fedv1.ApplyPoliciesRequest{Policies: []*fedv1.TrafficPolicy{testPolicy("cart", "v2")}})
	if err != nil {
		t.Fatal(err)
	}
	r1, r2 := first.GetRevision(), second.GetRevision()
	if err := se.waitRevision(r2); err != nil {
		t.Fatal(err)
	}

	// Nothing reported yet: one row per member without a gateway.
	resp, err := admin.PolicyStatus(ctx, &fedv1.PolicyStatusRequest{Name: "reviews"})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := statusRows(resp), []string{"reviews east  0 false 0 ", "reviews west  0 false 0 "}; !slices.Equal(got, want) {
		t.Fatalf("before any report: %q, want %q", got, want)
	}

	// gw-0 holds both current revisions; gw-1 rejected cart's second
	// revision and keeps the first.
	before := resp.GetRevision()
	sent := time.Now().UnixMilli()
	if err := se.sendGatewayPolicies(
		&fedv1.GatewayReplicaPolicies{Instance: "gw-0", Policies: []*fedv1.GatewayPolicyStatus{{Name: "cart", Revision: r2}, {Name: "reviews", Revision: r1}}},
		&fedv1.GatewayReplicaPolicies{Instance: "gw-1", Policies: []*fedv1.GatewayPolicyStatus{{Name: "cart", Revision: r1, RejectedRevision: r2, Error: "spec.http[0].timeout: unknown field"}}},
	); err != nil {
		t.Fatal(err)
	}
	want := []string{
		fmt.Sprintf("cart east gw-0 %d true 0 ", r2),
		fmt.Sprintf("cart east gw-1 %d false %d spec.http[0].timeout: unknown field", r1, r2),
		"cart west  0 false 0 ",
		fmt.Sprintf("reviews east gw-0 %d true 0 ", r1),
		"reviews east gw-1 0 false 0 ",
		"reviews west  0 false 0 ",
	}
	waitFor(t, 20*time.Second, "the gateways' report in PolicyStatus", func() error {
		resp, err = admin.PolicyStatus(ctx, &fedv1.PolicyStatusRequest{})
		if err != nil {
			return err
		}
		if got := statusRows(resp); !slices.Equal(got, want) {
			return fmt.Errorf("rows %q, want %q", got, want)
		}
		return nil
	})
	for _, p := range resp.GetPolicies() {
		for _, g := range p.GetGateways() {
			if g.GetGateway() != "" && (g.GetReportedMs() < sent-1000 || g.GetReportedMs() > resp.GetNowMs()) {
				t.Errorf("%s on %s/%s reported at %d, want between the send (%d) and now (%d)", p.GetName(), g.GetCluster(), g.GetGateway(), g.GetReportedMs(), sent, resp.GetNowMs())
			}
		}
	}
	if resp.GetRevision() != before {
		t.Errorf("recording the report moved the revision %d → %d", before, resp.GetRevision())
	}

	// A dry run names the replicas of the clusters it touches.
	dry, err := admin.ApplyPolicies(ctx, &fedv1.ApplyPoliciesRequest{Policies: []*fedv1.TrafficPolicy{docProto(t, reviewsDoc)}, DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	wantGW := []*fedv1.ClusterGateways{{Cluster: "east", Instances: []string{"gw-0", "gw-1"}}, {Cluster: "west"}}
	if got := dry.GetResults()[0].GetGateways(); !slices.EqualFunc(got, wantGW, func(a, b *fedv1.ClusterGateways) bool { return proto.Equal(a, b) }) {
		t.Errorf("dry run gateways %v, want %v", got, wantGW)
	}

	if _, err := admin.PolicyStatus(ctx, &fedv1.PolicyStatusRequest{Name: "nope"}); status.Code(err) != codes.NotFound {
		t.Errorf("status of an absent policy: %v, want NotFound", err)
	}
	if _, err := admin.PolicyStatus(ctx, &fedv1.PolicyStatusRequest{Name: "Not_A_Name"}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("status of an invalid name: %v, want InvalidArgument", err)
	}

	// A reason past the bound ends the stream, naming the field.
	if err := se.sendGatewayPolicies(&fedv1.GatewayReplicaPolicies{Instance: "gw-0",
		Policies: []*fedv1.GatewayPolicyStatus{{Name: "cart", Error: strings.Repeat("x", policy.MaxStatusErrorBytes+1)}}}); err != nil {
		t.Fatal(err)
	}
	_, err = se.next(func(*fedv1.SyncResponse) bool { return false })
	if st := status.Convert(err); st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), "gateway_policies.replicas[0].policies[0].error: 257 bytes, at most 256") {
		t.Errorf("stream after an invalid GatewayPolicies: %v, want InvalidArgument naming the field", err)
	}
}
