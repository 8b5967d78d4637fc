package deploytest

import (
	"fmt"
	"net"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/meshfed/meshfed/agent"
)

// install is one rendered installation: a kustomize directory's output or
// the chart rendered with some values.
type install struct {
	name string
	objs []*unstructured.Unstructured
}

func (in install) find(kind, name string) *unstructured.Unstructured {
	for _, o := range in.objs {
		if o.GetKind() == kind && o.GetName() == name {
			return o
		}
	}
	return nil
}

func (in install) all(kind string) []*unstructured.Unstructured {
	var out []*unstructured.Unstructured
	for _, o := range in.objs {
		if o.GetKind() == kind {
			out = append(out, o)
		}
	}
	return out
}

// convert decodes o strictly into a typed object: an unknown field fails.
func convert[T any](t *testing.T, o *unstructured.Unstructured) *T {
	t.Helper()
	var v T
	if err := runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(o.Object, &v, true); err != nil {
		t.Fatalf("%s %s: %v", o.GetKind(), o.GetName(), err)
	}
	return &v
}

// workload is a rendered Deployment or StatefulSet.
type workload struct {
	kind, name string
	replicas   int32
	selector   *metav1.LabelSelector
	pod        corev1.PodTemplateSpec
}

func workloads(t *testing.T, in install) []workload {
	t.Helper()
	var out []workload
	for _, o := range in.objs {
		switch o.GetKind() {
		case "Deployment":
			d := convert[appsv1.Deployment](t, o)
			out = append(out, workload{"Deployment", d.Name, ptrOr(d.Spec.Replicas, 1), d.Spec.Selector, d.Spec.Template})
		case "StatefulSet":
			s := convert[appsv1.StatefulSet](t, o)
			out = append(out, workload{"StatefulSet", s.Name, ptrOr(s.Spec.Replicas, 1), s.Spec.Selector, s.Spec.Template})
		}
	}
	return out
}

func ptrOr[T any](p *T, def T) T {
	if p == nil {
		return def
	}
	return *p
}

// The hub's measured memory (agent's BenchmarkScale, 256 clusters x 50
// services published at once to a 3-server hub, no memory limit): about
// 460 MiB RSS per server after the burst, 46 MiB of it live heap. The limit
// must leave at least a quarter above it.
const (
	hubMeasuredRSS = 460 << 20
	minHeadroom    = 1.25
)

// goMemLimit parses a GOMEMLIMIT value as the Go runtime does: a number
// of bytes with an optional unit B, KiB, MiB, GiB or TiB.
func goMemLimit(s string) (int64, error) {
	m := regexp.MustCompile(`^([0-9]+)(B|KiB|MiB|GiB|TiB)?$`).FindStringSubmatch(s)
	if m == nil {
		return 0, fmt.Errorf("GOMEMLIMIT %q: want a number with an optional unit B, KiB, MiB, GiB or TiB", s)
	}
	n, err := strconv.ParseInt(m[1], 10, 64)
	if err != nil {
		return 0, err
	}
	shift := map[string]int{"": 0, "B": 0, "KiB": 10, "MiB": 20, "GiB": 30, "TiB": 40}[m[2]]
	return n << shift, nil
}

