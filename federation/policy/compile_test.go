package policy

import (
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meshfed/meshfed/federation"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// compile decodes spec members (see doc) and compiles the policy.
func compile(t testing.TB, spec string) *Compiled {
	t.Helper()
	p, err := Decode(doc(spec))
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}
	c, err := Compile(p)
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	return c
}

// routeName returns the name of the matched route, "" for none.
func routeName(r *HTTPRule) string {
	if r == nil {
		return ""
	}
	return r.Name()
}

func TestMatchHTTPFirstMatchingRouteWins(t *testing.T) {
	c := compile(t, `"http":[
		{"name":"exact","match":[{"uri":{"exact":"/api/health"}}]},
		{"name":"regex","match":[{"uri":{"regex":"/api/v[0-9]+"}}]},
		{"name":"prefix","match":[{"uri":{"prefix":"/api/"}}]},
		{"name":"post","match":[{"method":{"exact":"POST"}},{"authority":{"prefix":"admin."}}]},
		{"name":"catch-all"}]`)
	tests := []struct {
		method, path, authority, want string
	}{
		{"GET", "/api/health", "reviews", "exact"},
		{"GET", "/api/health/deep", "reviews", "prefix"},
		{"GET", "/api/v2", "reviews", "regex"},
		{"GET", "/api/v2/x", "reviews", "prefix"}, // regexes match the whole path
		{"GET", "/api/v2?debug=1", "reviews", "regex"},
		{"GET", "/api/health?x=/y", "reviews", "exact"},
		{"POST", "/other", "reviews", "post"},
		{"GET", "/other", "admin.reviews:8080", "post"},
		{"GET", "/other", "reviews", "catch-all"},
		{"POST", "/api/health", "reviews", "exact"}, // an earlier route wins
	}
	for _, tt := range tests {
		if got := routeName(c.MatchHTTP(tt.method, tt.path, tt.authority, nil)); got != tt.want {
			t.Errorf("MatchHTTP(%s %s, %s) = %q, want %q", tt.method, tt.path, tt.authority, got, tt.want)
		}
	}
}

func TestMatchHTTPWithoutMatchingRouteIsNil(t *testing.T) {
	c := compile(t, `"http":[{"match":[{"uri":{"prefix":"/a"}}]}]`)
	if r := c.MatchHTTP("GET", "/b", "x", nil); r != nil {
		t.Errorf("MatchHTTP = route %d, want nil", r.Index())
	}
	if r := compile(t, "").MatchHTTP("GET", "/", "x", nil); r != nil {
		t.Errorf("a policy without routes matched route %d", r.Index())
	}
}

func TestMatchHTTPHeaders(t *testing.T) {
	c := compile(t, `"http":[
		{"name":"all","match":[{"headers":{"x-user":{"exact":"alice"},"X-Tenant":{"prefix":"acme-"},"x-trace":{"present":true},"x-version":{"regex":"v[12]"}}}]},
		{"name":"present","match":[{"headers":{"x-canary":{"present":true}}}]}]`)
	base := func() http.Header {
		return http.Header{"X-User": {"alice"}, "X-Tenant": {"acme-eu"}, "X-Trace": {""}, "X-Version": {"v2"}}
	}
	tests := []struct {
		name   string
		mutate func(h http.Header)
		want   string
	}{
		{"all match", func(http.Header) {}, "all"},
		{"exact differs", func(h http.Header) { h["X-User"] = []string{"alice2"} }, ""},
		{"any value matches", func(h http.Header) { h["X-User"] = []string{"bob", "alice"} }, "all"},
		{"prefix differs", func(h http.Header) { h["X-Tenant"] = []string{"acm"} }, ""},
		{"present header missing", func(h http.Header) { delete(h, "X-Trace") }, ""},
		{"regex is anchored", func(h http.Header) { h["X-Version"] = []string{"v22"} }, ""},
		{"required header missing", func(h http.Header) { delete(h, "X-User") }, ""},
		{"only the canary header", func(h http.Header) { clear(h); h["X-Canary"] = []string{"1"} }, "present"},
	}
	for _, tt := range tests {
		h := base()
		tt.mutate(h)
		if got := routeName(c.MatchHTTP("GET", "/", "reviews", h)); got != tt.want {
			t.Errorf("%s: matched %q, want %q", tt.name, got, tt.want)
		}
	}
}

