# The Singularity Ops image: the exporter with its gateway (and, as they arrive, the controllers), one CLI.
#   docker build -t singularity-ops:0.1.0 .
#   docker run --rm singularity-ops:0.1.0 --help
FROM python:3.11.10-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# .dockerignore keeps the virtualenv, git, tests, secrets and caches out of the build context.
COPY . /src
RUN pip install /src && rm -rf /src

RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/singularity-ops --create-home \
        --shell /usr/sbin/nologin singularity
USER singularity
WORKDIR /var/lib/singularity-ops

# Inside a container the servers listen on every interface; publish only the gateway.
ENV SINGULARITY_HOME=/var/lib/singularity-ops \
    SINGULARITY_METRICS_LISTEN=0.0.0.0:9777 \
    SINGULARITY_GATEWAY_LISTEN=0.0.0.0:11435
EXPOSE 9777 11435
VOLUME ["/var/lib/singularity-ops"]

# The slim image has no curl: ask /healthz with the Python that is there.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9777/healthz', timeout=4)"]

ENTRYPOINT ["singularity-ops"]
CMD ["exporter"]
