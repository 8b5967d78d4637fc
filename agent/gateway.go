package agent

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/subtle"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"maps"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/meshfed/meshfed/federation/policy"
	fedv1 "github.com/meshfed/meshfed/federation/v1"
	"github.com/meshfed/meshfed/gateway/gatewayclient"
	gatewayv1 "github.com/meshfed/meshfed/gateway/v1"
	"github.com/meshfed/meshfed/trust"
)

// Limits of the gateway API.
const (
	MaxGatewayStreams  = 64
	maxGatewayCSRBytes = 8 << 10
	maxGatewayInstance = 253
	// maxGatewayRecvBytes: a Report of every policy (fsm.MaxPolicies, each
	// with a name and a reason of policy.MaxStatusErrorBytes) fits.
	maxGatewayRecvBytes  = 2 << 20
	maxGatewayDeltaItems = 512 // upserts per message; bigger changes are split
	// maxGatewayDeltaRemovals: workload addresses removed per message.
	maxGatewayDeltaRemovals = 8192
)

// gatewayConfig is the complete config the gateways get, keyed like the
// messages' removal lists. It is immutable once built.
type gatewayConfig struct {
	imports  map[string]*gatewayv1.Import
	local    map[string]*gatewayv1.LocalService
	clusters map[string]*gatewayv1.RemoteCluster
	policies map[string]*fedv1.TrafficPolicy
	bundles  map[string]*fedv1.TrustBundle
	// workloads are this cluster's pods by IP (workloads.go).
	workloads map[string]*gatewayv1.Workload
	hub       *gatewayv1.HubState
	self      *gatewayv1.Self
}

func emptyGatewayConfig() *gatewayConfig {
	return &gatewayConfig{imports: map[string]*gatewayv1.Import{}, local: map[string]*gatewayv1.LocalService{},
		clusters: map[string]*gatewayv1.RemoteCluster{}, policies: map[string]*fedv1.TrafficPolicy{},
		bundles: map[string]*fedv1.TrustBundle{}, workloads: map[string]*gatewayv1.Workload{}, hub: &gatewayv1.HubState{}}
}

// buildGatewayConfig computes the gateway config from the hub view, the
// local catalog, the egress assignments and this cluster's own bundle
// (which is fresher than the hub's copy during a rotation). Pure.
func buildGatewayConfig(me *gatewayv1.Self, v *view, local map[string]*gatewayv1.LocalService, egress map[egressKey]int, own *fedv1.TrustBundle, hub *gatewayv1.HubState) *gatewayConfig {
	self := me.GetCluster()
	c := emptyGatewayConfig()
	c.hub, c.self = hub, me
	for k, s := range local {
		c.local[k] = s
	}
	if own != nil {
		c.bundles[own.GetTrustDomain()] = own
	}
	if v == nil {
		return c
	}
	plans, _ := planImports(self, v)
	for key, p := range plans {
		im := &gatewayv1.Import{Service: key}
		for _, port := range p.Ports {
			im.Ports = append(im.Ports, &gatewayv1.ImportPort{Port: port, EgressPort: uint32(egress[egressKey{service: p.service(), port: port.GetName()}])})
		}
		for _, ic := range p.Clusters {
			e := v.exports[exportKey{cluster: ic.Cluster, service: key}]
			// Only a port conflict keeps a cluster out of the routes:
			// with the others the oldest export's setting applies.
			conflict := ""
			if ic.portConflict() {
				conflict = ic.Conflict
			}
			im.Clusters = append(im.Clusters, &gatewayv1.ImportCluster{Cluster: ic.Cluster, Endpoints: e.GetService().GetEndpoints(), Conflict: conflict})
		}
		c.imports[key] = im
	}
	for name, cr := range v.clusters {
		if name == self {
			continue
		}
		c.clusters[name] = &gatewayv1.RemoteCluster{Name: name, TrustDomain: cr.GetTrustDomain(), Locality: cr.GetLocality(),
			GatewayAddresses: cr.GetGatewayAddresses()}
	}
	for name, p := range v.policies {
		c.policies[name] = p
	}
	for td, b := range v.bundles {
		if own == nil || td != own.GetTrustDomain() {
			c.bundles[td] = b
		}
	}
	return c
}

