//! `GET /api/v1/consumers`: consumer groups with per-queue committed
//! offset, queue end and lag, retry-level occupancy and dead letters, and
//! how each handles duplicates: `idempotent`, its inbox (`dedupe`:
//! backend and window), the duplicates it suppressed, and whether the
//! inbox remembers keys for the whole retry schedule
//! (`dedupe_covers_retries`, with a `dedupe_warning` when it does not).
//! Each group's `member_details` lists its live members (`id`, `host`,
//! `last_heartbeat_ms`, `topic`, owned `queues`), beside the ids in
//! `members`.
//! [`groups_json`] is shared with the live feed's `stats` (without the
//! dead-letter count, which reads each group's DLQ).
//!
//! Read-only, derived from the group table and the store on each call.

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

use super::AppState;
use crate::broker::groups::{share, DedupeView, MemberView};
use crate::broker::retry::{dlq_topic, retry_topic, RetryPolicy};
use crate::broker::Broker;
use crate::time::span;

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

/// Whether an inbox remembering keys `window_ms` (0 = forever) outlasts
/// the retry schedule, and the warning when it does not. `(None, None)`
/// without an inbox.
pub fn dedupe_coverage(dedupe: Option<&DedupeView>, retry: &RetryPolicy) -> (Option<bool>, Option<String>) {
    let Some(d) = dedupe else {
        return (None, None);
    };
    let schedule = retry.schedule().as_millis().try_into().unwrap_or(u64::MAX);
    if d.window_ms == 0 || d.window_ms >= schedule {
        return (Some(true), None);
    }
    let warning = format!(
        "the inbox forgets keys after {} but retries span {}: a retry that arrives after its key expired runs the \
         handler again; keep keys at least as long as the retry schedule (max_reconsume_times {})",
        span(d.window_ms),
        span(schedule),
        retry.max_reconsume_times
    );
    (Some(false), Some(warning))
}

/// Consumer groups with queue positions; `dead_letters` (a DLQ read per
/// group) only when `with_dead` — the live feed sends this every second.
pub fn groups_json(broker: &Broker, with_dead: bool) -> Value {
    let store = broker.store();
    let policy = &broker.options().retry;
    let delays = &policy.delays;
    let retry_span_ms = u64::try_from(policy.schedule().as_millis()).unwrap_or(u64::MAX);
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
            let (covers, warning) = dedupe_coverage(g.dedupe.as_ref(), policy);
            let member_details = member_details(broker, &g.group, &g.live);
            json!({
                "group": g.group, "topic": g.topic, "members": g.members, "auto_commit": g.auto_commit,
                "offsets": g.offsets, "queues": queues, "lag": lag, "retrying": retrying,
                "dead_letters": dead, "dlq_total": store.queue_len(&dlq_topic(&g.group), 0),
                "idempotent": g.dedupe.is_some(), "dedupe": g.dedupe,
                "duplicates_suppressed": g.duplicates_suppressed, "retry_span_ms": retry_span_ms,
                "dedupe_covers_retries": covers, "dedupe_warning": warning,
                "member_details": member_details,
            })
        })
        .collect();
    Value::Array(groups)
}

/// Live members with their address, last heartbeat and the queues they
/// own: the broker's assignment (`groups::share`) recomputed for each.
fn member_details(broker: &Broker, group: &str, live: &[MemberView]) -> Vec<Value> {
    live.iter()
        .enumerate()
        .map(|(me, m)| {
            let queues: Vec<Value> = share(&broker.group_queues(group, &m.topic), live.len(), me)
                .into_iter()
                .map(|(t, q)| json!({ "topic": t, "queue_id": q }))
                .collect();
            json!({
                "id": m.id, "host": m.host, "last_heartbeat_ms": m.last_heartbeat_ms,
                "topic": m.topic, "queues": queues,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_inbox_shorter_than_the_retry_schedule_is_warned_about() {
        let rocketmq = RetryPolicy::default();
        let inbox = |window_ms| DedupeView {
            backend: "sqlite".into(),
            window_ms,
        };
        assert_eq!(dedupe_coverage(None, &rocketmq), (None, None));
        assert_eq!(dedupe_coverage(Some(&inbox(0)), &rocketmq), (Some(true), None));
        assert_eq!(
            dedupe_coverage(Some(&inbox(5 * 3_600_000)), &rocketmq),
            (Some(true), None)
        );
        assert_eq!(
            dedupe_coverage(Some(&inbox(3_600_000)), &rocketmq),
            (
                Some(false),
                Some(
                    "the inbox forgets keys after 1h but retries span 4h 46m: a retry that arrives after its key \
                     expired runs the handler again; keep keys at least as long as the retry schedule \
                     (max_reconsume_times 16)"
                        .into()
                )
            )
        );
    }
}
