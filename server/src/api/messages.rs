//! Producing and reading messages over HTTP.
//!
//! `POST /api/v1/topics/{topic}/messages` is a sync send: the answer comes
//! after the broker's result (in sync flush mode, after the fsync).
//! `GET /api/v1/messages/{id}` reads the message back from the commit log.
//! `GET /api/v1/messages?key=K` finds messages by key through the key index.
//! The full per-stage trace joins these answers when the tracer lands; until
//! then the stages are the ones the stored record itself proves.

use std::collections::BTreeMap;

use axum::extract::{Path, State};

use super::query::ApiQuery as Query;
use axum::Json;
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::error::ApiError;
use super::json::ApiJson;
use super::AppState;
use crate::broker::{MessageId, Outgoing};
use crate::model::{LossKind, Stage, Status};
use crate::storage::{Flush, StoredMessage};
use crate::time::rfc3339;
use crate::trace::{search, timeline};

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
    /// How the trace labels the send (`sync`, `async`, `oneway`; default
    /// `sync`). Over HTTP the answer always waits for the broker's result.
    pub mode: Option<String>,
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
    let send_mode = match req.mode.as_deref() {
        None | Some("sync") => "sync",
        Some("async") => "async",
        Some("oneway") => "oneway",
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "mode must be sync, async or oneway, not {other:?}"
            )))
        }
    };
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
            send_mode: Some(send_mode),
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
    let stored = state.broker.get(&parsed)?;
    let (timeline, trace_error) = match state.tracer.as_ref().map(|t| t.pool()) {
        Some(Ok(pool)) => match timeline::load(pool, state.broker.store(), &id).await {
            Ok(tl) => (tl, None),
            Err(e) => (None, Some(e.to_string())),
        },
        Some(Err(e)) => (None, Some(e.to_string())),
        None => (None, None),
    };
    match (stored, timeline) {
        (Some(m), None) => {
            // In the log, not in the trace: say when the tracer shed events.
            let mut v = message_json(&state, &parsed, &m, None, trace_error);
            if let Some(pool) = state.tracer.as_ref().and_then(|t| t.pool().ok()) {
                if let Ok(gaps) = timeline::gaps(pool, m.born_ms.min(m.stored_ms), m.stored_ms + 60_000).await {
                    v["gaps"] = json!(gaps);
                }
            }
            Ok(Json(v))
        }
        (Some(m), tl) => Ok(Json(message_json(&state, &parsed, &m, tl.as_ref(), trace_error))),
        // Acknowledged once, absent from the log now: the trace knows why.
        (None, Some(tl)) => Ok(Json(lost_json(&tl))),
        (None, None) => match trace_error {
            Some(e) => Err(ApiError::Unavailable(format!(
                "message {id} is not in the log and the trace store failed: {e}"
            ))),
            None => Err(ApiError::NotFound(not_found_why(&state, &parsed, &id).await)),
        },
    }
}

/// Why a message is neither in the log nor in the trace: when it lies in a
/// loss window, the window says what is known about such messages.
async fn not_found_why(state: &AppState, id: &MessageId, text: &str) -> String {
    let plain = format!("no message with id {text} (not in the log, not in the trace)");
    let Some(pool) = state.tracer.as_ref().and_then(|t| t.pool().ok()) else {
        return plain;
    };
    match crate::trace::windows::containing(pool, id.node, id.epoch, id.pos).await {
        Ok(Some(w)) => format!(
            "{plain}; it lies inside a loss window of node {} boot {} (log positions from {}): {} acknowledged \
             messages between {} and {} may be gone unrecorded",
            w.node,
            w.epoch,
            w.from_pos,
            w.max_count
                .map_or_else(|| "an unknown number of".to_string(), |c| format!("up to {c}")),
            w.from_ms.map_or_else(|| "an unknown time".to_string(), rfc3339),
            rfc3339(w.to_ms)
        ),
        _ => plain,
    }
}

