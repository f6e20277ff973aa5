# clusterdns in a container: the cluster DNS of the docker compose stack in docker-compose.yml, or on its own:
#   docker build -t clusterdns .
#   docker run --rm -v "$PWD/zones:/zones:ro" -p 127.0.0.1:1053:53/udp -p 127.0.0.1:1053:53/tcp clusterdns
#   dig @127.0.0.1 -p 1053 my-nginx.default.svc.cluster.local
FROM python:3.12-slim

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

# The dependencies first, in a layer of their own: it is rebuilt only when pyproject.toml changes,
# not on every edit of the code.
WORKDIR /src
COPY pyproject.toml ./
RUN python -c 'import tomllib; print(*tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"], sep="\n")' \
        > requirements.txt \
    && pip install -r requirements.txt

# Then the package itself (README.md is its long description, which the build needs).
COPY README.md ./
COPY clusterdns ./clusterdns
RUN pip install --no-deps .

# An unprivileged user. Port 53 needs no capability: Docker 20.10+ sets net.ipv4.ip_unprivileged_port_start=0
# in containers (docker-compose.yml sets it too, for older engines).
# /zones: the manifests, mounted read-only. /state: allocations (cluster IPs, node ports, pod IPs), a volume so
# they survive restarts. /env: where an init container writes the pod environment (see docker-compose.yml).
# A named volume mounted on /state or /env takes this ownership when it is created.
RUN useradd --system --uid 10001 --user-group --no-create-home --home-dir /nonexistent clusterdns \
    && mkdir /zones /state /env \
    && chown clusterdns:clusterdns /state /env
USER clusterdns
WORKDIR /

# 53: DNS over UDP and TCP. 9153: /health, /ready and Prometheus /metrics, on CoreDNS's port.
EXPOSE 53/udp 53/tcp 9153/tcp

# SIGTERM (docker stop) makes clusterdns lameduck for 5 s (--lameduck), inside Docker's 10 s grace period.
CMD ["clusterdns", "serve", "--host", "0.0.0.0", "--port", "53", "--zones", "/zones", "--state", "/state", \
     "--http", "0.0.0.0:9153"]
