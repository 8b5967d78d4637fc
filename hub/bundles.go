package hub

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"

	fedv1 "github.com/meshfed/meshfed/federation/v1"
	"github.com/meshfed/meshfed/hub/fsm"
	"github.com/meshfed/meshfed/hub/internal/hubpb"
	"github.com/meshfed/meshfed/hub/state"
)

// The hub's SPIFFE bundle endpoints serve every trust domain it holds (the
// member clusters', federated external ones, and its own) at
// /<trust-domain>, in the SPIFFE Trust Bundle format, under two profiles:
// https_spiffe (authenticated with the server's own SVID,
// spiffe://<hub-td>/server/<name>) and https_web (an operator-provided
// WebPKI certificate).

// Limits for bundle fetching.
const (
	maxBundleDocument   = 1 << 20
	defaultBundleReload = 5 * time.Minute
	minBundleReload     = 5 * time.Second
	maxBundleReload     = time.Hour
	fetchTimeout        = 30 * time.Second
)

// bundleOf converts a stored bundle to go-spiffe's form.
func bundleOf(b *fedv1.TrustBundle) (*spiffebundle.Bundle, error) {
	td, err := spiffeid.TrustDomainFromString(b.GetTrustDomain())
	if err != nil {
		return nil, err
	}
	out := spiffebundle.New(td)
	for _, der := range b.GetX509Authorities() {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, err
		}
		out.AddX509Authority(c)
	}
	out.SetRefreshHint(time.Duration(b.GetRefreshHintSeconds()) * time.Second)
	out.SetSequenceNumber(b.GetSequenceNumber())
	return out, nil
}

// storeBundles is a spiffebundle.Source and x509bundle.Source over the
// current state store plus the hub's own CA.
type storeBundles struct{ s *Server }

func (b storeBundles) GetBundleForTrustDomain(td spiffeid.TrustDomain) (*spiffebundle.Bundle, error) {
	if td.Name() == b.s.cfg.TrustDomain {
		ca, _, _ := b.s.certs.current()
		if ca == nil {
			return nil, errors.New("hub: no hub CA yet")
		}
		out := spiffebundle.New(td)
		out.AddX509Authority(ca.Cert)
		out.SetRefreshHint(defaultBundleReload)
		return out, nil
	}
	rec := b.s.fsm.Store().Read().Bundle(td.Name())
	if rec == nil {
		return nil, fmt.Errorf("hub: no bundle for trust domain %q", td)
	}
	return bundleOf(rec.GetBundle())
}

func (b storeBundles) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	sb, err := b.GetBundleForTrustDomain(td)
	if err != nil {
		return nil, err
	}
	return sb.X509Bundle(), nil
}

// bundleHandler serves GET /<trust-domain>.
func (s *Server) bundleHandler() http.Handler {
	src := storeBundles{s}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet {
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		td, err := spiffeid.TrustDomainFromString(strings.TrimPrefix(r.URL.Path, "/"))
		if err != nil {
			http.Error(w, "path must be /<trust-domain>", http.StatusNotFound)
			return
		}
		b, err := src.GetBundleForTrustDomain(td)
		if err != nil {
			http.Error(w, fmt.Sprintf("no bundle for %q", td), http.StatusNotFound)
			return
		}
		data, err := b.Marshal()
		if err != nil {
			http.Error(w, "cannot encode bundle", http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(data)
	})
}

func (s *Server) setupBundleEndpoints() error {
	if s.cfg.BundlePort != 0 {
		ln, err := net.Listen("tcp", s.addr(s.cfg.BundlePort))
		if err != nil {
			return fmt.Errorf("hub: bundle endpoint listen: %w", err)
		}
		// https_spiffe: the server's own SVID, no client authentication.
		cfg := &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			_, _, cert := s.certs.current()
			if cert == nil {
				return nil, errors.New("hub: no server certificate yet")
			}
			return cert, nil
		}}
		s.bundleLns = append(s.bundleLns, tls.NewListener(ln, cfg))
	}
	if s.cfg.BundleWebPort != 0 {
		pair, err := tls.LoadX509KeyPair(s.cfg.BundleWebCertFile, s.cfg.BundleWebKeyFile)
		if err != nil {
			return fmt.Errorf("hub: bundle_web_cert_file/bundle_web_key_file: %w", err)
		}
		ln, err := net.Listen("tcp", s.addr(s.cfg.BundleWebPort))
		if err != nil {
			return fmt.Errorf("hub: bundle web endpoint listen: %w", err)
		}
		s.bundleLns = append(s.bundleLns, tls.NewListener(ln, &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{pair}}))
	}
	return nil
}

// BundleAddrs are the addresses of the https_spiffe and https_web bundle
// endpoints, in that order, for those that are enabled.
func (s *Server) BundleAddrs() []string {
	var out []string
	for _, ln := range s.bundleLns {
		out = append(out, s.advertised(ln.Addr()))
	}
	return out
}

// fetchStatus is one relationship's last fetch, as seen by this server.
type fetchStatus struct {
	lastFetch time.Time
	lastErr   string
	next      time.Time
	backoff   time.Duration
}

// fetchers refreshes the bundles of federated external trust domains. Only
// the leader fetches; results go through Raft like every other write.
type fetchers struct {
	s      *Server
	client func(f *fedv1.FederationRelationship) (*http.Client, error)

	mu   sync.Mutex
	byTD map[string]*fetchStatus
}

func newFetchers(s *Server) *fetchers {
	f := &fetchers{s: s, byTD: map[string]*fetchStatus{}}
	f.client = f.httpClient
	return f
}

