package trust

import (
	"crypto"
	"crypto/x509"
	"fmt"

	"github.com/meshfed/meshfed/trust/x509pem"
)

// Limits on PEM input. The PEM encoding itself is package x509pem's; trust
// adds the chain bound and reports errors as ErrInvalidAuthority.
const (
	// MaxPEMSize bounds each PEM document this package parses (certificate
	// chains, keys, stored CA state).
	MaxPEMSize = x509pem.MaxSize
	// MaxChainLength bounds the certificates of an operator-provided chain
	// or root list.
	MaxChainLength = 16
	// MinRSABits is the smallest RSA key accepted for an operator-provided
	// intermediate.
	MinRSABits = x509pem.MinRSABits
)

// PEM block types of the stored root state (root.go).
const (
	pemCertificate = x509pem.TypeCertificate
	pemPKCS8Key    = x509pem.TypePKCS8Key
)

// parseCertsPEM decodes data, which must hold only CERTIFICATE blocks (at
// least one, at most MaxChainLength) and nothing but whitespace around
// them. Errors match ErrInvalidAuthority and name what (for example
// "chain").
func parseCertsPEM(what string, data []byte) ([]*x509.Certificate, error) {
	certs, err := x509pem.DecodeCerts(data)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrInvalidAuthority, what, err)
	}
	if len(certs) > MaxChainLength {
		return nil, fmt.Errorf("%w: %s: %d certificates, at most %d", ErrInvalidAuthority, what, len(certs), MaxChainLength)
	}
	return certs, nil
}

// parseKeyPEM decodes exactly one private key as x509pem.DecodeKey does.
// Errors match ErrInvalidAuthority.
func parseKeyPEM(data []byte) (crypto.Signer, error) {
	key, err := x509pem.DecodeKey(data)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidAuthority, err)
	}
	return key, nil
}

// checkSigner accepts the key types a CA may sign with
// (x509pem.CheckSigner). Errors match ErrInvalidAuthority.
func checkSigner(k any) (crypto.Signer, error) {
	s, err := x509pem.CheckSigner(k)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidAuthority, err)
	}
	return s, nil
}

// keyMatches reports whether key is the private half of cert's public key.
func keyMatches(key crypto.Signer, cert *x509.Certificate) bool {
	return x509pem.KeyMatches(key, cert)
}
