package analyze

import (
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/meshfed/meshfed/federation"
	"github.com/meshfed/meshfed/federation/policy"
)

// Analyze checks policies against cat and returns the findings, sorted
// (by resource, field path, code). cat may be nil: then only the checks
// that need no catalog run (MF0001, MF0008, MF0009, MF0013, MF0017).
// Every policy is validated first (policy.Compile); one that fails is
// reported as MF0001, one message per field error, and checked no
// further. Services of cat are checked too (MF0010, MF0011), with or
// without a policy for them. Analyze does not modify its arguments.
func Analyze(cat *Catalog, policies []*policy.GlobalTrafficPolicy) []Message {
	entries := make([]entry, len(policies))
	for i, p := range policies {
		entries[i] = entry{p: p}
	}
	return analyze(cat, entries, nil)
}

// entry is a policy to analyze and where it came from (Message.Origin).
type entry struct {
	p      *policy.GlobalTrafficPolicy
	origin string
}

func analyze(cat *Catalog, entries []entry, pre []Message) []Message {
	a := &analyzer{msgs: slices.Clone(pre), probes: make(map[string]*policy.Compiled)}
	if cat != nil {
		a.index(cat)
		for i := range cat.Services {
			a.ports(&cat.Services[i])
		}
	}
	byName := make(map[string]entry)
	byHost := make(map[federation.ServiceKey]entry)
	for _, e := range entries {
		a.origin = e.origin
		res := resource(e.p.Metadata.Name)
		c, err := policy.Compile(e.p)
		if err != nil {
			a.fieldErrors(res, err)
			continue
		}
		if o, dup := byName[e.p.Metadata.Name]; dup {
			a.add(PolicyConflict, res, "metadata.name", "another policy is also named %q%s; policy names are unique", e.p.Metadata.Name, from(o.origin))
			continue
		}
		byName[e.p.Metadata.Name] = e
		if o, dup := byHost[e.p.Service()]; dup {
			a.add(PolicyConflict, res, "spec.host", "policy %q%s already has host %q; there is one policy per host and the hub refuses a second", o.p.Metadata.Name, from(o.origin), e.p.Spec.Host)
			continue
		}
		byHost[e.p.Service()] = e
		a.policy(res, e.p, c)
	}
	sortMessages(a.msgs)
	return a.msgs
}

func resource(name string) string { return policy.Kind + "/" + name }

func from(origin string) string {
	if origin == "" {
		return ""
	}
	return " (" + origin + ")"
}

// analyzer holds the catalog's indexes and collects messages.
type analyzer struct {
	msgs   []Message
	origin string // of the policy being analyzed

	haveCatalog bool
	members     map[federation.ClusterName]*Cluster
	regions     map[string]bool
	anyRegion   bool
	anyZone     bool
	trust       map[federation.TrustDomain]bool // members' and federated
	federated   []federation.TrustDomain
	services    map[federation.ServiceKey]*Service

	// probes are compiled one-field policies, by what they probe: the
	// matchers of package policy, used as the gateways use them.
	probes map[string]*policy.Compiled
}

func (a *analyzer) add(code Code, res, path, format string, args ...any) {
	a.msgs = append(a.msgs, Message{
		Code: code, Severity: info(code).Severity, Resource: res, Path: path,
		Message: fmt.Sprintf(format, args...), Origin: a.origin,
	})
}

// fieldErrors reports each *policy.FieldError in err as MF0001.
func (a *analyzer) fieldErrors(res string, err error) {
	for _, fe := range fieldErrors(err) {
		a.add(InvalidPolicy, res, fe.Path, "%s", fe.Msg)
	}
}

// fieldErrors flattens err (a *policy.FieldError, or several joined) into
// its field errors; anything else becomes one with no path.
func fieldErrors(err error) []*policy.FieldError {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []*policy.FieldError
		for _, e := range j.Unwrap() {
			out = append(out, fieldErrors(e)...)
		}
		return out
	}
	var fe *policy.FieldError
	if errors.As(err, &fe) {
		return []*policy.FieldError{fe}
	}
	return []*policy.FieldError{{Msg: err.Error()}}
}

