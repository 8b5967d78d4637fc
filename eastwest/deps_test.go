package eastwest

import (
	"os/exec"
	"strings"
	"testing"
)

// TestImportsOnlyTheDataPlaneFloor checks the whole dependency closure of
// eastwest (not only its direct imports): the standard library, quic-go,
// memberlist, Prometheus, federation, gateway and trust, and what those
// pull in; never the hub, the agent, testenv, client-go or Raft.
func TestImportsOnlyTheDataPlaneFloor(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	forbidden := []string{
		"github.com/meshfed/meshfed/hub",
		"github.com/meshfed/meshfed/agent",
		"github.com/meshfed/meshfed/testenv",
		"github.com/meshfed/meshfed/internal",
		"k8s.io/",
		"sigs.k8s.io/",
		"github.com/hashicorp/raft",
		"go.etcd.io/",
	}
	allowedOurs := []string{
		"github.com/meshfed/meshfed/eastwest",
		"github.com/meshfed/meshfed/federation",
		"github.com/meshfed/meshfed/gateway",
		"github.com/meshfed/meshfed/trust",
	}
	n := 0
	for _, p := range strings.Fields(string(out)) {
		n++
		for _, f := range forbidden {
			if strings.HasPrefix(p, f) {
				t.Errorf("eastwest depends on %s", p)
			}
		}
		if strings.HasPrefix(p, "github.com/meshfed/meshfed/") {
			ok := false
			for _, a := range allowedOurs {
				ok = ok || p == a || strings.HasPrefix(p, a+"/")
			}
			if !ok {
				t.Errorf("eastwest depends on %s, outside federation, gateway and trust", p)
			}
		}
	}
	if n < 10 {
		t.Fatalf("go list -deps printed %d packages; the check would pass vacuously", n)
	}
}
