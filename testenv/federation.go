package testenv

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshfed/meshfed/federation"
	"github.com/meshfed/meshfed/testenv/wan"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	mcsclient "sigs.k8s.io/mcs-api/pkg/client/clientset/versioned"
)

// Backend is how a federation's clusters are made.
type Backend string

const (
	// BackendProcess runs etcd and kube-apiserver processes per cluster on
	// loopback. It is the default.
	BackendProcess Backend = "process"
	// BackendKind creates a kind cluster per cluster (Docker and the kind
	// node image are needed); see docs/testing.md.
	BackendKind Backend = "kind"
)

// Cluster describes one member cluster of a federation.
type Cluster struct {
	Name   string // a DNS label, unique in the federation
	Region string
	Zone   string
	// Pods makes the cluster run workloads as a real one does, simulated:
	// kube-scheduler, kube-controller-manager and kwok beside its control
	// plane (built by `make testenv-pod-bins`). Deployments make pods, the
	// pods are bound to one kwok node, go Running and Ready with an IP from
	// [PodCIDR], and EndpointSlices follow. No container runs: nothing
	// answers on a pod IP, and there is no exec. Kind clusters have real
	// nodes and ignore it.
	Pods bool
}

// Options describe the federation [Start] and [New] stand up.
type Options struct {
	// HubServers is the number of `meshfed hub` processes: 0 (no hub), 1, 3
	// or 5 (up to 7).
	HubServers int
	// Clusters are the member clusters, each with its own control plane.
	Clusters []Cluster
	// Seed seeds the random sources of every link; the same seed and the
	// same traffic give the same jitter and drops. 0 is a fixed default.
	Seed uint64
	// ReadyTimeout bounds how long each process may take to become ready
	// (default 60 s; a loaded 2-core machine starting three API servers at
	// once needs ~10 s).
	ReadyTimeout time.Duration
	// Dir holds every file of the federation (data, certificates, logs).
	// Start uses t.TempDir(); New makes a temporary folder that Close
	// removes. A Dir given here is left in place.
	Dir string
	// Backend selects how clusters are made; "" means
	// $MESHFED_TESTENV_BACKEND, or BackendProcess when that is unset.
	Backend Backend
	// KindNodeImage is the kind node image (BackendKind only); "" is the
	// kind library's default.
	KindNodeImage string
	// NoAgents leaves the clusters without agents (tests that run their
	// own). By default, with a hub, every cluster gets the MCS CRDs and a
	// joined `meshfed agent` process.
	NoAgents bool
	// NoGateways leaves the clusters without east-west gateways. By
	// default every cluster with an agent gets one `meshfed gateway`.
	NoGateways bool
	// DirectGateways makes gateways advertise their real ingress instead
	// of their gateway link's relay: no simulated WAN on the data path
	// (benchmarks of the gateway itself), and GatewayLink has no effect.
	DirectGateways bool
}

// Validate reports every problem with the options at once, each naming its
// field.
func (o Options) Validate() error {
	var errs []error
	if o.HubServers < 0 || o.HubServers > 7 {
		errs = append(errs, fmt.Errorf("testenv: HubServers: %d: must be 0 to 7", o.HubServers))
	}
	if len(o.Clusters) == 0 && o.HubServers == 0 {
		errs = append(errs, errors.New("testenv: Clusters: a federation needs a cluster or a hub"))
	}
	seen := map[string]bool{}
	for i, c := range o.Clusters {
		field := fmt.Sprintf("Clusters[%d]", i)
		if _, err := federation.ParseClusterName(c.Name); err != nil {
			errs = append(errs, fmt.Errorf("testenv: %s.Name: %w", field, err))
		} else if seen[c.Name] {
			errs = append(errs, fmt.Errorf("testenv: %s.Name: %q is used twice", field, c.Name))
		}
		seen[c.Name] = true
		if _, err := federation.NewLocality(c.Region, c.Zone, ""); err != nil {
			errs = append(errs, fmt.Errorf("testenv: %s: %w", field, err))
		}
	}
	switch o.Backend {
	case BackendKind:
		if o.HubServers > 0 {
			errs = append(errs, fmt.Errorf("testenv: HubServers: %d: the kind backend runs the hub in the first cluster; must be 0", o.HubServers))
		}
	case "", BackendProcess:
	default:
		errs = append(errs, fmt.Errorf("testenv: Backend: %q: must be %q or %q", o.Backend, BackendProcess, BackendKind))
	}
	if o.ReadyTimeout < 0 {
		errs = append(errs, fmt.Errorf("testenv: ReadyTimeout: %v: must be at least 0", o.ReadyTimeout))
	}
	return errors.Join(errs...)
}

