package federation

import "fmt"

// MaxGatewayAddresses bounds how many addresses a cluster advertises for
// its east-west gateways.
const MaxGatewayAddresses = 16

// CheckGatewayAddresses is the one rule for a cluster's advertised gateway
// addresses, applied by the agent to its flags and by the hub at join and
// at every Sync session: at most MaxGatewayAddresses, each host:port with a
// port in 1..65535 and an IP address or DNS name as host. It returns a
// *FieldError on "gateway_addresses" or "gateway_addresses[i]".
func CheckGatewayAddresses(addrs []string) error {
	if len(addrs) > MaxGatewayAddresses {
		return invalid("gateway_addresses", fmt.Sprint(len(addrs)), fmt.Sprintf("is too many addresses: at most %d", MaxGatewayAddresses))
	}
	for i, a := range addrs {
		if err := checkHostPort(a); err != nil {
			return invalid(fmt.Sprintf("gateway_addresses[%d]", i), a, err.Error())
		}
	}
	return nil
}
