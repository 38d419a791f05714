//! Asking a peer who it is: one `STATUS` round trip with a deadline.
//!
//! Used at startup (is there already a primary with a newer term?) and by
//! the cluster view (`GET /api/v1/cluster` from any node). A peer that does
//! not answer within the deadline is reported as not alive.
//!
//! Every link to a peer's broker port opens here ([`connect`]), with what
//! the group asks of a client ([`Link`]): its token, and TLS when the
//! members' ports speak it.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use waybill_client::protocol::{Request, Response};
use waybill_client::tls::{Stream, TlsClient};
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

/// How this node reaches the other members' broker ports.
#[derive(Debug, Clone, Default)]
pub struct Link {
    /// The group's `--auth-token`, presented first on every connection.
    pub token: Option<Arc<str>>,
    /// With `--tls-cert` the members' ports speak TLS only: whom to trust
    /// (`tls_ca`, by default the node's own certificate).
    pub tls: Option<TlsClient>,
}

/// Connects to a peer's broker address (over TLS when the link has it)
/// and presents the link's token (when there is one), within `timeout`.
pub(crate) async fn connect(addr: &str, timeout: Duration, link: &Link) -> Result<Stream, ReplicationError> {
    let io = |source| ReplicationError::Io {
        addr: addr.into(),
        source,
    };
    let open = async {
        let mut s = waybill_client::tls::connect(addr, link.tls.as_ref())
            .await
            .map_err(|source| ReplicationError::Connect {
                addr: addr.into(),
                source,
            })?;
        if let Some(token) = link.token.as_deref() {
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

/// Asks `addr` for its status (over the group's [`Link`]).
pub async fn query(addr: &str, timeout: Duration, link: &Link) -> Result<NodeStatus, ReplicationError> {
    let ask = async {
        let mut s = connect(addr, timeout, link).await?;
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
