#!/usr/bin/env bash
# Start a local multi-node Ray cluster on ONE machine: a head plus N worker nodes, each a separate
# `ray start --block` process (its own raylet, object store, temp dir and port range).
#
# Why each choice:
# - Separate `--temp-dir` per node: sockets, logs and the session's `ray_current_cluster` file stay
#   apart, and nothing is written to /tmp/ray, so a plain `ray.init()` elsewhere on this machine
#   does not find (and attach to) this cluster by accident.
# - Every port is explicit and derived from --port: several raylets on one host would otherwise
#   collide on fixed defaults (dashboard agent 52365, client server 10001, worker ports 10002+).
# - `ray start --block` under `setsid`: each node is its own session/process group, recorded in
#   <dir>/pids, so stop_local_cluster.sh ends exactly these processes (never `ray stop`, which
#   kills every Ray process on the machine, including other users' clusters).
# - Each node advertises a custom resource `local_node_<i>`: all nodes share one IP (Ray even
#   replaces --node-ip-address 127.0.0.1 by the host's address), so `node:<ip>` cannot tell them
#   apart. (NodeAffinitySchedulingStrategy with a node id works too.)
# - Ray 2.60 token authentication: by default a fresh token is written to <dir>/auth_token and every
#   node and client uses RAY_AUTH_MODE=token + RAY_AUTH_TOKEN_PATH; `--auth disabled` starts an
#   open cluster (RAY_AUTH_MODE=disabled) instead. Clients: `source <dir>/env.sh`.
#
# Usage: cluster/start_local_cluster.sh [--workers N] [--port P] [--dir D] [--cpus-per-node C]
#            [--auth token|disabled] [--no-dashboard] [--object-store-mb M] [--timeout S]
# Prints (last lines): RAY_ADDRESS=..., DASHBOARD=..., ENV_FILE=...
set -euo pipefail

WORKERS=1
PORT=6390
DIR=""
CPUS=1
AUTH=token
DASHBOARD=true
OBJECT_STORE_MB=256
TIMEOUT=60
RAY_BIN="${RAY_BIN:-}"

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }

while [[ $# -gt 0 ]]; do
    case "$1" in
        --workers) WORKERS="$2"; shift 2 ;;
        --port) PORT="$2"; shift 2 ;;
        --dir) DIR="$2"; shift 2 ;;
        --cpus-per-node) CPUS="$2"; shift 2 ;;
        --auth) AUTH="$2"; shift 2 ;;
        --no-dashboard) DASHBOARD=false; shift ;;
        --object-store-mb) OBJECT_STORE_MB="$2"; shift 2 ;;
        --timeout) TIMEOUT="$2"; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown option: $1" >&2; usage >&2; exit 2 ;;
    esac
done

case "$AUTH" in token|disabled) ;; *) echo "--auth must be token or disabled" >&2; exit 2 ;; esac

if [[ -z "$RAY_BIN" ]]; then
    # Prefer the project's venv, then whatever `ray` is on PATH.
    here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
    if [[ -x "$here/.venv/bin/ray" ]]; then RAY_BIN="$here/.venv/bin/ray"; else RAY_BIN="$(command -v ray)"; fi
fi
# Keep the directory short: Unix socket paths inside it must stay under ~107 characters.
DIR="${DIR:-/tmp/mclnf-ray-$PORT}"
mkdir -p "$DIR"
DIR="$(cd "$DIR" && pwd)"
if [[ -s "$DIR/pids" ]]; then
    echo "a cluster seems to be running from $DIR (see $DIR/pids); stop it first:" >&2
    echo "  cluster/stop_local_cluster.sh --dir $DIR" >&2
    exit 1
fi

HOST=127.0.0.1
GCS_PORT=$PORT
DASH_PORT=$((PORT + 1))
CLIENT_PORT=$((PORT + 2))
OBJ_BYTES=$((OBJECT_STORE_MB * 1024 * 1024))

# Port layout (all relative to --port P), so several local clusters can run side by side when
# their P differ by at least 100*(N+2):
#   P gcs, P+1 dashboard, P+2 ray client server,
#   P+10+10*i+{0..5} node i: node manager, object manager, metrics, agent http, agent grpc, runtime env agent
#   P+100+100*i .. +99  worker processes of node i
node_ports() {  # $1 = node index -> the per-node port flags
    local b=$((PORT + 10 + 10 * $1)) w=$((PORT + 100 + 100 * $1))
    echo "--node-manager-port $b --object-manager-port $((b + 1)) --metrics-export-port $((b + 2))" \
        "--dashboard-agent-listen-port $((b + 3)) --dashboard-agent-grpc-port $((b + 4))" \
        "--runtime-env-agent-port $((b + 5)) --min-worker-port $w --max-worker-port $((w + 99))"
}

if [[ "$AUTH" == token ]]; then
    if [[ -n "${RAY_AUTH_TOKEN:-}" ]]; then
        printf '%s' "$RAY_AUTH_TOKEN" >"$DIR/auth_token"
    elif [[ ! -s "$DIR/auth_token" ]]; then
        # 256 bits, the same shape as `ray get-auth-token --generate`.
        (umask 077 && od -An -N32 -tx1 /dev/urandom | tr -d ' \n' >"$DIR/auth_token")
    fi
    chmod 600 "$DIR/auth_token"
    export RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH="$DIR/auth_token"
    unset RAY_AUTH_TOKEN