// reuse makes c share every message equal to prev's, so that each
// stream's diff finds unchanged entries by pointer: the equality is
// computed once per change here, not once per gateway stream.
func (c *gatewayConfig) reuse(prev *gatewayConfig) {
	if prev == nil {
		return
	}
	reuseEqual(c.imports, prev.imports)
	reuseEqual(c.local, prev.local)
	reuseEqual(c.clusters, prev.clusters)
	reuseEqual(c.policies, prev.policies)
	reuseEqual(c.bundles, prev.bundles)
	reuseEqual(c.workloads, prev.workloads)
	if proto.Equal(c.hub, prev.hub) {
		c.hub = prev.hub
	}
	if proto.Equal(c.self, prev.self) {
		c.self = prev.self
	}
}

func reuseEqual[T proto.Message](cur, prev map[string]T) {
	for k, v := range cur {
		if old, ok := prev[k]; ok && sameMessage(old, v) {
			cur[k] = old
		}
	}
}

// diffMap appends to ups the values of cur that are new or changed since
// last, and to dels the keys of last that cur lacks, both sorted by key.
func diffMap[T proto.Message](last, cur map[string]T, ups *[]T, dels *[]string) {
	for _, k := range sortedKeys(cur) {
		if old, ok := last[k]; !ok || !sameMessage(old, cur[k]) {
			*ups = append(*ups, cur[k])
		}
	}
	for _, k := range sortedKeys(last) {
		if _, ok := cur[k]; !ok {
			*dels = append(*dels, k)
		}
	}
}

// sameMessage is proto.Equal with a fast path for the shared records.
func sameMessage[T proto.Message](a, b T) bool {
	if any(a) == any(b) {
		return true
	}
	return proto.Equal(a, b)
}

// diffGatewayConfig returns the delta from last to cur; last nil gives a
// snapshot. The second result is false when nothing changed.
func diffGatewayConfig(last, cur *gatewayConfig) (*gatewayv1.StreamResponse, bool) {
	d := &gatewayv1.StreamResponse{Hub: cur.hub}
	if last == nil {
		d.Snapshot = true
		last = emptyGatewayConfig()
	}
	diffMap(last.imports, cur.imports, &d.Imports, &d.RemovedImports)
	diffMap(last.local, cur.local, &d.LocalServices, &d.RemovedLocalServices)
	diffMap(last.clusters, cur.clusters, &d.Clusters, &d.RemovedClusters)
	diffMap(last.policies, cur.policies, &d.Policies, &d.RemovedPolicies)
	diffMap(last.bundles, cur.bundles, &d.Bundles, &d.RemovedBundles)
	diffMap(last.workloads, cur.workloads, &d.Workloads, &d.RemovedWorkloads)
	if d.Snapshot || !sameMessage(last.self, cur.self) {
		d.Self = cur.self
	}
	changed := d.Snapshot || !proto.Equal(last.hub, cur.hub) || d.Self != nil ||
		len(d.Imports)+len(d.RemovedImports)+len(d.LocalServices)+len(d.RemovedLocalServices)+len(d.Clusters)+
			len(d.RemovedClusters)+len(d.Policies)+len(d.RemovedPolicies)+len(d.Bundles)+len(d.RemovedBundles)+
			len(d.Workloads)+len(d.RemovedWorkloads) > 0
	return d, changed
}

