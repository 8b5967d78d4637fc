package hub

import (
	"crypto/x509"
	"errors"
	"fmt"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/meshfed/meshfed/federation"
	fedv1 "github.com/meshfed/meshfed/federation/v1"
)

// Limits on every input the hub accepts. Errors name the field path and bound.
const (
	MaxMessageSize        = 4 << 20
	MaxPortsPerService    = fedv1.MaxPortsPerService
	MaxEndpointGroups     = fedv1.MaxEndpointGroups
	MaxLabels             = fedv1.MaxLabels
	MaxLabelKeyLength     = fedv1.MaxLabelKeyLength
	MaxLabelValueLength   = fedv1.MaxLabelValueLength
	MaxExportsPerPublish  = 1024
	MaxBundleAuthorities  = 16
	MaxCSRSize            = 8 << 10
	MaxCapabilityFeatures = 64
	MaxFeatureNameLength  = 64
	MaxCount              = fedv1.MaxCount
)

func invalidArg(field, format string, args ...any) error {
	return status.Errorf(codes.InvalidArgument, "%s: %s", field, fmt.Sprintf(format, args...))
}

// fieldErr turns a federation parse error into InvalidArgument under prefix.
func fieldErr(prefix string, err error) error {
	var fe *federation.FieldError
	if errors.As(err, &fe) {
		if prefix != "" {
			fe = fe.WithPrefix(prefix)
		}
		return status.Error(codes.InvalidArgument, fe.Error())
	}
	return status.Errorf(codes.InvalidArgument, "%s: %v", prefix, err)
}

func validateLocality(field string, l *fedv1.Locality) (federation.Locality, error) {
	loc, err := federation.NewLocality(l.GetRegion(), l.GetZone(), l.GetSubzone())
	if err != nil {
		return federation.Locality{}, fieldErr(strings.TrimSuffix(field, ".locality"), err)
	}
	return loc, nil
}

// validateExport is the contract's one export validation
// (fedv1.ValidateExportedService, which the agent runs too), as gRPC
// InvalidArgument with the field path.
func validateExport(field string, svc *fedv1.ExportedService) error {
	if err := fedv1.ValidateExportedService(field, svc); err != nil {
		return fieldErr("", err)
	}
	return nil
}

// validateBundle checks a trust bundle and returns its trust domain.
func validateBundle(field string, b *fedv1.TrustBundle) (federation.TrustDomain, error) {
	td, err := federation.ParseTrustDomain(b.GetTrustDomain())
	if err != nil {
		return td, fieldErr(field, err)
	}
	n := len(b.GetX509Authorities())
	if n == 0 || n > MaxBundleAuthorities {
		return td, invalidArg(field+".x509_authorities", "%d authorities, want 1 to %d", n, MaxBundleAuthorities)
	}
	for i, der := range b.GetX509Authorities() {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return td, invalidArg(fmt.Sprintf("%s.x509_authorities[%d]", field, i), "not a DER certificate: %v", err)
		}
		if !c.IsCA {
			return td, invalidArg(fmt.Sprintf("%s.x509_authorities[%d]", field, i), "not a CA certificate")
		}
	}
	if b.GetRefreshHintSeconds() < 0 || b.GetRefreshHintSeconds() > 7*24*3600 {
		return td, invalidArg(field+".refresh_hint_seconds", "%d must be in 0..604800", b.GetRefreshHintSeconds())
	}
	return td, nil
}

func validateGatewayAddrs(field string, addrs []string) error {
	if err := federation.CheckGatewayAddresses(addrs); err != nil {
		return fieldErr(strings.TrimSuffix(field, ".gateway_addresses"), err)
	}
	return nil
}

func validateCapabilities(field string, c *fedv1.Capabilities) error {
	if err := federation.CheckPeer(c.GetVersion()); err != nil {
		return fieldErr(strings.TrimSuffix(field, ".capabilities"), err)
	}
	if n := len(c.GetFeatures()); n > MaxCapabilityFeatures {
		return invalidArg(field+".features", "%d features, at most %d", n, MaxCapabilityFeatures)
	}
	for i, f := range c.GetFeatures() {
		if len(f) > MaxFeatureNameLength {
			return invalidArg(fmt.Sprintf("%s.features[%d]", field, i), "at most %d characters", MaxFeatureNameLength)
		}
	}
	return nil
}
