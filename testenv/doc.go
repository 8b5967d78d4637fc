// Package testenv stands up whole meshfed federations for tests: a real
// Kubernetes control plane (etcd and kube-apiserver processes on loopback)
// per cluster, a hub of real `meshfed hub` processes, sample workloads, a
// traffic driver, and simulated WAN links between the clusters and to the
// hub ([github.com/meshfed/meshfed/testenv/wan]: latency, jitter, loss, a
// bandwidth cap and partitions).
//
// A test starts a federation with [Start], which stops and removes everything
// in t.Cleanup, even when the test fails midway:
//
//	fed := testenv.Start(t, testenv.Options{
//		HubServers: 3,
//		Clusters: []testenv.Cluster{
//			{Name: "east", Region: "us-east", Zone: "us-east-1a"},
//			{Name: "west", Region: "us-west", Zone: "us-west-1a"},
//		},
//	})
//	cs := fed.Cluster("west").Clientset()
//	fed.Hub().Server(0).Kill()
//
// [New] does the same without a testing.TB (for TestMain or an Example) and
// hands the caller [Federation.Close].
//
// The kube-apiserver and etcd binaries are built from source once, by
// `make testenv-bins`, into a versioned cache folder; see [Binaries]. The
// environment variables testenv reads are listed in docs/testing.md and
// are read in one place (env.go): a test harness is configured by its
// environment, the way `go test` itself is.
//
// Agents and east-west gateways do not exist yet; the API that will start
// them (Deploy, Export, Drive on a cluster, links between each cluster and the
// hub) is described as planned in docs/testing.md and is not part of this
// package until it works.
package testenv
