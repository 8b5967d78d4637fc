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
	for _, f := range []string{credentialsFile, caFile} {
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
		writeCatalog(t, eastCfg.SourcePath, strings.Replace(reviewsCatalog, "protocol: HTTP", "protocol: SCTP", 1))
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
}
