//! Unit tests of [`super::derive`]: hand-built [`Facts`] in, timeline out.
//! `rules` has one test (at least) per loss-point rule, firing and not
//! firing; `paths` the stage order and status of typical paths; `inbox`
//! the idempotent consumer's duplicates and windows, and the outbox relay. The
//! reason texts are spelled out in full: they are part of the API. This
//! file holds the builders both use.

mod inbox;
mod paths;
mod rules;

use super::derive::{committed_copy, consumable};
use super::facts::{Commit, Committed, Confirmation, Delivered, Event, Facts, Gap, RangeDelivery, Record};
use super::{derive, LossPoint, Timeline};
use crate::model::topics::HALF_TOPIC;
use crate::model::{LossKind, Stage, StageName};
use crate::time::rfc3339;
use crate::trace::runs::{Entry, Run};

const ID: &str = "0001000000010000000000000000";
const GROUP: &str = "billing";

/// A message stored with a sync send, sync flush, no replication, at
/// 1000 ms (born 990, acked 1001), queue 2 offset 7; nothing after.
fn stored() -> Facts {
    Facts {
        id: ID.into(),
        run: Run {
            node: 1,
            epoch: 1,
            pos_from: 0,
            pos_to: 100,
            topic: "orders".into(),
            stored_from: 1000,
            stored_to: 1000,
            send_mode: "sync".into(),
            send_status: "SEND_OK".into(),
            flush_mode: "sync".into(),
            replication: "none".into(),
        },
        entry: Entry {
            pos: 0,
            end: 100,
            queue_id: 2,
            queue_offset: 7,
            born_ms: 990,
            stored_ms: 1000,
            acked_ms: 1001,
            attempt: 1,
            key: Some("run-key".into()),
        },
        record: Some(Record {
            producer: Some("producer-1".into()),
            key: Some("order-1".into()),
            tags: Some("paid".into()),
            trace_id: None,
            outbox: None,
        }),
        flushed_at: None,
        replicas: Vec::new(),
        deliveries: Vec::new(),
        events: Vec::new(),
        commits: Vec::new(),
        gaps: Vec::new(),
        committed: None,
    }
}

/// The message's own queue slot as delivered to `group`.
fn own(group: &str) -> Delivered {
    Delivered {
        group: group.into(),
        record_id: ID.into(),
        topic: "orders".into(),
        queue_id: 2,
        queue_offset: 7,
    }
}

/// A retry record of the message for `group`.
fn retry_record(group: &str, id: &str, offset: i64) -> Delivered {
    Delivered {
        group: group.into(),
        record_id: id.into(),
        topic: format!("%RETRY%{group}"),
        queue_id: 0,
        queue_offset: offset,
    }
}

fn range(group: &str, at_ms: i64) -> RangeDelivery {
    RangeDelivery {
        group: group.into(),
        at_ms,
        node: 1,
    }
}

fn event(stage: &str, group: Option<&str>, at_ms: i64, outcome: &str, detail: &str) -> Event {
    Event {
        stage: StageName::parse(stage),
        group: group.map(str::to_string),
        at_ms,
        node: 1,
        outcome: outcome.into(),
        detail: detail.into(),
        record_id: String::new(),
        rec_topic: String::new(),
        rec_queue: 0,
        rec_offset: 0,
    }
}

/// An event about record `r` (a retry, dead letter or retry delivery).
fn event_on(stage: &str, at_ms: i64, outcome: &str, r: &Delivered) -> Event {
    Event {
        record_id: r.record_id.clone(),
        rec_topic: r.topic.clone(),
        rec_queue: r.queue_id,
        rec_offset: r.queue_offset,
        ..event(stage, Some(&r.group), at_ms, outcome, stage)
    }
}

fn commit(record: Delivered, at_ms: i64, auto_commit: bool, handled_ms: Option<u32>) -> Commit {
    Commit {
        record,
        at_ms,
        auto_commit,
        handled_ms,
        dedupe_window_ms: None,
        duplicate: None,
    }
}

fn risk(stage: &str, reason: &str, group: Option<&str>) -> LossPoint {
    LossPoint {
        stage: StageName::parse(stage),
        kind: LossKind::Risk,
        reason: reason.into(),
        group: group.map(str::to_string),
    }
}

fn names(t: &Timeline) -> Vec<&str> {
    t.stages.iter().map(|s| s.stage.as_str()).collect()
}

fn group_statuses(t: &Timeline) -> Vec<(&str, &str, u32)> {
    t.groups
        .iter()
        .map(|g| (g.group.as_str(), g.status.as_str(), g.attempts))
        .collect()
}

/// A half message: prepared at 1000, not yet decided.
fn half() -> Facts {
    let mut f = stored();
    f.run.topic = HALF_TOPIC.into();
    f.events = vec![event("tx_prepare", None, 1_000, "ok", "half message stored")];
    f
}