// Federation is a running federation: clusters, a hub, and the WAN links
// between clusters.
type Federation struct {
	dir      string
	ownDir   bool
	backend  Backend
	hub      *Hub
	clusters []*ClusterEnv
	byName   map[string]*ClusterEnv
	links    map[[2]string]*wan.Link // keyed by the pair in Options order
	hubLinks map[string]*wan.Link    // cluster → hub
	// gatewayLinks: everyone → a cluster's gateway ingress
	gatewayLinks map[string]*wan.Link
	noGateways   bool
	direct       bool       // Options.DirectGateways
	tb           testing.TB // from Start: helpers fail the test

	closeOnce sync.Once
	closeErr  error
}

// ClusterEnv is one running member cluster.
type ClusterEnv struct {
	spec       Cluster
	cp         *ControlPlane // BackendProcess
	closeKind  func() error  // BackendKind
	config     *rest.Config
	clientset  *kubernetes.Clientset
	kubeconfig string
	fed        *Federation
	index      int      // in Options.Clusters
	agent      *Agent   // nil without a hub or with NoAgents
	gateway    *Gateway // nil without an agent or with NoGateways
	mcs        mcsclient.Interface
	wmu        sync.Mutex
	workloads  map[string]*Workload // guarded by wmu
}

// Start stands up the federation described by opts, failing the test if it
// cannot, and registers its teardown with t.Cleanup: every process is
// killed and every file removed, even when the test fails midway, and the
// tails of the processes' logs are logged if the test failed.
func Start(t testing.TB, opts Options) *Federation {
	t.Helper()
	if opts.Dir == "" {
		opts.Dir = t.TempDir()
	}
	f, err := New(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	f.tb = t
	t.Cleanup(func() {
		if t.Failed() {
			t.Log(f.LogTails(3000))
		}
		if err := f.Close(); err != nil {
			t.Errorf("testenv: close: %v", err)
		}
	})
	return f
}

// New stands up the federation described by opts and returns it once every
// control plane and hub server is ready. The caller must Close it. On error
// nothing is left running.
func New(ctx context.Context, opts Options) (*Federation, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	f := &Federation{dir: opts.Dir, byName: map[string]*ClusterEnv{}, links: map[[2]string]*wan.Link{}, hubLinks: map[string]*wan.Link{},
		gatewayLinks: map[string]*wan.Link{}, noGateways: opts.NoGateways, direct: opts.DirectGateways}
	if f.dir == "" {
		d, err := os.MkdirTemp("", "meshfed-testenv-")
		if err != nil {
			return nil, err
		}
		f.dir, f.ownDir = d, true
	}
	f.backend = opts.Backend
	if f.backend == "" {
		f.backend = Backend(os.Getenv(EnvBackend))
	}
	if f.backend == "" {
		f.backend = BackendProcess
	}
	readyTimeout := opts.ReadyTimeout
	if readyTimeout == 0 {
		readyTimeout = time.Minute
	}

	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	fail := func(err error) {
		mu.Lock()
		errs = append(errs, err)
		mu.Unlock()
	}
	f.clusters = make([]*ClusterEnv, len(opts.Clusters))
	var start func(i int, c Cluster)
	switch f.backend {
	case BackendProcess:
		apiserver, etcd, err := Binaries()
		if err != nil {
			return nil, f.abort(err)
		}
		var pods *PodBinaries
		if slices.ContainsFunc(opts.Clusters, func(c Cluster) bool { return c.Pods }) {
			b, err := FindPodBinaries()
			if err != nil {
				return nil, f.abort(err)
			}
			pods = &b
		}
		start = func(i int, c Cluster) {
			spec := controlPlaneSpec{
				name: c.Name, dir: filepath.Join(f.dir, "clusters", c.Name),
				apiserverBin: apiserver, etcdBin: etcd, readyTimeout: readyTimeout, index: i,
			}
			if c.Pods {
				spec.pods = pods
			}
			cp, err := startControlPlane(ctx, spec)
			if err != nil {
				fail(err)
				return
			}
			f.clusters[i] = &ClusterEnv{spec: c, cp: cp, config: cp.config, clientset: cp.clientset, kubeconfig: cp.kubecfg}
		}
	case BackendKind:
		clusters, err := startKind(ctx, opts.Clusters, filepath.Join(f.dir, "kind"), opts.KindNodeImage)
		if err != nil {
			return nil, f.abort(err)
		}
		f.clusters = clusters
		start = func(int, Cluster) {}
	default:
		return nil, f.abort(fmt.Errorf("testenv: backend %q (from $%s): must be %q or %q", f.backend, EnvBackend, BackendProcess, BackendKind))
	}
	for i, c := range opts.Clusters {
		wg.Add(1)
		go func() { defer wg.Done(); start(i, c) }()
	}
	if opts.HubServers > 0 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			bin, err := meshfedBinary()
			if err != nil {
				fail(err)
				return
			}
			h, err := startHub(ctx, hubSpec{dir: f.dir, servers: opts.HubServers, binary: bin, readyTimeout: readyTimeout})
			if err != nil {
				fail(err)
				return
			}
			f.hub = h
		}()
	}
	wg.Wait()
	if len(errs) > 0 {
		return nil, f.abort(errors.Join(errs...))
	}
	for i, c := range f.clusters {
		f.byName[c.spec.Name] = c
		c.fed, c.index = f, i
		mc, err := mcsclient.NewForConfig(c.config)
		if err != nil {
			return nil, f.abort(err)
		}
		c.mcs = mc
		c.workloads = map[string]*Workload{}
	}
	n := uint64(0)
	for i, a := range opts.Clusters {
		for _, b := range opts.Clusters[i+1:] {
			f.links[[2]string{a.Name, b.Name}] = wan.NewLinkStream(opts.Seed, n, a.Name, b.Name)
			n++
		}
	}
	if f.hub != nil {
		for _, c := range opts.Clusters {
			f.hubLinks[c.Name] = wan.NewLinkStream(opts.Seed, n, c.Name, "hub")
			n++
			f.gatewayLinks[c.Name] = wan.NewLinkStream(opts.Seed, n, "federation", c.Name+"/gateway")
			n++
		}
	}
	if f.hub != nil && !opts.NoAgents {
		for i, c := range f.clusters {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := f.startAgent(ctx, i, c, readyTimeout); err != nil {
					fail(fmt.Errorf("testenv: cluster %s: agent: %w", c.Name(), err))
				}
			}()
		}
		wg.Wait()
		if len(errs) > 0 {
			return nil, f.abort(errors.Join(errs...))
		}
	}
	return f, nil
}

