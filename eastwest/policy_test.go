package eastwest

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshfed/meshfed/federation"
	"github.com/meshfed/meshfed/federation/policy"
	fedv1 "github.com/meshfed/meshfed/federation/v1"
	"github.com/meshfed/meshfed/gateway/gatewayclient"
)

// Traffic policies, enforced by real gateways over QUIC and mTLS: a
// caller cluster ("east", which imports default/web) and exporting
// clusters, each with its own HTTP servers.

// trafficPolicy decodes a policy document (JSON) as the agent would
// stream it, at revision rev.
func trafficPolicy(t testing.TB, doc string, rev uint64) *fedv1.TrafficPolicy {
	t.Helper()
	p, err := policy.Decode([]byte(doc))
	if err != nil {
		t.Fatalf("policy: %v", err)
	}
	m, err := policy.ToProto(p)
	if err != nil {
		t.Fatal(err)
	}
	m.CreateRevision, m.ModifyRevision = 1, rev
	return m
}

// policyRig is east (the caller) and exporters of default/web.
type policyRig struct {
	t        testing.TB
	east     *cluster
	eastGW   *gw
	exp      map[string]*gw      // exporter name → its gateway
	clusters map[string]*cluster // every cluster by name
	states   map[string]func(...*fedv1.TrafficPolicy) *gatewayclient.State
	egress   uint16
	sp       gatewayclient.ServicePort
}

// exporter is one exporting cluster: its locality and its endpoints'
// handlers with their labels.
type exporter struct {
	name, region, zone string
	endpoints          []endpointSpec
}

type endpointSpec struct {
	labels  map[string]string
	handler http.Handler // nil: answers "<cluster> <path>"
}

func startPolicyRig(t testing.TB, exporters ...exporter) *policyRig {
	t.Helper()
	r := &policyRig{t: t, exp: map[string]*gw{}, clusters: map[string]*cluster{},
		states: map[string]func(...*fedv1.TrafficPolicy) *gatewayclient.State{}, sp: port("http", 8080, "HTTP")}
	r.east = newCluster(t, "east", "us-east", "us-east-1a")
	r.clusters["east"] = r.east
	var all []*cluster
	for _, e := range exporters {
		c := newCluster(t, e.name, e.region, e.zone)
		r.clusters[e.name] = c
		all = append(all, c)
	}
	// Every exporter's local service, its gateway started.
	var remotes []remote
	for i, e := range exporters {
		c := all[i]
		ls := &gatewayclient.LocalService{Service: federation.MustServiceKey("default/web"), Ports: []gatewayclient.ServicePort{r.sp}}
		for _, es := range e.endpoints {
			h := es.handler
			name := e.name
			if h == nil {
				h = http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
					w.Header().Set("X-Seen-Authority", req.Host)
					w.Header().Set("X-Seen-Headers", req.Header.Get("X-Added"))
					_, _ = fmt.Fprintf(w, "%s %s", name, req.URL.Path)
				})
			}
			ep, _ := httpHandlerServer(t, h)
			ls.Endpoints = append(ls.Endpoints, gatewayclient.Endpoint{Addr: ep.Addr(), Ports: map[string]uint16{"http": ep.Port()},
				Labels: es.labels, Ready: true, Serving: true})
		}
		others := []*cluster{r.east}
		for j, o := range all {
			if j != i {
				others = append(others, o)
			}
		}
		peers := []remote{{c: r.east}}
		st := func(ps ...*fedv1.TrafficPolicy) *gatewayclient.State {
			s := newState(c, nil, []*gatewayclient.LocalService{ls}, peers...)
			addPolicies(s, ps...)
			return s
		}
		r.states[e.name] = st
		w := startGateway(t, c, st(), nil, others...)
		r.exp[e.name] = w
		remotes = append(remotes, remote{c: c, gws: []string{w.addr}, ready: uint32(len(e.endpoints))})
	}
	r.egress = freePort(t)
	im := importOf("default/web", r.sp, r.egress, remotes...)
	for i, e := range exporters {
		var groups []gatewayclient.EndpointGroup
		for _, es := range e.endpoints {
			groups = append(groups, gatewayclient.EndpointGroup{Zone: e.zone, Labels: es.labels, Ready: 1, Serving: 1})
		}
		im.Clusters[i].Groups = groups
	}
	r.states["east"] = func(ps ...*fedv1.TrafficPolicy) *gatewayclient.State {
		s := newState(r.east, []*gatewayclient.Import{im}, nil, remotes...)
		addPolicies(s, ps...)
		return s
	}
	r.eastGW = startGateway(t, r.east, r.states["east"](), nil, all...)
	waitFor(t, 5*time.Second, func() error {
		for _, c := range all {
			if !r.eastGW.g.clusterUp(c.name) {
				return fmt.Errorf("%s not up", c.name)
			}
		}
		return nil
	})
	return r
}

