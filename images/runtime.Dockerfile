# syntax=docker/dockerfile:1.7
# The ppml-runtime image: what runs inside every job pod (`python -m ppml_runtime <role>`):
# torch, Opacus, Flower, scikit-learn, mlxtend. Never kopf or the operator.
#
# Build from the repository root:
#   docker build -f images/runtime.Dockerfile -t ghcr.io/ppml-operator/ppml-runtime:0.1.0 .
#
# torch's PyPI wheels bundle their CUDA libraries (CUDA 13 for torch 2.13), so the base needs only
# the CUDA user-space stub and driver compatibility of the matching major version; the base is
# pinned to a patch release and CI records the resolved digest.
ARG CUDA_IMAGE=nvidia/cuda:13.0.0-base-ubuntu24.04

FROM ${CUDA_IMAGE} AS build
ENV DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv \
 && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml requirements.lock README.md ./
COPY operator/src operator/src
COPY runtime/src runtime/src
COPY devcluster/src devcluster/src
RUN pip install --constraint requirements.lock ".[runtime]" \
 && python -m compileall -q /opt/venv \
 && python -c "import ppml_runtime, torch, opacus, flwr" \
 && ! python -c "import kopf" 2>/dev/null

FROM ${CUDA_IMAGE}
LABEL org.opencontainers.image.title="ppml-runtime" \
      org.opencontainers.image.description="DP-SGD and Flower runtime for ppml-operator jobs" \
      org.opencontainers.image.source="https://github.com/ppml-operator/ppml-operator" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /opt/venv /opt/venv
RUN groupadd --system --gid 65532 ppml \
 && useradd --system --uid 65532 --gid 65532 --create-home --home-dir /home/ppml \
      --shell /usr/sbin/nologin ppml
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/home/ppml \
    HF_HUB_OFFLINE=1 \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
USER 65532:65532
WORKDIR /home/ppml
# Metrics (9090), torch.distributed rendezvous (29500), SuperLink (9092), SuperNode (9094):
# the values in ppml_runtime.contract.
EXPOSE 9090 9092 9094 29500
ENTRYPOINT ["python", "-m", "ppml_runtime"]
