package policy_test

import (
	"fmt"
	"net/http"

	"github.com/meshfed/meshfed/federation/policy"
)

// A gateway compiles a policy once and consults it per request.
func Example() {
	p, err := policy.Decode([]byte(`{"apiVersion":"meshfed.io/v1alpha1","kind":"GlobalTrafficPolicy",
		"metadata":{"name":"reviews"},
		"spec":{"host":"reviews.default","http":[
			{"match":[{"uri":{"prefix":"/v1/"}}],"rewrite":{"uri":"/api/v1/"},"timeout":"5s",
			 "route":[{"destination":{"cluster":"east"},"weight":90},{"destination":{"cluster":"west"},"weight":10}]}]}}`))
	if err != nil {
		fmt.Println(err)
		return
	}
	c, err := policy.Compile(p)
	if err != nil {
		fmt.Println(err)
		return
	}
	r := c.MatchHTTP("GET", "/v1/reviews/1", "reviews.default", http.Header{})
	path, _ := r.Rewrite("/v1/reviews/1", "reviews.default")
	fmt.Println(c.Service(), path, r.Timeout())
	fmt.Println(r.Pick(0.25).Cluster, r.Pick(0.95).Cluster)
	// Output:
	// default/reviews /api/v1/reviews/1 5s
	// east west
}

// Errors name the field path and the bound.
func ExampleDecode_error() {
	_, err := policy.Decode([]byte(`{"apiVersion":"meshfed.io/v1alpha1","kind":"GlobalTrafficPolicy",
		"metadata":{"name":"reviews"},
		"spec":{"host":"reviews.default","http":[{"route":[
			{"destination":{"cluster":"east"},"weight":90},{"destination":{"cluster":"west"},"weight":20}]}]}}`))
	fmt.Println(err)
	// Output:
	// spec.http[0].route: weights must sum to 100, got 110
}
