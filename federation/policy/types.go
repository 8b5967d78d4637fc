package policy

import (
	"time"

	"github.com/meshfed/meshfed/federation"
)

// APIVersion is the only accepted apiVersion of a GlobalTrafficPolicy.
const APIVersion = "meshfed.io/v1alpha1"

// Kind is the only accepted kind of a GlobalTrafficPolicy.
const Kind = "GlobalTrafficPolicy"

// Limits enforced by Decode and Validate. Errors that break one name the
// field path and the limit.
const (
	// MaxNameLength bounds metadata.name, subset names and route names.
	MaxNameLength = federation.MaxNameLength
	// MaxSubsets bounds spec.subsets.
	MaxSubsets = 16
	// MaxHTTPRoutes bounds spec.http.
	MaxHTTPRoutes = 100
	// MaxTCPRoutes bounds spec.tcp.
	MaxTCPRoutes = 16
	// MaxMatches bounds the match list of one route.
	MaxMatches = 16
	// MaxDestinations bounds the route list (weighted destinations) of one
	// route.
	MaxDestinations = 16
	// MaxHeaders bounds the headers of one match and each of set, add and
	// remove of one header operation.
	MaxHeaders = 32
	// MaxLabels bounds the labels of a subset and the labels and
	// annotations of metadata.
	MaxLabels = 32
	// MaxRegexLength bounds the source text of one regex, in bytes.
	MaxRegexLength = 1024
	// MaxPolicySize bounds the canonical encoding of a whole policy (what
	// Marshal writes and the hub stores), in bytes.
	MaxPolicySize = 64 << 10
	// MaxInputSize bounds the input of Decode, in bytes. It is larger than
	// MaxPolicySize because input may be indented; the canonical encoding
	// must still fit MaxPolicySize.
	MaxInputSize = 1 << 20
	// MinTimeout and MaxTimeout bound every duration of a policy.
	MinTimeout = time.Millisecond
	MaxTimeout = time.Hour
	// MaxRetryAttempts bounds retries.attempts.
	MaxRetryAttempts = 10
	// MaxFailover bounds localityLbSetting.failover and
	// localityLbSetting.distribute, and the "to" map of one distribute rule.
	MaxFailover = 16
	// MaxClusters bounds localityLbSetting.excludeClusters.
	MaxClusters = 64
	// MaxAuthorizationRules bounds each of authorization.allow and
	// authorization.deny.
	MaxAuthorizationRules = 16
	// MaxRuleValues bounds each list (clusters, trustDomains,
	// serviceAccounts) of one authorization rule.
	MaxRuleValues = 64
	// MaxConsecutiveErrors bounds outlierDetection.consecutiveErrors.
	MaxConsecutiveErrors = 1000
	// MaxPoolLimit bounds every count of connectionPool.
	MaxPoolLimit = 1_000_000
	// MaxHeaderValueLength bounds a header value set or added by a header
	// operation, and an exact or prefix string of a match.
	MaxHeaderValueLength = 4096
)

// Failover priority labels: the only values localityLbSetting.failoverPriority
// accepts.
const (
	LabelRegion  = "topology.kubernetes.io/region"
	LabelZone    = "topology.kubernetes.io/zone"
	LabelCluster = "meshfed.io/cluster"
)

// GlobalTrafficPolicy is one policy document: how traffic to one global
// service (spec.host) is routed, balanced and authorized, in every cluster.
// There is at most one policy per host; the hub refuses a second.
//
// A value obtained from Decode is valid. A value built in code must pass
// Validate (Marshal, Compile and ToProto call it).
type GlobalTrafficPolicy struct {
	// APIVersion must be APIVersion.
	APIVersion string `json:"apiVersion"`
	// Kind must be Kind.
	Kind string `json:"kind"`
	// Metadata names the policy.
	Metadata Metadata `json:"metadata"`
	// Spec is the policy itself.
	Spec Spec `json:"spec"`
}

// Metadata names a policy, as a Kubernetes object's metadata does.
type Metadata struct {
	// Name is the policy's name, an RFC 1123 label unique in the
	// federation.
	Name string `json:"name"`
	// Labels are free-form, Kubernetes-style labels (at most MaxLabels).
	Labels map[string]string `json:"labels,omitempty"`
	// Annotations are free-form, Kubernetes-style annotations (at most
	// MaxLabels).
	Annotations map[string]string `json:"annotations,omitempty"`
}

