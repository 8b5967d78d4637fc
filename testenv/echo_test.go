package testenv

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"
)

func startHTTPEcho(t *testing.T, inst Instance) *Echo {
	t.Helper()
	e, err := StartHTTPEcho(inst)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close() })
	return e
}

func startTCPEcho(t *testing.T, inst Instance) *Echo {
	t.Helper()
	e, err := StartTCPEcho(inst)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close() })
	return e
}

func TestHTTPEchoStates(t *testing.T) {
	ctx := context.Background()
	e := startHTTPEcho(t, Instance{Cluster: "west", Zone: "us-west-1a", Name: "reviews-0"})

	res := DriveHTTP(ctx, e.URL()+"/hello", Requests(40), Concurrency(4))
	if len(res.Failed()) != 0 || res.ByCluster()["west"] != 40 || res.ByInstance()["west/reviews-0"] != 40 || res.ByZone()["us-west-1a"] != 40 {
		t.Fatalf("healthy: %v", res)
	}
	if e.Served() != 40 {
		t.Fatalf("served %d, want 40", e.Served())
	}
	if code := httpStatus(t, e.URL()+"/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz %d while healthy", code)
	}

	e.SetHealthy(false)
	if code := httpStatus(t, e.URL()+"/healthz"); code != http.StatusServiceUnavailable {
		t.Fatalf("/healthz %d while unhealthy", code)
	}
	res = DriveHTTP(ctx, e.URL(), Requests(10))
	if f := res.Failed(); len(f) != 10 || f[0].Status != http.StatusServiceUnavailable || f[0].Cluster != "west" {
		t.Fatalf("unhealthy: %v; first failure %+v", res, f)
	}
	e.SetHealthy(true)

	// Slow: every answer takes at least the delay. (A lower bound holds on
	// any machine; nothing here asserts an upper one.)
	e.SetDelay(20 * time.Millisecond)
	res = DriveHTTP(ctx, e.URL(), Requests(4), Concurrency(2))
	if len(res.Failed()) != 0 || res.Percentile(0) < 20*time.Millisecond {
		t.Fatalf("slow: %v, fastest %v", res, res.Percentile(0))
	}
	e.SetDelay(0)

	e.Kill()
	res = DriveHTTP(ctx, e.URL(), Requests(3), NewConnections())
	if len(res.Failed()) != 3 {
		t.Fatalf("dead: %v", res)
	}
	if err := e.Revive(); err != nil {
		t.Fatal(err)
	}
	res = DriveHTTP(ctx, e.URL(), Requests(3), NewConnections())
	if len(res.Failed()) != 0 {
		t.Fatalf("revived: %v", res)
	}
}

func httpStatus(t *testing.T, url string) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	return resp.StatusCode
}

func TestTCPEchoStates(t *testing.T) {
	ctx := context.Background()
	a := startTCPEcho(t, Instance{Cluster: "east", Zone: "us-east-1a", Name: "a"})
	b := startTCPEcho(t, Instance{Cluster: "west", Zone: "us-west-1a", Name: "b"})

	res := DriveTCP(ctx, a.Addr(), Requests(20), Concurrency(4), Payload([]byte(strings.Repeat("x", 100_000))))
	if len(res.Failed()) != 0 || res.ByInstance()["east/a"] != 20 {
		t.Fatalf("healthy: %v; failures %v", res, res.Failed())
	}
	res2 := DriveTCP(ctx, b.Addr(), Requests(5))
	if res2.ByCluster()["west"] != 5 {
		t.Fatalf("second server: %v", res2)
	}

	a.SetHealthy(false) // accept and reset
	if res := DriveTCP(ctx, a.Addr(), Requests(5)); len(res.Failed()) != 5 {
		t.Fatalf("unhealthy: %v", res)
	}
	a.SetHealthy(true)

	// A dead server refuses, and its open connections are closed.
	a.SetDelay(time.Hour)
	done := make(chan *Result)
	go func() { done <- DriveTCP(ctx, a.Addr(), Requests(1)) }()
	waitServing(t, a)
	a.Kill()
	if res := <-done; len(res.Failed()) != 1 {
		t.Fatalf("a connection survived Kill: %v", res)
	}
	a.SetDelay(0)
	if res := DriveTCP(ctx, a.Addr(), Requests(2)); len(res.Failed()) != 2 {
		t.Fatalf("dead: %v", res)
	}
	if err := a.Revive(); err != nil {
		t.Fatal(err)
	}
	if res := DriveTCP(ctx, a.Addr(), Requests(2)); len(res.Failed()) != 0 {
		t.Fatalf("revived: %v", res)
	}
}

