# syntax=docker/dockerfile:1.7
# Relay images, multi-stage:
#   --target airflow  Airflow (api-server, scheduler, dag-processor) with the DAGs and Relay's code
#   --target worker   the step runner (`relay step NAME ...`) used by Kubernetes pods, and TorchServe
#   --target tfx      TFX data validation (Python 3.10, requirements/tfx.lock)
#   --target v2server Relay's V2 (Open Inference Protocol) server: MLServer (requirements/serve.lock) with
#                     Relay's runtime and the request path it shares with TorchServe's handler, nothing more
# Each installs its pinned lock, runs as a non-root user, and carries no secrets: credentials come
# from the pod's service account (IRSA) at run time. Base images are pinned to exact versions.
FROM python:3.11.7-slim-bookworm AS base
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    OMP_NUM_THREADS=1 RELAY_HOME=/var/lib/relay
RUN apt-get update \
 && apt-get install -y --no-install-recommends git openjdk-17-jre-headless \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --create-home --uid 10001 relay \
 && mkdir -p /var/lib/relay && chown relay /var/lib/relay
WORKDIR /opt/relay

FROM base AS deps
COPY requirements/main.lock requirements/main.lock
COPY requirements/shims requirements/shims
# torch==2.13.0 is pinned exactly; the CPU build comes from PyTorch's CPU index. Every wheel must match
# the sha256 in the lock (recorded from the CPU wheel Relay was locked with). The shim makes
# tensorflow-cpu satisfy tensorflow-serving-api's "tensorflow" requirement (one TensorFlow only).
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --require-hashes --no-deps --extra-index-url https://download.pytorch.org/whl/cpu \
      -r requirements/main.lock \
 && /opt/venv/bin/pip install --no-deps --no-build-isolation requirements/shims/tensorflow \
 && /opt/venv/bin/pip check

FROM base AS app
COPY --from=deps /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PYTHONPATH=/opt/relay
COPY pyproject.toml README.md ./
# the wheel's dependency list (pyproject's dynamic dependencies) and the manifests promotion copies
COPY requirements/runtime.in requirements/runtime.in
COPY infra/k8s infra/k8s
COPY components components
COPY pipelines pipelines
COPY dags dags
COPY bin bin
RUN pip install --no-deps --no-build-isolation -e . && chown -R relay /opt/relay
USER relay

FROM app AS worker
ENTRYPOINT ["relay"]
CMD ["--help"]

FROM app AS airflow
ENV AIRFLOW_HOME=/var/lib/relay/airflow AIRFLOW__CORE__DAGS_FOLDER=/opt/relay/dags \
    AIRFLOW__CORE__LOAD_EXAMPLES=False
HEALTHCHECK --interval=30s --timeout=5s CMD python -c \
  "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/api/v2/monitor/health', timeout=4)"
ENTRYPOINT ["airflow"]
CMD ["api-server"]

FROM python:3.10.13-slim-bookworm AS tfx
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TF_CPP_MIN_LOG_LEVEL=2 PYTHONPATH=/opt/relay
WORKDIR /opt/relay
COPY requirements/tfx.lock requirements/tfx.lock
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --require-hashes --no-deps -r requirements/tfx.lock \
 && useradd --create-home --uid 10001 relay
ENV PATH=/opt/venv/bin:$PATH
COPY components/__init__.py components/
COPY components/validate/__init__.py components/validate/tfx_pipeline.py components/validate/
COPY pipelines/schemas pipelines/schemas
USER relay
ENTRYPOINT ["python", "-m", "components.validate.tfx_pipeline"]

FROM python:3.11.7-slim-bookworm AS v2server
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    OMP_NUM_THREADS=1 PYTHONPATH=/opt/relay
WORKDIR /opt/relay
COPY requirements/serve.lock requirements/serve.lock
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --require-hashes --no-deps -r requirements/serve.lock \
 && useradd --create-home --uid 10001 relay
ENV PATH=/opt/venv/bin:$PATH
COPY components/__init__.py components/imaging.py components/onnx_runtime.py components/
COPY components/deploy/__init__.py components/deploy/image_service.py components/deploy/v2_runtime.py \
     components/deploy/v2_server.py components/deploy/
USER relay
ENTRYPOINT ["python", "-m", "components.deploy.v2_server"]
