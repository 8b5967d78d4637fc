package agent

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	fedv1 "github.com/meshfed/meshfed/federation/v1"
	"github.com/meshfed/meshfed/internal/hubdial"
	"github.com/meshfed/meshfed/internal/pki"
	"github.com/meshfed/meshfed/trust"
	"github.com/meshfed/meshfed/trust/x509pem"
)

// The agent's hub certificate lives AgentCertTTL (30 days by default) and is
// renewed at half-life with Sync.Renew, authenticated by the certificate
// itself. Renewal is scheduled from the certificate held (NotBefore + half
// the lifetime), once per certificate; a failed call is retried with
// jittered exponential backoff until it succeeds. The key of a renewal is
// chosen, and stored with the credentials, before the first call, so that
// every retry (even after a restart) asks for the same key: the hub answers
// a retry whose first response was lost with the certificate it already
// issued, and refuses any other key.

// certRenewer asks the hub for a new agent certificate, authenticating
// with creds. The keeper calls it from its own goroutine; errors are gRPC
// statuses (or transport errors).
type certRenewer interface {
	renew(ctx context.Context, creds *Credentials, csr []byte) (*fedv1.RenewResponse, error)
}

// hubRenewer calls Sync.Renew on a connection of its own, dialled with the
// credentials to renew.
type hubRenewer struct {
	// addrs, when set, replace the credentials' hub addresses.
	addrs   []string
	timeout time.Duration
}

var _ certRenewer = hubRenewer{}

func (r hubRenewer) renew(ctx context.Context, creds *Credentials, csr []byte) (*fedv1.RenewResponse, error) {
	tlsCfg, err := creds.hubTLS()
	if err != nil {
		return nil, err
	}
	addrs := creds.HubAddresses
	if len(r.addrs) > 0 {
		addrs = r.addrs
	}
	conn, err := hubdial.Dial(addrs, tlsCfg)
	if err != nil {
		return nil, err
	}
	defer func() { _ = conn.Close() }()
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	return fedv1.NewSyncClient(conn).Renew(ctx, &fedv1.RenewRequest{Csr: csr})
}

// renewAt is when a certificate is renewed: half-way through its validity.
func renewAt(cert *x509.Certificate) time.Time {
	return cert.NotBefore.Add(cert.NotAfter.Sub(cert.NotBefore) / 2)
}

// credentialKeeper holds the agent's current hub credentials, renews them
// and stores each renewal (trust.Store saves are atomic: a file is written
// to a temporary name and renamed, a Secret is updated in one call).
type credentialKeeper struct {
	store   trust.Store
	renewer certRenewer
	log     *slog.Logger
	// retryMin and retryMax bound the backoff between failed renewals; the
	// maximum is also at most an eighth of the certificate's lifetime.
	retryMin, retryMax time.Duration

	mu      sync.Mutex
	creds   *Credentials
	changed chan struct{}
}

func newCredentialKeeper(store trust.Store, creds *Credentials, r certRenewer, log *slog.Logger, retryMin, retryMax time.Duration) *credentialKeeper {
	return &credentialKeeper{store: store, renewer: r, log: log, retryMin: retryMin, retryMax: retryMax, creds: creds, changed: make(chan struct{})}
}

// current returns the credentials to use and a channel closed once they
// are replaced by a renewal.
func (k *credentialKeeper) current() (*Credentials, <-chan struct{}) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.creds, k.changed
}

func (k *credentialKeeper) set(c *Credentials) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.creds = c
	close(k.changed)
	k.changed = make(chan struct{})
}

// run renews the credentials at each certificate's half-life until ctx is
// done.
func (k *credentialKeeper) run(ctx context.Context) error {
	for {
		creds, _ := k.current()
		leaf, err := creds.leaf()
		if err != nil {
			return err
		}
		at := renewAt(leaf)
		k.log.Info("agent certificate", "serial", leaf.SerialNumber.Text(16), "not_after", leaf.NotAfter, "renew_at", at)
		timer := time.NewTimer(time.Until(at))
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil
		case <-timer.C:
		}
		next, err := k.renew(ctx, creds, leaf)
		if err != nil {
			return nil // ctx is done
		}
		k.set(next)
	}
}

