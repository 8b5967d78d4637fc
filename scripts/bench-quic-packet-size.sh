#!/usr/bin/env bash
# bench-quic-packet-size.sh measures what larger QUIC packets would give the
# gateways: it runs BenchmarkGatewayDataPath once against a throwaway copy
# of quic-go whose packet-size ceiling (internal/protocol.MaxPacketBufferSize,
# 1452 bytes, a constant quic-go does not let applications raise: upstream
# issue quic-go/quic-go#3162) is set to $QUIC_MAX_PACKET (default 8952, a
# 9000-byte jumbo frame less the IPv6 and UDP headers). Path MTU discovery
# then climbs to it on loopback.
#
# Nothing in the repository changes: the copy and a git worktree of HEAD
# (with a go.mod replace pointing at the copy) live in a temporary folder
# that is removed afterwards. The gateways, the QUIC floor and the test
# binary are all built against the copy; HAProxy and h2load are unchanged.
# An experiment for the issue's record, not a configuration meshfed ships.
#
# Usage: scripts/bench-quic-packet-size.sh   (needs make bench-tools)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
readonly GO=${GO:-go}
readonly SIZE=${QUIC_MAX_PACKET:-8952}
log() { printf 'bench-quic-packet-size: %s\n' "$*" >&2; }

[[ $SIZE =~ ^[0-9]+$ && $SIZE -ge 1452 && $SIZE -le 65000 ]] || {
	log "QUIC_MAX_PACKET=$SIZE: want a number of bytes from 1452 to 65000"
	exit 2
}
src=$($GO list -m -f '{{.Dir}}' github.com/quic-go/quic-go)
tmp=$(mktemp -d)
cleanup() {
	git worktree remove --force "$tmp/meshfed" 2>/dev/null || true
	chmod -R u+w "$tmp" 2>/dev/null || true
	rm -rf "$tmp"
}
trap cleanup EXIT

cp -r "$src" "$tmp/quic-go"
chmod -R u+w "$tmp/quic-go"
proto=$tmp/quic-go/internal/protocol/protocol.go
sed -i "s/^const MaxPacketBufferSize = 1452\$/const MaxPacketBufferSize = $SIZE/" "$proto"
grep -q "^const MaxPacketBufferSize = $SIZE\$" "$proto" || {
	log "$proto: no 'const MaxPacketBufferSize = 1452' to change (a quic-go version this script does not know)"
	exit 1
}
git worktree add --detach -q "$tmp/meshfed" HEAD
cd "$tmp/meshfed"
$GO mod edit -replace "github.com/quic-go/quic-go=$tmp/quic-go"
log "quic-go from $src with packets of up to $SIZE bytes; meshfed at $(git rev-parse --short HEAD)"
$GO test -run '^$' -bench BenchmarkGatewayDataPath -benchtime 1x -count 1 -timeout 30m ./testenv/
