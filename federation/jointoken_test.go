package federation

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
)

func testJoinToken() JoinToken {
	secret := make([]byte, JoinTokenSecretSize)
	for i := range secret {
		secret[i] = byte(i * 7)
	}
	return JoinToken{
		ID:            "0123456789abcdef",
		Secret:        secret,
		Cluster:       MustClusterName("east"),
		CAFingerprint: strings.Repeat("ab", 32),
		Addrs:         []string{"hub-0.example.org:7400", "10.0.0.2:7400", "[fd00::3]:7400"},
	}
}

// encodeTokenDoc frames an arbitrary JSON document as a join token.
func encodeTokenDoc(doc string) string {
	return JoinTokenPrefix + base64.RawURLEncoding.EncodeToString([]byte(doc))
}

// encodeTokenWire frames a wire struct, after mutate, as a join token.
func encodeTokenWire(t testing.TB, mutate func(w *joinTokenWire)) string {
	t.Helper()
	tok := testJoinToken()
	w := joinTokenWire{
		ID: tok.ID, Secret: base64.RawURLEncoding.EncodeToString(tok.Secret),
		Cluster: tok.Cluster.String(), FP: tok.CAFingerprint, Addrs: tok.Addrs,
	}
	if mutate != nil {
		mutate(&w)
	}
	b, err := json.Marshal(w)
	if err != nil {
		t.Fatal(err)
	}
	return encodeTokenDoc(string(b))
}

func joinTokensEqual(a, b JoinToken) bool {
	return a.ID == b.ID && bytes.Equal(a.Secret, b.Secret) && a.Cluster == b.Cluster &&
		a.CAFingerprint == b.CAFingerprint && slices.Equal(a.Addrs, b.Addrs)
}

func TestJoinTokenRoundTrip(t *testing.T) {
	tok := testJoinToken()
	s := tok.Encode()
	if !strings.HasPrefix(s, JoinTokenPrefix) {
		t.Fatalf("Encode() = %q, want prefix %q", s, JoinTokenPrefix)
	}
	for _, in := range []string{s, "  " + s + "\n"} {
		got, err := ParseJoinToken(in)
		if err != nil {
			t.Fatalf("ParseJoinToken(%q): %v", in, err)
		}
		if !joinTokensEqual(got, tok) {
			t.Errorf("ParseJoinToken(String()) = %#v, want %#v", got, tok)
		}
	}
	// One spelling per token: an upper-case fingerprint is not canonical.
	upper := encodeTokenWire(t, func(w *joinTokenWire) { w.FP = strings.ToUpper(w.FP) })
	if _, err := ParseJoinToken(upper); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "token.fp") {
		t.Fatalf("upper-case fingerprint: %v, want an error on token.fp", err)
	}
	// The limits themselves are accepted.
	maxAddrs := encodeTokenWire(t, func(w *joinTokenWire) {
		w.Addrs = nil
		for i := range MaxJoinTokenAddrs {
			w.Addrs = append(w.Addrs, fmt.Sprintf("10.0.0.%d:7400", i))
		}
	})
	if _, err := ParseJoinToken(maxAddrs); err != nil {
		t.Errorf("%d addresses: %v", MaxJoinTokenAddrs, err)
	}
}

