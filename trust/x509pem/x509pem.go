// Package x509pem is meshfed's one PEM encoding of X.509 certificates and
// private keys: bounded, strict decoding (only the expected blocks, nothing
// but whitespace after them) and the encodings meshfed writes (CERTIFICATE
// blocks, PKCS#8 "PRIVATE KEY"). Package trust parses operator-provided CA
// material with it; the hub, the agent, internal/pki and the CLI encode and
// decode their certificates and keys with it. It sets no policy on what a
// certificate may be; callers do.
//
// It lives under trust, not internal, because trust uses it and the
// gateway's dependencies stay within federation, gateway and trust.
package x509pem

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
)

// Limits on input.
const (
	// MaxSize bounds each PEM document decoded (a certificate chain or
	// list, a key).
	MaxSize = 1 << 20
	// MinRSABits is the smallest RSA key accepted.
	MinRSABits = 2048
)

// PEM block types.
const (
	TypeCertificate  = "CERTIFICATE"
	TypePKCS8Key     = "PRIVATE KEY"
	TypeECKey        = "EC PRIVATE KEY"
	TypeRSAKey       = "RSA PRIVATE KEY"
	TypeECParameters = "EC PARAMETERS"
	TypeEncryptedKey = "ENCRYPTED PRIVATE KEY"
)

// ErrInvalid is matched by every decoding error.
var ErrInvalid = errors.New("x509pem: invalid PEM")

// EncodeCerts encodes certificates as concatenated CERTIFICATE blocks, in
// order.
func EncodeCerts(certs ...*x509.Certificate) []byte {
	var buf bytes.Buffer
	for _, c := range certs {
		_ = pem.Encode(&buf, &pem.Block{Type: TypeCertificate, Bytes: c.Raw})
	}
	return buf.Bytes()
}

// EncodeKey encodes a private key as a PKCS#8 "PRIVATE KEY" block.
func EncodeKey(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("x509pem: marshal key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: TypePKCS8Key, Bytes: der}), nil
}

// DecodeCerts decodes data, which must hold only CERTIFICATE blocks (at
// least one) and nothing but whitespace after them, and be at most MaxSize
// bytes. Errors match ErrInvalid.
func DecodeCerts(data []byte) ([]*x509.Certificate, error) {
	if len(data) > MaxSize {
		return nil, fmt.Errorf("%w: %d bytes, at most %d", ErrInvalid, len(data), MaxSize)
	}
	var certs []*x509.Certificate
	rest := data
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != TypeCertificate {
			return nil, fmt.Errorf("%w: unexpected PEM block %q, want only %q", ErrInvalid, block.Type, TypeCertificate)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%w: certificate %d: %w", ErrInvalid, len(certs), err)
		}
		certs = append(certs, c)
	}
	if n := len(bytes.TrimSpace(rest)); n != 0 {
		return nil, fmt.Errorf("%w: %d bytes of non-PEM data", ErrInvalid, n)
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("%w: no %s PEM block", ErrInvalid, TypeCertificate)
	}
	return certs, nil
}

// DecodeKey decodes exactly one private key: PKCS#8 ("PRIVATE KEY"), SEC 1
// ("EC PRIVATE KEY", optionally preceded by "EC PARAMETERS", as openssl
// writes it) or PKCS#1 ("RSA PRIVATE KEY"), as cert-manager and common PKI
// tools write them. It accepts the keys CheckSigner does. Errors match
// ErrInvalid.
func DecodeKey(data []byte) (crypto.Signer, error) {
	if len(data) > MaxSize {
		return nil, fmt.Errorf("%w: key: %d bytes, at most %d", ErrInvalid, len(data), MaxSize)
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
		case TypeECParameters:
			continue
		case TypePKCS8Key:
			k, err = x509.ParsePKCS8PrivateKey(block.Bytes)
		case TypeECKey:
			k, err = x509.ParseECPrivateKey(block.Bytes)
		case TypeRSAKey:
			k, err = x509.ParsePKCS1PrivateKey(block.Bytes)
		case TypeEncryptedKey:
			return nil, fmt.Errorf("%w: key: encrypted private keys are not supported; decrypt it first", ErrInvalid)
		default:
			return nil, fmt.Errorf("%w: key: unexpected PEM block %q", ErrInvalid, block.Type)
		}
		if err != nil {
			return nil, fmt.Errorf("%w: key: %w", ErrInvalid, err)
		}
		if key != nil {
			return nil, fmt.Errorf("%w: key: more than one private key", ErrInvalid)
		}
		s, err := CheckSigner(k)
		if err != nil {
			return nil, err
		}
		key = s
	}
	if n := len(bytes.TrimSpace(rest)); n != 0 {
		return nil, fmt.Errorf("%w: key: %d bytes of non-PEM data", ErrInvalid, n)
	}
	if key == nil {
		return nil, fmt.Errorf("%w: key: no private key PEM block", ErrInvalid)
	}
	return key, nil
}

// CheckSigner accepts the key types a certificate may be signed with:
// ECDSA, Ed25519, and RSA of at least MinRSABits. Errors match ErrInvalid.
func CheckSigner(k any) (crypto.Signer, error) {
	switch k := k.(type) {
	case *ecdsa.PrivateKey:
		return k, nil
	case ed25519.PrivateKey:
		return k, nil
	case *rsa.PrivateKey:
		if bits := k.N.BitLen(); bits < MinRSABits {
			return nil, fmt.Errorf("%w: key: RSA key of %d bits, at least %d", ErrInvalid, bits, MinRSABits)
		}
		return k, nil
	default:
		return nil, fmt.Errorf("%w: key: unsupported key type %T", ErrInvalid, k)
	}
}

// KeyMatches reports whether key is the private half of cert's public key.
func KeyMatches(key crypto.Signer, cert *x509.Certificate) bool {
	pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool })
	return ok && pub.Equal(cert.PublicKey)
}