#[derive(Debug, Deserialize)]
pub struct SearchQuery {
    pub key: Option<String>,
    pub id: Option<String>,
    pub topic: Option<String>,
    pub tag: Option<String>,
    pub status: Option<String>,
    /// RFC 3339 or epoch milliseconds.
    pub from: Option<String>,
    pub to: Option<String>,
    pub limit: Option<usize>,
    pub cursor: Option<String>,
}

/// Default and largest page of a search (pages are unlimited in number).
const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: usize = 1000;
/// Longest a status-filtered page keeps looking before it ends early.
const STATUS_SCAN_BUDGET: std::time::Duration = std::time::Duration::from_secs(2);

pub async fn search(State(state): State<AppState>, Query(q): Query<SearchQuery>) -> Result<Json<Value>, ApiError> {
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "limit must be 1 to {MAX_LIMIT}, not {limit}"
        )));
    }
    // Say what is wrong with the question rather than "no message matches".
    if let Some(id) = q.id.as_deref() {
        id.parse::<MessageId>()
            .map_err(|e| ApiError::BadRequest(format!("id: {e}")))?;
    }
    if let (Some(from), Some(to)) = (q.from.as_deref(), q.to.as_deref()) {
        if super::dlq::parse_time(from)? > super::dlq::parse_time(to)? {
            return Err(ApiError::BadRequest(format!("from ({from}) is after to ({to})")));
        }
    }
    let pool = match state.tracer.as_ref().map(|t| t.pool()) {
        None => return search_log(&state, &q, limit),
        Some(Ok(pool)) => pool,
        // Tracing on, its store not reachable (yet): the log answers a key
        // or id search from its own indexes, one page without the lost
        // messages, and says so; the rest needs the trace.
        Some(Err(e)) if q.cursor.is_none() && (q.key.is_some() || q.id.is_some()) => {
            let Json(mut v) = search_log(&state, &q, limit)?;
            v["complete"] = json!(false);
            v["trace_error"] = json!(e.to_string());
            return Ok(Json(v));
        }
        Some(Err(e)) => return Err(ApiError::Unavailable(format!("this search needs the trace store: {e}"))),
    };
    let cursor = match q.cursor.as_deref() {
        Some(c) => Some(search::parse_cursor(c).ok_or_else(|| ApiError::BadRequest(format!("bad cursor {c:?}")))?),
        None => None,
    };
    // Message statuses a search can filter on: every status (SPEC section 6).
    let want = match q.status.as_deref() {
        None => None,
        Some(st) => Some(st.parse::<Status>().map_err(|_| {
            let all: Vec<&str> = Status::ALL.iter().map(|s| s.as_str()).collect();
            ApiError::BadRequest(format!("unknown status {st:?} (one of {})", all.join(", ")))
        })?),
    };
    let mut query = search::Query {
        key: q.key.clone(),
        id: q.id.clone(),
        topic: q.topic.clone(),
        tag: q.tag.clone(),
        from_ms: q.from.as_deref().map(super::dlq::parse_time).transpose()?,
        to_ms: q.to.as_deref().map(super::dlq::parse_time).transpose()?,
        limit,
        cursor,
    };
    let store = state.broker.store();
    let started = std::time::Instant::now();
    let mut out = Vec::with_capacity(limit);
    let mut next_cursor = None;
    // Stored time of the oldest hit looked at: with a cursor, how far back
    // (newest first) this page scanned.
    let mut scanned_ms = None;
    // A status filter is applied to hits, so a page may take several
    // rounds; past STATUS_SCAN_BUDGET the page ends early with a cursor.
    'pages: loop {
        let (hits, more) = search::run(pool, store, &query)
            .await
            .map_err(|e| ApiError::Unavailable(format!("trace store query failed: {e}")))?;
        let last = hits.last().map(search::cursor_of);
        let n = hits.len();
        for (i, h) in hits.into_iter().enumerate() {
            scanned_ms = Some(h.stored_ms);
            // Messages of a deleted topic are not found.
            if h.id
                .parse::<MessageId>()
                .is_ok_and(|id| !state.broker.visible_id(&h.topic, &id))
            {
                continue;
            }
            // No timeline yet: stored, but the trace has not written it
            // ("found, no trace yet").
            let (status, traced) = match timeline::load(pool, store, &h.id).await {
                // A committed transaction's half: its copy is the hit.
                Ok(Some(tl)) if tl.committed_as.is_some() => continue,
                Ok(Some(tl)) => (tl.status, true),
                Ok(None) => (Status::Stored, false),
                Err(e) => return Err(ApiError::Unavailable(format!("trace store query failed: {e}"))),
            };
            if want.is_some_and(|w| w != status) {
                continue;
            }
            let cursor = search::cursor_of(&h);
            out.push(json!({
                "id": h.id, "topic": h.topic, "key": h.key, "tags": h.tags,
                "born_at": rfc3339(h.born_ms), "stored_at": rfc3339(h.stored_ms), "status": status, "traced": traced,
            }));
            if out.len() == limit {
                if more || i + 1 < n {
                    next_cursor = Some(cursor);
                }
                break 'pages;
            }
        }
        let Some(last) = last.filter(|_| more) else { break };
        if started.elapsed() > STATUS_SCAN_BUDGET {
            next_cursor = Some(last);
            break;
        }
        query.cursor = search::parse_cursor(&last);
    }
    // Incomplete: more may match before `scanned_down_to` (ask again with
    // the cursor); complete: everything in the range was looked at.
    let complete = next_cursor.is_none();
    Ok(Json(json!({
        "messages": out,
        "next_cursor": next_cursor,
        "complete": complete,
        "scanned_down_to": if complete { None } else { scanned_ms.map(rfc3339) },
    })))
}

