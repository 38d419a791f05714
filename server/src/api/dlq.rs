//! Dead letters over HTTP: list, replay one, replay many.
//!
//! `GET /api/v1/dlq?group=G` → `{"messages": [...]}`;
//! `POST /api/v1/dlq/{id}/replay[?force=true]` → `{"id", "replay_of", ...}`;
//! `POST /api/v1/dlq/{id}/discard` `{"reason"}` → the discard;
//! `POST /api/v1/dlq/replay?group=G[&key=K&from=&to=&dry_run=true&rate=N]`
//! replays every dead (not yet replayed, not quarantined) letter matching
//! the filter, at most `rate` per second. Who replayed is taken from the
//! `X-Waybill-User` header (default `anonymous`) and recorded.

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::ApiError;
use super::AppState;
use crate::broker::dlq::ReplayFilter;

#[derive(Debug, Deserialize)]
pub struct GroupQuery {
    pub group: Option<String>,
}

fn group_of(q: Option<String>) -> Result<String, ApiError> {
    q.filter(|g| !g.is_empty())
        .ok_or_else(|| ApiError::BadRequest("the group query parameter is required".into()))
}

pub fn who(headers: &HeaderMap) -> String {
    headers
        .get("x-waybill-user")
        .and_then(|v| v.to_str().ok())
        .filter(|s| !s.is_empty())
        .unwrap_or("anonymous")
        .chars()
        .take(128)
        .collect()
}

pub async fn list(State(state): State<AppState>, Query(q): Query<GroupQuery>) -> Result<Json<Value>, ApiError> {
    let group = group_of(q.group)?;
    let letters = state.broker.dead_letters(&group)?;
    let origins: Vec<String> = letters.iter().map(|d| d.origin_id.clone()).collect();
    let firsts = first_failures(&state, &group, &origins).await;
    let mut messages = json!(letters);
    if let Some(list) = messages.as_array_mut() {
        for (m, first) in list.iter_mut().zip(firsts) {
            m["first_failure_at"] = json!(first.map(crate::time::rfc3339));
        }
    }
    Ok(Json(
        json!({ "group": group, "messages": messages, "reasons": reasons(&letters) }),
    ))
}

/// Dead letters still `dead`, counted per reason (without the SDK's
/// "(after N ms)" timing, which would make every reason unique), most
/// frequent first.
fn reasons(letters: &[crate::broker::dlq::DeadLetter]) -> Value {
    let mut counts: std::collections::BTreeMap<&str, u64> = std::collections::BTreeMap::new();
    for d in letters.iter().filter(|d| d.state == "dead") {
        *counts.entry(without_timing(&d.reason)).or_default() += 1;
    }
    let mut v: Vec<(&str, u64)> = counts.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    json!(v
        .into_iter()
        .map(|(reason, letters)| json!({"reason": reason, "letters": letters}))
        .collect::<Vec<_>>())
}

fn without_timing(reason: &str) -> &str {
    match reason.rfind(" (after ") {
        Some(i) if reason.ends_with(" ms)") => &reason[..i],
        _ => reason,
    }
}

#[derive(Debug, Deserialize)]
pub struct ReplayOne {
    #[serde(default)]
    pub force: bool,
}

pub async fn replay_one(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<ReplayOne>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let r = state.broker.replay(&id, &who(&headers), q.force).await?;
    Ok(Json(json!({
        "id": r.new_id,
        "replay_of": r.dlq_id,
        "group": r.group,
        "by": r.by,
        "at": crate::time::rfc3339(r.at_ms),
        "forced": r.forced,
    })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscardBody {
    pub reason: String,
}

/// `POST /api/v1/dlq/{id}/discard` body `{"reason"}`: the letter stays as
/// evidence, is never replayed, and its timeline says who and why.
pub async fn discard(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    super::json::ApiJson(body): super::json::ApiJson<DiscardBody>,
) -> Result<Json<Value>, ApiError> {
    let d = state.broker.discard(&id, &who(&headers), &body.reason).await?;
    Ok(Json(json!({
        "id": d.dlq_id,
        "group": d.group,
        "by": d.by,
        "reason": d.reason,
        "at": crate::time::rfc3339(d.at_ms),
    })))
}

#[derive(Debug, Deserialize)]
pub struct ReplayMany {
    pub group: Option<String>,
    pub key: Option<String>,
    /// RFC 3339 or milliseconds since the epoch.
    pub from: Option<String>,
    pub to: Option<String>,
    #[serde(default)]
    pub dry_run: bool,
    /// Replays per second (default 100).
    pub rate: Option<u32>,
}

/// Parses a time bound given as RFC 3339 or epoch milliseconds.
pub fn parse_time(s: &str) -> Result<i64, ApiError> {
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(ms);
    }
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.timestamp_millis())
        .map_err(|e| ApiError::BadRequest(format!("bad time {s:?}: {e}")))
}

/// Default bulk replay rate: gentle on a recovering consumer.
const DEFAULT_RATE: u32 = 100;

pub async fn replay_many(
    State(state): State<AppState>,
    Query(q): Query<ReplayMany>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let group = group_of(q.group)?;
    let filter = ReplayFilter {
        key: q.key,
        from_ms: q.from.as_deref().map(parse_time).transpose()?,
        to_ms: q.to.as_deref().map(parse_time).transpose()?,
    };
    let (chosen, done) = state
        .broker
        .replay_all(
            &group,
            &filter,
            &who(&headers),
            q.dry_run,
            Some(q.rate.unwrap_or(DEFAULT_RATE)),
        )
        .await?;
    let replayed: Vec<Value> = done
        .iter()
        .map(|r| json!({"id": r.new_id, "replay_of": r.dlq_id}))
        .collect();
    Ok(Json(json!({
        "group": group,
        "dry_run": q.dry_run,
        "matched": chosen.len(),
        "would_replay": if q.dry_run { json!(chosen) } else { Value::Null },
        "replayed": replayed,
    })))
}

/// Dead letters (newest) whose first failure time is looked up: one indexed
/// query each, and the dashboard lists a group on every live update.
const FIRST_FAILURE_LOOKUPS: usize = 200;

/// When each dead letter's message first failed in its group (the first
/// retry or DLQ event in the trace); `None` without a trace store and for
/// letters older than the newest [`FIRST_FAILURE_LOOKUPS`].
async fn first_failures(state: &AppState, group: &str, origins: &[String]) -> Vec<Option<i64>> {
    let mut out = vec![None; origins.len()];
    let Some(pool) = state.tracer.as_ref().and_then(|t| t.pool().ok()) else {
        return out;
    };
    let skip = origins.len().saturating_sub(FIRST_FAILURE_LOOKUPS);
    for (slot, origin) in out.iter_mut().zip(origins).skip(skip) {
        let first = sqlx::query(
            "SELECT MIN(at) AS first FROM trace_events WHERE message_id = $1 AND grp = $2 AND stage IN ('retry', 'dlq')",
        )
        .bind(origin.as_str())
        .bind(group)
        .fetch_optional(pool)
        .await
        .ok()
        .flatten()
        .and_then(|r| sqlx::Row::try_get::<Option<i64>, _>(&r, "first").ok().flatten());
        *slot = first;
    }
    out
}
