package analyze

// The codes, in docs/analyze.md's order. Each has one severity.
const (
	// InvalidPolicy: the policy breaks a rule of package policy (for
	// example route weights that do not sum to 100); the hub refuses it.
	InvalidPolicy Code = "MF0001"
	// UnknownService: spec.host names a service no member exports.
	UnknownService Code = "MF0002"
	// UnknownCluster: a route destination names a cluster that is not a
	// member.
	UnknownCluster Code = "MF0003"
	// ClusterNotExporting: a route destination names a member that does
	// not export the service.
	ClusterNotExporting Code = "MF0004"
	// EmptySubsetDestination: a route destination's subset selects no
	// endpoint where the destination sends.
	EmptySubsetDestination Code = "MF0005"
	// SubsetMissingInCluster: a subset's labels match no endpoint in a
	// cluster that exports the service.
	SubsetMissingInCluster Code = "MF0006"
	// NoReadyEndpoints: a failover target region or a route destination
	// has endpoints of the service, none of them ready.
	NoReadyEndpoints Code = "MF0007"
	// ShadowedRoute: every request a route (or one of its match
	// alternatives) matches is taken by an earlier route.
	ShadowedRoute Code = "MF0008"
	// RetriesExceedTimeout: the first try and the retries, each up to
	// perTryTimeout, take longer than the route's timeout.
	RetriesExceedTimeout Code = "MF0009"
	// PortConflict: clusters export one port of a service with different
	// names or protocols.
	PortConflict Code = "MF0010"
	// PortMissing: some clusters export a port of a service that others
	// do not.
	PortMissing Code = "MF0011"
	// UnknownTrustDomain: an authorization rule names a trust domain that
	// is neither a member's nor federated.
	UnknownTrustDomain Code = "MF0012"
	// OutlierNeverEjects: outlier detection that can never eject an
	// endpoint.
	OutlierNeverEjects Code = "MF0013"
	// UnknownLocality: a locality setting names a region, locality
	// pattern or failover priority label that no cluster has.
	UnknownLocality Code = "MF0014"
	// UnknownClusterReference: excludeClusters or an authorization rule
	// names a cluster that is not a member.
	UnknownClusterReference Code = "MF0015"
	// AllClustersExcluded: excludeClusters names every cluster that
	// exports the service.
	AllClustersExcluded Code = "MF0016"
	// PolicyConflict: two policies have one name or one host.
	PolicyConflict Code = "MF0017"
)

// CodeInfo describes a code.
type CodeInfo struct {
	Code     Code
	Name     string
	Severity Severity
	// Summary is one line for docs and help.
	Summary string
}

var codes = []CodeInfo{
	{InvalidPolicy, "InvalidPolicy", Error, "the policy breaks a rule of package policy (weights that do not sum to 100, a subset no spec.subsets entry defines, ...); the hub refuses it"},
	{UnknownService, "UnknownService", Warning, "spec.host names a service that no member cluster exports"},
	{UnknownCluster, "UnknownCluster", Error, "a route destination names a cluster that is not a member"},
	{ClusterNotExporting, "ClusterNotExporting", Error, "a route destination names a member cluster that does not export the service"},
	{EmptySubsetDestination, "EmptySubsetDestination", Error, "a route destination's subset selects no endpoint in the clusters it sends to"},
	{SubsetMissingInCluster, "SubsetMissingInCluster", Warning, "a subset's labels match no endpoint in some cluster that exports the service"},
	{NoReadyEndpoints, "NoReadyEndpoints", Warning, "a failover target region or a route destination has no ready endpoint of the service"},
	{ShadowedRoute, "ShadowedRoute", Warning, "a route, or one of its match alternatives, is never reached: an earlier route takes every request it matches"},
	{RetriesExceedTimeout, "RetriesExceedTimeout", Warning, "the first try and the retries, each up to perTryTimeout, take longer than the route's timeout"},
	{PortConflict, "PortConflict", Error, "clusters export one port of a service with different names or protocols"},
	{PortMissing, "PortMissing", Warning, "some clusters export a port of a service that others do not"},
	{UnknownTrustDomain, "UnknownTrustDomain", Warning, "an authorization rule names a trust domain that is neither a member's nor federated"},
	{OutlierNeverEjects, "OutlierNeverEjects", Warning, "outlier detection can never eject an endpoint"},
	{UnknownLocality, "UnknownLocality", Warning, "a failover region, distribute pattern or failover priority label matches no cluster or endpoint"},
	{UnknownClusterReference, "UnknownClusterReference", Warning, "excludeClusters or an authorization rule names a cluster that is not a member"},
	{AllClustersExcluded, "AllClustersExcluded", Error, "excludeClusters names every cluster that exports the service"},
	{PolicyConflict, "PolicyConflict", Error, "two policies have one name (in different files) or one host"},
}

// Codes returns every code, in order.
func Codes() []CodeInfo { return append([]CodeInfo(nil), codes...) }

// info returns the CodeInfo of c; it panics on an unknown code, a bug.
func info(c Code) CodeInfo {
	for _, ci := range codes {
		if ci.Code == c {
			return ci
		}
	}
	panic("analyze: unknown code " + string(c))
}
