package devenv

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshfed/meshfed/federation"
)

// starts counts a child's starts and exits.
type starts struct {
	mu            sync.Mutex
	start, exited map[string]int
	changed       chan struct{}
}

func (s *starts) bump(m map[string]int, name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m[name]++
	close(s.changed)
	s.changed = make(chan struct{})
}

func (s *starts) get(name string) (start, exited int, changed <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.start[name], s.exited[name], s.changed
}

// waitStarts returns once name has been started n times.
func (s *starts) waitStarts(t *testing.T, ctx context.Context, name string, n int) {
	t.Helper()
	for {
		got, _, changed := s.get(name)
		if got >= n {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s started %d times, want %d: %v", name, got, n, ctx.Err())
		case <-changed:
		}
	}
}

// A held child is killed and stays down while another child, which exits
// at once, is restarted many times over (each restart is a backoff period
// in which the held one could have come back); released, it starts again
// at once. Its kill is not reported as an exit.
func TestHeldChildIsKilledAndNotRestartedUntilReleased(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	dir := t.TempDir()
	st := &starts{start: map[string]int{}, exited: map[string]int{}, changed: make(chan struct{})}
	sup := &supervisor{binary: "/bin/sh", policy: RestartPolicy{Min: 5 * time.Millisecond, Max: 5 * time.Millisecond, Stable: time.Hour},
		stopTimeout: 5 * time.Second, log: slog.New(slog.DiscardHandler),
		onStart: func(c *child) { st.bump(st.start, c.name) },
		onExit:  func(c *child, _ error, _ time.Duration) { st.bump(st.exited, c.name) }}
	args := func(a ...string) func(context.Context) ([]string, error) {
		return func(context.Context) ([]string, error) { return a, nil }
	}
	long := &child{name: "long", logPath: dir + "/long.log", prepare: args("-c", "exec sleep 60")}
	flappy := &child{name: "flappy", logPath: dir + "/flappy.log", prepare: args("-c", "exit 0")}
	runCtx, stop := context.WithCancel(ctx)
	sup.run(runCtx, long)
	sup.run(runCtx, flappy)
	defer func() {
		stop()
		sup.wait()
	}()
	st.waitStarts(t, ctx, "long", 1)
	if err := long.waitFor(ctx, func(pid int, _, _ bool) bool { return pid != 0 }); err != nil {
		t.Fatal(err)
	}
	if !long.setHeld(true) || long.setHeld(true) {
		t.Fatal("setHeld(true) should report a change once")
	}
	if err := long.waitFor(ctx, func(pid int, _, parked bool) bool { return parked && pid == 0 }); err != nil {
		t.Fatalf("the held child was not stopped: %v", err)
	}
	_, before, _ := st.get("flappy")
	st.waitStarts(t, ctx, "flappy", before+20)
	if n, exited, _ := st.get("long"); n != 1 || exited != 0 {
		t.Fatalf("while held: long started %d times and exited %d times, want 1 and 0 (a kill on purpose is no exit)", n, exited)
	}
	long.setHeld(false)
	st.waitStarts(t, ctx, "long", 2)
	if err := long.waitFor(ctx, func(pid int, held, parked bool) bool { return pid != 0 && !held && !parked }); err != nil {
		t.Fatal(err)
	}
}

