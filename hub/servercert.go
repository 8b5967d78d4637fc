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
	"github.com/meshfed/meshfed/internal/hubtls"
	"github.com/meshfed/meshfed/internal/pki"
	"github.com/meshfed/meshfed/trust/x509pem"
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

// certIdentity is who the server's own certificates name and where they
// are kept.
type certIdentity struct {
	trustDomain string
	name        string
	ips         []net.IP
	ttl         time.Duration
	// bundleEndpoint: also keep the bundle endpoint certificate
	// (BundleEndpointSPIFFEID), for a server serving https_spiffe.
	bundleEndpoint bool
	// dir holds the last issued certificates and keys, so that a restarted
	// server serves TLS at once, before it has caught up with the log that
	// holds the CA. Empty: not persisted.
	dir string
}

func (id certIdentity) spiffeID(kind, name string) string {
	return fmt.Sprintf("spiffe://%s/%s/%s", id.trustDomain, kind, name)
}

// bundleEndpointPath is the path of the hub's bundle endpoint SPIFFE ID.
// It has one segment, so it is no hub role: a certificate naming it
// authorizes no gRPC call.
const bundleEndpointPath = "/bundle-endpoint"

// BundleEndpointSPIFFEID is the SPIFFE ID every server of the hub with
// trust domain td presents on its https_spiffe bundle endpoint: one ID for
// the whole hub, so that a consumer (a SPIRE server's endpoint_spiffe_id)
// can pin it behind a load balancer.
func BundleEndpointSPIFFEID(td string) string {
	return "spiffe://" + td + bundleEndpointPath
}

// ownCert is one certificate a server issues itself from the hub CA and
// renews at half-life.
type ownCert struct {
	// what names it in logs and errors.
	what     string
	spiffeID string
	client   bool
	dnsNames []string
	ips      []net.IP
	certFile string // the leaf, then the hub CA
	keyFile  string

	// cert and renewAt are guarded by certManager.mu. renewAt is when cert
	// is due for renewal, fixed when it is taken.
	cert    *tls.Certificate
	renewAt time.Time
	// have is closed once there is a certificate to serve, loaded from the
	// data directory or issued.
	have chan struct{}

	// timer fires at renewAt of timerFor; the manager's goroutine only.
	timer    *time.Timer
	timerFor *tls.Certificate
}

// certManager holds this server's TLS identities: the server certificate
// and, with a bundle endpoint, the bundle endpoint certificate. It loads
// the ones the server had before a restart, issues them from the
// replicated hub CA once it exists, and renews each at its half-life.
type certManager struct {
	id  certIdentity
	src caSource
	log *slog.Logger
	// onCA is called once, from the manager's goroutine, when the hub CA is
	// first known (the server writes admin.yaml).
	onCA func(*pki.CA) error

	// server is spiffe://<td>/server/<name>; bundle is
	// BundleEndpointSPIFFEID, nil without a bundle endpoint. own is both.
	server, bundle *ownCert
	own            []*ownCert

	mu    sync.RWMutex
	caPEM []byte
	ca    *pki.CA // from the replicated state; nil before
	pool  *x509.CertPool
	// ready is closed once the hub CA from the replicated state is known.
	ready chan struct{}
	// haveCert is closed once there is a server certificate to serve
	// (server.have).
	haveCert chan struct{}
}

func newCertManager(id certIdentity, src caSource, log *slog.Logger, onCA func(*pki.CA) error) *certManager {
	m := &certManager{id: id, src: src, log: log, onCA: onCA, ready: make(chan struct{})}
	m.server = &ownCert{
		what: "server certificate", spiffeID: id.spiffeID(kindServer, id.name), client: true,
		dnsNames: []string{"localhost", id.name}, ips: id.ips,
		certFile: "server.crt", keyFile: "server.key", have: make(chan struct{}),
	}
	m.haveCert = m.server.have
	m.own = []*ownCert{m.server}
	if id.bundleEndpoint {
		m.bundle = &ownCert{
			what: "bundle endpoint certificate", spiffeID: BundleEndpointSPIFFEID(id.trustDomain),
			certFile: "bundle-endpoint.crt", keyFile: "bundle-endpoint.key", have: make(chan struct{}),
		}
		m.own = append(m.own, m.bundle)
	}
	for _, c := range m.own {
		if err := m.load(c); err != nil {
			log.Info("no usable certificate in the data directory; waiting for the hub CA", "cert", c.what, "reason", err)
		}
	}
	return m
}

