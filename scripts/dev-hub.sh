#!/usr/bin/env bash
# dev-hub.sh starts a local meshfed federation as real processes from
# bin/meshfed (build it with `make build`; `make dev` does both): a 3-server
# hub and two member clusters, east and west, each an agent with a file
# catalog (agents/<cluster>/catalog.yaml: east exports default/reviews, west
# default/ratings; edit the files and the agents pick the change up). It
# waits until the hub is ready and each cluster imports the other's service,
# prints how to use it, and keeps everything running until Ctrl-C or
# SIGTERM, which stop it.
#
# Environment:
#   MESHFED_DEV_DIR      state directory (default .dev): s0..s2 data dirs,
#                        sN.log server logs, encrypt.key (created once)
#   MESHFED_DEV_PORT     base port (default 7400); server i listens on
#                        base+10*i+0..3 for gRPC, Raft, gossip and HTTP;
#                        agent j (east 0, west 1) on base+50+10*j for HTTP
#                        (/state) and +1 for its gateway API
#   MESHFED_DEV_ONESHOT  if 1, stop the servers right after printing status
#                        (a smoke test for CI)
#
# Data directories survive a restart: running it again brings the same hub
# and agents back (an agent joins once, then restarts from its credentials). `make clean` (or removing the state directory) starts over.
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
if ! [[ $BASE_PORT =~ ^[0-9]+$ ]] || ((BASE_PORT < 1024 || BASE_PORT + 61 > 65535)); then
	die "MESHFED_DEV_PORT=$BASE_PORT: must be a port in 1024..$((65535 - 61))"
fi
readonly CLUSTERS=(east west)
readonly REGIONS=(us-east us-west)

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

# agent_port J KIND prints agent J's port of KIND (http or gwapi).
agent_port() {
	case $2 in
	http) echo $((BASE_PORT + 50 + 10 * $1)) ;;
	gwapi) echo $((BASE_PORT + 51 + 10 * $1)) ;;
	*) die "unknown agent port kind $2" ;;
	esac
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
for ((j = 0; j < ${#CLUSTERS[@]}; j++)); do
	for kind in http gwapi; do
		p=$(agent_port "$j" "$kind")
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

# tail_logs prints the end of every server's and agent's log, for when
# something failed.
tail_logs() {
	local i f
	for ((i = 0; i < SERVERS; i++)); do
		log "last lines of $DEV_DIR/s$i.log:"
		tail -n 15 "$DEV_DIR/s$i.log" >&2 || true
	done
	for f in "$DEV_DIR"/agents/*/agent.log; do
		[[ -e $f ]] || continue
		log "last lines of $f:"
		tail -n 15 "$f" >&2 || true
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

# The catalogs: east exports default/reviews, west default/ratings. The
# endpoints are declared only: traffic between clusters needs the east-west
# gateway, which is not built yet.
write_catalog() {
	local c=$1 svc=$2 zone=$3 port=$4
	cat >"$DEV_DIR/agents/$c/catalog.yaml" <<CATALOG
services:
- namespace: default
  name: $svc
  export: true
  ports: [{name: http, port: 8080, protocol: HTTP}]
  endpoints:
  - {address: 127.0.0.1:$port, zone: $zone, labels: {version: v1}, ready: true}
  - {address: 127.0.0.1:$((port + 1)), zone: $zone, labels: {version: v2}, ready: true}
CATALOG
}

for ((j = 0; j < ${#CLUSTERS[@]}; j++)); do
	c=${CLUSTERS[$j]}
	dir=$DEV_ABS/agents/$c
	mkdir -p -m 700 "$dir"
	if [[ ! -s $dir/catalog.yaml ]]; then
		if ((j == 0)); then svc=reviews; else svc=ratings; fi
		write_catalog "$c" "$svc" "${REGIONS[$j]}-1a" $((9001 + 10 * j))
	fi
	flags=(--cluster "$c" --region "${REGIONS[$j]}" --zone "${REGIONS[$j]}-1a"
		--source "file:$dir/catalog.yaml" --data-dir "$dir"
		--http-port "$(agent_port "$j" http)" --gateway-api "127.0.0.1:$(agent_port "$j" gwapi)"
		--egress-ports "$((15000 + 100 * j))-$((15099 + 100 * j))")
	if [[ -s $dir/credentials.yaml ]]; then
		"$BIN" agent "${flags[@]}" >>"$dir/agent.log" 2>&1 &
	else
		token=$("$BIN" token create --cluster "$c" --config "$ADMIN_CONFIG" | head -1)
		"$BIN" join "$token" "${flags[@]}" >>"$dir/agent.log" 2>&1 &
	fi
	pids+=("$!")
	log "started the agent of $c (pid $!): state http://127.0.0.1:$(agent_port "$j" http)/state, log $dir/agent.log"
done

# imports J KEY succeeds if agent J's status lists the import KEY.
imports() {
	"$BIN" agent status --agent "127.0.0.1:$(agent_port "$1" http)" -o json 2>/dev/null | grep -q "\"key\": *\"$2\""
}

log "waiting up to ${READY_TIMEOUT}s for each cluster to import the other's service"
deadline=$((SECONDS + READY_TIMEOUT))
until imports 0 default/ratings && imports 1 default/reviews; do
	for pid in "${pids[@]}"; do
		if ! kill -0 "$pid" 2>/dev/null; then
			tail_logs
			die "a process exited during start-up (see the logs in $DEV_DIR)"
		fi
	done
	if ((SECONDS >= deadline)); then
		tail_logs
		die "the clusters did not import each other's services within ${READY_TIMEOUT}s"
	fi
	sleep 0.25
done
cat <<EOF

A local meshfed federation is running: a hub of 3 servers on 127.0.0.1 (gRPC
ports $(port 0 grpc), $(port 1 grpc), $(port 2 grpc)) and the clusters east and west (file catalogs).
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
  bin/meshfed agent status --agent 127.0.0.1:$(agent_port 0 http)    # east
  bin/meshfed agent status --agent 127.0.0.1:$(agent_port 1 http)    # west

Edit $DEV_ABS/agents/east/catalog.yaml (ready: false, say) and watch
west's import change.

Status now:

EOF

status_rc=0
"$BIN" hub status --config "$ADMIN_CONFIG" || status_rc=$?
echo
"$BIN" clusters list --config "$ADMIN_CONFIG" || status_rc=$?
echo
"$BIN" agent status --agent "127.0.0.1:$(agent_port 1 http)" || status_rc=$?
echo

if [[ $ONESHOT == 1 ]]; then
	log "MESHFED_DEV_ONESHOT=1: stopping"
	exit "$status_rc"
fi
if ((status_rc != 0)); then
	log "'meshfed hub status' failed (exit $status_rc); the servers keep running, see $DEV_DIR/s*.log"
fi

log "press Ctrl-C to stop the federation"
up=1
# Wait until interrupted, or until a server exits on its own.
while :; do
	for pid in "${pids[@]}"; do
		if ! kill -0 "$pid" 2>/dev/null; then
			tail_logs
			die "a process (pid $pid) exited unexpectedly (see the logs in $DEV_DIR); stopping the others"
		fi
	done
	# wait -n returns when any server exits or a trapped signal arrives.
	wait -n 2>/dev/null || true
done
