package analyze

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/meshfed/meshfed/federation"
	"github.com/meshfed/meshfed/federation/policy"
	"github.com/meshfed/meshfed/federation/policy/policyfile"
	fedv1 "github.com/meshfed/meshfed/federation/v1"
)

// testCatalog is testdata/catalog.yaml, through FromAdmin.
func testCatalog(t *testing.T) *Catalog {
	t.Helper()
	f := readFixture(t, mustRead(t, "testdata/catalog.yaml"))
	clusters, services, feds, bundles, _ := f.admin(t)
	cat, err := FromAdmin(clusters, services, feds, bundles)
	if err != nil {
		t.Fatal(err)
	}
	return cat
}

func decodeYAML(t *testing.T, doc string) *policy.GlobalTrafficPolicy {
	t.Helper()
	ps, err := policyfile.Decode([]byte(doc))
	if err != nil {
		t.Fatalf("policy: %v", err)
	}
	return ps[0]
}

type finding struct {
	code Code
	path string
}

func findings(msgs []Message) []finding {
	out := make([]finding, len(msgs))
	for i, m := range msgs {
		out[i] = finding{m.Code, m.Path}
	}
	return out
}

// The variants of each check that the golden cases do not reach, each with
// exactly the findings it must produce.
func TestChecksReportExactlyTheseFindings(t *testing.T) {
	const head = "apiVersion: meshfed.io/v1alpha1\nkind: GlobalTrafficPolicy\nmetadata: {name: p}\nspec:\n  host: %s\n"
	for _, tc := range []struct {
		name string
		host string // default reviews.default
		spec string
		want []finding
	}{{
		name: "failover to a region with ready endpoints",
		spec: "  localityLbSetting:\n    failover: [{from: us-east, to: us-west}]\n",
		want: nil,
	}, {
		name: "failover to a region whose clusters have no ready endpoint",
		host: "details.default",
		spec: "  localityLbSetting:\n    failover: [{from: us-east, to: us-west}]\n",
		want: []finding{{NoReadyEndpoints, "spec.localityLbSetting.failover[0].to"}},
	}, {
		name: "a destination by subset alone whose endpoints are all unready",
		host: "details.default",
		spec: "  subsets: [{name: all, labels: {app: details}}]\n  localityLbSetting: {excludeClusters: [east]}\n  http:\n  - route: [{destination: {subset: all}}]\n",
		want: []finding{{NoReadyEndpoints, "spec.http[0].route[0].destination.subset"}},
	}, {
		name: "failover to a region whose cluster does not export the service",
		spec: "  localityLbSetting:\n    failover: [{from: us-east, to: sa-east}]\n",
		want: []finding{{NoReadyEndpoints, "spec.localityLbSetting.failover[0].to"}},
	}, {
		name: "failover from a region no member is in",
		spec: "  localityLbSetting:\n    failover: [{from: ap-south, to: us-west}]\n",
		want: []finding{{UnknownLocality, "spec.localityLbSetting.failover[0].from"}},
	}, {
		name: "distribute from and to localities nobody has",
		spec: "  localityLbSetting:\n    distribute:\n    - from: us-east/*\n      to: {us-east/us-east-1: 80, us-west/us-west-9: 20}\n    - from: eu/*\n      to: {us-east/*: 100}\n",
		want: []finding{
			{UnknownLocality, `spec.localityLbSetting.distribute[0].to["us-west/us-west-9"]`},
			{UnknownLocality, "spec.localityLbSetting.distribute[1].from"},
		},
	}, {
		name: "distribute to a region with endpoints, by region only",
		spec: "  localityLbSetting:\n    distribute:\n    - from: '*'\n      to: {us-east: 50, us-west: 50}\n",
		want: nil,
	}, {
		name: "distribute to south, a member without endpoints of reviews",
		spec: "  localityLbSetting:\n    distribute:\n    - from: '*'\n      to: {us-east: 50, sa-east: 50}\n",
		want: []finding{{UnknownLocality, `spec.localityLbSetting.distribute[0].to["sa-east"]`}},
	}, {
		name: "authorization clusters and trust domains, allow and deny",
		spec: "  authorization:\n    denyByDefault: true\n    allow: [{clusters: [east, nowhere]}]\n    deny: [{trustDomains: [evil.example], clusters: [west]}]\n",
		want: []finding{
			{UnknownClusterReference, "spec.authorization.allow[0].clusters[1]"},
			{UnknownTrustDomain, "spec.authorization.deny[0].trustDomains[0]"},
		},
	}, {
		name: "a member's trust domain is known",
		spec: "  authorization:\n    deny: [{trustDomains: [south.meshfed.local]}]\n",
		want: nil,
	}, {
		name: "some match alternatives shadowed, one not",
		spec: "  http:\n  - match: [{uri: {prefix: /a}}, {headers: {x-user: {present: true}}}]\n    route: [{destination: {cluster: east}}]\n" +
			"  - match: [{uri: {exact: /ab}}, {uri: {prefix: /b}}, {uri: {regex: '/c.*'}, headers: {X-User: {exact: bob}}}]\n    route: [{destination: {cluster: west}}]\n",
		want: []finding{
			{ShadowedRoute, "spec.http[1].match[0]"},
			{ShadowedRoute, "spec.http[1].match[2]"},
		},
	}, {
		name: "a catch-all route shadows every later one",
		spec: "  http:\n  - route: [{destination: {cluster: east}}]\n  - match: [{method: {exact: GET}}]\n    route: [{destination: {cluster: west}}]\n  - route: [{destination: {cluster: west}}]\n",
		want: []finding{{ShadowedRoute, "spec.http[1]"}, {ShadowedRoute, "spec.http[2]"}},
	}, {
		name: "regex covers an exact path it matches in full, not one it matches in part",
		spec: "  http:\n  - match: [{uri: {regex: '/v[0-9]+'}}]\n    route: [{destination: {cluster: east}}]\n" +
			"  - match: [{uri: {exact: /v12}}]\n    route: [{destination: {cluster: west}}]\n" +
			"  - match: [{uri: {exact: /v1/x}}]\n    route: [{destination: {cluster: west}}]\n",
		want: []finding{{ShadowedRoute, "spec.http[1]"}},
	}, {
		name: "a narrower earlier route shadows nothing",
		spec: "  http:\n  - match: [{uri: {prefix: /api}, method: {exact: GET}}]\n    route: [{destination: {cluster: east}}]\n" +
			"  - match: [{uri: {prefix: /api}}]\n    route: [{destination: {cluster: west}}]\n",
		want: nil,
	}, {
		name: "tcp routes",
		spec: "  tcp:\n  - match: [{port: 9080}]\n    route: [{destination: {cluster: east}}]\n  - match: [{port: 9080}, {port: 9090}]\n    route: [{destination: {cluster: west}}]\n" +
			"  - route: [{destination: {cluster: west}}]\n  - match: [{port: 7000}]\n    route: [{destination: {cluster: east}}]\n",
		want: []finding{{ShadowedRoute, "spec.tcp[1].match[0]"}, {ShadowedRoute, "spec.tcp[3]"}},
	}, {
		name: "retries without perTryTimeout fit any timeout",
		spec: "  http:\n  - route: [{destination: {cluster: east}}]\n    timeout: 1s\n    retries: {attempts: 5}\n",
		want: nil,
	}, {
		name: "a destination subset only in another cluster",
		spec: "  subsets: [{name: canary, labels: {track: canary}}]\n  http:\n  - route: [{destination: {cluster: east, subset: canary}}]\n",
		want: []finding{
			{EmptySubsetDestination, "spec.http[0].route[0].destination.subset"},
			{SubsetMissingInCluster, "spec.subsets[0].labels"},
		},
	}, {
		name: "an unused subset that matches nowhere",
		spec: "  subsets: [{name: v9, labels: {version: v9}}]\n",
		want: []finding{{SubsetMissingInCluster, "spec.subsets[0].labels"}},
	}, {
		name: "a subset missing only in an excluded cluster",
		spec: "  subsets: [{name: canary, labels: {track: canary}}]\n  localityLbSetting: {excludeClusters: [east]}\n",
		want: nil,
	}, {
		name: "failover priority by zone when clusters have zones",
		spec: "  localityLbSetting:\n    failoverPriority: [topology.kubernetes.io/region, topology.kubernetes.io/zone, meshfed.io/cluster]\n",
		want: nil,
	}} {
		t.Run(tc.name, func(t *testing.T) {
			host := tc.host
			if host == "" {
				host = "reviews.default"
			}
			msgs := Analyze(testCatalog(t), []*policy.GlobalTrafficPolicy{decodeYAML(t, fmt.Sprintf(head, host)+tc.spec)})
			if got := findings(msgs); !slices.Equal(got, tc.want) {
				t.Errorf("findings %v, want %v\n%s", got, tc.want, render(msgs))
			}
		})
	}
}