// abort closes what New started and returns err.
func (f *Federation) abort(err error) error {
	if cerr := f.Close(); cerr != nil {
		err = errors.Join(err, cerr)
	}
	return err
}

// Backend is how the clusters were made.
func (f *Federation) Backend() Backend { return f.backend }

// Dir is the folder that holds the federation's files.
func (f *Federation) Dir() string { return f.dir }

// Hub is the hub, or nil when Options.HubServers was 0.
func (f *Federation) Hub() *Hub { return f.hub }

// Clusters returns the member clusters in Options order.
func (f *Federation) Clusters() []*ClusterEnv { return append([]*ClusterEnv(nil), f.clusters...) }

// Cluster returns the member cluster called name. It panics if there is none:
// that is a mistake in the test.
func (f *Federation) Cluster(name string) *ClusterEnv {
	c, ok := f.byName[name]
	if !ok {
		panic(fmt.Sprintf("testenv: no cluster %q in the federation", name))
	}
	return c
}

// Link returns the WAN link between clusters a and b, seen from a: its
// forward direction is a→b, and a relay made with it listens on a's side and
// forwards to b's side. Link(b, a) is the same link seen from b. It panics if
// a or b is not a member or a == b.
//
// Cluster-to-cluster traffic will flow through the links once east-west
// gateways exist; until then, route traffic through one with [wan.Link.Relay].
// Agent-to-hub traffic goes through [Federation.HubLink].
func (f *Federation) Link(a, b string) *wan.Link {
	if l, ok := f.links[[2]string{a, b}]; ok {
		return l
	}
	if l, ok := f.links[[2]string{b, a}]; ok {
		return l.Reverse()
	}
	panic(fmt.Sprintf("testenv: no link between %q and %q in the federation", a, b))
}

