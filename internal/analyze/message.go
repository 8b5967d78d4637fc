package analyze

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// Severity is how bad a finding is. `meshfed analyze` exits 1 when any
// message is an Error.
type Severity uint8

// Severities, most severe first.
const (
	// Error: traffic is, or will be, misrouted or refused, or the hub
	// refuses the policy.
	Error Severity = iota + 1
	// Warning: part of a policy has no effect, or is one failure away
	// from misrouting.
	Warning
	// Info: worth knowing, nothing wrong.
	Info
)

var severityNames = [...]string{Error: "Error", Warning: "Warning", Info: "Info"}

// String returns "Error", "Warning" or "Info".
func (s Severity) String() string {
	if int(s) < len(severityNames) && severityNames[s] != "" {
		return severityNames[s]
	}
	return "Severity(" + strconv.Itoa(int(s)) + ")"
}

// MarshalText writes the name, as String.
func (s Severity) MarshalText() ([]byte, error) {
	if int(s) >= len(severityNames) || severityNames[s] == "" {
		return nil, fmt.Errorf("analyze: unknown severity %d", s)
	}
	return []byte(severityNames[s]), nil
}

// UnmarshalText reads a name written by MarshalText.
func (s *Severity) UnmarshalText(b []byte) error {
	for i, n := range severityNames {
		if n != "" && n == string(b) {
			*s = Severity(i)
			return nil
		}
	}
	return fmt.Errorf("analyze: unknown severity %q", b)
}

// Code identifies one check, "MF0001" and up. Codes are never reused.
type Code string

// Message is one finding.
type Message struct {
	Code     Code     `json:"code"`
	Severity Severity `json:"severity"`
	// Resource is what the finding is about: "GlobalTrafficPolicy/<name>"
	// or "Service <namespace>/<name>".
	Resource string `json:"resource"`
	// Path is the field path in the resource, such as
	// "spec.http[0].route[1].destination.subset"; empty for the resource
	// as a whole.
	Path string `json:"path,omitempty"`
	// Message says what is wrong, with the values involved.
	Message string `json:"message"`
	// Origin is where the resource came from: a policy file ("FILE", or
	// "FILE:LINE" for a document that failed to decode), "hub" for a
	// policy stored in the hub; empty for catalog resources and for
	// policies given to Analyze directly.
	Origin string `json:"origin,omitempty"`
}

// String returns the message as one line of text:
//
//	Error [MF0003] GlobalTrafficPolicy/reviews spec.http[0].route[1].destination.cluster: cluster "north" is not a member (reviews.yaml)
func (m Message) String() string {
	var b strings.Builder
	b.WriteString(m.Severity.String())
	b.WriteString(" [")
	b.WriteString(string(m.Code))
	b.WriteString("] ")
	b.WriteString(m.Resource)
	if m.Path != "" {
		b.WriteString(" ")
		b.WriteString(m.Path)
	}
	b.WriteString(": ")
	b.WriteString(m.Message)
	if m.Origin != "" {
		b.WriteString(" (")
		b.WriteString(m.Origin)
		b.WriteString(")")
	}
	return b.String()
}

// HasErrors reports whether any message is an Error.
func HasErrors(msgs []Message) bool {
	return slices.ContainsFunc(msgs, func(m Message) bool { return m.Severity == Error })
}

// sortMessages orders messages by resource, field path (numbers in
// indexes compared as numbers, so http[2] comes before http[10]), code,
// text and origin.
func sortMessages(msgs []Message) {
	slices.SortStableFunc(msgs, func(a, b Message) int {
		return cmp.Or(
			strings.Compare(a.Resource, b.Resource),
			comparePaths(a.Path, b.Path),
			strings.Compare(string(a.Code), string(b.Code)),
			strings.Compare(a.Message, b.Message),
			strings.Compare(a.Origin, b.Origin),
		)
	})
}

// comparePaths compares field paths, runs of digits by their value.
func comparePaths(a, b string) int {
	for a != "" && b != "" {
		da, db := digits(a), digits(b)
		if da > 0 && db > 0 {
			na, nb := strings.TrimLeft(a[:da], "0"), strings.TrimLeft(b[:db], "0")
			if c := cmp.Or(cmp.Compare(len(na), len(nb)), strings.Compare(na, nb)); c != 0 {
				return c
			}
			a, b = a[da:], b[db:]
			continue
		}
		if a[0] != b[0] {
			return cmp.Compare(a[0], b[0])
		}
		a, b = a[1:], b[1:]
	}
	return cmp.Compare(len(a), len(b))
}

func digits(s string) int {
	n := 0
	for n < len(s) && s[n] >= '0' && s[n] <= '9' {
		n++
	}
	return n
}
