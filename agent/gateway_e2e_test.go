package agent

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/meshfed/meshfed/federation"
	fedv1 "github.com/meshfed/meshfed/federation/v1"
	"github.com/meshfed/meshfed/gateway/gatewayclient"
	gatewayv1 "github.com/meshfed/meshfed/gateway/v1"
	"github.com/meshfed/meshfed/testenv"
	"github.com/meshfed/meshfed/trust"
)

// gateway is a gateway replica's client of its agent, run until the test
// ends.
type gateway struct {
	c    *gatewayclient.Client
	done chan error
	stop context.CancelFunc
}

func startGateway(t testing.TB, a *Agent, instance string) *gateway {
	t.Helper()
	if err := testenv.WaitFor(context.Background(), 20*time.Second, func(context.Context) error {
		if a.GatewayAPIAddr() == "" {
			return errors.New("the agent's gateway API is not listening yet")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// Written before the API listens: a file, or a Secret in-cluster.
	st, err := openStores(a.cfg)
	if err != nil {
		t.Fatal(err)
	}
	boot, err := st.gwBoot.Load()
	if err != nil {
		t.Fatal(err)
	}
	cc := gatewayclient.Config{Agent: a.GatewayAPIAddr(), Bootstrap: boot, Instance: instance,
		ReconnectMin: 20 * time.Millisecond, ReconnectMax: 300 * time.Millisecond, Log: testLogger(t, instance)}
	if a.cfg.Source == SourceKubernetes {
		// In-cluster a gateway authenticates by its ServiceAccount.
		cc.ServiceAccountToken = serviceAccountToken(t, a, a.cfg.GatewayServiceAccount)
	}
	c, err := gatewayclient.New(cc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	g := &gateway{c: c, done: make(chan error, 1), stop: cancel}
	go func() { g.done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-g.done; err != nil {
			t.Errorf("gateway %s: %v", instance, err)
		}
	})
	return g
}

// waitGateway polls the gateway's config until cond returns nil.
func waitGateway(t testing.TB, g *gateway, timeout time.Duration, cond func(*gatewayclient.State) error) *gatewayclient.State {
	t.Helper()
	var last *gatewayclient.State
	err := testenv.WaitFor(context.Background(), timeout, func(context.Context) error {
		s, ok := g.c.State()
		if !ok {
			return fmt.Errorf("no snapshot yet (last stream error: %v)", g.c.LastError())
		}
		last = s
		return cond(s)
	})
	if err != nil {
		t.Fatalf("%v\nlast config: %+v", err, last)
	}
	return last
}

func importReady(key, cluster string, ready uint32) func(*gatewayclient.State) error {
	return func(s *gatewayclient.State) error {
		im := s.Imports[federation.MustServiceKey(key)]
		if im == nil {
			return fmt.Errorf("no import %s", key)
		}
		for _, c := range im.Clusters {
			if c.Cluster.String() != cluster {
				continue
			}
			if n := uint32(c.Ready()); n != ready {
				return fmt.Errorf("import %s from %s: %d ready, want %d", key, cluster, n, ready)
			}
			return nil
		}
		return fmt.Errorf("import %s has no cluster %s", key, cluster)
	}
}

func TestGatewayConfigStream(t *testing.T) {
	fed := testenv.Start(t, testenv.Options{HubServers: 1})
	admin := adminClient(t, fed)
	ctx := context.Background()
	top := t // agents and gateways started in subtests outlive them

	eastCfg := fileConfig(t, "east", "us-east", "us-east-1a", t.TempDir())
	writeCatalog(t, eastCfg.SourcePath, reviewsCatalog)
	if err := Join(ctx, eastCfg, createToken(t, admin, "east")); err != nil {
		t.Fatal(err)
	}
	east := startAgent(t, eastCfg)
	westCfg := fileConfig(t, "west", "us-west", "us-west-1a", t.TempDir())
	westCfg.GatewayAddresses = []string{"127.0.0.1:15443"}
	writeCatalog(t, westCfg.SourcePath, "services: []\n")
	if err := Join(ctx, westCfg, createToken(t, admin, "west")); err != nil {
		t.Fatal(err)
	}
	west := startAgent(t, westCfg)
	waitState(t, west.a, 30*time.Second, hasImportFrom("default/reviews", "east"))

	// Two replicas of each cluster's gateway follow their agent.
	eastGW := startGateway(t, east.a, "east-gw-0")
	westGWs := []*gateway{startGateway(t, west.a, "west-gw-0"), startGateway(t, west.a, "west-gw-1")}
	for _, g := range westGWs {
		s := waitGateway(t, g, 20*time.Second, importReady("default/reviews", "east", 1))
		im := s.Imports[federation.MustServiceKey("default/reviews")]
		if len(im.Ports) != 1 || im.Ports[0].Egress < DefaultEgressPortMin || im.Ports[0].Port != 8080 {
			t.Errorf("import ports = %v, want 8080 with an egress port from %d", im.Ports, DefaultEgressPortMin)
		}
		if c := s.Clusters[federation.MustClusterName("east")]; c == nil || c.Locality.Zone() != "us-east-1a" || c.TrustDomain.Name() != "east.meshfed.local" {
			t.Errorf("remote cluster east = %v", c)
		}
		if s.Self.Cluster.String() != "west" || s.Self.TrustDomain.Name() != "west.meshfed.local" || s.Self.Ingress.ALPN == "" {
			t.Errorf("self = %+v, want west with its trust domain and an ALPN", s.Self)
		}
		if _, self := s.Clusters[federation.MustClusterName("west")]; self {
			t.Error("the gateway's own cluster is listed as remote")
		}
		for _, td := range []string{"east.meshfed.local", "west.meshfed.local"} {
			if _, ok := s.Bundles[td]; !ok || !g.c.Bundles().Has(spiffeTD(t, td)) {
				t.Errorf("bundle of %s missing", td)
			}
		}
		if !s.Hub.Connected || s.Hub.Revision == 0 {
			t.Errorf("hub state = %v, want connected with a revision", s.Hub)
		}
		svid, err := g.c.GetX509SVID()
		if err != nil || svid.ID.String() != "spiffe://west.meshfed.local/meshfed/gateway" {
			t.Errorf("gateway SVID = %v, %v", svid, err)
		}
	}
	// The egress port in the stream is the one the agent shows.
	st := west.a.State()
	s, _ := westGWs[0].c.State()
	if got, want := findImport(st, "default/reviews").Egress["http"], int(s.Imports[federation.MustServiceKey("default/reviews")].Ports[0].Egress); got != want {
		t.Errorf("agent status egress %d, stream %d", got, want)
	}
	waitState(t, west.a, 10*time.Second, func(st State) error {
		if len(st.Gateways) != 2 {
			return fmt.Errorf("%d gateways in the status, want 2", len(st.Gateways))
		}
		return nil
	})

	// East's gateway sees its local endpoints, with addresses and labels.
	es := waitGateway(t, eastGW, 10*time.Second, func(s *gatewayclient.State) error {
		if l := s.Local[federation.MustServiceKey("default/reviews")]; l == nil || len(l.Endpoints) != 2 {
			return fmt.Errorf("local default/reviews = %v, want 2 endpoints", l)
		}
		return nil
	})
	ep := es.Local[federation.MustServiceKey("default/reviews")].Endpoints[0]
	if ep.Addr.String() != "127.0.0.1" || len(ep.Ports) != 1 || ep.Ports["http"] != 9001 || ep.Labels["version"] != "v1" || !ep.Ready {
		t.Errorf("endpoint = %v, want 127.0.0.1 port 9001, version=v1, ready", ep)
	}

	t.Run("HealthChangeReachesRemoteGateways", func(t *testing.T) {
		writeCatalog(t, eastCfg.SourcePath, strings.Replace(reviewsCatalog, "ready: false", "ready: true", 1))
		for _, g := range westGWs {
			waitGateway(t, g, 20*time.Second, importReady("default/reviews", "east", 2))
		}
	})

	t.Run("RefusesCallersWithoutCredentials", func(t *testing.T) {
		boot, err := os.ReadFile(filepath.Join(westCfg.DataDir, GatewayBootstrapFile))
		if err != nil {
			t.Fatal(err)
		}
		bad := strings.Replace(string(boot), `"token": "`, `"token": "x`, 1)
		c, err := gatewayclient.New(gatewayclient.Config{Agent: west.a.GatewayAPIAddr(), Bootstrap: []byte(bad), Instance: "intruder"})
		if err != nil {
			t.Fatal(err)
		}
		rctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		if err := c.Run(rctx); err == nil || !strings.Contains(err.Error(), "bootstrap_token") {
			t.Fatalf("Run with a wrong token: %v, want the bootstrap refused", err)
		}
		// No client certificate at all: the stream is refused.
		conn, err := grpc.NewClient(west.a.GatewayAPIAddr(), grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{InsecureSkipVerify: true}))) //nolint:gosec // the test is the attacker
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = conn.Close() }()
		st, err := gatewayv1.NewConfigClient(conn).Stream(rctx, &gatewayv1.StreamRequest{Instance: "intruder"})
		if err == nil {
			_, err = st.Recv()
		}
		if status.Code(err) != codes.Unauthenticated {
			t.Fatalf("stream without a certificate: %v, want Unauthenticated", err)
		}
		// East's gateway SVID is not west's gateway.
		eastSVID, err := eastGW.c.GetX509SVID()
		if err != nil {
			t.Fatal(err)
		}
		cfg := trust.ClientTLS(eastSVID, eastGW.c.Bundles(), trust.AuthorizeFederated())
		conn2, err := grpc.NewClient(west.a.GatewayAPIAddr(), grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = conn2.Close() }()
		st2, err := gatewayv1.NewConfigClient(conn2).Stream(rctx, &gatewayv1.StreamRequest{Instance: "intruder"})
		if err == nil {
			_, err = st2.Recv()
		}
		if err == nil {
			t.Fatal("east's gateway SVID opened west's config stream")
		}
		t.Log(err)
	})

	t.Run("HubDownConfigStaysServed", func(t *testing.T) {
		for _, s := range fed.Hub().Servers() {
			if err := s.Kill(); err != nil {
				t.Fatal(err)
			}
		}
		for _, g := range westGWs {
			waitGateway(t, g, 20*time.Second, func(s *gatewayclient.State) error {
				if s.Hub.Connected {
					return errors.New("still connected")
				}
				return importReady("default/reviews", "east", 2)(s)
			})
		}
		// A replica that starts now gets the last good config.
		late := startGateway(t, west.a, "west-gw-2")
		waitGateway(t, late, 20*time.Second, importReady("default/reviews", "east", 2))

		// The agent restarts while the hub is down: its gateways get the
		// cached config, marked as such.
		west.stop(t)
		west = startAgent(top, westCfg)
		g := startGateway(t, west.a, "west-gw-3")
		s := waitGateway(t, g, 20*time.Second, importReady("default/reviews", "east", 2))
		if !s.Hub.Cached || s.Hub.Connected {
			t.Errorf("hub state after a restart without the hub = %v, want cached and disconnected", s.Hub)
		}
		if c := s.Clusters[federation.MustClusterName("east")]; c == nil {
			t.Error("remote cluster east missing from the cached config")
		}

		for _, s := range fed.Hub().Servers() {
			if err := s.Start(); err != nil {
				t.Fatal(err)
			}
		}
		waitGateway(t, g, 30*time.Second, func(s *gatewayclient.State) error {
			if !s.Hub.Connected || s.Hub.Cached {
				return fmt.Errorf("hub state %v, want connected", s.Hub)
			}
			return importReady("default/reviews", "east", 2)(s)
		})
	})

	t.Run("RemovedClusterIsRefusedAndCut", func(t *testing.T) {
		// West's gateway serves mTLS with the federated bundle set its
		// agent streams; east's gateway connects and stays connected.
		wg := startGateway(t, west.a, "west-gw-4")
		waitGateway(t, wg, 20*time.Second, func(s *gatewayclient.State) error {
			if _, ok := s.Bundles["east.meshfed.local"]; !ok {
				return errors.New("no east bundle")
			}
			return nil
		})
		srv := newGuardedServer(t, wg.c)
		dial := func() (*tls.Conn, error) {
			return tls.Dial("tcp", srv.addr, trust.ClientTLS(eastGW.c, eastGW.c.Bundles(), trust.AuthorizeID(trust.GatewayID(wg.c.TrustDomain()))))
		}
		long, err := dial()
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = long.Close() }()
		if err := echoOnce(long); err != nil {
			t.Fatalf("established connection: %v", err)
		}

		start := time.Now()
		if _, err := admin.RemoveCluster(ctx, &fedv1.RemoveClusterRequest{Name: "east"}); err != nil {
			t.Fatal(err)
		}
		// New handshakes are refused once west's gateway has the new set,
		// well within one bundle refresh interval.
		if err := testenv.WaitFor(ctx, 20*time.Second, func(context.Context) error {
			c, err := dial()
			if err != nil {
				return nil
			}
			defer func() { _ = c.Close() }()
			if err := echoOnce(c); err != nil {
				return nil // refused after the client's handshake finished
			}
			return errors.New("a handshake from removed cluster east still succeeds")
		}); err != nil {
			t.Fatal(err)
		}
		refusedAfter := time.Since(start)
		// The established connection was cut.
		if err := testenv.WaitFor(ctx, 10*time.Second, func(context.Context) error {
			if echoOnce(long) == nil {
				return errors.New("the established connection from east still works")
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if refusedAfter > westCfg.BundleRefresh {
			t.Errorf("refused after %v, more than one refresh interval (%v)", refusedAfter, westCfg.BundleRefresh)
		}
		t.Logf("removed cluster refused after %v; established connections cut: %d", refusedAfter, srv.guard.Closed())
		// And east's agent learns it was removed: it stops.
		east.waitRemoved(t, time.Minute)
	})
}

func spiffeTD(t testing.TB, s string) spiffeid.TrustDomain {
	t.Helper()
	td, err := spiffeid.TrustDomainFromString(s)
	if err != nil {
		t.Fatal(err)
	}
	return td
}

// guardedServer is a gateway's mTLS listener in miniature: trust.ServerTLS
// over the gateway client's SVID and federated bundles, a ConnGuard on
// every connection, and a one-byte echo.
type guardedServer struct {
	addr  string
	guard *trust.ConnGuard
}

func newGuardedServer(t testing.TB, c *gatewayclient.Client) *guardedServer {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", trust.ServerTLS(c, c.Bundles(), trust.AuthorizeFederated()))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &guardedServer{addr: ln.Addr().String(), guard: trust.NewConnGuard(c.Bundles())}
	done := make(chan struct{})
	go func() { _ = s.guard.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); _ = ln.Close(); <-done })
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				tc := conn.(*tls.Conn)
				defer func() { _ = tc.Close() }()
				if err := tc.HandshakeContext(ctx); err != nil {
					return
				}
				defer s.guard.Track(tc)()
				buf := make([]byte, 1)
				for {
					if _, err := io.ReadFull(tc, buf); err != nil {
						return
					}
					if _, err := tc.Write(buf); err != nil {
						return
					}
				}
			}()
		}
	}()
	return s
}

