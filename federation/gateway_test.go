package federation

import (
	"errors"
	"strings"
	"testing"
)

func TestCheckGatewayAddressesNamesTheAddress(t *testing.T) {
	if err := CheckGatewayAddresses([]string{"10.0.0.1:15443", "gw.east.example:443", "[::1]:1"}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		addrs []string
		field string
	}{
		{[]string{"10.0.0.1:15443", "no-port"}, "gateway_addresses[1]"},
		{[]string{"10.0.0.1:0"}, "gateway_addresses[0]"},
		{[]string{"bad_host!:80"}, "gateway_addresses[0]"},
		{strings.Split(strings.Repeat("a:1,", 17), ",")[:17], "gateway_addresses"},
	} {
		err := CheckGatewayAddresses(c.addrs)
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != c.field || !errors.Is(err, ErrInvalid) {
			t.Errorf("%v: %v, want a FieldError on %s", c.addrs, err, c.field)
		}
	}
}
