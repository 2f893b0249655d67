# syntax=docker/dockerfile:1.7
# The ppml-operator image: kopf, the Kubernetes client, pydantic and dp-accounting. No torch,
# flwr or opacus (the operator never imports them; import-linter enforces it).
#
# Build from the repository root:
#   docker build -f images/operator.Dockerfile -t ghcr.io/ppml-operator/ppml-operator:0.1.0 .
#
# The base is pinned to a patch release; CI records the resolved digest in the image's
# provenance (see .github/workflows/images.yaml). Bump both stages together.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml requirements.lock README.md ./
COPY operator/src operator/src
COPY runtime/src runtime/src
COPY devcluster/src devcluster/src
# requirements.lock is the project's exact pin set; as constraints it fixes every package the
# 'operator' extra pulls in, and nothing from the runtime's stack is installed.
RUN pip install --constraint requirements.lock ".[operator]" \
 && python -m compileall -q /opt/venv \
 && python -c "import ppml_operator, kopf, dp_accounting" \
 && ! python -c "import torch" 2>/dev/null

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="ppml-operator" \
      org.opencontainers.image.description="Kubernetes operator for privacy-preserving ML" \
      org.opencontainers.image.source="https://github.com/ppml-operator/ppml-operator" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /opt/venv /opt/venv
# A fixed non-root user matching the chart's runAsUser/runAsGroup (65532).
RUN groupadd --system --gid 65532 ppml \
 && useradd --system --uid 65532 --gid 65532 --no-create-home --shell /usr/sbin/nologin ppml
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 65532:65532
# kopf's liveness endpoint and the Prometheus metrics port (the chart's defaults).
EXPOSE 8080 8081
# The chart writes the same command explicitly; this default serves `docker run`.
ENTRYPOINT ["python", "-m", "ppml_operator"]
CMD ["--liveness-port=8080", "--metrics-port=8081"]
