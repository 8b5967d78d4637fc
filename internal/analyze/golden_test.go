package analyze

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/meshfed/meshfed/federation/policy"
	fedv1 "github.com/meshfed/meshfed/federation/v1"
)

var update = flag.Bool("update", false, "rewrite the golden files of TestGolden")

// A golden case is testdata/<code>/{positive,negative}.yaml: a catalog
// fixture (the first YAML document), then a policy file (the rest, read
// by policyfile exactly as `meshfed analyze -f` reads it). The expected
// messages are in the .golden file beside it, one Message.String per line.
// The positive case must produce the code and no other; the negative case,
// a near miss, must not produce it.
//
// The fixture is the hub's view: member clusters, exported services,
// federated trust domains and stored policies. Fields it sets replace
// those of testdata/catalog.yaml; an empty first document is that catalog.
type fixture struct {
	Clusters        []fixtureCluster `json:"clusters,omitempty"`
	Services        []fixtureService `json:"services,omitempty"`
	Federations     []string         `json:"federations,omitempty"`
	ExternalBundles []string         `json:"externalBundles,omitempty"`
	// HubPolicies are GlobalTrafficPolicy documents stored in the hub.
	HubPolicies []map[string]any `json:"hubPolicies,omitempty"`
}

type fixtureCluster struct {
	Name string `json:"name"`
	// TrustDomain defaults to <name>.meshfed.local.
	TrustDomain string `json:"trustDomain,omitempty"`
	// Locality is "region/zone[/subzone]", or empty for none.
	Locality string `json:"locality,omitempty"`
}

type fixtureService struct {
	Service string          `json:"service"`
	Exports []fixtureExport `json:"exports"`
}

type fixtureExport struct {
	Cluster   string                 `json:"cluster"`
	Ports     []fixturePort          `json:"ports"`
	Endpoints []fixtureEndpointGroup `json:"endpoints"`
}

type fixturePort struct {
	Name        string `json:"name"`
	Port        uint32 `json:"port"`
	Protocol    string `json:"protocol"`
	AppProtocol string `json:"appProtocol,omitempty"`
}

type fixtureEndpointGroup struct {
	Zone   string            `json:"zone,omitempty"`
	Labels map[string]string `json:"labels,omitempty"`
	Ready  uint32            `json:"ready"`
}

func readFixture(t *testing.T, text []byte) fixture {
	t.Helper()
	var f fixture
	if err := yaml.UnmarshalStrict(text, &f); err != nil {
		t.Fatalf("fixture: %v", err)
	}
	return f
}

// admin converts the fixture to the Admin API responses the hub would give.
func (f fixture) admin(t *testing.T) (*fedv1.ListClustersResponse, *fedv1.ListServicesResponse, *fedv1.ListFederationsResponse, *fedv1.ListBundlesResponse, []*fedv1.TrafficPolicy) {
	t.Helper()
	clusters := &fedv1.ListClustersResponse{}
	for _, c := range f.Clusters {
		td := c.TrustDomain
		if td == "" {
			td = c.Name + ".meshfed.local"
		}
		rec := &fedv1.ClusterRecord{Name: c.Name, TrustDomain: td}
		if c.Locality != "" {
			parts := append(strings.SplitN(c.Locality, "/", 3), "", "")
			rec.Locality = &fedv1.Locality{Region: parts[0], Zone: parts[1], Subzone: parts[2]}
		}
		clusters.Clusters = append(clusters.Clusters, rec)
	}
	services := &fedv1.ListServicesResponse{}
	for _, s := range f.Services {
		ns, name, _ := strings.Cut(s.Service, "/")
		gs := &fedv1.GlobalService{Key: s.Service}
		for _, e := range s.Exports {
			es := &fedv1.ExportedService{Namespace: ns, Name: name}
			for _, p := range e.Ports {
				es.Ports = append(es.Ports, &fedv1.ServicePort{Name: p.Name, Port: p.Port, Protocol: p.Protocol, AppProtocol: p.AppProtocol})
			}
			for _, g := range e.Endpoints {
				es.Endpoints = append(es.Endpoints, &fedv1.EndpointGroup{Zone: g.Zone, Labels: g.Labels, Ready: g.Ready, Serving: g.Ready})
			}
			gs.Exports = append(gs.Exports, &fedv1.ExportRecord{Cluster: e.Cluster, Service: es})
		}
		services.Services = append(services.Services, gs)
	}
	feds := &fedv1.ListFederationsResponse{}
	for _, td := range f.Federations {
		feds.Federations = append(feds.Federations, &fedv1.FederationStatus{Federation: &fedv1.FederationRelationship{TrustDomain: td}})
	}
	bundles := &fedv1.ListBundlesResponse{}
	for _, c := range clusters.Clusters {
		bundles.Bundles = append(bundles.Bundles, &fedv1.BundleInfo{Cluster: c.Name, Bundle: &fedv1.TrustBundle{TrustDomain: c.TrustDomain}})
	}
	for _, td := range f.ExternalBundles {
		bundles.Bundles = append(bundles.Bundles, &fedv1.BundleInfo{Bundle: &fedv1.TrustBundle{TrustDomain: td}})
	}
	var stored []*fedv1.TrafficPolicy
	for i, doc := range f.HubPolicies {
		js, err := yaml.Marshal(doc)
		if err == nil {
			js, err = yaml.YAMLToJSON(js)
		}
		if err != nil {
			t.Fatalf("hubPolicies[%d]: %v", i, err)
		}
		p, err := policy.Decode(js)
		if err != nil {
			t.Fatalf("hubPolicies[%d]: %v", i, err)
		}
		m, err := policy.ToProto(p)
		if err != nil {
			t.Fatalf("hubPolicies[%d]: %v", i, err)
		}
		stored = append(stored, m)
	}
	return clusters, services, feds, bundles, stored
}