func addPolicies(s *gatewayclient.State, ps ...*fedv1.TrafficPolicy) {
	s.Policies = map[string]*fedv1.TrafficPolicy{}
	for _, p := range ps {
		s.Policies[p.GetName()] = p
	}
}

// apply gives every gateway the policies (a new config revision) and
// waits until each has applied it.
func (r *policyRig) apply(ps ...*fedv1.TrafficPolicy) {
	r.t.Helper()
	want := map[*gw]uint64{}
	set := func(w *gw, st *gatewayclient.State) {
		st.Revision = w.g.lastApplied.Load() + 1
		want[w] = st.Revision
		w.src.set(st)
	}
	for name, w := range r.exp {
		set(w, r.states[name](ps...))
	}
	set(r.eastGW, r.states["east"](ps...))
	waitFor(r.t, 5*time.Second, func() error {
		for w, rev := range want {
			if got := w.g.lastApplied.Load(); got < rev {
				return fmt.Errorf("%s applied revision %d, want %d", w.c.name, got, rev)
			}
		}
		return nil
	})
}

// kill stops an exporter's gateway as SIGKILL would.
func (r *policyRig) kill(name string) {
	r.exp[name].kill()
	delete(r.exp, name)
}

var policyClient = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}, Timeout: 10 * time.Second}

// get sends one request to east's egress port.
func (r *policyRig) get(path string, h map[string]string) (int, string, http.Header) {
	r.t.Helper()
	req, err := http.NewRequest(http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d%s", r.egress, path), nil)
	if err != nil {
		r.t.Fatal(err)
	}
	for k, v := range h {
		req.Header.Set(k, v)
	}
	resp, err := policyClient.Do(req)
	if err != nil {
		r.t.Fatalf("GET %s: %v", path, err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		r.t.Fatal(err)
	}
	return resp.StatusCode, string(b), resp.Header
}

func plainExporter(name, region, zone string) exporter {
	return exporter{name: name, region: region, zone: zone, endpoints: []endpointSpec{{}}}
}

func TestPolicyWeightedSplitByCluster(t *testing.T) {
	r := startPolicyRig(t, plainExporter("west", "us-west", "us-west-1a"), plainExporter("north", "us-north", "us-north-1a"))
	r.apply(trafficPolicy(t, `{"apiVersion":"meshfed.io/v1alpha1","kind":"GlobalTrafficPolicy","metadata":{"name":"web"},
		"spec":{"host":"web.default","http":[{"route":[{"destination":{"cluster":"west"},"weight":90},{"destination":{"cluster":"north"},"weight":10}]}]}}`, 2))
	const n = 2000
	count := map[string]int{}
	for range n {
		code, body, _ := r.get("/x", nil)
		if code != http.StatusOK {
			t.Fatalf("status %d: %s", code, body)
		}
		count[strings.Fields(body)[0]]++
	}
	// Binomial(2000, 0.1): sd 13.4; 5 sd either side.
	if north := count["north"]; north < 133 || north > 267 || count["west"]+north != n {
		t.Fatalf("answers %v over %d requests, want north 200 ± 67 (10%%), the rest west", count, n)
	}
	t.Logf("90/10 over %d requests: %v", n, count)
}

func TestPolicyPrefixMatchRewriteAndHeaders(t *testing.T) {
	r := startPolicyRig(t, plainExporter("west", "us-west", "us-west-1a"))
	r.apply(trafficPolicy(t, `{"apiVersion":"meshfed.io/v1alpha1","kind":"GlobalTrafficPolicy","metadata":{"name":"web"},
		"spec":{"host":"web.default","http":[
			{"match":[{"uri":{"prefix":"/api/v1/"}}],"rewrite":{"uri":"/v2/","authority":"web.internal"},
			 "headers":{"request":{"set":{"X-Added":"yes"}},"response":{"set":{"X-Policy":"web"},"remove":["X-Seen-Headers"]}}},
			{"match":[{"uri":{"exact":"/old"}}],"rewrite":{"uri":"/new"}}]}}`, 2))
	code, body, h := r.get("/api/v1/items?q=1", nil)
	if code != http.StatusOK || body != "west /v2/items" {
		t.Fatalf("prefix route: %d %q, want 200 \"west /v2/items\" (the prefix rewritten)", code, body)
	}
	if h.Get("X-Seen-Authority") != "web.internal" || h.Get("X-Policy") != "web" {
		t.Errorf("authority seen %q, response header X-Policy %q", h.Get("X-Seen-Authority"), h.Get("X-Policy"))
	}
	if _, ok := h["X-Seen-Headers"]; ok {
		t.Errorf("the response header the policy removes arrived: %v", h)
	}
	if code, body, _ := r.get("/old", nil); code != http.StatusOK || body != "west /new" {
		t.Errorf("exact route: %d %q", code, body)
	}
	if code, body, _ := r.get("/other", nil); code != http.StatusOK || body != "west /other" {
		t.Errorf("no route matches: %d %q, want the request unchanged", code, body)
	}
}

// flaky fails every other request with 500, as a backend with an injected
// 50% abort would.
func flaky(name string) http.Handler {
	var n atomic.Int64
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if n.Add(1)%2 == 1 {
			http.Error(w, "injected abort", http.StatusInternalServerError)
			return
		}
		_, _ = fmt.Fprintf(w, "%s %s", name, req.URL.Path)
	})
}

