//! Topics over HTTP: list, show, create, delete (SPEC section 6).
//!
//! - `GET /api/v1/topics` → `{"topics":[…]}`, user topics only (no `%`
//!   system topics), by name;
//! - `GET /api/v1/topics/{topic}` → the same object plus `per_queue`
//!   (`{queue, messages, first_offset, next_offset}`) and `lag`
//!   (`{group, lag}`); 404 for an unknown topic;
//! - `POST /api/v1/topics` `{"topic","queues"}` → 201; 409 when it exists;
//! - `DELETE /api/v1/topics/{topic}[?force=true]` → 409 naming the groups
//!   with unconsumed messages unless `force`.
//!
//! A topic object: `topic, queues, messages` (records in its queues,
//! exact, deleted data excluded), `bytes`, `produce_per_sec` /
//! `consume_per_sec` (also under SPEC's `produce_rate` / `consume_rate`),
//! `first_ms` / `last_ms` (stored time of its oldest and newest message,
//! also as RFC 3339 `first_at` / `last_at`; null when empty) and `groups`
//! (names of the groups consuming it). Create and delete are audited with
//! the caller's `X-Waybill-User`. Read-only calls derive everything from
//! the store and the group table on each request.

use axum::extract::{Path, State};

use super::query::ApiQuery as Query;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::dlq::who;
use super::error::ApiError;
use super::AppState;
use crate::broker::{Broker, BrokerError};
use crate::time::rfc3339;

/// One queue of a topic, as shown.
struct QueueStat {
    queue: u32,
    first_offset: u64,
    next_offset: u64,
    bytes: u64,
    first_ms: Option<i64>,
    last_ms: Option<i64>,
}

/// Stored time of the message at `offset` of a queue, if readable.
fn stored_ms(broker: &Broker, topic: &str, queue: u32, offset: u64) -> Result<Option<i64>, ApiError> {
    let (batch, _) = broker
        .store()
        .read_queue(topic, queue, offset, 1)
        .map_err(BrokerError::from)?;
    Ok(batch.into_iter().next().map(|(_, _, m)| m.stored_ms))
}

fn queue_stats(broker: &Broker, topic: &str) -> Result<Vec<QueueStat>, ApiError> {
    let store = broker.store();
    let mut out = Vec::new();
    for queue in 0..broker.topic_queues(topic) {
        let next_offset = store.queue_len(topic, queue);
        let first_offset = broker.hidden_below(topic, queue).min(next_offset);
        let (first_ms, last_ms) = if next_offset > first_offset {
            (
                stored_ms(broker, topic, queue, first_offset)?,
                stored_ms(broker, topic, queue, next_offset - 1)?,
            )
        } else {
            (None, None)
        };
        out.push(QueueStat {
            queue,
            first_offset,
            next_offset,
            bytes: store
                .queue_bytes(topic, queue, first_offset)
                .map_err(BrokerError::from)?,
            first_ms,
            last_ms,
        });
    }
    Ok(out)
}

/// The topic object of the list (and the head of the detail), with its
/// queues' figures.
fn topic_json(state: &AppState, topic: &str) -> Result<(Value, Vec<QueueStat>), ApiError> {
    let broker = &state.broker;
    let queues = queue_stats(broker, topic)?;
    let messages: u64 = queues.iter().map(|q| q.next_offset - q.first_offset).sum();
    let bytes: u64 = queues.iter().map(|q| q.bytes).sum();
    let first_ms = queues.iter().filter_map(|q| q.first_ms).min();
    let last_ms = queues.iter().filter_map(|q| q.last_ms).max();
    let (produce, consume) = state.topic_rates(topic);
    let groups: Vec<String> = broker.topic_groups(topic).into_iter().map(|g| g.group).collect();
    let v = json!({
        "topic": topic,
        "queues": queues.len(),
        "messages": messages,
        "bytes": bytes,
        "produce_per_sec": produce,
        "consume_per_sec": consume,
        "produce_rate": produce,
        "consume_rate": consume,
        "first_ms": first_ms,
        "last_ms": last_ms,
        "first_at": first_ms.map(rfc3339),
        "last_at": last_ms.map(rfc3339),
        "groups": groups,
    });
    Ok((v, queues))
}

/// The topic as it exists now, or the 404 that says it does not.
pub fn existing(broker: &Broker, topic: &str) -> Result<(), ApiError> {
    if broker.topic_exists(topic) {
        Ok(())
    } else {
        Err(ApiError::NotFound(format!("no topic {topic}")))
    }
}

/// `GET /api/v1/topics`.
pub async fn list(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let mut topics = Vec::new();
    for topic in state.broker.user_topics() {
        topics.push(topic_json(&state, &topic)?.0);
    }
    Ok(Json(json!({ "topics": topics })))
}

/// `GET /api/v1/topics/{topic}`.
pub async fn get(State(state): State<AppState>, Path(topic): Path<String>) -> Result<Json<Value>, ApiError> {
    existing(&state.broker, &topic)?;
    let (mut v, queues) = topic_json(&state, &topic)?;
    v["per_queue"] = queues
        .iter()
        .map(|q| {
            json!({
                "queue": q.queue,
                "messages": q.next_offset - q.first_offset,
                "first_offset": q.first_offset,
                "next_offset": q.next_offset,
            })
        })
        .collect();
    v["lag"] = json!(state.broker.topic_groups(&topic));
    Ok(Json(v))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    pub topic: String,
    /// 1 to 64; the node's `queues_per_topic` when absent.
    pub queues: Option<u32>,
}

/// `POST /api/v1/topics` → 201 with the new topic's object.
pub async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    super::json::ApiJson(body): super::json::ApiJson<CreateBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let queues = body.queues.unwrap_or(state.broker.options().queues_per_topic);
    state.broker.create_topic(&body.topic, queues, &who(&headers)).await?;
    let (v, _) = topic_json(&state, &body.topic)?;
    Ok((StatusCode::CREATED, Json(v)))
}

#[derive(Debug, Deserialize)]
pub struct DeleteQuery {
    /// `true` drops the unconsumed messages of lagging groups (`true` or
    /// `false`; anything else is a 400).
    #[serde(default)]
    pub force: bool,
}

/// `DELETE /api/v1/topics/{topic}[?force=true]` → `{"deleted": topic}`.
pub async fn delete(
    State(state): State<AppState>,
    Path(topic): Path<String>,
    headers: HeaderMap,
    Query(q): Query<DeleteQuery>,
) -> Result<Json<Value>, ApiError> {
    let force = q.force;
    state.broker.delete_topic(&topic, force, &who(&headers)).await?;
    Ok(Json(json!({ "deleted": topic, "forced": force })))
}
