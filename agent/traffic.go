package agent

import (
	"math"
	"slices"
	"sync"
	"time"

	fedv1 "github.com/meshfed/meshfed/federation/v1"
	gatewayv1 "github.com/meshfed/meshfed/gateway/v1"
)

// Traffic summaries for the hub's web UI: each gateway replica's Report
// carries its egress counters per destination cluster, cumulative since
// it started (eastwest.linkCounters). The trafficMeter keeps, per replica,
// the counters of its latest Report and those the last summary counted up
// to; every TrafficInterval the hub session sends the differences, merged
// over the replicas connected to this agent, as one TrafficSummary (one
// entry per destination cluster, the p99 from the merged latency
// buckets). A replica's first Report only sets its baseline, and a
// replica whose counters went down restarted: its counters are all new. A
// Report that adds failovers or ejections, or a replica that comes or
// goes, asks for a summary sooner (at most every minTrafficGap), so the
// timeline learns of a failover within seconds.

// Bounds of Config.TrafficInterval.
const (
	DefaultTrafficInterval = 10 * time.Second
	minTrafficInterval     = time.Second
	maxTrafficInterval     = time.Hour
	// minTrafficGap is the shortest time between two summaries.
	minTrafficGap = time.Second
	// maxTrafficGateways is the hub's bound on a summary's gateways.
	maxTrafficGateways = 64
)

type replicaCounters struct {
	links  map[string]*gatewayv1.LinkCounters
	bounds []float64
}

func countersOf(r *gatewayv1.ReportRequest) replicaCounters {
	c := replicaCounters{links: map[string]*gatewayv1.LinkCounters{}, bounds: r.GetLatencyBoundsSeconds()}
	for _, l := range r.GetLinks() {
		c.links[l.GetCluster()] = l
	}
	return c
}

// trafficMeter is safe for concurrent use: gateway Reports feed it, the
// hub session drains it.
type trafficMeter struct {
	mu       sync.Mutex
	latest   map[string]replicaCounters // by instance
	counted  map[string]replicaCounters // what the last summary counted up to
	lastSent time.Time
	// kick is signalled when a summary is due sooner.
	kick chan struct{}
}

func newTrafficMeter() *trafficMeter {
	return &trafficMeter{latest: map[string]replicaCounters{}, counted: map[string]replicaCounters{}, kick: make(chan struct{}, 1)}
}

// report records a replica's Report.
func (m *trafficMeter) report(r *gatewayv1.ReportRequest) {
	inst := r.GetInstance()
	cur := countersOf(r)
	m.mu.Lock()
	defer m.mu.Unlock()
	_, known := m.latest[inst]
	m.latest[inst] = cur
	if !known {
		if _, ok := m.counted[inst]; !ok {
			m.counted[inst] = cur // the baseline: counts before it are not this interval's
		}
		m.signal()
		return
	}
	base := m.counted[inst]
	for k, l := range cur.links {
		b := base.links[k]
		if l.GetFailovers() > b.GetFailovers() || l.GetEjections() > b.GetEjections() {
			m.signal()
			return
		}
	}
}

// gone forgets a replica whose last stream closed.
func (m *trafficMeter) gone(instance string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.latest, instance)
	delete(m.counted, instance)
	m.signal()
}

func (m *trafficMeter) signal() {
	select {
	case m.kick <- struct{}{}:
	default:
	}
}

// sub is a's counter minus b's, or a's alone when a is below b (the
// replica restarted).
func sub(a, b uint64) uint64 {
	if a < b {
		return a
	}
	return a - b
}