// current returns the CA, the trust pool and this server's certificate.
// The CA is nil until the replicated state holds it; the pool and
// certificate may come from the data directory before that.
func (m *certManager) current() (*pki.CA, *x509.CertPool, *tls.Certificate) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.ca, m.pool, m.server.cert
}

// bundleEndpointCert is the certificate the https_spiffe bundle endpoint
// serves; nil before there is one or without a bundle endpoint.
func (m *certManager) bundleEndpointCert() *tls.Certificate {
	if m.bundle == nil {
		return nil
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.bundle.cert
}

// load takes the certificate c persisted by an earlier run if it is still
// valid and names c's SPIFFE ID.
func (m *certManager) load(c *ownCert) error {
	if m.id.dir == "" {
		return errors.New("not persisted")
	}
	certPEM, err := os.ReadFile(filepath.Join(m.id.dir, c.certFile))
	if err != nil {
		return err
	}
	keyPEM, err := os.ReadFile(filepath.Join(m.id.dir, c.keyFile))
	if err != nil {
		return err
	}
	chain, err := x509pem.DecodeCerts(certPEM)
	if err != nil {
		return err
	}
	if len(chain) != 2 {
		return fmt.Errorf("%s: %d certificates, want the leaf and the hub CA", c.certFile, len(chain))
	}
	key, err := x509pem.DecodeKey(keyPEM)
	if err != nil {
		return err
	}
	leaf, caCert := chain[0], chain[1]
	pool := x509.NewCertPool()
	pool.AddCert(caCert)
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		return fmt.Errorf("%s: %w", c.certFile, err)
	}
	if id, _ := pki.SPIFFEID(leaf); id == nil || id.String() != c.spiffeID {
		return fmt.Errorf("%s names %v, want %s", c.certFile, id, c.spiffeID)
	}
	m.mu.Lock()
	if c == m.server {
		m.pool = pool
	}
	c.cert = &tls.Certificate{Certificate: [][]byte{leaf.Raw, caCert.Raw}, PrivateKey: key, Leaf: leaf}
	// Its issue time is not recorded; the middle of its validity is at
	// most a minute (pki's backdating) earlier than its half-life.
	c.renewAt = leaf.NotBefore.Add(leaf.NotAfter.Sub(leaf.NotBefore) / 2)
	m.mu.Unlock()
	close(c.have)
	m.log.Info("serving the certificate of the previous run until the hub CA is applied", "cert", c.what, "not_after", leaf.NotAfter)
	return nil
}

// save persists c's certificate and key, each written whole and renamed.
func (m *certManager) save(c *ownCert, cert *tls.Certificate) error {
	if m.id.dir == "" {
		return nil
	}
	if err := os.MkdirAll(m.id.dir, 0o700); err != nil {
		return err
	}
	key, ok := cert.PrivateKey.(crypto.Signer)
	if !ok {
		return fmt.Errorf("%s key is a %T", c.what, cert.PrivateKey)
	}
	keyPEM, err := x509pem.EncodeKey(key)
	if err != nil {
		return err
	}
	var chain bytes.Buffer
	for _, der := range cert.Certificate {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return err
		}
		chain.Write(x509pem.EncodeCerts(c))
	}
	// Key first: a certificate on disk always has its key.
	if err := writeFileAtomic(filepath.Join(m.id.dir, c.keyFile), keyPEM); err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(m.id.dir, c.certFile), chain.Bytes())
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

// renewal is a renewal timer firing: c is due, for certificate cert.
type renewal struct {
	c    *ownCert
	cert *tls.Certificate
}

