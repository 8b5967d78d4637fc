package testenv

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	mcsv1b1 "sigs.k8s.io/mcs-api/pkg/apis/v1beta1"

	"github.com/meshfed/meshfed/federation"
)

// WorkloadSpec describes a sample workload: a Service backed by echo
// servers. Build it with [EchoHTTP] or [EchoTCP].
type WorkloadSpec struct {
	Namespace, Name string
	Replicas        int
	HTTP            bool
	// Port is the Service port (default 80 for HTTP, 9000 for TCP).
	Port int32
	// Labels are put on every endpoint's pod (for policy subsets).
	Labels map[string]string
	// OpaquePort, for an HTTP workload, declares the Service port plain
	// TCP (named "tcp", no appProtocol): gateways then carry it
	// connection by connection, as any TCP service, while its servers
	// still speak HTTP. Build it with [WorkloadSpec.WithOpaquePort].
	OpaquePort bool
}

// EchoHTTP is a Service "namespace/name" of replicas HTTP echo servers.
func EchoHTTP(service string, replicas int) WorkloadSpec {
	ns, name, _ := strings.Cut(service, "/")
	return WorkloadSpec{Namespace: ns, Name: name, Replicas: replicas, HTTP: true, Port: 80}
}

// EchoTCP is a Service "namespace/name" of replicas TCP echo servers.
func EchoTCP(service string, replicas int) WorkloadSpec {
	ns, name, _ := strings.Cut(service, "/")
	return WorkloadSpec{Namespace: ns, Name: name, Replicas: replicas, Port: 9000}
}

// WithOpaquePort returns s with its Service port declared plain TCP.
func (s WorkloadSpec) WithOpaquePort() WorkloadSpec {
	s.OpaquePort = true
	return s
}

// WithLabels returns s with pod labels on every endpoint.
func (s WorkloadSpec) WithLabels(labels map[string]string) WorkloadSpec {
	s.Labels = labels
	return s
}

// Workload is a deployed [WorkloadSpec]: the echo servers (in-process, on
// loopback), and in the cluster's API server the Service, a Pod object per
// replica (for its labels; there is no kubelet, so it never runs) and an
// EndpointSlice per replica pointing at its echo server, as the
// EndpointSlice controller would write it.
type Workload struct {
	spec      WorkloadSpec
	cluster   *ClusterEnv
	instances []*Echo
}

// Instances are the echo servers, replica i at index i.
func (w *Workload) Instances() []*Echo { return append([]*Echo(nil), w.instances...) }

// Service is "namespace/name".
func (w *Workload) Service() string { return w.spec.Namespace + "/" + w.spec.Name }

func (w *Workload) close() {
	for _, e := range w.instances {
		_ = e.Close()
	}
}

func (w *Workload) portName() string {
	if w.spec.HTTP && !w.spec.OpaquePort {
		return "http"
	}
	return "tcp"
}

func (w *Workload) sliceName(i int) string { return w.spec.Name + "-" + strconv.Itoa(i) }

// The cluster network, simulated. There is no kubelet and no CNI: every
// process runs on loopback, and the API server refuses loopback addresses
// in EndpointSlices. So each cluster k (its index in Options.Clusters)
// has a pod network 10.244.k.0/24: an endpoint's address is 10.244.k.(i+1)
// with its echo server's real loopback port, the cluster's gateway address
// is 10.244.k.254, and testenv's traffic helpers send what is addressed to
// 10.244.k.x:port to 127.0.0.1:port, as the cluster network would.
const podNetworkPrefix = "10.244."

// PodIP is the address of replica i (or, for i = 253, of the cluster's
// gateway) in the cluster's simulated pod network.
func (c *ClusterEnv) PodIP(i int) string {
	return fmt.Sprintf("%s%d.%d", podNetworkPrefix, c.index, i+1)
}

// GatewayIP is the cluster's gateway address in its simulated pod network;
// the agent's imports point at it.
func (c *ClusterEnv) GatewayIP() string { return c.PodIP(253) }

// Loopback maps an address of the cluster's simulated pod network
// (host:port) to where it is served on this machine: 127.0.0.1 with the same
// port. Other addresses are returned unchanged.
func (c *ClusterEnv) Loopback(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || !strings.HasPrefix(host, fmt.Sprintf("%s%d.", podNetworkPrefix, c.index)) {
		return addr
	}
	return net.JoinHostPort("127.0.0.1", port)
}

// fatal fails the test of a federation made by Start, and panics for one
// made by New: the cluster helpers are for tests, where a failed setup
// step ends the test.
func (c *ClusterEnv) fatal(err error) {
	if c.fed != nil && c.fed.tb != nil {
		c.fed.tb.Helper()
		c.fed.tb.Fatal(err)
	}
	panic(err)
}

