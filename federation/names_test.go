package federation_test

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/meshfed/meshfed/federation"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// checkFieldError fails t unless err is a *FieldError on field whose message
// names the field and contains bound, and which matches ErrInvalid.
func checkFieldError(t *testing.T, err error, field, value, bound string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got nil error, want error on field %q", field)
	}
	if !errors.Is(err, federation.ErrInvalid) {
		t.Errorf("errors.Is(%v, ErrInvalid) = false", err)
	}
	var fe *federation.FieldError
	if !errors.As(err, &fe) {
		t.Fatalf("error %v (%T) is not a *FieldError", err, err)
	}
	if fe.Field != field {
		t.Errorf("Field = %q, want %q (error: %v)", fe.Field, field, err)
	}
	if fe.Value != value {
		t.Errorf("Value = %q, want %q", fe.Value, value)
	}
	msg := err.Error()
	if !strings.HasPrefix(msg, "federation: "+field+": ") {
		t.Errorf("message %q does not start with %q", msg, "federation: "+field+": ")
	}
	if !strings.Contains(msg, bound) {
		t.Errorf("message %q does not mention the bound %q", msg, bound)
	}
}

func TestFieldErrorMessage(t *testing.T) {
	_, err := federation.ParseClusterName("Bad_Name")
	want := `federation: cluster: "Bad_Name" must be a lowercase RFC 1123 label (a-z, 0-9, '-'; starting and ending with a letter or digit), at most 63 characters`
	if err == nil || err.Error() != want {
		t.Errorf("got  %v\nwant %s", err, want)
	}
}

func TestFieldErrorIs(t *testing.T) {
	_, err := federation.ParseServiceKey("nope")
	wrapped := fmt.Errorf("loading config: %w", err)
	if !errors.Is(wrapped, federation.ErrInvalid) {
		t.Errorf("errors.Is(wrapped, ErrInvalid) = false")
	}
	if errors.Is(err, errors.New("federation: invalid value")) {
		t.Errorf("FieldError matches an unrelated error with the same text")
	}
	var fe *federation.FieldError
	if !errors.As(wrapped, &fe) || fe.Field != "service" {
		t.Errorf("errors.As through wrapping: got %+v", fe)
	}
}

func TestFieldErrorWithPrefix(t *testing.T) {
	_, err := federation.NewLocality("us", "", "a")
	var fe *federation.FieldError
	if !errors.As(err, &fe) {
		t.Fatalf("got %v, want *FieldError", err)
	}
	p := fe.WithPrefix("join")
	if p.Field != "join.locality.zone" {
		t.Errorf("WithPrefix(join).Field = %q, want join.locality.zone", p.Field)
	}
	if !strings.HasPrefix(p.Error(), "federation: join.locality.zone: ") {
		t.Errorf("WithPrefix message = %q", p.Error())
	}
	if fe.Field != "locality.zone" {
		t.Errorf("WithPrefix modified the receiver: Field = %q", fe.Field)
	}
	if !errors.Is(p, federation.ErrInvalid) {
		t.Errorf("prefixed error does not match ErrInvalid")
	}
	if got := fe.WithPrefix("").Field; got != "locality.zone" {
		t.Errorf("WithPrefix(\"\").Field = %q", got)
	}
	if got := fe.WithPrefix("a").WithPrefix("b").Field; got != "b.a.locality.zone" {
		t.Errorf("nested WithPrefix = %q", got)
	}
}

func TestFieldErrorLongValue(t *testing.T) {
	long := strings.Repeat("x", 10000)
	_, err := federation.ParseClusterName(long)
	var fe *federation.FieldError
	if !errors.As(err, &fe) {
		t.Fatalf("got %v, want *FieldError", err)
	}
	if fe.Value != long {
		t.Errorf("Value was truncated to %d bytes", len(fe.Value))
	}
	msg := err.Error()
	if len(msg) > 600 {
		t.Errorf("message is %d bytes, want it truncated", len(msg))
	}
	if !strings.Contains(msg, "(10000 bytes)") || !strings.Contains(msg, "at most 63") {
		t.Errorf("message %q lacks the length or the bound", msg)
	}
}

