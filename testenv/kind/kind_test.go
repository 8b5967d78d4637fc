package kind

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"sigs.k8s.io/kind/pkg/apis/config/v1alpha4"
)

var eastWest = []Spec{
	{Name: "east", Region: "us-east", Zones: []string{"us-east-1a", "us-east-1b"}},
	{Name: "west", Region: "us-west", Zones: []string{"us-west-1a", "us-west-1b"}},
}

// TestConfigsReproduceDeploy: the generated configs for east and west are
// exactly deploy/kind/east.yaml and west.yaml (decoded strictly), so the
// backend and the documented manual setup cannot drift apart.
func TestConfigsReproduceDeploy(t *testing.T) {
	cfgs, err := Configs(eastWest)
	if err != nil {
		t.Fatal(err)
	}
	for i, name := range []string{"east", "west"} {
		data, err := os.ReadFile(filepath.Join("..", "..", "deploy", "kind", name+".yaml"))
		if err != nil {
			t.Fatal(err)
		}
		want, err := Unmarshal(data)
		if err != nil {
			t.Fatalf("deploy/kind/%s.yaml: %v", name, err)
		}
		if !reflect.DeepEqual(cfgs[i], want) {
			got, _ := Marshal(cfgs[i])
			exp, _ := Marshal(want)
			t.Errorf("generated config for %s differs from deploy/kind/%s.yaml\n--- got\n%s--- want\n%s", name, name, got, exp)
		}
	}
}

func TestConfigsDistinctRangesAndLabels(t *testing.T) {
	var specs []Spec
	for i := 0; i < MaxClusters; i++ {
		specs = append(specs, Spec{Name: string(rune('a' + i)), Region: "r", Zones: []string{"z1"}})
	}
	cfgs, err := Configs(specs)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]string{}
	for _, c := range cfgs {
		for _, subnet := range []string{c.Networking.PodSubnet, c.Networking.ServiceSubnet} {
			prefix := strings.Join(strings.Split(subnet, ".")[:2], ".")
			if other, ok := seen[prefix]; ok {
				t.Errorf("%s: %s overlaps %s", c.Name, subnet, other)
			}
			seen[prefix] = c.Name + " " + subnet
		}
		if len(c.Nodes) != 2 || c.Nodes[0].Role != v1alpha4.ControlPlaneRole || c.Nodes[1].Role != v1alpha4.WorkerRole {
			t.Errorf("%s: nodes %+v, want a control plane and one worker", c.Name, c.Nodes)
		}
		for _, n := range c.Nodes {
			if n.Labels[RegionLabel] != "r" || n.Labels[ZoneLabel] != "z1" {
				t.Errorf("%s: node labels %v", c.Name, n.Labels)
			}
		}
	}
	// The rendered YAML decodes strictly back to the same config.
	data, err := Marshal(cfgs[0])
	if err != nil {
		t.Fatal(err)
	}
	back, err := Unmarshal(data)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, cfgs[0]) {
		t.Errorf("round trip changed the config:\n%s", data)
	}
}

func TestConfigsRejects(t *testing.T) {
	tooMany := make([]Spec, MaxClusters+1)
	for i := range tooMany {
		tooMany[i] = Spec{Name: string(rune('a' + i)), Region: "r", Zones: []string{"z"}}
	}
	for name, specs := range map[string][]Spec{
		"none":       nil,
		"too many":   tooMany,
		"no name":    {{Region: "r", Zones: []string{"z"}}},
		"no region":  {{Name: "a", Zones: []string{"z"}}},
		"no zones":   {{Name: "a", Region: "r"}},
		"empty zone": {{Name: "a", Region: "r", Zones: []string{"z", ""}}},
		"same name":  {{Name: "a", Region: "r", Zones: []string{"z"}}, {Name: "a", Region: "r", Zones: []string{"z"}}},
	} {
		if _, err := Configs(specs); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	if _, err := Unmarshal([]byte("kind: Cluster\nnodez: []\n")); err == nil {
		t.Error("an unknown field decoded")
	}
}
