package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/meshfed/meshfed/testenv"
)

// A shared federation is started by the first test that asks for it and
// closed after the last test of the package (TestMain). Tests that share one
// leave it as they found it: what a story breaks, it repairs, in
// t.Cleanup, and each story first waits for the healthy baseline.
type shared struct {
	name    string
	opts    testenv.Options
	prepare func(ctx context.Context, fed *testenv.Federation) error

	once sync.Once
	fed  *testenv.Federation
	err  error
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
	s.once.Do(func() {
		start := time.Now()
		s.fed, s.err = s.start()
		t.Logf("federation %q: started in %v", s.name, time.Since(start).Round(time.Millisecond))
	})
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

func TestMain(m *testing.M) {
	code := m.Run()
	for _, s := range sharedFeds {
		if s.fed != nil {
			if err := s.fed.Close(); err != nil {
				fmt.Fprintf(os.Stderr, "federation %q: close: %v\n", s.name, err)
			}
		}
	}
	os.Exit(code)
}
