package eastwest

import (
	"slices"
	"strconv"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	gatewayv1 "github.com/meshfed/meshfed/gateway/v1"
)

// linkCounters are the gateway's egress counters per destination cluster,
// cumulative since it started, as its Report carries them to the agent
// (which forwards their differences to the hub for the web UI). They are
// read from the gateway's own Prometheus series, so the two never
// disagree: requests and errors from meshfed_gateway_requests_total
// (egress, a destination cluster; an error is a 5xx, a reset, a timeout
// or any other non-HTTP failure), the latency buckets from
// meshfed_gateway_latency_seconds, failovers from
// meshfed_gateway_failovers_total (by the cluster that failed), ejections
// from meshfed_gateway_ejections_total (of a cluster, or of a cluster for
// one service). Local endpoints and requests that found no target have no
// link. At most one entry per destination cluster.
func (g *Gateway) linkCounters() ([]*gatewayv1.LinkCounters, []float64) {
	by := map[string]*gatewayv1.LinkCounters{}
	link := func(cluster string) *gatewayv1.LinkCounters {
		l := by[cluster]
		if l == nil {
			l = &gatewayv1.LinkCounters{Cluster: cluster}
			by[cluster] = l
		}
		return l
	}
	remote := func(cluster string) bool { return cluster != "" && cluster != "local" && cluster != "none" }
	each(g.m.requests, func(lb map[string]string, m *dto.Metric) {
		if lb["direction"] != "egress" || !remote(lb["cluster"]) {
			return
		}
		n := uint64(m.GetCounter().GetValue())
		l := link(lb["cluster"])
		l.Requests += n
		if isErrorResult(lb["result"]) {
			l.Errors += n
		}
	})
	// The bounds are the histogram's own (every series has the same).
	var bounds []float64
	each(g.m.latency, func(lb map[string]string, m *dto.Metric) {
		if lb["direction"] != "egress" || !remote(lb["cluster"]) {
			return
		}
		if bounds == nil {
			for _, b := range m.GetHistogram().GetBucket() {
				bounds = append(bounds, b.GetUpperBound())
			}
		}
		l := link(lb["cluster"])
		if l.LatencyBuckets == nil {
			l.LatencyBuckets = make([]uint64, len(bounds)+1)
		}
		var below uint64
		for i, b := range m.GetHistogram().GetBucket() {
			if i >= len(bounds) {
				break
			}
			c := b.GetCumulativeCount()
			l.LatencyBuckets[i] += c - below
			below = c
		}
		l.LatencyBuckets[len(bounds)] += m.GetHistogram().GetSampleCount() - below
	})
	each(g.m.failovers, func(lb map[string]string, m *dto.Metric) {
		if remote(lb["cluster"]) {
			link(lb["cluster"]).Failovers += uint64(m.GetCounter().GetValue())
		}
	})
	each(g.m.ejections, func(lb map[string]string, m *dto.Metric) {
		cluster := ""
		switch lb["kind"] {
		case "cluster":
			cluster = lb["name"]
		case "service_cluster":
			_, cluster, _ = strings.Cut(lb["name"], "@")
		}
		if remote(cluster) {
			link(cluster).Ejections += uint64(m.GetCounter().GetValue())
		}
	})
	out := make([]*gatewayv1.LinkCounters, 0, len(by))
	for _, l := range by {
		out = append(out, l)
	}
	slices.SortFunc(out, func(a, b *gatewayv1.LinkCounters) int { return strings.Compare(a.GetCluster(), b.GetCluster()) })
	return out, bounds
}

// isErrorResult: a request result that counts as a failure of the link.
func isErrorResult(result string) bool {
	if result == "ok" {
		return false
	}
	if code, err := strconv.Atoi(result); err == nil {
		return code >= 500
	}
	return true // reset, unavailable, a QUIC status code
}

// each calls f with the labels and value of every series c collects.
func each(c prometheus.Collector, f func(map[string]string, *dto.Metric)) {
	ch := make(chan prometheus.Metric, 64)
	go func() {
		c.Collect(ch)
		close(ch)
	}()
	for m := range ch {
		var d dto.Metric
		if m.Write(&d) != nil {
			continue
		}
		lb := make(map[string]string, len(d.GetLabel()))
		for _, p := range d.GetLabel() {
			lb[p.GetName()] = p.GetValue()
		}
		f(lb, &d)
	}
}