func TestMatchHTTPDoesNotAllocate(t *testing.T) {
	c := compile(t, `"http":[
		{"match":[{"uri":{"regex":"/api/v[0-9]+/.*"},"headers":{"x-user":{"regex":"admin-[0-9]+"}}}]},
		{"match":[{"uri":{"prefix":"/api/"},"method":{"exact":"GET"},"headers":{"x-user":{"exact":"bob"}}}]}]`)
	h := http.Header{"X-User": {"bob"}}
	allocs := testing.AllocsPerRun(1000, func() {
		if c.MatchHTTP("GET", "/api/v1/items?x=1", "reviews", h) == nil {
			t.Fatal("no route matched")
		}
	})
	if allocs != 0 {
		t.Errorf("MatchHTTP allocates %v times per call, want 0", allocs)
	}
}

func TestRewriteReplacesTheMatchedPrefix(t *testing.T) {
	c := compile(t, `"http":[
		{"match":[{"uri":{"prefix":"/v1/"}},{"uri":{"prefix":"/legacy/"}}],"rewrite":{"uri":"/api/v1/"}},
		{"match":[{"uri":{"exact":"/login"}}],"rewrite":{"uri":"/auth/login","authority":"auth.default:8080"}},
		{"match":[{"uri":{"prefix":"/x"}}]}]`)
	tests := []struct {
		in, wantPath, wantAuthority string
	}{
		{"/v1/reviews/1", "/api/v1/reviews/1", "reviews"},
		{"/legacy/reviews?page=2", "/api/v1/reviews?page=2", "reviews"},
		{"/login", "/auth/login", "auth.default:8080"},
		{"/xyz", "/xyz", "reviews"}, // no rewrite
	}
	for _, tt := range tests {
		r := c.MatchHTTP("GET", tt.in, "reviews", nil)
		if r == nil {
			t.Fatalf("%s matched no route", tt.in)
		}
		path, authority := r.Rewrite(tt.in, "reviews")
		if path != tt.wantPath || authority != tt.wantAuthority {
			t.Errorf("Rewrite(%s) = %s, %s; want %s, %s", tt.in, path, authority, tt.wantPath, tt.wantAuthority)
		}
	}
}

func TestPickSplitsByWeightDeterministically(t *testing.T) {
	c := compile(t, `"subsets":[{"name":"v2","labels":{"version":"v2"}}],"http":[
		{"route":[{"destination":{"cluster":"east"},"weight":90},{"destination":{"cluster":"west","subset":"v2"},"weight":10}]},
		{"route":[{"destination":{"cluster":"east"},"weight":0},{"destination":{"cluster":"west"},"weight":100},{"destination":{"cluster":"north"},"weight":0}]},
		{"route":[{"destination":{"subset":"v2"}}]},
		{}]`)
	r := &c.http[0]
	east := WeightedDestination{Cluster: federation.MustClusterName("east"), Weight: 90}
	west := WeightedDestination{Cluster: federation.MustClusterName("west"), Subset: "v2", Weight: 10}
	if got := r.Destinations(); !reflect.DeepEqual(got, []WeightedDestination{east, west}) {
		t.Errorf("Destinations = %+v", got)
	}
	for x, want := range map[float64]WeightedDestination{0: east, 0.5: east, 0.8999: east, 0.9: west, 0.99999: west, -1: east, 1: west} {
		if got := r.Pick(x); got != want {
			t.Errorf("Pick(%v) = %+v, want %+v", x, got, want)
		}
	}
	// Evenly spaced draws split exactly 90/10.
	counts := map[string]int{}
	const n = 10000
	for i := range n {
		counts[r.Pick(float64(i)/n).Cluster.String()]++
	}
	if counts["east"] != 9000 || counts["west"] != 1000 {
		t.Errorf("over %d evenly spaced draws: %v, want east 9000, west 1000", n, counts)
	}
	// Zero weights are never picked.
	for i := range 100 {
		if got := c.http[1].Pick(float64(i) / 100).Cluster.String(); got != "west" {
			t.Fatalf("Pick(%v) = %s, want west (the only non-zero weight)", float64(i)/100, got)
		}
	}
	// A lone destination takes everything; no destination is the service.
	if got := c.http[2].Pick(0.99); got != (WeightedDestination{Subset: "v2", Weight: 100}) {
		t.Errorf("lone destination Pick = %+v", got)
	}
	if got := c.http[3].Pick(0.5); got != (WeightedDestination{Weight: 100}) {
		t.Errorf("route without destinations Pick = %+v, want the service as a whole", got)
	}
}

