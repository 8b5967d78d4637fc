package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshfed/meshfed/federation/policy"
	"github.com/meshfed/meshfed/federation/policy/policyfile"
	fedv1 "github.com/meshfed/meshfed/federation/v1"
	"github.com/meshfed/meshfed/hub"
)

// freePort returns a port free on 127.0.0.1 for TCP and UDP (gossip uses
// both) when it was asked.
func freePort(t *testing.T) int {
	t.Helper()
	for range 20 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", port))
		_ = l.Close() // only reserved for the check
		if err == nil {
			_ = u.Close()
			return port
		}
	}
	t.Fatal("no free port for TCP and UDP")
	return 0
}

// testLog writes through t.Log, so that logs show only on failure.
type testLog struct{ t testing.TB }

func (w testLog) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// startHub runs a one-server hub in this process, as `meshfed hub` does,
// and returns the admin.yaml it writes once it is ready.
func startHub(t *testing.T) string {
	t.Helper()
	key, err := hub.GenerateEncryptKey()
	if err != nil {
		t.Fatal(err)
	}
	cfg := hub.DefaultConfig()
	cfg.Name, cfg.DataDir, cfg.BootstrapExpect, cfg.EncryptKey, cfg.GossipProfile = "h1", t.TempDir(), 1, key, "local"
	cfg.GRPCPort, cfg.RaftPort, cfg.GossipPort, cfg.HTTPPort = freePort(t), freePort(t), freePort(t), freePort(t)
	srv, err := hub.New(cfg, slog.New(slog.NewTextHandler(testLog{t}, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Kill)
	path := filepath.Join(cfg.DataDir, "admin.yaml")
	waitUntil(t, 30*time.Second, "the hub is ready and wrote admin.yaml", func() error {
		if err := srv.Ready(context.Background()); err != nil {
			return err
		}
		_, err := os.Stat(path)
		return err
	})
	return path
}

// waitUntil polls cond until it returns nil or timeout passes.
func waitUntil(t *testing.T, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: %v", what, err)
		}
		<-tick.C
	}
}

// startAgent joins cluster to the hub with a token from `meshfed token
// create` and runs its agent (`meshfed join`, file source) until the test
// ends. catalog is the file source's document.
func startAgent(t *testing.T, d deps, admin, cluster, catalog string) {
	t.Helper()
	r := run(t, d, "token", "create", "--cluster", cluster, "--config", admin, "-o", "json")
	var tok struct {
		Token string `json:"token"`
	}
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &tok) != nil {
		t.Fatalf("token create: exit %d, %q", r.code, r.stdout)
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "catalog.yaml")
	writeFile(t, src, catalog)
	ctx, cancel := context.WithCancel(context.Background())
	root := newRoot(d)
	var out lockedBuffer
	root.SetOut(&out)
	root.SetErr(&out)
	done := make(chan int, 1)
	go func() {
		done <- execute(ctx, root, []string{"join", tok.Token, "--cluster", cluster, "--region", "r-" + cluster, "--zone", "z-" + cluster,
			"--source", "file:" + src, "--data-dir", dir, "--http-port", "-1", "--gateway-api", ""})
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		t.Logf("agent %s:\n%s", cluster, out.String())
	})
}

// lockedBuffer is a bytes.Buffer an agent writes from its goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// realTestDeps are the real dependencies, without the environment.
func realTestDeps() deps {
	d := realDeps()
	d.getenv = func(string) string { return "" }
	return d
}

