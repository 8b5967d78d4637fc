// Package gatewayclient is an east-west gateway's side of its agent's
// gateway API (meshfed.gateway.v1.Config): it bootstraps the gateway's
// X509-SVID with the token the agent wrote, renews it at half-life over
// mTLS, and follows the config stream (a snapshot, then deltas) into a
// State and a trust.BundleSet that holds exactly the federated trust
// domains.
//
// It links neither the hub nor client-go: a gateway needs only this,
// gateway/v1 and trust.
package gatewayclient
