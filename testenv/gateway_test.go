package testenv

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"testing"
	"time"
)

// egressRequests reads, from a gateway's /metrics, how many egress
// requests of service it sent to cluster and got a 200 for.
func egressRequests(t *testing.T, g *Gateway, service, cluster string) int {
	t.Helper()
	return egressResults(t, g, service, cluster, "200")
}

// egressResults reads, from a gateway's /metrics, how many egress requests
// (HTTP ports) or connections (TCP ports) of service it sent to cluster
// with result ("200", "ok" for a TCP connection, ...).
func egressResults(t *testing.T, g *Gateway, service, cluster, result string) int {
	t.Helper()
	resp, err := http.Get("http://" + g.MetricsAddr() + "/metrics")
	if err != nil {
		return 0
	}
	defer func() { _ = resp.Body.Close() }()
	b, _ := io.ReadAll(resp.Body)
	re := regexp.MustCompile(`meshfed_gateway_requests_total\{cluster="` + regexp.QuoteMeta(cluster) + `",direction="egress",result="` + regexp.QuoteMeta(result) + `",service="` + regexp.QuoteMeta(service) + `"\} (\d+)`)
	m := re.FindSubmatch(b)
	if m == nil {
		return 0
	}
	n, _ := strconv.Atoi(string(m[1]))
	return n
}