func TestPolicyRetriesHideA50PercentAbort(t *testing.T) {
	r := startPolicyRig(t, exporter{name: "west", region: "us-west", zone: "us-west-1a", endpoints: []endpointSpec{{handler: flaky("west")}}})
	// Without a policy a 500 reaches the caller (only 503s are retried).
	fails := 0
	for range 20 {
		if code, _, _ := r.get("/a", nil); code == http.StatusInternalServerError {
			fails++
		}
	}
	if fails != 10 {
		t.Fatalf("without retries %d of 20 requests failed, want 10", fails)
	}
	r.apply(trafficPolicy(t, `{"apiVersion":"meshfed.io/v1alpha1","kind":"GlobalTrafficPolicy","metadata":{"name":"web"},
		"spec":{"host":"web.default","http":[{"retries":{"attempts":3,"perTryTimeout":"2s","retryOn":"5xx"}}]}}`, 2))
	for i := range 200 {
		if code, body, _ := r.get("/a", nil); code != http.StatusOK {
			t.Fatalf("request %d with retries: %d %q", i, code, body)
		}
	}
}

func TestPolicyTimeoutFires(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	slow := http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		select {
		case <-release:
		case <-req.Context().Done():
		}
	})
	r := startPolicyRig(t, exporter{name: "west", region: "us-west", zone: "us-west-1a", endpoints: []endpointSpec{{handler: slow}}})
	r.apply(trafficPolicy(t, `{"apiVersion":"meshfed.io/v1alpha1","kind":"GlobalTrafficPolicy","metadata":{"name":"web"},
		"spec":{"host":"web.default","http":[{"timeout":"300ms"}]}}`, 2))
	start := time.Now()
	code, body, _ := r.get("/slow", nil)
	took := time.Since(start)
	if code != http.StatusGatewayTimeout || !strings.Contains(body, "timeout") {
		t.Fatalf("%d %q, want 504 upstream request timeout", code, body)
	}
	if took < 300*time.Millisecond {
		t.Errorf("answered after %v, before the 300ms timeout", took)
	}
	t.Logf("504 after %v", took)
}

