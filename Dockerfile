# The worker image for deploy/docker-compose.yml and Kubernetes. The local stack does not need it.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY services ./services
COPY schemas ./schemas
RUN pip install --no-cache-dir -e . \
    && useradd --system --no-create-home recovery
USER recovery
ENV ORDER_RECOVERY_METRICS_HOST=0.0.0.0
EXPOSE 9464
ENTRYPOINT ["recovery-worker"]
