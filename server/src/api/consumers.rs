//! `GET /api/v1/consumers`: consumer groups with per-queue committed
//! offset, queue end and lag, retry-level occupancy and dead letters.
//! [`groups_json`] is shared with the live feed's `stats` (without the
//! dead-letter count, which reads each group's DLQ).
//!
//! Read-only, derived from the group table and the store on each call.

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

use super::AppState;
use crate::broker::retry::{dlq_topic, retry_topic};
use crate::broker::Broker;

/// `GET /api/v1/consumers`: groups, members, committed offsets, and per
/// queue the end and lag (retry queues: messages waiting per level).
pub async fn consumers(State(state): State<AppState>) -> Json<Value> {
    Json(json!({ "groups": groups_json(&state.broker, true) }))
}

/// Readable duration for a retry level (`10ms`, `5s`, `2m`, `1h`).
pub fn human(d: std::time::Duration) -> String {
    let ms = d.as_millis();
    match ms {
        ms if ms < 1000 || ms % 1000 != 0 => format!("{ms}ms"),
        ms if ms < 60_000 || ms % 60_000 != 0 => format!("{}s", ms / 1000),
        ms if ms < 3_600_000 || ms % 3_600_000 != 0 => format!("{}m", ms / 60_000),
        ms => format!("{}h", ms / 3_600_000),
    }
}

/// Consumer groups with queue positions; `dead_letters` (a DLQ read per
/// group) only when `with_dead` — the live feed sends this every second.
pub fn groups_json(broker: &Broker, with_dead: bool) -> Value {
    let store = broker.store();
    let delays = &broker.options().retry.delays;
    let groups: Vec<Value> = broker
        .groups()
        .views()
        .into_iter()
        .map(|g| {
            let mut queues = Vec::new();
            let (mut lag, mut retrying) = (0u64, 0u64);
            if let Some(topic) = &g.topic {
                let retry = retry_topic(&g.group);
                for (t, q) in broker.group_queues(&g.group, topic) {
                    let end = store.queue_len(&t, q);
                    let committed = broker.groups().offset(&g.group, &t, q).unwrap_or(0);
                    let behind = end.saturating_sub(committed);
                    let is_retry = t == retry;
                    if is_retry {
                        retrying += behind;
                    } else {
                        lag += behind;
                    }
                    let delay = match delays.get(q as usize) {
                        Some(d) if is_retry => human(*d),
                        None if is_retry => "replays".to_string(),
                        _ => String::new(),
                    };
                    queues.push(json!({
                        "topic": t, "queue_id": q, "kind": if is_retry { "retry" } else { "topic" },
                        "committed": committed, "end": end, "lag": behind, "delay": delay,
                    }));
                }
            }
            let dead = with_dead.then(|| {
                broker
                    .dead_letters(&g.group)
                    .map(|d| d.iter().filter(|l| l.state == "dead").count() as u64)
                    .unwrap_or(0)
            });
            json!({
                "group": g.group, "topic": g.topic, "members": g.members, "auto_commit": g.auto_commit,
                "offsets": g.offsets, "queues": queues, "lag": lag, "retrying": retrying,
                "dead_letters": dead, "dlq_total": store.queue_len(&dlq_topic(&g.group), 0),
            })
        })
        .collect();
    Value::Array(groups)
}