func TestRetryOnConditions(t *testing.T) {
	c := compile(t, `"http":[
		{"retries":{"attempts":3,"perTryTimeout":"2s","retryOn":"gateway-error,reset,429"}},
		{"retries":{"attempts":2,"retryOn":"5xx"}},
		{"retries":{"attempts":1}},
		{"retries":{"attempts":0,"retryOn":"5xx"}}]`)
	type conds struct {
		statuses                      []int
		reset, connect, refusedStream bool
	}
	tests := []struct {
		route    int
		attempts int
		perTry   time.Duration
		want     conds
	}{
		{0, 3, 2 * time.Second, conds{[]int{429, 502, 503, 504}, true, true, false}},
		{1, 2, 0, conds{[]int{500, 501, 502, 503, 504, 505, 599}, true, true, true}},
		{2, 1, 0, conds{[]int{503}, false, true, true}}, // DefaultRetryOn
	}
	for _, tt := range tests {
		rp := c.http[tt.route].Retries()
		if rp == nil {
			t.Fatalf("route %d: no retries", tt.route)
		}
		if rp.Attempts() != tt.attempts || rp.PerTryTimeout() != tt.perTry {
			t.Errorf("route %d: attempts %d, perTryTimeout %v", tt.route, rp.Attempts(), rp.PerTryTimeout())
		}
		var statuses []int
		for code := 100; code < 700; code++ {
			if rp.OnStatus(code) {
				statuses = append(statuses, code)
			}
		}
		if tt.route == 1 {
			statuses = []int{statuses[0], statuses[1], statuses[2], statuses[3], statuses[4], statuses[5], statuses[len(statuses)-1]}
			if n := len(statuses); n != 7 {
				t.Errorf("5xx: %d statuses", n)
			}
		}
		got := conds{statuses, rp.OnReset(), rp.OnConnectFailure(), rp.OnRefusedStream()}
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("route %d: %+v, want %+v", tt.route, got, tt.want)
		}
	}
	if rp := c.http[3].Retries(); rp != nil {
		t.Errorf("attempts 0 retries: %+v", rp)
	}
}

func TestFaultAppliesToItsPercentage(t *testing.T) {
	c := compile(t, `"http":[{"fault":{"delay":{"fixedDelay":"250ms","percentage":{"value":25}},"abort":{"httpStatus":503,"percentage":{"value":12.5}}}},
		{"fault":{"abort":{"httpStatus":500,"percentage":{"value":0}}}},
		{"fault":{"abort":{"httpStatus":418,"percentage":{"value":100}}}}]`)
	f := c.http[0].Fault()
	delays, aborts := 0, 0
	for i := range 1000 {
		x := float64(i) / 1000
		if d, ok := f.Delay(x); ok {
			if d != 250*time.Millisecond {
				t.Fatalf("Delay = %v", d)
			}
			delays++
		}
		if s, ok := f.Abort(x); ok {
			if s != 503 {
				t.Fatalf("Abort = %d", s)
			}
			aborts++
		}
	}
	if delays != 250 || aborts != 125 {
		t.Errorf("over 1000 evenly spaced draws: %d delays, %d aborts; want 250, 125", delays, aborts)
	}
	for i := range 100 {
		x := float64(i) / 100
		if _, ok := c.http[1].Fault().Abort(x); ok {
			t.Fatalf("0%% abort fired at x=%v", x)
		}
		if s, ok := c.http[2].Fault().Abort(x); !ok || s != 418 {
			t.Fatalf("100%% abort did not fire at x=%v", x)
		}
		if _, ok := c.http[2].Fault().Delay(x); ok {
			t.Fatalf("a fault without delay delayed")
		}
	}
	if c.http[0].Timeout() != 0 || (compile(t, `"http":[{"timeout":"1.5s"}]`).http[0].Timeout() != 1500*time.Millisecond) {
		t.Error("Timeout is wrong")
	}
}

