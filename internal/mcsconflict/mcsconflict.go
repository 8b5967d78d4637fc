// Package mcsconflict is the one rule for when two exports of a global
// service conflict, as KEP-1645 and the MCS API v1beta1 list conflicts:
// the agent applies it to decide its imports and its ServiceExport
// conditions, the hub to show conflicts in its web UI.
package mcsconflict

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	mcsv1b1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	fedv1 "github.com/meshfed/meshfed/federation/v1"
)

// Reasons are the MCS Conflict reasons the agent raises, in the
// order they are listed in a condition's reason.
var Reasons = []mcsv1b1.ServiceExportConditionReason{
	mcsv1b1.ServiceExportReasonPortConflict,
	mcsv1b1.ServiceExportReasonTypeConflict,
	mcsv1b1.ServiceExportReasonSessionAffinityConflict,
	mcsv1b1.ServiceExportReasonSessionAffinityConfigConflict,
	mcsv1b1.ServiceExportReasonInternalTrafficPolicyConflict,
	mcsv1b1.ServiceExportReasonTrafficDistributionConflict,
	mcsv1b1.ServiceExportReasonIPFamilyConflict,
	mcsv1b1.ServiceExportReasonLabelsConflict,
	mcsv1b1.ServiceExportReasonAnnotationsConflict,
}

// SessionAffinity is an export's session affinity, "" for None.
func SessionAffinity(s *fedv1.ExportedService) string {
	if s.GetSessionAffinity() == string(corev1.ServiceAffinityNone) {
		return ""
	}
	return s.GetSessionAffinity()
}

// Conflicts lists how younger conflicts with oldest, as KEP-1645
// and v1beta1 list conflicts: ports (name, protocol, port), type
// (headless against ClusterSetIP), session affinity and its config,
// internal traffic policy (unset is Cluster), traffic distribution, the
// set of IP families of two headless exports (unknown, from an older
// agent, conflicts with nothing), exported labels and exported
// annotations. It returns the MCS
// reasons, in Reasons order, and a message for each.
func Conflicts(oldest, younger *fedv1.ExportedService) (reasons, msgs []string) {
	if why := PortsClash(oldest.GetPorts(), younger.GetPorts()); why != "" {
		reasons = append(reasons, string(mcsv1b1.ServiceExportReasonPortConflict))
		msgs = append(msgs, why)
	} else if !SamePorts(oldest.GetPorts(), younger.GetPorts()) {
		// Compatible but not the same ports: the import exposes their
		// union, and the KEP (and its conformance suite) still raises the
		// conflict on every constituent export.
		reasons = append(reasons, string(mcsv1b1.ServiceExportReasonPortConflict))
		msgs = append(msgs, "the ports differ from the oldest export's; the import exposes their union")
	}
	if oldest.GetHeadless() != younger.GetHeadless() {
		reasons = append(reasons, string(mcsv1b1.ServiceExportReasonTypeConflict))
		msgs = append(msgs, fmt.Sprintf("type is %s here and %s in the oldest export", Type(younger), Type(oldest)))
	}
	if a, b := SessionAffinity(oldest), SessionAffinity(younger); a != b {
		reasons = append(reasons, string(mcsv1b1.ServiceExportReasonSessionAffinityConflict))
		msgs = append(msgs, fmt.Sprintf("session affinity is %q here and %q in the oldest export", b, a))
	} else if x, y := oldest.GetSessionAffinityTimeoutSeconds(), younger.GetSessionAffinityTimeoutSeconds(); x != y {
		reasons = append(reasons, string(mcsv1b1.ServiceExportReasonSessionAffinityConfigConflict))
		msgs = append(msgs, fmt.Sprintf("session affinity timeout is %ds here and %ds in the oldest export", y, x))
	}
	if a, b := InternalTrafficPolicy(oldest), InternalTrafficPolicy(younger); a != b {
		reasons = append(reasons, string(mcsv1b1.ServiceExportReasonInternalTrafficPolicyConflict))
		msgs = append(msgs, fmt.Sprintf("internal traffic policy is %s here and %s in the oldest export", b, a))
	}
	if a, b := oldest.GetTrafficDistribution(), younger.GetTrafficDistribution(); a != b {
		reasons = append(reasons, string(mcsv1b1.ServiceExportReasonTrafficDistributionConflict))
		msgs = append(msgs, fmt.Sprintf("traffic distribution is %q here and %q in the oldest export", b, a))
	}
	// Only headless imports reach pods at their own addresses, where a
	// client of one family would miss the other's pods; ClusterSetIP
	// traffic goes through the gateways, which reach every pod.
	if a, b := oldest.GetIpFamilies(), younger.GetIpFamilies(); oldest.GetHeadless() && younger.GetHeadless() && len(a) > 0 && len(b) > 0 && !sameSet(a, b) {
		reasons = append(reasons, string(mcsv1b1.ServiceExportReasonIPFamilyConflict))
		msgs = append(msgs, fmt.Sprintf("IP families are %v here and %v in the oldest export", b, a))
	}
	if !maps.Equal(oldest.GetExportedLabels(), younger.GetExportedLabels()) {
		reasons = append(reasons, string(mcsv1b1.ServiceExportReasonLabelsConflict))
		msgs = append(msgs, "exported labels differ from the oldest export's")
	}
	if !maps.Equal(oldest.GetExportedAnnotations(), younger.GetExportedAnnotations()) {
		reasons = append(reasons, string(mcsv1b1.ServiceExportReasonAnnotationsConflict))
		msgs = append(msgs, "exported annotations differ from the oldest export's")
	}
	return reasons, msgs
}

