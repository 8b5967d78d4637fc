package e2e

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/meshfed/meshfed/testenv"
)

var (
	eastCluster    = testenv.Cluster{Name: "east", Region: "us-east", Zone: "us-east-1a"}
	westCluster    = testenv.Cluster{Name: "west", Region: "us-west", Zone: "us-west-1a"}
	centralCluster = testenv.Cluster{Name: "central", Region: "eu-central", Zone: "eu-central-1a"}
)

// traffic is the federation of the data-plane stories (cross-cluster
// calls, failover, the traffic policy): one hub server; east and west
// export reviews (HTTP, 2 replicas each), west exports ratings (TCP);
// east also runs internal (HTTP), which it does not export. Central calls
// reviews, which east and west serve from the same tier
// (other regions, as seen from eu-central), so both get central's
// traffic.
var traffic = newShared("traffic", testenv.Options{HubServers: 1,
	Clusters: []testenv.Cluster{eastCluster, westCluster, centralCluster}},
	func(ctx context.Context, fed *testenv.Federation) error {
		east, west := fed.Cluster("east"), fed.Cluster("west")
		for _, c := range []*testenv.ClusterEnv{east, west} {
			c.Deploy(testenv.EchoHTTP("default/reviews", 2))
			c.Export("default/reviews")
		}
		west.Deploy(testenv.EchoTCP("default/ratings", 1))
		west.Export("default/ratings")
		east.Deploy(testenv.EchoHTTP("default/internal", 1))
		if err := waitServed(ctx, fed.Cluster("east"), "default/ratings", "west"); err != nil {
			return err
		}
		return waitServed(ctx, fed.Cluster("central"), "default/reviews", "east", "west")
	})

// hubs is the federation of the control-plane stories (the hub down, the
// hub leader killed) and of security: three hub servers; east exports
// reviews (HTTP, 2 replicas), central calls it; east also runs internal
// (HTTP), which it does not export.
var hubs = newShared("hubs", testenv.Options{HubServers: 3,
	Clusters: []testenv.Cluster{eastCluster, centralCluster}},
	func(ctx context.Context, fed *testenv.Federation) error {
		east := fed.Cluster("east")
		east.Deploy(testenv.EchoHTTP("default/reviews", 2))
		east.Export("default/reviews")
		east.Deploy(testenv.EchoHTTP("default/internal", 1))
		return waitServed(ctx, fed.Cluster("central"), "default/reviews", "east")
	})

// waitServed waits until from reaches service through its import, every
// request answered and each of the clusters answering some, and every
// gateway of the federation has applied the config its agent sent it.
func waitServed(ctx context.Context, from *testenv.ClusterEnv, service string, clusters ...string) error {
	return testenv.WaitFor(ctx, 90*time.Second, func(ctx context.Context) error {
		if _, err := from.Targets(ctx, service); err != nil {
			return err
		}
		res := from.Drive(service, testenv.Requests(40))
		by := res.ByCluster()
		if f := res.Failed(); len(f) > 0 {
			return fmt.Errorf("%s from %s: %d of %d failed; first: %v", service, from.Name(), len(f), len(res.Outcomes), f[0].Err)
		}
		for _, c := range clusters {
			if by[c] == 0 {
				return fmt.Errorf("%s from %s: answers by cluster %v, want some from each of %v", service, from.Name(), by, clusters)
			}
		}
		if extra := slices.DeleteFunc(slices.Collect(maps.Keys(by)), func(c string) bool { return slices.Contains(clusters, c) }); len(extra) > 0 {
			return fmt.Errorf("%s from %s: answers by cluster %v, want only %v", service, from.Name(), by, clusters)
		}
		return nil
	})
}

// baseline waits until the shared federation is back to how its setup
// left it: central reaches reviews of every exporting cluster, and every
// gateway applied its latest config.
func baseline(t testing.TB, fed *testenv.Federation, clusters ...string) {
	t.Helper()
	ctx := context.Background()
	if err := waitServed(ctx, fed.Cluster("central"), "default/reviews", clusters...); err != nil {
		t.Fatal(err)
	}
	if err := testenv.WaitFor(ctx, 60*time.Second, func(ctx context.Context) error {
		for _, c := range fed.Clusters() {
			st, err := c.Agent().State(ctx)
			if err != nil {
				return err
			}
			if !st.Hub.Connected {
				return fmt.Errorf("%s's agent is not connected to the hub", c.Name())
			}
			if len(st.Gateways) == 0 {
				return fmt.Errorf("%s's agent has no gateway connected", c.Name())
			}
			for _, g := range st.Gateways {
				if g.Applied != g.Revision {
					return fmt.Errorf("%s's gateway %s applied revision %d of %d", c.Name(), g.Instance, g.Applied, g.Revision)
				}
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}
