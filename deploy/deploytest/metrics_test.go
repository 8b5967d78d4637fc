package deploytest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/meshfed/meshfed/eastwest"
	"github.com/meshfed/meshfed/gateway/gatewayclient"
	"github.com/meshfed/meshfed/internal/mcsdns"
	"github.com/meshfed/meshfed/trust"
)

// exported is what a component exports: metric family names, with the
// type where it is known (from a scrape).
type exported map[string]dto.MetricType

// metricType of a family known only by its description (a vector without
// series yet): the type is not in a Desc.
const unknownType dto.MetricType = -1

// scrape reads the families a running process serves on /metrics.
func scrape(t *testing.T, url string) exported {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%s: %s", url, resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("%s: %v", url, err)
	}
	out := exported{}
	for name, f := range fams {
		out[name] = f.GetType()
	}
	return out
}

// described reads the names of every collector registered with reg,
// vectors without any series included (a scrape shows a vector only once
// it has a series: the gateway's, before traffic). The name is only in
// the Desc's string form.
func described(t *testing.T, reg *prometheus.Registry) exported {
	t.Helper()
	ch := make(chan *prometheus.Desc)
	go func() { reg.Describe(ch); close(ch) }()
	re := regexp.MustCompile(`fqName: "([^"]+)"`)
	out := exported{}
	for d := range ch {
		m := re.FindStringSubmatch(d.String())
		if m == nil {
			t.Fatalf("cannot read the name of %s", d)
		}
		out[m[1]] = unknownType
	}
	return out
}

// noSource is an eastwest.Source with no config: enough to construct a
// gateway and read its metric descriptions; it never runs.
type noSource struct{}

func (noSource) State() (*gatewayclient.State, bool) { return nil, false }
func (noSource) Watch() <-chan struct{}              { return nil }

type noSVID struct{}

func (noSVID) GetX509SVID() (*x509svid.SVID, error) { return nil, fmt.Errorf("no SVID") }

// exportedMetrics collects, per component, the names the binaries export:
// scraped from the hub, agent and gateway processes of the shared
// federation, plus the descriptions of the registries of the gateway
// (eastwest.New(...).Registry(), what `meshfed gateway` serves) and of the
// agent's DNS server (mcsdns.NewServer registers on the agent's registry
// when --dns-bind is set, as in deploy/), whose vectors have no series
// until traffic.
func exportedMetrics(t *testing.T) map[string]exported {
	fed := federation(t)
	east := fed.Cluster("east")
	out := map[string]exported{
		"hub":     scrape(t, "http://"+fed.Hub().Server(0).HTTPAddr()+"/metrics"),
		"agent":   scrape(t, "http://"+east.Agent().HTTPAddr()+"/metrics"),
		"gateway": scrape(t, "http://"+east.Gateway().MetricsAddr()+"/metrics"),
	}
	g, err := eastwest.New(eastwest.DefaultConfig(), eastwest.Deps{Source: noSource{}, SVIDs: noSVID{}, Bundles: trust.NewBundleSet()})
	if err != nil {
		t.Fatal(err)
	}
	for n, typ := range described(t, g.Registry()) {
		if _, ok := out["gateway"][n]; !ok {
			out["gateway"][n] = typ
		}
	}
	reg := prometheus.NewRegistry()
	if _, err := mcsdns.NewServer(mcsdns.DefaultConfig(), reg); err != nil {
		t.Fatal(err)
	}
	for n, typ := range described(t, reg) {
		if _, ok := out["agent"][n]; !ok {
			out["agent"][n] = typ
		}
	}
	return out
}

// accepts reports whether a query may use name: an exported family, or a
// histogram's or summary's _bucket, _sum or _count.
func (e exported) accepts(name string) bool {
	if _, ok := e[name]; ok {
		return true
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		base, ok := cutSuffix(name, suffix)
		if !ok {
			continue
		}
		switch e[base] {
		case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM, unknownType:
			return true
		case dto.MetricType_SUMMARY:
			return suffix != "_bucket"
		}
	}
	return false
}

func cutSuffix(s, suffix string) (string, bool) {
	if len(s) > len(suffix) && s[len(s)-len(suffix):] == suffix {
		return s[:len(s)-len(suffix)], true
	}
	return "", false
}

