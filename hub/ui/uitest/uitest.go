// Package uitest runs the web UI's checks in a real browser for Go tests:
// a Node script (browser.mjs, embedded) drives Debian's chromium with
// Playwright (playwright-core) and checks accessibility with axe-core.
//
// `make ui-tools` installs what it needs: chromium with apt-get, and the two
// npm packages, at the versions pinned in tools/ui/package-lock.json, into
// .ui-tools/ at the repository root (git-ignored). Nothing downloads a
// browser of its own. A missing tool is a test failure that says to run
// `make ui-tools`, never a skip, so CI cannot pass without running the
// checks.
//
// The same checks run against a fake of the UI API (package ui's tests)
// and against a real `meshfed dev` (internal/e2e).
package uitest

import (
	"bufio"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

//go:embed browser.mjs
var script []byte

// ErrToolsMissing is wrapped by FindTools' error when node, the npm
// packages or chromium are not installed.
var ErrToolsMissing = errors.New("uitest: the browser-test tools are missing: run `make ui-tools`")

// Tools are the programs and packages the browser checks run with.
type Tools struct {
	Node     string // the node binary
	Modules  string // the node_modules directory holding playwright-core and axe-core
	Chromium string // Debian's chromium
}

// FindTools looks for node on the PATH, for the npm packages in
// $MESHFED_UI_TOOLS/node_modules (default: .ui-tools/ at the root of the
// module holding the working directory), and for chromium at
// $MESHFED_CHROMIUM (default: chromium on the PATH). Its error wraps
// ErrToolsMissing and names what is missing.
func FindTools() (Tools, error) {
	var t Tools
	var missing []string
	var err error
	if t.Node, err = exec.LookPath("node"); err != nil {
		missing = append(missing, "node (Node.js 20 or later)")
	}
	dir := os.Getenv("MESHFED_UI_TOOLS")
	if dir == "" {
		root, rerr := moduleRoot()
		if rerr != nil {
			return t, fmt.Errorf("%w: %v", ErrToolsMissing, rerr)
		}
		dir = filepath.Join(root, ".ui-tools")
	}
	t.Modules = filepath.Join(dir, "node_modules")
	for _, p := range []string{"playwright-core/package.json", "axe-core/axe.min.js"} {
		if _, err := os.Stat(filepath.Join(t.Modules, p)); err != nil {
			missing = append(missing, filepath.Join(t.Modules, p))
		}
	}
	t.Chromium = os.Getenv("MESHFED_CHROMIUM")
	if t.Chromium == "" {
		t.Chromium, err = exec.LookPath("chromium")
		if err != nil {
			missing = append(missing, "chromium (Debian package chromium)")
		}
	} else if _, err := os.Stat(t.Chromium); err != nil {
		missing = append(missing, "MESHFED_CHROMIUM="+t.Chromium)
	}
	if len(missing) > 0 {
		return t, fmt.Errorf("%w; not found: %q", ErrToolsMissing, missing)
	}
	return t, nil
}

// NeedTools returns the tools, or fails the test (it does not skip) with
// the message to run `make ui-tools`.
func NeedTools(t testing.TB) Tools {
	t.Helper()
	tools, err := FindTools()
	if err != nil {
		t.Fatal(err)
	}
	return tools
}

func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory")
		}
		dir = parent
	}
}

// Scenario selects what the script does.
type Scenario string

const (
	// Full checks every view: refusal without a session, login, the
	// clusters drawn, the steps (fault, heal, expiry), keyboard use,
	// services, trust, hub, a phone's width, axe-core on each view, and
	// takes screenshots.
	Full Scenario = "full"
	// PageTime loads the UI Loads times, each in a fresh browser context
	// (a cold cache, the session kept), and reports when the topology was
	// drawn.
	PageTime Scenario = "pagetime"
)

// Step names the script asks the test to carry out, in this order, if
// listed in Config.Steps.
const (
	StepFail   = "fail"   // make Expect.FailCluster fail: it must turn down and a failover show on the timeline
	StepHeal   = "heal"   // undo StepFail: the cluster must come back ok
	StepExpire = "expire" // end the session: the page must say it is signed out
)

// Expect is what the UI must show.
type Expect struct {
	Clusters    []string `json:"clusters"`    // every cluster in the topology, no other
	FailCluster string   `json:"failCluster"` // the cluster StepFail makes fail
	Service     string   `json:"service"`     // a service the services view lists ("default/reviews")
	Exporters   []string `json:"exporters"`   // clusters that must be among Service's exporters
	Servers     int      `json:"servers"`     // hub servers in the hub view
	// Traffic: some link between clusters must carry requests (within
	// TrafficWithin of the topology drawn), before the steps.
	Traffic bool `json:"traffic"`
}

// Config is what the script runs against.
type Config struct {
	Scenario Scenario
	BaseURL  string   // the hub's HTTP address, "http://127.0.0.1:port"
	LoginURL string   // a URL that starts a session and redirects to /ui/ (from `meshfed ui login`)
	OutDir   string   // screenshots go here
	Steps    []string // StepFail, StepHeal, StepExpire: the ones the test can carry out
	Expect   Expect
	// FailWithin bounds the time from the end of StepFail to the
	// cluster drawn down and the failover on the timeline; HealWithin
	// the time from the end of StepHeal to the cluster drawn ok.
	FailWithin, HealWithin time.Duration
	TrafficWithin          time.Duration // for Expect.Traffic; default 30 s
	Loads                  int           // PageTime: how many loads
}