func TestFailoverPriorityLabelsNoClusterHas(t *testing.T) {
	cat := testCatalog(t)
	for i := range cat.Clusters {
		cat.Clusters[i].Locality = federation.Locality{}
	}
	for i := range cat.Services {
		for j := range cat.Services[i].Exports {
			for k := range cat.Services[i].Exports[j].Endpoints {
				cat.Services[i].Exports[j].Endpoints[k].Zone = ""
			}
		}
	}
	p := decodeYAML(t, "apiVersion: meshfed.io/v1alpha1\nkind: GlobalTrafficPolicy\nmetadata: {name: reviews}\nspec:\n  host: reviews.default\n  localityLbSetting:\n    failoverPriority: [topology.kubernetes.io/region, topology.kubernetes.io/zone, meshfed.io/cluster]\n")
	want := []finding{
		{UnknownLocality, "spec.localityLbSetting.failoverPriority[0]"},
		{UnknownLocality, "spec.localityLbSetting.failoverPriority[1]"},
	}
	if got := findings(Analyze(cat, []*policy.GlobalTrafficPolicy{p})); !slices.Equal(got, want) {
		t.Errorf("findings %v, want %v", got, want)
	}
}

// Without a catalog only the checks that need none run: a policy naming
// an unknown cluster and host passes, its shadowed route does not.
func TestAnalyzeWithoutCatalogRunsOnlyCatalogFreeChecks(t *testing.T) {
	p := decodeYAML(t, "apiVersion: meshfed.io/v1alpha1\nkind: GlobalTrafficPolicy\nmetadata: {name: x}\nspec:\n  host: nothing.nowhere\n"+
		"  http:\n  - route: [{destination: {cluster: north}}]\n  - route: [{destination: {cluster: north}}]\n")
	want := []finding{{ShadowedRoute, "spec.http[1]"}}
	if got := findings(Analyze(nil, []*policy.GlobalTrafficPolicy{p})); !slices.Equal(got, want) {
		t.Errorf("findings %v, want %v", got, want)
	}
}

