//! `GET /api/v1/cluster` (the replication group as this node sees it) and
//! `POST /api/v1/cluster/promote` (make this replica the primary).
//!
//! The view asks every peer for its own status (one round trip each, in
//! parallel, short deadline), so it is the same from any node; a peer that
//! does not answer is listed with `alive: false` and what the primary last
//! heard from it. `lag` is the primary's log end minus what that node has
//! confirmed.

use std::time::Duration;

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

use super::{ApiError, AppState};
use crate::broker::BrokerError;
use crate::replication::{self, protocol::NodeStatus};

const PEER_TIMEOUT: Duration = Duration::from_millis(400);

pub async fn view(State(st): State<AppState>) -> Result<Json<Value>, ApiError> {
    let broker = &st.broker;
    let me = match &st.node {
        Some(n) => replication::status::local(n),
        None => replication::status::lone(broker.store()),
    };
    let mut nodes: Vec<(NodeStatus, bool)> = vec![(me.clone(), true)];
    let (mode, flush) = (
        st.cluster().map_or("none", |c| c.mode.name()),
        match broker.store().flush_mode() {
            crate::storage::Flush::Sync => "sync",
            crate::storage::Flush::Async { .. } => "async",
        },
    );
    if let Some(c) = st.cluster() {
        let known = c.replicas();
        let asks = c.peers.iter().map(|(id, addr)| {
            let (id, addr) = (*id, addr.clone());
            let link = c.link.clone();
            async move {
                let answer = replication::status::query(&addr, PEER_TIMEOUT, &link).await;
                (id, addr, answer)
            }
        });
        for (id, addr, answer) in futures_util::future::join_all(asks).await {
            match answer {
                Ok(s) => nodes.push((s, true)),
                Err(_) => {
                    let info = known.get(&id);
                    nodes.push((
                        NodeStatus {
                            id,
                            role: "unknown".into(),
                            term: 0,
                            primary: None,
                            broker_addr: addr,
                            http_addr: info.map(|i| i.http_addr.clone()).unwrap_or_default(),
                            log_end: info.map_or(0, |i| i.written),
                            flushed: 0,
                            replicated: info.map_or(0, |i| i.durable),
                        },
                        false,
                    ))
                }
            }
        }
    }
    nodes.sort_by_key(|(n, _)| n.id);
    let primary_end = nodes
        .iter()
        .filter(|(n, alive)| *alive && (n.role == "primary" || n.role == "leader"))
        .map(|(n, _)| n.log_end)
        .max();
    let list: Vec<Value> = nodes
        .iter()
        .map(|(n, alive)| {
            let lag = match (primary_end, n.role.as_str()) {
                (Some(end), "replica" | "follower" | "candidate" | "unknown") => Some(end.saturating_sub(n.replicated)),
                (Some(_), _) => Some(0),
                _ => None,
            };
            json!({
                "id": n.id,
                "role": n.role,
                "broker_addr": n.broker_addr,
                "http_addr": n.http_addr,
                "alive": alive,
                "log_end": n.log_end,
                "flushed": n.flushed,
                "replicated": n.replicated,
                "term": n.term,
                "primary": n.primary,
                "lag": lag,
                "self": n.id == me.id,
            })
        })
        .collect();
    Ok(Json(json!({
        "nodes": list,
        "flush": flush,
        "replication": mode,
        "node_id": me.id,
        "term": me.term,
        "primary": me.primary,
    })))
}

#[derive(Debug, serde::Deserialize)]
pub struct PromoteQuery {
    /// Promote even when a live primary or a further-ahead replica exists.
    #[serde(default)]
    pub force: bool,
}

/// Makes this replica the primary. Refused (409) while another member is
/// alive and primary (two primaries would split the log), or while a live
/// replica holds more of the log than this one (promoting the laggard
/// would drop what only the other has) — unless `?force=true`.
pub async fn promote(
    State(st): State<AppState>,
    super::query::ApiQuery(q): super::query::ApiQuery<PromoteQuery>,
) -> Result<Json<Value>, ApiError> {
    let Some(c) = st.cluster() else {
        return Err(BrokerError::Conflict("this node is not in a replication group".into()).into());
    };
    if c.mode == replication::Mode::None {
        return Err(BrokerError::Conflict("replication is off (--replication none): nothing to promote".into()).into());
    }
    if c.mode == replication::Mode::Raft {
        return Err(BrokerError::Conflict(
            "raft mode elects its leader automatically; there is nothing to promote".into(),
        )
        .into());
    }
    if !q.force && c.role() != replication::Role::Primary {
        let own_end = st.broker.store().stats().log_end;
        let asks = c
            .peers
            .values()
            .map(|addr| replication::status::query(addr, PEER_TIMEOUT, &c.link));
        for s in futures_util::future::join_all(asks).await.into_iter().flatten() {
            if s.role == "primary" {
                return Err(BrokerError::Conflict(format!(
                    "node {} is alive and primary (term {}); stop it first or pass ?force=true",
                    s.id, s.term
                ))
                .into());
            }
            if s.log_end > own_end {
                return Err(BrokerError::Conflict(format!(
                    "node {} holds more of the log ({} bytes, this node {own_end}); promote it instead or pass \
                     ?force=true",
                    s.id, s.log_end
                ))
                .into());
            }
        }
    }
    let term = c
        .promote()
        .map_err(|e| ApiError::from(BrokerError::Conflict(e.to_string())))?;
    Ok(Json(json!({"id": c.node_id, "role": "primary", "term": term})))
}