// splitDelta cuts a delta into messages of at most maxGatewayDeltaItems
// upserts each, so no message outgrows the gRPC limit. Removals and the
// snapshot flag ride in the first; every part carries the hub state; all
// but the last have more=true, and the gateway applies them together.
func splitDelta(d *gatewayv1.StreamResponse) []*gatewayv1.StreamResponse {
	n := len(d.Imports) + len(d.LocalServices) + len(d.Clusters) + len(d.Policies) + len(d.Bundles) + len(d.Workloads)
	if n <= maxGatewayDeltaItems && len(d.RemovedWorkloads) <= maxGatewayDeltaRemovals {
		return []*gatewayv1.StreamResponse{d}
	}
	first := &gatewayv1.StreamResponse{Snapshot: d.Snapshot, Hub: d.Hub, Self: d.Self, RemovedImports: d.RemovedImports, RemovedLocalServices: d.RemovedLocalServices,
		RemovedClusters: d.RemovedClusters, RemovedPolicies: d.RemovedPolicies, RemovedBundles: d.RemovedBundles}
	out := []*gatewayv1.StreamResponse{first}
	cur, room := first, maxGatewayDeltaItems
	take := func() *gatewayv1.StreamResponse {
		if room == 0 {
			cur = &gatewayv1.StreamResponse{Hub: d.Hub}
			out = append(out, cur)
			room = maxGatewayDeltaItems
		}
		room--
		return cur
	}
	// Bundles first: a gateway should trust a cluster before it routes to it.
	for _, x := range d.Bundles {
		m := take()
		m.Bundles = append(m.Bundles, x)
	}
	for _, x := range d.Clusters {
		m := take()
		m.Clusters = append(m.Clusters, x)
	}
	for _, x := range d.LocalServices {
		m := take()
		m.LocalServices = append(m.LocalServices, x)
	}
	for _, x := range d.Policies {
		m := take()
		m.Policies = append(m.Policies, x)
	}
	for _, x := range d.Imports {
		m := take()
		m.Imports = append(m.Imports, x)
	}
	for _, x := range d.Workloads {
		m := take()
		m.Workloads = append(m.Workloads, x)
	}
	// Workload removals (pod churn) can be many: at most
	// maxGatewayDeltaRemovals per message, after the upserts.
	for rest := d.RemovedWorkloads; len(rest) > 0; {
		k := min(len(rest), maxGatewayDeltaRemovals)
		cur = &gatewayv1.StreamResponse{Hub: d.Hub, RemovedWorkloads: rest[:k]}
		out = append(out, cur)
		rest = rest[k:]
	}
	for _, m := range out[:len(out)-1] {
		m.More = true
	}
	return out
}

// gatewayHub holds the current gateway config and wakes the streams when
// it changes.
type gatewayHub struct {
	mu   sync.Mutex
	cur  *gatewayConfig
	wake chan struct{} // closed and replaced on every change

	streams map[uint64]*gatewayStreamState
	nextID  uint64
	// policies is signalled when what the replicas hold of the traffic
	// policies may have changed (a Report, a stream gone); the hub
	// session forwards it (policyReport).
	policies chan struct{}
	// traffic meters the replicas' egress for the hub (traffic.go).
	traffic *trafficMeter
}

// gatewayStreamState is one connected gateway, as /state shows it.
type gatewayStreamState struct {
	Instance string    `json:"instance"`
	Peer     string    `json:"peer"`
	Since    time.Time `json:"since"`
	Revision uint64    `json:"revision"`
	// From the replica's last Report: the revision it applied (or
	// rejected, with the reason) and its health.
	Applied  uint64         `json:"applied"`
	Rejected string         `json:"rejected,omitempty"`
	Health   *GatewayHealth `json:"health,omitempty"`
	Reported time.Time      `json:"reported,omitzero"`
	// Policies are the traffic policies the replica holds, from its
	// last Report; nil before a Report that carried them.
	Policies []GatewayPolicy `json:"policies,omitempty"`

	// policyBound is how many policy statuses a Report may carry: the
	// most policies of the last two configs sent on the stream.
	policyBound int
	// statuses is what Report carried (the same as Policies), nil before
	// the first Report.
	statuses []*fedv1.GatewayPolicyStatus
}

// GatewayHealth is a gateway replica's health as it reported it.
type GatewayHealth struct {
	Serving          bool   `json:"serving"`
	Draining         bool   `json:"draining,omitempty"`
	Cached           bool   `json:"cached,omitempty"`
	RemoteGateways   uint32 `json:"remoteGateways"`
	RemoteGatewaysUp uint32 `json:"remoteGatewaysUp"`
	ActiveStreams    uint32 `json:"activeStreams"`
	Ingress          string `json:"ingress,omitempty"`
}

