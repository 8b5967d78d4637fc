package eastwest

import (
	"math/rand/v2"
	"net/netip"
	"sort"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshfed/meshfed/federation"
	"github.com/meshfed/meshfed/federation/policy"
	"github.com/meshfed/meshfed/gateway/gatewayclient"
)

// Locality tiers, nearest first.
const (
	tierLocal    = 0 // this cluster's own endpoints
	tierZone     = 1 // other clusters in the same zone
	tierRegion   = 2 // other clusters in the same region
	tierFailover = 3 // the region a policy's localityLbSetting.failover names
	tierRest     = 4
	numTiers     = 5
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
	// policies are the traffic policies in force, by service (each
	// compiled once per policy revision; see policyCache).
	policies map[federation.ServiceKey]*servicePolicy
}

// route is how an imported service is reached: the exporting clusters by
// tier, and this cluster's own endpoints when it exports the service too.
// A policy's destination (a cluster, a subset) is a view: a route
// restricted to it, precomputed in views.
type route struct {
	service  federation.ServiceKey
	local    *gatewayclient.LocalService // nil when not exported here (or not in the view)
	clusters []routeCluster              // sorted by tier, then name
	selfLoc  federation.Locality
	// pol is the service's policy, nil without one.
	pol *servicePolicy
	// dist is the policy's distribute rule for this cluster's locality
	// (nil: locality tiers decide).
	dist []policy.LocalityWeight
	// subset is the encoded labels of the view's subset ("" for all
	// endpoints), sent in the stream header to remote gateways.
	subset string
	// views are the route restricted to each destination the policy's
	// routes name (only on the service's route, not on a view).
	views map[viewKey]*route
}

// viewKey names a policy destination: a cluster (zero: any), a subset
// ("": all endpoints).
type viewKey struct {
	cluster federation.ClusterName
	subset  string
}

type routeCluster struct {
	name         federation.ClusterName
	tier         int
	loc          federation.Locality
	ready, total int
}

// target is one place a request can go: this cluster's endpoints, or a
// remote cluster's gateways; subset restricts the endpoints (encoded
// labels, "" for all); identity is the calling workload's SPIFFE ID ("" when
// unknown), named to the receiving gateway. Upstream connections are pooled
// per target, so never shared between workloads.
type target struct {
	local    bool
	cluster  federation.ClusterName
	subset   string
	identity string
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

// tierFor is a remote cluster's tier under a policy's locality settings
// (lp nil: the default tiers). Disabled: one tier for everyone.
// failoverPriority: the number of its labels, in order, that the cluster
// does not share with this one (Istio's rule). failover: the named region
// comes after this region and before the rest.
func tierFor(self federation.Locality, selfName federation.ClusterName, other federation.Locality, name federation.ClusterName, lp *policy.LocalityPolicy) int {
	if lp == nil {
		return tierOf(self, other)
	}
	if !lp.Enabled() {
		return tierLocal
	}
	if pr := lp.FailoverPriority(); len(pr) > 0 {
		matched := 0
		for _, label := range pr {
			same := false
			switch label {
			case policy.LabelRegion:
				same = self.Region() != "" && self.Region() == other.Region()
			case policy.LabelZone:
				same = self.Zone() != "" && self.Zone() == other.Zone()
			case policy.LabelCluster:
				same = selfName == name
			}
			if !same {
				break
			}
			matched++
		}
		return min(len(pr)-matched, tierRest)
	}
	t := tierOf(self, other)
	if to, ok := lp.FailoverTarget(self.Region()); ok && t == tierRest && other.Region() == to {
		return tierFailover
	}
	return t
}

// compile builds the table of a state, with the policies in force.
func compile(st *gatewayclient.State, pols map[federation.ServiceKey]*servicePolicy) *table {
	t := &table{state: st, routes: make(map[federation.ServiceKey]*route, len(st.Imports)),
		clusterByTD: make(map[spiffeid.TrustDomain]federation.ClusterName, len(st.Clusters)), policies: pols}
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
		sp := pols[key]
		r := buildRoute(st, key, im, sp, viewKey{})
		if sp != nil {
			r.views = map[viewKey]*route{}
			for _, vk := range sp.destinations {
				r.views[vk] = buildRoute(st, key, im, sp, vk)
			}
		}
		t.routes[key] = r
	}
	return t
}

// buildRoute is the route of an import, restricted to a destination
// (viewKey{} for the whole service) and shaped by its policy (nil: none).
func buildRoute(st *gatewayclient.State, key federation.ServiceKey, im *gatewayclient.Import, sp *servicePolicy, vk viewKey) *route {
	r := &route{service: key, local: st.Local[key], selfLoc: st.Self.Locality, pol: sp}
	var lp *policy.LocalityPolicy
	var sel *policy.LabelSelector
	if sp != nil {
		lp = sp.c.Locality()
		if d, ok := lp.Distribution(st.Self.Locality); ok && lp.Enabled() {
			r.dist = d
		}
		if vk.subset != "" {
			sel, _ = sp.c.Subset(vk.subset)
			r.subset = encodeSubset(sel.Labels())
		}
	}
	if r.local != nil && (!vk.cluster.IsZero() && vk.cluster != st.Self.Cluster || lp != nil && lp.Excluded(st.Self.Cluster)) {
		r.local = nil
	}
	if r.local != nil && sel != nil {
		ls := *r.local
		ls.Endpoints = nil
		for _, e := range r.local.Endpoints {
			if sel.Matches(e.Labels) {
				ls.Endpoints = append(ls.Endpoints, e)
			}
		}
		r.local = &ls
	}
	for _, c := range im.Clusters {
		if c.Cluster == st.Self.Cluster || c.Conflict != "" || !vk.cluster.IsZero() && c.Cluster != vk.cluster || lp != nil && lp.Excluded(c.Cluster) {
			continue
		}
		var loc federation.Locality
		if rc := st.Clusters[c.Cluster]; rc != nil {
			loc = rc.Locality
		}
		rc := routeCluster{name: c.Cluster, tier: tierFor(st.Self.Locality, st.Self.Cluster, loc, c.Cluster, lp), loc: loc}
		if sel == nil {
			rc.ready, rc.total = c.Ready(), c.Total()
		} else {
			for _, g := range c.Groups {
				if sel.Matches(g.Labels) {
					rc.ready += int(g.Ready)
					rc.total += int(max(g.Ready, g.Serving) + g.Terminating)
				}
			}
			rc.total = max(rc.total, rc.ready)
		}
		r.clusters = append(r.clusters, rc)
	}
	sort.Slice(r.clusters, func(i, j int) bool {
		a, b := r.clusters[i], r.clusters[j]
		if a.tier != b.tier {
			return a.tier < b.tier
		}
		return a.name.String() < b.name.String()
	})
	return r
}

