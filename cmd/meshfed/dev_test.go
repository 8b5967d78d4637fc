package main

import (
	"strings"
	"testing"
)

// Every case fails validation, so meshfed dev starts nothing: the error
// shows which flag or variable the value came from.
func TestDevFlagsAndTheirDeprecatedAliasesAndEnvironmentReachTheConfig(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  map[string]string
		args []string
		want string // in stderr
	}{
		{"port-base", nil, []string{"dev", "--state-dir", t.TempDir(), "--port-base", "80"}, `port_base: "80" must be in 1024..`},
		{"base-port alias", nil, []string{"dev", "--dir", t.TempDir(), "--base-port", "81"}, `port_base: "81" must be in 1024..`},
		{"environment", map[string]string{envDevDir: t.TempDir(), envDevPort: "82"}, []string{"dev"}, `port_base: "82" must be in 1024..`},
		{"flag over environment", map[string]string{envDevPort: "82"}, []string{"dev", "--port-base", "83"}, `port_base: "83" must be in 1024..`},
		{"not a number", nil, []string{"dev", "--port-base", "x"}, `port-base (MESHFED_DEV_PORT): "x" must be a port number`},
		{"both names", nil, []string{"dev", "--state-dir", "a", "--dir", "b"}, `dir: "" is the deprecated name of --state-dir: give one of them`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := run(t, newTestDeps(t, tc.env), tc.args...)
			if r.code != exitUsage {
				t.Errorf("exit %d, want %d", r.code, exitUsage)
			}
			if !strings.Contains(r.stderr, tc.want) {
				t.Errorf("stderr %q does not say %q", r.stderr, tc.want)
			}
		})
	}
}

func TestDevHelpNamesTheFlagsOfIssue13NotTheDeprecatedOnes(t *testing.T) {
	r := run(t, newTestDeps(t, nil), "dev", "--help")
	for _, want := range []string{"--state-dir", "--port-base", "--oneshot"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("help has no %s", want)
		}
	}
	for _, hidden := range []string{"--dir ", "--base-port"} {
		if strings.Contains(r.stdout, hidden) {
			t.Errorf("help shows the deprecated %s", hidden)
		}
	}
}

func TestDevFailAndHealNameTheBadFieldAndSayWhenNoDevRuns(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name string
		env  map[string]string
		args []string
		code int
		want string // in stderr
	}{
		{"fail without a cluster", nil, []string{"dev", "fail", "--state-dir", dir}, exitUsage, `cluster: "" must be`},
		{"fail of an unknown kind", nil, []string{"dev", "fail", "--state-dir", dir, "--cluster", "west", "--what", "disk"}, exitUsage, `what: "disk" must be one of gateway, workloads, agent, hub-link`},
		{"heal of an unknown kind", nil, []string{"dev", "heal", "--state-dir", dir, "--what", "disk"}, exitUsage, `what: "disk" must be one of`},
		{"fail with no dev running", nil, []string{"dev", "fail", "--state-dir", dir, "--cluster", "west"}, exitError, "no meshfed dev is running"},
		{"heal with no dev running, dir from the environment", map[string]string{envDevDir: dir}, []string{"dev", "heal"}, exitError, "no meshfed dev is running on this state directory: " + dir},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := run(t, newTestDeps(t, tc.env), tc.args...)
			if r.code != tc.code {
				t.Errorf("exit %d, want %d", r.code, tc.code)
			}
			if !strings.Contains(r.stderr, tc.want) {
				t.Errorf("stderr %q does not say %q", r.stderr, tc.want)
			}
		})
	}
}