// checkPods checks every workload's pod template: non-root as the image's
// user, read-only root, no privilege escalation, no capabilities; every
// container with CPU and memory requests, a memory limit and GOMEMLIMIT at
// 80-90% of it, readiness and liveness probes on ports the container
// declares; every containerPort one that a flag of the container binds.
func checkPods(t *testing.T, in install) {
	ws := workloads(t, in)
	if len(ws) == 0 {
		t.Fatalf("%s: no workloads", in.name)
	}
	for _, w := range ws {
		where := fmt.Sprintf("%s: %s %s", in.name, w.kind, w.name)
		spec := w.pod.Spec
		sc := spec.SecurityContext
		if sc == nil || !ptrOr(sc.RunAsNonRoot, false) || ptrOr(sc.RunAsUser, 0) != imageUID {
			t.Errorf("%s: pod securityContext %+v: want runAsNonRoot and runAsUser %d (the image's USER)", where, sc, imageUID)
		}
		sel, err := metav1.LabelSelectorAsSelector(w.selector)
		if err != nil || !sel.Matches(labels.Set(w.pod.Labels)) {
			t.Errorf("%s: selector %v does not select its own pods %v", where, w.selector, w.pod.Labels)
		}
		for _, c := range spec.Containers {
			where := where + " container " + c.Name
			csc := c.SecurityContext
			if csc == nil || !ptrOr(csc.ReadOnlyRootFilesystem, false) || ptrOr(csc.AllowPrivilegeEscalation, true) ||
				csc.Capabilities == nil || !slices.Contains(csc.Capabilities.Drop, "ALL") {
				t.Errorf("%s: securityContext %+v: want a read-only root, no privilege escalation, all capabilities dropped", where, csc)
			}
			req, lim := c.Resources.Requests, c.Resources.Limits
			if req.Cpu().IsZero() || req.Memory().IsZero() || lim.Memory().IsZero() {
				t.Errorf("%s: resources %+v: want CPU and memory requests and a memory limit", where, c.Resources)
				continue
			}
			var gml string
			for _, e := range c.Env {
				if e.Name == "GOMEMLIMIT" {
					gml = e.Value
				}
			}
			n, err := goMemLimit(gml)
			if err != nil {
				t.Errorf("%s: %v", where, err)
			} else if r := float64(n) / float64(lim.Memory().Value()); r < 0.8 || r > 0.9 {
				t.Errorf("%s: GOMEMLIMIT %s is %.0f%% of the memory limit %s; want 80-90%%", where, gml, 100*r, lim.Memory())
			}
			checkProbes(t, where, c)
			checkPortsBound(t, where, c)
		}
	}
}

// checkProbes: readiness and liveness probes exist; an HTTP probe asks
// /healthz (liveness) or /readyz (readiness) on a port the container
// declares; an exec probe runs meshfed agent status on the agent's
// --http-port.
func checkProbes(t *testing.T, where string, c corev1.Container) {
	t.Helper()
	for _, p := range []struct {
		name, path string
		probe      *corev1.Probe
	}{{"readiness", "/readyz", c.ReadinessProbe}, {"liveness", "/healthz", c.LivenessProbe}} {
		switch {
		case p.probe == nil:
			t.Errorf("%s: no %s probe", where, p.name)
		case p.probe.HTTPGet != nil:
			if p.probe.HTTPGet.Path != p.path {
				t.Errorf("%s: %s probe path %s, want %s", where, p.name, p.probe.HTTPGet.Path, p.path)
			}
			port, ok := containerPort(c, p.probe.HTTPGet.Port, corev1.ProtocolTCP)
			if !ok {
				t.Errorf("%s: %s probe port %s is not a container port", where, p.name, p.probe.HTTPGet.Port.String())
				continue
			}
			if !slices.Contains(flagPorts(c.Args), port) {
				t.Errorf("%s: %s probe on port %d, where no flag of %v binds", where, p.name, port, c.Args)
			}
		case p.probe.Exec != nil:
			want := []string{"/meshfed", "agent", "status", "--agent=127.0.0.1:" + flagValue(c.Args, "http-port")}
			if !slices.Equal(p.probe.Exec.Command, want) {
				t.Errorf("%s: %s probe %v, want %v (the agent's HTTP server is on 127.0.0.1 only)", where, p.name, p.probe.Exec.Command, want)
			}
		default:
			t.Errorf("%s: %s probe %+v: want HTTP or exec", where, p.name, p.probe)
		}
	}
}

// containerPort resolves a port reference (number or name) of c.
func containerPort(c corev1.Container, ref intstr.IntOrString, proto corev1.Protocol) (int, bool) {
	for _, p := range c.Ports {
		pp := p.Protocol
		if pp == "" {
			pp = corev1.ProtocolTCP
		}
		if pp != proto {
			continue
		}
		if (ref.Type == intstr.String && p.Name == ref.StrVal) || (ref.Type == intstr.Int && int(p.ContainerPort) == ref.IntValue()) {
			return int(p.ContainerPort), true
		}
	}
	return 0, false
}

// flagValue is the value of --name=value in args ("" if absent).
func flagValue(args []string, name string) string {
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, "--"+name+"="); ok {
			return v
		}
	}
	return ""
}

// flagPorts are the ports the arguments bind: --x-port=N and
// --x=host:N.
func flagPorts(args []string) []int {
	var out []int
	for _, a := range args {
		name, v, ok := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		if !ok || !strings.HasPrefix(a, "--") {
			continue
		}
		if strings.HasSuffix(name, "-port") {
			if n, err := strconv.Atoi(v); err == nil {
				out = append(out, n)
			}
			continue
		}
		if _, p, err := net.SplitHostPort(v); err == nil {
			if n, err := strconv.Atoi(p); err == nil {
				out = append(out, n)
			}
		}
	}
	return out
}