// waitServing waits until e has an open connection.
func waitServing(t *testing.T, e *Echo) {
	t.Helper()
	err := WaitFor(context.Background(), 10*time.Second, func(context.Context) error {
		e.mu.Lock()
		defer e.mu.Unlock()
		if len(e.conns) == 0 {
			return errors.New("no connection yet")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestResultHelpers(t *testing.T) {
	ms := time.Millisecond
	r := &Result{Outcomes: []Outcome{
		{Seq: 0, Latency: 5 * ms, Cluster: "east", Instance: "a"},
		{Seq: 1, Latency: 1 * ms, Cluster: "west", Instance: "b"},
		{Seq: 2, Latency: 3 * ms, Cluster: "east", Instance: "a"},
		{Seq: 3, Latency: 9 * ms, Err: errors.New("boom"), Cluster: "west"},
		{Seq: 4, Latency: 2 * ms, Cluster: "east", Instance: "c"},
		{Seq: 5, Latency: 4 * ms, Cluster: "east", Instance: "c"},
	}}
	if f := r.Failed(); len(f) != 1 || f[0].Seq != 3 || r.Succeeded() != 5 {
		t.Fatalf("Failed %v, Succeeded %d", f, r.Succeeded())
	}
	if got := r.ByCluster(); len(got) != 2 || got["east"] != 4 || got["west"] != 1 {
		t.Fatalf("ByCluster %v", got)
	}
	if got := r.ByInstance(); got["east/a"] != 2 || got["east/c"] != 2 || got["west/b"] != 1 {
		t.Fatalf("ByInstance %v", got)
	}
	// Successful latencies sorted: 1 2 3 4 5 (the failure's 9 is ignored).
	for p, want := range map[float64]time.Duration{0: 1 * ms, 20: 1 * ms, 50: 3 * ms, 80: 4 * ms, 99: 5 * ms, 100: 5 * ms} {
		if got := r.Percentile(p); got != want {
			t.Errorf("Percentile(%v) = %v, want %v", p, got, want)
		}
	}
	if (&Result{}).Percentile(50) != 0 {
		t.Error("Percentile of nothing")
	}
}

func TestDriveStopsWithContext(t *testing.T) {
	e := startHTTPEcho(t, Instance{Cluster: "c", Name: "i"})
	e.SetDelay(50 * time.Millisecond)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan *Result)
	go func() { done <- DriveHTTP(ctx, e.URL(), Requests(10_000), Concurrency(2)) }()
	err := WaitFor(context.Background(), 10*time.Second, func(context.Context) error {
		if e.Served() == 0 {
			return errors.New("nothing served yet")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	res := <-done
	if len(res.Outcomes) == 0 || len(res.Outcomes) >= 10_000 {
		t.Fatalf("%d outcomes after cancel", len(res.Outcomes))
	}
	for i, o := range res.Outcomes {
		if o.Seq != i {
			t.Fatalf("outcome %d has seq %d", i, o.Seq)
		}
	}
}

func TestWaitFor(t *testing.T) {
	n := 0
	err := WaitFor(context.Background(), 10*time.Second, func(context.Context) error {
		n++
		if n < 3 {
			return errors.New("not yet")
		}
		return nil
	})
	if err != nil || n != 3 {
		t.Fatalf("err %v after %d calls", err, n)
	}
	err = WaitFor(context.Background(), 30*time.Millisecond, func(context.Context) error { return errors.New("never") })
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "never") {
		t.Fatalf("timeout error %v", err)
	}
	boom := errors.New("boom")
	if err := WaitFor(context.Background(), time.Minute, func(context.Context) error { return permanent(boom) }); !errors.Is(err, boom) {
		t.Fatalf("permanent error %v", err)
	}
}
