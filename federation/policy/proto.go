package policy

import (
	"fmt"

	fedv1 "github.com/meshfed/meshfed/federation/v1"
)

// ToProto returns p as the hub stores and sends it: Name is
// metadata.name, Service is the ServiceKey of spec.host
// ("namespace/name"), Spec is Marshal(p). Revisions are left zero for the
// hub to set. It returns Marshal's errors for an invalid policy.
func ToProto(p *GlobalTrafficPolicy) (*fedv1.TrafficPolicy, error) {
	spec, err := Marshal(p)
	if err != nil {
		return nil, err
	}
	return &fedv1.TrafficPolicy{
		Name:    p.Metadata.Name,
		Service: p.Service().String(),
		Spec:    spec,
	}, nil
}

// FromProto decodes m.Spec with Decode and checks that m.Name and
// m.Service agree with the document. Errors are *FieldError: paths inside
// the document for Decode's, "name" or "service" for a disagreement, ""
// for a nil message.
func FromProto(m *fedv1.TrafficPolicy) (*GlobalTrafficPolicy, error) {
	if m == nil {
		return nil, &FieldError{Msg: "no policy (nil TrafficPolicy)"}
	}
	p, err := Decode(m.GetSpec())
	if err != nil {
		return nil, err
	}
	if m.GetName() != p.Metadata.Name {
		return nil, &FieldError{Path: "name", Msg: fmt.Sprintf("is %s but the document's metadata.name is %s", quote(m.GetName()), quote(p.Metadata.Name))}
	}
	if svc := p.Service().String(); m.GetService() != svc {
		return nil, &FieldError{Path: "service", Msg: fmt.Sprintf("is %s but the document's spec.host %s is service %s", quote(m.GetService()), quote(p.Spec.Host), quote(svc))}
	}
	return p, nil
}