// Spec is the body of a policy. Every field but Host is optional.
type Spec struct {
	// Host is the global service, "name.namespace" (for example
	// "reviews.default"). See GlobalTrafficPolicy.Service.
	Host string `json:"host"`
	// Subsets are named groups of the service's endpoints, by label.
	Subsets []Subset `json:"subsets,omitempty"`
	// LocalityLbSetting steers traffic by locality and away from clusters.
	LocalityLbSetting *LocalityLbSetting `json:"localityLbSetting,omitempty"`
	// OutlierDetection ejects endpoints that keep failing.
	OutlierDetection *OutlierDetection `json:"outlierDetection,omitempty"`
	// ConnectionPool limits connections and requests to the service.
	ConnectionPool *ConnectionPool `json:"connectionPool,omitempty"`
	// HTTP routes, in order: the first whose match matches a request
	// applies.
	HTTP []HTTPRoute `json:"http,omitempty"`
	// TCP routes, in order, for connections that are not HTTP: the first
	// whose match matches applies.
	TCP []TCPRoute `json:"tcp,omitempty"`
	// Authorization says which callers may call the service.
	Authorization *Authorization `json:"authorization,omitempty"`
}

// Subset is a named group of the service's endpoints: those carrying every
// one of Labels.
type Subset struct {
	// Name is an RFC 1123 label, unique among the policy's subsets.
	Name string `json:"name"`
	// Labels an endpoint must all carry (1 to MaxLabels).
	Labels map[string]string `json:"labels"`
}

// LocalityLbSetting is Istio's locality load balancing setting plus
// ExcludeClusters.
type LocalityLbSetting struct {
	// Enabled turns locality load balancing on or off; unset is on.
	Enabled *bool `json:"enabled,omitempty"`
	// Distribute sets weights by locality: traffic from a locality
	// matching From goes to the localities of To in the given proportions.
	// It may not be combined with Failover.
	Distribute []LocalityDistribute `json:"distribute,omitempty"`
	// Failover names, for a region, the region to fail over to when it has
	// no healthy endpoints.
	Failover []LocalityFailover `json:"failover,omitempty"`
	// FailoverPriority orders endpoints by how many of these labels they
	// share with the caller, in order: LabelRegion, LabelZone and
	// LabelCluster only, each at most once.
	FailoverPriority []string `json:"failoverPriority,omitempty"`
	// ExcludeClusters are clusters never to send traffic to, whatever
	// their health.
	ExcludeClusters []string `json:"excludeClusters,omitempty"`
}

// LocalityDistribute is one rule of LocalityLbSetting.Distribute. A
// locality pattern is "region", "region/zone" or "region/zone/subzone",
// where the last part may be "*", or "*" alone.
type LocalityDistribute struct {
	// From is the callers' locality pattern.
	From string `json:"from"`
	// To maps a locality pattern to the percentage of traffic it gets;
	// the weights sum to 100.
	To map[string]int `json:"to"`
}

// LocalityFailover is one rule of LocalityLbSetting.Failover.
type LocalityFailover struct {
	// From is the region whose traffic fails over.
	From string `json:"from"`
	// To is the region it fails over to.
	To string `json:"to"`
}

// OutlierDetection ejects an endpoint from the load-balancing pool after
// ConsecutiveErrors errors in a row. Unset fields take the defaults named
// on each.
type OutlierDetection struct {
	// ConsecutiveErrors is the number of errors in a row (5xx responses,
	// resets, connect failures) that eject an endpoint: 1 to
	// MaxConsecutiveErrors, default 5.
	ConsecutiveErrors int `json:"consecutiveErrors,omitempty"`
	// Interval between ejection sweeps, default 10s.
	Interval Duration `json:"interval,omitempty"`
	// BaseEjectionTime is how long an endpoint stays ejected, multiplied
	// by the number of times it has been ejected; default 30s.
	BaseEjectionTime Duration `json:"baseEjectionTime,omitempty"`
	// MaxEjectionPercent is the most endpoints that may be ejected at once,
	// 0 to 100, default 10.
	MaxEjectionPercent *int `json:"maxEjectionPercent,omitempty"`
	// MinHealthPercent disables ejection while fewer than this percentage
	// of endpoints are healthy, 0 to 100, default 0.
	MinHealthPercent *int `json:"minHealthPercent,omitempty"`
}

