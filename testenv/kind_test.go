package testenv

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/meshfed/meshfed/testenv/kind"
)

// TestKindRepoRoot: the kind backend builds from $MESHFED_REPO_ROOT when
// set (and refuses a folder that is not a meshfed checkout), else from this
// module's folder as go list reports it.
func TestKindRepoRoot(t *testing.T) {
	want, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv(EnvRepoRoot, "")
	got, err := repoRoot(context.Background())
	if err != nil || got != want {
		t.Errorf("from go list: %q, %v; want %q", got, err, want)
	}

	t.Setenv(EnvRepoRoot, "..")
	if got, err := repoRoot(context.Background()); err != nil || got != want {
		t.Errorf("$%s=..: %q, %v; want %q", EnvRepoRoot, got, err, want)
	}

	empty := t.TempDir()
	t.Setenv(EnvRepoRoot, empty)
	_, err = repoRoot(context.Background())
	if err == nil || !strings.Contains(err.Error(), "$"+EnvRepoRoot) || !strings.Contains(err.Error(), empty) {
		t.Errorf("an empty folder: err = %v, want one naming $%s and the folder", err, EnvRepoRoot)
	}
	if _, err := os.Stat(filepath.Join(want, "deploy", "Dockerfile")); err != nil {
		t.Fatal(err)
	}
}

func TestKindHubOnlyWithKind(t *testing.T) {
	if h := (&Federation{backend: BackendProcess, clusters: []*ClusterEnv{{}}}).KindHub(); h != nil {
		t.Error("process backend: a KindHub")
	}
	if h := (&Federation{backend: BackendKind}).KindHub(); h != nil {
		t.Error("no clusters: a KindHub")
	}
	f := &Federation{backend: BackendKind, clusters: []*ClusterEnv{{kubeconfig: "/k/east"}, {kubeconfig: "/k/west"}}}
	if h := f.KindHub(); h == nil || h.kubeconfig != "/k/east" {
		t.Errorf("got %+v, want the first cluster's", h)
	}
}

// TestKindManifestsApply applies what the kind backend applies, in its
// order, to a real kube-apiserver (the process backend: no nodes, so nothing
// runs): the CRDs, waited for until Established; the hub; the agent with the
// join component, then without it. The API server accepts every object,
// and re-applying the agent without the component turns `meshfed join
// $(TOKEN)` into `meshfed agent` and drops the TOKEN variable (server-side
// apply removes the fields the manager no longer sets).
func TestKindManifestsApply(t *testing.T) {
	fed := Start(t, Options{Backend: BackendProcess, Clusters: []Cluster{{Name: "east", Region: "us-east", Zone: "us-east-1a"}}})
	ctx := context.Background()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	east := fed.Cluster("east")
	a, err := kind.NewApplier(east.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	crds, err := kind.ReadManifests(filepath.Join(root, kind.CRDDir))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, o := range crds {
		names = append(names, o.GetName())
	}
	if err := a.Apply(ctx, crds...); err != nil {
		t.Fatal(err)
	}
	if err := a.WaitEstablished(ctx, 30*time.Second, names...); err != nil {
		t.Fatal(err)
	}
	// A kind the API server has only now: the mapper learned it.
	export := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "multicluster.x-k8s.io/v1beta1", "kind": "ServiceExport",
		"metadata": map[string]any{"name": "reviews", "namespace": "default"},
	}}
	if err := a.Apply(ctx, export); err != nil {
		t.Fatal(err)
	}

	apply := func(o kind.Overlay, name string) {
		t.Helper()
		dir := filepath.Join(t.TempDir(), name)
		if err := o.Write(dir); err != nil {
			t.Fatal(err)
		}
		objs, err := kind.Render(ctx, dir)
		if err != nil {
			t.Fatal(err)
		}
		if err := a.Apply(ctx, objs...); err != nil {
			t.Fatal(err)
		}
	}
	cs := east.Clientset()
	if err := a.Apply(ctx, kind.NamespaceObject(), kind.SecretObject(kind.EncryptKeySecret, kind.EncryptKeyKey, "k")); err != nil {
		t.Fatal(err)
	}
	apply(kind.HubOverlay(root, kindImageTag), "hub")
	if _, err := cs.AppsV1().StatefulSets(kind.Namespace).Get(ctx, kind.HubStatefulSet, metav1.GetOptions{}); err != nil {
		t.Fatal(err)
	}

	token := kind.SecretObject(kind.JoinTokenSecret, kind.JoinTokenKey, "mfjoin1.x")
	if err := a.Apply(ctx, kind.NamespaceObject(), token); err != nil {
		t.Fatal(err)
	}
	v := kind.AgentValues{Cluster: "east", Region: "us-east", Zone: "us-east-1a", GatewayAddress: "172.18.0.3"}
	container := func() corev1.Container {
		t.Helper()
		d, err := cs.AppsV1().Deployments(kind.Namespace).Get(ctx, kind.AgentDeployment, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return d.Spec.Template.Spec.Containers[0]
	}
	hasToken := func(c corev1.Container) bool {
		for _, e := range c.Env {
			if e.Name == "TOKEN" {
				return true
			}
		}
		return false
	}
	apply(kind.AgentOverlay(root, kindImageTag, v, true), "join")
	if c := container(); c.Args[0] != "join" || c.Args[1] != "$(TOKEN)" || !hasToken(c) || c.Image != kindImage {
		t.Errorf("join: image %s, args %v, TOKEN %v", c.Image, c.Args, hasToken(c))
	}
	apply(kind.AgentOverlay(root, kindImageTag, v, false), "agent")
	if c := container(); c.Args[0] != "agent" || strings.Contains(strings.Join(c.Args, " "), "TOKEN") || hasToken(c) {
		t.Errorf("agent: args %v, TOKEN %v; want meshfed agent without the token", c.Args, hasToken(c))
	}
	ns, err := cs.CoreV1().Namespaces().Get(ctx, kind.Namespace, metav1.GetOptions{})
	if err != nil || ns.Labels["app.kubernetes.io/part-of"] != "meshfed" {
		t.Errorf("namespace labels %v, %v", ns.GetLabels(), err)
	}

	if err := a.Delete(ctx, token); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CoreV1().Secrets(kind.Namespace).Get(ctx, kind.JoinTokenSecret, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("token Secret after Delete: %v", err)
	}
	if err := a.Delete(ctx, token); err != nil {
		t.Errorf("deleting it again: %v", err)
	}
}

