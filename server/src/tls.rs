//! TLS on the node's two ports (`--tls-cert FILE --tls-key FILE`, PEM).
//!
//! One rustls server configuration (the *ring* provider, named per config
//! as in the client crate) serves both the HTTP listener and the broker
//! port: with TLS on, each speaks TLS only, and a plain-text client fails
//! its handshake and is closed without a byte of it being served.
//!
//! Invariants:
//! - A handshake is bounded by [`HANDSHAKE_TIMEOUT`] and runs off the
//!   accept loop, so a client that connects and stays silent (or a
//!   plain-text client) holds up nobody, and a failed handshake never
//!   stops the loop.
//! - At most [`MAX_HANDSHAKES`] handshakes run at once; past that the
//!   accept loop waits and new connections queue in the kernel's backlog,
//!   so a flood of half-open connections costs bounded memory.
//! - Links from this node to its peers (replication, Raft) trust
//!   `tls_ca`, by default the node's own certificate file: a group shares
//!   one certificate or one CA ([`link_client`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::PrivateKeyDer;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use waybill_client::tls::{read_certs, TlsClient};

/// How long a client gets to complete its TLS handshake: a few round trips
/// on a healthy network; a peer still silent after it is not a TLS client
/// worth a task.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once per listener (see the module doc).
pub const MAX_HANDSHAKES: usize = 256;
/// Finished handshakes waiting for the HTTP server to take them: the server
/// takes each at once, this only smooths bursts.
const READY_QUEUE: usize = 64;

/// Why the node's TLS setting could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("--tls-cert: {0}")]
    Cert(#[source] waybill_client::tls::TlsError),
    #[error("--tls-key: cannot read {path}: {source}")]
    ReadKey {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("--tls-key: {path} holds no PEM private key: {source}")]
    Key {
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("--tls-cert {cert} with --tls-key {key}: {source}")]
    Config {
        cert: PathBuf,
        key: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("tls_ca: {0}")]
    Ca(#[source] waybill_client::tls::TlsError),
}

/// The acceptor for `cert` (PEM, the leaf first, then its chain) and `key`
/// (PEM: PKCS#8, PKCS#1 or SEC1). A key that does not match the
/// certificate is refused here, at start, not at the first handshake.
pub fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, TlsError> {
    let chain = read_certs(cert).map_err(TlsError::Cert)?;
    let pem = std::fs::read(key).map_err(|source| TlsError::ReadKey {
        path: key.to_path_buf(),
        source,
    })?;
    let private = PrivateKeyDer::from_pem_slice(&pem).map_err(|source| TlsError::Key {
        path: key.to_path_buf(),
        source,
    })?;
    let config_err = |source| TlsError::Config {
        cert: cert.to_path_buf(),
        key: key.to_path_buf(),
        source,
    };
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(config_err)?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(config_err)?;
    // HTTP/1.1 only (the API's server speaks no HTTP/2); the broker port
    // ignores ALPN.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// How this node's links to its peers connect: trusting `ca` (by default
/// the node's own certificate file).
pub fn link_client(ca: &Path) -> Result<TlsClient, TlsError> {
    TlsClient::from_ca_file(ca).map_err(TlsError::Ca)
}

/// Completes the TLS handshake on an accepted connection within
/// [`HANDSHAKE_TIMEOUT`]; `None` (logged) when it failed: a plain-text
/// client, an untrusted certificate on the client's side, a silent peer.
pub async fn handshake(acceptor: &TlsAcceptor, tcp: TcpStream, peer: SocketAddr) -> Option<TlsStream<TcpStream>> {
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(s)) => Some(s),
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            None
        }
        Err(_elapsed) => {
            tracing::debug!(%peer, after = ?HANDSHAKE_TIMEOUT, "TLS handshake timed out");
            None
        }
    }
}

/// A TCP listener whose connections come out TLS: what `axum::serve` takes
/// for the HTTP port. Accepting and handshakes run in a task of their own
/// (aborted when this is dropped); [`axum::serve::Listener::accept`] hands
/// out finished handshakes only.
pub struct TlsListener {
    local: SocketAddr,
    // Bounded (READY_QUEUE): handshake tasks wait for the server to take
    // their stream rather than pile streams up.
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    accepting: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    pub fn new(listener: TcpListener, acceptor: TlsAcceptor) -> std::io::Result<TlsListener> {
        let local = listener.local_addr()?;
        let (tx, ready) = mpsc::channel(READY_QUEUE);
        // Caps handshakes in progress (MAX_HANDSHAKES): a permit per task.
        let slots = Arc::new(Semaphore::new(MAX_HANDSHAKES));
        let accepting = tokio::spawn(async move {
            loop {
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    return;
                };
                let (tcp, peer) = match listener.accept().await {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: back off
                        // instead of spinning, then go on accepting.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    let stream = handshake(&acceptor, tcp, peer).await;
                    drop(slot);
                    if let Some(s) = stream {
                        // Fails only when the server is gone (shutdown).
                        let _ = tx.send((s, peer)).await;
                    }
                });
            }
        });
        Ok(TlsListener {
            local,
            ready,
            accepting,
        })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(conn) => conn,
            // The accepting task ended (it never does while this lives):
            // nothing more will come.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// A node's TLS: its acceptor (both ports) and how its links connect.
#[derive(Clone)]
pub struct NodeTls {
    pub acceptor: TlsAcceptor,
    pub links: TlsClient,
}

/// Loads `tls_cert`/`tls_key` (and `tls_ca`) from a validated config:
/// `None` when TLS is off.
pub fn load(cfg: &crate::config::Config) -> Result<Option<NodeTls>, TlsError> {
    let (Some(cert), Some(key)) = (&cfg.tls_cert, &cfg.tls_key) else {
        return Ok(None);
    };
    Ok(Some(NodeTls {
        acceptor: acceptor(cert, key)?,
        links: link_client(cfg.tls_ca.as_deref().unwrap_or(cert))?,
    }))
}
