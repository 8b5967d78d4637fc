package policyfile

import (
	"errors"
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/meshfed/meshfed/federation/policy"
)

func TestDecodeIssueExampleUnchanged(t *testing.T) {
	ps, err := Decode([]byte(policy.ExampleReviews))
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}
	want := &policy.GlobalTrafficPolicy{
		APIVersion: policy.APIVersion,
		Kind:       policy.Kind,
		Metadata:   policy.Metadata{Name: "reviews"},
		Spec: policy.Spec{
			Host: "reviews.default",
			HTTP: []policy.HTTPRoute{{Route: []policy.HTTPRouteDestination{
				{Destination: policy.Destination{Cluster: "east"}, Weight: 90},
				{Destination: policy.Destination{Cluster: "west"}, Weight: 10},
			}}},
		},
	}
	if len(ps) != 1 || !reflect.DeepEqual(ps[0], want) {
		t.Fatalf("Decode = %+v, want [%+v]", ps, want)
	}
}

func policyYAML(name, host string) string {
	return "apiVersion: meshfed.io/v1alpha1\nkind: GlobalTrafficPolicy\nmetadata:\n  name: " + name + "\nspec:\n  host: " + host + "\n"
}

func TestDecodeMultipleDocumentsInOrder(t *testing.T) {
	in := "# policies\n---\n" + policyYAML("reviews", "reviews.default") + "---\n# nothing here\n---\n" +
		`{"apiVersion":"meshfed.io/v1alpha1","kind":"GlobalTrafficPolicy","metadata":{"name":"ratings"},"spec":{"host":"ratings.default"}}` +
		"\n...\n--- \n" + policyYAML("details", "details.shop")
	ps, err := Decode([]byte(in))
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}
	var names []string
	for _, p := range ps {
		names = append(names, p.Metadata.Name)
	}
	if want := []string{"reviews", "ratings", "details"}; !reflect.DeepEqual(names, want) {
		t.Errorf("decoded %q, want %q", names, want)
	}
}

func TestDecodeAcceptsCRLFAndByteOrderMark(t *testing.T) {
	in := "\xef\xbb\xbf" + strings.ReplaceAll(policyYAML("a", "a.default")+"---\n"+policyYAML("b", "b.default"), "\n", "\r\n")
	ps, err := Decode([]byte(in))
	if err != nil || len(ps) != 2 {
		t.Fatalf("Decode = %d policies, %v; want 2", len(ps), err)
	}
}

func TestDecodeIsAllOrNothing(t *testing.T) {
	in := policyYAML("reviews", "reviews.default") + "---\n" + policyYAML("ratings", "ratings.default") +
		"  http:\n  - timeout: 2h\n"
	ps, err := Decode([]byte(in))
	if ps != nil {
		t.Errorf("Decode returned %d policies with an error in document 2", len(ps))
	}
	var de *DocumentError
	if !errors.As(err, &de) || de.Index != 2 || de.Name != "ratings" || de.Line != 8 {
		t.Fatalf("error = %#v, want document 2 (ratings) at line 8", err)
	}
	var fe *policy.FieldError
	if !errors.As(err, &fe) || fe.Path != "spec.http[0].timeout" {
		t.Fatalf("error %v does not carry the field error", err)
	}
	if want := "document 2 (ratings, line 8): spec.http[0].timeout: must be from 1ms to 1h, got 2h"; err.Error() != want {
		t.Errorf("Error() = %q, want %q", err.Error(), want)
	}
}

