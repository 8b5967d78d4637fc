package agent

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	mcsv1b1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	"github.com/meshfed/meshfed/federation"
	fedv1 "github.com/meshfed/meshfed/federation/v1"
)

// importPlan is one global service (MCS namespace sameness: namespace/name
// exported by any cluster) as this cluster imports it.
type importPlan struct {
	Key       string `json:"key"`
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	// Headless is the oldest export's type: the import is Headless, else
	// ClusterSetIP.
	Headless bool `json:"headless,omitempty"`
	// SessionAffinity ("" or "ClientIP") and its timeout are the oldest
	// export's.
	SessionAffinity               string `json:"sessionAffinity,omitempty"`
	SessionAffinityTimeoutSeconds int32  `json:"sessionAffinityTimeoutSeconds,omitempty"`
	// IPFamilies ("IPv4", "IPv6", primary first; empty when unknown),
	// InternalTrafficPolicy and TrafficDistribution ("" when unset) are
	// the oldest export's Service's.
	IPFamilies            []string `json:"ipFamilies,omitempty"`
	InternalTrafficPolicy string   `json:"internalTrafficPolicy,omitempty"`
	TrafficDistribution   string   `json:"trafficDistribution,omitempty"`
	// Labels and Annotations are the oldest ServiceExport's
	// exportedLabels and exportedAnnotations, set on the ServiceImport.
	Labels      map[string]string `json:"labels,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
	// Ports are the oldest export's ports, plus the ports of younger
	// exports that do not conflict with them, in create order.
	Ports    []*fedv1.ServicePort `json:"ports"`
	Clusters []importCluster      `json:"clusters"`
	// Egress is the egress port of each port, by port name, once assigned
	// (status only).
	Egress map[string]int `json:"egressPorts,omitempty"`
}

// importCluster is one exporting cluster of an import, oldest first.
type importCluster struct {
	Cluster        string `json:"cluster"`
	Region         string `json:"region,omitempty"`
	Zone           string `json:"zone,omitempty"`
	Ready          uint32 `json:"ready"`
	Serving        uint32 `json:"serving"`
	Terminating    uint32 `json:"terminating"`
	CreateRevision uint64 `json:"createRevision"`
	// Conflict is set when this cluster's export conflicts with the
	// oldest one, which wins, and on the oldest when any younger export
	// conflicts with it (the KEP raises the condition on every
	// constituent export); ConflictReason holds the MCS reasons,
	// comma-separated, in conflictReasons order.
	Conflict       string `json:"conflict,omitempty"`
	ConflictReason string `json:"conflictReason,omitempty"`
	// Endpoints are the cluster's backend pods of a headless import (its
	// export's headless endpoints when it is headless too).
	Endpoints []*fedv1.HeadlessEndpoint `json:"endpoints,omitempty"`

	oldest bool // the winning export
	// portClash: this younger export's ports clash with the oldest's (a
	// name or a port and transport used differently), not merely differ.
	portClash bool
}

// portConflict reports whether the cluster's ports clash with the oldest
// export's: its endpoints may not serve the import's ports, so it takes no
// traffic. Ports that merely differ (the import exposes the union) and
// other conflicts only mean the oldest export's setting applies to
// everyone. The oldest export itself always serves.
func (c importCluster) portConflict() bool {
	return !c.oldest && c.portClash
}

// conflictReasons are the MCS Conflict reasons the agent raises, in the
// order they are listed in a condition's reason.
var conflictReasons = []mcsv1b1.ServiceExportConditionReason{
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

// importConflict is why one of this cluster's exports conflicts with an
// older export of the same service: the MCS reasons, comma-separated, and
// a message naming the winner.
type importConflict struct {
	Reason  string
	Message string
}

// planImports computes every import from a view, and the conflicts of each
// of self's exports that loses to an older one. Pure.
func planImports(self string, v *view) (map[string]*importPlan, map[string]importConflict) {
	byService := map[string][]*fedv1.ExportRecord{}
	for k, e := range v.exports {
		byService[k.service] = append(byService[k.service], e)
	}
	plans := make(map[string]*importPlan, len(byService))
	conflicts := map[string]importConflict{}
	for key, recs := range byService {
		slices.SortFunc(recs, func(a, b *fedv1.ExportRecord) int {
			if a.GetCreateRevision() != b.GetCreateRevision() {
				if a.GetCreateRevision() < b.GetCreateRevision() {
					return -1
				}
				return 1
			}
			return cmpString(a.GetCluster(), b.GetCluster())
		})
		oldest := recs[0]
		os := oldest.GetService()
		p := &importPlan{Key: key, Namespace: os.GetNamespace(), Name: os.GetName(), Headless: os.GetHeadless(),
			SessionAffinity: sessionAffinity(os), SessionAffinityTimeoutSeconds: os.GetSessionAffinityTimeoutSeconds(),
			IPFamilies: os.GetIpFamilies(), InternalTrafficPolicy: os.GetInternalTrafficPolicy(), TrafficDistribution: os.GetTrafficDistribution(),
			Labels: os.GetExportedLabels(), Annotations: os.GetExportedAnnotations()}
		p.Ports = append(p.Ports, os.GetPorts()...)
		// What the younger exports conflict with the oldest on, and who.
		lost := map[string]bool{}
		var losers []string
		for _, r := range recs {
			c := importCluster{Cluster: r.GetCluster(), CreateRevision: r.GetCreateRevision(), oldest: r == oldest}
			if cr := v.clusters[r.GetCluster()]; cr != nil {
				c.Region, c.Zone = cr.GetLocality().GetRegion(), cr.GetLocality().GetZone()
			}
			for _, g := range r.GetService().GetEndpoints() {
				c.Ready += g.GetReady()
				c.Serving += g.GetServing()
				c.Terminating += g.GetTerminating()
			}
			if p.Headless && r.GetService().GetHeadless() {
				c.Endpoints = r.GetService().GetHeadlessEndpoints()
			}
			if r != oldest {
				c.portClash = portsConflict(os.GetPorts(), r.GetService().GetPorts()) != ""
				reasons, msgs := exportConflicts(os, r.GetService())
				if len(reasons) > 0 {
					c.ConflictReason = strings.Join(reasons, ",")
					c.Conflict = fmt.Sprintf("%s; the oldest export, from cluster %s, wins", strings.Join(msgs, "; "), oldest.GetCluster())
					if r.GetCluster() == self {
						conflicts[key] = importConflict{Reason: c.ConflictReason, Message: c.Conflict}
					}
					for _, why := range reasons {
						lost[why] = true
					}
					losers = append(losers, r.GetCluster())
				}
				for _, port := range r.GetService().GetPorts() {
					if len(p.Ports) < maxPortsPerService && portsConflict(p.Ports, []*fedv1.ServicePort{port}) == "" && !hasPort(p.Ports, port) {
						p.Ports = append(p.Ports, port)
					}
				}
			}
			p.Clusters = append(p.Clusters, c)
		}
		if len(losers) > 0 {
			var reasons []string
			for _, why := range conflictReasons {
				if lost[string(why)] {
					reasons = append(reasons, string(why))
				}
			}
			c := &p.Clusters[0]
			c.ConflictReason = strings.Join(reasons, ",")
			c.Conflict = fmt.Sprintf("the exports of cluster %s conflict with this one; this export, the oldest, wins", strings.Join(losers, ", "))
			if c.Cluster == self {
				conflicts[key] = importConflict{Reason: c.ConflictReason, Message: c.Conflict}
			}
		}
		plans[key] = p
	}
	return plans, conflicts
}

// sessionAffinity is an export's session affinity, "" for None.
func sessionAffinity(s *fedv1.ExportedService) string {
	if s.GetSessionAffinity() == string(corev1.ServiceAffinityNone) {
		return ""
	}
	return s.GetSessionAffinity()
}

// exportConflicts lists how younger conflicts with oldest, as KEP-1645
// and v1beta1 list conflicts: ports (name, protocol, port), type
// (headless against ClusterSetIP), session affinity and its config,
// internal traffic policy (unset is Cluster), traffic distribution, the
// set of IP families of two headless exports (unknown, from an older
// agent, conflicts with nothing), exported labels and exported
// annotations. It returns the MCS
// reasons, in conflictReasons order, and a message for each.
func exportConflicts(oldest, younger *fedv1.ExportedService) (reasons, msgs []string) {
	if why := portsConflict(oldest.GetPorts(), younger.GetPorts()); why != "" {
		reasons = append(reasons, string(mcsv1b1.ServiceExportReasonPortConflict))
		msgs = append(msgs, why)
	} else if !samePorts(oldest.GetPorts(), younger.GetPorts()) {
		// Compatible but not the same ports: the import exposes their
		// union, and the KEP (and its conformance suite) still raises the
		// conflict on every constituent export.
		reasons = append(reasons, string(mcsv1b1.ServiceExportReasonPortConflict))
		msgs = append(msgs, "the ports differ from the oldest export's; the import exposes their union")
	}
	if oldest.GetHeadless() != younger.GetHeadless() {
		reasons = append(reasons, string(mcsv1b1.ServiceExportReasonTypeConflict))
		msgs = append(msgs, fmt.Sprintf("type is %s here and %s in the oldest export", mcsType(younger), mcsType(oldest)))
	}
	if a, b := sessionAffinity(oldest), sessionAffinity(younger); a != b {
		reasons = append(reasons, string(mcsv1b1.ServiceExportReasonSessionAffinityConflict))
		msgs = append(msgs, fmt.Sprintf("session affinity is %q here and %q in the oldest export", b, a))
	} else if x, y := oldest.GetSessionAffinityTimeoutSeconds(), younger.GetSessionAffinityTimeoutSeconds(); x != y {
		reasons = append(reasons, string(mcsv1b1.ServiceExportReasonSessionAffinityConfigConflict))
		msgs = append(msgs, fmt.Sprintf("session affinity timeout is %ds here and %ds in the oldest export", y, x))
	}
	if a, b := internalTrafficPolicy(oldest), internalTrafficPolicy(younger); a != b {
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

// internalTrafficPolicy is an export's internal traffic policy, unset
// read as Kubernetes' default, Cluster.
func internalTrafficPolicy(s *fedv1.ExportedService) string {
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

func mcsType(s *fedv1.ExportedService) mcsv1b1.ServiceImportType {
	if s.GetHeadless() {
		return mcsv1b1.Headless
	}
	return mcsv1b1.ClusterSetIP
}

// samePorts reports whether a and b hold the same ports (name, port,
// protocol), in any order.
func samePorts(a, b []*fedv1.ServicePort) bool {
	if len(a) != len(b) {
		return false
	}
	for _, q := range b {
		if !hasPort(a, q) {
			return false
		}
	}
	return true
}

func hasPort(ps []*fedv1.ServicePort, q *fedv1.ServicePort) bool {
	for _, p := range ps {
		if p.GetName() == q.GetName() && p.GetPort() == q.GetPort() && p.GetProtocol() == q.GetProtocol() {
			return true
		}
	}
	return false
}

// portsConflict describes the first conflict between two port lists: the
// same name with another port number or protocol, or the same port number
// and transport (a port is keyed by both, as in Kubernetes: 53/TCP and
// 53/UDP are two ports) with another name or protocol. "" when they agree.
func portsConflict(a, b []*fedv1.ServicePort) string {
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

// service is the plan's typed key. Plans are built from records the hub
// validated, so a key that does not parse is a bug upstream; it yields the
// zero ServiceKey, which owns no egress port.
func (p *importPlan) service() federation.ServiceKey {
	k, err := federation.NewServiceKey(p.Namespace, p.Name)
	if err != nil {
		return federation.ServiceKey{}
	}
	return k
}
