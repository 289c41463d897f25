# The leadflow image: the one `leadflow` binary, built in a Rust stage and copied into a
# distroless runtime (glibc, CA certificates, no shell) that runs as a numeric non-root user.
# Every service runs from it: `leadflow serve --service NAME`, `leadflow migrate`.
#
#   docker build -t leadflow:dev .
#
# The builder must be on the same Debian release as the runtime (bookworm = debian12):
# the binary links against the builder's glibc.
ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-slim-bookworm AS build
WORKDIR /src
COPY . .
# The cache mounts keep crates and compiled dependencies between builds on one builder; the
# binary is copied out of the target cache because a cache mount is not part of the layer.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p leadflow \
    && install -D -m 0755 target/release/leadflow /out/usr/local/bin/leadflow \
    && install -d -m 0750 /out/var/lib/leadflow

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/usr/local/bin/leadflow /usr/local/bin/leadflow
# The data directory of the embedded mode (`docker run IMAGE` alone), and where nurture mail
# goes as .eml files without an SMTP relay; Kubernetes mounts an emptyDir over it.
COPY --from=build --chown=65532:65532 /out/var/lib/leadflow /var/lib/leadflow
# 65532 is distroless's "nonroot"; numeric, so runAsNonRoot can verify it.
USER 65532:65532
# In a container the listeners must face the pod network, not the loopback.
ENV LEADFLOW_LISTEN=0.0.0.0:50051 \
    LEADFLOW_INGRESS__LISTEN=0.0.0.0:8080 \
    LEADFLOW_DATA_DIR=/var/lib/leadflow \
    LEADFLOW_LOG__FORMAT=json
EXPOSE 50051 8080
ENTRYPOINT ["/usr/local/bin/leadflow"]
CMD ["serve"]
