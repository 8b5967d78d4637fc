package fsm_test

import (
	"crypto/sha256"
	"fmt"
	"testing"

	"github.com/hashicorp/raft"

	fedv1 "github.com/meshfed/meshfed/federation/v1"
	"github.com/meshfed/meshfed/hub/fsm"
	"github.com/meshfed/meshfed/hub/internal/hubpb"
)

// BenchmarkApplyPutPolicy is the FSM's share of a committed write (what
// BenchmarkCommittedWrites in package hub proposes), bare and wrapped in a
// Request with a fresh ID, as a forwarded or named write is. Each server
// applies every command, so this cost is paid three times per write.
func BenchmarkApplyPutPolicy(b *testing.B) {
	for _, wrapped := range []bool{false, true} {
		b.Run(fmt.Sprintf("request=%v", wrapped), func(b *testing.B) {
			f := newFSM(b)
			logs := make([][]byte, b.N)
			for i := range logs {
				cmd := encode(b, fsm.PutPolicyType, &hubpb.CmdPutPolicy{Policy: &fedv1.TrafficPolicy{
					Name: fmt.Sprintf("p%d", i%16), Service: "default/reviews", Spec: []byte(fmt.Sprintf("r%d", i)),
				}})
				if wrapped {
					fp := sha256.Sum256(cmd)
					var err error
					if cmd, err = fsm.EncodeRequest(fmt.Sprintf("%032x", i), fp[:], int64(i), cmd); err != nil {
						b.Fatal(err)
					}
				}
				logs[i] = cmd
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i, data := range logs {
				res := f.Apply(&raft.Log{Index: uint64(i + 1), Term: 1, Type: raft.LogCommand, Data: data}).(*fsm.Result)
				if res.Err != nil {
					b.Fatal(res.Err)
				}
			}
		})
	}
}
