package agent

import (
	"fmt"
	"slices"

	"github.com/meshfed/meshfed/federation"
	fedv1 "github.com/meshfed/meshfed/federation/v1"
)

// importPlan is one global service (MCS namespace sameness: namespace/name
// exported by any cluster) as this cluster imports it.
type importPlan struct {
	Key       string `json:"key"`
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
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
	// oldest one, which wins.
	Conflict string `json:"conflict,omitempty"`
}

// planImports computes every import from a view, and the conflict message
// of each of self's exports that loses to an older one. Pure.
func planImports(self string, v *view) (map[string]*importPlan, map[string]string) {
	byService := map[string][]*fedv1.ExportRecord{}
	for k, e := range v.exports {
		byService[k.service] = append(byService[k.service], e)
	}
	plans := make(map[string]*importPlan, len(byService))
	conflicts := map[string]string{}
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
		p := &importPlan{Key: key, Namespace: oldest.GetService().GetNamespace(), Name: oldest.GetService().GetName()}
		p.Ports = append(p.Ports, oldest.GetService().GetPorts()...)
		for _, r := range recs {
			c := importCluster{Cluster: r.GetCluster(), CreateRevision: r.GetCreateRevision()}
			if cr := v.clusters[r.GetCluster()]; cr != nil {
				c.Region, c.Zone = cr.GetLocality().GetRegion(), cr.GetLocality().GetZone()
			}
			for _, g := range r.GetService().GetEndpoints() {
				c.Ready += g.GetReady()
				c.Serving += g.GetServing()
				c.Terminating += g.GetTerminating()
			}
			if r != oldest {
				if why := portsConflict(oldest.GetService().GetPorts(), r.GetService().GetPorts()); why != "" {
					c.Conflict = fmt.Sprintf("%s; the oldest export, from cluster %s, wins", why, oldest.GetCluster())
					if r.GetCluster() == self {
						conflicts[key] = c.Conflict
					}
				}
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
// with another name or protocol. "" when they agree.
func portsConflict(a, b []*fedv1.ServicePort) string {
	for _, p := range a {
		for _, q := range b {
			switch {
			case p.GetName() == q.GetName() && (p.GetPort() != q.GetPort() || p.GetProtocol() != q.GetProtocol()):
				return fmt.Sprintf("port %q is %d/%s here and %d/%s in the oldest export", p.GetName(), q.GetPort(), q.GetProtocol(), p.GetPort(), p.GetProtocol())
			case p.GetPort() == q.GetPort() && (p.GetName() != q.GetName() || p.GetProtocol() != q.GetProtocol()):
				return fmt.Sprintf("port %d is %q/%s here and %q/%s in the oldest export", p.GetPort(), q.GetName(), q.GetProtocol(), p.GetName(), p.GetProtocol())
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
