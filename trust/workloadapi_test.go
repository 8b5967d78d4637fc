package trust

import (
	"context"
	"crypto/x509"
	"errors"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// fakeWorkloadAPI is a minimal SPIFFE Workload API server (the X.509 part
// of SpiffeWorkloadAPI) on a unix socket, standing in for a SPIRE agent.
// go-spiffe's own fake lives in an internal package.
type fakeWorkloadAPI struct {
	workload.UnimplementedSpiffeWorkloadAPIServer
	addr string
	n    notifier

	mu   sync.Mutex
	resp *workload.X509SVIDResponse
}

func newFakeWorkloadAPI(t testing.TB) *fakeWorkloadAPI {
	t.Helper()
	dir, err := tempSocketDir(t)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "agent.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeWorkloadAPI{addr: UnixAddr(path)}
	s := grpc.NewServer()
	workload.RegisterSpiffeWorkloadAPIServer(s, f)
	go func() { _ = s.Serve(ln) }()
	t.Cleanup(s.Stop)
	return f
}

// tempSocketDir returns a short temporary directory: unix socket paths are
// limited to about 100 bytes, and t.TempDir can be longer.
func tempSocketDir(t testing.TB) (string, error) {
	t.Helper()
	dir := t.TempDir()
	if len(dir) < 80 {
		return dir, nil
	}
	d, err := os.MkdirTemp("", "wl")
	if err != nil {
		return "", err
	}
	t.Cleanup(func() { _ = os.RemoveAll(d) })
	return d, nil
}

// set publishes an X.509 context: the SVIDs, their trust domain's bundle,
// and federated bundles, to every open stream.
func (f *fakeWorkloadAPI) set(t testing.TB, svids []*x509svid.SVID, bundle []*x509.Certificate, federated map[string][]*x509.Certificate) {
	t.Helper()
	resp := &workload.X509SVIDResponse{FederatedBundles: map[string][]byte{}}
	for _, s := range svids {
		chain, key, err := s.MarshalRaw()
		if err != nil {
			t.Fatal(err)
		}
		resp.Svids = append(resp.Svids, &workload.X509SVID{SpiffeId: s.ID.String(), X509Svid: chain, X509SvidKey: key, Bundle: rawCerts(bundle)})
	}
	for name, certs := range federated {
		resp.FederatedBundles[name] = rawCerts(certs)
	}
	f.mu.Lock()
	f.resp = resp
	f.mu.Unlock()
	f.n.notify()
}

func rawCerts(certs []*x509.Certificate) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, c.Raw...)
	}
	return out
}

// FetchX509SVID streams the current X.509 context and every change.
func (f *fakeWorkloadAPI) FetchX509SVID(_ *workload.X509SVIDRequest, stream grpc.ServerStreamingServer[workload.X509SVIDResponse]) error {
	md, _ := metadata.FromIncomingContext(stream.Context())
	if v := md.Get("workload.spiffe.io"); len(v) != 1 || v[0] != "true" {
		return status.Error(codes.InvalidArgument, "security header missing from request")
	}
	ch, stop := f.n.watch()
	defer stop()
	for {
		f.mu.Lock()
		resp := f.resp
		f.mu.Unlock()
		if resp != nil {
			if err := stream.Send(resp); err != nil {
				return err
			}
		}
		select {
		case <-stream.Context().Done():
			return nil
		case <-ch:
		}
	}
}

// spireFixture is a SPIRE deployment for trust domain spire.test.
type spireFixture struct {
	api      *fakeWorkloadAPI
	root     *testCert
	gw, agnt *x509svid.SVID
}

func newSpireFixture(t *testing.T) *spireFixture {
	t.Helper()
	f := &spireFixture{api: newFakeWorkloadAPI(t), root: forgeCA(t, nil, "spire.test")}
	f.gw = svidOf(t, forgeLeaf(t, f.root, "spiffe://spire.test/meshfed/gateway"))
	f.agnt = svidOf(t, forgeLeaf(t, f.root, "spiffe://spire.test/meshfed/agent"))
	other := forgeCA(t, nil, "other.test")
	f.api.set(t, []*x509svid.SVID{f.gw, f.agnt, svidOf(t, forgeLeaf(t, other, "spiffe://other.test/x"))},
		[]*x509.Certificate{f.root.cert}, map[string][]*x509.Certificate{"spiffe://other.test": {other.cert}})
	return f
}

func newWorkloadAPIAuthority(t *testing.T, addr string) *WorkloadAPIAuthority {
	t.Helper()
	cfg := DefaultWorkloadAPIConfig()
	cfg.TrustDomain = td(t, "spire.test")
	cfg.Addr = addr
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	a, err := NewWorkloadAPIAuthority(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Close() })
	return a
}

func waitSignal(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
	}
}

