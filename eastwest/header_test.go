package eastwest

import (
	"bytes"
	"encoding/hex"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// The wire format is locked: a change to these bytes breaks every gateway
// of the previous version. Regenerate with -update only for a new version.
func TestHeaderGoldenBytes(t *testing.T) {
	cases := []struct {
		name string
		h    Header
	}{
		{"connect", Header{Kind: KindConnect, Service: "default/reviews", Port: 8080, Source: "east",
			Identity: "spiffe://east.meshfed.local/ns/default/sa/productpage", TraceID: bytes.Repeat([]byte{0xab}, 16)}},
		{"connect-minimal", Header{Kind: KindConnect, Service: "a/b", Port: 1, Source: "c"}},
		{"probe", Header{Kind: KindProbe, Source: "west"}},
		{"connect-subset", Header{Kind: KindConnect, Service: "default/reviews", Port: 8080, Source: "east",
			Subset: map[string]string{"version": "v2", "app.kubernetes.io/tier": "back"}}},
	}
	var out strings.Builder
	for _, c := range cases {
		b, err := AppendHeader(nil, &c.h)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		out.WriteString(c.name + " " + hex.EncodeToString(b) + "\n")
		got, err := DecodeHeader(b)
		if err != nil {
			t.Fatalf("%s: decode: %v", c.name, err)
		}
		if !reflect.DeepEqual(*got, c.h) {
			t.Errorf("%s: round trip %+v, want %+v", c.name, *got, c.h)
		}
		got2, err := ReadHeader(bytes.NewReader(b), nil)
		if err != nil || !reflect.DeepEqual(got2, got) {
			t.Errorf("%s: ReadHeader %+v, %v", c.name, got2, err)
		}
	}
	for _, s := range []struct {
		code Code
		msg  string
	}{{CodeOK, ""}, {CodeNoHealthyEndpoint, "0 of 2 ready"}, {CodeForbidden, "trust domain"}, {CodeUnknownService, "default/x"}} {
		b := AppendStatus(nil, s.code, s.msg)
		out.WriteString("status-" + s.code.String() + " " + hex.EncodeToString(b) + "\n")
		got, err := ReadStatus(bytes.NewReader(b))
		if err != nil || got.Code != s.code || got.Message != s.msg {
			t.Errorf("status %v round trip: %+v, %v", s.code, got, err)
		}
	}
	path := filepath.Join("testdata", "header.golden")
	if *update {
		if err := os.WriteFile(path, []byte(out.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if out.String() != string(want) {
		t.Errorf("wire bytes changed:\n got:\n%s\nwant:\n%s", out.String(), want)
	}
}

func TestHeaderRefusalsNameTheFieldAndBound(t *testing.T) {
	long := strings.Repeat("x", 200)
	for _, c := range []struct {
		h    Header
		want string
	}{
		{Header{Kind: 9, Service: "a/b", Port: 1}, "kind"},
		{Header{Kind: KindConnect, Service: long, Port: 1}, "service: 200 bytes, at most 127"},
		{Header{Kind: KindConnect, Service: "a/b", Port: 1, TraceID: []byte{1}}, "trace_id: 1 bytes, want 0 or 16"},
		{Header{Kind: KindConnect, Service: "a/b", Port: 1, Identity: strings.Repeat("i", 3000)}, "identity: 3000 bytes, at most 2048"},
		{Header{Kind: KindConnect, Service: "\xff/x", Port: 1}, "service"},
		{Header{Kind: KindConnect, Service: "a/b", Port: 1, Source: "Bad_Name"}, "source"},
		{Header{Kind: KindConnect, Service: "a/b", Port: 1, Identity: "\xffspiffe://x"}, "identity"},
		{Header{Kind: KindConnect, Service: "a/b", Port: 0}, "port"},
	} {
		_, err := AppendHeader(nil, &c.h)
		if !errors.Is(err, ErrHeader) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want an ErrHeader naming %q", c.h.Kind, err, c.want)
		}
	}
	// Decoding: a version from the future, a length over the bound, a
	// connect without a service, a truncated body.
	bad := func(svc string) []byte { // a connect header with any service bytes
		b := []byte{1, 1, 0, 0, byte(len(svc))}
		b = append(b, svc...)
		b = append(b, 0, 80, 0, 0, 0, 0)
		b[3] = byte(len(b) - 4)
		return b
	}
	for name, b := range map[string][]byte{
		"service: federation": bad("\xff/x"),
		"version":             {2, 1, 0, 0},
		"length":              {1, 1, 0xff, 0xff},
		"service":             {1, 1, 0, 7, 0, 0, 0, 0, 0, 0, 0},
		"truncated":           {1, 1, 0, 3, 5, 'a', '/'},
	} {
		if _, err := ReadHeader(bytes.NewReader(b), nil); !errors.Is(err, ErrHeader) || !strings.Contains(err.Error(), name) {
			t.Errorf("%s: %v, want an ErrHeader naming %s", name, err, name)
		}
	}
}

func TestHeaderSkipsFieldsOfLaterVersions(t *testing.T) {
	b, _ := AppendHeader(nil, &Header{Kind: KindConnect, Service: "a/b", Port: 9, Source: "c", Subset: map[string]string{"v": "2"}})
	b = append(b, 0xde, 0xad) // a field a later version added
	b[3] += 2
	h, err := DecodeHeader(b)
	if err != nil || h.Service != "a/b" || h.Port != 9 || h.Subset["v"] != "2" {
		t.Fatalf("%+v, %v", h, err)
	}
}

// A subset is optional on the wire (a header without one is the version
// 1 header of older gateways) and refused when malformed.
func TestHeaderSubset(t *testing.T) {
	plain, _ := AppendHeader(nil, &Header{Kind: KindConnect, Service: "a/b", Port: 9, Source: "c"})
	withEmpty, _ := AppendHeader(nil, &Header{Kind: KindConnect, Service: "a/b", Port: 9, Source: "c", Subset: map[string]string{}})
	if !bytes.Equal(plain, withEmpty) {
		t.Fatal("an empty subset changed the encoding")
	}
	many := map[string]string{}
	for i := range MaxSubsetLabels + 1 {
		many[string(rune('a'+i))] = "x"
	}
	for _, c := range []struct {
		subset map[string]string
		want   string
	}{
		{many, "subset: 17 labels, at most 16"},
		{map[string]string{"a,b": "x"}, "subset: label"},
		{map[string]string{"a": "x=y"}, "subset: label"},
		{map[string]string{"": "x"}, "subset: label"},
		{map[string]string{"k": strings.Repeat("v", MaxSubsetLength)}, "subset: 1026 bytes, at most 1024"},
	} {
		_, err := AppendHeader(nil, &Header{Kind: KindConnect, Service: "a/b", Port: 1, Subset: c.subset})
		if !errors.Is(err, ErrHeader) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("subset %d labels: %v, want an ErrHeader naming %q", len(c.subset), err, c.want)
		}
	}
	// Decoding refuses what encoding would.
	for name, subset := range map[string]string{"not key=value": "novalue", "twice": "a=1,a=2", "empty key": "=1"} {
		b := append([]byte(nil), plain...)
		b = append(b, 0, byte(len(subset)))
		b = append(b, subset...)
		b[3] += byte(2 + len(subset))
		if _, err := DecodeHeader(b); !errors.Is(err, ErrHeader) || !strings.Contains(err.Error(), "subset") {
			t.Errorf("%s: %v, want an ErrHeader naming the subset", name, err)
		}
	}
}

func FuzzReadHeader(f *testing.F) {
	for _, h := range []Header{
		{Kind: KindConnect, Service: "default/reviews", Port: 8080, Source: "east", TraceID: make([]byte, 16)},
		{Kind: KindProbe},
	} {
		b, _ := AppendHeader(nil, &h)
		f.Add(b)
	}
	f.Add([]byte{1, 1, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := ReadHeader(bytes.NewReader(b), nil)
		if err != nil {
			if !errors.Is(err, ErrHeader) {
				t.Fatalf("error %v does not match ErrHeader", err)
			}
			return
		}
		// Whatever decodes re-encodes, and decodes the same.
		enc, err := AppendHeader(nil, h)
		if err != nil {
			t.Fatalf("decoded %+v does not encode: %v", h, err)
		}
		h2, err := DecodeHeader(enc)
		if err != nil || !reflect.DeepEqual(h, h2) {
			t.Fatalf("re-decode %+v, %v; want %+v", h2, err, h)
		}
	})
}
