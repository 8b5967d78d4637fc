package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	fedv1 "github.com/meshfed/meshfed/federation/v1"
	"github.com/meshfed/meshfed/internal/clientconfig"
	"github.com/meshfed/meshfed/internal/pki"
	"github.com/meshfed/meshfed/internal/requestid"
	"github.com/meshfed/meshfed/trust/x509pem"
)

// unavailableAdmin answers its first `fail` write calls Unavailable (as a
// hub whose forward to the leader failed) and records each call's request ID.
type unavailableAdmin struct {
	fedv1.UnimplementedAdminServer
	mu   sync.Mutex
	fail int
	ids  []string
}

func (u *unavailableAdmin) write(ctx context.Context) error {
	md, _ := metadata.FromIncomingContext(ctx)
	u.mu.Lock()
	defer u.mu.Unlock()
	u.ids = append(u.ids, strings.Join(md.Get(requestid.MetadataKey), ","))
	if u.fail--; u.fail >= 0 {
		return status.Error(codes.Unavailable, "hub: forwarded to leader s1: connection reset; retry")
	}
	return nil
}

func (u *unavailableAdmin) CreateToken(ctx context.Context, req *fedv1.CreateTokenRequest) (*fedv1.CreateTokenResponse, error) {
	if err := u.write(ctx); err != nil {
		return nil, err
	}
	return &fedv1.CreateTokenResponse{Token: "mfjoin1.retried", Info: &fedv1.TokenInfo{Id: "t1", Cluster: req.GetCluster()}}, nil
}

func (u *unavailableAdmin) RotateCA(ctx context.Context, req *fedv1.RotateCARequest) (*fedv1.RotateCAResponse, error) {
	if err := u.write(ctx); err != nil {
		return nil, err
	}
	return &fedv1.RotateCAResponse{CaRotation: 1, Revision: 9}, nil
}

func (u *unavailableAdmin) seen() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]string(nil), u.ids...)
}

// serveAdminTLS serves a over TLS as a hub server of hub.meshfed would, and
// writes a client config for it; it returns the config's path.
func serveAdminTLS(t *testing.T, a fedv1.AdminServer) string {
	t.Helper()
	now := time.Now()
	ca, err := pki.NewCA("hub.meshfed", time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	leaf := func(id string, server bool) (certPEM, keyPEM []byte) {
		key, err := pki.NewKey()
		if err != nil {
			t.Fatal(err)
		}
		cert, err := ca.Sign(key.Public(), pki.LeafOptions{SPIFFEID: id, TTL: time.Hour, Now: now, Server: server, Client: !server,
			IPs: []net.IP{net.IPv4(127, 0, 0, 1)}})
		if err != nil {
			t.Fatal(err)
		}
		keyPEM, err = x509pem.EncodeKey(key)
		if err != nil {
			t.Fatal(err)
		}
		return x509pem.EncodeCerts(cert), keyPEM
	}
	srvCert, srvKey := leaf("spiffe://hub.meshfed/server/s0", true)
	pair, err := tls.X509KeyPair(srvCert, srvKey)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{
		Certificates: []tls.Certificate{pair}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool, MinVersion: tls.VersionTLS13,
	})))
	fedv1.RegisterAdminServer(srv, a)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)

	cliCert, cliKey := leaf("spiffe://hub.meshfed/admin/test", false)
	cfg := &clientconfig.Config{
		APIVersion: clientconfig.APIVersion, Kind: clientconfig.Kind, Hubs: []string{ln.Addr().String()},
		TrustDomain: "hub.meshfed", CA: string(x509pem.EncodeCerts(ca.Cert)), Cert: string(cliCert), Key: string(cliKey),
	}
	path := filepath.Join(t.TempDir(), "admin.yaml")
	if err := cfg.Save(path); err != nil {
		t.Fatal(err)
	}
	return path
}

// The CLI retries a write that failed with Unavailable (outcome unknown)
// under the same request ID, which lets the hub apply it once.
func TestWriteCommandsRetryUnavailableWithOneRequestID(t *testing.T) {
	a := &unavailableAdmin{fail: 2}
	path := serveAdminTLS(t, a)
	d := newTestDeps(t, nil)
	d.dialAdmin = dialAdmin // the real one

	r := run(t, d, "token", "create", "--cluster", "west", "--config", path)
	if r.code != 0 || !strings.HasPrefix(r.stdout, "mfjoin1.retried\n") {
		t.Fatalf("token create through two Unavailable answers: exit %d, stdout %q", r.code, r.stdout)
	}
	ids := a.seen()
	if len(ids) != 3 || ids[0] != ids[1] || ids[1] != ids[2] || requestid.Validate(ids[0]) != nil {
		t.Fatalf("request IDs of the three attempts: %q, want one valid ID three times", ids)
	}

	a.mu.Lock()
	a.fail = 1
	a.mu.Unlock()
	r = run(t, d, "trust", "rotate", "--cluster", "west", "--config", path)
	if r.code != 0 || !strings.Contains(r.stdout, "rotation 1 requested") {
		t.Fatalf("trust rotate through one Unavailable answer: exit %d, stdout %q", r.code, r.stdout)
	}
	ids = a.seen()[3:]
	if len(ids) != 2 || ids[0] != ids[1] || ids[0] == a.seen()[0] {
		t.Fatalf("request IDs of trust rotate: %q, want one new ID twice", ids)
	}

	// Unavailable to the end: exit 1, and the error names the request ID
	// and says the outcome is unknown.
	a.mu.Lock()
	a.fail = 100
	a.mu.Unlock()
	r = run(t, d, "trust", "rotate", "--cluster", "west", "--config", path, "--timeout", "2s")
	if r.code != 1 || !strings.Contains(r.stderr, "Unavailable") || !strings.Contains(r.stderr, "outcome is unknown") || !strings.Contains(r.stderr, requestid.MetadataKey) {
		t.Fatalf("trust rotate against a hub that stays Unavailable: exit %d, stderr %q", r.code, r.stderr)
	}
}
