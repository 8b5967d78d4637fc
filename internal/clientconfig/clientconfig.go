// Package clientconfig is the meshfed client config file format, such as
// the admin.yaml a hub writes at bootstrap (in the spirit of kubeadm's
// admin.conf): strict load, validation naming the field, atomic save, and
// the file's credentials as a TLS config. Verifying a hub server is
// internal/hubtls's job and dialing the hub internal/hubdial's.
package clientconfig

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"

	"sigs.k8s.io/yaml"

	"github.com/meshfed/meshfed/federation"
	"github.com/meshfed/meshfed/internal/hubtls"
	"github.com/meshfed/meshfed/trust/x509pem"
)

// APIVersion and Kind identify the file format.
const (
	APIVersion = "meshfed.io/v1"
	Kind       = "ClientConfig"
)

// Config is a client config file.
type Config struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	// Hubs are hub server gRPC addresses (host:port).
	Hubs []string `json:"hubs"`
	// TrustDomain is the hub's SPIFFE trust domain.
	TrustDomain string `json:"trustDomain"`
	// CA, Cert and Key are PEM.
	CA   string `json:"ca"`
	Cert string `json:"cert"`
	Key  string `json:"key"`
}

// MaxFileSize bounds a config file.
const MaxFileSize = 1 << 20

// Validate checks the config, naming the field.
func (c *Config) Validate() error {
	var errs []error
	if c.APIVersion != APIVersion {
		errs = append(errs, fmt.Errorf("apiVersion: %q, want %q", c.APIVersion, APIVersion))
	}
	if c.Kind != Kind {
		errs = append(errs, fmt.Errorf("kind: %q, want %q", c.Kind, Kind))
	}
	if len(c.Hubs) == 0 || len(c.Hubs) > 16 {
		errs = append(errs, fmt.Errorf("hubs: %d addresses, want 1 to 16", len(c.Hubs)))
	}
	for i, h := range c.Hubs {
		if _, _, err := net.SplitHostPort(h); err != nil {
			errs = append(errs, fmt.Errorf("hubs[%d]: %q must be host:port", i, h))
		}
	}
	if _, err := federation.ParseTrustDomain(c.TrustDomain); err != nil {
		// Every dial verifies the hub's SPIFFE ID against it: a file
		// without a valid one could never connect.
		errs = append(errs, fmt.Errorf("trustDomain: %w", err))
	}
	if _, err := x509pem.DecodeCerts([]byte(c.CA)); err != nil {
		errs = append(errs, fmt.Errorf("ca: %w", err))
	}
	if _, err := tls.X509KeyPair([]byte(c.Cert), []byte(c.Key)); err != nil {
		errs = append(errs, fmt.Errorf("cert/key: %w", err))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("clientconfig: %w", err)
	}
	return nil
}

// Load reads and strictly decodes a config file (unknown keys are rejected).
func Load(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("clientconfig: %w", err)
	}
	if len(b) > MaxFileSize {
		return nil, fmt.Errorf("clientconfig: %s is %d bytes, at most %d", path, len(b), MaxFileSize)
	}
	var c Config
	if err := yaml.UnmarshalStrict(b, &c); err != nil {
		return nil, fmt.Errorf("clientconfig: %s: %w", path, err)
	}
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &c, nil
}

// Save writes the config with mode 0600, atomically.
func (c *Config) Save(path string) error {
	b, err := yaml.Marshal(c)
	if err != nil {
		return fmt.Errorf("clientconfig: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("clientconfig: %w", err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("clientconfig: %w", err)
	}
	return os.Rename(tmp, path)
}

// TLS returns the client TLS config of the file's credentials: the hub CA
// as roots and the client certificate; the server must be a hub server of
// the file's trust domain (hubtls.ClientConfig). Dial the file's Hubs with
// it through hubdial.Dial.
func (c *Config) TLS() (*tls.Config, error) {
	pair, err := tls.X509KeyPair([]byte(c.Cert), []byte(c.Key))
	if err != nil {
		return nil, fmt.Errorf("clientconfig: cert/key: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(c.CA)) {
		return nil, errors.New("clientconfig: ca: no certificate")
	}
	return hubtls.ClientConfig(pool, &pair, c.TrustDomain), nil
}
