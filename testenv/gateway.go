package testenv

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshfed/meshfed/testenv/wan"
)

// Gateway is one cluster's east-west gateway: a real `meshfed gateway`
// process fed by the cluster's agent. Remote gateways reach its QUIC
// ingress through the cluster's gateway link ([Federation.GatewayLink]),
// whose relay address is what the agent advertised at join; the cluster's
// workloads reach its egress ports at the cluster's gateway address
// ([ClusterEnv.GatewayIP], served on 127.0.0.1).
type Gateway struct {
	*Process
	cluster    string
	ingress    string // the real UDP address
	advertised string // through the gateway link
	metrics    string
	dataDir    string
}

// Ingress is the gateway's real QUIC (UDP) address.
func (g *Gateway) Ingress() string { return g.ingress }

// Advertised is the address other clusters dial: the gateway link's relay.
func (g *Gateway) Advertised() string { return g.advertised }

// MetricsAddr is host:port of the gateway's /metrics, /healthz and /readyz.
func (g *Gateway) MetricsAddr() string { return g.metrics }

// DataDir is where the gateway caches its SVID and last config.
func (g *Gateway) DataDir() string { return g.dataDir }

// Gateway returns the cluster's east-west gateway, or nil (no agent, or
// Options.NoGateways).
func (c *ClusterEnv) Gateway() *Gateway { return c.gateway }

// GatewayLink is the simulated WAN path in front of a cluster's gateway:
// every remote gateway reaches it through this link, so partitioning it
// blackholes the gateway for the whole federation (packets silently
// dropped), and shaping it slows every path into the cluster.
func (f *Federation) GatewayLink(cluster string) *wan.Link {
	l, ok := f.gatewayLinks[cluster]
	if !ok {
		panic(fmt.Sprintf("testenv: no gateway link for cluster %q", cluster))
	}
	return l
}

// prepareGateway reserves the gateway's ports and its link's relay, so the
// agent can advertise the relay at join.
func (f *Federation) prepareGateway(c *ClusterEnv) (*Gateway, error) {
	ports, err := freePorts(2)
	if err != nil {
		return nil, err
	}
	g := &Gateway{cluster: c.Name(), ingress: loopback(ports[0]), metrics: loopback(ports[1]),
		dataDir: filepath.Join(f.dir, "clusters", c.Name(), "gateway")}
	if err := os.MkdirAll(g.dataDir, 0o700); err != nil {
		return nil, err
	}
	g.advertised = g.ingress
	if !f.direct {
		adv, err := f.gatewayLinks[c.Name()].Relay("udp", g.ingress)
		if err != nil {
			return nil, err
		}
		g.advertised = adv
	}
	return g, nil
}

// startGateway starts the prepared gateway of a cluster whose agent runs.
func (f *Federation) startGateway(ctx context.Context, c *ClusterEnv, g *Gateway, a *Agent, readyTimeout time.Duration) error {
	// In-cluster the agent keeps the bootstrap document in a Secret that
	// the gateway's pod mounts; here the harness copies it to a file.
	boot := filepath.Join(g.dataDir, "bootstrap.json")
	if err := WaitFor(ctx, readyTimeout, func(ctx context.Context) error {
		sec, err := c.clientset.CoreV1().Secrets("meshfed-system").Get(ctx, "meshfed-gateway-bootstrap", metav1.GetOptions{})
		if err != nil {
			return err
		}
		b, ok := sec.Data["data"]
		if !ok {
			return errors.New(`secret meshfed-gateway-bootstrap has no key "data"`)
		}
		return os.WriteFile(boot, b, 0o600)
	}); err != nil {
		return err
	}
	// In-cluster a gateway authenticates to its agent by its
	// ServiceAccount token (a TokenReview); the kubelet would mount it.
	saToken := filepath.Join(g.dataDir, "token")
	if err := writeServiceAccountToken(ctx, c, saToken); err != nil {
		return err
	}
	g.Process = newProcess(processSpec{
		name: c.Name() + "/gateway",
		path: f.hub.Binary(),
		args: []string{"gateway",
			"--agent", a.gatewayAPI,
			"--bootstrap", boot,
			"--service-account-token", saToken,
			"--data-dir", g.dataDir,
			"--instance", c.Name() + "-gw-0",
			"--ingress", g.ingress,
			"--egress-bind", "127.0.0.1",
			"--metrics", g.metrics,
			"--endpoint-map", podNetworkPrefix + "0.0/16=127.0.0.1",
			"--log-level", "debug",
			"--pprof",
		},
		logPath:      filepath.Join(f.dir, "clusters", c.Name(), "gateway.log"),
		ready:        gatewayReady(g.metrics),
		readyTimeout: readyTimeout,
	})
	if err := g.Start(); err != nil {
		return err
	}
	c.gateway = g
	return nil
}

// gatewayReady is ready once /readyz answers 200: the gateway has a config
// and serves it.
func gatewayReady(addr string) func(ctx context.Context) error {
	return func(ctx context.Context) error {
		_, err := httpGet(ctx, http.DefaultClient, "http://"+addr+"/readyz", "")
		return err
	}
}

// writeServiceAccountToken creates the gateways' ServiceAccount
// (meshfed-system/meshfed-gateway) if missing and writes a token of it.
func writeServiceAccountToken(ctx context.Context, c *ClusterEnv, path string) error {
	sas := c.clientset.CoreV1().ServiceAccounts("meshfed-system")
	_, err := sas.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "meshfed-gateway"}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("testenv: gateway ServiceAccount: %w", err)
	}
	exp := int64(24 * 3600)
	tr, err := sas.CreateToken(ctx, "meshfed-gateway", &authnv1.TokenRequest{Spec: authnv1.TokenRequestSpec{
		ExpirationSeconds: &exp, Audiences: []string{"meshfed-agent"}}}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("testenv: gateway ServiceAccount token: %w", err)
	}
	return os.WriteFile(path, []byte(tr.Status.Token), 0o600)
}
