package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/meshfed/meshfed/testenv"
)

// TestCrossClusterCallsThroughClustersetNames is story 2: a client in
// central calls reviews over HTTP, and a client in east calls ratings over
// TCP, each by its clusterset.local name, resolved with a DNS client
// against the cluster's agent. Every call is answered: reviews by both
// exporting clusters (east and west), ratings by west, through the
// caller's gateway and the exporter's. A service no cluster exports has
// no name.
func TestCrossClusterCallsThroughClustersetNames(t *testing.T) {
	fed := traffic.get(t)
	baseline(t, fed, "east", "west")
	central, east := fed.Cluster("central"), fed.Cluster("east")
	ctx := context.Background()

	reviews := waitResolve(t, central, "default/reviews", "http")
	res := testenv.DriveHTTP(ctx, "http://"+reviews+"/", testenv.Requests(200))
	if by := res.ByCluster(); res.Succeeded() != 200 || by["east"] == 0 || by["west"] == 0 || by["east"]+by["west"] != 200 {
		t.Fatalf("HTTP central → reviews.default.svc.clusterset.local (%s): %v; want all 200 answered by east and west", reviews, res)
	}
	t.Logf("HTTP central → reviews: %v", res)

	ratings := waitResolve(t, east, "default/ratings", "tcp")
	res = testenv.DriveTCP(ctx, ratings, testenv.Requests(100), testenv.Payload([]byte("meshfed e2e\n")))
	if res.Succeeded() != 100 || res.ByCluster()["west"] != 100 {
		t.Fatalf("TCP east → ratings.default.svc.clusterset.local (%s): %v; want all 100 echoed by west", ratings, res)
	}
	t.Logf("TCP east → ratings: %v", res)

	// internal runs in east, unexported: central has no name for it.
	m := new(dns.Msg)
	m.SetQuestion("internal.default.svc.clusterset.local.", dns.TypeA)
	r, _, err := (&dns.Client{Timeout: 2 * time.Second}).ExchangeContext(ctx, m, central.Agent().DNSAddr())
	if err != nil {
		t.Fatal(err)
	}
	if r.Rcode != dns.RcodeNameError {
		t.Errorf("internal.default.svc.clusterset.local at central: %s %v, want NXDOMAIN (nobody exports it)", dns.RcodeToString[r.Rcode], r.Answer)
	}
}

// waitResolve waits until c resolves service's port portName (see resolve)
// and returns the address on loopback.
func waitResolve(t testing.TB, c *testenv.ClusterEnv, service, portName string) string {
	t.Helper()
	var addr string
	if err := testenv.WaitFor(context.Background(), 30*time.Second, func(ctx context.Context) error {
		a, err := resolve(ctx, c, service, portName)
		if err != nil {
			return fmt.Errorf("%s from %s: %w", service, c.Name(), err)
		}
		addr = a
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return addr
}
