//! Client subcommands of the `waybill` binary (the process edge: anyhow).
//!
//! - [`produce`]: `waybill produce`, over the client protocol.
//! - [`consume`]: `waybill consume`, a push consumer with `--exec`.
//! - [`trace`]: `waybill trace ID|--key K`, a timeline in the terminal.
//! - [`dlq`]: `waybill dlq list|replay`, over the HTTP API.
//! - [`cluster`]: `waybill cluster status|promote`, over the HTTP API.
//! - [`bench`]: `waybill bench`, throughput and latency of a node (own or
//!   given), beside a disk probe ([`bench_probe`]) and optionally NATS
//!   JetStream ([`bench_nats`], [`bench_nats_server`]); the closed-loop
//!   driver is [`bench_load`], the node process [`bench_node`], the output
//!   [`bench_report`].

pub mod bench;
pub mod bench_load;
pub mod bench_nats;
pub mod bench_nats_server;
pub mod bench_node;
pub mod bench_probe;
pub mod bench_report;
pub mod cluster;
pub mod consume;
pub mod dlq;
pub mod produce;
pub mod trace;

/// `http://host:port` from a bare `host:port` (or a URL as given).
pub fn http_base(http: &str) -> String {
    if http.starts_with("http://") || http.starts_with("https://") {
        http.trim_end_matches('/').to_string()
    } else {
        format!("http://{http}")
    }
}

/// The JSON body of an API answer; a non-2xx status becomes an error that
/// carries the server's `{"error": …}` message.
pub async fn json_answer(resp: reqwest::Response) -> anyhow::Result<serde_json::Value> {
    use anyhow::Context;
    let status = resp.status();
    let v: serde_json::Value = resp
        .json()
        .await
        .context("the server answered something that is not JSON")?;
    if !status.is_success() {
        anyhow::bail!("{status}: {}", v["error"].as_str().unwrap_or("request failed"));
    }
    Ok(v)
}

/// An HTTP client for the API; with `WAYBILL_AUTH_TOKEN` set it sends the
/// bearer token a node started with `--auth-token` requires.
pub fn http_client() -> anyhow::Result<reqwest::Client> {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Ok(token) = std::env::var("WAYBILL_AUTH_TOKEN") {
        let value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| anyhow::anyhow!("WAYBILL_AUTH_TOKEN is not a valid header value"))?;
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    Ok(reqwest::Client::builder().default_headers(headers).build()?)
}
