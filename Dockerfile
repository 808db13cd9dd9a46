# The image the docker work pool `civiclake-docker` runs civiclake's flows in (prefect.yaml:
# daily-docker, monthly-docker). README "Docker" has the whole path from this build to a run.
#
#   docker build -t civiclake:latest .
#   docker build -t civiclake:latest --build-arg BASE_IMAGE=mirror.example/python:3.11-slim .
#   # behind a TLS-intercepting proxy: its CA as a BuildKit secret, never a layer
#   DOCKER_BUILDKIT=1 docker build -t civiclake:latest \
#       --secret id=ca,src=/etc/ssl/certs/ca-certificates.crt .
#
# BASE_IMAGE is any Debian-like image with Python >= 3.11 and its venv module: python:3.11-slim
# (the default), or plain Debian bookworm with `python3 python3-venv` (what the tests build
# offline with debootstrap). Everything goes into a venv at /opt/venv, so both work the same way
# (Debian's own python refuses `pip install` outside a venv, PEP 668).
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

# Extras baked in: every lake backend and BigQuery, so one image serves every block.
ARG EXTRAS=azure,s3,gcs,bigquery
ARG UID=1000
# The Spark engine (--engine spark): add the extra and a Java runtime, e.g.
#   --build-arg EXTRAS=azure,s3,gcs,bigquery,spark --build-arg JAVA=openjdk-17-jre-headless
ARG JAVA=

# A one-shot container (docker run ... bnt run) leaves no background Prefect server behind:
# CIVICLAKE_SERVER_AUTOSTART=0 (a work pool's runs have PREFECT_API_URL anyway).
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PREFECT_SERVER_ANALYTICS_ENABLED=false \
    DO_NOT_TRACK=1 \
    CIVICLAKE_HOME=/data/civiclake \
    CIVICLAKE_SERVER_AUTOSTART=0

# slim images drop man pages, and the JRE's postinst links one: the folder must exist
RUN if [ -n "${JAVA}" ]; then \
        apt-get update && mkdir -p /usr/share/man/man1 \
        && apt-get install -y --no-install-recommends "${JAVA}" && rm -rf /var/lib/apt/lists/*; \
    fi

RUN python3 -m venv /opt/venv \
    && useradd --uid "${UID}" --user-group --create-home --shell /usr/sbin/nologin civiclake \
    && mkdir -p /data/civiclake && chown civiclake:civiclake /data/civiclake

WORKDIR /opt/civiclake

# Layer 1, the dependencies alone (read from pyproject.toml): a source change rebuilds only the
# small layer below. The CA secret is mounted for this RUN only; without it pip uses certifi.
COPY pyproject.toml ./
RUN --mount=type=secret,id=ca \
    if [ -s /run/secrets/ca ]; then export PIP_CERT=/run/secrets/ca; fi \
    && python -c "import sys, tomllib; t = tomllib.load(open('pyproject.toml', 'rb')); \
p = t['project']; extras = [e for e in sys.argv[1].split(',') if e]; \
print('\n'.join(t['build-system']['requires'] + p['dependencies'] \
+ [d for e in extras for d in p['optional-dependencies'][e]]))" \
        "${EXTRAS}" > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# Layer 2, civiclake itself, offline (its dependencies and build backend are above). The source stays in
# /opt/civiclake: the deployments' entrypoints (src/civiclake/flows/*.py) are paths under it.
COPY README.md ./
COPY src ./src
RUN pip install --no-deps --no-build-isolation . && python -m compileall -q src && rm -rf build src/*.egg-info

USER civiclake
VOLUME ["/data/civiclake"]
CMD ["civiclake", "--help"]
