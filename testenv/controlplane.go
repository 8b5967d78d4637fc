package testenv

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// ControlPlane is one cluster's Kubernetes control plane run as processes on
// loopback: an etcd and a kube-apiserver. By default there is no kubelet,
// scheduler or controller manager: tests create Services, EndpointSlices
// and ServiceExports directly. A cluster with [Cluster.Pods] also runs
// kube-scheduler, kube-controller-manager and kwok (see [PodCIDR]).
//
// The API server authorizes with RBAC; the admin identity (a static token,
// group system:masters) is what [ControlPlane.RESTConfig] carries.
type ControlPlane struct {
	etcd      *Process
	apiserver *Process
	host      string // https://127.0.0.1:port
	pki       *controlPlanePKI
	config    *rest.Config
	clientset *kubernetes.Clientset
	kubecfg   string
	sim       *podSim // nil without Cluster.Pods
}

type controlPlaneSpec struct {
	name         string // cluster name, for process names
	dir          string // everything of this control plane lives here
	apiserverBin string
	etcdBin      string
	readyTimeout time.Duration
	index        int          // in Options.Clusters: picks the pod network
	pods         *PodBinaries // nil: no scheduler, controllers or kwok
}

// startControlPlane starts etcd, then kube-apiserver, and waits until both are
// ready. Ports are picked free; if a process exits at start (a port taken in
// between) it retries with new ports. On error nothing is left running.
func startControlPlane(ctx context.Context, s controlPlaneSpec) (*ControlPlane, error) {
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return nil, err
	}
	pki, err := writeControlPlanePKI(filepath.Join(s.dir, "pki"))
	if err != nil {
		return nil, fmt.Errorf("testenv: %s: control-plane certificates: %w", s.name, err)
	}
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		cp, err := tryStartControlPlane(s, pki)
		if err == nil {
			if s.pods != nil {
				if cp.sim, err = startPodSim(ctx, cp, s); err != nil {
					cp.Close()
					return nil, err
				}
			}
			return cp, nil
		}
		lastErr = err
		if !errors.Is(err, errExited) {
			break
		}
	}
	return nil, lastErr
}

func tryStartControlPlane(s controlPlaneSpec, pki *controlPlanePKI) (*ControlPlane, error) {
	ports, err := freePorts(3)
	if err != nil {
		return nil, err
	}
	dataDir := filepath.Join(s.dir, "etcd-data")
	if err := os.RemoveAll(dataDir); err != nil { // of a failed attempt
		return nil, err
	}
	clientURL := "http://" + loopback(ports[0])
	peerURL := "http://" + loopback(ports[1])
	cp := &ControlPlane{
		host: "https://" + loopback(ports[2]),
		pki:  pki,
	}
	cp.etcd = newProcess(processSpec{
		name: s.name + "/etcd",
		path: s.etcdBin,
		args: []string{
			"--name=" + s.name,
			"--data-dir=" + dataDir,
			"--listen-client-urls=" + clientURL,
			"--advertise-client-urls=" + clientURL,
			"--listen-peer-urls=" + peerURL,
			"--initial-advertise-peer-urls=" + peerURL,
			"--initial-cluster=" + s.name + "=" + peerURL,
			// Safe against process kills (the page cache survives them), not
			// against machine crashes, which tests do not simulate.
			"--unsafe-no-fsync",
			"--log-level=warn",
		},
		logPath:      filepath.Join(s.dir, "etcd.log"),
		ready:        etcdReady(clientURL),
		readyTimeout: s.readyTimeout,
	})
	cp.apiserver = newProcess(processSpec{
		name: s.name + "/kube-apiserver",
		path: s.apiserverBin,
		args: []string{
			"--etcd-servers=" + clientURL,
			"--bind-address=127.0.0.1",
			"--advertise-address=127.0.0.1",
			"--secure-port=" + strconv.Itoa(ports[2]),
			"--cert-dir=" + filepath.Join(s.dir, "pki"),
			"--tls-cert-file=" + pki.certFile,
			"--tls-private-key-file=" + pki.keyFile,
			"--client-ca-file=" + pki.caFile,
			"--token-auth-file=" + pki.tokenFile,
			"--authorization-mode=RBAC",
			"--service-cluster-ip-range=10.96.0.0/16",
			"--service-account-issuer=https://kubernetes.default.svc",
			"--service-account-key-file=" + pki.saKeyFile,
			"--service-account-signing-key-file=" + pki.saKeyFile,
			// No controller manager creates service-account tokens.
			"--disable-admission-plugins=ServiceAccount",
			// Nothing else serves the "kubernetes" Service's endpoints on
			// loopback; do not reconcile them.
			"--endpoint-reconciler-type=none",
			"--profiling=false",
		},
		logPath:      filepath.Join(s.dir, "kube-apiserver.log"),
		ready:        cp.apiserverReady,
		readyTimeout: s.readyTimeout,
	})
	if err := cp.etcd.Start(); err != nil {
		_ = cp.etcd.Kill()
		return nil, err
	}
	if err := cp.apiserver.Start(); err != nil {
		cp.Close()
		return nil, err
	}
	cp.config = &rest.Config{
		Host:            cp.host,
		BearerToken:     pki.adminToken,
		TLSClientConfig: rest.TLSClientConfig{CAData: pki.caPEM},
		QPS:             200,
		Burst:           400,
	}
	cp.clientset, err = kubernetes.NewForConfig(cp.config)
	if err != nil {
		cp.Close()
		return nil, err
	}
	cp.kubecfg = filepath.Join(s.dir, "kubeconfig")
	if err := writeKubeconfig(cp.kubecfg, s.name, cp.config); err != nil {
		cp.Close()
		return nil, err
	}
	return cp, nil
}