// Deploy starts spec's echo servers and writes its Service, Pods and
// EndpointSlices into the cluster. It fails the test on error.
func (c *ClusterEnv) Deploy(spec WorkloadSpec) *Workload {
	w, err := c.deploy(context.Background(), spec)
	if err != nil {
		c.fatal(fmt.Errorf("testenv: cluster %s: deploy %s/%s: %w", c.Name(), spec.Namespace, spec.Name, err))
	}
	return w
}

func (c *ClusterEnv) deploy(ctx context.Context, spec WorkloadSpec) (*Workload, error) {
	if _, err := federation.NewServiceKey(spec.Namespace, spec.Name); err != nil {
		return nil, err
	}
	if spec.Replicas < 1 || spec.Replicas > 100 {
		return nil, fmt.Errorf("replicas: %d: must be 1 to 100", spec.Replicas)
	}
	switch {
	case spec.Port == 0 && spec.HTTP:
		spec.Port = 80
	case spec.Port == 0:
		spec.Port = 9000
	case spec.Port < 0 || spec.Port > 65535:
		return nil, fmt.Errorf("port: %d: must be 1 to 65535", spec.Port)
	}
	w := &Workload{spec: spec, cluster: c}
	c.wmu.Lock()
	_, dup := c.workloads[w.Service()]
	if !dup {
		c.workloads[w.Service()] = w // its echo servers are closed with the federation
	}
	c.wmu.Unlock()
	if dup {
		return nil, errors.New("already deployed")
	}
	for i := range spec.Replicas {
		inst := Instance{Cluster: c.Name(), Zone: c.spec.Zone, Name: w.sliceName(i)}
		var e *Echo
		var err error
		if spec.HTTP {
			e, err = StartHTTPEcho(inst)
		} else {
			e, err = StartTCPEcho(inst)
		}
		if err != nil {
			w.close()
			return nil, err
		}
		w.instances = append(w.instances, e)
	}
	kc := c.clientset
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: spec.Namespace}}
	if _, err := kc.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return nil, err
	}
	proto := corev1.ProtocolTCP
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: spec.Namespace, Name: spec.Name},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP, Ports: []corev1.ServicePort{{
			Name: w.portName(), Port: spec.Port, Protocol: proto, TargetPort: intstr.FromString(w.portName()),
		}}},
	}
	if spec.HTTP && !spec.OpaquePort {
		ap := "http"
		svc.Spec.Ports[0].AppProtocol = &ap
	}
	if _, err := kc.CoreV1().Services(spec.Namespace).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		return nil, err
	}
	for i, e := range w.instances {
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: spec.Namespace, Name: w.sliceName(i), Labels: spec.Labels},
			Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "echo", Image: "meshfed.io/testenv-echo"}}},
		}
		if _, err := kc.CoreV1().Pods(spec.Namespace).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
			return nil, err
		}
		if _, err := kc.DiscoveryV1().EndpointSlices(spec.Namespace).Create(ctx, w.slice(i, e, true), metav1.CreateOptions{}); err != nil {
			return nil, err
		}
	}
	return w, nil
}

// slice is replica i's EndpointSlice.
func (w *Workload) slice(i int, e *Echo, ready bool) *discoveryv1.EndpointSlice {
	_, portStr, _ := net.SplitHostPort(e.Addr())
	port, _ := strconv.Atoi(portStr)
	host := w.cluster.PodIP(i)
	name, p, proto := w.portName(), int32(port), corev1.ProtocolTCP
	zone := w.cluster.spec.Zone
	return &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Namespace: w.spec.Namespace, Name: w.sliceName(i), Labels: map[string]string{
			discoveryv1.LabelServiceName: w.spec.Name, discoveryv1.LabelManagedBy: "testenv.meshfed.io",
		}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints: []discoveryv1.Endpoint{{
			Addresses:  []string{host},
			Conditions: discoveryv1.EndpointConditions{Ready: &ready, Serving: &ready},
			Zone:       &zone,
			TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: w.spec.Namespace, Name: w.sliceName(i)},
		}},
		Ports: []discoveryv1.EndpointPort{{Name: &name, Port: &p, Protocol: &proto}},
	}
}

// SetReady marks replica i's endpoint ready or not in its EndpointSlice,
// as the EndpointSlice controller does when a readiness probe flips. The
// echo server itself keeps serving; see [Echo.SetHealthy] and [Echo.Kill].
func (w *Workload) SetReady(i int, ready bool) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	slices := w.cluster.clientset.DiscoveryV1().EndpointSlices(w.spec.Namespace)
	cur, err := slices.Get(ctx, w.sliceName(i), metav1.GetOptions{})
	if err != nil {
		return err
	}
	n := w.slice(i, w.instances[i], ready)
	n.ResourceVersion = cur.ResourceVersion
	_, err = slices.Update(ctx, n, metav1.UpdateOptions{})
	return err
}

