package main

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	fedv1 "github.com/meshfed/meshfed/federation/v1"
	"github.com/meshfed/meshfed/hub"
)

// result is one run of the command line.
type result struct {
	stdout, stderr string
	code           int
}

// run executes meshfed with args on d.
func run(t *testing.T, d deps, args ...string) result {
	t.Helper()
	root := newRoot(d)
	var stdout, stderr bytes.Buffer
	root.SetOut(&stdout)
	root.SetErr(&stderr)
	root.SetIn(strings.NewReader(""))
	code := execute(t.Context(), root, args)
	t.Logf("meshfed %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, stdout.String(), stderr.String())
	return result{stdout: stdout.String(), stderr: stderr.String(), code: code}
}

// newTestDeps returns deps that fail the test if they start a hub or dial,
// and read the environment from env.
func newTestDeps(t testing.TB, env map[string]string) deps {
	return deps{
		runHub: func(context.Context, hub.Config, *slog.Logger) error {
			t.Error("runHub called")
			return nil
		},
		generateKey: func() (string, error) { return "a2V5", nil },
		dialAdmin: func(context.Context, string) (fedv1.AdminClient, func() error, error) {
			t.Error("dialAdmin called")
			return nil, nil, os.ErrNotExist
		},
		getenv: func(k string) string { return env[k] },
	}
}

// fakeAdmin answers the Admin calls a test sets up; any other call panics
// on the nil embedded client.
type fakeAdmin struct {
	fedv1.AdminClient
	err error // returned by every call when set

	status  *fedv1.StatusResponse
	created *fedv1.CreateTokenResponse
	tokens  *fedv1.ListTokensResponse

	gotCreate *fedv1.CreateTokenRequest
}

func (f *fakeAdmin) Status(context.Context, *fedv1.StatusRequest, ...grpc.CallOption) (*fedv1.StatusResponse, error) {
	return f.status, f.err
}

func (f *fakeAdmin) CreateToken(_ context.Context, in *fedv1.CreateTokenRequest, _ ...grpc.CallOption) (*fedv1.CreateTokenResponse, error) {
	f.gotCreate = in
	return f.created, f.err
}

func (f *fakeAdmin) ListTokens(context.Context, *fedv1.ListTokensRequest, ...grpc.CallOption) (*fedv1.ListTokensResponse, error) {
	return f.tokens, f.err
}

func (f *fakeAdmin) DescribeCluster(context.Context, *fedv1.DescribeClusterRequest, ...grpc.CallOption) (*fedv1.DescribeClusterResponse, error) {
	return nil, f.err
}

// withAdmin makes d dial a, recording the config path it was asked for.
func withAdmin(t testing.TB, d deps, a fedv1.AdminClient, gotPath *string) deps {
	d.dialAdmin = func(ctx context.Context, path string) (fedv1.AdminClient, func() error, error) {
		if _, ok := ctx.Deadline(); !ok {
			t.Error("dialAdmin: context has no deadline")
		}
		if gotPath != nil {
			*gotPath = path
		}
		return a, func() error { return nil }, nil
	}
	return d
}

func TestVersion(t *testing.T) {
	d := newTestDeps(t, nil)
	r := run(t, d, "version")
	if r.code != 0 {
		t.Fatalf("exit %d", r.code)
	}
	for _, want := range []string{version, commit, runtime.Version()} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("version output %q lacks %q", r.stdout, want)
		}
	}

	r = run(t, d, "version", "-o", "json")
	if r.code != 0 {
		t.Fatalf("exit %d", r.code)
	}
	var got versionInfo
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
		t.Fatalf("version -o json: %v", err)
	}
	if want := (versionInfo{Version: version, Commit: commit, GoVersion: runtime.Version()}); got != want {
		t.Errorf("version -o json = %+v, want %+v", got, want)
	}
}