// TestGatewaysCarryTrafficAndFailOver runs real agents and gateways: HTTP
// and TCP cross clusters through two gateways; with one exporting
// cluster's gateway SIGKILLed under steady load no request fails; with it
// blackholed by the WAN simulator traffic shifts to the other; with its
// agent down a gateway restarts from its cache and keeps serving.
func TestGatewaysCarryTrafficAndFailOver(t *testing.T) {
	fed := Start(t, Options{HubServers: 1, Clusters: []Cluster{
		{Name: "east", Region: "us-east", Zone: "us-east-1a"},
		{Name: "west", Region: "us-west", Zone: "us-west-1a"},
		{Name: "central", Region: "eu-central", Zone: "eu-central-1a"},
	}})
	east, west, central := fed.Cluster("east"), fed.Cluster("west"), fed.Cluster("central")
	west.Deploy(EchoHTTP("default/reviews", 2))
	west.Export("default/reviews")
	central.Deploy(EchoHTTP("default/reviews", 2))
	central.Export("default/reviews")
	central.Deploy(EchoTCP("default/ratings", 1))
	central.Export("default/ratings")
	central.Deploy(EchoHTTP("default/details", 1).WithOpaquePort())
	central.Export("default/details")
	ctx := context.Background()
	for _, svc := range []string{"default/reviews", "default/ratings", "default/details"} {
		if err := WaitFor(ctx, 60*time.Second, func(ctx context.Context) error {
			_, err := east.Targets(ctx, svc)
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
	// Both exporters of reviews must be in east's gateway config, and their
	// gateways reachable, before the traffic starts.
	if err := WaitFor(ctx, 60*time.Second, func(ctx context.Context) error {
		res := east.Drive("default/reviews", Requests(40))
		if by := res.ByCluster(); by["west"] == 0 || by["central"] == 0 || len(res.Failed()) > 0 {
			return fmt.Errorf("answers by cluster %v, %d failed", by, len(res.Failed()))
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	// The gateways report to their agents: the revision they applied and
	// that they serve, with both other clusters' gateways up.
	if err := WaitFor(ctx, 30*time.Second, func(ctx context.Context) error {
		st, err := east.Agent().State(ctx)
		if err != nil {
			return err
		}
		if len(st.Gateways) != 1 {
			return fmt.Errorf("%d gateways in east's agent status", len(st.Gateways))
		}
		g := st.Gateways[0]
		if g.Applied != g.Revision || g.Applied == 0 || g.Health == nil || !g.Health.Serving || g.Health.RemoteGatewaysUp != 2 {
			return fmt.Errorf("east's gateway in the agent's status: %+v health %+v", g, g.Health)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	// TCP through two gateways.
	if res := east.Drive("default/ratings", Requests(50)); res.Succeeded() != 50 || res.ByCluster()["central"] != 50 {
		t.Fatalf("TCP east → central: %d of 50 answered, by %v; first failure %v", res.Succeeded(), res.ByCluster(), firstFailure(res))
	}
	// HTTP behind a port declared plain TCP: carried connection by
	// connection (a TCP result), never request by request.
	if res := east.Drive("default/details", Requests(20)); res.Succeeded() != 20 || res.ByCluster()["central"] != 20 {
		t.Fatalf("HTTP on a TCP port east → central: %d of 20 answered, by %v; first failure %v", res.Succeeded(), res.ByCluster(), firstFailure(res))
	}
	// A connection is counted when it ends: the driver's close reaches
	// the gateway after Drive returns.
	if err := WaitFor(ctx, 10*time.Second, func(context.Context) error {
		conns, reqs := egressResults(t, east.Gateway(), "default/details", "central", "ok"), egressRequests(t, east.Gateway(), "default/details", "central")
		if conns == 0 || reqs != 0 {
			return fmt.Errorf("east's gateway counted %d TCP connections and %d HTTP requests of default/details, want connections only", conns, reqs)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	// Steady load; SIGKILL west's gateway once some requests went there.
	done := make(chan *Result, 1)
	go func() { done <- east.Drive("default/reviews", Requests(3000), Concurrency(8)) }()
	if err := WaitFor(ctx, 30*time.Second, func(context.Context) error {
		if n := egressRequests(t, east.Gateway(), "default/reviews", "west"); n < 200 {
			return fmt.Errorf("%d requests to west so far", n)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := west.Gateway().Kill(); err != nil {
		t.Fatal(err)
	}
	res := <-done
	if f := res.Failed(); len(f) > 0 {
		t.Fatalf("%d of %d requests failed after west's gateway was killed; first: %v", len(f), len(res.Outcomes), f[0].Err)
	}
	t.Logf("kill under load: %d requests, 0 failed, by cluster %v", len(res.Outcomes), res.ByCluster())

	// West's gateway restarts from its cache; traffic comes back to west.
	if err := west.Gateway().Start(); err != nil {
		t.Fatal(err)
	}
	if err := WaitFor(ctx, 30*time.Second, func(context.Context) error {
		if by := east.Drive("default/reviews", Requests(40)).ByCluster(); by["west"] == 0 {
			return fmt.Errorf("by cluster %v", by)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	// Blackhole west's gateway: traffic shifts to central, nothing fails.
	fed.GatewayLink("west").Partition()
	cut := time.Now()
	var shifted time.Duration
	if err := WaitFor(ctx, 30*time.Second, func(context.Context) error {
		res := east.Drive("default/reviews", Requests(20))
		if len(res.Failed()) > 0 {
			return fmt.Errorf("%d failed: %v", len(res.Failed()), firstFailure(res))
		}
		if res.ByCluster()["west"] > 0 {
			return fmt.Errorf("west still answers: %v", res.ByCluster())
		}
		shifted = time.Since(cut)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	t.Logf("blackhole: traffic off west within %v", shifted)
	fed.GatewayLink("west").Heal()

	// Static stability: with east's agent down, east's gateway restarts
	// from its cached SVID and config and carries traffic.
	if err := east.Agent().Kill(); err != nil {
		t.Fatal(err)
	}
	if err := east.Gateway().Restart(); err != nil {
		t.Fatalf("east's gateway did not come back with its agent down: %v", err)
	}
	if err := WaitFor(ctx, 30*time.Second, func(context.Context) error {
		res := east.Drive("default/reviews", Requests(40))
		if res.Succeeded() != 40 {
			return fmt.Errorf("%d of 40 answered: %v", res.Succeeded(), firstFailure(res))
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

func firstFailure(r *Result) error {
	if f := r.Failed(); len(f) > 0 {
		return f[0].Err
	}
	return nil
}
