package trust

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/meshfed/meshfed/trust/x509pem"
)

// fakeClock is a settable clock for the lazily evaluated state machines.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock(t testing.TB) *fakeClock {
	t.Helper()
	return &fakeClock{now: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// memStore is an in-memory Store that can be told to fail.
type memStore struct {
	mu    sync.Mutex
	data  []byte
	saves int
	fail  error
}

func newMemStore(t testing.TB) *memStore {
	t.Helper()
	return &memStore{}
}

func (s *memStore) Load() ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.data == nil {
		return nil, ErrNotFound
	}
	return append([]byte(nil), s.data...), nil
}

func (s *memStore) Save(b []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		return s.fail
	}
	s.data = append([]byte(nil), b...)
	s.saves++
	return nil
}

func (s *memStore) setFail(err error) {
	s.mu.Lock()
	s.fail = err
	s.mu.Unlock()
}

var _ Store = (*memStore)(nil)

func td(t testing.TB, name string) spiffeid.TrustDomain {
	t.Helper()
	return spiffeid.RequireTrustDomainFromString(name)
}

// testCert is a certificate and its key, forged with crypto/x509 directly.
type testCert struct {
	cert *x509.Certificate
	key  crypto.Signer
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

var serialCounter struct {
	sync.Mutex
	n int64
}

func nextSerial() *big.Int {
	serialCounter.Lock()
	defer serialCounter.Unlock()
	serialCounter.n++
	return big.NewInt(serialCounter.n)
}

// certOpts describe a certificate to forge.
type certOpts struct {
	cn        string
	uris      []string
	isCA      bool
	keyUsage  x509.KeyUsage
	extUsage  []x509.ExtKeyUsage
	notBefore time.Time
	notAfter  time.Time
	dnsNames  []string
	ips       []net.IP
}

// forge creates a certificate from opts signed by parent (self-signed if
// parent is nil).
func forge(t testing.TB, parent *testCert, o certOpts) *testCert {
	t.Helper()
	key := newKey(t)
	if o.notBefore.IsZero() {
		o.notBefore = time.Now().Add(-time.Hour)
	}
	if o.notAfter.IsZero() {
		o.notAfter = time.Now().Add(time.Hour)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          nextSerial(),
		Subject:               pkix.Name{CommonName: o.cn},
		NotBefore:             o.notBefore,
		NotAfter:              o.notAfter,
		KeyUsage:              o.keyUsage,
		ExtKeyUsage:           o.extUsage,
		BasicConstraintsValid: true,
		IsCA:                  o.isCA,
		DNSNames:              o.dnsNames,
		IPAddresses:           o.ips,
	}
	for _, u := range o.uris {
		pu, err := url.Parse(u)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.URIs = append(tmpl.URIs, pu)
	}
	signerCert, signerKey := tmpl, crypto.Signer(key)
	if parent != nil {
		signerCert, signerKey = parent.cert, parent.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signerCert, key.Public(), signerKey)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCert{cert: c, key: key}
}

// forgeCA forges a CA certificate for trust domain name (URI SAN
// spiffe://name), self-signed if parent is nil.
func forgeCA(t testing.TB, parent *testCert, name string) *testCert {
	t.Helper()
	return forge(t, parent, certOpts{cn: "CA " + name, uris: []string{"spiffe://" + name}, isCA: true, keyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign})
}

// forgeLeaf forges a well-formed X509-SVID leaf for id signed by parent.
func forgeLeaf(t testing.TB, parent *testCert, id string) *testCert {
	t.Helper()
	return forge(t, parent, leafOpts(id))
}

func leafOpts(id string) certOpts {
	return certOpts{uris: []string{id}, keyUsage: x509.KeyUsageDigitalSignature, extUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
}

// svidOf turns a forged leaf (and chain) into an x509svid.SVID without
// go-spiffe's validation, so malformed SVIDs can be presented.
func svidOf(t testing.TB, leaf *testCert, chain ...*testCert) *x509svid.SVID {
	t.Helper()
	s := &x509svid.SVID{Certificates: []*x509.Certificate{leaf.cert}, PrivateKey: leaf.key}
	if len(leaf.cert.URIs) > 0 {
		if id, err := spiffeid.FromURI(leaf.cert.URIs[0]); err == nil {
			s.ID = id
		}
	}
	for _, c := range chain {
		s.Certificates = append(s.Certificates, c.cert)
	}
	return s
}

func pemOf(certs ...*x509.Certificate) []byte {
	return x509pem.EncodeCerts(certs...)
}

func keyPEMOf(t testing.TB, k crypto.Signer) []byte {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

// connPair returns the two ends of a loopback TCP connection, closed at
// the end of the test, with a deadline. (net.Pipe is unbuffered, and TLS 1.3
// has moments where both sides write at once.)
func connPair(t testing.TB) (server, client net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ln.Close() }()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			accepted <- nil
			return
		}
		accepted <- c
	}()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server = <-accepted
	if server == nil {
		t.Fatal("accept failed")
	}
	deadline := time.Now().Add(10 * time.Second)
	for _, c := range []net.Conn{server, client} {
		_ = c.SetDeadline(deadline)
		t.Cleanup(func() { _ = c.Close() })
	}
	return server, client
}

// tlsPair runs a TLS handshake between server and client configs over
// loopback and returns both connections and both sides' errors. The server
// writes one byte after its handshake and the client reads it: in TLS 1.3
// the client finishes before the server has verified the client
// certificate, so the byte (or the alert instead) tells the client the
// outcome.
func tlsPair(t testing.TB, server, client *tls.Config) (s, c *tls.Conn, serverErr, clientErr error) {
	t.Helper()
	sc, cc := connPair(t)
	s, c = tls.Server(sc, server), tls.Client(cc, client)
	done := make(chan error, 1)
	go func() {
		err := s.Handshake()
		if err == nil {
			_, err = s.Write([]byte{1})
		} else {
			_ = sc.Close() // unblock the client
		}
		done <- err
	}()
	clientErr = c.Handshake()
	if clientErr == nil {
		if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
			clientErr = err
		}
	}
	if clientErr != nil {
		_ = cc.Close()
	}
	serverErr = <-done
	return s, c, serverErr, clientErr
}

// handshake is tlsPair without the connections.
func handshake(t testing.TB, server, client *tls.Config) (serverErr, clientErr error) {
	t.Helper()
	_, _, serverErr, clientErr = tlsPair(t, server, client)
	return serverErr, clientErr
}

// mustHandshake fails unless both sides of a handshake succeed.
func mustHandshake(t testing.TB, server, client *tls.Config) {
	t.Helper()
	if serverErr, clientErr := handshake(t, server, client); serverErr != nil || clientErr != nil {
		t.Fatalf("handshake failed: server: %v; client: %v", serverErr, clientErr)
	}
}

func isErr(err, target error) bool { return errors.Is(err, target) }

type urlURL = url.URL

type ecdsaPrivateKey = ecdsa.PrivateKey

func randReader() io.Reader { return rand.Reader }

// forgeWithKey is forge with a given key (for RSA).
func forgeWithKey(t testing.TB, parent *testCert, key crypto.Signer, o certOpts) *testCert {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber:          nextSerial(),
		Subject:               pkix.Name{CommonName: o.cn},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              o.keyUsage,
		BasicConstraintsValid: true,
		IsCA:                  o.isCA,
	}
	for _, u := range o.uris {
		pu, err := url.Parse(u)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.URIs = append(tmpl.URIs, pu)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent.cert, key.Public(), parent.key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCert{cert: c, key: key}
}
