package testenv

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshfed/meshfed/federation/policy"
)

// gatewayPolicy is one policy as a gateway's /policies shows it.
type gatewayPolicy struct {
	Name             string `json:"name"`
	Revision         uint64 `json:"revision"`
	RejectedRevision uint64 `json:"rejectedRevision"`
	Error            string `json:"error"`
}

// policyOf reads the policy name from a gateway's /policies (the zero
// value when the gateway holds none of that name).
func policyOf(ctx context.Context, g *Gateway, name string) (gatewayPolicy, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+g.MetricsAddr()+"/policies", nil)
	if err != nil {
		return gatewayPolicy{}, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return gatewayPolicy{}, err
	}
	defer func() { _ = resp.Body.Close() }()
	var ps []gatewayPolicy
	if err := json.NewDecoder(resp.Body).Decode(&ps); err != nil {
		return gatewayPolicy{}, err
	}
	for _, p := range ps {
		if p.Name == name {
			return p, nil
		}
	}
	return gatewayPolicy{}, nil
}

// policyRig is a federation in which central calls reviews, which east
// and west export, through its gateway.
type policyRig struct {
	t                   *testing.T
	fed                 *Federation
	east, west, central *ClusterEnv
	dir                 string
	// revision is the revision of reviews' policy central's gateway
	// enforces, as last seen.
	revision uint64
}

