// Package spire pins spire-server for meshfed's SPIRE interop tests. It is a
// separate module so that SPIRE's dependencies never enter meshfed's own
// go.mod; scripts/spire-bin.sh builds the binary from it into a cache.
package spire
