package policy

import (
	"fmt"
	"net/textproto"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/meshfed/meshfed/federation"
)

// Service returns the service named by spec.host ("name.namespace"), or
// the zero ServiceKey if the host is not of that form.
func (p *GlobalTrafficPolicy) Service() federation.ServiceKey {
	k, _ := parseHost(p.Spec.Host)
	return k
}

func parseHost(host string) (federation.ServiceKey, bool) {
	name, ns, ok := strings.Cut(host, ".")
	if !ok {
		return federation.ServiceKey{}, false
	}
	k, err := federation.NewServiceKey(ns, name)
	return k, err == nil
}

// Validate checks every rule of the policy (docs/policy.md lists them). It
// returns nil, a *FieldError, or several joined (see FieldError).
func (p *GlobalTrafficPolicy) Validate() error {
	v := &validator{}
	v.policy(p)
	return v.errs.err()
}

type validator struct {
	errs errorList
	p    *GlobalTrafficPolicy
	// subsets are the names of spec.subsets; excluded the clusters of
	// localityLbSetting.excludeClusters.
	subsets  map[string]bool
	excluded map[string]bool
}

const labelRule = "must be a lowercase RFC 1123 label (a-z, 0-9, '-'; starting and ending with a letter or digit), 1 to 63 characters"

func (v *validator) policy(p *GlobalTrafficPolicy) {
	v.p = p
	if p.APIVersion != APIVersion {
		v.errs.add("apiVersion", "must be %q, got %s", APIVersion, quote(p.APIVersion))
	}
	if p.Kind != Kind {
		v.errs.add("kind", "must be %q, got %s", Kind, quote(p.Kind))
	}
	if !federation.IsDNSLabel(p.Metadata.Name) {
		v.errs.add("metadata.name", labelRule+", got %s", quote(p.Metadata.Name))
	}
	v.labels("metadata.labels", p.Metadata.Labels, false)
	v.annotations("metadata.annotations", p.Metadata.Annotations)
	v.spec(&p.Spec)
}

func (v *validator) spec(s *Spec) {
	if _, ok := parseHost(s.Host); !ok {
		v.errs.add("spec.host", "must be \"name.namespace\", two RFC 1123 labels (a-z, 0-9, '-') of 1 to 63 characters, got %s", quote(s.Host))
	}
	v.subsetList(s.Subsets)
	v.locality(s.LocalityLbSetting)
	v.outlier(s.OutlierDetection)
	v.pool(s.ConnectionPool)
	if len(s.HTTP) > MaxHTTPRoutes {
		v.errs.add("spec.http", "must have at most %d routes, got %d", MaxHTTPRoutes, len(s.HTTP))
	}
	names := make(map[string]int)
	for i := range s.HTTP {
		v.httpRoute(index("spec.http", i), &s.HTTP[i], names, i)
	}
	if len(s.TCP) > MaxTCPRoutes {
		v.errs.add("spec.tcp", "must have at most %d routes, got %d", MaxTCPRoutes, len(s.TCP))
	}
	for i := range s.TCP {
		v.tcpRoute(index("spec.tcp", i), &s.TCP[i])
	}
	v.authorization(s.Authorization)
}

func (v *validator) subsetList(subsets []Subset) {
	v.subsets = make(map[string]bool)
	if len(subsets) > MaxSubsets {
		v.errs.add("spec.subsets", "must have at most %d subsets, got %d", MaxSubsets, len(subsets))
	}
	first := make(map[string]int)
	for i, ss := range subsets {
		p := index("spec.subsets", i)
		if !federation.IsDNSLabel(ss.Name) {
			v.errs.add(field(p, "name"), labelRule+", got %s", quote(ss.Name))
		} else if j, dup := first[ss.Name]; dup {
			v.errs.add(field(p, "name"), "duplicate subset name %s (also spec.subsets[%d])", quote(ss.Name), j)
		} else {
			first[ss.Name] = i
		}
		v.subsets[ss.Name] = true
		if len(ss.Labels) == 0 {
			v.errs.add(field(p, "labels"), "must have 1 to %d labels, got 0", MaxLabels)
		}
		v.labels(field(p, "labels"), ss.Labels, true)
	}
}