// TestDecodeReportsErrors: each malformed file gives its exact error,
// prefixed with the document.
func TestDecodeReportsErrors(t *testing.T) {
	good := policyYAML("reviews", "reviews.default")
	tests := []struct {
		name, in, want string
	}{
		{"unknown field", good + "  subset: []\n", "document 1 (reviews, line 1): spec.subset: unknown field"},
		{"unknown field in a flow mapping", good + "  http:\n  - route:\n    - destination: {cluster: east, subsets: v1}\n", "document 1 (reviews, line 1): spec.http[0].route[0].destination.subsets: unknown field"},
		{"duplicate key", good + "  host: ratings.default\n", `document 1 (line 1): invalid YAML: yaml: unmarshal errors:` + "\n" + `  line 7: key "host" already set in map`},
		{"YAML syntax error with the file's line", good + "---\n" + good + "  http: [\n", "document 2 (line 8): invalid YAML: yaml: line 14: did not find expected node content"},
		{"number where a string is expected", good + "  http:\n  - match:\n    - uri: {exact: 1.5}\n", "document 1 (reviews, line 1): spec.http[0].match[0].uri.exact: must be a string, got the number 1.5"},
		{"a list, not a policy", "- a\n- b\n", "document 1 (line 1): the policy must be a JSON object, got a list"},
		{"two errors in two documents", good + "  http: [{timeout: 0.5ms}]\n---\n" + policyYAML("Bad", "ratings.default"),
			"document 1 (reviews, line 1): spec.http[0].timeout: must be from 1ms to 1h, got 500us\n" +
				`document 2 ("Bad", line 9): metadata.name: must be a lowercase RFC 1123 label (a-z, 0-9, '-'; starting and ending with a letter or digit), 1 to 63 characters, got "Bad"`},
		{"two errors in one document", good + "  http: [{timeout: 2h, retries: {attempts: 11}}]\n",
			"document 1 (reviews, line 1): spec.http[0].timeout: must be from 1ms to 1h, got 2h\n" +
				"document 1 (reviews, line 1): spec.http[0].retries.attempts: must be 0 to 10, got 11"},
		{"one host, two policies", good + "---\n" + policyYAML("reviews-2", "reviews.default"), `document 2 (reviews-2, line 8): spec.host: "reviews.default" is also the host of document 1 (reviews); there is one policy per host`},
		{"one name, two policies", good + "---\n" + policyYAML("reviews", "ratings.default"), `document 2 (reviews, line 8): metadata.name: duplicate policy name "reviews" (also document 1)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ps, err := Decode([]byte(tt.in))
			if err == nil {
				t.Fatalf("Decode accepted the file: %d policies", len(ps))
			}
			if ps != nil {
				t.Errorf("Decode returned policies with an error")
			}
			if err.Error() != tt.want {
				t.Errorf("error\n%s\nwant\n%s", err, tt.want)
			}
			var de *DocumentError
			if !errors.As(err, &de) {
				t.Errorf("error is not a *DocumentError")
			}
		})
	}
}

func TestDecodeWithoutDocumentsIsErrNoPolicy(t *testing.T) {
	for _, in := range []string{"", "\n\n", "# only a comment\n---\n---\n", "...\n"} {
		if _, err := Decode([]byte(in)); !errors.Is(err, ErrNoPolicy) {
			t.Errorf("Decode(%q) = %v, want ErrNoPolicy", in, err)
		}
	}
}

// TestDocsExamplesDecode keeps docs/policy.md true: every YAML block in it
// decodes. A block that is not a whole document is a fragment of spec.
func TestDocsExamplesDecode(t *testing.T) {
	md, err := os.ReadFile("../../../docs/policy.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := 0
	for _, part := range strings.Split(string(md), "```yaml\n")[1:] {
		block, _, ok := strings.Cut(part, "```")
		if !ok {
			t.Fatalf("unterminated yaml block: %.40q", part)
		}
		blocks++
		in := block
		if !strings.HasPrefix(block, "apiVersion:") {
			in = policyYAML("example", "reviews.default") + "  " + strings.ReplaceAll(strings.TrimSuffix(block, "\n"), "\n", "\n  ") + "\n"
		}
		if _, err := Decode([]byte(in)); err != nil {
			t.Errorf("docs/policy.md block %d does not decode: %v\n%s", blocks, err, in)
		}
	}
	if blocks < 5 {
		t.Fatalf("found %d yaml blocks in docs/policy.md", blocks)
	}
}
