package testenv

import (
	"bufio"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// requireBinaries fails a test that needs kube-apiserver and etcd when they
// are not built, saying how to build them. `make test` builds them first.
func requireBinaries(t testing.TB) {
	t.Helper()
	if _, _, err := Binaries(); err != nil {
		t.Fatal(err)
	}
}

// The versions here name the cache folder; the tools module builds them.
func TestVersionsMatchToolsModule(t *testing.T) {
	f, err := os.Open(filepath.Join("..", "tools", "testenv", "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	req := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if fs := strings.Fields(sc.Text()); len(fs) >= 2 && strings.HasPrefix(fs[1], "v") {
			req[fs[0]] = fs[1]
		}
	}
	if got := req["k8s.io/kubernetes"]; got != KubernetesVersion {
		t.Errorf("tools/testenv/go.mod requires k8s.io/kubernetes %s; KubernetesVersion is %s", got, KubernetesVersion)
	}
	if got := req["go.etcd.io/etcd/server/v3"]; got != EtcdVersion {
		t.Errorf("tools/testenv/go.mod requires go.etcd.io/etcd/server/v3 %s; EtcdVersion is %s", got, EtcdVersion)
	}
}

func TestBinaries(t *testing.T) {
	cache := t.TempDir()
	t.Setenv(EnvCache, cache)
	t.Setenv(EnvKubeAPIServer, "")
	t.Setenv(EnvEtcd, "")
	dir, err := BinDir()
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(cache, "k8s-"+KubernetesVersion+"-etcd-"+EtcdVersion); dir != want {
		t.Fatalf("BinDir %s, want %s", dir, want)
	}
	_, _, err = Binaries()
	if !errors.Is(err, ErrNoBinaries) || !strings.Contains(err.Error(), "make testenv-bins") {
		t.Fatalf("empty cache: %v", err)
	}
	if _, err := New(context.Background(), Options{Clusters: []Cluster{{Name: "a", Region: "r", Zone: "z"}}}); !errors.Is(err, ErrNoBinaries) {
		t.Fatalf("New without binaries: %v", err)
	}

	exe := func(name string) string {
		p := filepath.Join(t.TempDir(), name)
		if err := os.WriteFile(p, []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
		return p
	}
	// In the cache folder.
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"kube-apiserver", "etcd"} {
		if err := os.Rename(exe(n), filepath.Join(dir, n)); err != nil {
			t.Fatal(err)
		}
	}
	a, e, err := Binaries()
	if err != nil || a != filepath.Join(dir, "kube-apiserver") || e != filepath.Join(dir, "etcd") {
		t.Fatalf("cached: %s %s %v", a, e, err)
	}
	// Overrides win.
	oa, oe := exe("my-apiserver"), exe("my-etcd")
	t.Setenv(EnvKubeAPIServer, oa)
	t.Setenv(EnvEtcd, oe)
	if a, e, err := Binaries(); err != nil || a != oa || e != oe {
		t.Fatalf("overrides: %s %s %v", a, e, err)
	}
	// An override that is not executable is an error, not a fallback.
	plain := filepath.Join(t.TempDir(), "plain")
	if err := os.WriteFile(plain, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv(EnvEtcd, plain)
	if _, _, err := Binaries(); !errors.Is(err, ErrNoBinaries) || !strings.Contains(err.Error(), EnvEtcd) {
		t.Fatalf("non-executable override: %v", err)
	}
}

func TestKwokVersionMatchesToolsModule(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "tools", "kwok", "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if fs := strings.Fields(line); len(fs) >= 2 && fs[0] == "sigs.k8s.io/kwok" {
			if fs[1] != KwokVersion {
				t.Fatalf("tools/kwok/go.mod requires sigs.k8s.io/kwok %s; KwokVersion is %s", fs[1], KwokVersion)
			}
			return
		}
	}
	t.Fatal("tools/kwok/go.mod does not require sigs.k8s.io/kwok")
}

func TestFindPodBinaries(t *testing.T) {
	cache := t.TempDir()
	t.Setenv(EnvCache, cache)
	for _, env := range []string{EnvKubeControllerManager, EnvKubeScheduler, EnvKwok} {
		t.Setenv(env, "")
	}
	if _, err := FindPodBinaries(); !errors.Is(err, ErrNoBinaries) || !strings.Contains(err.Error(), "make testenv-pod-bins") {
		t.Fatalf("empty cache: %v", err)
	}
	dir, err := BinDir()
	if err != nil {
		t.Fatal(err)
	}
	kdir, err := KwokDir()
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(cache, "kwok-"+KwokVersion); kdir != want {
		t.Fatalf("KwokDir %s, want %s", kdir, want)
	}
	for _, d := range []string{dir, kdir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range []string{filepath.Join(dir, "kube-controller-manager"), filepath.Join(dir, "kube-scheduler"), filepath.Join(kdir, "kwok")} {
		if err := os.WriteFile(p, []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// The binaries without kwok's stages are not enough.
	if _, err := FindPodBinaries(); !errors.Is(err, ErrNoBinaries) || !strings.Contains(err.Error(), "kwok.yaml") {
		t.Fatalf("no kwok.yaml: %v", err)
	}
	if err := os.WriteFile(filepath.Join(kdir, "kwok.yaml"), []byte("kind: Stage\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	b, err := FindPodBinaries()
	if err != nil {
		t.Fatal(err)
	}
	if b.ControllerManager != filepath.Join(dir, "kube-controller-manager") || b.Scheduler != filepath.Join(dir, "kube-scheduler") ||
		b.Kwok != filepath.Join(kdir, "kwok") || b.KwokConfig != filepath.Join(kdir, "kwok.yaml") {
		t.Fatalf("cached: %+v", b)
	}
	// An override wins; one that is not executable is an error naming it.
	mine := filepath.Join(t.TempDir(), "my-kwok")
	if err := os.WriteFile(mine, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv(EnvKwok, mine)
	if b, err := FindPodBinaries(); err != nil || b.Kwok != mine {
		t.Fatalf("override: %+v %v", b, err)
	}
	if err := os.Chmod(mine, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := FindPodBinaries(); !errors.Is(err, ErrNoBinaries) || !strings.Contains(err.Error(), EnvKwok) {
		t.Fatalf("non-executable override: %v", err)
	}
}
