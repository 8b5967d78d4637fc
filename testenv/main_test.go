package testenv

import (
	"context"
	"errors"
	"fmt"
	"os"
	"testing"
)

// TestMain runs a QUIC floor half instead of the tests when
// MESHFED_QUIC_FLOOR says so (BenchmarkGatewayDataPath starts them).
func TestMain(m *testing.M) {
	if spec := os.Getenv("MESHFED_QUIC_FLOOR"); spec != "" {
		if err := runQUICFloor(spec, os.Getenv("MESHFED_QUIC_FLOOR_PKI")); err != nil && !errors.Is(err, context.Canceled) {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}