// Fail fails every endpoint of the workload: each echo server is killed
// (connections refused) and its endpoint marked not ready. Recover undoes
// it.
func (w *Workload) Fail() error {
	var errs []error
	for i, e := range w.instances {
		e.Kill()
		errs = append(errs, w.SetReady(i, false))
	}
	return errors.Join(errs...)
}

// Recover revives every echo server and marks its endpoint ready.
func (w *Workload) Recover() error {
	var errs []error
	for i, e := range w.instances {
		errs = append(errs, e.Revive(), w.SetReady(i, true))
	}
	return errors.Join(errs...)
}

// Export creates the MCS ServiceExport of "namespace/name" in the cluster.
// It fails the test on error.
func (c *ClusterEnv) Export(service string) {
	if err := c.export(context.Background(), service); err != nil {
		c.fatal(fmt.Errorf("testenv: cluster %s: export %s: %w", c.Name(), service, err))
	}
}

func (c *ClusterEnv) export(ctx context.Context, service string) error {
	ns, name, _ := strings.Cut(service, "/")
	se := &mcsv1b1.ServiceExport{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
	_, err := c.mcs.MulticlusterV1beta1().ServiceExports(ns).Create(ctx, se, metav1.CreateOptions{})
	return err
}

// Unexport deletes the ServiceExport of "namespace/name". It fails the
// test on error.
func (c *ClusterEnv) Unexport(service string) {
	ns, name, _ := strings.Cut(service, "/")
	if err := c.mcs.MulticlusterV1beta1().ServiceExports(ns).Delete(context.Background(), name, metav1.DeleteOptions{}); err != nil {
		c.fatal(fmt.Errorf("testenv: cluster %s: unexport %s: %w", c.Name(), service, err))
	}
}

// Targets resolves "namespace/name" as a pod of the cluster would: the
// ready endpoints of the cluster's own Service of that name
// (name.namespace.svc.cluster.local), or when the cluster has none, the
// endpoints of the agent's import (name.namespace.svc.clusterset.local),
// which point at the cluster's east-west gateway. It returns host:port
// addresses in the cluster's pod network (see [ClusterEnv.Loopback]).
func (c *ClusterEnv) Targets(ctx context.Context, service string) ([]string, error) {
	ns, name, _ := strings.Cut(service, "/")
	for _, svcName := range []string{name, "meshfed-" + name} {
		sl, err := c.clientset.DiscoveryV1().EndpointSlices(ns).List(ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=" + svcName})
		if err != nil {
			return nil, err
		}
		var out []string
		for _, s := range sl.Items {
			for _, p := range s.Ports {
				if p.Port == nil {
					continue
				}
				for _, e := range s.Endpoints {
					if e.Conditions.Ready != nil && !*e.Conditions.Ready {
						continue
					}
					for _, a := range e.Addresses {
						out = append(out, net.JoinHostPort(a, strconv.Itoa(int(*p.Port))))
					}
				}
			}
		}
		if len(out) > 0 {
			return out, nil
		}
	}
	return nil, fmt.Errorf("testenv: cluster %s: %s has no ready endpoints (neither a local Service nor an import)", c.Name(), service)
}

// Drive sends requests to "namespace/name" from inside the cluster (see
// [ClusterEnv.Targets] for how it resolves) and records every outcome:
// HTTP GETs when the service is an HTTP workload deployed with testenv
// anywhere in the federation, else TCP echo exchanges.
//
// Cross-cluster requests go through the cluster's east-west gateway (an
// import's endpoints are the gateway's egress port), then over QUIC to a
// gateway of an exporting cluster.
func (c *ClusterEnv) Drive(service string, opts ...DriveOption) *Result {
	ctx := context.Background()
	targets, err := c.Targets(ctx, service)
	if err != nil {
		c.fatal(err)
	}
	for i, t := range targets {
		targets[i] = c.Loopback(t)
	}
	if c.isHTTP(service) {
		urls := make([]string, len(targets))
		for i, t := range targets {
			urls[i] = "http://" + t + "/"
		}
		return driveHTTP(ctx, urls, opts...)
	}
	return driveTCP(ctx, targets, opts...)
}

// isHTTP reports whether service is an HTTP workload in any cluster.
func (c *ClusterEnv) isHTTP(service string) bool {
	if c.fed == nil {
		return false
	}
	for _, o := range c.fed.clusters {
		if w := o.Workload(service); w != nil {
			return w.spec.HTTP
		}
	}
	return false
}

// Workload returns the workload deployed as "namespace/name" in the
// cluster, or nil.
func (c *ClusterEnv) Workload(service string) *Workload {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.workloads[service]
}

func (c *ClusterEnv) workloadList() []*Workload {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	out := make([]*Workload, 0, len(c.workloads))
	for _, w := range c.workloads {
		out = append(out, w)
	}
	return out
}