// HubLink returns the WAN link between a cluster and the hub, seen from
// the cluster: the cluster's agent reaches every hub server through it.
// Partition it to cut the cluster off the hub. It panics if there is no
// hub or no such cluster.
func (f *Federation) HubLink(cluster string) *wan.Link {
	l, ok := f.hubLinks[cluster]
	if !ok {
		panic(fmt.Sprintf("testenv: no hub link for %q (no hub, or no such cluster)", cluster))
	}
	return l
}

// Processes returns every process of the federation: each cluster's etcd,
// kube-apiserver and agent, then the hub servers.
func (f *Federation) Processes() []*Process {
	var ps []*Process
	for _, c := range f.clusters {
		if c != nil && c.cp != nil {
			ps = append(ps, c.cp.Processes()...)
		}
		if c != nil && c.agent != nil {
			ps = append(ps, c.agent.Process)
		}
		if c != nil && c.gateway != nil && c.gateway.Process != nil {
			ps = append(ps, c.gateway.Process)
		}
	}
	if f.hub != nil {
		ps = append(ps, f.hub.Processes()...)
	}
	return ps
}

// LogTails returns the last n bytes of every process's log, each under a
// header, for a failed test's output.
func (f *Federation) LogTails(n int) string {
	var b strings.Builder
	for _, p := range f.Processes() {
		fmt.Fprintf(&b, "--- %s (%s), last %d bytes ---\n%s\n", p.Name(), p.LogPath(), n, p.Tail(n))
	}
	return b.String()
}

// Close kills every process, deletes kind clusters, stops every relay, and
// removes the federation's folder if New made it. It is safe to call more
// than once.
func (f *Federation) Close() error {
	f.closeOnce.Do(func() {
		var errs []error
		for _, c := range f.clusters {
			if c == nil {
				continue
			}
			if c.gateway != nil && c.gateway.Process != nil {
				_ = c.gateway.Kill()
			}
			if c.agent != nil {
				_ = c.agent.Kill()
			}
			for _, w := range c.workloadList() {
				w.close()
			}
		}
		if f.hub != nil {
			f.hub.Close()
		}
		for _, c := range f.clusters {
			if c == nil {
				continue
			}
			if c.cp != nil {
				c.cp.Close()
			}
			if c.closeKind != nil {
				errs = append(errs, c.closeKind())
			}
		}
		for _, l := range f.links {
			errs = append(errs, l.Close())
		}
		for _, l := range f.hubLinks {
			errs = append(errs, l.Close())
		}
		for _, l := range f.gatewayLinks {
			errs = append(errs, l.Close())
		}
		if f.ownDir {
			errs = append(errs, os.RemoveAll(f.dir))
		}
		f.closeErr = errors.Join(errs...)
	})
	return f.closeErr
}

// Name is the cluster's name.
func (c *ClusterEnv) Name() string { return c.spec.Name }

// Spec is the cluster as described in Options.
func (c *ClusterEnv) Spec() Cluster { return c.spec }

// RESTConfig returns a new copy of the admin client configuration.
func (c *ClusterEnv) RESTConfig() *rest.Config { return rest.CopyConfig(c.config) }

// Clientset is a client with the admin identity.
func (c *ClusterEnv) Clientset() *kubernetes.Clientset { return c.clientset }

// Kubeconfig is the path of a kubeconfig file with the admin identity.
func (c *ClusterEnv) Kubeconfig() string { return c.kubeconfig }

// ControlPlane is the cluster's etcd and kube-apiserver processes, for fault
// injection; nil with BackendKind.
func (c *ClusterEnv) ControlPlane() *ControlPlane { return c.cp }

// Agent is the cluster's meshfed agent, or nil (no hub, or
// Options.NoAgents).
func (c *ClusterEnv) Agent() *Agent { return c.agent }
