package eastwest

import (
	"slices"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestLinkCountersSumTheGatewaySeriesPerDestinationCluster(t *testing.T) {
	g := &Gateway{m: newMetrics(prometheus.NewRegistry())}
	g.m.requests.WithLabelValues("default/reviews", "west", "egress", "200").Add(90)
	g.m.requests.WithLabelValues("default/ratings", "west", "egress", "503").Add(6)
	g.m.requests.WithLabelValues("default/ratings", "west", "egress", "reset").Add(4)
	g.m.requests.WithLabelValues("default/ratings", "west", "egress", "404").Add(1) // not the link's failure
	g.m.requests.WithLabelValues("default/reviews", "east", "egress", "ok").Add(5)
	g.m.requests.WithLabelValues("default/reviews", "local", "egress", "ok").Add(50)        // no link
	g.m.requests.WithLabelValues("default/reviews", "none", "egress", "unavailable").Add(3) // no target
	g.m.requests.WithLabelValues("default/reviews", "west", "ingress", "ok").Add(70)        // the other way
	g.m.latency.WithLabelValues("default/reviews", "west", "egress").Observe(0.003)
	g.m.latency.WithLabelValues("default/ratings", "west", "egress").Observe(10) // above every bound
	g.m.failovers.WithLabelValues("default/reviews", "west", "connect").Add(2)
	g.m.ejections.WithLabelValues("cluster", "west").Inc()
	g.m.ejections.WithLabelValues("service_cluster", "default/reviews@west").Inc()
	g.m.ejections.WithLabelValues("endpoint", "10.0.0.1:80").Inc()

	links, bounds := g.linkCounters()
	if len(links) != 2 || links[0].GetCluster() != "east" || links[1].GetCluster() != "west" {
		t.Fatalf("links %v: want east and west", links)
	}
	w := links[1]
	if w.GetRequests() != 101 || w.GetErrors() != 10 || w.GetFailovers() != 2 || w.GetEjections() != 2 {
		t.Errorf("west %v: want 101 requests, 10 errors, 2 failovers, 2 ejections", w)
	}
	if len(bounds) == 0 || len(w.GetLatencyBuckets()) != len(bounds)+1 {
		t.Fatalf("%d buckets for %d bounds", len(w.GetLatencyBuckets()), len(bounds))
	}
	i, _ := slices.BinarySearch(bounds, 0.003) // the bucket whose upper bound is the first >= 3 ms
	if w.GetLatencyBuckets()[i] != 1 || w.GetLatencyBuckets()[len(bounds)] != 1 {
		t.Errorf("buckets %v (bounds %v): want one at 3ms and one above the last bound", w.GetLatencyBuckets(), bounds)
	}
	if e := links[0]; e.GetRequests() != 5 || e.GetErrors() != 0 || e.GetLatencyBuckets() != nil {
		t.Errorf("east %v: want 5 requests, no errors, no latency", e)
	}
}
