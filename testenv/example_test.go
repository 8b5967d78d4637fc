package testenv_test

import (
	"context"
	"fmt"
	"time"

	"github.com/meshfed/meshfed/testenv"
	"github.com/meshfed/meshfed/testenv/wan"
)

// Three clusters, each with its own etcd, kube-apiserver, meshfed agent and
// east-west gateway,
// and a hub of three `meshfed hub` processes. A workload deployed and
// exported in west is imported by the other clusters. In a test, use
// testenv.Start(t, ...), which fails the test on error and tears everything
// down in t.Cleanup.
func Example() {
	ctx := context.Background()
	fed, err := testenv.New(ctx, testenv.Options{
		HubServers: 3,
		Clusters: []testenv.Cluster{
			{Name: "east", Region: "us-east", Zone: "us-east-1a"},
			{Name: "west", Region: "us-west", Zone: "us-west-1a"},
			{Name: "central", Region: "eu-central", Zone: "eu-central-1a"},
		},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer func() {
		if err := fed.Close(); err != nil {
			fmt.Println(err)
		}
	}()
	for _, c := range fed.Clusters() {
		v, err := c.Clientset().Discovery().ServerVersion()
		if err != nil {
			fmt.Println(err)
			return
		}
		fmt.Printf("%s: kube-apiserver %s answers, agent %s\n", c.Name(), v.GitVersion, c.Agent().Name())
	}
	fmt.Printf("hub: %d servers ready\n", len(fed.Hub().Servers()))

	west := fed.Cluster("west")
	west.Deploy(testenv.EchoHTTP("default/reviews", 2))
	west.Export("default/reviews")
	// Every path into west's gateway: 30 ms each way, 1% of packets lost.
	fed.GatewayLink("west").Set(wan.Latency(30*time.Millisecond), wan.Loss(0.01))
	for _, name := range []string{"east", "central"} {
		c := fed.Cluster(name)
		err := testenv.WaitFor(ctx, 30*time.Second, func(ctx context.Context) error {
			_, err := c.Targets(ctx, "default/reviews") // the import's endpoints, at the gateway
			return err
		})
		if err != nil {
			fmt.Println(err)
			return
		}
		fmt.Printf("%s imports default/reviews\n", name)
	}
	res := west.Drive("default/reviews", testenv.Requests(100))
	fmt.Printf("west: %d of %d requests answered, by %d instances\n", res.Succeeded(), len(res.Outcomes), len(res.ByInstance()))
	// From east, through east's gateway, QUIC across the WAN, west's gateway,
	// once east's gateway has the import and west's gateway is reachable.
	east := fed.Cluster("east")
	if err := testenv.WaitFor(ctx, 30*time.Second, func(context.Context) error {
		if r := east.Drive("default/reviews", testenv.Requests(1)); r.Succeeded() != 1 {
			return fmt.Errorf("not yet: %v", r.Failed()[0].Err)
		}
		return nil
	}); err != nil {
		fmt.Println(err)
		return
	}
	res = east.Drive("default/reviews", testenv.Requests(100))
	fmt.Printf("east: %d of %d requests answered by %v\n", res.Succeeded(), len(res.Outcomes), res.ByCluster())

	// Output:
	// east: kube-apiserver v1.36.3 answers, agent east/agent
	// west: kube-apiserver v1.36.3 answers, agent west/agent
	// central: kube-apiserver v1.36.3 answers, agent central/agent
	// hub: 3 servers ready
	// east imports default/reviews
	// central imports default/reviews
	// west: 100 of 100 requests answered, by 2 instances
	// east: 100 of 100 requests answered by map[west:100]
}
