package gatewayclient

import (
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshfed/meshfed/federation"
	fedv1 "github.com/meshfed/meshfed/federation/v1"
	"github.com/meshfed/meshfed/gateway/delta"
	gatewayv1 "github.com/meshfed/meshfed/gateway/v1"
)

// State is the gateway config at one revision of the stream, parsed once,
// at this edge, into typed values: a gateway never handles a service key,
// cluster name or locality as a string. A State and everything it holds
// are never modified after State returns them; share them freely.
type State struct {
	// Revision is the stream revision this state was built from (it
	// restarts at 1 with every stream).
	Revision uint64
	Hub      HubState
	// Self is this cluster; zero until an agent that sends it.
	Self     Self
	Imports  map[federation.ServiceKey]*Import
	Local    map[federation.ServiceKey]*LocalService
	Clusters map[federation.ClusterName]*RemoteCluster
	// Policies by name, and the federated bundles by trust domain name,
	// as the agent sent them.
	Policies map[string]*fedv1.TrafficPolicy
	Bundles  map[string]*fedv1.TrustBundle
	// Workloads are this cluster's pods by address: who a connection to an
	// egress port comes from.
	Workloads map[netip.Addr]Workload

	// Cached is true when this state was loaded from the gateway's disk
	// cache and no stream has replaced it yet.
	Cached bool

	raw *rawState // the messages, for the next delta and the disk cache
}

// Workload is one pod of this cluster, as its address names it.
type Workload struct {
	Namespace, ServiceAccount string
}

// SPIFFEID is the workload's identity in trust domain td
// (spiffe://<td>/ns/<namespace>/sa/<service account>, Istio's form).
func (w Workload) SPIFFEID(td spiffeid.TrustDomain) string {
	return "spiffe://" + td.Name() + "/ns/" + w.Namespace + "/sa/" + w.ServiceAccount
}

// HubState is where the agent's hub state stands.
type HubState struct {
	Revision  uint64
	Connected bool
	Cached    bool
}

// Self is this cluster as its gateways serve it.
type Self struct {
	Cluster     federation.ClusterName
	Locality    federation.Locality
	TrustDomain spiffeid.TrustDomain
	Ingress     Ingress
}

// Ingress is how the gateways accept traffic from remote gateways.
type Ingress struct {
	// Bind is the address to bind; invalid (the zero Addr) means all.
	Bind netip.Addr
	Port uint16
	ALPN string
}

// ServicePort is one port of a service.
type ServicePort struct {
	Name        string
	Port        uint16
	Protocol    string // TCP, UDP, HTTP, HTTP2, GRPC or TLS
	AppProtocol string
}

// IsHTTP reports whether the port carries HTTP/1.1, h2c or gRPC, which
// gateways handle per request.
func (p ServicePort) IsHTTP() bool {
	switch strings.ToUpper(p.Protocol) {
	case "HTTP", "HTTP2", "GRPC":
		return true
	}
	switch strings.ToLower(p.AppProtocol) {
	case "http", "h2c", "grpc", "kubernetes.io/h2c":
		return true
	}
	return false
}

// Import is a global service this cluster imports.
type Import struct {
	Service federation.ServiceKey
	Ports   []ImportPort
	// Clusters export it, oldest export first.
	Clusters []ImportCluster
	// ClusterSetIP, when valid, is an address the gateways also listen on
	// for this import, at each TCP service port (the service's own port).
	ClusterSetIP netip.Addr
}

// ImportPort is an imported port and the local egress port the gateways
// listen on for it (0 while none is assigned).
type ImportPort struct {
	ServicePort
	Egress uint16
}

// ImportCluster is one exporting cluster's endpoints of an import.
type ImportCluster struct {
	Cluster  federation.ClusterName
	Groups   []EndpointGroup
	Conflict string
}

// Ready is how many of the cluster's endpoints are ready.
func (c ImportCluster) Ready() int {
	n := 0
	for _, g := range c.Groups {
		n += int(g.Ready)
	}
	return n
}

// Total is how many endpoints the cluster has, ready or not.
func (c ImportCluster) Total() int {
	n := 0
	for _, g := range c.Groups {
		n += int(max(g.Ready, g.Serving) + g.Terminating)
	}
	return max(n, c.Ready())
}

// EndpointGroup is the health of endpoints that share a zone and labels.
type EndpointGroup struct {
	Zone                        string
	Labels                      map[string]string
	Ready, Serving, Terminating uint32
}

// LocalService is a service of this cluster and its endpoints.
type LocalService struct {
	Service   federation.ServiceKey
	Ports     []ServicePort
	Endpoints []Endpoint
}

