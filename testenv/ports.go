package testenv

import (
	"fmt"
	"net"
	"strconv"
)

// freePorts returns n distinct loopback ports that were free for both TCP and
// UDP a moment ago. Another program can take one in between; the callers
// that start processes retry with new ports when a process exits at start.
func freePorts(n int) ([]int, error) {
	var ports []int
	var held []net.Listener
	defer func() {
		for _, ln := range held {
			_ = ln.Close()
		}
	}()
	for tries := 0; len(ports) < n; tries++ {
		if tries > 100*n {
			return nil, fmt.Errorf("testenv: no free loopback ports after %d tries", tries)
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("testenv: free port: %w", err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp", "127.0.0.1:"+strconv.Itoa(port))
		if err != nil {
			_ = ln.Close()
			continue
		}
		_ = u.Close()
		held = append(held, ln) // held until all are chosen, so none repeats
		ports = append(ports, port)
	}
	return ports, nil
}

func loopback(port int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) }
