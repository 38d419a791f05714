//! A message's timeline: stages in order, status overall and per group, and
//! loss points (risks its path carried, and losses the audit found).
//!
//! Built in two steps so the rules can be tested without a database:
//! - [`facts`] queries the trace store and the log into a plain [`Facts`]
//!   (no sqlx types, no rules beyond "which rows belong to this message");
//! - [`derive`] turns `Facts` into a [`Timeline`]: pure, no I/O, no clock.
//!   Its loss-point rules live in `loss`, the replicate stage in
//!   `replicate`.
//!
//! Derived stages: *flush* is the first sampled flushed watermark at or past
//! the message's end (an upper bound on when the fsync happened); a
//! *delivery* of a first-time record is a pull range covering its queue
//! offset; a delivered record is *consumed* by a group when that group
//! committed past it and did not hand it back for retry; a commit listing
//! it as a duplicate its inbox suppressed is a consume with outcome
//! `duplicate`.

use serde::Serialize;
use serde_json::Value;
use sqlx::AnyPool;

use super::TraceError;
use crate::model::{LossKind, StageName, Status};
use crate::storage::Store;
use crate::time::rfc3339;

pub mod derive;
pub mod facts;
mod loss;
mod replicate;
#[cfg(test)]
mod tests;

pub use derive::derive;
pub use facts::Facts;

/// One stage as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Stage {
    pub stage: StageName,
    pub at: String,
    #[serde(skip)]
    pub at_ms: i64,
    pub node: Option<String>,
    pub outcome: String,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

/// A loss point: a `risk` the path carried or an actual loss (`lost`).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct LossPoint {
    pub stage: StageName,
    pub kind: LossKind,
    pub reason: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

/// Per-group outcome.
#[derive(Debug, Clone, Serialize)]
pub struct GroupStatus {
    pub group: String,
    pub status: Status,
    pub attempts: u32,
    /// The group handled this message through an inbox remembering keys
    /// this long (ms, 0 = forever); absent without one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dedupe_window_ms: Option<u64>,
}

/// What the trace knows about one message.
#[derive(Debug, Clone, Serialize)]
pub struct Timeline {
    pub id: String,
    pub topic: String,
    pub key: Option<String>,
    pub tags: Option<String>,
    pub status: Status,
    pub stages: Vec<Stage>,
    pub loss_points: Vec<LossPoint>,
    pub groups: Vec<GroupStatus>,
    /// Periods overlapping this message in which the tracer shed events.
    pub gaps: Vec<Value>,
    pub send_mode: String,
    pub flush_mode: String,
    /// W3C trace id the message's stages belong to.
    pub trace_id: Option<String>,
    /// A committed transaction's half message: the id of the copy
    /// delivered to its topic.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub committed_as: Option<String>,
}

fn stage(
    stage: impl Into<StageName>,
    at_ms: i64,
    node: Option<String>,
    outcome: &str,
    detail: String,
    group: Option<String>,
) -> Stage {
    Stage {
        stage: stage.into(),
        at: rfc3339(at_ms),
        at_ms,
        node,
        outcome: outcome.to_string(),
        detail,
        group,
    }
}

/// Builds the timeline of message `id`; `Ok(None)` when the trace has no
/// record of it (yet). The run gives how and when the broker answered; the
/// log, while it still holds the record, gives the message's own fields.
pub async fn load(pool: &AnyPool, store: &Store, id: &str) -> Result<Option<Timeline>, TraceError> {
    Ok(facts::gather(pool, store, id).await?.map(|f| derive(&f)))
}

/// Periods overlapping `[from_ms, to_ms]` in which the tracer dropped
/// events (a timeline there may miss stages).
pub async fn gaps(pool: &AnyPool, from_ms: i64, to_ms: i64) -> Result<Vec<Value>, TraceError> {
    Ok(facts::gaps(pool, from_ms, to_ms)
        .await?
        .iter()
        .map(derive::gap_json)
        .collect())
}
