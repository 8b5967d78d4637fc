package clientconfig

import (
	"crypto"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/meshfed/meshfed/federation"
	"github.com/meshfed/meshfed/internal/pki"
	"github.com/meshfed/meshfed/trust/x509pem"
)

// validConfig is a client config that Load accepts: a fresh hub CA and an
// admin certificate signed by it.
func validConfig(tb testing.TB) *Config {
	tb.Helper()
	now := time.Now()
	ca, err := pki.NewCA("hub.meshfed", time.Hour, now)
	if err != nil {
		tb.Fatal(err)
	}
	key, err := pki.NewKey()
	if err != nil {
		tb.Fatal(err)
	}
	leaf, err := ca.Sign(key.Public(), pki.LeafOptions{SPIFFEID: "spiffe://hub.meshfed/admin/fuzz", TTL: time.Hour, Now: now, Client: true})
	if err != nil {
		tb.Fatal(err)
	}
	keyPEM, err := x509pem.EncodeKey(crypto.Signer(key))
	if err != nil {
		tb.Fatal(err)
	}
	return &Config{
		APIVersion: APIVersion, Kind: Kind,
		Hubs:        []string{"127.0.0.1:7443", "[::1]:7443", "hub-1.example:7443"},
		TrustDomain: "hub.meshfed",
		CA:          string(x509pem.EncodeCerts(ca.Cert)), Cert: string(x509pem.EncodeCerts(leaf)), Key: string(keyPEM),
	}
}

// FuzzLoad feeds the client config loader arbitrary files. It must never
// panic, and a file it accepts must:
//   - pass Validate, and name a trust domain that parses (every dial
//     verifies the hub against it);
//   - give a TLS config (the credentials are usable);
//   - survive Save and Load to an equal Config.
//
// The seeds run in every `go test`; `go test ./internal/clientconfig -run
// '^$' -fuzz FuzzLoad -fuzztime 30s` searches further.
func FuzzLoad(f *testing.F) {
	good := validConfig(f)
	goodYAML, err := yaml.Marshal(good)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(goodYAML)
	for _, mutate := range []func(c *Config){
		func(c *Config) { c.TrustDomain = "" },
		func(c *Config) { c.TrustDomain = "Not A Domain" },
		func(c *Config) { c.Hubs = nil },
		func(c *Config) { c.Hubs = []string{"no-port"} },
		func(c *Config) { c.Key = "" },
		func(c *Config) { c.CA = c.Cert + c.CA },
		func(c *Config) { c.CA = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n" },
		func(c *Config) { c.Kind = "Config" },
	} {
		c := *good
		mutate(&c)
		b, err := yaml.Marshal(&c)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	for _, seed := range []string{
		"",
		"{}",
		"apiVersion: meshfed.io/v1\nkind: ClientConfig\nhubs: [a:1]\nextra: 1\n",
		"hubs: {a: b}\n",
		"- 1\n- 2\n",
	} {
		f.Add([]byte(seed))
	}
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, b []byte) {
		path := filepath.Join(dir, "in.yaml")
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		c, err := Load(path)
		if err != nil {
			if c != nil {
				t.Fatalf("Load returned a config and an error: %v", err)
			}
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("Load accepted a config that Validate refuses: %v", err)
		}
		if _, err := federation.ParseTrustDomain(c.TrustDomain); err != nil {
			t.Fatalf("Load accepted trustDomain %q: %v", c.TrustDomain, err)
		}
		if _, err := c.TLS(); err != nil {
			t.Fatalf("Load accepted credentials that TLS refuses: %v", err)
		}
		out := filepath.Join(dir, "out.yaml")
		if err := c.Save(out); err != nil {
			t.Fatalf("Save: %v", err)
		}
		back, err := Load(out)
		if err != nil {
			t.Fatalf("Load of the saved config: %v", err)
		}
		if !reflect.DeepEqual(c, back) {
			t.Fatalf("Save and Load changed the config:\n%+v\nthen\n%+v", c, back)
		}
	})
}
