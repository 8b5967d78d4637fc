package testenv

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"sigs.k8s.io/yaml"

	"github.com/meshfed/meshfed/deploy/crds"
	fedv1 "github.com/meshfed/meshfed/federation/v1"
	"github.com/meshfed/meshfed/internal/clientconfig"
	"github.com/meshfed/meshfed/internal/hubdial"
)

// Agent is one cluster's meshfed agent: a real `meshfed` process that
// joined the hub with a one-time token (`meshfed join`, then `meshfed
// agent` on every restart), watches the cluster's API server (the
// kubernetes catalog source) and reaches the hub through the cluster's hub
// link ([Federation.HubLink]).
type Agent struct {
	*Process
	cluster    string
	httpAddr   string
	gatewayAPI string
	dnsAddr    string // --dns-bind
	dataDir    string
	egressMin  int
	egressMax  int
}

// HTTPAddr is host:port of the agent's /healthz, /readyz, /metrics and
// /state.
func (a *Agent) HTTPAddr() string { return a.httpAddr }

// GatewayAPIAddr is host:port of the agent's gateway API.
func (a *Agent) GatewayAPIAddr() string { return a.gatewayAPI }

// DNSAddr is host:port (UDP and TCP) of the agent's clusterset.local DNS
// server (--dns-bind): <svc>.<ns>.svc.clusterset.local answers with the
// ClusterSetIP of an import, the ClusterIP of its derived Service, which
// [ClusterEnv.ServiceBackends] maps to where it is served, as kube-proxy
// would.
func (a *Agent) DNSAddr() string { return a.dnsAddr }

// DataDir is the agent's data directory (its cached hub state, and the
// gateways' bootstrap document, gateway-bootstrap.json).
func (a *Agent) DataDir() string { return a.dataDir }

// EgressPorts is the range the agent assigns imported service ports from.
func (a *Agent) EgressPorts() (lo, hi int) { return a.egressMin, a.egressMax }

// AgentState is the part of the agent's /state that tests look at; the
// full document is `meshfed agent status -o json`.
type AgentState struct {
	Cluster string `json:"cluster"`
	Hub     struct {
		Connected bool   `json:"connected"`
		Revision  uint64 `json:"revision"`
		FromCache bool   `json:"fromCache"`
	} `json:"hub"`
	Exports []struct {
		Key       string `json:"key"`
		Published bool   `json:"published"`
		Error     string `json:"error"`
		Conflict  string `json:"conflict"`
	} `json:"exports"`
	Imports []struct {
		Key      string         `json:"key"`
		Egress   map[string]int `json:"egressPorts"`
		Clusters []struct {
			Cluster string `json:"cluster"`
			Ready   uint32 `json:"ready"`
		} `json:"clusters"`
	} `json:"imports"`
	// Gateways are the gateway replicas following the agent's config
	// stream, with what they last reported.
	Gateways []struct {
		Instance string `json:"instance"`
		Revision uint64 `json:"revision"`
		Applied  uint64 `json:"applied"`
		Rejected string `json:"rejected"`
		Health   *struct {
			Serving          bool   `json:"serving"`
			RemoteGateways   uint32 `json:"remoteGateways"`
			RemoteGatewaysUp uint32 `json:"remoteGatewaysUp"`
		} `json:"health"`
	} `json:"gateways"`
}

// State fetches the agent's state.
func (a *Agent) State(ctx context.Context) (*AgentState, error) {
	b, err := httpGet(ctx, http.DefaultClient, "http://"+a.httpAddr+"/state", "")
	if err != nil {
		return nil, err
	}
	var st AgentState
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("testenv: agent %s state: %w", a.cluster, err)
	}
	return &st, nil
}

// GatewayBootstrap returns the document a gateway of the cluster needs to
// get its SVID from the agent (see agent/gatewayclient).
func (a *Agent) GatewayBootstrap() ([]byte, error) {
	return os.ReadFile(filepath.Join(a.dataDir, "gateway-bootstrap.json"))
}

// egressSpan is how many egress ports each cluster's agent gets; clusters
// share loopback, so their gateways' ranges must not overlap.
const egressSpan = 200

// installCRDs creates the MCS and ClusterProperty CRDs in a cluster and waits until they
// serve. Existing ones are left alone.
func installCRDs(ctx context.Context, c *ClusterEnv) error {
	dyn, err := dynamic.NewForConfig(c.RESTConfig())
	if err != nil {
		return err
	}
	gvr := schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}
	files, err := fs.Glob(crds.FS, "*.yaml")
	if err != nil {
		return err
	}
	for _, f := range files {
		b, err := crds.FS.ReadFile(f)
		if err != nil {
			return err
		}
		var obj map[string]any
		if err := yaml.Unmarshal(b, &obj); err != nil {
			return fmt.Errorf("testenv: CRD %s: %w", f, err)
		}
		if _, err := dyn.Resource(gvr).Create(ctx, &unstructured.Unstructured{Object: obj}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("testenv: cluster %s: CRD %s: %w", c.Name(), f, err)
		}
	}
	mc := c.mcs
	return WaitFor(ctx, time.Minute, func(ctx context.Context) error {
		if _, err := mc.MulticlusterV1beta1().ServiceExports("default").List(ctx, metav1.ListOptions{}); err != nil {
			return err
		}
		if _, err := mc.MulticlusterV1beta1().ServiceImports("default").List(ctx, metav1.ListOptions{}); err != nil {
			return err
		}
		_, err := dyn.Resource(schema.GroupVersionResource{Group: "about.k8s.io", Version: "v1alpha1", Resource: "clusterproperties"}).List(ctx, metav1.ListOptions{})
		return err
	})
}

