package fsm

import (
	"math"
	"strings"
	"testing"
)

// Every command type this build knows has the protocol version that
// introduced it, and none is newer than the version this build gossips;
// a type it does not know needs a version no server reaches.
func TestEveryCommandHasAProtocolVersion(t *testing.T) {
	known := 0
	for i := range 256 {
		typ := MessageType(i)
		name := typ.String()
		if strings.HasPrefix(name, "MessageType(") {
			if v := typ.MinVersion(); v != math.MaxInt {
				t.Errorf("unknown %s: MinVersion %d, want none", name, v)
			}
			continue
		}
		if typ&IgnoreUnknownFlag == 0 {
			known++
		}
		if v := typ.MinVersion(); v < 1 || v > ProtocolVersion {
			t.Errorf("%s (%d): MinVersion %d, want 1..ProtocolVersion (%d); a new command needs a new ProtocolVersion", name, i, v, ProtocolVersion)
		}
		if payloadFor(typ) == nil {
			t.Errorf("%s has a name but no payload", name)
		}
	}
	// Each version's types, as released: a new type must come with a new
	// version and a line here.
	byVersion := map[int]int{1: 14, 2: 1, 3: 1, 4: 3, 5: 2}
	want := 0
	for v := 1; v <= ProtocolVersion; v++ {
		want += byVersion[v]
	}
	if known != want {
		t.Errorf("protocol versions 1..%d cover %d types, but %d are known: bump ProtocolVersion for new ones", ProtocolVersion, want, known)
	}
}
