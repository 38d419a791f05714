//! The client protocol endpoint: TCP on `--broker-addr`, pipelined frames.
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
//! they arrive, a global byte budget, deadlines). With `--auth-token` the
//! first frame must be `Auth` with that token: any other frame, or a wrong
//! token, gets `Unauthorized` and the connection closes — before any of
//! that frame's payload is read, so an unauthenticated peer costs a header.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncWriteExt, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use waybill_client::protocol::{ErrorCode, Produced, Request, Response, K_AUTH};
use waybill_client::wire;

use self::frames::{FrameError, Limits};
use super::transaction::Ended;
use super::{Broker, BrokerError, Outgoing, SendResult};

pub mod frames;

/// Requests one connection may have in flight; beyond it the reader stops
/// reading (TCP backpressure) instead of queueing without bound.
const MAX_IN_FLIGHT: usize = 4096;
/// Longest long-poll a client may ask for.
const MAX_PULL_WAIT: Duration = Duration::from_secs(30);
/// Largest `Auth` payload read from a connection that has not presented
/// its token: a token is short, and this is all such a peer can make the
/// broker buffer.
const MAX_AUTH_PAYLOAD: usize = 4096;

/// How the broker port is guarded.
#[derive(Clone)]
pub struct Port {
    pub limits: Limits,
    /// `--auth-token`: what `Auth` must carry (none: no `Auth` needed).
    pub token: Option<Arc<str>>,
}

