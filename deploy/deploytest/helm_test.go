package deploytest

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"github.com/meshfed/meshfed/testenv/kind"
)

var chartDir = filepath.Join(repoRoot, "deploy", "helm", "meshfed")

// loadChart loads deploy/helm/meshfed as `helm install` would.
func loadChart(t *testing.T) *chart.Chart {
	t.Helper()
	c, err := loader.Load(chartDir)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// renderChart renders the chart as `helm install meshfed -n namespace -f
// valuesFile` does (no file: the default values), validating the values
// against values.schema.json, and decodes every manifest. The CRDs
// (crds/) are returned apart: Helm installs them first.
func renderChart(t *testing.T, c *chart.Chart, namespace string, vals map[string]any) (install, []*unstructured.Unstructured, error) {
	t.Helper()
	rv, err := chartutil.ToRenderValues(c, vals, chartutil.ReleaseOptions{Name: "meshfed", Namespace: namespace, Revision: 1, IsInstall: true},
		chartutil.DefaultCapabilities)
	if err != nil {
		return install{}, nil, err
	}
	out, err := engine.Render(c, rv)
	if err != nil {
		return install{}, nil, err
	}
	names := make([]string, 0, len(out))
	for name := range out {
		names = append(names, name)
	}
	slices.Sort(names)
	var objs []*unstructured.Unstructured
	for _, name := range names {
		if !strings.HasSuffix(name, ".yaml") {
			continue // NOTES.txt, _helpers.tpl
		}
		o, err := kind.Decode([]byte(out[name]))
		if err != nil {
			t.Fatalf("%s: %v\n%s", name, err, out[name])
		}
		objs = append(objs, o...)
	}
	var crds []*unstructured.Unstructured
	for _, f := range c.CRDObjects() {
		o, err := kind.Decode(f.File.Data)
		if err != nil {
			t.Fatalf("%s: %v", f.Filename, err)
		}
		crds = append(crds, o...)
	}
	return install{objs: objs}, crds, nil
}

// chartValueFiles are the sample values in the chart's ci/ folder.
func chartValueFiles(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(chartDir, "ci", "*-values.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no sample values in %s/ci: %v", chartDir, err)
	}
	return files
}

func readValues(t *testing.T, path string) map[string]any {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var v map[string]any
	if err := yaml.Unmarshal(data, &v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return v
}

// chartInstalls renders the chart with its defaults and with every sample
// values file, in meshfed-system.
func chartInstalls(t *testing.T) (ins []install, crds []*unstructured.Unstructured) {
	t.Helper()
	c := loadChart(t)
	in, crds, err := renderChart(t, c, "meshfed-system", nil)
	if err != nil {
		t.Fatalf("chart with default values: %v", err)
	}
	in.name = "chart (defaults)"
	ins = append(ins, in)
	for _, f := range chartValueFiles(t) {
		in, _, err := renderChart(t, c, "meshfed-system", readValues(t, f))
		if err != nil {
			t.Fatalf("chart with %s: %v", filepath.Base(f), err)
		}
		in.name = "chart (" + filepath.Base(f) + ")"
		ins = append(ins, in)
	}
	return ins, crds
}

// TestChartInstallsAreSafeAndConsistent renders the chart, defaults and
// samples, and checks what the kustomize directories are checked for.
func TestChartInstallsAreSafeAndConsistent(t *testing.T) {
	ins, crdObjs := chartInstalls(t)
	for _, in := range ins {
		t.Run(in.name, func(t *testing.T) {
			checkPods(t, in)
			checkServices(t, in)
			checkNetworkPolicies(t, in)
			if in.find("StatefulSet", "meshfed-hub") != nil {
				checkHub(t, in)
			}
			if in.find("Deployment", "meshfed-gateway") != nil {
				checkGateway(t, in)
			}
			if in.find("Deployment", "meshfed-agent") != nil {
				checkAgentRBAC(t, in)
			}
		})
	}
	// The chart's crds/ are the CRDs of deploy/crds, no more, no less.
	var names, want []string
	for _, o := range crdObjs {
		names = append(names, o.GetName())
	}
	for _, o := range renderKustomize(t, "crds").objs {
		want = append(want, o.GetName())
	}
	slices.Sort(names)
	slices.Sort(want)
	if !slices.Equal(names, want) {
		t.Errorf("chart crds/ %v, want deploy/crds's %v", names, want)
	}
}

// TestChartEnablesEachPartOnItsOwn: the defaults install the hub alone;
// the samples install the agent and the gateway with or without the hub.
func TestChartEnablesEachPartOnItsOwn(t *testing.T) {
	ins, _ := chartInstalls(t)
	parts := func(in install) []string {
		var p []string
		for _, w := range [][2]string{{"StatefulSet", "meshfed-hub"}, {"Deployment", "meshfed-agent"}, {"Deployment", "meshfed-gateway"}} {
			if in.find(w[0], w[1]) != nil {
				p = append(p, w[1])
			}
		}
		return p
	}
	seen := map[string]bool{}
	for _, in := range ins {
		seen[strings.Join(parts(in), ",")] = true
	}
	if got := parts(ins[0]); !slices.Equal(got, []string{"meshfed-hub"}) {
		t.Errorf("defaults install %v, want the hub alone", got)
	}
	for _, want := range []string{"meshfed-hub,meshfed-agent,meshfed-gateway", "meshfed-agent,meshfed-gateway"} {
		if !seen[want] {
			t.Errorf("no sample installs %s (seen %v)", want, seen)
		}
	}
}

// TestChartRefusesBadValuesNamingTheField: values.schema.json and the
// templates refuse what would not run, and the error names the field.
func TestChartRefusesBadValuesNamingTheField(t *testing.T) {
	c := loadChart(t)
	for _, tc := range []struct {
		name      string
		namespace string
		vals      string
		field     string
	}{
		{"agent without a cluster name", "meshfed-system", "agent: {enabled: true, region: r, zone: z}", "cluster"},
		{"a hub of 4 servers", "meshfed-system", "hub: {replicas: 4}", "replicas"},
		{"an unknown key", "meshfed-system", "hub: {replica: 3}", "replica"},
		{"a cluster name that is no DNS label", "meshfed-system", "agent: {enabled: true, cluster: East_1, region: r, zone: z}", "cluster"},
		{"a gateway only reachable in-cluster", "meshfed-system", "gateway: {enabled: true, service: {type: ClusterIP}}", "type"},
		{"a hub address without a port", "meshfed-system", "agent: {enabled: true, cluster: e, region: r, zone: z, hubAddresses: [hub.example]}", "hubAddresses"},
		{"GOMEMLIMIT in Kubernetes units", "meshfed-system", "hub: {goMemLimit: 640Mi}", "goMemLimit"},
		{"the agent outside meshfed-system", "default", "agent: {enabled: true, cluster: e, region: r, zone: z}", "meshfed-system"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var vals map[string]any
			if err := yaml.Unmarshal([]byte(tc.vals), &vals); err != nil {
				t.Fatal(err)
			}
			_, _, err := renderChart(t, c, tc.namespace, vals)
			if err == nil {
				t.Fatalf("values %s rendered", tc.vals)
			}
			if !strings.Contains(err.Error(), tc.field) {
				t.Errorf("error %q does not name %s", err, tc.field)
			}
		})
	}
}
