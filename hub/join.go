package hub

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/meshfed/meshfed/federation"
	fedv1 "github.com/meshfed/meshfed/federation/v1"
	"github.com/meshfed/meshfed/hub/fsm"
	"github.com/meshfed/meshfed/hub/internal/hubpb"
	"github.com/meshfed/meshfed/internal/pki"
)

type joinService struct {
	fedv1.UnimplementedJoinServer
	s *Server
}

// Join consumes a one-time token through Raft (so two concurrent uses give
// exactly one success), records the cluster and its trust bundle, and signs
// the agent's CSR with the hub CA.
func (j *joinService) Join(ctx context.Context, req *fedv1.JoinRequest) (*fedv1.JoinResponse, error) {
	s := j.s
	tok, err := federation.ParseJoinToken(req.GetToken())
	if err != nil {
		return nil, fieldErr("", err)
	}
	cluster, err := federation.ParseClusterName(req.GetCluster())
	if err != nil {
		return nil, fieldErr("", err)
	}
	if tok.Cluster != cluster {
		return nil, status.Errorf(codes.PermissionDenied, "token refused: token %s is bound to cluster %q, not %q", tok.ID, tok.Cluster, cluster)
	}
	loc, err := validateLocality("locality", req.GetLocality())
	if err != nil {
		return nil, err
	}
	if req.GetTrustBundle() == nil {
		return nil, invalidArg("trust_bundle", "required")
	}
	td, err := validateBundle("trust_bundle", req.GetTrustBundle())
	if err != nil {
		return nil, err
	}
	if err := s.checkNotHubTrustDomain("trust_bundle.trust_domain", td); err != nil {
		return nil, err
	}
	csr, err := parseCSR("csr", req.GetCsr())
	if err != nil {
		return nil, err
	}
	if err := validateGatewayAddrs("gateway_addresses", req.GetGatewayAddresses()); err != nil {
		return nil, err
	}
	if err := validateCapabilities("capabilities", req.GetCapabilities()); err != nil {
		return nil, err
	}
	ca, _, _ := s.certs.current()
	if ca == nil {
		return nil, status.Error(codes.Unavailable, "hub: not ready: no hub CA yet; retry")
	}
	now := time.Now()
	hash := sha256.Sum256(tok.Secret)
	stored, err := s.precheckToken(ctx, tok.ID, hash[:], now)
	if err != nil {
		return nil, err
	}
	if bound := stored.GetTrustDomain(); bound != "" && bound != td.String() {
		return nil, status.Errorf(codes.PermissionDenied, "trust_bundle.trust_domain: %q, but token %s is bound to trust domain %q (join with --trust-domain %s)", td, tok.ID, bound, bound)
	}
	issue, err := s.newAgentCert(csr, now)
	if err != nil {
		return nil, err
	}
	_, err = s.apply(ctx, fsm.JoinType, &hubpb.CmdJoin{
		TokenId: tok.ID, SecretHash: hash[:], NowMs: now.UnixMilli(),
		Cluster: &fedv1.ClusterRecord{
			Name: cluster.String(), TrustDomain: td.String(),
			Locality:         &fedv1.Locality{Region: loc.Region(), Zone: loc.Zone(), Subzone: loc.Subzone()},
			GatewayAddresses: req.GetGatewayAddresses(), Capabilities: req.GetCapabilities(),
			AgentCertSerial: issue.serial, AgentCertPublicKeySha256: issue.keyHash,
			AgentCertNotBeforeMs: issue.notBeforeMs(), AgentCertNotAfterMs: issue.notAfterMs(),
		},
		Bundle: req.GetTrustBundle(),
	})
	if err != nil {
		s.log.Info("join refused", "cluster", cluster, "token", tok.ID, "err", err)
		return nil, err
	}
	cert, err := s.signAgentCert(ca, csr, cluster.String(), issue)
	if err != nil {
		return nil, err
	}
	s.log.Info("cluster joined", "cluster", cluster, "trust_domain", td, "locality", loc)
	return &fedv1.JoinResponse{
		ClientCertificate: pki.CertPEM(cert),
		HubCa:             pki.CertPEM(ca.Cert),
		Settings:          &fedv1.FederationSettings{HubTrustDomain: s.cfg.TrustDomain, HeartbeatSeconds: 30},
		Capabilities:      localCapabilities(),
		HubAddresses:      s.hubAddrs(),
	}, nil
}

// precheckToken refuses, without a Raft write, a token that is certainly
// unusable, so that unauthenticated Join calls cannot load the log. The FSM
// checks again, authoritatively, when the join is applied.
func (s *Server) precheckToken(ctx context.Context, id string, hash []byte, now time.Time) (*hubpb.Token, error) {
	tok := s.fsm.Store().Read().Token(id)
	if tok == nil {
		// Maybe just created and not yet applied here: ask consistently.
		r, err := s.consistentRead(ctx)
		if err != nil {
			return nil, err
		}
		tok = r.Token(id)
	}
	if tok == nil || subtle.ConstantTimeCompare(tok.GetSecretHash(), hash) != 1 {
		return nil, status.Error(codes.PermissionDenied, "token refused: unknown token")
	}
	if tok.GetUsed() || tok.GetRevoked() || now.UnixMilli() >= tok.GetExpiresAtMs() {
		// Used, revoked and expired are final states: a stale view can only
		// lag behind them, never show them wrongly.
		return nil, status.Errorf(codes.PermissionDenied, "token refused: token %s is used, revoked or expired", id)
	}
	return tok, nil
}

// checkNotHubTrustDomain refuses the hub's own trust domain for a member
// cluster: its identities would be hub identities. (Externally federated
// trust domains and those of other clusters are refused by the FSM, which
// sees them consistently.)
func (s *Server) checkNotHubTrustDomain(field string, td federation.TrustDomain) error {
	if td.String() == s.cfg.TrustDomain {
		return invalidArg(field, "%q is the hub's own trust domain, reserved", td)
	}
	return nil
}

func localCapabilities() *fedv1.Capabilities {
	return &fedv1.Capabilities{
		Version:  federation.CapabilityVersion,
		Features: []string{federation.FeatureSyncAck, federation.FeatureSyncResume},
	}
}
