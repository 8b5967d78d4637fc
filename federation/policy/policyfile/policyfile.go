// Package policyfile reads GlobalTrafficPolicy files, as `meshfed policy`
// and `meshfed analyze` take them with -f: YAML or JSON, one or more
// documents separated by "---" lines. Each document is converted to JSON
// and decoded with policy.Decode, so the rules are package policy's, in one
// place; this package adds the document structure and what can only be
// checked across documents (one policy per name and per host).
//
// It is a separate package because it imports sigs.k8s.io/yaml, which
// package policy (imported by gateways) must not.
package policyfile

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/meshfed/meshfed/federation"
	"github.com/meshfed/meshfed/federation/policy"
	"sigs.k8s.io/yaml"
)

// Limits of one file.
const (
	// MaxFileSize bounds the input of Decode, in bytes.
	MaxFileSize = 16 << 20
	// MaxDocuments bounds the number of non-empty documents.
	MaxDocuments = 256
)

// ErrNoPolicy is returned by Decode for input that holds no document
// (only whitespace, comments and separators).
var ErrNoPolicy = errors.New("policyfile: the input holds no policy")

// DocumentError is an error in one document of a file. Err is a
// *policy.FieldError or several joined; errors.As reaches them.
type DocumentError struct {
	// Index is the document's position among the file's non-empty
	// documents, from 1.
	Index int
	// Line is the line of the file where the document starts, from 1.
	Line int
	// Name is the document's metadata.name when it could be read, else "".
	Name string
	// Err is what is wrong with it.
	Err error
}

// Error returns one line per error, each prefixed with the document:
//
//	document 2 (reviews, line 14): spec.http[0].route[1].weight: must be 0 to 100, got 120
func (e *DocumentError) Error() string {
	prefix := "document " + strconv.Itoa(e.Index) + " ("
	if e.Name != "" {
		prefix += e.Name + ", "
	}
	prefix += "line " + strconv.Itoa(e.Line) + "): "
	var errs []error
	if j, ok := e.Err.(interface{ Unwrap() []error }); ok {
		errs = j.Unwrap()
	} else {
		errs = []error{e.Err}
	}
	lines := make([]string, len(errs))
	for i, err := range errs {
		lines[i] = prefix + err.Error()
	}
	return strings.Join(lines, "\n")
}

// Unwrap returns Err.
func (e *DocumentError) Unwrap() error { return e.Err }

