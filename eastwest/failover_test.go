package eastwest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshfed/meshfed/gateway/gatewayclient"
	"github.com/meshfed/meshfed/testenv/wan"
)

// triple: east and central export default/web (HTTP) and default/echo;
// west imports them. west reaches east through a WAN link it can cut.
type tripleEnv struct {
	east, central, west *cluster
	eastGW, centralGW   *gw
	westGW              *gw
	link                *wan.Link
	webPort             uint16
	stopEastWeb         func()
}

func startTripleB(b *testing.B) *tripleEnv { return startTriple(b, [2]string{"us-east", "us-east-1b"}) }

func startTriple(t testing.TB, westLocality [2]string) *tripleEnv {
	t.Helper()
	e := &tripleEnv{
		east:    newCluster(t, "east", "us-east", "us-east-1a"),
		central: newCluster(t, "central", "eu-central", "eu-central-1a"),
		west:    newCluster(t, "west", westLocality[0], westLocality[1]),
	}
	webSP := port("http", 8080, "HTTP")
	eastEP, stop := httpEcho(t, "east")
	e.stopEastWeb = stop
	centralEP, _ := httpEcho(t, "central")
	e.eastGW = startGateway(t, e.east, newState(e.east, nil, []*gatewayclient.LocalService{localService("default/web", webSP, eastEP)}, remote{c: e.west}), nil, e.west)
	e.centralGW = startGateway(t, e.central, newState(e.central, nil, []*gatewayclient.LocalService{localService("default/web", webSP, centralEP)}, remote{c: e.west}), nil, e.west)
	e.link = wan.NewLink(1)
	t.Cleanup(func() { _ = e.link.Close() })
	viaLink, err := e.link.Relay("udp", e.eastGW.addr)
	if err != nil {
		t.Fatal(err)
	}
	e.webPort = freePort(t)
	re := remote{c: e.east, gws: []string{viaLink}, ready: 1}
	rc := remote{c: e.central, gws: []string{e.centralGW.addr}, ready: 1}
	e.westGW = startGateway(t, e.west, newState(e.west, []*gatewayclient.Import{importOf("default/web", webSP, e.webPort, re, rc)}, nil, re, rc), nil, e.east, e.central)
	waitFor(t, 5*time.Second, func() error {
		if _, up := e.westGW.g.pool.counts(); up != 2 {
			return fmt.Errorf("%d of 2 remote gateways up", up)
		}
		return nil
	})
	return e
}

// load sends GETs from n clients until stopped and counts the answers by
// cluster, and the failures.
type load struct {
	mu       sync.Mutex
	by       map[string]int
	last     map[string]time.Time
	failures []error
	n        atomic.Int64
	stop     chan struct{}
	wg       sync.WaitGroup
}

func startLoad(t *testing.T, port uint16, clients int) *load {
	l := &load{by: map[string]int{}, last: map[string]time.Time{}, stop: make(chan struct{})}
	url := fmt.Sprintf("http://127.0.0.1:%d/x", port)
	for range clients {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			c := &http.Client{Timeout: 10 * time.Second}
			for {
				select {
				case <-l.stop:
					return
				default:
				}
				resp, err := c.Get(url)
				var body []byte
				if err == nil {
					body, err = io.ReadAll(resp.Body)
					_ = resp.Body.Close()
					if err == nil && resp.StatusCode != 200 {
						err = fmt.Errorf("status %d: %s", resp.StatusCode, body)
					}
				}
				l.n.Add(1)
				l.mu.Lock()
				if err != nil {
					l.failures = append(l.failures, err)
				} else {
					who, _, _ := strings.Cut(string(body), " ")
					l.by[who]++
					l.last[who] = time.Now()
				}
				l.mu.Unlock()
			}
		}()
	}
	return l
}

func (l *load) end() {
	close(l.stop)
	l.wg.Wait()
}

func (l *load) count(who string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.by[who]
}

