// Package policy is the GlobalTrafficPolicy resource: how traffic to one
// global service is routed, balanced and authorized in every cluster of the
// federation. Its language follows Istio's VirtualService and
// DestinationRule; docs/policy.md is the reference of every field.
//
// One rule in one place: the hub validates policies with [Decode] (which
// validates) before storing them through Raft as the canonical encoding of
// [Marshal], carried in federationv1.TrafficPolicy (see [ToProto] and
// [FromProto]); the CLI reads policy files with package policyfile, which
// ends in Decode; and gateways turn a policy into a [Compiled] with
// [Compile], once per revision, and consult it for every request without
// locks or allocation.
//
// Errors are *[FieldError] values naming the field path and the bound;
// every one matches federation.ErrInvalid under errors.Is.
//
// The package imports only the standard library, package federation (and
// its v1 API) and go-spiffe's spiffeid, so that the data plane can import
// it.
package policy
