//! `GET /api/v1/audit`: the operator actions recorded in `%AUDIT%` (topic
//! create and delete, offset resets, skips, group deletes, dead-letter
//! replays and discards, redrive jobs), each with the caller's name (with
//! tokens: the token's name), newest first,
//! optionally for one target. Read from the log on each request: actions
//! are rare, and the log is the record.

use axum::extract::State;

use super::query::ApiQuery as Query;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::ApiError;
use super::AppState;
use crate::broker::audit::MAX_LIST;

#[derive(Debug, Deserialize)]
pub struct AuditQuery {
    /// Most entries (default 100, at most 1000).
    pub limit: Option<usize>,
    /// Only actions on this topic or group.
    pub target: Option<String>,
}

pub async fn list(State(state): State<AppState>, Query(q): Query<AuditQuery>) -> Result<Json<Value>, ApiError> {
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > MAX_LIST {
        return Err(ApiError::BadRequest(format!("limit must be 1 to {MAX_LIST}")));
    }
    let target = q.target.as_deref().filter(|t| !t.is_empty());
    let entries = state.broker.audit_list(limit, target)?;
    Ok(Json(json!({ "entries": entries })))
}
