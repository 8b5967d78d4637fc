// Package kind is testenv's kind backend: it turns a list of clusters with
// regions and zones into kind cluster configs shaped like deploy/kind/*.yaml,
// creates and deletes those clusters with the sigs.k8s.io/kind library, and
// provides the steps that install meshfed into them from deploy/:
//
//   - the image: [BuildImage] (docker build of deploy/Dockerfile),
//     [SaveImage] and [LoadImage] (what `kind load docker-image` does, with
//     the library's nodeutils);
//   - pod routing between clusters ([NodeAddrs], [RoutePlan], [AddRoutes]),
//     so that agents reach the hub servers' advertised pod IPs;
//   - manifests: [ReadManifests] (deploy/crds), [Overlay] and [Render]
//     (deploy/kustomize/hub and agent, rendered with the kustomize library),
//     and [Applier] (server-side apply through the dynamic client);
//   - the hub and the agents: [HubCommand], [CreateToken], and waits for
//     nodes, StatefulSets, Deployments, Secrets and connected clusters.
//
// testenv sequences these steps when MESHFED_TESTENV_BACKEND=kind; see
// docs/testing.md. Docker (or Podman) with the kind node image, and
// kubectl (for `kubectl exec` into the hub pod), must be installed. Config generation, overlays, rendering,
// routing plans and the image-load plan are pure or local and unit-tested;
// the rest needs Docker and is tested only where it is available.
package kind

import (
	"fmt"
	"os"
	"path/filepath"
	"time"

	"sigs.k8s.io/kind/pkg/apis/config/v1alpha4"
	"sigs.k8s.io/kind/pkg/cluster"
	"sigs.k8s.io/kind/pkg/cluster/nodes"
	"sigs.k8s.io/yaml"
)

// The node labels carrying a node's locality, the well-known topology labels
// from which the (planned) agent derives localities.
const (
	RegionLabel = "topology.kubernetes.io/region"
	ZoneLabel   = "topology.kubernetes.io/zone"
)

// MaxClusters is how many clusters get non-overlapping address ranges: pods
// in 10.<10·(i+1)>.0.0/16, services in 10.<100+10·(i+1)>.0.0/16.
const MaxClusters = 9

// Spec is one cluster to create: its name (the kind cluster is
// "meshfed-<name>"), its region, and its zones. The control plane and the
// first worker are in Zones[0], and each further zone gets one worker.
type Spec struct {
	Name   string
	Region string
	Zones  []string
}

// ClusterName is the kind cluster name for a meshfed cluster name.
func ClusterName(name string) string { return "meshfed-" + name }

// Configs returns one kind config per spec, the i-th with the i-th address
// ranges, in the shape of deploy/kind/*.yaml (a test checks that Configs
// reproduces deploy/kind/east.yaml and west.yaml).
func Configs(specs []Spec) ([]*v1alpha4.Cluster, error) {
	if len(specs) == 0 || len(specs) > MaxClusters {
		return nil, fmt.Errorf("kind: %d clusters: must be 1 to %d", len(specs), MaxClusters)
	}
	seen := map[string]bool{}
	var cfgs []*v1alpha4.Cluster
	for i, s := range specs {
		field := fmt.Sprintf("clusters[%d]", i)
		switch {
		case s.Name == "":
			return nil, fmt.Errorf("kind: %s.name: must not be empty", field)
		case seen[s.Name]:
			return nil, fmt.Errorf("kind: %s.name: %q is used twice", field, s.Name)
		case s.Region == "":
			return nil, fmt.Errorf("kind: %s.region: must not be empty", field)
		case len(s.Zones) == 0:
			return nil, fmt.Errorf("kind: %s.zones: must name at least 1 zone", field)
		}
		seen[s.Name] = true
		cfg := &v1alpha4.Cluster{
			TypeMeta: v1alpha4.TypeMeta{Kind: "Cluster", APIVersion: "kind.x-k8s.io/v1alpha4"},
			Name:     ClusterName(s.Name),
			Networking: v1alpha4.Networking{
				PodSubnet:     fmt.Sprintf("10.%d.0.0/16", 10*(i+1)),
				ServiceSubnet: fmt.Sprintf("10.%d.0.0/16", 100+10*(i+1)),
			},
		}
		node := func(role v1alpha4.NodeRole, zone string) v1alpha4.Node {
			return v1alpha4.Node{Role: role, Labels: map[string]string{RegionLabel: s.Region, ZoneLabel: zone}}
		}
		cfg.Nodes = append(cfg.Nodes, node(v1alpha4.ControlPlaneRole, s.Zones[0]))
		for _, z := range s.Zones {
			if z == "" {
				return nil, fmt.Errorf("kind: %s.zones: a zone is empty", field)
			}
			cfg.Nodes = append(cfg.Nodes, node(v1alpha4.WorkerRole, z))
		}
		cfgs = append(cfgs, cfg)
	}
	return cfgs, nil
}

// Marshal renders a config as the YAML `kind create cluster --config` reads.
func Marshal(cfg *v1alpha4.Cluster) ([]byte, error) { return yaml.Marshal(cfg) }

// Unmarshal decodes a kind config strictly: unknown fields are errors.
func Unmarshal(data []byte) (*v1alpha4.Cluster, error) {
	var cfg v1alpha4.Cluster
	if err := yaml.UnmarshalStrict(data, &cfg); err != nil {
		return nil, fmt.Errorf("kind: config: %w", err)
	}
	return &cfg, nil
}

// Cluster is a kind cluster created by [Create].
type Cluster struct {
	Name       string // the kind cluster name, meshfed-<name>
	Kubeconfig string // path of its kubeconfig (the API server as seen from the host)
	provider   *cluster.Provider
}

// Create creates the kind cluster of cfg, waits up to wait for its control
// plane to be ready, and writes its kubeconfig into dir. The node image is
// kind's default for this library version unless image is set.
func Create(cfg *v1alpha4.Cluster, dir, image string, wait time.Duration) (*Cluster, error) {
	kubeconfig := filepath.Join(dir, cfg.Name+".kubeconfig")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	p := cluster.NewProvider()
	opts := []cluster.CreateOption{
		cluster.CreateWithV1Alpha4Config(cfg),
		cluster.CreateWithKubeconfigPath(kubeconfig),
		cluster.CreateWithWaitForReady(wait),
		cluster.CreateWithDisplayUsage(false),
		cluster.CreateWithDisplaySalutation(false),
	}
	if image != "" {
		opts = append(opts, cluster.CreateWithNodeImage(image))
	}
	if err := p.Create(cfg.Name, opts...); err != nil {
		return nil, fmt.Errorf("kind: create %s: %w", cfg.Name, err)
	}
	return &Cluster{Name: cfg.Name, Kubeconfig: kubeconfig, provider: p}, nil
}

// Nodes lists the cluster's node containers (not an external load
// balancer), for [LoadImage] and [AddRoutes].
func (c *Cluster) Nodes() ([]nodes.Node, error) {
	ns, err := c.provider.ListInternalNodes(c.Name)
	if err != nil {
		return nil, fmt.Errorf("kind: nodes of %s: %w", c.Name, err)
	}
	if len(ns) == 0 {
		return nil, fmt.Errorf("kind: nodes of %s: none", c.Name)
	}
	return ns, nil
}

// Delete deletes the cluster.
func (c *Cluster) Delete() error {
	if err := c.provider.Delete(c.Name, c.Kubeconfig); err != nil {
		return fmt.Errorf("kind: delete %s: %w", c.Name, err)
	}
	return nil
}
