#!/bin/sh
# Make sure a Docker engine answers on this machine: start dockerd when none runs (after a SIGKILL it leaves a stale
# /var/run/docker.pid that makes the next dockerd exit at once). Prints one line; exit 0 when `docker info` answers.
# Usage: scripts/docker-engine.sh [--swarm]   (--swarm: also make this node a single-node Swarm manager if it is not)
# Needs root to start dockerd; never stops an engine that already runs.
set -u
WAIT=${GP_DOCKER_ENGINE_WAIT:-30}
PIDFILE=/var/run/docker.pid

engine_up() { docker info >/dev/null 2>&1; }

if ! command -v docker >/dev/null 2>&1 || ! command -v dockerd >/dev/null 2>&1; then
    echo "docker-engine: docker/dockerd not installed (apt-get install -y docker.io)" >&2
    exit 1
fi

if ! engine_up; then
    if [ "$(id -u)" != 0 ]; then
        echo "docker-engine: no engine answers and only root can start dockerd" >&2
        exit 1
    fi
    if [ -f "$PIDFILE" ]; then
        pid=$(cat "$PIDFILE" 2>/dev/null || true)
        # Only a pid that is a running dockerd keeps the file; anything else is left over from a killed engine.
        if [ -z "$pid" ] || ! [ -r "/proc/$pid/comm" ] || [ "$(cat "/proc/$pid/comm" 2>/dev/null)" != dockerd ]; then
            rm -f "$PIDFILE"
        fi
    fi
    if ! pgrep -x dockerd >/dev/null 2>&1; then
        setsid dockerd >/tmp/dockerd.log 2>&1 < /dev/null &
    fi
    i=0
    while ! engine_up; do
        i=$((i + 1))
        if [ "$i" -gt $((WAIT * 5)) ]; then
            echo "docker-engine: dockerd did not answer within ${WAIT}s; last lines of /tmp/dockerd.log:" >&2
            tail -n 15 /tmp/dockerd.log >&2
            exit 1
        fi
        sleep 0.2
    done
fi

if [ "${1:-}" = "--swarm" ]; then
    state=$(docker info --format '{{.Swarm.LocalNodeState}}' 2>/dev/null)
    if [ "$state" != active ]; then
        docker swarm init --advertise-addr 127.0.0.1 >/dev/null || exit 1
        echo "docker-engine: swarm initialised (single node, 127.0.0.1)"
    fi
fi
echo "docker-engine: $(docker version --format 'engine {{.Server.Version}} (API {{.Server.APIVersion}})' 2>/dev/null)"
