package trust

import (
	"fmt"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshfed/meshfed/federation"
)

// Kind is the role a SPIFFE ID names in meshfed's identity scheme. The
// numbers are explicit and stable: they may appear in logs, metrics and
// persisted records, so they are never renumbered.
type Kind uint8

// The kinds of identity in meshfed's scheme.
const (
	// KindWorkload is a Kubernetes workload: /ns/<namespace>/sa/<service-account>.
	KindWorkload Kind = 1
	// KindGateway is one of the cluster's east-west gateways: /meshfed/gateway.
	KindGateway Kind = 2
	// KindAgent is the cluster's meshfed agent: /meshfed/agent.
	KindAgent Kind = 3
)

// String returns "workload", "gateway", "agent", or "kind(N)" for an
// unknown value.
func (k Kind) String() string {
	switch k {
	case KindWorkload:
		return "workload"
	case KindGateway:
		return "gateway"
	case KindAgent:
		return "agent"
	default:
		return fmt.Sprintf("kind(%d)", uint8(k))
	}
}

// Fixed SPIFFE ID paths of a cluster's meshfed components.
const (
	// GatewayPath is the path of every east-west gateway of a trust domain.
	// All gateways of a cluster share one identity: peers authorize the
	// cluster, not an individual replica.
	GatewayPath = "/meshfed/gateway"
	// AgentPath is the path of a cluster's meshfed agent.
	AgentPath = "/meshfed/agent"
)

// Limits of the Kubernetes names embedded in workload IDs.
const (
	// MaxNamespaceLength is the longest namespace: an RFC 1123 label.
	MaxNamespaceLength = 63
	// MaxServiceAccountLength is the longest service account name: an RFC
	// 1123 subdomain.
	MaxServiceAccountLength = 253
	// MaxIDLength bounds the SPIFFE IDs ParseIdentity accepts (the SPIFFE
	// specification's URI limit).
	MaxIDLength = 2048
)

// Identity is a SPIFFE ID classified under meshfed's identity scheme. It is
// valid by construction: the only way to obtain a non-zero Identity is
// Classify or ParseIdentity. Identity is comparable.
type Identity struct {
	kind           Kind
	id             spiffeid.ID
	namespace      string
	serviceAccount string
}

// Kind returns the identity's role.
func (i Identity) Kind() Kind { return i.kind }

// ID returns the SPIFFE ID.
func (i Identity) ID() spiffeid.ID { return i.id }

// TrustDomain returns the SPIFFE ID's trust domain.
func (i Identity) TrustDomain() spiffeid.TrustDomain { return i.id.TrustDomain() }

// Namespace returns the Kubernetes namespace of a workload identity, or ""
// for other kinds.
func (i Identity) Namespace() string { return i.namespace }

// ServiceAccount returns the Kubernetes service account of a workload
// identity, or "" for other kinds.
func (i Identity) ServiceAccount() string { return i.serviceAccount }

// String returns the SPIFFE ID, for example
// "spiffe://west.meshfed.local/ns/shop/sa/web", or "" for the zero value.
func (i Identity) String() string { return i.id.String() }

// IsZero reports whether i is the zero value, which classifies nothing.
func (i Identity) IsZero() bool { return i.kind == 0 }

// DefaultTrustDomain returns the trust domain a cluster uses when none is
// configured: "<cluster>.meshfed.local" (federation.TrustDomainFromCluster).
// It returns the zero trust domain for the zero ClusterName.
func DefaultTrustDomain(cluster federation.ClusterName) spiffeid.TrustDomain {
	return federation.TrustDomainFromCluster(cluster).SPIFFE()
}

// ClusterTrustDomain returns configured if it is set, and otherwise the
// default trust domain of cluster. It returns a *ConfigError on field
// "trust_domain" if both are zero.
func ClusterTrustDomain(cluster federation.ClusterName, configured federation.TrustDomain) (spiffeid.TrustDomain, error) {
	switch {
	case !configured.IsZero():
		return configured.SPIFFE(), nil
	case !cluster.IsZero():
		return DefaultTrustDomain(cluster), nil
	default:
		return spiffeid.TrustDomain{}, &ConfigError{Field: "trust_domain", Reason: "required when no cluster name is set"}
	}
}

