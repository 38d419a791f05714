//! `--tls-ca FILE`: the client subcommands talking to a node started with
//! `--tls-cert`/`--tls-key` (its ports speak TLS only).
//!
//! Broker-port commands hand the trust to the client crate
//! ([`TlsClient`]). HTTP commands keep their reqwest client, which this
//! binary builds without a TLS backend: reqwest's rustls backend either
//! brings aws-lc-rs (cmake and nasm to build) or, without a provider,
//! panics in every reqwest client of a process that has not installed a
//! process-wide one — the node's webhook and OTLP exporters, the bench,
//! the tests. So with `--tls-ca` the client talks plain HTTP over a Unix
//! socket in a private temporary folder (mode 0700) to a relay in this
//! process, which carries each connection to the node over TLS, checking
//! the node's certificate against the CA and the host of `--http`. Only
//! that in-process leg is plain text, and nobody else can open it.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use tokio::net::UnixListener;
use waybill_client::TlsClient;

#[derive(Debug, Clone, Default, Args)]
pub struct TlsArgs {
    /// Talk TLS to the node (its broker port, and HTTPS for --http), trusting the
    /// CA or self-signed certificate in this PEM file.
    #[arg(long, value_name = "FILE", env = "WAYBILL_TLS_CA", global = true)]
    pub tls_ca: Option<PathBuf>,
}

impl TlsArgs {
    /// The client crate's TLS setting (none without `--tls-ca`).
    pub fn client(&self) -> anyhow::Result<Option<TlsClient>> {
        self.tls_ca
            .as_ref()
            .map(|ca| TlsClient::from_ca_file(ca).context("--tls-ca"))
            .transpose()
    }
}

/// An API client and the base URL for the node at `--http ADDR`: plain
/// HTTP without `--tls-ca`, through the TLS relay (see the module doc)
/// with it.
pub async fn api(http: &str, tls: &TlsArgs) -> anyhow::Result<(reqwest::Client, String)> {
    let base = super::http_base(http);
    let builder = super::http_builder()?;
    let Some(tls) = tls.client()? else {
        return Ok((builder.build()?, base));
    };
    let addr = base
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap_or_default()
        .to_string();
    let dir = tempfile::Builder::new()
        .prefix("waybill-tls-")
        .tempdir()
        .context("cannot create the TLS relay's folder")?;
    let socket = dir.path().join("relay.sock");
    let listener = UnixListener::bind(&socket).with_context(|| format!("cannot listen on {}", socket.display()))?;
    tokio::spawn(relay(listener, dir, addr.clone(), Arc::new(tls)));
    let client = builder.unix_socket(socket).build()?;
    Ok((client, format!("http://{addr}")))
}

/// Carries each connection on `listener` to `addr` over TLS until the
/// command ends; `_dir` (removed on drop) lives as long as the relay.
async fn relay(listener: UnixListener, _dir: tempfile::TempDir, addr: String, tls: Arc<TlsClient>) {
    loop {
        let Ok((mut local, _)) = listener.accept().await else {
            return;
        };
        let (addr, tls) = (addr.clone(), tls.clone());
        tokio::spawn(async move {
            match waybill_client::tls::connect(&addr, Some(&tls)).await {
                Ok(mut remote) => {
                    let _ = tokio::io::copy_bidirectional(&mut local, &mut remote).await;
                }
                // The client sees its connection close; say why here.
                Err(e) => eprintln!("waybill: error: TLS to {addr}: {e}"),
            }
        });
    }
}
