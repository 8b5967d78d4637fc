package hub

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/meshfed/meshfed/federation"
	"github.com/meshfed/meshfed/federation/policy"
	fedv1 "github.com/meshfed/meshfed/federation/v1"
	"github.com/meshfed/meshfed/hub/fsm"
	"github.com/meshfed/meshfed/hub/internal/hubpb"
	"github.com/meshfed/meshfed/hub/state"
)

// Gateway policy statuses: a member's leading agent sends, on its Sync
// stream, the policies each of its gateway replicas holds (GatewayPolicies)
// when they change and every few minutes unchanged; the serving hub server
// records them with ReportGatewayPolicies (type 20, bookkeeping: no
// revision, no delta), and Admin PolicyStatus answers from them.

// checkGatewayPolicies validates a GatewayPolicies message: the replicas
// as the FSM checks them (fsm.CheckGatewayReplicas), each replica's
// statuses by package policy's rule (policy.CheckStatuses: at most
// fsm.MaxPolicies), and the whole at most policy.MaxGatewayStatusBytes.
func checkGatewayPolicies(g *fedv1.GatewayPolicies) error {
	if ferr := fsm.CheckGatewayReplicas(g.GetReplicas()); ferr != nil {
		return status.Error(ferr.Code, "gateway_policies."+ferr.Msg)
	}
	for i, r := range g.GetReplicas() {
		if err := policy.CheckStatuses(r.GetPolicies(), fsm.MaxPolicies); err != nil {
			var fe *policy.FieldError
			if errors.As(err, &fe) {
				return invalidArg(fmt.Sprintf("gateway_policies.replicas[%d].policies%s", i, fe.Path), "%s", fe.Msg)
			}
			return invalidArg(fmt.Sprintf("gateway_policies.replicas[%d].policies", i), "%v", err)
		}
	}
	if n := proto.Size(g); n > policy.MaxGatewayStatusBytes {
		return invalidArg("gateway_policies", "%d bytes, at most %d", n, policy.MaxGatewayStatusBytes)
	}
	return nil
}

// gatewayPolicyRecorder records what one stream's GatewayPolicies say, off
// the stream's goroutine: add keeps the latest message, and run writes it,
// one ReportGatewayPolicies command at a time, retrying a failed write
// while the stream lasts (a newer message replaces the one retried).
type gatewayPolicyRecorder struct {
	s       *Server
	cluster string
	kick    chan struct{}

	mu      sync.Mutex
	pending *fedv1.GatewayPolicies
}

func newGatewayPolicyRecorder(s *Server, cluster string) *gatewayPolicyRecorder {
	return &gatewayPolicyRecorder{s: s, cluster: cluster, kick: make(chan struct{}, 1)}
}

// add is called by the stream's goroutine with a validated message.
func (r *gatewayPolicyRecorder) add(g *fedv1.GatewayPolicies) {
	r.mu.Lock()
	r.pending = g
	r.mu.Unlock()
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// putBack makes g pending again unless a newer message arrived.
func (r *gatewayPolicyRecorder) putBack(g *fedv1.GatewayPolicies) {
	r.mu.Lock()
	if r.pending == nil {
		r.pending = g
	}
	r.mu.Unlock()
}

func (r *gatewayPolicyRecorder) take() *fedv1.GatewayPolicies {
	r.mu.Lock()
	defer r.mu.Unlock()
	g := r.pending
	r.pending = nil
	return g
}

func (r *gatewayPolicyRecorder) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.kick:
		}
		g := r.take()
		if g == nil {
			continue
		}
		actx, cancel := context.WithTimeout(ctx, r.s.cfg.ApplyTimeout)
		_, err := r.s.apply(actx, fsm.ReportGatewayPoliciesType, &hubpb.CmdReportGatewayPolicies{
			Cluster: r.cluster, Replicas: g.GetReplicas(), NowMs: time.Now().UnixMilli(),
		})
		cancel()
		switch {
		case err == nil:
		case status.Code(err) == codes.FailedPrecondition, status.Code(err) == codes.NotFound, status.Code(err) == codes.InvalidArgument:
			// A server not yet at protocol 5 (rolling upgrade), a removed
			// cluster, or a report the FSM refuses: retrying cannot help.
			r.s.log.Debug("gateway policy statuses not recorded", "cluster", r.cluster, "err", err)
		case errors.Is(err, context.Canceled) || ctx.Err() != nil:
			return
		default:
			r.s.log.Debug("gateway policy statuses not recorded; retrying", "cluster", r.cluster, "err", err)
			r.putBack(g)
			t := time.NewTimer(ackRetry)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
			select {
			case r.kick <- struct{}{}:
			default:
			}
		}
	}
}