func (a *analyzer) index(cat *Catalog) {
	a.haveCatalog = true
	a.members = make(map[federation.ClusterName]*Cluster)
	a.regions = make(map[string]bool)
	a.trust = make(map[federation.TrustDomain]bool)
	a.services = make(map[federation.ServiceKey]*Service)
	for i := range cat.Clusters {
		c := &cat.Clusters[i]
		a.members[c.Name] = c
		if r := c.Locality.Region(); r != "" {
			a.regions[r] = true
			a.anyRegion = true
		}
		if c.Locality.Zone() != "" {
			a.anyZone = true
		}
		if !c.TrustDomain.IsZero() {
			a.trust[c.TrustDomain] = true
		}
	}
	for _, td := range cat.FederatedTrustDomains {
		a.trust[td] = true
	}
	a.federated = cat.FederatedTrustDomains
	for i := range cat.Services {
		s := &cat.Services[i]
		a.services[s.Key] = s
		for _, e := range s.Exports {
			for _, g := range e.Endpoints {
				if g.Zone != "" {
					a.anyZone = true
				}
			}
		}
	}
}

// member returns the member named s, or nil.
func (a *analyzer) member(s string) *Cluster {
	c, err := federation.ParseClusterName(s)
	if err != nil {
		return nil
	}
	return a.members[c]
}

// policy runs every check on a valid policy.
func (a *analyzer) policy(res string, p *policy.GlobalTrafficPolicy, c *policy.Compiled) {
	a.shadowedHTTP(res, p.Spec.HTTP)
	a.shadowedTCP(res, p.Spec.TCP)
	for i, r := range p.Spec.HTTP {
		a.retries(res, index("spec.http", i), &r)
	}
	if o := p.Spec.OutlierDetection; o != nil && o.MaxEjectionPercent != nil && *o.MaxEjectionPercent == 0 {
		a.add(OutlierNeverEjects, res, "spec.outlierDetection.maxEjectionPercent", "is 0: no endpoint may ever be ejected, so outlier detection never ejects (unset is %d%%)", policy.DefaultMaxEjectionPercent)
	}
	if !a.haveCatalog {
		return
	}
	a.references(res, p)
	a.localities(res, p)
	svc := a.services[p.Service()]
	if svc == nil {
		a.add(UnknownService, res, "spec.host", "service %s (host %q) is exported by no member cluster; the policy has no effect until one exports it", p.Service(), p.Spec.Host)
		return
	}
	a.service(res, p, c, svc)
}

// references checks the clusters and trust domains a policy names.
func (a *analyzer) references(res string, p *policy.GlobalTrafficPolicy) {
	for i, r := range p.Spec.HTTP {
		for j, d := range r.Route {
			a.destinationCluster(res, fmt.Sprintf("spec.http[%d].route[%d].destination.cluster", i, j), d.Destination)
		}
	}
	for i, r := range p.Spec.TCP {
		for j, d := range r.Route {
			a.destinationCluster(res, fmt.Sprintf("spec.tcp[%d].route[%d].destination.cluster", i, j), d.Destination)
		}
	}
	if l := p.Spec.LocalityLbSetting; l != nil {
		for i, c := range l.ExcludeClusters {
			if a.member(c) == nil {
				a.add(UnknownClusterReference, res, index("spec.localityLbSetting.excludeClusters", i), "cluster %q is not a member; excluding it has no effect", c)
			}
		}
	}
	if az := p.Spec.Authorization; az != nil {
		for _, list := range []struct {
			name  string
			rules []policy.AuthorizationRule
		}{{"allow", az.Allow}, {"deny", az.Deny}} {
			for i, r := range list.rules {
				rp := index("spec.authorization."+list.name, i)
				for j, c := range r.Clusters {
					if a.member(c) == nil {
						a.add(UnknownClusterReference, res, index(rp+".clusters", j), "cluster %q is not a member; no caller comes from it, so this entry never matches", c)
					}
				}
				for j, s := range r.TrustDomains {
					td, err := federation.ParseTrustDomain(s)
					if err == nil && a.trust[td] {
						continue
					}
					a.add(UnknownTrustDomain, res, index(rp+".trustDomains", j), "trust domain %q is neither a member cluster's (%s) nor federated (%s); no caller can authenticate in it, so this entry never matches", s, a.memberTDs(), a.federatedTDs())
				}
			}
		}
	}
}

func (a *analyzer) destinationCluster(res, path string, d policy.Destination) {
	if d.Cluster != "" && a.member(d.Cluster) == nil {
		a.add(UnknownCluster, res, path, "cluster %q is not a member (members: %s)", d.Cluster, a.memberNames())
	}
}

