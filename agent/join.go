package agent

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/meshfed/meshfed/federation"
	fedv1 "github.com/meshfed/meshfed/federation/v1"
	"github.com/meshfed/meshfed/internal/hubdial"
	"github.com/meshfed/meshfed/internal/hubtls"
	"github.com/meshfed/meshfed/internal/pki"
	"github.com/meshfed/meshfed/internal/wait"
	"github.com/meshfed/meshfed/trust"
	"github.com/meshfed/meshfed/trust/x509pem"
)

// Errors of Join. Each leaves nothing behind locally.
var (
	// ErrJoinRefused: the hub refused the token (unknown, used, expired,
	// revoked, bound to another cluster or to another trust domain).
	// Permanent: get a new token, or join with the token's trust domain.
	ErrJoinRefused = errors.New("agent: join refused by the hub")
	// ErrWrongCluster: the token is bound to another cluster than --cluster.
	ErrWrongCluster = errors.New("agent: join token is for another cluster")
	// ErrAlreadyJoined: credentials are already stored; run the agent.
	ErrAlreadyJoined = errors.New("agent: already joined (credentials are stored); run meshfed agent")
)

// Join redeems a join token for cfg.Cluster: it pins the hub CA by the
// token's fingerprint, creates (or loads) the cluster's CA root, sends the
// cluster's locality, trust bundle, a CSR and capabilities, and stores the
// issued credentials and the CA root. Nothing is stored unless the hub
// accepted the join. The agent is not started; call New(cfg).Run next.
func Join(ctx context.Context, cfg Config, token string) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	if cfg.Locality.IsZero() {
		return fmt.Errorf("agent: invalid config: %w", &federation.FieldError{Field: "locality", Value: "", Reason: "required at join (region and zone)"})
	}
	jt, err := federation.ParseJoinToken(token)
	if err != nil {
		return fmt.Errorf("agent: join: %w", err)
	}
	if jt.Cluster != cfg.Cluster {
		return fmt.Errorf("%w: the token is for cluster %q, not %q", ErrWrongCluster, jt.Cluster, cfg.Cluster)
	}
	// A cluster that already has an ID (KEP-2149) joins only under it.
	if err := checkKubeClusterID(ctx, cfg, false, discardIfNil(cfg.Log)); err != nil {
		return err
	}
	st, err := openStores(cfg)
	if err != nil {
		return err
	}
	if _, err := st.creds.Load(); err == nil {
		return ErrAlreadyJoined
	} else if !errors.Is(err, trust.ErrNotFound) {
		return fmt.Errorf("agent: join: reading stored credentials: %w", err)
	}

	// The CA root: reuse a stored one, else generate it in memory and
	// persist it only after the hub accepted us.
	mem := &memStore{}
	caExisted := false
	if b, err := st.ca.Load(); err == nil {
		caExisted = true
		if err := mem.Save(b); err != nil {
			return err
		}
	} else if !errors.Is(err, trust.ErrNotFound) {
		return fmt.Errorf("agent: join: reading the CA root: %w", err)
	}
	td, err := trust.ClusterTrustDomain(cfg.Cluster, cfg.TrustDomain)
	if err != nil {
		return err
	}
	root, err := trust.NewRootAuthority(cfg.rootConfig(td), mem)
	if err != nil {
		return fmt.Errorf("agent: join: cluster CA: %w", err)
	}
	defer func() { _ = root.Close() }()
	bundle, err := root.Bundle()
	if err != nil {
		return fmt.Errorf("agent: join: cluster CA bundle: %w", err)
	}

	key, err := pki.NewKey()
	if err != nil {
		return err
	}
	csr, err := pki.NewCSR(key)
	if err != nil {
		return err
	}
	addrs := jt.Addrs
	if len(cfg.HubAddresses) > 0 {
		addrs = cfg.HubAddresses
	}
	conn, err := hubdial.Dial(addrs, hubtls.PinnedConfig(jt.CAFingerprint))
	if err != nil {
		return fmt.Errorf("agent: join: dial hub: %w", err)
	}
	defer func() { _ = conn.Close() }()
	req := &fedv1.JoinRequest{
		Token:   jt.Encode(),
		Cluster: cfg.Cluster.String(),
		Locality: &fedv1.Locality{
			Region: cfg.Locality.Region(), Zone: cfg.Locality.Zone(), Subzone: cfg.Locality.Subzone(),
		},
		TrustBundle:      trust.BundleToProto(bundle),
		Csr:              csr,
		Capabilities:     localCapabilities(),
		GatewayAddresses: cfg.GatewayAddresses,
	}
	resp, err := joinWithRetries(ctx, cfg, fedv1.NewJoinClient(conn), req)
	if err != nil {
		if s, ok := status.FromError(err); ok && s.Code() == codes.PermissionDenied {
			if cfg.Source == SourceKubernetes && joinedMeanwhile(ctx, st.creds) {
				// Another replica of the agent redeemed the token first.
				return ErrAlreadyJoined
			}
			return fmt.Errorf("%w: %s (the token may be used, expired, revoked, for another cluster or bound to another trust domain than --trust-domain; create a new one with meshfed token create --cluster %s)", ErrJoinRefused, s.Message(), cfg.Cluster)
		}
		return fmt.Errorf("agent: join: %w", err)
	}
	creds, err := credentialsFromResponse(cfg, td.Name(), key, jt, resp)
	if err != nil {
		return err
	}
	b, err := encodeCredentials(creds)
	if err != nil {
		return err
	}
	if !caExisted {
		rootPEM, err := mem.Load()
		if err != nil {
			return err
		}
		if err := st.ca.Save(rootPEM); err != nil {
			return fmt.Errorf("agent: join: saving the CA root: %w", err)
		}
	}
	if err := st.creds.Save(b); err != nil {
		return fmt.Errorf("agent: join: saving credentials: %w", err)
	}
	return nil
}

