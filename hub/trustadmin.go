package hub

import (
	"context"
	"crypto/x509"
	"fmt"
	"net/url"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/meshfed/meshfed/federation"
	fedv1 "github.com/meshfed/meshfed/federation/v1"
	"github.com/meshfed/meshfed/hub/fsm"
	"github.com/meshfed/meshfed/hub/internal/hubpb"
)

// Bundle endpoint profiles (SPIFFE Federation).
const (
	ProfileHTTPSWeb    = "https_web"
	ProfileHTTPSSPIFFE = "https_spiffe"
)

const maxURLLength = 2048

func validateFederation(f *fedv1.FederationRelationship) error {
	if _, err := federation.ParseTrustDomain(f.GetTrustDomain()); err != nil {
		return fieldErr("federation", err)
	}
	if len(f.GetUrl()) > maxURLLength {
		return invalidArg("federation.url", "%d characters, at most %d", len(f.GetUrl()), maxURLLength)
	}
	u, err := url.Parse(f.GetUrl())
	if err != nil || u.Scheme != "https" || u.Host == "" || u.User != nil || u.Fragment != "" {
		return invalidArg("federation.url", "%q must be an https URL with a host", f.GetUrl())
	}
	switch f.GetProfile() {
	case ProfileHTTPSWeb:
		if f.GetEndpointSpiffeId() != "" || len(f.GetEndpointBootstrapAuthorities()) > 0 {
			return invalidArg("federation.endpoint_spiffe_id", "only for profile %s", ProfileHTTPSSPIFFE)
		}
	case ProfileHTTPSSPIFFE:
		id, err := spiffeid.FromString(f.GetEndpointSpiffeId())
		if err != nil {
			return invalidArg("federation.endpoint_spiffe_id", "%q: %v (required for %s)", f.GetEndpointSpiffeId(), err, ProfileHTTPSSPIFFE)
		}
		if n := len(f.GetEndpointBootstrapAuthorities()); n > MaxBundleAuthorities {
			return invalidArg("federation.endpoint_bootstrap_authorities", "%d, at most %d", n, MaxBundleAuthorities)
		}
		for i, der := range f.GetEndpointBootstrapAuthorities() {
			if c, err := x509.ParseCertificate(der); err != nil || !c.IsCA {
				return invalidArg(fmt.Sprintf("federation.endpoint_bootstrap_authorities[%d]", i), "not a DER CA certificate")
			}
		}
		if id.TrustDomain().Name() != f.GetTrustDomain() && len(f.GetEndpointBootstrapAuthorities()) == 0 {
			return invalidArg("federation.endpoint_bootstrap_authorities", "required: the endpoint's trust domain %q is not the one fetched", id.TrustDomain().Name())
		}
	default:
		return invalidArg("federation.profile", "%q must be %s or %s", f.GetProfile(), ProfileHTTPSWeb, ProfileHTTPSSPIFFE)
	}
	return nil
}

func (a *adminService) PutFederation(ctx context.Context, req *fedv1.PutFederationRequest) (*fedv1.PutFederationResponse, error) {
	f := req.GetFederation()
	if f == nil {
		return nil, invalidArg("federation", "required")
	}
	if err := validateFederation(f); err != nil {
		return nil, err
	}
	idx, err := a.s.apply(ctx, fsm.PutFederationType, &hubpb.CmdPutFederation{Federation: f})
	if err != nil {
		return nil, err
	}
	return &fedv1.PutFederationResponse{Revision: idx}, nil
}

func (a *adminService) DeleteFederation(ctx context.Context, req *fedv1.DeleteFederationRequest) (*fedv1.DeleteFederationResponse, error) {
	if _, err := federation.ParseTrustDomain(req.GetTrustDomain()); err != nil {
		return nil, fieldErr("", err)
	}
	idx, err := a.s.apply(ctx, fsm.DeleteFederationType, &hubpb.CmdDeleteFederation{TrustDomain: req.GetTrustDomain()})
	if err != nil {
		return nil, err
	}
	return &fedv1.DeleteFederationResponse{Revision: idx}, nil
}

func (a *adminService) ListFederations(ctx context.Context, _ *fedv1.ListFederationsRequest) (*fedv1.ListFederationsResponse, error) {
	r, err := a.s.consistentRead(ctx)
	if err != nil {
		return nil, err
	}
	resp := &fedv1.ListFederationsResponse{Revision: r.Revision()}
	for _, f := range r.Federations() {
		st := &fedv1.FederationStatus{Federation: f}
		if fs, ok := a.s.fetchers.status(f.GetTrustDomain()); ok {
			st.LastFetchMs, st.LastError = fs.lastFetch.UnixMilli(), fs.lastErr
		}
		resp.Federations = append(resp.Federations, st)
	}
	return resp, nil
}

func (a *adminService) ListBundles(ctx context.Context, _ *fedv1.ListBundlesRequest) (*fedv1.ListBundlesResponse, error) {
	r, err := a.s.consistentRead(ctx)
	if err != nil {
		return nil, err
	}
	resp := &fedv1.ListBundlesResponse{Revision: r.Revision()}
	for _, b := range r.Bundles() {
		resp.Bundles = append(resp.Bundles, &fedv1.BundleInfo{Bundle: b.GetBundle(), Cluster: b.GetCluster(), ModifyRevision: b.GetModifyRevision()})
	}
	return resp, nil
}

func (a *adminService) RotateCA(ctx context.Context, req *fedv1.RotateCARequest) (*fedv1.RotateCAResponse, error) {
	if _, err := federation.ParseClusterName(req.GetCluster()); err != nil {
		return nil, fieldErr("", err)
	}
	res, err := a.s.propose(ctx, fsm.RotateCAType, &hubpb.CmdRotateCA{Cluster: req.GetCluster()})
	if err != nil {
		return nil, err
	}
	idx := res.index
	if res.caRotation != 0 {
		// As the FSM recorded it, the same for a repeated request.
		return &fedv1.RotateCAResponse{CaRotation: res.caRotation, Revision: idx}, nil
	}
	// A bare command (some server does not apply requests yet): read it back.
	r, err := a.s.consistentRead(ctx)
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "rotation requested at revision %d; reading it back: %v", idx, err)
	}
	return &fedv1.RotateCAResponse{CaRotation: r.Cluster(req.GetCluster()).GetCaRotation(), Revision: idx}, nil
}
