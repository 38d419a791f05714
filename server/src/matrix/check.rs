//! The checker: what producers were told against what the final log and
//! the consumer group hold, and against the tracer's own audit.
//!
//! - acknowledged: `SEND_OK`; lost: acknowledged, and no byte-identical
//!   copy of its body in the final log (read back queue by queue from the
//!   writer over the client protocol);
//! - unexpected: a record in the final log whose body this run never sent,
//!   or sent different (bodies are recomputed, see `workload::body`);
//! - duplicated: a body held twice (a retried send), and messages the group
//!   handled more than once;
//! - the audit: every member's trace store is read for messages marked
//!   `lost` and for loss windows. A lost message must be named there or
//!   fall inside a window (else it is a *silent* loss), and no message the
//!   audit calls lost may be present (a *false* loss).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::SqliteConnectOptions;
use sqlx::Row;
use waybill_client::protocol::{Request, Response};
use waybill_client::Connection;

use super::report::Cell;
use super::workload::{self, Outcome, Sent};
use super::MatrixError;
use crate::broker::MessageId;

/// Queues per topic every member runs with (`--queues-per-topic`).
pub const QUEUES: u32 = 4;

/// What the final log holds of this run.
#[derive(Debug, Default)]
pub struct FinalLog {
    /// `(producer, seq)` → copies.
    pub bodies: HashMap<(u32, u64), u32>,
    /// Ids of every record read.
    pub ids: HashSet<String>,
    /// Records whose body is not one this run sent.
    pub unexpected: Vec<String>,
}

/// Reads every queue of the topic from offset 0 on `broker`.
pub async fn read_log(broker: &str, tag: &str, size: usize) -> Result<FinalLog, MatrixError> {
    let conn = Connection::connect(broker)
        .await
        .map_err(|source| MatrixError::Client {
            what: format!("cannot connect to {broker} for the final read"),
            source,
        })?;
    let mut out = FinalLog::default();
    for queue_id in 0..QUEUES {
        let mut offset = 0;
        loop {
            let req = Request::Pull {
                group: "matrix-check".into(),
                topic: workload::TOPIC.into(),
                queue_id,
                offset,
                max: 1024,
                wait_ms: 0,
            };
            let resp = conn
                .call(&req, Duration::from_secs(10))
                .await
                .map_err(|source| MatrixError::Client {
                    what: format!("final read of queue {queue_id} at {offset}"),
                    source,
                })?;
            let (messages, next) = match resp {
                Response::Messages { messages, next_offset } => (messages, next_offset),
                other => return Err(MatrixError::Node(format!("final read: unexpected answer {other:?}"))),
            };
            if messages.is_empty() && next <= offset {
                break;
            }
            for d in messages {
                match workload::parse(tag, size, &d.message.body) {
                    Some(k) => *out.bodies.entry(k).or_insert(0) += 1,
                    None => out.unexpected.push(d.id.clone()),
                }
                out.ids.insert(d.id);
            }
            offset = next.max(offset + 1);
        }
    }
    Ok(out)
}

/// A loss window the audit reported.
#[derive(Debug, Clone)]
pub struct Window {
    pub node: u16,
    pub epoch: u32,
    pub from_pos: u64,
    pub to_pos: Option<u64>,
}

/// What the members' audits said.
#[derive(Debug, Default)]
pub struct Audit {
    /// Message id → the stage it was lost at.
    pub named: HashMap<String, String>,
    pub windows: Vec<Window>,
}

impl Audit {
    fn windowed(&self, id: &MessageId) -> bool {
        self.windows.iter().any(|w| {
            w.node == id.node && w.epoch == id.epoch && id.pos >= w.from_pos && w.to_pos.is_none_or(|t| id.pos < t)
        })
    }
}

/// Reads the `lost` marks and loss windows from every trace store.
pub async fn read_audit(trace_dbs: &[PathBuf]) -> Result<Audit, MatrixError> {
    let mut audit = Audit::default();
    for path in trace_dbs {
        if !path.exists() {
            continue;
        }
        let url = format!("sqlite://{}", path.display());
        let fail = |source| MatrixError::Trace {
            url: url.clone(),
            source,
        };
        let opts = SqliteConnectOptions::from_str(&url).map_err(fail)?.read_only(true);
        let pool = sqlx::SqlitePool::connect_with(opts).await.map_err(fail)?;
        let rows = sqlx::query("SELECT message_id, stage FROM trace_events WHERE outcome = 'lost'")
            .fetch_all(&pool)
            .await
            .map_err(fail)?;
        for r in rows {
            let id: String = r.try_get("message_id").map_err(fail)?;
            let stage: String = r.try_get("stage").map_err(fail)?;
            audit.named.insert(id, stage);
        }
        let rows = sqlx::query("SELECT node, epoch, from_pos, to_pos FROM trace_windows")
            .fetch_all(&pool)
            .await
            .map_err(fail)?;
        for r in rows {
            let node: i64 = r.try_get("node").map_err(fail)?;
            let epoch: i64 = r.try_get("epoch").map_err(fail)?;
            let from: i64 = r.try_get("from_pos").map_err(fail)?;
            let to: Option<i64> = r.try_get("to_pos").map_err(fail)?;
            audit.windows.push(Window {
                node: node as u16,
                epoch: epoch as u32,
                from_pos: from as u64,
                to_pos: to.map(|t| t as u64),
            });
        }
        pool.close().await;
    }
    Ok(audit)
}

