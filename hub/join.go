package hub

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/meshfed/meshfed/federation"
	fedv1 "github.com/meshfed/meshfed/federation/v1"
	"github.com/meshfed/meshfed/hub/fsm"
	"github.com/meshfed/meshfed/hub/internal/hubpb"
	"github.com/meshfed/meshfed/internal/pki"
	"github.com/meshfed/meshfed/trust/x509pem"
)

type joinService struct {
	fedv1.UnimplementedJoinServer
	s *Server
	// limit is a token bucket per peer IP: Join is unauthenticated.
	limit *ipLimiter
}

// tokenApplyWait bounds how long Join waits for this server to apply a token
// it does not know yet (created an instant ago through another server).
// Waiting costs no quorum round, unlike a consistent read.
const tokenApplyWait = time.Second

// Join consumes a one-time token through Raft (so two concurrent uses give
// exactly one success), records the cluster and its trust bundle, and signs
// the agent's CSR with the hub CA. It is retry-safe: a Join with a used
// token, for the same CSR key, before the token expires, gets the same
// certificate again (the first response was lost).
//
// Nothing costs the hub more than a map lookup before the token's secret is
// checked against this server's store: the per-IP rate limit, parsing, then
// the secret; no signing, no quorum round, no Raft write for a bad one.
func (j *joinService) Join(ctx context.Context, req *fedv1.JoinRequest) (*fedv1.JoinResponse, error) {
	s := j.s
	if !j.limit.allow(peerIP(ctx)) {
		return nil, status.Errorf(codes.ResourceExhausted, "join: more than %d calls in a burst or %g a second from this address; retry later", s.cfg.JoinBurst, s.cfg.JoinRate)
	}
	tok, err := federation.ParseJoinToken(req.GetToken())
	if err != nil {
		return nil, fieldErr("", err)
	}
	hash := sha256.Sum256(tok.Secret)
	stored, err := s.lookupToken(ctx, tok.ID, hash[:])
	if err != nil {
		return nil, err
	}
	cluster, err := federation.ParseClusterName(req.GetCluster())
	if err != nil {
		return nil, fieldErr("", err)
	}
	if tok.Cluster != cluster || stored.GetCluster() != cluster.String() {
		return nil, status.Errorf(codes.PermissionDenied, "token refused: token %s is bound to cluster %q, not %q", tok.ID, stored.GetCluster(), cluster)
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
	if bound := stored.GetTrustDomain(); bound != "" && bound != td.String() {
		return nil, status.Errorf(codes.PermissionDenied, "trust_bundle.trust_domain: %q, but token %s is bound to trust domain %q (join with --trust-domain %s)", td, tok.ID, bound, bound)
	}
	ca, _, _ := s.certs.current()
	if ca == nil {
		return nil, status.Error(codes.Unavailable, "hub: not ready: no hub CA yet; retry")
	}
	now := time.Now()
	if stored.GetUsed() {
		return s.rejoin(ctx, ca, tok.ID, cluster, td, csr, now, nil)
	}
	if stored.GetRevoked() || now.UnixMilli() >= stored.GetExpiresAtMs() {
		// Revoked and expired are final states: a stale view can only lag
		// behind them, never show them wrongly.
		return nil, status.Errorf(codes.PermissionDenied, "token refused: token %s is revoked or expired", tok.ID)
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
	if status.Code(err) == codes.PermissionDenied {
		// Maybe a concurrent call with this token (a client's retry) won.
		return s.rejoin(ctx, ca, tok.ID, cluster, td, csr, now, err)
	}
	if err != nil {
		s.log.Info("join refused", "cluster", cluster, "token", tok.ID, "err", err)
		return nil, err
	}
	cert, err := s.signAgentCert(ca, csr, cluster.String(), issue)
	if err != nil {
		return nil, err
	}
	s.log.Info("cluster joined", "cluster", cluster, "trust_domain", td, "locality", loc)
	return s.joinResponse(ca, cert), nil
}

func (s *Server) joinResponse(ca *pki.CA, cert *x509.Certificate) *fedv1.JoinResponse {
	return &fedv1.JoinResponse{
		ClientCertificate: x509pem.EncodeCerts(cert),
		HubCa:             x509pem.EncodeCerts(ca.Cert),
		Settings:          &fedv1.FederationSettings{HubTrustDomain: s.cfg.TrustDomain, HeartbeatSeconds: 30},
		Capabilities:      localCapabilities(),
		HubAddresses:      s.hubAddrs(),
	}
}

// rejoin answers a Join with a token that is already used: if the token was
// used for this CSR's key, has not expired, and the cluster still holds the
// certificate issued then, that certificate again (same serial, same
// validity); otherwise PermissionDenied. The caller has proved the token's
// secret, so a consistent read is spent. refusal is the FSM's answer to
// this call's own Join command, if it made one: it stands unless the token
// was used for this key.
func (s *Server) rejoin(ctx context.Context, ca *pki.CA, tokenID string, cluster federation.ClusterName, td federation.TrustDomain, csr *x509.CertificateRequest, now time.Time, refusal error) (*fedv1.JoinResponse, error) {
	view, err := s.consistentRead(ctx)
	if err != nil {
		return nil, err
	}
	tok := view.Token(tokenID)
	key := publicKeyHash(csr)
	switch {
	case (tok == nil || !tok.GetUsed()) && refusal != nil:
		return nil, refusal // revoked, expired, ... in the FSM's view
	case tok == nil || !tok.GetUsed():
		return nil, status.Errorf(codes.Unavailable, "hub: token %s changed during the join; retry", tokenID)
	case tok.GetRevoked() || now.UnixMilli() >= tok.GetExpiresAtMs():
		return nil, status.Errorf(codes.PermissionDenied, "token refused: token %s was already used, and is now revoked or expired", tokenID)
	case !bytes.Equal(tok.GetUsedPublicKeySha256(), key):
		return nil, status.Errorf(codes.PermissionDenied, "token refused: token %s was already used (for another key)", tokenID)
	}
	c := view.Cluster(cluster.String())
	if c == nil || c.GetTrustDomain() != td.String() || !bytes.Equal(c.GetAgentCertPublicKeySha256(), key) {
		return nil, status.Errorf(codes.PermissionDenied, "token refused: token %s was already used; the cluster has been removed, renewed or joined again since", tokenID)
	}
	cert, err := s.signAgentCert(ca, csr, cluster.String(), currentAgentCert(c))
	if err != nil {
		return nil, err
	}
	s.log.Info("join retried: same certificate issued again", "cluster", cluster, "token", tokenID)
	return s.joinResponse(ca, cert), nil
}

// lookupToken returns the stored token whose secret hashes to hash, from
// this server's store, without a quorum round. A token this server has not
// applied yet (created an instant ago through another server) is waited for
// up to tokenApplyWait. The FSM checks again, authoritatively, when the join
// is applied.
func (s *Server) lookupToken(ctx context.Context, id string, hash []byte) (*hubpb.Token, error) {
	ctx, cancel := context.WithTimeout(ctx, tokenApplyWait)
	defer cancel()
	for {
		st := s.fsm.Store()
		watch := st.Watch()
		if tok := st.Read().Token(id); tok != nil {
			if subtle.ConstantTimeCompare(tok.GetSecretHash(), hash) != 1 {
				return nil, status.Error(codes.PermissionDenied, "token refused: unknown token")
			}
			return tok, nil
		}
		select {
		case <-watch:
		case <-ctx.Done():
			return nil, status.Error(codes.PermissionDenied, "token refused: unknown token")
		case <-s.stopCh:
			return nil, status.Error(codes.Unavailable, "hub: shutting down")
		}
	}
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
		Features: []string{federation.FeatureSyncAck, federation.FeatureSyncResume, federation.FeatureSyncHeartbeat, federation.FeatureSyncTraffic},
	}
}