// ConnectionPool limits connections and requests to the service from one
// gateway. Unset (zero) limits are unlimited.
type ConnectionPool struct {
	TCP  *TCPSettings  `json:"tcp,omitempty"`
	HTTP *HTTPSettings `json:"http,omitempty"`
}

// TCPSettings are the connection limits of a ConnectionPool.
type TCPSettings struct {
	// MaxConnections to the service, 1 to MaxPoolLimit.
	MaxConnections int `json:"maxConnections,omitempty"`
	// ConnectTimeout for a new connection, MinTimeout to MaxTimeout.
	ConnectTimeout Duration `json:"connectTimeout,omitempty"`
}

// HTTPSettings are the request limits of a ConnectionPool.
type HTTPSettings struct {
	// HTTP1MaxPendingRequests waiting for a connection, 1 to MaxPoolLimit.
	HTTP1MaxPendingRequests int `json:"http1MaxPendingRequests,omitempty"`
	// HTTP2MaxRequests in flight, 1 to MaxPoolLimit.
	HTTP2MaxRequests int `json:"http2MaxRequests,omitempty"`
	// MaxRequestsPerConnection before a connection is closed, 1 to
	// MaxPoolLimit.
	MaxRequestsPerConnection int `json:"maxRequestsPerConnection,omitempty"`
	// MaxRetries in flight, 1 to MaxPoolLimit.
	MaxRetries int `json:"maxRetries,omitempty"`
	// IdleTimeout closes an idle connection, MinTimeout to MaxTimeout.
	IdleTimeout Duration `json:"idleTimeout,omitempty"`
}

// HTTPRoute is one HTTP route: which requests it takes (Match) and what it
// does with them.
type HTTPRoute struct {
	// Name is optional; when set, 1 to MaxNameLength printable ASCII
	// characters, unique among the policy's HTTP routes.
	Name string `json:"name,omitempty"`
	// Match lists alternatives: a request matches the route if it matches
	// any of them. No match matches every request.
	Match []HTTPMatchRequest `json:"match,omitempty"`
	// Rewrite rewrites the path or authority before forwarding.
	Rewrite *HTTPRewrite `json:"rewrite,omitempty"`
	// Route lists the weighted destinations. Empty sends to the service
	// as a whole.
	Route []HTTPRouteDestination `json:"route,omitempty"`
	// Timeout of the whole request, retries included, MinTimeout to
	// MaxTimeout; unset is none.
	Timeout Duration `json:"timeout,omitempty"`
	// Retries retries failed requests; unset is no retries.
	Retries *HTTPRetry `json:"retries,omitempty"`
	// Fault injects delays and aborts.
	Fault *HTTPFaultInjection `json:"fault,omitempty"`
	// Headers are operations on request and response headers.
	Headers *Headers `json:"headers,omitempty"`
}

// HTTPMatchRequest matches a request when every field that is set
// matches.
type HTTPMatchRequest struct {
	// URI matches the path, without the query string.
	URI *StringMatch `json:"uri,omitempty"`
	// Method matches the request method.
	Method *StringMatch `json:"method,omitempty"`
	// Authority matches the authority (Host header).
	Authority *StringMatch `json:"authority,omitempty"`
	// Headers match header values by header name (case-insensitive).
	Headers map[string]StringMatch `json:"headers,omitempty"`
}

// StringMatch matches a string. Exactly one field is set. Regex is RE2
// (Go's regexp) and must match the whole string; Present is allowed in
// header matches only.
type StringMatch struct {
	Exact   string `json:"exact,omitempty"`
	Prefix  string `json:"prefix,omitempty"`
	Regex   string `json:"regex,omitempty"`
	Present bool   `json:"present,omitempty"`
}

// HTTPRewrite rewrites a request before it is forwarded.
type HTTPRewrite struct {
	// URI replaces the matched prefix of the path (see docs/policy.md).
	URI string `json:"uri,omitempty"`
	// Authority replaces the authority (Host header).
	Authority string `json:"authority,omitempty"`
}

// HTTPRouteDestination is a destination with its weight.
type HTTPRouteDestination struct {
	Destination Destination `json:"destination"`
	// Weight is the percentage of the route's traffic, 0 to 100. With
	// more than one destination the weights sum to 100; a lone
	// destination's weight is 100 (unset or 100).
	Weight int `json:"weight,omitempty"`
}

