package kind

import (
	"context"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/yaml"
)

var repoRoot = func() string {
	abs, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		panic(err)
	}
	return abs
}()

// render renders the kustomization in dir as the backend does.
func render(t *testing.T, dir string) []*unstructured.Unstructured {
	t.Helper()
	objs, err := Render(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	return objs
}

// byKind indexes objects by "Kind name"; it fails on a duplicate.
func byKind(t *testing.T, objs []*unstructured.Unstructured) map[string]*unstructured.Unstructured {
	t.Helper()
	m := map[string]*unstructured.Unstructured{}
	for _, o := range objs {
		k := o.GetKind() + " " + o.GetName()
		if _, dup := m[k]; dup {
			t.Fatalf("%s twice", k)
		}
		m[k] = o
	}
	return m
}

func convert[T any](t *testing.T, o *unstructured.Unstructured) *T {
	t.Helper()
	var v T
	if err := runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(o.Object, &v, true); err != nil {
		t.Fatalf("%s %s: %v", o.GetKind(), o.GetName(), err)
	}
	return &v
}

// The flags `meshfed agent` and `meshfed join` accept (cmd/meshfed/agent.go,
// agentFlags.add), and those the Deployment must set: the agent's
// Config.Validate requires cluster, locality, data dir and, with the
// kubernetes source, the gateway address.
var (
	agentFlags = map[string]bool{
		"cluster": true, "region": true, "zone": true, "source": true, "kubeconfig": true,
		"data-dir": true, "http-port": true, "gateway-address": true, "egress-ports": true,
		"gateway": true, "log-level": true, "gateway-api": true, "hub": true, "trust-domain": true,
		"svid-ttl": true, "bundle-refresh": true, "clock-skew": true,
		"dns-bind": true, "leader-election-id": true, "metrics-bind": true,
	}
	// agentBoolFlags are the flags of meshfed agent that take no value.
	agentBoolFlags = map[string]bool{"leader-elect": true}
	agentRequired  = []string{"cluster", "region", "zone", "source", "gateway-address", "data-dir", "http-port"}
)

// agentParts is what the tests check in a rendered agent.
type agentParts struct {
	deploy    *appsv1.Deployment
	container corev1.Container
	configMap *corev1.ConfigMap
	flags     map[string]string
}

// checkAgent checks the structure of a rendered agent and returns its parts.
func checkAgent(t *testing.T, objs []*unstructured.Unstructured) agentParts {
	t.Helper()
	m := byKind(t, objs)
	var kinds []string
	for _, o := range objs {
		kinds = append(kinds, o.GetKind())
		if o.GetKind() != "Namespace" && o.GetKind() != "ClusterRole" && o.GetKind() != "ClusterRoleBinding" && o.GetNamespace() != Namespace {
			t.Errorf("%s %s: namespace %q, want %s", o.GetKind(), o.GetName(), o.GetNamespace(), Namespace)
		}
	}
	// kustomize orders namespaces and RBAC before the workloads that
	// need them, and the backend applies in that order.
	// Two Services: the gateway API's and clusterset.local DNS's.
	// The NetworkPolicy comes last (kustomize orders it after workloads).
	want := []string{"Namespace", "ServiceAccount", "Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding", "ConfigMap", "Service", "Service", "Deployment", "NetworkPolicy"}
	if !reflect.DeepEqual(kinds, want) {
		t.Fatalf("kinds %v, want %v", kinds, want)
	}

	var p agentParts
	for _, o := range objs {
		if o.GetKind() == "ConfigMap" {
			if !strings.HasPrefix(o.GetName(), AgentConfigMap+"-") {
				t.Errorf("ConfigMap %s: want %s-<hash> (configMapGenerator)", o.GetName(), AgentConfigMap)
			}
			p.configMap = convert[corev1.ConfigMap](t, o)
		}
	}
	p.deploy = convert[appsv1.Deployment](t, m["Deployment "+AgentDeployment])
	spec := p.deploy.Spec.Template.Spec
	// Two replicas rolled one at a time; leader election (checked with
	// the flags below) keeps them from writing together.
	if p.deploy.Spec.Strategy.Type != appsv1.RollingUpdateDeploymentStrategyType || *p.deploy.Spec.Replicas < 2 {
		t.Errorf("Deployment: strategy %q, replicas %d; want RollingUpdate and at least 2 (a standby)", p.deploy.Spec.Strategy.Type, *p.deploy.Spec.Replicas)
	}
	if m["ServiceAccount "+spec.ServiceAccountName] == nil {
		t.Errorf("Deployment: serviceAccountName %q is not in the manifests", spec.ServiceAccountName)
	}
	for _, b := range []string{"RoleBinding " + AgentDeployment, "ClusterRoleBinding " + AgentDeployment} {
		rb := convert[rbacv1.RoleBinding](t, m[b])
		if len(rb.Subjects) != 1 || rb.Subjects[0].Kind != "ServiceAccount" || rb.Subjects[0].Name != spec.ServiceAccountName || rb.Subjects[0].Namespace != Namespace {
			t.Errorf("%s: subjects %+v, want the ServiceAccount %s/%s", b, rb.Subjects, Namespace, spec.ServiceAccountName)
		}
		if m[rb.RoleRef.Kind+" "+rb.RoleRef.Name] == nil {
			t.Errorf("%s: roleRef %s %s is not in the manifests", b, rb.RoleRef.Kind, rb.RoleRef.Name)
		}
	}
	if len(spec.Containers) != 1 || spec.Containers[0].Name != AgentContainer {
		t.Fatalf("Deployment: containers %+v, want one called %s", spec.Containers, AgentContainer)
	}
	c := spec.Containers[0]
	p.container = c

	// Every $(VAR) in the arguments is defined, from the generated ConfigMap
	// (with a key it has) or a Secret.
	env := map[string]corev1.EnvVar{}
	for _, e := range c.Env {
		env[e.Name] = e
		if e.ValueFrom == nil {
			continue
		}
		if r := e.ValueFrom.ConfigMapKeyRef; r != nil {
			if r.Name != p.configMap.Name {
				t.Errorf("env %s: ConfigMap %q, want the generated %q", e.Name, r.Name, p.configMap.Name)
			}
			if _, ok := p.configMap.Data[r.Key]; !ok {
				t.Errorf("env %s: key %q is not in ConfigMap %s", e.Name, r.Key, p.configMap.Name)
			}
		}
	}
	for _, a := range c.Args {
		for _, ref := range regexp.MustCompile(`\$\(([A-Z_]+)\)`).FindAllStringSubmatch(a, -1) {
			if _, ok := env[ref[1]]; !ok {
				t.Errorf("argument %q: $(%s) is not in the container's env", a, ref[1])
			}
		}
	}

	// Flags: --name=value, each one meshfed agent accepts, the required ones
	// set.
	p.flags = map[string]string{}
	for _, a := range c.Args {
		if !strings.HasPrefix(a, "--") {
			continue
		}
		name, value, ok := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		if agentBoolFlags[name] && !ok {
			value, ok = "true", true
		}
		if !ok || (!agentFlags[name] && !agentBoolFlags[name]) {
			t.Errorf("argument %q: want --flag=value with a flag of meshfed agent", a)
		}
		p.flags[name] = value
	}
	if p.flags["leader-elect"] != "true" || p.flags["leader-election-id"] == "" {
		t.Errorf("--leader-elect %q, --leader-election-id %q: replicas need leader election, each with its own identity", p.flags["leader-elect"], p.flags["leader-election-id"])
	}
	for _, f := range agentRequired {
		if p.flags[f] == "" {
			t.Errorf("argument --%s: not set", f)
		}
	}
	if p.flags["source"] != "kubernetes" {
		t.Errorf("--source=%s, want kubernetes", p.flags["source"])
	}
	var mounted bool
	for _, v := range c.VolumeMounts {
		mounted = mounted || v.MountPath == p.flags["data-dir"]
	}
	if !mounted {
		t.Errorf("--data-dir=%s is not a volume mount; the root file system is read-only", p.flags["data-dir"])
	}
	if c.ReadinessProbe == nil || c.ReadinessProbe.Exec == nil ||
		!reflect.DeepEqual(c.ReadinessProbe.Exec.Command, []string{"/meshfed", "agent", "status", "--agent=127.0.0.1:" + p.flags["http-port"]}) {
		t.Errorf("readiness probe %+v: want meshfed agent status on --http-port", c.ReadinessProbe)
	}
	return p
}

// TestAgentKustomization: deploy/kustomize/agent renders the objects the
// agent needs, the Deployment runs `meshfed agent` with flags it accepts,
// and the RBAC covers what the agent reads and writes.
func TestAgentKustomization(t *testing.T) {
	objs := render(t, filepath.Join(repoRoot, AgentKustomize))
	p := checkAgent(t, objs)
	if got := p.container.Args[0]; got != "agent" {
		t.Errorf("args[0] = %q, want agent", got)
	}
	if p.container.Image != "meshfed:dev" {
		t.Errorf("image %s, want meshfed:dev", p.container.Image)
	}
	// The placeholders are not valid values, so an unconfigured agent stops.
	for k, v := range p.configMap.Data {
		if !strings.HasPrefix(v, "REPLACE-WITH-") {
			t.Errorf("ConfigMap %s: %s=%q: want a REPLACE-WITH- placeholder", p.configMap.Name, k, v)
		}
	}

	m := byKind(t, objs)
	cr := convert[rbacv1.ClusterRole](t, m["ClusterRole "+AgentDeployment])
	role := convert[rbacv1.Role](t, m["Role "+AgentDeployment])
	type need struct{ group, resource, verb string }
	// The agent reads through informers (list, watch); deploy/deploytest
	// checks the rules against every call the agent makes.
	read := func(group, resource string) []need {
		return []need{{group, resource, "list"}, {group, resource, "watch"}}
	}
	write := func(group, resource string) []need {
		return append(read(group, resource), need{group, resource, "create"}, need{group, resource, "update"}, need{group, resource, "delete"})
	}
	var cluster []need
	cluster = append(cluster, read("multicluster.x-k8s.io", "serviceexports")...)
	cluster = append(cluster, need{"multicluster.x-k8s.io", "serviceexports/status", "update"})
	cluster = append(cluster, write("multicluster.x-k8s.io", "serviceimports")...)
	cluster = append(cluster, need{"multicluster.x-k8s.io", "serviceimports/status", "update"})
	cluster = append(cluster, write("", "services")...)
	cluster = append(cluster, need{"", "services", "get"})
	cluster = append(cluster, write("discovery.k8s.io", "endpointslices")...)
	cluster = append(cluster, read("", "nodes")...)
	cluster = append(cluster, read("", "pods")...)
	cluster = append(cluster, read("", "namespaces")...)
	cluster = append(cluster, need{"", "namespaces", "create"})
	cluster = append(cluster, need{"about.k8s.io", "clusterproperties", "get"}, need{"about.k8s.io", "clusterproperties", "create"})
	for _, n := range cluster {
		if !allows(cr.Rules, n.group, n.resource, n.verb) {
			t.Errorf("ClusterRole: %s %s.%s not allowed", n.verb, n.resource, n.group)
		}
	}
	for _, n := range []need{{"", "secrets", "get"}, {"", "secrets", "create"}, {"", "secrets", "update"}, {"", "configmaps", "get"}, {"", "configmaps", "create"}, {"", "configmaps", "update"}} {
		if !allows(role.Rules, n.group, n.resource, n.verb) {
			t.Errorf("Role: %s %s not allowed in %s", n.verb, n.resource, Namespace)
		}
		if allows(cr.Rules, n.group, n.resource, n.verb) {
			t.Errorf("ClusterRole: %s %s allowed in every namespace; only %s", n.verb, n.resource, Namespace)
		}
	}
	for _, r := range append(cr.Rules, role.Rules...) {
		for _, s := range append(append(r.Verbs, r.Resources...), r.APIGroups...) {
			if s == "*" {
				t.Errorf("rule %+v: a wildcard", r)
			}
		}
	}
}

func allows(rules []rbacv1.PolicyRule, group, resource, verb string) bool {
	has := func(list []string, s string) bool {
		for _, x := range list {
			if x == s {
				return true
			}
		}
		return false
	}
	for _, r := range rules {
		if has(r.APIGroups, group) && has(r.Resources, resource) && has(r.Verbs, verb) {
			return true
		}
	}
	return false
}

// TestAgentOverlays: the overlays the backend writes give the agent the
// cluster's values and the image it loaded; the join variant runs `meshfed
// join $(TOKEN)` with the token from the Secret the backend creates, and
// otherwise the same arguments.
func TestAgentOverlays(t *testing.T) {
	v := AgentValues{Cluster: "east", Region: "us-east", Zone: "us-east-1a", GatewayAddress: "172.18.0.3"}
	var args [2][]string
	for i, join := range []bool{true, false} {
		dir := filepath.Join(t.TempDir(), "overlay")
		if err := AgentOverlay(repoRoot, "testenv", v, join).Write(dir); err != nil {
			t.Fatal(err)
		}
		p := checkAgent(t, render(t, dir))
		want := map[string]string{"cluster": "east", "region": "us-east", "zone": "us-east-1a", "gateway-address": "172.18.0.3"}
		if !reflect.DeepEqual(p.configMap.Data, want) {
			t.Errorf("join=%v: ConfigMap data %v, want %v", join, p.configMap.Data, want)
		}
		if p.container.Image != "meshfed:testenv" {
			t.Errorf("join=%v: image %s, want meshfed:testenv", join, p.container.Image)
		}
		var token *corev1.EnvVar
		for _, e := range p.container.Env {
			if e.Name == "TOKEN" {
				token = &e
			}
		}
		args[i] = p.container.Args
		if !join {
			if token != nil || p.container.Args[0] != "agent" {
				t.Errorf("agent: args %v, TOKEN %v; want meshfed agent without a token", p.container.Args, token)
			}
			continue
		}
		if len(p.container.Args) < 2 || p.container.Args[0] != "join" || p.container.Args[1] != "$(TOKEN)" {
			t.Errorf("join: args %v, want join $(TOKEN) ...", p.container.Args)
		}
		if token == nil || token.ValueFrom == nil || token.ValueFrom.SecretKeyRef == nil ||
			token.ValueFrom.SecretKeyRef.Name != JoinTokenSecret || token.ValueFrom.SecretKeyRef.Key != JoinTokenKey {
			t.Errorf("join: TOKEN %+v, want from Secret %s key %s", token, JoinTokenSecret, JoinTokenKey)
		}
	}
	if !reflect.DeepEqual(args[0][2:], args[1][1:]) {
		t.Errorf("join and agent differ in more than the command:\n%v\n%v", args[0], args[1])
	}
}

// TestHubOverlay: the hub the backend installs is deploy/kustomize/hub with
// the loaded image, and the names the backend uses (the StatefulSet, its
// first pod's container, the encrypt key Secret, admin.yaml in the data
// directory) are the manifests'.
func TestHubOverlay(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "hub")
	if err := HubOverlay(repoRoot, "testenv").Write(dir); err != nil {
		t.Fatal(err)
	}
	m := byKind(t, render(t, dir))
	if ns := m["Namespace "+Namespace]; ns == nil {
		t.Errorf("no Namespace %s", Namespace)
	} else if !reflect.DeepEqual(ns.GetLabels(), NamespaceObject().GetLabels()) {
		t.Errorf("Namespace labels %v; NamespaceObject's %v would change them", ns.GetLabels(), NamespaceObject().GetLabels())
	}
	o := m["StatefulSet "+HubStatefulSet]
	if o == nil {
		t.Fatalf("no StatefulSet %s", HubStatefulSet)
	}
	s := convert[appsv1.StatefulSet](t, o)
	if s.Namespace != Namespace || HubPod != s.Name+"-0" {
		t.Errorf("StatefulSet %s/%s: want %s/%s, first pod %s", s.Namespace, s.Name, Namespace, HubStatefulSet, HubPod)
	}
	c := s.Spec.Template.Spec.Containers[0]
	if c.Name != HubContainer || c.Image != "meshfed:testenv" {
		t.Errorf("container %s image %s, want %s image meshfed:testenv", c.Name, c.Image, HubContainer)
	}
	if !contains(c.Args, "--data-dir="+filepath.Dir(HubAdminConfig)) {
		t.Errorf("args %v: want --data-dir=%s, where admin.yaml is written", c.Args, filepath.Dir(HubAdminConfig))
	}
	var key bool
	for _, e := range c.Env {
		if r := e.ValueFrom; r != nil && r.SecretKeyRef != nil {
			key = key || (r.SecretKeyRef.Name == EncryptKeySecret && r.SecretKeyRef.Key == EncryptKeyKey)
		}
	}
	if !key {
		t.Errorf("env %+v: want the encrypt key from Secret %s key %s", c.Env, EncryptKeySecret, EncryptKeyKey)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func TestOverlayMarshal(t *testing.T) {
	o := AgentOverlay("/src/meshfed", "testenv", AgentValues{Cluster: "east", Region: "r", Zone: "z", GatewayAddress: "172.18.0.3"}, true)
	data, err := o.Marshal("/tmp/fed/manifests/east/join")
	if err != nil {
		t.Fatal(err)
	}
	var k kustomization
	if err := yaml.UnmarshalStrict(data, &k); err != nil {
		t.Fatalf("%v\n%s", err, data)
	}
	want := kustomization{
		APIVersion: "kustomize.config.k8s.io/v1beta1",
		Kind:       "Kustomization",
		Resources:  []string{"../../../../../src/meshfed/deploy/kustomize/agent"},
		Components: []string{"../../../../../src/meshfed/deploy/kustomize/agent/join"},
		ConfigMapGenerator: []configMapArgs{{
			Name: AgentConfigMap, Namespace: Namespace, Behavior: "merge",
			Literals: []string{"cluster=east", "gateway-address=172.18.0.3", "region=r", "zone=z"},
		}},
		Images: []kustomizeImage{{Name: "meshfed", NewTag: "testenv"}},
	}
	if !reflect.DeepEqual(k, want) {
		t.Errorf("got\n%s", data)
	}
	if _, err := o.Marshal("relative/dir"); err == nil {
		t.Error("a relative overlay folder: no error")
	}
	if _, err := (Overlay{Base: "/b", Literals: map[string]string{"a": "b"}}).Marshal("/o"); err == nil {
		t.Error("literals without a ConfigMap: no error")
	}
}

func TestDecode(t *testing.T) {
	objs, err := Decode([]byte("---\n# a comment\n---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: a\n---\n\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: b\n  namespace: a\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(objs) != 2 || objs[0].GetName() != "a" || objs[1].GetNamespace() != "a" {
		t.Errorf("got %v", objs)
	}
	for name, doc := range map[string]string{
		"no apiVersion": "kind: Namespace\nmetadata:\n  name: a\n",
		"no kind":       "apiVersion: v1\nmetadata:\n  name: a\n",
		"no name":       "apiVersion: v1\nkind: Namespace\n",
		"not YAML":      "apiVersion: [v1\n",
	} {
		if _, err := Decode([]byte("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: ok\n---\n" + doc)); err == nil || !strings.Contains(err.Error(), "document 1") {
			t.Errorf("%s: err = %v, want one naming document 1", name, err)
		}
	}
}

// TestCRDManifests: deploy/crds holds the two MCS CRDs the agent watches
// and the ClusterProperty CRD that holds the cluster's ID.
func TestCRDManifests(t *testing.T) {
	objs, err := ReadManifests(filepath.Join(repoRoot, CRDDir))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, o := range objs {
		if o.GetKind() != "CustomResourceDefinition" {
			t.Errorf("%s %s in %s", o.GetKind(), o.GetName(), CRDDir)
		}
		names = append(names, o.GetName())
	}
	if want := []string{"clusterproperties.about.k8s.io", "serviceexports.multicluster.x-k8s.io", "serviceimports.multicluster.x-k8s.io"}; !reflect.DeepEqual(names, want) {
		t.Errorf("CRDs %v, want %v", names, want)
	}
	if _, err := ReadManifests(t.TempDir()); err == nil {
		t.Error("an empty folder: no error")
	}
}
