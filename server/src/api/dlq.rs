//! Dead letters over HTTP: list, replay one, replay many.
//!
//! `GET /api/v1/dlq?group=G` → `{"messages": [...]}`;
//! `POST /api/v1/dlq/{id}/replay[?force=true]` → `{"id", "replay_of", ...}`;
//! `POST /api/v1/dlq/{id}/discard` `{"reason"}` → the discard;
//! `POST /api/v1/dlq/replay?group=G[&key=K&from=&to=&dry_run=true&rate=N]`
//! replays every dead (not yet replayed, not quarantined) letter matching
//! the filter, at most `rate` per second. Who replayed is taken from the
//! `X-Waybill-User` header (default `anonymous`) and recorded.

use axum::extract::{Path, State};

use super::query::ApiQuery as Query;
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

/// `GET /api/v1/dlq`: a page of a group's dead letters.
#[derive(Debug, Deserialize)]
pub struct ListQuery {
    pub group: Option<String>,
    /// Letters per page; all when absent.
    pub limit: Option<usize>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<u64>,
    /// `oldest` (default) or `newest` first.
    pub order: Option<String>,
    /// A word of the key / a substring of the reason / a state.
    pub key: Option<String>,
    pub reason: Option<String>,
    pub state: Option<String>,
}

/// Largest page: every row of a page gets its first failure time.
const MAX_PAGE: usize = FIRST_FAILURE_LOOKUPS;

/// The letters of one page, and the cursor of the next (if any).
fn page(
    letters: Vec<crate::broker::dlq::DeadLetter>,
    q: &ListQuery,
) -> Result<(Vec<crate::broker::dlq::DeadLetter>, Option<u64>), ApiError> {
    let newest = match q.order.as_deref() {
        None | Some("oldest") => false,
        Some("newest") => true,
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "order must be oldest or newest, not {other:?}"
            )))
        }
    };
    if q.limit.is_some_and(|l| l == 0 || l > MAX_PAGE) {
        return Err(ApiError::BadRequest(format!("limit must be 1 to {MAX_PAGE}")));
    }
    let limit = q.limit;
    let key = q.key.as_deref().filter(|k| !k.is_empty());
    let reason = q.reason.as_deref().filter(|r| !r.is_empty());
    let state = q.state.as_deref().filter(|s| !s.is_empty());
    let mut chosen: Vec<_> = letters
        .into_iter()
        .filter(|d| key.is_none_or(|k| d.key.as_ref().is_some_and(|dk| dk.split(' ').any(|w| w == k))))
        .filter(|d| reason.is_none_or(|r| d.reason.contains(r)))
        .filter(|d| state.is_none_or(|s| d.state == s))
        .filter(|d| match q.cursor {
            None => true,
            Some(c) if newest => d.dlq_offset < c,
            Some(c) => d.dlq_offset >= c,
        })
        .collect();
    if newest {
        chosen.reverse();
    }
    let Some(limit) = limit.filter(|l| chosen.len() > *l) else {
        return Ok((chosen, None));
    };
    chosen.truncate(limit);
    let next = chosen
        .last()
        .map(|d| if newest { d.dlq_offset } else { d.dlq_offset + 1 });
    Ok((chosen, next))
}