/// Fills `cell`'s counts; returns the lost messages' ids (in send order).
pub fn count(
    cell: &mut Cell,
    sent: &[Sent],
    fault_at_ms: u64,
    log: &FinalLog,
    deliveries: &HashMap<(u32, u64), u32>,
    audit: &Audit,
) -> Vec<(String, String)> {
    let mut lost = Vec::new();
    let mut before_fault = Vec::new();
    for s in sent {
        cell.sent += 1;
        let present = log.bodies.contains_key(&(s.producer, s.seq));
        match &s.outcome {
            Outcome::Acked { id } => {
                cell.acked += 1;
                if s.at_ms < fault_at_ms {
                    before_fault.push(s.latency_us);
                }
                if !present {
                    lost.push((id.clone(), format!("p{}-{}", s.producer, s.seq)));
                }
            }
            Outcome::Refused { .. } => cell.refused += 1,
            Outcome::Unknown { .. } => {
                cell.unknown += 1;
                cell.unknown_present += u64::from(present);
            }
        }
    }
    cell.lost = lost.len() as u64;
    cell.duplicated = log.bodies.values().filter(|n| **n > 1).count() as u64;
    cell.duplicated_to_consumers = deliveries.values().filter(|n| **n > 1).count() as u64;
    cell.consumed = deliveries.len() as u64;
    cell.unexpected = log.unexpected.len() as u64;
    before_fault.sort_unstable();
    cell.msgs_per_sec = before_fault.len() as f64 / (fault_at_ms.max(1) as f64 / 1000.0);
    cell.p99_ms = crate::bench::load::percentile_ms(&before_fault, 0.99);
    let mut stages = BTreeMap::new();
    for (id, _) in &lost {
        if let Some(stage) = audit.named.get(id) {
            cell.audit_named += 1;
            *stages.entry(stage.clone()).or_insert(0) += 1;
        } else if MessageId::from_str(id).is_ok_and(|m| audit.windowed(&m)) {
            cell.audit_windowed += 1;
        } else {
            cell.silent += 1;
        }
    }
    cell.loss_stages = stages;
    cell.false_loss = audit.named.keys().filter(|id| log.ids.contains(*id)).count() as u64;
    lost
}

/// How the audit found one lost message.
pub fn found(audit: &Audit, id: &str) -> (&'static str, Option<String>) {
    if let Some(stage) = audit.named.get(id) {
        return ("named", Some(stage.clone()));
    }
    if MessageId::from_str(id).is_ok_and(|m| audit.windowed(&m)) {
        return ("window", None);
    }
    ("silent", None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent(p: u32, seq: u64, outcome: Outcome) -> Sent {
        Sent {
            producer: p,
            seq,
            outcome,
            at_ms: seq,
            latency_us: 100,
        }
    }

    fn id(pos: u64) -> String {
        MessageId { node: 1, epoch: 2, pos }.to_string()
    }

    #[test]
    fn the_checker_names_lost_silent_false_and_unknown() {
        let sends = vec![
            sent(0, 0, Outcome::Acked { id: id(0) }),
            sent(0, 1, Outcome::Acked { id: id(100) }),
            sent(0, 2, Outcome::Acked { id: id(200) }),
            sent(0, 3, Outcome::Acked { id: id(300) }),
            sent(
                0,
                4,
                Outcome::Unknown {
                    error: "timeout".into(),
                },
            ),
        ];
        let mut log = FinalLog::default();
        log.bodies.insert((0, 0), 2);
        log.bodies.insert((0, 4), 1);
        log.ids.insert(id(0));
        log.unexpected.push(id(999));
        let mut audit = Audit::default();
        audit.named.insert(id(100), "flush".into());
        // Present, yet called lost: a false loss.
        audit.named.insert(id(0), "store".into());
        audit.windows.push(Window {
            node: 1,
            epoch: 2,
            from_pos: 250,
            to_pos: None,
        });
        let mut cell = Cell::default();
        let deliveries = HashMap::from([((0, 0), 2), ((0, 4), 1)]);
        let lost = count(&mut cell, &sends, 3, &log, &deliveries, &audit);
        assert_eq!(lost.len(), 3);
        assert_eq!(
            (cell.acked, cell.lost, cell.unknown, cell.unknown_present),
            (4, 3, 1, 1)
        );
        assert_eq!((cell.audit_named, cell.audit_windowed, cell.silent), (1, 1, 1));
        assert_eq!((cell.false_loss, cell.unexpected, cell.duplicated), (1, 1, 1));
        assert_eq!((cell.duplicated_to_consumers, cell.consumed), (1, 2));
        assert_eq!(cell.loss_stages.get("flush"), Some(&1));
    }
}
