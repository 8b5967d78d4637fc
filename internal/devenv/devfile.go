package devenv

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
)

// FileName is the name of the description Env writes into the state
// directory once the federation carries traffic, and rewrites when a
// restarted child has a new pid. It is written atomically (a temporary
// file renamed over it) and removed at the next start until that one is
// ready, so a dev.json that exists describes a federation that was ready.
const FileName = "dev.json"

// File is dev.json. Its field names are relied on by scripts and tests.
type File struct {
	// Dir is the state directory.
	Dir string `json:"dir"`
	// BasePort is the base of the port plan.
	BasePort int `json:"basePort"`
	// ReadySeconds is how long the start took, to this file first written.
	ReadySeconds float64 `json:"readySeconds"`
	// PID is the supervisor's (meshfed dev's) process id.
	PID      int       `json:"pid"`
	Hub      Hub       `json:"hub"`
	Clusters []Cluster `json:"clusters"`
	// Control is where meshfed dev fail and heal reach the running meshfed
	// dev, and the bearer token they send.
	Control Control `json:"control"`
	// Failures are the faults in force (meshfed dev fail), until healed;
	// the pid of a process they stopped is 0.
	Failures []Failure `json:"failures"`
}

// Hub is the hub part of dev.json.
type Hub struct {
	// Config is the admin client config (admin.yaml) for --config or
	// MESHFED_CONFIG.
	Config  string   `json:"config"`
	Servers []Server `json:"servers"`
}

// Server is one hub server.
type Server struct {
	Name string `json:"name"`
	GRPC string `json:"grpc"`
	HTTP string `json:"http"`
	PID  int    `json:"pid"`
	Log  string `json:"log"`
}

// Cluster is one member cluster.
type Cluster struct {
	Name     string    `json:"name"`
	Region   string    `json:"region"`
	Zone     string    `json:"zone"`
	Agent    Agent     `json:"agent"`
	Gateways []Gateway `json:"gateways"`
	// Egress maps "namespace/name:port" (EgressKey) to the host:port where
	// this cluster's workloads reach that global service: its gateway's
	// egress listener.
	Egress map[string]string `json:"egress"`
	// DNS is host:port (UDP and TCP) of the agent's clusterset.local
	// server: <svc>.<ns>.svc.clusterset.local resolves to the service's
	// ClusterSetIP, where the gateway listens on the service's own port,
	// as in a cluster.
	DNS string `json:"dns"`
	// ClusterSetIPs maps "namespace/name" to that address.
	ClusterSetIPs map[string]string `json:"clusterSetIPs"`
	Workloads     []Workload        `json:"workloads"`
	// HubVia are the addresses the agent dials the hub servers at: relays
	// meshfed dev owns, which meshfed dev fail --what hub-link cuts.
	HubVia []string `json:"hubVia"`
}

// Agent is a cluster's agent.
type Agent struct {
	PID int `json:"pid"`
	// HTTP serves /state, /readyz and /metrics.
	HTTP string `json:"http"`
	// GatewayAPI is where the cluster's gateways get their config.
	GatewayAPI string `json:"gatewayAPI"`
	DataDir    string `json:"dataDir"`
	// Catalog is the agent's file catalog.
	Catalog string `json:"catalog"`
	Log     string `json:"log"`
}

// Gateway is one east-west gateway replica.
type Gateway struct {
	Instance string `json:"instance"`
	PID      int    `json:"pid"`
	// Ingress is the QUIC (UDP) address remote gateways dial.
	Ingress string `json:"ingress"`
	// Metrics serves /metrics, /healthz and /readyz.
	Metrics string `json:"metrics"`
	Log     string `json:"log"`
}

// Workload is one sample workload instance, an endpoint of Service in its
// cluster's catalog.
type Workload struct {
	Service  string `json:"service"`
	Instance string `json:"instance"`
	Kind     string `json:"kind"`
	Address  string `json:"address"`
	PID      int    `json:"pid"`
	Log      string `json:"log"`
}

// ReadFile reads and decodes dev.json from the state directory dir.
func ReadFile(dir string) (*File, error) {
	b, err := os.ReadFile(filepath.Join(dir, FileName))
	if err != nil {
		return nil, err
	}
	var f File
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("devenv: %s: %w", FileName, err)
	}
	return &f, nil
}

// writeAtomic writes b to path through a temporary file in the same
// directory renamed over it, so a reader sees the old or the new content.
func writeAtomic(path string, b []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer func() { _ = os.Remove(tmp.Name()) }() // after a rename: nothing left to remove
	if _, err := tmp.Write(b); err != nil {
		_ = tmp.Close()
		return err
	}
	if err := tmp.Chmod(mode); err != nil {
		_ = tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
