//! Facts to timeline: the stages in order, each group's status, the
//! message's status and its loss points. Pure — no I/O, no clock — so
//! every rule is unit-tested with hand-built [`Facts`] (see `tests.rs`).
//!
//! Invariants: stages are sorted by time, ties broken by the path's order
//! ([`rank`]); loss points keep the order the rules fire in (produce,
//! flush, replicate, actual losses by event time, then per group in name
//! order, then the transaction's). A group's status is the strongest of
//! dead > consumed > retrying > replayed > delivered.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::facts::{Delivered, Event, Facts, Gap};
use super::replicate::replicate_stages;
use super::{loss, stage, GroupStatus, Stage, Timeline};
use crate::model::topics::HALF_TOPIC;
use crate::time::rfc3339;

/// Order of stages with equal times (unknown stages last).
fn rank(s: &str) -> u8 {
    match s {
        "produce" => 0,
        "store" => 1,
        "flush" => 2,
        "replicate" => 3,
        "tx_prepare" => 4,
        "tx_check" => 5,
        "tx_commit" | "tx_rollback" => 6,
        "deliver" => 7,
        "consume" => 8,
        "retry" => 9,
        "dlq" => 10,
        "replay" => 11,
        _ => 12,
    }
}

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
    fn status(&self) -> &'static str {
        if self.dead {
            "dead"
        } else if self.consumed {
            "consumed"
        } else if self.retrying {
            "retrying"
        } else if self.replayed {
            "replayed"
        } else {
            "delivered"
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
    let redelivered = f.events.iter().filter(|e| e.stage == "deliver").filter_map(|e| {
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
        .filter(|e| e.stage == "retry" || e.stage == "dlq")
        .filter_map(|e| Some((e.group.as_deref()?, e.record_id.as_str())))
        .collect();
    own.chain(redelivered)
        .filter(|d| !failed.iter().any(|(g, r)| *g == d.group && *r == d.record_id))
        .collect()
}

/// The copy a half message's transaction committed as: the record of its
/// first `tx_commit` event, unless it was rolled back.
pub fn committed_copy(events: &[Event]) -> Option<&str> {
    if events.iter().any(|e| e.stage == "tx_rollback") {
        return None;
    }
    events
        .iter()
        .find(|e| e.stage == "tx_commit")
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
    let send_mode = run.send_mode.as_str();
    let mut stages = vec![
        stage(
            "produce",
            e.born_ms,
            f.record.as_ref().and_then(|m| m.producer.clone()),
            if send_mode == "oneway" { "unconfirmed" } else { "ok" },
            if e.attempt > 1 {
                format!("{send_mode} send, attempt {}", e.attempt)
            } else {
                format!("{send_mode} send")
            },
            None,
        ),
        stage(
            "store",
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
    loss.extend(loss::oneway_send(send_mode));
    match (run.flush_mode.as_str(), f.flushed_at) {
        ("sync", _) => stages.push(stage(
            "flush",
            e.acked_ms.max(e.stored_ms),
            node_s.clone(),
            "ok",
            "covered by an fsync before the acknowledgement (sync flush; time of the ack)".into(),
            None,
        )),
        (_, Some(at)) => {
            stages.push(stage(
                "flush",
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
            "deliver",
            d.at_ms,
            Some(d.node.to_string()),
            "ok",
            detail.to_string(),
            Some(d.group.clone()),
        ));
    }
    for ev in &f.events {
        let g = &ev.group;
        match ev.stage.as_str() {
            "deliver" => {
                if let Some(g) = g {
                    groups.entry(g.clone()).or_default().attempts += 1;
                }
            }
            "retry" | "dlq" => {
                if let Some(g) = g {
                    let s = groups.entry(g.clone()).or_default();
                    if ev.stage == "dlq" {
                        s.dead = true;
                        s.retrying = false;
                    } else {
                        s.retrying = true;
                    }
                }
            }
            "replay" => {
                if let Some(g) = g {
                    let s = groups.entry(g.clone()).or_default();
                    s.replayed = true;
                    s.dead = false;
                }
            }
            _ => loss.extend(loss::found_lost(ev)),
        }
        stages.push(stage(
            &ev.stage,
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
            "consume",
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
        let of = |name: &str| f.events.iter().find(|e| e.stage == name);
        if let Some(rb) = of("tx_rollback") {
            loss.extend(loss::broker_rollback(&rb.detail));
            "rolled_back"
        } else if let Some(c) = &f.committed {
            // The committed copy's path continues this one.
            committed_as = Some(c.id.clone());
            match &c.copy {
                Some(copy) => {
                    let ct = derive(copy);
                    stages.extend(
                        ct.stages
                            .into_iter()
                            .filter(|s| s.stage != "produce" && !s.stage.starts_with("tx_")),
                    );
                    loss.extend(ct.loss_points);
                    group_status = ct.groups;
                    ct.status
                }
                None => "stored",
            }
        } else {
            let checks = f.events.iter().filter(|e| e.stage == "tx_check").count();
            loss.extend(loss::undecided(checks));
            "half"
        }
    } else {
        status
    };
    stages.sort_by(|a, b| a.at_ms.cmp(&b.at_ms).then(rank(&a.stage).cmp(&rank(&b.stage))));
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
fn overall(stages: &[Stage], loss: &[super::LossPoint], groups: &[GroupStatus]) -> &'static str {
    if loss.iter().any(|l| l.kind == "lost") {
        "lost"
    } else if groups.is_empty() {
        if stages.iter().any(|s| s.stage == "replicate") {
            "replicated"
        } else {
            "stored"
        }
    } else if groups.iter().any(|g| g.status == "dead") {
        "dead"
    } else if groups.iter().any(|g| g.status == "retrying") {
        "retrying"
    } else if groups.iter().all(|g| g.status == "consumed") {
        "consumed"
    } else if groups.iter().any(|g| g.status == "replayed") {
        "replayed"
    } else {
        "delivered"
    }
}
