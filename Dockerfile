# rill worker image: non-root, runs with a read-only root filesystem (/tmp the only
# writable path: `docker run --read-only --tmpfs /tmp`, or the chart's emptyDir).
FROM python:3.11-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY service ./service
# pip compiles the bytecode here, so nothing needs writing at run time.
RUN pip install --prefix=/install .

FROM python:3.11-slim-bookworm
RUN groupadd --gid 10001 rill \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin rill
COPY --from=build /install /usr/local
# No .pyc writes, no buffered logs, temp files (protoc for .proto schemas) under /tmp.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONFAULTHANDLER=1 \
    HOME=/tmp \
    TMPDIR=/tmp \
    RILL_METRICS_PORT=9400
USER 10001:10001
WORKDIR /tmp
EXPOSE 9400
# /healthz: the poll loop turned within RILL_HEALTH_STALL_S (Kubernetes uses its own probes).
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
  CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('RILL_METRICS_PORT', '9400'), timeout=4)" || exit 1
ENTRYPOINT ["rill"]
CMD ["run"]
