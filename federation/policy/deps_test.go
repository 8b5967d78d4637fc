package policy

import (
	"os/exec"
	"strings"
	"testing"
)

// TestImportsOnlyFederationAndSpiffeID checks decision 5 of issue 12: the
// package imports only the standard library, federation, federation/v1 and
// go-spiffe's spiffeid, and nothing of Kubernetes anywhere in its closure,
// so that the gateway (eastwest) can import it.
func TestImportsOnlyFederationAndSpiffeID(t *testing.T) {
	out, err := exec.Command("go", "list", "-f", "{{join .Imports \"\\n\"}}", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	allowed := map[string]bool{
		"github.com/meshfed/meshfed/federation":    true,
		"github.com/meshfed/meshfed/federation/v1": true,
		"github.com/spiffe/go-spiffe/v2/spiffeid":  true,
	}
	imports := strings.Fields(string(out))
	if len(imports) < 5 {
		t.Fatalf("go list printed %d imports; the check would pass vacuously", len(imports))
	}
	for _, p := range imports {
		std := !strings.Contains(strings.SplitN(p, "/", 2)[0], ".")
		if !std && !allowed[p] {
			t.Errorf("package policy imports %s", p)
		}
	}
	out, err = exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	for _, p := range strings.Fields(string(out)) {
		if strings.HasPrefix(p, "k8s.io/") || strings.HasPrefix(p, "sigs.k8s.io/") {
			t.Errorf("package policy depends on %s", p)
		}
	}
}