// labels checks Kubernetes label keys and (when values) label values.
func (v *validator) labels(path string, m map[string]string, values bool) {
	if len(m) > MaxLabels {
		v.errs.add(path, "must have at most %d entries, got %d", MaxLabels, len(m))
	}
	for _, k := range sortedKeys(m) {
		if msg := checkLabelKey(k); msg != "" {
			v.errs.add(key(path, k), "%s", msg)
		}
		if val := m[k]; !isLabelValue(val) {
			v.errs.add(key(path, k), "value must be 0 to 63 characters of a-z, A-Z, 0-9, '-', '_', '.', starting and ending with a letter or digit, got %s", quote(val))
		}
	}
}

func (v *validator) annotations(path string, m map[string]string) {
	if len(m) > MaxLabels {
		v.errs.add(path, "must have at most %d entries, got %d", MaxLabels, len(m))
	}
	for _, k := range sortedKeys(m) {
		if msg := checkLabelKey(k); msg != "" {
			v.errs.add(key(path, k), "%s", msg)
		}
	}
}

// checkLabelKey returns why k is not a Kubernetes label key ("" when it
// is): an optional DNS subdomain prefix of at most 253 characters and '/',
// then a name of 1 to 63 characters.
func checkLabelKey(k string) string {
	prefix, name, hasPrefix := strings.Cut(k, "/")
	if !hasPrefix {
		name, prefix = prefix, ""
	}
	if hasPrefix && !isDNSSubdomain(prefix) {
		return "key prefix must be a DNS subdomain of at most 253 characters, got " + quote(k)
	}
	if name == "" || !isLabelValue(name) {
		return "key name must be 1 to 63 characters of a-z, A-Z, 0-9, '-', '_', '.', starting and ending with a letter or digit, got " + quote(k)
	}
	return ""
}

func isLabelValue(s string) bool {
	if len(s) > 63 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if !alnum && ((c != '-' && c != '_' && c != '.') || i == 0 || i == len(s)-1) {
			return false
		}
	}
	return true
}

func isDNSSubdomain(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for _, part := range strings.Split(s, ".") {
		if !federation.IsDNSLabel(part) {
			return false
		}
	}
	return true
}

// duration checks an optional duration: zero is unset.
func (v *validator) duration(path string, d Duration) {
	if d != 0 && (d.Std() < MinTimeout || d.Std() > MaxTimeout) {
		v.errs.add(path, "must be from %s to %s, got %s", Duration(MinTimeout), Duration(MaxTimeout), d)
	}
}

func (v *validator) percent(path string, n *int) {
	if n != nil && (*n < 0 || *n > 100) {
		v.errs.add(path, "must be 0 to 100, got %d", *n)
	}
}

func (v *validator) count(path string, n, max int) {
	if n < 0 || n > max {
		v.errs.add(path, "must be 1 to %d, got %d", max, n)
	}
}

