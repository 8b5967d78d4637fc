package devenv

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"

	"github.com/meshfed/meshfed/federation"
)

// WorkloadKind is what a sample workload serves.
type WorkloadKind string

// Workload kinds.
const (
	// KindHTTP answers every HTTP request with a JSON Reply.
	KindHTTP WorkloadKind = "http"
	// KindTCP echoes every byte it reads.
	KindTCP WorkloadKind = "tcp"
)

// ParseWorkloadKind returns s as a WorkloadKind, or a *federation.FieldError
// on field "kind".
func ParseWorkloadKind(s string) (WorkloadKind, error) {
	switch k := WorkloadKind(s); k {
	case KindHTTP, KindTCP:
		return k, nil
	}
	return "", &federation.FieldError{Field: "kind", Value: s, Reason: "must be http or tcp"}
}

// service is a sample global service: one port, served by workloads of one
// kind.
type service struct {
	key      federation.ServiceKey
	port     uint32 // the service port
	portName string
	protocol string // as the file catalog spells it
	kind     WorkloadKind
}

// The sample services.
var (
	reviews = service{key: federation.MustServiceKey("default/reviews"), port: 8080, portName: "http", protocol: "HTTP", kind: KindHTTP}
	ratings = service{key: federation.MustServiceKey("default/ratings"), port: 9090, portName: "tcp", protocol: "TCP", kind: KindTCP}
)

// services are every sample service; each cluster imports all of them.
var services = []service{reviews, ratings}

// EgressKey is how dev.json names a service port: "namespace/name:port".
func EgressKey(k federation.ServiceKey, port uint32) string {
	return k.String() + ":" + strconv.FormatUint(uint64(port), 10)
}

// export is a service a cluster exports, with how many workload instances
// serve it there.
type export struct {
	svc       service
	instances int
}

// clusterSpec is one member cluster of the dev federation.
type clusterSpec struct {
	name     federation.ClusterName
	locality federation.Locality
	exports  []export
}

// workloads returns the cluster's workload instances in port order.
func (c clusterSpec) workloads() []workloadSpec {
	var ws []workloadSpec
	for _, e := range c.exports {
		for i := range e.instances {
			ws = append(ws, workloadSpec{svc: e.svc, instance: fmt.Sprintf("%s-%d", e.svc.key.Name(), i)})
		}
	}
	return ws
}

// workloadSpec is one instance of a sample workload.
type workloadSpec struct {
	svc      service
	instance string
}

func mustLocality(region, zone string) federation.Locality {
	l, err := federation.NewLocality(region, zone, "")
	if err != nil {
		panic(err)
	}
	return l
}

// topology is the dev federation: east and west export default/reviews,
// central default/ratings.
var topology = []clusterSpec{
	{name: federation.MustClusterName("east"), locality: mustLocality("us-east", "us-east-1a"), exports: []export{{reviews, 2}}},
	{name: federation.MustClusterName("west"), locality: mustLocality("us-west", "us-west-1a"), exports: []export{{reviews, 2}}},
	{name: federation.MustClusterName("central"), locality: mustLocality("eu-central", "eu-central-1a"), exports: []export{{ratings, 2}}},
}

// Servers is the number of hub servers.
const Servers = 3

// The port plan, relative to the base port B:
//
//	B+10*i+{0,1,2,3}   hub server i: gRPC, Raft, gossip, HTTP
//	B+30               meshfed dev's control API (fail, heal)
//	B+50+10*j+0        cluster j's agent: HTTP (/state, /readyz)
//	B+50+10*j+1        cluster j's agent: gateway API
//	B+50+10*j+2        cluster j's gateway: QUIC ingress (UDP)
//	B+50+10*j+3        cluster j's gateway: /metrics, /readyz
//	B+50+10*j+4        cluster j's agent: clusterset.local DNS (UDP and TCP)
//	B+50+10*j+5+k      cluster j's workload k
//	B+100+20*j+0..19   cluster j's egress port range
//
// Clusters are numbered as in the topology: east 0, west 1, central 2.
const (
	clusterPortBase   = 50
	clusterPortStride = 10
	maxWorkloads      = clusterPortStride - 5
	egressPortBase    = 100
	egressRangeSize   = 20
	// PortSpan is how many consecutive ports from the base port the plan
	// uses.
	PortSpan = egressPortBase + egressRangeSize*3
	// MinBasePort and MaxBasePort bound Config.BasePort.
	MinBasePort = 1024
	MaxBasePort = 65535 - PortSpan + 1
)

// ServerPorts are hub server i's ports.
type ServerPorts struct{ GRPC, Raft, Gossip, HTTP int }

// ClusterPorts are cluster j's ports.
type ClusterPorts struct {
	AgentHTTP, GatewayAPI, Ingress, Metrics int
	// DNS is the agent's clusterset.local server, UDP and TCP.
	DNS int
	// Workloads[k] is workload k's listen port.
	Workloads []int
	// EgressMin..EgressMax is the egress range the agent assigns from.
	EgressMin, EgressMax int
}

// Ports is the port plan from a base port.
type Ports struct{ Base int }

// controlPort is the control API's offset from the base port.
const controlPort = 30

// Control returns the control API's port.
func (p Ports) Control() int { return p.Base + controlPort }

// Server returns hub server i's ports.
func (p Ports) Server(i int) ServerPorts {
	b := p.Base + 10*i
	return ServerPorts{GRPC: b, Raft: b + 1, Gossip: b + 2, HTTP: b + 3}
}

// Cluster returns cluster j's ports, with n workload ports.
func (p Ports) Cluster(j, n int) ClusterPorts {
	b := p.Base + clusterPortBase + clusterPortStride*j
	c := ClusterPorts{AgentHTTP: b, GatewayAPI: b + 1, Ingress: b + 2, Metrics: b + 3, DNS: b + 4,
		EgressMin: p.Base + egressPortBase + egressRangeSize*j}
	c.EgressMax = c.EgressMin + egressRangeSize - 1
	for k := range n {
		c.Workloads = append(c.Workloads, b+5+k)
	}
	return c
}

// loopback is host:port on 127.0.0.1.
func loopback(port int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) }

// ClusterSetIPs is the prefix cluster j's imports get their ClusterSetIPs
// from: 127.H.L.16j/28, where H.L is the base port's two bytes, so that
// two dev federations (on different base ports) and the clusters of one
// never share an address, and none is 127.0.0.x (the base port is at least
// 1024). The gateway of cluster j listens on these addresses at each
// imported service's own port.
func (p Ports) ClusterSetIPs(j int) netip.Prefix {
	a := netip.AddrFrom4([4]byte{127, byte(p.Base >> 8), byte(p.Base), byte(16 * j)})
	return netip.PrefixFrom(a, 28)
}
