// Package wan simulates a WAN path in user space, for tests: a [Link]
// between two sides carries TCP and UDP through relays it owns, and shapes
// each direction on its own with latency, jitter, loss and a bandwidth cap
// ([Shape], set with options such as [Latency] and [Loss]), and can cut
// either direction ([Link.Partition]). Kernel netem is not available on
// every test machine, so nothing here needs privileges: a relay is a
// loopback listener that forwards to a target.
//
//	link := wan.NewLink(seed)
//	defer link.Close()
//	addr, err := link.Relay("udp", serverAddr) // dial addr instead of serverAddr
//	link.Set(wan.Latency(30*time.Millisecond), wan.Loss(0.01))
//	link.Partition() // datagrams are dropped silently until link.Heal()
//
// A UDP relay keeps one upstream socket per client address, so QUIC works
// through it; a TCP partition blackholes connections instead of refusing
// them. [Link.ServeTCP] and [Link.ServeUDP] run the same relays over
// listeners and packet connections of the caller's choosing, such as
// in-memory ones inside a testing/synctest bubble, where delays are exact.
//
// Randomness comes from a PCG source per direction seeded from the link's
// seed, so the same traffic in the same order sees the same drops and
// delays. The package imports only the standard library (a test checks), so
// data-plane tests can use it without the rest of testenv (etcd,
// kube-apiserver, client-go); package testenv builds its federation's links
// from it.
package wan
