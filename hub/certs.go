package hub

import (
	"context"
	"crypto"
	"os"
	"strings"
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
	"github.com/meshfed/meshfed/trust/x509pem"
)

const (
	caTTL        = 10 * 365 * 24 * time.Hour
	adminCertTTL = 365 * 24 * time.Hour
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
	keyPEM, err := x509pem.EncodeKey(ca.Key)
	if err != nil {
		return err
	}
	_, err = s.apply(context.Background(), fsm.SetCAType, &hubpb.CmdSetCA{Ca: &hubpb.CAState{
		CertPem: x509pem.EncodeCerts(ca.Cert), KeyPem: keyPEM, TrustDomain: s.cfg.TrustDomain,
	}})
	if err == nil {
		s.log.Info("created hub CA", "trust_domain", s.cfg.TrustDomain)
	}
	return err
}

// writeAdminConfig writes <data-dir>/admin.yaml once: hub addresses, the CA
// and an admin client certificate.
func (s *Server) writeAdminConfig(ca *pki.CA) error {
	path := s.AdminConfigPath()
	if _, err := os.Stat(path); err == nil {
		return nil
	}
	cert, err := s.certs.issue(ca, kindAdmin, s.cfg.Name, adminCertTTL)
	if err != nil {
		return err
	}
	keyPEM, err := x509pem.EncodeKey(cert.PrivateKey.(crypto.Signer))
	if err != nil {
		return err
	}
	cfg := &clientconfig.Config{
		APIVersion: clientconfig.APIVersion, Kind: clientconfig.Kind,
		Hubs: s.hubAddrs(), TrustDomain: s.cfg.TrustDomain,
		CA: string(x509pem.EncodeCerts(ca.Cert)), Cert: string(x509pem.EncodeCerts(cert.Leaf)), Key: string(keyPEM),
	}
	if err := cfg.Save(path); err != nil {
		return err
	}
	s.log.Info("wrote admin client config", "path", path)
	return nil
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