/// Accepts connections until the task is dropped.
pub async fn serve(listener: TcpListener, broker: Arc<Broker>, port: Port) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                let (broker, port) = (broker.clone(), port.clone());
                tokio::spawn(async move {
                    if let Err(why) = connection(stream, broker, port).await {
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

/// Equal in time independent of where the inputs differ (as the HTTP
/// bearer check; the broker does not depend on the API layer).
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn connection(stream: TcpStream, broker: Arc<Broker>, port: Port) -> Result<(), String> {
    let (rd, wr) = stream.into_split();
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
    let mut authed = port.token.is_none();
    let result = loop {
        // Until the token is in, a connection gets one frame timeout to
        // present it, not the idle allowance of a known client.
        let idle = if authed { idle_timeout } else { frame_timeout };
        let (header, deadline) = match frames::next_header(&mut rd, idle, frame_timeout).await {
            Ok(h) => h,
            Err(FrameError::Closed) => break Ok(()),
            Err(FrameError::Idle(d)) => {
                tracing::debug!(idle = ?d, "closing a silent client connection");
                break Ok(());
            }
            Err(FrameError::Wire(e)) => break Err(reject(&tx, 0, e.to_string()).await),
            Err(e) => break Err(e.to_string()),
        };
        if !authed && (header.kind != K_AUTH || header.len > MAX_AUTH_PAYLOAD) {
            let why = format!("frame kind {} before Auth", header.kind);
            break Err(unauthorized(&tx, header.request_id, why).await);
        }
        let payload = match frames::read_payload(&mut rd, header.len, &budget, deadline, frame_timeout).await {
            Ok(p) => p,
            Err(e) => break Err(e.to_string()),
        };
        if let Err(e) = header.verify(&payload.bytes) {
            break Err(reject(&tx, header.request_id, e.to_string()).await);
        }
        if header.kind == K_AUTH {
            let token = match Request::decode(header.kind, &payload.bytes) {
                Ok(Request::Auth { token }) => token,
                Ok(_) | Err(_) => break Err(reject(&tx, header.request_id, "malformed Auth".into()).await),
            };
            if port
                .token
                .as_deref()
                .is_some_and(|t| !same(token.as_bytes(), t.as_bytes()))
            {
                break Err(unauthorized(&tx, header.request_id, "wrong token".into()).await);
            }
            authed = true;
            let (kind, body) = Response::Ok.encode();
            if tx.send(wire::frame(kind, header.request_id, &body)).await.is_err() {
                break Ok(());
            }
            continue;
        }
        if crate::replication::raft::is_raft(header.kind) {
            let Some(raft) = broker.raft().cloned() else {
                break Err(reject(&tx, header.request_id, "raft is off on this node".into()).await);
            };
            let reply = raft.serve_rpc(header.kind, &payload.bytes).await;
            let frame = wire::frame(crate::replication::raft::K_RAFT_REPLY, header.request_id, &reply);
            if tx.send(frame).await.is_err() {
                break Ok(());
            }
            continue;
        }
        if crate::replication::protocol::is_replication(header.kind) {
            match header.kind {
                crate::replication::protocol::K_STATUS => {
                    let reply = crate::replication::primary::status_reply(&broker, header.request_id);
                    if tx.send(reply).await.is_err() {
                        break Ok(());
                    }
                    continue;
                }
                crate::replication::protocol::K_FOLLOW => {
                    // The connection now belongs to a replica's stream,
                    // which holds none of the byte budget while it lasts.
                    let frames::Payload { bytes, held } = payload;
                    drop(held);
                    break crate::replication::primary::follow(broker.clone(), &bytes, rd, tx.clone()).await;
                }
                k => break Err(reject(&tx, header.request_id, format!("unexpected replication frame {k}")).await),
            }
        }
        let req = match Request::decode(header.kind, &payload.bytes) {
            Ok(r) => r,
            Err(e) => break Err(reject(&tx, header.request_id, e.to_string()).await),
        };
        // The decoded request now holds the bytes; its budget goes with it.
        let held = payload.held;
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break Ok(());
        };
        let (broker, tx) = (broker.clone(), tx.clone());
        let id = header.request_id;
        tokio::spawn(async move {
            let oneway = matches!(req, Request::Produce { oneway: true, .. });
            let resp = handle(&broker, req).await;
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
        message: format!("this broker wants its --auth-token first (an Auth frame), closing connection: {why}"),
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

fn error(e: BrokerError) -> Response {
    Response::Error {
        code: e.answer().wire,
        message: e.to_string(),
    }
}

async fn handle(broker: &Broker, req: Request) -> Response {
    match req {
        Request::Produce {
            topic,
            messages,
            oneway,
        } => {
            let msgs = messages
                .into_iter()
                .map(|m| {
                    let mode = if oneway {
                        "oneway"
                    } else if m
                        .properties
                        .get(waybill_client::protocol::PROP_SEND_MODE)
                        .map(String::as_str)
                        == Some("async")
                    {
                        "async"
                    } else {
                        "sync"
                    };
                    outgoing(&topic, m, mode)
                })
                .collect();
            match broker.send_batch(&topic, msgs).await {
                Ok(results) => Response::Produced(results.into_iter().map(produced).collect()),
                Err(e) => error(e),
            }
        }
        Request::Heartbeat {
            group,
            client_id,
            topic,
            auto_commit,
        } => {
            if let Err(e) = super::topic::validate_group(&group).and_then(|_| super::topic::validate(&topic)) {
                return error(e.into());
            }
            let queues = broker.group_queues(&group, &topic);
            Response::Assignment(
                broker
                    .groups()
                    .heartbeat(&group, &client_id, &topic, auto_commit, &queues),
            )
        }
        Request::Leave { group, client_id } => {
            broker.groups().leave(&group, &client_id);
            Response::Ok
        }
        Request::Pull {
            group,
            topic,
            queue_id,
            offset,
            max,
            wait_ms,
        } => {
            let wait = Duration::from_millis(u64::from(wait_ms)).min(MAX_PULL_WAIT);
            match broker.pull(&group, &topic, queue_id, offset, max as usize, wait).await {
                Ok((messages, next_offset)) => Response::Messages { messages, next_offset },
                Err(e) => error(e),
            }
        }
        Request::Commit {
            group,
            topic,
            queue_id,
            offset,
            handled,
        } => match broker.commit(&group, &topic, queue_id, offset, handled) {
            Ok(()) => Response::Ok,
            Err(e) => error(e),
        },
        Request::QueryOffset { group, topic, queue_id } => {
            Response::Offset(broker.groups().offset(&group, &topic, queue_id))
        }
        Request::SendBack {
            group,
            record_id,
            reason,
        } => match broker.send_back(&group, &record_id, &reason).await {
            Ok(_) => Response::Ok,
            Err(e) => error(e),
        },
        Request::ProduceHalf {
            topic,
            producer_group,
            message: m,
        } => {
            let msg = outgoing(&topic, m, "sync");
            match broker.send_half(&topic, &producer_group, msg).await {
                Ok(r) => Response::Produced(vec![produced(r)]),
                Err(e) => error(e),
            }
        }
        Request::EndTransaction {
            producer_group,
            id,
            state,
            from_check,
        } => match broker.end_transaction(&producer_group, &id, state, from_check).await {
            Ok(Ended::Committed(r)) => Response::Produced(vec![produced(r)]),
            Ok(Ended::RolledBack | Ended::StillOpen) => Response::Ok,
            Err(e) => error(e),
        },
        Request::PollChecks {
            producer_group,
            wait_ms,
        } => {
            let wait = Duration::from_millis(u64::from(wait_ms)).min(MAX_PULL_WAIT);
            Response::Checks(broker.poll_checks(&producer_group, wait).await)
        }
        // Answered in the reader loop before requests are spawned.
        Request::Auth { .. } => Response::Ok,
    }
}

/// A message from the wire as the broker stores it.
fn outgoing(topic: &str, m: waybill_client::Message, send_mode: &'static str) -> Outgoing {
    Outgoing {
        send_mode: Some(send_mode),
        topic: topic.to_string(),
        key: m.key,
        tags: m.tags,
        producer: m.producer,
        properties: m.properties,
        body: m.body,
        born_ms: (m.born_ms != 0).then_some(m.born_ms),
    }
}

fn produced(r: SendResult) -> Produced {
    Produced {
        status: r.status,
        id: r.id.to_string(),
        queue_id: r.queue_id,
        queue_offset: r.queue_offset,
    }
}
