//! Facts to timeline: the stages in order, each group's status, the
//! message's status and its loss points. Pure — no I/O, no clock — so
//! every rule is unit-tested with hand-built [`Facts`] (see `tests/`).
//!
//! Invariants: stages are sorted by time, ties broken by the path's order
//! ([`crate::model::StageName::rank`]: unknown stages last); loss points keep the order the rules fire in (produce,
//! flush, replicate, actual losses by event time, then per group in name
//! order, then the transaction's). A group's status is the strongest of
//! dead > consumed > retrying > replayed > delivered; a record its inbox
//! acknowledged as a duplicate counts as consumed.
//!
//! Inbox: a group handled this message idempotently when every commit of
//! it past one of the message's records declared a dedupe window (see
//! [`inbox_window`]); such a group carries no redelivery risk, but a
//! replay later than the window after the first delivery does.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::facts::{Commit, Delivered, Event, Facts, Gap};
use super::replicate::replicate_stages;
use super::{loss, stage, GroupStatus, LossPoint, Timeline};
use crate::model::topics::HALF_TOPIC;
use crate::model::{LossKind, SendMode, Stage, Status};
use crate::time::rfc3339;

/// Per-group bookkeeping while assembling.
#[derive(Default)]
struct GroupState {
    attempts: u32,
    consumed: bool,
    retrying: bool,
    dead: bool,
    replayed: bool,
    auto_commit: bool,
    /// When the message was first handed to the group.
    first_delivery: Option<i64>,
    /// When it was replayed to the group.
    replays: Vec<i64>,
}

impl GroupState {
    fn delivered_at(&mut self, at_ms: i64) {
        self.attempts += 1;
        self.first_delivery = Some(self.first_delivery.map_or(at_ms, |f| f.min(at_ms)));
    }

    fn status(&self) -> Status {
        if self.dead {
            Status::Dead
        } else if self.consumed {
            Status::Consumed
        } else if self.retrying {
            Status::Retrying
        } else if self.replayed {
            Status::Replayed
        } else {
            Status::Delivered
        }
    }
}

/// Records handed to a group: the message's own slot for each group a
/// pull range handed it to (groups in name order), then each retry or
/// replay record delivered to a group. [`super::facts`] reads one commit
/// for each.
pub fn delivered(f: &Facts) -> Vec<Delivered> {
    let mut groups: Vec<&str> = f.deliveries.iter().map(|d| d.group.as_str()).collect();
    groups.sort_unstable();
    groups.dedup();
    let own = groups.into_iter().map(|g| Delivered {
        group: g.to_string(),
        record_id: f.id.clone(),
        topic: f.run.topic.clone(),
        queue_id: i64::from(f.entry.queue_id),
        queue_offset: f.entry.queue_offset as i64,
    });
    let redelivered = f.events.iter().filter(|e| e.stage == Stage::Deliver).filter_map(|e| {
        Some(Delivered {
            group: e.group.clone()?,
            record_id: e.record_id.clone(),
            topic: e.rec_topic.clone(),
            queue_id: e.rec_queue,
            queue_offset: e.rec_offset,
        })
    });
    own.chain(redelivered).collect()
}

/// Records that may have been consumed: the [`delivered`] ones less those
/// a group handed back (retried or dead-lettered).
pub fn consumable(f: &Facts) -> Vec<Delivered> {
    let failed: Vec<(&str, &str)> = f
        .events
        .iter()
        .filter(|e| e.stage == Stage::Retry || e.stage == Stage::Dlq)
        .filter_map(|e| Some((e.group.as_deref()?, e.record_id.as_str())))
        .collect();
    delivered(f)
        .into_iter()
        .filter(|d| !failed.iter().any(|(g, r)| *g == d.group && *r == d.record_id))
        .collect()
}

/// The dedupe window `group` handled this message through: its latest
/// commit's, when every commit of the group past one of the message's
/// records declared one (a commit without says that handling was not
/// deduplicated); `None` without any such commit.
pub fn inbox_window(commits: &[Commit], group: &str) -> Option<u64> {
    let mut latest: Option<(i64, u64)> = None;
    for c in commits.iter().filter(|c| c.record.group == group) {
        let w = c.dedupe_window_ms?;
        if latest.is_none_or(|(at, _)| c.at_ms >= at) {
            latest = Some((c.at_ms, w));
        }
    }
    latest.map(|(_, w)| w)
}

/// The copy a half message's transaction committed as: the record of its
/// first `tx_commit` event, unless it was rolled back.
pub fn committed_copy(events: &[Event]) -> Option<&str> {
    if events.iter().any(|e| e.stage == Stage::TxRollback) {
        return None;
    }
    events
        .iter()
        .find(|e| e.stage == Stage::TxCommit)
        .map(|e| e.record_id.as_str())
}