func newGatewayHub() *gatewayHub {
	return &gatewayHub{wake: make(chan struct{}), streams: map[uint64]*gatewayStreamState{}, policies: make(chan struct{}, 1),
		traffic: newTrafficMeter()}
}

func (h *gatewayHub) set(c *gatewayConfig) {
	h.mu.Lock()
	h.cur = c
	close(h.wake)
	h.wake = make(chan struct{})
	h.mu.Unlock()
}

func (h *gatewayHub) current() (*gatewayConfig, <-chan struct{}) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.cur, h.wake
}

func (h *gatewayHub) addStream(s *gatewayStreamState) (uint64, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.streams) >= MaxGatewayStreams {
		return 0, status.Errorf(codes.ResourceExhausted, "gateway streams: at most %d", MaxGatewayStreams)
	}
	h.nextID++
	h.streams[h.nextID] = s
	return h.nextID, nil
}

// setRevision records the revision sent on stream id, and how many
// policy statuses a Report may carry now: bound.
func (h *gatewayHub) setRevision(id, rev uint64, bound int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if s := h.streams[id]; s != nil {
		s.Revision, s.policyBound = rev, bound
	}
}

// policyBound is how many policy statuses instance's Report may carry:
// the most policies sent recently on any of its streams.
func (h *gatewayHub) policyBound(instance string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, s := range h.streams {
		if s.Instance == instance {
			n = max(n, s.policyBound)
		}
	}
	return n
}

func (h *gatewayHub) policiesChanged() {
	select {
	case h.policies <- struct{}{}:
	default:
	}
}

// report records a replica's Report on its streams (by instance name). It
// reports whether a stream of that instance is connected.
func (h *gatewayHub) report(r *gatewayv1.ReportRequest, now time.Time) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	found := false
	for _, s := range h.streams {
		if s.Instance != r.GetInstance() {
			continue
		}
		found = true
		s.Reported = now
		if r.GetError() != "" {
			s.Rejected = r.GetError()
		} else {
			s.Applied, s.Rejected = r.GetRevision(), ""
		}
		if hl := r.GetHealth(); hl != nil {
			s.Health = &GatewayHealth{Serving: hl.GetServing(), Draining: hl.GetDraining(), Cached: hl.GetCached(),
				RemoteGateways: hl.GetRemoteGateways(), RemoteGatewaysUp: hl.GetRemoteGatewaysUp(),
				ActiveStreams: hl.GetActiveStreams(), Ingress: hl.GetIngressAddress()}
		}
		s.statuses = slices.Clone(r.GetPolicies())
		if s.statuses == nil {
			s.statuses = []*fedv1.GatewayPolicyStatus{} // reported: none
		}
		s.Policies = gatewayPolicies(s.statuses)
	}
	if found {
		h.policiesChanged()
		h.traffic.report(r)
	}
	return found
}

func (h *gatewayHub) removeStream(id uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if s := h.streams[id]; s != nil {
		delete(h.streams, id)
		last := true
		for _, o := range h.streams {
			last = last && o.Instance != s.Instance
		}
		if last {
			h.traffic.gone(s.Instance)
		}
	}
	h.policiesChanged()
}

func (h *gatewayHub) list() []gatewayStreamState {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]gatewayStreamState, 0, len(h.streams))
	for _, id := range slices.Sorted(maps.Keys(h.streams)) {
		out = append(out, *h.streams[id])
	}
	return out
}

// gatewayServer serves gatewayv1.Config: the config stream and SVIDs.
type gatewayServer struct {
	gatewayv1.UnimplementedConfigServer
	hub     *gatewayHub
	ca      *trust.CA
	root    *trust.RootAuthority
	token   string        // the bootstrap token: the file source only
	review  tokenReviewer // ServiceAccount tokens: the kubernetes source only
	gwID    spiffeid.ID
	onDelta func(*gatewayv1.StreamResponse) // tests and metrics; may be nil
}

