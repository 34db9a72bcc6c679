# The worker image for deploy/docker-compose.yml and Kubernetes. The local stack does not need it.
# Every third-party package comes from requirements/runtime.txt, pinned with its hashes (`make lock`,
# docs/development.md#dependencies); the base image is pinned by its exact tag, whose Python minor is
# the one the locks are resolved for (LOCK_PYTHON in the Makefile; a unit test holds them together).

# Stage 1: build the project's wheel with the locked build backend (no build isolation, so nothing
# unhashed is fetched to build it).
FROM python:3.11.14-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY requirements/build.txt requirements/
RUN pip install --require-hashes --only-binary :all: -r requirements/build.txt
COPY pyproject.toml README.md ./
COPY services ./services
RUN pip wheel --no-deps --no-build-isolation --wheel-dir /wheels .

# Stage 2: the runtime. The lock first (its own layer: it changes less often than the code), without
# --no-deps so that pip refuses a lock that misses a dependency; then the project's wheel alone;
# then `pip check` that the locked set satisfies what the project asks for.
FROM python:3.11.14-slim-bookworm
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /app
COPY requirements/runtime.txt /tmp/runtime.txt
RUN pip install --require-hashes --only-binary :all: -r /tmp/runtime.txt && rm /tmp/runtime.txt
COPY --from=build /wheels /tmp/wheels
RUN pip install --no-deps /tmp/wheels/*.whl \
    && rm -rf /tmp/wheels \
    && pip check \
    && useradd --system --uid 10001 --user-group --no-create-home recovery
# The JSON Schemas live at the repository's root, not in the package: say where they are.
COPY schemas ./schemas
ENV ORDER_RECOVERY_SCHEMAS_DIR=/app/schemas
# By number, so that Kubernetes' runAsNonRoot can tell it is not root (deploy/k8s runs as 10001 too).
USER 10001:10001
ENV ORDER_RECOVERY_METRICS_HOST=0.0.0.0
EXPOSE 9464
# The worker's /healthz (no curl in the slim image: Python's urllib; any error or non-2xx exits 1).
# Compose gives the lifecycle process, which runs this image on its own port, a check of its own.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('ORDER_RECOVERY_METRICS_PORT', '9464') + '/healthz', timeout=4)"]
ENTRYPOINT ["recovery-worker"]
