# syntax=docker/dockerfile:1
# One image for every gpunuma component: `gpunuma agent`, `gpunuma operator`, `gpunuma webhook`,
# and `gpunuma install-launcher DIR`, which the webhook's init container runs in every injected pod.
#
#   docker build -t ghcr.io/gpunuma/gpunuma:0.1.0 .
#
# Dependencies are installed from PyPI at the exact versions of constraints.txt. The virtual
# environment lives in /usr/local/gpunuma: not under /opt/gpunuma, where the init container mounts
# the emptyDir that receives numa-exec (it would hide the environment).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY constraints.txt pyproject.toml README.md ./
COPY gpunuma ./gpunuma
RUN python -m venv /usr/local/gpunuma \
 && /usr/local/gpunuma/bin/pip install --constraint constraints.txt . \
 && /usr/local/gpunuma/bin/pip uninstall --yes pip setuptools \
 && /usr/local/gpunuma/bin/gpunuma --version

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="gpunuma" \
      org.opencontainers.image.description="Binds GPU containers to the NUMA nodes local to their GPUs" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/gpunuma/gpunuma"
COPY --from=build /usr/local/gpunuma /usr/local/gpunuma
# Bytecode was compiled at install time; the containers run with a read-only root filesystem.
ENV PATH=/usr/local/gpunuma/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# Non-root by default (65532, "nonroot" in distroless images). The agent's DaemonSet alone runs as
# root, to reach the kubelet's root-owned socket; see the chart's values.yaml.
USER 65532:65532
ENTRYPOINT ["gpunuma"]
CMD ["--help"]
