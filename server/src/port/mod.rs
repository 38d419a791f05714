//! The broker port, the node's front door: TCP on `--broker-addr`,
//! pipelined frames, routed by kind from one table ([`route`]): `Auth`,
//! client requests (to the broker, see [`client`]), replication
//! (`STATUS`, `FOLLOW`: to the primary side) and Raft RPCs (to the Raft
//! member). It sits above the broker and replication and wires them to the
//! network; neither knows it.
//!
//! Per connection a reader loop validates and decodes request frames and
//! runs each request as its own task (so slow ones — a sync-flush produce,
//! a long poll — do not hold up the rest); a writer task sends responses in
//! completion order, tagged with the request id. A frame that fails
//! validation (magic, version, size, CRC, payload) gets one error response
//! and the connection is closed: after a bad frame the stream's framing
//! cannot be trusted. Bad frames never reach the store.
//!
//! Frames are read within the port's limits ([`frames`]: bytes as
//! they arrive, a global byte budget, deadlines). With tokens configured
//! (`--auth-token`, named `[[token]]`s) the first frame must be `Auth` with
//! one of them, of role `operator` or `admin` (producing and consuming are
//! writes): any other frame, a wrong token or a viewer's gets
//! `Unauthorized` and the connection closes — before any of that frame's
//! payload is read, so an unauthenticated peer costs a header. Client
//! requests are then rate-limited per connection and per token
//! ([`crate::broker::rate`]); a refused one is answered `Unavailable`
//! ("rate limit …") and the connection stays open.
//!
//! With `--tls-cert` the port speaks TLS only ([`crate::tls`]): the
//! handshake runs in the connection's own task within its deadline, and a
//! plain-text client is closed when its handshake fails, before any frame
//! is read.
//!
//! Shutdown ([`crate::shutdown`]): the accept loop ends on the stop, and
//! every connection stops reading frames (a frame half read is dropped,
//! unanswered), lets its requests in flight send their answers, and closes.
//! Each connection is in the drain until then, so the node closes the store
//! only after those answers are out (or the drain's deadline passed: then
//! the rest get none). A long poll is answered by nobody at shutdown: it
//! acknowledges nothing, and waiting for it would hold the drain for up to
//! 30 s (`client::MAX_PULL_WAIT`). A replica's follow stream leaves the
//! drain: it runs until the node exits, so a replica keeps copying to the
//! last byte.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Semaphore};
use waybill_client::protocol::{ErrorCode, Request, Response, K_AUTH};
use waybill_client::wire;

use self::frames::{FrameError, Limits};
use crate::broker::limits::Reason;
use crate::broker::rate::{Bucket, TokenRates};
use crate::broker::Broker;
use crate::model::access::{Caller, Role, Tokens};
use crate::replication::{self, raft, Node};
use crate::shutdown::{Drain, Stop};

mod client;
pub mod frames;

/// Requests one connection may have in flight; beyond it the reader stops
/// reading (TCP backpressure) instead of queueing without bound.
const MAX_IN_FLIGHT: usize = 4096;
/// Largest `Auth` payload read from a connection that has not presented
/// its token: a token is short, and this is all such a peer can make the
/// broker buffer.
const MAX_AUTH_PAYLOAD: usize = 4096;

/// How the broker port is guarded.
#[derive(Clone)]
pub struct Port {
    pub limits: Limits,
    /// The tokens `Auth` may carry (none: no `Auth` needed).
    pub tokens: Option<Arc<Tokens>>,
    /// Client requests per second per connection (0: no limit).
    pub per_connection: u32,
    /// Per-token request rates, shared with HTTP.
    pub token_rates: Arc<TokenRates>,
    /// `--tls-cert`/`--tls-key`: TLS only (none: plain TCP).
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// Ends the accept loop and every connection's reading.
    pub stop: Stop,
    /// Every connection is in it until its answers are out.
    pub drain: Drain,
}

/// What frames are routed to.
#[derive(Clone)]
pub struct Targets {
    pub broker: Arc<Broker>,
    /// The replication side (status, follow, Raft RPCs); without one, such
    /// frames are refused.
    pub node: Option<Arc<Node>>,
}

/// Where a frame goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Auth,
    Client,
    Status,
    Follow,
    /// A replication kind a peer never sends first (replies, acks).
    UnexpectedReplication,
    Raft,
}

/// The port's one routing table, by frame kind.
fn route(kind: u8) -> Route {
    match kind {
        K_AUTH => Route::Auth,
        replication::protocol::K_STATUS => Route::Status,
        replication::protocol::K_FOLLOW => Route::Follow,
        k if replication::protocol::is_replication(k) => Route::UnexpectedReplication,
        k if raft::is_raft(k) => Route::Raft,
        _ => Route::Client,
    }
}

