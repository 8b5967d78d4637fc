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

	fedv1 "github.com/meshfed/meshfed/federation/v1"
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
	// Log receives the client's logs; nil discards them.
	Log *slog.Logger
}

// State is the gateway config at one revision of the stream. Its maps and
// messages are never modified after State returns them.
type State struct {
	Revision uint64
	Hub      *gatewayv1.HubState
	Imports  map[string]*gatewayv1.Import
	Local    map[string]*gatewayv1.LocalService
	Clusters map[string]*gatewayv1.RemoteCluster
	Policies map[string]*fedv1.TrafficPolicy
	Bundles  map[string]*fedv1.TrustBundle
}

func newState() *State {
	return &State{Hub: &gatewayv1.HubState{}, Imports: map[string]*gatewayv1.Import{}, Local: map[string]*gatewayv1.LocalService{},
		Clusters: map[string]*gatewayv1.RemoteCluster{}, Policies: map[string]*fedv1.TrafficPolicy{}, Bundles: map[string]*fedv1.TrustBundle{}}
}

func (s *State) clone() *State {
	c := newState()
	c.Revision, c.Hub = s.Revision, s.Hub
	copyMap(c.Imports, s.Imports)
	copyMap(c.Local, s.Local)
	copyMap(c.Clusters, s.Clusters)
	copyMap(c.Policies, s.Policies)
	copyMap(c.Bundles, s.Bundles)
	return c
}

func copyMap[T any](dst, src map[string]T) {
	for k, v := range src {
		dst[k] = v
	}
}

// apply applies one message of the stream.
func (s *State) apply(m *gatewayv1.StreamResponse) {
	if m.GetSnapshot() {
		*s = *newState()
	}
	for _, x := range m.GetImports() {
		s.Imports[x.GetService()] = x
	}
	for _, k := range m.GetRemovedImports() {
		delete(s.Imports, k)
	}
	for _, x := range m.GetLocalServices() {
		s.Local[x.GetService()] = x
	}
	for _, k := range m.GetRemovedLocalServices() {
		delete(s.Local, k)
	}
	for _, x := range m.GetClusters() {
		s.Clusters[x.GetName()] = x
	}
	for _, k := range m.GetRemovedClusters() {
		delete(s.Clusters, k)
	}
	for _, x := range m.GetPolicies() {
		s.Policies[x.GetName()] = x
	}
	for _, k := range m.GetRemovedPolicies() {
		delete(s.Policies, k)
	}
	for _, x := range m.GetBundles() {
		s.Bundles[x.GetTrustDomain()] = x
	}
	for _, k := range m.GetRemovedBundles() {
		delete(s.Bundles, k)
	}
	if m.GetHub() != nil {
		s.Hub = m.GetHub()
	}
	s.Revision = m.GetRevision()
}

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

	mu      sync.Mutex
	svid    *x509svid.SVID
	state   *State
	synced  bool
	lastErr error
	watch   []chan struct{}
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
		bundles: trust.NewBundleSet(), state: newState()}
	if err := c.bundles.Set(bundle); err != nil {
		return nil, err
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

// State returns the current config and whether a snapshot has arrived.
func (c *Client) State() (*State, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state, c.synced
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
	if err := c.renewUntilDone(ctx, true); err != nil || ctx.Err() != nil {
		return err
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

func (c *Client) dial() (*grpc.ClientConn, error) {
	return grpc.NewClient(c.cfg.Agent, grpc.WithTransportCredentials(credentials.NewTLS(c.tlsConfig())),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20)))
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
	conn, err := c.dial()
	if err != nil {
		return err
	}
	defer func() { _ = conn.Close() }()
	req := &gatewayv1.SignSVIDRequest{Csr: csr}
	c.mu.Lock()
	if c.svid == nil || time.Now().After(c.svid.Certificates[0].NotAfter) {
		req.BootstrapToken = c.token
	}
	c.mu.Unlock()
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := gatewayv1.NewConfigClient(conn).SignSVID(cctx, req)
	if err != nil {
		if req.BootstrapToken != "" && isRefusal(err) {
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
	c.mu.Lock()
	c.svid = &x509svid.SVID{ID: id, Certificates: certs, PrivateKey: key}
	c.mu.Unlock()
	c.log.Info("gateway SVID", "id", id, "expires", certs[0].NotAfter)
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
	var cur, pending *State
	for {
		m, err := st.Recv()
		if err != nil {
			return err
		}
		if cur == nil && !m.GetSnapshot() {
			return errors.New("gatewayclient: the stream did not start with a snapshot")
		}
		switch {
		case pending != nil:
			cur = pending // continue the split change
		case cur == nil:
			cur = newState()
		default:
			c.mu.Lock()
			cur = c.state.clone()
			c.mu.Unlock()
		}
		cur.apply(m)
		if m.GetMore() {
			// Part of a split change: publish it only whole. Later parts
			// build on cur, not on c.state.
			if pending == nil {
				pending = cur
			}
			continue
		}
		pending = nil
		if err := c.setBundles(cur); err != nil {
			c.log.Error("federated bundles", "err", err)
		}
		c.mu.Lock()
		c.state, c.synced = cur, true
		c.notifyLocked()
		c.mu.Unlock()
	}
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