// Port returns the service port with the given number.
func (s *LocalService) Port(port uint16) (ServicePort, bool) {
	for _, p := range s.Ports {
		if p.Port == port {
			return p, true
		}
	}
	return ServicePort{}, false
}

// Endpoint is one endpoint of a local service.
type Endpoint struct {
	Addr netip.Addr
	// Ports maps a service port name to the endpoint's target port.
	Ports                       map[string]uint16
	Zone                        string
	Labels                      map[string]string
	Ready, Serving, Terminating bool
}

// RemoteCluster is another member cluster, as remote gateways reach it.
type RemoteCluster struct {
	Name        federation.ClusterName
	TrustDomain spiffeid.TrustDomain
	Locality    federation.Locality
	// Gateways are host:port of its gateways' QUIC ingress.
	Gateways []string
}

// rawState holds the messages of the stream by their wire keys.
type rawState struct {
	hub       *gatewayv1.HubState
	self      *gatewayv1.Self
	imports   map[string]*gatewayv1.Import
	local     map[string]*gatewayv1.LocalService
	clusters  map[string]*gatewayv1.RemoteCluster
	policies  map[string]*fedv1.TrafficPolicy
	bundles   map[string]*fedv1.TrustBundle
	workloads map[string]*gatewayv1.Workload
}

func newRawState() *rawState {
	return &rawState{hub: &gatewayv1.HubState{}, imports: map[string]*gatewayv1.Import{}, local: map[string]*gatewayv1.LocalService{},
		clusters: map[string]*gatewayv1.RemoteCluster{}, policies: map[string]*fedv1.TrafficPolicy{}, bundles: map[string]*fedv1.TrustBundle{},
		workloads: map[string]*gatewayv1.Workload{}}
}

func (s *rawState) clone() *rawState {
	return &rawState{hub: s.hub, self: s.self, imports: delta.Clone(s.imports), local: delta.Clone(s.local),
		clusters: delta.Clone(s.clusters), policies: delta.Clone(s.policies), bundles: delta.Clone(s.bundles),
		workloads: delta.Clone(s.workloads)}
}

// apply applies one message of the stream (see package delta).
func (s *rawState) apply(m *gatewayv1.StreamResponse) {
	if m.GetSnapshot() {
		*s = *newRawState()
	}
	delta.Apply(s.imports, m.GetImports(), (*gatewayv1.Import).GetService, m.GetRemovedImports())
	delta.Apply(s.local, m.GetLocalServices(), (*gatewayv1.LocalService).GetService, m.GetRemovedLocalServices())
	delta.Apply(s.clusters, m.GetClusters(), (*gatewayv1.RemoteCluster).GetName, m.GetRemovedClusters())
	delta.Apply(s.policies, m.GetPolicies(), (*fedv1.TrafficPolicy).GetName, m.GetRemovedPolicies())
	delta.Apply(s.bundles, m.GetBundles(), (*fedv1.TrustBundle).GetTrustDomain, m.GetRemovedBundles())
	delta.Apply(s.workloads, m.GetWorkloads(), (*gatewayv1.Workload).GetAddress, m.GetRemovedWorkloads())
	if m.GetHub() != nil {
		s.hub = m.GetHub()
	}
	if m.GetSelf() != nil {
		s.self = m.GetSelf()
	}
}

// snapshot is the whole raw state as one snapshot message (the disk
// cache's format).
func (s *rawState) snapshot(rev uint64) *gatewayv1.StreamResponse {
	return &gatewayv1.StreamResponse{Revision: rev, Snapshot: true, Hub: s.hub, Self: s.self,
		Imports: delta.Values(s.imports), LocalServices: delta.Values(s.local), Clusters: delta.Values(s.clusters),
		Policies: delta.Values(s.policies), Bundles: delta.Values(s.bundles), Workloads: delta.Values(s.workloads)}
}

