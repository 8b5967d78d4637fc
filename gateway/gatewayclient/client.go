package gatewayclient

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"path/filepath"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	gatewayv1 "github.com/meshfed/meshfed/gateway/v1"
	"github.com/meshfed/meshfed/trust"
)

// Config configures a Client.
type Config struct {
	// Agent is host:port of the agent's gateway API.
	Agent string
	// Bootstrap is the document the agent wrote (see Bootstrap).
	Bootstrap []byte
	// Instance names this gateway replica (its pod name), 1..253 bytes.
	Instance string
	// ReconnectMin and ReconnectMax bound the reconnect backoff (full
	// jitter). Zero means 100ms and 5s.
	ReconnectMin, ReconnectMax time.Duration
	// CacheDir, when set, is where the client keeps its SVID (svid.pem)
	// and the last config it accepted (config.pb), so that a gateway
	// restarted while its agent is down starts from them and keeps
	// serving (static stability). Created 0700.
	CacheDir string
	// ServiceAccountToken, when set, returns a Kubernetes ServiceAccount
	// token that SignSVID sends so the agent can authenticate the gateway
	// by a TokenReview instead of the static bootstrap token.
	ServiceAccountToken func() (string, error)
	// Log receives the client's logs; nil discards them.
	Log *slog.Logger
}

// MaxReportError bounds the rejection reason a Report carries.
const MaxReportError = 1 << 10

// Client is a gateway's side of the agent's gateway API: it gets and renews
// the gateway's X509-SVID and follows the config stream. Its SVID source
// and bundle set feed the gateway's TLS configs (trust.ServerTLS and
// trust.ClientTLS): Bundles holds exactly the federated trust domains the
// stream last sent, so a withdrawn cluster is refused at the next
// handshake.
type Client struct {
	cfg     Config
	log     *slog.Logger
	td      spiffeid.TrustDomain
	agentID spiffeid.ID
	gwID    spiffeid.ID
	token   string
	bundles *trust.BundleSet

	svidStore   *trust.FileStore // nil without CacheDir
	configStore *trust.FileStore
	cacheKick   chan struct{}

	mu       sync.Mutex
	svid     *x509svid.SVID
	raw      *rawState // the stream's state, consistent with the agent
	state    *State    // the last state that parsed
	synced   bool
	lastErr  error
	rejected rejection
	watch    []chan struct{}
	rconn    *grpc.ClientConn // for Report; dialled on first use

	// sign is the SignSVID call: signGRPC, or a test's agent.
	sign func(context.Context, *gatewayv1.SignSVIDRequest) (*gatewayv1.SignSVIDResponse, error)
}

// rejection is the last revision whose config did not parse.
type rejection struct {
	revision uint64
	err      error
}

var _ x509svid.Source = (*Client)(nil)

// New checks cfg and the bootstrap document and returns a Client.
func New(cfg Config) (*Client, error) {
	if cfg.Agent == "" {
		return nil, errors.New("gatewayclient: agent: required (host:port)")
	}
	if n := len(cfg.Instance); n == 0 || n > 253 {
		return nil, fmt.Errorf("gatewayclient: instance: %d bytes, want 1 to 253", n)
	}
	boot, bundle, err := ParseBootstrap(cfg.Bootstrap)
	if err != nil {
		return nil, err
	}
	if cfg.ReconnectMin <= 0 {
		cfg.ReconnectMin = 100 * time.Millisecond
	}
	if cfg.ReconnectMax < cfg.ReconnectMin {
		cfg.ReconnectMax = max(5*time.Second, cfg.ReconnectMin)
	}
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	td := bundle.TrustDomain()
	c := &Client{cfg: cfg, log: log, td: td, agentID: trust.AgentID(td), gwID: trust.GatewayID(td), token: boot.Token,
		bundles: trust.NewBundleSet(), raw: newRawState(), cacheKick: make(chan struct{}, 1)}
	c.state, _ = parse(c.raw, nil, 0)
	c.sign = c.signGRPC
	if err := c.bundles.Set(bundle); err != nil {
		return nil, err
	}
	if cfg.CacheDir != "" {
		c.svidStore = trust.NewFileStore(filepath.Join(cfg.CacheDir, "svid.pem"))
		c.configStore = trust.NewFileStore(filepath.Join(cfg.CacheDir, "config.pb"))
		c.loadCache()
	}
	return c, nil
}

// TrustDomain is the cluster's trust domain.
func (c *Client) TrustDomain() spiffeid.TrustDomain { return c.td }

// Bundles is the federated bundle set (this cluster's and every trust
// domain the stream sent).
func (c *Client) Bundles() *trust.BundleSet { return c.bundles }

// GetX509SVID returns the gateway's current SVID (x509svid.Source).
func (c *Client) GetX509SVID() (*x509svid.SVID, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.svid == nil {
		return nil, errors.New("gatewayclient: no SVID yet")
	}
	return c.svid, nil
}

// State returns the current config and whether there is one: a snapshot
// arrived, or a cached config was loaded (State.Cached).
func (c *Client) State() (*State, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state, c.synced
}

