//go:build !linux

package udpgro

import "net"

// Wrap returns c: UDP GRO is Linux's.
func Wrap(c *net.UDPConn) net.PacketConn { return c }