// renew gets creds a new certificate and stores it, retrying until it has
// or ctx is done (then it returns ctx's error).
func (k *credentialKeeper) renew(ctx context.Context, creds *Credentials, leaf *x509.Certificate) (*Credentials, error) {
	maxWait := max(k.retryMin, min(k.retryMax, leaf.NotAfter.Sub(leaf.NotBefore)/8))
	backoff := k.retryMin
	wait := func(err error) error {
		level := slog.LevelWarn
		msg := "agent certificate renewal failed; retrying"
		if time.Now().After(leaf.NotAfter) {
			level, msg = slog.LevelError, "agent certificate expired before it could be renewed; the hub refuses it: remove the cluster and join it again with a new token"
		} else if status.Code(err) == codes.PermissionDenied {
			level = slog.LevelError
		}
		d := time.Duration(rand.Int64N(int64(backoff))) + backoff/2 // jitter in [backoff/2, 3*backoff/2)
		k.log.Log(ctx, level, msg, "err", err, "in", d, "not_after", leaf.NotAfter)
		backoff = min(2*backoff, maxWait)
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
			return nil
		}
	}
	var key crypto.Signer
	for {
		var err error
		if creds, key, err = k.renewalKey(creds); err == nil {
			break
		}
		if err := wait(err); err != nil {
			return nil, err
		}
	}
	csr, err := pki.NewCSR(key)
	if err != nil {
		return nil, err
	}
	for {
		resp, err := k.renewer.renew(ctx, creds, csr)
		if err == nil {
			var next *Credentials
			if next, err = renewedCredentials(creds, leaf, key, resp); err == nil {
				// A failed save is retried by asking again: the hub answers
				// the replaced certificate's retry for this key with the
				// same certificate.
				if err = k.save(next); err == nil {
					nl, _ := next.leaf()
					k.log.Info("agent certificate renewed", "serial", nl.SerialNumber.Text(16), "not_after", nl.NotAfter)
					return next, nil
				}
			}
		}
		if err := wait(err); err != nil {
			return nil, err
		}
	}
}

// renewalKey returns the key of the renewal of creds: the one stored
// already, or a new one, stored first.
func (k *credentialKeeper) renewalKey(creds *Credentials) (*Credentials, crypto.Signer, error) {
	if creds.RenewalKey != "" {
		key, err := x509pem.DecodeKey([]byte(creds.RenewalKey))
		return creds, key, err
	}
	key, err := pki.NewKey()
	if err != nil {
		return creds, nil, err
	}
	keyPEM, err := x509pem.EncodeKey(key)
	if err != nil {
		return creds, nil, err
	}
	withKey := *creds
	withKey.RenewalKey = string(keyPEM)
	if err := k.save(&withKey); err != nil {
		return creds, nil, err
	}
	return &withKey, key, nil
}

func (k *credentialKeeper) save(c *Credentials) error {
	b, err := encodeCredentials(c)
	if err != nil {
		return err
	}
	if err := k.store.Save(b); err != nil {
		return fmt.Errorf("agent: saving credentials: %w", err)
	}
	return nil
}

// renewedCredentials checks a renewal's certificate (it chains to the hub
// CA, is for key, and names the same identity as old) and returns creds
// with it.
func renewedCredentials(creds *Credentials, old *x509.Certificate, key crypto.Signer, resp *fedv1.RenewResponse) (*Credentials, error) {
	certs, err := x509pem.DecodeCerts(resp.GetClientCertificate())
	if err != nil {
		return nil, fmt.Errorf("agent: renew: client_certificate: %w", err)
	}
	hubCA := creds.HubCA
	if len(resp.GetHubCa()) > 0 {
		hubCA = string(resp.GetHubCa())
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(hubCA)) {
		return nil, errors.New("agent: renew: hub_ca: no certificate")
	}
	if _, err := certs[0].Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return nil, fmt.Errorf("agent: renew: client_certificate does not chain to the hub CA: %w", err)
	}
	if len(certs[0].URIs) != 1 || len(old.URIs) != 1 || certs[0].URIs[0].String() != old.URIs[0].String() {
		return nil, fmt.Errorf("agent: renew: client_certificate names %v, want %v", certs[0].URIs, old.URIs)
	}
	keyPEM, err := x509pem.EncodeKey(key)
	if err != nil {
		return nil, err
	}
	if _, err := tls.X509KeyPair(x509pem.EncodeCerts(certs[0]), keyPEM); err != nil {
		return nil, fmt.Errorf("agent: renew: client_certificate does not match the key: %w", err)
	}
	next := *creds
	next.Cert, next.Key, next.RenewalKey, next.HubCA = string(x509pem.EncodeCerts(certs[0])), string(keyPEM), "", hubCA
	if hubs := resp.GetHubAddresses(); len(hubs) > 0 {
		next.HubAddresses = append([]string(nil), hubs[:min(len(hubs), maxHubAddresses)]...)
	}
	return &next, nil
}
