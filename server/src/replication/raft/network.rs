//! Raft RPCs between members over TCP, on the broker port.
//!
//! One connection per target, one RPC at a time on it: a request frame
//! (`K_RAFT_APPEND`, `K_RAFT_VOTE`, `K_RAFT_SNAPSHOT`) with a JSON body,
//! answered by one `K_RAFT_REPLY` frame holding the JSON of
//! `Result<response, RaftError>`. Any I/O error or timeout drops the
//! connection (the next RPC reconnects) and is reported to openraft as
//! `Unreachable`, which makes it back off. Each new connection presents
//! the group's `--auth-token` first, as every broker-port client does, and
//! speaks TLS when the members' ports do ([`Link`]).

use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use openraft::BasicNode;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::AsyncWriteExt;
use waybill_client::tls::Stream;
use waybill_client::wire;

use super::{TypeConfig, K_RAFT_APPEND, K_RAFT_REPLY, K_RAFT_SNAPSHOT, K_RAFT_VOTE};
use crate::replication::status::{connect, read_frame, Link};

type NodeId = u64;

/// Largest append RPC body sent at once (below the 16 MiB frame cap).
const MAX_RPC_BYTES: usize = 8 << 20;

/// Creates a client per target.
pub struct Network {
    /// The group's `--auth-token` and TLS, on every connection.
    pub link: Link,
    /// This member's own `--peer` addresses: how *this* node reaches each
    /// other member. They win over the address in the Raft membership,
    /// which the member that initialized the group wrote from its own
    /// point of view (behind NAT, or a fault proxy per link, they differ).
    pub peers: std::collections::BTreeMap<u16, String>,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Self::Network {
        let own = u16::try_from(target).ok().and_then(|t| self.peers.get(&t));
        Peer {
            target,
            addr: own.cloned().unwrap_or_else(|| node.addr.clone()),
            link: self.link.clone(),
            conn: None,
        }
    }
}

pub struct Peer {
    target: NodeId,
    addr: String,
    link: Link,
    conn: Option<Stream>,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Io(String);

impl Peer {
    async fn call<Req: Serialize, Resp: DeserializeOwned, E: DeserializeOwned>(
        &mut self,
        kind: u8,
        req: &Req,
        timeout: Duration,
    ) -> Result<Result<Resp, E>, Io> {
        let body = serde_json::to_vec(req).map_err(|e| Io(e.to_string()))?;
        let addr = self.addr.clone();
        let link = &self.link;
        let conn = &mut self.conn;
        let attempt = async {
            // A connection kept from an earlier RPC may have been closed by
            // the peer since (its idle timeout, a restart): such a failure
            // gets one more try on a fresh connection. Raft RPCs are safe
            // to send twice.
            let reused = conn.is_some();
            let first = exchange(conn, &addr, link, timeout, kind, &body).await;
            let p = match first {
                Err(_) if reused => {
                    *conn = None;
                    exchange(conn, &addr, link, timeout, kind, &body).await?
                }
                other => other?,
            };
            serde_json::from_slice::<Result<Resp, E>>(&p).map_err(|e| Io(e.to_string()))
        };
        let result = match tokio::time::timeout(timeout, attempt).await {
            Ok(r) => r,
            Err(_) => Err(Io(format!("no answer from {addr} within {timeout:?}"))),
        };
        if result.is_err() {
            self.conn = None;
        }
        result
    }
}

/// One request and its reply on `conn`, connecting first when there is
/// none; returns the reply's payload.
async fn exchange(
    conn: &mut Option<Stream>,
    addr: &str,
    link: &Link,
    timeout: Duration,
    kind: u8,
    body: &[u8],
) -> Result<Vec<u8>, Io> {
    if conn.is_none() {
        let c = connect(addr, timeout, link).await;
        *conn = Some(c.map_err(|e| Io(e.to_string()))?);
    }
    let Some(c) = conn.as_mut() else {
        return Err(Io("no connection".into()));
    };
    c.write_all(&wire::frame(kind, 0, body))
        .await
        .map_err(|e| Io(e.to_string()))?;
    let (h, p) = read_frame(c, addr).await.map_err(|e| Io(e.to_string()))?;
    if h.kind != K_RAFT_REPLY {
        return Err(Io(format!("unexpected frame kind {}", h.kind)));
    }
    Ok(p)
}

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        // Frames are capped (16 MiB): ask openraft for fewer entries when a
        // batch of large messages would not fit.
        let approx: usize = rpc
            .entries
            .iter()
            .map(|e| match &e.payload {
                openraft::EntryPayload::Normal(r) => r.msgs.iter().map(|(_, m)| m.body.len() * 4 / 3 + 256).sum(),
                _ => 256,
            })
            .sum();
        if approx > MAX_RPC_BYTES && rpc.entries.len() > 1 {
            let n = (rpc.entries.len() as u64 / 2).max(1);
            return Err(RPCError::PayloadTooLarge(PayloadTooLarge::new_entries_hint(n)));
        }
        match self
            .call::<_, _, RaftError<NodeId>>(K_RAFT_APPEND, &rpc, option.hard_ttl())
            .await
        {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => Err(RPCError::RemoteError(RemoteError::new(self.target, e))),
            Err(e) => Err(RPCError::Unreachable(Unreachable::new(&e))),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>>
    {
        match self
            .call::<_, _, RaftError<NodeId, InstallSnapshotError>>(K_RAFT_SNAPSHOT, &rpc, option.hard_ttl())
            .await
        {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => Err(RPCError::RemoteError(RemoteError::new(self.target, e))),
            Err(e) => Err(RPCError::Network(NetworkError::new(&e))),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        match self
            .call::<_, _, RaftError<NodeId>>(K_RAFT_VOTE, &rpc, option.hard_ttl())
            .await
        {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => Err(RPCError::RemoteError(RemoteError::new(self.target, e))),
            Err(e) => Err(RPCError::Unreachable(Unreachable::new(&e))),
        }
    }
}
