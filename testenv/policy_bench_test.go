package testenv

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/meshfed/meshfed/federation/policy"
	fedv1 "github.com/meshfed/meshfed/federation/v1"
	"github.com/meshfed/meshfed/internal/clientconfig"
	"github.com/meshfed/meshfed/internal/hubdial"
	"github.com/meshfed/meshfed/internal/requestid"
)

// BenchmarkPolicyApplyToEnforcement is the time from an ApplyPolicies call
// at the hub until every gateway of 3 clusters enforces the new revision
// (its /policies shows it compiled and in the table), over 30 applies of
// a policy whose route weights change each time. Goal: p99 ≤ 500 ms.
//
//	go test ./testenv -run '^$' -bench BenchmarkPolicyApplyToEnforcement -benchtime 1x
func BenchmarkPolicyApplyToEnforcement(b *testing.B) {
	requireBinaries(b)
	fed := Start(b, Options{HubServers: 3, Clusters: []Cluster{
		{Name: "east", Region: "us-east", Zone: "us-east-1a"},
		{Name: "west", Region: "us-west", Zone: "us-west-1a"},
		{Name: "central", Region: "eu-central", Zone: "eu-central-1a"},
	}})
	for _, name := range []string{"east", "west"} {
		fed.Cluster(name).Deploy(EchoHTTP("default/reviews", 1))
		fed.Cluster(name).Export("default/reviews")
	}
	cfgPath, err := fed.Hub().AdminConfig()
	if err != nil {
		b.Fatal(err)
	}
	cfg, err := clientconfig.Load(cfgPath)
	if err != nil {
		b.Fatal(err)
	}
	tlsCfg, err := cfg.TLS()
	if err != nil {
		b.Fatal(err)
	}
	conn, err := hubdial.Dial(cfg.Hubs, tlsCfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = conn.Close() })
	admin := fedv1.NewAdminClient(conn)
	gateways := []*Gateway{fed.Cluster("east").Gateway(), fed.Cluster("west").Gateway(), fed.Cluster("central").Gateway()}

	apply := func(ctx context.Context, eastWeight int) (time.Duration, error) {
		p, err := policy.Decode(fmt.Appendf(nil, `{"apiVersion":"meshfed.io/v1alpha1","kind":"GlobalTrafficPolicy","metadata":{"name":"reviews"},
			"spec":{"host":"reviews.default","http":[{"route":[{"destination":{"cluster":"east"},"weight":%d},{"destination":{"cluster":"west"},"weight":%d}]}]}}`,
			eastWeight, 100-eastWeight))
		if err != nil {
			return 0, err
		}
		m, err := policy.ToProto(p)
		if err != nil {
			return 0, err
		}
		start := time.Now()
		resp, err := admin.ApplyPolicies(requestid.NewOutgoingContext(ctx, requestid.New()), &fedv1.ApplyPoliciesRequest{Policies: []*fedv1.TrafficPolicy{m}})
		if err != nil {
			return 0, err
		}
		rev := resp.GetRevision()
		tick := time.NewTicker(2 * time.Millisecond) // the measurement's resolution
		defer tick.Stop()
		for _, g := range gateways {
			for {
				gp, err := policyOf(ctx, g, "reviews")
				if err != nil {
					return 0, err
				}
				if gp.Revision >= rev {
					break
				}
				select {
				case <-ctx.Done():
					return 0, fmt.Errorf("gateway of %s: revision %d, want %d: %w", g.cluster, gp.Revision, rev, ctx.Err())
				case <-tick.C:
				}
			}
		}
		return time.Since(start), nil
	}
	ctx := context.Background()
	// The first apply also waits for every gateway to be up and synced.
	if err := WaitFor(ctx, 120*time.Second, func(ctx context.Context) error {
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		_, err := apply(wctx, 50)
		return err
	}); err != nil {
		b.Fatal(err)
	}
	var took []time.Duration
	b.ResetTimer()
	for b.Loop() {
		for i := range 30 {
			actx, cancel := context.WithTimeout(ctx, 30*time.Second)
			d, err := apply(actx, 60+i%30)
			cancel()
			if err != nil {
				b.Fatal(err)
			}
			took = append(took, d)
		}
	}
	b.StopTimer()
	slices.Sort(took)
	p := func(q float64) time.Duration { return took[min(len(took)-1, int(q*float64(len(took))))] }
	b.ReportMetric(p(0.5).Seconds()*1000, "p50_ms")
	b.ReportMetric(p(0.99).Seconds()*1000, "p99_ms")
	b.ReportMetric(took[len(took)-1].Seconds()*1000, "max_ms")
	b.Logf("apply → every gateway enforcing, %d applies: p50 %v, p99 %v, max %v", len(took), p(0.5), p(0.99), took[len(took)-1])
}