func TestParseJoinTokenRejects(t *testing.T) {
	wire := func(mutate func(w *joinTokenWire)) string { return encodeTokenWire(t, mutate) }
	addrs := func(n int) []string {
		out := make([]string, n)
		for i := range out {
			out[i] = fmt.Sprintf("10.0.0.%d:7400", i)
		}
		return out
	}
	tests := []struct {
		name  string
		in    string
		field string
	}{
		{"empty", "", "token.prefix"},
		{"no prefix", strings.TrimPrefix(testJoinToken().Encode(), JoinTokenPrefix), "token.prefix"},
		{"other version", "mfjoin2." + strings.TrimPrefix(testJoinToken().Encode(), JoinTokenPrefix), "token.prefix"},
		{"too long", JoinTokenPrefix + strings.Repeat("A", MaxJoinTokenLength), "token.length"},
		{"not base64url", JoinTokenPrefix + "not*base64", "token.encoding"},
		{"padded base64", testJoinToken().Encode() + "==", "token.encoding"},
		{"not json", encodeTokenDoc("hello"), "token.encoding"},
		{"json array", encodeTokenDoc("[]"), "token.encoding"},
		{"unknown field", encodeTokenDoc(`{"id":"0123456789abcdef","x":1}`), "token.encoding"},
		{"wrong type", encodeTokenDoc(`{"id":7}`), "token.encoding"},
		{"id empty", wire(func(w *joinTokenWire) { w.ID = "" }), "token.id"},
		{"id short", wire(func(w *joinTokenWire) { w.ID = "0123456789abcde" }), "token.id"},
		{"id long", wire(func(w *joinTokenWire) { w.ID = "0123456789abcdef0" }), "token.id"},
		{"id not hex", wire(func(w *joinTokenWire) { w.ID = "0123456789abcdeg" }), "token.id"},
		{"secret empty", wire(func(w *joinTokenWire) { w.Secret = "" }), "token.secret"},
		{"secret short", wire(func(w *joinTokenWire) { w.Secret = base64.RawURLEncoding.EncodeToString(make([]byte, 31)) }), "token.secret"},
		{"secret long", wire(func(w *joinTokenWire) { w.Secret = base64.RawURLEncoding.EncodeToString(make([]byte, 33)) }), "token.secret"},
		{"secret std base64", wire(func(w *joinTokenWire) { w.Secret = base64.StdEncoding.EncodeToString(make([]byte, 32)) }), "token.secret"},
		{"cluster empty", wire(func(w *joinTokenWire) { w.Cluster = "" }), "token.cluster"},
		{"cluster upper", wire(func(w *joinTokenWire) { w.Cluster = "East" }), "token.cluster"},
		{"cluster long", wire(func(w *joinTokenWire) { w.Cluster = strings.Repeat("a", MaxNameLength+1) }), "token.cluster"},
		{"fp empty", wire(func(w *joinTokenWire) { w.FP = "" }), "token.fp"},
		{"fp short", wire(func(w *joinTokenWire) { w.FP = strings.Repeat("a", 63) }), "token.fp"},
		{"fp not hex", wire(func(w *joinTokenWire) { w.FP = strings.Repeat("g", 64) }), "token.fp"},
		{"no addrs", wire(func(w *joinTokenWire) { w.Addrs = nil }), "token.a"},
		{"too many addrs", wire(func(w *joinTokenWire) { w.Addrs = addrs(MaxJoinTokenAddrs + 1) }), "token.a"},
		{"addr without port", wire(func(w *joinTokenWire) { w.Addrs = []string{"10.0.0.1:7400", "hub.example.org"} }), "token.a[1]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok, err := ParseJoinToken(tt.in)
			if err == nil {
				t.Fatalf("ParseJoinToken accepted %q (as token %s)", tt.in, tok.ID)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("errors.Is(%v, ErrInvalid) = false", err)
			}
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("error %v (%T) is not a *FieldError", err, err)
			}
			if fe.Field != tt.field {
				t.Errorf("Field = %q, want %q (error: %v)", fe.Field, tt.field, err)
			}
			if !strings.Contains(err.Error(), tt.field) {
				t.Errorf("Error() = %q does not name %s", err.Error(), tt.field)
			}
			if fe.Field == "token.secret" && strings.Contains(err.Error(), "AAAA") {
				t.Errorf("secret error echoes the secret: %v", err)
			}
		})
	}
}

// A token is one document: nothing may follow it, and keys must be spelled
// exactly, so that one token has one encoding.
func TestParseJoinTokenStrictDocument(t *testing.T) {
	doc := mustDecodeTokenDoc(t, encodeTokenWire(t, nil))
	tests := map[string]string{
		"trailing garbage":  doc + "garbage",
		"second document":   doc + `{"id":"x"}`,
		"upper-case key":    strings.Replace(doc, `"id":`, `"ID":`, 1),
		"duplicate cluster": strings.Replace(doc, `"c":"east"`, `"c":"east","c":"west"`, 1),
	}
	for name, d := range tests {
		t.Run(name, func(t *testing.T) {
			tok, err := ParseJoinToken(encodeTokenDoc(d))
			if err == nil {
				t.Fatalf("ParseJoinToken accepted %s (as token %s for cluster %s)", d, tok.ID, tok.Cluster)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("errors.Is(%v, ErrInvalid) = false", err)
			}
		})
	}
}

