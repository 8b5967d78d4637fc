// Package federation is meshfed's contract: identifier value types and the
// gRPC API (subpackage v1) shared by hub, agent and gateway. It imports
// nothing else from meshfed.
//
// # Identifiers
//
// [ClusterName], [TrustDomain], [ServiceKey] and [Locality] are small
// comparable value types with unexported fields. The only way to obtain a
// non-zero value is through a parsing constructor ([ParseClusterName],
// [ParseTrustDomain], [TrustDomainFromCluster], [ParseServiceKey],
// [NewServiceKey], [NewLocality], [ParseLocality]), so code that holds one
// never validates it again. The zero value of each type is invalid; test for
// it with IsZero. Every type's String method returns the canonical text form,
// and parsing that text yields an equal value.
//
// # Errors
//
// Constructors return a *[FieldError] naming the offending field, the
// rejected value and the rule it broke, including the bound. Every
// *FieldError matches [ErrInvalid] under [errors.Is]; use [errors.As] to
// read the field path, and [FieldError.WithPrefix] to place it inside a
// larger message (for example "join.locality.zone").
//
// # Capabilities
//
// Peers do not compare release versions. At join and at the start of every
// stream each side sends [CapabilityVersion] and the feature names it
// supports; the receiver rejects peers that are too old with [CheckPeer] and
// uses only the features returned by [Negotiate].
package federation
