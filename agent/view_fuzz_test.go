package agent

import (
	"testing"

	"google.golang.org/protobuf/proto"

	fedv1 "github.com/meshfed/meshfed/federation/v1"
)

// FuzzDecodeHubState feeds the decoder of the agent's cached hub state
// (<data-dir>/hubstate.pb, and the meshfed-hub-state ConfigMaps once
// unpacked) arbitrary bytes. The file outlives agent versions and may be
// truncated or corrupted on disk, so decoding must never panic, and a state
// it accepts must:
//   - have a revision (the agent resumes the hub stream from it);
//   - encode again, and decode from that encoding to the same state (as
//     protobuf messages: the bytes may differ, map fields are encoded in
//     no fixed order), so a restart resumes from what was cached.
//
// The seeds run in every `go test`; `go test ./agent -run '^$' -fuzz
// FuzzDecodeHubState -fuzztime 30s` searches further.
func FuzzDecodeHubState(f *testing.F) {
	v := newView()
	v.apply(&fedv1.SyncDelta{Revision: 42, Reset_: true,
		Clusters: []*fedv1.ClusterRecord{{Name: "east"}, {Name: "west"}},
		Exports: []*fedv1.ExportRecord{
			{Cluster: "east", Service: svc("default", "reviews", 8080), CreateRevision: 3},
			{Cluster: "west", Service: svc("default", "reviews", 8080), CreateRevision: 7},
			{Cluster: "west", Service: svc("shop", "cart", 9090), CreateRevision: 9},
		},
		Bundles:  []*fedv1.TrustBundle{{TrustDomain: "east.example"}},
		Policies: []*fedv1.TrafficPolicy{{Name: "default/reviews"}},
	})
	full, err := encodeView(v)
	if err != nil {
		f.Fatal(err)
	}
	empty, err := encodeView(&view{revision: 1, clusters: map[string]*fedv1.ClusterRecord{},
		exports: map[exportKey]*fedv1.ExportRecord{}, bundles: map[string]*fedv1.TrustBundle{}, policies: map[string]*fedv1.TrafficPolicy{}})
	if err != nil {
		f.Fatal(err)
	}
	// Two records with the same key, and a removal in a reset: what a
	// hand-edited or foreign file could hold.
	odd, err := proto.Marshal(&fedv1.SyncDelta{Revision: 5, Reset_: true,
		Exports:        []*fedv1.ExportRecord{{Cluster: "a", Service: svc("d", "s", 1)}, {Cluster: "a", Service: svc("d", "s", 2)}},
		RemovedExports: []*fedv1.ExportRef{{Cluster: "a", Service: "d/s"}},
	})
	if err != nil {
		f.Fatal(err)
	}
	for _, seed := range [][]byte{
		full,
		empty,
		append(append([]byte(nil), full[:5]...), odd...),
		full[:len(full)/2],
		full[:5],
		[]byte("MFHS"),
		append([]byte("MFHS\x02"), full[5:]...),
		append([]byte("MFHS\x01"), 0x08, 0x00), // revision 0
		[]byte("not a state file"),
		nil,
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := decodeView(b)
		if err != nil {
			if got != nil {
				t.Fatalf("decodeView returned a view and an error: %v", err)
			}
			return
		}
		if got.revision == 0 {
			t.Fatal("accepted a hub state without a revision")
		}
		enc, err := encodeView(got)
		if err != nil {
			t.Fatalf("encoding an accepted hub state: %v", err)
		}
		back, err := decodeView(enc)
		if err != nil {
			t.Fatalf("the re-encoded hub state is refused: %v", err)
		}
		if !proto.Equal(got.asDelta(), back.asDelta()) {
			t.Fatalf("round trip changed the hub state:\n%v\nthen\n%v", got.asDelta(), back.asDelta())
		}
	})
}