// A policy built in code is validated like a decoded one, and two policies
// for one host are a conflict; Analyze leaves its arguments alone.
func TestAnalyzeValidatesPoliciesBuiltInCode(t *testing.T) {
	p := &policy.GlobalTrafficPolicy{APIVersion: policy.APIVersion, Kind: policy.Kind, Metadata: policy.Metadata{Name: "a"},
		Spec: policy.Spec{Host: "reviews.default", HTTP: []policy.HTTPRoute{{Route: []policy.HTTPRouteDestination{
			{Destination: policy.Destination{Cluster: "east"}, Weight: 50}, {Destination: policy.Destination{Cluster: "west"}, Weight: 60}}}}}}
	ok1 := decodeYAML(t, "apiVersion: meshfed.io/v1alpha1\nkind: GlobalTrafficPolicy\nmetadata: {name: b}\nspec: {host: reviews.default}\n")
	ok2 := decodeYAML(t, "apiVersion: meshfed.io/v1alpha1\nkind: GlobalTrafficPolicy\nmetadata: {name: c}\nspec: {host: reviews.default}\n")
	before, _ := json.Marshal(p)
	msgs := Analyze(testCatalog(t), []*policy.GlobalTrafficPolicy{p, ok1, ok2})
	want := []finding{{InvalidPolicy, "spec.http[0].route"}, {PolicyConflict, "spec.host"}}
	if got := findings(msgs); !slices.Equal(got, want) {
		t.Fatalf("findings %v, want %v\n%s", got, want, render(msgs))
	}
	if msgs[1].Resource != "GlobalTrafficPolicy/c" || !strings.Contains(msgs[1].Message, `policy "b"`) {
		t.Errorf("conflict %s: want it on c, naming b", msgs[1])
	}
	if after, _ := json.Marshal(p); string(after) != string(before) {
		t.Error("Analyze modified its policy")
	}
}

