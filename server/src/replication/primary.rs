//! The primary's side: answering `STATUS`, and serving one replica per
//! `FOLLOW` connection.
//!
//! A follow session first decides where the replica's log stops agreeing
//! with this one ([`protocol::agreed_prefix`]). If the replica holds more
//! than that, it is told where to cut and the session ends (it cuts at
//! restart and comes back). Otherwise the session streams whole frames from
//! the replica's end as they become readable here (sync flush: after the
//! fsync), and a reader task turns the replica's `ACK`s into its confirmed
//! position — what sync-replication sends wait for.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncRead;
use tokio::sync::mpsc;
use waybill_client::wire;

use super::protocol::{self, Follow, Following, Refused, K_ACK, K_FOLLOWING, K_LOG, K_REFUSED, K_STATUS_REPLY};
use super::status::read_frame;
use super::{Node, Role};

/// How long an idle stream waits before checking for new log again.
const IDLE_WAIT: Duration = Duration::from_millis(100);
/// Bytes sent but not yet in the replica's log before the stream pauses.
const MAX_UNACKED: u64 = 16 << 20;

/// The `STATUS` reply frame.
pub fn status_reply(node: &Node, request_id: u64) -> Vec<u8> {
    let body = serde_json::to_vec(&super::status::local(node)).unwrap_or_default();
    wire::frame(K_STATUS_REPLY, request_id, &body)
}

/// The `STATUS` reply of a node outside any replication group.
pub fn lone_status_reply(store: &crate::storage::Store, request_id: u64) -> Vec<u8> {
    let body = serde_json::to_vec(&super::status::lone(store)).unwrap_or_default();
    wire::frame(K_STATUS_REPLY, request_id, &body)
}

fn refuse(tx: &mpsc::Sender<Vec<u8>>, r: Refused) -> impl std::future::Future<Output = ()> + '_ {
    let body = serde_json::to_vec(&r).unwrap_or_default();
    async move {
        let _ = tx.send(wire::frame(K_REFUSED, 0, &body)).await;
    }
}

/// Serves a replica on this connection until it goes away.
pub async fn follow<R: AsyncRead + Unpin + Send + 'static>(
    node: Arc<Node>,
    payload: &[u8],
    mut rd: R,
    tx: mpsc::Sender<Vec<u8>>,
) -> Result<(), String> {
    let req: Follow = serde_json::from_slice(payload).map_err(|e| format!("bad FOLLOW: {e}"))?;
    let cluster = node.cluster.clone();
    if req.term > cluster.term() {
        cluster.fence(req.term, None);
    }
    if cluster.role() != Role::Primary {
        refuse(
            &tx,
            Refused {
                term: cluster.term(),
                primary: cluster.primary(),
                reason: format!("node {} is not the primary", cluster.node_id),
            },
        )
        .await;
        return Ok(());
    }
    let store = node.store.clone();
    let own_end = store.stats().log_end;
    let runs = protocol::runs_to_wire(&store.runs());
    let from = protocol::agreed_prefix(&req.runs, req.end, &runs, own_end);
    let reply = Following {
        primary: cluster.node_id,
        term: cluster.term(),
        from,
        yours: protocol::yours(&runs, own_end, req.replica),
    };
    let body = serde_json::to_vec(&reply).map_err(|e| e.to_string())?;
    tx.send(wire::frame(K_FOLLOWING, 0, &body))
        .await
        .map_err(|_| "replica went away".to_string())?;
    if from < req.end {
        tracing::warn!(
            replica = req.replica,
            its_end = req.end,
            agreed = from,
            "replica holds log this primary never had: it must cut it before following"
        );
        return Ok(());
    }
    let id = req.replica;
    let session = cluster.replica_connected(id, req.broker_addr.clone(), req.http_addr.clone());
    tracing::info!(replica = id, from, flush = %req.flush, "replica following");
    let acks = {
        let (cluster, events) = (cluster.clone(), node.events.clone());
        tokio::spawn(async move {
            let addr = format!("replica {id}");
            loop {
                match read_frame(&mut rd, &addr).await {
                    Ok((h, p)) if h.kind == K_ACK => match protocol::decode_ack(&p) {
                        Some((written, durable)) => {
                            cluster.replica_ack(id, written, durable);
                            events.replica_acked(id, durable);
                        }
                        None => return format!("bad ACK from replica {id}"),
                    },
                    Ok((h, _)) => return format!("unexpected frame kind {} from replica {id}", h.kind),
                    Err(e) => return e.to_string(),
                }
            }
        })
    };
    let mut pos = from;
    let why = loop {
        if acks.is_finished() {
            break "replica stopped acknowledging".to_string();
        }
        if cluster.role() != Role::Primary {
            break "no longer the primary".to_string();
        }
        let written = cluster.replicas().get(&id).map_or(from, |r| r.written.max(from));
        if pos.saturating_sub(written) > MAX_UNACKED {
            // Let a slow replica catch up instead of queueing without bound.
            tokio::time::sleep(Duration::from_millis(2)).await;
            continue;
        }
        let chunk = match store.read_raw(pos, protocol::LOG_CHUNK) {
            Ok(c) => c,
            Err(e) => break format!("cannot read the log at {pos}: {e}"),
        };
        if chunk.is_empty() {
            store.wait_readable_past(pos, IDLE_WAIT).await;
            continue;
        }
        let n = chunk.len() as u64;
        let frame = wire::frame(K_LOG, 0, &protocol::encode_log(pos, &chunk));
        if tx.send(frame).await.is_err() {
            break "replica connection closed".to_string();
        }
        pos += n;
    };
    acks.abort();
    cluster.replica_gone(id, session);
    tracing::warn!(replica = id, %why, "replica stream ended");
    Ok(())
}
