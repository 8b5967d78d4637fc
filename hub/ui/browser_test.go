package ui_test

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/meshfed/meshfed/hub/ui/uitest"
)

// artifactDir is where a test's screenshots go: $MESHFED_UI_ARTIFACTS/<test>
// if set (CI keeps that directory), else the test's temporary directory.
func artifactDir(t *testing.T) string {
	if d := os.Getenv("MESHFED_UI_ARTIFACTS"); d != "" {
		return filepath.Join(d, t.Name())
	}
	return t.TempDir()
}

// TestViewsInABrowserAgainstAFakeHub runs the browser checks against a fake
// of the UI API: no session is refused, the login URL opens the topology
// with its three clusters, a gateway failure arrives over the event stream
// and turns west down with a failover on the timeline (no reload), heal
// brings it back, the keyboard reaches and opens the services view, which
// lists default/reviews with its exporters, trust and hub views render, every
// view fits a phone's width, axe-core finds no serious or critical
// violation, and an ended session shows as signed out.
func TestViewsInABrowserAgainstAFakeHub(t *testing.T) {
	tools := uitest.NeedTools(t)
	f := newFakeHub(t)
	res := uitest.Run(t, tools, uitest.Config{
		BaseURL:  f.srv.URL,
		LoginURL: f.loginURL(),
		OutDir:   artifactDir(t),
		Steps:    []string{uitest.StepFail, uitest.StepHeal, uitest.StepExpire},
		Expect: uitest.Expect{
			Clusters: []string{"central", "east", "west"}, FailCluster: "west",
			Service: "default/reviews", Exporters: []string{"east", "west"}, Servers: 3, Traffic: true,
		},
		FailWithin: 5 * time.Second, HealWithin: 5 * time.Second,
	}, map[string]func() error{
		uitest.StepFail:   func() error { return f.failGateway("west") },
		uitest.StepHeal:   func() error { return f.healGateway("west") },
		uitest.StepExpire: f.expireSessions,
	})
	t.Logf("topology drawn in %.0f ms; timings %v; axe %v; %d screenshots", uitest.Median(res.PageTimeMs), res.Timings, res.Axe, len(res.Screenshots))
	if len(res.Screenshots) == 0 {
		t.Error("no screenshot taken")
	}
}
