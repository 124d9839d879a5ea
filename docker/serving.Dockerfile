# docker/serving.Dockerfile -- an immutable image of one registered model version.
#
# Built by pipeline_tasks.deploy.docker_image.build_image, which prepares the context:
#   wheels/            the server's runtime wheels, no Airflow, and requirements.txt: their
#                      requirements.lock entries with the lock's sha256 hashes
#   app/               a wheel of the serving part of this package only: pipeline_tasks/
#                      __init__.py, core/ and serving/ (no pipeline steps, tooling or templates)
#   model/             the model version's files, verified against its registered sha256
#   model-meta.json    name, version, run id and tags of that version
# No network is needed inside the build: everything is installed with --no-index, the wheels
# with --require-hashes (a file whose sha256 is not the lock's fails the build). The package
# wheel in app/ is written from the checkout by the same build, not downloaded.
# The container re-checks the baked model folder against MODEL_SHA256 at every start and
# exits with code 2 (and the reason in its log) if they differ.
#
# Base image: a registry image should be given by digest (BASE_IMAGE=python@sha256:...) so a
# re-pushed tag cannot change it; the default is the tag because Docker Hub cannot be reached
# (nor its digest checked) where this is developed. Without python:3.11-slim the build uses
# the local image of docker/base-image.sh, which has no registry digest (see that script).
#
# Layers go from least to most often changed: dependencies, the package, the model.
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS deps
COPY wheels/ /tmp/wheels/
RUN python3 -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-index --no-cache-dir --disable-pip-version-check \
        --require-hashes --find-links /tmp/wheels -r /tmp/wheels/requirements.txt \
    && find /opt/venv -depth -type d -name tests -exec rm -rf {} + \
    && /opt/venv/bin/python -m compileall -q -j 0 /opt/venv/lib > /dev/null \
    && rm -rf /tmp/wheels

FROM ${BASE_IMAGE}
RUN groupadd --system --gid 10001 mlops \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin mlops
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_INDEX=1 \
    MLOPS_HOME=/tmp/mlops \
    MLOPS_LAKE_URI=file:///lake \
    MLFLOW_DISABLE_TELEMETRY=true \
    DO_NOT_TRACK=true
COPY --from=deps /opt/venv /opt/venv
COPY app/ /tmp/app/
RUN /opt/venv/bin/pip install --no-index --no-deps --no-cache-dir --disable-pip-version-check \
        /tmp/app/*.whl \
    && rm -rf /tmp/app \
    && mkdir -p /lake/predictions && chown 10001:10001 /lake/predictions

COPY --chown=root:root model/ /opt/model/
COPY --chown=root:root model-meta.json /opt/model-meta.json

ARG MODEL_NAME
ARG MODEL_VERSION
ARG MODEL_SHA256
ARG MODEL_RUN_ID=""
ENV MODEL_NAME=${MODEL_NAME} \
    MODEL_VERSION=${MODEL_VERSION} \
    MODEL_SHA256=${MODEL_SHA256}
LABEL org.opencontainers.image.title="mlops-serving" \
      mlops.model.name=${MODEL_NAME} \
      mlops.model.version=${MODEL_VERSION} \
      mlops.model.run_id=${MODEL_RUN_ID} \
      mlops.model.sha256=${MODEL_SHA256}

USER 10001:10001
WORKDIR /tmp
EXPOSE 8000
HEALTHCHECK --interval=5s --timeout=4s --start-period=60s --retries=3 \
    CMD ["/opt/venv/bin/python", "-c", "import urllib.request as u; u.build_opener(u.ProxyHandler({})).open('http://127.0.0.1:8000/ready', timeout=3)"]
# Shell form so that $MODEL_SHA256 expands; exec keeps the server as PID 1 for SIGTERM.
CMD exec python -m pipeline_tasks.serving --model-dir /opt/model \
    --expected-sha256 "$MODEL_SHA256" --model-meta /opt/model-meta.json \
    --host 0.0.0.0 --port 8000
