package trust

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
)

// Limits on PEM input.
const (
	// MaxPEMSize bounds each PEM document this package parses (certificate
	// chains, keys, stored CA state).
	MaxPEMSize = 1 << 20
	// MaxChainLength bounds the certificates of an operator-provided chain
	// or root list.
	MaxChainLength = 16
	// MinRSABits is the smallest RSA key accepted for an operator-provided
	// intermediate.
	MinRSABits = 2048
)

// PEM block types.
const (
	pemCertificate  = "CERTIFICATE"
	pemPKCS8Key     = "PRIVATE KEY"
	pemECKey        = "EC PRIVATE KEY"
	pemRSAKey       = "RSA PRIVATE KEY"
	pemECParameters = "EC PARAMETERS"
	pemEncryptedKey = "ENCRYPTED PRIVATE KEY"
)

// parseCertsPEM decodes data, which must hold only CERTIFICATE blocks (at
// least one, at most MaxChainLength) and nothing but whitespace around
// them. Errors match ErrInvalidAuthority and name what (for example
// "chain").
func parseCertsPEM(what string, data []byte) ([]*x509.Certificate, error) {
	if len(data) > MaxPEMSize {
		return nil, fmt.Errorf("%w: %s: %d bytes, at most %d", ErrInvalidAuthority, what, len(data), MaxPEMSize)
	}
	var certs []*x509.Certificate
	rest := data
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != pemCertificate {
			return nil, fmt.Errorf("%w: %s: unexpected PEM block %q, want only %q", ErrInvalidAuthority, what, block.Type, pemCertificate)
		}
		if len(certs) == MaxChainLength {
			return nil, fmt.Errorf("%w: %s: more than %d certificates", ErrInvalidAuthority, what, MaxChainLength)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: certificate %d: %w", ErrInvalidAuthority, what, len(certs), err)
		}
		certs = append(certs, c)
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, fmt.Errorf("%w: %s: %d bytes of non-PEM data", ErrInvalidAuthority, what, len(bytes.TrimSpace(rest)))
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("%w: %s: no %s PEM block", ErrInvalidAuthority, what, pemCertificate)
	}
	return certs, nil
}

// parseKeyPEM decodes exactly one private key: PKCS#8 ("PRIVATE KEY"),
// SEC 1 ("EC PRIVATE KEY", optionally preceded by "EC PARAMETERS", as
// openssl writes it) or PKCS#1 ("RSA PRIVATE KEY"), as cert-manager and
// common PKI tools write them. It accepts ECDSA, Ed25519 and RSA keys of at
// least MinRSABits. Errors match ErrInvalidAuthority.
func parseKeyPEM(data []byte) (crypto.Signer, error) {
	if len(data) > MaxPEMSize {
		return nil, fmt.Errorf("%w: key: %d bytes, at most %d", ErrInvalidAuthority, len(data), MaxPEMSize)
	}
	var key crypto.Signer
	rest := data
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		var k any
		var err error
		switch block.Type {
		case pemECParameters:
			continue
		case pemPKCS8Key:
			k, err = x509.ParsePKCS8PrivateKey(block.Bytes)
		case pemECKey:
			k, err = x509.ParseECPrivateKey(block.Bytes)
		case pemRSAKey:
			k, err = x509.ParsePKCS1PrivateKey(block.Bytes)
		case pemEncryptedKey:
			return nil, fmt.Errorf("%w: key: encrypted private keys are not supported; decrypt it first", ErrInvalidAuthority)
		default:
			return nil, fmt.Errorf("%w: key: unexpected PEM block %q", ErrInvalidAuthority, block.Type)
		}
		if err != nil {
			return nil, fmt.Errorf("%w: key: %w", ErrInvalidAuthority, err)
		}
		if key != nil {
			return nil, fmt.Errorf("%w: key: more than one private key", ErrInvalidAuthority)
		}
		s, err := checkSigner(k)
		if err != nil {
			return nil, err
		}
		key = s
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, fmt.Errorf("%w: key: %d bytes of non-PEM data", ErrInvalidAuthority, len(bytes.TrimSpace(rest)))
	}
	if key == nil {
		return nil, fmt.Errorf("%w: key: no private key PEM block", ErrInvalidAuthority)
	}
	return key, nil
}

// checkSigner accepts the key types a CA may sign with.
func checkSigner(k any) (crypto.Signer, error) {
	switch k := k.(type) {
	case *ecdsa.PrivateKey:
		return k, nil
	case ed25519.PrivateKey:
		return k, nil
	case *rsa.PrivateKey:
		if bits := k.N.BitLen(); bits < MinRSABits {
			return nil, fmt.Errorf("%w: key: RSA key of %d bits, at least %d", ErrInvalidAuthority, bits, MinRSABits)
		}
		return k, nil
	default:
		return nil, fmt.Errorf("%w: key: unsupported key type %T", ErrInvalidAuthority, k)
	}
}

// keyMatches reports whether key is the private half of cert's public key.
func keyMatches(key crypto.Signer, cert *x509.Certificate) bool {
	pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool })
	return ok && pub.Equal(cert.PublicKey)
}

// certsPEM encodes certificates as concatenated CERTIFICATE blocks.
func certsPEM(certs []*x509.Certificate) []byte {
	var buf bytes.Buffer
	for _, c := range certs {
		_ = pem.Encode(&buf, &pem.Block{Type: pemCertificate, Bytes: c.Raw})
	}
	return buf.Bytes()
}
