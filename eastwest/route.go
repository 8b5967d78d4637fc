package eastwest

import (
	"math/rand/v2"
	"net/netip"
	"sort"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshfed/meshfed/federation"
	"github.com/meshfed/meshfed/gateway/gatewayclient"
)

// Locality tiers, nearest first.
const (
	tierLocal  = 0 // this cluster's own endpoints
	tierZone   = 1 // other clusters in the same zone
	tierRegion = 2 // other clusters in the same region
	tierRest   = 3
	numTiers   = 4
)

// overprovisioning is Envoy's overprovisioning factor: a tier keeps all
// traffic while at least 1/1.4 (71%) of its endpoints are healthy, and
// spills the rest to the next tier as its healthy share drops below that.
const overprovisioning = 1.4

// table is the compiled config of one revision: built once per change,
// read by every connection and request without locks.
type table struct {
	state       *gatewayclient.State
	routes      map[federation.ServiceKey]*route
	clusterByTD map[spiffeid.TrustDomain]federation.ClusterName
}

// route is how an imported service is reached: the exporting clusters by
// tier, and this cluster's own endpoints when it exports the service too.
type route struct {
	service  federation.ServiceKey
	local    *gatewayclient.LocalService // nil when not exported here
	clusters []routeCluster              // sorted by tier, then name
}

type routeCluster struct {
	name         federation.ClusterName
	tier         int
	ready, total int
}

// target is one place a request can go: this cluster's endpoints, or a
// remote cluster's gateways.
type target struct {
	local   bool
	cluster federation.ClusterName
}

func tierOf(self, other federation.Locality) int {
	switch {
	case self.IsZero() || other.IsZero() || self.Region() != other.Region():
		return tierRest
	case self.Zone() != "" && self.Zone() == other.Zone():
		return tierZone
	default:
		return tierRegion
	}
}

// compile builds the table of a state.
func compile(st *gatewayclient.State) *table {
	t := &table{state: st, routes: make(map[federation.ServiceKey]*route, len(st.Imports)),
		clusterByTD: make(map[spiffeid.TrustDomain]federation.ClusterName, len(st.Clusters))}
	// A trust domain names one member. Two clusters claiming the same one
	// (which the hub refuses) are both left out: neither may be taken for
	// the other.
	dup := map[spiffeid.TrustDomain]bool{}
	for name, c := range st.Clusters {
		if c.TrustDomain.IsZero() || dup[c.TrustDomain] {
			continue
		}
		if _, ok := t.clusterByTD[c.TrustDomain]; ok {
			delete(t.clusterByTD, c.TrustDomain)
			dup[c.TrustDomain] = true
			continue
		}
		t.clusterByTD[c.TrustDomain] = name
	}
	for key, im := range st.Imports {
		r := &route{service: key, local: st.Local[key]}
		for _, c := range im.Clusters {
			if c.Cluster == st.Self.Cluster || c.Conflict != "" {
				continue
			}
			tier := tierRest
			if rc := st.Clusters[c.Cluster]; rc != nil {
				tier = tierOf(st.Self.Locality, rc.Locality)
			}
			r.clusters = append(r.clusters, routeCluster{name: c.Cluster, tier: tier, ready: c.Ready(), total: c.Total()})
		}
		sort.Slice(r.clusters, func(i, j int) bool {
			a, b := r.clusters[i], r.clusters[j]
			if a.tier != b.tier {
				return a.tier < b.tier
			}
			return a.name.String() < b.name.String()
		})
		t.routes[key] = r
	}
	return t
}

// health answers whether a remote cluster can take traffic now (a gateway
// of it answers probes and outlier detection has not ejected it).
type health interface {
	clusterUp(federation.ClusterName) bool
	clusterEjected(federation.ClusterName, time.Time) bool
	endpointEjected(netip.AddrPort, time.Time) bool
}

// readyLocal returns the local endpoints of the service that are ready
// and have a target port for the port named portName.
func readyLocal(ls *gatewayclient.LocalService, portName string) []netip.AddrPort {
	if ls == nil {
		return nil
	}
	var out []netip.AddrPort
	for _, e := range ls.Endpoints {
		if !e.Ready {
			continue
		}
		if p, ok := e.Ports[portName]; ok {
			out = append(out, netip.AddrPortFrom(e.Addr, p))
		}
	}
	return out
}