func TestPolicyFailoverInTheDeclaredOrder(t *testing.T) {
	// From us-east, west (us-west) and eu (eu-west) are both other regions:
	// without a policy they share the traffic. The policy says us-east
	// fails over to eu-west: all of it goes to eu, and to west once eu
	// is gone.
	r := startPolicyRig(t, plainExporter("west", "us-west", "us-west-1a"), plainExporter("eu", "eu-west", "eu-west-1a"))
	count := map[string]int{}
	for range 200 {
		_, body, _ := r.get("/", nil)
		count[strings.Fields(body)[0]]++
	}
	if count["west"] < 40 || count["eu"] < 40 {
		t.Fatalf("without a policy %v, want both clusters to share the traffic", count)
	}
	r.apply(trafficPolicy(t, `{"apiVersion":"meshfed.io/v1alpha1","kind":"GlobalTrafficPolicy","metadata":{"name":"web"},
		"spec":{"host":"web.default","localityLbSetting":{"failover":[{"from":"us-east","to":"eu-west"}]}}}`, 2))
	for i := range 200 {
		if _, body, _ := r.get("/", nil); !strings.HasPrefix(body, "eu ") {
			t.Fatalf("request %d went to %q, want eu (the declared failover region)", i, body)
		}
	}
	r.kill("eu")
	for i := range 100 {
		if code, body, _ := r.get("/", nil); code != http.StatusOK || !strings.HasPrefix(body, "west ") {
			t.Fatalf("request %d after eu died: %d %q, want west", i, code, body)
		}
	}
}

func TestPolicyAuthorizationDeniesAtTheReceivingGateway(t *testing.T) {
	r := startPolicyRig(t, plainExporter("west", "us-west", "us-west-1a"))
	deny := trafficPolicy(t, `{"apiVersion":"meshfed.io/v1alpha1","kind":"GlobalTrafficPolicy","metadata":{"name":"web"},
		"spec":{"host":"web.default","authorization":{"denyByDefault":true,"allow":[{"clusters":["north"]}]}}}`, 2)
	// Only the receiving gateway holds the policy: the refusal is its own.
	st := r.states["west"](deny)
	st.Revision = 2
	r.exp["west"].src.set(st)
	waitFor(t, 5*time.Second, func() error {
		if len(r.exp["west"].g.Policies()) != 1 {
			return fmt.Errorf("west has no policy yet")
		}
		return nil
	})
	code, body, _ := r.get("/", nil)
	if code != http.StatusForbidden || !strings.Contains(body, "denied by default") {
		t.Fatalf("%d %q, want 403 saying why", code, body)
	}
	allow := trafficPolicy(t, `{"apiVersion":"meshfed.io/v1alpha1","kind":"GlobalTrafficPolicy","metadata":{"name":"web"},
		"spec":{"host":"web.default","authorization":{"denyByDefault":true,"allow":[{"clusters":["east"]}]}}}`, 3)
	st = r.states["west"](allow)
	st.Revision = 3
	r.exp["west"].src.set(st)
	waitFor(t, 5*time.Second, func() error {
		if code, body, _ := r.get("/", nil); code != http.StatusOK {
			return fmt.Errorf("allowed caller: %d %q", code, body)
		}
		return nil
	})
	// A deny applies to the streams already open: east's pooled stream to
	// west is cut, and the next request is refused.
	st = r.states["west"](deny)
	st.Revision = 4
	r.exp["west"].src.set(st)
	waitFor(t, 5*time.Second, func() error {
		if p := r.exp["west"].g.Policies(); len(p) != 1 || p[0].Revision != 2 {
			return fmt.Errorf("west's policies %+v", p)
		}
		return nil
	})
	if code, body, _ := r.get("/", nil); code != http.StatusForbidden {
		t.Fatalf("after the deny, on a pooled stream: %d %q, want 403", code, body)
	}
}

func TestPolicySubsetReachesOnlyLabelledEndpoints(t *testing.T) {
	r := startPolicyRig(t, exporter{name: "west", region: "us-west", zone: "us-west-1a", endpoints: []endpointSpec{
		{labels: map[string]string{"version": "v1"}, handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "v1") })},
		{labels: map[string]string{"version": "v2"}, handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "v2") })},
	}})
	r.apply(trafficPolicy(t, `{"apiVersion":"meshfed.io/v1alpha1","kind":"GlobalTrafficPolicy","metadata":{"name":"web"},
		"spec":{"host":"web.default","subsets":[{"name":"v1","labels":{"version":"v1"}},{"name":"v2","labels":{"version":"v2"}}],
		"http":[{"match":[{"headers":{"X-Canary":{"exact":"1"}}}],"route":[{"destination":{"subset":"v2"}}]},
		        {"route":[{"destination":{"subset":"v1"}}]}]}}`, 2))
	for i := range 50 {
		if _, body, _ := r.get("/", map[string]string{"X-Canary": "1"}); body != "v2" {
			t.Fatalf("canary request %d reached %q, want the v2 subset", i, body)
		}
		if _, body, _ := r.get("/", nil); body != "v1" {
			t.Fatalf("request %d reached %q, want the v1 subset", i, body)
		}
	}
}

