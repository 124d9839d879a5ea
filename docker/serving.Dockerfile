# docker/serving.Dockerfile -- an immutable image of a SET of registered model versions.
#
# One container serves an endpoint's whole live set of models (e.g. flights_is_late v3 and
# other_model v1). Built by pipeline_tasks.deploy.docker_image.build_image, which prepares the
# context:
#   wheels/            the server's runtime wheels, no Airflow, and requirements.txt: their
#                      requirements.lock entries with the lock's sha256 hashes
#   app/               a wheel of the serving part of this package only: pipeline_tasks/
#                      __init__.py, core/ and serving/ (no pipeline steps, tooling or templates)
#   models/<i>-<name>/ each model version's files, verified against its registered sha256
#   models/manifest.json
#                      {"models": [{"dir", "sha256", "model_name", "model_version", "run_id",
#                      "tags"}, ...]}; the first model is the server's default (/predict)
# No network is needed inside the build: everything is installed with --no-index, the wheels
# with --require-hashes (a file whose sha256 is not the lock's fails the build). The package
# wheel in app/ is written from the checkout by the same build, not downloaded.
# The container re-checks every model folder against the manifest's sha256 at every start and
# exits with code 2 (and the reason in its log) if one differs. The set is in the image's
# labels (mlops.serving.models, and its digest in mlops.model.sha256), given by the builder.
#
# Base image: a registry image should be given by digest (BASE_IMAGE=python@sha256:...) so a
# re-pushed tag cannot change it; the default is the tag because Docker Hub cannot be reached
# (nor its digest checked) where this is developed. Without python:3.11-slim the build uses
# the local image of docker/base-image.sh, which has no registry digest (see that script).
#
# Layers go from least to most often changed: dependencies, the package, the models
# (a new set reuses the cached dependency and package layers).
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

LABEL org.opencontainers.image.title="mlops-serving"
COPY --chown=root:root models/ /opt/models/

USER 10001:10001
WORKDIR /tmp
EXPOSE 8000
HEALTHCHECK --interval=5s --timeout=4s --start-period=60s --retries=3 \
    CMD ["/opt/venv/bin/python", "-c", "import urllib.request as u; u.build_opener(u.ProxyHandler({})).open('http://127.0.0.1:8000/ready', timeout=3)"]
# Exec form: the server is PID 1 and gets SIGTERM (in-flight requests finish).
CMD ["python", "-m", "pipeline_tasks.serving", "--models-manifest", "/opt/models/manifest.json", \
     "--host", "0.0.0.0", "--port", "8000"]
