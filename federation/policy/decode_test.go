package policy

import (
	"bytes"
	"errors"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meshfed/meshfed/federation"
)

// doc wraps spec members (JSON, without braces) in a valid envelope for
// host reviews.default.
func doc(spec string) []byte {
	if spec != "" {
		spec = "," + spec
	}
	return []byte(`{"apiVersion":"meshfed.io/v1alpha1","kind":"GlobalTrafficPolicy","metadata":{"name":"reviews"},"spec":{"host":"reviews.default"` + spec + `}}`)
}

// issueExample is the document of issue 12, in JSON; policyfile's tests
// decode the YAML text itself.
const issueExample = `{"apiVersion":"meshfed.io/v1alpha1","kind":"GlobalTrafficPolicy","metadata":{"name":"reviews"},"spec":{"host":"reviews.default","http":[{"route":[{"destination":{"cluster":"east"},"weight":90},{"destination":{"cluster":"west"},"weight":10}]}]}}`

func TestDecodeIssueExample(t *testing.T) {
	p, err := Decode([]byte(issueExample))
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}
	want := &GlobalTrafficPolicy{
		APIVersion: APIVersion,
		Kind:       Kind,
		Metadata:   Metadata{Name: "reviews"},
		Spec: Spec{
			Host: "reviews.default",
			HTTP: []HTTPRoute{{Route: []HTTPRouteDestination{
				{Destination: Destination{Cluster: "east"}, Weight: 90},
				{Destination: Destination{Cluster: "west"}, Weight: 10},
			}}},
		},
	}
	if !reflect.DeepEqual(p, want) {
		t.Fatalf("Decode = %+v, want %+v", p, want)
	}
	if got := p.Service(); got != federation.MustServiceKey("default/reviews") {
		t.Errorf("Service() = %v, want default/reviews", got)
	}
	b, err := Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != issueExample {
		t.Errorf("Marshal = %s, want the canonical %s", b, issueExample)
	}
}