func TestWorkloadAPIAuthority(t *testing.T) {
	f := newSpireFixture(t)
	a := newWorkloadAPIAuthority(t, f.api.addr)
	roots, seq0 := mustBundleRoots(t, a)
	if len(roots) != 1 || !roots[0].Equal(f.root.cert) {
		t.Fatalf("bundle = %d roots, want SPIRE's root", len(roots))
	}
	ca, err := NewCA(a, DefaultCAConfig())
	if err != nil {
		t.Fatal(err)
	}
	if ca.TrustDomain().Name() != "spire.test" {
		t.Fatalf("CA trust domain = %v", ca.TrustDomain())
	}
	gwID := GatewayID(ca.TrustDomain())
	got, err := ca.IssueX509SVID(gwID)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Certificates[0].Equal(f.gw.Certificates[0]) {
		t.Error("the CA did not hand out SPIRE's SVID")
	}
	if _, err := ca.SignX509SVID(gwID, newKey(t).Public()); !errors.Is(err, ErrCannotSign) {
		t.Errorf("SignX509SVID = %v, want ErrCannotSign", err)
	}
	wl, _ := WorkloadID(ca.TrustDomain(), "shop", "web")
	if _, err := ca.IssueX509SVID(wl); !errors.Is(err, ErrNoSVID) {
		t.Errorf("unregistered ID: %v, want ErrNoSVID", err)
	}
	if s, err := a.GetX509SVID(); err != nil || s.ID.TrustDomain() != ca.TrustDomain() {
		t.Errorf("GetX509SVID = %v, %v", s, err)
	}
	if _, err := a.GetX509BundleForTrustDomain(td(t, "other.test")); !errors.Is(err, ErrNotFederated) {
		t.Errorf("SPIRE's federated bundles must not leak in: %v", err)
	}

	// The same consumers work: an SVIDSource and mTLS between two SPIRE
	// identities, verified against a BundleSet holding SPIRE's bundle.
	gwSrc, err := NewSVIDSource(ca, gwID, DefaultSVIDSourceConfig())
	if err != nil {
		t.Fatal(err)
	}
	agentSrc, err := NewSVIDSource(ca, AgentID(ca.TrustDomain()), DefaultSVIDSourceConfig())
	if err != nil {
		t.Fatal(err)
	}
	set := NewBundleSet()
	b, _ := ca.Bundle()
	if err := set.Set(b); err != nil {
		t.Fatal(err)
	}
	mustHandshake(t, ServerTLS(gwSrc, set, AuthorizeID(AgentID(ca.TrustDomain()))), ClientTLS(agentSrc, set, AuthorizeID(gwID)))

	// SPIRE rotates the gateway's SVID and its root: the source follows at
	// once, and the bundle's sequence number increases.
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go func() { _ = gwSrc.Run(ctx) }()
	ch, stop := gwSrc.Watch()
	defer stop()
	newRoot := forgeCA(t, nil, "spire.test")
	newGW := svidOf(t, forgeLeaf(t, newRoot, "spiffe://spire.test/meshfed/gateway"))
	f.api.set(t, []*x509svid.SVID{newGW, f.agnt}, []*x509.Certificate{f.root.cert, newRoot.cert}, nil)
	waitSignal(t, ch, "the SVIDSource to pick up SPIRE's new SVID")
	if cur, _ := gwSrc.GetX509SVID(); !cur.Certificates[0].Equal(newGW.Certificates[0]) {
		t.Error("SVIDSource did not pick up SPIRE's rotated SVID")
	}
	roots, seq := mustBundleRoots(t, a)
	if len(roots) != 2 || seq <= seq0 {
		t.Errorf("after SPIRE's rotation: %d roots, seq %d (was %d)", len(roots), seq, seq0)
	}
}

func TestWorkloadAPIAuthorityWaitsForContext(t *testing.T) {
	api := newFakeWorkloadAPI(t) // sends nothing
	cfg := DefaultWorkloadAPIConfig()
	cfg.TrustDomain = td(t, "spire.test")
	cfg.Addr = api.addr
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	if _, err := NewWorkloadAPIAuthority(ctx, cfg); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("got %v, want the context's deadline", err)
	}
	// An X.509 context without an SVID of the trust domain is not enough.
	other := forgeCA(t, nil, "other.test")
	api.set(t, []*x509svid.SVID{svidOf(t, forgeLeaf(t, other, "spiffe://other.test/x"))}, []*x509.Certificate{other.cert}, nil)
	ctx2, cancel2 := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel2()
	if _, err := NewWorkloadAPIAuthority(ctx2, cfg); !errors.Is(err, ErrNoSVID) {
		t.Errorf("got %v, want ErrNoSVID", err)
	}
}

func TestWorkloadAPIConfigValidate(t *testing.T) {
	c := DefaultWorkloadAPIConfig()
	err := c.Validate()
	var ce *ConfigError
	if !errors.As(err, &ce) {
		t.Fatalf("empty config: %v", err)
	}
	c.TrustDomain = td(t, "spire.test")
	c.Addr = "tcp://not-an-ip:1"
	if err := c.Validate(); err == nil {
		t.Error("accepted a bad address")
	}
	c.Addr = UnixAddr("/run/spire/sockets/agent.sock")
	if err := c.Validate(); err != nil {
		t.Errorf("valid config: %v", err)
	}
}
