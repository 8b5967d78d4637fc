package testenv

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
)

// GatewayPolicy is one traffic policy as a gateway holds it, from its
// /policies: the revision in force (0: none) and the latest revision it
// rejected, with why (the last good one stays in force).
type GatewayPolicy struct {
	Name             string `json:"name"`
	Service          string `json:"service"`
	Revision         uint64 `json:"revision"`
	RejectedRevision uint64 `json:"rejectedRevision"`
	Error            string `json:"error"`
}

// Policies returns every traffic policy the gateway was sent, from its
// /policies.
func (g *Gateway) Policies(ctx context.Context) ([]GatewayPolicy, error) {
	b, err := httpGet(ctx, http.DefaultClient, "http://"+g.metrics+"/policies", "")
	if err != nil {
		return nil, err
	}
	var ps []GatewayPolicy
	if err := json.Unmarshal(b, &ps); err != nil {
		return nil, fmt.Errorf("testenv: %s/gateway /policies: %w", g.cluster, err)
	}
	return ps, nil
}

// Policy returns the policy called name as the gateway holds it, and
// false when it holds none of that name.
func (g *Gateway) Policy(ctx context.Context, name string) (GatewayPolicy, bool, error) {
	ps, err := g.Policies(ctx)
	if err != nil {
		return GatewayPolicy{}, false, err
	}
	for _, p := range ps {
		if p.Name == name {
			return p, true, nil
		}
	}
	return GatewayPolicy{}, false, nil
}
