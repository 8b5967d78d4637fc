package agent

import (
	"testing"
	"time"

	fedv1 "github.com/meshfed/meshfed/federation/v1"
	gatewayv1 "github.com/meshfed/meshfed/gateway/v1"
)

func gwReport(inst string, bounds []float64, links ...*gatewayv1.LinkCounters) *gatewayv1.ReportRequest {
	return &gatewayv1.ReportRequest{Instance: inst, Links: links, LatencyBoundsSeconds: bounds}
}

func kicked(m *trafficMeter) bool {
	select {
	case <-m.kick:
		return true
	default:
		return false
	}
}

func TestTrafficSummaryCountsDifferencesMergedOverReplicas(t *testing.T) {
	bounds := []float64{0.001, 0.01, 0.1}
	m := newTrafficMeter()
	t0 := time.Unix(1000, 0)
	// First reports: baselines, whatever the replicas counted before.
	m.report(gwReport("gw-0", bounds, &gatewayv1.LinkCounters{Cluster: "west", Requests: 500, Errors: 5, LatencyBuckets: []uint64{500, 0, 0, 0}}))
	m.report(gwReport("gw-1", bounds))
	if !kicked(m) {
		t.Error("a new replica did not ask for a summary")
	}
	if s := m.summary(t0, nil); len(s.GetLinks()) != 0 {
		t.Fatalf("first summary %v: want no traffic (baselines only)", s)
	}
	m.report(gwReport("gw-0", bounds, &gatewayv1.LinkCounters{Cluster: "west", Requests: 600, Errors: 15, LatencyBuckets: []uint64{500, 90, 10, 0}}))
	if kicked(m) {
		t.Error("a report without failovers asked for a summary")
	}
	m.report(gwReport("gw-1", bounds, &gatewayv1.LinkCounters{Cluster: "west", Requests: 100, LatencyBuckets: []uint64{0, 100, 0, 0}, Failovers: 3}))
	if !kicked(m) {
		t.Error("a report with new failovers did not ask for a summary")
	}
	s := m.summary(t0.Add(10*time.Second), []*fedv1.GatewayReplicaHealth{{Instance: "gw-0", Serving: true}})
	if s.GetIntervalMs() != 10000 || len(s.GetLinks()) != 1 || len(s.GetGateways()) != 1 {
		t.Fatalf("summary %v: want 10s, one link, one gateway", s)
	}
	l := s.GetLinks()[0]
	if l.GetCluster() != "west" || l.GetRequests() != 200 || l.GetErrors() != 10 || l.GetFailovers() != 3 {
		t.Errorf("link %v: want west, 200 requests, 10 errors, 3 failovers", l)
	}
	// 190 of 200 at or below 10ms, 10 in (10ms, 100ms]: rank 198 is the
	// 8th of those 10: 10 + 90*8/10 = 82 ms.
	if l.GetP99Ms() != 82 {
		t.Errorf("p99 %v ms, want 82", l.GetP99Ms())
	}
	// gw-0 restarted: its counters start again from zero.
	m.report(gwReport("gw-0", bounds, &gatewayv1.LinkCounters{Cluster: "west", Requests: 7, LatencyBuckets: []uint64{7, 0, 0, 0}}))
	s = m.summary(t0.Add(20*time.Second), nil)
	if len(s.GetLinks()) != 1 || s.GetLinks()[0].GetRequests() != 7 || s.GetLinks()[0].GetP99Ms() > 1 {
		t.Errorf("after a restart %v: want the 7 new requests under 1ms", s)
	}
	if s = m.summary(t0.Add(30*time.Second), nil); len(s.GetLinks()) != 0 {
		t.Errorf("an idle interval %v: want no links", s)
	}
}