// TestDecodeRefusesMalformedPolicies: each malformed policy gives exactly
// one error, naming the field path and the bound.
func TestDecodeRefusesMalformedPolicies(t *testing.T) {
	long := strings.Repeat("a", 64)
	tests := []struct {
		name, in  string
		path, msg string
	}{
		{"empty input", ``, "", "the policy is empty"},
		{"not an object", `[1]`, "", "the policy must be a JSON object, got a list"},
		{"syntax error", `{"apiVersion":}`, "", "invalid JSON at byte 14: invalid character '}' looking for beginning of value"},
		{"truncated", `{"apiVersion":"meshfed.io/v1alpha1"`, "", "invalid JSON: unexpected end of input"},
		{"trailing data", string(doc("")) + `{}`, "", "unexpected data after the policy (one policy per document)"},
		{"unknown top-level field", `{"apiVersion":"meshfed.io/v1alpha1","kind":"GlobalTrafficPolicy","metadata":{"name":"reviews"},"spec":{"host":"reviews.default"},"status":{}}`, "status", "unknown field"},
		{"unknown nested field", string(doc(`"http":[{"route":[{"destination":{"cluster":"east"},"wieght":100}]}]`)), "spec.http[0].route[0].wieght", "unknown field"},
		{"field name in the wrong case", string(doc(`"http":[{"route":[{"destination":{"cluster":"east"},"Weight":100}]}]`)), "spec.http[0].route[0].Weight", `unknown field (did you mean "weight"?)`},
		{"duplicate key", `{"apiVersion":"meshfed.io/v1alpha1","apiVersion":"meshfed.io/v1alpha1","kind":"GlobalTrafficPolicy","metadata":{"name":"reviews"},"spec":{"host":"reviews.default"}}`, "apiVersion", "duplicate key"},
		{"string for a number", string(doc(`"http":[{"route":[{"destination":{"cluster":"east"},"weight":"100"}]}]`)), "spec.http[0].route[0].weight", `must be an integer, got the string "100"`},
		{"fractional weight", string(doc(`"http":[{"route":[{"destination":{"cluster":"east"},"weight":99.5},{"destination":{"cluster":"west"},"weight":1}]}]`)), "spec.http[0].route[0].weight", "must be an integer, got 99.5"},
		{"wrong api version", `{"apiVersion":"networking.istio.io/v1","kind":"GlobalTrafficPolicy","metadata":{"name":"reviews"},"spec":{"host":"reviews.default"}}`, "apiVersion", `must be "meshfed.io/v1alpha1", got "networking.istio.io/v1"`},
		{"wrong kind", `{"apiVersion":"meshfed.io/v1alpha1","kind":"VirtualService","metadata":{"name":"reviews"},"spec":{"host":"reviews.default"}}`, "kind", `must be "GlobalTrafficPolicy", got "VirtualService"`},
		{"name too long", `{"apiVersion":"meshfed.io/v1alpha1","kind":"GlobalTrafficPolicy","metadata":{"name":"` + long + `"},"spec":{"host":"reviews.default"}}`, "metadata.name", labelRule + `, got "` + long + `"`},
		{"host without namespace", `{"apiVersion":"meshfed.io/v1alpha1","kind":"GlobalTrafficPolicy","metadata":{"name":"reviews"},"spec":{"host":"reviews"}}`, "spec.host", `must be "name.namespace", two RFC 1123 labels (a-z, 0-9, '-') of 1 to 63 characters, got "reviews"`},
		{"weight over 100", string(doc(`"http":[{"route":[{"destination":{"cluster":"east"},"weight":120},{"destination":{"cluster":"west"},"weight":0}]}]`)), "spec.http[0].route[0].weight", "must be 0 to 100, got 120"},
		{"weights not summing to 100", string(doc(`"http":[{"route":[{"destination":{"cluster":"east"},"weight":90},{"destination":{"cluster":"west"},"weight":20}]}]`)), "spec.http[0].route", "weights must sum to 100, got 110"},
		{"lone destination with weight 50", string(doc(`"http":[{"route":[{"destination":{"cluster":"east"},"weight":50}]}]`)), "spec.http[0].route[0].weight", "must be 100 or unset for a lone destination, got 50"},
		{"empty destination", string(doc(`"http":[{"route":[{"destination":{}}]}]`)), "spec.http[0].route[0].destination", "must set cluster or subset"},
		{"invalid cluster name", string(doc(`"http":[{"route":[{"destination":{"cluster":"East_1"}}]}]`)), "spec.http[0].route[0].destination.cluster", "cluster name " + labelRule + `, got "East_1"`},
		{"unknown subset", string(doc(`"subsets":[{"name":"v1","labels":{"version":"v1"}}],"http":[{"route":[{"destination":{"subset":"v2"}}]}]`)), "spec.http[0].route[0].destination.subset", `names no subset of spec.subsets, got "v2"`},
		{"duplicate subset", string(doc(`"subsets":[{"name":"v1","labels":{"version":"v1"}},{"name":"v1","labels":{"version":"v2"}}]`)), "spec.subsets[1].name", `duplicate subset name "v1" (also spec.subsets[0])`},
		{"subset without labels", string(doc(`"subsets":[{"name":"v1"}]`)), "spec.subsets[0].labels", "must have 1 to 32 labels, got 0"},
		{"bad label value", string(doc(`"subsets":[{"name":"v1","labels":{"version":"-v1"}}]`)), `spec.subsets[0].labels["version"]`, `value must be 0 to 63 characters of a-z, A-Z, 0-9, '-', '_', '.', starting and ending with a letter or digit, got "-v1"`},
		{"too many subsets", string(doc(`"subsets":[` + manySubsets(17) + `]`)), "spec.subsets", "must have at most 16 subsets, got 17"},
		{"regex that does not compile", string(doc(`"http":[{"match":[{"uri":{"regex":"/api/(v1"}}]}]`)), "spec.http[0].match[0].uri.regex", "must be an RE2 regular expression: error parsing regexp: missing closing ): `/api/(v1`"},
		{"regex too long", string(doc(`"http":[{"match":[{"uri":{"regex":"` + strings.Repeat("a", 1025) + `"}}]}]`)), "spec.http[0].match[0].uri.regex", "must be at most 1024 bytes, got 1025"},
		{"Perl lookahead is not RE2", string(doc(`"http":[{"match":[{"headers":{"x-user":{"regex":"(?=admin)"}}}]}]`)), `spec.http[0].match[0].headers["x-user"].regex`, "must be an RE2 regular expression: error parsing regexp: invalid or unsupported Perl syntax: `(?=`"},
		{"two string matchers", string(doc(`"http":[{"match":[{"uri":{"exact":"/a","prefix":"/b"}}]}]`)), "spec.http[0].match[0].uri", "must set exactly one of exact, prefix, regex, got 2"},
		{"present outside headers", string(doc(`"http":[{"match":[{"method":{"present":true}}]}]`)), "spec.http[0].match[0].method.present", "is allowed in header matches only"},
		{"uri prefix without slash", string(doc(`"http":[{"match":[{"uri":{"prefix":"api"}}]}]`)), "spec.http[0].match[0].uri.prefix", `must start with "/", got "api"`},
		{"duplicate header ignoring case", string(doc(`"http":[{"match":[{"headers":{"X-User":{"exact":"a"},"x-user":{"exact":"b"}}}]}]`)), `spec.http[0].match[0].headers["x-user"]`, `duplicate header "x-user" (also "X-User"; names are case-insensitive)`},
		{"header name with a colon", string(doc(`"http":[{"headers":{"request":{"set":{":authority":"x"}}}}]`)), `spec.http[0].headers.request.set[":authority"]`, `header name must be 1 to 256 characters of an HTTP token (no ':', spaces or separators), got ":authority"`},
		{"header value with a newline", string(doc(`"http":[{"headers":{"response":{"add":{"x-a":"a\nb"}}}}]`)), `spec.http[0].headers.response.add["x-a"]`, `value must be at most 4096 bytes without control characters, got "a\nb"`},
		{"timeout too long", string(doc(`"http":[{"timeout":"2h"}]`)), "spec.http[0].timeout", "must be from 1ms to 1h, got 2h"},
		{"timeout negative", string(doc(`"http":[{"timeout":"-1s"}]`)), "spec.http[0].timeout", "must be from 1ms to 1h, got -1s"},
		{"timeout not a duration", string(doc(`"http":[{"timeout":"5"}]`)), "spec.http[0].timeout", `must be a duration such as "5s" or "250ms", got "5"`},
		{"timeout a number", string(doc(`"http":[{"timeout":5}]`)), "spec.http[0].timeout", `must be a duration string such as "5s" or "250ms", got the number 5`},
		{"too many retry attempts", string(doc(`"http":[{"retries":{"attempts":11}}]`)), "spec.http[0].retries.attempts", "must be 0 to 10, got 11"},
		{"unknown retryOn", string(doc(`"http":[{"retries":{"attempts":2,"retryOn":"5xx,timeout"}}]`)), "spec.http[0].retries.retryOn", `condition 1 is "timeout": must be one of 5xx, gateway-error, reset, connect-failure, retriable-4xx, refused-stream, or a status code 200 to 599`},
		{"retryOn status out of range", string(doc(`"http":[{"retries":{"attempts":2,"retryOn":"600"}}]`)), "spec.http[0].retries.retryOn", `condition 0 is "600": must be one of 5xx, gateway-error, reset, connect-failure, retriable-4xx, refused-stream, or a status code 200 to 599`},
		{"abort status out of range", string(doc(`"http":[{"fault":{"abort":{"httpStatus":99,"percentage":{"value":5}}}}]`)), "spec.http[0].fault.abort.httpStatus", "must be an HTTP status code 200 to 599, got 99"},
		{"fault percentage over 100", string(doc(`"http":[{"fault":{"delay":{"fixedDelay":"1s","percentage":{"value":100.5}}}}]`)), "spec.http[0].fault.delay.percentage.value", "must be 0 to 100, got 100.5"},
		{"fault percentage missing", string(doc(`"http":[{"fault":{"abort":{"httpStatus":503}}}]`)), "spec.http[0].fault.abort.percentage", "must be set, {value: 0 to 100}"},
		{"rewrite uri without slash", string(doc(`"http":[{"rewrite":{"uri":"v2"}}]`)), "spec.http[0].rewrite.uri", `must be a path starting with "/", at most 4096 characters without spaces, control characters, '?' or '#', got "v2"`},
		{"failover to the same region", string(doc(`"localityLbSetting":{"failover":[{"from":"us-east1","to":"us-east1"}]}`)), "spec.localityLbSetting.failover[0].to", `must differ from from ("us-east1")`},
		{"failover region invalid", string(doc(`"localityLbSetting":{"failover":[{"from":"us east","to":"us-west1"}]}`)), "spec.localityLbSetting.failover[0].from", regionRule + `, got "us east"`},
		{"unknown failoverPriority label", string(doc(`"localityLbSetting":{"failoverPriority":["topology.istio.io/network"]}`)), "spec.localityLbSetting.failoverPriority[0]", `must be one of "topology.kubernetes.io/region", "topology.kubernetes.io/zone", "meshfed.io/cluster", got "topology.istio.io/network"`},
		{"distribute weights not 100", string(doc(`"localityLbSetting":{"distribute":[{"from":"us-east1/*","to":{"us-east1/*":70,"us-west1/*":20}}]}`)), "spec.localityLbSetting.distribute[0].to", "weights must sum to 100, got 90"},
		{"destination in an excluded cluster", string(doc(`"localityLbSetting":{"excludeClusters":["west"]},"http":[{"route":[{"destination":{"cluster":"west"}}]}]`)), "spec.http[0].route[0].destination.cluster", `cluster "west" is in spec.localityLbSetting.excludeClusters`},
		{"maxEjectionPercent over 100", string(doc(`"outlierDetection":{"maxEjectionPercent":150}`)), "spec.outlierDetection.maxEjectionPercent", "must be 0 to 100, got 150"},
		{"negative consecutiveErrors", string(doc(`"outlierDetection":{"consecutiveErrors":-1}`)), "spec.outlierDetection.consecutiveErrors", "must be 1 to 1000, got -1"},
		{"pool limit too large", string(doc(`"connectionPool":{"tcp":{"maxConnections":2000000}}`)), "spec.connectionPool.tcp.maxConnections", "must be 1 to 1000000, got 2000000"},
		{"tcp port out of range", string(doc(`"tcp":[{"match":[{"port":70000}],"route":[{"destination":{"cluster":"east"}}]}]`)), "spec.tcp[0].match[0].port", "must be 1 to 65535, got 70000"},
		{"allow without denyByDefault", string(doc(`"authorization":{"allow":[{"clusters":["east"]}]}`)), "spec.authorization.allow", "has no effect unless denyByDefault is true"},
		{"empty authorization rule", string(doc(`"authorization":{"denyByDefault":true,"allow":[{}]}`)), "spec.authorization.allow[0]", "must set clusters, trustDomains or serviceAccounts"},
		{"trust domain as URI", string(doc(`"authorization":{"deny":[{"trustDomains":["spiffe://east.meshfed.local"]}]}`)), "spec.authorization.deny[0].trustDomains[0]", `must be a SPIFFE trust domain name (a-z, 0-9, '.', '-', '_'; not a spiffe:// URI), 1 to 255 characters, got "spiffe://east.meshfed.local"`},
		{"service account without namespace", string(doc(`"authorization":{"deny":[{"serviceAccounts":["productpage"]}]}`)), "spec.authorization.deny[0].serviceAccounts[0]", `must be "namespace/name" or "namespace/*" (namespace an RFC 1123 label, name a DNS subdomain of at most 253 characters), got "productpage"`},
		{"too many routes", string(doc(`"http":[` + strings.TrimSuffix(strings.Repeat(`{},`, 101), ",") + `]`)), "spec.http", "must have at most 100 routes, got 101"},
		{"too many destinations", string(doc(`"http":[{"route":[` + manyDestinations(17) + `]}]`)), "spec.http[0].route", "must have at most 16 destinations, got 17"},
		{"too many matches", string(doc(`"http":[{"match":[` + strings.TrimSuffix(strings.Repeat(`{},`, 17), ",") + `]}]`)), "spec.http[0].match", "must have at most 16 entries, got 17"},
		{"input over the size limit", string(doc(`"http":[{"name":"` + strings.Repeat(" ", MaxInputSize) + `"}]`)), "", "the policy is 1048726 bytes, more than the limit of 1048576"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := Decode([]byte(tt.in))
			if err == nil {
				t.Fatalf("Decode accepted the policy: %+v", p)
			}
			if p != nil {
				t.Errorf("Decode returned a policy with the error %v", err)
			}
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("error %v (%T) is not a *FieldError", err, err)
			}
			if fe.Path != tt.path || fe.Msg != tt.msg {
				t.Errorf("error\n  path %q\n  msg  %q\nwant\n  path %q\n  msg  %q\n(full error: %v)", fe.Path, fe.Msg, tt.path, tt.msg, err)
			}
			if err != error(fe) {
				t.Errorf("want exactly one error, got %v", err)
			}
			if !errors.Is(err, federation.ErrInvalid) {
				t.Errorf("error does not match federation.ErrInvalid")
			}
		})
	}
}

