# syntax=docker/dockerfile:1
#
# Convergio application image: one image, three roles chosen by the command
#   convergio api         (default) FastAPI under uvicorn on CONVERGIO_API_HOST:CONVERGIO_API_PORT
#   convergio worker      the Temporal worker
#   convergio db upgrade  apply the SQL migrations, then exit
# Point it at external servers with CONVERGIO_TEMPORAL_ADDRESS, CONVERGIO_DATABASE_URL and
# CONVERGIO_REDIS_URL (see docker-compose.yml); an unset URL starts the embedded server instead.

ARG PYTHON_IMAGE=python:3.11-slim

# ---- build: install the package and its runtime dependencies into a virtualenv ----
FROM ${PYTHON_IMAGE} AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_INPUT=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
ENV PATH="/opt/venv/bin:${PATH}"

WORKDIR /src
# .dockerignore keeps .git, .venv, .convergio and test artifacts out of the context.
COPY . .
# No extras: runtime dependencies only, no dev/test tooling.
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install .

# ---- runtime: the virtualenv only, run as an unprivileged user ----
FROM ${PYTHON_IMAGE} AS runtime

ENV PATH="/opt/venv/bin:${PATH}" \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    CONVERGIO_API_HOST=0.0.0.0 \
    CONVERGIO_API_PORT=8000 \
    CONVERGIO_DATA_DIR=/var/lib/convergio

RUN groupadd --system --gid 10001 convergio \
 && useradd --system --uid 10001 --gid convergio --home-dir /home/convergio --create-home \
        --shell /usr/sbin/nologin convergio \
 && mkdir -p /var/lib/convergio \
 && chown convergio:convergio /var/lib/convergio

COPY --from=build /opt/venv /opt/venv

WORKDIR /home/convergio
USER convergio:convergio

EXPOSE 8000

# Only meaningful for `convergio api`; docker-compose.yml disables it for the worker and
# the migration job, which serve no HTTP.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('CONVERGIO_API_PORT', '8000'), timeout=4)"]

CMD ["convergio", "api"]
