package e2e

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	gatewayv1 "github.com/meshfed/meshfed/gateway/v1"
	"github.com/meshfed/meshfed/testenv"
)

// markers numbers the services TestHubDownLosesNoRequestAndChurnsNothing
// exports as its barrier: a shared federation outlives one run of a test
// (go test -count 2), and a workload is deployed once.
var markers atomic.Int64

// startHubServers starts every hub server that is not running, all at
// once (a server is ready only once a quorum is back), and waits until
// every one is ready.
func startHubServers(ctx context.Context, h *testenv.Hub) error {
	var wg sync.WaitGroup
	errs := make([]error, len(h.Servers()))
	for i, s := range h.Servers() {
		if s.Running() {
			continue
		}
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = s.Start() }()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	return h.WaitReady(ctx, 60*time.Second)
}

// waitHubConnected waits until every cluster's agent says it is connected
// to the hub (want) or not.
func waitHubConnected(t testing.TB, fed *testenv.Federation, want bool) {
	t.Helper()
	if err := testenv.WaitFor(context.Background(), 60*time.Second, func(ctx context.Context) error {
		for _, c := range fed.Clusters() {
			st, err := c.Agent().State(ctx)
			if err != nil {
				return err
			}
			if st.Hub.Connected != want {
				return fmt.Errorf("%s's agent: hub connected %v, want %v", c.Name(), st.Hub.Connected, want)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// TestHubDownLosesNoRequestAndChurnsNothing is story 5. Under a steady
// load from central on reviews (exported by east), every hub server is
// SIGKILLed; the agents see the hub gone, and the load goes on for 5 s
// more with no request failing. The servers restart and the agents
// reconnect, and nothing is rewritten: no write to central's import
// objects of reviews (ServiceImport, derived Service, EndpointSlices) and
// no message on central's gateway config stream but the hub's state
// (disconnected, then connected), up to a barrier, a service east exports
// after the reconnection, which arrives alone.
func TestHubDownLosesNoRequestAndChurnsNothing(t *testing.T) {
	fed := hubs.get(t)
	baseline(t, fed, "east")
	east, central := fed.Cluster("east"), fed.Cluster("central")
	ctx := context.Background()
	t.Cleanup(func() {
		if err := startHubServers(ctx, fed.Hub()); err != nil {
			t.Error(err)
		}
	})

	writes := watchImports(t, central)
	obs := observeGatewayConfig(t, central)
	if err := testenv.WaitFor(ctx, 30*time.Second, func(context.Context) error {
		if len(obs.all()) == 0 {
			return errors.New("no config on the observer's stream yet")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	load := central.StartLoad("default/reviews", loadRate)
	t.Cleanup(func() { load.Stop() })
	settled(t, load, "before", time.Now(), "east")

	down := time.Now()
	for _, s := range fed.Hub().Servers() {
		if err := s.Kill(); err != nil {
			t.Fatal(err)
		}
	}
	waitHubConnected(t, fed, false)
	// A while with the hub gone: 5 s of load after the agents knew.
	knew := time.Now()
	settled(t, load, "hub down", knew.Add(-settleWindow*time.Second/loadRate), "east")
	if err := testenv.WaitFor(ctx, 30*time.Second, func(context.Context) error {
		if n := len(load.Since(knew).Outcomes); n < 5*loadRate {
			return fmt.Errorf("%d requests answered with the hub down", n)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	up := time.Now()
	if err := startHubServers(ctx, fed.Hub()); err != nil {
		t.Fatal(err)
	}
	waitHubConnected(t, fed, true)
	back := time.Now()

	// The barrier: a service east exports now reaches central (its import
	// objects, its gateway config) after whatever the reconnection caused.
	marker := fmt.Sprintf("marker-%d", markers.Add(1))
	east.Deploy(testenv.EchoHTTP("default/"+marker, 1))
	east.Export("default/" + marker)
	t.Cleanup(func() { east.Unexport("default/" + marker) })
	var barrier time.Time
	if err := testenv.WaitFor(ctx, 60*time.Second, func(ctx context.Context) error {
		if _, err := central.Clientset().CoreV1().Services("default").Get(ctx, "meshfed-"+marker, metav1.GetOptions{}); err != nil {
			return err
		}
		for _, o := range obs.all() {
			for _, im := range o.m.GetImports() {
				if im.GetService() == "default/"+marker {
					barrier = o.at
					return nil
				}
			}
		}
		return fmt.Errorf("default/%s not on central's gateway config stream yet", marker)
	}); err != nil {
		t.Fatal(err)
	}
	res := load.Stop()

	if f := res.Failed(); len(f) > 0 {
		t.Errorf("%d of %d requests failed; first, sent %v after the kill: %v", len(f), len(res.Outcomes), f[0].Start.Sub(down).Round(time.Millisecond), f[0].Err)
	}
	during := (&phase{from: down, to: back}).of(res.Outcomes)
	t.Logf("hub down %v (agents disconnected after %v, restart took %v): %v", back.Sub(down).Round(time.Millisecond),
		knew.Sub(down).Round(time.Millisecond), back.Sub(up).Round(time.Millisecond), during)

	// The watches deliver after the Get above saw the marker's Service:
	// once they have shown its ServiceImport and Service, they have shown
	// every earlier write to those kinds, reviews' included.
	if err := testenv.WaitFor(ctx, 30*time.Second, func(context.Context) error {
		seen := map[string]bool{}
		for _, w := range writes.of(marker) {
			seen[w.kind] = true
		}
		if !seen["ServiceImport"] || !seen["Service"] {
			return fmt.Errorf("the watches saw %v of %s's import: want its ServiceImport and Service, or they would not have seen reviews' either", writes.of(marker), marker)
		}
		return nil
	}); err != nil {
		t.Error(err)
	}
	if w := writes.of("reviews"); len(w) > 0 {
		t.Errorf("writes to central's import objects of reviews across the hub's outage: %v", w)
	}
	hubOnly := 0
	for _, o := range obs.all() {
		switch {
		case o.at.Before(down):
		case o.at.Before(barrier):
			if !onlyHubState(o.m) {
				t.Errorf("central's gateway config changed %v after the kill: %v", o.at.Sub(down).Round(time.Millisecond), o.m)
			}
			hubOnly++
		case o.at.Equal(barrier):
			rest := proto.Clone(o.m).(*gatewayv1.StreamResponse)
			rest.Imports = slices.DeleteFunc(rest.Imports, func(im *gatewayv1.Import) bool { return im.GetService() == "default/"+marker })
			if !onlyHubState(rest) {
				t.Errorf("the barrier's message changed more than %s's import: %v", marker, o.m)
			}
		}
	}
	t.Logf("central's gateway config: %d messages from the kill to the barrier, each only the hub's state", hubOnly)
}