func TestHeaderOpsApplyRemoveSetAdd(t *testing.T) {
	c := compile(t, `"http":[{"headers":{
		"request":{"remove":["x-debug","X-Set"],"set":{"x-set":"new","x-route":"api"},"add":{"x-set":"extra","via":"meshfed"}},
		"response":{"remove":["server"]}}}]`)
	r := c.http[0]
	h := http.Header{"X-Debug": {"1"}, "X-Set": {"old1", "old2"}, "Via": {"proxy"}, "Keep": {"k"}}
	r.RequestHeaders().Apply(h)
	want := http.Header{"X-Set": {"new", "extra"}, "X-Route": {"api"}, "Via": {"proxy", "meshfed"}, "Keep": {"k"}}
	if !reflect.DeepEqual(h, want) {
		t.Errorf("request headers = %v, want %v", h, want)
	}
	resp := http.Header{"Server": {"envoy"}, "Content-Type": {"text/plain"}}
	r.ResponseHeaders().Apply(resp)
	if !reflect.DeepEqual(resp, http.Header{"Content-Type": {"text/plain"}}) {
		t.Errorf("response headers = %v", resp)
	}
	var none *HeaderOps
	none.Apply(resp) // a nil *HeaderOps does nothing
}

func TestAuthorize(t *testing.T) {
	td := func(s string) spiffeid.TrustDomain { return spiffeid.RequireTrustDomainFromString(s) }
	east, west, north := federation.MustClusterName("east"), federation.MustClusterName("west"), federation.MustClusterName("north")
	strict := compile(t, `"authorization":{"denyByDefault":true,
		"allow":[{"clusters":["east"]},{"trustDomains":["partner.example.org"],"serviceAccounts":["shop/checkout","ops/*"]}],
		"deny":[{"clusters":["east"],"serviceAccounts":["default/untrusted"]}]}`)
	open := compile(t, `"authorization":{"deny":[{"trustDomains":["evil.example.org"]}]}`)
	tests := []struct {
		name       string
		c          *Compiled
		src        Source
		allowed    bool
		wantReason string
	}{
		{"allowed cluster", strict, Source{Cluster: east, TrustDomain: td("east.meshfed.local")}, true, "allowed by spec.authorization.allow[0]"},
		{"deny beats allow", strict, Source{Cluster: east, ServiceAccount: "default/untrusted"}, false, "denied by spec.authorization.deny[0]"},
		{"trust domain and account", strict, Source{Cluster: west, TrustDomain: td("partner.example.org"), ServiceAccount: "shop/checkout"}, true, "allowed by spec.authorization.allow[1]"},
		{"namespace wildcard", strict, Source{Cluster: west, TrustDomain: td("partner.example.org"), ServiceAccount: "ops/anything"}, true, "allowed by spec.authorization.allow[1]"},
		{"account from another trust domain", strict, Source{Cluster: west, TrustDomain: td("west.meshfed.local"), ServiceAccount: "shop/checkout"}, false, ReasonDenyByDefault},
		{"unknown account never matches a rule naming accounts", strict, Source{Cluster: west, TrustDomain: td("partner.example.org")}, false, ReasonDenyByDefault},
		{"other cluster denied by default", strict, Source{Cluster: north}, false, ReasonDenyByDefault},
		{"open policy allows by default", open, Source{Cluster: north, TrustDomain: td("north.meshfed.local")}, true, ReasonAllowByDefault},
		{"open policy deny rule", open, Source{Cluster: north, TrustDomain: td("evil.example.org")}, false, "denied by spec.authorization.deny[0]"},
		{"no authorization", compile(t, ""), Source{}, true, ReasonNoAuthorization},
	}
	for _, tt := range tests {
		allowed, reason := tt.c.Authorize(tt.src)
		if allowed != tt.allowed || reason != tt.wantReason {
			t.Errorf("%s: Authorize = %v, %q; want %v, %q", tt.name, allowed, reason, tt.allowed, tt.wantReason)
		}
	}
	allocs := testing.AllocsPerRun(100, func() {
		strict.Authorize(Source{Cluster: west, TrustDomain: td("partner.example.org"), ServiceAccount: "ops/x"})
	})
	if allocs != 0 {
		t.Errorf("Authorize allocates %v times", allocs)
	}
}