// checkPortsBound: every container port is one a flag binds, so nothing
// is declared (and exposed) that nothing listens on, and a changed flag
// without its port fails.
func checkPortsBound(t *testing.T, where string, c corev1.Container) {
	t.Helper()
	bound := flagPorts(c.Args)
	for _, p := range c.Ports {
		if !slices.Contains(bound, int(p.ContainerPort)) {
			t.Errorf("%s: containerPort %s %d: no flag of %v binds it", where, p.Name, p.ContainerPort, c.Args)
		}
	}
}

// checkServices: every Service selects pods of a workload and each of its
// target ports is a container port of those pods with the same protocol.
func checkServices(t *testing.T, in install) {
	ws := workloads(t, in)
	for _, o := range in.all("Service") {
		svc := convert[corev1.Service](t, o)
		where := in.name + ": Service " + svc.Name
		var pods []workload
		for _, w := range ws {
			if len(svc.Spec.Selector) > 0 && labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(w.pod.Labels)) {
				pods = append(pods, w)
			}
		}
		if len(pods) == 0 {
			t.Errorf("%s: selector %v selects no workload's pods", where, svc.Spec.Selector)
			continue
		}
		for _, p := range svc.Spec.Ports {
			proto := p.Protocol
			if proto == "" {
				proto = corev1.ProtocolTCP
			}
			ref := p.TargetPort
			if ref.Type == intstr.Int && ref.IntVal == 0 {
				ref = intstr.FromInt32(p.Port)
			}
			for _, w := range pods {
				var found bool
				for _, c := range w.pod.Spec.Containers {
					_, ok := containerPort(c, ref, proto)
					found = found || ok
				}
				if !found {
					t.Errorf("%s: port %s (%s %s) is no container port of %s %s", where, p.Name, proto, ref.String(), w.kind, w.name)
				}
			}
		}
	}
}

// checkNetworkPolicies: every workload's pods are selected by a
// NetworkPolicy, and every container port is open to someone (a policy
// that blocked the product's own ports would break it silently).
func checkNetworkPolicies(t *testing.T, in install) {
	var nps []*networkingv1.NetworkPolicy
	for _, o := range in.all("NetworkPolicy") {
		nps = append(nps, convert[networkingv1.NetworkPolicy](t, o))
	}
	for _, w := range workloads(t, in) {
		where := fmt.Sprintf("%s: %s %s", in.name, w.kind, w.name)
		var mine []*networkingv1.NetworkPolicy
		for _, np := range nps {
			sel, err := metav1.LabelSelectorAsSelector(&np.Spec.PodSelector)
			if err == nil && sel.Matches(labels.Set(w.pod.Labels)) {
				mine = append(mine, np)
			}
		}
		if len(mine) == 0 {
			t.Errorf("%s: no NetworkPolicy selects its pods", where)
			continue
		}
		for _, c := range w.pod.Spec.Containers {
			for _, p := range c.Ports {
				proto := p.Protocol
				if proto == "" {
					proto = corev1.ProtocolTCP
				}
				if !policiesAllow(mine, c, int(p.ContainerPort), proto) {
					t.Errorf("%s: port %s %d/%s is open to no one", where, p.Name, p.ContainerPort, proto)
				}
			}
		}
	}
}

func policiesAllow(nps []*networkingv1.NetworkPolicy, c corev1.Container, port int, proto corev1.Protocol) bool {
	for _, np := range nps {
		for _, r := range np.Spec.Ingress {
			if len(r.Ports) == 0 {
				return true
			}
			for _, p := range r.Ports {
				pp := ptrOr(p.Protocol, corev1.ProtocolTCP)
				if pp != proto || p.Port == nil {
					continue
				}
				n, ok := containerPort(c, *p.Port, proto)
				if !ok && p.Port.Type == intstr.Int {
					n = p.Port.IntValue()
				}
				if n == port || (p.EndPort != nil && port >= n && port <= int(*p.EndPort)) {
					return true
				}
			}
		}
	}
	return false
}