func startPolicyFederation(t *testing.T) *policyRig {
	fed := Start(t, Options{HubServers: 1, Clusters: []Cluster{
		{Name: "east", Region: "us-east", Zone: "us-east-1a"},
		{Name: "west", Region: "us-west", Zone: "us-west-1a"},
		{Name: "central", Region: "eu-central", Zone: "eu-central-1a"},
	}})
	r := &policyRig{t: t, fed: fed, east: fed.Cluster("east"), west: fed.Cluster("west"), central: fed.Cluster("central"), dir: t.TempDir()}
	for _, c := range []*ClusterEnv{r.east, r.west} {
		c.Deploy(EchoHTTP("default/reviews", 2))
		c.Export("default/reviews")
	}
	if err := WaitFor(context.Background(), 90*time.Second, func(ctx context.Context) error {
		if _, err := r.central.Targets(ctx, "default/reviews"); err != nil {
			return err
		}
		res := r.central.Drive("default/reviews", Requests(40))
		if by := res.ByCluster(); by["east"] == 0 || by["west"] == 0 || len(res.Failed()) > 0 {
			return fmt.Errorf("answers by cluster %v, %d failed", by, len(res.Failed()))
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return r
}

// apply runs `meshfed policy apply -f` with doc and waits until central's
// gateway enforces the new revision (unless central is cut off the hub:
// wait false).
func (r *policyRig) apply(doc string, wait bool) {
	r.t.Helper()
	path := filepath.Join(r.dir, fmt.Sprintf("policy-%d.yaml", time.Now().UnixNano()))
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		r.t.Fatal(err)
	}
	ctx := context.Background()
	out, err := r.fed.Hub().Command(ctx, "policy", "apply", "-f", path)
	if err != nil {
		r.t.Fatal(err)
	}
	r.t.Logf("policy apply: %s", strings.TrimSpace(string(out)))
	if wait {
		r.revision = r.waitEnforced(r.central, r.revision, 60*time.Second)
	}
}

// waitEnforced waits until c's gateway enforces a revision of reviews'
// policy after after, and returns it.
func (r *policyRig) waitEnforced(c *ClusterEnv, after uint64, timeout time.Duration) uint64 {
	r.t.Helper()
	var rev uint64
	if err := WaitFor(context.Background(), timeout, func(ctx context.Context) error {
		p, err := policyOf(ctx, c.Gateway(), "reviews")
		if err != nil {
			return err
		}
		if p.Error != "" {
			return fmt.Errorf("%s's gateway rejected revision %d: %s", c.Name(), p.RejectedRevision, p.Error)
		}
		if p.Revision <= after {
			return fmt.Errorf("%s's gateway enforces revision %d, want one after %d", c.Name(), p.Revision, after)
		}
		rev = p.Revision
		return nil
	}); err != nil {
		r.t.Fatal(err)
	}
	return rev
}

// get sends one GET from central through its gateway and decodes the echo.
func (r *policyRig) get(path string) (int, EchoReply, string) {
	r.t.Helper()
	targets, err := r.central.Targets(context.Background(), "default/reviews")
	if err != nil {
		r.t.Fatal(err)
	}
	resp, err := http.Get("http://" + r.central.Loopback(targets[0]) + path)
	if err != nil {
		r.t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, _ := io.ReadAll(resp.Body)
	var rep EchoReply
	_ = json.Unmarshal(b, &rep)
	return resp.StatusCode, rep, string(b)
}

// TestPoliciesAreEnforcedAcrossTheFederation applies policies with
// `meshfed policy apply` and checks what central's gateway (the caller's)
// and east's and west's (the receivers') do with central's requests: the
// issue's 90/10 split over 2000 requests, a prefix match with rewrite as
// the echo server sees it, retries hiding a 50% abort, a timeout, failover
// in the declared order, an authorization deny at the receiving side, and
// a policy applied while central is cut off from the hub (the old one
// holds there; the new one arrives after healing).
func TestPoliciesAreEnforcedAcrossTheFederation(t *testing.T) {
	r := startPolicyFederation(t)

	// The document, unchanged: 90% to east, 10% to west.
	r.apply(policy.ExampleReviews, true)
	const n = 2000
	res := r.central.Drive("default/reviews", Requests(n), Concurrency(4))
	by := res.ByCluster()
	// Binomial(2000, 0.1): sd 13.4; 5 sd either side.
	if len(res.Failed()) > 0 || by["west"] < 133 || by["west"] > 267 || by["east"]+by["west"] != n {
		t.Fatalf("90/10 over %d requests: %v, %d failed; want west 200 ± 67, the rest east", n, by, len(res.Failed()))
	}
	t.Logf("90/10 over %d requests: %v", n, by)

	// A prefix match with a rewrite, as the echo server sees it.
	r.apply(`apiVersion: meshfed.io/v1alpha1
kind: GlobalTrafficPolicy
metadata: {name: reviews}
spec:
  host: reviews.default
  http:
  - match: [{uri: {prefix: /api/v1/}}]
    rewrite: {uri: /v2/}
    route: [{destination: {cluster: west}}]
  - route: [{destination: {cluster: east}}]
`, true)
	if code, rep, body := r.get("/api/v1/items"); code != http.StatusOK || rep.Path != "/v2/items" || rep.Cluster != "west" {
		t.Fatalf("GET /api/v1/items: %d %s, want west to see /v2/items", code, body)
	}
	if code, rep, body := r.get("/other"); code != http.StatusOK || rep.Path != "/other" || rep.Cluster != "east" {
		t.Fatalf("GET /other: %d %s, want east to see /other", code, body)
	}

	// Retries hide a 50% abort: west's instances fail every other request.
	for _, e := range r.west.Workload("default/reviews").Instances() {
		e.SetFailEvery(2)
	}
	toWest := `apiVersion: meshfed.io/v1alpha1
kind: GlobalTrafficPolicy
metadata: {name: reviews}
spec:
  host: reviews.default
  http:
  - route: [{destination: {cluster: west}}]
`
	r.apply(toWest, true)
	if res := r.central.Drive("default/reviews", Requests(100), Concurrency(1)); len(res.Failed()) < 40 || len(res.Failed()) > 60 {
		t.Fatalf("without retries %d of 100 failed, want about half", len(res.Failed()))
	}
	r.apply(toWest+"    retries: {attempts: 3, perTryTimeout: 2s, retryOn: 5xx}\n", true)
	// One request at a time: each instance fails every other request it
	// sees, so a retry meets at most one more failure (with concurrent
	// requests the interleaving could make every try land on a failing
	// turn).
	if res := r.central.Drive("default/reviews", Requests(200), Concurrency(1)); len(res.Failed()) > 0 {
		t.Fatalf("with retries %d of 200 failed; first: %v", len(res.Failed()), firstFailure(res))
	}
	for _, e := range r.west.Workload("default/reviews").Instances() {
		e.SetFailEvery(0)
	}

	// A timeout that fires: west answers after 2 s, the route allows 300 ms.
	for _, e := range r.west.Workload("default/reviews").Instances() {
		e.SetDelay(2 * time.Second)
	}
	r.apply(toWest+"    timeout: 300ms\n", true)
	start := time.Now()
	if code, _, body := r.get("/slow"); code != http.StatusGatewayTimeout {
		t.Fatalf("GET /slow: %d %s, want 504", code, body)
	}
	if took := time.Since(start); took < 300*time.Millisecond || took > 1500*time.Millisecond {
		t.Errorf("the 504 came after %v, want just after the 300ms timeout", took)
	}
	for _, e := range r.west.Workload("default/reviews").Instances() {
		e.SetDelay(0)
	}

	// Failover in the declared order: from eu-central, east and west are
	// both other regions; the policy sends eu-central's traffic to
	// us-west first. With west's gateway dead, east takes it.
	r.apply(`apiVersion: meshfed.io/v1alpha1
kind: GlobalTrafficPolicy
metadata: {name: reviews}
spec:
  host: reviews.default
  localityLbSetting:
    failover: [{from: eu-central, to: us-west}]
`, true)
	if res := r.central.Drive("default/reviews", Requests(100)); res.ByCluster()["west"] != 100 {
		t.Fatalf("failover policy: %v, want all to west (the declared failover region)", res.ByCluster())
	}
	if err := r.west.Gateway().Kill(); err != nil {
		t.Fatal(err)
	}
	if res := r.central.Drive("default/reviews", Requests(100)); res.ByCluster()["east"] != 100 || len(res.Failed()) > 0 {
		t.Fatalf("with west's gateway dead: %v, %d failed; want all to east", res.ByCluster(), len(res.Failed()))
	}
	if err := r.west.Gateway().Start(); err != nil {
		t.Fatal(err)
	}
	if err := WaitFor(context.Background(), 60*time.Second, func(context.Context) error {
		if by := r.central.Drive("default/reviews", Requests(20)).ByCluster(); by["west"] != 20 {
			return fmt.Errorf("west's gateway back: %v, want all to west again", by)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	// An authorization deny at the receiving side: east and west admit
	// only east; central's requests get 403.
	r.apply(`apiVersion: meshfed.io/v1alpha1
kind: GlobalTrafficPolicy
metadata: {name: reviews}
spec:
  host: reviews.default
  http:
  - route: [{destination: {cluster: east}}]
  authorization:
    denyByDefault: true
    allow: [{clusters: [east]}]
`, true)
	r.waitEnforced(r.east, r.revision-1, 60*time.Second)
	if code, _, body := r.get("/"); code != http.StatusForbidden || !strings.Contains(body, "denied by default") {
		t.Fatalf("central → east under a deny: %d %s, want 403 saying why", code, body)
	}

	// Partitioned from the hub, central keeps enforcing its last policy;
	// the new one arrives after healing.
	r.apply(toWest, true)
	r.fed.HubLink("central").Partition()
	if err := WaitFor(context.Background(), 60*time.Second, func(ctx context.Context) error {
		st, err := r.central.Agent().State(ctx)
		if err != nil {
			return err
		}
		if st.Hub.Connected {
			return errors.New("central's agent still connected to the hub")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	before := r.revision
	r.apply(`apiVersion: meshfed.io/v1alpha1
kind: GlobalTrafficPolicy
metadata: {name: reviews}
spec:
  host: reviews.default
  http:
  - route: [{destination: {cluster: east}}]
`, false)
	r.waitEnforced(r.east, before, 60*time.Second) // the federation has it
	if res := r.central.Drive("default/reviews", Requests(100)); res.ByCluster()["west"] != 100 {
		t.Fatalf("partitioned central: %v, want the old policy (all to west) still in force", res.ByCluster())
	}
	if p, err := policyOf(context.Background(), r.central.Gateway(), "reviews"); err != nil || p.Revision != before {
		t.Fatalf("partitioned central's gateway: %+v, %v; want revision %d still", p, err, before)
	}
	r.fed.HubLink("central").Heal()
	r.revision = r.waitEnforced(r.central, before, 90*time.Second)
	if res := r.central.Drive("default/reviews", Requests(100)); res.ByCluster()["east"] != 100 {
		t.Fatalf("after healing: %v, want the new policy (all to east)", res.ByCluster())
	}
}