func TestOutputFlagRejectsUnknownFormat(t *testing.T) {
	for _, args := range [][]string{
		{"version", "-o", "xml"},
		{"clusters", "list", "--output=wide"},
	} {
		r := run(t, newTestDeps(t, nil), args...)
		if r.code != exitUsage {
			t.Errorf("%v: exit %d, want %d", args, r.code, exitUsage)
		}
		for _, want := range []string{"-o, --output", "table, json, yaml"} {
			if !strings.Contains(r.stderr, want) {
				t.Errorf("%v: stderr %q lacks %q", args, r.stderr, want)
			}
		}
	}
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"frobnicate"},
		{"hub", "keygn"},
		{"hub", "--no-such-flag"},
		{"token", "create"}, // --cluster is required
		{"token", "create", "--cluster", "Not_A_Label"},
		{"token", "create", "--cluster", "west", "--ttl", "0s"},
		{"token", "revoke"},
		{"clusters", "describe", "a", "b"},
		{"hub", "--log-level", "loud"},
	} {
		if r := run(t, newTestDeps(t, nil), args...); r.code != exitUsage || !strings.HasPrefix(r.stderr, "error: ") {
			t.Errorf("%v: exit %d, stderr %q; want exit %d and an error", args, r.code, r.stderr, exitUsage)
		}
	}
}

func TestHubInvalidConfigReportsEveryError(t *testing.T) {
	d := newTestDeps(t, nil)
	r := run(t, d, "hub", "--name", "h1", "--data-dir", t.TempDir(), "--bootstrap-expect", "9", "--bind", "not-an-ip")
	if r.code != exitUsage {
		t.Errorf("exit %d, want %d", r.code, exitUsage)
	}
	for _, want := range []string{"bootstrap_expect: 9 must be in 0..7", `bind: "not-an-ip" is not an IP address`} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stderr lacks %q", want)
		}
	}
	if n := strings.Count(r.stderr, "error: "); n != 2 {
		t.Errorf("%d error lines, want 2", n)
	}
}

func TestHubFlagsBuildConfig(t *testing.T) {
	key := strings.Repeat("A", 43) + "="
	dir := t.TempDir()
	var got hub.Config
	d := newTestDeps(t, map[string]string{envEncryptKey: key})
	d.runHub = func(ctx context.Context, cfg hub.Config, log *slog.Logger) error {
		if ctx.Err() != nil {
			t.Error("runHub: context already done")
		}
		if !log.Enabled(ctx, slog.LevelDebug) {
			t.Error("runHub: --log-level debug not applied")
		}
		got = cfg
		return nil
	}
	r := run(t, d, "hub", "--name", "h1", "--data-dir", dir, "--bind", "127.0.0.2",
		"--grpc-port", "9000", "--raft-port", "9001", "--gossip-port", "9002", "--http-port", "9003",
		"--bootstrap-expect", "3", "--join", "127.0.0.3:9002", "--join", "127.0.0.4:9002",
		"--trust-domain", "hub.example", "--dead-server-grace", "5s", "--gossip-profile", "local",
		"--log-level", "debug")
	if r.code != 0 {
		t.Fatalf("exit %d", r.code)
	}
	want := hub.DefaultConfig()
	want.Name, want.DataDir, want.BindAddr = "h1", dir, "127.0.0.2"
	want.GRPCPort, want.RaftPort, want.GossipPort, want.HTTPPort = 9000, 9001, 9002, 9003
	want.BootstrapExpect = 3
	want.Join = []string{"127.0.0.3:9002", "127.0.0.4:9002"}
	want.EncryptKey = key // from the environment, the flag being empty
	want.TrustDomain = "hub.example"
	want.DeadServerGrace = 5 * time.Second
	want.GossipProfile = "local"
	if !reflect.DeepEqual(got, want) {
		t.Errorf("config\n got %+v\nwant %+v", got, want)
	}
}