// Hub addresses are dialled by the joining agent: each needs a host and a
// port in 1..65535. net.SplitHostPort alone accepts all of these.
func TestParseJoinTokenRejectsMalformedAddrs(t *testing.T) {
	for _, addr := range []string{":", ":7400", "hub.example.org:", "hub.example.org:99999", "hub.example.org:-1", "<script>:1", "hub example:7400"} {
		t.Run(addr, func(t *testing.T) {
			in := encodeTokenWire(t, func(w *joinTokenWire) { w.Addrs = []string{addr} })
			tok, err := ParseJoinToken(in)
			if err == nil {
				t.Fatalf("ParseJoinToken accepted hub address %q (token %s)", tok.Addrs[0], tok.ID)
			}
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Field != "token.a[0]" {
				t.Errorf("error %v, want a *FieldError on token.a[0]", err)
			}
		})
	}
}

// Addresses are checked as host:port, so nothing that JSON would escape
// (and so grow past MaxJoinTokenLength on re-encoding) is accepted.
func TestJoinTokenRejectsEscapableAddrs(t *testing.T) {
	addr := strings.Repeat("<", 2800) + ":1"
	in := encodeTokenWire(t, func(w *joinTokenWire) { w.Addrs = []string{addr} })
	in = encodeTokenDoc(strings.ReplaceAll(mustDecodeTokenDoc(t, in), `\u003c`, "<"))
	if _, err := ParseJoinToken(in); err == nil {
		t.Fatal("token with '<' in a hub address was accepted")
	}
}

func TestJoinTokenStringRedactsSecret(t *testing.T) {
	tok := testJoinToken()
	s := fmt.Sprint(tok)
	if strings.Contains(s, base64.RawURLEncoding.EncodeToString(tok.Secret)) || strings.Contains(s, JoinTokenPrefix) {
		t.Fatalf("String() leaks the secret: %q", s)
	}
	if !strings.Contains(s, tok.ID) {
		t.Fatalf("String() = %q, want the token ID", s)
	}
}

func mustDecodeTokenDoc(t testing.TB, s string) string {
	t.Helper()
	raw, err := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(s, JoinTokenPrefix))
	if err != nil {
		t.Fatal(err)
	}
	return string(raw)
}

func FuzzParseJoinToken(f *testing.F) {
	valid := testJoinToken().Encode()
	f.Add(valid)
	f.Add(" " + valid + "\n")
	f.Add(JoinTokenPrefix)
	f.Add(JoinTokenPrefix + "e30") // {}
	f.Add(valid[:len(valid)-3])
	f.Add("mfjoin2." + valid[len(JoinTokenPrefix):])
	f.Add(encodeTokenDoc(`{"id":"0123456789ABCDEF","s":"` + strings.Repeat("A", 43) + `","c":"a","fp":"` + strings.Repeat("F", 64) + `","a":[":1"]}`))
	f.Add(encodeTokenDoc(`{"id":"0123456789abcdef","s":"","c":"east","fp":"","a":[],"x":null}`))
	f.Fuzz(func(t *testing.T, s string) {
		tok, err := ParseJoinToken(s)
		if err != nil {
			var fe *FieldError
			if !errors.Is(err, ErrInvalid) || !errors.As(err, &fe) || !strings.HasPrefix(fe.Field, "token.") {
				t.Fatalf("ParseJoinToken(%q) = %v (%T), want a *FieldError on token.*", s, err, err)
			}
			return
		}
		again := tok.Encode()
		tok2, err := ParseJoinToken(again)
		if err != nil {
			t.Fatalf("accepted %q, but its re-encoding %q does not parse: %v", s, again, err)
		}
		if !joinTokensEqual(tok, tok2) {
			t.Fatalf("re-encoding changed the token: %#v -> %#v", tok, tok2)
		}
		if tok2.Encode() != again {
			t.Fatalf("String() is not canonical: %q vs %q", tok2.Encode(), again)
		}
	})
}
