package hub

import (
	"bytes"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/meshfed/meshfed/hub/fsm"
	"github.com/meshfed/meshfed/hub/internal/hubpb"
	"github.com/meshfed/meshfed/internal/clientconfig"
	"github.com/meshfed/meshfed/internal/pki"
)

// caSource is where the certificate manager learns the hub CA: the
// replicated state. The manager's goroutine calls it.
type caSource interface {
	// CA returns the hub CA in the applied state, nil before there is one,
	// and a channel closed when that state next changes.
	CA() (*hubpb.CAState, <-chan struct{})
}

// fsmCA is the caSource of a running server.
type fsmCA struct{ f *fsm.FSM }

func (c fsmCA) CA() (*hubpb.CAState, <-chan struct{}) {
	st := c.f.Store()
	watch := st.Watch() // before the read: a change in between wakes us
	return st.Read().CA(), watch
}

// certIdentity is who the server certificate names and where it is kept.
type certIdentity struct {
	trustDomain string
	name        string
	ips         []net.IP
	ttl         time.Duration
	// dir holds the last issued certificate and key, so that a restarted
	// server serves TLS at once, before it has caught up with the log that
	// holds the CA. Empty: not persisted.
	dir string
}

func (id certIdentity) spiffeID(kind, name string) string {
	return fmt.Sprintf("spiffe://%s/%s/%s", id.trustDomain, kind, name)
}

// certManager holds this server's TLS identity. It loads the one the
// server had before a restart, issues one from the replicated hub CA once
// it exists, and renews it at half-life.
type certManager struct {
	id  certIdentity
	src caSource
	log *slog.Logger
	// onCA is called once, from the manager's goroutine, when the hub CA is
	// first known (the server writes admin.yaml).
	onCA func(*pki.CA) error

	mu    sync.RWMutex
	caPEM []byte
	ca    *pki.CA // from the replicated state; nil before
	pool  *x509.CertPool
	cert  *tls.Certificate
	// renewAt is when cert is due for renewal, fixed when it is taken.
	renewAt time.Time
	// ready is closed once the hub CA from the replicated state is known.
	ready chan struct{}
	// haveCert is closed once there is a server certificate to serve,
	// loaded from the data directory or issued.
	haveCert chan struct{}
}

func newCertManager(id certIdentity, src caSource, log *slog.Logger, onCA func(*pki.CA) error) *certManager {
	m := &certManager{id: id, src: src, log: log, onCA: onCA, ready: make(chan struct{}), haveCert: make(chan struct{})}
	if err := m.load(); err != nil {
		log.Info("no usable server certificate in the data directory; waiting for the hub CA", "reason", err)
	}
	return m
}

// current returns the CA, the trust pool and this server's certificate.
// The CA is nil until the replicated state holds it; the pool and
// certificate may come from the data directory before that.
func (m *certManager) current() (*pki.CA, *x509.CertPool, *tls.Certificate) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.ca, m.pool, m.cert
}

const (
	certFile = "server.crt" // the leaf, then the hub CA
	keyFile  = "server.key"
)

// load takes the certificate persisted by an earlier run if it is still
// valid and names this server.
func (m *certManager) load() error {
	if m.id.dir == "" {
		return errors.New("not persisted")
	}
	certPEM, err := os.ReadFile(filepath.Join(m.id.dir, certFile))
	if err != nil {
		return err
	}
	keyPEM, err := os.ReadFile(filepath.Join(m.id.dir, keyFile))
	if err != nil {
		return err
	}
	chain, err := pki.ParseCertsPEM(certPEM)
	if err != nil {
		return err
	}
	if len(chain) != 2 {
		return fmt.Errorf("%s: %d certificates, want the leaf and the hub CA", certFile, len(chain))
	}
	key, err := pki.ParseKeyPEM(keyPEM)
	if err != nil {
		return err
	}
	leaf, caCert := chain[0], chain[1]
	pool := x509.NewCertPool()
	pool.AddCert(caCert)
	if err := clientconfig.VerifyHubServer([][]byte{leaf.Raw, caCert.Raw}, pool, m.id.trustDomain); err != nil {
		return err
	}
	if id, _ := pki.SPIFFEID(leaf); id == nil || id.String() != m.id.spiffeID(kindServer, m.id.name) {
		return fmt.Errorf("%s names %v, not this server", certFile, id)
	}
	if !time.Now().Before(leaf.NotAfter) {
		return fmt.Errorf("%s expired at %v", certFile, leaf.NotAfter)
	}
	m.mu.Lock()
	m.pool = pool
	m.cert = &tls.Certificate{Certificate: [][]byte{leaf.Raw, caCert.Raw}, PrivateKey: key, Leaf: leaf}
	// Its issue time is not recorded; the middle of its validity is at
	// most a minute (pki's backdating) earlier than its half-life.
	m.renewAt = leaf.NotBefore.Add(leaf.NotAfter.Sub(leaf.NotBefore) / 2)
	m.mu.Unlock()
	close(m.haveCert)
	m.log.Info("serving the server certificate of the previous run until the hub CA is applied", "not_after", leaf.NotAfter)
	return nil
}

// save persists the certificate and key, each written whole and renamed.
func (m *certManager) save(cert *tls.Certificate) error {
	if m.id.dir == "" {
		return nil
	}
	if err := os.MkdirAll(m.id.dir, 0o700); err != nil {
		return err
	}
	key, ok := cert.PrivateKey.(crypto.Signer)
	if !ok {
		return fmt.Errorf("server key is a %T", cert.PrivateKey)
	}
	keyPEM, err := pki.KeyPEM(key)
	if err != nil {
		return err
	}
	var chain bytes.Buffer
	for _, der := range cert.Certificate {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return err
		}
		chain.Write(pki.CertPEM(c))
	}
	// Key first: a certificate on disk always has its key.
	if err := writeFileAtomic(filepath.Join(m.id.dir, keyFile), keyPEM); err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(m.id.dir, certFile), chain.Bytes())
}