// splitCase returns a case file's fixture and its policy file: the same
// bytes with the fixture's lines turned into comments, so that policyfile
// reports the file's own line numbers.
func splitCase(t *testing.T, data []byte) (fixtureText, policies []byte) {
	t.Helper()
	lines := bytes.SplitAfter(data, []byte("\n"))
	for i, l := range lines {
		if string(bytes.TrimRight(l, "\r\n")) != "---" {
			continue
		}
		fixtureText = bytes.Join(lines[:i], nil)
		var b bytes.Buffer
		for range i {
			b.WriteString("#\n")
		}
		b.Write(bytes.Join(lines[i:], nil))
		return fixtureText, b.Bytes()
	}
	t.Fatal(`no "---" line after the catalog fixture`)
	return nil, nil
}

// runCase analyzes one case file as `meshfed analyze -f` would.
func runCase(t *testing.T, path string) []Message {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	fixText, polText := splitCase(t, data)
	base, err := os.ReadFile(filepath.Join("testdata", "catalog.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	f, over := readFixture(t, base), readFixture(t, fixText)
	if over.Clusters != nil {
		f.Clusters = over.Clusters
	}
	if over.Services != nil {
		f.Services = over.Services
	}
	if over.Federations != nil {
		f.Federations = over.Federations
	}
	if over.ExternalBundles != nil {
		f.ExternalBundles = over.ExternalBundles
	}
	f.HubPolicies = over.HubPolicies
	clusters, services, feds, bundles, stored := f.admin(t)
	cat, err := FromAdmin(clusters, services, feds, bundles)
	if err != nil {
		t.Fatalf("FromAdmin: %v", err)
	}
	var set Policies
	set.AddHub(stored)
	if !isBlank(polText) {
		if err := set.AddFile(filepath.Base(path), polText); err != nil {
			t.Fatalf("AddFile: %v", err)
		}
	}
	return set.Analyze(cat)
}

func isBlank(b []byte) bool {
	for _, l := range strings.Split(string(b), "\n") {
		if l = strings.TrimSpace(l); l != "" && l != "---" && !strings.HasPrefix(l, "#") {
			return false
		}
	}
	return true
}

func render(msgs []Message) string {
	var b strings.Builder
	for _, m := range msgs {
		b.WriteString(m.String())
		b.WriteByte('\n')
	}
	return b.String()
}

// TestGolden runs every case of every code and compares the messages with
// the golden files; -update rewrites them.
func TestGolden(t *testing.T) {
	for _, ci := range Codes() {
		for _, kind := range []string{"positive", "negative"} {
			t.Run(string(ci.Code)+"/"+kind, func(t *testing.T) {
				path := filepath.Join("testdata", string(ci.Code), kind+".yaml")
				msgs := runCase(t, path)
				got := render(msgs)
				golden := strings.TrimSuffix(path, ".yaml") + ".golden"
				if *update {
					if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
						t.Fatal(err)
					}
				}
				want, err := os.ReadFile(golden)
				if err != nil {
					t.Fatal(err)
				}
				if got != string(want) {
					t.Errorf("messages of %s differ from %s:\n--- got\n%s--- want\n%s", path, golden, got, want)
				}
				n := 0
				for _, m := range msgs {
					if m.Code == ci.Code {
						n++
						if m.Severity != ci.Severity {
							t.Errorf("%s has severity %v, want %v", m, m.Severity, ci.Severity)
						}
					} else if kind == "positive" {
						t.Errorf("the positive case produces another code: %s", m)
					}
				}
				switch {
				case kind == "positive" && n == 0:
					t.Errorf("the positive case does not produce %s", ci.Code)
				case kind == "negative" && n > 0:
					t.Errorf("the negative case produces %s %d times", ci.Code, n)
				}
			})
		}
	}
}

// Every code is documented in docs/analyze.md, with its severity, and has
// both golden cases (TestGolden fails on a missing file; this names it).
func TestEveryCodeIsDocumented(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "..", "docs", "analyze.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, ci := range Codes() {
		heading := fmt.Sprintf("## %s %s (%s)", ci.Code, ci.Name, ci.Severity)
		if !bytes.Contains(doc, []byte(heading+"\n")) {
			t.Errorf("docs/analyze.md lacks the heading %q", heading)
		}
		for _, kind := range []string{"positive", "negative"} {
			if _, err := os.Stat(filepath.Join("testdata", string(ci.Code), kind+".yaml")); err != nil {
				t.Errorf("%s: %v", ci.Code, err)
			}
		}
	}
}
