//! The replica's side: find the primary, agree on the log, copy it, confirm.
//!
//! [`handshake`] tries the members (the known primary first) with a
//! `FOLLOW` carrying this log's end and writer history; the primary answers
//! where the two logs agree. At startup a node that holds more than that
//! cuts its log back before opening for business (see `server.rs`); while
//! running, a log that no longer agrees cannot be cut under live readers, so
//! the follower stops and says so (restart to rejoin).
//!
//! [`spawn_follower`] then applies `LOG` frames through the store (same
//! positions, CRC-checked, queue order checked) and an acknowledger task
//! reports `written` and `durable` (after this node's own fsync in sync
//! flush mode) — so a sync primary's `SEND_OK` means the replica has it
//! under the replica's flush mode.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::sync::watch;
use waybill_client::wire;

use super::protocol::{self, Follow, Following, Refused, K_ACK, K_FOLLOW, K_FOLLOWING, K_LOG, K_REFUSED};
use super::state::Persisted;
use super::status::{connect, read_frame};
use super::{Cluster, Node, ReplicationError, Role};
use crate::storage::{Flush, Store};
use waybill_client::tls::Stream;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const RETRY_PAUSE: Duration = Duration::from_millis(300);

/// Members to try, the known primary first.
fn candidates(cluster: &Cluster) -> Vec<(u16, String)> {
    let mut v: Vec<(u16, String)> = cluster.peers.iter().map(|(id, a)| (*id, a.clone())).collect();
    if let Some(p) = cluster.persisted().primary {
        v.sort_by_key(|(id, _)| *id != p);
    }
    v
}

/// Finds a primary that accepts this node; returns the open connection,
/// the primary's address and its answer.
pub async fn handshake(cluster: &Cluster, store: &Store) -> Result<(Stream, String, Following), ReplicationError> {
    let mut last = ReplicationError::Refused("no members to follow".into());
    for (_, addr) in candidates(cluster) {
        let req = Follow {
            replica: cluster.node_id,
            term: cluster.term(),
            broker_addr: cluster.broker_addr.lock().map(|s| s.clone()).unwrap_or_default(),
            http_addr: cluster.http_addr.lock().map(|s| s.clone()).unwrap_or_default(),
            end: store.stats().log_end,
            runs: protocol::runs_to_wire(&store.runs()),
            flush: match store.flush_mode() {
                Flush::Sync => "sync".into(),
                Flush::Async { .. } => "async".into(),
            },
        };
        let attempt = async {
            let mut s = connect(&addr, CONNECT_TIMEOUT, &cluster.link).await?;
            let body = serde_json::to_vec(&req).map_err(|e| ReplicationError::Refused(e.to_string()))?;
            s.write_all(&wire::frame(K_FOLLOW, 0, &body))
                .await
                .map_err(|source| ReplicationError::Io {
                    addr: addr.clone(),
                    source,
                })?;
            let (h, p) = tokio::time::timeout(CONNECT_TIMEOUT, read_frame(&mut s, &addr))
                .await
                .map_err(|_elapsed| ReplicationError::Timeout {
                    addr: addr.clone(),
                    after: CONNECT_TIMEOUT,
                })??;
            let bad = |why: String| ReplicationError::BadReply {
                addr: addr.clone(),
                why,
            };
            match h.kind {
                K_FOLLOWING => {
                    let f: Following = serde_json::from_slice(&p).map_err(|e| bad(e.to_string()))?;
                    Ok((s, f))
                }
                K_REFUSED => {
                    let r: Refused = serde_json::from_slice(&p).map_err(|e| bad(e.to_string()))?;
                    Err(ReplicationError::Refused(format!("{addr}: {}", r.reason)))
                }
                k => Err(bad(format!("unexpected frame kind {k}"))),
            }
        };
        match attempt.await {
            Ok((s, f)) if f.term >= cluster.term() => return Ok((s, addr, f)),
            Ok((_, f)) => {
                last = ReplicationError::Refused(format!(
                    "{addr} is primary of an older term {} (this node knows {})",
                    f.term,
                    cluster.term()
                ))
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Starts following (in the background) until promoted.
pub fn spawn_follower(node: Arc<Node>) {
    let cluster = node.cluster.clone();
    let task = tokio::spawn({
        let cluster = cluster.clone();
        async move {
            let store = node.store.clone();
            let mut warned = false;
            loop {
                if cluster.role() != Role::Replica {
                    return;
                }
                match handshake(&cluster, &store).await {
                    Ok((stream, addr, f)) => {
                        warned = false;
                        let end = store.stats().log_end;
                        if f.from < end {
                            tracing::error!(
                                primary = f.primary,
                                agreed = f.from,
                                end,
                                "this log holds records the primary does not have; restart the node to cut them and rejoin"
                            );
                            tokio::time::sleep(Duration::from_secs(5)).await;
                            continue;
                        }
                        let p = Persisted {
                            term: f.term,
                            primary: Some(f.primary),
                        };
                        if let Err(e) = cluster.set(Role::Replica, p) {
                            tracing::error!(error = %e, "cannot persist the cluster state");
                        }
                        tracing::info!(primary = f.primary, %addr, from = f.from, "following");
                        let why = stream_from(&node, stream, &addr).await;
                        tracing::warn!(%addr, %why, "replication stream ended");
                    }
                    Err(e) => {
                        if !warned {
                            tracing::warn!(error = %e, "no primary to follow yet; retrying");
                            warned = true;
                        }
                    }
                }
                tokio::time::sleep(RETRY_PAUSE).await;
            }
        }
    });
    if let Ok(mut slot) = cluster.follower.lock() {
        *slot = Some(task);
    };
}

/// Applies the primary's stream until it ends; returns why it ended.
async fn stream_from(node: &Node, stream: Stream, addr: &str) -> String {
    let (store, cluster) = (node.store.clone(), &node.cluster);
    let (mut rd, mut wr) = stream.into_split();
    let (written_tx, mut written_rx) = watch::channel(store.stats().log_end);
    let acker = {
        let (store, cluster) = (store.clone(), cluster.clone());
        tokio::spawn(async move {
            let mut first = true;
            loop {
                if !first && written_rx.changed().await.is_err() {
                    return;
                }
                first = false;
                let written = *written_rx.borrow_and_update();
                let durable = match store.flush_mode() {
                    Flush::Async { .. } => written,
                    Flush::Sync => {
                        let _ = store.wait_flushed(written, Duration::from_secs(5)).await;
                        store.flushed().min(written)
                    }
                };
                cluster.set_confirmed(durable);
                let frame = wire::frame(K_ACK, 0, &protocol::encode_ack(written, durable));
                if wr.write_all(&frame).await.is_err() {
                    return;
                }
            }
        })
    };
    let why = loop {
        if cluster.role() != Role::Replica {
            break "promoted".to_string();
        }
        let (h, p) = match read_frame(&mut rd, addr).await {
            Ok(f) => f,
            Err(e) => break e.to_string(),
        };
        if h.kind != K_LOG {
            break format!("unexpected frame kind {}", h.kind);
        }
        let Some((at, frames)) = protocol::decode_log(&p) else {
            break "malformed LOG frame".to_string();
        };
        match store.append_frames(at, frames) {
            Ok((end, system)) => {
                node.applied.applied(&system);
                written_tx.send_replace(end);
            }
            Err(e) => break format!("cannot apply the primary's log: {e}"),
        }
    };
    acker.abort();
    why
}