// canonicalOf decodes a one-document file and returns its canonical JSON.
func canonicalOf(t *testing.T, doc string) []byte {
	t.Helper()
	ps, err := policyfile.Decode([]byte(doc))
	if err != nil || len(ps) != 1 {
		t.Fatalf("decode %q: %d policies, %v", doc, len(ps), err)
	}
	b, err := policy.Marshal(ps[0])
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The policy commands against a real hub, with two real agents: east
// exports default/reviews, west exports nothing.
func TestPolicyCommandsAgainstAHub(t *testing.T) {
	d := realTestDeps()
	admin := startHub(t)
	startAgent(t, d, admin, "east", `services:
- namespace: default
  name: reviews
  export: true
  ports: [{name: http, port: 9080, protocol: HTTP}]
  endpoints: [{address: "127.0.0.1:9080", ready: true}]
`)
	startAgent(t, d, admin, "west", "services: []\n")
	waitUntil(t, 30*time.Second, "east's export of default/reviews at the hub", func() error {
		r := run(t, d, "services", "list", "--config", admin, "-o", "json")
		if !strings.Contains(r.stdout, `"cluster": "east"`) || !strings.Contains(r.stdout, `"default/reviews"`) {
			return errors.New("not yet")
		}
		return nil
	})
	dir := t.TempDir()
	file := func(name, content string) string {
		p := filepath.Join(dir, name)
		writeFile(t, p, content)
		return p
	}
	policies := func() []*fedv1.TrafficPolicy {
		t.Helper()
		r := run(t, d, "policy", "get", "--config", admin, "-o", "json")
		if r.code != 0 {
			t.Fatalf("policy get: exit %d", r.code)
		}
		var docs []json.RawMessage
		if err := json.Unmarshal([]byte(r.stdout), &docs); err != nil {
			t.Fatalf("policy get -o json: %v", err)
		}
		var out []*fedv1.TrafficPolicy
		for _, doc := range docs {
			p, err := policy.Decode(doc)
			if err != nil {
				t.Fatal(err)
			}
			m, err := policy.ToProto(p)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, m)
		}
		return out
	}

	t.Run("the issue's example applies and get -o yaml round-trips it", func(t *testing.T) {
		example := file("reviews.yaml", policy.ExampleReviews)
		r := run(t, d, "policy", "apply", "-f", example, "--config", admin)
		if r.code != 0 || !strings.HasPrefix(r.stdout, "policy/reviews created (revision ") {
			t.Fatalf("apply: exit %d, stdout %q", r.code, r.stdout)
		}
		got := run(t, d, "policy", "get", "reviews", "--config", admin, "-o", "yaml")
		if got.code != 0 {
			t.Fatalf("get -o yaml: exit %d", got.code)
		}
		if !bytes.Equal(canonicalOf(t, got.stdout), canonicalOf(t, policy.ExampleReviews)) {
			t.Errorf("get -o yaml printed\n%s\nwhich is not the applied document\n%s", got.stdout, policy.ExampleReviews)
		}
		again := run(t, d, "policy", "apply", "-f", file("got.yaml", got.stdout), "--config", admin)
		if again.code != 0 || again.stdout != "policy/reviews unchanged\n" {
			t.Errorf("re-apply of get's output: exit %d, stdout %q; want unchanged", again.code, again.stdout)
		}
		j := run(t, d, "policy", "get", "reviews", "--config", admin, "-o", "json")
		if j.code != 0 || !bytes.Equal(canonicalOf(t, j.stdout), canonicalOf(t, policy.ExampleReviews)) {
			t.Errorf("get -o json: exit %d, %q", j.code, j.stdout)
		}
		for _, args := range [][]string{{"get"}, {"list"}, {"get", "reviews"}} {
			tab := run(t, d, append(append([]string{"policy"}, args...), "--config", admin)...)
			if lines := strings.Split(strings.TrimSpace(tab.stdout), "\n"); tab.code != 0 || len(lines) != 2 ||
				!strings.HasPrefix(lines[0], "NAME") || !strings.HasPrefix(lines[1], "reviews ") || !strings.Contains(lines[1], "default/reviews") {
				t.Errorf("policy %s: exit %d, table %q", strings.Join(args, " "), tab.code, tab.stdout)
			}
		}
		if nf := run(t, d, "policy", "get", "nope", "--config", admin); nf.code != exitError || nf.stderr != "error: NotFound: policy \"nope\" not found\n" {
			t.Errorf("get of an absent policy: exit %d, stderr %q", nf.code, nf.stderr)
		}
	})

	t.Run("a second policy for the host is refused naming the first", func(t *testing.T) {
		second := file("canary.yaml", strings.Replace(policy.ExampleReviews, "name: reviews", "name: reviews-canary", 1))
		r := run(t, d, "policy", "apply", "-f", second, "--config", admin)
		if r.code != exitError || !strings.HasPrefix(r.stderr, "error: FailedPrecondition: ") || !strings.Contains(r.stderr, `already has policy "reviews"`) {
			t.Fatalf("second policy for reviews.default: exit %d, stderr %q", r.code, r.stderr)
		}
		if ps := policies(); len(ps) != 1 || ps[0].GetName() != "reviews" {
			t.Errorf("policies after the refusal: %v", ps)
		}
	})

	t.Run("a file with one bad document applies nothing and names the document and field", func(t *testing.T) {
		ratings := strings.ReplaceAll(strings.ReplaceAll(policy.ExampleReviews, "reviews", "ratings"), "weight: 90", "weight: 120")
		bad := file("multi.yaml", strings.ReplaceAll(policy.ExampleReviews, "reviews", "details")+"---\n"+ratings)
		r := run(t, d, "policy", "apply", "-f", bad, "--config", admin)
		want := "error: " + bad + ": document 2 (ratings, line 14): spec.http[0].route[0].weight: "
		if r.code != exitError || !strings.HasPrefix(r.stderr, want) {
			t.Fatalf("apply of a file with a bad document: exit %d, stderr %q; want it to start %q", r.code, r.stderr, want)
		}
		// Two good files that together break a rule of the batch: the
		// hub refuses the batch and the CLI says which file each entry is.
		a := file("a.yaml", strings.ReplaceAll(policy.ExampleReviews, "reviews", "details"))
		b := file("b.yaml", strings.Replace(strings.ReplaceAll(policy.ExampleReviews, "reviews", "details"), "name: details", "name: details2", 1))
		r = run(t, d, "policy", "apply", "-f", a, "-f", b, "--config", admin)
		if r.code != exitError || !strings.Contains(r.stderr, "FailedPrecondition") || !strings.Contains(r.stderr, "policies[1] is "+b+" document 1 (details2)") {
			t.Fatalf("two files with one host: exit %d, stderr %q", r.code, r.stderr)
		}
		if ps := policies(); len(ps) != 1 {
			t.Errorf("%d policies after refused applies, want 1 (reviews)", len(ps))
		}
	})

	t.Run("diff shows the change and the touched clusters and writes nothing", func(t *testing.T) {
		before := run(t, d, "policy", "get", "reviews", "--config", admin, "-o", "yaml").stdout
		rev := run(t, d, "policy", "get", "reviews", "--config", admin).stdout
		changed := strings.Replace(strings.Replace(policy.ExampleReviews, "weight: 90", "weight: 80", 1), "weight: 10", "weight: 20", 1)
		ratings := strings.ReplaceAll(policy.ExampleReviews, "reviews", "ratings")
		f := file("change.yaml", changed+"---\n"+ratings)
		r := run(t, d, "policy", "diff", "-f", f, "--config", admin)
		if r.code != 0 {
			t.Fatalf("diff: exit %d", r.code)
		}
		for _, want := range []string{
			"policy/reviews configured (default/reviews, from " + f + " document 1)\n",
			"  clusters exporting: east\n  clusters importing: east, west\n  gateways: east (none reported), west (none reported)\n",
			"--- policy/reviews (stored)\n+++ policy/reviews (" + f + " document 1)\n" +
				"@@ -8,7 +8,7 @@\n" +
				"   - route:\n" +
				"     - destination:\n" +
				"         cluster: east\n" +
				"-      weight: 90\n" +
				"+      weight: 80\n" +
				"     - destination:\n" +
				"         cluster: west\n" +
				"-      weight: 10\n" +
				"+      weight: 20\n" +
				"policy/ratings created",
			"policy/ratings created (default/ratings, from " + f + " document 2)\n  clusters: none yet (no cluster exports default/ratings)\n",
			"--- policy/ratings (not stored)\n+++ policy/ratings (" + f + " document 2)\n@@ -0,0 +1,14 @@\n+apiVersion: meshfed.io/v1alpha1\n",
			"\n+  name: ratings\n",
		} {
			if !strings.Contains(r.stdout, want) {
				t.Errorf("diff output lacks %q:\n%s", want, r.stdout)
			}
		}
		if after := run(t, d, "policy", "get", "reviews", "--config", admin, "-o", "yaml").stdout; after != before {
			t.Errorf("diff changed the stored policy:\n%s", after)
		}
		if after := run(t, d, "policy", "get", "reviews", "--config", admin).stdout; after != rev {
			t.Errorf("diff moved the revision:\n%s\nwas\n%s", after, rev)
		}
		if ps := policies(); len(ps) != 1 {
			t.Errorf("%d policies after diff, want 1: it created ratings", len(ps))
		}
		same := run(t, d, "policy", "diff", "-f", file("same.yaml", policy.ExampleReviews), "--config", admin)
		if same.code != 0 || strings.Contains(same.stdout, "@@") || !strings.HasPrefix(same.stdout, "policy/reviews unchanged ") {
			t.Errorf("diff of the stored document: exit %d, %q", same.code, same.stdout)
		}
	})

	t.Run("status shows each member cluster, none with a gateway report yet", func(t *testing.T) {
		r := run(t, d, "policy", "status", "reviews", "--config", admin)
		if r.code != 0 {
			t.Fatalf("status: exit %d", r.code)
		}
		for _, want := range []string{"POLICY    CLUSTER   GATEWAY       REVISION", "\nreviews   east      (no report)   -", "\nreviews   west      (no report)   -"} {
			if !strings.Contains(r.stdout, want) {
				t.Errorf("status lacks %q:\n%s", want, r.stdout)
			}
		}
		if r := run(t, d, "policy", "status", "nope", "--config", admin); r.code == 0 || !strings.Contains(r.stderr, "NotFound") {
			t.Errorf("status of an absent policy: exit %d, %q", r.code, r.stderr)
		}
	})

	t.Run("delete removes a policy and refuses an absent one", func(t *testing.T) {
		r := run(t, d, "policy", "delete", "reviews", "--config", admin)
		if r.code != 0 || !strings.HasPrefix(r.stdout, "policy/reviews deleted (revision ") {
			t.Fatalf("delete: exit %d, %q", r.code, r.stdout)
		}
		if ps := policies(); len(ps) != 0 {
			t.Errorf("%d policies after delete", len(ps))
		}
		r = run(t, d, "policy", "delete", "reviews", "--config", admin)
		if r.code != exitError || !strings.HasPrefix(r.stderr, "error: NotFound: ") {
			t.Errorf("delete of an absent policy: exit %d, stderr %q", r.code, r.stderr)
		}
	})
}

var _ io.Writer = (*lockedBuffer)(nil)
