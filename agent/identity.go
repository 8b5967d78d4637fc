package agent

import (
	"errors"
	"fmt"

	"github.com/meshfed/meshfed/federation"
	"github.com/meshfed/meshfed/trust"
)

// A joined cluster's identity is what its stored credentials say: the
// cluster name and the trust domain chosen at join. A restart needs only
// the data directory (and, for the kubernetes source, the cluster's API
// server): WithStoredIdentity fills in what the flags left out and refuses
// what they contradict. The locality is not identity: a --region/--zone
// that differs from the hub's record is stated in every Sync hello and the
// hub records it (UpdateClusterEndpoint); without them the hello states no
// locality and the hub keeps its record.

// ErrIdentityMismatch: a flag names another cluster or trust domain than
// the stored credentials. Errors wrapping it are *IdentityMismatchError.
var ErrIdentityMismatch = errors.New("agent: a flag disagrees with the stored identity")

// IdentityMismatchError names the flag and both values.
type IdentityMismatchError struct {
	// Field is the flag's name: "cluster" or "trust-domain".
	Field string
	// Flag is the value given; Stored is the stored credentials' value.
	Flag, Stored string
}

func (e *IdentityMismatchError) Error() string {
	return fmt.Sprintf("agent: --%s is %q but the stored credentials are for %q (run with --%s=%s or without it; a cluster renamed is another cluster: remove it and join with a new token)",
		e.Field, e.Flag, e.Stored, e.Field, e.Stored)
}

// Is makes errors.Is(err, ErrIdentityMismatch) true.
func (e *IdentityMismatchError) Is(target error) bool { return target == ErrIdentityMismatch }

// WithStoredIdentity returns cfg with the cluster name taken from the
// stored credentials when cfg has none. It returns ErrNotJoined without
// stored credentials, and an *IdentityMismatchError when cfg.Cluster or
// cfg.TrustDomain disagrees with them.
func WithStoredIdentity(cfg Config) (Config, error) {
	st, err := openStores(cfg)
	if err != nil {
		return cfg, err
	}
	b, err := st.creds.Load()
	if errors.Is(err, trust.ErrNotFound) {
		return cfg, ErrNotJoined
	}
	if err != nil {
		return cfg, fmt.Errorf("agent: credentials: %w", err)
	}
	creds, err := decodeCredentials(b)
	if err != nil {
		return cfg, err
	}
	return cfg, creds.checkIdentity(&cfg)
}

// checkIdentity fills cfg.Cluster from c when it is zero and checks the
// cluster and trust domain cfg names against c.
func (c *Credentials) checkIdentity(cfg *Config) error {
	stored, err := federation.ParseClusterName(c.Cluster)
	if err != nil {
		return fmt.Errorf("agent: stored credentials: cluster: %w", err)
	}
	if cfg.Cluster.IsZero() {
		cfg.Cluster = stored
	} else if cfg.Cluster != stored {
		return &IdentityMismatchError{Field: "cluster", Flag: cfg.Cluster.String(), Stored: c.Cluster}
	}
	if !cfg.TrustDomain.IsZero() && cfg.TrustDomain.String() != c.TrustDomain {
		return &IdentityMismatchError{Field: "trust-domain", Flag: cfg.TrustDomain.String(), Stored: c.TrustDomain}
	}
	return nil
}

// storedLocality is the locality recorded at join, used locally (the
// gateways' own locality) while the hub's record is not known yet.
func (c *Credentials) storedLocality() federation.Locality {
	l, err := federation.NewLocality(c.Region, c.Zone, "")
	if err != nil {
		return federation.Locality{}
	}
	return l
}
