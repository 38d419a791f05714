//! The audit log: every operator action that changes what the broker holds
//! or how it is consumed (topic create and delete, offset resets, skips,
//! group deletes, …) is appended to `%AUDIT%` before the action answers,
//! with who asked, what and on what, so "who reset this group?" has an
//! answer after a restart and on every replica.
//!
//! Invariants: an entry is durable (appended like any system record, with
//! the node's flush mode) before [`Broker::audit`] returns; entries are
//! never rewritten; listing reads them back from the log, newest first,
//! keeping at most the `limit` asked for in memory.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::{Broker, BrokerError};
use crate::model::topics::AUDIT_TOPIC;

/// Longest detail kept (bytes): the rest is cut, so an entry stays small
/// whatever a caller passes.
const MAX_DETAIL: usize = 2048;
/// Most entries one listing returns.
pub const MAX_LIST: usize = 1000;

/// One operator action, as recorded.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AuditEntry {
    pub at_ms: i64,
    /// Who asked (the HTTP caller's name, or `cli`).
    pub by: String,
    /// What was done, e.g. `topic.create`, `group.reset`.
    pub action: String,
    /// What it was done to, e.g. a topic or group name.
    pub target: String,
    /// A sentence with the parameters and the outcome.
    pub detail: String,
}

impl Broker {
    /// Records an operator action durably and returns the entry.
    pub async fn audit(
        &self,
        by: &str,
        action: &str,
        target: &str,
        detail: impl Into<String>,
    ) -> Result<AuditEntry, BrokerError> {
        let entry = AuditEntry {
            at_ms: self.opts.clock.now_ms(),
            by: by.to_string(),
            action: action.to_string(),
            target: target.to_string(),
            detail: head(detail.into(), MAX_DETAIL),
        };
        self.record_json(AUDIT_TOPIC, target, &entry).await?;
        tracing::info!(by, action, target, detail = %entry.detail, "audit");
        Ok(entry)
    }

    /// The newest `limit` entries (at most [`MAX_LIST`]), newest first;
    /// only those for `target` when one is given. Records that do not
    /// parse as entries are skipped.
    pub fn audit_list(&self, limit: usize, target: Option<&str>) -> Result<Vec<AuditEntry>, BrokerError> {
        let limit = limit.clamp(1, MAX_LIST);
        // A ring of the newest `limit`: the scan goes oldest to newest.
        let mut newest: VecDeque<AuditEntry> = VecDeque::with_capacity(limit);
        self.store().scan_queue(AUDIT_TOPIC, 0, |_, _, m| {
            let Ok(e) = serde_json::from_slice::<AuditEntry>(&m.body) else {
                return;
            };
            if target.is_some_and(|t| t != e.target) {
                return;
            }
            if newest.len() == limit {
                newest.pop_front();
            }
            newest.push_back(e);
        })?;
        Ok(newest.into_iter().rev().collect())
    }
}

/// `text` cut to at most `max` bytes at a character boundary.
fn head(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}
