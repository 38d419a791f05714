//! Facts to timeline: the stages in order, each group's status, the
//! message's status and its loss points. Pure — no I/O, no clock — so
//! every rule is unit-tested with hand-built [`Facts`] (see `tests/`).
//!
//! Invariants: stages are sorted by time, ties broken by the path's order
//! ([`crate::model::StageName::rank`]: unknown stages last); loss points keep the order the rules fire in (produce,
//! flush, replicate, actual losses by event time, then per group in name
//! order, then the transaction's). A group's status is the strongest of
//! dead > consumed > retrying > replayed > delivered.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::facts::{Delivered, Event, Facts, Gap};
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
}

impl GroupState {
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

/// Records that may have been consumed: the message's own slot for each
/// group a pull range handed it to (groups in name order), then each
/// retry record delivered to a group — less those a group handed back
/// (retried or dead-lettered). [`super::facts`] reads one commit for each.
pub fn consumable(f: &Facts) -> Vec<Delivered> {
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
    let failed: Vec<(&str, &str)> = f
        .events
        .iter()
        .filter(|e| e.stage == Stage::Retry || e.stage == Stage::Dlq)
        .filter_map(|e| Some((e.group.as_deref()?, e.record_id.as_str())))
        .collect();
    own.chain(redelivered)
        .filter(|d| !failed.iter().any(|(g, r)| *g == d.group && *r == d.record_id))
        .collect()
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
            if e.attempt > 1 {
                format!("{send_mode} send, attempt {}", e.attempt)
            } else {
                format!("{send_mode} send")
            },
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
        st.attempts += 1;
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
                    groups.entry(g.clone()).or_default().attempts += 1;
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
        stages.push(stage(
            Stage::Consume,
            c.at_ms,
            node_s.clone(),
            if c.auto_commit { "committed" } else { "ok" },
            if c.auto_commit {
                "offset auto-committed on delivery; the handler's result is unknown".into()
            } else {
                match c.handled_ms {
                    Some(ms) => format!("handled with CONSUME_SUCCESS in {ms} ms; offset committed"),
                    None => "handled with CONSUME_SUCCESS; offset committed".into(),
                }
            },
            Some(d.group),
        ));
    }
    let mut group_status = Vec::new();
    for (g, s) in &groups {
        if s.auto_commit {
            loss.push(loss::auto_commit(g));
        }
        loss.extend(loss::redelivered(g, s.attempts));
        if s.dead {
            loss.push(loss::dead_letter(g));
        }
        group_status.push(GroupStatus {
            group: g.clone(),
            status: s.status(),
            attempts: s.attempts,
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