/// Search without a trace store: key and id through the log's own indexes.
fn search_log(state: &AppState, q: &SearchQuery, limit: usize) -> Result<Json<Value>, ApiError> {
    let mut found = Vec::new();
    if let Some(id) = &q.id {
        let parsed: MessageId = id
            .parse()
            .map_err(|e: crate::broker::BadId| ApiError::BadRequest(e.to_string()))?;
        if let Some(m) = state.broker.get(&parsed)? {
            found.push(message_json(state, &parsed, &m, None, None));
        }
    } else if let Some(key) = &q.key {
        for (id, m) in state
            .broker
            .find_by_key(key, limit)
            .into_iter()
            .filter(|(_, m)| !m.topic.starts_with('%'))
            .filter(|(_, m)| state.broker.visible(&m.topic, m.queue_id, m.queue_offset))
        {
            found.push(message_json(state, &id, &m, None, None));
        }
    } else {
        return Err(ApiError::BadRequest(
            "tracing is off: only key= or id= searches are possible".into(),
        ));
    }
    Ok(Json(
        json!({ "messages": found, "next_cursor": null, "complete": true, "scanned_down_to": null }),
    ))
}

fn message_json(
    state: &AppState,
    id: &MessageId,
    m: &StoredMessage,
    tl: Option<&timeline::Timeline>,
    trace_error: Option<String>,
) -> Value {
    let store = state.broker.store();
    let node = m.node.to_string();
    let (body, body_base64) = match std::str::from_utf8(&m.body) {
        Ok(s) => (Value::String(s.to_string()), Value::Null),
        Err(_) => (
            Value::Null,
            Value::String(base64::engine::general_purpose::STANDARD.encode(&m.body)),
        ),
    };
    let mut v = json!({
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
    });
    match tl {
        Some(tl) => {
            v["status"] = json!(tl.status);
            v["stages"] = json!(tl.stages);
            v["loss_points"] = json!(tl.loss_points);
            v["groups"] = json!(tl.groups);
            v["gaps"] = json!(tl.gaps);
            v["send_mode"] = json!(tl.send_mode);
            v["flush_mode"] = json!(tl.flush_mode);
            v["trace_id"] = json!(tl.trace_id);
            v["committed_as"] = json!(tl.committed_as);
            v["traced"] = json!(true);
        }
        None => {
            // No trace (yet, or tracing off): what the record itself proves.
            let flushed = store.stats().flushed > id.pos;
            let mut loss_points = Vec::new();
            if let Flush::Async { .. } = store.flush_mode() {
                if !flushed {
                    loss_points.push(json!({
                        "stage": Stage::Flush, "kind": LossKind::Risk,
                        "reason": "acknowledged before fsync (async flush): a power loss now would lose it",
                    }));
                }
            }
            v["status"] = json!(Status::Stored);
            v["stages"] = json!([
                {"stage": Stage::Produce, "at": rfc3339(m.born_ms), "node": m.producer, "outcome": "ok", "detail": "born at the producer"},
                {"stage": Stage::Store, "at": rfc3339(m.stored_ms), "node": node, "outcome": "ok",
                 "detail": format!("log position {}, queue {} offset {}", id.pos, m.queue_id, m.queue_offset)},
            ]);
            v["loss_points"] = json!(loss_points);
            v["groups"] = json!([]);
            v["traced"] = json!(false);
        }
    }
    v["groups"] = delivery_states(state, m, v["groups"].take());
    if let Some(e) = trace_error {
        v["trace_error"] = json!(e);
    }
    v
}