// checkHub: 3 servers that find each other (publishNotReadyAddresses on
// the governing Service), a PodDisruptionBudget keeping a quorum, anti-
// affinity by node, a LoadBalancer or NodePort Service for the gRPC API,
// and a memory limit above the measured RSS with headroom.
func checkHub(t *testing.T, in install) {
	o := in.find("StatefulSet", "meshfed-hub")
	if o == nil {
		t.Fatalf("%s: no StatefulSet meshfed-hub", in.name)
	}
	s := convert[appsv1.StatefulSet](t, o)
	replicas := ptrOr(s.Spec.Replicas, 1)
	if replicas != 3 && replicas != 5 {
		t.Errorf("%s: hub replicas %d, want 3 or 5", in.name, replicas)
	}
	c := s.Spec.Template.Spec.Containers[0]
	if v := flagValue(c.Args, "bootstrap-expect"); v != strconv.Itoa(int(replicas)) {
		t.Errorf("%s: --bootstrap-expect=%s with %d replicas", in.name, v, replicas)
	}
	if lim := c.Resources.Limits.Memory().Value(); float64(lim) < minHeadroom*hubMeasuredRSS {
		t.Errorf("%s: hub memory limit %s: want at least %.2f x the measured %d MiB RSS", in.name, c.Resources.Limits.Memory(), minHeadroom, hubMeasuredRSS>>20)
	}
	pa := s.Spec.Template.Spec.Affinity
	if pa == nil || pa.PodAntiAffinity == nil {
		t.Errorf("%s: hub pods without anti-affinity", in.name)
	} else {
		var terms []corev1.PodAffinityTerm
		terms = append(terms, pa.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution...)
		for _, w := range pa.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution {
			terms = append(terms, w.PodAffinityTerm)
		}
		var spread bool
		for _, term := range terms {
			sel, err := metav1.LabelSelectorAsSelector(term.LabelSelector)
			spread = spread || (err == nil && term.TopologyKey == "kubernetes.io/hostname" && sel.Matches(labels.Set(s.Spec.Template.Labels)))
		}
		if !spread {
			t.Errorf("%s: hub anti-affinity %+v does not keep servers on different nodes", in.name, pa.PodAntiAffinity)
		}
	}
	var pdb bool
	for _, o := range in.all("PodDisruptionBudget") {
		p := convert[policyv1.PodDisruptionBudget](t, o)
		sel, err := metav1.LabelSelectorAsSelector(p.Spec.Selector)
		if err != nil || !sel.Matches(labels.Set(s.Spec.Template.Labels)) {
			continue
		}
		pdb = true
		quorum := int(replicas)/2 + 1
		if p.Spec.MinAvailable == nil || p.Spec.MinAvailable.IntValue() != quorum {
			t.Errorf("%s: PodDisruptionBudget %s minAvailable %v, want %d (a Raft quorum of %d)", in.name, p.Name, p.Spec.MinAvailable, quorum, replicas)
		}
	}
	if !pdb {
		t.Errorf("%s: no PodDisruptionBudget for the hub", in.name)
	}
	gov := in.find("Service", s.Spec.ServiceName)
	if gov == nil || !convert[corev1.Service](t, gov).Spec.PublishNotReadyAddresses {
		t.Errorf("%s: governing Service %s missing or without publishNotReadyAddresses (servers must find each other before they are ready)", in.name, s.Spec.ServiceName)
	}
	grpc := flagValue(c.Args, "grpc-port")
	var external bool
	for _, o := range in.all("Service") {
		svc := convert[corev1.Service](t, o)
		if svc.Spec.Type != corev1.ServiceTypeLoadBalancer && svc.Spec.Type != corev1.ServiceTypeNodePort {
			continue
		}
		for _, p := range svc.Spec.Ports {
			if n, ok := containerPort(c, p.TargetPort, corev1.ProtocolTCP); ok && strconv.Itoa(n) == grpc {
				external = true
			}
		}
	}
	if !external {
		t.Errorf("%s: no LoadBalancer or NodePort Service reaches the hub's gRPC port %s", in.name, grpc)
	}
}

