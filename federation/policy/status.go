package policy

import (
	"fmt"

	"github.com/meshfed/meshfed/federation"
	fedv1 "github.com/meshfed/meshfed/federation/v1"
)

// Bounds of the policy statuses gateways report (fedv1.GatewayPolicyStatus):
// a gateway to its agent (ReportRequest.policies), an agent to the hub
// (GatewayPolicies), the hub into Raft. CheckStatuses is the one rule;
// the gateway's client truncates a longer reason before it sends it.
const (
	// MaxStatusErrorBytes bounds the reason of a rejected revision.
	MaxStatusErrorBytes = 256
	// MaxGatewayStatusBytes bounds the encoded statuses of one cluster's
	// gateway replicas together, as its agent forwards them to the hub
	// (fedv1.GatewayPolicies): an agent leaves out the replicas past it.
	MaxGatewayStatusBytes = 1 << 20
)

// CheckStatuses checks the policy statuses of one gateway replica: at most
// max of them, each naming a policy (a policy name, as metadata.name)
// once, with a reason of at most MaxStatusErrorBytes. The error is a
// *FieldError whose path is relative to the list ("[3].name").
func CheckStatuses(ss []*fedv1.GatewayPolicyStatus, max int) error {
	if len(ss) > max {
		return &FieldError{Msg: fmt.Sprintf("%d policy statuses, at most %d", len(ss), max)}
	}
	seen := make(map[string]int, len(ss))
	for i, s := range ss {
		if !federation.IsDNSLabel(s.GetName()) {
			return &FieldError{Path: fmt.Sprintf("[%d].name", i), Msg: labelRule + ", got " + quote(s.GetName())}
		}
		if j, dup := seen[s.GetName()]; dup {
			return &FieldError{Path: fmt.Sprintf("[%d].name", i), Msg: fmt.Sprintf("%q is also [%d]; one status per policy", s.GetName(), j)}
		}
		seen[s.GetName()] = i
		if n := len(s.GetError()); n > MaxStatusErrorBytes {
			return &FieldError{Path: fmt.Sprintf("[%d].error", i), Msg: fmt.Sprintf("%d bytes, at most %d", n, MaxStatusErrorBytes)}
		}
	}
	return nil
}
