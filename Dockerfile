# syntax=docker/dockerfile:1
#
# nini-auth container image: a Rust build stage, then a distroless runtime with the binary only.
#
#   docker build -t registry.example.com/nini/nini-auth:0.1.0 .
#   docker run --rm registry.example.com/nini/nini-auth:0.1.0 keygen
#   docker run --rm -p 4180:4180 -p 127.0.0.1:9090:9090 \
#     -v "$PWD/config.toml:/etc/nini-auth/config.toml:ro" -v nini-auth-data:/data \
#     -e TIKTOK_CLIENT_KEY -e TIKTOK_CLIENT_SECRET -e NINI_AUTH_SECRET \
#     registry.example.com/nini/nini-auth:0.1.0
#
# The mounted config must listen on 0.0.0.0 (server.listen, admin.listen) to be reachable from
# outside the container, and must set storage.database = "/data/nini-auth.db".
# See docs/operations.md ("Container image") and examples/kubernetes/.

# --- build ---------------------------------------------------------------------------------
# Bookworm, to match the glibc of the distroless/cc-debian12 runtime below.
FROM rust:1-bookworm AS build

# pingora's build compiles zlib-ng (libz-ng-sys) with cmake; gcc and make are already there.
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /src
# .dockerignore keeps target/, node_modules and databases out of the context.
COPY . .
# --locked: build exactly what Cargo.lock pins, or fail.
RUN cargo build --release --locked --bin nini-auth \
 && install -D -m 0755 target/release/nini-auth /out/nini-auth \
 && mkdir -p /out/data

# --- runtime -------------------------------------------------------------------------------
# glibc + libgcc, CA certificates, no shell, no package manager.
FROM gcr.io/distroless/cc-debian12

COPY --from=build /out/nini-auth /usr/local/bin/nini-auth
# The SQLite database lives here (WAL: nini-auth.db, -wal and -shm side by side); mount a volume.
COPY --from=build --chown=65532:65532 /out/data /data
VOLUME ["/data"]

# `nini-auth check` and `run` find the config here without flags.
ENV NINI_AUTH_CONFIG=/etc/nini-auth/config.toml

# 4180: the proxy (server.listen). 9090: the admin listener (admin.listen: /healthz, /readyz,
# /metrics); never publish it to the internet.
EXPOSE 4180 9090

# distroless's "nonroot" user; numeric so runAsNonRoot can verify it.
USER 65532:65532

ENTRYPOINT ["/usr/local/bin/nini-auth"]
CMD ["run", "--config", "/etc/nini-auth/config.toml"]