func TestParseClusterName(t *testing.T) {
	for _, s := range []string{"a", "0", "a1", "prod", "prod-east-1", "1-a", "a--b", strings.Repeat("a", 63)} {
		c, err := federation.ParseClusterName(s)
		if err != nil {
			t.Errorf("ParseClusterName(%q): %v", s, err)
			continue
		}
		if c.String() != s || c.IsZero() {
			t.Errorf("ParseClusterName(%q) = %q, IsZero %v", s, c, c.IsZero())
		}
	}
	for _, s := range []string{
		"", "Bad_Name", "Prod", "-a", "a-", "-", "a.b", "a b", "a/b", "é", "a\x00",
		strings.Repeat("a", 64),
	} {
		t.Run(fmt.Sprintf("%q", s), func(t *testing.T) {
			c, err := federation.ParseClusterName(s)
			checkFieldError(t, err, "cluster", s, "at most 63 characters")
			if !c.IsZero() {
				t.Errorf("returned non-zero value %q with error", c)
			}
		})
	}
}

func TestClusterNameZero(t *testing.T) {
	var c federation.ClusterName
	if !c.IsZero() || c.String() != "" {
		t.Errorf("zero ClusterName: IsZero %v, String %q", c.IsZero(), c)
	}
	if federation.MustClusterName("a") == federation.MustClusterName("b") {
		t.Errorf("distinct names compare equal")
	}
	a1, a2 := federation.MustClusterName("a"), federation.MustClusterName("a")
	if a1 != a2 {
		t.Errorf("equal names compare unequal")
	}
}

func TestMustClusterNamePanics(t *testing.T) {
	defer func() {
		err, _ := recover().(error)
		if !errors.Is(err, federation.ErrInvalid) {
			t.Errorf("recovered %v, want a FieldError", err)
		}
	}()
	federation.MustClusterName("Nope")
	t.Errorf("MustClusterName did not panic")
}

func TestParseTrustDomain(t *testing.T) {
	for _, s := range []string{"a", "example.org", "prod.meshfed.local", "my_td", "a-b.c_d", "0", strings.Repeat("a", 255)} {
		td, err := federation.ParseTrustDomain(s)
		if err != nil {
			t.Errorf("ParseTrustDomain(%q): %v", s, err)
			continue
		}
		if td.String() != s || td.IsZero() {
			t.Errorf("ParseTrustDomain(%q) = %q, IsZero %v", s, td, td.IsZero())
		}
		if want := spiffeid.RequireTrustDomainFromString(s); td.SPIFFE() != want {
			t.Errorf("SPIFFE() = %v, want %v", td.SPIFFE(), want)
		}
	}
	for _, s := range []string{
		"", "Example.org", "spiffe://example.org", "spiffe://example.org/path", "a/b", "a b", "a:1",
		"é", strings.Repeat("a", 256),
	} {
		t.Run(fmt.Sprintf("%q", s), func(t *testing.T) {
			td, err := federation.ParseTrustDomain(s)
			checkFieldError(t, err, "trust_domain", s, "1 to 255 characters")
			if !td.IsZero() {
				t.Errorf("returned non-zero value %q with error", td)
			}
		})
	}
}

func TestTrustDomainFromCluster(t *testing.T) {
	td := federation.TrustDomainFromCluster(federation.MustClusterName("prod-east"))
	if got, want := td.String(), "prod-east.meshfed.local"; got != want {
		t.Errorf("TrustDomainFromCluster = %q, want %q", got, want)
	}
	parsed, err := federation.ParseTrustDomain(td.String())
	if err != nil || parsed != td {
		t.Errorf("ParseTrustDomain(%q) = %v, %v; want equal value", td, parsed, err)
	}
	long := federation.MustClusterName(strings.Repeat("z", federation.MaxNameLength))
	if federation.TrustDomainFromCluster(long).IsZero() {
		t.Errorf("longest cluster name gave a zero trust domain")
	}
	if !federation.TrustDomainFromCluster(federation.ClusterName{}).IsZero() {
		t.Errorf("zero cluster gave a non-zero trust domain")
	}
}

