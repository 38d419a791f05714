//! Client subcommands of the `waybill` binary (the process edge: anyhow).
//!
//! - [`produce`]: `waybill produce`, over the client protocol.
//! - [`consume`]: `waybill consume`, a push consumer with `--exec`.
//! - [`trace`]: `waybill trace ID|--key K`, a timeline in the terminal.
//! - [`dlq`]: `waybill dlq list|replay`, over the HTTP API.
//! - [`topic`]: `waybill topic list|show|create|delete`, over the HTTP API.
//! - [`group`]: `waybill group list|reset|skip|delete`, over the HTTP API.
//! - [`cluster`]: `waybill cluster status|promote`, over the HTTP API.
//! - [`matrix`]: `waybill matrix`, the reliability matrix ([`waybill::matrix`]).
//! - [`bench`]: `waybill bench`, throughput and latency of a node (own or
//!   given) beside a disk probe; the machinery is the library's
//!   [`waybill::bench`]. Comparisons with peers (NATS JetStream) live in the
//!   workspace's bench crate (`waybill-bench`), so this binary links no
//!   peer client.
//! - [`tls`]: `--tls-ca`, TLS to a node's broker port and HTTPS API.

pub mod bench;
pub mod cluster;
pub mod consume;
pub mod dlq;
pub mod group;
pub mod matrix;
pub mod outbox;
pub mod produce;
pub mod tls;
pub mod topic;
pub mod trace;

pub use waybill::bench::node::http_base;

/// Writes a command's output to stdout. When the reader went away (a
/// closed pipe) the command ends at once with status 141, as a process
/// killed by SIGPIPE does; any other write error ends it with a message.
pub fn write_out(args: std::fmt::Arguments<'_>, newline: bool) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let written = out
        .write_fmt(args)
        .and_then(|()| if newline { out.write_all(b"\n") } else { Ok(()) })
        .and_then(|()| out.flush());
    if let Err(e) = written {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(141);
        }
        eprintln!("waybill: error: cannot write the output: {e}");
        std::process::exit(1);
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

/// An HTTP client builder for the API; with `WAYBILL_AUTH_TOKEN` set it sends the
/// bearer token a node started with `--auth-token` requires.
/// [`tls::api`] finishes it (plain, or through the TLS relay).
pub fn http_builder() -> anyhow::Result<reqwest::ClientBuilder> {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Ok(token) = std::env::var("WAYBILL_AUTH_TOKEN") {
        let value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| anyhow::anyhow!("WAYBILL_AUTH_TOKEN is not a valid header value"))?;
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    Ok(reqwest::Client::builder().default_headers(headers))
}
