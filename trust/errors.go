package trust

import (
	"errors"
	"fmt"
)

// Sentinel errors. Callers branch on these with errors.Is; the typed errors
// below match them and carry details for errors.As.
var (
	// ErrInvalidConfig is matched by every *ConfigError: a configuration
	// field is out of bounds. Retrying with the same configuration cannot
	// succeed.
	ErrInvalidConfig = errors.New("trust: invalid config")

	// ErrInvalidID is matched by every *IDError: a SPIFFE ID is malformed or
	// is not in meshfed's identity scheme (see the package documentation).
	ErrInvalidID = errors.New("trust: invalid identity")

	// ErrNotFederated is returned (wrapped) by BundleSet lookups for a trust
	// domain that has no bundle in the set. A TLS peer from such a trust
	// domain is rejected with an error that matches both ErrPeerRejected
	// and ErrNotFederated.
	ErrNotFederated = errors.New("trust: trust domain is not federated")

	// ErrInvalidBundle is returned when a trust bundle is rejected: no X.509
	// authority, an authority that is not a CA, an authority whose SPIFFE ID
	// names another trust domain, too many authorities, or an out-of-range
	// refresh hint.
	ErrInvalidBundle = errors.New("trust: invalid trust bundle")

	// ErrTrustDomainMismatch is returned (together with ErrInvalidBundle or
	// ErrInvalidAuthority) when material that should belong to one trust
	// domain names another: a fetched bundle whose authorities are another
	// trust domain's, an intermediate CA certificate for another trust
	// domain, or a stored CA state written for another trust domain.
	ErrTrustDomainMismatch = errors.New("trust: trust domain mismatch")

	// ErrInvalidAuthority is returned when CA material (an operator-provided
	// intermediate, or a stored root) is unusable: unparsable PEM, a
	// certificate that may not sign, a key that does not match, an expired
	// certificate, or a chain that does not verify.
	ErrInvalidAuthority = errors.New("trust: invalid CA material")

	// ErrNotFound is returned (wrapped) by Store.Load when nothing has been
	// saved yet.
	ErrNotFound = errors.New("trust: not found")

	// ErrRotationInProgress is returned by RootAuthority.Rotate while an
	// earlier rotation has not finished (its old root is still published).
	ErrRotationInProgress = errors.New("trust: CA rotation already in progress")

	// ErrNoRotation is returned by RootAuthority.Switch when no rotation
	// is in progress.
	ErrNoRotation = errors.New("trust: no CA rotation in progress")

	// ErrSwitchTooEarly is returned by RootAuthority.Switch before the
	// rotation's new root has been published for PrepareDuration. It is
	// temporary: the same call succeeds later.
	ErrSwitchTooEarly = errors.New("trust: too early to switch to the new root")

	// ErrCannotSign is returned by authorities that do not hold a signing
	// key (WorkloadAPIAuthority): they can hand out the SVIDs they were given
	// but cannot sign new ones, for example for a CSR.
	ErrCannotSign = errors.New("trust: authority cannot sign")

	// ErrNoSVID is returned when the Workload API offers no X509-SVID with
	// the requested SPIFFE ID.
	ErrNoSVID = errors.New("trust: no X509-SVID for this identity")

	// ErrAuthorityExpired is returned when the issuing certificate has
	// expired (or is not yet valid), so no SVID can be signed with it.
	ErrAuthorityExpired = errors.New("trust: issuing certificate is not valid now")

	// ErrPeerRejected is returned by the VerifyConnection callback of the
	// tls.Configs built by ServerTLS and ClientTLS when the peer's
	// certificate chain is not a valid X509-SVID of a federated trust
	// domain, and matched by *AuthorizationError.
	ErrPeerRejected = errors.New("trust: peer rejected")

	// ErrRedirect is returned by a Fetcher when a bundle endpoint answers
	// with an HTTP redirect: redirects are neither followed nor persisted.
	ErrRedirect = errors.New("trust: bundle endpoint redirected")

	// ErrBundleEndpoint is returned (wrapped) by a Fetcher when the bundle
	// endpoint answers with a status other than 200 or an oversized body.
	ErrBundleEndpoint = errors.New("trust: bundle endpoint error")
)

// ConfigError reports one invalid configuration field. It matches
// ErrInvalidConfig. Validate methods return every ConfigError at once,
// joined with errors.Join.
type ConfigError struct {
	// Field is the snake_case name of the field, for example
	// "prepare_duration".
	Field string
	// Reason completes the sentence, naming the bound, for example
	// "10s must be at least 2 × refresh_hint (10m0s)".
	Reason string
}

// Error returns "trust: config <field>: <reason>".
func (e *ConfigError) Error() string {
	return "trust: config " + e.Field + ": " + e.Reason
}

// Is reports whether target is ErrInvalidConfig.
func (e *ConfigError) Is(target error) bool { return target == ErrInvalidConfig }

// configErrors collects ConfigErrors for a Validate method.
type configErrors []error

func (c *configErrors) add(field, format string, args ...any) {
	*c = append(*c, &ConfigError{Field: field, Reason: fmt.Sprintf(format, args...)})
}

func (c configErrors) err() error { return errors.Join(c...) }

// IDError reports a SPIFFE ID that is malformed or outside meshfed's
// identity scheme. It matches ErrInvalidID.
type IDError struct {
	// ID is the rejected input as given.
	ID string
	// Reason states the rule the ID breaks.
	Reason string
}

// maxQuoted bounds how much of a rejected value appears in an error message.
const maxQuoted = 256

// Error returns `trust: identity "<id>": <reason>`, truncating long IDs.
func (e *IDError) Error() string {
	id := e.ID
	if len(id) > maxQuoted {
		return fmt.Sprintf("trust: identity %q... (%d bytes): %s", id[:maxQuoted], len(id), e.Reason)
	}
	return fmt.Sprintf("trust: identity %q: %s", id, e.Reason)
}

// Is reports whether target is ErrInvalidID.
func (e *IDError) Is(target error) bool { return target == ErrInvalidID }

// AuthorizationError is returned by the authorizers in this package when a
// verified peer's SPIFFE ID is not allowed. It matches ErrPeerRejected.
type AuthorizationError struct {
	// ID is the peer's verified SPIFFE ID.
	ID string
	// Reason names the rule, for example "not a member of [a.test b.test]".
	Reason string
}

// Error returns `trust: peer "<id>" not authorized: <reason>`.
func (e *AuthorizationError) Error() string {
	return fmt.Sprintf("trust: peer %q not authorized: %s", e.ID, e.Reason)
}

// Is reports whether target is ErrPeerRejected.
func (e *AuthorizationError) Is(target error) bool { return target == ErrPeerRejected }
