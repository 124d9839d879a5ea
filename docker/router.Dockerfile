# docker/router.Dockerfile -- the stable endpoint of the docker serving target.
#
# A TCP router (pipeline_tasks/serving/router.py, standard library only) that publishes the
# stable port and pipes each new connection to the live model container named in
# /state/backend.json (a read-only bind mount the deployer rewrites atomically). Model versions
# run as their own containers on the private network; switching versions is rewriting that file,
# so the stable port never goes dark. Built by pipeline_tasks.deploy.docker_router.ensure_router.
# Nothing is installed: the standard library only. The base image follows serving.Dockerfile's
# rule (a registry image by digest; else the local image of docker/base-image.sh).
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}
COPY router.py /opt/mlops/router.py
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=5s --timeout=3s --start-period=5s --retries=3 \
    CMD ["python3", "-c", "import socket; socket.create_connection(('127.0.0.1', 8000), 2).close()"]
CMD ["python3", "/opt/mlops/router.py"]