else
    export RAY_AUTH_MODE=disabled
    unset RAY_AUTH_TOKEN RAY_AUTH_TOKEN_PATH
fi
# Job entrypoints such as `python pipelines/city_nerf.py` run with the nodes' PATH: put the
# interpreter that has Ray (the venv) first.
export PATH="$(dirname "$RAY_BIN"):$PATH"
# A RAY_ADDRESS in the caller's environment must not redirect `ray start --head`.
unset RAY_ADDRESS
export RAY_USAGE_STATS_ENABLED=0

: >"$DIR/pids"

fail() {
    echo "start_local_cluster: $*" >&2
    for log in "$DIR"/node-*.log; do
        [[ -f "$log" ]] && { echo "--- $log (tail)" >&2; tail -n 30 "$log" >&2; }
    done
    "$(dirname "${BASH_SOURCE[0]}")/stop_local_cluster.sh" --dir "$DIR" >&2 || true
    exit 1
}

launch_node() {  # $1 = index, rest = extra `ray start` flags
    local i=$1; shift
    mkdir -p "$DIR/node-$i"
    # shellcheck disable=SC2046
    setsid "$RAY_BIN" start --block --disable-usage-stats \
        --node-ip-address "$HOST" --num-cpus "$CPUS" --num-gpus 0 \
        --object-store-memory "$OBJ_BYTES" \
        --resources "{\"local_node_$i\": 1}" \
        --temp-dir "$DIR/node-$i" $(node_ports "$i") "$@" \
        >"$DIR/node-$i.log" 2>&1 </dev/null &
    echo "$!" >>"$DIR/pids"
}

wait_nodes() {  # node indices; ready when `ray start` says so, fail fast when one dies
    local deadline=$((SECONDS + TIMEOUT)) i pid pending
    while true; do
        pending=0
        for i in "$@"; do
            grep -q "Ray runtime started" "$DIR/node-$i.log" 2>/dev/null && continue
            pending=1
            pid=$(sed -n "$((i + 1))p" "$DIR/pids")
            kill -0 "$pid" 2>/dev/null || fail "node $i (pid $pid) exited during start"
        done
        ((pending)) || return 0
        ((SECONDS < deadline)) || fail "nodes not up within ${TIMEOUT}s"
        sleep 0.2
    done
}

wait_gcs() {  # until the head's GCS accepts connections (before the head is fully up)
    local deadline=$((SECONDS + TIMEOUT)) pid
    pid=$(sed -n 1p "$DIR/pids")
    until (exec 3<>"/dev/tcp/$HOST/$GCS_PORT") 2>/dev/null; do
        kill -0 "$pid" 2>/dev/null || fail "head (pid $pid) exited during start"
        ((SECONDS < deadline)) || fail "head GCS not listening within ${TIMEOUT}s"
        sleep 0.2
    done
}

# Fail fast (instead of a 60 s start-up timeout) when a fixed port is taken already.
busy=()
for port in "$GCS_PORT" "$DASH_PORT" "$CLIENT_PORT"; do
    (exec 3<>"/dev/tcp/$HOST/$port") 2>/dev/null && busy+=("$port")
done
for ((i = 0; i <= WORKERS; i++)); do
    for ((k = 0; k < 6; k++)); do
        port=$((PORT + 10 + 10 * i + k))
        (exec 3<>"/dev/tcp/$HOST/$port") 2>/dev/null && busy+=("$port")
    done
done
if ((${#busy[@]})); then
    rm -f "$DIR/pids"
    echo "start_local_cluster: ports in use: ${busy[*]}; choose another --port" >&2
    exit 1
fi

launch_node 0 --head --port "$GCS_PORT" --ray-client-server-port "$CLIENT_PORT" \
    --include-dashboard "$DASHBOARD" --dashboard-host "$HOST" --dashboard-port "$DASH_PORT"
# Worker nodes join as soon as the GCS listens, in parallel with each other and with the rest of
# the head's start-up (each `ray start` spends seconds importing Ray).
wait_gcs
workers=()
for ((i = 1; i <= WORKERS; i++)); do
    launch_node "$i" --address "$HOST:$GCS_PORT"
    workers+=("$i")
done
wait_nodes 0 "${workers[@]}"

{
    echo "# source this file to talk to the local cluster in $DIR"
    echo "export RAY_ADDRESS=$HOST:$GCS_PORT"
    echo "export RAY_AUTH_MODE=$RAY_AUTH_MODE"
    if [[ "$AUTH" == token ]]; then
        echo "export RAY_AUTH_TOKEN_PATH=$DIR/auth_token"
    else
        echo "unset RAY_AUTH_TOKEN_PATH RAY_AUTH_TOKEN"
    fi
    if [[ "$DASHBOARD" == true ]]; then
        echo "# ray job submit --address \$RAY_JOB_ADDRESS --working-dir . -- python pipelines/city_nerf.py"
        echo "export RAY_JOB_ADDRESS=http://$HOST:$DASH_PORT"
    fi
} >"$DIR/env.sh"

echo "started head + $WORKERS worker node(s); logs in $DIR/node-*.log"
echo "RAY_ADDRESS=$HOST:$GCS_PORT"
[[ "$DASHBOARD" == true ]] && echo "DASHBOARD=http://$HOST:$DASH_PORT"
echo "ENV_FILE=$DIR/env.sh"
