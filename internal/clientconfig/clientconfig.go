// Package clientconfig reads and writes meshfed client config files, such as
// the admin.yaml a hub writes at bootstrap (in the spirit of kubeadm's
// admin.conf), and dials the hub with them.
package clientconfig

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"
	"sigs.k8s.io/yaml"

	"github.com/meshfed/meshfed/internal/pki"
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
	if _, err := pki.ParseCertsPEM([]byte(c.CA)); err != nil {
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

// TLS returns the client TLS config: the hub CA as roots and the client
// certificate. The hub server certificate's SPIFFE ID must be in the hub's
// trust domain.
func (c *Config) TLS() (*tls.Config, error) {
	pair, err := tls.X509KeyPair([]byte(c.Cert), []byte(c.Key))
	if err != nil {
		return nil, fmt.Errorf("clientconfig: cert/key: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(c.CA)) {
		return nil, errors.New("clientconfig: ca: no certificate")
	}
	return ClientTLS(pool, &pair, c.TrustDomain), nil
}

// ClientTLS builds a TLS config that verifies a hub server: a chain to roots
// and a SPIFFE ID spiffe://<trustDomain>/server/<name>. Host names are not
// checked; the SPIFFE ID is the identity.
func ClientTLS(roots *x509.CertPool, cert *tls.Certificate, trustDomain string) *tls.Config {
	cfg := &tls.Config{
		MinVersion:         tls.VersionTLS13,
		InsecureSkipVerify: true, // verified below against roots and the SPIFFE ID
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			return VerifyHubServer(raw, roots, trustDomain)
		},
	}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	return cfg
}

// VerifyHubServer checks a presented chain against roots and requires the
// leaf's SPIFFE ID to be a hub server of trustDomain.
func VerifyHubServer(raw [][]byte, roots *x509.CertPool, trustDomain string) error {
	if len(raw) == 0 {
		return errors.New("clientconfig: hub presented no certificate")
	}
	leaf, err := x509.ParseCertificate(raw[0])
	if err != nil {
		return fmt.Errorf("clientconfig: hub certificate: %w", err)
	}
	inter := x509.NewCertPool()
	for _, r := range raw[1:] {
		if c, err := x509.ParseCertificate(r); err == nil {
			inter.AddCert(c)
		}
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		return fmt.Errorf("clientconfig: hub certificate does not chain to the hub CA: %w", err)
	}
	id, err := pki.SPIFFEID(leaf)
	if err != nil {
		return err
	}
	if id.Host != trustDomain || !strings.HasPrefix(id.Path, "/server/") {
		return fmt.Errorf("clientconfig: hub certificate identity %q is not a server of %q", id, trustDomain)
	}
	return nil
}

// readRetryPolicy retries reads on Unavailable, which lets round_robin move
// on to another hub server (e.g. one that is still catching up).
const serviceConfig = `{
  "loadBalancingConfig": [{"round_robin": {}}],
  "methodConfig": [{
    "name": [
      {"service": "meshfed.federation.v1.Admin", "method": "ListTokens"},
      {"service": "meshfed.federation.v1.Admin", "method": "ListClusters"},
      {"service": "meshfed.federation.v1.Admin", "method": "DescribeCluster"},
      {"service": "meshfed.federation.v1.Admin", "method": "ListServices"},
      {"service": "meshfed.federation.v1.Admin", "method": "ListPolicies"},
      {"service": "meshfed.federation.v1.Admin", "method": "Status"}
    ],
    "retryPolicy": {
      "maxAttempts": 5,
      "initialBackoff": "0.1s",
      "maxBackoff": "1s",
      "backoffMultiplier": 2,
      "retryableStatusCodes": ["UNAVAILABLE"]
    }
  }]
}`

// Dial connects to the hub servers listed in addrs with tlsCfg, balancing
// calls across them and retrying reads on Unavailable.
func Dial(addrs []string, tlsCfg *tls.Config, opts ...grpc.DialOption) (*grpc.ClientConn, error) {
	r := manual.NewBuilderWithScheme("meshfed")
	var rs []resolver.Address
	for _, a := range addrs {
		rs = append(rs, resolver.Address{Addr: a})
	}
	r.InitialState(resolver.State{Addresses: rs})
	opts = append([]grpc.DialOption{
		grpc.WithResolvers(r),
		grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg)),
		grpc.WithDefaultServiceConfig(serviceConfig),
	}, opts...)
	return grpc.NewClient(r.Scheme()+":///hub", opts...)
}

// DialConfig dials the hubs of a loaded config.
func (c *Config) Dial(_ context.Context, opts ...grpc.DialOption) (*grpc.ClientConn, error) {
	tlsCfg, err := c.TLS()
	if err != nil {
		return nil, err
	}
	return Dial(c.Hubs, tlsCfg, opts...)
}
