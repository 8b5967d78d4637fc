package policy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strconv"
	"strings"
	"sync"
)

// Decode strictly decodes and validates one policy from JSON. Unknown
// fields (names are case-sensitive), duplicate keys, values of the wrong
// type and trailing data are refused; so is input over MaxInputSize and a
// policy whose canonical encoding is over MaxPolicySize. Every error is a
// *FieldError naming the field path, or several joined (see FieldError).
// null stands for an unset field, and empty lists and maps are normalized
// to nil, so Marshal of the result decodes to an equal value.
func Decode(data []byte) (*GlobalTrafficPolicy, error) {
	if len(data) > MaxInputSize {
		return nil, &FieldError{Msg: fmt.Sprintf("the policy is %d bytes, more than the limit of %d", len(data), MaxInputSize)}
	}
	if err := checkShape(data); err != nil {
		return nil, err
	}
	var p GlobalTrafficPolicy
	if err := json.Unmarshal(data, &p); err != nil {
		// checkShape admits only what json.Unmarshal accepts; this is a
		// bug if it happens, reported rather than hidden.
		return nil, &FieldError{Msg: "invalid policy: " + err.Error()}
	}
	normalize(reflect.ValueOf(&p).Elem())
	if err := p.Validate(); err != nil {
		return nil, err
	}
	b, err := marshal(&p)
	if err != nil {
		return nil, err
	}
	if len(b) > MaxPolicySize {
		return nil, sizeError(len(b))
	}
	return &p, nil
}

func sizeError(n int) error {
	return &FieldError{Msg: fmt.Sprintf("the policy's canonical encoding is %d bytes, more than the limit of %d", n, MaxPolicySize)}
}

// Marshal writes the canonical JSON of p: compact, fields in declaration
// order, map keys sorted, unset fields omitted, durations in canonical form
// (see Duration), no HTML escaping. The same policy always gives the same
// bytes. p must be valid; Marshal returns Validate's errors, or a
// *FieldError if the encoding is over MaxPolicySize.
func Marshal(p *GlobalTrafficPolicy) ([]byte, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	b, err := marshal(p)
	if err != nil {
		return nil, err
	}
	if len(b) > MaxPolicySize {
		return nil, sizeError(len(b))
	}
	return b, nil
}

func marshal(p *GlobalTrafficPolicy) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(p); err != nil {
		return nil, &FieldError{Msg: "encoding the policy: " + err.Error()}
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// normalize sets empty maps and slices under v to nil, so that a decoded
// policy equals the decoding of its own canonical encoding (which omits
// them).
func normalize(v reflect.Value) {
	switch v.Kind() {
	case reflect.Pointer:
		if !v.IsNil() {
			normalize(v.Elem())
		}
	case reflect.Struct:
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				normalize(v.Field(i))
			}
		}
	case reflect.Slice:
		if v.Len() == 0 {
			v.SetZero()
			return
		}
		for i := range v.Len() {
			normalize(v.Index(i))
		}
	case reflect.Map:
		if v.Len() == 0 {
			v.SetZero()
			return
		}
		// Map values are not addressable; the only maps of structs
		// (headers of a match) hold no maps or slices.
	}
}

var (
	durationType = reflect.TypeFor[Duration]()
	policyType   = reflect.TypeFor[GlobalTrafficPolicy]()
)

// checkShape walks the JSON tokens of data against the Go types of a
// policy and reports, with its path, every unknown or duplicate field and
// every value of the wrong type. It stops at the first syntax error.
func checkShape(data []byte) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	s := &shape{dec: dec}
	tok, err := dec.Token()
	switch {
	case err == io.EOF:
		return &FieldError{Msg: "the policy is empty"}
	case err != nil:
		return s.syntax("", err)
	}
	if tok != json.Delim('{') {
		return &FieldError{Msg: "the policy must be a JSON object, got " + describe(tok)}
	}
	if err := s.object(policyType, ""); err != nil {
		return s.syntax("", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		if err != nil {
			return s.syntax("", err)
		}
		s.errs.add("", "unexpected data after the policy (one policy per document)")
	}
	return s.errs.err()
}

type shape struct {
	dec  *json.Decoder
	errs errorList
}

// syntax turns a decoder error into a *FieldError at path, keeping the
// errors found so far.
func (s *shape) syntax(path string, err error) error {
	var se *json.SyntaxError
	switch {
	case errors.As(err, &se):
		s.errs.add(path, "invalid JSON at byte %d: %s", se.Offset, se.Error())
	case err == io.ErrUnexpectedEOF || err == io.EOF:
		s.errs.add(path, "invalid JSON: unexpected end of input")
	default:
		s.errs.add(path, "invalid JSON: %s", err.Error())
	}
	return s.errs.err()
}

