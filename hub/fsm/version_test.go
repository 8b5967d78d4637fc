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
	if known != 14 && ProtocolVersion == 1 {
		t.Errorf("protocol version 1 is types 0 to 13, but %d types are known: bump ProtocolVersion for new ones", known)
	}
}
