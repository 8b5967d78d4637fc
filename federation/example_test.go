package federation_test

import (
	"errors"
	"fmt"

	"github.com/meshfed/meshfed/federation"
)

func ExampleParseServiceKey() {
	k, err := federation.ParseServiceKey("payments/checkout")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(k.Namespace(), k.Name(), k)

	_, err = federation.ParseServiceKey("payments/Checkout")
	var fe *federation.FieldError
	if errors.As(err, &fe) {
		fmt.Println("invalid field:", fe.WithPrefix("export").Field)
	}
	fmt.Println(errors.Is(err, federation.ErrInvalid))
	// Output:
	// payments checkout payments/checkout
	// invalid field: export.service.name
	// true
}

func ExampleLocality_Proximity() {
	client, _ := federation.ParseLocality("us-east1/us-east1-b/rack1")
	for _, s := range []string{
		"us-east1/us-east1-b/rack1",
		"us-east1/us-east1-b/rack2",
		"us-east1/us-east1-c",
		"eu-west1/eu-west1-a",
	} {
		endpoint, _ := federation.ParseLocality(s)
		fmt.Println(client.Proximity(endpoint), endpoint)
	}
	// Output:
	// 3 us-east1/us-east1-b/rack1
	// 2 us-east1/us-east1-b/rack2
	// 1 us-east1/us-east1-c
	// 0 eu-west1/eu-west1-a
}

func ExampleTrustDomainFromCluster() {
	td := federation.TrustDomainFromCluster(federation.MustClusterName("prod-east"))
	id, err := td.ID("/ns/default/sa/web")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(td)
	fmt.Println(id)
	// Output:
	// prod-east.meshfed.local
	// spiffe://prod-east.meshfed.local/ns/default/sa/web
}

func ExampleNegotiate() {
	local := []string{federation.FeatureSyncAck, federation.FeatureSyncResume}
	remote := []string{"sync.future", federation.FeatureSyncAck}
	shared := federation.NewFeatures(federation.Negotiate(local, remote)...)
	fmt.Println(shared.Names())
	fmt.Println(shared.Has(federation.FeatureSyncResume))
	// Output:
	// [sync.ack]
	// false
}
