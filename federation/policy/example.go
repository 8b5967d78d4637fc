package policy

// ExampleReviews is the GlobalTrafficPolicy of the issue that introduced
// the resource, byte for byte: 90% of reviews.default's HTTP requests to
// cluster east, 10% to west. The CLI's help shows it, and the tests and
// docs apply it unchanged.
const ExampleReviews = `apiVersion: meshfed.io/v1alpha1
kind: GlobalTrafficPolicy
metadata:
  name: reviews
spec:
  host: reviews.default
  http:
  - route:
    - destination: {cluster: east}
      weight: 90
    - destination: {cluster: west}
      weight: 10
`
