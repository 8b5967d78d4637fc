package hub

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/meshfed/meshfed/federation"
	fedv1 "github.com/meshfed/meshfed/federation/v1"
	"github.com/meshfed/meshfed/hub/fsm"
	"github.com/meshfed/meshfed/hub/internal/hubpb"
	"github.com/meshfed/meshfed/hub/state"
	"github.com/meshfed/meshfed/internal/pki"
)

type adminService struct {
	fedv1.UnimplementedAdminServer
	s *Server
}

func tokenInfo(t *hubpb.Token) *fedv1.TokenInfo {
	return &fedv1.TokenInfo{
		Id: t.GetId(), Cluster: t.GetCluster(), CreatedAtMs: t.GetCreatedAtMs(),
		ExpiresAtMs: t.GetExpiresAtMs(), Used: t.GetUsed(), Revoked: t.GetRevoked(), TrustDomain: t.GetTrustDomain(),
	}
}

func (a *adminService) CreateToken(ctx context.Context, req *fedv1.CreateTokenRequest) (*fedv1.CreateTokenResponse, error) {
	s := a.s
	cluster, err := federation.ParseClusterName(req.GetCluster())
	if err != nil {
		return nil, fieldErr("", err)
	}
	ttl := s.cfg.TokenTTL
	if req.GetTtlSeconds() != 0 {
		ttl = time.Duration(req.GetTtlSeconds()) * time.Second
	}
	if ttl <= 0 || ttl > s.cfg.MaxTokenTTL {
		return nil, invalidArg("ttl_seconds", "%d must be in 1..%d", req.GetTtlSeconds(), int64(s.cfg.MaxTokenTTL/time.Second))
	}
	td := federation.TrustDomainFromCluster(cluster)
	if req.GetTrustDomain() != "" {
		if td, err = federation.ParseTrustDomain(req.GetTrustDomain()); err != nil {
			return nil, fieldErr("", err)
		}
	}
	if err := s.checkNotHubTrustDomain("trust_domain", td); err != nil {
		return nil, err
	}
	ca, _, _ := s.certs.current()
	if ca == nil {
		return nil, status.Error(codes.Unavailable, "hub: not ready: no hub CA yet; retry")
	}
	// A named request derives its token, so that a retry of it, on any
	// server, answers with the same token string; without a name it is
	// random.
	var id string
	var secret []byte
	if req, named := writeRequestFrom(ctx); named {
		if id, secret, err = deriveToken(s.fsm.Store().Read().CA().GetKeyPem(), req); err != nil {
			return nil, status.Errorf(codes.Unavailable, "hub: not ready: %v; retry", err)
		}
	} else {
		idb := make([]byte, federation.JoinTokenIDLength/2)
		secret = make([]byte, federation.JoinTokenSecretSize)
		if _, err := rand.Read(idb); err != nil {
			return nil, status.Errorf(codes.Internal, "token: %v", err)
		}
		if _, err := rand.Read(secret); err != nil {
			return nil, status.Errorf(codes.Internal, "token: %v", err)
		}
		id = hex.EncodeToString(idb)
	}
	now := time.Now()
	hash := sha256.Sum256(secret)
	tok := &hubpb.Token{
		Id: id, Cluster: cluster.String(), SecretHash: hash[:],
		CreatedAtMs: now.UnixMilli(), ExpiresAtMs: now.Add(ttl).UnixMilli(), TrustDomain: td.String(),
	}
	addrs := s.hubAddrs()
	res, err := s.propose(ctx, fsm.CreateTokenType, &hubpb.CmdCreateToken{Token: tok, HubAddrs: addrs})
	if err != nil {
		return nil, err
	}
	if res.token != nil {
		// As the FSM recorded it: for a repeated request, the token and
		// addresses of the first attempt, whichever server made it.
		if !bytes.Equal(res.token.GetSecretHash(), hash[:]) {
			return nil, status.Errorf(codes.Internal, "hub: token %s as recorded does not match the one derived for this request", res.token.GetId())
		}
		tok = res.token
		if len(res.tokenAddrs) > 0 {
			addrs = res.tokenAddrs
		}
	}
	jt := federation.JoinToken{ID: tok.GetId(), Secret: secret, Cluster: cluster, CAFingerprint: pki.Fingerprint(ca.Cert), Addrs: addrs}
	return &fedv1.CreateTokenResponse{Token: jt.Encode(), Info: tokenInfo(tok)}, nil
}

