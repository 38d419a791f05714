//! Producing and reading messages over HTTP.
//!
//! `POST /api/v1/topics/{topic}/messages` is a sync send: the answer comes
//! after the broker's result (in sync flush mode, after the fsync).
//! `GET /api/v1/messages/{id}` reads the message back from the commit log.
//! `GET /api/v1/messages?key=K` finds messages by key through the key index.
//! The full per-stage trace joins these answers when the tracer lands; until
//! then the stages are the ones the stored record itself proves.

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::Json;
use base64::Engine;
use chrono::{SecondsFormat, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::error::ApiError;
use super::json::ApiJson;
use super::AppState;
use crate::broker::{MessageId, Outgoing};
use crate::storage::{Flush, StoredMessage};

/// Body of a send.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendBody {
    /// Message body as text.
    pub body: String,
    pub key: Option<String>,
    pub tags: Option<String>,
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    pub producer: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct SendAnswer {
    pub id: String,
    pub status: &'static str,
    pub topic: String,
    pub queue_id: u32,
    pub queue_offset: u64,
}

pub async fn send(
    State(state): State<AppState>,
    Path(topic): Path<String>,
    ApiJson(req): ApiJson<SendBody>,
) -> Result<Json<SendAnswer>, ApiError> {
    let result = state
        .broker
        .send(Outgoing {
            topic: topic.clone(),
            key: req.key,
            tags: req.tags,
            producer: req.producer,
            properties: req.properties,
            body: req.body.into_bytes(),
            born_ms: None,
        })
        .await?;
    Ok(Json(SendAnswer {
        id: result.id.to_string(),
        status: result.status.name(),
        topic,
        queue_id: result.queue_id,
        queue_offset: result.queue_offset,
    }))
}

pub async fn get(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let parsed: MessageId = id
        .parse()
        .map_err(|e: crate::broker::BadId| ApiError::BadRequest(e.to_string()))?;
    let msg = state
        .broker
        .get(&parsed)?
        .ok_or_else(|| ApiError::NotFound(format!("no message with id {id}")))?;
    Ok(Json(message_json(&state, &parsed, &msg)))
}

#[derive(Debug, Deserialize)]
pub struct SearchQuery {
    pub key: Option<String>,
    pub id: Option<String>,
    pub limit: Option<usize>,
}

/// Default and largest page of a search.
const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: usize = 1000;

pub async fn search(State(state): State<AppState>, Query(q): Query<SearchQuery>) -> Result<Json<Value>, ApiError> {
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
    let mut found = Vec::new();
    if let Some(id) = &q.id {
        let parsed: MessageId = id
            .parse()
            .map_err(|e: crate::broker::BadId| ApiError::BadRequest(e.to_string()))?;
        if let Some(m) = state.broker.get(&parsed)? {
            found.push(message_json(&state, &parsed, &m));
        }
    } else if let Some(key) = &q.key {
        for (id, m) in state.broker.find_by_key(key, limit) {
            found.push(message_json(&state, &id, &m));
        }
    } else {
        return Err(ApiError::BadRequest("give key= or id= to search".into()));
    }
    Ok(Json(json!({ "messages": found })))
}

pub fn rfc3339(ms: i64) -> String {
    Utc.timestamp_millis_opt(ms)
        .single()
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
        .unwrap_or_default()
}

fn message_json(state: &AppState, id: &MessageId, m: &StoredMessage) -> Value {
    let store = state.broker.store();
    let node = m.node.to_string();
    let (body, body_base64) = match std::str::from_utf8(&m.body) {
        Ok(s) => (Value::String(s.to_string()), Value::Null),
        Err(_) => (
            Value::Null,
            Value::String(base64::engine::general_purpose::STANDARD.encode(&m.body)),
        ),
    };
    let flushed = store.stats().flushed > id.pos;
    let mut loss_points = Vec::new();
    if let Flush::Async { .. } = store.flush_mode() {
        if !flushed {
            loss_points.push(json!({
                "stage": "flush",
                "kind": "risk",
                "reason": "acknowledged before fsync (async flush): a power loss now would lose it",
            }));
        }
    }
    json!({
        "id": id.to_string(),
        "topic": m.topic,
        "key": m.key,
        "tags": m.tags,
        "properties": m.properties,
        "body": body,
        "body_base64": body_base64,
        "born_at": rfc3339(m.born_ms),
        "stored_at": rfc3339(m.stored_ms),
        "queue_id": m.queue_id,
        "queue_offset": m.queue_offset,
        "status": "stored",
        "stages": [
            {"stage": "produce", "at": rfc3339(m.born_ms), "node": m.producer, "outcome": "ok", "detail": "born at the producer"},
            {"stage": "store", "at": rfc3339(m.stored_ms), "node": node, "outcome": "ok",
             "detail": format!("log position {}, queue {} offset {}", id.pos, m.queue_id, m.queue_offset)},
        ],
        "loss_points": loss_points,
    })
}
