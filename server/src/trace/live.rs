//! Summaries of trace events for the live feed (`/api/v1/events`): small
//! JSON objects the dashboard can show without another request.

use serde_json::{json, Value};

use super::TraceEvent;
use crate::model::Stage;

/// One summary per message for a produce request, one for anything else.
pub fn summaries(ev: &TraceEvent) -> Vec<Value> {
    match ev {
        TraceEvent::Stored(s) => s
            .messages
            .iter()
            .map(|m| {
                let id = crate::model::MessageId {
                    node: m.node,
                    epoch: m.epoch,
                    pos: m.pos,
                };
                json!({
                    "type": "stage", "stage": Stage::Store, "id": id.to_string(), "topic": s.topic, "key": m.key,
                    "at_ms": m.stored_ms, "outcome": s.status_of(m), "send_mode": m.send_mode, "attempt": m.attempt,
                })
            })
            .collect(),
        other => vec![summary(other)],
    }
}

fn summary(ev: &TraceEvent) -> Value {
    match ev {
        TraceEvent::Stored(s) => json!({ "type": "stage", "stage": Stage::Store, "topic": s.topic }),
        TraceEvent::Message(m) => json!({
            "type": "stage", "stage": m.stage, "id": m.message_id, "group": m.group,
            "at_ms": m.at_ms, "outcome": m.outcome, "detail": m.detail,
        }),
        TraceEvent::Delivered {
            group,
            topic,
            queue_id,
            from,
            to,
            at_ms,
        } => json!({
            "type": "deliver", "group": group, "topic": topic, "queue_id": queue_id,
            "from": from, "to": to, "at_ms": at_ms,
        }),
        TraceEvent::Committed {
            group,
            topic,
            queue_id,
            offset,
            at_ms,
            auto_commit,
            handled,
            duplicates,
            ..
        } => json!({
            "type": "commit", "group": group, "topic": topic, "queue_id": queue_id,
            "offset": offset, "at_ms": at_ms, "auto_commit": auto_commit, "handled": handled.len(),
            "duplicates": duplicates.len(),
        }),
    }
}