func (v *validator) locality(l *LocalityLbSetting) {
	v.excluded = make(map[string]bool)
	if l == nil {
		return
	}
	const base = "spec.localityLbSetting"
	if len(l.Distribute) > MaxFailover {
		v.errs.add(field(base, "distribute"), "must have at most %d rules, got %d", MaxFailover, len(l.Distribute))
	}
	froms := make(map[string]int)
	for i, d := range l.Distribute {
		p := index(field(base, "distribute"), i)
		if !isLocalityPattern(d.From) {
			v.errs.add(field(p, "from"), "%s, got %s", localityPatternRule, quote(d.From))
		} else if j, dup := froms[d.From]; dup {
			v.errs.add(field(p, "from"), "duplicate locality %s (also %s)", quote(d.From), index(field(base, "distribute"), j)+".from")
		} else {
			froms[d.From] = i
		}
		to := field(p, "to")
		if len(d.To) == 0 || len(d.To) > MaxFailover {
			v.errs.add(to, "must have 1 to %d localities, got %d", MaxFailover, len(d.To))
		}
		sum := 0
		for _, k := range sortedKeys(d.To) {
			if !isLocalityPattern(k) {
				v.errs.add(key(to, k), "%s", localityPatternRule)
			}
			w := d.To[k]
			if w < 0 || w > 100 {
				v.errs.add(key(to, k), "weight must be 0 to 100, got %d", w)
			}
			sum += w
		}
		if len(d.To) > 0 && sum != 100 {
			v.errs.add(to, "weights must sum to 100, got %d", sum)
		}
	}
	if len(l.Failover) > MaxFailover {
		v.errs.add(field(base, "failover"), "must have at most %d rules, got %d", MaxFailover, len(l.Failover))
	}
	if len(l.Failover) > 0 && len(l.Distribute) > 0 {
		v.errs.add(field(base, "failover"), "may not be combined with distribute")
	}
	froms = make(map[string]int)
	for i, f := range l.Failover {
		p := index(field(base, "failover"), i)
		okFrom, okTo := isRegion(f.From), isRegion(f.To)
		if !okFrom {
			v.errs.add(field(p, "from"), "%s, got %s", regionRule, quote(f.From))
		}
		if !okTo {
			v.errs.add(field(p, "to"), "%s, got %s", regionRule, quote(f.To))
		}
		if okFrom && okTo && f.From == f.To {
			v.errs.add(field(p, "to"), "must differ from from (%s)", quote(f.From))
		}
		if j, dup := froms[f.From]; dup && okFrom {
			v.errs.add(field(p, "from"), "duplicate region %s (also %s)", quote(f.From), index(field(base, "failover"), j)+".from")
		} else {
			froms[f.From] = i
		}
	}
	seen := make(map[string]int)
	if len(l.FailoverPriority) > 3 {
		v.errs.add(field(base, "failoverPriority"), "must have at most 3 labels, got %d", len(l.FailoverPriority))
	}
	for i, label := range l.FailoverPriority {
		p := index(field(base, "failoverPriority"), i)
		switch label {
		case LabelRegion, LabelZone, LabelCluster:
			if j, dup := seen[label]; dup {
				v.errs.add(p, "duplicate label %s (also [%d])", quote(label), j)
			}
			seen[label] = i
		default:
			v.errs.add(p, "must be one of %q, %q, %q, got %s", LabelRegion, LabelZone, LabelCluster, quote(label))
		}
	}
	if len(l.ExcludeClusters) > MaxClusters {
		v.errs.add(field(base, "excludeClusters"), "must have at most %d clusters, got %d", MaxClusters, len(l.ExcludeClusters))
	}
	for i, c := range l.ExcludeClusters {
		p := index(field(base, "excludeClusters"), i)
		if !federation.IsDNSLabel(c) {
			v.errs.add(p, "cluster name "+labelRule+", got %s", quote(c))
			continue
		}
		if v.excluded[c] {
			v.errs.add(p, "duplicate cluster %s", quote(c))
		}
		v.excluded[c] = true
	}
}

const regionRule = "must be a region name, 1 to 128 characters of a-z, A-Z, 0-9, '.', '-', '_'"

func isRegion(s string) bool {
	_, err := federation.NewLocality(s, "", "")
	return err == nil
}

const localityPatternRule = `must be a locality pattern "region", "region/zone" or "region/zone/subzone" (1 to 128 characters of a-z, A-Z, 0-9, '.', '-', '_' each), whose last part may be "*", or "*"`

func isLocalityPattern(s string) bool {
	if s == "*" {
		return true
	}
	parts := strings.Split(s, "/")
	if len(parts) > 3 {
		return false
	}
	for i, part := range parts {
		if part == "*" && i == len(parts)-1 && i > 0 {
			continue
		}
		if !isRegion(part) {
			return false
		}
	}
	return true
}

func (v *validator) outlier(o *OutlierDetection) {
	if o == nil {
		return
	}
	const base = "spec.outlierDetection"
	v.count(field(base, "consecutiveErrors"), o.ConsecutiveErrors, MaxConsecutiveErrors)
	v.duration(field(base, "interval"), o.Interval)
	v.duration(field(base, "baseEjectionTime"), o.BaseEjectionTime)
	v.percent(field(base, "maxEjectionPercent"), o.MaxEjectionPercent)
	v.percent(field(base, "minHealthPercent"), o.MinHealthPercent)
}