// echoOnce sends a byte and waits for it back.
func echoOnce(c *tls.Conn) error {
	if err := c.SetDeadline(time.Now().Add(5 * time.Second)); err != nil {
		return err
	}
	if _, err := c.Write([]byte{7}); err != nil {
		return err
	}
	b := make([]byte, 1)
	if _, err := io.ReadFull(c, b); err != nil {
		return err
	}
	if b[0] != 7 {
		return fmt.Errorf("echo %d, want 7", b[0])
	}
	return nil
}

// serviceAccountToken creates the ServiceAccount sa in the agent's
// namespace (if missing) and returns a source of its tokens (TokenRequest,
// as the kubelet mounts them).
func serviceAccountToken(t testing.TB, a *Agent, sa string) func() (string, error) {
	return serviceAccountTokenFor(t, a, sa, GatewayTokenAudience)
}

// serviceAccountTokenFor is serviceAccountToken for any audience.
func serviceAccountTokenFor(t testing.TB, a *Agent, sa, audience string) func() (string, error) {
	t.Helper()
	rc, err := kubeRESTConfig(a.cfg)
	if err != nil {
		t.Fatal(err)
	}
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	_, err = cs.CoreV1().ServiceAccounts(a.cfg.Namespace).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	return func() (string, error) {
		exp := int64(3600)
		tr, err := cs.CoreV1().ServiceAccounts(a.cfg.Namespace).CreateToken(ctx, sa, &authnv1.TokenRequest{Spec: authnv1.TokenRequestSpec{
			ExpirationSeconds: &exp, Audiences: []string{audience}}}, metav1.CreateOptions{})
		if err != nil {
			return "", err
		}
		return tr.Status.Token, nil
	}
}