// checkGateway: a UDP LoadBalancer (or NodePort) Service on the QUIC
// ingress, and the ServiceAccount whose projected token (audience: the
// agent's) the agent's TokenReview accepts.
func checkGateway(t *testing.T, in install) {
	o := in.find("Deployment", "meshfed-gateway")
	if o == nil {
		t.Fatalf("%s: no Deployment meshfed-gateway", in.name)
	}
	d := convert[appsv1.Deployment](t, o)
	spec := d.Spec.Template.Spec
	if spec.ServiceAccountName != agent.DefaultGatewayServiceAccount || in.find("ServiceAccount", spec.ServiceAccountName) == nil {
		t.Errorf("%s: gateway serviceAccountName %q, want %s, rendered", in.name, spec.ServiceAccountName, agent.DefaultGatewayServiceAccount)
	}
	var audience bool
	for _, v := range spec.Volumes {
		if v.Projected == nil {
			continue
		}
		for _, s := range v.Projected.Sources {
			audience = audience || (s.ServiceAccountToken != nil && s.ServiceAccountToken.Audience == agent.GatewayTokenAudience)
		}
	}
	if !audience {
		t.Errorf("%s: gateway has no projected token with audience %s", in.name, agent.GatewayTokenAudience)
	}
	c := spec.Containers[0]
	_, port, err := net.SplitHostPort(flagValue(c.Args, "ingress"))
	if err != nil {
		t.Fatalf("%s: gateway --ingress: %v", in.name, err)
	}
	var external bool
	for _, o := range in.all("Service") {
		svc := convert[corev1.Service](t, o)
		if svc.Spec.Type != corev1.ServiceTypeLoadBalancer && svc.Spec.Type != corev1.ServiceTypeNodePort {
			continue
		}
		for _, p := range svc.Spec.Ports {
			if n, ok := containerPort(c, p.TargetPort, corev1.ProtocolUDP); ok && p.Protocol == corev1.ProtocolUDP && strconv.Itoa(n) == port {
				external = true
			}
		}
	}
	if !external {
		t.Errorf("%s: no UDP LoadBalancer or NodePort Service reaches the gateway's QUIC ingress %s", in.name, port)
	}
}

// rbacRule is one grant: a verb on a resource of an API group.
type rbacRule struct{ group, resource, verb string }

// The Kubernetes API calls the agent makes, each verb with where it is
// made. The agent's ClusterRole and Role must grant exactly these: one
// more is privilege it does not use; one less breaks it. Update it with
// the code.
var (
	agentClusterCalls = map[rbacRule]string{
		{"multicluster.x-k8s.io", "serviceexports", "list"}:          "kubesource.go: informer; List when the hub connection changes",
		{"multicluster.x-k8s.io", "serviceexports", "watch"}:         "kubesource.go: informer",
		{"multicluster.x-k8s.io", "serviceexports/status", "update"}: "kubesource.go: UpdateStatus (Valid, Conflict)",
		{"multicluster.x-k8s.io", "serviceimports", "list"}:          "kubeimport.go: informer; List at start and removal",
		{"multicluster.x-k8s.io", "serviceimports", "watch"}:         "kubeimport.go: informer",
		{"multicluster.x-k8s.io", "serviceimports", "create"}:        "kubeimport.go: Create",
		{"multicluster.x-k8s.io", "serviceimports", "update"}:        "kubeimport.go: Update",
		{"multicluster.x-k8s.io", "serviceimports", "delete"}:        "kubeimport.go: Delete",
		{"multicluster.x-k8s.io", "serviceimports/status", "update"}: "kubeimport.go: UpdateStatus",
		{"", "services", "get"}:                                      "kubeimport.go: Get of a derived Service's name before Create",
		{"", "services", "list"}:                                     "kubesource.go, kubeimport.go: informers; List at removal",
		{"", "services", "watch"}:                                    "kubesource.go, kubeimport.go: informers",
		{"", "services", "create"}:                                   "kubeimport.go: Create",
		{"", "services", "update"}:                                   "kubeimport.go: Update",
		{"", "services", "delete"}:                                   "kubeimport.go: Delete",
		{"discovery.k8s.io", "endpointslices", "list"}:               "kubesource.go, kubeimport.go: informers; List at removal",
		{"discovery.k8s.io", "endpointslices", "watch"}:              "kubesource.go, kubeimport.go: informers",
		{"discovery.k8s.io", "endpointslices", "create"}:             "kubeimport.go: Create",
		{"discovery.k8s.io", "endpointslices", "update"}:             "kubeimport.go: Update",
		{"discovery.k8s.io", "endpointslices", "delete"}:             "kubeimport.go: Delete",
		{"about.k8s.io", "clusterproperties", "get"}:                 "clusterid.go: Get",
		{"about.k8s.io", "clusterproperties", "create"}:              "clusterid.go: Create when absent",
		{"authentication.k8s.io", "tokenreviews", "create"}:          "tokenreview.go: a gateway's token",
		{"", "nodes", "list"}:                                        "kubesource.go: informer (zones)",
		{"", "nodes", "watch"}:                                       "kubesource.go: informer",
		{"", "pods", "list"}:                                         "kubesource.go: metadata informer; kubeimport.go: gateway pods; workloads.go: pod IPs and service accounts",
		{"", "pods", "watch"}:                                        "kubesource.go, kubeimport.go, workloads.go: informers",
		{"", "namespaces", "list"}:                                   "kubeimport.go: informer",
		{"", "namespaces", "watch"}:                                  "kubeimport.go: informer",
		{"", "namespaces", "create"}:                                 "credentials.go: meshfed-system when missing",
	}
	agentNamespaceCalls = map[rbacRule]string{
		{"", "secrets", "get"}:                      "credentials.go: secretStore.Load/Save",
		{"", "secrets", "create"}:                   "credentials.go: secretStore.Save",
		{"", "secrets", "update"}:                   "credentials.go: secretStore.Save",
		{"", "configmaps", "get"}:                   "cmcache.go",
		{"", "configmaps", "create"}:                "cmcache.go",
		{"", "configmaps", "update"}:                "cmcache.go",
		{"", "configmaps", "delete"}:                "cmcache.go: stale chunks",
		{"coordination.k8s.io", "leases", "get"}:    "leader.go: client-go LeaseLock",
		{"coordination.k8s.io", "leases", "create"}: "leader.go: client-go LeaseLock",
		{"coordination.k8s.io", "leases", "update"}: "leader.go: client-go LeaseLock",
	}
)

