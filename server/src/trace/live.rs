//! Summaries of trace events for the live feed (`/api/v1/events`): small
//! JSON objects the dashboard can show without another request.

use serde_json::{json, Value};

use super::TraceEvent;

pub fn summary(ev: &TraceEvent) -> Value {
    match ev {
        TraceEvent::Stored(s) => json!({
            "type": "stage", "stage": "store", "id": s.id, "topic": s.topic, "key": s.key,
            "at_ms": s.stored_ms, "outcome": s.send_status, "send_mode": s.send_mode,
        }),
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
        } => json!({
            "type": "commit", "group": group, "topic": topic, "queue_id": queue_id,
            "offset": offset, "at_ms": at_ms, "auto_commit": auto_commit,
        }),
    }
}
