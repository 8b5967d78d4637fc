package hub

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"fmt"
	"math/big"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	fedv1 "github.com/meshfed/meshfed/federation/v1"
	"github.com/meshfed/meshfed/hub/fsm"
	"github.com/meshfed/meshfed/hub/internal/hubpb"
	"github.com/meshfed/meshfed/internal/pki"
	"github.com/meshfed/meshfed/trust/x509pem"
)

// Agent certificates. A member cluster's agent holds one client certificate,
// spiffe://<hub-td>/cluster/<name>, issued at join and renewed with
// Sync.Renew. The cluster record carries the current certificate's serial,
// validity and key hash, written through Raft, so every server admits the
// same certificate and only it (checkAgentCert).

// MinAgentCertTTL is the shortest AgentCertTTL a hub accepts.
const MinAgentCertTTL = MinCertTTL

// maxAgentCertSkew is how long before its issue an agent certificate is
// already valid, for clocks that disagree; at most a tenth of the lifetime.
const maxAgentCertSkew = time.Minute

// agentCertValidity is the validity of an agent certificate issued at now,
// in whole seconds (what X.509 encodes), so that the recorded milliseconds
// give back the same certificate when it is issued again.
func agentCertValidity(now time.Time, ttl time.Duration) (notBefore, notAfter time.Time) {
	skew := min(maxAgentCertSkew, ttl/10)
	return now.Add(-skew).Truncate(time.Second), now.Add(ttl).Truncate(time.Second)
}

// agentCert is what the hub records about a cluster's current certificate.
type agentCert struct {
	serial              string // hex
	notBefore, notAfter time.Time
	keyHash             []byte
}

func (c agentCert) notBeforeMs() int64 { return c.notBefore.UnixMilli() }
func (c agentCert) notAfterMs() int64  { return c.notAfter.UnixMilli() }

// currentAgentCert returns what cl records about its current certificate.
func currentAgentCert(cl *fedv1.ClusterRecord) agentCert {
	return agentCert{
		serial:    cl.GetAgentCertSerial(),
		notBefore: time.UnixMilli(cl.GetAgentCertNotBeforeMs()),
		notAfter:  time.UnixMilli(cl.GetAgentCertNotAfterMs()),
		keyHash:   cl.GetAgentCertPublicKeySha256(),
	}
}

// newAgentCert picks a fresh serial and the validity of a certificate
// issued now for csr.
func (s *Server) newAgentCert(csr *x509.CertificateRequest, now time.Time) (agentCert, error) {
	serial, err := pki.NewSerial()
	if err != nil {
		return agentCert{}, status.Errorf(codes.Internal, "serial: %v", err)
	}
	nb, na := agentCertValidity(now, s.cfg.AgentCertTTL)
	return agentCert{serial: serial.Text(16), notBefore: nb, notAfter: na, keyHash: publicKeyHash(csr)}, nil
}

// publicKeyHash is the SHA-256 of a CSR's SubjectPublicKeyInfo.
func publicKeyHash(csr *x509.CertificateRequest) []byte {
	h := sha256.Sum256(csr.RawSubjectPublicKeyInfo)
	return h[:]
}

