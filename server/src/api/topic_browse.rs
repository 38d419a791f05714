//! `GET /api/v1/topics/{topic}/messages?queue=&before=&limit=`: a topic's
//! messages, newest first, a page at a time.
//!
//! Order is the log's: a message's log position (the `pos` in its id)
//! grows with the time it was stored, across queues. `before` is the
//! `next_before` of the previous page (a log position, exclusive), so
//! pages cover every message exactly once; `next_before` is null on the
//! last page. Messages of a deleted topic of the same name are never
//! shown. `limit` is 1 to [`MAX_LIMIT`] (default [`DEFAULT_LIMIT`]);
//! `queue` must be one of the topic's (another is a 404). Memory: at most `limit + 1`
//! messages per queue are read for a page.

use axum::extract::{Path, State};

use super::query::ApiQuery as Query;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::ApiError;
use super::AppState;
use crate::broker::{BrokerError, MessageId};
use crate::storage::StoredMessage;

/// Most messages per page.
pub const MAX_LIMIT: usize = 200;
/// Messages per page when `limit` is absent.
pub const DEFAULT_LIMIT: usize = 50;
/// Characters of a body shown in a row.
const PREVIEW_CHARS: usize = 200;

/// Query parameters, taken as text so a bad one answers a JSON 400.
#[derive(Debug, Deserialize)]
pub struct BrowseQuery {
    pub queue: Option<String>,
    pub before: Option<String>,
    pub limit: Option<String>,
}

fn number<T: std::str::FromStr>(name: &str, v: Option<&str>) -> Result<Option<T>, ApiError> {
    match v.filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(s) => s
            .parse::<T>()
            .map(Some)
            .map_err(|_| ApiError::BadRequest(format!("{name} must be a non-negative whole number, not {s:?}"))),
    }
}

fn row(pos: u64, offset: u64, m: &StoredMessage) -> Value {
    let id = MessageId {
        node: m.node,
        epoch: m.epoch,
        pos,
    };
    let preview: String = String::from_utf8_lossy(&m.body).chars().take(PREVIEW_CHARS).collect();
    json!({
        "id": id.to_string(),
        "queue": m.queue_id,
        "offset": offset,
        "key": m.key,
        "tags": m.tags,
        "born_ms": m.born_ms,
        "stored_ms": m.stored_ms,
        "size": m.body.len(),
        "body_preview": preview,
    })
}

pub async fn list(
    State(state): State<AppState>,
    Path(topic): Path<String>,
    Query(q): Query<BrowseQuery>,
) -> Result<Json<Value>, ApiError> {
    let broker = &state.broker;
    super::topics::existing(broker, &topic)?;
    let limit = number::<usize>("limit", q.limit.as_deref())?.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ApiError::BadRequest(format!("limit must be 1 to {MAX_LIMIT}")));
    }
    let queues = broker.topic_queues(&topic);
    let selected: Vec<u32> = match number::<u32>("queue", q.queue.as_deref())? {
        // A well-formed number naming a queue the topic does not have.
        Some(queue) if queue >= queues => {
            return Err(ApiError::NotFound(format!(
                "topic {topic} has no queue {queue} (its queues are 0 to {})",
                queues - 1
            )))
        }
        Some(queue) => vec![queue],
        None => (0..queues).collect(),
    };
    let before = number::<u64>("before", q.before.as_deref())?;
    let store = broker.store();
    // The newest `limit + 1` of each queue below `before`: the extra one
    // says whether an older page exists.
    let mut found: Vec<(u64, u64, StoredMessage)> = Vec::new();
    for queue in selected {
        let floor = broker.hidden_below(&topic, queue);
        let end = match before {
            Some(pos) => store.queue_count_below(&topic, queue, pos),
            None => store.queue_len(&topic, queue),
        };
        let from = end.saturating_sub(limit as u64 + 1).max(floor);
        if from >= end {
            continue;
        }
        let (batch, _) = store
            .read_queue(&topic, queue, from, (end - from) as usize)
            .map_err(BrokerError::from)?;
        found.extend(batch);
    }
    found.sort_by_key(|m| std::cmp::Reverse(m.1));
    let more = found.len() > limit;
    found.truncate(limit);
    let next_before = if more {
        found.last().map(|(_, pos, _)| *pos)
    } else {
        None
    };
    let messages: Vec<Value> = found.iter().map(|(off, pos, m)| row(*pos, *off, m)).collect();
    Ok(Json(json!({ "messages": messages, "next_before": next_before })))
}
