//! One pipelined connection to a broker.
//!
//! A writer task drains an mpsc queue of encoded frames into the socket,
//! flushing when the queue runs dry (so bursts coalesce into few syscalls);
//! a reader task decodes response frames and completes the matching
//! request's oneshot by request id. Responses may arrive in any order.
//! When either side fails, every pending request fails with
//! [`ClientError::Disconnected`] and the connection reports itself closed;
//! callers reconnect.
//!
//! With a token ([`Connection::connect_with_token`]) the first frame is
//! `Auth`, and the connection is handed out only once the broker accepted
//! it, so a wrong token is one clear error, not a failure of the first send.
//! With a [`TlsClient`] ([`Connection::connect_with`]) the frames travel
//! over TLS; a handshake that fails is a [`ClientError::Connect`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::sync::{mpsc, oneshot};

use crate::protocol::{ErrorCode, Request, Response};
use crate::tls::{self, TlsClient};
use crate::wire::{self, Header, WireError, HEADER_LEN};

/// Frames queued for the writer task before senders wait (backpressure).
const WRITE_QUEUE: usize = 4096;
/// How long the broker gets to accept a token: one round trip on a fresh
/// connection, nothing stored, so a healthy broker answers in milliseconds.
const AUTH_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {addr}: {message}")]
    Connect { addr: String, message: String },
    #[error("connection to {0} lost")]
    Disconnected(String),
    #[error("no answer from {0} in time")]
    Timeout(String),
    #[error("protocol error: {0}")]
    Wire(#[from] WireError),
    #[error("broker refused ({code:?}): {message}")]
    Broker { code: ErrorCode, message: String },
    #[error("unexpected response: {0}")]
    Unexpected(String),
}

impl ClientError {
    /// True when another attempt (maybe on another broker) could succeed.
    pub fn is_retriable(&self) -> bool {
        match self {
            ClientError::Connect { .. } | ClientError::Disconnected(_) | ClientError::Timeout(_) => true,
            ClientError::Broker { code, .. } => matches!(code, ErrorCode::Unavailable | ErrorCode::Internal),
            ClientError::Wire(_) | ClientError::Unexpected(_) => false,
        }
    }
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Response>>>>;

pub struct Connection {
    addr: String,
    frames: mpsc::Sender<Vec<u8>>,
    // std Mutex: map insert/remove only, never held across an await.
    pending: Pending,
    next_id: AtomicU64,
    closed: Arc<AtomicBool>,
}

fn lock(p: &Pending) -> std::sync::MutexGuard<'_, HashMap<u64, oneshot::Sender<Response>>> {
    p.lock().unwrap_or_else(|e| e.into_inner())
}

impl Connection {
    /// Connects, presenting `token` first when there is one (see the
    /// module doc); a refused token is a [`ClientError::Broker`] with
    /// [`ErrorCode::Unauthorized`].
    pub async fn connect_with_token(addr: &str, token: Option<&str>) -> Result<Arc<Connection>, ClientError> {
        Connection::connect_with(addr, token, None).await
    }

    /// Connects over TLS when `tls` is given, then presents `token` as
    /// [`Connection::connect_with_token`] does.
    pub async fn connect_with(
        addr: &str,
        token: Option<&str>,
        tls: Option<&TlsClient>,
    ) -> Result<Arc<Connection>, ClientError> {
        let conn = Connection::open(addr, tls).await?;
        if let Some(token) = token {
            let auth = Request::Auth {
                token: token.to_string(),
            };
            match conn.call(&auth, AUTH_TIMEOUT).await? {
                Response::Ok => {}
                other => return Err(ClientError::Unexpected(format!("answer to Auth: {other:?}"))),
            }
        }
        Ok(conn)
    }

    /// Connects (plain TCP, no token) and starts the reader and writer tasks.
    pub async fn connect(addr: &str) -> Result<Arc<Connection>, ClientError> {
        Connection::open(addr, None).await
    }

