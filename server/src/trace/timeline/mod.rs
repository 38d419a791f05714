//! A message's timeline: stages in order, status overall and per group, and
//! loss points (risks its path carried, and losses the audit found).
//!
//! Derived stages: *flush* is the first sampled flushed watermark at or past
//! the message's end (an upper bound on when the fsync happened); a
//! *delivery* of a first-time record is a pull range covering its queue
//! offset; a delivered record is *consumed* by a group when that group
//! committed past it and did not hand it back for retry.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{json, Value};
use sqlx::any::AnyRow;
use sqlx::AnyPool;

use super::db::{int, opt_str, text};
use super::{runs, TraceError};
use crate::model::topics::HALF_TOPIC;
use crate::model::MessageId;
use crate::storage::Store;
use crate::time::rfc3339;
use waybill_client::protocol::PROP_TRANSACTION_ID;

mod replicate;
use replicate::{replicate_stages, Answer};

/// One stage as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Stage {
    pub stage: String,
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
    pub stage: String,
    pub kind: &'static str,
    pub reason: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

/// Per-group outcome.
#[derive(Debug, Clone, Serialize)]
pub struct GroupStatus {
    pub group: String,
    pub status: &'static str,
    pub attempts: u32,
}

/// What the trace knows about one message.
#[derive(Debug, Clone, Serialize)]
pub struct Timeline {
    pub id: String,
    pub topic: String,
    pub key: Option<String>,
    pub tags: Option<String>,
    pub status: &'static str,
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

fn stage(stage: &str, at_ms: i64, node: Option<String>, outcome: &str, detail: String, group: Option<String>) -> Stage {
    Stage {
        stage: stage.to_string(),
        at: rfc3339(at_ms),
        at_ms,
        node,
        outcome: outcome.to_string(),
        detail,
        group,
    }
}

/// Order of stages with equal times.
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

/// Builds the timeline of message `id`; `Ok(None)` when the trace has no
/// record of it (yet). The run gives how and when the broker answered; the
/// log, while it still holds the record, gives the message's own fields.
pub async fn load(pool: &AnyPool, store: &Store, id: &str) -> Result<Option<Timeline>, TraceError> {
    let Ok(parsed) = id.parse::<MessageId>() else {
        return Ok(None);
    };
    let Some((run, e)) = runs::find(pool, &parsed).await? else {
        return Ok(None);
    };
    let record = match store.read(parsed.pos) {
        Ok(m) if m.node == parsed.node && m.epoch == parsed.epoch => Some(m),
        _ => None,
    };
    let node = i64::from(run.node);
    let topic = run.topic.clone();
    let queue_id = i64::from(e.queue_id);
    let queue_offset = e.queue_offset as i64;
    let end = e.end as i64;
    let born = e.born_ms;
    let stored = e.stored_ms;
    let acked = e.acked_ms;
    let send_mode = run.send_mode.clone();
    let flush_mode = run.flush_mode.clone();
    let send_status = run.send_status.clone();
    let node_s = Some(node.to_string());

    let mut stages = vec![
        stage(
            "produce",
            born,
            record.as_ref().and_then(|m| m.producer.clone()),
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
            stored,
            node_s.clone(),
            "ok",
            format!(
                "queue {queue_id} offset {queue_offset}, log position {}; answered {send_status}",
                e.pos
            ),
            None,
        ),
    ];
    let mut loss = Vec::new();
    if e.attempt > 1 {
        loss.push(LossPoint {
            stage: "produce".into(),
            kind: "risk",
            reason: format!(
                "stored by the producer's attempt {}: an earlier attempt that timed out may have been stored too \
                 (a duplicate under another id)",
                e.attempt
            ),
            group: None,
        });
    }
    if send_mode == "oneway" {
        loss.push(LossPoint {
            stage: "produce".into(),
            kind: "risk",
            reason: "oneway send: the producer never learns whether the broker stored it".into(),
            group: None,
        });
    }

    let flushed_at: Option<i64> = sqlx::query(
        "SELECT MIN(at) AS at FROM trace_watermarks WHERE node = $1 AND kind = 'flushed' AND position >= $2",
    )
    .bind(node)
    .bind(end)
    .fetch_one(pool)
    .await
    .ok()
    .and_then(|r| sqlx::Row::try_get::<Option<i64>, _>(&r, "at").ok().flatten());
    match (flush_mode.as_str(), flushed_at) {
        ("sync", _) => stages.push(stage(
            "flush",
            acked.max(stored),
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
            loss.push(LossPoint {
                stage: "flush".into(),
                kind: "risk",
                reason: format!(
                    "async flush: acknowledged before the fsync; at risk of a power loss until {}",
                    rfc3339(at)
                ),
                group: None,
            });
        }
        (_, None) => loss.push(LossPoint {
            stage: "flush".into(),
            kind: "risk",
            reason: "async flush: acknowledged before the fsync and not yet flushed; a power loss now loses it".into(),
            group: None,
        }),
    }

    let answer = Answer {
        mode: &run.replication,
        send_status: &send_status,
        acked,
    };
    replicate_stages(pool, answer, node, end, &mut stages, &mut loss).await?;

    let mut groups: BTreeMap<String, GroupState> = BTreeMap::new();
    // First-time deliveries: pull ranges over the message's own queue slot.
    let deliveries = sqlx::query(
        "SELECT grp, at, node FROM trace_deliveries WHERE topic = $1 AND queue_id = $2 AND from_offset <= $3 \
         AND to_offset > $3 ORDER BY at",
    )
    .bind(&topic)
    .bind(queue_id)
    .bind(queue_offset)
    .fetch_all(pool)
    .await?;
    for d in &deliveries {
        let g = text(d, "grp");
        let st = groups.entry(g.clone()).or_default();
        st.attempts += 1;
        let detail = if st.attempts > 1 {
            "delivered again (redelivery of an uncommitted message)".to_string()
        } else {
            "delivered".to_string()
        };
        stages.push(stage(
            "deliver",
            int(d, "at"),
            Some(int(d, "node").to_string()),
            "ok",
            detail,
            Some(g),
        ));
    }
    let mut events = sqlx::query("SELECT * FROM trace_events WHERE message_id = $1 ORDER BY at, seq")
        .bind(id)
        .fetch_all(pool)
        .await?;
    // A committed transactional message: its half's prepare, checks and
    // commit belong to its path.
    if let Some(half) = record.as_ref().and_then(|m| m.properties.get(PROP_TRANSACTION_ID)) {
        events.extend(
            sqlx::query("SELECT * FROM trace_events WHERE message_id = $1 AND stage LIKE 'tx_%' ORDER BY at, seq")
                .bind(half)
                .fetch_all(pool)
                .await?,
        );
    }
    // Records delivered to each group: the original, then retry records.
    let mut delivered: Vec<(String, String, String, i64, i64)> = groups
        .keys()
        .map(|g| (g.clone(), id.to_string(), topic.clone(), queue_id, queue_offset))
        .collect();
    let mut failed_records: Vec<(String, String)> = Vec::new();
    for e in &events {
        let st = text(e, "stage");
        let g = opt_str(e, "grp");
        let at = int(e, "at");
        let outcome = text(e, "outcome");
        let detail = text(e, "detail");
        match st.as_str() {
            "deliver" => {
                if let Some(g) = &g {
                    groups.entry(g.clone()).or_default().attempts += 1;
                    delivered.push((
                        g.clone(),
                        text(e, "record_id"),
                        text(e, "rec_topic"),
                        int(e, "rec_queue"),
                        int(e, "rec_offset"),
                    ));
                }
            }
            "retry" | "dlq" => {
                if let Some(g) = &g {
                    let s = groups.entry(g.clone()).or_default();
                    if st == "dlq" {
                        s.dead = true;
                        s.retrying = false;
                    } else {
                        s.retrying = true;
                    }
                    failed_records.push((g.clone(), text(e, "record_id")));
                }
            }
            "replay" => {
                if let Some(g) = &g {
                    let s = groups.entry(g.clone()).or_default();
                    s.replayed = true;
                    s.dead = false;
                }
            }
            _ if outcome == "lost" => loss.push(LossPoint {
                stage: st.clone(),
                kind: "lost",
                reason: detail.clone(),
                group: g.clone(),
            }),
            _ => {}
        }
        stages.push(stage(&st, at, Some(int(e, "node").to_string()), &outcome, detail, g));
    }
    // Consumption: committed past a delivered record not handed back.
    for (g, record_id, rtopic, rqueue, roffset) in &delivered {
        if failed_records.iter().any(|(fg, fr)| fg == g && fr == record_id) {
            continue;
        }
        let commit = sqlx::query(
            "SELECT at, auto_commit, handled FROM trace_commits WHERE grp = $1 AND topic = $2 AND queue_id = $3 \
             AND queue_offset > $4 ORDER BY at LIMIT 1",
        )
        .bind(g)
        .bind(rtopic)
        .bind(*rqueue)
        .bind(*roffset)
        .fetch_optional(pool)
        .await?;
        if let Some(c) = commit {
            let auto = int(&c, "auto_commit") != 0;
            let s = groups.entry(g.clone()).or_default();
            s.consumed = true;
            s.retrying = false;
            s.auto_commit |= auto;
            stages.push(stage(
                "consume",
                int(&c, "at"),
                node_s.clone(),
                if auto { "committed" } else { "ok" },
                if auto {
                    "offset auto-committed on delivery; the handler's result is unknown".into()
                } else {
                    let handled: Vec<u8> = sqlx::Row::try_get::<Option<Vec<u8>>, _>(&c, "handled")
                        .ok()
                        .flatten()
                        .unwrap_or_default();
                    match super::varint::handled_ms(&handled, *roffset as u64) {
                        Some(ms) => format!("handled with CONSUME_SUCCESS in {ms} ms; offset committed"),
                        None => "handled with CONSUME_SUCCESS; offset committed".into(),
                    }
                },
                Some(g.clone()),
            ));
        }
    }
    let mut group_status = Vec::new();
    for (g, s) in &groups {
        let status = if s.dead {
            "dead"
        } else if s.consumed {
            "consumed"
        } else if s.retrying {
            "retrying"
        } else if s.replayed {
            "replayed"
        } else {
            "delivered"
        };
        if s.auto_commit {
            loss.push(LossPoint {
                stage: "consume".into(),
                kind: "risk",
                reason: "auto-commit: the offset was committed before the handler succeeded".into(),
                group: Some(g.clone()),
            });
        }
        if s.attempts > 1 {
            loss.push(LossPoint {
                stage: "deliver".into(),
                kind: "risk",
                reason: format!(
                    "delivered {} times to this group without idempotent handling: duplicate effects possible",
                    s.attempts
                ),
                group: Some(g.clone()),
            });
        }
        if s.dead {
            loss.push(LossPoint {
                stage: "dlq".into(),
                kind: "risk",
                reason: "dead letter not replayed: the group never processed it".into(),
                group: Some(g.clone()),
            });
        }
        group_status.push(GroupStatus {
            group: g.clone(),
            status,
            attempts: s.attempts,
        });
    }
    let lost = loss.iter().any(|l| l.kind == "lost");
    let status = if lost {
        "lost"
    } else if group_status.is_empty() {
        if stages.iter().any(|s| s.stage == "replicate") {
            "replicated"
        } else {
            "stored"
        }
    } else if group_status.iter().any(|g| g.status == "dead") {
        "dead"
    } else if group_status.iter().any(|g| g.status == "retrying") {
        "retrying"
    } else if group_status.iter().all(|g| g.status == "consumed") {
        "consumed"
    } else if group_status.iter().any(|g| g.status == "replayed") {
        "replayed"
    } else {
        "delivered"
    };
    let mut committed_as = None;
    let status = if run.topic == HALF_TOPIC {
        let of = |stage: &str| events.iter().find(|e| text(e, "stage") == stage);
        if let Some(rb) = of("tx_rollback") {
            if text(rb, "detail").starts_with("rolled back by the broker") {
                loss.push(LossPoint {
                    stage: "tx_check".into(),
                    kind: "risk",
                    reason: "rolled back because the producer never confirmed its local transaction: if that \
                             transaction committed, this message is lost"
                        .into(),
                    group: None,
                });
            }
            "rolled_back"
        } else if let Some(c) = of("tx_commit").map(|e| text(e, "record_id")) {
            // The committed copy's path continues this one.
            let copy = Box::pin(load(pool, store, &c)).await?;
            committed_as = Some(c);
            match copy {
                Some(ct) => {
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
            let checks = events.iter().filter(|e| text(e, "stage") == "tx_check").count();
            if checks > 0 {
                loss.push(LossPoint {
                    stage: "tx_check".into(),
                    kind: "risk",
                    reason: format!(
                        "transaction undecided after {checks} checks: consumers will not see it unless its producer \
                         group commits"
                    ),
                    group: None,
                });
            }
            "half"
        }
    } else {
        status
    };
    let gaps = gaps(pool, born, stored.max(born) + 60_000).await?;
    stages.sort_by(|a, b| a.at_ms.cmp(&b.at_ms).then(rank(&a.stage).cmp(&rank(&b.stage))));
    Ok(Some(Timeline {
        id: id.to_string(),
        topic,
        key: record.as_ref().map_or(e.key.clone(), |m| m.key.clone()),
        tags: record.as_ref().and_then(|m| m.tags.clone()),
        status,
        stages,
        loss_points: loss,
        groups: group_status,
        gaps,
        send_mode,
        flush_mode,
        trace_id: record
            .as_ref()
            .and_then(|m| m.properties.get(waybill_client::tracecontext::PROP_TRACEPARENT))
            .and_then(|tp| waybill_client::tracecontext::parse(tp))
            .map(|(t, _)| t.to_string()),
        committed_as,
    }))
}

/// Periods overlapping `[from_ms, to_ms]` in which the tracer dropped
/// events (a timeline there may miss stages).
pub async fn gaps(pool: &AnyPool, from_ms: i64, to_ms: i64) -> Result<Vec<Value>, TraceError> {
    Ok(
        sqlx::query("SELECT from_at, to_at, dropped, messages FROM trace_gaps WHERE from_at <= $1 AND to_at >= $2")
            .bind(to_ms)
            .bind(from_ms)
            .fetch_all(pool)
            .await?
            .iter()
            .map(gap_json)
            .collect(),
    )
}

fn gap_json(r: &AnyRow) -> Value {
    json!({
        "from": rfc3339(int(r, "from_at")),
        "to": rfc3339(int(r, "to_at")),
        "dropped": int(r, "dropped"),
        "messages": int(r, "messages"),
        "note": "the tracer shed events in this period: stages may be missing",
    })
}