func TestNearestClusterServesAndLocalityOrder(t *testing.T) {
	// west is in us-east (another zone): east is the same region, so it
	// takes every request while healthy; central none.
	e := startTriple(t, [2]string{"us-east", "us-east-1b"})
	l := startLoad(t, e.webPort, 4)
	waitFor(t, 10*time.Second, func() error {
		if n := l.count("east"); n < 200 {
			return fmt.Errorf("%d answers from east", n)
		}
		return nil
	})
	l.end()
	if n := l.count("central"); n != 0 || len(l.failures) != 0 {
		t.Fatalf("with the same-region cluster healthy, central answered %d and %d failed (%v)", n, len(l.failures), firstErr(l.failures))
	}
}

func firstErr(errs []error) error {
	if len(errs) == 0 {
		return nil
	}
	return errs[0]
}

func TestRemoteGatewayKilledUnderLoadFailsNoRequest(t *testing.T) {
	e := startTriple(t, [2]string{"us-east", "us-east-1b"})
	l := startLoad(t, e.webPort, 8)
	waitFor(t, 10*time.Second, func() error {
		if n := l.count("east"); n < 200 {
			return fmt.Errorf("%d answers from east", n)
		}
		return nil
	})
	// Kill east's gateway: its socket closes with no goodbye, as a
	// SIGKILLed process's would.
	e.eastGW.kill()
	before := l.count("central")
	waitFor(t, 10*time.Second, func() error {
		if n := l.count("central"); n < before+500 {
			return fmt.Errorf("%d answers from central since the kill", n-before)
		}
		return nil
	})
	l.end()
	if len(l.failures) != 0 {
		t.Fatalf("%d of %d requests failed after the remote gateway died; first: %v", len(l.failures), l.n.Load(), l.failures[0])
	}
	t.Logf("%d requests, 0 failed; east %d, central %d", l.n.Load(), l.count("east"), l.count("central"))
}

func TestBlackholedGatewayLeavesSelection(t *testing.T) {
	e := startTriple(t, [2]string{"us-east", "us-east-1b"})
	l := startLoad(t, e.webPort, 8)
	waitFor(t, 10*time.Second, func() error {
		if n := l.count("east"); n < 200 {
			return fmt.Errorf("%d answers from east", n)
		}
		return nil
	})
	cut := time.Now()
	e.link.Partition() // packets silently dropped both ways
	waitFor(t, 10*time.Second, func() error {
		if e.westGW.g.clusterUp(e.east.name) {
			return errors.New("east still selected")
		}
		return nil
	})
	shift := time.Since(cut)
	before := l.count("central")
	waitFor(t, 10*time.Second, func() error {
		if n := l.count("central"); n < before+300 {
			return fmt.Errorf("%d answers from central since the shift", n-before)
		}
		return nil
	})
	l.end()
	if len(l.failures) != 0 {
		t.Fatalf("%d of %d requests failed across the blackhole; first: %v", len(l.failures), l.n.Load(), l.failures[0])
	}
	t.Logf("blackhole to out of selection: %v (budget: probe interval + %d x probe timeout = %v)", shift,
		DefaultConfig().ProbeFailures, DefaultConfig().ProbeInterval+time.Duration(DefaultConfig().ProbeFailures)*DefaultConfig().ProbeTimeout)
	// Healed, east comes back into selection.
	e.link.Heal()
	waitFor(t, 10*time.Second, func() error {
		if !e.westGW.g.clusterUp(e.east.name) {
			return errors.New("east not back")
		}
		return nil
	})
}

