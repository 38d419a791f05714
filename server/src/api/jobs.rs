//! Redrive jobs over HTTP (see `broker/redrive.rs`):
//!
//! - `POST /api/v1/dlq/jobs` body `{"group", "filter": {"key", "reason",
//!   "from", "to", "ids"}, "rate_per_sec", "dry_run", "edit"}` → the job (201), or
//!   with `dry_run` the letters it would take (`would_replay`); 409 while the group has a
//!   running job; 404 for a group the broker does not know.
//! - `GET /api/v1/dlq/jobs[?group=G]` → `{"jobs": [...]}`, newest first.
//! - `GET /api/v1/dlq/jobs/{job}` → the job with each letter's outcome.
//! - `POST /api/v1/dlq/jobs/{job}/cancel` → the cancelled job.
//!
//! Who started or cancelled a job comes from `X-Waybill-User`.

use axum::extract::{Path, State};

use super::query::ApiQuery as Query;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::dlq::{parse_time, who};
use super::error::ApiError;
use super::json::ApiJson;
use super::AppState;
use crate::broker::redrive::{JobFilter, Started};

/// Default rate: gentle on a recovering consumer.
const DEFAULT_RATE: u32 = 100;
/// Ids one filter may list.
const MAX_IDS: usize = 100_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewJob {
    pub group: String,
    #[serde(default)]
    pub filter: FilterIn,
    pub rate_per_sec: Option<u32>,
    #[serde(default)]
    pub dry_run: bool,
    /// Applied to every replayed copy (body, key, properties).
    pub edit: Option<crate::broker::edit::Edit>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterIn {
    pub key: Option<String>,
    pub reason: Option<String>,
    /// RFC 3339 or epoch milliseconds (a string or a number).
    pub from: Option<Value>,
    pub to: Option<Value>,
    pub ids: Option<Vec<String>>,
}

fn time_of(v: Option<&Value>, what: &str) -> Result<Option<i64>, ApiError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .map(Some)
            .ok_or_else(|| ApiError::BadRequest(format!("filter.{what}: not a whole number of ms"))),
        Some(Value::String(s)) => parse_time(s).map(Some),
        Some(other) => Err(ApiError::BadRequest(format!(
            "filter.{what}: expected RFC 3339 or epoch ms, got {other}"
        ))),
    }
}

impl FilterIn {
    fn into_filter(self) -> Result<JobFilter, ApiError> {
        let from_ms = time_of(self.from.as_ref(), "from")?;
        let to_ms = time_of(self.to.as_ref(), "to")?;
        if let (Some(f), Some(t)) = (from_ms, to_ms) {
            if f > t {
                return Err(ApiError::BadRequest("filter.from is after filter.to".into()));
            }
        }
        if self.ids.as_ref().is_some_and(|i| i.len() > MAX_IDS) {
            return Err(ApiError::BadRequest(format!("filter.ids: at most {MAX_IDS} ids")));
        }
        Ok(JobFilter {
            key: self.key.filter(|k| !k.is_empty()),
            reason: self.reason.filter(|r| !r.is_empty()),
            from_ms,
            to_ms,
            ids: self.ids,
        })
    }
}

pub async fn start(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<NewJob>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let filter = req.filter.into_filter()?;
    let rate = req.rate_per_sec.unwrap_or(DEFAULT_RATE);
    match state
        .broker
        .start_job(&req.group, filter, rate, req.dry_run, &who(&headers), req.edit)
        .await?
    {
        Started::DryRun(letters) => Ok((
            StatusCode::OK,
            // Shaped as the bulk route's dry run answered, for scripts.
            Json(json!({
                "dry_run": true, "group": req.group, "matched": letters.len(),
                "would_replay": letters, "replayed": [],
            })),
        )),
        Started::Job(view) => {
            let detail = format!(
                "redrive job {} started: {} dead letters at {}/s",
                view.job.id, view.matched, view.job.rate_per_sec
            );
            state
                .broker
                .audit(&view.job.by, "dlq.job.start", &view.job.group, detail)
                .await?;
            Ok((StatusCode::CREATED, Json(json!(view))))
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    pub group: Option<String>,
}

pub async fn list(State(state): State<AppState>, Query(q): Query<ListQuery>) -> Result<Json<Value>, ApiError> {
    let group = q.group.filter(|g| !g.is_empty());
    if let Some(g) = &group {
        crate::broker::topic::validate_group(g).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    }
    Ok(Json(json!({ "jobs": state.broker.jobs(group.as_deref())? })))
}

pub async fn get(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!(state.broker.job_view(&id, true)?)))
}

pub async fn cancel(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let view = state.broker.cancel_job(&id, &who(&headers)).await?;
    let detail = format!("redrive job {} cancelled after {} replays", view.job.id, view.replayed);
    state
        .broker
        .audit(&who(&headers), "dlq.job.cancel", &view.job.group, detail)
        .await?;
    Ok(Json(json!(view)))
}
