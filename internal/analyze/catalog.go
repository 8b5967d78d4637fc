package analyze

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/meshfed/meshfed/federation"
	fedv1 "github.com/meshfed/meshfed/federation/v1"
)

// Catalog is the live federation that policies are checked against: what
// the hub's Admin API reports. Build it with FromAdmin or Fetch, or by
// hand in tests.
type Catalog struct {
	// Clusters are the member clusters.
	Clusters []Cluster
	// Services are the global services: every service that at least one
	// cluster exports.
	Services []Service
	// FederatedTrustDomains are the external trust domains the hub
	// federates with (relationships and external bundles).
	FederatedTrustDomains []federation.TrustDomain
}

// Cluster is a member cluster.
type Cluster struct {
	Name        federation.ClusterName
	TrustDomain federation.TrustDomain
	// Locality is the cluster's region, zone and subzone; zero when the
	// cluster declared none.
	Locality federation.Locality
}

// Service is a global service and its exports.
type Service struct {
	Key     federation.ServiceKey
	Exports []Export
}

// Export is what one cluster exports of a service.
type Export struct {
	Cluster   federation.ClusterName
	Ports     []Port
	Endpoints []EndpointGroup
}

// Port is a service port as exported.
type Port struct {
	Name        string
	Port        uint32
	Protocol    string
	AppProtocol string
}

// EndpointGroup is a group of endpoints of one export that share a zone
// and a label set.
type EndpointGroup struct {
	// Zone is the endpoints' zone, "" when unknown.
	Zone   string
	Labels map[string]string
	// Ready is how many of the group's endpoints are ready.
	Ready int
}

// FromAdmin builds a Catalog from the responses of the hub's Admin API:
// ListClusters (members, trust domains, localities), ListServices (exports
// with ports and endpoint groups), ListFederations and ListBundles
// (federated trust domains: relationships, and bundles no member owns).
// Any response may be nil (nothing of that kind). Exports by clusters that
// are not members are left out. It returns an error naming the record for
// a name the hub should never have stored.
func FromAdmin(clusters *fedv1.ListClustersResponse, services *fedv1.ListServicesResponse, federations *fedv1.ListFederationsResponse, bundles *fedv1.ListBundlesResponse) (*Catalog, error) {
	cat := &Catalog{}
	members := make(map[federation.ClusterName]bool)
	for _, c := range clusters.GetClusters() {
		name, err := federation.ParseClusterName(c.GetName())
		if err != nil {
			return nil, fmt.Errorf("analyze: cluster record %q: %w", c.GetName(), err)
		}
		cl := Cluster{Name: name}
		if td := c.GetTrustDomain(); td != "" {
			if cl.TrustDomain, err = federation.ParseTrustDomain(td); err != nil {
				return nil, fmt.Errorf("analyze: cluster %s: %w", name, err)
			}
		}
		if l := c.GetLocality(); l.GetRegion() != "" {
			if cl.Locality, err = federation.NewLocality(l.GetRegion(), l.GetZone(), l.GetSubzone()); err != nil {
				return nil, fmt.Errorf("analyze: cluster %s: %w", name, err)
			}
		}
		members[name] = true
		cat.Clusters = append(cat.Clusters, cl)
	}
	for _, s := range services.GetServices() {
		key, err := federation.ParseServiceKey(s.GetKey())
		if err != nil {
			return nil, fmt.Errorf("analyze: global service %q: %w", s.GetKey(), err)
		}
		svc := Service{Key: key}
		for _, e := range s.GetExports() {
			name, err := federation.ParseClusterName(e.GetCluster())
			if err != nil {
				return nil, fmt.Errorf("analyze: service %s: export by %q: %w", key, e.GetCluster(), err)
			}
			if !members[name] {
				continue
			}
			ex := Export{Cluster: name}
			for _, p := range e.GetService().GetPorts() {
				ex.Ports = append(ex.Ports, Port{Name: p.GetName(), Port: p.GetPort(), Protocol: p.GetProtocol(), AppProtocol: p.GetAppProtocol()})
			}
			for _, g := range e.GetService().GetEndpoints() {
				ex.Endpoints = append(ex.Endpoints, EndpointGroup{Zone: g.GetZone(), Labels: maps.Clone(g.GetLabels()), Ready: int(g.GetReady())})
			}
			svc.Exports = append(svc.Exports, ex)
		}
		if len(svc.Exports) > 0 {
			cat.Services = append(cat.Services, svc)
		}
	}
	seen := make(map[federation.TrustDomain]bool)
	addTD := func(s, what string) error {
		td, err := federation.ParseTrustDomain(s)
		if err != nil {
			return fmt.Errorf("analyze: %s %q: %w", what, s, err)
		}
		if !seen[td] {
			seen[td] = true
			cat.FederatedTrustDomains = append(cat.FederatedTrustDomains, td)
		}
		return nil
	}
	for _, f := range federations.GetFederations() {
		if err := addTD(f.GetFederation().GetTrustDomain(), "federation"); err != nil {
			return nil, err
		}
	}
	for _, b := range bundles.GetBundles() {
		if b.GetCluster() != "" {
			continue // a member's own bundle
		}
		if err := addTD(b.GetBundle().GetTrustDomain(), "external bundle"); err != nil {
			return nil, err
		}
	}
	cat.sort()
	return cat, nil
}

// Fetch reads the catalog and the stored policies from the hub: ListClusters,
// ListServices, ListFederations, ListBundles and ListPolicies, each under
// ctx. It returns the first call's error unchanged (a gRPC status).
func Fetch(ctx context.Context, admin fedv1.AdminClient) (*Catalog, []*fedv1.TrafficPolicy, error) {
	clusters, err := admin.ListClusters(ctx, &fedv1.ListClustersRequest{})
	if err != nil {
		return nil, nil, err
	}
	services, err := admin.ListServices(ctx, &fedv1.ListServicesRequest{})
	if err != nil {
		return nil, nil, err
	}
	federations, err := admin.ListFederations(ctx, &fedv1.ListFederationsRequest{})
	if err != nil {
		return nil, nil, err
	}
	bundles, err := admin.ListBundles(ctx, &fedv1.ListBundlesRequest{})
	if err != nil {
		return nil, nil, err
	}
	policies, err := admin.ListPolicies(ctx, &fedv1.ListPoliciesRequest{})
	if err != nil {
		return nil, nil, err
	}
	cat, err := FromAdmin(clusters, services, federations, bundles)
	if err != nil {
		return nil, nil, err
	}
	return cat, policies.GetPolicies(), nil
}

// sort orders everything by name, so that messages do not depend on the
// order the hub listed things in.
func (c *Catalog) sort() {
	slices.SortFunc(c.Clusters, func(a, b Cluster) int { return strings.Compare(a.Name.String(), b.Name.String()) })
	slices.SortFunc(c.Services, func(a, b Service) int { return strings.Compare(a.Key.String(), b.Key.String()) })
	for i := range c.Services {
		slices.SortFunc(c.Services[i].Exports, func(a, b Export) int { return strings.Compare(a.Cluster.String(), b.Cluster.String()) })
	}
	slices.SortFunc(c.FederatedTrustDomains, func(a, b federation.TrustDomain) int { return strings.Compare(a.String(), b.String()) })
}
