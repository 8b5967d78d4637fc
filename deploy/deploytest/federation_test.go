package deploytest

import (
	"context"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/meshfed/meshfed/testenv"
)

// The federation the API-server tests share (one kube-apiserver for every
// dry-run, and a real hub, agent and gateway to scrape): started by the
// first test that needs it, stopped when the package's tests end.
var shared struct {
	once sync.Once
	fed  *testenv.Federation
	err  error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if shared.fed != nil {
		if err := shared.fed.Close(); err != nil {
			fmt.Fprintln(os.Stderr, "deploytest: closing the federation:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// federation returns the shared federation: one hub server, one cluster
// "east" with the CRDs, a joined agent and a gateway.
func federation(t *testing.T) *testenv.Federation {
	t.Helper()
	shared.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		shared.fed, shared.err = testenv.New(ctx, testenv.Options{
			HubServers: 1,
			Clusters:   []testenv.Cluster{{Name: "east", Region: "us-east", Zone: "us-east-1a"}},
		})
	})
	if shared.err != nil {
		t.Fatal(shared.err)
	}
	return shared.fed
}
