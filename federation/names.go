package federation

import (
	"errors"
	"fmt"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Limits enforced by the constructors in this package.
const (
	// MaxNameLength is the maximum length of a ClusterName and of each half
	// of a ServiceKey: the RFC 1123 label limit, which Kubernetes also
	// applies to namespaces and service names.
	MaxNameLength = 63

	// MaxTrustDomainLength is the maximum length of a TrustDomain name, as
	// set by the SPIFFE ID specification.
	MaxTrustDomainLength = 255

	// MaxLocalityPartLength is the maximum length of each of the region,
	// zone and subzone of a Locality.
	MaxLocalityPartLength = 128
)

// DefaultTrustDomainSuffix is appended to a cluster name by
// TrustDomainFromCluster to form the cluster's default trust domain.
const DefaultTrustDomainSuffix = ".meshfed.local"

// ErrInvalid is matched, under errors.Is, by every *FieldError: the input
// was rejected and retrying it unchanged cannot succeed.
var ErrInvalid = errors.New("federation: invalid value")

// FieldError reports a value that was rejected by a constructor in this
// package, or by a caller validating its own fields with the same shape.
// It matches ErrInvalid under errors.Is; use errors.As to read its fields.
type FieldError struct {
	// Field is the dotted path of the rejected field, for example
	// "cluster" or "service.namespace". See WithPrefix.
	Field string
	// Value is the rejected input, unmodified.
	Value string
	// Reason states the rule that Value breaks, including the bound, for
	// example "must be at least 1". It completes the sentence that starts
	// with the quoted value.
	Reason string
}

// maxQuotedValue bounds how much of FieldError.Value appears in Error, so an
// oversized input does not flood a log line.
const maxQuotedValue = 256

// Error returns a message of the form
//
//	federation: <field>: "<value>" <reason>
//
// Values longer than 256 bytes are truncated in the message, but not in the
// Value field.
func (e *FieldError) Error() string {
	v := e.Value
	if len(v) > maxQuotedValue {
		return fmt.Sprintf("federation: %s: %q... (%d bytes) %s", e.Field, v[:maxQuotedValue], len(v), e.Reason)
	}
	return fmt.Sprintf("federation: %s: %q %s", e.Field, v, e.Reason)
}

// Is reports whether target is ErrInvalid.
func (e *FieldError) Is(target error) bool {
	return target == ErrInvalid
}

// WithPrefix returns a copy of e whose Field is prefix + "." + e.Field, so
// a caller can report where in its own message the value came from:
// err.WithPrefix("join") turns "locality.zone" into "join.locality.zone".
// An empty prefix returns an unchanged copy. e itself is not modified.
func (e *FieldError) WithPrefix(prefix string) *FieldError {
	c := *e
	if prefix != "" {
		c.Field = prefix + "." + e.Field
	}
	return &c
}

func invalid(field, value, reason string) *FieldError {
	return &FieldError{Field: field, Value: value, Reason: reason}
}

// labelReason is the rule for every RFC 1123 label in this package.
var labelReason = fmt.Sprintf("must be a lowercase RFC 1123 label (a-z, 0-9, '-'; starting and ending with a letter or digit), at most %d characters", MaxNameLength)

// IsDNSLabel reports whether s is a lowercase RFC 1123 DNS label of at
// most MaxNameLength characters: the rule of every name in this package.
func IsDNSLabel(s string) bool { return isLabel(s) }

// isLabel reports whether s is an RFC 1123 DNS label of at most
// MaxNameLength characters.
func isLabel(s string) bool {
	if len(s) == 0 || len(s) > MaxNameLength {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case c == '-' && i != 0 && i != len(s)-1:
		default:
			return false
		}
	}
	return true
}

// ClusterName names one member cluster of the federation. It is an RFC 1123
// DNS label: 1 to MaxNameLength characters of a-z, 0-9 and '-', starting and
// ending with a letter or digit.
//
// The zero value is not a valid name; IsZero reports it. ClusterName is
// comparable and may be used as a map key.
type ClusterName struct {
	name string
}

// ParseClusterName returns s as a ClusterName, or a *FieldError on field
// "cluster" if s is not an RFC 1123 label of at most MaxNameLength
// characters.
func ParseClusterName(s string) (ClusterName, error) {
	if !isLabel(s) {
		return ClusterName{}, invalid("cluster", s, labelReason)
	}
	return ClusterName{name: s}, nil
}

// MustClusterName is like ParseClusterName but panics if s is invalid. It is
// meant for constants and tests.
func MustClusterName(s string) ClusterName {
	c, err := ParseClusterName(s)
	if err != nil {
		panic(err)
	}
	return c
}

// String returns the name, or "" for the zero value.
func (c ClusterName) String() string { return c.name }

// IsZero reports whether c is the zero value, which is not a valid name.
func (c ClusterName) IsZero() bool { return c.name == "" }