// manyDestinations returns n distinct destinations, weights summing to
// 100 when n <= 100.
func manyDestinations(n int) string {
	var b strings.Builder
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`{"destination":{"cluster":"c` + string(rune('a'+i)) + `"}}`)
	}
	return b.String()
}

func manySubsets(n int) string {
	var b strings.Builder
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`{"name":"v` + strconv.Itoa(i) + `","labels":{"a":"b"}}`)
	}
	return b.String()
}

func TestDecodeReportsEveryErrorWithItsPath(t *testing.T) {
	_, err := Decode([]byte(`{"apiVersion":"v1","kind":"GlobalTrafficPolicy","metadata":{"name":"Reviews"},"spec":{"host":"reviews.default","http":[{"route":[{"destination":{"cluster":"east"},"weight":90},{"destination":{"cluster":"west"},"weight":20}]}]}}`))
	var got []string
	for _, e := range unjoin(err) {
		var fe *FieldError
		if !errors.As(e, &fe) {
			t.Fatalf("%v is not a *FieldError", e)
		}
		got = append(got, fe.Path)
	}
	want := []string{"apiVersion", "metadata.name", "spec.http[0].route"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("error paths = %q, want %q (error: %v)", got, want, err)
	}
}

func TestDecodeBoundsTheNumberOfErrors(t *testing.T) {
	_, err := Decode(doc(`"http":[` + strings.TrimSuffix(strings.Repeat(`{"timeout":"2h"},`, 50), ",") + `]`))
	errs := unjoin(err)
	if len(errs) != MaxErrors {
		t.Fatalf("got %d errors, want %d", len(errs), MaxErrors)
	}
	if last := errs[len(errs)-1].Error(); last != "and 31 more errors" {
		t.Errorf("last error = %q, want the count of the rest", last)
	}
}

