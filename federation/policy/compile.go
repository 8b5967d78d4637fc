package policy

import (
	"net/http"
	"net/textproto"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/meshfed/meshfed/federation"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Compiled is a policy prepared for the data plane: regexes compiled,
// header names canonicalized, weights accumulated and defaults applied.
// A gateway compiles each policy revision once, with Compile, and then
// consults it for every request and connection. A *Compiled is immutable:
// its methods may be called from any number of goroutines at once without
// locks, and the values it returns point into it and must not be
// modified. MatchHTTP, MatchTCP, Pick and Authorize do not allocate.
type Compiled struct {
	name     string
	service  federation.ServiceKey
	http     []HTTPRule
	tcp      []TCPRule
	subsets  []LabelSelector
	locality LocalityPolicy
	outlier  *OutlierPolicy
	pool     PoolLimits
	authz    *authorization
}

// Compile validates p and compiles it. It returns Validate's errors.
func Compile(p *GlobalTrafficPolicy) (*Compiled, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	c := &Compiled{name: p.Metadata.Name, service: p.Service()}
	s := &p.Spec
	for _, ss := range s.Subsets {
		c.subsets = append(c.subsets, LabelSelector{name: ss.Name, labels: cloneMap(ss.Labels)})
	}
	c.locality = compileLocality(s.LocalityLbSetting)
	c.outlier = compileOutlier(s.OutlierDetection)
	c.pool = compilePool(s.ConnectionPool)
	c.http = make([]HTTPRule, len(s.HTTP))
	for i := range s.HTTP {
		if err := c.http[i].compile(i, &s.HTTP[i]); err != nil {
			return nil, err
		}
	}
	c.tcp = make([]TCPRule, len(s.TCP))
	for i, r := range s.TCP {
		t := &c.tcp[i]
		t.index = i
		for _, m := range r.Match {
			t.ports = append(t.ports, m.Port)
		}
		dests := make([]Destination, len(r.Route))
		weights := make([]int, len(r.Route))
		for j, d := range r.Route {
			dests[j], weights[j] = d.Destination, d.Weight
		}
		t.dests = compileDestinations(dests, weights)
	}
	c.authz = compileAuthorization(s.Authorization)
	return c, nil
}

// Name returns the policy's metadata.name.
func (c *Compiled) Name() string { return c.name }

// Service returns the service the policy applies to (spec.host).
func (c *Compiled) Service() federation.ServiceKey { return c.service }

// HTTPRules returns the number of HTTP routes.
func (c *Compiled) HTTPRules() int { return len(c.http) }

// MatchHTTP returns the first HTTP route, in the policy's order, that
// matches the request, or nil if none does (the request then goes to the
// service as a whole, with no route settings). path is the request path; a
// query string ("?...") is ignored. authority is the Host header as
// received (with its port, if any). header must have canonical keys, as
// net/http's server produces; a header match holds when any value of the
// header matches. MatchHTTP does not allocate.
func (c *Compiled) MatchHTTP(method, path, authority string, header http.Header) *HTTPRule {
	if i := strings.IndexByte(path, '?'); i >= 0 {
		path = path[:i]
	}
	for i := range c.http {
		r := &c.http[i]
		if len(r.matches) == 0 {
			return r
		}
		for j := range r.matches {
			if r.matches[j].match(method, path, authority, header) {
				return r
			}
		}
	}
	return nil
}

// MatchTCP returns the first TCP route that matches a connection to the
// service port port, or nil if none does.
func (c *Compiled) MatchTCP(port int) *TCPRule {
	for i := range c.tcp {
		r := &c.tcp[i]
		if len(r.ports) == 0 || slices.Contains(r.ports, port) {
			return r
		}
	}
	return nil
}

// Subset returns the subset named name, or false if there is none.
func (c *Compiled) Subset(name string) (*LabelSelector, bool) {
	for i := range c.subsets {
		if c.subsets[i].name == name {
			return &c.subsets[i], true
		}
	}
	return nil, false
}

// Locality returns the locality load-balancing settings; without
// localityLbSetting, Enabled is true and everything else empty.
func (c *Compiled) Locality() *LocalityPolicy { return &c.locality }

// OutlierDetection returns the outlier detection settings with defaults
// applied, or false if the policy sets none (no ejection).
func (c *Compiled) OutlierDetection() (OutlierPolicy, bool) {
	if c.outlier == nil {
		return OutlierPolicy{}, false
	}
	return *c.outlier, true
}

// ConnectionPool returns the connection pool limits; zero is unlimited
// (or, for durations, the gateway's default).
func (c *Compiled) ConnectionPool() PoolLimits { return c.pool }

// ---- HTTP routes ----

// HTTPRule is a compiled HTTP route, returned by MatchHTTP.
type HTTPRule struct {
	index    int
	name     string
	matches  []httpMatch
	prefixes []string // the uri prefix matches, for Rewrite
	rewrite  *HTTPRewrite
	dests    weighted
	timeout  time.Duration
	retries  *RetryPolicy
	fault    *Fault
	reqOps   *HeaderOps
	respOps  *HeaderOps
}

func (r *HTTPRule) compile(i int, s *HTTPRoute) error {
	r.index, r.name = i, s.Name
	for _, m := range s.Match {
		var hm httpMatch
		var err error
		if hm.uri, err = compileStringMatch(m.URI); err != nil {
			return err
		}
		if hm.method, err = compileStringMatch(m.Method); err != nil {
			return err
		}
		if hm.authority, err = compileStringMatch(m.Authority); err != nil {
			return err
		}
		for _, name := range sortedKeys(m.Headers) {
			sm := m.Headers[name]
			cm, err := compileStringMatch(&sm)
			if err != nil {
				return err
			}
			hm.headers = append(hm.headers, headerMatch{key: textproto.CanonicalMIMEHeaderKey(name), m: cm})
		}
		r.matches = append(r.matches, hm)
		if m.URI != nil && m.URI.Prefix != "" {
			r.prefixes = append(r.prefixes, m.URI.Prefix)
		}
	}
	if s.Rewrite != nil {
		rw := *s.Rewrite
		r.rewrite = &rw
	}
	dests := make([]Destination, len(s.Route))
	weights := make([]int, len(s.Route))
	for j, d := range s.Route {
		dests[j], weights[j] = d.Destination, d.Weight
	}
	r.dests = compileDestinations(dests, weights)
	r.timeout = s.Timeout.Std()
	if rt := s.Retries; rt != nil && rt.Attempts > 0 {
		on := rt.RetryOn
		if on == "" {
			on = DefaultRetryOn
		}
		cond, _ := parseRetryOn(on) // valid: checked by Validate
		r.retries = &RetryPolicy{attempts: rt.Attempts, perTryTimeout: rt.PerTryTimeout.Std(), cond: cond}
	}
	if f := s.Fault; f != nil {
		r.fault = &Fault{}
		if d := f.Delay; d != nil {
			r.fault.delay, r.fault.delayPct = d.FixedDelay.Std(), d.Percentage.Value
		}
		if a := f.Abort; a != nil {
			r.fault.abortStatus, r.fault.abortPct = a.HTTPStatus, a.Percentage.Value
		}
	}
	if h := s.Headers; h != nil {
		r.reqOps = compileHeaderOps(h.Request)
		r.respOps = compileHeaderOps(h.Response)
	}
	return nil
}

// Index returns the route's position in spec.http, from 0.
func (r *HTTPRule) Index() int { return r.index }

// Name returns the route's name, "" if it has none.
func (r *HTTPRule) Name() string { return r.name }

// Destinations returns a copy of the route's weighted destinations. A
// route without destinations has one: the zero Cluster and Subset (the
// service as a whole), weight 100.
func (r *HTTPRule) Destinations() []WeightedDestination { return slices.Clone(r.dests.dests) }

// Pick returns the destination for a uniform random draw x in [0, 1):
// destination i takes the x in [c(i-1), c(i))/100, where c(i) is the sum
// of the weights up to and including i. The same x always gives the same
// destination; a destination of weight 0 is never picked. x below 0 (or
// NaN) is taken as 0, x at or above 1 as just below 1.
func (r *HTTPRule) Pick(x float64) WeightedDestination { return r.dests.pick(x) }

// Rewrite returns the path and authority to forward the request with. If
// the route sets rewrite.uri, the first of the route's uri prefix matches
// that path starts with is replaced by it, or the whole path if none does
// (the route matched by exact, regex, or no uri); a query string is kept.
// If it sets rewrite.authority, that replaces authority. Otherwise both are
// returned unchanged.
func (r *HTTPRule) Rewrite(path, authority string) (string, string) {
	if r.rewrite == nil {
		return path, authority
	}
	if r.rewrite.Authority != "" {
		authority = r.rewrite.Authority
	}
	if r.rewrite.URI != "" {
		p, query := path, ""
		if i := strings.IndexByte(path, '?'); i >= 0 {
			p, query = path[:i], path[i:]
		}
		rest := ""
		for _, prefix := range r.prefixes {
			if strings.HasPrefix(p, prefix) {
				rest = p[len(prefix):]
				break
			}
		}
		path = r.rewrite.URI + rest + query
	}
	return path, authority
}

// Timeout returns the route's timeout, 0 for none.
func (r *HTTPRule) Timeout() time.Duration { return r.timeout }

// Retries returns the route's retry policy, nil if it does not retry.
func (r *HTTPRule) Retries() *RetryPolicy { return r.retries }

// Fault returns the route's fault injection, nil if it has none.
func (r *HTTPRule) Fault() *Fault { return r.fault }

// RequestHeaders returns the operations on request headers, nil if none.
func (r *HTTPRule) RequestHeaders() *HeaderOps { return r.reqOps }

// ResponseHeaders returns the operations on response headers, nil if
// none.
func (r *HTTPRule) ResponseHeaders() *HeaderOps { return r.respOps }

type matchKind uint8

const (
	matchAny matchKind = iota
	matchExact
	matchPrefix
	matchRegex
	matchPresent
)

type stringMatch struct {
	kind matchKind
	s    string
	re   *regexp.Regexp
}

func compileStringMatch(m *StringMatch) (stringMatch, error) {
	switch {
	case m == nil:
		return stringMatch{}, nil
	case m.Exact != "":
		return stringMatch{kind: matchExact, s: m.Exact}, nil
	case m.Prefix != "":
		return stringMatch{kind: matchPrefix, s: m.Prefix}, nil
	case m.Regex != "":
		re, err := compileRegex(m.Regex)
		if err != nil {
			return stringMatch{}, &FieldError{Msg: "compiling regex " + quote(m.Regex) + ": " + err.Error()}
		}
		return stringMatch{kind: matchRegex, re: re}, nil
	}
	return stringMatch{kind: matchPresent}, nil
}

func (m *stringMatch) match(v string) bool {
	switch m.kind {
	case matchExact:
		return v == m.s
	case matchPrefix:
		return strings.HasPrefix(v, m.s)
	case matchRegex:
		return m.re.MatchString(v)
	}
	return true // matchAny, matchPresent
}

type headerMatch struct {
	key string // canonical
	m   stringMatch
}

type httpMatch struct {
	uri, method, authority stringMatch
	headers                []headerMatch
}

func (m *httpMatch) match(method, path, authority string, header http.Header) bool {
	if !m.uri.match(path) || !m.method.match(method) || !m.authority.match(authority) {
		return false
	}
	for i := range m.headers {
		h := &m.headers[i]
		vals := header[h.key]
		if len(vals) == 0 {
			return false
		}
		ok := false
		for _, v := range vals {
			if h.m.match(v) {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	return true
}

// ---- destinations ----

// WeightedDestination is a compiled destination: the service's endpoints
// in Cluster (any cluster when zero) in Subset (all endpoints when empty),
// with its Weight out of 100.
type WeightedDestination struct {
	Cluster federation.ClusterName
	Subset  string
	Weight  int
}

type weighted struct {
	dests []WeightedDestination
	cum   []float64 // cumulative weights
	last  int       // the last destination of non-zero weight
}

// compileDestinations builds a weighted set from valid destinations: a
// lone destination weighs 100, and no destination is the service as a
// whole.
func compileDestinations(dests []Destination, weights []int) weighted {
	var w weighted
	if len(dests) == 0 {
		dests, weights = []Destination{{}}, []int{100}
	}
	if len(dests) == 1 {
		weights = []int{100}
	}
	sum := 0
	for i, d := range dests {
		var c federation.ClusterName
		if d.Cluster != "" {
			c = federation.MustClusterName(d.Cluster) // valid: checked by Validate
		}
		w.dests = append(w.dests, WeightedDestination{Cluster: c, Subset: d.Subset, Weight: weights[i]})
		sum += weights[i]
		w.cum = append(w.cum, float64(sum))
		if weights[i] > 0 {
			w.last = i
		}
	}
	return w
}

func (w *weighted) pick(x float64) WeightedDestination {
	t := x * 100
	if !(t > 0) {
		t = 0
	}
	for i, c := range w.cum {
		if t < c {
			return w.dests[i]
		}
	}
	return w.dests[w.last]
}

// ---- TCP routes ----

// TCPRule is a compiled TCP route, returned by MatchTCP.
type TCPRule struct {
	index int
	ports []int
	dests weighted
}

// Index returns the route's position in spec.tcp, from 0.
func (r *TCPRule) Index() int { return r.index }

// Destinations returns a copy of the route's weighted destinations, as
// HTTPRule.Destinations.
func (r *TCPRule) Destinations() []WeightedDestination { return slices.Clone(r.dests.dests) }

// Pick returns the destination for a uniform random draw x in [0, 1), as
// HTTPRule.Pick.
func (r *TCPRule) Pick(x float64) WeightedDestination { return r.dests.pick(x) }

// ---- retries, faults, headers ----

// RetryPolicy is a route's compiled retries.
type RetryPolicy struct {
	attempts      int
	perTryTimeout time.Duration
	cond          retryConditions
}

// Attempts returns the number of retries (after the first try), at least
// 1.
func (p *RetryPolicy) Attempts() int { return p.attempts }

// PerTryTimeout returns the timeout of each try, 0 for the route's
// timeout.
func (p *RetryPolicy) PerTryTimeout() time.Duration { return p.perTryTimeout }

// OnStatus reports whether a response with status code should be retried:
// listed by number, any 5xx with "5xx", 502, 503 and 504 with
// "gateway-error", 409 with "retriable-4xx".
func (p *RetryPolicy) OnStatus(code int) bool {
	switch {
	case code >= 200 && code <= 599 && p.cond.codes[code-200]:
		return true
	case code >= 500 && code <= 599 && p.cond.bits&retry5xx != 0:
		return true
	case (code == 502 || code == 503 || code == 504) && p.cond.bits&retryGatewayError != 0:
		return true
	case code == 409 && p.cond.bits&retryRetriable4xx != 0:
		return true
	}
	return false
}

// OnReset reports whether a request whose stream or connection was reset
// by the upstream (no response) should be retried: "reset" or "5xx".
func (p *RetryPolicy) OnReset() bool { return p.cond.bits&(retryReset|retry5xx) != 0 }

// OnConnectFailure reports whether a request that could not connect
// should be retried: "connect-failure", "5xx" or "gateway-error".
func (p *RetryPolicy) OnConnectFailure() bool {
	return p.cond.bits&(retryConnectFailure|retry5xx|retryGatewayError) != 0
}

// OnRefusedStream reports whether a request the upstream refused before
// processing it (an HTTP/2 REFUSED_STREAM) should be retried:
// "refused-stream" or "5xx".
func (p *RetryPolicy) OnRefusedStream() bool {
	return p.cond.bits&(retryRefusedStream|retry5xx) != 0
}

// Fault is a route's compiled fault injection. Each decision takes its
// own uniform random draw x in [0, 1) and applies to the request when
// x*100 is below the percentage.
type Fault struct {
	delay       time.Duration
	delayPct    float64
	abortStatus int
	abortPct    float64
}

// Delay returns the delay to inject for draw x, and whether to inject it.
func (f *Fault) Delay(x float64) (time.Duration, bool) {
	if f.delay == 0 || !(x*100 < f.delayPct) {
		return 0, false
	}
	return f.delay, true
}

// Abort returns the status to answer with for draw x, and whether to
// abort the request.
func (f *Fault) Abort(x float64) (int, bool) {
	if f.abortStatus == 0 || !(x*100 < f.abortPct) {
		return 0, false
	}
	return f.abortStatus, true
}

// HeaderOps are compiled header operations.
type HeaderOps struct {
	remove []string
	set    []headerValue
	add    []headerValue
}

type headerValue struct{ key, value string }

func compileHeaderOps(h *HeaderOperations) *HeaderOps {
	if h == nil {
		return nil
	}
	ops := &HeaderOps{}
	for _, name := range h.Remove {
		ops.remove = append(ops.remove, textproto.CanonicalMIMEHeaderKey(name))
	}
	for _, name := range sortedKeys(h.Set) {
		ops.set = append(ops.set, headerValue{textproto.CanonicalMIMEHeaderKey(name), h.Set[name]})
	}
	for _, name := range sortedKeys(h.Add) {
		ops.add = append(ops.add, headerValue{textproto.CanonicalMIMEHeaderKey(name), h.Add[name]})
	}
	return ops
}

// Apply applies the operations to h, which must have canonical keys: it
// removes the headers of remove, then replaces the values of those of set,
// then appends a value to those of add. A nil *HeaderOps does nothing.
func (o *HeaderOps) Apply(h http.Header) {
	if o == nil {
		return
	}
	for _, k := range o.remove {
		delete(h, k)
	}
	for _, kv := range o.set {
		h[kv.key] = []string{kv.value}
	}
	for _, kv := range o.add {
		h[kv.key] = append(h[kv.key], kv.value)
	}
}

// ---- subsets ----

// LabelSelector is a compiled subset.
type LabelSelector struct {
	name   string
	labels map[string]string
}

// Name returns the subset's name.
func (s *LabelSelector) Name() string { return s.name }

// Labels returns a copy of the labels an endpoint must carry.
func (s *LabelSelector) Labels() map[string]string { return cloneMap(s.labels) }

// Matches reports whether an endpoint with labels belongs to the subset:
// it carries every label of the subset with the same value.
func (s *LabelSelector) Matches(labels map[string]string) bool {
	for k, v := range s.labels {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}

func cloneMap(m map[string]string) map[string]string {
	if m == nil {
		return nil
	}
	c := make(map[string]string, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}

// ---- locality ----

// LocalityPolicy is the compiled localityLbSetting.
type LocalityPolicy struct {
	enabled    bool
	distribute []distributeRule
	failover   []LocalityFailover
	priority   []string
	excluded   []federation.ClusterName
}

type distributeRule struct {
	from LocalityPattern
	to   []LocalityWeight
}

// LocalityWeight is the share of traffic, out of 100, that the localities
// matching Pattern get.
type LocalityWeight struct {
	Pattern LocalityPattern
	Weight  int
}

// LocalityPattern is a compiled locality pattern of distribute: "*", or
// up to three parts of which the last may be "*".
type LocalityPattern struct {
	parts [3]string
	n     int // parts set; a trailing "*" is not counted
	text  string
}

func compilePattern(s string) LocalityPattern {
	p := LocalityPattern{text: s}
	if s == "*" {
		return p
	}
	for i, part := range strings.Split(s, "/") {
		if part == "*" {
			break
		}
		p.parts[i] = part
		p.n = i + 1
	}
	return p
}

// Matches reports whether l is in the pattern: each part the pattern names
// equals l's, and parts it leaves out or sets to "*" match anything.
func (p LocalityPattern) Matches(l federation.Locality) bool {
	have := [3]string{l.Region(), l.Zone(), l.Subzone()}
	for i := range p.n {
		if have[i] != p.parts[i] {
			return false
		}
	}
	return true
}

// String returns the pattern as written.
func (p LocalityPattern) String() string { return p.text }

func compileLocality(l *LocalityLbSetting) LocalityPolicy {
	lp := LocalityPolicy{enabled: true}
	if l == nil {
		return lp
	}
	if l.Enabled != nil {
		lp.enabled = *l.Enabled
	}
	for _, d := range l.Distribute {
		rule := distributeRule{from: compilePattern(d.From)}
		for _, k := range sortedKeys(d.To) {
			rule.to = append(rule.to, LocalityWeight{Pattern: compilePattern(k), Weight: d.To[k]})
		}
		lp.distribute = append(lp.distribute, rule)
	}
	lp.failover = slices.Clone(l.Failover)
	lp.priority = slices.Clone(l.FailoverPriority)
	for _, c := range l.ExcludeClusters {
		lp.excluded = append(lp.excluded, federation.MustClusterName(c))
	}
	return lp
}

// Enabled reports whether locality load balancing is on (the default).
func (l *LocalityPolicy) Enabled() bool { return l.enabled }

// Distribution returns the weights of the first distribute rule whose
// from matches the caller's locality, in the order of their patterns, or
// false if none does. The slice is a copy.
func (l *LocalityPolicy) Distribution(from federation.Locality) ([]LocalityWeight, bool) {
	for _, r := range l.distribute {
		if r.from.Matches(from) {
			return slices.Clone(r.to), true
		}
	}
	return nil, false
}

// FailoverTarget returns the region that region fails over to, or false
// if failover names none.
func (l *LocalityPolicy) FailoverTarget(region string) (string, bool) {
	for _, f := range l.failover {
		if f.From == region {
			return f.To, true
		}
	}
	return "", false
}

// FailoverPriority returns a copy of the failover priority labels, in
// order (LabelRegion, LabelZone, LabelCluster).
func (l *LocalityPolicy) FailoverPriority() []string { return slices.Clone(l.priority) }

// Excluded reports whether traffic must never be sent to cluster c.
func (l *LocalityPolicy) Excluded(c federation.ClusterName) bool {
	return slices.Contains(l.excluded, c)
}

// ExcludedClusters returns a copy of the clusters never to send to.
func (l *LocalityPolicy) ExcludedClusters() []federation.ClusterName {
	return slices.Clone(l.excluded)
}

// ---- outlier detection, connection pool ----

// Outlier detection defaults, applied to fields a policy leaves unset.
const (
	DefaultConsecutiveErrors  = 5
	DefaultInterval           = 10 * time.Second
	DefaultBaseEjectionTime   = 30 * time.Second
	DefaultMaxEjectionPercent = 10
	DefaultMinHealthPercent   = 0
)

// OutlierPolicy is the compiled outlierDetection, defaults applied.
type OutlierPolicy struct {
	ConsecutiveErrors  int
	Interval           time.Duration
	BaseEjectionTime   time.Duration
	MaxEjectionPercent int
	MinHealthPercent   int
}

func compileOutlier(o *OutlierDetection) *OutlierPolicy {
	if o == nil {
		return nil
	}
	op := &OutlierPolicy{
		ConsecutiveErrors:  DefaultConsecutiveErrors,
		Interval:           DefaultInterval,
		BaseEjectionTime:   DefaultBaseEjectionTime,
		MaxEjectionPercent: DefaultMaxEjectionPercent,
		MinHealthPercent:   DefaultMinHealthPercent,
	}
	if o.ConsecutiveErrors != 0 {
		op.ConsecutiveErrors = o.ConsecutiveErrors
	}
	if o.Interval != 0 {
		op.Interval = o.Interval.Std()
	}
	if o.BaseEjectionTime != 0 {
		op.BaseEjectionTime = o.BaseEjectionTime.Std()
	}
	if o.MaxEjectionPercent != nil {
		op.MaxEjectionPercent = *o.MaxEjectionPercent
	}
	if o.MinHealthPercent != nil {
		op.MinHealthPercent = *o.MinHealthPercent
	}
	return op
}

// PoolLimits is the compiled connectionPool; zero is unlimited, or for
// durations the gateway's default.
type PoolLimits struct {
	MaxConnections           int
	ConnectTimeout           time.Duration
	HTTP1MaxPendingRequests  int
	HTTP2MaxRequests         int
	MaxRequestsPerConnection int
	MaxRetries               int
	IdleTimeout              time.Duration
}

func compilePool(c *ConnectionPool) PoolLimits {
	var l PoolLimits
	if c == nil {
		return l
	}
	if t := c.TCP; t != nil {
		l.MaxConnections, l.ConnectTimeout = t.MaxConnections, t.ConnectTimeout.Std()
	}
	if h := c.HTTP; h != nil {
		l.HTTP1MaxPendingRequests = h.HTTP1MaxPendingRequests
		l.HTTP2MaxRequests = h.HTTP2MaxRequests
		l.MaxRequestsPerConnection = h.MaxRequestsPerConnection
		l.MaxRetries = h.MaxRetries
		l.IdleTimeout = h.IdleTimeout.Std()
	}
	return l
}

// ---- authorization ----

// Source is who calls the service, as the receiving gateway knows it from
// the caller's mTLS identity.
type Source struct {
	// Cluster is the calling cluster.
	Cluster federation.ClusterName
	// TrustDomain is the trust domain of the caller's SPIFFE ID.
	TrustDomain spiffeid.TrustDomain
	// ServiceAccount is the caller's "namespace/name", "" when unknown
	// (a rule naming service accounts then never matches).
	ServiceAccount string
}

type authorization struct {
	denyByDefault bool
	allow, deny   []authzRule
}

type authzRule struct {
	clusters     []federation.ClusterName
	trustDomains []spiffeid.TrustDomain
	accounts     []serviceAccount
	reason       string
}

type serviceAccount struct{ ns, name string } // name "*": any

func compileAuthorization(a *Authorization) *authorization {
	if a == nil {
		return nil
	}
	az := &authorization{denyByDefault: a.DenyByDefault}
	compile := func(list string, rules []AuthorizationRule, verb string) []authzRule {
		var out []authzRule
		for i, r := range rules {
			cr := authzRule{reason: verb + " by " + index("spec.authorization."+list, i)}
			for _, c := range r.Clusters {
				cr.clusters = append(cr.clusters, federation.MustClusterName(c))
			}
			for _, td := range r.TrustDomains {
				t, _ := federation.ParseTrustDomain(td) // valid: checked by Validate
				cr.trustDomains = append(cr.trustDomains, t.SPIFFE())
			}
			for _, s := range r.ServiceAccounts {
				ns, name, _ := parseServiceAccount(s)
				cr.accounts = append(cr.accounts, serviceAccount{ns, name})
			}
			out = append(out, cr)
		}
		return out
	}
	az.allow = compile("allow", a.Allow, "allowed")
	az.deny = compile("deny", a.Deny, "denied")
	return az
}

func (r *authzRule) matches(src *Source) bool {
	if len(r.clusters) > 0 && (src.Cluster.IsZero() || !slices.Contains(r.clusters, src.Cluster)) {
		return false
	}
	if len(r.trustDomains) > 0 && (src.TrustDomain.IsZero() || !slices.Contains(r.trustDomains, src.TrustDomain)) {
		return false
	}
	if len(r.accounts) > 0 {
		ns, name, ok := strings.Cut(src.ServiceAccount, "/")
		if !ok || ns == "" || name == "" {
			return false
		}
		found := false
		for _, a := range r.accounts {
			if a.ns == ns && (a.name == "*" || a.name == name) {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// Authorization reasons returned by Authorize besides the rule that
// decided ("allowed by spec.authorization.allow[0]", "denied by
// spec.authorization.deny[1]").
const (
	ReasonNoAuthorization = "no authorization in the policy"
	ReasonAllowByDefault  = "allowed by default: no deny rule matches"
	ReasonDenyByDefault   = "denied by default: no allow rule matches and denyByDefault is true"
)

// Authorize decides whether src may call the service: refused if it
// matches a deny rule; otherwise allowed if it matches an allow rule, or
// if denyByDefault is false. reason names the rule that decided, or is one
// of the Reason constants; it is meant for logs and the caller's 403. It
// does not allocate.
func (c *Compiled) Authorize(src Source) (allowed bool, reason string) {
	a := c.authz
	if a == nil {
		return true, ReasonNoAuthorization
	}
	for i := range a.deny {
		if a.deny[i].matches(&src) {
			return false, a.deny[i].reason
		}
	}
	for i := range a.allow {
		if a.allow[i].matches(&src) {
			return true, a.allow[i].reason
		}
	}
	if a.denyByDefault {
		return false, ReasonDenyByDefault
	}
	return true, ReasonAllowByDefault
}
