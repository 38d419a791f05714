//! Asking a peer who it is: one `STATUS` round trip with a deadline.
//!
//! Used at startup (is there already a primary with a newer term?) and by
//! the cluster view (`GET /api/v1/cluster` from any node). A peer that does
//! not answer within the deadline is reported as not alive.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use waybill_client::protocol::{Request, Response};
use waybill_client::wire::{self, Header, HEADER_LEN};

use super::protocol::{NodeStatus, K_STATUS, K_STATUS_REPLY};
use super::ReplicationError;

/// Reads one frame; `Closed` on EOF.
pub(crate) async fn read_frame<R: AsyncReadExt + Unpin>(
    rd: &mut R,
    addr: &str,
) -> Result<(Header, Vec<u8>), ReplicationError> {
    let mut head = [0u8; HEADER_LEN];
    rd.read_exact(&mut head).await.map_err(|source| ReplicationError::Io {
        addr: addr.into(),
        source,
    })?;
    let header = Header::parse(&head).map_err(|e| ReplicationError::BadReply {
        addr: addr.into(),
        why: e.to_string(),
    })?;
    let payload = wire::read_payload(rd, header.len)
        .await
        .map_err(|source| ReplicationError::Io {
            addr: addr.into(),
            source,
        })?;
    header.verify(&payload).map_err(|e| ReplicationError::BadReply {
        addr: addr.into(),
        why: e.to_string(),
    })?;
    Ok((header, payload))
}

/// Connects to a peer's broker address and presents `token` (when there
/// is one), within `timeout`.
pub(crate) async fn connect(addr: &str, timeout: Duration, token: Option<&str>) -> Result<TcpStream, ReplicationError> {
    let io = |source| ReplicationError::Io {
        addr: addr.into(),
        source,
    };
    let open = async {
        let mut s = TcpStream::connect(addr)
            .await
            .map_err(|source| ReplicationError::Connect {
                addr: addr.into(),
                source,
            })?;
        let _ = s.set_nodelay(true);
        if let Some(token) = token {
            let (kind, body) = Request::Auth { token: token.into() }.encode();
            s.write_all(&wire::frame(kind, 0, &body)).await.map_err(io)?;
            let (h, payload) = read_frame(&mut s, addr).await?;
            match Response::decode(h.kind, &payload) {
                Ok(Response::Ok) => {}
                Ok(Response::Error { message, .. }) => {
                    return Err(ReplicationError::Refused(format!(
                        "{addr} refused this node's token: {message}"
                    )))
                }
                other => {
                    return Err(ReplicationError::BadReply {
                        addr: addr.into(),
                        why: format!("answer to Auth: {other:?}"),
                    })
                }
            }
        }
        Ok(s)
    };
    tokio::time::timeout(timeout, open)
        .await
        .map_err(|_elapsed| ReplicationError::Timeout {
            addr: addr.into(),
            after: timeout,
        })?
}

/// Asks `addr` for its status (presenting `token` when there is one).
pub async fn query(addr: &str, timeout: Duration, token: Option<&str>) -> Result<NodeStatus, ReplicationError> {
    let ask = async {
        let mut s = connect(addr, timeout, token).await?;
        s.write_all(&wire::frame(K_STATUS, 1, b""))
            .await
            .map_err(|source| ReplicationError::Io {
                addr: addr.into(),
                source,
            })?;
        let (h, payload) = read_frame(&mut s, addr).await?;
        if h.kind != K_STATUS_REPLY {
            return Err(ReplicationError::BadReply {
                addr: addr.into(),
                why: format!("unexpected frame kind {}", h.kind),
            });
        }
        serde_json::from_slice(&payload).map_err(|e| ReplicationError::BadReply {
            addr: addr.into(),
            why: e.to_string(),
        })
    };
    tokio::time::timeout(timeout, ask)
        .await
        .map_err(|_elapsed| ReplicationError::Timeout {
            addr: addr.into(),
            after: timeout,
        })?
}

/// The status of a node outside any replication group.
pub fn lone(store: &crate::storage::Store) -> NodeStatus {
    let stats = store.stats();
    NodeStatus {
        id: store.node_id(),
        role: "primary".into(),
        term: 0,
        primary: Some(store.node_id()),
        broker_addr: String::new(),
        http_addr: String::new(),
        log_end: stats.log_end,
        flushed: stats.flushed,
        replicated: 0,
    }
}

/// This node's own status.
pub fn local(node: &super::Node) -> NodeStatus {
    let stats = node.store.stats();
    let lock = |m: &std::sync::Mutex<String>| m.lock().map(|s| s.clone()).unwrap_or_default();
    let c = &node.cluster;
    if let Some(r) = &node.raft {
        let (role, leader, term) = r.role();
        return NodeStatus {
            id: r.node_id,
            role: role.into(),
            term,
            primary: leader,
            broker_addr: lock(&c.broker_addr),
            http_addr: lock(&c.http_addr),
            log_end: stats.log_end,
            flushed: stats.flushed,
            // Raft: the commit log holds only committed entries.
            replicated: stats.log_end,
        };
    }
    let role = c.role();
    NodeStatus {
        id: c.node_id,
        role: role.name().into(),
        term: c.term(),
        primary: c.primary(),
        broker_addr: lock(&c.broker_addr),
        http_addr: lock(&c.http_addr),
        log_end: stats.log_end,
        flushed: stats.flushed,
        replicated: match role {
            super::Role::Primary => c.replicated(),
            _ => c.confirmed(),
        },
    }
}
