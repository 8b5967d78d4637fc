package gatewayv1

import (
	"fmt"
	"net/netip"

	"github.com/meshfed/meshfed/federation"
)

// MaxWorkloads bounds the workloads (pod addresses) of one cluster that an
// agent sends its gateways; beyond it the agent keeps the first by address
// and logs that it cut.
const MaxWorkloads = 100_000

// ValidateWorkload checks one workload as the agent (before it sends it)
// and the gateway (when it parses its config) do: an IP address, a
// namespace that is a DNS label, and a service account that is a DNS
// subdomain (Kubernetes' rules). field prefixes the error's field path.
func ValidateWorkload(field string, w *Workload) error {
	if _, err := netip.ParseAddr(w.GetAddress()); err != nil {
		return &federation.FieldError{Field: field + ".address", Value: w.GetAddress(), Reason: "must be an IP address"}
	}
	if !federation.IsDNSLabel(w.GetNamespace()) {
		return &federation.FieldError{Field: field + ".namespace", Value: w.GetNamespace(), Reason: "must be a DNS label of at most 63 characters"}
	}
	if sa := w.GetServiceAccount(); !isDNSSubdomain(sa) {
		return &federation.FieldError{Field: field + ".service_account", Value: sa, Reason: fmt.Sprintf("must be a DNS subdomain of at most %d characters", maxSubdomain)}
	}
	return nil
}

const maxSubdomain = 253

// isDNSSubdomain reports whether s is an RFC 1123 subdomain: dot-separated
// DNS labels, at most 253 characters.
func isDNSSubdomain(s string) bool {
	if s == "" || len(s) > maxSubdomain {
		return false
	}
	start := 0
	for i := 0; i <= len(s); i++ {
		if i == len(s) || s[i] == '.' {
			if !federation.IsDNSLabel(s[start:i]) {
				return false
			}
			start = i + 1
		}
	}
	return true
}
