//! TLS on the client side of the broker port (rustls, the *ring* provider).
//!
//! A [`TlsClient`] says whom to trust: the certificates of a CA file
//! ([`TlsClient::from_ca_file`]) or a whole rustls `ClientConfig`
//! ([`TlsClient::from_config`]). The name checked against the broker's
//! certificate is the host part of the address dialled (`localhost`,
//! `127.0.0.1`, `[::1]`) unless [`TlsClient::with_server_name`] overrides
//! it. [`connect`] opens a [`Stream`]: plain TCP without a `TlsClient`,
//! TLS with one; a certificate that does not verify is a connect error,
//! never a silent fallback to plain text.
//!
//! The provider is always *ring*, chosen per config (never a process-wide
//! default), so nothing here depends on which rustls features the rest of
//! a program happens to enable.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

pub use rustls;

/// Why a TLS setting could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not valid PEM: {source}")]
    Pem {
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("{path} holds no certificate")]
    NoCertificate { path: PathBuf },
    #[error("{path}: {source}")]
    Rustls {
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("not a valid TLS server name: {0:?}")]
    ServerName(String),
}

/// The certificates (PEM, one or more) in `path`.
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Pem {
            path: path.to_path_buf(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

/// How to reach a broker over TLS. Cheap to clone (the config is shared).
#[derive(Clone)]
pub struct TlsClient {
    connector: TlsConnector,
    server_name: Option<ServerName<'static>>,
}

impl std::fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsClient")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl TlsClient {
    /// Trusts the certificates in the PEM file `ca` (a CA, or a broker's
    /// self-signed certificate) and nothing else.
    pub fn from_ca_file(ca: impl AsRef<Path>) -> Result<TlsClient, TlsError> {
        let path = ca.as_ref();
        let rustls_err = |source| TlsError::Rustls {
            path: path.to_path_buf(),
            source,
        };
        let mut roots = rustls::RootCertStore::empty();
        for cert in read_certs(path)? {
            roots.add(cert).map_err(rustls_err)?;
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(rustls_err)?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(TlsClient::from_config(Arc::new(config)))
    }

    /// Uses a rustls client configuration as it is.
    pub fn from_config(config: Arc<rustls::ClientConfig>) -> TlsClient {
        TlsClient {
            connector: TlsConnector::from(config),
            server_name: None,
        }
    }

    /// Checks the broker's certificate against `name` instead of the host
    /// part of the address dialled (an address behind NAT or a proxy).
    pub fn with_server_name(mut self, name: &str) -> Result<TlsClient, TlsError> {
        let name = ServerName::try_from(name.to_string()).map_err(|_| TlsError::ServerName(name.to_string()))?;
        self.server_name = Some(name);
        Ok(self)
    }

    /// The TLS handshake over an open connection to `addr`.
    pub async fn handshake(
        &self,
        addr: &str,
        tcp: TcpStream,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let name = match &self.server_name {
            Some(n) => n.clone(),
            None => server_name_of(addr)?,
        };
        self.connector.connect(name, tcp).await
    }
}

/// The host part of `host:port` as a TLS server name (an IP literal is an
/// IP address name, checked against the certificate's IP entries).
fn server_name_of(addr: &str) -> std::io::Result<ServerName<'static>> {
    let host = match addr.rsplit_once(':') {
        Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => host,
        _ => addr,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_string()).map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{host:?} is not a valid TLS server name"),
        )
    })
}

/// A connection to a broker port: plain TCP or TLS over it.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

/// The reading half of a [`Stream`].
pub type ReadHalf = Box<dyn AsyncRead + Send + Unpin>;
/// The writing half of a [`Stream`].
pub type WriteHalf = Box<dyn AsyncWrite + Send + Unpin>;

impl Stream {
    /// Halves for a reader task and a writer task. Plain TCP splits without
    /// a lock; TLS (one session state for both directions) through
    /// `tokio::io::split`.
    pub fn into_split(self) -> (ReadHalf, WriteHalf) {
        match self {
            Stream::Plain(s) => {
                let (r, w) = s.into_split();
                (Box::new(r), Box::new(w))
            }
            Stream::Tls(s) => {
                let (r, w) = tokio::io::split(*s);
                (Box::new(r), Box::new(w))
            }
        }
    }

    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::Tls(_))
    }
}

/// Opens a connection to `addr`, with TLS when `tls` is given. Any failure
/// (TCP, handshake, an untrusted certificate) is one I/O error.
pub async fn connect(addr: &str, tls: Option<&TlsClient>) -> std::io::Result<Stream> {
    let tcp = TcpStream::connect(addr).await?;
    let _ = tcp.set_nodelay(true);
    match tls {
        None => Ok(Stream::Plain(tcp)),
        Some(t) => Ok(Stream::Tls(Box::new(t.handshake(addr, tcp).await?))),
    }
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_name_is_the_host_of_the_address() {
        let name = |a| server_name_of(a).map(|n| n.to_str().into_owned()).ok();
        assert_eq!(name("localhost:9876").as_deref(), Some("localhost"));
        assert_eq!(name("127.0.0.1:9876").as_deref(), Some("127.0.0.1"));
        assert_eq!(name("[::1]:9876").as_deref(), Some("::1"));
        assert_eq!(name("broker.example").as_deref(), Some("broker.example"));
        assert!(name("not a host:1").is_none());
    }

    #[test]
    fn a_missing_or_empty_ca_file_is_named() {
        let dir = std::env::temp_dir().join(format!("waybill-tls-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let missing = dir.join("missing.pem");
        let e = TlsClient::from_ca_file(&missing)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("missing.pem"), "{e}");
        let empty = dir.join("empty.pem");
        let _ = std::fs::write(&empty, b"no pem here\n");
        let e = TlsClient::from_ca_file(&empty)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("holds no certificate"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
