//! The loss-point rules, one function each: given what a message's path
//! went through, the risk it carried (or the loss the audit found), with
//! the reason the API shows. Pure: no I/O, no clock.
//!
//! The texts are part of the API (scripts and the dashboard show them):
//! change them only on purpose.

use super::facts::{Confirmation, Event};
use super::LossPoint;
use crate::model::{LossKind, SendMode, Stage};
use crate::time::{rfc3339, span};

fn risk(stage: Stage, reason: String, group: Option<&str>) -> LossPoint {
    LossPoint {
        stage: stage.into(),
        kind: LossKind::Risk,
        reason,
        group: group.map(str::to_string),
    }
}

/// Stored by a retried send: an earlier attempt may have been stored too.
pub(super) fn retried_send(attempt: u32) -> Option<LossPoint> {
    (attempt > 1).then(|| {
        risk(
            Stage::Produce,
            format!(
                "stored by the producer's attempt {attempt}: an earlier attempt that timed out may have been stored \
                 too (a duplicate under another id)"
            ),
            None,
        )
    })
}

/// A oneway send: the producer never learns the outcome.
pub(super) fn oneway_send(mode: Option<SendMode>) -> Option<LossPoint> {
    (mode == Some(SendMode::Oneway)).then(|| {
        risk(
            Stage::Produce,
            "oneway send: the producer never learns whether the broker stored it".into(),
            None,
        )
    })
}

/// Async flush: acknowledged before the fsync, flushed at `flushed_at`
/// (sampled) or not yet.
pub(super) fn async_flush(flushed_at: Option<i64>) -> LossPoint {
    let reason = match flushed_at {
        Some(at) => format!(
            "async flush: acknowledged before the fsync; at risk of a power loss until {}",
            rfc3339(at)
        ),
        None => "async flush: acknowledged before the fsync and not yet flushed; a power loss now loses it".into(),
    };
    risk(Stage::Flush, reason, None)
}

/// Async replication: acknowledged before a replica had it; `first` is
/// the earliest replica confirmation, if any.
pub(super) fn async_replication(first: Option<&Confirmation>) -> LossPoint {
    let reason = match first {
        Some(c) => format!(
            "async replication: acknowledged before a replica had it; losing the primary before {} (replica {}) \
             would have lost it",
            rfc3339(c.at_ms),
            c.replica
        ),
        None => "async replication: acknowledged before a replica had it, and no replica has confirmed it yet; \
                 losing the primary now loses it"
            .into(),
    };
    risk(Stage::Replicate, reason, None)
}

/// An event the audit wrote for a loss (outcome `lost`): an actual loss at
/// the event's stage.
pub(super) fn found_lost(e: &Event) -> Option<LossPoint> {
    (e.outcome == "lost").then(|| LossPoint {
        stage: e.stage.clone(),
        kind: LossKind::Lost,
        reason: e.detail.clone(),
        group: e.group.clone(),
    })
}

/// A group with auto-commit: the offset went before the handler's result.
pub(super) fn auto_commit(group: &str) -> LossPoint {
    risk(
        Stage::Consume,
        "auto-commit: the offset was committed before the handler succeeded".into(),
        Some(group),
    )
}

/// Delivered more than once to a group.
pub(super) fn redelivered(group: &str, attempts: u32) -> Option<LossPoint> {
    (attempts > 1).then(|| {
        risk(
            Stage::Deliver,
            format!("delivered {attempts} times to this group without idempotent handling: duplicate effects possible"),
            Some(group),
        )
    })
}

/// Replayed to a group that handles through an inbox remembering keys for
/// `window_ms` (0 = forever), `after_ms` after its first delivery there:
/// past the window the inbox has forgotten it.
pub(super) fn replayed_beyond_window(group: &str, after_ms: i64, window_ms: u64) -> Option<LossPoint> {
    let after = u64::try_from(after_ms).ok()?;
    (window_ms > 0 && after > window_ms).then(|| {
        risk(
            Stage::Replay,
            format!(
                "replayed {} after its first delivery, beyond the group's dedupe window ({}): a handler that saw it \
                 before runs again",
                span(after),
                span(window_ms)
            ),
            Some(group),
        )
    })
}

/// Dead-lettered for a group and not replayed.
pub(super) fn dead_letter(group: &str) -> LossPoint {
    risk(
        Stage::Dlq,
        "dead letter not replayed: the group never processed it".into(),
        Some(group),
    )
}

/// A half message the broker rolled back after its checks (the rollback's
/// detail says who rolled it back).
pub(super) fn broker_rollback(rollback_detail: &str) -> Option<LossPoint> {
    rollback_detail.starts_with("rolled back by the broker").then(|| {
        risk(
            Stage::TxCheck,
            "rolled back because the producer never confirmed its local transaction: if that transaction \
             committed, this message is lost"
                .into(),
            None,
        )
    })
}

/// A half message still undecided after `checks` check-backs.
pub(super) fn undecided(checks: usize) -> Option<LossPoint> {
    (checks > 0).then(|| {
        risk(
            Stage::TxCheck,
            format!(
                "transaction undecided after {checks} checks: consumers will not see it unless its producer group \
                 commits"
            ),
            None,
        )
    })
}
