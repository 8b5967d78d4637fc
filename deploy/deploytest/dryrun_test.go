package deploytest

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"

	"github.com/meshfed/meshfed/testenv/kind"
)

// fieldManager is the server-side apply manager of these tests.
const fieldManager = "meshfed-deploytest"

// dryRunner applies objects with server-side apply, for real or as a
// dry run (the API server validates, defaults and admits the object,
// and stores nothing).
type dryRunner struct {
	dyn    dynamic.Interface
	mapper *restmapper.DeferredDiscoveryRESTMapper
}

func newDryRunner(t *testing.T, cfg *rest.Config) *dryRunner {
	t.Helper()
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return &dryRunner{dyn: dyn, mapper: restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc))}
}

func (d *dryRunner) apply(ctx context.Context, o *unstructured.Unstructured, dryRun bool) error {
	gvk := o.GroupVersionKind()
	m, err := d.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if meta.IsNoMatchError(err) {
		d.mapper.Reset()
		m, err = d.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	}
	if err != nil {
		return err
	}
	var r dynamic.ResourceInterface = d.dyn.Resource(m.Resource)
	if m.Scope.Name() == meta.RESTScopeNameNamespace {
		if o.GetNamespace() == "" {
			return fmt.Errorf("%s %s: namespaced, without a namespace", o.GetKind(), o.GetName())
		}
		r = d.dyn.Resource(m.Resource).Namespace(o.GetNamespace())
	}
	opts := metav1.ApplyOptions{FieldManager: fieldManager, Force: true}
	if dryRun {
		opts.DryRun = []string{metav1.DryRunAll}
	}
	_, err = r.Apply(ctx, o.GetName(), o, opts)
	return err
}