func (a *adminService) ListTokens(ctx context.Context, _ *fedv1.ListTokensRequest) (*fedv1.ListTokensResponse, error) {
	r, err := a.s.consistentRead(ctx)
	if err != nil {
		return nil, err
	}
	resp := &fedv1.ListTokensResponse{}
	for _, t := range r.Tokens() {
		resp.Tokens = append(resp.Tokens, tokenInfo(t))
	}
	return resp, nil
}

func (a *adminService) RevokeToken(ctx context.Context, req *fedv1.RevokeTokenRequest) (*fedv1.RevokeTokenResponse, error) {
	if len(req.GetId()) != federation.JoinTokenIDLength {
		return nil, invalidArg("id", "%q must be %d hex characters", req.GetId(), federation.JoinTokenIDLength)
	}
	if _, err := a.s.apply(ctx, fsm.RevokeTokenType, &hubpb.CmdRevokeToken{Id: req.GetId()}); err != nil {
		return nil, err
	}
	return &fedv1.RevokeTokenResponse{}, nil
}

func (a *adminService) ListClusters(ctx context.Context, _ *fedv1.ListClustersRequest) (*fedv1.ListClustersResponse, error) {
	r, err := a.s.consistentRead(ctx)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	resp := &fedv1.ListClustersResponse{Revision: r.Revision()}
	for _, c := range r.Clusters() {
		resp.Clusters = append(resp.Clusters, withConnection(r, c, now))
	}
	return resp, nil
}

func (a *adminService) DescribeCluster(ctx context.Context, req *fedv1.DescribeClusterRequest) (*fedv1.DescribeClusterResponse, error) {
	name, err := federation.ParseClusterName(req.GetName())
	if err != nil {
		return nil, fieldErr("", err)
	}
	r, err := a.s.consistentRead(ctx)
	if err != nil {
		return nil, err
	}
	c := r.Cluster(name.String())
	if c == nil {
		return nil, status.Errorf(codes.NotFound, "cluster %q: not a member", name)
	}
	resp := &fedv1.DescribeClusterResponse{Cluster: withConnection(r, c, time.Now()), Exports: r.ExportsOf(name)}
	if b := r.Bundle(c.GetTrustDomain()); b != nil {
		resp.Bundle = b.GetBundle()
	}
	return resp, nil
}

func (a *adminService) RemoveCluster(ctx context.Context, req *fedv1.RemoveClusterRequest) (*fedv1.RemoveClusterResponse, error) {
	if _, err := federation.ParseClusterName(req.GetName()); err != nil {
		return nil, fieldErr("", err)
	}
	idx, err := a.s.apply(ctx, fsm.RemoveClusterType, &hubpb.CmdRemoveCluster{Name: req.GetName()})
	if err != nil {
		return nil, err
	}
	return &fedv1.RemoveClusterResponse{Revision: idx}, nil
}

func (a *adminService) ListServices(ctx context.Context, _ *fedv1.ListServicesRequest) (*fedv1.ListServicesResponse, error) {
	r, err := a.s.consistentRead(ctx)
	if err != nil {
		return nil, err
	}
	return &fedv1.ListServicesResponse{Revision: r.Revision(), Services: globalServices(r)}, nil
}

// globalServices groups r's exports by service, sorted by key (Admin
// ListServices and the web UI).
func globalServices(r *state.ReadTxn) []*fedv1.GlobalService {
	by := map[federation.ServiceKey]*fedv1.GlobalService{}
	var keys []federation.ServiceKey
	for _, e := range r.Exports() {
		id, _ := state.ExportIDOf(e) // the store holds only exports whose IDs parse
		g, ok := by[id.Service]
		if !ok {
			g = &fedv1.GlobalService{Key: id.Service.String()}
			by[id.Service] = g
			keys = append(keys, id.Service)
		}
		g.Exports = append(g.Exports, e)
	}
	slices.SortFunc(keys, func(a, b federation.ServiceKey) int { return strings.Compare(a.String(), b.String()) })
	out := make([]*fedv1.GlobalService, 0, len(keys))
	for _, k := range keys {
		out = append(out, by[k])
	}
	return out
}

