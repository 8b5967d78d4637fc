package testenv

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"path/filepath"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The simulated pod network of a cluster with [Cluster.Pods]: one kwok node
// per cluster, whose pods get addresses from PodCIDR(index). Clusters of a
// federation get disjoint ranges, as a flat multi-cluster pod network has.
// The range is not the 10.244.k.0/24 of [ClusterEnv.Deploy]'s endpoints and
// the cluster's gateway address ([ClusterEnv.PodIP]), so the two never
// collide; nothing listens on a kwok pod's IP.
const (
	// KwokNodeName is the name of the one simulated node of a cluster.
	KwokNodeName = "kwok-node-0"
	// kwokNodeAnnotation marks a node as kwok's, as kwokctl's node
	// template does.
	kwokNodeAnnotation = "kwok.x-k8s.io/node"
	// maxPodsPerNode bounds the pods the simulated node takes; a /24 holds
	// 254 addresses.
	maxPodsPerNode = 250
)

// PodCIDR is the pod network of the cluster at index i (0-based, in
// [Options.Clusters] order): 10.245.i.0/24.
func PodCIDR(i int) string { return fmt.Sprintf("10.245.%d.0/24", i) }

// nodeIP is the simulated node's InternalIP: 192.0.2.(i+1), from the
// documentation range, which nothing routes.
func nodeIP(i int) string { return fmt.Sprintf("192.0.2.%d", i+1) }

// podSim is what runs beside a control plane with [Cluster.Pods]:
// kube-scheduler binds pods to the kwok node, kube-controller-manager runs
// the controllers (Deployments to ReplicaSets to Pods, EndpointSlices,
// namespace deletion, service accounts), and kwok plays the node and its
// pods' lifecycles: Running and Ready with an IP from PodCIDR.
type podSim struct {
	scheduler         *Process
	controllerManager *Process
	kwok              *Process
}

func (s *podSim) processes() []*Process {
	return []*Process{s.scheduler, s.controllerManager, s.kwok}
}

func (s *podSim) close() {
	for _, p := range s.processes() {
		if p != nil {
			_ = p.Kill()
		}
	}
}

