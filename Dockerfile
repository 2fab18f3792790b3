# syntax=docker/dockerfile:1
# Two images:
#   the default target: every gpunuma component (`gpunuma agent`, `gpunuma operator`,
#   `gpunuma webhook`, and `gpunuma install-launcher DIR`);
#   the `launcher` target: nothing but the static numa-exec, which the webhook's init container runs
#   in every injected pod as `/numa-exec --install /opt/gpunuma` (under 1 MB).
#
#   docker build -t ghcr.io/gpunuma/gpunuma:0.1.0 .
#   docker buildx build --platform linux/amd64,linux/arm64 --target launcher \
#     -t ghcr.io/gpunuma/numa-exec:0.1.0 --push .
#
# numa-exec is compiled on the target platform (under buildx, QEMU runs the arm64 build), so both
# architectures get musl-gcc's static binary; TARGETARCH only checks that the build matched.
#
# Dependencies are installed from PyPI at the exact versions of constraints.txt. The virtual
# environment lives in /usr/local/gpunuma: not under /opt/gpunuma, where the init container mounts
# the emptyDir that receives numa-exec (it would hide the environment).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG BUILD_IMAGE=debian:bookworm-slim

FROM ${BUILD_IMAGE} AS launcher-build
ARG TARGETARCH
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev make musl-tools \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml ./
COPY launcher ./launcher
RUN make -C launcher native \
 && built=$(ls launcher/build/numa-exec-*) \
 && if [ -n "$TARGETARCH" ] && [ "$built" != "launcher/build/numa-exec-$TARGETARCH" ]; then \
      echo "built $built for $(uname -m), not $TARGETARCH" >&2; exit 1; fi \
 && cp "$built" /numa-exec \
 && /numa-exec --version

# The launcher image: only the binary. Numeric non-root USER: the init container's runAsNonRoot.
FROM scratch AS launcher
LABEL org.opencontainers.image.title="numa-exec" \
      org.opencontainers.image.description="gpunuma's launcher: binds a command to its GPUs' NUMA nodes" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/gpunuma/gpunuma"
COPY --from=launcher-build /numa-exec /numa-exec
USER 65532:65532
ENTRYPOINT ["/numa-exec"]
CMD ["--install", "/opt/gpunuma"]

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY constraints.txt pyproject.toml README.md ./
COPY gpunuma ./gpunuma
# install-launcher's package data: the binary for this image's architecture.
COPY --from=launcher-build /src/launcher/build/numa-exec-* ./gpunuma/launcher/bin/
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