func (a *analyzer) memberNames() string {
	names := make([]string, 0, len(a.members))
	for c := range a.members {
		names = append(names, c.String())
	}
	return list(names)
}

func (a *analyzer) memberTDs() string {
	var tds []string
	for _, c := range a.members {
		if !c.TrustDomain.IsZero() {
			tds = append(tds, c.TrustDomain.String())
		}
	}
	return list(tds)
}

func (a *analyzer) federatedTDs() string {
	tds := make([]string, 0, len(a.federated))
	for _, td := range a.federated {
		tds = append(tds, td.String())
	}
	return list(tds)
}

// list sorts and joins names, at most maxListed of them; none is "none".
func list(names []string) string {
	if len(names) == 0 {
		return "none"
	}
	names = slices.Clone(names)
	slices.Sort(names)
	names = slices.Compact(names)
	if len(names) > maxListed {
		return strings.Join(names[:maxListed], ", ") + fmt.Sprintf(" and %d more", len(names)-maxListed)
	}
	return strings.Join(names, ", ")
}

// maxListed bounds the names one message lists.
const maxListed = 8

func index(path string, i int) string { return path + "[" + strconv.Itoa(i) + "]" }

func key(path, k string) string { return path + "[" + strconv.Quote(k) + "]" }

// retries reports a route whose tries cannot all fit in its timeout.
func (a *analyzer) retries(res, path string, r *policy.HTTPRoute) {
	rt := r.Retries
	if rt == nil || rt.Attempts == 0 || rt.PerTryTimeout == 0 || r.Timeout == 0 {
		return
	}
	tries := rt.Attempts + 1
	per, total := rt.PerTryTimeout.Std(), r.Timeout.Std()
	need := per * time.Duration(tries)
	if need <= total {
		return
	}
	fit := int(total / per)
	a.add(RetriesExceedTimeout, res, path+".retries",
		"the first try and %d retries of up to %s each take up to %s, longer than the route's timeout of %s: only %d of the %d tries fit, the timeout cuts off the rest",
		rt.Attempts, rt.PerTryTimeout, policy.Duration(need), r.Timeout, fit, tries)
}

// ---- the service: exports, subsets, destinations, failover ----

func (a *analyzer) service(res string, p *policy.GlobalTrafficPolicy, c *policy.Compiled, svc *Service) {
	loc := c.Locality()
	var exporting, included []string
	for _, e := range svc.Exports {
		exporting = append(exporting, e.Cluster.String())
		if !loc.Excluded(e.Cluster) {
			included = append(included, e.Cluster.String())
		}
	}
	if len(included) == 0 {
		a.add(AllClustersExcluded, res, "spec.localityLbSetting.excludeClusters", "excludes every cluster that exports %s (%s): no traffic can be delivered", svc.Key, list(exporting))
	}

	// Subsets: each should match endpoints in every cluster that may
	// receive traffic. One that matches nowhere is reported here only if
	// no destination uses it; a destination that does is MF0005.
	used := make(map[string]bool)
	for _, r := range p.Spec.HTTP {
		for _, d := range r.Route {
			used[d.Destination.Subset] = true
		}
	}
	for _, r := range p.Spec.TCP {
		for _, d := range r.Route {
			used[d.Destination.Subset] = true
		}
	}
	for i, ss := range p.Spec.Subsets {
		sel, _ := c.Subset(ss.Name)
		var missing []string
		for _, e := range svc.Exports {
			if loc.Excluded(e.Cluster) {
				continue
			}
			if matched, _ := selectGroups(e, sel); matched == 0 {
				missing = append(missing, e.Cluster.String())
			}
		}
		path := index("spec.subsets", i) + ".labels"
		switch {
		case len(missing) == 0:
		case len(missing) == len(included):
			if used[ss.Name] {
				break
			}
			a.add(SubsetMissingInCluster, res, path, "subset %q (%s) matches no endpoint of %s in any cluster that exports it (%s)", ss.Name, labelString(ss.Labels), svc.Key, list(missing))
		default:
			for _, m := range missing {
				a.add(SubsetMissingInCluster, res, path, "subset %q (%s) matches no endpoint of %s in cluster %q, which exports it", ss.Name, labelString(ss.Labels), svc.Key, m)
			}
		}
	}

	for i, r := range p.Spec.HTTP {
		for j, d := range r.Route {
			a.destination(res, fmt.Sprintf("spec.http[%d].route[%d].destination", i, j), d.Destination, c, svc)
		}
	}
	for i, r := range p.Spec.TCP {
		for j, d := range r.Route {
			a.destination(res, fmt.Sprintf("spec.tcp[%d].route[%d].destination", i, j), d.Destination, c, svc)
		}
	}

	l := p.Spec.LocalityLbSetting
	if l == nil {
		return
	}
	for i, f := range l.Failover {
		var clusters []string
		ready := 0
		for _, e := range svc.Exports {
			if m := a.members[e.Cluster]; m == nil || m.Locality.Region() != f.To || loc.Excluded(e.Cluster) {
				continue
			}
			clusters = append(clusters, e.Cluster.String())
			_, n := selectGroups(e, nil)
			ready += n
		}
		if a.regions[f.To] && ready == 0 {
			if len(clusters) == 0 {
				a.add(NoReadyEndpoints, res, index("spec.localityLbSetting.failover", i)+".to", "no cluster in region %q exports %s (or every one is excluded): failing over from %q finds no endpoint", f.To, svc.Key, f.From)
			} else {
				a.add(NoReadyEndpoints, res, index("spec.localityLbSetting.failover", i)+".to", "region %q has no ready endpoint of %s (clusters %s): failing over from %q finds none", f.To, svc.Key, list(clusters), f.From)
			}
		}
	}
	// Distribute targets: each pattern should match where endpoints are.
	var endpointLocs []federation.Locality
	for _, e := range svc.Exports {
		if loc.Excluded(e.Cluster) {
			continue
		}
		endpointLocs = append(endpointLocs, a.endpointLocalities(e)...)
	}
	for i, d := range l.Distribute {
		for _, k := range sortedKeys(d.To) {
			pat, ok := a.pattern(k)
			if !ok || slices.ContainsFunc(endpointLocs, pat.Matches) {
				continue
			}
			a.add(UnknownLocality, res, key(index("spec.localityLbSetting.distribute", i)+".to", k), "no endpoint of %s is in a locality matching %q (endpoints are in %s): its %d%% of traffic from %q has nowhere to go", svc.Key, k, localityList(endpointLocs), d.To[k], d.From)
		}
	}
}

