package analyze

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/meshfed/meshfed/federation/policy"
	"github.com/meshfed/meshfed/federation/policy/policyfile"
	fedv1 "github.com/meshfed/meshfed/federation/v1"
)

// OriginHub is the Message.Origin of a policy stored in the hub.
const OriginHub = "hub"

// Policies assembles the policies to analyze: those stored in the hub,
// then those of policy files, a file's policy replacing the hub's of the
// same name (which is how a change is checked before it is applied). A
// policy that fails to decode is reported as MF0001, and the hub's policy
// of that name is then not analyzed either. The zero value is empty and
// ready to use; a Policies is not safe for concurrent use.
type Policies struct {
	entries []entry
	// fromFile marks names a file gave (decoded or not).
	fromFile map[string]string
	msgs     []Message
}

// AddHub adds the policies the hub stores (ListPolicies), in name order.
// Call it before AddFile. A stored policy that policy.FromProto refuses is
// reported as MF0001 with origin "hub".
func (s *Policies) AddHub(ps []*fedv1.TrafficPolicy) {
	ps = slices.Clone(ps)
	slices.SortFunc(ps, func(a, b *fedv1.TrafficPolicy) int { return strings.Compare(a.GetName(), b.GetName()) })
	for _, m := range ps {
		p, err := policy.FromProto(m)
		if err != nil {
			for _, fe := range fieldErrors(err) {
				s.msgs = append(s.msgs, newMessage(InvalidPolicy, resource(m.GetName()), fe.Path, fe.Msg, OriginHub))
			}
			continue
		}
		s.entries = append(s.entries, entry{p: p, origin: OriginHub})
	}
}

// AddFile adds the policies of one file (YAML or JSON, any number of
// documents), named name in messages. A file that fails to decode adds no
// policy (all or nothing, as policy apply) and one MF0001 message per
// error, with origin "name:line" of its document. AddFile returns an
// error only for a file with no policy in it (policyfile.ErrNoPolicy,
// wrapped with the name).
func (s *Policies) AddFile(name string, data []byte) error {
	if s.fromFile == nil {
		s.fromFile = make(map[string]string)
	}
	ps, err := policyfile.Decode(data)
	if errors.Is(err, policyfile.ErrNoPolicy) {
		return fmt.Errorf("%s: %w", name, err)
	}
	if err != nil {
		var docs []error
		if j, ok := err.(interface{ Unwrap() []error }); ok {
			docs = j.Unwrap()
		} else {
			docs = []error{err}
		}
		for _, e := range docs {
			var de *policyfile.DocumentError
			origin, res, inner := name, policy.Kind, e
			if errors.As(e, &de) {
				origin, inner = name+":"+strconv.Itoa(de.Line), de.Err
				if de.Name != "" {
					res = resource(de.Name)
					s.replace(de.Name, name)
				} else {
					res = fmt.Sprintf("%s (document %d)", policy.Kind, de.Index)
				}
			}
			for _, fe := range fieldErrors(inner) {
				s.msgs = append(s.msgs, newMessage(InvalidPolicy, res, fe.Path, fe.Msg, origin))
			}
		}
		return nil
	}
	for _, p := range ps {
		if prev, dup := s.fromFile[p.Metadata.Name]; dup {
			s.msgs = append(s.msgs, newMessage(PolicyConflict, resource(p.Metadata.Name), "metadata.name",
				fmt.Sprintf("file %s also has a policy named %q; the policy of %s is not analyzed", prev, p.Metadata.Name, name), name))
			continue
		}
		s.replace(p.Metadata.Name, name)
		s.entries = append(s.entries, entry{p: p, origin: name})
	}
	return nil
}

// replace drops the hub's policy called name, which file replaces.
func (s *Policies) replace(name, file string) {
	s.fromFile[name] = file
	s.entries = slices.DeleteFunc(s.entries, func(e entry) bool {
		return e.origin == OriginHub && e.p.Metadata.Name == name
	})
}

// Len returns the number of policies that decoded and will be analyzed.
func (s *Policies) Len() int { return len(s.entries) }

// Analyze checks the policies against cat (nil: without a catalog, see
// the package function Analyze) and returns every message, those of
// AddHub and AddFile included, sorted.
func (s *Policies) Analyze(cat *Catalog) []Message {
	return analyze(cat, s.entries, s.msgs)
}

func newMessage(code Code, res, path, msg, origin string) Message {
	return Message{Code: code, Severity: info(code).Severity, Resource: res, Path: path, Message: msg, Origin: origin}
}
