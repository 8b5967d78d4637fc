package policy

import (
	"bytes"
	"reflect"
	"testing"
)

// FuzzDecode: Decode never panics, and whatever it accepts compiles and
// re-marshals to bytes that decode to an equal policy and marshal to the
// same bytes.
// Seeds are in testdata/fuzz/FuzzDecode.
func FuzzDecode(f *testing.F) {
	f.Add([]byte(issueExample))
	full, err := Marshal(fullPolicy())
	if err != nil {
		f.Fatal(err)
	}
	f.Add(full)
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := Decode(data)
		if err != nil {
			if p != nil {
				t.Fatalf("Decode returned a policy and the error %v", err)
			}
			return
		}
		if _, err := Compile(p); err != nil {
			t.Fatalf("Compile of a decoded policy: %v", err)
		}
		b, err := Marshal(p)
		if err != nil {
			t.Fatalf("Marshal of a decoded policy: %v", err)
		}
		p2, err := Decode(b)
		if err != nil {
			t.Fatalf("Decode(Marshal(p)): %v\n%s", err, b)
		}
		if !reflect.DeepEqual(p, p2) {
			t.Fatalf("Decode(Marshal(p)) != p\n%+v\n%+v", p, p2)
		}
		b2, err := Marshal(p2)
		if err != nil || !bytes.Equal(b, b2) {
			t.Fatalf("Marshal is not stable: %v\n%s\n%s", err, b, b2)
		}
	})
}