func TestHubEncryptKeyFlagOverridesEnvironment(t *testing.T) {
	flagKey := strings.Repeat("B", 43) + "="
	var got string
	d := newTestDeps(t, map[string]string{envEncryptKey: strings.Repeat("A", 43) + "="})
	d.runHub = func(_ context.Context, cfg hub.Config, _ *slog.Logger) error {
		got = cfg.EncryptKey
		return nil
	}
	r := run(t, d, "hub", "--name", "h1", "--data-dir", t.TempDir(), "--bootstrap-expect", "1", "--encrypt-key", flagKey)
	if r.code != 0 || got != flagKey {
		t.Errorf("exit %d, key %q; want 0, %q", r.code, got, flagKey)
	}
}

func TestHubKeygen(t *testing.T) {
	r := run(t, newTestDeps(t, nil), "hub", "keygen")
	if r.code != 0 || r.stdout != "a2V5\n" {
		t.Errorf("exit %d, stdout %q", r.code, r.stdout)
	}
}

func TestGRPCErrorIsPrintedWithCode(t *testing.T) {
	a := &fakeAdmin{err: status.Error(codes.NotFound, `cluster "east" not found`)}
	d := withAdmin(t, newTestDeps(t, nil), a, nil)
	r := run(t, d, "clusters", "describe", "east", "--config", "x")
	if r.code != exitError {
		t.Errorf("exit %d, want %d", r.code, exitError)
	}
	if want := "error: NotFound: cluster \"east\" not found\n"; r.stderr != want {
		t.Errorf("stderr %q, want %q", r.stderr, want)
	}
}

func TestConfigPath(t *testing.T) {
	home, err := os.UserHomeDir()
	if err != nil {
		t.Fatalf("no home directory: %v", err)
	}
	for _, tc := range []struct {
		name string
		env  map[string]string
		args []string
		want string
	}{
		{"flag", map[string]string{envConfig: "/env"}, []string{"--config", "/flag"}, "/flag"},
		{"env", map[string]string{envConfig: "/env"}, nil, "/env"},
		{"home", nil, nil, filepath.Join(home, ".meshfed", "config")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got string
			a := &fakeAdmin{status: &fedv1.StatusResponse{}}
			d := withAdmin(t, newTestDeps(t, tc.env), a, &got)
			if r := run(t, d, append([]string{"hub", "status"}, tc.args...)...); r.code != 0 {
				t.Fatalf("exit %d", r.code)
			}
			if got != tc.want {
				t.Errorf("config path %q, want %q", got, tc.want)
			}
		})
	}
}

func TestTokenCreate(t *testing.T) {
	a := &fakeAdmin{created: &fedv1.CreateTokenResponse{
		Token: "mfjoin1.secret",
		Info:  &fedv1.TokenInfo{Id: "t1", Cluster: "west", ExpiresAtMs: 1_700_000_000_000},
	}}
	d := withAdmin(t, newTestDeps(t, nil), a, nil)
	r := run(t, d, "token", "create", "--cluster", "west", "--ttl", "1h", "--config", "c")
	if r.code != 0 {
		t.Fatalf("exit %d", r.code)
	}
	if want := (&fedv1.CreateTokenRequest{Cluster: "west", TtlSeconds: 3600}); !proto.Equal(a.gotCreate, want) {
		t.Errorf("request %v, want %v", a.gotCreate, want)
	}
	if first, _, _ := strings.Cut(r.stdout, "\n"); first != "mfjoin1.secret" {
		t.Errorf("first line %q, want the token alone", first)
	}

	r = run(t, d, "token", "create", "--cluster", "west", "--config", "c", "-o", "json")
	if r.code != 0 {
		t.Fatalf("exit %d", r.code)
	}
	if a.gotCreate.GetTtlSeconds() != int64(hub.DefaultConfig().TokenTTL/time.Second) {
		t.Errorf("default ttl_seconds %d", a.gotCreate.GetTtlSeconds())
	}
	var got struct {
		Token string `json:"token"`
		Info  struct {
			ID string `json:"id"`
		} `json:"info"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil || got.Token != "mfjoin1.secret" || got.Info.ID != "t1" {
		t.Errorf("json %q: %+v, %v", r.stdout, got, err)
	}
}

func writeFile(t *testing.T, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
}
