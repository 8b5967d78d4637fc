package hub

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	fedv1 "github.com/meshfed/meshfed/federation/v1"
	"github.com/meshfed/meshfed/hub/fsm"
	"github.com/meshfed/meshfed/hub/internal/hubpb"
	"github.com/meshfed/meshfed/trust"
)

// The hub's SPIFFE bundle endpoints serve every trust domain it holds (the
// member clusters', federated external ones, and its own) at
// /<trust-domain>, in the SPIFFE Trust Bundle format, under two profiles:
// https_spiffe (authenticated with an SVID every server issues itself for
// the one ID BundleEndpointSPIFFEID, spiffe://<hub-td>/bundle-endpoint, so
// that a consumer can pin it whichever server answers) and https_web (an
// operator-provided WebPKI certificate).

// Limits for bundle fetching.
const (
	defaultBundleReload = 5 * time.Minute
	minBundleReload     = 5 * time.Second
	maxBundleReload     = time.Hour
	fetchTimeout        = 30 * time.Second
)

// storeBundles is a spiffebundle.Source and x509bundle.Source over the
// current state store plus the hub's own CA.
type storeBundles struct{ s *Server }

func (b storeBundles) GetBundleForTrustDomain(td spiffeid.TrustDomain) (*spiffebundle.Bundle, error) {
	if td.Name() == b.s.cfg.TrustDomain {
		ca, _, _ := b.s.certs.current()
		if ca == nil {
			return nil, fmt.Errorf("%w: no hub CA yet", trust.ErrNotFederated)
		}
		out := spiffebundle.New(td)
		out.AddX509Authority(ca.Cert)
		out.SetRefreshHint(defaultBundleReload)
		return out, nil
	}
	rec := b.s.fsm.Store().Read().Bundle(td.Name())
	if rec == nil {
		return nil, fmt.Errorf("%w: hub holds no bundle for %q", trust.ErrNotFederated, td)
	}
	return trust.BundleFromProto(rec.GetBundle())
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
	mux := http.NewServeMux()
	mux.Handle("/{trust_domain}", trust.BundleSetHandler(storeBundles{s}))
	return mux
}

func (s *Server) setupBundleEndpoints() error {
	if s.cfg.BundlePort != 0 {
		ln, err := net.Listen("tcp", s.addr(s.cfg.BundlePort))
		if err != nil {
			return fmt.Errorf("hub: bundle endpoint listen: %w", err)
		}
		// https_spiffe: the hub's bundle endpoint SVID, the same ID on every
		// server; no client authentication.
		cfg := &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			cert := s.certs.bundleEndpointCert()
			if cert == nil {
				return nil, errors.New("hub: no bundle endpoint certificate yet")
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
	s    *Server
	mu   sync.Mutex
	byTD map[string]*fetchStatus
}

func newFetchers(s *Server) *fetchers {
	return &fetchers{s: s, byTD: map[string]*fetchStatus{}}
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
				f.fetchOne(rel)
			}
		}
	}
}

func (f *fetchers) fetchOne(rel *fedv1.FederationRelationship) {
	td := rel.GetTrustDomain()
	b, err := f.fetch(rel)
	if err == nil {
		err = checkSequence(f.s.fsm.Store().Read().Bundle(td), b)
	}
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

// checkSequence refuses a fetched bundle whose sequence number is lower
// than the stored one's: a replayed or rolled-back bundle could bring back
// a root its trust domain retired. (Endpoints that do not number their
// bundles send 0, which is accepted.)
func checkSequence(cur *hubpb.BundleRecord, next *fedv1.TrustBundle) error {
	if cur == nil || cur.GetCluster() != "" {
		return nil
	}
	if have, got := cur.GetBundle().GetSequenceNumber(), next.GetSequenceNumber(); got != 0 && got < have {
		return fmt.Errorf("bundle sequence number went back from %d to %d: refused (a replayed or rolled-back bundle); keeping sequence %d", have, got, have)
	}
	return nil
}

// fetch gets one external bundle with trust.Fetcher: https only, no
// redirects (so none is persisted), at most 1 MiB, and no authority naming
// another trust domain. Under https_spiffe the endpoint must present the
// configured SPIFFE ID, chained to the endpoint trust domain's bundle (the
// one the hub holds, else the configured bootstrap authorities): a WebPKI
// certificate is refused, so a profile downgrade fails.
func (f *fetchers) fetch(rel *fedv1.FederationRelationship) (*fedv1.TrustBundle, error) {
	cfg, err := f.fetcherConfig(rel)
	if err != nil {
		return nil, err
	}
	fetcher, err := trust.NewFetcher(cfg)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), fetchTimeout)
	defer cancel()
	b, err := fetcher.Fetch(ctx)
	if err != nil {
		return nil, err
	}
	out := trust.BundleToProto(b)
	if n := len(out.GetX509Authorities()); n == 0 || n > MaxBundleAuthorities {
		return nil, fmt.Errorf("bundle has %d X.509 authorities, want 1 to %d", n, MaxBundleAuthorities)
	}
	return out, nil
}

func (f *fetchers) fetcherConfig(rel *fedv1.FederationRelationship) (trust.FetcherConfig, error) {
	cfg := trust.DefaultFetcherConfig()
	td, err := spiffeid.TrustDomainFromString(rel.GetTrustDomain())
	if err != nil {
		return cfg, err
	}
	cfg.TrustDomain, cfg.URL, cfg.Timeout = td, rel.GetUrl(), fetchTimeout
	switch rel.GetProfile() {
	case ProfileHTTPSWeb:
		cfg.Profile = trust.ProfileHTTPSWeb
	case ProfileHTTPSSPIFFE:
		cfg.Profile = trust.ProfileHTTPSSPIFFE
		if cfg.EndpointID, err = spiffeid.FromString(rel.GetEndpointSpiffeId()); err != nil {
			return cfg, err
		}
		if cfg.EndpointBundles, err = f.endpointBundle(rel, cfg.EndpointID.TrustDomain()); err != nil {
			return cfg, err
		}
	default:
		return cfg, fmt.Errorf("unknown profile %q", rel.GetProfile())
	}
	return cfg, nil
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