// TrustDomain is a SPIFFE trust domain name such as "prod.example.org": 1 to
// MaxTrustDomainLength characters of a-z, 0-9, '.', '-' and '_'. Only the
// bare name is accepted, not a "spiffe://" URI.
//
// The zero value is not a valid trust domain; IsZero reports it. TrustDomain
// is comparable and may be used as a map key.
type TrustDomain struct {
	td spiffeid.TrustDomain
}

var trustDomainReason = fmt.Sprintf("must be a SPIFFE trust domain name (a-z, 0-9, '.', '-', '_'; not a spiffe:// URI), 1 to %d characters", MaxTrustDomainLength)

// ParseTrustDomain returns s as a TrustDomain, or a *FieldError on field
// "trust_domain" if s is empty, longer than MaxTrustDomainLength, or holds a
// character outside a-z, 0-9, '.', '-' and '_'.
func ParseTrustDomain(s string) (TrustDomain, error) {
	if len(s) == 0 || len(s) > MaxTrustDomainLength {
		return TrustDomain{}, invalid("trust_domain", s, trustDomainReason)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '.', c == '-', c == '_':
		default:
			return TrustDomain{}, invalid("trust_domain", s, trustDomainReason)
		}
	}
	td, err := spiffeid.TrustDomainFromString(s)
	if err != nil {
		// Unreachable: the checks above are at least as strict as go-spiffe's.
		return TrustDomain{}, invalid("trust_domain", s, trustDomainReason+" ("+err.Error()+")")
	}
	return TrustDomain{td: td}, nil
}

// TrustDomainFromCluster returns the default trust domain of cluster c,
// "<c>.meshfed.local" (c followed by DefaultTrustDomainSuffix). Clusters that
// already run their own SPIFFE deployment configure their trust domain with
// ParseTrustDomain instead. For the zero ClusterName it returns the zero
// TrustDomain.
func TrustDomainFromCluster(c ClusterName) TrustDomain {
	if c.IsZero() {
		return TrustDomain{}
	}
	td, err := ParseTrustDomain(c.name + DefaultTrustDomainSuffix)
	if err != nil {
		// A label of at most 63 characters plus the suffix is always valid.
		panic(err)
	}
	return td
}

// String returns the trust domain name, for example "prod.example.org", or ""
// for the zero value.
func (t TrustDomain) String() string { return t.td.Name() }

// IsZero reports whether t is the zero value, which is not a valid trust
// domain.
func (t TrustDomain) IsZero() bool { return t.td.IsZero() }

// SPIFFE returns t as a go-spiffe trust domain, for use with go-spiffe's
// bundle, SVID and tlsconfig packages.
func (t TrustDomain) SPIFFE() spiffeid.TrustDomain { return t.td }

// ID returns the SPIFFE ID with trust domain t and the given path, which
// must be empty or start with '/' and consist of non-empty segments of
// letters, digits, '.', '-' and '_' (see spiffeid.FromPath); for example
// t.ID("/ns/default/sa/web"). It returns a *FieldError on field
// "trust_domain" if t is the zero value, or on "spiffe_id.path" if the path
// is invalid.
func (t TrustDomain) ID(path string) (spiffeid.ID, error) {
	if t.IsZero() {
		return spiffeid.ID{}, invalid("trust_domain", "", "must be set to build a SPIFFE ID")
	}
	id, err := spiffeid.FromPath(t.td, path)
	if err != nil {
		return spiffeid.ID{}, invalid("spiffe_id.path", path, "must be a valid SPIFFE ID path: "+err.Error())
	}
	return id, nil
}

// ServiceKey identifies a service across the federation by its Kubernetes
// namespace and name, written "namespace/name". Both halves are RFC 1123
// labels of at most MaxNameLength characters.
//
// The zero value is not a valid key; IsZero reports it. ServiceKey is
// comparable and may be used as a map key.
type ServiceKey struct {
	namespace, name string
}

// NewServiceKey returns the key for service name in namespace ns, or a
// *FieldError on field "service.namespace" or "service.name" for the first
// half that is not an RFC 1123 label of at most MaxNameLength characters.
func NewServiceKey(ns, name string) (ServiceKey, error) {
	if !isLabel(ns) {
		return ServiceKey{}, invalid("service.namespace", ns, labelReason)
	}
	if !isLabel(name) {
		return ServiceKey{}, invalid("service.name", name, labelReason)
	}
	return ServiceKey{namespace: ns, name: name}, nil
}

// ParseServiceKey parses s of the form "namespace/name". It returns a
// *FieldError on field "service" if s does not contain exactly one '/', and
// otherwise the errors of NewServiceKey.
func ParseServiceKey(s string) (ServiceKey, error) {
	ns, name, ok := strings.Cut(s, "/")
	if !ok || strings.Contains(name, "/") {
		return ServiceKey{}, invalid("service", s, `must have the form "namespace/name" with exactly one '/'`)
	}
	return NewServiceKey(ns, name)
}

