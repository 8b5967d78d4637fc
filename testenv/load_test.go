package testenv

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// TestLoadRecordsEveryRequestAroundAFault drives an HTTP echo server at a
// steady rate, kills it and revives it: every request sent is recorded, in
// the order sent, the ones sent while it was dead failed and the ones sent
// before and after succeeded.
func TestLoadRecordsEveryRequestAroundAFault(t *testing.T) {
	e, err := StartHTTPEcho(Instance{Cluster: "east", Zone: "z", Name: "e0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close() })
	if _, err := StartLoad(true, []string{e.Addr()}, 0); err == nil {
		t.Fatal("a rate of 0 was accepted")
	}
	l, err := StartLoad(true, []string{e.Addr()}, 200, RequestTimeout(2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Stop() })
	ctx := context.Background()
	waitAnswered := func(since time.Time, ok bool) {
		t.Helper()
		if err := WaitFor(ctx, 10*time.Second, func(context.Context) error {
			r := l.Since(since)
			if n := len(r.Outcomes) - r.Succeeded(); ok && r.Succeeded() < 20 || !ok && n < 20 {
				return fmt.Errorf("%d succeeded, %d failed since %v", r.Succeeded(), n, since)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	waitAnswered(time.Time{}, true)
	killed := time.Now()
	e.Kill()
	waitAnswered(killed, false)
	revived := time.Now()
	if err := e.Revive(); err != nil {
		t.Fatal(err)
	}
	waitAnswered(revived, true)
	res := l.Stop()

	for i, o := range res.Outcomes {
		if o.Seq != i {
			t.Fatalf("outcome %d has Seq %d: a request is missing or out of order", i, o.Seq)
		}
		if i > 0 && o.Start.Before(res.Outcomes[i-1].Start) {
			t.Fatalf("request %d was sent before request %d", i, i-1)
		}
		switch end := o.Start.Add(o.Latency); {
		case end.Before(killed) && !o.OK():
			t.Errorf("request %d, answered before the kill, failed: %v", i, o.Err)
		case o.Start.After(killed) && end.Before(revived) && o.OK():
			t.Errorf("request %d, sent while the server was dead, succeeded", i)
		case o.Start.After(revived) && !o.OK():
			t.Errorf("request %d, sent after the revival, failed: %v", i, o.Err)
		}
	}
	if len(l.Stop().Outcomes) != len(res.Outcomes) {
		t.Error("a second Stop returned other outcomes")
	}
	t.Logf("%v", res)
}
