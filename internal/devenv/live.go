package devenv

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/meshfed/meshfed/federation"
)

// The live view: once the federation is ready, meshfed dev calls
// default/reviews from central, through central's egress, at
// Config.LiveRate calls a second, and shows every Config.LivePeriod which
// cluster answered how many calls and how many failed, with the faults in
// force:
//
//	20:41:07 central → reviews: east 5, west 5, failed 0
//	20:41:08 central → reviews: east 10, west 0, failed 0  (failed on purpose: west gateway)
//
// A call that gets no answer within its timeout counts as failed, in the
// period it ends in. The client keeps its connections alive, as an
// application would.

// liveFrom and liveTo are the calls the live view makes.
var (
	liveFrom = federation.MustClusterName("central")
	liveTo   = reviews
)

// liveCallTimeout bounds one call of the live view.
const liveCallTimeout = 2 * time.Second

// liveView counts the answers of one period. Safe for concurrent use.
type liveView struct {
	clusters []string // shown even when they answered nothing, in this order

	mu      sync.Mutex
	counts  map[string]int
	failed  int
	lastSig string // what the last kept line showed
}

func newLiveView() *liveView {
	v := &liveView{counts: map[string]int{}}
	for _, c := range topology {
		for _, ex := range c.exports {
			if ex.svc.key == liveTo.key {
				v.clusters = append(v.clusters, c.name.String())
			}
		}
	}
	return v
}

// record counts one call: answered by cluster, or failed (err).
func (v *liveView) record(cluster string, err error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if err != nil {
		v.failed++
		return
	}
	v.counts[cluster]++
}

// flush returns the period's line and starts the next period. keep
// reports a change worth keeping in a terminal's scrollback: other
// clusters answering, calls starting or stopping to fail, other faults.
func (v *liveView) flush(now time.Time, failures []Failure) (line string, keep bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	names := slices.Clone(v.clusters)
	for c := range v.counts {
		if !slices.Contains(names, c) {
			names = append(names, c)
		}
	}
	slices.Sort(names[len(v.clusters):])
	var parts, answering []string
	for _, c := range names {
		parts = append(parts, fmt.Sprintf("%s %d", c, v.counts[c]))
		if v.counts[c] > 0 {
			answering = append(answering, c)
		}
	}
	parts = append(parts, fmt.Sprintf("failed %d", v.failed))
	line = fmt.Sprintf("%s %s → %s: %s", now.Format("15:04:05"), liveFrom, liveTo.key.Name(), strings.Join(parts, ", "))
	var fs []string
	for _, f := range failures {
		fs = append(fs, f.String())
	}
	if len(fs) > 0 {
		line += "  (failed on purpose: " + strings.Join(fs, ", ") + ")"
	}
	sig := fmt.Sprintf("%v %v %v", answering, v.failed > 0, fs)
	keep = sig != v.lastSig
	v.lastSig = sig
	v.counts = map[string]int{}
	v.failed = 0
	return line, keep
}

// runLive makes the live view's calls and shows a line every period until
// ctx is done; it returns once every call it made has ended.
func (e *Env) runLive(ctx context.Context) {
	e.mu.Lock()
	var addr string
	for _, cr := range e.clusters {
		if cr.spec.name == liveFrom {
			addr = cr.egress[EgressKey(liveTo.key, liveTo.port)]
		}
	}
	e.mu.Unlock()
	url := "http://" + addr + "/meshfed-dev/live"
	client := &http.Client{Timeout: liveCallTimeout, Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
	defer client.CloseIdleConnections()
	v := newLiveView()
	var calls sync.WaitGroup
	defer calls.Wait()
	callEvery := time.NewTicker(time.Second / time.Duration(e.cfg.LiveRate))
	defer callEvery.Stop()
	show := time.NewTicker(e.cfg.LivePeriod)
	defer show.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-callEvery.C:
			calls.Go(func() {
				c, err := call(ctx, client, url, liveTo.key)
				if ctx.Err() == nil { // not a call cut by the stop
					v.record(c, err)
				}
			})
		case now := <-show.C:
			line, keep := v.flush(now, e.Failures())
			e.console.Status(line, keep)
		}
	}
}
