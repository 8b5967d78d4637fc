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
// A cluster with [Cluster.Pods] also runs kube-scheduler,
// kube-controller-manager and kwok (`make testenv-pod-bins`): Deployments
// make pods that go Running and Ready on a simulated node with IPs from
// [PodCIDR], and EndpointSlices follow, as in a real cluster.
//
// The command testenv/cmd/testenv (`testenv up`) runs a federation outside
// Go tests, with one kubeconfig holding a context per cluster
// ([Federation.WriteKubeconfig]), for kubectl and for suites that cannot live
// in this module, such as the MCS API conformance suite.
package testenv