// endpointLocalities returns the localities of an export's endpoints: the
// cluster's region with each group's zone (the cluster's zone when the
// group has none), and the cluster's subzone where the zone is the
// cluster's.
func (a *analyzer) endpointLocalities(e Export) []federation.Locality {
	m := a.members[e.Cluster]
	if m == nil || m.Locality.IsZero() {
		return nil
	}
	out := []federation.Locality{m.Locality}
	for _, g := range e.Endpoints {
		if g.Zone == "" || g.Zone == m.Locality.Zone() {
			continue
		}
		if l, err := federation.NewLocality(m.Locality.Region(), g.Zone, ""); err == nil {
			out = append(out, l)
		}
	}
	return out
}

func localityList(ls []federation.Locality) string {
	s := make([]string, len(ls))
	for i, l := range ls {
		s[i] = l.String()
	}
	return list(s)
}

// selectGroups returns how many of e's endpoint groups sel selects (all
// when sel is nil) and how many ready endpoints they hold.
func selectGroups(e Export, sel *policy.LabelSelector) (groups, ready int) {
	for _, g := range e.Endpoints {
		if sel == nil || sel.Matches(g.Labels) {
			groups++
			ready += g.Ready
		}
	}
	return groups, ready
}

// destination checks where one weighted destination sends: a member that
// exports the service, endpoints in its subset, some of them ready.
func (a *analyzer) destination(res, path string, d policy.Destination, c *policy.Compiled, svc *Service) {
	loc := c.Locality()
	var sel *policy.LabelSelector
	if d.Subset != "" {
		sel, _ = c.Subset(d.Subset)
	}
	groups, ready := 0, 0
	var where string
	if d.Cluster != "" {
		if a.member(d.Cluster) == nil {
			return // MF0003, reported by references
		}
		i := slices.IndexFunc(svc.Exports, func(e Export) bool { return e.Cluster.String() == d.Cluster })
		if i < 0 {
			var exporting []string
			for _, e := range svc.Exports {
				exporting = append(exporting, e.Cluster.String())
			}
			a.add(ClusterNotExporting, res, path+".cluster", "cluster %q does not export %s (exported by %s): its share of traffic fails", d.Cluster, svc.Key, list(exporting))
			return
		}
		groups, ready = selectGroups(svc.Exports[i], sel)
		where = fmt.Sprintf("in cluster %q", d.Cluster)
	} else {
		var clusters []string
		for _, e := range svc.Exports {
			if loc.Excluded(e.Cluster) {
				continue
			}
			clusters = append(clusters, e.Cluster.String())
			g, r := selectGroups(e, sel)
			groups, ready = groups+g, ready+r
		}
		where = "in any cluster that exports it (" + list(clusters) + ")"
	}
	switch {
	case sel != nil && groups == 0:
		a.add(EmptySubsetDestination, res, path+".subset", "subset %q (%s) selects no endpoint of %s %s: this destination's share of traffic fails", d.Subset, labelString(sel.Labels()), svc.Key, where)
	case ready == 0:
		what := "endpoints"
		if sel != nil {
			what = fmt.Sprintf("endpoints of subset %q", d.Subset)
		}
		p := path + ".cluster"
		if d.Cluster == "" {
			p = path + ".subset"
		}
		a.add(NoReadyEndpoints, res, p, "%s has %s %s, none of them ready: this destination's share of traffic fails now", svc.Key, what, where)
	}
}