func (v *validator) pool(c *ConnectionPool) {
	if c == nil {
		return
	}
	if t := c.TCP; t != nil {
		const base = "spec.connectionPool.tcp"
		v.count(field(base, "maxConnections"), t.MaxConnections, MaxPoolLimit)
		v.duration(field(base, "connectTimeout"), t.ConnectTimeout)
	}
	if h := c.HTTP; h != nil {
		const base = "spec.connectionPool.http"
		v.count(field(base, "http1MaxPendingRequests"), h.HTTP1MaxPendingRequests, MaxPoolLimit)
		v.count(field(base, "http2MaxRequests"), h.HTTP2MaxRequests, MaxPoolLimit)
		v.count(field(base, "maxRequestsPerConnection"), h.MaxRequestsPerConnection, MaxPoolLimit)
		v.count(field(base, "maxRetries"), h.MaxRetries, MaxPoolLimit)
		v.duration(field(base, "idleTimeout"), h.IdleTimeout)
	}
}

func (v *validator) httpRoute(path string, r *HTTPRoute, names map[string]int, i int) {
	if r.Name != "" {
		if !isPrintable(r.Name) || len(r.Name) > MaxNameLength {
			v.errs.add(field(path, "name"), "must be 1 to %d printable ASCII characters, got %s", MaxNameLength, quote(r.Name))
		} else if j, dup := names[r.Name]; dup {
			v.errs.add(field(path, "name"), "duplicate route name %s (also spec.http[%d])", quote(r.Name), j)
		} else {
			names[r.Name] = i
		}
	}
	if len(r.Match) > MaxMatches {
		v.errs.add(field(path, "match"), "must have at most %d entries, got %d", MaxMatches, len(r.Match))
	}
	for i := range r.Match {
		v.match(index(field(path, "match"), i), &r.Match[i])
	}
	if rw := r.Rewrite; rw != nil {
		p := field(path, "rewrite")
		if rw.URI == "" && rw.Authority == "" {
			v.errs.add(p, "must set uri or authority")
		}
		if rw.URI != "" && (!strings.HasPrefix(rw.URI, "/") || !isPathChars(rw.URI) || len(rw.URI) > MaxHeaderValueLength) {
			v.errs.add(field(p, "uri"), "must be a path starting with \"/\", at most %d characters without spaces, control characters, '?' or '#', got %s", MaxHeaderValueLength, quote(rw.URI))
		}
		if rw.Authority != "" && !isAuthority(rw.Authority) {
			v.errs.add(field(p, "authority"), "must be a host or host:port of at most 255 characters of a-z, A-Z, 0-9, '.', '-', ':', '[', ']', got %s", quote(rw.Authority))
		}
	}
	dests := make([]Destination, len(r.Route))
	weights := make([]int, len(r.Route))
	for i, d := range r.Route {
		dests[i], weights[i] = d.Destination, d.Weight
	}
	v.destinations(field(path, "route"), dests, weights)
	v.duration(field(path, "timeout"), r.Timeout)
	if rt := r.Retries; rt != nil {
		p := field(path, "retries")
		if rt.Attempts < 0 || rt.Attempts > MaxRetryAttempts {
			v.errs.add(field(p, "attempts"), "must be 0 to %d, got %d", MaxRetryAttempts, rt.Attempts)
		}
		v.duration(field(p, "perTryTimeout"), rt.PerTryTimeout)
		if rt.RetryOn != "" {
			if _, err := parseRetryOn(rt.RetryOn); err != "" {
				v.errs.add(field(p, "retryOn"), "%s", err)
			}
		}
	}
	if f := r.Fault; f != nil {
		p := field(path, "fault")
		if f.Delay == nil && f.Abort == nil {
			v.errs.add(p, "must set delay or abort")
		}
		if d := f.Delay; d != nil {
			if d.FixedDelay == 0 {
				v.errs.add(field(p, "delay.fixedDelay"), "must be set, from %s to %s", Duration(MinTimeout), Duration(MaxTimeout))
			}
			v.duration(field(p, "delay.fixedDelay"), d.FixedDelay)
			v.percentage(field(p, "delay.percentage"), d.Percentage)
		}
		if a := f.Abort; a != nil {
			if a.HTTPStatus < 200 || a.HTTPStatus > 599 {
				v.errs.add(field(p, "abort.httpStatus"), "must be an HTTP status code 200 to 599, got %d", a.HTTPStatus)
			}
			v.percentage(field(p, "abort.percentage"), a.Percentage)
		}
	}
	if h := r.Headers; h != nil {
		v.headerOps(field(path, "headers.request"), h.Request)
		v.headerOps(field(path, "headers.response"), h.Response)
	}
}

