# The image a docker work pool runs civiclake's flows in (see prefect.yaml: daily-docker).
# Build: docker build -t civiclake:latest .   (not built on the development machines: no engine)
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PREFECT_SERVER_ANALYTICS_ENABLED=false \
    DO_NOT_TRACK=1 \
    CIVICLAKE_HOME=/data/civiclake

WORKDIR /opt/civiclake
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install --no-cache-dir .

VOLUME ["/data/civiclake"]
CMD ["civiclake", "--help"]