func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	if err == nil {
		return nil
	}
	return []error{err}
}

// fullPolicy sets every field of the resource.
func fullPolicy() *GlobalTrafficPolicy {
	enabled := false
	pct := func(n int) *int { return &n }
	return &GlobalTrafficPolicy{
		APIVersion: APIVersion,
		Kind:       Kind,
		Metadata: Metadata{
			Name:        "reviews",
			Labels:      map[string]string{"app.kubernetes.io/name": "reviews", "tier": "backend"},
			Annotations: map[string]string{"meshfed.io/owner": "team reviews <reviews@example.org>"},
		},
		Spec: Spec{
			Host: "reviews.default",
			Subsets: []Subset{
				{Name: "v1", Labels: map[string]string{"version": "v1"}},
				{Name: "v2", Labels: map[string]string{"version": "v2", "track": "canary"}},
			},
			LocalityLbSetting: &LocalityLbSetting{
				Enabled:          &enabled,
				Failover:         []LocalityFailover{{From: "us-east1", To: "us-west1"}, {From: "us-west1", To: "us-east1"}},
				FailoverPriority: []string{LabelRegion, LabelZone, LabelCluster},
				ExcludeClusters:  []string{"legacy"},
			},
			OutlierDetection: &OutlierDetection{
				ConsecutiveErrors:  7,
				Interval:           Duration(5 * time.Second),
				BaseEjectionTime:   Duration(90 * time.Second),
				MaxEjectionPercent: pct(0),
				MinHealthPercent:   pct(50),
			},
			ConnectionPool: &ConnectionPool{
				TCP: &TCPSettings{MaxConnections: 100, ConnectTimeout: Duration(1500 * time.Millisecond)},
				HTTP: &HTTPSettings{
					HTTP1MaxPendingRequests: 10, HTTP2MaxRequests: 1000, MaxRequestsPerConnection: 50,
					MaxRetries: 3, IdleTimeout: Duration(time.Hour),
				},
			},
			HTTP: []HTTPRoute{
				{
					Name: "api <v2>",
					Match: []HTTPMatchRequest{
						{
							URI:       &StringMatch{Prefix: "/api/v2/"},
							Method:    &StringMatch{Exact: "GET"},
							Authority: &StringMatch{Regex: `reviews(\..*)?`},
							Headers: map[string]StringMatch{
								"x-canary": {Present: true},
								"X-User":   {Regex: "admin-[0-9]+"},
							},
						},
						{URI: &StringMatch{Exact: "/v2"}},
					},
					Rewrite: &HTTPRewrite{URI: "/", Authority: "reviews-v2.default:9080"},
					Route: []HTTPRouteDestination{
						{Destination: Destination{Cluster: "east", Subset: "v2"}, Weight: 75},
						{Destination: Destination{Subset: "v1"}, Weight: 25},
						{Destination: Destination{Cluster: "west"}},
					},
					Timeout: Duration(10 * time.Second),
					Retries: &HTTPRetry{Attempts: 3, PerTryTimeout: Duration(2 * time.Second), RetryOn: "5xx,reset,409"},
					Fault: &HTTPFaultInjection{
						Delay: &FaultDelay{FixedDelay: Duration(100 * time.Millisecond), Percentage: &Percentage{Value: 0.5}},
						Abort: &FaultAbort{HTTPStatus: 503, Percentage: &Percentage{Value: 0}},
					},
					Headers: &Headers{
						Request:  &HeaderOperations{Set: map[string]string{"x-route": "api"}, Add: map[string]string{"x-trace": "1"}, Remove: []string{"x-debug"}},
						Response: &HeaderOperations{Remove: []string{"server"}},
					},
				},
				{Route: []HTTPRouteDestination{{Destination: Destination{Cluster: "east"}, Weight: 100}}},
			},
			TCP: []TCPRoute{
				{Match: []L4MatchAttributes{{Port: 9080}}, Route: []RouteDestination{{Destination: Destination{Cluster: "east"}, Weight: 60}, {Destination: Destination{Cluster: "west"}, Weight: 40}}},
				{Route: []RouteDestination{{Destination: Destination{Subset: "v1"}}}},
			},
			Authorization: &Authorization{
				DenyByDefault: true,
				Allow: []AuthorizationRule{
					{Clusters: []string{"east", "west"}},
					{TrustDomains: []string{"partner.example.org"}, ServiceAccounts: []string{"shop/checkout", "ops/*"}},
				},
				Deny: []AuthorizationRule{{ServiceAccounts: []string{"default/untrusted"}}},
			},
		},
	}
}