func TestPolicyConnectionPoolOverflowIs503(t *testing.T) {
	hold := make(chan struct{})
	entered := make(chan struct{}, 8)
	slow := http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		entered <- struct{}{}
		<-hold
		_, _ = io.WriteString(w, "done")
	})
	r := startPolicyRig(t, exporter{name: "west", region: "us-west", zone: "us-west-1a", endpoints: []endpointSpec{{handler: slow}}})
	r.apply(trafficPolicy(t, `{"apiVersion":"meshfed.io/v1alpha1","kind":"GlobalTrafficPolicy","metadata":{"name":"web"},
		"spec":{"host":"web.default","connectionPool":{"tcp":{"maxConnections":1},"http":{"http1MaxPendingRequests":1}}}}`, 2))
	codes := make(chan int, 3)
	for range 2 {
		go func() { code, _, _ := r.get("/", nil); codes <- code }()
	}
	<-entered // one in flight; the other waits as the one pending request
	waitFor(t, 5*time.Second, func() error {
		if n := r.eastGW.g.table.Load().routes[federation.MustServiceKey("default/web")].pol.state.pending.Load(); n != 1 {
			return fmt.Errorf("%d pending, want 1", n)
		}
		return nil
	})
	code, body, h := r.get("/", nil)
	if code != http.StatusServiceUnavailable || h.Get("X-Meshfed-Overflow") != "true" {
		t.Fatalf("a third request: %d %q, want 503 with X-Meshfed-Overflow", code, body)
	}
	close(hold)
	for range 2 {
		if c := <-codes; c != http.StatusOK {
			t.Errorf("a request within the limits: %d", c)
		}
	}
}