// Decode reads every policy of data, YAML or JSON, in order. Documents are
// separated by lines that start with "---" (or "..." ending one); empty
// documents are skipped. It is all-or-nothing: on any error it returns no
// policies and every error found, each a *DocumentError (joined when there
// are several), or ErrNoPolicy. Besides policy.Decode's rules, two
// documents may not share a metadata.name or a spec.host.
func Decode(data []byte) ([]*policy.GlobalTrafficPolicy, error) {
	if len(data) > MaxFileSize {
		return nil, &DocumentError{Index: 1, Line: 1, Err: &policy.FieldError{Msg: fmt.Sprintf("the file is %d bytes, more than the limit of %d", len(data), MaxFileSize)}}
	}
	docs := split(data)
	if len(docs) == 0 {
		return nil, ErrNoPolicy
	}
	if len(docs) > MaxDocuments {
		return nil, &DocumentError{Index: MaxDocuments + 1, Line: docs[MaxDocuments].line, Err: &policy.FieldError{Msg: fmt.Sprintf("the file has %d documents, more than the limit of %d", len(docs), MaxDocuments)}}
	}
	var (
		errs   []error
		out    = make([]*policy.GlobalTrafficPolicy, 0, len(docs))
		byName = make(map[string]int)
		byHost = make(map[federation.ServiceKey]int)
		names  = make([]string, len(docs))
	)
	for i, d := range docs {
		p, name, err := decodeDoc(d.text, d.line)
		names[i] = name
		if err == nil {
			if j, dup := byName[p.Metadata.Name]; dup {
				err = &policy.FieldError{Path: "metadata.name", Msg: fmt.Sprintf("duplicate policy name %q (also document %d)", p.Metadata.Name, j+1)}
			} else if j, dup := byHost[p.Service()]; dup {
				err = &policy.FieldError{Path: "spec.host", Msg: fmt.Sprintf("%q is also the host of document %d (%s); there is one policy per host", p.Spec.Host, j+1, names[j])}
			} else {
				byName[p.Metadata.Name] = i
				byHost[p.Service()] = i
			}
		}
		if err != nil {
			errs = append(errs, &DocumentError{Index: i + 1, Line: d.line, Name: name, Err: err})
			continue
		}
		out = append(out, p)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return out, nil
}

// decodeDoc decodes one document; name is its metadata.name as far as it
// could be read. line is where the document starts in the file.
func decodeDoc(text []byte, line int) (*policy.GlobalTrafficPolicy, string, error) {
	js := text
	if !json.Valid(text) {
		var err error
		js, err = yaml.YAMLToJSONStrict(text)
		if err != nil {
			// Parse again after line-1 empty lines, so that the line
			// numbers in the error are the file's.
			if _, perr := yaml.YAMLToJSONStrict(append(bytes.Repeat([]byte("\n"), line-1), text...)); perr != nil {
				err = perr
			}
			msg := strings.TrimPrefix(err.Error(), "error converting YAML to JSON: ")
			return nil, "", &policy.FieldError{Msg: "invalid YAML: " + msg}
		}
	}
	p, err := policy.Decode(js)
	if err != nil {
		return nil, nameOf(js), err
	}
	return p, p.Metadata.Name, nil
}

// nameOf reads metadata.name leniently, for naming a document that does not
// decode. It returns "" if there is none, and a quoted form of a name that
// is not a DNS label.
func nameOf(js []byte) string {
	var d struct {
		Metadata struct {
			Name string `json:"name"`
		} `json:"metadata"`
	}
	if json.Unmarshal(js, &d) != nil || d.Metadata.Name == "" {
		return ""
	}
	if federation.IsDNSLabel(d.Metadata.Name) {
		return d.Metadata.Name
	}
	n := d.Metadata.Name
	if len(n) > 64 {
		n = n[:64]
	}
	return strconv.Quote(n)
}

type document struct {
	text []byte
	line int // first line, from 1
}

// split cuts data into its non-empty documents. A line starting with
// "---" (followed by nothing, a space or a tab) separates documents; what
// follows the marker on that line belongs to the next document. A "..."
// line ends a document. YAML forbids such lines inside a scalar, so no
// content is cut.
func split(data []byte) []document {
	data = bytes.TrimPrefix(data, []byte("\xef\xbb\xbf"))
	var (
		docs  []document
		cur   []byte
		start = 1
	)
	flush := func(next int) {
		if !isBlank(cur) {
			docs = append(docs, document{text: cur, line: start})
		}
		cur, start = nil, next
	}
	for n := 1; len(data) > 0; n++ {
		line := data
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			line, data = data[:i+1], data[i+1:]
		} else {
			data = nil
		}
		bare := bytes.TrimRight(line, "\r\n")
		switch {
		case isMarker(bare, "---"):
			flush(n + 1)
			if rest := bare[3:]; len(bytes.TrimSpace(rest)) > 0 {
				start = n
				cur = append(cur, rest...)
				cur = append(cur, '\n')
			}
		case isMarker(bare, "..."):
			flush(n + 1)
		default:
			cur = append(cur, line...)
		}
	}
	flush(0)
	return docs
}

func isMarker(line []byte, m string) bool {
	return bytes.HasPrefix(line, []byte(m)) && (len(line) == len(m) || line[len(m)] == ' ' || line[len(m)] == '\t')
}

// isBlank reports whether a document holds only whitespace and comments.
func isBlank(doc []byte) bool {
	for len(doc) > 0 {
		line := doc
		if i := bytes.IndexByte(doc, '\n'); i >= 0 {
			line, doc = doc[:i], doc[i+1:]
		} else {
			doc = nil
		}
		line = bytes.TrimSpace(line)
		if len(line) > 0 && line[0] != '#' {
			return false
		}
	}
	return true
}