// summary returns the traffic since the last summary (the interval is the
// time since then, at least minTrafficGap) and moves the baseline.
// gateways are the replicas connected now.
func (m *trafficMeter) summary(now time.Time, gateways []*fedv1.GatewayReplicaHealth) *fedv1.TrafficSummary {
	m.mu.Lock()
	defer m.mu.Unlock()
	interval := now.Sub(m.lastSent)
	if m.lastSent.IsZero() || interval > maxTrafficInterval {
		interval = DefaultTrafficInterval
	}
	interval = max(interval, minTrafficGap)
	m.lastSent = now
	type agg struct {
		l       *fedv1.LinkTraffic
		buckets []uint64
		bounds  []float64
	}
	by := map[string]*agg{}
	for inst, cur := range m.latest {
		base := m.counted[inst]
		for k, l := range cur.links {
			b := base.links[k]
			a := by[k]
			if a == nil {
				a = &agg{l: &fedv1.LinkTraffic{Cluster: k}}
				by[k] = a
			}
			a.l.Requests += sub(l.GetRequests(), b.GetRequests())
			a.l.Errors += sub(l.GetErrors(), b.GetErrors())
			a.l.Failovers += sub(l.GetFailovers(), b.GetFailovers())
			a.l.Ejections += sub(l.GetEjections(), b.GetEjections())
			if n := len(l.GetLatencyBuckets()); n > 0 && n == len(cur.bounds)+1 {
				if a.buckets == nil {
					a.buckets, a.bounds = make([]uint64, n), cur.bounds
				}
				if len(a.buckets) == n && slices.Equal(a.bounds, cur.bounds) {
					restarted := l.GetRequests() < b.GetRequests()
					for i, c := range l.GetLatencyBuckets() {
						if !restarted && i < len(b.GetLatencyBuckets()) {
							c = sub(c, b.GetLatencyBuckets()[i])
						}
						a.buckets[i] += c
					}
				}
			}
			a.l.Errors = min(a.l.Errors, a.l.Requests)
		}
		m.counted[inst] = cur
	}
	out := &fedv1.TrafficSummary{IntervalMs: uint32(interval / time.Millisecond), Gateways: gateways}
	for _, k := range sortedKeys(by) {
		a := by[k]
		if a.l.Requests == 0 && a.l.Failovers == 0 && a.l.Ejections == 0 {
			continue // nothing on this link in the interval
		}
		a.l.P99Ms = quantileMs(a.buckets, a.bounds, 0.99)
		out.Links = append(out.Links, a.l)
	}
	return out
}

// quantileMs estimates quantile q of a histogram (per-bucket counts, one
// more than bounds: the last is everything above) in milliseconds, by
// linear interpolation inside the bucket, as Prometheus'
// histogram_quantile does; the last bound for the overflow bucket.
func quantileMs(buckets []uint64, bounds []float64, q float64) float64 {
	var total uint64
	for _, c := range buckets {
		total += c
	}
	if total == 0 || len(bounds) == 0 {
		return 0
	}
	rank := q * float64(total)
	var below float64
	for i, c := range buckets {
		if below+float64(c) >= rank && c > 0 {
			if i >= len(bounds) {
				return bounds[len(bounds)-1] * 1000
			}
			lo := 0.0
			if i > 0 {
				lo = bounds[i-1]
			}
			v := lo + (bounds[i]-lo)*(rank-below)/float64(c)
			return math.Round(v*1e6) / 1e3
		}
		below += float64(c)
	}
	return bounds[len(bounds)-1] * 1000
}

// trafficGateways lists the gateway replicas connected, by instance, and
// whether their last Report said they serve.
func (h *gatewayHub) trafficGateways() []*fedv1.GatewayReplicaHealth {
	h.mu.Lock()
	defer h.mu.Unlock()
	serving := map[string]bool{}
	for _, s := range h.streams {
		serving[s.Instance] = serving[s.Instance] || (s.Health != nil && s.Health.Serving && !s.Health.Draining)
	}
	out := make([]*fedv1.GatewayReplicaHealth, 0, len(serving))
	for _, inst := range sortedKeys(serving) {
		out = append(out, &fedv1.GatewayReplicaHealth{Instance: inst, Serving: serving[inst]})
	}
	if len(out) > maxTrafficGateways {
		out = out[:maxTrafficGateways]
	}
	return out
}