// A revision that does not compile is rejected and reported; the last good
// one stays in force.
func TestPolicyRejectedRevisionKeepsTheLastGood(t *testing.T) {
	r := startPolicyRig(t, plainExporter("west", "us-west", "us-west-1a"))
	good := trafficPolicy(t, `{"apiVersion":"meshfed.io/v1alpha1","kind":"GlobalTrafficPolicy","metadata":{"name":"web"},
		"spec":{"host":"web.default","http":[{"match":[{"uri":{"prefix":"/a/"}}],"rewrite":{"uri":"/b/"}}]}}`, 2)
	r.apply(good)
	if _, body, _ := r.get("/a/x", nil); body != "west /b/x" {
		t.Fatalf("good policy: %q", body)
	}
	var doc map[string]any
	if err := json.Unmarshal(good.GetSpec(), &doc); err != nil {
		t.Fatal(err)
	}
	doc["spec"].(map[string]any)["bogus"] = true
	bad, _ := json.Marshal(doc)
	badMsg := &fedv1.TrafficPolicy{Name: "web", Service: "default/web", Spec: bad, CreateRevision: 1, ModifyRevision: 3}
	r.apply(badMsg)
	st := r.eastGW.g.Policies()
	if len(st) != 1 || st[0].Revision != 2 || st[0].RejectedRevision != 3 || !strings.Contains(st[0].Error, "spec.bogus") {
		t.Fatalf("policy status %+v, want revision 2 in force and 3 rejected naming spec.bogus", st)
	}
	if _, body, _ := r.get("/a/x", nil); body != "west /b/x" {
		t.Fatalf("after the rejected revision: %q, want the last good policy still in force", body)
	}
	// /policies and the metrics say the same.
	rec := httptest.NewRecorder()
	r.eastGW.g.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/policies", nil))
	if body := rec.Body.String(); !strings.Contains(body, `"name":"web","service":"default/web","revision":2,"rejectedRevision":3,"error":`) {
		t.Errorf("/policies: %s", body)
	}
	rec = httptest.NewRecorder()
	r.eastGW.g.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	for _, want := range []string{`meshfed_gateway_policy_revision{policy="web"} 2`, `meshfed_gateway_policy_rejections_total{policy="web"} 1`} {
		if !strings.Contains(rec.Body.String(), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

func TestPolicyExcludeClustersAndDistribute(t *testing.T) {
	r := startPolicyRig(t, plainExporter("west", "us-west", "us-west-1a"), plainExporter("north", "us-north", "us-north-1a"),
		plainExporter("south", "us-south", "us-south-1a"))
	r.apply(trafficPolicy(t, `{"apiVersion":"meshfed.io/v1alpha1","kind":"GlobalTrafficPolicy","metadata":{"name":"web"},
		"spec":{"host":"web.default","localityLbSetting":{"excludeClusters":["west","north"]}}}`, 2))
	for i := range 100 {
		if _, body, _ := r.get("/", nil); !strings.HasPrefix(body, "south ") {
			t.Fatalf("request %d reached %q; west and north are excluded", i, body)
		}
	}
	// Excluded clusters stay excluded when the only one left dies.
	r.kill("south")
	if code, body, _ := r.get("/", nil); code != http.StatusServiceUnavailable {
		t.Fatalf("with south dead: %d %q, want 503 (never to an excluded cluster)", code, body)
	}
	r.apply(trafficPolicy(t, `{"apiVersion":"meshfed.io/v1alpha1","kind":"GlobalTrafficPolicy","metadata":{"name":"web"},
		"spec":{"host":"web.default","localityLbSetting":{"distribute":[{"from":"us-east/*","to":{"us-west/*":75,"us-north/*":25}}]}}}`, 3))
	count := map[string]int{}
	const n = 1000
	for range n {
		_, body, _ := r.get("/", nil)
		count[strings.Fields(body)[0]]++
	}
	// Binomial(1000, 0.25): sd 13.7; 5 sd either side.
	if north := count["north"]; north < 182 || north > 318 || count["west"]+north != n {
		t.Fatalf("distribute 75/25: %v, want north 250 ± 68 and the rest west", count)
	}
}

// A TCP route splits connections by weight.
func TestPolicyTCPRouteWeights(t *testing.T) {
	sp := port("db", 5432, "TCP")
	east := newCluster(t, "east", "us-east", "us-east-1a")
	var remotes []remote
	var all []*cluster
	for _, name := range []string{"west", "north"} {
		c := newCluster(t, name, "us-"+name, "us-"+name+"-1a")
		all = append(all, c)
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = ln.Close() })
		go func() {
			for {
				conn, err := ln.Accept()
				if err != nil {
					return
				}
				_, _ = io.WriteString(conn, name+"\n")
				_ = conn.Close()
			}
		}()
		ep := netip.MustParseAddrPort(ln.Addr().String())
		w := startGateway(t, c, newState(c, nil, []*gatewayclient.LocalService{localService("default/db", sp, ep)}, remote{c: east}), nil, east)
		remotes = append(remotes, remote{c: c, gws: []string{w.addr}, ready: 1})
	}
	egress := freePort(t)
	st := newState(east, []*gatewayclient.Import{importOf("default/db", sp, egress, remotes...)}, nil, remotes...)
	addPolicies(st, trafficPolicy(t, `{"apiVersion":"meshfed.io/v1alpha1","kind":"GlobalTrafficPolicy","metadata":{"name":"db"},
		"spec":{"host":"db.default","tcp":[{"match":[{"port":5432}],"route":[{"destination":{"cluster":"west"},"weight":80},{"destination":{"cluster":"north"},"weight":20}]}]}}`, 2))
	eastGW := startGateway(t, east, st, nil, all...)
	waitFor(t, 5*time.Second, func() error {
		for _, c := range all {
			if !eastGW.g.clusterUp(c.name) {
				return fmt.Errorf("%s not up", c.name)
			}
		}
		return nil
	})
	count := map[string]int{}
	const n = 500
	for range n {
		conn, err := dialTCP(egress)
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(conn)
		_ = conn.Close()
		if err != nil {
			t.Fatal(err)
		}
		count[strings.TrimSpace(string(b))]++
	}
	// Binomial(500, 0.2): sd 8.9; 5 sd either side.
	if north := count["north"]; north < 55 || north > 145 || count["west"]+north != n {
		t.Fatalf("80/20 over %d connections: %v, want north 100 ± 45, the rest west", n, count)
	}
}

// The policy's outlier detection ejects a cluster whose requests keep
// failing (5xx) for this service; without one the gateway keeps sending.
func TestPolicyOutlierDetectionEjectsAFailingCluster(t *testing.T) {
	failing := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { http.Error(w, "down", http.StatusInternalServerError) })
	r := startPolicyRig(t, exporter{name: "west", region: "us-west", zone: "us-west-1a", endpoints: []endpointSpec{{handler: failing}}},
		plainExporter("north", "us-north", "us-north-1a"))
	r.apply(trafficPolicy(t, `{"apiVersion":"meshfed.io/v1alpha1","kind":"GlobalTrafficPolicy","metadata":{"name":"web"},
		"spec":{"host":"web.default","outlierDetection":{"consecutiveErrors":3,"baseEjectionTime":"1m","maxEjectionPercent":50}}}`, 2))
	fails := 0
	for range 200 {
		if code, _, _ := r.get("/", nil); code != http.StatusOK {
			fails++
		}
	}
	// west fails 3 times in a row at most before it is ejected.
	if fails > 3 {
		t.Fatalf("%d of 200 requests failed, want at most 3 before west is ejected", fails)
	}
	// maxEjectionPercent 50 of 2 clusters: north is never ejected too.
	sp := r.eastGW.g.table.Load().routes[federation.MustServiceKey("default/web")].pol
	if !sp.ejected(federation.MustClusterName("west"), time.Now()) || sp.ejected(federation.MustClusterName("north"), time.Now()) {
		t.Fatal("want west ejected and north not")
	}
}

