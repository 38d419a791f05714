# The `waybill` binary with its dashboard: the image docker-compose.yml runs
# three times as a Raft group (`docker compose up --build`).
#
# Build stage: the Rust toolchain from the official image; the dashboard is
# built to wasm by the workspace's xtask (wasm-bindgen as a library, nothing
# downloaded outside crates.io).
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN rustup target add wasm32-unknown-unknown \
 && cargo run --locked -p xtask -- dashboard \
 && cargo build --locked --release --bin waybill

# Runtime stage: the binary, the built dashboard, and curl for the health
# check (GET /healthz).
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/waybill /usr/local/bin/waybill
COPY --from=build /src/frontend/dist /usr/share/waybill/dashboard
EXPOSE 8080 9876
VOLUME ["/data"]
HEALTHCHECK --interval=5s --timeout=3s --start-period=30s --retries=12 \
  CMD curl -fsS -o /dev/null http://127.0.0.1:8080/healthz || exit 1
ENTRYPOINT ["waybill"]
CMD ["serve", "--data-dir", "/data", "--http-addr", "0.0.0.0:8080", "--broker-addr", "0.0.0.0:9876", \
     "--ui-dir", "/usr/share/waybill/dashboard"]