// PolicyStatus answers, for each policy (or the one named), each member
// cluster and each of its gateway replicas, what the replica last
// reported: the revision in force and any rejection. A member none of
// whose replicas has reported has one entry without a gateway.
func (a *adminService) PolicyStatus(ctx context.Context, req *fedv1.PolicyStatusRequest) (*fedv1.PolicyStatusResponse, error) {
	name := req.GetName()
	if name != "" && !federation.IsDNSLabel(name) {
		return nil, invalidArg("name", "%q is not a policy name: a lowercase DNS label of at most %d characters", name, federation.MaxNameLength)
	}
	r, err := a.s.consistentRead(ctx)
	if err != nil {
		return nil, err
	}
	ps := r.Policies()
	if name != "" {
		p := r.Policy(name)
		if p == nil {
			return nil, status.Errorf(codes.NotFound, "policy %q: not found", name)
		}
		ps = []*fedv1.TrafficPolicy{p}
	}
	return policyStatus(r, ps, time.Now().UnixMilli()), nil
}

// policyStatus is PolicyStatus's answer for the policies ps from r.
func policyStatus(r *state.ReadTxn, ps []*fedv1.TrafficPolicy, nowMs int64) *fedv1.PolicyStatusResponse {
	resp := &fedv1.PolicyStatusResponse{Revision: r.Revision(), NowMs: nowMs}
	clusters := r.Clusters()
	for _, p := range ps {
		st := &fedv1.PolicyState{Name: p.GetName(), Service: p.GetService(), Revision: p.GetModifyRevision()}
		for _, c := range clusters {
			replicas := r.GatewayPolicies(c.GetName()).GetReplicas()
			if len(replicas) == 0 {
				st.Gateways = append(st.Gateways, &fedv1.PolicyGatewayStatus{Cluster: c.GetName()})
				continue
			}
			for _, rep := range replicas {
				g := &fedv1.PolicyGatewayStatus{Cluster: c.GetName(), Gateway: rep.GetInstance(), ReportedMs: rep.GetReportedMs()}
				for _, s := range rep.GetPolicies() {
					if s.GetName() != p.GetName() {
						continue
					}
					g.Revision, g.RejectedRevision, g.Error = s.GetRevision(), s.GetRejectedRevision(), s.GetError()
					g.Current = s.GetRevision() != 0 && s.GetRevision() == p.GetModifyRevision()
				}
				st.Gateways = append(st.Gateways, g)
			}
		}
		resp.Policies = append(resp.Policies, st)
	}
	return resp
}

// touchedGateways returns, for each of clusters, its gateway replicas as
// they last reported (none for a cluster without reports).
func touchedGateways(r *state.ReadTxn, clusters []string) []*fedv1.ClusterGateways {
	out := make([]*fedv1.ClusterGateways, 0, len(clusters))
	for _, c := range clusters {
		cg := &fedv1.ClusterGateways{Cluster: c}
		for _, rep := range r.GatewayPolicies(c).GetReplicas() {
			cg.Instances = append(cg.Instances, rep.GetInstance())
		}
		out = append(out, cg)
	}
	return out
}