func labelString(m map[string]string) string {
	parts := make([]string, 0, len(m))
	for _, k := range sortedKeys(m) {
		parts = append(parts, k+"="+m[k])
	}
	return strings.Join(parts, ",")
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// ---- localities that no member has ----

func (a *analyzer) localities(res string, p *policy.GlobalTrafficPolicy) {
	l := p.Spec.LocalityLbSetting
	if l == nil {
		return
	}
	regions := make([]string, 0, len(a.regions))
	for r := range a.regions {
		regions = append(regions, r)
	}
	for i, f := range l.Failover {
		fp := index("spec.localityLbSetting.failover", i)
		if !a.regions[f.From] {
			a.add(UnknownLocality, res, fp+".from", "no member cluster is in region %q (regions: %s): this rule never applies", f.From, list(regions))
		}
		if !a.regions[f.To] {
			a.add(UnknownLocality, res, fp+".to", "no member cluster is in region %q (regions: %s): failing over from %q finds no endpoint", f.To, list(regions), f.From)
		}
	}
	var memberLocs []federation.Locality
	for _, c := range a.members {
		if !c.Locality.IsZero() {
			memberLocs = append(memberLocs, c.Locality)
		}
	}
	for i, d := range l.Distribute {
		pat, ok := a.pattern(d.From)
		if ok && !slices.ContainsFunc(memberLocs, pat.Matches) {
			a.add(UnknownLocality, res, index("spec.localityLbSetting.distribute", i)+".from", "no member cluster is in a locality matching %q (members are in %s): this rule never applies", d.From, localityList(memberLocs))
		}
	}
	for i, label := range l.FailoverPriority {
		fp := index("spec.localityLbSetting.failoverPriority", i)
		switch {
		case label == policy.LabelRegion && !a.anyRegion:
			a.add(UnknownLocality, res, fp, "no member cluster declares a region: every endpoint ties on %s", label)
		case label == policy.LabelZone && !a.anyZone:
			a.add(UnknownLocality, res, fp, "no member cluster or endpoint has a zone: every endpoint ties on %s", label)
		}
	}
}

// pattern compiles a locality pattern of distribute with package policy,
// as the gateways do.
func (a *analyzer) pattern(s string) (policy.LocalityPattern, bool) {
	c := a.probe("locality\x00"+s, policy.Spec{LocalityLbSetting: &policy.LocalityLbSetting{
		Distribute: []policy.LocalityDistribute{{From: "*", To: map[string]int{s: 100}}},
	}})
	if c == nil {
		return policy.LocalityPattern{}, false
	}
	ws, ok := c.Locality().Distribution(federation.Locality{})
	if !ok || len(ws) != 1 {
		return policy.LocalityPattern{}, false
	}
	return ws[0].Pattern, true
}

// probe compiles a policy with spec (its host filled in), cached by id;
// nil if it does not compile.
func (a *analyzer) probe(id string, spec policy.Spec) *policy.Compiled {
	if c, ok := a.probes[id]; ok {
		return c
	}
	spec.Host = "probe.analyze"
	c, err := policy.Compile(&policy.GlobalTrafficPolicy{
		APIVersion: policy.APIVersion, Kind: policy.Kind,
		Metadata: policy.Metadata{Name: "probe"}, Spec: spec,
	})
	if err != nil {
		c = nil
	}
	a.probes[id] = c
	return c
}
