#!/usr/bin/env bash
# dev-hub.sh starts a local 3-server meshfed hub as real processes from
# bin/meshfed (build it with `make build`; `make dev` does both), waits until
# every server is ready, prints how to use it, and keeps it running until
# Ctrl-C or SIGTERM, which stop the servers.
#
# Environment:
#   MESHFED_DEV_DIR      state directory (default .dev): s0..s2 data dirs,
#                        sN.log server logs, encrypt.key (created once)
#   MESHFED_DEV_PORT     base port (default 7400); server i listens on
#                        base+10*i+0..3 for gRPC, Raft, gossip and HTTP
#   MESHFED_DEV_ONESHOT  if 1, stop the servers right after printing status
#                        (a smoke test for CI)
#
# Data directories survive a restart: running it again brings the same hub
# back. `make clean` (or removing the state directory) starts over.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

readonly BIN=bin/meshfed
readonly DEV_DIR=${MESHFED_DEV_DIR:-.dev}
readonly BASE_PORT=${MESHFED_DEV_PORT:-7400}
readonly ONESHOT=${MESHFED_DEV_ONESHOT:-0}
readonly SERVERS=3
readonly READY_TIMEOUT=60 # seconds
readonly STOP_TIMEOUT=15  # seconds before a server that ignores SIGTERM is killed

log() { printf 'dev-hub: %s\n' "$*" >&2; }
die() {
	log "$*"
	exit 1
}

if [[ ! -x $BIN ]]; then
	die "$BIN not found; run 'make build' first (or 'make dev', which builds it)"
fi
if ! [[ $BASE_PORT =~ ^[0-9]+$ ]] || ((BASE_PORT < 1024 || BASE_PORT + 10 * (SERVERS - 1) + 3 > 65535)); then
	die "MESHFED_DEV_PORT=$BASE_PORT: must be a port in 1024..$((65535 - 10 * (SERVERS - 1) - 3))"
fi

# port I KIND prints server I's port of KIND (grpc, raft, gossip or http).
port() {
	local offset
	case $2 in
	grpc) offset=0 ;;
	raft) offset=1 ;;
	gossip) offset=2 ;;
	http) offset=3 ;;
	*) die "unknown port kind $2" ;;
	esac
	echo $((BASE_PORT + 10 * $1 + offset))
}

