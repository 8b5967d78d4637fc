package trust

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// MaxBundleDocument bounds a bundle document served or fetched.
const MaxBundleDocument = 1 << 20

// Profile is a SPIFFE bundle endpoint profile (SPIFFE Federation
// specification): how a client authenticates the endpoint. The numbers are
// explicit and stable.
type Profile uint8

// Bundle endpoint profiles.
const (
	// ProfileHTTPSWeb: the endpoint presents a Web PKI server certificate,
	// verified with Web PKI roots and the URL's host name.
	ProfileHTTPSWeb Profile = 1
	// ProfileHTTPSSPIFFE: the endpoint presents an X509-SVID, verified
	// against a SPIFFE bundle and required to carry a configured SPIFFE ID.
	ProfileHTTPSSPIFFE Profile = 2
)

// String returns "https_web", "https_spiffe", or "profile(N)".
func (p Profile) String() string {
	switch p {
	case ProfileHTTPSWeb:
		return "https_web"
	case ProfileHTTPSSPIFFE:
		return "https_spiffe"
	default:
		return fmt.Sprintf("profile(%d)", uint8(p))
	}
}

// ParseProfile parses "https_web" or "https_spiffe". Other input returns a
// *ConfigError on field "profile".
func ParseProfile(s string) (Profile, error) {
	switch s {
	case "https_web":
		return ProfileHTTPSWeb, nil
	case "https_spiffe":
		return ProfileHTTPSSPIFFE, nil
	default:
		return 0, &ConfigError{Field: "profile", Reason: fmt.Sprintf("%q must be https_web or https_spiffe", truncate(s))}
	}
}

// BundleHandler returns an http.Handler serving td's bundle from source in
// the SPIFFE Trust Bundle format (JWKS with spiffe_refresh_hint and
// spiffe_sequence), read from source at every request. It answers GET and
// HEAD; 404 if source has no bundle for td (its error matches
// ErrNotFederated), 500 for other source errors.
//
// Serve it over TLS for either profile: for https_web with a Web PKI
// certificate in the tls.Config, for https_spiffe with BundleEndpointTLS.
func BundleHandler(td spiffeid.TrustDomain, source spiffebundle.Source) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		serveBundle(w, r, td, source)
	})
}

// BundleSetHandler returns an http.Handler serving, from source, the bundle
// of the trust domain named by the request's "trust_domain" path value:
// register it with a pattern such as "/bundles/{trust_domain}". Like
// BundleHandler, it answers 404 for a trust domain without a bundle.
func BundleSetHandler(source spiffebundle.Source) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("trust_domain")
		td, err := spiffeid.TrustDomainFromString(name)
		if err != nil || td.Name() != name {
			http.Error(w, "not a trust domain name", http.StatusNotFound)
			return
		}
		serveBundle(w, r, td, source)
	})
}

