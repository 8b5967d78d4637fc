package hub

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/meshfed/meshfed/hub/fsm"
	"github.com/meshfed/meshfed/hub/internal/hubpb"
	"github.com/meshfed/meshfed/internal/clientconfig"
	"github.com/meshfed/meshfed/internal/pki"
)

const (
	caTTL         = 10 * 365 * 24 * time.Hour
	serverCertTTL = 30 * 24 * time.Hour
	adminCertTTL  = 365 * 24 * time.Hour
)

// ensureCA creates the hub CA through Raft if none exists yet. Only the
// leader calls it; SetCA keeps the first CA if two race.
func (s *Server) ensureCA() error {
	if s.fsm.Store().Read().CA() != nil {
		return nil
	}
	ca, err := pki.NewCA(s.cfg.TrustDomain, caTTL, time.Now())
	if err != nil {
		return err
	}
	keyPEM, err := pki.KeyPEM(ca.Key)
	if err != nil {
		return err
	}
	_, err = s.apply(context.Background(), fsm.SetCAType, &hubpb.CmdSetCA{Ca: &hubpb.CAState{
		CertPem: pki.CertPEM(ca.Cert), KeyPem: keyPEM, TrustDomain: s.cfg.TrustDomain,
	}})
	if err == nil {
		s.log.Info("created hub CA", "trust_domain", s.cfg.TrustDomain)
	}
	return err
}

// certManager holds this server's TLS identity, issued from the replicated
// hub CA once it exists, and renews it at half-life.
type certManager struct {
	s *Server

	mu   sync.RWMutex
	ca   *pki.CA
	pool *x509.CertPool
	cert *tls.Certificate
	// ready is closed once the server has a certificate.
	ready chan struct{}
}

func newCertManager(s *Server) *certManager {
	return &certManager{s: s, ready: make(chan struct{})}
}

// current returns the CA, the trust pool and this server's certificate, or
// nil values before the CA exists.
func (m *certManager) current() (*pki.CA, *x509.CertPool, *tls.Certificate) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.ca, m.pool, m.cert
}

func (m *certManager) run() {
	s := m.s
	for {
		st := s.fsm.Store()
		watch := st.Watch()
		if caState := st.Read().CA(); caState != nil {
			if err := m.refresh(caState, false); err != nil {
				s.log.Error("server certificate", "err", err)
			}
		}
		var renew <-chan time.Time
		if _, _, cert := m.current(); cert != nil {
			renew = time.After(max(time.Until(cert.Leaf.NotAfter)/2, time.Minute))
		}
		select {
		case <-s.stopCh:
			return
		case <-watch:
		case <-renew:
			// Issue the successor first and swap: handshakes never see a gap.
			if caState := st.Read().CA(); caState != nil {
				if err := m.refresh(caState, true); err != nil {
					s.log.Error("renew server certificate", "err", err)
				}
			}
		}
	}
}

// refresh issues this server's certificate if it has none, or if renew.
func (m *certManager) refresh(caState *hubpb.CAState, renew bool) error {
	m.mu.RLock()
	have := m.cert != nil
	m.mu.RUnlock()
	if have && !renew {
		return nil
	}
	ca, err := pki.ParseCA(caState.GetCertPem(), caState.GetKeyPem())
	if err != nil {
		return err
	}
	cert, err := m.issue(ca, "server/"+m.s.cfg.Name, serverCertTTL, true)
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	m.mu.Lock()
	first := m.ca == nil
	m.ca, m.pool, m.cert = ca, pool, cert
	m.mu.Unlock()
	if first {
		close(m.ready)
		if err := m.writeAdminConfig(ca); err != nil {
			return err
		}
	}
	return nil
}

func (m *certManager) issue(ca *pki.CA, path string, ttl time.Duration, server bool) (*tls.Certificate, error) {
	key, err := pki.NewKey()
	if err != nil {
		return nil, err
	}
	opts := pki.LeafOptions{
		SPIFFEID: fmt.Sprintf("spiffe://%s/%s", m.s.cfg.TrustDomain, path),
		TTL:      ttl, Now: time.Now(), Client: true, Server: server,
	}
	if server {
		opts.IPs = []net.IP{net.ParseIP(m.s.advertiseIP())}
		if bind := net.ParseIP(m.s.cfg.BindAddr); !bind.IsUnspecified() && !bind.Equal(opts.IPs[0]) {
			opts.IPs = append(opts.IPs, bind)
		}
		opts.DNSNames = []string{"localhost", m.s.cfg.Name}
	}
	leaf, err := ca.Sign(key.Public(), opts)
	if err != nil {
		return nil, err
	}
	// The chain carries the CA so that joining agents can pin it by fingerprint.
	return &tls.Certificate{Certificate: [][]byte{leaf.Raw, ca.Cert.Raw}, PrivateKey: key, Leaf: leaf}, nil
}