// PutPolicy is ApplyPolicies of one policy (errors name policies[0]).
func (a *adminService) PutPolicy(ctx context.Context, req *fedv1.PutPolicyRequest) (*fedv1.PutPolicyResponse, error) {
	if req.GetPolicy() == nil {
		return nil, invalidArg("policy", "required")
	}
	resp, err := a.s.applyPolicies(ctx, []*fedv1.TrafficPolicy{req.GetPolicy()}, false)
	if err != nil {
		return nil, err
	}
	return &fedv1.PutPolicyResponse{Revision: resp.GetRevision()}, nil
}

func (a *adminService) DeletePolicy(ctx context.Context, req *fedv1.DeletePolicyRequest) (*fedv1.DeletePolicyResponse, error) {
	if req.GetName() == "" || len(req.GetName()) > federation.MaxNameLength {
		return nil, invalidArg("name", "must be 1 to %d characters", federation.MaxNameLength)
	}
	idx, err := a.s.apply(ctx, fsm.DeletePolicyType, &hubpb.CmdDeletePolicy{Name: req.GetName()})
	if err != nil {
		return nil, err
	}
	return &fedv1.DeletePolicyResponse{Revision: idx}, nil
}

func (a *adminService) ListPolicies(ctx context.Context, _ *fedv1.ListPoliciesRequest) (*fedv1.ListPoliciesResponse, error) {
	r, err := a.s.consistentRead(ctx)
	if err != nil {
		return nil, err
	}
	return &fedv1.ListPoliciesResponse{Policies: r.Policies(), Revision: r.Revision()}, nil
}

// Status answers from this server's view, without a consistent read, so that
// it works when there is no leader: it is the operator's debugging tool.
func (a *adminService) Status(_ context.Context, _ *fedv1.StatusRequest) (*fedv1.StatusResponse, error) {
	return a.s.status()
}

// status is this server's view of the hub's servers (Admin Status and the
// web UI): no consistent read, so that it answers without a leader.
func (s *Server) status() (*fedv1.StatusResponse, error) {
	_, leaderID := s.raft.LeaderWithID()
	resp := &fedv1.StatusResponse{
		Leader: string(leaderID), Revision: s.fsm.Store().Read().Revision(),
		CommitIndex: s.raft.CommitIndex(), AnsweredBy: s.cfg.Name,
	}
	f := s.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, status.Errorf(codes.Unavailable, "raft configuration: %v", err)
	}
	inRaft := map[string]raft.Server{}
	for _, srv := range f.Configuration().Servers {
		inRaft[string(srv.ID)] = srv
	}
	names := map[string]bool{}
	for _, m := range s.members.snapshot() {
		names[m.Name] = true
	}
	for id := range inRaft {
		names[id] = true
	}
	sorted := make([]string, 0, len(names))
	for n := range names {
		sorted = append(sorted, n)
	}
	sort.Strings(sorted)
	for _, n := range sorted {
		st := &fedv1.ServerStatus{Name: n, State: "follower", Suffrage: "none", Health: "unknown"}
		if srv, ok := inRaft[n]; ok {
			st.RaftAddress = string(srv.Address)
			st.Suffrage = map[raft.ServerSuffrage]string{raft.Voter: "voter", raft.Nonvoter: "nonvoter", raft.Staging: "staging"}[srv.Suffrage]
		}
		if m, ok := s.members.get(n); ok {
			st.Health = m.Health
			st.GrpcAddress = m.Meta.GRPC
			if st.RaftAddress == "" {
				st.RaftAddress = m.Meta.Raft
			}
		}
		switch {
		case n == string(leaderID):
			st.State = "leader"
		case st.Health == "dead" || st.Health == "left":
			st.State = "unknown"
		}
		if n == s.cfg.Name {
			st.State = stateName(s.raft.State())
			st.AppliedIndex = s.fsm.AppliedIndex()
		}
		resp.Servers = append(resp.Servers, st)
	}
	return resp, nil
}

func stateName(st raft.RaftState) string {
	switch st {
	case raft.Leader:
		return "leader"
	case raft.Candidate:
		return "candidate"
	case raft.Follower:
		return "follower"
	}
	return "shutdown"
}