/// A shed period as the API shows it.
pub fn gap_json(g: &Gap) -> Value {
    json!({
        "from": rfc3339(g.from_ms),
        "to": rfc3339(g.to_ms),
        "dropped": g.dropped,
        "messages": g.messages,
        "note": "the tracer shed events in this period: stages may be missing",
    })
}

/// The produce stage's detail: the send mode, the producer's attempt, and
/// the outbox row a relay sent it from.
fn produce_detail(f: &Facts) -> String {
    let mode = &f.run.send_mode;
    let mut detail = match f.entry.attempt {
        a if a > 1 => format!("{mode} send, attempt {a}"),
        _ => format!("{mode} send"),
    };
    if let Some(o) = f.record.as_ref().and_then(|r| r.outbox.as_ref()) {
        detail.push_str(&format!("; relayed from outbox row {}", o.row));
        if let Some(a) = o.attempt {
            detail.push_str(&format!(", attempt {a}"));
        }
    }
    detail
}

/// The timeline the facts describe.
pub fn derive(f: &Facts) -> Timeline {
    let (run, e) = (&f.run, &f.entry);
    let node_s = Some(run.node.to_string());
    // As the run spells it (the API shows it verbatim), and typed.
    let send_mode = run.send_mode.as_str();
    let mode = send_mode.parse::<SendMode>().ok();
    let mut stages = vec![
        stage(
            Stage::Produce,
            e.born_ms,
            f.record.as_ref().and_then(|m| m.producer.clone()),
            if mode == Some(SendMode::Oneway) {
                "unconfirmed"
            } else {
                "ok"
            },
            produce_detail(f),
            None,
        ),
        stage(
            Stage::Store,
            e.stored_ms,
            node_s.clone(),
            "ok",
            format!(
                "queue {} offset {}, log position {}; answered {}",
                e.queue_id, e.queue_offset as i64, e.pos, run.send_status
            ),
            None,
        ),
    ];
    let mut loss = Vec::new();
    loss.extend(loss::retried_send(e.attempt));
    loss.extend(loss::oneway_send(mode));
    match (run.flush_mode.as_str(), f.flushed_at) {
        ("sync", _) => stages.push(stage(
            Stage::Flush,
            e.acked_ms.max(e.stored_ms),
            node_s.clone(),
            "ok",
            "covered by an fsync before the acknowledgement (sync flush; time of the ack)".into(),
            None,
        )),
        (_, Some(at)) => {
            stages.push(stage(
                Stage::Flush,
                at,
                node_s.clone(),
                "ok",
                "covered by a periodic fsync (time is the sampled watermark)".into(),
                None,
            ));
            loss.push(loss::async_flush(Some(at)));
        }
        (_, None) => loss.push(loss::async_flush(None)),
    }
    replicate_stages(f, &mut stages, &mut loss);

    let mut groups: BTreeMap<String, GroupState> = BTreeMap::new();
    // First-time deliveries: pull ranges over the message's own queue slot.
    for d in &f.deliveries {
        let st = groups.entry(d.group.clone()).or_default();
        st.delivered_at(d.at_ms);
        let detail = if st.attempts > 1 {
            "delivered again (redelivery of an uncommitted message)"
        } else {
            "delivered"
        };
        stages.push(stage(
            Stage::Deliver,
            d.at_ms,
            Some(d.node.to_string()),
            "ok",
            detail.to_string(),
            Some(d.group.clone()),
        ));
    }
    for ev in &f.events {
        let g = &ev.group;
        match ev.stage.known() {
            Some(Stage::Deliver) => {
                if let Some(g) = g {
                    groups.entry(g.clone()).or_default().delivered_at(ev.at_ms);
                }
            }
            Some(Stage::Retry | Stage::Dlq) => {
                if let Some(g) = g {
                    let s = groups.entry(g.clone()).or_default();
                    if ev.stage == Stage::Dlq {
                        s.dead = true;
                        s.retrying = false;
                    } else {
                        s.retrying = true;
                    }
                }
            }
            Some(Stage::Replay) => {
                if let Some(g) = g {
                    let s = groups.entry(g.clone()).or_default();
                    s.replayed = true;
                    s.dead = false;
                    s.replays.push(ev.at_ms);
                }
            }
            _ => loss.extend(loss::found_lost(ev)),
        }
        stages.push(stage(
            ev.stage.clone(),
            ev.at_ms,
            Some(ev.node.to_string()),
            &ev.outcome,
            ev.detail.clone(),
            g.clone(),
        ));
    }
    // Consumption: committed past a delivered record not handed back.
    for d in consumable(f) {
        let Some(c) = f.commits.iter().find(|c| c.record == d) else {
            continue;
        };
        let s = groups.entry(d.group.clone()).or_default();
        s.consumed = true;
        s.retrying = false;
        s.auto_commit |= c.auto_commit;
        let (outcome, detail) = match (c.auto_commit, &c.duplicate, c.handled_ms) {
            (true, _, _) => (
                "committed",
                "offset auto-committed on delivery; the handler's result is unknown".into(),
            ),
            (false, Some(first), _) => ("duplicate", format!("duplicate suppressed: {first}; offset committed")),
            (false, None, Some(ms)) => (
                "ok",
                format!("handled with CONSUME_SUCCESS in {ms} ms; offset committed"),
            ),
            (false, None, None) => ("ok", "handled with CONSUME_SUCCESS; offset committed".into()),
        };
        stages.push(stage(
            Stage::Consume,
            c.at_ms,
            node_s.clone(),
            outcome,
            detail,
            Some(d.group),
        ));
    }
    let mut group_status = Vec::new();
    for (g, s) in &groups {
        if s.auto_commit {
            loss.push(loss::auto_commit(g));
        }
        let window = inbox_window(&f.commits, g);
        match (window, s.first_delivery) {
            (None, _) => loss.extend(loss::redelivered(g, s.attempts)),
            (Some(w), Some(first)) => {
                for at in &s.replays {
                    loss.extend(loss::replayed_beyond_window(g, at.saturating_sub(first), w));
                }
            }
            (Some(_), None) => {}
        }
        if s.dead {
            loss.push(loss::dead_letter(g));
        }
        group_status.push(GroupStatus {
            group: g.clone(),
            status: s.status(),
            attempts: s.attempts,
            dedupe_window_ms: window,
        });
    }
    let status = overall(&stages, &loss, &group_status);
    let mut committed_as = None;
    let status = if run.topic == HALF_TOPIC {
        let of = |name: Stage| f.events.iter().find(|e| e.stage == name);
        if let Some(rb) = of(Stage::TxRollback) {
            loss.extend(loss::broker_rollback(&rb.detail));
            Status::RolledBack
        } else if let Some(c) = &f.committed {
            // The committed copy's path continues this one.
            committed_as = Some(c.id.clone());
            match &c.copy {
                Some(copy) => {
                    let ct = derive(copy);
                    stages.extend(
                        ct.stages
                            .into_iter()
                            .filter(|s| s.stage != Stage::Produce && !s.stage.is_tx()),
                    );
                    loss.extend(ct.loss_points);
                    group_status = ct.groups;
                    ct.status
                }
                None => Status::Stored,
            }
        } else {
            let checks = f.events.iter().filter(|e| e.stage == Stage::TxCheck).count();
            loss.extend(loss::undecided(checks));
            Status::Half
        }
    } else {
        status
    };
    stages.sort_by(|a, b| a.at_ms.cmp(&b.at_ms).then(a.stage.rank().cmp(&b.stage.rank())));
    Timeline {
        id: f.id.clone(),
        topic: run.topic.clone(),
        key: f.record.as_ref().map_or(e.key.clone(), |m| m.key.clone()),
        tags: f.record.as_ref().and_then(|m| m.tags.clone()),
        status,
        stages,
        loss_points: loss,
        groups: group_status,
        gaps: f.gaps.iter().map(gap_json).collect(),
        send_mode: run.send_mode.clone(),
        flush_mode: run.flush_mode.clone(),
        trace_id: f.record.as_ref().and_then(|m| m.trace_id.clone()),
        committed_as,
    }
}

/// The message's status from its stages, losses and groups (before a
/// transaction's half has its say): lost beats everything; with no group,
/// replicated or stored; else the strongest group status.
fn overall(stages: &[super::Stage], loss: &[LossPoint], groups: &[GroupStatus]) -> Status {
    if loss.iter().any(|l| l.kind == LossKind::Lost) {
        Status::Lost
    } else if groups.is_empty() {
        if stages.iter().any(|s| s.stage == Stage::Replicate) {
            Status::Replicated
        } else {
            Status::Stored
        }
    } else if groups.iter().any(|g| g.status == Status::Dead) {
        Status::Dead
    } else if groups.iter().any(|g| g.status == Status::Retrying) {
        Status::Retrying
    } else if groups.iter().all(|g| g.status == Status::Consumed) {
        Status::Consumed
    } else if groups.iter().any(|g| g.status == Status::Replayed) {
        Status::Replayed
    } else {
        Status::Delivered
    }
}