// writeAdminConfig writes <data-dir>/admin.yaml once: hub addresses, the CA
// and an admin client certificate.
func (m *certManager) writeAdminConfig(ca *pki.CA) error {
	path := m.s.AdminConfigPath()
	if _, err := os.Stat(path); err == nil {
		return nil
	}
	cert, err := m.issue(ca, "admin/"+m.s.cfg.Name, adminCertTTL, false)
	if err != nil {
		return err
	}
	keyPEM, err := pki.KeyPEM(cert.PrivateKey.(crypto.Signer))
	if err != nil {
		return err
	}
	cfg := &clientconfig.Config{
		APIVersion: clientconfig.APIVersion, Kind: clientconfig.Kind,
		Hubs: m.s.hubAddrs(), TrustDomain: m.s.cfg.TrustDomain,
		CA: string(pki.CertPEM(ca.Cert)), Cert: string(pki.CertPEM(cert.Leaf)), Key: string(keyPEM),
	}
	if err := cfg.Save(path); err != nil {
		return err
	}
	m.s.log.Info("wrote admin client config", "path", path)
	return nil
}

// serverTLS serves this server's certificate once it exists and asks for (but
// does not require) a client certificate chained to the hub CA; each RPC
// checks the identity it needs.
func (m *certManager) serverTLS() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			_, pool, cert := m.current()
			if cert == nil {
				return nil, errors.New("hub: not ready: no hub CA yet")
			}
			return &tls.Config{
				MinVersion:   tls.VersionTLS13,
				Certificates: []tls.Certificate{*cert},
				ClientAuth:   tls.VerifyClientCertIfGiven,
				ClientCAs:    pool,
				NextProtos:   []string{"h2"},
			}, nil
		},
	}
}

// peerTLS is the client TLS config for calling another hub server.
func (m *certManager) peerTLS() (*tls.Config, error) {
	_, pool, cert := m.current()
	if cert == nil {
		return nil, errors.New("hub: no server certificate yet")
	}
	return clientconfig.ClientTLS(pool, cert, m.s.cfg.TrustDomain), nil
}

// identity kinds in hub SPIFFE IDs: spiffe://<td>/<kind>/<name>.
const (
	kindServer  = "server"
	kindAdmin   = "admin"
	kindCluster = "cluster"
)

type identity struct {
	kind, name string
	// serial is the certificate's serial number in hex.
	serial string
}

type identityKey struct{}

func callerIdentity(ctx context.Context) (identity, bool) {
	id, ok := ctx.Value(identityKey{}).(identity)
	return id, ok
}

// identify extracts the verified client certificate's hub identity.
func (s *Server) identify(ctx context.Context) (identity, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return identity{}, status.Error(codes.Unauthenticated, "no peer")
	}
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(ti.State.VerifiedChains) == 0 {
		return identity{}, status.Error(codes.Unauthenticated, "a client certificate issued by the hub CA is required")
	}
	leaf := ti.State.VerifiedChains[0][0]
	id, err := pki.SPIFFEID(leaf)
	if err != nil {
		return identity{}, status.Error(codes.Unauthenticated, err.Error())
	}
	if id.Host != s.cfg.TrustDomain {
		return identity{}, status.Errorf(codes.Unauthenticated, "identity %q is not in trust domain %q", id, s.cfg.TrustDomain)
	}
	parts := strings.Split(strings.TrimPrefix(id.Path, "/"), "/")
	if len(parts) != 2 || parts[1] == "" {
		return identity{}, status.Errorf(codes.Unauthenticated, "identity %q has no hub role", id)
	}
	return identity{kind: parts[0], name: parts[1], serial: leaf.SerialNumber.Text(16)}, nil
}

// requiredKind maps a full method name to the identity kinds allowed to call it.
func requiredKind(method string) []string {
	switch {
	case strings.HasPrefix(method, "/meshfed.federation.v1.Join/"):
		return nil // authenticated by the token
	case strings.HasPrefix(method, "/meshfed.federation.v1.Sync/"):
		return []string{kindCluster}
	case strings.HasPrefix(method, "/meshfed.federation.v1.Admin/"):
		return []string{kindAdmin}
	case strings.HasPrefix(method, "/meshfed.hub.v1.Internal/"):
		return []string{kindServer}
	}
	return []string{"-"} // unknown services: nobody
}

func (s *Server) authorize(ctx context.Context, method string) (context.Context, error) {
	kinds := requiredKind(method)
	if kinds == nil {
		return ctx, nil
	}
	id, err := s.identify(ctx)
	if err != nil {
		return nil, err
	}
	for _, k := range kinds {
		if id.kind == k {
			if err := s.checkAgentCert(ctx, method, id); err != nil {
				return nil, err
			}
			return context.WithValue(ctx, identityKey{}, id), nil
		}
	}
	return nil, status.Errorf(codes.PermissionDenied, "identity %s/%s may not call %s", id.kind, id.name, method)
}

func (s *Server) authUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	ctx, err := s.authorize(ctx, info.FullMethod)
	if err != nil {
		return nil, err
	}
	return h(ctx, req)
}

type wrappedStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (w wrappedStream) Context() context.Context { return w.ctx }

func (s *Server) authStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	ctx, err := s.authorize(ss.Context(), info.FullMethod)
	if err != nil {
		return err
	}
	return h(srv, wrappedStream{ServerStream: ss, ctx: ctx})
}