// value checks the next value against t. It returns only decoder (syntax)
// errors; shape errors are collected in s.errs.
func (s *shape) value(t reflect.Type, path string) error {
	tok, err := s.dec.Token()
	if err != nil {
		return err
	}
	if tok == nil {
		return nil // null: unset
	}
	if t == durationType {
		str, ok := tok.(string)
		if !ok {
			s.errs.add(path, "must be a duration string such as \"5s\" or \"250ms\", got %s", describe(tok))
			return s.skip(tok)
		}
		if _, err := ParseDuration(str); err != nil {
			s.errs.add(path, "%s", err.Error())
		}
		return nil
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Struct:
		if tok != json.Delim('{') {
			s.errs.add(path, "must be an object, got %s", describe(tok))
			return s.skip(tok)
		}
		return s.object(t, path)
	case reflect.Map:
		if tok != json.Delim('{') {
			s.errs.add(path, "must be an object, got %s", describe(tok))
			return s.skip(tok)
		}
		seen := make(map[string]bool)
		for s.dec.More() {
			k, err := s.key()
			if err != nil {
				return err
			}
			p := key(path, k)
			if seen[k] {
				s.errs.add(p, "duplicate key")
			}
			seen[k] = true
			if err := s.value(t.Elem(), p); err != nil {
				return err
			}
		}
		_, err := s.dec.Token() // '}'
		return err
	case reflect.Slice:
		if tok != json.Delim('[') {
			s.errs.add(path, "must be a list, got %s", describe(tok))
			return s.skip(tok)
		}
		for i := 0; s.dec.More(); i++ {
			if err := s.value(t.Elem(), index(path, i)); err != nil {
				return err
			}
		}
		_, err := s.dec.Token() // ']'
		return err
	case reflect.String:
		if _, ok := tok.(string); !ok {
			s.errs.add(path, "must be a string, got %s", describe(tok))
			return s.skip(tok)
		}
	case reflect.Bool:
		if _, ok := tok.(bool); !ok {
			s.errs.add(path, "must be true or false, got %s", describe(tok))
			return s.skip(tok)
		}
	case reflect.Int, reflect.Int32, reflect.Int64:
		n, ok := tok.(json.Number)
		if !ok {
			s.errs.add(path, "must be an integer, got %s", describe(tok))
			return s.skip(tok)
		}
		if _, err := strconv.ParseInt(string(n), 10, 32); err != nil {
			if strings.ContainsAny(string(n), ".eE") {
				s.errs.add(path, "must be an integer, got %s", n)
			} else {
				s.errs.add(path, "must be an integer from -2147483648 to 2147483647, got %s", n)
			}
		}
	case reflect.Float64:
		n, ok := tok.(json.Number)
		if !ok {
			s.errs.add(path, "must be a number, got %s", describe(tok))
			return s.skip(tok)
		}
		if _, err := strconv.ParseFloat(string(n), 64); err != nil {
			s.errs.add(path, "must be a number in the range of a float64, got %s", n)
		}
	default:
		panic("policy: no shape rule for " + t.String())
	}
	return nil
}

// object checks the members of an object whose '{' was read.
func (s *shape) object(t reflect.Type, path string) error {
	fields := fieldsOf(t)
	seen := make(map[string]bool)
	for s.dec.More() {
		k, err := s.key()
		if err != nil {
			return err
		}
		p := field(path, k)
		if !isIdent(k) {
			p = key(path, k)
		}
		ft, ok := fields[k]
		switch {
		case !ok:
			s.errs.add(p, "unknown field%s", suggest(fields, k))
			if err := s.skipValue(); err != nil {
				return err
			}
			continue
		case seen[k]:
			s.errs.add(p, "duplicate key")
		}
		seen[k] = true
		if err := s.value(ft, p); err != nil {
			return err
		}
	}
	_, err := s.dec.Token() // '}'
	return err
}

func (s *shape) key() (string, error) {
	tok, err := s.dec.Token()
	if err != nil {
		return "", err
	}
	k, ok := tok.(string)
	if !ok {
		return "", fmt.Errorf("object key is %s", describe(tok))
	}
	return k, nil
}

// skipValue consumes the next value.
func (s *shape) skipValue() error {
	tok, err := s.dec.Token()
	if err != nil {
		return err
	}
	return s.skip(tok)
}

// skip consumes the rest of the value whose first token is tok.
func (s *shape) skip(tok json.Token) error {
	if tok != json.Delim('{') && tok != json.Delim('[') {
		return nil
	}
	for depth := 1; depth > 0; {
		tok, err := s.dec.Token()
		if err != nil {
			return err
		}
		switch tok {
		case json.Delim('{'), json.Delim('['):
			depth++
		case json.Delim('}'), json.Delim(']'):
			depth--
		}
	}
	return nil
}

// describe names the JSON type of tok for a message.
func describe(tok json.Token) string {
	switch v := tok.(type) {
	case json.Delim:
		if v == '{' {
			return "an object"
		}
		return "a list"
	case string:
		return "the string " + quote(v)
	case json.Number:
		return "the number " + v.String()
	case bool:
		return strconv.FormatBool(v)
	case nil:
		return "null"
	}
	return fmt.Sprintf("%v", tok)
}

// suggest returns " (did you mean \"x\"?)" when k differs from a known
// field only in case.
func suggest(fields map[string]reflect.Type, k string) string {
	for name := range fields {
		if strings.EqualFold(name, k) {
			return fmt.Sprintf(" (did you mean %q?)", name)
		}
	}
	return ""
}

func isIdent(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}

var fieldCache sync.Map // reflect.Type -> map[string]reflect.Type

// fieldsOf maps the JSON names of t's fields to their types.
func fieldsOf(t reflect.Type) map[string]reflect.Type {
	if m, ok := fieldCache.Load(t); ok {
		return m.(map[string]reflect.Type)
	}
	m := make(map[string]reflect.Type, t.NumField())
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" {
			continue
		}
		if name == "" {
			name = f.Name
		}
		m[name] = f.Type
	}
	fieldCache.Store(t, m)
	return m
}
