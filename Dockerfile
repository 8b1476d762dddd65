# The shardkv image: one image for storage nodes, coordinators and the client CLI.
#
#   scripts/build-image.sh            # builds wheels on the host, then this file, offline
#   docker run --rm shardkv:dev node --data-dir /data --listen 0.0.0.0:7100
#
# The build installs only from the wheels that scripts/build-image.sh puts in build/wheels/
# (--no-index): no network is needed inside the build, and what is installed is exactly what
# was resolved on the host. BASE_IMAGE is any Debian-like image with CPython 3.11 as
# `python3`: the registry's python:3.11-slim, or the local shardkv-base:bookworm that
# scripts/build-base-image.sh makes from a debootstrapped rootfs.
ARG BASE_IMAGE=python:3.11-slim

# --- install stage: a virtualenv in /opt/shardkv; wheels and pip never reach the final image
FROM ${BASE_IMAGE} AS install
# Lets scripts/build-image.sh prune this stage's leftover image after a build.
LABEL org.shardkv.build-stage=install
COPY build/wheels/ /wheels/
# pip runs from its own wheel file (a wheel is a zip Python can execute), so the virtualenv
# needs no ensurepip (Debian splits it out) and ends up without pip in it. Bytecode is compiled
# here because the root filesystem is read-only at run time.
RUN set -eux; \
    python3 -m venv --without-pip /opt/shardkv; \
    pip_wheel="$(ls /wheels/pip-*.whl)"; \
    /opt/shardkv/bin/python "$pip_wheel/pip" install --no-index --find-links /wheels \
        --no-cache-dir --disable-pip-version-check --compile shardkv; \
    /opt/shardkv/bin/shardkv --help >/dev/null

# --- final stage
FROM ${BASE_IMAGE}
ARG VERSION=0.0.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="shardkv" \
      org.opencontainers.image.description="A distributed, sharded key-value cluster" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0"

# A fixed numeric uid/gid so that Kubernetes' runAsUser/fsGroup and volume ownership agree
# with the image.
RUN set -eux; \
    groupadd --system --gid 10001 shardkv; \
    useradd --system --uid 10001 --gid 10001 --home-dir /data --no-create-home \
        --shell /usr/sbin/nologin shardkv; \
    mkdir -p /data; \
    chown 10001:10001 /data
COPY --from=install /opt/shardkv /opt/shardkv

ENV PATH=/opt/shardkv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    SHARDKV_DATA_DIR=/data \
    SHARDKV_HEALTH_URL=http://127.0.0.1:7100/health

USER 10001:10001
WORKDIR /data
VOLUME ["/data"]
# 7100: storage node HTTP (REST, /v1/rpc, replication, /metrics);
# 7000: coordinator HTTP (map, admin, /metrics); 7001: coordinator Raft.
EXPOSE 7000 7001 7100

# The URL depends on the role and port: a coordinator container sets SHARDKV_HEALTH_URL to
# its own listen address. (Kubernetes ignores HEALTHCHECK and uses the chart's probes.)
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request as r; r.urlopen(os.environ['SHARDKV_HEALTH_URL'], timeout=2)"]

ENTRYPOINT ["shardkv"]
CMD ["--help"]