// createToken creates a join token for cluster through the hub's admin API.
func createToken(ctx context.Context, h *Hub, cluster string) (string, error) {
	path, err := h.AdminConfig()
	if err != nil {
		return "", err
	}
	cfg, err := clientconfig.Load(path)
	if err != nil {
		return "", err
	}
	tlsCfg, err := cfg.TLS()
	if err != nil {
		return "", err
	}
	conn, err := hubdial.Dial(cfg.Hubs, tlsCfg)
	if err != nil {
		return "", err
	}
	defer func() { _ = conn.Close() }()
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	resp, err := fedv1.NewAdminClient(conn).CreateToken(cctx, &fedv1.CreateTokenRequest{Cluster: cluster})
	if err != nil {
		return "", fmt.Errorf("testenv: token for %s: %w", cluster, err)
	}
	return resp.GetToken(), nil
}

// startAgent installs the CRDs into cluster i, joins it and starts its
// agent, wired the way a user deploys it: kubernetes source, credentials in
// Secrets, imports pointing at the cluster's gateway address, the hub
// reached through the cluster's hub link.
func (f *Federation) startAgent(ctx context.Context, i int, c *ClusterEnv, readyTimeout time.Duration) error {
	if err := installCRDs(ctx, c); err != nil {
		return err
	}
	link := f.hubLinks[c.Name()]
	var hubAddrs []string
	for _, s := range f.hub.Servers() {
		addr, err := link.Relay("tcp", s.GRPCAddr())
		if err != nil {
			return err
		}
		hubAddrs = append(hubAddrs, addr)
	}
	token, err := createToken(ctx, f.hub, c.Name())
	if err != nil {
		return err
	}
	var gw *Gateway
	if !f.noGateways {
		if gw, err = f.prepareGateway(c); err != nil {
			return err
		}
	}
	var lastErr error
	for attempt := range 3 {
		ports, err := freePorts(3)
		if err != nil {
			return err
		}
		a := &Agent{cluster: c.Name(), httpAddr: loopback(ports[0]), gatewayAPI: loopback(ports[1]), dnsAddr: loopback(ports[2]),
			dataDir:   filepath.Join(f.dir, "clusters", c.Name(), "agent"),
			egressMin: 20000 + i*egressSpan, egressMax: 20000 + (i+1)*egressSpan - 1}
		if err := os.MkdirAll(a.dataDir, 0o700); err != nil {
			return err
		}
		common := []string{
			"--cluster", c.Name(), "--region", c.spec.Region, "--zone", c.spec.Zone,
			"--source", "kubernetes", "--kubeconfig", c.Kubeconfig(),
			"--data-dir", a.dataDir,
			"--http-port", strconv.Itoa(ports[0]),
			"--gateway-api", a.gatewayAPI,
			"--dns-bind", a.dnsAddr,
			"--gateway-address", c.GatewayIP(),
			"--egress-ports", fmt.Sprintf("%d-%d", a.egressMin, a.egressMax),
			"--log-level", "debug",
		}
		for _, h := range hubAddrs {
			common = append(common, "--hub", h)
		}
		if gw != nil {
			common = append(common, "--gateway", gw.advertised, "--gateway-ingress-bind", "127.0.0.1")
		}
		a.Process = newProcess(processSpec{
			name:         c.Name() + "/agent",
			path:         f.hub.Binary(),
			args:         append([]string{"join", token}, common...),
			logPath:      filepath.Join(f.dir, "clusters", c.Name(), "agent.log"),
			ready:        agentReady(a.httpAddr),
			readyTimeout: readyTimeout,
		})
		lastErr = a.Start()
		if lastErr == nil {
			// Joined: the credentials are in the cluster's Secrets and the
			// token is spent. Every later start is `meshfed agent`.
			a.setArgs(append([]string{"agent"}, common...))
			c.agent = a
			if gw != nil {
				return f.startGateway(ctx, c, gw, a, readyTimeout)
			}
			return nil
		}
		_ = a.Kill()
		if !errors.Is(lastErr, errExited) || attempt == 2 {
			break
		}
		// A port was taken between choosing and binding: the join may or
		// may not have happened, so a retry needs a fresh token.
		if token, err = createToken(ctx, f.hub, c.Name()); err != nil {
			return err
		}
	}
	return lastErr
}

// agentReady is ready once the agent has a hub state (synced, or cached).
func agentReady(httpAddr string) func(ctx context.Context) error {
	return func(ctx context.Context) error {
		_, err := httpGet(ctx, http.DefaultClient, "http://"+httpAddr+"/readyz", "")
		return err
	}
}
