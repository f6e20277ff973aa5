# clusterdns in a container: the cluster DNS and service proxy of the docker compose stack in docker-compose.yml,
# or on its own:
#   docker build -t clusterdns .
#   docker run --rm -v "$PWD/zones:/zones:ro" -p 127.0.0.1:1053:53/udp -p 127.0.0.1:1053:53/tcp clusterdns
#   dig @127.0.0.1 -p 1053 my-nginx.default.svc.cluster.local
#
# BASE is any Debian-based image with python3 (3.11 or newer): the default for users, or, in the tests, a
# minimal Debian made by debootstrap that already holds everything below (they build without any registry).
ARG BASE=python:3.12-slim
FROM ${BASE}

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

# nft and ip, which `serve --proxy` runs to program the kernel; python3-venv for a Debian python3 (the
# python images have venv built in). apt-get only runs when the base lacks one of them.
RUN if ! command -v nft >/dev/null || ! command -v ip >/dev/null || ! python3 -c 'import ensurepip' 2>/dev/null; then \
        apt-get update \
        && apt-get install -y --no-install-recommends nftables iproute2 \
           $(python3 -c 'import ensurepip' 2>/dev/null || echo python3-venv) \
        && rm -rf /var/lib/apt/lists/*; \
    fi

# A virtual environment: the same steps on the python images and on Debian's python3, whose system
# packages pip must not touch (PEP 668).
RUN python3 -m venv /opt/clusterdns
ENV PATH=/opt/clusterdns/bin:$PATH

# The dependencies (and setuptools, the build backend) first, in a layer of their own: it is rebuilt only when
# pyproject.toml changes, not on every edit of the code. They come from PyPI, or, when the build context has a
# wheels/ directory, from the wheels in it and nothing else (tests/test_compose.py builds so, without network).
# `wheel[s]` makes the directory optional (a glob may match nothing), and COPY copies a directory's content, so
# the wheels land beside pyproject.toml.
WORKDIR /src
COPY pyproject.toml wheel[s] ./
RUN python3 -c 'import tomllib; t = tomllib.load(open("pyproject.toml", "rb")); print(*t["build-system"]["requires"], *t["project"]["dependencies"], sep="\n")' \
        > requirements.txt \
    && if ls ./*.whl >/dev/null 2>&1; then set -- --no-index --find-links .; fi \
    && pip install "$@" -r requirements.txt

# Then the package itself (README.md is its long description, which the build needs), built with the
# setuptools installed above: this step needs no network.
COPY README.md ./
COPY clusterdns ./clusterdns
RUN pip install --no-deps --no-build-isolation .

# Root, for `serve --proxy` (docker-compose.yml): it needs CAP_NET_ADMIN, and Docker grants added capabilities
# (--cap-add) to root only; a process of any other user in the container starts with none effective. Without
# --proxy nothing needs root (port 53 neither: Docker 20.10+ sets net.ipv4.ip_unprivileged_port_start=0).
# /zones: the manifests, mounted read-only. /state: allocations (cluster IPs, node ports, pod IPs), a volume so
# they survive restarts. /env: where an init container writes the pod environment (see docker-compose.yml).
RUN mkdir /zones /state /env
WORKDIR /

# 53: DNS over UDP and TCP. 9153: /health, /ready and Prometheus /metrics, on CoreDNS's port.
EXPOSE 53/udp 53/tcp 9153/tcp

# SIGTERM (docker stop) makes clusterdns lameduck for 5 s (--lameduck), inside Docker's 10 s grace period.
CMD ["clusterdns", "serve", "--host", "0.0.0.0", "--port", "53", "--zones", "/zones", "--state", "/state", \
     "--http", "0.0.0.0:9153"]