// joinRaceWait is how long a refused join (kubernetes source) waits for
// credentials stored by another replica that redeemed the same token: it
// stores them right after the hub answered it.
const joinRaceWait = 10 * time.Second

// joinedMeanwhile reports whether credentials appear in store within
// joinRaceWait.
func joinedMeanwhile(ctx context.Context, store trust.Store) bool {
	ctx, cancel := context.WithTimeout(ctx, joinRaceWait)
	defer cancel()
	return wait.Poll(ctx, wait.Backoff{Min: 200 * time.Millisecond, Max: time.Second}, "stored credentials", func(context.Context) error {
		_, err := store.Load()
		return err
	}) == nil
}

// joinAttemptTimeout bounds one Join call; cfg.JoinTimeout bounds them all.
const joinAttemptTimeout = 10 * time.Second

// joinWithRetries calls Join until it succeeds, fails for good, or
// cfg.JoinTimeout passes. The hub answers a retry with the same token and
// CSR (one key for every attempt) with the certificate of the first call
// that got through, so a lost response does not burn the token. Unavailable,
// ResourceExhausted (the per-address limit), DeadlineExceeded of one attempt
// and Aborted are retried with jittered exponential backoff.
func joinWithRetries(ctx context.Context, cfg Config, c fedv1.JoinClient, req *fedv1.JoinRequest) (*fedv1.JoinResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, cfg.JoinTimeout)
	defer cancel()
	backoff := cfg.ReconnectMin
	for {
		actx, acancel := context.WithTimeout(ctx, joinAttemptTimeout)
		resp, err := c.Join(actx, req)
		acancel()
		if err == nil {
			return resp, nil
		}
		switch status.Code(err) {
		case codes.Unavailable, codes.ResourceExhausted, codes.DeadlineExceeded, codes.Aborted:
		default:
			return nil, err
		}
		d := time.Duration(rand.Int64N(int64(backoff))) + backoff/2
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("%w (last: %w)", ctx.Err(), err)
		case <-t.C:
		}
		backoff = min(2*backoff, cfg.ReconnectMax)
	}
}

func credentialsFromResponse(cfg Config, td string, key crypto.Signer, jt federation.JoinToken, resp *fedv1.JoinResponse) (*Credentials, error) {
	certs, err := x509pem.DecodeCerts(resp.GetClientCertificate())
	if err != nil {
		return nil, fmt.Errorf("agent: join: client_certificate: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(resp.GetHubCa()) {
		return nil, errors.New("agent: join: hub_ca: no certificate")
	}
	if _, err := certs[0].Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return nil, fmt.Errorf("agent: join: client_certificate does not chain to hub_ca: %w", err)
	}
	keyPEM, err := x509pem.EncodeKey(key)
	if err != nil {
		return nil, err
	}
	if _, err := tls.X509KeyPair(x509pem.EncodeCerts(certs[0]), keyPEM); err != nil {
		return nil, fmt.Errorf("agent: join: client_certificate does not match the key: %w", err)
	}
	hubs := resp.GetHubAddresses()
	if len(hubs) == 0 {
		hubs = jt.Addrs
	}
	if len(hubs) > maxHubAddresses {
		hubs = hubs[:maxHubAddresses]
	}
	return &Credentials{
		APIVersion: CredentialsAPIVersion, Kind: CredentialsKind,
		Cluster: cfg.Cluster.String(), Region: cfg.Locality.Region(), Zone: cfg.Locality.Zone(),
		TrustDomain:    td,
		HubTrustDomain: resp.GetSettings().GetHubTrustDomain(),
		HubAddresses:   hubs,
		HubCA:          string(resp.GetHubCa()),
		Cert:           string(x509pem.EncodeCerts(certs[0])),
		Key:            string(keyPEM),
		JoinedAt:       time.Now().UTC().Format(time.RFC3339),
	}, nil
}

func localCapabilities() *fedv1.Capabilities {
	return &fedv1.Capabilities{
		Version:  federation.CapabilityVersion,
		Features: []string{federation.FeatureSyncResume, federation.FeatureSyncHeartbeat},
	}
}
