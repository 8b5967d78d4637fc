package agent

import (
	"context"
	"slices"
	"strings"

	fedv1 "github.com/meshfed/meshfed/federation/v1"
	gatewayv1 "github.com/meshfed/meshfed/gateway/v1"
)

// catalog is one complete state of a catalog source, keyed
// "namespace/name": the exports the agent publishes, and the endpoints of
// each exported service, which only this cluster's gateways see.
type catalog struct {
	exports map[string]*fedv1.ExportedService
	local   map[string]*gatewayv1.LocalService
	// workloads, by address, when the source lists them (the file
	// source); nil when another watcher provides them (kubernetes).
	workloads map[string]*gatewayv1.Workload
}

func newCatalog() catalog {
	return catalog{exports: map[string]*fedv1.ExportedService{}, local: map[string]*gatewayv1.LocalService{}}
}

// clone copies the maps; the messages are shared (never modified).
func (c catalog) clone() catalog {
	out := catalog{exports: make(map[string]*fedv1.ExportedService, len(c.exports)), local: make(map[string]*gatewayv1.LocalService, len(c.local))}
	for k, v := range c.exports {
		out.exports[k] = v
	}
	for k, v := range c.local {
		out.local[k] = v
	}
	out.workloads = c.workloads // replaced whole, never modified
	return out
}

// MaxLocalEndpoints bounds the endpoints of one local service sent to the
// gateways; beyond it, the endpoints sorted by address are cut.
const MaxLocalEndpoints = 4096

// sortEndpoints sorts by address and cuts to MaxLocalEndpoints, reporting
// whether it cut.
func sortEndpoints(eps []*gatewayv1.Endpoint) ([]*gatewayv1.Endpoint, bool) {
	slices.SortFunc(eps, func(a, b *gatewayv1.Endpoint) int { return strings.Compare(a.GetAddress(), b.GetAddress()) })
	if len(eps) > MaxLocalEndpoints {
		return eps[:MaxLocalEndpoints], true
	}
	return eps, false
}

// catalogSource produces this cluster's exports. The agent runs exactly
// one.
type catalogSource interface {
	// Run watches the catalog until ctx is done. It calls update from a
	// single goroutine with the complete catalog: first once its initial
	// state is loaded (never before: an incomplete first set would
	// withdraw exports), then after every change. update takes ownership
	// of the maps and their messages and does not block for long.
	Run(ctx context.Context, update func(catalog)) error
}

// conflictReporter is implemented by sources that can show MCS conflicts
// on their export objects. The agent calls it from its sync goroutine with
// the complete set of this cluster's losing exports (key → MCS reasons and
// message); the map is handed over.
type conflictReporter interface {
	setConflicts(map[string]importConflict)
}

// syncReporter is implemented by sources that show whether each export
// reached the hub. The agent calls it with whether it is connected and, for
// each current export (key), whether the hub holds it as desired; the map
// is handed over.
type syncReporter interface {
	setSynced(connected bool, published map[string]bool)
}

// sourceStatus is implemented by sources that have per-export conditions
// or a last error to show in /state.
type sourceStatus interface {
	status() sourceState
}

// sourceState is what a source shows in /state.
type sourceState struct {
	Kind      string            `json:"kind"`
	LastError string            `json:"lastError,omitempty"`
	Invalid   map[string]string `json:"invalid,omitempty"` // key → reason
}

// Limits on exports: the contract's (fedv1.ValidateExportedService).
const (
	maxPortsPerService = fedv1.MaxPortsPerService
	maxEndpointGroups  = fedv1.MaxEndpointGroups
	maxLabels          = fedv1.MaxLabels
	maxLabelKey        = fedv1.MaxLabelKeyLength
	maxLabelValue      = fedv1.MaxLabelValueLength
)

// validateExport checks svc with the contract's one export validation,
// the hub's too, so that an export shown Valid is one the hub accepts.
func validateExport(field string, svc *fedv1.ExportedService) error {
	return fedv1.ValidateExportedService(field, svc)
}

// endpointHealth is one endpoint's zone, labels and conditions, the input
// of groupEndpoints.
type endpointHealth struct {
	zone                      string
	labels                    map[string]string
	ready, serving, terminate bool
}

// groupEndpoints aggregates endpoints into groups by zone and label set,
// sorted, at most maxEndpointGroups (the rest are folded into the last).
func groupEndpoints(eps []endpointHealth) []*fedv1.EndpointGroup {
	byKey := map[string]*fedv1.EndpointGroup{}
	for _, e := range eps {
		k := e.zone + "\x00" + labelString(e.labels)
		g, ok := byKey[k]
		if !ok {
			var labels map[string]string
			if len(e.labels) > 0 {
				labels = make(map[string]string, len(e.labels))
				for lk, lv := range e.labels {
					labels[lk] = lv
				}
			}
			g = &fedv1.EndpointGroup{Zone: e.zone, Labels: labels}
			byKey[k] = g
		}
		if e.ready {
			g.Ready++
		}
		if e.serving {
			g.Serving++
		}
		if e.terminate {
			g.Terminating++
		}
	}
	keys := make([]string, 0, len(byKey))
	for k := range byKey {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	out := make([]*fedv1.EndpointGroup, 0, len(keys))
	for _, k := range keys {
		if len(out) == maxEndpointGroups {
			last := out[len(out)-1]
			g := byKey[k]
			last.Ready += g.Ready
			last.Serving += g.Serving
			last.Terminating += g.Terminating
			continue
		}
		out = append(out, byKey[k])
	}
	return out
}

func labelString(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b strings.Builder
	for _, k := range keys {
		b.WriteString(k)
		b.WriteByte('=')
		b.WriteString(m[k])
		b.WriteByte(',')
	}
	return b.String()
}