func (v *validator) percentage(path string, p *Percentage) {
	switch {
	case p == nil:
		v.errs.add(path, "must be set, {value: 0 to 100}")
	case !(p.Value >= 0 && p.Value <= 100):
		v.errs.add(field(path, "value"), "must be 0 to 100, got %s", strconv.FormatFloat(p.Value, 'g', -1, 64))
	}
}

func (v *validator) match(path string, m *HTTPMatchRequest) {
	if m.URI != nil {
		v.stringMatch(field(path, "uri"), m.URI, false)
		if s := m.URI.Exact + m.URI.Prefix; s != "" && !strings.HasPrefix(s, "/") {
			p := "exact"
			if m.URI.Prefix != "" {
				p = "prefix"
			}
			v.errs.add(field(path, "uri."+p), "must start with \"/\", got %s", quote(s))
		}
	}
	if m.Method != nil {
		v.stringMatch(field(path, "method"), m.Method, false)
	}
	if m.Authority != nil {
		v.stringMatch(field(path, "authority"), m.Authority, false)
	}
	hp := field(path, "headers")
	if len(m.Headers) > MaxHeaders {
		v.errs.add(hp, "must have at most %d headers, got %d", MaxHeaders, len(m.Headers))
	}
	canon := make(map[string]string)
	for _, name := range sortedKeys(m.Headers) {
		if !v.headerName(key(hp, name), name, canon) {
			continue
		}
		sm := m.Headers[name]
		v.stringMatch(key(hp, name), &sm, true)
	}
}

// headerName checks a header name and that it is not a duplicate of
// another in canon (by canonical form).
func (v *validator) headerName(path, name string, canon map[string]string) bool {
	if !isToken(name) || len(name) > 256 {
		v.errs.add(path, "header name must be 1 to 256 characters of an HTTP token (no ':', spaces or separators), got %s", quote(name))
		return false
	}
	c := textproto.CanonicalMIMEHeaderKey(name)
	if other, dup := canon[c]; dup {
		v.errs.add(path, "duplicate header %s (also %s; names are case-insensitive)", quote(name), quote(other))
		return false
	}
	canon[c] = name
	return true
}

func (v *validator) stringMatch(path string, m *StringMatch, header bool) {
	n := 0
	for _, set := range []bool{m.Exact != "", m.Prefix != "", m.Regex != "", m.Present} {
		if set {
			n++
		}
	}
	if n != 1 {
		if header {
			v.errs.add(path, "must set exactly one of exact, prefix, regex, present, got %d", n)
		} else {
			v.errs.add(path, "must set exactly one of exact, prefix, regex, got %d", n)
		}
	}
	if m.Present && !header {
		v.errs.add(field(path, "present"), "is allowed in header matches only")
	}
	if len(m.Exact) > MaxHeaderValueLength {
		v.errs.add(field(path, "exact"), "must be at most %d bytes, got %d", MaxHeaderValueLength, len(m.Exact))
	}
	if len(m.Prefix) > MaxHeaderValueLength {
		v.errs.add(field(path, "prefix"), "must be at most %d bytes, got %d", MaxHeaderValueLength, len(m.Prefix))
	}
	if m.Regex != "" {
		if len(m.Regex) > MaxRegexLength {
			v.errs.add(field(path, "regex"), "must be at most %d bytes, got %d", MaxRegexLength, len(m.Regex))
		} else if _, err := compileRegex(m.Regex); err != nil {
			v.errs.add(field(path, "regex"), "must be an RE2 regular expression: %v", err)
		}
	}
}

// compileRegex compiles re to match whole strings.
func compileRegex(re string) (*regexp.Regexp, error) {
	if _, err := regexp.Compile(re); err != nil {
		return nil, err
	}
	return regexp.Compile(`^(?:` + re + `)$`)
}

