//! The client protocol endpoint: TCP on `--broker-addr`, pipelined frames.
//!
//! Per connection a reader loop validates and decodes request frames and
//! runs each request as its own task (so slow ones — a sync-flush produce,
//! a long poll — do not hold up the rest); a writer task sends responses in
//! completion order, tagged with the request id. A frame that fails
//! validation (magic, version, size, CRC, payload) gets one error response
//! and the connection is closed: after a bad frame the stream's framing
//! cannot be trusted. Bad frames never reach the store.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use waybill_client::protocol::{ErrorCode, Produced, Request, Response};
use waybill_client::wire::{self, Header, HEADER_LEN};

use super::transaction::Ended;
use super::{Broker, BrokerError, Outgoing, SendResult};
use crate::storage::StorageError;

/// Requests one connection may have in flight; beyond it the reader stops
/// reading (TCP backpressure) instead of queueing without bound.
const MAX_IN_FLIGHT: usize = 4096;
/// Longest long-poll a client may ask for.
const MAX_PULL_WAIT: Duration = Duration::from_secs(30);

/// Accepts connections until the task is dropped.
pub async fn serve(listener: TcpListener, broker: Arc<Broker>) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                let broker = broker.clone();
                tokio::spawn(async move {
                    if let Err(why) = connection(stream, broker).await {
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

async fn connection(stream: TcpStream, broker: Arc<Broker>) -> Result<(), String> {
    let (rd, wr) = stream.into_split();
    // Buffered: pipelined frames are parsed out of few large reads.
    let mut rd = tokio::io::BufReader::with_capacity(256 * 1024, rd);
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
    let permits = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let result = loop {
        let mut head = [0u8; HEADER_LEN];
        match rd.read_exact(&mut head).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break Ok(()),
            Err(e) => break Err(e.to_string()),
        }
        let header = match Header::parse(&head) {
            Ok(h) => h,
            Err(e) => break Err(reject(&tx, 0, e.to_string()).await),
        };
        let mut payload = vec![0u8; header.len];
        if let Err(e) = rd.read_exact(&mut payload).await {
            break Err(format!("truncated frame: {e}"));
        }
        if let Err(e) = header.verify(&payload) {
            break Err(reject(&tx, header.request_id, e.to_string()).await);
        }
        if crate::replication::raft::is_raft(header.kind) {
            let Some(raft) = broker.raft().cloned() else {
                break Err(reject(&tx, header.request_id, "raft is off on this node".into()).await);
            };
            let reply = raft.serve_rpc(header.kind, &payload).await;
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
                    // The connection now belongs to a replica's stream.
                    break crate::replication::primary::follow(broker.clone(), &payload, rd, tx.clone()).await;
                }
                k => break Err(reject(&tx, header.request_id, format!("unexpected replication frame {k}")).await),
            }
        }
        let req = match Request::decode(header.kind, &payload) {
            Ok(r) => r,
            Err(e) => break Err(reject(&tx, header.request_id, e.to_string()).await),
        };
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break Ok(());
        };
        let (broker, tx) = (broker.clone(), tx.clone());
        let id = header.request_id;
        tokio::spawn(async move {
            let oneway = matches!(req, Request::Produce { oneway: true, .. });
            let resp = handle(&broker, req).await;
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
    let code = match &e {
        BrokerError::Topic(_) | BrokerError::BadId(_) | BrokerError::KeyTooLong { .. } | BrokerError::Invalid(_) => {
            ErrorCode::BadRequest
        }
        BrokerError::Conflict(_) => ErrorCode::BadRequest,
        BrokerError::NotFound(_) => ErrorCode::NotFound,
        BrokerError::Storage(StorageError::Encode(_)) => ErrorCode::BadRequest,
        BrokerError::Storage(StorageError::Failed(_) | StorageError::Closed | StorageError::NoSpace { .. })
        | BrokerError::NotPrimary(_)
        | BrokerError::Unconfirmed(_) => ErrorCode::Unavailable,
        BrokerError::Storage(_) => ErrorCode::Internal,
    };
    Response::Error {
        code,
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
