#!/usr/bin/env bash
# Stop a cluster started by start_local_cluster.sh: ends exactly the process groups recorded in
# <dir>/pids (worker nodes first, then the head), SIGTERM then SIGKILL after --grace seconds.
# Deliberately not `ray stop`: that kills every Ray process on the machine.
#
# Usage: cluster/stop_local_cluster.sh [--port P | --dir D] [--grace S] [--purge]
#   --purge also deletes <dir> (logs, token).
set -uo pipefail

PORT=6390
DIR=""
GRACE=15
PURGE=false
while [[ $# -gt 0 ]]; do
    case "$1" in
        --port) PORT="$2"; shift 2 ;;
        --dir) DIR="$2"; shift 2 ;;
        --grace) GRACE="$2"; shift 2 ;;
        --purge) PURGE=true; shift ;;
        -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
        *) echo "unknown option: $1" >&2; exit 2 ;;
    esac
done
DIR="${DIR:-/tmp/mclnf-ray-$PORT}"

if [[ ! -f "$DIR/pids" ]]; then
    echo "no cluster recorded in $DIR" >&2
    exit 0
fi

# Each recorded pid is a `ray start --block` process that leads its own session (setsid), so its
# process group holds that node's gcs_server/raylet/dashboard/agents and the workers they spawned.
# SIGTERM goes to the leader only: its handler shuts its children down in order (signalling the
# whole group at once left raylets hanging on a dead GCS for > 30 s). Worker nodes go first, the
# head last; whatever is left in a group after the grace period gets SIGKILL.
group_alive() { kill -0 -- "-$1" 2>/dev/null; }
stop_groups() {  # pids...
    local pid deadline any
    for pid in "$@"; do kill -TERM "$pid" 2>/dev/null; done
    deadline=$((SECONDS + GRACE))
    while ((SECONDS < deadline)); do
        any=false
        for pid in "$@"; do group_alive "$pid" && any=true; done
        $any || return 0
        sleep 0.2
    done
    for pid in "$@"; do group_alive "$pid" && kill -KILL -- "-$pid" 2>/dev/null; done
    deadline=$((SECONDS + 5))
    while ((SECONDS < deadline)); do
        any=false
        for pid in "$@"; do group_alive "$pid" && any=true; done
        $any || return 0
        sleep 0.1
    done
    return 1
}

mapfile -t pids < <(grep -E '^[0-9]+$' "$DIR/pids")
ok=true
if ((${#pids[@]} > 1)); then stop_groups "${pids[@]:1}" || ok=false; fi
if ((${#pids[@]} > 0)); then stop_groups "${pids[0]}" || ok=false; fi
if ! $ok; then
    echo "some processes of $DIR did not exit" >&2
    exit 1
fi
rm -f "$DIR/pids"
if $PURGE; then rm -rf "$DIR"; fi
echo "stopped the local cluster in $DIR"
