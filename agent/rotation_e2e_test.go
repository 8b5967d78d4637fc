package agent

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	fedv1 "github.com/meshfed/meshfed/federation/v1"
	"github.com/meshfed/meshfed/gateway/gatewayclient"
	"github.com/meshfed/meshfed/testenv"
	"github.com/meshfed/meshfed/trust"
)

// TestRotationUnderLoadAcrossClusters rotates both clusters' CAs with
// `meshfed trust rotate` while east's gateway keeps long-lived mTLS
// connections to west's gateway and opens new ones all the time. Real
// agents, a real hub, bundles delivered through the hub; short lifetimes
// (1m SVIDs, 1s bundle refresh) so the whole rotation, including the
// retirement of the old roots, fits in about a minute. Zero failed
// handshakes, zero dropped connections.
func TestRotationUnderLoadAcrossClusters(t *testing.T) {
	fed := testenv.Start(t, testenv.Options{HubServers: 1})
	admin := adminClient(t, fed)
	ctx := context.Background()
	short := func(cfg Config) Config {
		cfg.SVIDTTL = time.Minute
		cfg.GatewaySVIDTTL = time.Minute
		cfg.BundleRefresh = time.Second
		cfg.ClockSkew = time.Second
		return cfg
	}
	eastCfg := short(fileConfig(t, "east", "us-east", "us-east-1a", t.TempDir()))
	westCfg := short(fileConfig(t, "west", "us-west", "us-west-1a", t.TempDir()))
	for _, cfg := range []Config{eastCfg, westCfg} {
		writeCatalog(t, cfg.SourcePath, "services: []\n")
		if err := Join(ctx, cfg, createToken(t, admin, cfg.Cluster.String())); err != nil {
			t.Fatal(err)
		}
	}
	east, west := startAgent(t, eastCfg), startAgent(t, westCfg)
	eastGW := startGateway(t, east.a, "east-gw")
	westGW := startGateway(t, west.a, "west-gw")
	hasBoth := func(s *gatewayclient.State) error {
		for _, td := range []string{"east.meshfed.local", "west.meshfed.local"} {
			if _, ok := s.Bundles[td]; !ok {
				return fmt.Errorf("no bundle for %s", td)
			}
		}
		return nil
	}
	waitGateway(t, eastGW, 30*time.Second, hasBoth)
	waitGateway(t, westGW, 30*time.Second, hasBoth)
	s, _ := eastGW.c.State()
	oldWest := s.Bundles["west.meshfed.local"].GetX509Authorities()[0]
	oldEast := s.Bundles["east.meshfed.local"].GetX509Authorities()[0]

	srv := newGuardedServer(t, westGW.c)
	clientTLS := trust.ClientTLS(eastGW.c, eastGW.c.Bundles(), trust.AuthorizeID(trust.GatewayID(westGW.c.TrustDomain())))
	dial := func() (*tls.Conn, error) { return tls.Dial("tcp", srv.addr, clientTLS) }

	var handshakes, failed, echoes, dropped atomic.Int64
	var mu sync.Mutex
	var errs []string
	fail := func(c *atomic.Int64, err error) {
		c.Add(1)
		mu.Lock()
		if len(errs) < 10 {
			errs = append(errs, err.Error())
		}
		mu.Unlock()
	}
	lctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for range 4 { // long-lived connections, an echo every 50ms
		conn, err := dial()
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { _ = conn.Close() }()
			tick := time.NewTicker(50 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-lctx.Done():
					return
				case <-tick.C:
				}
				if err := echoOnce(conn); err != nil {
					fail(&dropped, fmt.Errorf("long-lived connection: %w", err))
					return
				}
				echoes.Add(1)
			}
		}()
	}
	wg.Add(1)
	go func() { // new handshakes, back to back with a 20ms pause
		defer wg.Done()
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-lctx.Done():
				return
			case <-tick.C:
			}
			conn, err := dial()
			if err == nil {
				err = echoOnce(conn)
				_ = conn.Close()
			}
			if err != nil {
				fail(&failed, fmt.Errorf("new handshake: %w", err))
				continue
			}
			handshakes.Add(1)
		}
	}()

	for _, c := range []string{"west", "east"} {
		if _, err := admin.RotateCA(ctx, &fedv1.RotateCARequest{Cluster: c}); err != nil {
			t.Fatal(err)
		}
	}
	// Done when both bundles, as east's gateway has them, hold exactly one
	// root and it is not the old one: published, switched, old retired.
	rotated := func(s *gatewayclient.State) error {
		for td, old := range map[string][]byte{"west.meshfed.local": oldWest, "east.meshfed.local": oldEast} {
			as := s.Bundles[td].GetX509Authorities()
			if len(as) != 1 || bytes.Equal(as[0], old) {
				return fmt.Errorf("%s: %d roots, old one present: %v", td, len(as), len(as) > 0 && bytes.Equal(as[0], old))
			}
		}
		return nil
	}
	waitGateway(t, eastGW, 3*time.Minute, rotated)
	waitGateway(t, westGW, 30*time.Second, rotated)
	// And both gateways' SVIDs now chain to the new roots.
	if err := testenv.WaitFor(ctx, 60*time.Second, func(context.Context) error {
		for _, g := range []*gateway{eastGW, westGW} {
			svid, err := g.c.GetX509SVID()
			if err != nil {
				return err
			}
			if _, _, err := x509svid.Verify(svid.Certificates, g.c.Bundles()); err != nil {
				return fmt.Errorf("%s: %w", svid.ID, err)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	stop()
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	t.Logf("during the rotation: %d new handshakes, %d failed; %d echoes on 4 long-lived connections, %d dropped; guard closed %d",
		handshakes.Load(), failed.Load(), echoes.Load(), dropped.Load(), srv.guard.Closed())
	if failed.Load() != 0 || dropped.Load() != 0 || srv.guard.Closed() != 0 {
		t.Fatalf("failures: %v", errs)
	}
	if handshakes.Load() < 100 || echoes.Load() < 100 {
		t.Fatalf("too little load to show anything: %d handshakes, %d echoes", handshakes.Load(), echoes.Load())
	}
}