func TestTrustDomainID(t *testing.T) {
	td, err := federation.ParseTrustDomain("example.org")
	if err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]string{
		"":                     "spiffe://example.org",
		"/ns/default/sa/web":   "spiffe://example.org/ns/default/sa/web",
		"/meshfed/gateway/a-1": "spiffe://example.org/meshfed/gateway/a-1",
	} {
		id, err := td.ID(path)
		if err != nil {
			t.Errorf("ID(%q): %v", path, err)
			continue
		}
		if id.String() != want || id.TrustDomain() != td.SPIFFE() {
			t.Errorf("ID(%q) = %v, want %s", path, id, want)
		}
	}
	for _, path := range []string{"ns", "/", "/a/", "/a//b", "/./a", "/a/../b", "/a b", "/é"} {
		t.Run(fmt.Sprintf("%q", path), func(t *testing.T) {
			id, err := td.ID(path)
			checkFieldError(t, err, "spiffe_id.path", path, "SPIFFE ID path")
			if !id.IsZero() {
				t.Errorf("returned non-zero ID %v with error", id)
			}
		})
	}
	_, err = federation.TrustDomain{}.ID("/a")
	checkFieldError(t, err, "trust_domain", "", "must be set")
}

func TestParseServiceKey(t *testing.T) {
	long := strings.Repeat("n", 63)
	for _, tc := range []struct{ in, ns, name string }{
		{"default/web", "default", "web"},
		{"a/b", "a", "b"},
		{"kube-system/kube-dns", "kube-system", "kube-dns"},
		{"0/1", "0", "1"},
		{long + "/" + long, long, long},
	} {
		k, err := federation.ParseServiceKey(tc.in)
		if err != nil {
			t.Errorf("ParseServiceKey(%q): %v", tc.in, err)
			continue
		}
		if k.Namespace() != tc.ns || k.Name() != tc.name || k.String() != tc.in || k.IsZero() {
			t.Errorf("ParseServiceKey(%q) = {%q %q} %q, IsZero %v", tc.in, k.Namespace(), k.Name(), k, k.IsZero())
		}
		n, err := federation.NewServiceKey(tc.ns, tc.name)
		if err != nil || n != k {
			t.Errorf("NewServiceKey(%q, %q) = %v, %v; want %v", tc.ns, tc.name, n, err, k)
		}
	}
	for _, tc := range []struct{ in, field, value, bound string }{
		{"", "service", "", `"namespace/name"`},
		{"web", "service", "web", `"namespace/name"`},
		{"a/b/c", "service", "a/b/c", "exactly one '/'"},
		{"/web", "service.namespace", "", "at most 63 characters"},
		{"ns/", "service.name", "", "at most 63 characters"},
		{"/", "service.namespace", "", "at most 63 characters"},
		{"Default/web", "service.namespace", "Default", "at most 63 characters"},
		{"default/Web", "service.name", "Web", "at most 63 characters"},
		{"default/web_1", "service.name", "web_1", "at most 63 characters"},
		{"-ns/web", "service.namespace", "-ns", "at most 63 characters"},
		{"ns/web.svc", "service.name", "web.svc", "at most 63 characters"},
		{long + "x/web", "service.namespace", long + "x", "at most 63 characters"},
		{"ns/" + long + "x", "service.name", long + "x", "at most 63 characters"},
	} {
		t.Run(fmt.Sprintf("%q", tc.in), func(t *testing.T) {
			k, err := federation.ParseServiceKey(tc.in)
			checkFieldError(t, err, tc.field, tc.value, tc.bound)
			if !k.IsZero() {
				t.Errorf("returned non-zero value %q with error", k)
			}
		})
	}
}

func TestNewServiceKey(t *testing.T) {
	for _, tc := range []struct{ ns, name, field, value string }{
		{"", "web", "service.namespace", ""},
		{"ns", "", "service.name", ""},
		{"", "", "service.namespace", ""},
		{"a/b", "web", "service.namespace", "a/b"},
		{"ns", "a/b", "service.name", "a/b"},
	} {
		_, err := federation.NewServiceKey(tc.ns, tc.name)
		checkFieldError(t, err, tc.field, tc.value, "at most 63 characters")
	}
}