func (v *validator) destinations(path string, dests []Destination, weights []int) {
	if len(dests) > MaxDestinations {
		v.errs.add(path, "must have at most %d destinations, got %d", MaxDestinations, len(dests))
	}
	sum, inRange := 0, true
	seen := make(map[Destination]int)
	for i, d := range dests {
		p := index(path, i)
		dp := field(p, "destination")
		switch {
		case d.Cluster == "" && d.Subset == "":
			v.errs.add(dp, "must set cluster or subset")
		case d.Cluster != "" && !federation.IsDNSLabel(d.Cluster):
			v.errs.add(field(dp, "cluster"), "cluster name "+labelRule+", got %s", quote(d.Cluster))
		case v.excluded[d.Cluster]:
			v.errs.add(field(dp, "cluster"), "cluster %s is in spec.localityLbSetting.excludeClusters", quote(d.Cluster))
		}
		if d.Subset != "" && !v.subsets[d.Subset] {
			v.errs.add(field(dp, "subset"), "names no subset of spec.subsets, got %s", quote(d.Subset))
		}
		if j, dup := seen[d]; dup {
			v.errs.add(dp, "duplicate destination (also %s)", index(path, j))
		} else {
			seen[d] = i
		}
		w := weights[i]
		if w < 0 || w > 100 {
			v.errs.add(field(p, "weight"), "must be 0 to 100, got %d", w)
			inRange = false
		}
		sum += w
	}
	switch {
	case !inRange || len(dests) > MaxDestinations:
		// The sum is meaningless; the errors above say why.
	case len(dests) == 1 && weights[0] != 0 && weights[0] != 100:
		v.errs.add(field(index(path, 0), "weight"), "must be 100 or unset for a lone destination, got %d", weights[0])
	case len(dests) > 1 && sum != 100:
		v.errs.add(path, "weights must sum to 100, got %d", sum)
	}
}

func (v *validator) tcpRoute(path string, r *TCPRoute) {
	if len(r.Match) > MaxMatches {
		v.errs.add(field(path, "match"), "must have at most %d entries, got %d", MaxMatches, len(r.Match))
	}
	for i, m := range r.Match {
		if m.Port < 1 || m.Port > 65535 {
			v.errs.add(field(index(field(path, "match"), i), "port"), "must be 1 to 65535, got %d", m.Port)
		}
	}
	dests := make([]Destination, len(r.Route))
	weights := make([]int, len(r.Route))
	for i, d := range r.Route {
		dests[i], weights[i] = d.Destination, d.Weight
	}
	v.destinations(field(path, "route"), dests, weights)
}

func (v *validator) headerOps(path string, h *HeaderOperations) {
	if h == nil {
		return
	}
	canon := make(map[string]string)
	for _, op := range []struct {
		name string
		m    map[string]string
	}{{"set", h.Set}, {"add", h.Add}} {
		p := field(path, op.name)
		if len(op.m) > MaxHeaders {
			v.errs.add(p, "must have at most %d headers, got %d", MaxHeaders, len(op.m))
		}
		// A header may be both set and added; names repeat only within one
		// map (case-insensitively).
		clear(canon)
		for _, name := range sortedKeys(op.m) {
			if !v.headerName(key(p, name), name, canon) {
				continue
			}
			if val := op.m[name]; len(val) > MaxHeaderValueLength || !isHeaderValue(val) {
				v.errs.add(key(p, name), "value must be at most %d bytes without control characters, got %s", MaxHeaderValueLength, quote(val))
			}
		}
	}
	p := field(path, "remove")
	if len(h.Remove) > MaxHeaders {
		v.errs.add(p, "must have at most %d headers, got %d", MaxHeaders, len(h.Remove))
	}
	clear(canon)
	for i, name := range h.Remove {
		v.headerName(index(p, i), name, canon)
	}
}

func (v *validator) authorization(a *Authorization) {
	if a == nil {
		return
	}
	const base = "spec.authorization"
	if len(a.Allow) > 0 && !a.DenyByDefault {
		v.errs.add(field(base, "allow"), "has no effect unless denyByDefault is true")
	}
	for _, list := range []struct {
		name  string
		rules []AuthorizationRule
	}{{"allow", a.Allow}, {"deny", a.Deny}} {
		lp := field(base, list.name)
		if len(list.rules) > MaxAuthorizationRules {
			v.errs.add(lp, "must have at most %d rules, got %d", MaxAuthorizationRules, len(list.rules))
		}
		for i, r := range list.rules {
			v.authRule(index(lp, i), &r)
		}
	}
}