/// Accepts connections until the stop (the listener then closes) or until
/// the task is dropped.
pub async fn serve(listener: TcpListener, targets: Targets, port: Port) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = port.stop.wait() => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                // Entered before the task starts, so the drain cannot miss it.
                let Some(busy) = port.drain.enter() else { return };
                let _ = stream.set_nodelay(true);
                let (targets, port) = (targets.clone(), port.clone());
                tokio::spawn(async move {
                    let done = match port.tls.clone() {
                        None => {
                            let (rd, wr) = stream.into_split();
                            connection(rd, wr, targets, port, peer, busy).await
                        }
                        Some(acceptor) => {
                            let Some(tls) = crate::tls::handshake(&acceptor, stream, peer).await else {
                                return;
                            };
                            let (rd, wr) = tokio::io::split(tls);
                            connection(rd, wr, targets, port, peer, busy).await
                        }
                    };
                    if let Err(why) = done {
                        tracing::warn!(%peer, %why, "client connection closed");
                    }
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Serves one connection, given as its two halves (a TCP stream's own, or
/// a TLS session's through `tokio::io::split`).
async fn connection<R, W>(
    rd: R,
    wr: W,
    targets: Targets,
    port: Port,
    peer: std::net::SocketAddr,
    busy: crate::shutdown::Busy,
) -> Result<(), String>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let mut busy = Some(busy);
    // Buffered: pipelined frames are parsed out of few reads; this buffer
    // is all a connection holds outside the byte budget.
    let mut rd = tokio::io::BufReader::with_capacity(frames::READ_BUFFER, rd);
    // Bounded: responses wait here for the writer; a full queue makes the
    // request tasks wait, and MAX_IN_FLIGHT then stops the reader.
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(1024);
    let writer = tokio::spawn(async move {
        let mut out = BufWriter::with_capacity(256 * 1024, wr);
        while let Some(frame) = rx.recv().await {
            if out.write_all(&frame).await.is_err() {
                return;
            }
            while let Ok(more) = rx.try_recv() {
                if out.write_all(&more).await.is_err() {
                    return;
                }
            }
            if out.flush().await.is_err() {
                return;
            }
        }
    });
    let Limits {
        frame_timeout,
        idle_timeout,
        budget,
    } = port.limits.clone();
    // Per connection: requests in flight (see MAX_IN_FLIGHT).
    let permits = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut authed = port.tokens.is_none();
    // Who this connection is, once `Auth` named a token.
    let mut caller: Option<Caller> = None;
    // The per-connection rate (owned by this loop: no lock).
    let mut bucket = (port.per_connection > 0).then(|| Bucket::new(port.per_connection, std::time::Instant::now()));
    let result = loop {
        // Until the token is in, a connection gets one frame timeout to
        // present it, not the idle allowance of a known client.
        let idle = if authed { idle_timeout } else { frame_timeout };
        let read = async {
            let (header, deadline) = frames::next_header(&mut rd, idle, frame_timeout).await?;
            if !authed && (header.kind != K_AUTH || header.len > MAX_AUTH_PAYLOAD) {
                return Ok((header, None));
            }
            let payload = frames::read_payload(&mut rd, header.len, &budget, deadline, frame_timeout).await?;
            Ok::<_, FrameError>((header, Some(payload)))
        };
        // At shutdown no new frame is read; one half read is dropped (its
        // sender gets no answer, so nothing it sent counts as acknowledged).
        let read = tokio::select! {
            r = read => r,
            _ = port.stop.wait() => break Ok(()),
        };
        let (header, payload) = match read {
            Ok(h) => h,
            Err(FrameError::Closed) => break Ok(()),
            Err(FrameError::Idle(d)) => {
                tracing::debug!(idle = ?d, "closing a silent client connection");
                break Ok(());
            }
            Err(FrameError::Wire(e)) => break Err(reject(&tx, 0, e.to_string()).await),
            Err(e) => break Err(e.to_string()),
        };
        let Some(payload) = payload else {
            let why = format!("frame kind {} before Auth", header.kind);
            break Err(unauthorized(&tx, header.request_id, why).await);
        };
        if let Err(e) = header.verify(&payload.bytes) {
            break Err(reject(&tx, header.request_id, e.to_string()).await);
        }
        let node = targets.node.as_ref();
        match route(header.kind) {
            Route::Client => {}
            Route::Auth => {
                let token = match Request::decode(header.kind, &payload.bytes) {
                    Ok(Request::Auth { token }) => token,
                    Ok(_) | Err(_) => break Err(reject(&tx, header.request_id, "malformed Auth".into()).await),
                };
                if let Some(tokens) = &port.tokens {
                    match tokens.identify(token.as_bytes()) {
                        None => break Err(unauthorized(&tx, header.request_id, "wrong token".into()).await),
                        Some(c) if c.role < Role::Operator => {
                            let why = format!(
                                "token {:?} is a viewer's; producing and consuming need operator or admin",
                                c.name
                            );
                            break Err(unauthorized(&tx, header.request_id, why).await);
                        }
                        Some(c) => caller = Some(c),
                    }
                }
                authed = true;
                let (kind, body) = Response::Ok.encode();
                if tx.send(wire::frame(kind, header.request_id, &body)).await.is_err() {
                    break Ok(());
                }
                continue;
            }
            Route::Raft => {
                let Some(raft) = node.and_then(|n| n.raft.clone()) else {
                    break Err(reject(&tx, header.request_id, "raft is off on this node".into()).await);
                };
                let reply = raft.serve_rpc(header.kind, &payload.bytes).await;
                let frame = wire::frame(raft::K_RAFT_REPLY, header.request_id, &reply);
                if tx.send(frame).await.is_err() {
                    break Ok(());
                }
                continue;
            }
            Route::Status => {
                let reply = match node {
                    Some(n) => replication::primary::status_reply(n, header.request_id),
                    None => replication::primary::lone_status_reply(targets.broker.store(), header.request_id),
                };
                if tx.send(reply).await.is_err() {
                    break Ok(());
                }
                continue;
            }
            Route::Follow => {
                let Some(node) = node.cloned() else {
                    break Err(reject(&tx, header.request_id, "replication is off on this node".into()).await);
                };
                // The connection now belongs to a replica's stream, which
                // holds none of the byte budget while it lasts, and is not
                // drained: it runs until the node exits.
                let frames::Payload { bytes, held } = payload;
                drop(held);
                drop(busy.take());
                break replication::primary::follow(node, &bytes, rd, tx.clone()).await;
            }
            Route::UnexpectedReplication => {
                let why = format!("unexpected replication frame {}", header.kind);
                break Err(reject(&tx, header.request_id, why).await);
            }
        }
        let req = match Request::decode(header.kind, &payload.bytes) {
            Ok(r) => r,
            Err(e) => break Err(reject(&tx, header.request_id, e.to_string()).await),
        };
        // The decoded request now holds the bytes; its budget goes with it.
        let held = payload.held;
        let now = std::time::Instant::now();
        let over = if bucket.as_mut().is_some_and(|b| !b.take(now)) {
            Some(format!("{} requests/s per connection", port.per_connection))
        } else if caller.as_ref().is_some_and(|c| !port.token_rates.allow(&c.name, now)) {
            Some(format!("{} requests/s per token", port.token_rates.per_sec()))
        } else {
            None
        };
        if let Some(limit) = over {
            targets.broker.refusals().add(Reason::Rate);
            drop(held);
            let (kind, body) = Response::Error {
                code: ErrorCode::Unavailable,
                message: format!("rate limit: this broker takes at most {limit}; slow down and retry"),
            }
            .encode();
            if tx.send(wire::frame(kind, header.request_id, &body)).await.is_err() {
                break Ok(());
            }
            continue;
        }
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break Ok(());
        };
        let (broker, tx, stop) = (targets.broker.clone(), tx.clone(), port.stop.clone());
        let id = header.request_id;
        tokio::spawn(async move {
            let oneway = matches!(req, Request::Produce { oneway: true, .. });
            let resp = if matches!(req, Request::Pull { .. }) {
                // A long poll acknowledges nothing: cut at shutdown.
                tokio::select! {
                    r = client::handle(&broker, req, peer) => r,
                    _ = stop.wait() => return,
                }
            } else {
                client::handle(&broker, req, peer).await
            };
            drop(held);
            if !oneway {
                let (kind, body) = resp.encode();
                let _ = tx.send(wire::frame(kind, id, &body)).await;
            }
            drop(permit);
        });
    };
    drop(tx);
    let _ = writer.await;
    result
}

/// Sends `Unauthorized`; returns the reason for the log.
async fn unauthorized(tx: &mpsc::Sender<Vec<u8>>, id: u64, why: String) -> String {
    let (kind, body) = Response::Error {
        code: ErrorCode::Unauthorized,
        message: format!(
            "this broker wants a token first (an Auth frame with --auth-token or a named token), closing connection: {why}"
        ),
    }
    .encode();
    let _ = tx.send(wire::frame(kind, id, &body)).await;
    format!("unauthorized: {why}")
}

/// Sends an error response for a bad frame; returns the reason for the log.
async fn reject(tx: &mpsc::Sender<Vec<u8>>, id: u64, why: String) -> String {
    let (kind, body) = Response::Error {
        code: ErrorCode::BadRequest,
        message: format!("bad frame, closing connection: {why}"),
    }
    .encode();
    let _ = tx.send(wire::frame(kind, id, &body)).await;
    why
}
