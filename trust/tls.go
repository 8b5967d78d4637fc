package trust

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// ServerTLS returns a TLS 1.3 server configuration for mutual TLS with
// SPIFFE authentication: it presents svids' current X509-SVID (read at
// every handshake, so renewals apply to new handshakes at once), requires a
// client certificate, and accepts a client only if VerifyPeer accepts it:
// its X509-SVID verifies against the bundle of the trust domain its SPIFFE
// ID names, looked up in bundles at that handshake (so a trust domain
// removed from a BundleSet is refused from the next handshake on), and
// authorize allows its ID. A nil authorize refuses every peer.
//
// Verification runs in VerifyConnection, which crypto/tls calls on every
// handshake, including resumed ones. The caller may set further fields
// (NextProtos, for example) but must not replace the certificate and
// verification fields.
func ServerTLS(svids x509svid.Source, bundles x509bundle.Source, authorize tlsconfig.Authorizer) *tls.Config {
	return &tls.Config{
		MinVersion:       tls.VersionTLS13,
		ClientAuth:       tls.RequireAnyClientCert,
		GetCertificate:   tlsconfig.GetCertificate(svids),
		VerifyConnection: verifyConnection(bundles, authorize),
	}
}

// ClientTLS returns a TLS 1.3 client configuration for mutual TLS with
// SPIFFE authentication: it presents svids' current X509-SVID and accepts
// the server only if VerifyPeer accepts it (see ServerTLS). Host names are
// not checked: the server's identity is its SPIFFE ID, checked by
// authorize (typically AuthorizeID with the expected gateway ID).
func ClientTLS(svids x509svid.Source, bundles x509bundle.Source, authorize tlsconfig.Authorizer) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		// Web PKI verification (host names, system roots) is replaced by
		// SPIFFE verification in VerifyConnection.
		InsecureSkipVerify:   true, //nolint:gosec // verified in VerifyConnection
		GetClientCertificate: tlsconfig.GetClientCertificate(svids),
		VerifyConnection:     verifyConnection(bundles, authorize),
	}
}

func verifyConnection(bundles x509bundle.Source, authorize tlsconfig.Authorizer) func(tls.ConnectionState) error {
	return func(cs tls.ConnectionState) error {
		_, err := VerifyPeer(cs.PeerCertificates, bundles, authorize, time.Now())
		return err
	}
}

// VerifyPeer verifies a peer's certificate chain (leaf first, as presented
// in a handshake) at time now and authorizes it. The leaf must be an
// X509-SVID: exactly one URI SAN holding a SPIFFE ID, not a CA, with the
// digitalSignature key usage and neither keyCertSign nor cRLSign; it must
// chain, through the presented intermediates, to an X.509 authority of the
// bundle bundles holds for the trust domain the SPIFFE ID names (never
// another trust domain's), within every certificate's validity. Then
// authorize must allow the ID; a nil authorize allows none.
//
// It returns the peer's SPIFFE ID, or an error matching ErrPeerRejected
// (and ErrNotFederated when bundles has no bundle for the trust domain).
// Gateways may call it again on long-lived connections (with
// tls.ConnectionState.PeerCertificates) to drop peers whose trust domain
// was withdrawn.
func VerifyPeer(certs []*x509.Certificate, bundles x509bundle.Source, authorize tlsconfig.Authorizer, now time.Time) (spiffeid.ID, error) {
	if len(certs) == 0 {
		return spiffeid.ID{}, fmt.Errorf("%w: no certificate presented", ErrPeerRejected)
	}
	if bundles == nil {
		return spiffeid.ID{}, fmt.Errorf("%w: no bundle source configured", ErrPeerRejected)
	}
	id, chains, err := x509svid.Verify(certs, bundles, x509svid.WithTime(now))
	if err != nil {
		return id, fmt.Errorf("%w: %w", ErrPeerRejected, err)
	}
	if certs[0].KeyUsage&x509.KeyUsageDigitalSignature == 0 {
		return id, fmt.Errorf("%w: leaf %s lacks the digitalSignature key usage", ErrPeerRejected, id)
	}
	if id.Path() == "" {
		return id, fmt.Errorf("%w: leaf SPIFFE ID %s has no path", ErrPeerRejected, id)
	}
	if authorize == nil {
		return id, &AuthorizationError{ID: id.String(), Reason: "no authorizer configured"}
	}
	if err := authorize(id, chains); err != nil {
		if errors.Is(err, ErrPeerRejected) {
			return id, err
		}
		return id, &AuthorizationError{ID: id.String(), Reason: err.Error()}
	}
	return id, nil
}

// AuthorizeFederated allows any peer that verified: any SPIFFE ID of a
// trust domain the bundle source holds (the federated set). Verification,
// not this authorizer, keeps other trust domains out.
func AuthorizeFederated() tlsconfig.Authorizer {
	return func(spiffeid.ID, [][]*x509.Certificate) error { return nil }
}

// AuthorizeMemberOf allows peers of the given trust domains only.
func AuthorizeMemberOf(tds ...spiffeid.TrustDomain) tlsconfig.Authorizer {
	allowed := slices.Clone(tds)
	return func(id spiffeid.ID, _ [][]*x509.Certificate) error {
		if slices.Contains(allowed, id.TrustDomain()) {
			return nil
		}
		return &AuthorizationError{ID: id.String(), Reason: fmt.Sprintf("trust domain is not one of %v", allowed)}
	}
}

// AuthorizeID allows peers with one of the given SPIFFE IDs only.
func AuthorizeID(ids ...spiffeid.ID) tlsconfig.Authorizer {
	allowed := slices.Clone(ids)
	return func(id spiffeid.ID, _ [][]*x509.Certificate) error {
		if !id.IsZero() && slices.Contains(allowed, id) {
			return nil
		}
		return &AuthorizationError{ID: id.String(), Reason: fmt.Sprintf("not one of %v", allowed)}
	}
}

// AuthorizeKind allows peers, of any federated trust domain, whose SPIFFE
// ID classifies (see Classify) as one of kinds; for example
// AuthorizeKind(KindGateway) admits every federated cluster's gateways.
func AuthorizeKind(kinds ...Kind) tlsconfig.Authorizer {
	allowed := slices.Clone(kinds)
	return func(id spiffeid.ID, _ [][]*x509.Certificate) error {
		ident, err := Classify(id)
		if err != nil {
			return &AuthorizationError{ID: id.String(), Reason: err.Error()}
		}
		if !slices.Contains(allowed, ident.Kind()) {
			return &AuthorizationError{ID: id.String(), Reason: fmt.Sprintf("a %s, not one of %v", ident.Kind(), allowed)}
		}
		return nil
	}
}