func TestServiceKeyMapKey(t *testing.T) {
	m := map[federation.ServiceKey]int{}
	a, _ := federation.ParseServiceKey("ns/a")
	a2, _ := federation.NewServiceKey("ns", "a")
	b, _ := federation.ParseServiceKey("ns/b")
	m[a]++
	m[a2]++
	m[b]++
	if len(m) != 2 || m[a] != 2 {
		t.Errorf("map = %v, want ns/a:2 ns/b:1", m)
	}
	var zero federation.ServiceKey
	if !zero.IsZero() || zero.String() != "" || zero.Namespace() != "" || zero.Name() != "" {
		t.Errorf("zero ServiceKey = %q", zero)
	}
}

func TestNewLocality(t *testing.T) {
	long := strings.Repeat("L", 128)
	for _, tc := range []struct{ region, zone, subzone, str string }{
		{"us-east1", "", "", "us-east1"},
		{"us-east1", "us-east1-b", "", "us-east1/us-east1-b"},
		{"us-east1", "us-east1-b", "rack_7", "us-east1/us-east1-b/rack_7"},
		{"EU.West", "Z.1", "s", "EU.West/Z.1/s"},
		{long, long, long, long + "/" + long + "/" + long},
	} {
		l, err := federation.NewLocality(tc.region, tc.zone, tc.subzone)
		if err != nil {
			t.Errorf("NewLocality(%q, %q, %q): %v", tc.region, tc.zone, tc.subzone, err)
			continue
		}
		if l.Region() != tc.region || l.Zone() != tc.zone || l.Subzone() != tc.subzone || l.String() != tc.str || l.IsZero() {
			t.Errorf("NewLocality(%q, %q, %q) = {%q %q %q} %q", tc.region, tc.zone, tc.subzone, l.Region(), l.Zone(), l.Subzone(), l)
		}
		p, err := federation.ParseLocality(tc.str)
		if err != nil || p != l {
			t.Errorf("ParseLocality(%q) = %v, %v; want %v", tc.str, p, err, l)
		}
	}
	for _, tc := range []struct{ region, zone, subzone, field, value, bound string }{
		{"", "", "", "locality.region", "", "1 to 128 characters"},
		{"", "z", "", "locality.region", "", "1 to 128 characters"},
		{"us east", "", "", "locality.region", "us east", "1 to 128 characters"},
		{"us/east", "", "", "locality.region", "us/east", "1 to 128 characters"},
		{long + "x", "", "", "locality.region", long + "x", "1 to 128 characters"},
		{"us", "", "s", "locality.zone", "", "when subzone is set"},
		{"us", "z/1", "", "locality.zone", "z/1", "1 to 128 characters"},
		{"us", long + "x", "", "locality.zone", long + "x", "1 to 128 characters"},
		{"us", "z", "ü", "locality.subzone", "ü", "1 to 128 characters"},
		{"us", "z", long + "x", "locality.subzone", long + "x", "1 to 128 characters"},
	} {
		t.Run(fmt.Sprintf("%q/%q/%q", tc.region, tc.zone, tc.subzone), func(t *testing.T) {
			l, err := federation.NewLocality(tc.region, tc.zone, tc.subzone)
			checkFieldError(t, err, tc.field, tc.value, tc.bound)
			if !l.IsZero() {
				t.Errorf("returned non-zero value %q with error", l)
			}
		})
	}
}

