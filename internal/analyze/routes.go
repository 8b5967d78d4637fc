package analyze

import (
	"fmt"
	"net/textproto"
	"strings"

	"github.com/meshfed/meshfed/federation/policy"
)

// Shadowed routes (MF0008). Routes are tried in order and the first match
// wins, so a match alternative of route j is dead when an alternative of an
// earlier route covers it: every request it matches, the earlier one
// matches too. The check is conservative: it reports only what it proves
// from the match fields alone, and proves coverage of one alternative b by
// another a field by field:
//
//   - a field a leaves unset covers anything; one a sets is covered only if
//     b sets it too;
//   - exact x covers exact x; prefix p covers exact and prefix strings that
//     start with p; regex r covers the identical regex and exact strings r
//     matches in full (with package policy's matcher); a header's present
//     covers any match on that header (names compared case-insensitively).
//
// A route without match, or an alternative that sets nothing, matches every
// request. Nothing else is inferred (a regex covering a prefix, say), so a
// route reported is certainly never reached, and one not reported may still
// be.

// shadowedHTTP reports HTTP routes and match alternatives that earlier
// routes shadow.
func (a *analyzer) shadowedHTTP(res string, routes []policy.HTTPRoute) {
	for j := 1; j < len(routes); j++ {
		alts := matches(routes[j].Match)
		var by []string
		covered := 0
		for k := range alts {
			ref := a.coveringHTTP(routes[:j], &alts[k])
			if ref == "" {
				continue
			}
			covered++
			if len(routes[j].Match) > 1 {
				by = append(by, ref)
			} else {
				by = []string{ref}
			}
		}
		switch {
		case covered == 0:
		case covered == len(alts):
			a.add(ShadowedRoute, res, index("spec.http", j), "route%s is never reached: every request it matches is taken first by %s", routeName(routes[j].Name), list(by))
		default:
			for k := range alts {
				if ref := a.coveringHTTP(routes[:j], &alts[k]); ref != "" {
					a.add(ShadowedRoute, res, index(index("spec.http", j)+".match", k), "this match never selects the route: every request it matches is taken first by %s", ref)
				}
			}
		}
	}
}

func routeName(name string) string {
	if name == "" {
		return ""
	}
	return fmt.Sprintf(" %q", name)
}

// matches returns a route's alternatives; no match is one that matches
// everything.
func matches(m []policy.HTTPMatchRequest) []policy.HTTPMatchRequest {
	if len(m) == 0 {
		return []policy.HTTPMatchRequest{{}}
	}
	return m
}

// coveringHTTP returns the path of the first alternative among routes that
// covers b ("spec.http[i]" for a route without match), or "".
func (a *analyzer) coveringHTTP(routes []policy.HTTPRoute, b *policy.HTTPMatchRequest) string {
	for i := range routes {
		if len(routes[i].Match) == 0 {
			return index("spec.http", i) + " (no match: it takes every request)"
		}
		for l := range routes[i].Match {
			if a.covers(&routes[i].Match[l], b) {
				return index(index("spec.http", i)+".match", l)
			}
		}
	}
	return ""
}

// covers reports whether every request that matches b matches a.
func (a *analyzer) covers(am, bm *policy.HTTPMatchRequest) bool {
	if !a.stringCovers(am.URI, bm.URI) || !a.stringCovers(am.Method, bm.Method) || !a.stringCovers(am.Authority, bm.Authority) {
		return false
	}
	for name, ah := range am.Headers {
		bh, ok := header(bm.Headers, name)
		if !ok || !a.stringCovers(&ah, &bh) {
			return false
		}
	}
	return true
}

// header finds name among a match's headers, case-insensitively.
func header(hs map[string]policy.StringMatch, name string) (policy.StringMatch, bool) {
	canon := textproto.CanonicalMIMEHeaderKey(name)
	for n, m := range hs {
		if textproto.CanonicalMIMEHeaderKey(n) == canon {
			return m, true
		}
	}
	return policy.StringMatch{}, false
}

// stringCovers reports whether every value b matches, a matches (nil
// matches anything).
func (a *analyzer) stringCovers(am, bm *policy.StringMatch) bool {
	switch {
	case am == nil:
		return true
	case bm == nil:
		return false
	case am.Present:
		return true // every match on a header requires it present
	case am.Exact != "":
		return bm.Exact == am.Exact
	case am.Prefix != "":
		return bm.Exact != "" && strings.HasPrefix(bm.Exact, am.Prefix) ||
			bm.Prefix != "" && strings.HasPrefix(bm.Prefix, am.Prefix)
	case am.Regex != "":
		return bm.Regex == am.Regex || bm.Exact != "" && a.regexMatches(am.Regex, bm.Exact)
	}
	return false
}

// regexMatches reports whether re matches all of s, as a gateway matches
// it: through a compiled policy whose one route matches the path by re.
func (a *analyzer) regexMatches(re, s string) bool {
	c := a.probe("regex\x00"+re, policy.Spec{HTTP: []policy.HTTPRoute{{
		Match: []policy.HTTPMatchRequest{{URI: &policy.StringMatch{Regex: re}}},
	}}})
	return c != nil && c.MatchHTTP("GET", s, "", nil) != nil
}

// shadowedTCP reports TCP routes and match alternatives (ports) that
// earlier routes shadow: a route without match takes every connection, a
// port match takes that port.
func (a *analyzer) shadowedTCP(res string, routes []policy.TCPRoute) {
	covering := func(before []policy.TCPRoute, port int) string {
		for i, r := range before {
			if len(r.Match) == 0 {
				return index("spec.tcp", i) + " (no match: it takes every connection)"
			}
			for l, m := range r.Match {
				if port != 0 && m.Port == port {
					return index(index("spec.tcp", i)+".match", l)
				}
			}
		}
		return ""
	}
	for j := 1; j < len(routes); j++ {
		ports := []int{0}
		if len(routes[j].Match) > 0 {
			ports = ports[:0]
			for _, m := range routes[j].Match {
				ports = append(ports, m.Port)
			}
		}
		var by []string
		for _, port := range ports {
			if ref := covering(routes[:j], port); ref != "" {
				by = append(by, ref)
			}
		}
		switch {
		case len(by) == 0:
		case len(by) == len(ports):
			a.add(ShadowedRoute, res, index("spec.tcp", j), "route is never reached: every connection it matches is taken first by %s", list(by))
		default:
			for k, port := range ports {
				if ref := covering(routes[:j], port); ref != "" {
					a.add(ShadowedRoute, res, index(index("spec.tcp", j)+".match", k), "this match never selects the route: connections to port %d are taken first by %s", port, ref)
				}
			}
		}
	}
}