func serveBundle(w http.ResponseWriter, r *http.Request, td spiffeid.TrustDomain, source spiffebundle.Source) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	b, err := source.GetBundleForTrustDomain(td)
	switch {
	case errors.Is(err, ErrNotFederated):
		http.Error(w, "no bundle for trust domain "+td.Name(), http.StatusNotFound)
		return
	case err != nil:
		http.Error(w, "bundle unavailable", http.StatusInternalServerError)
		return
	}
	data, err := b.Marshal()
	if err != nil {
		http.Error(w, "bundle unavailable", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	if r.Method == http.MethodHead {
		return
	}
	_, _ = w.Write(data) // a failed write is the client's problem
}

// BundleEndpointTLS returns the server configuration of an https_spiffe
// bundle endpoint: it presents svids' X509-SVID (of the serving trust
// domain) and asks for no client certificate. TLS 1.2 is allowed for
// interoperability with other SPIFFE implementations.
func BundleEndpointTLS(svids x509svid.Source) *tls.Config {
	c := tlsconfig.TLSServerConfig(svids)
	c.MinVersion = tls.VersionTLS12
	return c
}

// FetcherConfig configures a Fetcher: one federation relationship with an
// external trust domain. The trust domain, URL, profile and (for
// https_spiffe) endpoint SPIFFE ID are all explicit, as the SPIFFE
// Federation specification requires; none is inferred from another. Build
// it with DefaultFetcherConfig.
type FetcherConfig struct {
	// TrustDomain is the trust domain whose bundle the endpoint serves.
	// The fetched bundle is stored under it only. Required.
	TrustDomain spiffeid.TrustDomain
	// URL is the bundle endpoint, https only. Required.
	URL string
	// Profile is how the endpoint is authenticated. Required.
	Profile Profile
	// EndpointID is the SPIFFE ID the endpoint must present. Required for
	// https_spiffe and must be zero for https_web.
	EndpointID spiffeid.ID
	// WebPKIRoots verifies an https_web endpoint; nil means the system
	// roots. Must be nil for https_spiffe.
	WebPKIRoots *x509.CertPool
	// EndpointBundles verifies an https_spiffe endpoint's X509-SVID: it
	// must hold the bundle of EndpointID's trust domain (a BundleSet
	// does). When EndpointID is in TrustDomain itself (a self-served
	// bundle), the bundle this Fetcher last fetched is used once there is
	// one, and EndpointBundles supplies the bootstrap bundle. Required for
	// https_spiffe; must be nil for https_web.
	EndpointBundles x509bundle.Source
	// DefaultRefresh is the refresh interval when the bundle carries no
	// refresh hint.
	DefaultRefresh time.Duration
	// MinRefresh and MaxRefresh clamp the refresh hint.
	MinRefresh, MaxRefresh time.Duration
	// RetryInterval is the first wait after a failed fetch; it doubles up
	// to the refresh interval.
	RetryInterval time.Duration
	// Timeout bounds one fetch.
	Timeout time.Duration
}

// DefaultFetcherConfig returns a FetcherConfig with every tunable set:
// refresh every 5 minutes without a hint, hints clamped to 5s..1h, retries
// from 1s, 30s per fetch. The relationship (trust domain, URL, profile,
// endpoint ID, roots or bundles) has no default.
func DefaultFetcherConfig() FetcherConfig {
	return FetcherConfig{
		DefaultRefresh: DefaultRefreshHint,
		MinRefresh:     5 * time.Second,
		MaxRefresh:     time.Hour,
		RetryInterval:  time.Second,
		Timeout:        30 * time.Second,
	}
}

// Validate reports every invalid field at once.
func (c *FetcherConfig) Validate() error {
	var errs configErrors
	if c.TrustDomain.IsZero() {
		errs.add("trust_domain", "required")
	}
	if u, err := url.Parse(c.URL); err != nil || u.Scheme != "https" || u.Host == "" || u.User != nil {
		errs.add("url", "%q must be an https URL with a host and no user info", truncate(c.URL))
	}
	switch c.Profile {
	case ProfileHTTPSWeb:
		if !c.EndpointID.IsZero() {
			errs.add("endpoint_spiffe_id", "must be empty for profile https_web")
		}
		if c.EndpointBundles != nil {
			errs.add("endpoint_bundles", "must be nil for profile https_web")
		}
	case ProfileHTTPSSPIFFE:
		if c.EndpointID.IsZero() {
			errs.add("endpoint_spiffe_id", "required for profile https_spiffe")
		}
		if c.EndpointBundles == nil {
			errs.add("endpoint_bundles", "required for profile https_spiffe (the bundle that authenticates the endpoint)")
		}
		if c.WebPKIRoots != nil {
			errs.add("web_pki_roots", "must be nil for profile https_spiffe")
		}
	default:
		errs.add("profile", "%v must be https_web or https_spiffe", c.Profile)
	}
	if c.MinRefresh < time.Millisecond {
		errs.add("min_refresh", "%v must be at least 1ms", c.MinRefresh)
	}
	if c.MaxRefresh < c.MinRefresh || c.MaxRefresh > MaxBundleRefreshHint {
		errs.add("max_refresh", "%v must be in min_refresh (%v)..%v", c.MaxRefresh, c.MinRefresh, MaxBundleRefreshHint)
	}
	if c.DefaultRefresh < c.MinRefresh || c.DefaultRefresh > c.MaxRefresh {
		errs.add("default_refresh", "%v must be in min_refresh..max_refresh (%v..%v)", c.DefaultRefresh, c.MinRefresh, c.MaxRefresh)
	}
	if c.RetryInterval < time.Millisecond || c.RetryInterval > c.MaxRefresh {
		errs.add("retry_interval", "%v must be in 1ms..max_refresh (%v)", c.RetryInterval, c.MaxRefresh)
	}
	if c.Timeout < time.Millisecond || c.Timeout > 10*time.Minute {
		errs.add("timeout", "%v must be in 1ms..10m0s", c.Timeout)
	}
	return errs.err()
}

// FetchStatus describes a Fetcher's last results.
type FetchStatus struct {
	// Bundle is the last bundle fetched, or nil. The caller owns it.
	Bundle *spiffebundle.Bundle
	// LastSuccess is when Bundle was fetched.
	LastSuccess time.Time
	// LastError is the error of the last attempt, or nil if it succeeded.
	LastError error
}

// Fetcher fetches an external trust domain's bundle from its SPIFFE bundle
// endpoint, authenticating the endpoint under the configured profile; a
// profile downgrade (an https_spiffe endpoint presenting a Web PKI
// certificate) fails. It never follows or persists redirects (ErrRedirect),
// and rejects a bundle whose authorities name another trust domain
// (ErrTrustDomainMismatch). Run refreshes by the bundle's refresh hint. It
// is safe for concurrent use.
type Fetcher struct {
	cfg    FetcherConfig
	client *http.Client

	mu     sync.Mutex
	status FetchStatus
}

// NewFetcher validates cfg and returns a Fetcher.
func NewFetcher(cfg FetcherConfig) (*Fetcher, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	f := &Fetcher{cfg: cfg}
	var tc *tls.Config
	switch cfg.Profile {
	case ProfileHTTPSWeb:
		tc = &tls.Config{RootCAs: cfg.WebPKIRoots, MinVersion: tls.VersionTLS12}
	case ProfileHTTPSSPIFFE:
		// SPIFFE authentication replaces Web PKI verification: the
		// endpoint must present an X509-SVID with exactly EndpointID that
		// chains to its trust domain's bundle. A Web PKI certificate (a
		// profile downgrade) fails with ErrPeerRejected.
		tc = &tls.Config{
			MinVersion:         tls.VersionTLS12,
			InsecureSkipVerify: true, //nolint:gosec // verified in VerifyConnection
			VerifyConnection:   verifyConnection(fetcherAuth{f}, AuthorizeID(cfg.EndpointID)),
		}
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.Proxy = nil // library code does not read the environment (HTTPS_PROXY)
	tr.TLSClientConfig = tc
	f.client = &http.Client{
		Transport: tr,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
	return f, nil
}

// fetcherAuth authenticates an https_spiffe endpoint: with the bundle last
// fetched when the endpoint belongs to the fetched trust domain, and with
// EndpointBundles otherwise (and before the first fetch).
type fetcherAuth struct{ f *Fetcher }

// GetX509BundleForTrustDomain implements x509bundle.Source.
func (a fetcherAuth) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	if td == a.f.cfg.TrustDomain {
		a.f.mu.Lock()
		last := a.f.status.Bundle
		a.f.mu.Unlock()
		if last != nil {
			return last.X509Bundle(), nil
		}
	}
	return a.f.cfg.EndpointBundles.GetX509BundleForTrustDomain(td)
}

// Config returns the fetcher's configuration.
func (f *Fetcher) Config() FetcherConfig { return f.cfg }

// Status returns the last fetch's results.
func (f *Fetcher) Status() FetchStatus {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.status
	if s.Bundle != nil {
		s.Bundle = s.Bundle.Clone()
	}
	return s
}

// Fetch fetches and validates the bundle once. Errors: ErrRedirect for a
// redirect, ErrBundleEndpoint for another non-200 status or an oversized
// document, ErrInvalidBundle (and ErrTrustDomainMismatch) for a bundle
// that is unparsable or not the configured trust domain's, and transport
// errors (including a failed endpoint authentication) as they come.
func (f *Fetcher) Fetch(ctx context.Context) (*spiffebundle.Bundle, error) {
	b, err := f.fetch(ctx)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.status.LastError = err
	if err != nil {
		return nil, err
	}
	f.status.Bundle = b.Clone()
	f.status.LastSuccess = time.Now()
	return b, nil
}

func (f *Fetcher) fetch(ctx context.Context) (*spiffebundle.Bundle, error) {
	ctx, cancel := context.WithTimeout(ctx, f.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, f.cfg.URL, http.NoBody)
	if err != nil {
		return nil, fmt.Errorf("trust: fetch %s: %w", f.cfg.TrustDomain, err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := f.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("trust: fetch %s bundle from %s (%s): %w", f.cfg.TrustDomain, f.cfg.URL, f.cfg.Profile, err)
	}
	defer func() { _ = resp.Body.Close() }()
	switch {
	case resp.StatusCode >= 300 && resp.StatusCode < 400:
		return nil, fmt.Errorf("%w: %s answered %d to %q; redirects are not followed, configure the final URL", ErrRedirect, f.cfg.URL, resp.StatusCode, truncate(resp.Header.Get("Location")))
	case resp.StatusCode != http.StatusOK:
		return nil, fmt.Errorf("%w: %s answered %s", ErrBundleEndpoint, f.cfg.URL, resp.Status)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, MaxBundleDocument+1))
	if err != nil {
		return nil, fmt.Errorf("trust: fetch %s: read: %w", f.cfg.URL, err)
	}
	if len(data) > MaxBundleDocument {
		return nil, fmt.Errorf("%w: %s: document larger than %d bytes", ErrBundleEndpoint, f.cfg.URL, MaxBundleDocument)
	}
	return ParseBundleDocument(f.cfg.TrustDomain, data)
}

// ParseBundleDocument parses a SPIFFE Trust Bundle document (JWKS) as td's
// bundle, with go-spiffe's spiffebundle.Parse, and validates it with
// CheckBundle. The document does not name its trust domain; an authority
// whose SPIFFE URI SAN names another trust domain gives an error matching
// ErrTrustDomainMismatch. Errors match ErrInvalidBundle.
func ParseBundleDocument(td spiffeid.TrustDomain, data []byte) (*spiffebundle.Bundle, error) {
	if len(data) > MaxBundleDocument {
		return nil, fmt.Errorf("%w: %s: document of %d bytes, at most %d", ErrInvalidBundle, td, len(data), MaxBundleDocument)
	}
	b, err := spiffebundle.Parse(td, data)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrInvalidBundle, td, err)
	}
	if err := CheckBundle(b); err != nil {
		return nil, err
	}
	return b, nil
}