// parse builds the typed state from raw. Entries whose raw message is the
// same pointer as in prev are reused, so a delta costs what it changed.
// Any invalid entry fails the whole state: the gateway keeps the last one
// it accepted and reports the error.
func parse(raw *rawState, prev *State, rev uint64) (*State, error) {
	st := &State{Revision: rev, raw: raw, Policies: raw.policies, Bundles: raw.bundles,
		Hub:     HubState{Revision: raw.hub.GetRevision(), Connected: raw.hub.GetConnected(), Cached: raw.hub.GetCached()},
		Imports: make(map[federation.ServiceKey]*Import, len(raw.imports)), Local: make(map[federation.ServiceKey]*LocalService, len(raw.local)),
		Clusters: make(map[federation.ClusterName]*RemoteCluster, len(raw.clusters))}
	var errs []error
	if raw.self != nil {
		self, err := parseSelf(raw.self)
		if err != nil {
			errs = append(errs, err)
		}
		st.Self = self
	}
	var pi map[string]*gatewayv1.Import
	var pl map[string]*gatewayv1.LocalService
	var pc map[string]*gatewayv1.RemoteCluster
	if prev != nil && prev.raw != nil {
		pi, pl, pc = prev.raw.imports, prev.raw.local, prev.raw.clusters
	}
	for k, m := range raw.imports {
		if old, ok := pi[k]; ok && old == m {
			if key, err := federation.ParseServiceKey(k); err == nil {
				st.Imports[key] = prev.Imports[key]
				continue
			}
		}
		im, err := parseImport(m)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		st.Imports[im.Service] = im
	}
	for k, m := range raw.local {
		if old, ok := pl[k]; ok && old == m {
			if key, err := federation.ParseServiceKey(k); err == nil {
				st.Local[key] = prev.Local[key]
				continue
			}
		}
		ls, err := parseLocal(m)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		st.Local[ls.Service] = ls
	}
	for k, m := range raw.clusters {
		if old, ok := pc[k]; ok && old == m {
			if name, err := federation.ParseClusterName(k); err == nil {
				st.Clusters[name] = prev.Clusters[name]
				continue
			}
		}
		rc, err := parseCluster(m)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		st.Clusters[rc.Name] = rc
	}
	if prev != nil && prev.raw != nil && sameEntries(prev.raw.workloads, raw.workloads) {
		st.Workloads = prev.Workloads
	} else if len(raw.workloads) > gatewayv1.MaxWorkloads {
		errs = append(errs, &federation.FieldError{Field: "workloads", Value: fmt.Sprint(len(raw.workloads)),
			Reason: fmt.Sprintf("workloads, at most %d", gatewayv1.MaxWorkloads)})
	} else {
		st.Workloads = make(map[netip.Addr]Workload, len(raw.workloads))
		for k, w := range raw.workloads {
			if err := gatewayv1.ValidateWorkload("workloads["+k+"]", w); err != nil {
				errs = append(errs, err)
				continue
			}
			st.Workloads[netip.MustParseAddr(w.GetAddress()).Unmap()] = Workload{Namespace: w.GetNamespace(), ServiceAccount: w.GetServiceAccount()}
		}
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("gatewayclient: config revision %d: %w", rev, errors.Join(errs...))
	}
	return st, nil
}

// sameEntries reports whether two maps hold the same message pointers (a
// delta that did not touch them).
func sameEntries[T comparable](a, b map[string]T) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func parseSelf(m *gatewayv1.Self) (Self, error) {
	var s Self
	var err error
	if s.Cluster, err = federation.ParseClusterName(m.GetCluster()); err != nil {
		return s, fieldErr("self", err)
	}
	if l := m.GetLocality(); l != nil {
		if s.Locality, err = federation.NewLocality(l.GetRegion(), l.GetZone(), l.GetSubzone()); err != nil {
			return s, fieldErr("self", err)
		}
	}
	if s.TrustDomain, err = spiffeid.TrustDomainFromString(m.GetTrustDomain()); err != nil {
		return s, fieldErr("self.trust_domain", err)
	}
	if in := m.GetIngress(); in != nil {
		if b := in.GetBindAddress(); b != "" {
			if s.Ingress.Bind, err = netip.ParseAddr(b); err != nil {
				return s, fieldErr("self.ingress.bind_address", err)
			}
		}
		if in.GetPort() > 65535 {
			return s, &federation.FieldError{Field: "self.ingress.port", Value: fmt.Sprint(in.GetPort()), Reason: "must be at most 65535"}
		}
		s.Ingress.Port, s.Ingress.ALPN = uint16(in.GetPort()), in.GetAlpn()
		if len(s.Ingress.ALPN) > 255 {
			return s, &federation.FieldError{Field: "self.ingress.alpn", Value: s.Ingress.ALPN[:16] + "...", Reason: "at most 255 bytes"}
		}
	}
	return s, nil
}

func parsePort(field string, p *fedv1.ServicePort) (ServicePort, error) {
	if p.GetPort() == 0 || p.GetPort() > 65535 {
		return ServicePort{}, &federation.FieldError{Field: field + ".port", Value: fmt.Sprint(p.GetPort()), Reason: "must be 1 to 65535"}
	}
	return ServicePort{Name: p.GetName(), Port: uint16(p.GetPort()), Protocol: p.GetProtocol(), AppProtocol: p.GetAppProtocol()}, nil
}

