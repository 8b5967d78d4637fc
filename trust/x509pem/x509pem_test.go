package x509pem

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"testing"
	"time"
)

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func selfSigned(t testing.TB, key crypto.Signer, cn string) *x509.Certificate {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func keyPEM(t testing.TB, k crypto.Signer) []byte {
	t.Helper()
	b, err := EncodeKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// What EncodeCerts and EncodeKey write, DecodeCerts and DecodeKey read
// back, in order.
func TestEncodedCertificatesAndKeysDecodeToTheSame(t *testing.T) {
	k := newKey(t)
	a, b := selfSigned(t, k, "a"), selfSigned(t, newKey(t), "b")
	got, err := DecodeCerts(EncodeCerts(a, b))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || !got[0].Equal(a) || !got[1].Equal(b) {
		t.Fatalf("decoded %d certificates, not a then b", len(got))
	}
	key, err := DecodeKey(keyPEM(t, k))
	if err != nil {
		t.Fatal(err)
	}
	if !KeyMatches(key, a) || KeyMatches(key, b) {
		t.Fatal("the decoded key does not match its certificate only")
	}
}

// Decoding is strict: only the expected blocks, nothing after them,
// bounded input, and every refusal matches ErrInvalid.
func TestDecodeRefusesWhatIsNotOnlyTheExpectedBlocks(t *testing.T) {
	k := newKey(t)
	cert := EncodeCerts(selfSigned(t, k, "a"))
	key := keyPEM(t, k)
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{
		"empty":               nil,
		"not PEM":             []byte("hello"),
		"key among certs":     append(append([]byte{}, cert...), key...),
		"junk after":          append(append([]byte{}, cert...), "junk"...),
		"bad DER":             pem.EncodeToMemory(&pem.Block{Type: TypeCertificate, Bytes: []byte{1, 2, 3}}),
		"larger than MaxSize": append(bytes.Repeat([]byte(" "), MaxSize), cert...),
	} {
		if _, err := DecodeCerts(data); !errors.Is(err, ErrInvalid) {
			t.Errorf("DecodeCerts(%s): %v, want ErrInvalid", name, err)
		}
	}
	for name, data := range map[string][]byte{
		"empty":               nil,
		"certificate":         cert,
		"two keys":            append(append([]byte{}, key...), key...),
		"junk after":          append(append([]byte{}, key...), "junk"...),
		"encrypted":           pem.EncodeToMemory(&pem.Block{Type: TypeEncryptedKey, Bytes: []byte{1}}),
		"RSA 1024":            pem.EncodeToMemory(&pem.Block{Type: TypeRSAKey, Bytes: x509.MarshalPKCS1PrivateKey(small)}),
		"larger than MaxSize": append(bytes.Repeat([]byte(" "), MaxSize), key...),
	} {
		if _, err := DecodeKey(data); !errors.Is(err, ErrInvalid) {
			t.Errorf("DecodeKey(%s): %v, want ErrInvalid", name, err)
		}
	}
	if _, err := DecodeKey(keyPEM(t, edKey)); err != nil {
		t.Errorf("an Ed25519 key: %v", err)
	}
}

func FuzzDecodeKey(f *testing.F) {
	ec := newKey(f)
	ecDER, err := x509.MarshalECPrivateKey(ec)
	if err != nil {
		f.Fatal(err)
	}
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(keyPEM(f, ec))
	f.Add(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: ecDER}))
	f.Add(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rsaKey)}))
	f.Add(append(pem.EncodeToMemory(&pem.Block{Type: "EC PARAMETERS", Bytes: []byte{6, 8, 42, 134, 72, 206, 61, 3, 1, 7}}), keyPEM(f, ec)...))
	f.Add(pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: []byte{1, 2}}))
	f.Add([]byte("-----BEGIN PRIVATE KEY-----\n-----END PRIVATE KEY-----\n"))
	f.Add([]byte("not pem"))
	f.Fuzz(func(t *testing.T, data []byte) {
		k, err := DecodeKey(data)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v does not match ErrInvalid", err)
			}
			return
		}
		if k == nil || k.Public() == nil {
			t.Fatal("nil key without an error")
		}
	})
}
