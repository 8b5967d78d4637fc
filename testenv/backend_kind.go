package testenv

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/meshfed/meshfed/federation"
	"github.com/meshfed/meshfed/testenv/kind"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/kind/pkg/cluster/nodes"
)

// EnvRepoRoot is the meshfed repository the kind backend builds the image
// from and installs deploy/ from; without it, the folder of the module
// github.com/meshfed/meshfed as `go list -m` reports it. (It belongs with
// the other variables in env.go.)
const EnvRepoRoot = "MESHFED_REPO_ROOT"

const (
	// kindWait bounds how long kind waits for a cluster's control plane.
	kindWait = 5 * time.Minute
	// kindImage is the meshfed image built and loaded into every node.
	kindImageTag = "testenv"
	kindImage    = kind.ImageName + ":" + kindImageTag
	// kindBuildTimeout bounds the docker build (a cold build downloads the
	// base images and the Go modules and compiles meshfed).
	kindBuildTimeout = 20 * time.Minute
	// kindStepTimeout bounds each wait of the install: nodes, CRDs, the hub,
	// each agent's join and rollout, the clusters connected.
	kindStepTimeout = 5 * time.Minute
)

// kindCluster is one cluster during startKind.
type kindCluster struct {
	spec  Cluster
	kc    *kind.Cluster
	env   *ClusterEnv
	nodes []nodes.Node
	addrs []kind.NodeAddr
}