// Rejected returns the last stream revision whose config the client
// refused (it keeps the state before it), and why; 0 and nil when the
// current state is the stream's latest.
func (c *Client) Rejected() (uint64, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.rejected.revision, c.rejected.err
}

// LastError is the error that ended the last stream, or nil.
func (c *Client) LastError() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lastErr
}

// Watch returns a channel that receives after every change of State. It
// has a buffer of one and is never closed.
func (c *Client) Watch() <-chan struct{} {
	ch := make(chan struct{}, 1)
	c.mu.Lock()
	c.watch = append(c.watch, ch)
	c.mu.Unlock()
	return ch
}

func (c *Client) notifyLocked() {
	for _, ch := range c.watch {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// Run gets an SVID, keeps it renewed at half-life and follows the config
// stream, reconnecting with backoff, until ctx is done. It returns nil
// then; it returns an error only for a bootstrap the agent refuses.
func (c *Client) Run(ctx context.Context) error {
	c.mu.Lock()
	haveSVID := c.svid != nil && time.Now().Before(c.svid.Certificates[0].NotAfter)
	c.mu.Unlock()
	if !haveSVID {
		if err := c.renewUntilDone(ctx, true); err != nil || ctx.Err() != nil {
			return err
		}
	}
	if c.configStore != nil {
		go c.cacheWriter(ctx)
	}
	errc := make(chan error, 1)
	go func() { errc <- c.renewLoop(ctx) }()
	backoff := c.cfg.ReconnectMin
	for ctx.Err() == nil {
		start := time.Now()
		err := c.stream(ctx)
		c.mu.Lock()
		c.lastErr = err
		c.mu.Unlock()
		if ctx.Err() != nil {
			break
		}
		if time.Since(start) > 10*time.Second {
			backoff = c.cfg.ReconnectMin
		}
		wait := time.Duration(mrand.Int64N(int64(backoff)) + 1)
		c.log.Warn("agent config stream ended; reconnecting", "err", err, "in", wait)
		select {
		case <-ctx.Done():
		case <-time.After(wait):
		}
		backoff = min(2*backoff, c.cfg.ReconnectMax)
	}
	c.mu.Lock()
	if c.rconn != nil {
		_ = c.rconn.Close()
		c.rconn = nil
	}
	c.mu.Unlock()
	return <-errc
}

// renewUntilDone signs a new SVID, retrying with backoff until it works or
// ctx ends. The first time (first=true) a refusal is final.
func (c *Client) renewUntilDone(ctx context.Context, first bool) error {
	backoff := c.cfg.ReconnectMin
	for {
		err := c.renew(ctx)
		if err == nil || ctx.Err() != nil {
			return nil
		}
		var refused *refusedError
		if first && errors.As(err, &refused) {
			return err
		}
		c.log.Warn("gateway SVID", "err", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Duration(mrand.Int64N(int64(backoff)) + 1)):
		}
		backoff = min(2*backoff, c.cfg.ReconnectMax)
	}
}

// renewLoop renews the SVID at half-life.
func (c *Client) renewLoop(ctx context.Context) error {
	for {
		c.mu.Lock()
		leaf := c.svid.Certificates[0]
		c.mu.Unlock()
		at := leaf.NotBefore.Add(leaf.NotAfter.Sub(leaf.NotBefore) / 2)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Until(at)):
		}
		if err := c.renewUntilDone(ctx, false); err != nil {
			return err
		}
	}
}

type refusedError struct{ err error }

func (e *refusedError) Error() string { return e.err.Error() }
func (e *refusedError) Unwrap() error { return e.err }

// tlsConfig is the client TLS config to the agent: the current SVID (if
// any) and the agent verified against this cluster's bundle.
func (c *Client) tlsConfig() *tls.Config {
	cfg := trust.ClientTLS(c, c.bundles, trust.AuthorizeID(c.agentID))
	cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
		c.mu.Lock()
		s := c.svid
		c.mu.Unlock()
		if s == nil || time.Now().After(s.Certificates[0].NotAfter) {
			return &tls.Certificate{}, nil // none: SignSVID with the token
		}
		return tlsconfig.GetClientCertificate(c)(nil)
	}
	return cfg
}

// conn returns the long-lived connection Report uses.
func (c *Client) conn() (*grpc.ClientConn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.rconn != nil {
		return c.rconn, nil
	}
	conn, err := c.dial()
	if err != nil {
		return nil, err
	}
	c.rconn = conn
	return conn, nil
}

func (c *Client) dial() (*grpc.ClientConn, error) {
	return grpc.NewClient(c.cfg.Agent, grpc.WithTransportCredentials(credentials.NewTLS(c.tlsConfig())),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20)))
}

// signGRPC is the SignSVID call to the agent (Client.sign's default).
func (c *Client) signGRPC(ctx context.Context, req *gatewayv1.SignSVIDRequest) (*gatewayv1.SignSVIDResponse, error) {
	conn, err := c.dial()
	if err != nil {
		return nil, err
	}
	defer func() { _ = conn.Close() }()
	return gatewayv1.NewConfigClient(conn).SignSVID(ctx, req)
}

