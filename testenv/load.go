package testenv

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"
)

// Load is steady traffic: requests sent at a fixed rate, each on its own,
// until [Load.Stop], whatever happens to the ones before (a request that
// hangs does not hold up the next). Each request is one of [DriveHTTP] or
// [DriveTCP], with the same checks, recorded with when it was sent, so a
// test can tell what happened around a fault it injected at a known time:
//
//	load := central.StartLoad("default/reviews", 100)
//	// ... kill something, wait on load.Since(t) ...
//	res := load.Stop()
//
// The methods are safe for concurrent use.
type Load struct {
	stop     chan struct{}
	stopOnce sync.Once
	done     chan struct{}
	inflight sync.WaitGroup
	start    time.Time

	mu       sync.Mutex
	outcomes []Outcome // completed, in completion order
}

// MaxLoadRate bounds a Load's rate (requests a second).
const MaxLoadRate = 1000

// StartLoad sends rate requests a second (1 to [MaxLoadRate]) to
// "namespace/name" from inside the cluster until Stop, resolved once as
// [ClusterEnv.Drive] resolves it (its targets in turn). Of the options,
// RequestTimeout, Payload and NewConnections apply; Requests and
// Concurrency do not. It fails the test if the service has no targets.
func (c *ClusterEnv) StartLoad(service string, rate int, opts ...DriveOption) *Load {
	targets, err := c.Targets(context.Background(), service)
	if err != nil {
		c.fatal(err)
	}
	for i, t := range targets {
		targets[i] = c.Loopback(t)
	}
	l, err := StartLoad(c.isHTTP(service), targets, rate, opts...)
	if err != nil {
		c.fatal(err)
	}
	return l
}

// StartLoad sends rate requests a second (1 to [MaxLoadRate]) to targets
// in turn until Stop: HTTP GETs of http://<target>/ when http is set, else
// TCP echo exchanges with <target>; targets are host:port on this machine.
// Of the options, RequestTimeout, Payload and NewConnections apply.
func StartLoad(http bool, targets []string, rate int, opts ...DriveOption) (*Load, error) {
	if rate < 1 || rate > MaxLoadRate {
		return nil, fmt.Errorf("testenv: load: rate: %d: must be 1 to %d a second", rate, MaxLoadRate)
	}
	if len(targets) == 0 {
		return nil, errors.New("testenv: load: targets: none")
	}
	one := append(slices.Clone(opts), Requests(1), Concurrency(1))
	send := func(i int) Outcome {
		var res *Result
		if http {
			res = driveHTTP(context.Background(), []string{"http://" + targets[i%len(targets)] + "/"}, one...)
		} else {
			res = driveTCP(context.Background(), []string{targets[i%len(targets)]}, one...)
		}
		return res.Outcomes[0]
	}
	l := &Load{stop: make(chan struct{}), done: make(chan struct{}), start: time.Now()}
	go func() {
		defer close(l.done)
		tick := time.NewTicker(time.Second / time.Duration(rate))
		defer tick.Stop()
		for seq := 0; ; seq++ {
			l.inflight.Add(1)
			go func() {
				defer l.inflight.Done()
				o := send(seq)
				o.Seq = seq
				l.mu.Lock()
				l.outcomes = append(l.outcomes, o)
				l.mu.Unlock()
			}()
			select {
			case <-l.stop:
				return
			case <-tick.C:
			}
		}
	}()
	return l, nil
}

// Outcomes returns the requests answered or failed so far, in the order
// they were sent.
func (l *Load) Outcomes() []Outcome {
	l.mu.Lock()
	out := slices.Clone(l.outcomes)
	l.mu.Unlock()
	slices.SortFunc(out, func(a, b Outcome) int { return a.Seq - b.Seq })
	return out
}

// Since returns the completed requests sent at or after t, in the order
// they were sent.
func (l *Load) Since(t time.Time) *Result {
	var r Result
	for _, o := range l.Outcomes() {
		if !o.Start.Before(t) {
			r.Outcomes = append(r.Outcomes, o)
		}
	}
	return &r
}

// Stop stops sending, waits for the requests in flight, and returns every
// request's outcome in the order they were sent. It may be called more
// than once.
func (l *Load) Stop() *Result {
	l.stopOnce.Do(func() { close(l.stop) })
	<-l.done
	l.inflight.Wait()
	return &Result{Outcomes: l.Outcomes(), Elapsed: time.Since(l.start)}
}