func TestSubsetsLocalityOutlierAndPool(t *testing.T) {
	c := compile(t, `"subsets":[{"name":"v2","labels":{"version":"v2","track":"canary"}}],
		"localityLbSetting":{"distribute":[{"from":"us-east1/*","to":{"us-east1/*":80,"us-west1":20}},{"from":"*","to":{"us-west1/b":100}}],
			"failoverPriority":["topology.kubernetes.io/region","meshfed.io/cluster"],"excludeClusters":["legacy"]},
		"outlierDetection":{"consecutiveErrors":3,"maxEjectionPercent":0},
		"connectionPool":{"tcp":{"maxConnections":10},"http":{"idleTimeout":"90s"}},
		"tcp":[{"match":[{"port":5432}],"route":[{"destination":{"cluster":"east"},"weight":70},{"destination":{"cluster":"west"},"weight":30}]},{"route":[{"destination":{"subset":"v2"}}]}]`)
	s, ok := c.Subset("v2")
	if !ok || s.Name() != "v2" {
		t.Fatal("subset v2 missing")
	}
	if !s.Matches(map[string]string{"version": "v2", "track": "canary", "app": "reviews"}) || s.Matches(map[string]string{"version": "v2"}) || s.Matches(map[string]string{"version": "v1", "track": "canary"}) {
		t.Error("subset v2 matches the wrong endpoints")
	}
	s.Labels()["version"] = "changed" // a copy
	if !s.Matches(map[string]string{"version": "v2", "track": "canary"}) {
		t.Error("Labels returned the subset's own map")
	}
	if _, ok := c.Subset("v9"); ok {
		t.Error("unknown subset found")
	}

	l := c.Locality()
	if !l.Enabled() || !l.Excluded(federation.MustClusterName("legacy")) || l.Excluded(federation.MustClusterName("east")) {
		t.Error("Enabled or Excluded is wrong")
	}
	if got := l.FailoverPriority(); !reflect.DeepEqual(got, []string{LabelRegion, LabelCluster}) {
		t.Errorf("FailoverPriority = %q", got)
	}
	from, _ := federation.ParseLocality("us-east1/b")
	w, ok := l.Distribution(from)
	if !ok || len(w) != 2 || w[0].Pattern.String() != "us-east1/*" || w[0].Weight != 80 || w[1].Pattern.String() != "us-west1" || w[1].Weight != 20 {
		t.Fatalf("Distribution(us-east1/b) = %+v", w)
	}
	west, _ := federation.ParseLocality("us-west1/a/x")
	if !w[1].Pattern.Matches(west) || w[0].Pattern.Matches(west) {
		t.Error("locality patterns match wrongly")
	}
	other, _ := federation.ParseLocality("eu-west1")
	if w, ok := l.Distribution(other); !ok || w[0].Pattern.String() != "us-west1/b" {
		t.Errorf("the \"*\" rule did not apply: %+v", w)
	}
	if _, ok := compile(t, `"localityLbSetting":{"failover":[{"from":"us-east1","to":"us-west1"}]}`).Locality().FailoverTarget("us-east1"); !ok {
		t.Error("FailoverTarget(us-east1) not found")
	}

	od, ok := c.OutlierDetection()
	want := OutlierPolicy{ConsecutiveErrors: 3, Interval: DefaultInterval, BaseEjectionTime: DefaultBaseEjectionTime, MaxEjectionPercent: 0, MinHealthPercent: 0}
	if !ok || od != want {
		t.Errorf("OutlierDetection = %+v, want %+v", od, want)
	}
	if _, ok := compile(t, "").OutlierDetection(); ok {
		t.Error("outlier detection without outlierDetection")
	}
	if p := c.ConnectionPool(); p != (PoolLimits{MaxConnections: 10, IdleTimeout: 90 * time.Second}) {
		t.Errorf("ConnectionPool = %+v", p)
	}

	if r := c.MatchTCP(5432); r == nil || r.Index() != 0 || r.Pick(0.75).Cluster.String() != "west" {
		t.Errorf("MatchTCP(5432) = %+v", r)
	}
	if r := c.MatchTCP(80); r == nil || r.Index() != 1 || r.Destinations()[0].Subset != "v2" {
		t.Errorf("MatchTCP(80) = %+v", r)
	}
}