// health answers whether a remote cluster can take traffic now (a gateway
// of it answers probes and outlier detection has not ejected it).
type health interface {
	clusterUp(federation.ClusterName) bool
	clusterEjected(federation.ClusterName, time.Time) bool
	endpointEjected(netip.AddrPort, time.Time) bool
}

// readyLocal returns the local endpoints of the service that are ready
// and have a target port for the port named portName; with a subset
// (labels, nil for all), only the endpoints carrying them.
func readyLocal(ls *gatewayclient.LocalService, portName string, subset map[string]string) []netip.AddrPort {
	if ls == nil {
		return nil
	}
	var out []netip.AddrPort
	for _, e := range ls.Endpoints {
		if !e.Ready || !hasLabels(e.Labels, subset) {
			continue
		}
		if p, ok := e.Ports[portName]; ok {
			out = append(out, netip.AddrPortFrom(e.Addr, p))
		}
	}
	return out
}

// hasLabels reports whether labels holds every one of want.
func hasLabels(labels, want map[string]string) bool {
	for k, v := range want {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// order returns where to send one connection or request, best first: a
// tier chosen as Envoy chooses priority levels (each tier takes
// min(100%, 1.4 × its healthy share) of what the nearer tiers left), or,
// under a policy's distribute rule, a locality group chosen by its weight
// (among the groups with healthy endpoints); a cluster within it weighted
// by ready endpoints; then every other candidate as a fallback in tier
// order, the unhealthy ones last. rnd draws in [0,1).
func (r *route) order(portName string, h health, now time.Time, rnd func() float64) []target {
	var healthy [numTiers]int
	var total [numTiers]int
	type cand struct {
		t      target
		tier   int
		loc    federation.Locality
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
			cands = append(cands, cand{t: target{local: true, subset: r.subset}, tier: tierLocal, loc: r.selfLoc, weight: ok})
		}
	}
	for _, c := range r.clusters {
		w := c.ready
		if !h.clusterUp(c.name) || h.clusterEjected(c.name, now) || r.pol != nil && r.pol.ejected(c.name, now) {
			w = 0
		}
		total[c.tier] += max(c.total, c.ready)
		healthy[c.tier] += w
		cands = append(cands, cand{t: target{cluster: c.name, subset: r.subset}, tier: c.tier, loc: c.loc, weight: w})
	}
	if len(cands) == 0 {
		return nil
	}
	chosen := -1
	if len(r.dist) > 0 {
		// A locality group by its weight, among those with healthy
		// endpoints; a candidate in no group is only a fallback.
		group := func(l federation.Locality) int {
			for i, d := range r.dist {
				if d.Pattern.Matches(l) {
					return i
				}
			}
			return -1
		}
		var gw [16]int // a distribute rule has few patterns
		sum := 0
		for _, c := range cands {
			if g := group(c.loc); g >= 0 && g < len(gw) && c.weight > 0 {
				if gw[g] == 0 {
					sum += r.dist[g].Weight
				}
				gw[g] += c.weight
			}
		}
		if sum > 0 {
			x := int(rnd() * float64(sum))
			g := -1
			for i := range min(len(r.dist), len(gw)) {
				if gw[i] == 0 {
					continue
				}
				if x < r.dist[i].Weight {
					g = i
					break
				}
				x -= r.dist[i].Weight
			}
			if g >= 0 {
				y := int(rnd() * float64(gw[g]))
				for i, c := range cands {
					if c.weight == 0 || group(c.loc) != g {
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
	} else {
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
	}
	out := make([]target, 0, len(cands))
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

// success records a success at now: the run of errors ends, and a key that is
// no longer ejected earns back one step of its ejection multiplier (as
// Envoy decays it), so a recovered key's next ejection is short again.
func (o *outliers[K]) success(k K, now time.Time) {
	o.mu.Lock()
	if s := o.state[k]; s != nil {
		s.errors = 0
		if !s.until.IsZero() && !now.Before(s.until) {
			s.until = time.Time{} // the last ejection is over
		}
		if s.ejections > 0 && s.until.IsZero() {
			s.ejections--
		}
	}
	o.mu.Unlock()
}

// forgive ends k's ejection and forgets its history: what made it fail is
// known to be fixed (a remote gateway that was down answered a new
// handshake).
func (o *outliers[K]) forgive(k K) {
	o.mu.Lock()
	delete(o.state, k)
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
	if !s.until.IsZero() && !now.Before(s.until) {
		s.until = time.Time{} // the last ejection is over
	}
	eject := s.errors >= o.consecutive && s.until.IsZero()
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
	return s != nil && !s.until.IsZero() && now.Before(s.until)
}

// randFloat is the default source of order's randomness.
func randFloat() float64 { return rand.Float64() }
