package agent

import (
	"bytes"
	"errors"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/meshfed/meshfed/federation"
)

// FuzzParseFileCatalog feeds the file source's parser arbitrary documents.
// It must never panic, and a document it accepts must:
//   - turn into a catalog and gateway services without panicking, every
//     exported service passing the export validation the hub applies;
//   - give every gateway endpoint target ports in 1..65535 (the addresses
//     it accepted are host:port);
//   - survive a round trip: encoding the parsed catalog and parsing it
//     again is accepted and encodes to the same bytes.
//
// The seeds (the cases below and testdata/fuzz/FuzzParseFileCatalog) run in
// every `go test`; `go test ./agent -run '^$' -fuzz FuzzParseFileCatalog
// -fuzztime 30s` searches further.
func FuzzParseFileCatalog(f *testing.F) {
	for _, seed := range []string{
		reviewsCatalog,
		"services: []\n",
		"services:\n- {namespace: default, name: a, ports: [{port: 80, protocol: QUIC}]}\n",
		"services:\n- {namespace: d, name: a, ports: [{port: 0, protocol: TCP}]}\n",
		"services:\n- {namespace: d, name: a, ports: [{port: 80, protocol: TCP}], endpoints: [{address: nope}]}\n",
		"services:\n- namespace: d\n  name: dns\n  export: true\n  ports: [{name: dns-tcp, port: 53, protocol: TCP}, {name: dns-udp, port: 53, protocol: UDP}]\n" +
			"  endpoints:\n  - {address: '[::1]:5353', ports: {dns-udp: 5354}, ready: true, serving: false, terminating: true}\n",
		"services:\n- {namespace: d, name: a, export: true, ports: [{name: h, port: 80, protocol: HTTP, appProtocol: http}], " +
			"endpoints: [{address: '10.0.0.1:8080', zone: z, labels: {a: b}, ready: true}]}\n" +
			"- {namespace: d, name: a, ports: [{port: 80, protocol: TCP}]}\n",
		"services:\n- {namespace: d, name: a, ports: [{name: h, port: 80, protocol: HTTP}], endpoints: [{address: '1.2.3.4:80', ports: {x: 1}}]}\n",
		// Once accepted, with target port 0 for the gateway.
		"services:\n- {namespace: d, name: a, export: true, ports: [{name: h, port: 80, protocol: HTTP}], endpoints: [{address: '1.2.3.4:+80', ready: true}]}\n",
		"services: {}\n",
		"extra: 1\n",
		"",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, doc []byte) {
		c, err := ParseFileCatalog(doc)
		if err != nil {
			if c != nil {
				t.Fatalf("ParseFileCatalog returned a catalog and an error: %v", err)
			}
			return
		}
		cat := c.catalog()
		for key, e := range cat.exports {
			if err := validateExport("export", e); err != nil {
				t.Fatalf("accepted service %s fails the export validation: %v", key, err)
			}
		}
		for _, s := range c.Services {
			for _, ep := range s.local().GetEndpoints() {
				for _, p := range ep.GetPorts() {
					if p.GetPort() < 1 || p.GetPort() > 65535 {
						t.Fatalf("service %s/%s endpoint %s: target port %d of %q, want 1..65535",
							s.Namespace, s.Name, ep.GetAddress(), p.GetPort(), p.GetName())
					}
				}
			}
		}
		enc, err := yaml.Marshal(c)
		if err != nil {
			t.Fatalf("encoding an accepted catalog: %v", err)
		}
		back, err := ParseFileCatalog(enc)
		if err != nil {
			var fe *federation.FieldError
			errors.As(err, &fe)
			t.Fatalf("the encoded catalog is refused: %v (field %v)\n%s", err, fe, enc)
		}
		enc2, err := yaml.Marshal(back)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(enc, enc2) {
			t.Fatalf("round trip changed the catalog:\n%s\nthen\n%s", enc, enc2)
		}
	})
}
