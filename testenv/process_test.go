package testenv

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// groupStates returns the state letter (R, S, T, Z, ...) of every process in
// process group pgid, from /proc.
func groupStates(t *testing.T, pgid int) map[int]string {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	states := map[int]string{}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue // gone
		}
		// pid (comm) state ppid pgrp ...; comm may contain spaces.
		f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
		if len(f) > 2 && f[2] == strconv.Itoa(pgid) {
			states[pid] = f[0]
		}
	}
	return states
}

// pgrepGroup returns the live processes pgrep finds in group pgid ("" if
// none). Zombies are dead: a killed grandchild stays one until the init
// process reaps it, which in a container can take a while.
func pgrepGroup(t *testing.T, pgid int) string {
	t.Helper()
	out, err := exec.Command("pgrep", "-g", strconv.Itoa(pgid)).Output()
	var exit *exec.ExitError
	if errors.As(err, &exit) && exit.ExitCode() == 1 {
		return "" // no process matched
	}
	if err != nil {
		t.Fatalf("pgrep: %v", err)
	}
	states := groupStates(t, pgid)
	var live []string
	for _, pid := range strings.Fields(string(out)) {
		n, _ := strconv.Atoi(pid)
		if st, ok := states[n]; ok && st != "Z" {
			live = append(live, pid+"("+st+")")
		}
	}
	return strings.Join(live, " ")
}

// live drops zombies.
func live(states map[int]string) map[int]string {
	l := map[int]string{}
	for pid, st := range states {
		if st != "Z" {
			l[pid] = st
		}
	}
	return l
}

func waitGroup(t *testing.T, pgid int, what string, ok func(states map[int]string) bool) {
	t.Helper()
	err := WaitFor(context.Background(), 10*time.Second, func(context.Context) error {
		if s := groupStates(t, pgid); !ok(s) {
			return fmt.Errorf("group %d: %v", pgid, s)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func TestProcessLifecycle(t *testing.T) {
	if _, err := exec.LookPath("pgrep"); err != nil {
		t.Fatalf("pgrep (Debian package procps) is needed to check for orphans: %v", err)
	}
	dir := t.TempDir()
	p := newProcess(processSpec{
		name: "sleepers", path: "/bin/sh",
		// A child in the background: killing the group must take it too.
		args:    []string{"-c", "sleep 1000 & echo started; sleep 1000"},
		logPath: filepath.Join(dir, "sleepers.log"),
	})
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Kill() })
	pgid := p.Pid()
	waitGroup(t, pgid, "three processes", func(s map[int]string) bool { return len(s) == 3 })
	if rss, err := p.RSS(); err != nil || rss <= 0 {
		t.Fatalf("RSS %d, %v", rss, err)
	}

	if err := p.Pause(); err != nil {
		t.Fatal(err)
	}
	waitGroup(t, pgid, "all stopped", func(s map[int]string) bool {
		for _, st := range s {
			if st != "T" {
				return false
			}
		}
		return len(s) == 3
	})
	if !p.Paused() {
		t.Fatal("not Paused")
	}
	if err := p.Resume(); err != nil {
		t.Fatal(err)
	}
	waitGroup(t, pgid, "all running", func(s map[int]string) bool {
		for _, st := range s {
			if st == "T" {
				return false
			}
		}
		return len(s) == 3
	})

	if err := p.Restart(); err != nil {
		t.Fatal(err)
	}
	if p.Pid() == pgid || !p.Running() {
		t.Fatalf("restart: pid %d (was %d), running %v", p.Pid(), pgid, p.Running())
	}
	waitGroup(t, pgid, "old group gone", func(s map[int]string) bool { return len(live(s)) == 0 })
	if left := pgrepGroup(t, pgid); left != "" {
		t.Fatalf("pgrep finds the killed group: %s", left)
	}

	pgid = p.Pid()
	exited := p.Exited()
	if err := p.Stop(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	<-exited
	waitGroup(t, pgid, "stopped group gone", func(s map[int]string) bool { return len(live(s)) == 0 })
	if err := p.Kill(); !errors.Is(err, ErrNotRunning) {
		t.Fatalf("Kill of a stopped process: %v", err)
	}
	if err := p.Pause(); !errors.Is(err, ErrNotRunning) {
		t.Fatalf("Pause of a stopped process: %v", err)
	}
	if tail := p.Tail(4096); strings.Count(tail, "\nstarted\n") != 2 || !strings.Contains(tail, "=== testenv: start #2") {
		t.Fatalf("log tail:\n%s", tail)
	}
}

func TestProcessExitBeforeReady(t *testing.T) {
	p := newProcess(processSpec{
		name: "quitter", path: "/bin/sh", args: []string{"-c", "echo cannot bind; exit 3"},
		logPath:      filepath.Join(t.TempDir(), "quitter.log"),
		ready:        func(context.Context) error { return errors.New("not ready") },
		readyTimeout: time.Minute,
	})
	err := p.Start()
	if err == nil || !strings.Contains(err.Error(), "cannot bind") {
		t.Fatalf("Start: %v; want an error quoting the log", err)
	}
}

// TestNoOrphansAfterFailure runs a test that starts a federation and fails
// midway (TestFailingFederationHelper) in a child test binary, and checks that
// its processes are all gone and its folder removed.
func TestNoOrphansAfterFailure(t *testing.T) {
	requireBinaries(t)
	bin, err := meshfedBinary()
	if err != nil {
		t.Fatal(err)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	report := filepath.Join(t.TempDir(), "report")
	cmd := exec.Command(exe, "-test.run=^TestFailingFederationHelper$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), "TESTENV_HELPER_REPORT="+report, EnvMeshfed+"="+bin)
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("the helper test passed; it fails on purpose:\n%s", out)
	}
	if !strings.Contains(string(out), "failing on purpose") || !strings.Contains(string(out), "--- east/kube-apiserver") {
		t.Fatalf("the helper's output lacks its failure or the log tails:\n%s", out)
	}
	b, err := os.ReadFile(report)
	if err != nil {
		t.Fatalf("no report: %v\n%s", err, out)
	}
	lines := strings.Fields(string(b))
	if len(lines) != 6 { // dir, etcd, apiserver, agent, gateway, hub server
		t.Fatalf("report %q", b)
	}
	if _, err := os.Stat(lines[0]); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the federation's folder %s is still there (%v)", lines[0], err)
	}
	for _, s := range lines[1:] {
		pgid, err := strconv.Atoi(s)
		if err != nil {
			t.Fatal(err)
		}
		if left := pgrepGroup(t, pgid); left != "" {
			t.Errorf("process group %d survived the failed test: %s", pgid, left)
		}
	}
}

func TestFailingFederationHelper(t *testing.T) {
	report := os.Getenv("TESTENV_HELPER_REPORT")
	if report == "" {
		t.Skip("a helper of TestNoOrphansAfterFailure")
	}
	fed := Start(t, Options{HubServers: 1, Clusters: []Cluster{{Name: "east", Region: "us-east", Zone: "us-east-1a"}}})
	lines := []string{fed.Dir()}
	for _, p := range fed.Processes() {
		lines = append(lines, strconv.Itoa(p.Pid()))
	}
	if err := os.WriteFile(report, []byte(strings.Join(lines, "\n")), 0o600); err != nil {
		t.Error(err)
	}
	t.Fatal("failing on purpose")
}