// A stored policy that no longer decodes is MF0001 from the hub; a file's
// policy replaces the hub's of its name; a failing document's name drops
// the hub's policy too.
func TestPoliciesFromHubAndFiles(t *testing.T) {
	stored := func(name, host, cluster string) *fedv1.TrafficPolicy {
		p := decodeYAML(t, fmt.Sprintf("apiVersion: meshfed.io/v1alpha1\nkind: GlobalTrafficPolicy\nmetadata: {name: %s}\nspec:\n  host: %s\n  http:\n  - route: [{destination: {cluster: %s}}]\n", name, host, cluster))
		m, err := policy.ToProto(p)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	var s Policies
	s.AddHub([]*fedv1.TrafficPolicy{
		stored("reviews", "reviews.default", "north"),
		stored("details", "details.default", "nowhere"),
		{Name: "old", Service: "default/ratings", Spec: []byte(`{"apiVersion":"meshfed.io/v1alpha1"}`)},
	})
	if err := s.AddFile("fix.yaml", []byte("apiVersion: meshfed.io/v1alpha1\nkind: GlobalTrafficPolicy\nmetadata: {name: reviews}\nspec:\n  host: reviews.default\n  http:\n  - route: [{destination: {cluster: east}}]\n")); err != nil {
		t.Fatal(err)
	}
	if err := s.AddFile("bad.yaml", []byte("# bad\napiVersion: meshfed.io/v1alpha1\nkind: GlobalTrafficPolicy\nmetadata: {name: details}\nspec:\n  host: details.default\n  bogus: 1\n")); err != nil {
		t.Fatal(err)
	}
	if err := s.AddFile("empty.yaml", []byte("# nothing\n")); err == nil || !strings.Contains(err.Error(), "empty.yaml") {
		t.Errorf("AddFile of a file without policies: %v, want ErrNoPolicy naming the file", err)
	}
	if s.Len() != 1 {
		t.Errorf("Len() = %d, want 1 (fix.yaml's reviews)", s.Len())
	}
	got := render(s.Analyze(testCatalog(t)))
	for _, want := range []string{
		"Error [MF0001] GlobalTrafficPolicy/details spec.bogus: ", "(bad.yaml:1)\n",
		"Error [MF0001] GlobalTrafficPolicy/old ", "(hub)\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("messages lack %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "north") || strings.Contains(got, "nowhere") {
		t.Errorf("the hub's replaced policies were analyzed:\n%s", got)
	}
	if n := strings.Count(got, "\n"); n != 4 { // bad.yaml 1, old 3
		t.Errorf("%d messages, want 4:\n%s", n, got)
	}
}

// FromAdmin leaves out exports of clusters that are not members, and
// takes federated trust domains from relationships and external bundles.
func TestFromAdmin(t *testing.T) {
	cat, err := FromAdmin(
		&fedv1.ListClustersResponse{Clusters: []*fedv1.ClusterRecord{{Name: "west", TrustDomain: "w.example"}, {Name: "east", TrustDomain: "e.example", Locality: &fedv1.Locality{Region: "r", Zone: "z"}}}},
		&fedv1.ListServicesResponse{Services: []*fedv1.GlobalService{
			{Key: "ns/a", Exports: []*fedv1.ExportRecord{{Cluster: "gone", Service: &fedv1.ExportedService{}}, {Cluster: "east", Service: &fedv1.ExportedService{
				Ports: []*fedv1.ServicePort{{Name: "http", Port: 80, Protocol: "HTTP"}}, Endpoints: []*fedv1.EndpointGroup{{Zone: "z", Labels: map[string]string{"v": "1"}, Ready: 3}}}}}},
			{Key: "ns/b", Exports: []*fedv1.ExportRecord{{Cluster: "gone", Service: &fedv1.ExportedService{}}}},
		}},
		&fedv1.ListFederationsResponse{Federations: []*fedv1.FederationStatus{{Federation: &fedv1.FederationRelationship{TrustDomain: "spire.example"}}}},
		&fedv1.ListBundlesResponse{Bundles: []*fedv1.BundleInfo{{Cluster: "east", Bundle: &fedv1.TrustBundle{TrustDomain: "e.example"}}, {Bundle: &fedv1.TrustBundle{TrustDomain: "spire.example"}}, {Bundle: &fedv1.TrustBundle{TrustDomain: "other.example"}}}},
	)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := json.Marshal(struct {
		Clusters, Services, Feds any
	}{clusterStrings(cat.Clusters), cat.Services, tdStrings(cat.FederatedTrustDomains)})
	const want = `{"Clusters":["east e.example r/z","west w.example "],"Services":[{"Key":{},"Exports":[{"Cluster":{},"Ports":[{"Name":"http","Port":80,"Protocol":"HTTP","AppProtocol":""}],"Endpoints":[{"Zone":"z","Labels":{"v":"1"},"Ready":3}]}]}],"Feds":["other.example","spire.example"]}`
	if string(got) != want {
		t.Errorf("catalog\n%s\nwant\n%s", got, want)
	}
	if len(cat.Services) != 1 || cat.Services[0].Key.String() != "ns/a" || cat.Services[0].Exports[0].Cluster.String() != "east" {
		t.Errorf("services %+v, want ns/a exported by east only", cat.Services)
	}
	if _, err := FromAdmin(&fedv1.ListClustersResponse{Clusters: []*fedv1.ClusterRecord{{Name: "Bad_Name"}}}, nil, nil, nil); err == nil {
		t.Error("FromAdmin accepted a cluster named Bad_Name")
	}
}

func clusterStrings(cs []Cluster) []string {
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = c.Name.String() + " " + c.TrustDomain.String() + " " + c.Locality.String()
	}
	return out
}