func (e exported) names() []string {
	out := make([]string, 0, len(e))
	for n := range e {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// promqlKeywords are the words of PromQL that are not metric names.
var promqlKeywords = map[string]bool{
	"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true,
	"and": true, "or": true, "unless": true, "bool": true, "offset": true, "inf": true, "nan": true,
}

// metricNames returns the metric names a PromQL query selects: it drops
// strings, label matchers {...}, ranges [...], grouping lists (by (...),
// on (...), ...), Grafana variables, numbers and durations, then keeps every
// identifier that is not a function call or a keyword.
func metricNames(expr string) []string {
	for _, re := range []string{`"(\\.|[^"\\])*"`, `\{[^}]*\}`, `\[[^\]]*\]`,
		`\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`, `\$\w+`,
		`\b[0-9][0-9.]*[a-zA-Z]*\b`} { // numbers and durations (offset 5m)
		expr = regexp.MustCompile(re).ReplaceAllString(expr, " ")
	}
	var out []string
	for _, m := range regexp.MustCompile(`[A-Za-z_:][A-Za-z0-9_:]*(\s*\()?`).FindAllString(expr, -1) {
		if m[len(m)-1] == '(' || promqlKeywords[strings.ToLower(m)] {
			continue // a function
		}
		out = append(out, m)
	}
	return out
}

func TestMetricNamesOfAQuery(t *testing.T) {
	for _, tc := range []struct {
		expr string
		want []string
	}{
		{`histogram_quantile(0.99, sum by (le) (rate(a_seconds_bucket{x="y"}[$__rate_interval])))`, []string{"a_seconds_bucket"}},
		{`process_resident_memory_bytes and on(instance) meshfed_hub_raft_state`, []string{"process_resident_memory_bytes", "meshfed_hub_raft_state"}},
		{`sum by (cluster) (rate(p_total{result="fail", q=~"$v"}[5m])) / 2`, []string{"p_total"}},
		{`max(x) - on() group_left(a) y offset 5m`, []string{"x", "y"}},
	} {
		if got := metricNames(tc.expr); !slices.Equal(got, tc.want) {
			t.Errorf("metricNames(%s) = %v, want %v", tc.expr, got, tc.want)
		}
	}
}

// dashboard is what the test reads of deploy/grafana/meshfed.json.
type dashboard struct {
	UID           string `json:"uid"`
	SchemaVersion int    `json:"schemaVersion"`
	Templating    struct {
		List []struct {
			Name, Type, Query string
		} `json:"list"`
	} `json:"templating"`
	Panels []struct {
		ID          int    `json:"id"`
		Type        string `json:"type"`
		Title       string `json:"title"`
		Description string `json:"description"`
		Datasource  *struct {
			Type, UID string
		} `json:"datasource"`
		GridPos struct{ H, W, X, Y int } `json:"gridPos"`
		Targets []struct {
			RefID string `json:"refId"`
			Expr  string `json:"expr"`
		} `json:"targets"`
	} `json:"panels"`
}

// dashboardRows maps the dashboard's row titles to the component whose
// metrics the panels under them show.
var dashboardRows = map[string]string{"Hub": "hub", "Agent": "agent", "East-west gateway": "gateway"}

// TestGrafanaDashboardQueriesOnlyExportedMetrics: every metric name in a
// query of deploy/grafana/meshfed.json is one the component of its row
// (hub, agent, gateway) really exports, and every meshfed_ metric a
// component exports has a panel.
func TestGrafanaDashboardQueriesOnlyExportedMetrics(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(repoRoot, "deploy", "grafana", "meshfed.json"))
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&d); err != nil {
		t.Fatal(err)
	}
	if d.UID == "" || d.SchemaVersion < 36 {
		t.Errorf("uid %q, schemaVersion %d: want a uid and a schema of Grafana 9 or later", d.UID, d.SchemaVersion)
	}
	if len(d.Templating.List) == 0 || d.Templating.List[0].Name != "datasource" || d.Templating.List[0].Query != "prometheus" {
		t.Errorf("templating %+v: want a Prometheus datasource variable", d.Templating.List)
	}
	exp := exportedMetrics(t)
	used := map[string]map[string]bool{}
	ids := map[int]bool{}
	component := ""
	for _, p := range d.Panels {
		if ids[p.ID] {
			t.Errorf("panel %q: id %d used twice", p.Title, p.ID)
		}
		ids[p.ID] = true
		if p.GridPos.X < 0 || p.GridPos.W <= 0 || p.GridPos.X+p.GridPos.W > 24 {
			t.Errorf("panel %q: gridPos %+v outside the 24 columns", p.Title, p.GridPos)
		}
		if p.Type == "row" {
			c, ok := dashboardRows[p.Title]
			if !ok {
				t.Fatalf("row %q: not one of %v", p.Title, dashboardRows)
			}
			component = c
			continue
		}
		if component == "" {
			t.Fatalf("panel %q before the first row", p.Title)
		}
		if p.Datasource == nil || p.Datasource.UID != "${datasource}" || len(p.Targets) == 0 || p.Description == "" {
			t.Errorf("panel %q: want the ${datasource} variable, queries and a description", p.Title)
		}
		for _, q := range p.Targets {
			names := metricNames(q.Expr)
			if len(names) == 0 {
				t.Errorf("panel %q query %s: %q selects no metric", p.Title, q.RefID, q.Expr)
			}
			for _, n := range names {
				if !exp[component].accepts(n) {
					t.Errorf("panel %q (%s) query %s: %s is not a metric the %s exports", p.Title, component, q.RefID, n, component)
				}
				if used[component] == nil {
					used[component] = map[string]bool{}
				}
				used[component][n] = true
			}
		}
	}
	for comp, e := range exp {
		for _, n := range e.names() {
			if !strings.HasPrefix(n, "meshfed_") {
				continue
			}
			shown := used[comp][n]
			for _, s := range []string{"_bucket", "_sum", "_count"} {
				shown = shown || used[comp][n+s]
			}
			if !shown {
				t.Errorf("%s exports %s, which no panel of its row shows", comp, n)
			}
		}
	}
}