// TestKindAgentArgsParse: the agent's arguments in the kind backend's
// overlays, with the container's $(VAR) references replaced by the
// ConfigMap's values, parse as the real `meshfed` command's flags (with
// --help added, the command stops after parsing: an unknown flag or a bad
// value fails it).
func TestKindAgentArgsParse(t *testing.T) {
	bin, err := meshfedBinary()
	if err != nil {
		t.Fatal(err)
	}
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	v := kind.AgentValues{Cluster: "east", Region: "us-east", Zone: "us-east-1a", GatewayAddress: "172.18.0.3"}
	for _, join := range []bool{true, false} {
		dir := filepath.Join(t.TempDir(), "overlay")
		if err := kind.AgentOverlay(root, kindImageTag, v, join).Write(dir); err != nil {
			t.Fatal(err)
		}
		objs, err := kind.Render(context.Background(), dir)
		if err != nil {
			t.Fatal(err)
		}
		values := map[string]string{"TOKEN": "mfjoin1.x"}
		var args []string
		for _, o := range objs {
			switch o.GetKind() {
			case "ConfigMap":
				data, _, _ := unstructured.NestedStringMap(o.Object, "data")
				for k, val := range data {
					values[strings.ToUpper(strings.ReplaceAll(k, "-", "_"))] = val
				}
			case "Deployment":
				cs, _, _ := unstructured.NestedSlice(o.Object, "spec", "template", "spec", "containers")
				c, _ := cs[0].(map[string]any)
				args, _, _ = unstructured.NestedStringSlice(c, "args")
				// Variables the kubelet fills from the pod (the downward
				// API) get a value of their kind.
				env, _, _ := unstructured.NestedSlice(c, "env")
				for _, e := range env {
					e, _ := e.(map[string]any)
					name, _, _ := unstructured.NestedString(e, "name")
					switch path, _, _ := unstructured.NestedString(e, "valueFrom", "fieldRef", "fieldPath"); path {
					case "metadata.name":
						values[name] = "meshfed-agent-7d9f-x2" // a pod name
					case "status.podIP":
						values[name] = "10.244.0.5"
					case "":
					default:
						values[name] = "x"
					}
				}
				probe, _, _ := unstructured.NestedStringSlice(c, "readinessProbe", "exec", "command")
				if len(probe) < 2 || probe[0] != "/meshfed" {
					t.Fatalf("readiness probe %q: want /meshfed ...", probe)
				}
				if out, err := exec.Command(bin, append(probe[1:], "--help")...).CombinedOutput(); err != nil {
					t.Errorf("readiness probe %q --help: %v\n%s", probe, err, out)
				}
			}
		}
		if len(args) == 0 {
			t.Fatalf("join=%v: no Deployment args", join)
		}
		for i, a := range args {
			args[i] = os.Expand(strings.NewReplacer("$(", "${", ")", "}").Replace(a), func(k string) string {
				val, ok := values[k]
				if !ok {
					t.Errorf("join=%v: %q: $(%s) has no value", join, a, k)
				}
				return val
			})
		}
		out, err := exec.Command(bin, append(args, "--help")...).CombinedOutput()
		if err != nil {
			t.Errorf("join=%v: meshfed %s --help: %v\n%s", join, strings.Join(args, " "), err, out)
		}
	}
}
