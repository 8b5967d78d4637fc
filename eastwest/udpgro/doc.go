// Package udpgro gives quic-go a UDP socket that receives with UDP GRO.
//
// quic-go sends with GSO (one sendmsg carries a run of up to about 30
// packets of one connection) but reads packet by packet: the kernel splits
// each GSO datagram again on the way in, and recvmmsg copies the pieces
// out eight at a time. With UDP_GRO set on the socket, the kernel keeps
// such a run whole (and coalesces a run of same-sized packets that arrive
// from a NIC), so one receive hands over up to 64 KiB. [Wrap] returns a
// socket that does that receive and cuts the run into quic-go's packet
// buffers itself, through the batch-read hook quic-go offers a PacketConn
// (a ReadBatch method): no fork of quic-go, and QUIC stays packet-sized on
// the wire.
//
// On kernels without UDP_GRO (before Linux 5.0) and on other systems,
// [Wrap] returns the socket unchanged.
package udpgro
