# The `waybill` binary with its dashboard, for docker-compose.yml.
# Build stage: the Rust toolchain from the official image; the dashboard is
# built to wasm by the workspace's xtask (wasm-bindgen as a library, nothing
# downloaded outside crates.io).
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN rustup target add wasm32-unknown-unknown \
 && cargo run --locked -p xtask -- dashboard \
 && cargo build --locked --release --bin waybill

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/waybill /usr/local/bin/waybill
COPY --from=build /src/frontend/dist /usr/share/waybill/dashboard
EXPOSE 8080 9876
ENTRYPOINT ["waybill"]
CMD ["serve", "--data-dir", "/data", "--http-addr", "0.0.0.0:8080", "--broker-addr", "0.0.0.0:9876", \
     "--ui-dir", "/usr/share/waybill/dashboard"]