// InternalTrafficPolicy is an export's internal traffic policy, unset
// read as Kubernetes' default, Cluster.
func InternalTrafficPolicy(s *fedv1.ExportedService) string {
	if p := s.GetInternalTrafficPolicy(); p != "" {
		return p
	}
	return string(corev1.ServiceInternalTrafficPolicyCluster)
}

// sameSet reports whether a and b hold the same strings (IP families:
// at most two, so quadratic is fine).
func sameSet(a, b []string) bool {
	for _, x := range a {
		if !slices.Contains(b, x) {
			return false
		}
	}
	for _, x := range b {
		if !slices.Contains(a, x) {
			return false
		}
	}
	return true
}

func Type(s *fedv1.ExportedService) mcsv1b1.ServiceImportType {
	if s.GetHeadless() {
		return mcsv1b1.Headless
	}
	return mcsv1b1.ClusterSetIP
}

// SamePorts reports whether a and b hold the same ports (name, port,
// protocol), in any order.
func SamePorts(a, b []*fedv1.ServicePort) bool {
	if len(a) != len(b) {
		return false
	}
	for _, q := range b {
		if !HasPort(a, q) {
			return false
		}
	}
	return true
}

func HasPort(ps []*fedv1.ServicePort, q *fedv1.ServicePort) bool {
	for _, p := range ps {
		if p.GetName() == q.GetName() && p.GetPort() == q.GetPort() && p.GetProtocol() == q.GetProtocol() {
			return true
		}
	}
	return false
}

// PortsClash describes the first conflict between two port lists: the
// same name with another port number or protocol, or the same port number
// and transport (a port is keyed by both, as in Kubernetes: 53/TCP and
// 53/UDP are two ports) with another name or protocol. "" when they agree.
func PortsClash(a, b []*fedv1.ServicePort) string {
	for _, p := range a {
		for _, q := range b {
			switch {
			case p.GetName() == q.GetName() && (p.GetPort() != q.GetPort() || p.GetProtocol() != q.GetProtocol()):
				return fmt.Sprintf("port %q is %d/%s here and %d/%s in the oldest export", p.GetName(), q.GetPort(), q.GetProtocol(), p.GetPort(), p.GetProtocol())
			case p.GetPort() == q.GetPort() && fedv1.Transport(p.GetProtocol()) == fedv1.Transport(q.GetProtocol()) &&
				(p.GetName() != q.GetName() || p.GetProtocol() != q.GetProtocol()):
				return fmt.Sprintf("port %d/%s is %q/%s here and %q/%s in the oldest export", p.GetPort(), fedv1.Transport(p.GetProtocol()),
					q.GetName(), q.GetProtocol(), p.GetName(), p.GetProtocol())
			}
		}
	}
	return ""
}

// Conflict is one export's conflict with the others of its service.
type Conflict struct {
	// Reason is the MCS reasons, comma-separated, in Reasons order; ""
	// when the export conflicts with nothing.
	Reason  string
	Message string
	// PortClash: the export is younger and its ports clash with the
	// oldest's (not merely differ), so it takes no traffic.
	PortClash bool
}

// Sort orders the exports of one service as the rule reads them: by create
// revision, then cluster name; the first is the oldest, which wins.
func Sort(recs []*fedv1.ExportRecord) {
	slices.SortFunc(recs, func(a, b *fedv1.ExportRecord) int {
		if a.GetCreateRevision() != b.GetCreateRevision() {
			if a.GetCreateRevision() < b.GetCreateRevision() {
				return -1
			}
			return 1
		}
		return strings.Compare(a.GetCluster(), b.GetCluster())
	})
}

// Resolve returns the conflict of each export of one service, in the order
// of recs, which Sort has ordered: each younger export against the oldest,
// and the oldest with the union of the reasons of those that conflict
// with it (the KEP raises the condition on every constituent export).
func Resolve(recs []*fedv1.ExportRecord) []Conflict {
	out := make([]Conflict, len(recs))
	if len(recs) == 0 {
		return out
	}
	oldest := recs[0]
	lost := map[string]bool{}
	var losers []string
	for i, r := range recs[1:] {
		c := &out[i+1]
		c.PortClash = PortsClash(oldest.GetService().GetPorts(), r.GetService().GetPorts()) != ""
		reasons, msgs := Conflicts(oldest.GetService(), r.GetService())
		if len(reasons) == 0 {
			continue
		}
		c.Reason = strings.Join(reasons, ",")
		c.Message = fmt.Sprintf("%s; the oldest export, from cluster %s, wins", strings.Join(msgs, "; "), oldest.GetCluster())
		for _, why := range reasons {
			lost[why] = true
		}
		losers = append(losers, r.GetCluster())
	}
	if len(losers) > 0 {
		var reasons []string
		for _, why := range Reasons {
			if lost[string(why)] {
				reasons = append(reasons, string(why))
			}
		}
		out[0].Reason = strings.Join(reasons, ",")
		out[0].Message = fmt.Sprintf("the exports of cluster %s conflict with this one; this export, the oldest, wins", strings.Join(losers, ", "))
	}
	return out
}