// WorkloadID returns spiffe://<td>/ns/<namespace>/sa/<serviceAccount>. It
// returns an *IDError if td is zero, namespace is not an RFC 1123 label of
// at most MaxNamespaceLength characters, or serviceAccount is not an RFC
// 1123 subdomain of at most MaxServiceAccountLength characters.
func WorkloadID(td spiffeid.TrustDomain, namespace, serviceAccount string) (spiffeid.ID, error) {
	raw := "spiffe://" + td.Name() + "/ns/" + namespace + "/sa/" + serviceAccount
	if td.IsZero() {
		return spiffeid.ID{}, &IDError{ID: raw, Reason: "trust domain must be set"}
	}
	if reason := checkWorkloadNames(namespace, serviceAccount); reason != "" {
		return spiffeid.ID{}, &IDError{ID: raw, Reason: reason}
	}
	id, err := spiffeid.FromSegments(td, "ns", namespace, "sa", serviceAccount)
	if err != nil {
		// Unreachable: the checks above are stricter than go-spiffe's.
		return spiffeid.ID{}, &IDError{ID: raw, Reason: err.Error()}
	}
	return id, nil
}

// GatewayID returns spiffe://<td>/meshfed/gateway, the identity of every
// east-west gateway of trust domain td. It returns the zero ID for the zero
// trust domain; authorizing the zero ID admits no peer.
func GatewayID(td spiffeid.TrustDomain) spiffeid.ID {
	return fixedID(td, GatewayPath)
}

// AgentID returns spiffe://<td>/meshfed/agent, the identity of trust domain
// td's meshfed agent. It returns the zero ID for the zero trust domain.
func AgentID(td spiffeid.TrustDomain) spiffeid.ID {
	return fixedID(td, AgentPath)
}

func fixedID(td spiffeid.TrustDomain, path string) spiffeid.ID {
	if td.IsZero() {
		return spiffeid.ID{}
	}
	id, err := spiffeid.FromPath(td, path)
	if err != nil {
		// Unreachable: the paths are constants valid for any trust domain.
		panic(err)
	}
	return id
}

// Classify places id in meshfed's identity scheme. It returns an *IDError
// if id is zero or its path is not one of /ns/<namespace>/sa/<sa>,
// /meshfed/gateway and /meshfed/agent, with valid Kubernetes names.
func Classify(id spiffeid.ID) (Identity, error) {
	if id.IsZero() {
		return Identity{}, &IDError{ID: "", Reason: "must be set"}
	}
	switch path := id.Path(); path {
	case GatewayPath:
		return Identity{kind: KindGateway, id: id}, nil
	case AgentPath:
		return Identity{kind: KindAgent, id: id}, nil
	default:
		seg := strings.Split(path, "/")
		// A path starts with '/', so seg[0] is "".
		if len(seg) != 5 || seg[1] != "ns" || seg[3] != "sa" {
			return Identity{}, &IDError{ID: id.String(), Reason: "path must be /ns/<namespace>/sa/<service-account>, " + GatewayPath + " or " + AgentPath}
		}
		if reason := checkWorkloadNames(seg[2], seg[4]); reason != "" {
			return Identity{}, &IDError{ID: id.String(), Reason: reason}
		}
		return Identity{kind: KindWorkload, id: id, namespace: seg[2], serviceAccount: seg[4]}, nil
	}
}

// ParseIdentity parses s as a SPIFFE ID ("spiffe://<td>/<path>") and
// classifies it. It returns an *IDError if s is longer than MaxIDLength, is
// not a SPIFFE ID, or is outside the scheme (see Classify).
func ParseIdentity(s string) (Identity, error) {
	if len(s) > MaxIDLength {
		return Identity{}, &IDError{ID: s, Reason: fmt.Sprintf("longer than %d bytes", MaxIDLength)}
	}
	id, err := spiffeid.FromString(s)
	if err != nil {
		return Identity{}, &IDError{ID: s, Reason: "not a SPIFFE ID: " + err.Error()}
	}
	return Classify(id)
}

// checkWorkloadNames returns why namespace or serviceAccount is not a valid
// Kubernetes name, or "".
func checkWorkloadNames(namespace, serviceAccount string) string {
	if !isLabel(namespace, MaxNamespaceLength) {
		return fmt.Sprintf("namespace %q must be a lowercase RFC 1123 label of at most %d characters", namespace, MaxNamespaceLength)
	}
	if !isSubdomain(serviceAccount) {
		return fmt.Sprintf("service account %q must be a lowercase RFC 1123 subdomain of at most %d characters", serviceAccount, MaxServiceAccountLength)
	}
	return ""
}

// isLabel reports whether s is a lowercase RFC 1123 label of at most limit
// characters.
func isLabel(s string, limit int) bool {
	if len(s) == 0 || len(s) > limit {
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

// isSubdomain reports whether s is a lowercase RFC 1123 subdomain (labels
// joined by '.') of at most MaxServiceAccountLength characters, the rule
// Kubernetes applies to service account names.
func isSubdomain(s string) bool {
	if len(s) == 0 || len(s) > MaxServiceAccountLength {
		return false
	}
	for label := range strings.SplitSeq(s, ".") {
		if !isLabel(label, MaxServiceAccountLength) {
			return false
		}
	}
	return true
}