func TestDrainFinishesInFlightAndRefusesNew(t *testing.T) {
	p := startPair(t)
	c, err := dialTCP(p.tcpPort)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte("before")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 6)
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { p.westGW.cancel(); done <- <-p.westGW.done; p.westGW.done <- nil }()
	waitFor(t, 5*time.Second, func() error {
		if !p.westGW.g.draining.Load() {
			return errors.New("not draining")
		}
		return nil
	})
	// New connections are refused...
	waitFor(t, 5*time.Second, func() error {
		if c2, err := dialTCP(p.tcpPort); err == nil {
			_ = c2.Close()
			return errors.New("a new connection was accepted while draining")
		}
		return nil
	})
	// ...the one in flight still works, and Run returns once it ends.
	if _, err := c.Write([]byte("during")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "during" {
		t.Fatalf("in-flight connection during the drain: %q, %v", buf, err)
	}
	select {
	case err := <-done:
		t.Fatalf("Run returned (%v) with a connection in flight", err)
	default:
	}
	_ = c.Close()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after the last connection ended")
	}
}

var _ = context.Background

// TestDrainingRemoteKeepsItsConnectionsAndGetsNothingNew: east drains;
// west's probes see it, west sends east no new connection, and the one in
// flight through east keeps working until it ends.
func TestDrainingRemoteKeepsItsConnectionsAndGetsNothingNew(t *testing.T) {
	p := startPair(t)
	c, err := dialTCP(p.tcpPort)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	echo := func(s string) error {
		if _, err := io.WriteString(c, s); err != nil {
			return err
		}
		b := make([]byte, len(s))
		if _, err := io.ReadFull(c, b); err != nil {
			return err
		}
		if string(b) != s {
			return fmt.Errorf("echoed %q, want %q", b, s)
		}
		return nil
	}
	if err := echo("before"); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { p.eastGW.cancel(); done <- <-p.eastGW.done; p.eastGW.done <- nil }()
	waitFor(t, 5*time.Second, func() error {
		if p.westGW.g.clusterUp(p.east.name) {
			return errors.New("west still selects draining east")
		}
		return nil
	})
	if err := echo("during the drain"); err != nil {
		t.Fatalf("the connection in flight through draining east: %v", err)
	}
	if _, up := p.westGW.g.pool.counts(); up != 1 {
		t.Fatalf("west's connection to draining east was closed (%d up)", up)
	}
	_ = c.Close()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("east did not finish draining after its last stream ended")
	}
}

// TestDrainDelayKeepsServingWhileNotReady: after SIGTERM, for DrainDelay
// the gateway answers /readyz 503 but still accepts connections; then it
// drains.
func TestDrainDelayKeepsServingWhileNotReady(t *testing.T) {
	east, west := newCluster(t, "east", "us-east", "us-east-1a"), newCluster(t, "west", "us-west", "us-west-1a")
	ep := tcpEcho(t)
	sp := port("tcp", 9090, "TCP")
	eastGW := startGateway(t, east, newState(east, nil, []*gatewayclient.LocalService{localService("default/echo", sp, ep)}, remote{c: west}), nil, west)
	egress := freePort(t)
	r := remote{c: east, gws: []string{eastGW.addr}, ready: 1}
	westGW := startGateway(t, west, newState(west, []*gatewayclient.Import{importOf("default/echo", sp, egress, r)}, nil, r),
		func(c *Config) { c.DrainDelay = 3 * time.Second }, east) // the checks below take milliseconds
	ready := func() int {
		rec := httptest.NewRecorder()
		westGW.g.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
		return rec.Code
	}
	if code := ready(); code != 200 {
		t.Fatalf("/readyz %d before SIGTERM", code)
	}
	westGW.cancel()
	waitFor(t, 5*time.Second, func() error {
		if code := ready(); code != http.StatusServiceUnavailable {
			return fmt.Errorf("/readyz %d after SIGTERM", code)
		}
		return nil
	})
	c, err := dialTCP(egress)
	if err != nil {
		t.Fatalf("a connection during the drain delay was refused: %v", err)
	}
	defer func() { _ = c.Close() }()
	if _, err := io.WriteString(c, "x"); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 1)
	if _, err := io.ReadFull(c, b); err != nil || b[0] != 'x' {
		t.Fatalf("echo during the drain delay: %q %v", b, err)
	}
	if westGW.g.draining.Load() {
		t.Fatal("draining before the delay ended")
	}
}