// The same policy applies to HTTP/2 (h2c) clients, which the egress port
// serves through its reverse proxy rather than the HTTP/1.1 fast path:
// rewrite and response headers, retries, and a deny answered 403.
func TestPolicyOverH2C(t *testing.T) {
	r := startPolicyRig(t, exporter{name: "west", region: "us-west", zone: "us-west-1a", endpoints: []endpointSpec{{handler: flaky("west")}}})
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	c := &http.Client{Transport: &http.Transport{Protocols: &p}, Timeout: 5 * time.Second}
	get := func(path string) (int, string, http.Header) {
		t.Helper()
		resp, err := c.Get(fmt.Sprintf("http://127.0.0.1:%d%s", r.egress, path))
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = resp.Body.Close() }()
		if resp.ProtoMajor != 2 {
			t.Fatalf("the client spoke %s, want HTTP/2", resp.Proto)
		}
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), resp.Header
	}
	r.apply(trafficPolicy(t, `{"apiVersion":"meshfed.io/v1alpha1","kind":"GlobalTrafficPolicy","metadata":{"name":"web"},
		"spec":{"host":"web.default","http":[{"match":[{"uri":{"prefix":"/api/"}}],"rewrite":{"uri":"/v2/"},
		"retries":{"attempts":3,"retryOn":"5xx"},"headers":{"response":{"set":{"X-Policy":"web"}}}}]}}`, 2))
	for i := range 20 {
		code, body, h := get("/api/items")
		if code != http.StatusOK || body != "west /v2/items" || h.Get("X-Policy") != "web" {
			t.Fatalf("request %d over h2c: %d %q (X-Policy %q), want 200 \"west /v2/items\" with the header", i, code, body, h.Get("X-Policy"))
		}
	}
	deny := trafficPolicy(t, `{"apiVersion":"meshfed.io/v1alpha1","kind":"GlobalTrafficPolicy","metadata":{"name":"web"},
		"spec":{"host":"web.default","authorization":{"denyByDefault":true}}}`, 3)
	r.apply(deny)
	if code, body, _ := get("/api/items"); code != http.StatusForbidden {
		t.Fatalf("denied over h2c: %d %q, want 403", code, body)
	}
}