// TestEveryManifestPassesServerSideDryRun applies every object of every
// kustomize directory and of the chart (defaults and samples) to a real
// kube-apiserver with server-side dry-run: the API server decodes it
// strictly (an unknown field fails), defaults, validates and admits it,
// and stores nothing. The CRDs and the namespace are applied for real
// first, as an install does.
func TestEveryManifestPassesServerSideDryRun(t *testing.T) {
	fed := federation(t)
	ctx := context.Background()
	east := fed.Cluster("east")
	d := newDryRunner(t, east.RESTConfig())

	ins := []install{}
	for _, dir := range kustomizeDirs {
		ins = append(ins, renderKustomize(t, dir))
	}
	charts, chartCRDs := chartInstalls(t)
	ins = append(ins, charts...)

	// Install first what the others need: the CRDs (kustomize's and the
	// chart's crds/), established, and the namespace.
	var crdNames []string
	for _, o := range append(renderKustomize(t, "crds").objs, chartCRDs...) {
		if err := d.apply(ctx, o, false); err != nil {
			t.Fatalf("CRD %s: %v", o.GetName(), err)
		}
		crdNames = append(crdNames, o.GetName())
	}
	a, err := kind.NewApplier(east.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	if err := a.WaitEstablished(ctx, 30*time.Second, crdNames...); err != nil {
		t.Fatal(err)
	}
	d.mapper.Reset()
	if err := d.apply(ctx, renderKustomize(t, "hub").find("Namespace", "meshfed-system"), false); err != nil {
		t.Fatal(err)
	}

	var applied int
	for _, in := range ins {
		for _, o := range in.objs {
			if err := d.apply(ctx, o, true); err != nil {
				t.Errorf("%s: %s %s: %v", in.name, o.GetKind(), o.GetName(), err)
				continue
			}
			applied++
		}
	}
	t.Logf("%d objects of %d installs accepted by the API server (dry run)", applied, len(ins))
}

// TestDryRunRefusesAnInvalidManifest: the dry run is a real check, not a
// formality: an object with a field the API does not have, and one with an
// invalid value, are refused.
func TestDryRunRefusesAnInvalidManifest(t *testing.T) {
	fed := federation(t)
	ctx := context.Background()
	d := newDryRunner(t, fed.Cluster("east").RESTConfig())
	svc := renderKustomize(t, "gateway").find("Service", "meshfed-gateway")
	if err := d.apply(ctx, svc, true); err != nil {
		t.Fatalf("the gateway Service as rendered: %v", err)
	}
	unknown := svc.DeepCopy()
	if err := unstructured.SetNestedField(unknown.Object, "Sticky", "spec", "sessionAfinity"); err != nil {
		t.Fatal(err)
	}
	if err := d.apply(ctx, unknown, true); err == nil {
		t.Error("a Service with spec.sessionAfinity (misspelt) was accepted")
	} else {
		t.Logf("misspelt field: %v", err)
	}
	bad := svc.DeepCopy()
	if err := unstructured.SetNestedField(bad.Object, "Cluster", "spec", "externalTrafficPolicy"); err != nil {
		t.Fatal(err)
	}
	ports, _, _ := unstructured.NestedSlice(bad.Object, "spec", "ports")
	ports[0].(map[string]any)["port"] = int64(70000)
	if err := unstructured.SetNestedSlice(bad.Object, ports, "spec", "ports"); err != nil {
		t.Fatal(err)
	}
	if err := d.apply(ctx, bad, true); err == nil {
		t.Error("a Service with port 70000 was accepted")
	} else {
		t.Logf("invalid port: %v", err)
	}
}

// TestEveryContainerCommandParses runs the real meshfed binary with the
// arguments of every container and exec probe of every install (the
// $(VAR) references replaced by what the kubelet would put there), with
// --help added: cobra parses every flag and stops, so an unknown flag or
// a value of the wrong type fails.
func TestEveryContainerCommandParses(t *testing.T) {
	bin := federation(t).Hub().Binary()
	ins := []install{}
	for _, dir := range kustomizeDirs {
		ins = append(ins, renderKustomize(t, dir))
	}
	charts, _ := chartInstalls(t)
	ins = append(ins, charts...)
	var n int
	for _, in := range ins {
		configMaps := map[string]map[string]string{}
		for _, o := range in.all("ConfigMap") {
			configMaps[o.GetName()] = convert[corev1.ConfigMap](t, o).Data
		}
		for _, w := range workloads(t, in) {
			for _, c := range w.pod.Spec.Containers {
				env := map[string]string{}
				for _, e := range c.Env {
					switch {
					case e.ValueFrom == nil:
						env[e.Name] = e.Value
					case e.ValueFrom.FieldRef != nil:
						env[e.Name] = map[string]string{"metadata.name": w.name + "-0", "status.podIP": "10.244.0.7"}[e.ValueFrom.FieldRef.FieldPath]
					case e.ValueFrom.ConfigMapKeyRef != nil:
						env[e.Name] = configMaps[e.ValueFrom.ConfigMapKeyRef.Name][e.ValueFrom.ConfigMapKeyRef.Key]
					case e.ValueFrom.SecretKeyRef != nil:
						env[e.Name] = "mfjoin1.secret"
					}
				}
				expand := func(args []string) []string {
					out := make([]string, len(args))
					for i, a := range args {
						out[i] = regexp.MustCompile(`\$\(([A-Z_]+)\)`).ReplaceAllStringFunc(a, func(ref string) string {
							v, ok := env[ref[2:len(ref)-1]]
							if !ok {
								t.Errorf("%s: %s %s: argument %q: $%s is not in the container's env", in.name, w.kind, w.name, a, ref[1:])
							}
							return v
						})
					}
					return out
				}
				commands := [][]string{expand(c.Args)}
				for _, p := range []*corev1.Probe{c.ReadinessProbe, c.LivenessProbe} {
					if p != nil && p.Exec != nil {
						if p.Exec.Command[0] != "/meshfed" {
							t.Errorf("%s: %s %s: probe runs %s, not the image's /meshfed", in.name, w.kind, w.name, p.Exec.Command[0])
							continue
						}
						commands = append(commands, p.Exec.Command[1:])
					}
				}
				for _, args := range commands {
					out, err := exec.Command(bin, append(args, "--help")...).CombinedOutput()
					var exit *exec.ExitError
					if errors.As(err, &exit) {
						t.Errorf("%s: %s %s: meshfed %s: %v\n%s", in.name, w.kind, w.name, strings.Join(args, " "), err, out)
					} else if err != nil {
						t.Fatal(err)
					}
					n++
				}
			}
		}
	}
	t.Logf("%d command lines parsed", n)
}