// MustServiceKey is ParseServiceKey for constants and tests: it panics on
// an invalid key.
func MustServiceKey(s string) ServiceKey {
	k, err := ParseServiceKey(s)
	if err != nil {
		panic(err)
	}
	return k
}

// Namespace returns the namespace half of k.
func (k ServiceKey) Namespace() string { return k.namespace }

// Name returns the name half of k.
func (k ServiceKey) Name() string { return k.name }

// String returns "namespace/name", or "" for the zero value.
func (k ServiceKey) String() string {
	if k.IsZero() {
		return ""
	}
	return k.namespace + "/" + k.name
}

// IsZero reports whether k is the zero value, which is not a valid key.
func (k ServiceKey) IsZero() bool { return k.namespace == "" }

// Locality is where an endpoint runs: a region, optionally a zone within it,
// and optionally a subzone within that zone, written
// "region[/zone[/subzone]]". Each part is 1 to MaxLocalityPartLength
// characters of a-z, A-Z, 0-9, '.', '-' and '_'. A subzone requires a zone.
//
// The zero value is the unknown locality; IsZero reports it. Locality is
// comparable and may be used as a map key.
type Locality struct {
	region, zone, subzone string
}

var localityFields = [...]string{"locality.region", "locality.zone", "locality.subzone"}

var localityPartReason = fmt.Sprintf("must be 1 to %d characters of a-z, A-Z, 0-9, '.', '-', '_'", MaxLocalityPartLength)

func isLocalityPart(s string) bool {
	if len(s) == 0 || len(s) > MaxLocalityPartLength {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '.', c == '-', c == '_':
		default:
			return false
		}
	}
	return true
}

// NewLocality returns the locality with the given parts. region is required;
// zone and subzone may be empty, but a non-empty subzone requires a zone. It
// returns a *FieldError on field "locality.region", "locality.zone" or
// "locality.subzone".
func NewLocality(region, zone, subzone string) (Locality, error) {
	if !isLocalityPart(region) {
		return Locality{}, invalid("locality.region", region, localityPartReason)
	}
	if zone == "" && subzone != "" {
		return Locality{}, invalid("locality.zone", zone, "must be set when subzone is set")
	}
	if zone != "" && !isLocalityPart(zone) {
		return Locality{}, invalid("locality.zone", zone, localityPartReason)
	}
	if subzone != "" && !isLocalityPart(subzone) {
		return Locality{}, invalid("locality.subzone", subzone, localityPartReason)
	}
	return Locality{region: region, zone: zone, subzone: subzone}, nil
}

// ParseLocality parses s of the form "region", "region/zone" or
// "region/zone/subzone", the form returned by Locality.String. It returns a
// *FieldError on field "locality" if s has more than three parts, and on
// "locality.region", "locality.zone" or "locality.subzone" if a part is
// empty or invalid.
func ParseLocality(s string) (Locality, error) {
	parts := strings.SplitN(s, "/", 4)
	if len(parts) > 3 {
		return Locality{}, invalid("locality", s, `must have the form "region[/zone[/subzone]]", at most 3 parts`)
	}
	// Parts that are present must be non-empty: "us-east1/" is rejected
	// rather than read as "us-east1", so every accepted string is canonical.
	for i, part := range parts {
		if !isLocalityPart(part) {
			return Locality{}, invalid(localityFields[i], part, localityPartReason)
		}
	}
	parts = append(parts, "", "")
	return Locality{region: parts[0], zone: parts[1], subzone: parts[2]}, nil
}

// Region returns the region of l, or "" for the zero value.
func (l Locality) Region() string { return l.region }

// Zone returns the zone of l, or "" if it has none.
func (l Locality) Zone() string { return l.zone }

// Subzone returns the subzone of l, or "" if it has none.
func (l Locality) Subzone() string { return l.subzone }

// String returns "region", "region/zone" or "region/zone/subzone", or "" for
// the zero value.
func (l Locality) String() string {
	switch {
	case l.subzone != "":
		return l.region + "/" + l.zone + "/" + l.subzone
	case l.zone != "":
		return l.region + "/" + l.zone
	default:
		return l.region
	}
}

// IsZero reports whether l is the zero value, the unknown locality.
func (l Locality) IsZero() bool { return l.region == "" }

// Proximity reports how close l and other are, for ordering failover
// priority: endpoints with higher proximity to the caller are preferred,
// and traffic fails over to the next lower proximity only when none are
// healthy. It returns
//
//	3 if both are in the same subzone,
//	2 if both are in the same zone,
//	1 if both are in the same region,
//	0 otherwise.
//
// A part that is unset on either side matches nothing, so two localities
// that name only the same region have proximity 1, and the zero Locality has
// proximity 0 to every locality, including itself. Proximity is symmetric.
func (l Locality) Proximity(other Locality) int {
	switch {
	case l.region == "" || l.region != other.region:
		return 0
	case l.zone == "" || l.zone != other.zone:
		return 1
	case l.subzone == "" || l.subzone != other.subzone:
		return 2
	default:
		return 3
	}
}
