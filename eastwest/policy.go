package eastwest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshfed/meshfed/federation"
	"github.com/meshfed/meshfed/federation/policy"
	fedv1 "github.com/meshfed/meshfed/federation/v1"
)

// Traffic policies (package federation/policy) are enforced here: the
// agent streams every GlobalTrafficPolicy of the federation; each
// revision of a policy is compiled once (policyCache) and the table holds
// the one in force per service. A revision that does not compile is
// rejected, reported, and the last good revision of that policy stays in
// force; so does everything while the agent or the hub is away (the
// gateway's cached config holds the policies too).
//
// Egress (per HTTP request, or per TCP connection): the first matching
// route's fault, header operations, rewrite, weighted destination (a
// cluster, a subset: a view of the route, precomputed at compile time),
// retries, per-try and overall timeouts; the locality settings shape the
// tiers, excludeClusters drops clusters, outlierDetection ejects clusters
// for this service, connectionPool bounds connections, pending requests,
// retries and connection reuse. Ingress: authorization (the caller's
// cluster, trust domain and, when the header names it, service account)
// refuses with CodeForbidden, which the caller's gateway answers as 403;
// a subset in the header restricts the endpoints.

// servicePolicy is the policy in force for one service, with what the
// gateway keeps for it across revisions of the table.
type servicePolicy struct {
	c        *policy.Compiled
	name     string
	revision uint64
	// destinations are the views the policy's routes name.
	destinations []viewKey
	state        *serviceState
}

// ejected reports whether the policy's outlier detection has ejected
// cluster c for this service.
func (sp *servicePolicy) ejected(c federation.ClusterName, now time.Time) bool {
	if sp.state.out == nil {
		return false
	}
	return sp.state.out.ejected(c, now)
}

// destination is the view of a route's destination.
func destination(d policy.WeightedDestination) viewKey {
	return viewKey{cluster: d.Cluster, subset: d.Subset}
}

// PolicyStatus is one policy as a gateway holds it: the revision in force
// (0: none) and, when the latest revision it was sent was rejected, that
// revision and why.
type PolicyStatus struct {
	Name             string
	Service          federation.ServiceKey
	Revision         uint64
	RejectedRevision uint64
	Error            string
}

// policyCache compiles each policy revision once, keeps the last good
// revision of each policy, and the per-service state (outlier ejections,
// pool limits) that must outlive a table.
type policyCache struct {
	mu       sync.Mutex
	compiled map[string]*compiledPolicy // by policy name
	states   map[federation.ServiceKey]*serviceState
}

type compiledPolicy struct {
	revision uint64 // of c
	service  federation.ServiceKey
	c        *policy.Compiled
	// rejected is the latest revision that did not compile, and why (0
	// when the latest one compiled).
	rejected    uint64
	rejectedErr error
}

func newPolicyCache() *policyCache {
	return &policyCache{compiled: map[string]*compiledPolicy{}, states: map[federation.ServiceKey]*serviceState{}}
}

