package agent

import (
	"context"
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/meshfed/meshfed/federation/policy"
	fedv1 "github.com/meshfed/meshfed/federation/v1"
	"github.com/meshfed/meshfed/gateway/gatewayclient"
	"github.com/meshfed/meshfed/testenv"
)

// A gateway replica's Report of the policies it holds is checked by the
// agent, shown in its state and forwarded to the hub: a rejected revision
// with its reason (crafted here: the hub lets no invalid policy through),
// then the revision in force, current. A Report of more policies than
// the agent sent the replica is refused, naming the field and the bound.
func TestGatewayPolicyStatusesReachTheHub(t *testing.T) {
	fed := testenv.Start(t, testenv.Options{HubServers: 1})
	admin := adminClient(t, fed)
	ctx := context.Background()
	cfg := fileConfig(t, "east", "us-east", "us-east-1a", t.TempDir())
	writeCatalog(t, cfg.SourcePath, reviewsCatalog)
	if err := Join(ctx, cfg, createToken(t, admin, "east")); err != nil {
		t.Fatal(err)
	}
	east := startAgent(t, cfg)
	waitState(t, east.a, 30*time.Second, connected)

	p, err := policy.Decode([]byte(`{"apiVersion":"meshfed.io/v1alpha1","kind":"GlobalTrafficPolicy","metadata":{"name":"reviews"},"spec":{"host":"reviews.default"}}`))
	if err != nil {
		t.Fatal(err)
	}
	m, err := policy.ToProto(p)
	if err != nil {
		t.Fatal(err)
	}
	applied, err := admin.ApplyPolicies(ctx, &fedv1.ApplyPoliciesRequest{Policies: []*fedv1.TrafficPolicy{m}})
	if err != nil {
		t.Fatal(err)
	}
	rev := applied.GetRevision()
	gw := startGateway(t, east.a, "east-gw-0")
	st := waitGateway(t, gw, 20*time.Second, func(s *gatewayclient.State) error {
		if p := s.Policies["reviews"]; p.GetModifyRevision() != rev {
			return fmt.Errorf("policy reviews %v, want revision %d", p, rev)
		}
		return nil
	})

	hubRow := func(want string) {
		t.Helper()
		if err := testenv.WaitFor(ctx, 20*time.Second, func(ctx context.Context) error {
			resp, err := admin.PolicyStatus(ctx, &fedv1.PolicyStatusRequest{Name: "reviews"})
			if err != nil {
				return err
			}
			gs := resp.GetPolicies()[0].GetGateways()
			if len(gs) != 1 {
				return fmt.Errorf("%d rows, want 1: %v", len(gs), gs)
			}
			g := gs[0]
			if got := fmt.Sprintf("%s/%s revision %d current %v rejected %d %q", g.GetCluster(), g.GetGateway(), g.GetRevision(), g.GetCurrent(), g.GetRejectedRevision(), g.GetError()); got != want {
				return fmt.Errorf("hub: %s, want %s", got, want)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}

	const reason = `spec.http[0].mirror: unknown field`
	err = gw.c.SendReport(ctx, gatewayclient.Report{Revision: st.Revision, Policies: []*fedv1.GatewayPolicyStatus{{Name: "reviews", RejectedRevision: rev, Error: reason}}})
	if err != nil {
		t.Fatal(err)
	}
	waitState(t, east.a, 10*time.Second, func(s State) error {
		if len(s.Gateways) != 1 || len(s.Gateways[0].Policies) != 1 || s.Gateways[0].Policies[0].Error != reason {
			return fmt.Errorf("gateways %+v, want east-gw-0 with the rejection", s.Gateways)
		}
		return nil
	})
	hubRow(fmt.Sprintf("east/east-gw-0 revision 0 current false rejected %d %q", rev, reason))

	if err := gw.c.SendReport(ctx, gatewayclient.Report{Revision: st.Revision, Policies: []*fedv1.GatewayPolicyStatus{{Name: "reviews", Revision: rev}}}); err != nil {
		t.Fatal(err)
	}
	hubRow(fmt.Sprintf("east/east-gw-0 revision %d current true rejected 0 %q", rev, ""))

	err = gw.c.SendReport(ctx, gatewayclient.Report{Revision: st.Revision, Policies: []*fedv1.GatewayPolicyStatus{{Name: "reviews"}, {Name: "ratings"}}})
	if s := status.Convert(err); s.Code() != codes.InvalidArgument || s.Message() != "policies: 2 policy statuses, at most 1 (the policies this agent sent the replica)" {
		t.Errorf("a report of more policies than were sent: %v, want InvalidArgument naming the bound", err)
	}
}
