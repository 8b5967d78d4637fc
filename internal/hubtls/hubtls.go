// Package hubtls is how a client knows it is talking to a server of a
// given hub: the presented chain must verify against the hub CA (or, at
// join, contain the CA a join token pins by fingerprint), and the leaf must
// carry a hub server's SPIFFE ID, spiffe://<hub-td>/server/<name>. Host
// names are not checked; the SPIFFE ID is the identity. The operator's
// client config, the agent (join, Sync, renewal) and a hub server calling
// another build their TLS configs here.
//
// The server naming is the hub's convention, so this does not live in
// package trust (per-cluster SPIFFE identities, imported by the gateway);
// it is internal because it is not API.
package hubtls

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"

	"github.com/meshfed/meshfed/internal/pki"
)

// ErrNotHubServer is matched by every refusal of a presented certificate.
var ErrNotHubServer = errors.New("hubtls: not a server of the hub")

// serverPathPrefix starts the path of every hub server's SPIFFE ID.
const serverPathPrefix = "/server/"

// ClientConfig is a TLS 1.3 client config that verifies a hub server of
// trustDomain chained to roots (VerifyServer) and presents cert, if not nil.
func ClientConfig(roots *x509.CertPool, cert *tls.Certificate, trustDomain string) *tls.Config {
	cfg := &tls.Config{
		MinVersion:         tls.VersionTLS13,
		InsecureSkipVerify: true, // verified below against roots and the SPIFFE ID
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			return VerifyServer(raw, roots, trustDomain)
		},
	}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	return cfg
}

// PinnedConfig is a TLS 1.3 client config for a hub known only by the
// fingerprint of its CA (pki.Fingerprint; a join token carries it): the
// presented chain must contain that CA, and the leaf must be a hub server
// of the CA's trust domain chained to it.
func PinnedConfig(fingerprint string) *tls.Config {
	return &tls.Config{
		MinVersion:         tls.VersionTLS13,
		InsecureSkipVerify: true, // verified below by pinning the CA fingerprint
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			for _, r := range raw[min(1, len(raw)):] {
				c, err := x509.ParseCertificate(r)
				if err != nil || pki.Fingerprint(c) != fingerprint {
					continue
				}
				id, err := pki.SPIFFEID(c)
				if err != nil {
					return fmt.Errorf("%w: pinned hub CA: %w", ErrNotHubServer, err)
				}
				pool := x509.NewCertPool()
				pool.AddCert(c)
				return VerifyServer(raw, pool, id.Host)
			}
			return fmt.Errorf("%w: the hub does not present the pinned CA %s…", ErrNotHubServer, fingerprint[:min(12, len(fingerprint))])
		},
	}
}

// VerifyServer checks a presented chain (leaf first, DER) against roots
// and requires the leaf to be for server authentication and to carry a hub
// server's SPIFFE ID in trustDomain. Errors match ErrNotHubServer.
func VerifyServer(raw [][]byte, roots *x509.CertPool, trustDomain string) error {
	if len(raw) == 0 {
		return fmt.Errorf("%w: no certificate presented", ErrNotHubServer)
	}
	leaf, err := x509.ParseCertificate(raw[0])
	if err != nil {
		return fmt.Errorf("%w: hub certificate: %w", ErrNotHubServer, err)
	}
	inter := x509.NewCertPool()
	for _, r := range raw[1:] {
		if c, err := x509.ParseCertificate(r); err == nil {
			inter.AddCert(c)
		}
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		return fmt.Errorf("%w: hub certificate does not chain to the hub CA: %w", ErrNotHubServer, err)
	}
	id, err := pki.SPIFFEID(leaf)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrNotHubServer, err)
	}
	if id.Host != trustDomain || !strings.HasPrefix(id.Path, serverPathPrefix) {
		return fmt.Errorf("%w: hub certificate identity %q is not a server of %q", ErrNotHubServer, id, trustDomain)
	}
	return nil
}