func writeFileAtomic(path string, b []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// renewRetry is how long a failed renewal waits before the next attempt.
const renewRetry = 5 * time.Second

// run keeps the certificate in line with the replicated CA until stop. Each
// certificate gets one renewal timer, set for its renewAt when the
// manager takes it: wake-ups for other state changes (every write) do not
// move it.
func (m *certManager) run(stop <-chan struct{}) {
	var timer *time.Timer
	var timerFor *tls.Certificate // the certificate the timer is for
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		caState, changed := m.src.CA()
		if caState != nil {
			if err := m.useCA(caState); err != nil {
				m.log.Error("server certificate", "err", err)
			}
		}
		m.mu.RLock()
		cert, renewAt := m.cert, m.renewAt
		m.mu.RUnlock()
		if cert != nil && cert != timerFor {
			if timer != nil {
				timer.Stop()
			}
			timer, timerFor = time.NewTimer(time.Until(renewAt)), cert
		}
		var renew <-chan time.Time
		if timer != nil {
			renew = timer.C
		}
		select {
		case <-stop:
			return
		case <-changed:
		case <-renew:
			// Issue the successor first and swap: handshakes never see a gap.
			if err := m.renew(); err != nil {
				m.log.Error("renew server certificate; retrying", "err", err, "in", renewRetry)
				timer.Reset(renewRetry)
			}
		}
	}
}

// useCA takes the replicated CA. It issues a certificate if the server has
// none, one that does not chain to this CA (loaded from disk, issued by an
// earlier hub), one for other addresses (the server moved), or one due.
func (m *certManager) useCA(caState *hubpb.CAState) error {
	m.mu.RLock()
	same := bytes.Equal(m.caPEM, caState.GetCertPem())
	m.mu.RUnlock()
	if same {
		return nil
	}
	ca, err := pki.ParseCA(caState.GetCertPem(), caState.GetKeyPem())
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	m.mu.Lock()
	first := m.ca == nil
	m.ca, m.caPEM, m.pool = ca, caState.GetCertPem(), pool
	cert := m.cert
	m.mu.Unlock()
	if cert == nil || cert.Leaf.CheckSignatureFrom(ca.Cert) != nil || !sameIPs(cert.Leaf.IPAddresses, m.id.ips) ||
		!time.Now().Before(m.renewDue()) {
		if err := m.renew(); err != nil {
			return err
		}
	}
	if first {
		close(m.ready)
		if m.onCA != nil {
			return m.onCA(ca)
		}
	}
	return nil
}

func sameIPs(a, b []net.IP) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !a[i].Equal(b[i]) {
			return false
		}
	}
	return true
}

func (m *certManager) renewDue() time.Time {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.renewAt
}

// renew issues a new server certificate from the replicated CA and swaps it
// in.
func (m *certManager) renew() error {
	ca, _, _ := m.current()
	if ca == nil {
		return errors.New("no hub CA yet")
	}
	cert, err := m.issue(ca, kindServer, m.id.name, m.id.ttl, true)
	if err != nil {
		return err
	}
	now := time.Now()
	m.mu.Lock()
	first := m.cert == nil
	// Half of its life from now: the certificate is backdated, and its
	// end may be cut short by the CA's.
	m.cert, m.renewAt = cert, now.Add(max(cert.Leaf.NotAfter.Sub(now)/2, renewRetry))
	m.mu.Unlock()
	if first {
		close(m.haveCert)
	}
	if err := m.save(cert); err != nil {
		m.log.Warn("persist server certificate; a restart will wait for the CA again", "err", err)
	}
	return nil
}

// issue signs a fresh key for spiffe://<td>/<kind>/<name>.
func (m *certManager) issue(ca *pki.CA, kind, name string, ttl time.Duration, server bool) (*tls.Certificate, error) {
	key, err := pki.NewKey()
	if err != nil {
		return nil, err
	}
	opts := pki.LeafOptions{SPIFFEID: m.id.spiffeID(kind, name), TTL: ttl, Now: time.Now(), Client: true, Server: server}
	if server {
		opts.IPs = m.id.ips
		opts.DNSNames = []string{"localhost", m.id.name}
	}
	leaf, err := ca.Sign(key.Public(), opts)
	if err != nil {
		return nil, err
	}
	// The chain carries the CA so that joining agents can pin it by fingerprint.
	return &tls.Certificate{Certificate: [][]byte{leaf.Raw, ca.Cert.Raw}, PrivateKey: key, Leaf: leaf}, nil
}

// serverTLS serves this server's certificate and asks for (but does not
// require) a client certificate chained to the hub CA; each RPC checks the
// identity it needs. The gRPC server starts serving only once there is a
// certificate (haveCert).
func (m *certManager) serverTLS() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			_, pool, cert := m.current()
			if cert == nil {
				return nil, errors.New("hub: not ready: no server certificate yet")
			}
			return &tls.Config{
				MinVersion:   tls.VersionTLS13,
				Certificates: []tls.Certificate{*cert},
				ClientAuth:   tls.VerifyClientCertIfGiven,
				ClientCAs:    pool,
				NextProtos:   []string{"h2"},
			}, nil
		},
	}
}

// peerTLS is the client TLS config for calling another hub server.
func (m *certManager) peerTLS() (*tls.Config, error) {
	_, pool, cert := m.current()
	if cert == nil {
		return nil, errors.New("hub: no server certificate yet")
	}
	return clientconfig.ClientTLS(pool, cert, m.id.trustDomain), nil
}