// RefreshInterval returns how long to wait before fetching again after b:
// its refresh hint, or DefaultRefresh without one, clamped to
// MinRefresh..MaxRefresh.
func (f *Fetcher) RefreshInterval(b *spiffebundle.Bundle) time.Duration {
	d := f.cfg.DefaultRefresh
	if h, ok := b.RefreshHint(); ok && h > 0 {
		d = h
	}
	return min(max(d, f.cfg.MinRefresh), f.cfg.MaxRefresh)
}

// Run fetches the bundle now and then again after each RefreshInterval
// until ctx is done, then returns nil. It calls update (from Run's
// goroutine) with each bundle that differs from the last one update
// accepted; if a fetch or update fails, it retries after RetryInterval,
// doubling up to the refresh interval, and keeps the error for Status.
func (f *Fetcher) Run(ctx context.Context, update func(*spiffebundle.Bundle) error) error {
	var delivered *spiffebundle.Bundle
	retry := time.Duration(0)
	next := f.cfg.DefaultRefresh
	for {
		b, err := f.Fetch(ctx)
		if err == nil && (delivered == nil || !delivered.Equal(b)) {
			if err = update(b.Clone()); err != nil {
				err = fmt.Errorf("trust: storing %s bundle: %w", f.cfg.TrustDomain, err)
				f.mu.Lock()
				f.status.LastError = err
				f.mu.Unlock()
			} else {
				delivered = b
			}
		}
		var wait time.Duration
		if err != nil {
			retry = min(max(2*retry, f.cfg.RetryInterval), next)
			wait = retry
		} else {
			retry = 0
			next = f.RefreshInterval(b)
			wait = next
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}