// startKind stands up the federation's clusters with kind and installs
// meshfed into them from deploy/ (see docs/testing.md, "The kind backend"):
//
//  1. a kind cluster per cluster, from configs shaped like
//     deploy/kind/*.yaml, while the meshfed image is built;
//  2. the image loaded into every node;
//  3. routes between the clusters' pod ranges;
//  4. the MCS CRDs into every cluster;
//  5. the hub StatefulSet into the first cluster;
//  6. per cluster, the agent, joined with a token from the hub;
//  7. until the hub lists every cluster as connected.
//
// On error every cluster created is deleted.
func startKind(ctx context.Context, specs []Cluster, dir, image string) ([]*ClusterEnv, error) {
	root, err := repoRoot(ctx)
	if err != nil {
		return nil, err
	}
	var ks []kind.Spec
	for _, c := range specs {
		ks = append(ks, kind.Spec{Name: c.Name, Region: c.Region, Zones: []string{c.Zone}})
	}
	cfgs, err := kind.Configs(ks)
	if err != nil {
		return nil, fmt.Errorf("testenv: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}

	buildCtx, cancelBuild := context.WithTimeout(ctx, kindBuildTimeout)
	defer cancelBuild()
	var buildErr error
	built := make(chan struct{})
	go func() {
		defer close(built)
		buildErr = kind.BuildImage(buildCtx, root, kindImage, filepath.Join(dir, "image-build.log"))
	}()

	var cs []*kindCluster
	cleanup := func() error {
		var errs []error
		for _, c := range cs {
			errs = append(errs, c.env.closeKind())
		}
		return errors.Join(errs...)
	}
	fail := func(err error) ([]*ClusterEnv, error) {
		cancelBuild()
		<-built // the build has ended (its error is moot) before the clusters go
		return nil, errors.Join(err, cleanup())
	}
	for i, cfg := range cfgs {
		kc, err := kind.Create(cfg, dir, image, kindWait)
		if err != nil {
			return fail(err)
		}
		c := &kindCluster{spec: specs[i], kc: kc, env: &ClusterEnv{spec: specs[i], closeKind: kc.Delete, kubeconfig: kc.Kubeconfig}}
		cs = append(cs, c)
		c.env.config, err = clientcmd.BuildConfigFromFlags("", kc.Kubeconfig)
		if err == nil {
			c.env.clientset, err = kubernetes.NewForConfig(c.env.config)
		}
		if err == nil {
			c.nodes, err = kc.Nodes()
		}
		if err != nil {
			return fail(fmt.Errorf("testenv: kind cluster %s: %w", cfg.Name, err))
		}
	}
	<-built
	if buildErr != nil {
		return fail(fmt.Errorf("testenv: %w", buildErr))
	}
	if err := installKind(ctx, root, dir, cs); err != nil {
		return fail(err)
	}
	envs := make([]*ClusterEnv, len(cs))
	for i, c := range cs {
		envs[i] = c.env
	}
	return envs, nil
}

// installKind does steps 2 to 7 of startKind.
func installKind(ctx context.Context, root, dir string, cs []*kindCluster) error {
	// 2. The image, into every node that lacks it.
	archive := filepath.Join(dir, "meshfed-image.tar")
	id, err := kind.SaveImage(ctx, kindImage, archive)
	if err != nil {
		return fmt.Errorf("testenv: %w", err)
	}
	for _, c := range cs {
		if _, err := kind.LoadImage(c.nodes, archive, kindImage, id); err != nil {
			return fmt.Errorf("testenv: cluster %s: %w", c.spec.Name, err)
		}
	}
	if err := os.Remove(archive); err != nil {
		return err
	}

	// 3. Pod routes between the clusters.
	var all []kind.NodeAddr
	var allNodes []nodes.Node
	for _, c := range cs {
		ns, err := kind.WaitNodes(ctx, c.env.clientset, len(c.nodes), kindStepTimeout)
		if err == nil {
			c.addrs, err = kind.NodeAddrs(c.spec.Name, ns)
		}
		if err != nil {
			return fmt.Errorf("testenv: cluster %s: %w", c.spec.Name, err)
		}
		all = append(all, c.addrs...)
		allNodes = append(allNodes, c.nodes...)
	}
	routes, err := kind.RoutePlan(all)
	if err == nil {
		err = kind.AddRoutes(allNodes, routes)
	}
	if err != nil {
		return fmt.Errorf("testenv: %w", err)
	}

	// 4. The CRDs, everywhere.
	crds, err := kind.ReadManifests(filepath.Join(root, kind.CRDDir))
	if err != nil {
		return fmt.Errorf("testenv: %w", err)
	}
	var crdNames []string
	for _, o := range crds {
		crdNames = append(crdNames, o.GetName())
	}
	appliers := make([]*kind.Applier, len(cs))
	for i, c := range cs {
		a, err := kind.NewApplier(c.env.config)
		if err == nil {
			err = a.Apply(ctx, crds...)
		}
		if err == nil {
			err = a.WaitEstablished(ctx, kindStepTimeout, crdNames...)
		}
		if err != nil {
			return fmt.Errorf("testenv: cluster %s: %w", c.spec.Name, err)
		}
		appliers[i] = a
	}

	// 5. The hub, in the first cluster.
	hub := cs[0]
	if err := installKindHub(ctx, root, dir, hub, appliers[0]); err != nil {
		return fmt.Errorf("testenv: cluster %s: hub: %w", hub.spec.Name, err)
	}

	// 6. An agent per cluster.
	var hubPods []netip.Prefix
	for _, a := range hub.addrs {
		hubPods = append(hubPods, a.PodCIDRs...)
	}
	var names []string
	for i, c := range cs {
		if err := installKindAgent(ctx, root, dir, hub, c, appliers[i], hubPods); err != nil {
			return fmt.Errorf("testenv: cluster %s: agent: %w", c.spec.Name, err)
		}
		names = append(names, c.spec.Name)
	}

	// 7. Every cluster connected.
	if err := kind.WaitConnected(ctx, hub.kc.Kubeconfig, names, kindStepTimeout); err != nil {
		return fmt.Errorf("testenv: %w", err)
	}
	return nil
}

// installKindHub applies the hub's namespace and encrypt key Secret, then
// deploy/kustomize/hub with the image tag set, and waits until every server
// is ready.
func installKindHub(ctx context.Context, root, dir string, hub *kindCluster, a *kind.Applier) error {
	key, err := kind.GenerateEncryptKey(ctx, kindImage)
	if err != nil {
		return err
	}
	if err := a.Apply(ctx, kind.NamespaceObject(), kind.SecretObject(kind.EncryptKeySecret, kind.EncryptKeyKey, key)); err != nil {
		return err
	}
	overlay := filepath.Join(dir, "manifests", "hub")
	if err := kind.HubOverlay(root, kindImageTag).Write(overlay); err != nil {
		return err
	}
	objs, err := kind.Render(ctx, overlay)
	if err != nil {
		return err
	}
	if err := a.Apply(ctx, objs...); err != nil {
		return err
	}
	return kind.WaitStatefulSet(ctx, hub.env.clientset, kind.Namespace, kind.HubStatefulSet, kindStepTimeout)
}

// installKindAgent joins cluster c: a token from the hub into the Secret
// meshfed-join-token, the agent with the join component until its
// credentials Secret exists, then the agent without it (`meshfed join`
// refuses to run once joined), and once that has rolled out, the token
// Secret deleted.
func installKindAgent(ctx context.Context, root, dir string, hub, c *kindCluster, a *kind.Applier, hubPods []netip.Prefix) error {
	token, err := kind.CreateToken(ctx, hub.kc.Kubeconfig, c.spec.Name)
	if err != nil {
		return err
	}
	jt, err := federation.ParseJoinToken(token)
	if err != nil {
		return fmt.Errorf("token from the hub: %w", err)
	}
	// The agent dials the addresses in the token (and later those in its
	// credentials, from the same servers): they must be routed pod IPs.
	if err := kind.Routable(jt.Addrs, hubPods); err != nil {
		return err
	}
	gw, err := kind.GatewayAddress(c.addrs)
	if err != nil {
		return err
	}
	v := kind.AgentValues{Cluster: c.spec.Name, Region: c.spec.Region, Zone: c.spec.Zone, GatewayAddress: gw.String()}
	tokenSecret := kind.SecretObject(kind.JoinTokenSecret, kind.JoinTokenKey, token)
	if err := a.Apply(ctx, kind.NamespaceObject(), tokenSecret); err != nil {
		return err
	}
	for _, join := range []bool{true, false} {
		phase := "agent"
		if join {
			phase = "join"
		}
		overlay := filepath.Join(dir, "manifests", c.spec.Name, phase)
		if err := kind.AgentOverlay(root, kindImageTag, v, join).Write(overlay); err != nil {
			return err
		}
		objs, err := kind.Render(ctx, overlay)
		if err != nil {
			return err
		}
		if err := a.Apply(ctx, objs...); err != nil {
			return err
		}
		if join {
			cs := c.env.clientset
			if err := kind.WaitSecret(ctx, cs, kind.Namespace, kind.CredentialsSecret, kindStepTimeout,
				kind.DeploymentPodProblems(cs, kind.Namespace, kind.AgentDeployment)); err != nil {
				return fmt.Errorf("join: %w", err)
			}
		}
	}
	if err := kind.WaitDeployment(ctx, c.env.clientset, kind.Namespace, kind.AgentDeployment, kindStepTimeout); err != nil {
		return err
	}
	// Used; and the running agent no longer reads it.
	return a.Delete(ctx, tokenSecret)
}

// repoRoot is $MESHFED_REPO_ROOT, or the folder of the module
// github.com/meshfed/meshfed (`go list -m`: this repository when testing
// in it, the module cache when testing from a module that requires it).
func repoRoot(ctx context.Context) (string, error) {
	if d := os.Getenv(EnvRepoRoot); d != "" {
		abs, err := filepath.Abs(d)
		if err == nil {
			err = kind.CheckRepo(abs)
		}
		if err != nil {
			return "", fmt.Errorf("testenv: $%s: %w", EnvRepoRoot, err)
		}
		return abs, nil
	}
	cmd := exec.CommandContext(ctx, "go", "list", "-m", "-f", "{{.Dir}}", "github.com/meshfed/meshfed")
	out, err := cmd.Output()
	dir := strings.TrimSpace(string(out))
	if err == nil && dir == "" {
		err = errors.New("no folder (the module is not downloaded)")
	}
	if err == nil {
		err = kind.CheckRepo(dir)
	}
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			err = fmt.Errorf("%w: %s", err, strings.TrimSpace(string(ee.Stderr)))
		}
		return "", fmt.Errorf("testenv: finding the meshfed repository with go list -m github.com/meshfed/meshfed: %w (set $%s to a checkout)", err, EnvRepoRoot)
	}
	return dir, nil
}