/// The required `group` query parameter, checked as a group name.
fn group_of(q: Option<String>) -> Result<String, ApiError> {
    let group = q
        .filter(|g| !g.is_empty())
        .ok_or_else(|| ApiError::BadRequest("the group query parameter is required".into()))?;
    crate::broker::topic::validate_group(&group).map_err(|e| ApiError::BadRequest(format!("group: {e}")))?;
    Ok(group)
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

pub async fn list(State(state): State<AppState>, Query(q): Query<ListQuery>) -> Result<Json<Value>, ApiError> {
    let group = group_of(q.group.clone())?;
    let all = state.broker.dead_letters(&group)?;
    let counted = reasons(&all);
    let outcomes = state.broker.replay_outcomes(&group, &all);
    let total = all.len();
    let (letters, next_cursor) = page(all, &q)?;
    let origins: Vec<String> = letters.iter().map(|d| d.origin_id.clone()).collect();
    let firsts = first_failures(&state, &group, &origins).await;
    let mut messages = json!(letters);
    if let Some(list) = messages.as_array_mut() {
        for (m, first) in list.iter_mut().zip(firsts) {
            m["first_failure_at"] = json!(first.map(crate::time::rfc3339));
            if let Some(o) = m["id"].as_str().and_then(|id| outcomes.get(id)) {
                m["after_replay"] = json!(o);
            }
        }
    }
    Ok(Json(json!({
        "group": group, "messages": messages, "reasons": counted, "total": total, "next_cursor": next_cursor,
    })))
}

#[derive(Debug, Deserialize)]
pub struct ExportQuery {
    #[serde(flatten)]
    pub list: ListQuery,
    /// `jsonl` (default) or `csv`.
    pub format: Option<String>,
}

/// `GET /api/v1/dlq/export?group=G[&format=jsonl|csv&key&reason&state&order]`:
/// every matching letter, one JSON object (or CSV row) per line, streamed
/// as it is written out; bodies as text (lossy UTF-8), as in the list.
pub async fn export(
    State(state): State<AppState>,
    Query(q): Query<ExportQuery>,
) -> Result<axum::response::Response, ApiError> {
    use axum::http::header;
    let group = group_of(q.list.group.clone())?;
    let csv = match q.format.as_deref() {
        None | Some("jsonl") => false,
        Some("csv") => true,
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "format must be jsonl or csv, not {other:?}"
            )))
        }
    };
    let list = ListQuery { limit: None, ..q.list };
    let (letters, _) = page(state.broker.dead_letters(&group)?, &list)?;
    let header_row =
        csv.then(|| "id,origin_id,group,topic,key,state,reconsume_times,dead_at,reason,body\n".to_string());
    let rows = letters.into_iter().map(move |d| {
        if csv {
            let cells = [
                d.id.clone(),
                d.origin_id.clone(),
                d.group.clone(),
                d.topic.clone(),
                d.key.clone().unwrap_or_default(),
                d.state.to_string(),
                d.reconsume_times.to_string(),
                crate::time::rfc3339(d.dead_at_ms),
                d.reason.clone(),
                d.body.clone(),
            ];
            let mut line = cells.iter().map(|c| csv_cell(c)).collect::<Vec<_>>().join(",");
            line.push('\n');
            line
        } else {
            let mut line = json!(d).to_string();
            line.push('\n');
            line
        }
    });
    let lines = header_row
        .into_iter()
        .chain(rows)
        .map(|l| Ok::<_, std::io::Error>(axum::body::Bytes::from(l)));
    let body = axum::body::Body::from_stream(futures_util::stream::iter(lines));
    let (kind, ext) = if csv {
        ("text/csv; charset=utf-8", "csv")
    } else {
        ("application/x-ndjson", "jsonl")
    };
    axum::response::Response::builder()
        .header(header::CONTENT_TYPE, kind)
        .header(
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"dlq-{group}.{ext}\""),
        )
        .body(body)
        .map_err(|e| ApiError::Unavailable(format!("cannot build the export: {e}")))
}

/// A CSV cell: quoted when it holds a comma, quote or line break; a cell
/// a spreadsheet would run as a formula gets a leading `'`.
fn csv_cell(v: &str) -> String {
    let v = if v.starts_with(['=', '+', '-', '@']) {
        format!("'{v}")
    } else {
        v.to_string()
    };
    if v.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", v.replace('"', "\"\""))
    } else {
        v
    }
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

/// The optional body of a single replay: `{"edit": {"body", "key",
/// "properties"}}` replays a changed copy (the letter stays as it is).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayBody {
    pub edit: Option<crate::broker::edit::Edit>,
}

pub async fn replay_one(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<ReplayOne>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let edit = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        let b: ReplayBody = serde_json::from_slice(&body)
            .map_err(|e| ApiError::BadRequest(format!("the replay body is not {{\"edit\": {{…}}}}: {e}")))?;
        b.edit
    };
    let r = match &edit {
        Some(e) => state.broker.replay_edited(&id, &who(&headers), q.force, e).await?,
        None => state.broker.replay(&id, &who(&headers), q.force).await?,
    };
    let mut how = String::new();
    if r.forced {
        how.push_str(" (forced)");
    }
    if !r.edited.is_empty() {
        how.push_str(&format!(" (edited: {})", r.edited.join(", ")));
    }
    let detail = format!("dead letter {} replayed as {}{how}", r.dlq_id, r.new_id);
    state.broker.audit(&r.by, "dlq.replay", &r.group, detail).await?;
    Ok(Json(json!({
        "id": r.new_id,
        "replay_of": r.dlq_id,
        "group": r.group,
        "by": r.by,
        "at": crate::time::rfc3339(r.at_ms),
        "forced": r.forced,
        "edited": r.edited,
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
    let detail = format!("dead letter {} discarded: {}", d.dlq_id, d.reason);
    state.broker.audit(&d.by, "dlq.discard", &d.group, detail).await?;
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
    if !q.dry_run {
        let detail = format!("{} of {} matched dead letters replayed", done.len(), chosen.len());
        state.broker.audit(&who(&headers), "dlq.replay", &group, detail).await?;
    }
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