func TestParseLocality(t *testing.T) {
	for _, tc := range []struct{ in, field, value, bound string }{
		{"", "locality.region", "", "1 to 128 characters"},
		{"/", "locality.region", "", "1 to 128 characters"},
		{"/z", "locality.region", "", "1 to 128 characters"},
		{"us/", "locality.zone", "", "1 to 128 characters"},
		{"us//s", "locality.zone", "", "1 to 128 characters"},
		{"us/z/", "locality.subzone", "", "1 to 128 characters"},
		{"us/z/s/x", "locality", "us/z/s/x", "at most 3 parts"},
		{"a/b/c/d/e", "locality", "a/b/c/d/e", "at most 3 parts"},
		{"us east/z", "locality.region", "us east", "1 to 128 characters"},
		{"us/z:1", "locality.zone", "z:1", "1 to 128 characters"},
	} {
		t.Run(fmt.Sprintf("%q", tc.in), func(t *testing.T) {
			l, err := federation.ParseLocality(tc.in)
			checkFieldError(t, err, tc.field, tc.value, tc.bound)
			if !l.IsZero() {
				t.Errorf("returned non-zero value %q with error", l)
			}
		})
	}
	var zero federation.Locality
	if !zero.IsZero() || zero.String() != "" {
		t.Errorf("zero Locality: IsZero %v, String %q", zero.IsZero(), zero)
	}
}

func mustLocality(t *testing.T, s string) federation.Locality {
	t.Helper()
	l, err := federation.ParseLocality(s)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func TestLocalityProximity(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want int
	}{
		{"us/z1/s1", "us/z1/s1", 3},
		{"us/z1/s1", "us/z1/s2", 2},
		{"us/z1/s1", "us/z1", 2},
		{"us/z1", "us/z1", 2},
		{"us/z1/s1", "us/z2/s1", 1},
		{"us/z1", "us", 1},
		{"us", "us", 1},
		{"us/z1/s1", "eu/z1/s1", 0},
		{"us", "US", 0},
		{"us/z1/s1", "", 0},
		{"", "", 0},
	} {
		var a, b federation.Locality
		if tc.a != "" {
			a = mustLocality(t, tc.a)
		}
		if tc.b != "" {
			b = mustLocality(t, tc.b)
		}
		if got := a.Proximity(b); got != tc.want {
			t.Errorf("%q.Proximity(%q) = %d, want %d", tc.a, tc.b, got, tc.want)
		}
		if got := b.Proximity(a); got != tc.want {
			t.Errorf("%q.Proximity(%q) = %d, want %d (not symmetric)", tc.b, tc.a, got, tc.want)
		}
	}
}

// proximityRef is a naive reference for Locality.Proximity: the number of
// leading parts that are set on both sides and equal.
func proximityRef(a, b federation.Locality) int {
	pa := []string{a.Region(), a.Zone(), a.Subzone()}
	pb := []string{b.Region(), b.Zone(), b.Subzone()}
	n := 0
	for i := range pa {
		if pa[i] == "" || pa[i] != pb[i] {
			break
		}
		n++
	}
	return n
}

func TestLocalityProximityProperties(t *testing.T) {
	// Every locality over a small alphabet, so that many pairs share parts.
	ls := []federation.Locality{{}}
	for _, r := range []string{"r1", "r2"} {
		for _, z := range []string{"", "z1", "z2"} {
			for _, s := range []string{"", "s1", "s2"} {
				if l, err := federation.NewLocality(r, z, s); err == nil {
					ls = append(ls, l)
				}
			}
		}
	}
	for _, a := range ls {
		for _, b := range ls {
			p := a.Proximity(b)
			if p != b.Proximity(a) {
				t.Errorf("Proximity(%q, %q) is not symmetric", a, b)
			}
			if want := proximityRef(a, b); p != want {
				t.Errorf("%q.Proximity(%q) = %d, reference says %d", a, b, p, want)
			}
			if p < 0 || p > 3 {
				t.Errorf("%q.Proximity(%q) = %d, out of range", a, b, p)
			}
		}
	}
}

// Naive reference grammars for the parsers, used by the property and fuzz
// tests.
var (
	labelRE    = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
	tdRE       = regexp.MustCompile(`^[a-z0-9._-]+$`)
	locPartRE  = `[a-zA-Z0-9._-]{1,128}`
	localityRE = regexp.MustCompile(`^` + locPartRE + `(/` + locPartRE + `(/` + locPartRE + `)?)?$`)
)

func refCluster(s string) bool { return len(s) <= 63 && labelRE.MatchString(s) }