func tdStrings(tds []federation.TrustDomain) []string {
	out := make([]string, len(tds))
	for i, td := range tds {
		out[i] = td.String()
	}
	return out
}

func TestMessagesSortPathsByNumber(t *testing.T) {
	msgs := []Message{
		{Resource: "b", Path: "spec.http[10]"}, {Resource: "b", Path: "spec.http[2].match[1]"},
		{Resource: "b", Path: "spec.http[2]"}, {Resource: "a", Path: "z"}, {Resource: "b", Path: ""},
	}
	sortMessages(msgs)
	var got []string
	for _, m := range msgs {
		got = append(got, m.Resource+" "+m.Path)
	}
	want := []string{"a z", "b ", "b spec.http[2]", "b spec.http[2].match[1]", "b spec.http[10]"}
	if !slices.Equal(got, want) {
		t.Errorf("order %q, want %q", got, want)
	}
}

// Soundness of MF0008 against the gateway's matcher: in random policies of
// a few routes over a small vocabulary, no request that a reported
// alternative matches is ever routed to its route by policy.Compile's
// MatchHTTP. (It may miss shadowed routes; it must never report a
// reachable one.)
func TestShadowedRoutesAreNeverMatched(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	paths := []string{"/", "/a", "/ab", "/a/b", "/b", "/v1", "/v12", "/api", "/api/x"}
	methods := []string{"GET", "POST"}
	users := []string{"", "bob", "bobby", "al"}
	uris := []*policy.StringMatch{nil, {Exact: "/a"}, {Exact: "/ab"}, {Prefix: "/a"}, {Prefix: "/"}, {Prefix: "/api"}, {Regex: "/a.*"}, {Regex: "/v[0-9]+"}, {Exact: "/v12"}}
	meths := []*policy.StringMatch{nil, {Exact: "GET"}, {Prefix: "PO"}}
	hdrs := []*policy.StringMatch{nil, {Present: true}, {Exact: "bob"}, {Prefix: "bob"}, {Regex: "b.*"}}
	reported := 0
	for n := range 3000 {
		var routes []policy.HTTPRoute
		for range 2 + rng.IntN(3) {
			var r policy.HTTPRoute
			for range rng.IntN(3) {
				m := policy.HTTPMatchRequest{URI: uris[rng.IntN(len(uris))], Method: meths[rng.IntN(len(meths))]}
				if h := hdrs[rng.IntN(len(hdrs))]; h != nil {
					name := []string{"x-user", "X-User"}[rng.IntN(2)]
					m.Headers = map[string]policy.StringMatch{name: *h}
				}
				r.Match = append(r.Match, m)
			}
			routes = append(routes, r)
		}
		p := &policy.GlobalTrafficPolicy{APIVersion: policy.APIVersion, Kind: policy.Kind, Metadata: policy.Metadata{Name: "p"}, Spec: policy.Spec{Host: "a.b", HTTP: routes}}
		c, err := policy.Compile(p)
		if err != nil {
			t.Fatalf("policy %d: %v", n, err)
		}
		a := &analyzer{probes: make(map[string]*policy.Compiled)}
		a.shadowedHTTP("p", routes)
		for _, m := range a.msgs {
			reported++
			var j, k int
			alt := -1
			if _, err := fmt.Sscanf(m.Path, "spec.http[%d].match[%d]", &j, &k); err == nil {
				alt = k
			} else if _, err := fmt.Sscanf(m.Path, "spec.http[%d]", &j); err != nil {
				t.Fatalf("path %q", m.Path)
			}
			for _, path := range paths {
				for _, method := range methods {
					for _, user := range users {
						h := http.Header{}
						if user != "" {
							h.Set("X-User", user)
						}
						// A request the reported alternative (or route) matches...
						one := p.Spec
						one.HTTP = []policy.HTTPRoute{routes[j]}
						if alt >= 0 {
							one.HTTP[0].Match = routes[j].Match[alt : alt+1]
						}
						solo, err := policy.Compile(&policy.GlobalTrafficPolicy{APIVersion: p.APIVersion, Kind: p.Kind, Metadata: p.Metadata, Spec: one})
						if err != nil {
							t.Fatal(err)
						}
						if solo.MatchHTTP(method, path, "h", h) == nil {
							continue
						}
						// ...is taken by an earlier route.
						if r := c.MatchHTTP(method, path, "h", h); r == nil || r.Index() >= j {
							t.Fatalf("policy %d: %s reported shadowed, but %s %s x-user=%q reaches route %v\nroutes: %+v", n, m.Path, method, path, user, r.Index(), routes)
						}
					}
				}
			}
		}
	}
	if reported < 100 {
		t.Errorf("only %d shadowed routes reported in 3000 policies: the test proves little", reported)
	}
	t.Logf("%d shadowed routes or alternatives reported and checked", reported)
}

var readFile = os.ReadFile

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := readFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestListNamesAtMostMaxListed(t *testing.T) {
	var names []string
	for i := range 11 {
		names = append(names, fmt.Sprintf("c%02d", 10-i))
	}
	names = append(names, "c00")
	if got, want := list(names), "c00, c01, c02, c03, c04, c05, c06, c07 and 3 more"; got != want {
		t.Errorf("list = %q, want %q", got, want)
	}
	if got := list(nil); got != "none" {
		t.Errorf("list(nil) = %q", got)
	}
}
