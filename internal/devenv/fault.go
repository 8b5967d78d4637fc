package devenv

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/meshfed/meshfed/federation"
)

// Fault is what `meshfed dev fail` breaks in a cluster.
type Fault string

// Faults.
const (
	// FaultGateway kills the cluster's gateway (SIGKILL).
	FaultGateway Fault = "gateway"
	// FaultWorkloads kills the cluster's sample workloads (SIGKILL); its
	// catalog still lists them as ready, as Kubernetes does until a
	// readiness probe fails.
	FaultWorkloads Fault = "workloads"
	// FaultAgent kills the cluster's agent (SIGKILL); its gateway keeps
	// the last configuration it was sent.
	FaultAgent Fault = "agent"
	// FaultHubLink cuts the cluster off the hub: its agent reaches the hub
	// servers through relays meshfed dev owns, and those blackhole every
	// connection (open ones stall, new ones hang) until healed. The
	// gateway never talks to the hub: its configuration comes from the
	// agent, which keeps serving its cached view.
	FaultHubLink Fault = "hub-link"
)

// Faults are every Fault, in the order they are documented.
var Faults = []Fault{FaultGateway, FaultWorkloads, FaultAgent, FaultHubLink}

// ParseFault returns s as a Fault, or a *federation.FieldError on field
// "what".
func ParseFault(s string) (Fault, error) {
	if slices.Contains(Faults, Fault(s)) {
		return Fault(s), nil
	}
	names := make([]string, len(Faults))
	for i, f := range Faults {
		names[i] = string(f)
	}
	return "", &federation.FieldError{Field: "what", Value: s, Reason: "must be one of " + strings.Join(names, ", ")}
}

// Failure is one fault in force in one cluster.
type Failure struct {
	Cluster string `json:"cluster"`
	What    Fault  `json:"what"`
}

func (f Failure) String() string { return f.Cluster + " " + string(f.What) }

// clusterRun returns the cluster named name, or a *federation.FieldError
// on field "cluster".
func (e *Env) clusterRun(name federation.ClusterName) (*clusterRun, error) {
	var names []string
	for _, cr := range e.clusters {
		if cr.spec.name == name {
			return cr, nil
		}
		names = append(names, cr.spec.name.String())
	}
	return nil, &federation.FieldError{Field: "cluster", Value: name.String(), Reason: "must be one of " + strings.Join(names, ", ")}
}

// children returns the processes a fault stops (none for hub-link).
func (cr *clusterRun) faultChildren(what Fault) []*child {
	switch what {
	case FaultGateway:
		return []*child{cr.gateway}
	case FaultAgent:
		return []*child{cr.agent}
	case FaultWorkloads:
		cs := make([]*child, len(cr.workloads))
		for i, w := range cr.workloads {
			cs[i] = w.child
		}
		return cs
	}
	return nil
}

// Fail puts what into force in cluster and returns once it is: killed
// processes have exited and will not be restarted, or the hub link is cut.
// It reports whether the fault was new. It lasts until Heal, or until Run
// returns.
func (e *Env) Fail(ctx context.Context, cluster federation.ClusterName, what Fault) (bool, error) {
	if _, err := ParseFault(string(what)); err != nil {
		return false, err
	}
	cr, err := e.clusterRun(cluster)
	if err != nil {
		return false, err
	}
	f := Failure{Cluster: cluster.String(), What: what}
	e.mu.Lock()
	added := !e.failures[f]
	e.failures[f] = true
	e.mu.Unlock()
	if what == FaultHubLink {
		cr.hubLink.Partition()
	}
	for _, c := range cr.faultChildren(what) {
		c.setHeld(true)
	}
	for _, c := range cr.faultChildren(what) {
		if err := c.waitFor(ctx, func(pid int, _, parked bool) bool { return parked && pid == 0 }); err != nil {
			return added, fmt.Errorf("devenv: %s did not stop: %w", c.name, err)
		}
	}
	if added {
		e.log.Warn("failed on purpose", "cluster", cluster, "what", what)
		e.console.Eventf("meshfed dev: failed %s (meshfed dev heal --cluster %s brings it back)", f, cluster)
	}
	return added, e.rewriteFile()
}

// Heal ends the faults in force that match: in cluster (every cluster if
// zero), of kind what (every kind if ""). It returns the faults it ended,
// once their processes are started again (not yet ready) and hub links
// carry traffic again.
func (e *Env) Heal(ctx context.Context, cluster federation.ClusterName, what Fault) ([]Failure, error) {
	if what != "" {
		if _, err := ParseFault(string(what)); err != nil {
			return nil, err
		}
	}
	if !cluster.IsZero() {
		if _, err := e.clusterRun(cluster); err != nil {
			return nil, err
		}
	}
	var healed []Failure
	for _, cr := range e.clusters {
		if !cluster.IsZero() && cr.spec.name != cluster {
			continue
		}
		for _, w := range Faults {
			if what != "" && w != what {
				continue
			}
			f := Failure{Cluster: cr.spec.name.String(), What: w}
			e.mu.Lock()
			was := e.failures[f]
			delete(e.failures, f)
			e.mu.Unlock()
			if !was {
				continue
			}
			if w == FaultHubLink {
				cr.hubLink.Heal()
			}
			for _, c := range cr.faultChildren(w) {
				c.setHeld(false)
			}
			for _, c := range cr.faultChildren(w) {
				if err := c.waitFor(ctx, func(pid int, held, _ bool) bool { return held || pid != 0 }); err != nil {
					return healed, fmt.Errorf("devenv: %s did not start again: %w", c.name, err)
				}
			}
			healed = append(healed, f)
			e.log.Info("healed", "cluster", cr.spec.name, "what", w)
			e.console.Eventf("meshfed dev: healed %s", f)
		}
	}
	return healed, e.rewriteFile()
}

// Failures returns the faults in force, sorted.
func (e *Env) Failures() []Failure {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.failuresLocked()
}

func (e *Env) failuresLocked() []Failure {
	fs := make([]Failure, 0, len(e.failures))
	for f := range e.failures {
		fs = append(fs, f)
	}
	slices.SortFunc(fs, func(a, b Failure) int { return strings.Compare(a.String(), b.String()) })
	return fs
}
