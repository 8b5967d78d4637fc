package testenv_test

import (
	"context"
	"fmt"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshfed/meshfed/testenv"
)

// Three clusters, each with its own etcd and kube-apiserver, and a hub of
// three `meshfed hub` processes. In a test, use testenv.Start(t, ...), which
// fails the test on error and tears everything down in t.Cleanup.
func Example() {
	ctx := context.Background()
	fed, err := testenv.New(ctx, testenv.Options{
		HubServers: 3,
		Clusters: []testenv.Cluster{
			{Name: "east", Region: "us-east", Zone: "us-east-1a"},
			{Name: "west", Region: "us-west", Zone: "us-west-1a"},
			{Name: "central", Region: "eu-central", Zone: "eu-central-1a"},
		},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer func() {
		if err := fed.Close(); err != nil {
			fmt.Println(err)
		}
	}()

	for _, c := range fed.Clusters() {
		v, err := c.Clientset().Discovery().ServerVersion()
		if err != nil {
			fmt.Println(err)
			return
		}
		// The API server creates its system namespaces right after it is
		// ready; wait for them rather than sleep.
		var names []string
		err = testenv.WaitFor(ctx, 30*time.Second, func(ctx context.Context) error {
			list, err := c.Clientset().CoreV1().Namespaces().List(ctx, metav1.ListOptions{})
			if err != nil {
				return err
			}
			names = names[:0]
			for _, ns := range list.Items {
				names = append(names, ns.Name)
			}
			if len(names) < 4 {
				return fmt.Errorf("namespaces %v", names)
			}
			return nil
		})
		if err != nil {
			fmt.Println(err)
			return
		}
		fmt.Printf("%s: kube-apiserver %s, namespaces %v\n", c.Name(), v.GitVersion, names)
	}
	fmt.Printf("hub: %d servers ready\n", len(fed.Hub().Servers()))

	// Output:
	// east: kube-apiserver v1.36.3, namespaces [default kube-node-lease kube-public kube-system]
	// west: kube-apiserver v1.36.3, namespaces [default kube-node-lease kube-public kube-system]
	// central: kube-apiserver v1.36.3, namespaces [default kube-node-lease kube-public kube-system]
	// hub: 3 servers ready
}