// run keeps the certificates in line with the replicated CA until stop.
// Each certificate gets one renewal timer, set for its renewAt when the
// manager takes it: wake-ups for other state changes (every write) do not
// move it.
func (m *certManager) run(stop <-chan struct{}) {
	due := make(chan renewal)
	defer func() {
		for _, c := range m.own {
			if c.timer != nil {
				c.timer.Stop()
			}
		}
	}()
	for {
		caState, changed := m.src.CA()
		if caState != nil {
			if err := m.useCA(caState); err != nil {
				m.log.Error("own certificates", "err", err)
			}
		}
		for _, c := range m.own {
			m.mu.RLock()
			cert, renewAt := c.cert, c.renewAt
			m.mu.RUnlock()
			if cert == nil || cert == c.timerFor {
				continue
			}
			if c.timer != nil {
				c.timer.Stop()
			}
			c.timer, c.timerFor = time.AfterFunc(time.Until(renewAt), func() {
				select {
				case due <- renewal{c, cert}:
				case <-stop:
				}
			}), cert
		}
		select {
		case <-stop:
			return
		case <-changed:
		case r := <-due:
			if r.cert != r.c.timerFor {
				continue // a timer stopped too late: the certificate was replaced
			}
			// Issue the successor first and swap: handshakes never see a gap.
			if err := m.renew(r.c); err != nil {
				m.log.Error("renew; retrying", "cert", r.c.what, "err", err, "in", renewRetry)
				r.c.timer.Reset(renewRetry)
			}
		}
	}
}

// useCA takes the replicated CA. For each of its certificates, it issues
// one if the server has none, one that does not chain to this CA (loaded
// from disk, issued by an earlier hub), one for other addresses (the
// server moved), or one due.
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
	m.mu.Unlock()
	var errs []error
	for _, c := range m.own {
		m.mu.RLock()
		cert, renewAt := c.cert, c.renewAt
		m.mu.RUnlock()
		if cert == nil || cert.Leaf.CheckSignatureFrom(ca.Cert) != nil || !sameIPs(cert.Leaf.IPAddresses, c.ips) ||
			!time.Now().Before(renewAt) {
			if err := m.renew(c); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if first {
		close(m.ready)
		if m.onCA != nil {
			errs = append(errs, m.onCA(ca))
		}
	}
	return errors.Join(errs...)
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

// renew issues c anew from the replicated CA and swaps it in.
func (m *certManager) renew(c *ownCert) error {
	ca, _, _ := m.current()
	if ca == nil {
		return errors.New("no hub CA yet")
	}
	key, err := pki.NewKey()
	if err != nil {
		return err
	}
	now := time.Now()
	leaf, err := ca.Sign(key.Public(), pki.LeafOptions{
		SPIFFEID: c.spiffeID, TTL: m.id.ttl, Now: now, Server: true, Client: c.client,
		DNSNames: c.dnsNames, IPs: c.ips,
	})
	if err != nil {
		return fmt.Errorf("%s: %w", c.what, err)
	}
	// The chain carries the CA so that joining agents can pin it by fingerprint.
	cert := &tls.Certificate{Certificate: [][]byte{leaf.Raw, ca.Cert.Raw}, PrivateKey: key, Leaf: leaf}
	m.mu.Lock()
	first := c.cert == nil
	// Half of its life from now: the certificate is backdated, and its
	// end may be cut short by the CA's.
	c.cert, c.renewAt = cert, now.Add(max(leaf.NotAfter.Sub(now)/2, renewRetry))
	m.mu.Unlock()
	if first {
		close(c.have)
	}
	if err := m.save(c, cert); err != nil {
		m.log.Warn("persist certificate; a restart will wait for the CA again", "cert", c.what, "err", err)
	}
	return nil
}

// issue signs a fresh client certificate for spiffe://<td>/<kind>/<name>
// (the admin's).
func (m *certManager) issue(ca *pki.CA, kind, name string, ttl time.Duration) (*tls.Certificate, error) {
	key, err := pki.NewKey()
	if err != nil {
		return nil, err
	}
	leaf, err := ca.Sign(key.Public(), pki.LeafOptions{SPIFFEID: m.id.spiffeID(kind, name), TTL: ttl, Now: time.Now(), Client: true})
	if err != nil {
		return nil, err
	}
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
	return hubtls.ClientConfig(pool, cert, m.id.trustDomain), nil
}
