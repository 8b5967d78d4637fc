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
