//! Consumer-group operations over HTTP:
//! - `POST /api/v1/consumers/{group}/offsets` body `{"topic"?, "to":
//!   "time"|"end"|"offset", "at"? (a time: RFC 3339 or ms; an offset), "time_ms"?, "offset"?,
//!   "queue"?, "force"?, "dry_run"?}` → `{"group","topic","to","dry_run",
//!   "queues":[{"queue","from","to"}]}`;
//! - `POST /api/v1/consumers/{group}/skip` body `{"topic"?, "queue",
//!   "offset", "force"?}` → `{"group","topic","queue","from","to"}`;
//! - `DELETE /api/v1/consumers/{group}[?force=true]` → `{"group",
//!   "deleted", "offsets"}`.
//!
//! `topic` defaults to the one the group's members consume. Unknown group
//! or topic → 404, bad input → 400, live members without `force` → 409
//! naming them (the rules are `broker/offsets.rs`'s). Who asked comes from
//! the request as for every write (`x-waybill-user`) and goes to the audit.

use axum::extract::{Path, State};

use super::query::ApiQuery as Query;
use axum::http::HeaderMap;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::dlq::{parse_time, who};
use super::error::ApiError;
use super::json::ApiJson;
use super::AppState;
use crate::broker::offsets::{Reset, ResetTo};
use crate::broker::Broker;

#[derive(Debug, Deserialize)]
pub struct ResetBody {
    pub topic: Option<String>,
    /// `time`, `end` or `offset`.
    pub to: String,
    /// For `time`: RFC 3339 or epoch milliseconds (string or number).
    pub at: Option<Value>,
    /// For `time`, epoch milliseconds (the same as a numeric `at`).
    pub time_ms: Option<i64>,
    /// For `offset`.
    pub offset: Option<u64>,
    pub queue: Option<u32>,
    #[serde(default)]
    pub force: bool,
    #[serde(default)]
    pub dry_run: bool,
}

#[derive(Debug, Deserialize)]
pub struct SkipBody {
    pub topic: Option<String>,
    pub queue: u32,
    pub offset: u64,
    #[serde(default)]
    pub force: bool,
}

/// The topic asked for, or the one the group consumes.
fn topic_of(broker: &Broker, group: &str, topic: Option<String>) -> Result<String, ApiError> {
    if let Some(t) = topic.filter(|t| !t.is_empty()) {
        return Ok(t);
    }
    if !broker.groups().exists(group) {
        return Err(ApiError::NotFound(format!(
            "no consumer group {group:?} on this broker"
        )));
    }
    broker.groups().topic_of(group).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "group {group:?} has no known topic (no member since this broker started): give \"topic\""
        ))
    })
}

/// The reset target from `to` and its parameter.
fn reset_to(b: &ResetBody) -> Result<ResetTo, ApiError> {
    match b.to.as_str() {
        "end" => Ok(ResetTo::End),
        // SPEC's one parameter is `at`: for an offset target, the offset.
        "offset" => b
            .offset
            .or_else(|| b.at.as_ref().and_then(Value::as_u64))
            .map(ResetTo::Offset)
            .ok_or_else(|| {
                ApiError::BadRequest("\"to\": \"offset\" needs \"offset\" (or \"at\"): a queue offset".into())
            }),
        "time" => {
            let ms = match (&b.at, b.time_ms) {
                (Some(Value::String(s)), _) => parse_time(s)?,
                (Some(Value::Number(n)), _) => n
                    .as_i64()
                    .ok_or_else(|| ApiError::BadRequest(format!("bad time {n}: expected epoch milliseconds")))?,
                (Some(other), _) => {
                    return Err(ApiError::BadRequest(format!(
                        "bad time {other}: expected RFC 3339 or epoch milliseconds"
                    )))
                }
                (None, Some(ms)) => ms,
                (None, None) => {
                    return Err(ApiError::BadRequest(
                        "\"to\": \"time\" needs \"at\" (RFC 3339 or epoch ms) or \"time_ms\"".into(),
                    ))
                }
            };
            Ok(ResetTo::Time(ms))
        }
        other => Err(ApiError::BadRequest(format!(
            "\"to\" must be \"time\", \"end\" or \"offset\", not {other:?}"
        ))),
    }
}

/// `POST /api/v1/consumers/{group}/offsets`.
pub async fn reset(
    State(state): State<AppState>,
    Path(group): Path<String>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<ResetBody>,
) -> Result<Json<Value>, ApiError> {
    let to = reset_to(&body)?;
    let topic = topic_of(&state.broker, &group, body.topic.clone())?;
    let r = Reset {
        group: group.clone(),
        topic: topic.clone(),
        to,
        queue: body.queue,
        force: body.force,
        dry_run: body.dry_run,
    };
    let moves = state.broker.reset_offsets(&who(&headers), &r).await?;
    Ok(Json(json!({
        "group": group, "topic": topic, "to": body.to, "dry_run": body.dry_run, "queues": moves,
    })))
}

/// `POST /api/v1/consumers/{group}/skip`.
pub async fn skip(
    State(state): State<AppState>,
    Path(group): Path<String>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<SkipBody>,
) -> Result<Json<Value>, ApiError> {
    let topic = topic_of(&state.broker, &group, body.topic)?;
    let m = state
        .broker
        .skip_message(&who(&headers), &group, &topic, body.queue, body.offset, body.force)
        .await?;
    Ok(Json(json!({
        "group": group, "topic": topic, "queue": m.queue, "from": m.from, "to": m.to,
    })))
}

#[derive(Debug, Deserialize)]
pub struct DeleteQuery {
    /// Delete even with live members (`true` or `false`; anything else is a 400).
    #[serde(default)]
    pub force: bool,
}

/// `DELETE /api/v1/consumers/{group}[?force=true]`.
pub async fn delete(
    State(state): State<AppState>,
    Path(group): Path<String>,
    headers: HeaderMap,
    Query(q): Query<DeleteQuery>,
) -> Result<Json<Value>, ApiError> {
    let force = q.force;
    let offsets = state.broker.delete_group(&who(&headers), &group, force).await?;
    Ok(Json(json!({ "group": group, "deleted": true, "offsets": offsets })))
}