func TestCompileRefusesAnInvalidPolicy(t *testing.T) {
	p := fullPolicy()
	p.Spec.HTTP[0].Match[0].URI.Regex = "(" // also sets a second matcher
	p.Spec.HTTP[0].Match[0].URI.Prefix = ""
	_, err := Compile(p)
	var fe *FieldError
	if !errors.As(err, &fe) || fe.Path != "spec.http[0].match[0].uri.regex" {
		t.Fatalf("Compile error = %v, want one on the regex", err)
	}
	if _, err := Compile(fullPolicy()); err != nil {
		t.Fatalf("Compile(fullPolicy()): %v", err)
	}
}

// benchPolicy has n HTTP routes, each matching a method, a path prefix and
// a header; the request of BenchmarkMatchHTTP matches only the last.
func benchPolicy(b *testing.B, n int, regex bool) *Compiled {
	var routes []string
	for i := range n {
		uri := fmt.Sprintf(`{"prefix":"/api/v%d/"}`, i)
		if regex {
			uri = fmt.Sprintf(`{"regex":"/api/v%d/[a-z]+/[0-9]+"}`, i)
		}
		routes = append(routes, fmt.Sprintf(`{"match":[{"method":{"exact":"GET"},"uri":%s,"headers":{"x-tenant":{"exact":"tenant-%d"}}}],"route":[{"destination":{"cluster":"east"},"weight":90},{"destination":{"cluster":"west"},"weight":10}]}`, uri, i))
	}
	return compile(b, `"http":[`+strings.Join(routes, ",")+`]`)
}

// BenchmarkMatchHTTP measures MatchHTTP for a request that matches the
// last of 1, 10 and 100 routes (prefix matches, and regex matches).
func BenchmarkMatchHTTP(b *testing.B) {
	for _, kind := range []string{"prefix", "regex"} {
		for _, n := range []int{1, 10, 100} {
			b.Run(kind+"/routes="+strconv.Itoa(n), func(b *testing.B) {
				c := benchPolicy(b, n, kind == "regex")
				path := fmt.Sprintf("/api/v%d/reviews/42", n-1)
				h := http.Header{"X-Tenant": {fmt.Sprintf("tenant-%d", n-1)}, "Accept": {"*/*"}, "User-Agent": {"bench"}}
				b.ReportAllocs()
				for b.Loop() {
					if c.MatchHTTP("GET", path, "reviews.default", h) == nil {
						b.Fatal("no route matched")
					}
				}
			})
		}
	}
}
