# syntax=docker/dockerfile:1
# video-worker container: Debian 12 (bookworm) build and runtime, dynamically linked against
# Debian's FFmpeg 5.1 and libx264 (see vendor-notes.md for versions and the GPL consequence:
# whoever distributes this image must offer the corresponding source).
#
#   docker build -t video-worker .
#   docker run --rm -v /uploads:/uploads video-worker run --nats-url nats://nats:4222

# ---- builder --------------------------------------------------------------------------------
# The official Rust image on bookworm, so the FFmpeg headers it builds against are the same
# Debian 12 FFmpeg 5.1 as the runtime libraries below.
FROM rust:1-bookworm AS builder

# pkg-config + libclang: ffmpeg-sys-next finds FFmpeg with pkg-config and generates its
# bindings with bindgen (libclang). The -dev packages are the libraries ffmpeg-next links.
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        pkg-config clang libclang-dev \
        libavcodec-dev libavformat-dev libavutil-dev libswscale-dev \
        libavfilter-dev \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /src
# The release profile keeps line tables (readable backtraces in the logs); compressed, they cost
# 27 MiB instead of 93 (scripts/container-check.sh installs the binary the same way).
# Everything but target/ and .git/ (.dockerignore), so targets Cargo.toml may name all exist.
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    cargo build --release --locked --package video-worker --bin video-worker \
    && mkdir -p /out \
    && objcopy --compress-debug-sections=zlib target/release/video-worker /out/video-worker \
    && /out/video-worker --version

# ---- runtime --------------------------------------------------------------------------------
FROM debian:bookworm-slim

SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# The runtime packages are docker/runtime-packages.txt: the runtime halves of the -dev packages
# above (Debian 12 names: FFmpeg 5.1 = libavcodec59 ...; libavcodec59 pulls in libx264-164), and
# tini, which reaps children and forwards SIGTERM (the worker turns it into a graceful drain).
# scripts/container-check.sh builds its root filesystem from the same file and runs the binary
# in it as the user below: one list, so the image and its proof cannot drift.
COPY docker/runtime-packages.txt /tmp/runtime-packages.txt
RUN apt-get update \
    && sed -e 's/#.*//' /tmp/runtime-packages.txt \
        | xargs env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
    && rm -rf /var/lib/apt/lists/* /tmp/runtime-packages.txt \
    && groupadd --system --gid 10001 vworker \
    && useradd --system --uid 10001 --gid vworker --create-home --home-dir /home/vworker \
        --shell /usr/sbin/nologin vworker

COPY --from=builder /out/video-worker /usr/local/bin/video-worker
# Fails the image build if a shared library the binary needs is missing from the list above.
RUN video-worker --version
COPY LICENSE README.md vendor-notes.md /usr/share/doc/video-worker/

LABEL org.opencontainers.image.title="video-worker" \
      org.opencontainers.image.description="In-process HLS transcoding worker fed by NATS JetStream" \
      org.opencontainers.image.licenses="GPL-3.0-or-later"

# One transcode per 8 cores (at least one), each on its share of the cores: `--jobs auto`
# (README, "A host's throughput").
ENV VW_JOBS=auto

# Numeric, so that orchestrators can verify it is not root without reading /etc/passwd.
USER 10001:10001
WORKDIR /home/vworker
ENTRYPOINT ["tini", "--", "video-worker"]
CMD ["run"]