// testControl serves e's control API and returns a client for it, through
// the dev.json e writes.
func testControl(t *testing.T, e *Env) *ControlClient {
	t.Helper()
	const token = "test-token"
	srv := httptest.NewServer(e.controlHandler(token))
	t.Cleanup(srv.Close)
	e.control = Control{Address: strings.TrimPrefix(srv.URL, "http://"), Token: token}
	if err := e.writeFile(time.Second); err != nil {
		t.Fatal(err)
	}
	c, err := NewControlClient(e.cfg.Dir)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestControlAPICutsAndHealsAHubLinkAndRecordsItInDevJSON(t *testing.T) {
	ctx := t.Context()
	e := newTestEnv(t, t.TempDir(), 7400)
	if err := e.startHubLinks(); err != nil {
		t.Fatal(err)
	}
	defer e.closeHubLinks()
	c := testControl(t, e)
	if _, err := c.Fail(ctx, federation.MustClusterName("west"), FaultHubLink); err == nil {
		t.Fatal("a fault before the federation is ready: no error")
	}
	e.ready.Store(true)
	west := e.clusters[1]
	rep, err := c.Fail(ctx, west.spec.name, FaultHubLink)
	if err != nil {
		t.Fatal(err)
	}
	want := Failure{Cluster: "west", What: FaultHubLink}
	if len(rep.Changed) != 1 || rep.Changed[0] != want || len(rep.Failures) != 1 {
		t.Fatalf("fail: %+v", rep)
	}
	if fwd, rev := west.hubLink.Partitioned(); !fwd || !rev {
		t.Errorf("west's hub link after fail: partitioned %v/%v, want both", fwd, rev)
	}
	if fwd, _ := e.clusters[0].hubLink.Partitioned(); fwd {
		t.Error("east's hub link was cut too")
	}
	if rep, err := c.Fail(ctx, west.spec.name, FaultHubLink); err != nil || len(rep.Changed) != 0 {
		t.Errorf("the same fault again: %+v, %v; want no change", rep, err)
	}
	f, err := ReadFile(e.cfg.Dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(f.Failures) != 1 || f.Failures[0] != want || len(f.Clusters[1].HubVia) != Servers {
		t.Errorf("dev.json: failures %+v, west hubVia %v", f.Failures, f.Clusters[1].HubVia)
	}
	rep, err = c.Heal(ctx, federation.ClusterName{}, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Changed) != 1 || rep.Changed[0] != want || len(rep.Failures) != 0 {
		t.Fatalf("heal: %+v", rep)
	}
	if fwd, rev := west.hubLink.Partitioned(); fwd || rev {
		t.Error("west's hub link is still cut after heal")
	}
	if f, err := ReadFile(e.cfg.Dir); err != nil || len(f.Failures) != 0 {
		t.Errorf("dev.json after heal: %+v, %v", f, err)
	}
}

func TestControlAPIRejectsAnUnknownClusterOrFaultByFieldAndAWrongToken(t *testing.T) {
	ctx := t.Context()
	e := newTestEnv(t, t.TempDir(), 7400)
	e.ready.Store(true)
	c := testControl(t, e)
	var fe *federation.FieldError
	if _, err := c.Fail(ctx, federation.MustClusterName("north"), FaultGateway); !errors.As(err, &fe) || fe.Field != "cluster" {
		t.Errorf("unknown cluster: %v, want a FieldError on cluster", err)
	}
	if _, err := c.Fail(ctx, federation.MustClusterName("west"), "network"); !errors.As(err, &fe) || fe.Field != "what" {
		t.Errorf("unknown fault: %v, want a FieldError on what", err)
	}
	if _, err := c.Heal(ctx, federation.MustClusterName("west"), "network"); !errors.As(err, &fe) || fe.Field != "what" {
		t.Errorf("heal of an unknown fault: %v, want a FieldError on what", err)
	}
	c.control.Token = "wrong"
	if _, err := c.Failures(ctx); err == nil || errors.As(err, &fe) {
		t.Errorf("a wrong token: %v, want an error", err)
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+c.control.Address+"/v1/failures", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("no token: %s, want 401", resp.Status)
	}
}

func TestControlClientSaysNoDevIsRunning(t *testing.T) {
	if _, err := NewControlClient(t.TempDir()); !errors.Is(err, ErrNotRunning) {
		t.Errorf("no dev.json: %v, want ErrNotRunning", err)
	}
	e := newTestEnv(t, t.TempDir(), 7400)
	e.control = Control{Address: "127.0.0.1:1", Token: "x"} // nothing listens on port 1
	if err := e.writeFile(time.Second); err != nil {
		t.Fatal(err)
	}
	c, err := NewControlClient(e.cfg.Dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Heal(t.Context(), federation.ClusterName{}, ""); !errors.Is(err, ErrNotRunning) {
		t.Errorf("nothing answers: %v, want ErrNotRunning", err)
	}
}

func TestParseFaultAcceptsTheDocumentedNamesOnly(t *testing.T) {
	for _, s := range []string{"gateway", "workloads", "agent", "hub-link"} {
		if f, err := ParseFault(s); err != nil || string(f) != s {
			t.Errorf("ParseFault(%q) = %q, %v", s, f, err)
		}
	}
	var fe *federation.FieldError
	if _, err := ParseFault("Gateway"); !errors.As(err, &fe) || fe.Field != "what" {
		t.Errorf("ParseFault(Gateway): %v", err)
	}
}