func parseImport(m *gatewayv1.Import) (*Import, error) {
	key, err := federation.ParseServiceKey(m.GetService())
	if err != nil {
		return nil, fieldErr("imports", err)
	}
	im := &Import{Service: key}
	if ip := m.GetClusterSetIp(); ip != "" {
		a, err := netip.ParseAddr(ip)
		if err != nil || a.Zone() != "" {
			return nil, &federation.FieldError{Field: fmt.Sprintf("imports[%s].cluster_set_ip", key), Value: ip, Reason: "must be an IP address"}
		}
		im.ClusterSetIP = a.Unmap()
	}
	for i, p := range m.GetPorts() {
		sp, err := parsePort(fmt.Sprintf("imports[%s].ports[%d]", key, i), p.GetPort())
		if err != nil {
			return nil, err
		}
		if p.GetEgressPort() > 65535 {
			return nil, &federation.FieldError{Field: fmt.Sprintf("imports[%s].ports[%d].egress_port", key, i), Value: fmt.Sprint(p.GetEgressPort()), Reason: "must be at most 65535"}
		}
		im.Ports = append(im.Ports, ImportPort{ServicePort: sp, Egress: uint16(p.GetEgressPort())})
	}
	for _, c := range m.GetClusters() {
		name, err := federation.ParseClusterName(c.GetCluster())
		if err != nil {
			return nil, fieldErr(fmt.Sprintf("imports[%s].clusters", key), err)
		}
		ic := ImportCluster{Cluster: name, Conflict: c.GetConflict()}
		for _, g := range c.GetEndpoints() {
			ic.Groups = append(ic.Groups, EndpointGroup{Zone: g.GetZone(), Labels: maps.Clone(g.GetLabels()), Ready: g.GetReady(), Serving: g.GetServing(), Terminating: g.GetTerminating()})
		}
		im.Clusters = append(im.Clusters, ic)
	}
	return im, nil
}

func parseLocal(m *gatewayv1.LocalService) (*LocalService, error) {
	key, err := federation.ParseServiceKey(m.GetService())
	if err != nil {
		return nil, fieldErr("local_services", err)
	}
	ls := &LocalService{Service: key}
	for i, p := range m.GetPorts() {
		sp, err := parsePort(fmt.Sprintf("local_services[%s].ports[%d]", key, i), p)
		if err != nil {
			return nil, err
		}
		ls.Ports = append(ls.Ports, sp)
	}
	for i, e := range m.GetEndpoints() {
		addr, err := netip.ParseAddr(e.GetAddress())
		if err != nil {
			return nil, &federation.FieldError{Field: fmt.Sprintf("local_services[%s].endpoints[%d].address", key, i), Value: e.GetAddress(), Reason: "not an IP address"}
		}
		ep := Endpoint{Addr: addr, Ports: make(map[string]uint16, len(e.GetPorts())), Zone: e.GetZone(), Labels: e.GetLabels(),
			Ready: e.GetReady(), Serving: e.GetServing(), Terminating: e.GetTerminating()}
		for _, p := range e.GetPorts() {
			if p.GetPort() == 0 || p.GetPort() > 65535 {
				return nil, &federation.FieldError{Field: fmt.Sprintf("local_services[%s].endpoints[%d].ports[%s]", key, i, p.GetName()), Value: fmt.Sprint(p.GetPort()), Reason: "must be 1 to 65535"}
			}
			ep.Ports[p.GetName()] = uint16(p.GetPort())
		}
		ls.Endpoints = append(ls.Endpoints, ep)
	}
	return ls, nil
}

func parseCluster(m *gatewayv1.RemoteCluster) (*RemoteCluster, error) {
	name, err := federation.ParseClusterName(m.GetName())
	if err != nil {
		return nil, fieldErr("clusters", err)
	}
	rc := &RemoteCluster{Name: name, Gateways: append([]string(nil), m.GetGatewayAddresses()...)}
	if rc.TrustDomain, err = spiffeid.TrustDomainFromString(m.GetTrustDomain()); err != nil {
		return nil, fieldErr(fmt.Sprintf("clusters[%s].trust_domain", name), err)
	}
	if l := m.GetLocality(); l != nil && l.GetRegion() != "" {
		if rc.Locality, err = federation.NewLocality(l.GetRegion(), l.GetZone(), l.GetSubzone()); err != nil {
			return nil, fieldErr(fmt.Sprintf("clusters[%s]", name), err)
		}
	}
	return rc, nil
}

func fieldErr(field string, err error) error {
	var fe *federation.FieldError
	if errors.As(err, &fe) {
		return fe.WithPrefix(field)
	}
	return &federation.FieldError{Field: field, Reason: err.Error()}
}