// Etcd is the etcd process.
func (c *ControlPlane) Etcd() *Process { return c.etcd }

// APIServer is the kube-apiserver process.
func (c *ControlPlane) APIServer() *Process { return c.apiserver }

// Host is the API server's URL, https://127.0.0.1:<port>.
func (c *ControlPlane) Host() string { return c.host }

// RESTConfig returns a new copy of the admin client configuration.
func (c *ControlPlane) RESTConfig() *rest.Config { return rest.CopyConfig(c.config) }

// Clientset is a client with the admin identity.
func (c *ControlPlane) Clientset() *kubernetes.Clientset { return c.clientset }

// Kubeconfig is the path of a kubeconfig file with the admin identity, for
// kubectl or for a process under test.
func (c *ControlPlane) Kubeconfig() string { return c.kubecfg }

// Processes returns the control plane's processes: etcd, kube-apiserver,
// and with [Cluster.Pods] kube-scheduler, kube-controller-manager and kwok.
func (c *ControlPlane) Processes() []*Process {
	ps := []*Process{c.etcd, c.apiserver}
	if c.sim != nil {
		ps = append(ps, c.sim.processes()...)
	}
	return ps
}

// RSS is the sum of the resident set sizes of etcd and kube-apiserver.
func (c *ControlPlane) RSS() (int64, error) {
	var sum int64
	for _, p := range c.Processes() {
		n, err := p.RSS()
		if err != nil {
			return 0, fmt.Errorf("testenv: RSS of %s: %w", p.Name(), err)
		}
		sum += n
	}
	return sum, nil
}

// Close kills the pod simulation, the API server and etcd. Their files stay
// (the federation's folder is removed by its owner).
func (c *ControlPlane) Close() {
	if c.sim != nil {
		c.sim.close()
	}
	_ = c.apiserver.Kill()
	_ = c.etcd.Kill()
}

func etcdReady(clientURL string) func(ctx context.Context) error {
	return func(ctx context.Context) error {
		body, err := httpGet(ctx, http.DefaultClient, clientURL+"/health", "")
		if err != nil {
			return err
		}
		var h struct {
			Health string `json:"health"`
		}
		if err := json.Unmarshal(body, &h); err != nil {
			return fmt.Errorf("etcd /health: %w", err)
		}
		if h.Health != "true" {
			return fmt.Errorf("etcd /health: %s", body)
		}
		return nil
	}
}

func (c *ControlPlane) apiserverReady(ctx context.Context) error {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(c.pki.caPEM)
	client := &http.Client{Transport: &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: pool},
		DisableKeepAlives: true,
	}}
	_, err := httpGet(ctx, client, c.host+"/readyz", c.pki.adminToken)
	return err
}

func httpGet(ctx context.Context, client *http.Client, url, token string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s: %.300s", url, resp.Status, body)
	}
	return body, nil
}

func writeKubeconfig(path, name string, cfg *rest.Config) error {
	kc := clientcmdapi.NewConfig()
	kc.Clusters[name] = &clientcmdapi.Cluster{
		Server:                   cfg.Host,
		CertificateAuthorityData: cfg.CAData,
	}
	kc.AuthInfos["admin"] = &clientcmdapi.AuthInfo{Token: cfg.BearerToken}
	kc.Contexts[name] = &clientcmdapi.Context{Cluster: name, AuthInfo: "admin"}
	kc.CurrentContext = name
	return clientcmd.WriteToFile(*kc, path)
}

// WriteKubeconfig writes one kubeconfig file with a context per member
// cluster, named after the cluster, each with its own cluster entry and
// admin user (<name>-admin); the current context is the first cluster's.
// kubectl --context <name>, and the MCS conformance suite's -contexts
// a,b, use it as it is. The file is written atomically, mode 0600.
func (f *Federation) WriteKubeconfig(path string) error {
	kc := clientcmdapi.NewConfig()
	for _, c := range f.clusters {
		cfg := c.RESTConfig()
		name := c.Name()
		cluster := &clientcmdapi.Cluster{Server: cfg.Host, CertificateAuthorityData: cfg.CAData}
		if cfg.CAFile != "" {
			cluster.CertificateAuthority = cfg.CAFile
		}
		kc.Clusters[name] = cluster
		kc.AuthInfos[name+"-admin"] = &clientcmdapi.AuthInfo{
			Token: cfg.BearerToken, ClientCertificateData: cfg.CertData, ClientKeyData: cfg.KeyData,
			ClientCertificate: cfg.CertFile, ClientKey: cfg.KeyFile,
		}
		kc.Contexts[name] = &clientcmdapi.Context{Cluster: name, AuthInfo: name + "-admin"}
		if kc.CurrentContext == "" {
			kc.CurrentContext = name
		}
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("testenv: kubeconfig: %w", err)
	}
	tmp := path + ".tmp"
	if err := clientcmd.WriteToFile(*kc, tmp); err != nil {
		return fmt.Errorf("testenv: kubeconfig: %w", err)
	}
	if err := os.Chmod(tmp, 0o600); err != nil {
		return fmt.Errorf("testenv: kubeconfig: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("testenv: kubeconfig: %w", err)
	}
	return nil
}