// verifiedGateway returns nil if the RPC's client presented a valid
// gateway SVID of this cluster.
func (s *gatewayServer) verifiedGateway(ctx context.Context) error {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return status.Error(codes.Unauthenticated, "no peer")
	}
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(ti.State.PeerCertificates) == 0 {
		return status.Error(codes.Unauthenticated, "a gateway SVID of this cluster is required")
	}
	if _, err := trust.VerifyPeer(ti.State.PeerCertificates, s.ca, trust.AuthorizeID(s.gwID), time.Now()); err != nil {
		return status.Errorf(codes.PermissionDenied, "%v", err)
	}
	return nil
}

func (s *gatewayServer) SignSVID(ctx context.Context, req *gatewayv1.SignSVIDRequest) (*gatewayv1.SignSVIDResponse, error) {
	if n := len(req.GetCsr()); n == 0 || n > maxGatewayCSRBytes {
		return nil, status.Errorf(codes.InvalidArgument, "csr: %d bytes, want 1 to %d", n, maxGatewayCSRBytes)
	}
	if n := len(req.GetServiceAccountToken()); n > maxServiceAccountToken {
		return nil, status.Errorf(codes.InvalidArgument, "service_account_token: %d bytes, at most %d", n, maxServiceAccountToken)
	}
	if err := s.verifiedGateway(ctx); err != nil {
		switch {
		case req.GetServiceAccountToken() != "":
			if s.review == nil {
				return nil, status.Error(codes.FailedPrecondition, "service_account_token: this agent has no Kubernetes API to review it (file source); use the bootstrap token")
			}
			if err := s.review.review(ctx, req.GetServiceAccountToken()); err != nil {
				return nil, status.Errorf(codes.PermissionDenied, "service_account_token: %v", err)
			}
		case req.GetBootstrapToken() != "":
			if s.review != nil {
				return nil, status.Error(codes.PermissionDenied, "bootstrap_token: refused in-cluster; authenticate with the gateway's ServiceAccount token")
			}
			if subtle.ConstantTimeCompare([]byte(req.GetBootstrapToken()), []byte(s.token)) != 1 {
				return nil, status.Error(codes.PermissionDenied, "bootstrap_token: does not match this cluster's gateway bootstrap token")
			}
		default:
			return nil, err
		}
	}
	chain, err := s.ca.SignCSR(req.GetCsr(), s.gwID)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "csr: %v", err)
	}
	b, err := s.root.Bundle()
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "bundle: %v", err)
	}
	resp := &gatewayv1.SignSVIDResponse{Bundle: trust.BundleToProto(b)}
	for _, c := range chain {
		resp.CertChain = append(resp.CertChain, c.Raw)
	}
	return resp, nil
}

// Report records a replica's applied revision and health.
func (s *gatewayServer) Report(ctx context.Context, req *gatewayv1.ReportRequest) (*gatewayv1.ReportResponse, error) {
	if err := s.verifiedGateway(ctx); err != nil {
		return nil, err
	}
	if n := len(req.GetInstance()); n == 0 || n > maxGatewayInstance {
		return nil, status.Errorf(codes.InvalidArgument, "instance: %d bytes, want 1 to %d", n, maxGatewayInstance)
	}
	if n := len(req.GetError()); n > gatewayclient.MaxReportError {
		return nil, status.Errorf(codes.InvalidArgument, "error: %d bytes, at most %d", n, gatewayclient.MaxReportError)
	}
	if err := policy.CheckStatuses(req.GetPolicies(), s.hub.policyBound(req.GetInstance())); err != nil {
		var fe *policy.FieldError
		if errors.As(err, &fe) && fe.Path == "" {
			return nil, status.Errorf(codes.InvalidArgument, "policies: %s (the policies this agent sent the replica)", fe.Msg)
		}
		return nil, status.Errorf(codes.InvalidArgument, "policies%v", err)
	}
	if !s.hub.report(req, time.Now()) {
		return nil, status.Errorf(codes.FailedPrecondition, "instance: %q has no config stream open", req.GetInstance())
	}
	return &gatewayv1.ReportResponse{}, nil
}

