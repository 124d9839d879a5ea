#!/usr/bin/env bash
# docker/engine.sh -- make sure a Docker engine answers on this machine.
#
# For: developers and CI runners of this pipeline on a bare Debian bookworm
# machine (root, no systemd, no Docker Hub) where no Docker daemon is running,
# so that the model-server image tests can build and run containers.
#
# What it does (idempotent; a second run is a quick no-op):
#   1. If `docker version` already works against $DOCKER_HOST, the default
#      socket or our own socket, it only prints that host.
#   2. Otherwise it installs Debian's docker.io if `dockerd` is missing, starts
#      a private dockerd in the background (data-root /var/lib/mlops-docker,
#      exec-root /run/mlops-docker, socket /run/mlops-docker.sock, log
#      /var/log/mlops-dockerd.log) and waits up to 60 s for it to answer.
#
# Output: the last stdout line is `export DOCKER_HOST=...`; everything else
# goes to stderr. Typical use:   eval "$(docker/engine.sh)"
#
# Overridable via environment: MLOPS_DOCKER_SOCK, MLOPS_DOCKER_DATA_ROOT,
# MLOPS_DOCKER_EXEC_ROOT, MLOPS_DOCKER_LOG, MLOPS_DOCKER_WAIT (seconds).
set -euo pipefail

SOCK=${MLOPS_DOCKER_SOCK:-/run/mlops-docker.sock}
OWN_HOST="unix://${SOCK}"
DATA_ROOT=${MLOPS_DOCKER_DATA_ROOT:-/var/lib/mlops-docker}
EXEC_ROOT=${MLOPS_DOCKER_EXEC_ROOT:-/run/mlops-docker}
PIDFILE="${EXEC_ROOT}.pid"
LOG=${MLOPS_DOCKER_LOG:-/var/log/mlops-dockerd.log}
WAIT=${MLOPS_DOCKER_WAIT:-60}
DEFAULT_HOST=unix:///var/run/docker.sock

log() { echo "engine.sh: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# `docker version` against one host; needs a docker CLI (static one in
# /usr/local/bin, or the one docker.io ships).
answers() {
    command -v docker >/dev/null 2>&1 || return 1
    timeout 15 docker -H "$1" version >/dev/null 2>&1
}

done_with() {
    log "Docker engine answers at $1"
    echo "export DOCKER_HOST=$1"
    exit 0
}

check_existing() {
    if [[ -n "${DOCKER_HOST:-}" ]] && answers "$DOCKER_HOST"; then done_with "$DOCKER_HOST"; fi
    if answers "$DEFAULT_HOST"; then done_with "$DEFAULT_HOST"; fi
    if answers "$OWN_HOST"; then done_with "$OWN_HOST"; fi
    return 0
}

check_existing

[[ $(id -u) -eq 0 ]] || die "no Docker engine answers, and starting one needs root"

# --- install dockerd (Debian's docker.io: dockerd, containerd, runc, iptables)
if ! command -v dockerd >/dev/null 2>&1; then
    log "dockerd missing: apt-get install docker.io"
    export DEBIAN_FRONTEND=noninteractive
    pkgs=(docker.io)
    if ! apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends "${pkgs[@]}" >&2; then
        log "install failed; running apt-get update and retrying"
        apt-get -o DPkg::Lock::Timeout=600 update >&2
        apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends "${pkgs[@]}" >&2
    fi
    command -v dockerd >/dev/null 2>&1 || die "dockerd still missing after installing docker.io"
    # A package's postinst may have started the stock daemon; use it if so.
    check_existing
fi

# --- start our own dockerd, unless one from an earlier run is still starting
# Alive and not a zombie (pid 1 on these machines may not reap orphans quickly).
alive() {
    local state
    kill -0 "$1" 2>/dev/null || return 1
    state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
    [[ -n "$state" && "$state" != Z && "$state" != X ]]
}

running_pid() {
    local pid
    [[ -s "$PIDFILE" ]] || return 1
    pid=$(<"$PIDFILE")
    [[ "$pid" =~ ^[0-9]+$ ]] && alive "$pid" \
        && [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == dockerd ]] \
        && echo "$pid"
}

if pid=$(running_pid); then
    log "dockerd (pid $pid) from an earlier run is still starting; waiting for it"
    daemon_pid=$pid
else
    [[ -e "$PIDFILE" ]] && { log "removing stale pidfile $PIDFILE"; rm -f "$PIDFILE"; }
    # A socket left by a dead daemon would make dockerd refuse to start.
    [[ -S "$SOCK" ]] && { log "removing stale socket $SOCK"; rm -f "$SOCK"; }
    mkdir -p "$DATA_ROOT" "$EXEC_ROOT" "$(dirname "$LOG")"
    # Flags, all checked on this machine (kernel 6.x, cgroup v1, ext4 root):
    #   --storage-driver=overlay2  pinned so a kernel without it fails loudly
    #                              instead of silently falling back to vfs
    #   --exec-root/--pidfile/-H   keep this daemon apart from a stock one
    #   --containerd is not given: dockerd starts its own containerd under
    #                              exec-root when /run/containerd has none
    #   no iptables/cgroup flags: iptables-nft from docker.io's deps works
    #   (bridge, NAT, -p), and the cgroupfs driver on cgroup v1 enforces -m
    cmd=(dockerd
        --host "$OWN_HOST"
        --data-root "$DATA_ROOT"
        --exec-root "$EXEC_ROOT"
        --pidfile "$PIDFILE"
        --storage-driver overlay2
    )
    log "starting: ${cmd[*]} (log: $LOG)"
    echo "=== $(date -Is) engine.sh: ${cmd[*]}" >>"$LOG"
    setsid nohup "${cmd[@]}" >>"$LOG" 2>&1 </dev/null &
    daemon_pid=$!
    disown || true
fi

start=$SECONDS
until answers "$OWN_HOST"; do
    if (( SECONDS - start >= WAIT )); then
        log "dockerd did not answer at $OWN_HOST within ${WAIT}s; last lines of $LOG:"
        tail -n 40 "$LOG" >&2 || true
        exit 1
    fi
    if ! alive "$daemon_pid"; then
        log "dockerd exited; last lines of $LOG:"
        tail -n 40 "$LOG" >&2 || true
        exit 1
    fi
    sleep 1
done
log "dockerd answered after $((SECONDS - start))s"
done_with "$OWN_HOST"
