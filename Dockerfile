# A slim image that serves the demo models with config/demo.yaml as a non-root user.
# Build: docker build -t canarygate .    Run: docker run -p 8000:8000 canarygate
# The admin API stays off until a token is given: docker run -e CANARYGATE_ADMIN_TOKEN=... .
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN python -m venv /opt/canarygate \
 && /opt/canarygate/bin/pip install --upgrade pip \
 && /opt/canarygate/bin/pip install .

FROM python:3.11-slim
ENV PATH=/opt/canarygate/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
RUN groupadd --system --gid 10001 canarygate \
 && useradd --system --uid 10001 --gid canarygate --home-dir /app --no-create-home canarygate
COPY --from=build /opt/canarygate /opt/canarygate
WORKDIR /app
COPY --chown=root:root config ./config
COPY --chown=root:root models ./models
# The one writable tree: rollout state and the decision log (config/demo.yaml: state_dir
# ../var/state) and the inference dataset (dataset.dir ../var/dataset). Config and models stay
# root-owned and read-only to the server. Mount a volume here to keep a rollback a rollback
# (and the dataset) across container restarts.
RUN mkdir -p /app/var/state /app/var/dataset && chown -R canarygate:canarygate /app/var
VOLUME ["/app/var"]
USER canarygate
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/v2/health/ready', timeout=2)"]
CMD ["canarygate", "serve", "--config", "config/demo.yaml", "--host", "0.0.0.0", "--port", "8000"]
