package testenv

import (
	"context"
	"testing"
	"time"
)

var threeClusters = []Cluster{
	{Name: "east", Region: "us-east", Zone: "us-east-1a"},
	{Name: "west", Region: "us-west", Zone: "us-west-1a"},
	{Name: "central", Region: "eu-central", Zone: "eu-central-1a"},
}

// BenchmarkStart measures the time from New to ready (every API server,
// hub server and agent ready: each agent joined and holds the hub state)
// for 3 clusters and a 3-server hub, with cached binaries (the meshfed
// build is done before the clock starts), and the resident memory of each
// cluster's etcd, kube-apiserver and agent right after.
func BenchmarkStart(b *testing.B) {
	requireBinaries(b)
	if _, err := meshfedBinary(); err != nil {
		b.Fatal(err)
	}
	var total time.Duration
	var clusterRSS, apiserverRSS, etcdRSS, agentRSS, hubRSS int64
	var clusters, hubServers int64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		fed, err := New(context.Background(), Options{HubServers: 3, Clusters: threeClusters, Dir: b.TempDir()})
		if err != nil {
			b.Fatal(err)
		}
		total += time.Since(start)
		b.StopTimer()
		for _, c := range fed.Clusters() {
			cp := c.ControlPlane()
			a, err1 := cp.APIServer().RSS()
			e, err2 := cp.Etcd().RSS()
			if err1 != nil || err2 != nil {
				b.Fatal(err1, err2)
			}
			ag, err := c.Agent().RSS()
			if err != nil {
				b.Fatal(err)
			}
			apiserverRSS += a
			etcdRSS += e
			agentRSS += ag
			clusterRSS += a + e + ag
			clusters++
		}
		for _, s := range fed.Hub().Servers() {
			n, err := s.RSS()
			if err != nil {
				b.Fatal(err)
			}
			hubRSS += n
			hubServers++
		}
		if err := fed.Close(); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	const mib = 1 << 20
	b.ReportMetric(total.Seconds()/float64(b.N), "s-to-ready")
	b.ReportMetric(float64(clusterRSS)/float64(clusters)/mib, "MiB-rss/cluster")
	b.ReportMetric(float64(apiserverRSS)/float64(clusters)/mib, "MiB-rss/apiserver")
	b.ReportMetric(float64(etcdRSS)/float64(clusters)/mib, "MiB-rss/etcd")
	b.ReportMetric(float64(agentRSS)/float64(clusters)/mib, "MiB-rss/agent")
	b.ReportMetric(float64(hubRSS)/float64(hubServers)/mib, "MiB-rss/hub-server")
}
