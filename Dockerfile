# syntax=docker/dockerfile:1
#
# The spine-scheduler image:  docker build -t spine-scheduler:0.1.0 .
#
# Two stages: a Rust toolchain builds the release binary, and a slim Debian
# of the same release (same glibc) runs it. The runtime image holds the
# binary, CA certificates (for `http` pipelines to https URLs, and for
# `sslrootcert=system` in the database URL) and tini, and runs as an
# unprivileged user. No HEALTHCHECK: Kubernetes probes /readyz and /healthz
# itself, and docker compose has no curl in this image to call them.

# Keep at or above `rust-version` in Cargo.toml (tests/it/deploy/docker.rs checks).
ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS build
WORKDIR /src
# Only what the binary is built from (see .dockerignore): a change to the
# docs or the deploy files does not rebuild it.
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY migrations ./migrations
COPY examples ./examples
# The registry and target caches survive between builds (BuildKit); the
# binary is copied out because a cache mount is not part of the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin spine-scheduler \
 && cp target/release/spine-scheduler /usr/local/bin/spine-scheduler

FROM debian:${DEBIAN_RELEASE}-slim
# tini is PID 1: it forwards SIGTERM to the scheduler and reaps the orphans
# that `command` pipelines can leave (a killed process group's grandchildren
# are re-parented to PID 1, and nothing else in the container would reap them).
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates tini \
 && rm -rf /var/lib/apt/lists/*
# A fixed numeric uid/gid, so Kubernetes' runAsNonRoot can verify it.
RUN groupadd --system --gid 10001 spine \
 && useradd --system --uid 10001 --gid spine --no-create-home \
            --home-dir /nonexistent --shell /usr/sbin/nologin spine
COPY --from=build /usr/local/bin/spine-scheduler /usr/local/bin/spine-scheduler
USER 10001:10001
# In a container the API must listen beyond loopback to be reachable.
ENV SPINE_LISTEN=0.0.0.0:8080
EXPOSE 8080
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/spine-scheduler"]
CMD ["serve"]