func (f *fetchers) status(td string) (fetchStatus, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	st, ok := f.byTD[td]
	if !ok {
		return fetchStatus{}, false
	}
	return *st, true
}

func (f *fetchers) run() {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-f.s.stopCh:
			return
		case <-tick.C:
		}
		if !f.s.leaderReady() {
			continue
		}
		view := f.s.fsm.Store().Read()
		now := time.Now()
		for _, rel := range view.Federations() {
			f.mu.Lock()
			st, ok := f.byTD[rel.GetTrustDomain()]
			if !ok {
				st = &fetchStatus{}
				f.byTD[rel.GetTrustDomain()] = st
			}
			due := !now.Before(st.next)
			f.mu.Unlock()
			if due {
				f.fetchOne(view, rel)
			}
		}
	}
}

func (f *fetchers) fetchOne(view *state.ReadTxn, rel *fedv1.FederationRelationship) {
	td := rel.GetTrustDomain()
	b, err := f.fetch(view, rel)
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), f.s.cfg.ApplyTimeout)
		_, err = f.s.apply(ctx, fsm.PutExternalBundleType, &hubpb.CmdPutExternalBundle{Bundle: b})
		cancel()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	st := f.byTD[td]
	now := time.Now()
	if err != nil {
		st.lastErr = err.Error()
		st.backoff = min(max(2*st.backoff, minBundleReload), 2*time.Minute)
		st.next = now.Add(st.backoff + rand.N(st.backoff/4+1))
		f.s.log.Warn("bundle fetch failed", "trust_domain", td, "url", rel.GetUrl(), "err", err, "retry_in", st.backoff)
		return
	}
	st.lastErr, st.lastFetch, st.backoff = "", now, 0
	reload := time.Duration(b.GetRefreshHintSeconds()) * time.Second
	if reload == 0 {
		reload = defaultBundleReload
	}
	st.next = now.Add(min(max(reload, minBundleReload), maxBundleReload))
}

// fetch gets one external bundle. It reads at most maxBundleDocument bytes,
// follows no redirect, and refuses a document whose authorities name another
// trust domain.
func (f *fetchers) fetch(view *state.ReadTxn, rel *fedv1.FederationRelationship) (*fedv1.TrustBundle, error) {
	td, err := spiffeid.TrustDomainFromString(rel.GetTrustDomain())
	if err != nil {
		return nil, err
	}
	client, err := f.client(rel)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), fetchTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rel.GetUrl(), http.NoBody)
	if err != nil {
		return nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("bundle endpoint answered %s", resp.Status)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxBundleDocument+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxBundleDocument {
		return nil, fmt.Errorf("bundle document larger than %d bytes", maxBundleDocument)
	}
	b, err := spiffebundle.Parse(td, data)
	if err != nil {
		return nil, err
	}
	hint, _ := b.RefreshHint()
	seq, _ := b.SequenceNumber()
	out := &fedv1.TrustBundle{TrustDomain: td.Name(), RefreshHintSeconds: int64(max(hint/time.Second, 0)), SequenceNumber: seq}
	for _, c := range b.X509Authorities() {
		for _, u := range c.URIs {
			if u.Scheme == "spiffe" && u.Host != td.Name() {
				return nil, fmt.Errorf("endpoint served a bundle of trust domain %q for %q", u.Host, td)
			}
		}
		out.X509Authorities = append(out.X509Authorities, c.Raw)
	}
	if len(out.X509Authorities) == 0 || len(out.X509Authorities) > MaxBundleAuthorities {
		return nil, fmt.Errorf("bundle has %d X.509 authorities, want 1 to %d", len(out.X509Authorities), MaxBundleAuthorities)
	}
	return out, nil
}

// httpClient builds the client for a relationship's profile. https_spiffe
// authenticates the endpoint by SPIFFE ID against the endpoint trust domain's
// bundle: the one the hub holds, else the configured bootstrap authorities.
// A WebPKI certificate is refused there, so there is no silent downgrade.
func (f *fetchers) httpClient(rel *fedv1.FederationRelationship) (*http.Client, error) {
	var tlsCfg *tls.Config
	switch rel.GetProfile() {
	case ProfileHTTPSWeb:
		tlsCfg = &tls.Config{MinVersion: tls.VersionTLS12}
	case ProfileHTTPSSPIFFE:
		id, err := spiffeid.FromString(rel.GetEndpointSpiffeId())
		if err != nil {
			return nil, err
		}
		src, err := f.endpointBundle(rel, id.TrustDomain())
		if err != nil {
			return nil, err
		}
		tlsCfg = tlsconfig.TLSClientConfig(src, tlsconfig.AuthorizeID(id))
	default:
		return nil, fmt.Errorf("unknown profile %q", rel.GetProfile())
	}
	return &http.Client{
		Transport: &http.Transport{TLSClientConfig: tlsCfg, Proxy: nil, ResponseHeaderTimeout: fetchTimeout},
		// Redirects are not followed (and so never persisted): the configured
		// URL is the only one the hub trusts for this trust domain.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}, nil
}

func (f *fetchers) endpointBundle(rel *fedv1.FederationRelationship, td spiffeid.TrustDomain) (x509bundle.Source, error) {
	if b, err := (storeBundles{f.s}).GetX509BundleForTrustDomain(td); err == nil {
		return b, nil
	}
	out := x509bundle.New(td)
	for _, der := range rel.GetEndpointBootstrapAuthorities() {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, err
		}
		out.AddX509Authority(c)
	}
	if len(out.X509Authorities()) == 0 {
		return nil, fmt.Errorf("no bundle for the endpoint's trust domain %q (set endpoint bootstrap authorities)", td)
	}
	return out, nil
}