// renew signs a fresh SVID: with the current one, or with the bootstrap
// token when there is none or it expired.
func (c *Client) renew(ctx context.Context) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		return err
	}
	req := &gatewayv1.SignSVIDRequest{Csr: csr}
	c.mu.Lock()
	if c.svid == nil || time.Now().After(c.svid.Certificates[0].NotAfter) {
		if c.cfg.ServiceAccountToken != nil {
			tok, err := c.cfg.ServiceAccountToken()
			if err != nil {
				c.mu.Unlock()
				return fmt.Errorf("gatewayclient: service account token: %w", err)
			}
			req.ServiceAccountToken = tok
		} else {
			req.BootstrapToken = c.token
		}
	}
	c.mu.Unlock()
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := c.sign(cctx, req)
	if err != nil {
		if (req.BootstrapToken != "" || req.ServiceAccountToken != "") && isRefusal(err) {
			return &refusedError{fmt.Errorf("gatewayclient: the agent refused the bootstrap: %w", err)}
		}
		return fmt.Errorf("gatewayclient: SignSVID: %w", err)
	}
	var certs []*x509.Certificate
	for _, der := range resp.GetCertChain() {
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			return fmt.Errorf("gatewayclient: SVID: %w", err)
		}
		certs = append(certs, cert)
	}
	if len(certs) == 0 {
		return errors.New("gatewayclient: SVID: empty chain")
	}
	if b, err := trust.BundleFromProto(resp.GetBundle()); err == nil && b.TrustDomain() == c.td {
		if err := c.bundles.Set(b); err != nil {
			return err
		}
	}
	id, _, err := x509svid.Verify(certs, c.bundles)
	if err != nil || id != c.gwID {
		return fmt.Errorf("gatewayclient: the agent signed an SVID for %v that does not verify as %v: %w", id, c.gwID, err)
	}
	svid := &x509svid.SVID{ID: id, Certificates: certs, PrivateKey: key}
	c.mu.Lock()
	c.svid = svid
	c.mu.Unlock()
	c.log.Info("gateway SVID", "id", id, "expires", certs[0].NotAfter)
	if c.svidStore != nil {
		if err := saveSVID(c.svidStore, svid); err != nil {
			c.log.Error("saving the SVID to the cache", "err", err)
		}
	}
	return nil
}

// stream follows one config stream until it fails or ctx ends.
func (c *Client) stream(ctx context.Context) error {
	conn, err := c.dial()
	if err != nil {
		return err
	}
	defer func() { _ = conn.Close() }()
	st, err := gatewayv1.NewConfigClient(conn).Stream(ctx, &gatewayv1.StreamRequest{Instance: c.cfg.Instance})
	if err != nil {
		return err
	}
	var cur *rawState
	pending := false
	first := true
	for {
		m, err := st.Recv()
		if err != nil {
			return err
		}
		if first && !m.GetSnapshot() {
			return errors.New("gatewayclient: the stream did not start with a snapshot")
		}
		first = false
		if !pending {
			c.mu.Lock()
			cur = c.raw.clone()
			c.mu.Unlock()
		}
		cur.apply(m)
		if m.GetMore() {
			// Part of a split change: act on it only whole. Later parts
			// build on cur, not on c.raw.
			pending = true
			continue
		}
		pending = false
		c.accept(cur, m.GetRevision(), false)
	}
}

// accept makes raw the stream's state and, if it parses, the current
// State; otherwise the previous State stays and the rejection is kept.
func (c *Client) accept(raw *rawState, rev uint64, cached bool) {
	c.mu.Lock()
	prev := c.state
	c.mu.Unlock()
	st, err := parse(raw, prev, rev)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.raw = raw
	if err != nil {
		c.rejected = rejection{revision: rev, err: err}
		c.log.Error("rejected a config revision; keeping the last good one", "revision", rev, "err", err)
		c.notifyLocked()
		return
	}
	st.Cached = cached
	c.rejected = rejection{}
	if err := c.setBundles(st); err != nil {
		c.log.Error("federated bundles", "err", err)
	}
	c.state, c.synced = st, true
	if !cached {
		select {
		case c.cacheKick <- struct{}{}:
		default:
		}
	}
	c.notifyLocked()
}

// setBundles makes the bundle set hold exactly the stream's bundles (and
// this cluster's, which the stream always includes).
func (c *Client) setBundles(s *State) error {
	var bs []*spiffebundle.Bundle
	var errs []error
	for td, p := range s.Bundles {
		b, err := trust.BundleFromProto(p)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", td, err))
			continue
		}
		bs = append(bs, b)
	}
	if _, ok := s.Bundles[c.td.Name()]; !ok {
		if own, ok := c.bundles.Get(c.td); ok {
			bs = append(bs, own)
		}
	}
	if err := c.bundles.Replace(bs); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// isRefusal reports whether err is the agent refusing the caller (as
// opposed to being unreachable).
func isRefusal(err error) bool {
	switch status.Code(err) {
	case codes.PermissionDenied, codes.Unauthenticated, codes.InvalidArgument:
		return true
	}
	return false
}
