package testenv

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
)

// ErrNoLeader is returned by [Hub.Leader] while the hub knows no leader.
var ErrNoLeader = errors.New("testenv: the hub has no leader")

// Leader returns the server that the hub reports as its Raft leader
// (`meshfed hub status`, asked of a running server), or ErrNoLeader.
func (h *Hub) Leader(ctx context.Context) (*HubServer, error) {
	out, err := h.Command(ctx, "hub", "status", "-o", "json")
	if err != nil {
		return nil, err
	}
	var st struct {
		Leader string `json:"leader"`
	}
	if err := json.Unmarshal(out, &st); err != nil {
		return nil, fmt.Errorf("testenv: meshfed hub status -o json: %w: %s", err, out)
	}
	if st.Leader == "" {
		return nil, ErrNoLeader
	}
	for _, s := range h.servers {
		if s.name == st.Leader {
			return s, nil
		}
	}
	return nil, fmt.Errorf("testenv: the hub reports leader %q, no server of this hub", st.Leader)
}