func (v *validator) authRule(path string, r *AuthorizationRule) {
	if len(r.Clusters) == 0 && len(r.TrustDomains) == 0 && len(r.ServiceAccounts) == 0 {
		v.errs.add(path, "must set clusters, trustDomains or serviceAccounts")
	}
	check := func(name string, vals []string, ok func(string) string) {
		p := field(path, name)
		if len(vals) > MaxRuleValues {
			v.errs.add(p, "must have at most %d entries, got %d", MaxRuleValues, len(vals))
		}
		seen := make(map[string]bool)
		for i, s := range vals {
			if msg := ok(s); msg != "" {
				v.errs.add(index(p, i), "%s, got %s", msg, quote(s))
			} else if seen[s] {
				v.errs.add(index(p, i), "duplicate entry %s", quote(s))
			}
			seen[s] = true
		}
	}
	check("clusters", r.Clusters, func(s string) string {
		if !federation.IsDNSLabel(s) {
			return "cluster name " + labelRule
		}
		return ""
	})
	check("trustDomains", r.TrustDomains, func(s string) string {
		if _, err := federation.ParseTrustDomain(s); err != nil {
			return "must be a SPIFFE trust domain name (a-z, 0-9, '.', '-', '_'; not a spiffe:// URI), 1 to 255 characters"
		}
		return ""
	})
	check("serviceAccounts", r.ServiceAccounts, func(s string) string {
		if _, _, ok := parseServiceAccount(s); !ok {
			return `must be "namespace/name" or "namespace/*" (namespace an RFC 1123 label, name a DNS subdomain of at most 253 characters)`
		}
		return ""
	})
}

// parseServiceAccount splits "namespace/name" or "namespace/*".
func parseServiceAccount(s string) (ns, name string, ok bool) {
	ns, name, ok = strings.Cut(s, "/")
	if !ok || !federation.IsDNSLabel(ns) || (name != "*" && !isDNSSubdomain(name)) {
		return "", "", false
	}
	return ns, name, true
}

func isPrintable(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

func isPathChars(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= 0x20 || c >= 0x7f || c == '?' || c == '#' {
			return false
		}
	}
	return true
}

func isAuthority(s string) bool {
	if s == "" || len(s) > 255 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == ':' || c == '[' || c == ']') {
			return false
		}
	}
	return true
}

// isToken reports whether s is an HTTP token (RFC 9110 tchar).
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}

func isHeaderValue(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < 0x20 && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// retryOn bits.
const (
	retry5xx uint32 = 1 << iota
	retryGatewayError
	retryReset
	retryConnectFailure
	retryRetriable4xx
	retryRefusedStream
)

var retryTokens = map[string]uint32{
	"5xx":             retry5xx,
	"gateway-error":   retryGatewayError,
	"reset":           retryReset,
	"connect-failure": retryConnectFailure,
	"retriable-4xx":   retryRetriable4xx,
	"refused-stream":  retryRefusedStream,
}

// DefaultRetryOn is the retryOn of a retries block that sets none.
const DefaultRetryOn = "connect-failure,refused-stream,503"

// retryConditions is a parsed retryOn.
type retryConditions struct {
	bits  uint32
	codes [400]bool // status 200..599 by code-200
}

// parseRetryOn parses a retryOn list; the string result is the error
// message, "" when valid.
func parseRetryOn(s string) (retryConditions, string) {
	var rc retryConditions
	for i, tok := range strings.Split(s, ",") {
		tok = strings.TrimSpace(tok)
		if bit, ok := retryTokens[tok]; ok {
			rc.bits |= bit
			continue
		}
		if code, err := strconv.Atoi(tok); err == nil && code >= 200 && code <= 599 && tok[0] != '+' {
			rc.codes[code-200] = true
			continue
		}
		return rc, fmt.Sprintf("condition %d is %s: must be one of 5xx, gateway-error, reset, connect-failure, retriable-4xx, refused-stream, or a status code 200 to 599", i, quote(tok))
	}
	return rc, ""
}
