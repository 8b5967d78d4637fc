package agent

import (
	"context"
	"fmt"
	"slices"

	authnv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// DefaultGatewayServiceAccount is the ServiceAccount (in the agent's
// namespace) whose tokens authenticate gateways in-cluster.
const DefaultGatewayServiceAccount = "meshfed-gateway"

// GatewayTokenAudience is the audience of the ServiceAccount tokens that
// gateways present (a projected token for this audience, not the API
// server's): a token handed to the agent is no API credential.
const GatewayTokenAudience = "meshfed-agent"

// maxServiceAccountToken bounds a token in SignSVID.
const maxServiceAccountToken = 16 << 10

// tokenReviewer authenticates a gateway by its Kubernetes ServiceAccount
// token. The gateway API calls it from SignSVID's goroutine.
type tokenReviewer interface {
	// review returns nil if token belongs to the gateways'
	// ServiceAccount, else an error saying why (for the caller).
	review(ctx context.Context, token string) error
}

// kubeTokenReviewer checks tokens with a TokenReview against the
// cluster's API server: the token must be valid and belong to
// system:serviceaccount:<namespace>:<name>.
type kubeTokenReviewer struct {
	cs       kubernetes.Interface
	username string
}

var _ tokenReviewer = (*kubeTokenReviewer)(nil)

func newKubeTokenReviewer(cs kubernetes.Interface, namespace, serviceAccount string) *kubeTokenReviewer {
	return &kubeTokenReviewer{cs: cs, username: "system:serviceaccount:" + namespace + ":" + serviceAccount}
}

func (r *kubeTokenReviewer) review(ctx context.Context, token string) error {
	tr, err := r.cs.AuthenticationV1().TokenReviews().Create(ctx, &authnv1.TokenReview{Spec: authnv1.TokenReviewSpec{
		Token: token, Audiences: []string{GatewayTokenAudience}}}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("token review: %w", err)
	}
	if !tr.Status.Authenticated {
		if tr.Status.Error != "" {
			return fmt.Errorf("not authenticated: %s", tr.Status.Error)
		}
		return fmt.Errorf("not authenticated")
	}
	if !slices.Contains(tr.Status.Audiences, GatewayTokenAudience) {
		return fmt.Errorf("the token is not for audience %q", GatewayTokenAudience)
	}
	if tr.Status.User.Username != r.username {
		return fmt.Errorf("the token is %s's, not %s's", tr.Status.User.Username, r.username)
	}
	return nil
}
