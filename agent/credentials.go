package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/yaml"

	"github.com/meshfed/meshfed/internal/hubtls"
	"github.com/meshfed/meshfed/trust"
	"github.com/meshfed/meshfed/trust/x509pem"
)

// Credentials are what a successful join leaves behind: the agent's hub
// client certificate and everything needed to reach the hub again.
type Credentials struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Cluster    string `json:"cluster"`
	Region     string `json:"region"`
	Zone       string `json:"zone"`
	// TrustDomain is the cluster's own SPIFFE trust domain.
	TrustDomain string `json:"trustDomain"`
	// HubTrustDomain is the hub's trust domain; hub servers present
	// spiffe://<hubTrustDomain>/server/<name>.
	HubTrustDomain string   `json:"hubTrustDomain"`
	HubAddresses   []string `json:"hubAddresses"`
	// HubCA, Cert and Key are PEM.
	HubCA string `json:"hubCA"`
	Cert  string `json:"cert"`
	Key   string `json:"key"`
	// JoinedAt is when the join succeeded (RFC 3339).
	JoinedAt string `json:"joinedAt"`
	// RenewalKey (PEM) is the key of a renewal of Cert in progress: chosen
	// and stored before the first Renew call, so that retries, even after
	// a restart, ask for the same key. Empty otherwise.
	RenewalKey string `json:"renewalKey,omitempty"`
}

// Credentials file format.
const (
	CredentialsAPIVersion = "meshfed.io/v1"
	CredentialsKind       = "AgentCredentials"
	maxCredentialsSize    = 1 << 20
	maxHubAddresses       = 16
)

// Names of what the agent persists.
const (
	// CredentialsFile (in the data directory, file source) holds the
	// credentials a join stored; its presence means the cluster joined.
	CredentialsFile = "credentials.yaml"
	caFile          = "ca/root.pem"
	hubStateFile    = "hubstate.pb"
	egressFileName  = "egress-ports.json"
	// clusterSetIPsFileName holds the file source's ClusterSetIPs, as
	// slots of Config.ClusterSetIPs.
	clusterSetIPsFileName = "clusterset-ips.json"
	// GatewayBootstrapFile (in the data directory) and
	// GatewayBootstrapSecret (key "data", in the agent's namespace) hold
	// the gateways' bootstrap document (see gatewayclient.Bootstrap).
	GatewayBootstrapFile   = "gateway-bootstrap.json"
	GatewayBootstrapSecret = "meshfed-gateway-bootstrap"
	credentialsSecret      = "meshfed-agent-credentials"
	caSecret               = "meshfed-cluster-ca"
	secretDataKey          = "data"
)

// ErrNotJoined is returned by Run when there are no stored credentials.
var ErrNotJoined = errors.New("agent: not joined: no stored credentials (run meshfed join first)")

func (c *Credentials) validate() error {
	var errs []error
	if c.APIVersion != CredentialsAPIVersion || c.Kind != CredentialsKind {
		errs = append(errs, fmt.Errorf("apiVersion/kind: %q/%q, want %q/%q", c.APIVersion, c.Kind, CredentialsAPIVersion, CredentialsKind))
	}
	if len(c.HubAddresses) == 0 || len(c.HubAddresses) > maxHubAddresses {
		errs = append(errs, fmt.Errorf("hubAddresses: %d, want 1 to %d", len(c.HubAddresses), maxHubAddresses))
	}
	if _, err := x509pem.DecodeCerts([]byte(c.HubCA)); err != nil {
		errs = append(errs, fmt.Errorf("hubCA: %w", err))
	}
	if _, err := tls.X509KeyPair([]byte(c.Cert), []byte(c.Key)); err != nil {
		errs = append(errs, fmt.Errorf("cert/key: %w", err))
	}
	if c.HubTrustDomain == "" {
		errs = append(errs, errors.New("hubTrustDomain: required"))
	}
	if c.RenewalKey != "" {
		if _, err := x509pem.DecodeKey([]byte(c.RenewalKey)); err != nil {
			errs = append(errs, fmt.Errorf("renewalKey: %w", err))
		}
	}
	return errors.Join(errs...)
}

// leaf returns the parsed client certificate.
func (c *Credentials) leaf() (*x509.Certificate, error) {
	certs, err := x509pem.DecodeCerts([]byte(c.Cert))
	if err != nil {
		return nil, fmt.Errorf("agent: credentials cert: %w", err)
	}
	return certs[0], nil
}