func refServiceKey(s string) bool {
	ns, name, ok := strings.Cut(s, "/")
	return ok && refCluster(ns) && refCluster(name)
}

func refTrustDomain(s string) bool { return len(s) <= 255 && tdRE.MatchString(s) }

func refLocality(s string) bool { return localityRE.MatchString(s) }

// checkParse asserts the contract every parser in the package shares: it
// agrees with the reference grammar, an accepted string is canonical (String
// returns it unchanged, and parsing that again yields an equal value), and a
// rejected string yields a *FieldError and the zero value.
func checkParse[T interface {
	comparable
	String() string
	IsZero() bool
}](t *testing.T, parse func(string) (T, error), ref func(string) bool, s string) {
	t.Helper()
	v, err := parse(s)
	if ok := err == nil; ok != ref(s) {
		t.Fatalf("parse(%q) error = %v, but the reference grammar says valid=%v", s, err, ref(s))
	}
	if err != nil {
		var fe *federation.FieldError
		if !errors.As(err, &fe) || !errors.Is(err, federation.ErrInvalid) {
			t.Fatalf("parse(%q) error %v (%T) is not a *FieldError", s, err, err)
		}
		if !v.IsZero() {
			t.Fatalf("parse(%q) returned non-zero %q with an error", s, v)
		}
		return
	}
	if v.IsZero() {
		t.Fatalf("parse(%q) returned the zero value without error", s)
	}
	if v.String() != s {
		t.Fatalf("parse(%q).String() = %q, want the input back", s, v.String())
	}
	again, err := parse(v.String())
	if err != nil || again != v {
		t.Fatalf("parse(%q) = %v, %v; want %v", v.String(), again, err, v)
	}
}

// randomString draws a string over an alphabet that makes valid and nearly
// valid identifiers likely, with lengths around every bound.
func randomString(r *rand.Rand) string {
	const alphabet = "abz09-._/AZ /é\x00"
	chars := []rune(alphabet)
	var n int
	switch r.IntN(4) {
	case 0:
		n = r.IntN(8)
	case 1:
		n = 60 + r.IntN(8)
	case 2:
		n = 125 + r.IntN(10)
	default:
		n = r.IntN(300)
	}
	var b strings.Builder
	// Bias towards the characters valid everywhere, so long strings are not
	// all rejected for their first odd character.
	for range n {
		if r.IntN(8) == 0 {
			b.WriteRune(chars[r.IntN(len(chars))])
		} else {
			b.WriteByte("abz09"[r.IntN(5)])
		}
	}
	return b.String()
}

func TestParseRoundTripProperty(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for range 20000 {
		s := randomString(r)
		checkParse(t, federation.ParseClusterName, refCluster, s)
		checkParse(t, federation.ParseTrustDomain, refTrustDomain, s)
		checkParse(t, federation.ParseServiceKey, refServiceKey, s)
		checkParse(t, federation.ParseLocality, refLocality, s)
	}
}

var fuzzSeeds = []string{
	"", "a", "prod-east-1", "Bad_Name", "-a", "a-", strings.Repeat("a", 63), strings.Repeat("a", 64),
	"default/web", "/web", "ns/", "a/b/c", "Default/web",
	"us-east1", "us-east1/us-east1-b", "us-east1/us-east1-b/rack_7", "us//s", "us/z/s/x", strings.Repeat("L", 129),
	"example.org", "spiffe://example.org", "é",
}

func FuzzParseClusterName(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		checkParse(t, federation.ParseClusterName, refCluster, s)
	})
}

func FuzzParseTrustDomain(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		checkParse(t, federation.ParseTrustDomain, refTrustDomain, s)
	})
}

func FuzzParseServiceKey(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		checkParse(t, federation.ParseServiceKey, refServiceKey, s)
		if k, err := federation.ParseServiceKey(s); err == nil {
			n, err := federation.NewServiceKey(k.Namespace(), k.Name())
			if err != nil || n != k {
				t.Fatalf("NewServiceKey(%q, %q) = %v, %v; want %v", k.Namespace(), k.Name(), n, err, k)
			}
		}
	})
}