// parseCSR checks a certificate request's size and signature.
func parseCSR(field string, der []byte) (*x509.CertificateRequest, error) {
	if len(der) == 0 || len(der) > MaxCSRSize {
		return nil, invalidArg(field, "%d bytes, want 1 to %d", len(der), MaxCSRSize)
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, invalidArg(field, "%v", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, invalidArg(field, "signature: %v", err)
	}
	return csr, nil
}

// signAgentCert signs csr's key as cluster's agent with c's serial and
// validity.
func (s *Server) signAgentCert(ca *pki.CA, csr *x509.CertificateRequest, cluster string, c agentCert) (*x509.Certificate, error) {
	serial, ok := new(big.Int).SetString(c.serial, 16)
	if !ok {
		return nil, status.Errorf(codes.Internal, "agent certificate serial %q is not hex", c.serial)
	}
	cert, err := ca.Sign(csr.PublicKey, pki.LeafOptions{
		SPIFFEID: s.agentID(cluster), Client: true, Serial: serial,
		NotBefore: c.notBefore, NotAfter: c.notAfter,
	})
	if err != nil {
		return nil, status.Errorf(codes.Internal, "sign agent certificate: %v", err)
	}
	return cert, nil
}

func (s *Server) agentID(cluster string) string {
	return fmt.Sprintf("spiffe://%s/%s/%s", s.cfg.TrustDomain, kindCluster, cluster)
}

// checkAgentCert admits a cluster identity only with the cluster's current
// certificate, or, for Sync.Renew, the certificate the current one replaced
// (Renew then only gives the current certificate again). It looks at the
// local view first and, if that refuses, at a consistent one: a follower may
// not have applied a renewal yet. The Sync stream checks again on every
// change, so a stream opened with a certificate renewed since is closed.
func (s *Server) checkAgentCert(ctx context.Context, method string, id identity) error {
	if id.kind != kindCluster {
		return nil
	}
	admits := func(c *fedv1.ClusterRecord) bool {
		if c == nil || id.serial == "" {
			return false
		}
		return c.GetAgentCertSerial() == id.serial ||
			(method == fedv1.Sync_Renew_FullMethodName && c.GetPreviousAgentCertSerial() == id.serial)
	}
	if admits(s.fsm.Store().Read().Cluster(id.name)) {
		return nil
	}
	view, err := s.consistentRead(ctx)
	if err != nil {
		return err
	}
	c := view.Cluster(id.name)
	if c == nil {
		return errNotMember(id.name)
	}
	if !admits(c) {
		return errSuperseded(id)
	}
	return nil
}

func errSuperseded(id identity) error {
	return status.Errorf(codes.PermissionDenied, "cluster %q: this certificate (serial %s) was superseded by a later join or renewal", id.name, id.serial)
}

// Renew issues the calling cluster a new agent certificate. The new serial
// is recorded through Raft only while the caller's certificate is still the
// current one, so concurrent renewals with one certificate issue one serial;
// a call with the certificate just replaced, for the same key, gets that
// serial again (the response of the first call was lost).
func (y *syncService) Renew(ctx context.Context, req *fedv1.RenewRequest) (*fedv1.RenewResponse, error) {
	s := y.s
	id, _ := callerIdentity(ctx)
	csr, err := parseCSR("csr", req.GetCsr())
	if err != nil {
		return nil, err
	}
	ca, _, _ := s.certs.current()
	if ca == nil {
		return nil, status.Error(codes.Unavailable, "hub: not ready: no hub CA yet; retry")
	}
	for attempt := 0; ; attempt++ {
		view, err := s.consistentRead(ctx)
		if err != nil {
			return nil, err
		}
		cl := view.Cluster(id.name)
		if cl == nil {
			return nil, errNotMember(id.name)
		}
		var issue agentCert
		switch id.serial {
		case cl.GetPreviousAgentCertSerial():
			cur := currentAgentCert(cl)
			if !bytes.Equal(cur.keyHash, publicKeyHash(csr)) {
				return nil, errSuperseded(id)
			}
			issue = cur
		case cl.GetAgentCertSerial():
			if issue, err = s.newAgentCert(csr, time.Now()); err != nil {
				return nil, err
			}
			_, err = s.apply(ctx, fsm.RenewAgentCertType, &hubpb.CmdRenewAgentCert{
				Cluster: id.name, PresentedSerial: id.serial, Serial: issue.serial,
				PublicKeySha256: issue.keyHash, NotBeforeMs: issue.notBeforeMs(), NotAfterMs: issue.notAfterMs(),
			})
			if status.Code(err) == codes.FailedPrecondition && attempt == 0 {
				continue // a concurrent renewal with this certificate won: answer as its retry
			}
			if err != nil {
				return nil, err
			}
			s.log.Info("agent certificate renewed", "cluster", id.name, "serial", issue.serial, "not_after", issue.notAfter)
		default:
			return nil, errSuperseded(id)
		}
		cert, err := s.signAgentCert(ca, csr, id.name, issue)
		if err != nil {
			return nil, err
		}
		return &fedv1.RenewResponse{ClientCertificate: x509pem.EncodeCerts(cert), HubCa: x509pem.EncodeCerts(ca.Cert), HubAddresses: s.hubAddrs()}, nil
	}
}
