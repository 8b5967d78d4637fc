package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	fedv1 "github.com/meshfed/meshfed/federation/v1"
	"github.com/meshfed/meshfed/testenv"
)

const reviewsCatalog = `services:
- namespace: default
  name: reviews
  export: true
  ports: [{name: http, port: 8080, protocol: HTTP}]
  endpoints:
  - {address: 127.0.0.1:9001, zone: us-east-1a, labels: {version: v1}, ready: true}
  - {address: 127.0.0.1:9002, zone: us-east-1a, labels: {version: v1}, ready: false}
`

func TestFileAgentsJoinExportImport(t *testing.T) {
	fed := testenv.Start(t, testenv.Options{HubServers: 1})
	admin := adminClient(t, fed)
	ctx := context.Background()

	eastCfg := fileConfig(t, "east", "us-east", "us-east-1a", t.TempDir())
	writeCatalog(t, eastCfg.SourcePath, reviewsCatalog)
	eastToken := createToken(t, admin, "east")
	if err := Join(ctx, eastCfg, eastToken); err != nil {
		t.Fatalf("join east: %v", err)
	}
	for _, f := range []string{CredentialsFile, caFile} {
		fi, err := os.Stat(filepath.Join(eastCfg.DataDir, f))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v, want 0600", f, fi.Mode().Perm())
		}
	}
	east := startAgent(t, eastCfg)

	westCfg := fileConfig(t, "west", "us-west", "us-west-1a", t.TempDir())
	writeCatalog(t, westCfg.SourcePath, "services: []\n")
	if err := Join(ctx, westCfg, createToken(t, admin, "west")); err != nil {
		t.Fatalf("join west: %v", err)
	}
	west := startAgent(t, westCfg)

	st := waitState(t, west.a, 30*time.Second, hasImportFrom("default/reviews", "east"))
	p := findImport(st, "default/reviews")
	if c := p.Clusters[0]; c.Ready != 1 || c.Region != "us-east" {
		t.Errorf("import cluster = %+v, want 1 ready in us-east", c)
	}
	if len(p.Ports) != 1 || p.Ports[0].GetPort() != 8080 || p.Ports[0].GetProtocol() != "HTTP" {
		t.Errorf("import ports = %v", p.Ports)
	}
	waitState(t, east.a, 10*time.Second, func(st State) error {
		if len(st.Exports) != 1 || !st.Exports[0].Published {
			return fmt.Errorf("exports = %+v, want default/reviews published", st.Exports)
		}
		return nil
	})

	t.Run("InvalidFileKeepsLastGood", func(t *testing.T) {
		writeCatalog(t, eastCfg.SourcePath, strings.Replace(reviewsCatalog, "protocol: HTTP", "protocol: QUIC", 1))
		waitState(t, east.a, 10*time.Second, func(st State) error {
			if st.Source == nil || !strings.Contains(st.Source.LastError, "services[0].ports[0].protocol") {
				return fmt.Errorf("source = %+v, want an error naming services[0].ports[0].protocol", st.Source)
			}
			return nil
		})
		if err := hasImportFrom("default/reviews", "east")(west.a.State()); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("TokenReplayFails", func(t *testing.T) {
		dir := t.TempDir()
		cfg := fileConfig(t, "east", "us-east", "us-east-1a", dir)
		err := Join(ctx, cfg, eastToken)
		if !errors.Is(err, ErrJoinRefused) {
			t.Fatalf("replayed join: %v, want ErrJoinRefused", err)
		}
		t.Log(err)
		if ents, _ := os.ReadDir(dir); len(ents) != 0 {
			t.Errorf("a refused join left files: %v", ents)
		}
	})

	t.Run("WrongClusterTokenFails", func(t *testing.T) {
		dir := t.TempDir()
		cfg := fileConfig(t, "north", "us-north", "us-north-1a", dir)
		if err := Join(ctx, cfg, createToken(t, admin, "south")); !errors.Is(err, ErrWrongCluster) {
			t.Fatalf("join: %v, want ErrWrongCluster", err)
		}
		if ents, _ := os.ReadDir(dir); len(ents) != 0 {
			t.Errorf("a refused join left files: %v", ents)
		}
	})

	t.Run("UnexportPropagates", func(t *testing.T) {
		writeCatalog(t, eastCfg.SourcePath, strings.Replace(reviewsCatalog, "export: true", "export: false", 1))
		waitState(t, west.a, 20*time.Second, func(st State) error {
			if p := findImport(st, "default/reviews"); p != nil {
				return fmt.Errorf("import still there: %+v", p)
			}
			return nil
		})
	})

	t.Run("TrustRotateReachesTheHub", func(t *testing.T) {
		// `meshfed trust rotate --cluster east`: the agent starts a CA
		// rotation and publishes the bundle with the new root next to the
		// old one (phase 1: both trusted before anything is signed).
		if _, err := admin.RotateCA(ctx, &fedv1.RotateCARequest{Cluster: "east"}); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(20 * time.Second)
		for {
			resp, err := admin.ListBundles(ctx, &fedv1.ListBundlesRequest{})
			if err != nil {
				t.Fatal(err)
			}
			n := 0
			for _, b := range resp.GetBundles() {
				if b.GetCluster() == "east" {
					n = len(b.GetBundle().GetX509Authorities())
				}
			}
			if n == 2 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("east's bundle at the hub has %d authorities, want 2 (old and new root)", n)
			}
			<-time.After(50 * time.Millisecond) // polling the hub, not synchronising
		}
	})
}
