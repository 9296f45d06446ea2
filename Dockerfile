# syntax=docker/dockerfile:1
# The authtrail image: one entry point (`authtrail`), subcommands chosen by the compose
# service (`worker`, `sink`, `keygen`, `verify`). See docs/DEPLOYMENT.md.

# --- build: install authtrail and its dependencies into a self-contained virtualenv -------
FROM python:3.11-slim-bookworm AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Every dependency ships manylinux wheels for CPython 3.11 (glibc >= 2.34 needed by
# cryptography; bookworm has 2.36). The one compiled part is authtrail's own C speedups
# (hatch_build.py: the worker's decode, canonical leaf and hashes, and the sink's Native
# blocks; the hashes link to OpenSSL's libcrypto, which the runtime image has for
# Python's own ssl and hashlib), so
# this stage, and only this one, gets a C compiler and OpenSSL's headers, and the install
# fails rather than ship a slower worker.
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev libssl-dev \
    && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/authtrail
WORKDIR /src
# .dockerignore admits only what the two installs need (pyproject.toml, README, packages).
COPY . .
# Both distributions from this tree (the SDK's is producers/pyproject.toml), so pip never
# looks for authtrail-producer on an index.
RUN AUTHTRAIL_REQUIRE_SPEEDUPS=1 /opt/authtrail/bin/pip install ./producers .

# --- runtime: the virtualenv and a non-root user, nothing else ---------------------------
FROM python:3.11-slim-bookworm

# A fixed uid/gid so volume ownership is predictable across rebuilds and hosts.
# /keys, /var/lib/authtrail and its privacy/ (the subject key store) are created here,
# owned by that user, because Docker initialises a new named volume from the image
# directory it is mounted on: without this the keys volume would be root-owned and
# `authtrail keygen` could not write to it (nor the worker a subject key).
RUN groupadd --system --gid 10001 authtrail \
    && useradd --system --uid 10001 --gid authtrail --no-create-home \
        --home-dir /var/lib/authtrail --shell /usr/sbin/nologin authtrail \
    && mkdir -p /keys /var/lib/authtrail/privacy \
    && chown authtrail:authtrail /keys /var/lib/authtrail /var/lib/authtrail/privacy \
    && chmod 0700 /keys /var/lib/authtrail /var/lib/authtrail/privacy

# Same path as in the build stage: the venv's scripts have it in their #! lines.
COPY --from=build /opt/authtrail /opt/authtrail

ENV PATH=/opt/authtrail/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    AUTHTRAIL_DATA_DIR=/var/lib/authtrail

USER authtrail:authtrail
WORKDIR /var/lib/authtrail

ENTRYPOINT ["authtrail"]
CMD ["--help"]