// Result is what the script measured.
type Result struct {
	// PageTimeMs: for each load, the milliseconds from navigation start to
	// the topology drawn (the performance mark "meshfed:topology-drawn").
	PageTimeMs  []float64                 `json:"pageTimeMs"`
	Screenshots []string                  `json:"screenshots"`
	Axe         map[string]map[string]int `json:"axe"` // view → impact → violations (serious or critical ones fail the run)
	Timings     map[string]float64        `json:"timings"`
}

type scriptConfig struct {
	Scenario     Scenario `json:"scenario"`
	Modules      string   `json:"modules"`
	Chromium     string   `json:"chromium"`
	BaseURL      string   `json:"baseURL"`
	LoginURL     string   `json:"loginURL"`
	OutDir       string   `json:"outDir"`
	Steps        []string `json:"steps"`
	Expect       Expect   `json:"expect"`
	FailWithinMs int64    `json:"failWithinMs"`
	HealWithinMs int64    `json:"healWithinMs"`
	TrafficMs    int64    `json:"trafficWithinMs"`
	Loads        int      `json:"loads"`
}

type message struct {
	Log    *string `json:"log"`
	Fail   *string `json:"fail"`
	Step   *string `json:"step"`
	Result *Result `json:"result"`
}

// Run runs the script with cfg and fails t for each check that fails. When
// the script asks for a step, Run calls steps[name] and answers with its
// error; a step the map lacks fails the test.
func Run(t testing.TB, tools Tools, cfg Config, steps map[string]func() error) Result {
	t.Helper()
	dir := t.TempDir()
	sc := scriptConfig{
		Scenario: cfg.Scenario, Modules: tools.Modules, Chromium: tools.Chromium,
		BaseURL: cfg.BaseURL, LoginURL: cfg.LoginURL, OutDir: cfg.OutDir, Steps: cfg.Steps, Expect: cfg.Expect,
		FailWithinMs: cfg.FailWithin.Milliseconds(), HealWithinMs: cfg.HealWithin.Milliseconds(), TrafficMs: cfg.TrafficWithin.Milliseconds(), Loads: cfg.Loads,
	}
	if sc.Scenario == "" {
		sc.Scenario = Full
	}
	if sc.TrafficMs == 0 {
		sc.TrafficMs = 30_000
	}
	if sc.Steps == nil {
		sc.Steps = []string{}
	}
	if sc.Expect.Clusters == nil {
		sc.Expect.Clusters = []string{}
	}
	if sc.Expect.Exporters == nil {
		sc.Expect.Exporters = []string{}
	}
	if sc.OutDir == "" {
		sc.OutDir = dir
	}
	for _, s := range cfg.Steps {
		if steps[s] == nil {
			t.Fatalf("uitest: step %q is in Config.Steps but has no function", s)
		}
	}
	if err := os.MkdirAll(sc.OutDir, 0o755); err != nil {
		t.Fatal(err)
	}
	cb, err := json.Marshal(sc)
	if err != nil {
		t.Fatal(err)
	}
	scriptPath, cfgPath := filepath.Join(dir, "browser.mjs"), filepath.Join(dir, "config.json")
	if err := os.WriteFile(scriptPath, script, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfgPath, cb, 0o644); err != nil {
		t.Fatal(err)
	}

	cmd := exec.Command(tools.Node, scriptPath, cfgPath)
	cmd.Dir = dir
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr := &tailBuffer{max: 16 << 10}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var res Result
	gotResult := false
	sc2 := bufio.NewScanner(stdout)
	sc2.Buffer(make([]byte, 64<<10), 4<<20)
	for sc2.Scan() {
		var m message
		if err := json.Unmarshal(sc2.Bytes(), &m); err != nil {
			t.Logf("browser: %s", sc2.Bytes())
			continue
		}
		switch {
		case m.Log != nil:
			t.Logf("browser: %s", *m.Log)
		case m.Fail != nil:
			t.Errorf("browser: %s", *m.Fail)
		case m.Step != nil:
			ans := map[string]any{"ok": true}
			f := steps[*m.Step]
			switch {
			case f == nil || !slices.Contains(cfg.Steps, *m.Step):
				t.Errorf("uitest: the script asked for step %q, which the test does not offer", *m.Step)
				ans = map[string]any{"error": "no such step"}
			default:
				t.Logf("step %s", *m.Step)
				if err := f(); err != nil {
					t.Errorf("step %s: %v", *m.Step, err)
					ans = map[string]any{"error": err.Error()}
				}
			}
			b, _ := json.Marshal(ans)
			if _, err := stdin.Write(append(b, '\n')); err != nil {
				t.Errorf("uitest: answering step %s: %v", *m.Step, err)
			}
		case m.Result != nil:
			res, gotResult = *m.Result, true
		}
	}
	_ = stdin.Close()
	if err := cmd.Wait(); err != nil && !t.Failed() {
		t.Errorf("uitest: node %s: %v\n%s", scriptPath, err, stderr)
	}
	if !gotResult {
		t.Errorf("uitest: the script ended with no result: %s", stderr)
	}
	if stderr.Len() > 0 {
		t.Logf("browser stderr:\n%s", stderr)
	}
	return res
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	max int
	b   []byte
}

var _ io.Writer = (*tailBuffer)(nil)

func (w *tailBuffer) Write(p []byte) (int, error) {
	w.b = append(w.b, p...)
	if len(w.b) > w.max {
		w.b = w.b[len(w.b)-w.max:]
	}
	return len(p), nil
}

func (w *tailBuffer) Len() int       { return len(w.b) }
func (w *tailBuffer) String() string { return string(w.b) }

// Median returns the median of ms, or 0 for none.
func Median(ms []float64) float64 {
	if len(ms) == 0 {
		return 0
	}
	s := slices.Clone(ms)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