func (s *gatewayServer) Stream(req *gatewayv1.StreamRequest, stream gatewayv1.Config_StreamServer) error {
	ctx := stream.Context()
	if err := s.verifiedGateway(ctx); err != nil {
		return err
	}
	if n := len(req.GetInstance()); n == 0 || n > maxGatewayInstance {
		return status.Errorf(codes.InvalidArgument, "instance: %d bytes, want 1 to %d", n, maxGatewayInstance)
	}
	st := &gatewayStreamState{Instance: req.GetInstance(), Since: time.Now()}
	if p, ok := peer.FromContext(ctx); ok {
		st.Peer = p.Addr.String()
	}
	id, err := s.hub.addStream(st)
	if err != nil {
		return err
	}
	defer s.hub.removeStream(id)
	var last *gatewayConfig
	var rev uint64
	lastPolicies := 0
	for {
		cur, wake := s.hub.current()
		if cur != nil {
			if d, changed := diffGatewayConfig(last, cur); changed {
				for _, m := range splitDelta(d) {
					rev++
					m.Revision = rev
					if err := stream.Send(m); err != nil {
						return err
					}
					if s.onDelta != nil {
						s.onDelta(m)
					}
				}
				// A Report may carry the policies of the config sent
				// now or of the one before, which the replica may still
				// hold.
				s.hub.setRevision(id, rev, max(lastPolicies, len(cur.policies)))
				lastPolicies = len(cur.policies)
				last = cur
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-wake:
		}
	}
}

// gatewayServerTLS is the agent's TLS config for the gateway API: it
// presents the agent's SVID and asks for, but does not require, a client
// certificate (SignSVID accepts the bootstrap token instead); a presented
// certificate must verify against this cluster's bundle, and the RPCs
// check it is the gateway's.
func gatewayServerTLS(svids *trust.SVIDSource, bundles x509bundle.Source, gw spiffeid.ID) *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS13,
		ClientAuth:     tls.RequestClientCert,
		GetCertificate: tlsconfig.GetCertificate(svids),
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return nil
			}
			_, err := trust.VerifyPeer(cs.PeerCertificates, bundles, trust.AuthorizeID(gw), time.Now())
			return err
		},
	}
}

// serveGateways serves the gateway API on ln until ctx is done.
func serveGateways(ctx context.Context, ln net.Listener, tlsCfg *tls.Config, srv *gatewayServer) error {
	g := grpc.NewServer(
		grpc.Creds(credentials.NewTLS(tlsCfg)),
		grpc.MaxRecvMsgSize(maxGatewayRecvBytes),
		grpc.MaxConcurrentStreams(MaxGatewayStreams*2),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
	)
	gatewayv1.RegisterConfigServer(g, srv)
	go func() { <-ctx.Done(); g.Stop() }()
	if err := g.Serve(ln); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return fmt.Errorf("gateway API: %w", err)
	}
	return nil
}

// loadGatewayToken returns the gateways' bootstrap token from the stored
// bootstrap document, or a new random one.
func loadGatewayToken(st trust.Store) (string, error) {
	b, err := st.Load()
	switch {
	case errors.Is(err, trust.ErrNotFound):
		buf := make([]byte, 32)
		if _, err := rand.Read(buf); err != nil {
			return "", err
		}
		return base64.RawURLEncoding.EncodeToString(buf), nil
	case err != nil:
		return "", fmt.Errorf("agent: gateway bootstrap: %w", err)
	}
	boot, _, err := gatewayclient.ParseBootstrap(b)
	if err != nil {
		return "", fmt.Errorf("agent: stored gateway bootstrap: %w", err)
	}
	return boot.Token, nil
}

// writeGatewayBootstrap writes the gateways' bootstrap document with the
// cluster's current bundle, unless the stored one is the same.
func writeGatewayBootstrap(st trust.Store, cluster, token string, root *trust.RootAuthority) error {
	b, err := root.Bundle()
	if err != nil {
		return err
	}
	doc, err := gatewayclient.EncodeBootstrap(cluster, token, b)
	if err != nil {
		return err
	}
	if cur, err := st.Load(); err == nil && bytes.Equal(cur, doc) {
		return nil
	}
	if err := st.Save(doc); err != nil {
		return fmt.Errorf("agent: gateway bootstrap: %w", err)
	}
	return nil
}