# listening PORT succeeds if something accepts TCP connections on 127.0.0.1:PORT.
listening() {
	(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# ready PORT succeeds if GET /readyz on 127.0.0.1:PORT answers 200.
ready() {
	if command -v curl >/dev/null 2>&1; then
		curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:$1/readyz" 2>/dev/null
		return
	fi
	# No curl: speak HTTP/1.0 over bash's /dev/tcp.
	(
		exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
		printf 'GET /readyz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3
		IFS= read -r -t 2 line <&3 || exit 1
		[[ $line == HTTP/1.[01]\ 200* ]]
	) 2>/dev/null
}

# Refuse to start on top of something else (often a dev hub still running).
for ((i = 0; i < SERVERS; i++)); do
	for kind in grpc raft gossip http; do
		p=$(port "$i" "$kind")
		if listening "$p"; then
			die "port $p is in use (another 'make dev' still running?); stop it or set MESHFED_DEV_PORT"
		fi
	done
done

mkdir -p "$DEV_DIR"
chmod 700 "$DEV_DIR"
# Keep the key and the hub's data out of git, wherever the directory is.
[[ -e $DEV_DIR/.gitignore ]] || echo '*' >"$DEV_DIR/.gitignore"
DEV_ABS=$(cd "$DEV_DIR" && pwd)
readonly DEV_ABS

readonly KEY_FILE=$DEV_DIR/encrypt.key
if [[ ! -s $KEY_FILE ]]; then
	(
		umask 077
		"$BIN" hub keygen >"$KEY_FILE.tmp"
		mv "$KEY_FILE.tmp" "$KEY_FILE"
	)
	log "generated the hub encrypt key in $KEY_FILE"
fi
chmod 600 "$KEY_FILE"
ENCRYPT_KEY=$(<"$KEY_FILE")

pids=()

# stop_servers sends SIGTERM to every server still running, waits for them to
# shut down gracefully, and kills the ones that do not within STOP_TIMEOUT.
stop_servers() {
	local pid live deadline
	((${#pids[@]} > 0)) || return 0
	for pid in "${pids[@]}"; do
		kill -TERM "$pid" 2>/dev/null || true
	done
	deadline=$((SECONDS + STOP_TIMEOUT))
	while ((SECONDS < deadline)); do
		live=0
		for pid in "${pids[@]}"; do
			if kill -0 "$pid" 2>/dev/null; then live=1; fi
		done
		((live)) || break
		sleep 0.2
	done
	for pid in "${pids[@]}"; do
		if kill -0 "$pid" 2>/dev/null; then
			log "server (pid $pid) did not stop within ${STOP_TIMEOUT}s; killing it"
			kill -KILL "$pid" 2>/dev/null || true
		fi
	done
	for pid in "${pids[@]}"; do
		wait "$pid" 2>/dev/null || true
	done
	pids=()
	log "servers stopped"
}

cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	stop_servers
	exit "$rc"
}
# Ctrl-C or SIGTERM is how a running hub is meant to stop: once it is up,
# that is a success; during start-up it is not.
up=0
trap cleanup EXIT
trap 'if ((up)); then exit 0; else exit 130; fi' INT
trap 'if ((up)); then exit 0; else exit 143; fi' TERM

# tail_logs prints the end of every server's log, for when something failed.
tail_logs() {
	local i
	for ((i = 0; i < SERVERS; i++)); do
		log "last lines of $DEV_DIR/s$i.log:"
		tail -n 15 "$DEV_DIR/s$i.log" >&2 || true
	done
}

join_addr=127.0.0.1:$(port 0 gossip)
for ((i = 0; i < SERVERS; i++)); do
	mkdir -p -m 700 "$DEV_DIR/s$i"
	# The key goes in through the environment, not the command line, so that
	# it does not show in ps.
	MESHFED_ENCRYPT_KEY=$ENCRYPT_KEY "$BIN" hub \
		--name "s$i" \
		--data-dir "$DEV_DIR/s$i" \
		--bind 127.0.0.1 \
		--grpc-port "$(port "$i" grpc)" \
		--raft-port "$(port "$i" raft)" \
		--gossip-port "$(port "$i" gossip)" \
		--http-port "$(port "$i" http)" \
		--bootstrap-expect "$SERVERS" \
		--join "$join_addr" \
		--gossip-profile local \
		>>"$DEV_DIR/s$i.log" 2>&1 &
	pids+=("$!")
	log "started s$i (pid $!): grpc 127.0.0.1:$(port "$i" grpc), http 127.0.0.1:$(port "$i" http), log $DEV_DIR/s$i.log"
done

log "waiting up to ${READY_TIMEOUT}s for every server to be ready"
deadline=$((SECONDS + READY_TIMEOUT))
while :; do
	all_ready=1
	for ((i = 0; i < SERVERS; i++)); do
		if ! kill -0 "${pids[$i]}" 2>/dev/null; then
			tail_logs
			die "s$i exited during start-up (see $DEV_DIR/s$i.log)"
		fi
		if ! ready "$(port "$i" http)"; then
			all_ready=0
		fi
	done
	((all_ready)) && break
	if ((SECONDS >= deadline)); then
		tail_logs
		die "the hub was not ready within ${READY_TIMEOUT}s"
	fi
	sleep 0.25
done

readonly ADMIN_CONFIG=$DEV_ABS/s0/admin.yaml
cat <<EOF

A local meshfed hub is running: 3 servers on 127.0.0.1 (gRPC ports $(port 0 grpc), $(port 1 grpc), $(port 2 grpc)).
  data and logs:  $DEV_ABS
  admin config:   $ADMIN_CONFIG

Point the CLI at it:

  export MESHFED_CONFIG=$ADMIN_CONFIG

then, from another terminal:

  bin/meshfed hub status
  bin/meshfed token create --cluster east
  bin/meshfed token list
  bin/meshfed clusters list
  bin/meshfed services list
  bin/meshfed policy list

Status now:

EOF

status_rc=0
"$BIN" hub status --config "$ADMIN_CONFIG" || status_rc=$?
echo

if [[ $ONESHOT == 1 ]]; then
	log "MESHFED_DEV_ONESHOT=1: stopping"
	exit "$status_rc"
fi
if ((status_rc != 0)); then
	log "'meshfed hub status' failed (exit $status_rc); the servers keep running, see $DEV_DIR/s*.log"
fi

log "press Ctrl-C to stop the hub"
up=1
# Wait until interrupted, or until a server exits on its own.
while :; do
	for ((i = 0; i < SERVERS; i++)); do
		if ! kill -0 "${pids[$i]}" 2>/dev/null; then
			tail_logs
			die "s$i exited unexpectedly (see $DEV_DIR/s$i.log); stopping the others"
		fi
	done
	# wait -n returns when any server exits or a trapped signal arrives.
	wait -n 2>/dev/null || true
done
