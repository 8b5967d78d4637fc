package hub

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	fedv1 "github.com/meshfed/meshfed/federation/v1"
	"github.com/meshfed/meshfed/internal/spiretest"
	"github.com/meshfed/meshfed/trust/x509pem"
)

// tcpBalancer is a layer-4 load balancer in front of the hub's bundle
// endpoints: it passes TLS through to the backend chosen by use, and
// counts the connections each backend took.
type tcpBalancer struct {
	ln       net.Listener
	backends []string
	mu       sync.Mutex
	target   int
	conns    []net.Conn // open client and backend connections
	served   []int      // connections per backend
}

func newTCPBalancer(t *testing.T, backends ...string) *tcpBalancer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &tcpBalancer{ln: ln, backends: backends, served: make([]int, len(backends))}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		_ = ln.Close()
		b.use(0)
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			b.mu.Lock()
			i := b.target
			b.mu.Unlock()
			up, err := net.Dial("tcp", backends[i])
			if err != nil {
				t.Logf("balancer: dial %s: %v", backends[i], err)
				_ = c.Close()
				continue
			}
			b.mu.Lock()
			b.conns = append(b.conns, c, up)
			b.served[i]++
			b.mu.Unlock()
			wg.Go(func() { _, _ = io.Copy(up, c); _ = up.Close() })
			wg.Go(func() { _, _ = io.Copy(c, up); _ = c.Close() })
		}
	})
	return b
}

// use sends new connections to backend i and closes the open ones, as a
// balancer draining the others does.
func (b *tcpBalancer) use(i int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.target = i
	for _, c := range b.conns {
		_ = c.Close()
	}
	b.conns = nil
}

func (b *tcpBalancer) servedBy(i int) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.served[i]
}

// TestSPIREInterop federates meshfed with a real SPIRE server in both
// directions: the hub consumes SPIRE's bundle from its bundle endpoint, and
// SPIRE consumes a member cluster's bundle from the hub's, through a load
// balancer in front of two hub servers, pinning the hub's one bundle
// endpoint ID.
func TestSPIREInterop(t *testing.T) {
	bundlePorts := freePorts(t, 2)
	var next int
	h := newTestHub(t, 2, func(c *Config) {
		c.BundlePort = bundlePorts[next]
		next++
	})
	admin := h.Admin()
	joinCluster(t, admin, "east")
	east, err := bundleFor(t, admin, "east.meshfed.local")
	if err != nil {
		t.Fatal(err)
	}
	hubCA, _, _ := h.Server(0).certs.current()

	spire := spiretest.Start(t, "spire.example", "")

	t.Run("hub consumes SPIRE's bundle", func(t *testing.T) {
		out, err := spire.Run("bundle", "show", "-format", "pem")
		if err != nil {
			t.Fatal(err)
		}
		roots, err := x509pem.DecodeCerts(out)
		if err != nil {
			t.Fatal(err)
		}
		rel := &fedv1.FederationRelationship{
			TrustDomain: "spire.example", Url: spire.BundleURL, Profile: ProfileHTTPSSPIFFE,
			EndpointSpiffeId: "spiffe://spire.example/spire/server",
		}
		for _, r := range roots {
			rel.EndpointBootstrapAuthorities = append(rel.EndpointBootstrapAuthorities, r.Raw)
		}
		if _, err := admin.PutFederation(ctxT(t, 10*time.Second), &fedv1.PutFederationRequest{Federation: rel}); err != nil {
			t.Fatal(err)
		}
		var got *fedv1.BundleInfo
		waitFor(t, 30*time.Second, "SPIRE's bundle at the hub", func() error {
			got, err = bundleFor(t, admin, "spire.example")
			if err != nil {
				return fmt.Errorf("%v (fetch status: %s)", err, fetchStatusOf(t, admin, "spire.example"))
			}
			return nil
		})
		if !mustCert(t, got.GetBundle().GetX509Authorities()[0]).Equal(roots[0]) {
			t.Fatal("the hub stored a different root than SPIRE's")
		}
	})

	t.Run("SPIRE consumes a cluster's bundle through any hub server", func(t *testing.T) {
		// SPIRE authenticates the hub's endpoint by its SPIFFE ID, so it
		// needs the hub's trust domain bundle first.
		hubPEM := filepath.Join(spire.Dir(), "hub.pem")
		if err := os.WriteFile(hubPEM, x509pem.EncodeCerts(hubCA.Cert), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := spire.Run("bundle", "set", "-format", "pem", "-id", "spiffe://hub.meshfed", "-path", hubPEM); err != nil {
			t.Fatal(err)
		}
		lb := newTCPBalancer(t, fmt.Sprintf("127.0.0.1:%d", bundlePorts[0]), fmt.Sprintf("127.0.0.1:%d", bundlePorts[1]))
		if _, err := spire.Run("federation", "create", "-trustDomain", "east.meshfed.local",
			"-bundleEndpointURL", fmt.Sprintf("https://%s/east.meshfed.local", lb.ln.Addr()),
			"-bundleEndpointProfile", "https_spiffe", "-endpointSpiffeID", BundleEndpointSPIFFEID("hub.meshfed")); err != nil {
			t.Fatal(err)
		}
		want := x509pem.EncodeCerts(mustCert(t, east.GetBundle().GetX509Authorities()[0]))
		for i := range 2 {
			// A refresh fetches at once and fails if the fetch does
			// (including the endpoint presenting another SPIFFE ID).
			lb.use(i)
			before := lb.servedBy(i)
			if _, err := spire.Run("federation", "refresh", "-id", "east.meshfed.local"); err != nil {
				t.Fatalf("refresh through server s%d: %v", i, err)
			}
			if lb.servedBy(i) == before {
				t.Fatalf("the refresh did not reach server s%d", i)
			}
			waitFor(t, 60*time.Second, "east's bundle in SPIRE", func() error {
				out, err := spire.Run("bundle", "list", "-format", "pem", "-id", "spiffe://east.meshfed.local")
				if err != nil {
					return err
				}
				if !bytes.Contains(out, bytes.TrimSpace(want)) {
					return fmt.Errorf("SPIRE has %q", strings.TrimSpace(string(out)))
				}
				return nil
			})
		}
	})
}