// update compiles what changed in ps (the policies of a config revision)
// and returns the policies in force by service. A policy that is gone is
// forgotten. Two policies naming one service (which the hub refuses) are
// settled by name, the first in order winning.
// onReject is told of each revision that does not compile, once.
func (pc *policyCache) update(ps map[string]*fedv1.TrafficPolicy, onEject func(federation.ServiceKey, federation.ClusterName),
	onReject func(name string, revision uint64, err error)) map[federation.ServiceKey]*servicePolicy {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	for name := range pc.compiled {
		if _, ok := ps[name]; !ok {
			delete(pc.compiled, name)
		}
	}
	for name, m := range ps {
		cp := pc.compiled[name]
		rev := m.GetModifyRevision()
		if cp != nil && (cp.revision == rev || cp.rejected == rev) {
			continue
		}
		if cp == nil {
			cp = &compiledPolicy{}
			pc.compiled[name] = cp
		}
		gp, err := policy.FromProto(m)
		var c *policy.Compiled
		if err == nil {
			c, err = policy.Compile(gp)
		}
		if err != nil {
			cp.rejected, cp.rejectedErr = rev, err
			if onReject != nil {
				onReject(name, rev, err)
			}
			continue
		}
		cp.revision, cp.service, cp.c, cp.rejected, cp.rejectedErr = rev, c.Service(), c, 0, nil
	}
	names := make([]string, 0, len(pc.compiled))
	for name, cp := range pc.compiled {
		if cp.c != nil {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	out := make(map[federation.ServiceKey]*servicePolicy, len(names))
	for _, name := range names {
		cp := pc.compiled[name]
		if _, taken := out[cp.service]; taken {
			continue
		}
		sp := &servicePolicy{c: cp.c, name: name, revision: cp.revision, state: pc.stateLocked(cp.service, cp.c, onEject)}
		for _, d := range cp.c.Destinations() {
			sp.destinations = append(sp.destinations, destination(d))
		}
		out[cp.service] = sp
	}
	for svc := range pc.states {
		if _, ok := out[svc]; !ok {
			delete(pc.states, svc)
		}
	}
	return out
}

// status lists every policy the gateway was sent, by name.
func (pc *policyCache) status() []PolicyStatus {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	out := make([]PolicyStatus, 0, len(pc.compiled))
	for name, cp := range pc.compiled {
		s := PolicyStatus{Name: name, Service: cp.service, Revision: cp.revision, RejectedRevision: cp.rejected}
		if cp.rejectedErr != nil {
			s.Error = cp.rejectedErr.Error()
		}
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// stateLocked returns the service's state for c, new when the outlier or
// pool settings changed (in-flight work keeps the old one).
func (pc *policyCache) stateLocked(svc federation.ServiceKey, c *policy.Compiled, onEject func(federation.ServiceKey, federation.ClusterName)) *serviceState {
	od, hasOD := c.OutlierDetection()
	pool := c.ConnectionPool()
	if s := pc.states[svc]; s != nil && s.od == od && s.hasOD == hasOD && s.pool == pool {
		return s
	}
	s := &serviceState{od: od, hasOD: hasOD, pool: pool}
	if hasOD {
		s.out = newOutliers(od.ConsecutiveErrors, od.BaseEjectionTime, maxEjectionTime(od.BaseEjectionTime), func(cl federation.ClusterName) {
			if onEject != nil {
				onEject(svc, cl)
			}
		})
	}
	if n := pool.MaxConnections; n > 0 {
		s.conns = make(chan struct{}, n)
	}
	if n := pool.HTTP2MaxRequests; n > 0 {
		s.requests = make(chan struct{}, n)
	}
	pc.states[svc] = s
	return s
}

// maxEjectionTime caps the growing ejection of a repeatedly failing
// cluster, as Envoy's default max_ejection_time (300 s) does.
func maxEjectionTime(base time.Duration) time.Duration { return max(base, 300*time.Second) }

// serviceState is what a gateway keeps for one service's policy across
// table revisions: its outlier detection and its pool limits.
type serviceState struct {
	od    policy.OutlierPolicy
	hasOD bool
	pool  policy.PoolLimits
	out   *outliers[federation.ClusterName] // nil without outlierDetection

	conns    chan struct{} // MaxConnections slots, nil: unlimited
	requests chan struct{} // HTTP2MaxRequests slots, nil: unlimited
	pending  atomic.Int64  // waiting for a connection slot
	retries  atomic.Int64  // retries in flight
}

// errOverflow: a connection pool limit of the policy refused the work.
var errOverflow = errors.New("eastwest: the service's connection pool is full")

// acquire takes a connection slot (and, for a request, a request slot),
// waiting as one of at most HTTP1MaxPendingRequests when the connections
// are all taken; ctx bounds the wait. release gives them back.
func (s *serviceState) acquire(ctx context.Context, request bool) (release func(), err error) {
	if s == nil || s.conns == nil && (s.requests == nil || !request) {
		return func() {}, nil
	}
	var got []chan struct{}
	release = func() {
		for _, ch := range got {
			<-ch
		}
	}
	if request && s.requests != nil {
		select {
		case s.requests <- struct{}{}:
			got = append(got, s.requests)
		default:
			return nil, errOverflow
		}
	}
	if s.conns != nil {
		select {
		case s.conns <- struct{}{}:
			got = append(got, s.conns)
			return release, nil
		default:
		}
		maxPending := int64(s.pool.HTTP1MaxPendingRequests)
		if !request || maxPending == 0 || s.pending.Add(1) > maxPending {
			if request && maxPending > 0 {
				s.pending.Add(-1)
			}
			release()
			return nil, errOverflow
		}
		defer s.pending.Add(-1)
		select {
		case s.conns <- struct{}{}:
			got = append(got, s.conns)
		case <-ctx.Done():
			release()
			return nil, errOverflow
		}
	}
	return release, nil
}

// retryBudget takes one of the MaxRetries retries in flight; done gives
// it back. False when the budget is spent.
func (s *serviceState) retryBudget() (done func(), ok bool) {
	if s == nil || s.pool.MaxRetries == 0 {
		return func() {}, true
	}
	if s.retries.Add(1) > int64(s.pool.MaxRetries) {
		s.retries.Add(-1)
		return nil, false
	}
	return func() { s.retries.Add(-1) }, true
}

// clusterResult feeds the policy's outlier detection with the outcome of
// a request to a remote cluster, within maxEjectionPercent and
// minHealthPercent of the route's clusters.
func (sp *servicePolicy) clusterResult(r *route, c federation.ClusterName, ok bool, now time.Time) {
	s := sp.state
	if s.out == nil {
		return
	}
	if ok {
		s.out.success(c, now)
		return
	}
	n, ejected := len(r.clusters), 0
	for _, rc := range r.clusters {
		if s.out.ejected(rc.name, now) {
			ejected++
		}
	}
	if n == 0 || (ejected+1)*100 > s.od.MaxEjectionPercent*n || (n-ejected)*100 < s.od.MinHealthPercent*n {
		return // ejecting one more would break the bounds: count nothing
	}
	s.out.failure(c, now)
}

// policyOf returns the service's policy in force, nil without one.
func (t *table) policyOf(svc federation.ServiceKey) *servicePolicy { return t.policies[svc] }

// routeTargets is where a request or connection goes under rule's
// destinations (nil rule, or none: the whole service): the picked
// destination's order, then the route's other destinations' as
// fallbacks, without repeats.
func (r *route) routeTargets(dests []policy.WeightedDestination, pick policy.WeightedDestination, portName string, h health, now time.Time, rnd func() float64) []target {
	if len(dests) == 0 || r.views == nil {
		return r.order(portName, h, now, rnd)
	}
	first := r.views[destination(pick)]
	if first == nil {
		return r.order(portName, h, now, rnd)
	}
	out := first.order(portName, h, now, rnd)
	for _, d := range dests {
		if d == pick {
			continue
		}
		if v := r.views[destination(d)]; v != nil {
			for _, tg := range v.order(portName, h, now, rnd) {
				if !containsTarget(out, tg) {
					out = append(out, tg)
				}
			}
		}
	}
	return out
}

func containsTarget(ts []target, t target) bool {
	for _, x := range ts {
		if x == t {
			return true
		}
	}
	return false
}

// subsetLabels decodes a target's subset (nil for none).
func subsetLabels(s string) map[string]string {
	m, _ := decodeSubset(s) // encoded by this gateway
	return m
}

// authorizeLocal checks the policy's authorization for a request this
// gateway sends to its own cluster's endpoints: the caller is this
// cluster, and the workload of identity when known.
func (g *Gateway) authorizeLocal(t *table, sp *servicePolicy, identity string) error {
	if sp == nil {
		return nil
	}
	self := t.state.Self
	if ok, why := sp.c.Authorize(policy.Source{Cluster: self.Cluster, TrustDomain: self.TrustDomain,
		ServiceAccount: serviceAccountOf(identity, self.TrustDomain)}); !ok {
		return Status{Code: CodeForbidden, Message: why}
	}
	return nil
}

// forbidden reports whether err is a refusal by authorization.
func forbidden(err error) (Status, bool) {
	var st Status
	if errors.As(err, &st) && st.Code == CodeForbidden {
		return st, true
	}
	return Status{}, false
}

// writeStatus writes a short plain-text response.
func writeStatus(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(code)
	_, _ = fmt.Fprintf(w, "meshfed gateway: %s\n", msg)
}

// poolLimits returns the policy's pool limits (zero without a policy).
func (s *serviceState) poolLimits() policy.PoolLimits {
	if s == nil {
		return policy.PoolLimits{}
	}
	return s.pool
}

// identityOf is the SPIFFE ID of the workload at addr (a client of an
// egress port), "" when the agent names no workload there.
func (t *table) identityOf(addr net.Addr) string {
	ta, ok := addr.(*net.TCPAddr)
	if !ok || len(t.state.Workloads) == 0 {
		return ""
	}
	ip, ok := netip.AddrFromSlice(ta.IP)
	if !ok {
		return ""
	}
	w, ok := t.state.Workloads[ip.Unmap()]
	if !ok || t.state.Self.TrustDomain.IsZero() {
		return ""
	}
	return w.SPIFFEID(t.state.Self.TrustDomain)
}

// withIdentity sets the calling workload's identity on every target.
func withIdentity(ts []target, identity string) []target {
	if identity == "" {
		return ts
	}
	for i := range ts {
		ts[i].identity = identity
	}
	return ts
}