func grants(rules []rbacv1.PolicyRule) map[rbacRule]bool {
	m := map[rbacRule]bool{}
	for _, r := range rules {
		for _, g := range r.APIGroups {
			for _, res := range r.Resources {
				for _, v := range r.Verbs {
					m[rbacRule{g, res, v}] = true
				}
			}
		}
	}
	return m
}

// checkAgentRBAC: the agent's ServiceAccount is bound to a ClusterRole and
// a Role in its namespace that grant exactly the calls the agent makes.
func checkAgentRBAC(t *testing.T, in install) {
	o := in.find("Deployment", "meshfed-agent")
	if o == nil {
		t.Fatalf("%s: no Deployment meshfed-agent", in.name)
	}
	d := convert[appsv1.Deployment](t, o)
	sa := d.Spec.Template.Spec.ServiceAccountName
	if in.find("ServiceAccount", sa) == nil {
		t.Errorf("%s: agent ServiceAccount %q not rendered", in.name, sa)
	}
	check := func(bindingKind, roleKind string, want map[rbacRule]string) {
		var got map[rbacRule]bool
		for _, o := range in.all(bindingKind) {
			b := convert[rbacv1.RoleBinding](t, o)
			if len(b.Subjects) != 1 || b.Subjects[0].Kind != "ServiceAccount" || b.Subjects[0].Name != sa || b.Subjects[0].Namespace != d.Namespace {
				continue
			}
			if b.RoleRef.Kind != roleKind || (bindingKind == "RoleBinding" && b.Namespace != d.Namespace) {
				t.Errorf("%s: %s %s binds %s %s", in.name, bindingKind, b.Name, b.RoleRef.Kind, b.RoleRef.Name)
				continue
			}
			r := in.find(roleKind, b.RoleRef.Name)
			if r == nil {
				t.Errorf("%s: %s %s binds %s %s, which is not rendered", in.name, bindingKind, b.Name, roleKind, b.RoleRef.Name)
				continue
			}
			got = grants(convert[rbacv1.ClusterRole](t, r).Rules)
		}
		if got == nil {
			t.Errorf("%s: no %s binds the agent's ServiceAccount %s/%s", in.name, bindingKind, d.Namespace, sa)
			return
		}
		for r, where := range want {
			if !got[r] {
				t.Errorf("%s: the agent's %s lacks %s %s (group %q), which the agent calls: %s", in.name, roleKind, r.verb, r.resource, r.group, where)
			}
		}
		for r := range got {
			if _, ok := want[r]; !ok {
				t.Errorf("%s: the agent's %s grants %s %s (group %q), which the agent never calls", in.name, roleKind, r.verb, r.resource, r.group)
			}
		}
	}
	check("ClusterRoleBinding", "ClusterRole", agentClusterCalls)
	check("RoleBinding", "Role", agentNamespaceCalls)
}
