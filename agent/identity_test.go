package agent

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshfed/meshfed/federation"
	"github.com/meshfed/meshfed/trust"
)

// storeFileCredentials stores credentials of cluster east in dir as a
// file-source join would.
func storeFileCredentials(t *testing.T, dir string) *Credentials {
	t.Helper()
	creds := newFakeHub(t, time.Hour).join()
	creds.Region, creds.Zone = "us-east", "us-east-1a"
	b, err := encodeCredentials(creds)
	if err != nil {
		t.Fatal(err)
	}
	if err := trust.NewFileStore(filepath.Join(dir, CredentialsFile)).Save(b); err != nil {
		t.Fatal(err)
	}
	return creds
}

// A restart needs only the data directory: the cluster comes from the
// stored credentials; a flag that names another cluster or trust domain is
// an error naming both values.
func TestRestartTakesTheIdentityFromTheStoredCredentials(t *testing.T) {
	dir := t.TempDir()
	cfg := DefaultConfig()
	cfg.DataDir = dir
	cfg.Source = SourceFile
	cfg.SourcePath = filepath.Join(dir, "catalog.yaml")

	if _, err := WithStoredIdentity(cfg); !errors.Is(err, ErrNotJoined) {
		t.Fatalf("without credentials: %v, want ErrNotJoined", err)
	}
	storeFileCredentials(t, dir)

	got, err := WithStoredIdentity(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if got.Cluster.String() != "east" || !got.Locality.IsZero() {
		t.Fatalf("cluster %q locality %v, want east and no locality (the hub keeps its record)", got.Cluster, got.Locality)
	}
	if err := got.Validate(); err != nil {
		t.Fatalf("the restored config is invalid: %v", err)
	}

	same := cfg
	same.Cluster = federation.MustClusterName("east")
	if _, err := WithStoredIdentity(same); err != nil {
		t.Fatalf("--cluster east with east's credentials: %v", err)
	}

	other := cfg
	other.Cluster = federation.MustClusterName("west")
	_, err = WithStoredIdentity(other)
	var mm *IdentityMismatchError
	if !errors.Is(err, ErrIdentityMismatch) || !errors.As(err, &mm) || mm.Field != "cluster" || mm.Flag != "west" || mm.Stored != "east" {
		t.Fatalf("--cluster west with east's credentials: %v, want an IdentityMismatchError naming cluster, west and east", err)
	}
	if !strings.Contains(err.Error(), `"west"`) || !strings.Contains(err.Error(), `"east"`) {
		t.Errorf("message %q does not name both values", err)
	}

	td := cfg
	var perr error
	if td.TrustDomain, perr = federation.ParseTrustDomain("elsewhere.example"); perr != nil {
		t.Fatal(perr)
	}
	if _, err := WithStoredIdentity(td); !errors.As(err, &mm) || mm.Field != "trust-domain" || mm.Stored != "east.meshfed.local" {
		t.Fatalf("--trust-domain elsewhere.example: %v, want an IdentityMismatchError on trust-domain", err)
	}
}