// Authorization by service account: east's gateway names the calling
// workload (found by its address in the agent's workloads) to west, which
// decides by it.
func TestPolicyAuthorizationByServiceAccount(t *testing.T) {
	r := startPolicyRig(t, plainExporter("west", "us-west", "us-west-1a"))
	allow := trafficPolicy(t, `{"apiVersion":"meshfed.io/v1alpha1","kind":"GlobalTrafficPolicy","metadata":{"name":"web"},
		"spec":{"host":"web.default","authorization":{"denyByDefault":true,"allow":[{"serviceAccounts":["shop/checkout"]}]}}}`, 2)
	caller := func(sa string) {
		st := r.states["east"](allow)
		st.Workloads = map[netip.Addr]gatewayclient.Workload{netip.MustParseAddr("127.0.0.1"): {Namespace: "shop", ServiceAccount: sa}}
		st.Revision = r.eastGW.g.lastApplied.Load() + 1
		r.eastGW.src.set(st)
		waitFor(t, 5*time.Second, func() error {
			if r.eastGW.g.lastApplied.Load() < st.Revision {
				return fmt.Errorf("east has not applied revision %d", st.Revision)
			}
			return nil
		})
	}
	r.apply(allow)
	// Unknown caller (no workloads): a rule naming service accounts does
	// not match it.
	if code, body, _ := r.get("/", nil); code != http.StatusForbidden {
		t.Fatalf("unknown workload: %d %q, want 403", code, body)
	}
	caller("checkout")
	if code, body, _ := r.get("/", nil); code != http.StatusOK {
		t.Fatalf("shop/checkout: %d %q, want 200", code, body)
	}
	caller("cart")
	if code, body, _ := r.get("/", nil); code != http.StatusForbidden || !strings.Contains(body, "denied") {
		t.Fatalf("shop/cart: %d %q, want 403", code, body)
	}
}

func TestServiceAccountOfTakesOnlyThePeersTrustDomain(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("east.meshfed.local")
	for id, want := range map[string]string{
		"spiffe://east.meshfed.local/ns/shop/sa/checkout": "shop/checkout",
		"spiffe://west.meshfed.local/ns/shop/sa/checkout": "", // another cluster's workload
		"spiffe://east.meshfed.local/ns/shop/sa/":         "",
		"spiffe://east.meshfed.local/ns/shop/checkout":    "",
		"spiffe://east.meshfed.local/ns/shop/sa/x/extra":  "",
		"": "",
		"https://east.meshfed.local/ns/shop/sa/checkout": "",
	} {
		if got := serviceAccountOf(id, td); got != want {
			t.Errorf("serviceAccountOf(%q) = %q, want %q", id, got, want)
		}
	}
}

// TestGatewayOwnAnswersKeepTheConnectionInStep: a response of the
// gateway's own (here a fault abort) to HEAD carries no body, so the next
// response on the keep-alive connection is read where it starts; one that
// ends the connection (a request with an unread body) says "Connection:
// close".
func TestGatewayOwnAnswersKeepTheConnectionInStep(t *testing.T) {
	r := startPolicyRig(t, exporter{name: "west", region: "us-west", zone: "us-west-1a"})
	r.apply(trafficPolicy(t, `{"apiVersion":"meshfed.io/v1alpha1","kind":"GlobalTrafficPolicy","metadata":{"name":"web"},
		"spec":{"host":"web.default","http":[{"fault":{"abort":{"httpStatus":503,"percentage":{"value":100}}}}]}}`, 2))
	conn, err := dialTCP(r.egress)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(conn)
	_, _ = io.WriteString(conn, "HEAD /a HTTP/1.1\r\nHost: web\r\n\r\nGET /b HTTP/1.1\r\nHost: web\r\n\r\n")
	for _, method := range []string{http.MethodHead, http.MethodGet} {
		resp, err := http.ReadResponse(br, &http.Request{Method: method})
		if err != nil {
			t.Fatalf("%s: %v", method, err)
		}
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusServiceUnavailable || resp.Close {
			t.Fatalf("%s: %d, close %v; want 503 on a connection kept open", method, resp.StatusCode, resp.Close)
		}
		if method == http.MethodGet && string(b) != "meshfed gateway: fault filter abort\n" {
			t.Fatalf("GET after HEAD: body %q", b)
		}
	}
	_, _ = io.WriteString(conn, "POST /c HTTP/1.1\r\nHost: web\r\nContent-Length: 3\r\n\r\nabc")
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	if !resp.Close {
		t.Error(`the answer to a request whose body the gateway did not read does not say "Connection: close"`)
	}
	if _, err := br.ReadByte(); !errors.Is(err, io.EOF) {
		t.Errorf("after that answer, read %v, want EOF", err)
	}
}
