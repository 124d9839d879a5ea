# docker/airflow.Dockerfile -- Airflow with this pipeline installed: one image for the
# api-server, scheduler, dag-processor, triggerer, Celery workers, the MLflow server and the
# model server of docker/docker-compose.yaml (and the Helm chart, docker/helm-values.yaml).
#
# Build from the repository root (compose does):
#   docker build -f docker/airflow.Dockerfile -t mlops/airflow:latest .
# BASE_IMAGE defaults to the official Airflow image. Any Debian-like image with python3.11 and
# its venv module works too (where Docker Hub cannot be reached, docker/base-image.sh makes one).
#
# Dependencies are the pinned requirements.lock, installed into /opt/mlops/venv. With wheels in
# docker/wheels/ (host-prepared: `make image-wheels`, as CI does) the build needs
# no network at all; without them pip installs from the package index. Either way every file is
# checked against the lock's sha256 hashes (--require-hashes, uv itself included): a wheel that
# differs, or a pin without hashes, fails the build.
#
# Base image: pass a digest reference from a registry (BASE_IMAGE=apache/airflow@sha256:...;
# after a `docker pull` of the tag, `docker image inspect -f '{{index .RepoDigests 0}}' <tag>`
# prints it) so that a re-pushed tag cannot change what is built on. The default below is the
# tag, because the machines this is developed on cannot reach Docker Hub to read (and check) a
# digest; there the base is the local image of docker/base-image.sh, which has no registry
# digest (see that script).
#
# Layers go from least to most often changed: dependencies, then the package, DAGs and plugins.
ARG BASE_IMAGE=apache/airflow:3.3.2-python3.11

FROM ${BASE_IMAGE}
USER root
ENV PATH=/opt/mlops/venv/bin:$PATH \
    AIRFLOW_HOME=/opt/airflow \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    GX_ANALYTICS_ENABLED=false \
    DO_NOT_TRACK=true \
    MLFLOW_DISABLE_TELEMETRY=true

# the official image has user airflow (uid 50000, group 0); other bases get the same
RUN id -u airflow >/dev/null 2>&1 \
    || useradd --uid 50000 --gid 0 --home-dir /opt/airflow --create-home --shell /bin/bash airflow; \
    mkdir -p /opt/airflow /opt/mlops /srv/mlops && chown -R 50000:0 /opt/airflow /srv/mlops

COPY requirements.lock /opt/mlops/requirements.lock
COPY docker/wheels/ /tmp/wheels/
# uv (pinned in the lock) installs and byte-compiles the ~230 packages in parallel: minutes
# faster than pip. Compiled here, because the airflow user cannot write .pyc files later.
# pip installs uv from the lock's `uv==` entry and its hashes (hash-checking mode).
RUN python3 -m venv /opt/mlops/venv \
    && if ls /tmp/wheels/*.whl >/dev/null 2>&1; then \
         set -- --no-index --find-links /tmp/wheels; else set --; fi \
    && awk '/^uv==/ {p = 1; print; next} p && /^ +--hash=/ {print; next} {p = 0}' \
         /opt/mlops/requirements.lock > /tmp/uv-requirements.txt \
    && /opt/mlops/venv/bin/pip install --no-cache-dir --no-deps --require-hashes "$@" \
         -r /tmp/uv-requirements.txt \
    && /opt/mlops/venv/bin/uv pip install --python /opt/mlops/venv/bin/python --no-cache \
         --compile-bytecode --require-hashes "$@" -r /opt/mlops/requirements.lock \
    && rm -rf /tmp/wheels /tmp/uv-requirements.txt

# The repository's code at /opt/mlops/src, laid out as in the checkout (pipeline_tasks.core.config
# finds dags/, plugins/ and the suites beside the package), on the venv's path like an editable
# install.
COPY airflow.cfg.example pyproject.toml /opt/mlops/src/
COPY pipeline_tasks /opt/mlops/src/pipeline_tasks
COPY plugins /opt/mlops/src/plugins
COPY dags /opt/mlops/src/dags
RUN /opt/mlops/venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' \
        | xargs -I{} sh -c 'echo /opt/mlops/src > {}/mlops-pipeline.pth' \
    && /opt/mlops/venv/bin/python -m compileall -q /opt/mlops/src >/dev/null \
    && /opt/mlops/venv/bin/python -c 'import pipeline_tasks.core.config'
ENV AIRFLOW__CORE__DAGS_FOLDER=/opt/mlops/src/dags \
    AIRFLOW__CORE__PLUGINS_FOLDER=/opt/mlops/src/plugins \
    AIRFLOW__CORE__LOAD_EXAMPLES=False

USER 50000
WORKDIR /opt/airflow
# The official image's entrypoint is kept out: every service states its full command.
ENTRYPOINT []
CMD ["airflow", "version"]
