package hub

import (
	"crypto/ed25519"
	"crypto/hkdf"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"errors"
	"fmt"
	"math/big"
	"net"
	"time"

	"crypto/rand"

	"github.com/hashicorp/raft"
)

// GenerateEncryptKey returns a new base64 shared server key.
func GenerateEncryptKey() (string, error) {
	k := make([]byte, EncryptKeySize)
	if _, err := rand.Read(k); err != nil {
		return "", fmt.Errorf("hub: keygen: %w", err)
	}
	return base64.StdEncoding.EncodeToString(k), nil
}

// peerKeys are derived from the shared encrypt key: an Ed25519 identity for
// the Raft TLS link and a separate AES key for memberlist.
type peerKeys struct {
	raftTLS   *tls.Config
	gossipKey []byte
}

func derivePeerKeys(encryptKey []byte) (*peerKeys, error) {
	seed, err := hkdf.Key(sha256.New, encryptKey, nil, "meshfed hub raft ed25519", ed25519.SeedSize)
	if err != nil {
		return nil, err
	}
	gossip, err := hkdf.Key(sha256.New, encryptKey, nil, "meshfed hub gossip aes", 32)
	if err != nil {
		return nil, err
	}
	priv := ed25519.NewKeyFromSeed(seed)
	pub := priv.Public().(ed25519.PublicKey)
	// Every server derives the same certificate; possession of the key is
	// what authenticates a peer. Ed25519 signatures are deterministic.
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "meshfed hub peer"},
		NotBefore:    time.Unix(0, 0),
		NotAfter:     time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(nil, tmpl, tmpl, pub, priv)
	if err != nil {
		return nil, fmt.Errorf("hub: derive peer certificate: %w", err)
	}
	verify := func(raw [][]byte, _ [][]*x509.Certificate) error {
		if len(raw) != 1 {
			return errors.New("hub: peer must present exactly one certificate")
		}
		c, err := x509.ParseCertificate(raw[0])
		if err != nil {
			return fmt.Errorf("hub: peer certificate: %w", err)
		}
		k, ok := c.PublicKey.(ed25519.PublicKey)
		// The TLS handshake proved the peer holds the private key of this
		// public key; only servers given the encrypt key can derive it.
		if !ok || subtle.ConstantTimeCompare(k, pub) != 1 {
			return errors.New("hub: peer does not hold the shared encrypt key")
		}
		return nil
	}
	cfg := &tls.Config{
		MinVersion:            tls.VersionTLS13,
		Certificates:          []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: priv}},
		ClientAuth:            tls.RequireAnyClientCert,
		InsecureSkipVerify:    true, // verified by VerifyPeerCertificate: same derived key
		VerifyPeerCertificate: verify,
		ServerName:            "meshfed-hub-peer",
	}
	return &peerKeys{raftTLS: cfg, gossipKey: gossip}, nil
}

// streamLayer is the Raft transport's listener and dialer: plain TCP, or TLS
// authenticated by the shared key.
type streamLayer struct {
	net.Listener
	advertise net.Addr
	tls       *tls.Config
}

var _ raft.StreamLayer = (*streamLayer)(nil)

func newStreamLayer(addr, advertiseIP string, tlsCfg *tls.Config) (*streamLayer, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("hub: raft listen: %w", err)
	}
	adv := &net.TCPAddr{IP: net.ParseIP(advertiseIP), Port: ln.Addr().(*net.TCPAddr).Port}
	if tlsCfg != nil {
		ln = tls.NewListener(ln, tlsCfg)
	}
	return &streamLayer{Listener: ln, advertise: adv, tls: tlsCfg}, nil
}

// Addr is the advertised address; Raft puts it in its configuration.
func (s *streamLayer) Addr() net.Addr { return s.advertise }

func (s *streamLayer) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	d := &net.Dialer{Timeout: timeout}
	if s.tls == nil {
		return d.Dial("tcp", string(addr))
	}
	conn, err := tls.DialWithDialer(d, "tcp", string(addr), s.tls)
	if err != nil {
		return nil, err
	}
	return conn, nil
}
