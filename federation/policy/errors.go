package policy

import (
	"errors"
	"fmt"
	"strconv"

	"github.com/meshfed/meshfed/federation"
)

// FieldError reports one rejected part of a policy: where (Path) and which
// rule it breaks, with the bound (Msg). Decode, Validate, Marshal, Compile
// and FromProto return a *FieldError, or several joined with errors.Join
// (at most MaxErrors, the last of which then says how many more there
// were). Every *FieldError matches federation.ErrInvalid under errors.Is:
// the input is wrong and retrying it unchanged cannot succeed.
type FieldError struct {
	// Path is the field path in the document, for example
	// "spec.http[0].route[1].weight" or `spec.subsets[0].labels["version"]`;
	// empty for the document as a whole.
	Path string
	// Msg states the rule broken, including the bound and, where short,
	// the rejected value: "must be 0 to 100, got 120".
	Msg string
}

// MaxErrors bounds how many errors one call reports.
const MaxErrors = 20

// Error returns "<path>: <msg>", or "<msg>" when Path is empty.
func (e *FieldError) Error() string {
	if e.Path == "" {
		return e.Msg
	}
	return e.Path + ": " + e.Msg
}

// Is reports whether target is federation.ErrInvalid.
func (e *FieldError) Is(target error) bool { return target == federation.ErrInvalid }

// errorList collects FieldErrors, at most MaxErrors of them.
type errorList struct {
	errs    []error
	dropped int
}

func (l *errorList) add(path, format string, args ...any) {
	if len(l.errs) >= MaxErrors-1 {
		l.dropped++
		return
	}
	l.errs = append(l.errs, &FieldError{Path: path, Msg: fmt.Sprintf(format, args...)})
}

// err returns nil, the only *FieldError, or the errors joined.
func (l *errorList) err() error {
	errs := l.errs
	if l.dropped > 0 {
		errs = append(errs[:len(errs):len(errs)], &FieldError{Msg: fmt.Sprintf("and %d more errors", l.dropped)})
	}
	switch len(errs) {
	case 0:
		return nil
	case 1:
		return errs[0]
	}
	return errors.Join(errs...)
}

// Path helpers: one way to write a path.

func field(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

func index(path string, i int) string { return path + "[" + strconv.Itoa(i) + "]" }

func key(path, k string) string { return path + "[" + strconv.Quote(k) + "]" }

// quote quotes a rejected value for a message, shortened when long.
func quote(s string) string {
	const max = 64
	if len(s) > max {
		return strconv.Quote(s[:max]) + "..."
	}
	return strconv.Quote(s)
}
