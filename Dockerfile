# syntax=docker/dockerfile:1
# One small image with the `lookout` binary: `lookout exporter`, `lookout evaluator`,
# `lookout rules check|test`, ... (see docker-compose.yml).

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
# The cache mounts keep the registry and the target directory between builds; the binary
# is copied out of the cached target directory in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin lookout \
    && install -m 0755 target/release/lookout /usr/local/bin/lookout

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates libcap2-bin \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --home-dir /nonexistent --no-create-home \
       --shell /usr/sbin/nologin lookout
COPY --from=build /usr/local/bin/lookout /usr/local/bin/lookout
# ICMP probes need a raw socket: give the binary the capability instead of running as
# root (the container must still have NET_RAW, which Docker grants by default and the
# compose file asks for explicitly).
RUN setcap cap_net_raw+ep /usr/local/bin/lookout \
    && apt-get purge -y --auto-remove libcap2-bin
# Defaults, so the image runs without mounts; docker-compose.yml mounts the repository's
# copies over them.
COPY deploy /etc/lookout/deploy
COPY examples/up/rules /etc/lookout/rules
# Working directory and state (the evaluator's --rules.state-file, and in embedded mode its
# data directory, --storage.tsdb.path's default data/) belong to the user, on a volume as
# Prometheus's /prometheus, so the history survives the container.
RUN install -d -o 10001 -g 10001 -m 0750 /var/lib/lookout
WORKDIR /var/lib/lookout
VOLUME ["/var/lib/lookout"]
USER 10001:10001
EXPOSE 9115 9095
ENTRYPOINT ["/usr/local/bin/lookout"]
CMD ["--help"]
