# Builds the three Wrap-X binaries and the mock upstream into one slim image; the compose file
# picks the binary per service.
FROM rust:1-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends cmake pkg-config && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bins \
    && mkdir /out \
    && cp target/release/wrapx-gateway target/release/wrapx-worker target/release/wrapx-admin target/release/wrapx-mock-llm /out/

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/* \
    && useradd --system --home /app wrapx
WORKDIR /app
COPY --from=build /out/ /usr/local/bin/
COPY config/ /app/config/
RUN mkdir -p /app/var/spool && chown -R wrapx /app/var
USER wrapx