// order returns where to send one connection or request, best first: a
// tier chosen as Envoy chooses priority levels (each tier takes
// min(100%, 1.4 × its healthy share) of what the nearer tiers left), a
// cluster within it weighted by ready endpoints, then every other
// candidate as a fallback in tier order, the unhealthy ones last. rnd
// draws in [0,1).
func (r *route) order(portName string, h health, now time.Time, rnd func() float64) []target {
	var healthy [numTiers]int
	var total [numTiers]int
	type cand struct {
		t      target
		tier   int
		weight int
	}
	cands := make([]cand, 0, len(r.clusters)+1)
	if r.local != nil {
		n, ok := 0, 0
		for _, e := range r.local.Endpoints {
			p, has := e.Ports[portName]
			if !has {
				continue
			}
			n++
			if e.Ready && !h.endpointEjected(netip.AddrPortFrom(e.Addr, p), now) {
				ok++
			}
		}
		if n > 0 {
			total[tierLocal] += n
			healthy[tierLocal] += ok
			cands = append(cands, cand{t: target{local: true}, tier: tierLocal, weight: ok})
		}
	}
	for _, c := range r.clusters {
		w := c.ready
		if !h.clusterUp(c.name) || h.clusterEjected(c.name, now) {
			w = 0
		}
		total[c.tier] += max(c.total, c.ready)
		healthy[c.tier] += w
		cands = append(cands, cand{t: target{cluster: c.name}, tier: c.tier, weight: w})
	}
	if len(cands) == 0 {
		return nil
	}
	// Load per tier.
	var load [numTiers]float64
	left, sum := 1.0, 0.0
	for t := range numTiers {
		if total[t] == 0 {
			continue
		}
		l := min(left, overprovisioning*float64(healthy[t])/float64(total[t]))
		load[t] = l
		left -= l
		sum += l
	}
	out := make([]target, 0, len(cands))
	chosen := -1
	if sum > 0 {
		x := rnd() * sum
		tier := 0
		for t := range numTiers {
			if x < load[t] {
				tier = t
				break
			}
			x -= load[t]
			tier = t
		}
		w := 0
		for _, c := range cands {
			if c.tier == tier {
				w += c.weight
			}
		}
		if w > 0 {
			y := int(rnd() * float64(w))
			for i, c := range cands {
				if c.tier != tier || c.weight == 0 {
					continue
				}
				if y < c.weight {
					chosen = i
					break
				}
				y -= c.weight
			}
		}
	}
	if chosen >= 0 {
		out = append(out, cands[chosen].t)
	}
	// Fallbacks: healthy ones in tier order (heavier first), then the rest.
	rest := make([]cand, 0, len(cands))
	for i, c := range cands {
		if i != chosen {
			rest = append(rest, c)
		}
	}
	sort.SliceStable(rest, func(i, j int) bool {
		a, b := rest[i], rest[j]
		if (a.weight > 0) != (b.weight > 0) {
			return a.weight > 0
		}
		if a.tier != b.tier {
			return a.tier < b.tier
		}
		return a.weight > b.weight
	})
	for _, c := range rest {
		out = append(out, c.t)
	}
	return out
}

// outliers is outlier detection over a set of keys (clusters, or
// endpoints): ConsecutiveErrors failures in a row eject a key for
// BaseEjection × (times ejected), at most MaxEjection. It is safe for
// concurrent use.
type outliers[K comparable] struct {
	consecutive int
	base, max   time.Duration
	onEject     func(K)

	mu    sync.Mutex
	state map[K]*outlierState
}

type outlierState struct {
	errors    int
	ejections int
	until     time.Time
}

func newOutliers[K comparable](consecutive int, base, maxEject time.Duration, onEject func(K)) *outliers[K] {
	if onEject == nil {
		onEject = func(K) {}
	}
	return &outliers[K]{consecutive: consecutive, base: base, max: maxEject, onEject: onEject, state: map[K]*outlierState{}}
}

// success records a success: the run of errors ends.
func (o *outliers[K]) success(k K) {
	o.mu.Lock()
	if s := o.state[k]; s != nil {
		s.errors = 0
	}
	o.mu.Unlock()
}

// failure records a failure at now and reports whether it ejected k.
func (o *outliers[K]) failure(k K, now time.Time) bool {
	o.mu.Lock()
	s := o.state[k]
	if s == nil {
		s = &outlierState{}
		o.state[k] = s
	}
	s.errors++
	eject := s.errors >= o.consecutive && !now.Before(s.until)
	if eject {
		s.ejections++
		s.until = now.Add(min(o.base*time.Duration(s.ejections), o.max))
		s.errors = 0
	}
	o.mu.Unlock()
	if eject {
		o.onEject(k)
	}
	return eject
}

// retain forgets the keys keep refuses (endpoints and clusters that left
// the config), so the map does not grow with churn.
func (o *outliers[K]) retain(keep func(K) bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for k := range o.state {
		if !keep(k) {
			delete(o.state, k)
		}
	}
}

// ejected reports whether k is ejected at now.
func (o *outliers[K]) ejected(k K, now time.Time) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	s := o.state[k]
	return s != nil && now.Before(s.until)
}

// randFloat is the default source of order's randomness.
func randFloat() float64 { return rand.Float64() }
