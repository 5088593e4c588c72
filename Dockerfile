# One image for every Trainyard service (api, workers, sweeper, migrate, flower); they
# differ by command. docker-compose.yml builds it once, for the `api` service, and the
# others run it by name. The pinned torch wheel from PyPI carries its CUDA libraries, so
# the same image trains on a GPU where the runtime passes one in (NVIDIA container
# toolkit) and on the CPU elsewhere.
#
# Where Docker Hub cannot be reached, build a local base first and pass it:
#   --build-arg BASE_IMAGE=localhost/trainyard-base   (scripts/local_base_image.sh)
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH \
    TRAINYARD_HOME=/var/lib/trainyard TRAINYARD_DATA_DIR=/var/lib/trainyard/data

# tini is PID 1: it passes SIGTERM on (a worker's warm shutdown) and reaps the DataLoader
# and rank processes a job leaves. The fixed UID/GID keep volume ownership across builds.
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 trainyard \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/trainyard \
        --no-create-home --shell /usr/sbin/nologin trainyard \
    && mkdir -p /var/lib/trainyard/data \
    && chown -R 10001:10001 /var/lib/trainyard \
    && python3 -m venv /opt/venv \
    && pip install --upgrade 'setuptools>=69' wheel

WORKDIR /app
# The dependency layer: the lock file alone (scripts/lock.sh writes it from pyproject.toml),
# so an edit of the code or the README reuses this layer and never re-downloads torch.
COPY requirements/cluster.lock /tmp/cluster.lock
RUN pip install --no-deps -r /tmp/cluster.lock && rm /tmp/cluster.lock

# The code, owned by root: the service user can run it, not change it.
COPY pyproject.toml README.md alembic.ini ./
COPY api ./api
COPY worker ./worker
COPY shared ./shared
COPY cli ./cli
COPY migrations ./migrations
RUN pip install --no-deps --no-build-isolation -e . \
    && python -c "import api, worker, shared, cli"

USER 10001:10001
EXPOSE 8000
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["trainyard", "api", "--host", "0.0.0.0", "--port", "8000"]
