package agent

import (
	"github.com/meshfed/meshfed/federation"
	fedv1 "github.com/meshfed/meshfed/federation/v1"
	"github.com/meshfed/meshfed/internal/mcsconflict"
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
	// comma-separated, in mcsconflict.Reasons order.
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
		mcsconflict.Sort(recs)
		oldest := recs[0]
		os := oldest.GetService()
		p := &importPlan{Key: key, Namespace: os.GetNamespace(), Name: os.GetName(), Headless: os.GetHeadless(),
			SessionAffinity: sessionAffinity(os), SessionAffinityTimeoutSeconds: os.GetSessionAffinityTimeoutSeconds(),
			IPFamilies: os.GetIpFamilies(), InternalTrafficPolicy: os.GetInternalTrafficPolicy(), TrafficDistribution: os.GetTrafficDistribution(),
			Labels: os.GetExportedLabels(), Annotations: os.GetExportedAnnotations()}
		p.Ports = append(p.Ports, os.GetPorts()...)
		resolved := mcsconflict.Resolve(recs)
		for i, r := range recs {
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
			rc := resolved[i]
			c.ConflictReason, c.Conflict, c.portClash = rc.Reason, rc.Message, rc.PortClash
			if rc.Reason != "" && r.GetCluster() == self {
				conflicts[key] = importConflict{Reason: rc.Reason, Message: rc.Message}
			}
			if r != oldest {
				for _, port := range r.GetService().GetPorts() {
					if len(p.Ports) < maxPortsPerService && portsConflict(p.Ports, []*fedv1.ServicePort{port}) == "" && !hasPort(p.Ports, port) {
						p.Ports = append(p.Ports, port)
					}
				}
			}
			p.Clusters = append(p.Clusters, c)
		}
		plans[key] = p
	}
	return plans, conflicts
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

// The conflict rules live in internal/mcsconflict, which the hub's web UI
// applies too.
var (
	sessionAffinity = mcsconflict.SessionAffinity
	hasPort         = mcsconflict.HasPort
	portsConflict   = mcsconflict.PortsClash
)
