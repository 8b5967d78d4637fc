package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/meshfed/meshfed/testenv"
)

// A shared federation is started by the first test that asks for it and
// closed after the last test of the package (TestMain), or when a test
// asks for another: one federation runs at a time. Two at once would take
// the same egress ports (testenv gives the cluster of index i the same
// range in every federation) and a gateway of one would answer the other's
// calls; one at a time also bounds what a 2-core machine runs. The test
// files are named in story order, which is the order go test runs them, so
// each federation starts once. Tests that share one leave it as they found
// it: what a story breaks, it repairs, in t.Cleanup, and each story first
// waits for the healthy baseline.
type shared struct {
	name    string
	opts    testenv.Options
	prepare func(ctx context.Context, fed *testenv.Federation) error

	fed *testenv.Federation // nil when not running
	err error               // of the last start
}

var sharedFeds []*shared

func newShared(name string, opts testenv.Options, prepare func(ctx context.Context, fed *testenv.Federation) error) *shared {
	s := &shared{name: name, opts: opts, prepare: prepare}
	sharedFeds = append(sharedFeds, s)
	return s
}

// get returns the federation, starting it on first use. A test that fails
// logs the tails of every process's log.
func (s *shared) get(t testing.TB) *testenv.Federation {
	t.Helper()
	closeShared(s)
	if s.fed == nil && s.err == nil {
		start := time.Now()
		s.fed, s.err = s.start()
		t.Logf("federation %q: started in %v", s.name, time.Since(start).Round(time.Millisecond))
	}
	if s.err != nil {
		t.Fatalf("federation %q: %v", s.name, s.err)
	}
	fed := s.fed
	t.Cleanup(func() {
		if t.Failed() {
			t.Log(fed.LogTails(3000))
		}
	})
	return fed
}

// start starts the federation and prepares it (workloads, exports, the
// baseline). The testenv helpers of a federation made by New panic on
// error, as there is no test to fail: that is an error here too.
func (s *shared) start() (*testenv.Federation, error) {
	ctx := context.Background()
	fed, err := testenv.New(ctx, s.opts)
	if err != nil {
		return nil, err
	}
	err = func() (err error) {
		defer func() {
			if r := recover(); r != nil {
				if e, ok := r.(error); ok {
					err = e
				} else {
					err = fmt.Errorf("%v", r)
				}
			}
		}()
		return s.prepare(ctx, fed)
	}()
	if err != nil {
		err = fmt.Errorf("%w\n%s", err, fed.LogTails(3000))
		return nil, errors.Join(err, fed.Close())
	}
	return fed, nil
}

// closeShared closes every running shared federation but keep (nil: all).
// A federation that failed to start is tried again by the next test that
// asks for it after another one ran.
func closeShared(keep *shared) {
	for _, s := range sharedFeds {
		if s == keep {
			continue
		}
		s.err = nil
		if s.fed == nil {
			continue
		}
		if err := s.fed.Close(); err != nil {
			fmt.Fprintf(os.Stderr, "federation %q: close: %v\n", s.name, err)
		}
		s.fed = nil
	}
}

func TestMain(m *testing.M) {
	code := m.Run()
	closeShared(nil)
	os.Exit(code)
}