func TestMarshalRoundTripsEveryField(t *testing.T) {
	p := fullPolicy()
	b, err := Marshal(p)
	if err != nil {
		t.Fatalf("Marshal: %v", err)
	}
	got, err := Decode(b)
	if err != nil {
		t.Fatalf("Decode(Marshal(p)): %v\n%s", err, b)
	}
	if !reflect.DeepEqual(got, p) {
		t.Errorf("Decode(Marshal(p)) differs from p:\n got %+v\nwant %+v", got.Spec, p.Spec)
	}
	b2, err := Marshal(got)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b, b2) {
		t.Errorf("Marshal is not stable:\n%s\n%s", b, b2)
	}
	// The canonical form: durations by their largest exact unit, no HTML
	// escaping, a zero percentage written since it is set.
	for _, want := range []string{`"baseEjectionTime":"90s"`, `"connectTimeout":"1500ms"`, `"idleTimeout":"1h"`, `"maxEjectionPercent":0`, `"name":"api <v2>"`, `"percentage":{"value":0}`} {
		if !bytes.Contains(b, []byte(want)) {
			t.Errorf("canonical encoding lacks %s:\n%s", want, b)
		}
	}
}

func TestDecodeNormalizesNullAndEmptyToUnset(t *testing.T) {
	p, err := Decode(doc(`"subsets":[],"http":null,"localityLbSetting":{"failover":[],"excludeClusters":null}`))
	if err != nil {
		t.Fatal(err)
	}
	if p.Spec.Subsets != nil || p.Spec.HTTP != nil || p.Spec.LocalityLbSetting.Failover != nil {
		t.Errorf("empty lists were not normalized to nil: %+v", p.Spec)
	}
	b, err := Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	if want := string(doc(`"localityLbSetting":{}`)); string(b) != want {
		t.Errorf("Marshal = %s, want %s", b, want)
	}
}

func TestMarshalRefusesAnInvalidPolicy(t *testing.T) {
	p := fullPolicy()
	p.Spec.HTTP[0].Route[0].Weight = 80
	_, err := Marshal(p)
	var fe *FieldError
	if !errors.As(err, &fe) || fe.Path != "spec.http[0].route" {
		t.Fatalf("Marshal error = %v, want one on spec.http[0].route", err)
	}
}

func TestDurationCanonicalForm(t *testing.T) {
	for in, want := range map[string]string{
		"1.5s": "1500ms", "60m": "1h", "90s": "90s", "1h30m": "90m", "250ms": "250ms", "2500us": "2500us", "0": "0s",
	} {
		d, err := ParseDuration(in)
		if err != nil {
			t.Fatalf("ParseDuration(%q): %v", in, err)
		}
		if got := d.String(); got != want {
			t.Errorf("Duration(%q).String() = %q, want %q", in, got, want)
		}
		back, err := ParseDuration(d.String())
		if err != nil || back != d {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v", d.String(), back, err, d)
		}
	}
}