// startPodSim registers the simulated node and starts kube-scheduler,
// kube-controller-manager and kwok against the control plane cp, then waits
// until the node is Ready (kwok runs) and the namespace "default" has its
// ServiceAccount (the controllers run). On error nothing it started is left
// running.
func startPodSim(ctx context.Context, cp *ControlPlane, s controlPlaneSpec) (*podSim, error) {
	if err := createKwokNode(ctx, cp, s.index); err != nil {
		return nil, fmt.Errorf("testenv: %s: kwok node: %w", s.name, err)
	}
	ports, err := freePorts(3)
	if err != nil {
		return nil, err
	}
	sim := &podSim{}
	sim.scheduler = newProcess(processSpec{
		name: s.name + "/kube-scheduler",
		path: s.pods.Scheduler,
		args: []string{
			"--kubeconfig=" + cp.kubecfg,
			"--authentication-kubeconfig=" + cp.kubecfg,
			"--authorization-kubeconfig=" + cp.kubecfg,
			"--bind-address=127.0.0.1",
			"--secure-port=" + strconv.Itoa(ports[0]),
			"--cert-dir=" + filepath.Join(s.dir, "kube-scheduler"),
			"--leader-elect=false",
			"--profiling=false",
		},
		logPath:      filepath.Join(s.dir, "kube-scheduler.log"),
		ready:        healthzReady("https://" + loopback(ports[0]) + "/healthz"),
		readyTimeout: s.readyTimeout,
	})
	sim.controllerManager = newProcess(processSpec{
		name: s.name + "/kube-controller-manager",
		path: s.pods.ControllerManager,
		args: []string{
			"--kubeconfig=" + cp.kubecfg,
			"--authentication-kubeconfig=" + cp.kubecfg,
			"--authorization-kubeconfig=" + cp.kubecfg,
			"--bind-address=127.0.0.1",
			"--secure-port=" + strconv.Itoa(ports[1]),
			"--cert-dir=" + filepath.Join(s.dir, "kube-controller-manager"),
			"--leader-elect=false",
			// Service-account tokens, signed with the key kube-apiserver
			// verifies.
			"--service-account-private-key-file=" + cp.pki.saKeyFile,
			"--root-ca-file=" + cp.pki.caFile,
			"--kube-api-qps=100",
			"--kube-api-burst=200",
			"--profiling=false",
		},
		logPath:      filepath.Join(s.dir, "kube-controller-manager.log"),
		ready:        healthzReady("https://" + loopback(ports[1]) + "/healthz"),
		readyTimeout: s.readyTimeout,
	})
	sim.kwok = newProcess(processSpec{
		name: s.name + "/kwok",
		path: s.pods.Kwok,
		args: []string{
			"--kubeconfig=" + cp.kubecfg,
			"--config=" + s.pods.KwokConfig,
			"--manage-single-node=" + KwokNodeName,
			"--node-ip=" + nodeIP(s.index),
			"--server-address=" + loopback(ports[2]),
			"--node-lease-duration-seconds=40",
		},
		logPath:      filepath.Join(s.dir, "kwok.log"),
		ready:        healthzReady("http://" + loopback(ports[2]) + "/healthz"),
		readyTimeout: s.readyTimeout,
	})
	for _, p := range sim.processes() {
		if err := p.Start(); err != nil {
			sim.close()
			return nil, err
		}
	}
	cs := cp.clientset
	err = WaitFor(ctx, s.readyTimeout, func(ctx context.Context) error {
		n, err := cs.CoreV1().Nodes().Get(ctx, KwokNodeName, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if !nodeReady(n) {
			return fmt.Errorf("node %s is not Ready", KwokNodeName)
		}
		_, err = cs.CoreV1().ServiceAccounts(metav1.NamespaceDefault).Get(ctx, "default", metav1.GetOptions{})
		return err
	})
	if err != nil {
		sim.close()
		return nil, fmt.Errorf("testenv: %s: pods: %w", s.name, err)
	}
	return sim, nil
}

func nodeReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// createKwokNode registers the cluster's simulated node, as `kwokctl scale
// node` does with kwok's node template: kwok's annotation, the pod network
// of cluster index, and room for maxPodsPerNode pods. kwok then keeps it
// Ready and its lease renewed.
func createKwokNode(ctx context.Context, cp *ControlPlane, index int) error {
	capacity := corev1.ResourceList{
		corev1.ResourceCPU:    resource.MustParse("32"),
		corev1.ResourceMemory: resource.MustParse("256Gi"),
		corev1.ResourcePods:   *resource.NewQuantity(maxPodsPerNode, resource.DecimalSI),
	}
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name:        KwokNodeName,
			Annotations: map[string]string{kwokNodeAnnotation: "fake", "node.alpha.kubernetes.io/ttl": "0"},
			Labels: map[string]string{
				corev1.LabelHostname: KwokNodeName, corev1.LabelOSStable: "linux", corev1.LabelArchStable: "amd64",
				"type": "kwok",
			},
		},
		Spec: corev1.NodeSpec{PodCIDR: PodCIDR(index), PodCIDRs: []string{PodCIDR(index)}},
		Status: corev1.NodeStatus{
			Addresses:   []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: nodeIP(index)}},
			Capacity:    capacity,
			Allocatable: capacity,
			NodeInfo:    corev1.NodeSystemInfo{Architecture: "amd64", OperatingSystem: "linux"},
		},
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	_, err := cp.clientset.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	return err
}

// healthzReady is ready once url answers 200. The components serve HTTPS
// with a self-signed certificate of their own; only readiness is read, so
// the certificate is not verified.
func healthzReady(url string) func(ctx context.Context) error {
	client := &http.Client{Transport: &http.Transport{
		TLSClientConfig:   &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // a readiness probe of a local process
		DisableKeepAlives: true,
	}}
	return func(ctx context.Context) error {
		_, err := httpGet(ctx, client, url, "")
		return err
	}
}