// Destination is where traffic goes: the service's endpoints in Cluster
// (any cluster when empty) in Subset (all endpoints when empty). At least
// one is set.
type Destination struct {
	Cluster string `json:"cluster,omitempty"`
	Subset  string `json:"subset,omitempty"`
}

// HTTPRetry retries a failed request.
type HTTPRetry struct {
	// Attempts is the number of retries, 0 to MaxRetryAttempts (0 turns
	// retries off).
	Attempts int `json:"attempts"`
	// PerTryTimeout bounds each try, MinTimeout to MaxTimeout; unset is
	// the route's timeout.
	PerTryTimeout Duration `json:"perTryTimeout,omitempty"`
	// RetryOn is a comma-separated list of conditions: 5xx, gateway-error,
	// reset, connect-failure, retriable-4xx, refused-stream, or a status
	// code 200..599. Unset is "connect-failure,refused-stream,503".
	RetryOn string `json:"retryOn,omitempty"`
}

// HTTPFaultInjection injects faults into a route's requests.
type HTTPFaultInjection struct {
	Delay *FaultDelay `json:"delay,omitempty"`
	Abort *FaultAbort `json:"abort,omitempty"`
}

// FaultDelay delays a percentage of requests by FixedDelay.
type FaultDelay struct {
	FixedDelay Duration    `json:"fixedDelay"`
	Percentage *Percentage `json:"percentage"`
}

// FaultAbort answers a percentage of requests with HTTPStatus (200..599)
// without forwarding them.
type FaultAbort struct {
	HTTPStatus int         `json:"httpStatus"`
	Percentage *Percentage `json:"percentage"`
}

// Percentage is a percentage, 0 to 100, fractions allowed.
type Percentage struct {
	Value float64 `json:"value"`
}

// Headers are header operations on requests and on responses.
type Headers struct {
	Request  *HeaderOperations `json:"request,omitempty"`
	Response *HeaderOperations `json:"response,omitempty"`
}

// HeaderOperations are applied in the order Remove, Set, Add.
type HeaderOperations struct {
	// Set replaces a header's values.
	Set map[string]string `json:"set,omitempty"`
	// Add appends a value to a header.
	Add map[string]string `json:"add,omitempty"`
	// Remove deletes headers.
	Remove []string `json:"remove,omitempty"`
}

// TCPRoute is one TCP route.
type TCPRoute struct {
	// Match lists alternatives; no match matches every connection.
	Match []L4MatchAttributes `json:"match,omitempty"`
	// Route lists the weighted destinations, as an HTTP route's.
	Route []RouteDestination `json:"route,omitempty"`
}

// L4MatchAttributes matches a connection.
type L4MatchAttributes struct {
	// Port is the service port the connection is for, 1 to 65535.
	Port int `json:"port,omitempty"`
}

// RouteDestination is a TCP destination with its weight; the rules of
// HTTPRouteDestination apply.
type RouteDestination struct {
	Destination Destination `json:"destination"`
	Weight      int         `json:"weight,omitempty"`
}

// Authorization says who may call the service, enforced by the receiving
// gateway. A caller is refused if it matches a Deny rule; otherwise it is
// allowed if it matches an Allow rule, or if DenyByDefault is false.
type Authorization struct {
	// DenyByDefault refuses callers that match no Allow rule. Allow rules
	// require it.
	DenyByDefault bool `json:"denyByDefault,omitempty"`
	// Allow rules, at most MaxAuthorizationRules.
	Allow []AuthorizationRule `json:"allow,omitempty"`
	// Deny rules, at most MaxAuthorizationRules.
	Deny []AuthorizationRule `json:"deny,omitempty"`
}

// AuthorizationRule matches a caller when each list that is set contains
// the caller's value (an AND of the lists, an OR within a list). At least
// one list is set.
type AuthorizationRule struct {
	// Clusters are source cluster names.
	Clusters []string `json:"clusters,omitempty"`
	// TrustDomains are SPIFFE trust domain names.
	TrustDomains []string `json:"trustDomains,omitempty"`
	// ServiceAccounts are "namespace/name", or "namespace/*" for every
	// service account of a namespace.
	ServiceAccounts []string `json:"serviceAccounts,omitempty"`
}