func FuzzParseLocality(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		checkParse(t, federation.ParseLocality, refLocality, s)
		if l, err := federation.ParseLocality(s); err == nil {
			n, err := federation.NewLocality(l.Region(), l.Zone(), l.Subzone())
			if err != nil || n != l {
				t.Fatalf("NewLocality(%q, %q, %q) = %v, %v; want %v", l.Region(), l.Zone(), l.Subzone(), n, err, l)
			}
			if p := l.Proximity(l); p != 1+min(len(l.Zone()), 1)+min(len(l.Subzone()), 1) {
				t.Fatalf("%q.Proximity(itself) = %d", l, p)
			}
		}
	})
}

// Capabilities (capabilities.go).

func TestCapabilityVersionBounds(t *testing.T) {
	if federation.MinCapabilityVersion < 1 || federation.MinCapabilityVersion > federation.CapabilityVersion {
		t.Errorf("MinCapabilityVersion %d must be in [1, CapabilityVersion %d]", federation.MinCapabilityVersion, federation.CapabilityVersion)
	}
}

func TestCheckPeer(t *testing.T) {
	for _, v := range []uint32{federation.MinCapabilityVersion, federation.CapabilityVersion, federation.CapabilityVersion + 1, math.MaxUint32} {
		if err := federation.CheckPeer(v); err != nil {
			t.Errorf("CheckPeer(%d) = %v, want nil", v, err)
		}
	}
	err := federation.CheckPeer(federation.MinCapabilityVersion - 1)
	checkFieldError(t, err, "capabilities.version", "0", "at least 1")
}

func TestNegotiate(t *testing.T) {
	for _, tc := range []struct {
		local, remote, want []string
	}{
		{nil, nil, nil},
		{[]string{federation.FeatureSyncAck}, nil, nil},
		{nil, []string{federation.FeatureSyncAck}, nil},
		{[]string{"a", "b"}, []string{"c", "d"}, nil},
		{
			[]string{federation.FeatureSyncResume, federation.FeatureSyncAck},
			[]string{federation.FeatureSyncAck, "x.future", federation.FeatureSyncResume},
			[]string{federation.FeatureSyncAck, federation.FeatureSyncResume},
		},
		{[]string{"c", "a", "b", "a"}, []string{"b", "b", "c", "z"}, []string{"b", "c"}},
	} {
		local, remote := slices.Clone(tc.local), slices.Clone(tc.remote)
		got := federation.Negotiate(local, remote)
		if !slices.Equal(got, tc.want) || (tc.want == nil && got != nil) {
			t.Errorf("Negotiate(%q, %q) = %#v, want %#v", tc.local, tc.remote, got, tc.want)
		}
		if !slices.Equal(local, tc.local) || !slices.Equal(remote, tc.remote) {
			t.Errorf("Negotiate modified its arguments: %q, %q", local, remote)
		}
		if rev := federation.Negotiate(remote, local); !slices.Equal(rev, got) {
			t.Errorf("Negotiate is not symmetric: %q vs %q", rev, got)
		}
	}
}

func TestFeatures(t *testing.T) {
	var zero federation.Features
	if zero.Has(federation.FeatureSyncAck) || zero.Names() != nil {
		t.Errorf("zero Features is not empty: %q", zero.Names())
	}
	in := []string{federation.FeatureSyncResume, federation.FeatureSyncAck, federation.FeatureSyncResume}
	f := federation.NewFeatures(in...)
	in[0] = "mutated"
	if !f.Has(federation.FeatureSyncAck) || !f.Has(federation.FeatureSyncResume) || f.Has("mutated") || f.Has("") {
		t.Errorf("Has is wrong for %q", f.Names())
	}
	names := f.Names()
	if want := []string{federation.FeatureSyncAck, federation.FeatureSyncResume}; !slices.Equal(names, want) {
		t.Errorf("Names() = %q, want %q", names, want)
	}
	names[0] = "changed"
	if !f.Has(federation.FeatureSyncAck) {
		t.Errorf("modifying the Names() result changed the set")
	}
}
