// Package pki is the hub's certificate authority machinery: creating the
// hub CA, signing keys and certificate requests into leaves with a SPIFFE
// URI SAN, serials, fingerprints, and reading a leaf's SPIFFE ID. The hub
// issues its server, admin and agent identities with it, and the agent and
// the CLI make keys and requests with it. Policy (who gets which identity,
// for how long) stays with the callers.
//
// PEM encoding is not here: it is package trust/x509pem's, which trust
// uses too (trust is imported by the gateway, whose dependencies exclude
// internal/; the per-cluster SPIFFE CAs with rotation are trust's own).
package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"time"

	"github.com/meshfed/meshfed/trust/x509pem"
)

// CA is a certificate authority: a self-signed certificate and its key.
type CA struct {
	Cert *x509.Certificate
	Key  crypto.Signer
}

// NewCA creates a self-signed ECDSA P-256 CA for the given SPIFFE trust domain,
// valid for ttl.
func NewCA(trustDomain string, ttl time.Duration, now time.Time) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("pki: generate key: %w", err)
	}
	serial, err := NewSerial()
	if err != nil {
		return nil, err
	}
	td := &url.URL{Scheme: "spiffe", Host: trustDomain}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "meshfed CA " + trustDomain, Organization: []string{"meshfed"}},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.Add(ttl),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		URIs:                  []*url.URL{td},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("pki: self-sign: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("pki: parse CA: %w", err)
	}
	return &CA{Cert: cert, Key: key}, nil
}

// LeafOptions describe a leaf certificate to issue.
type LeafOptions struct {
	// SPIFFEID is the single URI SAN, e.g. spiffe://hub.meshfed/server/a.
	SPIFFEID string
	// DNSNames and IPs are added as SANs for server certificates.
	DNSNames []string
	IPs      []net.IP
	TTL      time.Duration
	Now      time.Time
	// Server and Client select the extended key usages.
	Server, Client bool
	// Serial, if set, is the certificate's serial number; otherwise a random
	// one is chosen.
	Serial *big.Int
	// NotBefore and NotAfter, when NotAfter is set, are the validity
	// exactly, and TTL and Now are not used: issuing a certificate again
	// with the same serial gives the same validity.
	NotBefore, NotAfter time.Time
}

// Sign issues a leaf certificate for pub.
func (ca *CA) Sign(pub crypto.PublicKey, opts LeafOptions) (*x509.Certificate, error) {
	id, err := url.Parse(opts.SPIFFEID)
	if err != nil || id.Scheme != "spiffe" || id.Host == "" {
		return nil, fmt.Errorf("pki: invalid SPIFFE ID %q", opts.SPIFFEID)
	}
	notBefore, notAfter := opts.Now.Add(-time.Minute), opts.Now.Add(opts.TTL)
	if !opts.NotAfter.IsZero() {
		notBefore, notAfter = opts.NotBefore, opts.NotAfter
		if !notAfter.After(notBefore) {
			return nil, errors.New("pki: NotAfter must be after NotBefore")
		}
	} else if opts.TTL <= 0 {
		return nil, errors.New("pki: TTL must be positive")
	}
	serial := opts.Serial
	if serial == nil {
		var err error
		if serial, err = NewSerial(); err != nil {
			return nil, err
		}
	}
	if notAfter.After(ca.Cert.NotAfter) {
		notAfter = ca.Cert.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{"meshfed"}},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment | x509.KeyUsageKeyAgreement,
		BasicConstraintsValid: true,
		URIs:                  []*url.URL{id},
		DNSNames:              opts.DNSNames,
		IPAddresses:           opts.IPs,
	}
	if opts.Server {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageServerAuth)
	}
	if opts.Client {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageClientAuth)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, pub, ca.Key)
	if err != nil {
		return nil, fmt.Errorf("pki: sign: %w", err)
	}
	return x509.ParseCertificate(der)
}

// SignCSR checks the request's signature and issues a leaf for its key. The
// identity comes from opts, never from the request's own subject or SANs.
func (ca *CA) SignCSR(csrDER []byte, opts LeafOptions) (*x509.Certificate, error) {
	csr, err := x509.ParseCertificateRequest(csrDER)
	if err != nil {
		return nil, fmt.Errorf("pki: parse CSR: %w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("pki: CSR signature: %w", err)
	}
	return ca.Sign(csr.PublicKey, opts)
}

// NewKey generates an ECDSA P-256 key.
func NewKey() (*ecdsa.PrivateKey, error) {
	return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
}

// NewCSR creates a DER certificate request for key.
func NewCSR(key crypto.Signer) ([]byte, error) {
	return x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{Organization: []string{"meshfed"}}}, key)
}

// Fingerprint is the hex SHA-256 of a certificate's DER bytes.
func Fingerprint(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.Raw)
	return hex.EncodeToString(sum[:])
}

// ParseCA decodes a CA from PEM.
func ParseCA(certPEM, keyPEM []byte) (*CA, error) {
	certs, err := x509pem.DecodeCerts(certPEM)
	if err != nil {
		return nil, fmt.Errorf("pki: CA certificate: %w", err)
	}
	key, err := x509pem.DecodeKey(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("pki: CA key: %w", err)
	}
	return &CA{Cert: certs[0], Key: key}, nil
}

// SPIFFEID returns the single URI SAN of a certificate, or an error if it has
// none or more than one.
func SPIFFEID(cert *x509.Certificate) (*url.URL, error) {
	if len(cert.URIs) != 1 {
		return nil, fmt.Errorf("pki: certificate has %d URI SANs, want exactly 1", len(cert.URIs))
	}
	u := cert.URIs[0]
	if u.Scheme != "spiffe" {
		return nil, fmt.Errorf("pki: URI SAN %q is not a SPIFFE ID", u)
	}
	return u, nil
}

// NewSerial returns a random 127-bit certificate serial number.
func NewSerial() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("pki: serial: %w", err)
	}
	return n, nil
}