// hubTLS is the TLS config of the agent's Sync connection.
func (c *Credentials) hubTLS() (*tls.Config, error) {
	pair, err := tls.X509KeyPair([]byte(c.Cert), []byte(c.Key))
	if err != nil {
		return nil, fmt.Errorf("agent: credentials cert/key: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(c.HubCA)) {
		return nil, errors.New("agent: credentials hubCA: no certificate")
	}
	return hubtls.ClientConfig(pool, &pair, c.HubTrustDomain), nil
}

func encodeCredentials(c *Credentials) ([]byte, error) {
	return yaml.Marshal(c)
}

func decodeCredentials(b []byte) (*Credentials, error) {
	if len(b) > maxCredentialsSize {
		return nil, fmt.Errorf("agent: credentials: %d bytes, at most %d", len(b), maxCredentialsSize)
	}
	var c Credentials
	if err := yaml.UnmarshalStrict(b, &c); err != nil {
		return nil, fmt.Errorf("agent: credentials: %w", err)
	}
	if err := c.validate(); err != nil {
		return nil, fmt.Errorf("agent: credentials: %w", err)
	}
	return &c, nil
}

// stores are where the agent persists its credentials and its CA root:
// files in the data directory (file source) or Secrets (kubernetes source).
// Both are trust.Store: bytes in, bytes out, ErrNotFound when absent.
type stores struct {
	creds  trust.Store
	ca     trust.Store
	gwBoot trust.Store
}

func fileStores(dataDir string) stores {
	return stores{
		creds:  trust.NewFileStore(filepath.Join(dataDir, CredentialsFile)),
		ca:     trust.NewFileStore(filepath.Join(dataDir, caFile)),
		gwBoot: trust.NewFileStore(filepath.Join(dataDir, GatewayBootstrapFile)),
	}
}

func secretStores(client kubernetes.Interface, namespace string) stores {
	return stores{
		creds:  &secretStore{client: client, namespace: namespace, name: credentialsSecret},
		ca:     &secretStore{client: client, namespace: namespace, name: caSecret},
		gwBoot: &secretStore{client: client, namespace: namespace, name: GatewayBootstrapSecret},
	}
}

// secretStore is a trust.Store in one Kubernetes Secret (key "data"). The
// namespace is created on the first Save if it does not exist.
type secretStore struct {
	client    kubernetes.Interface
	namespace string
	name      string
}

var _ trust.Store = (*secretStore)(nil)

const secretTimeout = 15 * time.Second

func (s *secretStore) Load() ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), secretTimeout)
	defer cancel()
	sec, err := s.client.CoreV1().Secrets(s.namespace).Get(ctx, s.name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("agent: secret %s/%s: %w", s.namespace, s.name, trust.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("agent: secret %s/%s: %w", s.namespace, s.name, err)
	}
	b, ok := sec.Data[secretDataKey]
	if !ok {
		return nil, fmt.Errorf("agent: secret %s/%s has no key %q", s.namespace, s.name, secretDataKey)
	}
	return b, nil
}

func (s *secretStore) Save(data []byte) error {
	ctx, cancel := context.WithTimeout(context.Background(), secretTimeout)
	defer cancel()
	secrets := s.client.CoreV1().Secrets(s.namespace)
	cur, err := secrets.Get(ctx, s.name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: s.namespace}}
		if _, err := s.client.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("agent: namespace %s: %w", s.namespace, err)
		}
		sec := &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: s.name, Namespace: s.namespace, Labels: map[string]string{LabelManagedBy: ManagedByValue}},
			Type:       corev1.SecretTypeOpaque,
			Data:       map[string][]byte{secretDataKey: data},
		}
		if _, err := secrets.Create(ctx, sec, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("agent: secret %s/%s: %w", s.namespace, s.name, err)
		}
		return nil
	case err != nil:
		return fmt.Errorf("agent: secret %s/%s: %w", s.namespace, s.name, err)
	}
	cur = cur.DeepCopy()
	if cur.Data == nil {
		cur.Data = map[string][]byte{}
	}
	cur.Data[secretDataKey] = data
	if _, err := secrets.Update(ctx, cur, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("agent: secret %s/%s: %w", s.namespace, s.name, err)
	}
	return nil
}

// memStore is a trust.Store in memory. Join generates the CA root into one
// and copies it to the real store only once the hub accepted the join, so a
// failed join leaves nothing behind.
type memStore struct {
	mu   sync.Mutex
	data []byte
}

var _ trust.Store = (*memStore)(nil)

func (s *memStore) Load() ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.data == nil {
		return nil, trust.ErrNotFound
	}
	return append([]byte(nil), s.data...), nil
}

func (s *memStore) Save(data []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.data = append([]byte(nil), data...)
	return nil
}
