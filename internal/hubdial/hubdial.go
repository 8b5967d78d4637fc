// Package hubdial opens the gRPC connection to a hub's servers: every
// listed address behind one client connection, calls balanced round-robin
// across them, and reads retried on Unavailable so that a server still
// catching up or restarting sends the call on to another. The operator
// CLI, the agent and a hub server forwarding to another dial with it; the
// TLS config (who the servers must be) is the caller's, usually from
// internal/hubtls.
package hubdial

import (
	"crypto/tls"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"
)

// serviceConfig balances round-robin and retries reads on Unavailable,
// which lets round_robin move on to another hub server (e.g. one that is
// still catching up).
const serviceConfig = `{
  "loadBalancingConfig": [{"round_robin": {}}],
  "methodConfig": [{
    "name": [
      {"service": "meshfed.federation.v1.Admin", "method": "ListTokens"},
      {"service": "meshfed.federation.v1.Admin", "method": "ListClusters"},
      {"service": "meshfed.federation.v1.Admin", "method": "DescribeCluster"},
      {"service": "meshfed.federation.v1.Admin", "method": "ListServices"},
      {"service": "meshfed.federation.v1.Admin", "method": "ListPolicies"},
      {"service": "meshfed.federation.v1.Admin", "method": "Status"}
    ],
    "retryPolicy": {
      "maxAttempts": 5,
      "initialBackoff": "0.1s",
      "maxBackoff": "1s",
      "backoffMultiplier": 2,
      "retryableStatusCodes": ["UNAVAILABLE"]
    }
  }]
}`

// Dial connects to the hub servers listed in addrs (host:port) with tlsCfg,
// balancing calls across them and retrying reads on Unavailable. opts come
// after its own, so a caller may override them.
func Dial(addrs []string, tlsCfg *tls.Config, opts ...grpc.DialOption) (*grpc.ClientConn, error) {
	r := manual.NewBuilderWithScheme("meshfed")
	var rs []resolver.Address
	for _, a := range addrs {
		rs = append(rs, resolver.Address{Addr: a})
	}
	r.InitialState(resolver.State{Addresses: rs})
	opts = append([]grpc.DialOption{
		grpc.WithResolvers(r),
		grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg)),
		grpc.WithDefaultServiceConfig(serviceConfig),
	}, opts...)
	return grpc.NewClient(r.Scheme()+":///hub", opts...)
}