    async fn open(addr: &str, tls: Option<&TlsClient>) -> Result<Arc<Connection>, ClientError> {
        let stream = tls::connect(addr, tls).await.map_err(|e| ClientError::Connect {
            addr: addr.to_string(),
            message: e.to_string(),
        })?;
        let (rd, wr) = stream.into_split();
        // Buffered: a header and its payload usually arrive in one read.
        let mut rd = tokio::io::BufReader::with_capacity(256 * 1024, rd);
        let (tx, mut rx) = mpsc::channel::<Vec<u8>>(WRITE_QUEUE);
        let pending: Pending = Arc::default();
        let closed = Arc::new(AtomicBool::new(false));

        let closed_w = closed.clone();
        tokio::spawn(async move {
            let mut out = BufWriter::with_capacity(256 * 1024, wr);
            while let Some(frame) = rx.recv().await {
                if out.write_all(&frame).await.is_err() {
                    break;
                }
                // Coalesce whatever else is already queued, then flush once.
                while let Ok(more) = rx.try_recv() {
                    if out.write_all(&more).await.is_err() {
                        closed_w.store(true, Ordering::Release);
                        return;
                    }
                }
                if out.flush().await.is_err() {
                    break;
                }
            }
            closed_w.store(true, Ordering::Release);
        });

        let (pending_r, closed_r) = (pending.clone(), closed.clone());
        let peer = addr.to_string();
        tokio::spawn(async move {
            let reason = loop {
                let mut head = [0u8; HEADER_LEN];
                if let Err(e) = rd.read_exact(&mut head).await {
                    break e.to_string();
                }
                let header = match Header::parse(&head) {
                    Ok(h) => h,
                    Err(e) => break e.to_string(),
                };
                let payload = match wire::read_payload(&mut rd, header.len).await {
                    Ok(p) => p,
                    Err(e) => break e.to_string(),
                };
                if let Err(e) = header.verify(&payload) {
                    break e.to_string();
                }
                let resp = match Response::decode(header.kind, &payload) {
                    Ok(r) => r,
                    Err(e) => break e.to_string(),
                };
                if let Some(tx) = lock(&pending_r).remove(&header.request_id) {
                    let _ = tx.send(resp);
                }
            };
            tracing::debug!(%peer, %reason, "connection closed");
            closed_r.store(true, Ordering::Release);
            // Dropping the senders fails every waiting request.
            lock(&pending_r).clear();
        });

        Ok(Arc::new(Connection {
            addr: addr.to_string(),
            frames: tx,
            pending,
            next_id: AtomicU64::new(1),
            closed,
        }))
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Sends `req` and waits up to `timeout` for its response. A broker
    /// error response becomes [`ClientError::Broker`].
    pub async fn call(&self, req: &Request, timeout: Duration) -> Result<Response, ClientError> {
        if self.is_closed() {
            return Err(ClientError::Disconnected(self.addr.clone()));
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        lock(&self.pending).insert(id, tx);
        let (kind, payload) = req.encode();
        if self.frames.send(wire::frame(kind, id, &payload)).await.is_err() {
            lock(&self.pending).remove(&id);
            return Err(ClientError::Disconnected(self.addr.clone()));
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(Response::Error { code, message })) => Err(ClientError::Broker { code, message }),
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(_)) => Err(ClientError::Disconnected(self.addr.clone())),
            Err(_) => {
                lock(&self.pending).remove(&id);
                Err(ClientError::Timeout(self.addr.clone()))
            }
        }
    }

    /// Sends `req` without waiting for (or expecting) a response.
    pub async fn send_only(&self, req: &Request) -> Result<(), ClientError> {
        if self.is_closed() {
            return Err(ClientError::Disconnected(self.addr.clone()));
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (kind, payload) = req.encode();
        self.frames
            .send(wire::frame(kind, id, &payload))
            .await
            .map_err(|_| ClientError::Disconnected(self.addr.clone()))
    }
}
