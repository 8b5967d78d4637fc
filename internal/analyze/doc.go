// Package analyze is `meshfed analyze`: it checks GlobalTrafficPolicies
// against the live federated catalog (member clusters and their
// localities, each cluster's exports with ports and endpoint groups, and
// the trust domains of members and federations) and reports what would
// misroute, refuse or silently ignore traffic, as coded messages
// (MF0001...) with a severity, the resource and a field path.
//
// The checks are pure: [Analyze] takes a [Catalog] (built from the hub's
// Admin API responses by [FromAdmin], or fetched by [Fetch]) and the
// policies, and returns sorted messages. [Policies] assembles what is
// analyzed from the hub's stored policies and policy files given with -f,
// a file's policy replacing the hub's of the same name. The rules of a
// valid policy are package policy's alone: a policy that fails them is
// reported as MF0001 with policy's own field errors, and the other checks
// use policy.Compile's matchers (subsets, locality patterns, regexes) so
// that analyze and the gateways agree.
//
// docs/analyze.md lists every code with its severity, meaning, an example
// and the fix; [Codes] is the same list in code.
package analyze
