package policy

import (
	"errors"
	"strings"
	"testing"

	"github.com/meshfed/meshfed/federation"
	fedv1 "github.com/meshfed/meshfed/federation/v1"
)

func TestCheckStatusesNamesTheFieldAndTheBound(t *testing.T) {
	ok := []*fedv1.GatewayPolicyStatus{{Name: "reviews", Revision: 4}, {Name: "cart", RejectedRevision: 9, Error: strings.Repeat("e", MaxStatusErrorBytes)}}
	if err := CheckStatuses(ok, 2); err != nil {
		t.Fatalf("valid statuses: %v", err)
	}
	for _, c := range []struct {
		name string
		ss   []*fedv1.GatewayPolicyStatus
		max  int
		want string
	}{
		{"too many", ok, 1, "2 policy statuses, at most 1"},
		{"not a name", []*fedv1.GatewayPolicyStatus{{Name: "Reviews"}}, 5, "[0].name: " + labelRule + `, got "Reviews"`},
		{"no name", []*fedv1.GatewayPolicyStatus{{Name: "a"}, {}}, 5, "[1].name: " + labelRule + `, got ""`},
		{"twice", []*fedv1.GatewayPolicyStatus{{Name: "a"}, {Name: "a"}}, 5, `[1].name: "a" is also [0]; one status per policy`},
		{"long error", []*fedv1.GatewayPolicyStatus{{Name: "a", Error: strings.Repeat("e", MaxStatusErrorBytes+1)}}, 5, "[0].error: 257 bytes, at most 256"},
	} {
		err := CheckStatuses(c.ss, c.max)
		var fe *FieldError
		if !errors.As(err, &fe) || err.Error() != c.want || !errors.Is(err, federation.ErrInvalid) {
			t.Errorf("%s: %v, want the *FieldError %q", c.name, err, c.want)
		}
	}
}
