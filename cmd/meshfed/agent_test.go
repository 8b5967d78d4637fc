package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshfed/meshfed/agent"
	"github.com/meshfed/meshfed/federation"
	"github.com/meshfed/meshfed/internal/pki"
	"github.com/meshfed/meshfed/trust/x509pem"
)

// joinedDataDir returns a file-source data directory holding the
// credentials of cluster east, as a join leaves them, but no CA root: an
// agent started from it gets past its identity and stops at the missing
// root, before it dials anything.
func joinedDataDir(t *testing.T) string {
	t.Helper()
	ca, err := pki.NewCA("hub.meshfed", time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	key, err := pki.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	serial, err := pki.NewSerial()
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.Sign(key.Public(), pki.LeafOptions{SPIFFEID: "spiffe://hub.meshfed/cluster/east", Client: true, Serial: serial,
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := x509pem.EncodeKey(key)
	if err != nil {
		t.Fatal(err)
	}
	creds := strings.Join([]string{
		"apiVersion: " + agent.CredentialsAPIVersion,
		"kind: " + agent.CredentialsKind,
		"cluster: east", "region: us-east", "zone: us-east-1a",
		"trustDomain: east.meshfed.local", "hubTrustDomain: hub.meshfed",
		"hubAddresses: [127.0.0.1:1]",
		"hubCA: " + quote(x509pem.EncodeCerts(ca.Cert)),
		"cert: " + quote(x509pem.EncodeCerts(cert)),
		"key: " + quote(keyPEM),
		"joinedAt: 2026-01-01T00:00:00Z",
	}, "\n") + "\n"
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, agent.CredentialsFile), []byte(creds), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "catalog.yaml"), []byte("services: []\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

// quote is b as a double-quoted YAML string.
func quote(b []byte) string {
	return `"` + strings.ReplaceAll(string(b), "\n", `\n`) + `"`
}

// `meshfed agent` restarts from the data directory alone; a flag naming
// another cluster or trust domain is a usage error naming both values.
func TestAgentRestartsFromTheDataDirAlone(t *testing.T) {
	d := newTestDeps(t, nil)
	dir := joinedDataDir(t)
	base := []string{"agent", "--data-dir", dir, "--source", "file:" + filepath.Join(dir, "catalog.yaml"), "--http-port", "-1", "--gateway-api", ""}

	r := run(t, d, base...)
	if r.code != exitError || !strings.Contains(r.stderr, "CA root is missing") {
		t.Fatalf("agent without --cluster/--region/--zone: exit %d, stderr %q; want it past its identity, stopped at the missing CA root", r.code, r.stderr)
	}
	r = run(t, d, append(base, "--cluster", "east", "--region", "us-west", "--zone", "us-west-1a")...)
	if r.code != exitError || !strings.Contains(r.stderr, "CA root is missing") {
		t.Fatalf("agent --cluster east with a new locality: exit %d, stderr %q; want it to start (the locality goes to the hub)", r.code, r.stderr)
	}
	r = run(t, d, append(base, "--cluster", "west")...)
	if r.code != exitUsage || !strings.Contains(r.stderr, `--cluster is "west"`) || !strings.Contains(r.stderr, `"east"`) {
		t.Fatalf("agent --cluster west: exit %d, stderr %q; want a usage error naming west and east", r.code, r.stderr)
	}
	r = run(t, d, append(base, "--trust-domain", "other.example")...)
	if r.code != exitUsage || !strings.Contains(r.stderr, `"other.example"`) || !strings.Contains(r.stderr, `"east.meshfed.local"`) {
		t.Fatalf("agent --trust-domain other.example: exit %d, stderr %q; want a usage error naming both trust domains", r.code, r.stderr)
	}
}

// A join-mode pod restarted after its join starts from the stored
// credentials instead of exiting (and crash-looping) on them.
func TestJoinAfterASuccessfulJoinStartsFromTheStoredCredentials(t *testing.T) {
	d := newTestDeps(t, nil)
	dir := joinedDataDir(t)
	token := federation.JoinToken{ID: "0123456789abcdef", Secret: make([]byte, federation.JoinTokenSecretSize),
		Cluster: federation.MustClusterName("east"), CAFingerprint: strings.Repeat("ab", 32), Addrs: []string{"127.0.0.1:1"}}.Encode()
	args := []string{"join", token, "--cluster", "east", "--region", "us-east", "--zone", "us-east-1a",
		"--data-dir", dir, "--source", "file:" + filepath.Join(dir, "catalog.yaml"), "--http-port", "-1", "--gateway-api", ""}
	r := run(t, d, args...)
	if !strings.Contains(r.stdout, "already joined as cluster east") {
		t.Fatalf("join with stored credentials: stdout %q, want it to start from them", r.stdout)
	}
	if r.code != exitError || !strings.Contains(r.stderr, "CA root is missing") {
		t.Fatalf("join with stored credentials: exit %d, stderr %q; want the agent run (stopping at the missing CA root)", r.code, r.stderr)
	}
}
