package gatewayclient

import (
	"bytes"
	"encoding/json"
	"fmt"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshfed/meshfed/federation"
	"github.com/meshfed/meshfed/trust"
)

// MaxBootstrapBytes bounds a bootstrap document.
const MaxBootstrapBytes = 1 << 20

// Bootstrap is what a gateway needs to reach its cluster's agent the first
// time: the cluster's trust domain and bundle (to verify the agent) and
// the bootstrap token (to get its first SVID). The agent writes it to
// gateway-bootstrap.json in its data directory, or to the Secret
// meshfed-gateway-bootstrap (key "data") in-cluster, and
// rewrites it when the cluster's bundle changes.
type Bootstrap struct {
	Cluster     string `json:"cluster"`
	TrustDomain string `json:"trustDomain"`
	Token       string `json:"token"`
	// Bundle is the cluster's bundle in the SPIFFE trust bundle format.
	Bundle json.RawMessage `json:"bundle"`
}

// minTokenLength is the shortest bootstrap token accepted.
const minTokenLength = 32

// ParseBootstrap strictly decodes and checks a bootstrap document.
func ParseBootstrap(data []byte) (*Bootstrap, *spiffebundle.Bundle, error) {
	if len(data) > MaxBootstrapBytes {
		return nil, nil, &federation.FieldError{Field: "bootstrap", Value: fmt.Sprint(len(data)), Reason: fmt.Sprintf("at most %d bytes", MaxBootstrapBytes)}
	}
	var b Bootstrap
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&b); err != nil {
		return nil, nil, fmt.Errorf("gatewayclient: bootstrap: %w", err)
	}
	if _, err := federation.ParseClusterName(b.Cluster); err != nil {
		return nil, nil, fmt.Errorf("gatewayclient: bootstrap: %w", err)
	}
	td, err := spiffeid.TrustDomainFromString(b.TrustDomain)
	if err != nil {
		return nil, nil, &federation.FieldError{Field: "trustDomain", Value: b.TrustDomain, Reason: err.Error()}
	}
	if len(b.Token) < minTokenLength || len(b.Token) > 256 {
		return nil, nil, &federation.FieldError{Field: "token", Value: "(redacted)", Reason: fmt.Sprintf("must be %d to 256 characters", minTokenLength)}
	}
	bundle, err := spiffebundle.Parse(td, b.Bundle)
	if err != nil {
		return nil, nil, &federation.FieldError{Field: "bundle", Value: "", Reason: err.Error()}
	}
	if err := trust.CheckBundle(bundle); err != nil {
		return nil, nil, &federation.FieldError{Field: "bundle", Value: "", Reason: err.Error()}
	}
	return &b, bundle, nil
}

// EncodeBootstrap builds the document for a cluster.
func EncodeBootstrap(cluster, token string, bundle *spiffebundle.Bundle) ([]byte, error) {
	raw, err := bundle.Marshal()
	if err != nil {
		return nil, fmt.Errorf("gatewayclient: bundle: %w", err)
	}
	return json.MarshalIndent(Bootstrap{Cluster: cluster, TrustDomain: bundle.TrustDomain().String(), Token: token, Bundle: raw}, "", "  ")
}
