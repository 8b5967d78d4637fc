package policyfile

import (
	"reflect"
	"testing"

	"github.com/meshfed/meshfed/federation/policy"
)

// FuzzDecode: Decode never panics, returns policies or an error (never
// both), and every policy it returns survives policy.Marshal and
// policy.Decode unchanged. Seeds are in testdata/fuzz/FuzzDecode.
func FuzzDecode(f *testing.F) {
	f.Add([]byte(policy.ExampleReviews))
	f.Fuzz(func(t *testing.T, data []byte) {
		ps, err := Decode(data)
		if err != nil {
			if ps != nil {
				t.Fatalf("Decode returned %d policies and the error %v", len(ps), err)
			}
			return
		}
		if len(ps) == 0 {
			t.Fatal("Decode returned no policy and no error")
		}
		for _, p := range ps {
			b, err := policy.Marshal(p)
			if err != nil {
				t.Fatalf("Marshal of a decoded policy: %v", err)
			}
			p2, err := policy.Decode(b)
			if err != nil || !reflect.DeepEqual(p, p2) {
				t.Fatalf("policy.Decode(Marshal(p)) = %v, %v; want p", p2, err)
			}
		}
	})
}