/// Adds each consumer group's delivery state for this message — the
/// question "did group G get it?" answered from the live offsets and
/// members as well as the trace: `consumed` (handled, or the group's
/// committed offset is past it), `retrying`, `dead`, `not_consumed_yet`
/// (members are online and it is ahead of them or in their hands) or
/// `consumer_offline` (no member is connected to pick it up). Groups that
/// subscribe to the topic but never touched the message are listed too.
fn delivery_states(state: &AppState, m: &StoredMessage, traced: Value) -> Value {
    let mut list: Vec<Value> = traced.as_array().cloned().unwrap_or_default();
    let views = state.broker.groups().views();
    for view in &views {
        let committed = view
            .offsets
            .iter()
            .find(|(t, q, _)| *t == m.topic && *q == m.queue_id)
            .map(|(_, _, o)| *o);
        let relevant = view.topic.as_deref() == Some(m.topic.as_str()) || committed.is_some();
        if relevant && !list.iter().any(|g| g["group"] == view.group.as_str()) {
            list.push(json!({"group": view.group, "status": Status::Stored, "attempts": 0}));
        }
    }
    for g in &mut list {
        let name = g["group"].as_str().unwrap_or_default().to_string();
        let view = views.iter().find(|v| v.group == name);
        let online = view.is_some_and(|v| !v.members.is_empty());
        let committed_past = view.is_some_and(|v| {
            v.offsets
                .iter()
                .any(|(t, q, o)| *t == m.topic && *q == m.queue_id && *o > m.queue_offset)
        });
        let status = g["status"].as_str().and_then(|s| s.parse::<Status>().ok());
        let delivery = match status {
            Some(Status::Consumed) => "consumed",
            Some(Status::Dead) => "dead",
            Some(Status::Retrying) if online => "retrying",
            _ if committed_past => "consumed",
            _ if online => "not_consumed_yet",
            _ => "consumer_offline",
        };
        g["delivery"] = json!(delivery);
        g["online"] = json!(online);
    }
    Value::Array(list)
}

/// A message the trace knows but the log no longer has.
fn lost_json(tl: &timeline::Timeline) -> Value {
    json!({
        "id": tl.id, "topic": tl.topic, "key": tl.key, "tags": tl.tags, "body": null,
        "status": tl.status, "stages": tl.stages, "loss_points": tl.loss_points, "groups": tl.groups,
        "gaps": tl.gaps, "send_mode": tl.send_mode, "flush_mode": tl.flush_mode, "traced": true,
        "trace_id": tl.trace_id,
        "in_log": false,
    })
}
