//! `GET /api/v1/matrix`: the last reliability-matrix run kept in this
//! node's data dir (`waybill matrix --data-dir DIR` writes
//! `DIR/matrix/last.json`), and `GET /api/v1/matrix/messages/{id}`: the
//! timeline of one message that run lost, as its own node served it before
//! the run's temporary cluster went away (the dashboard's `/matrix` links
//! each lost message there).
//!
//! The file is read on each request (runs are rare, the file small) and
//! never trusted: a file that does not parse is a 500 naming it, not a
//! panic.

use axum::extract::{Path, State};
use axum::Json;
use serde_json::{json, Value};

use super::error::ApiError;
use super::AppState;
use crate::matrix::report;

fn last(state: &AppState) -> Result<report::Report, ApiError> {
    let path = report::last_run_path(state.broker.store().dir());
    match report::load(&path) {
        Ok(Some(r)) => Ok(r),
        Ok(None) => Err(ApiError::NotFound(format!(
            "no matrix run yet: run `waybill matrix --quick --data-dir {}` (or without --quick for every row)",
            state.broker.store().dir().display()
        ))),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot read the stored matrix run");
            Err(ApiError::Internal(format!(
                "the stored matrix run (matrix/last.json in the data dir) cannot be read: {e}"
            )))
        }
    }
}

pub async fn get(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let r = last(&state)?;
    serde_json::to_value(r)
        .map(Json)
        .map_err(|e| ApiError::Internal(format!("cannot encode the matrix run: {e}")))
}

pub async fn message(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let r = last(&state)?;
    for c in &r.rows {
        if let Some(m) = c.lost_messages.iter().find(|m| m.id == id) {
            return Ok(Json(json!({
                "id": m.id,
                "key": m.key,
                "stage": m.stage,
                "found": m.found,
                "run": { "flush": c.flush, "replication": c.replication, "fault": c.fault, "verdict": c.verdict },
                "timeline": m.timeline,
            })));
        }
    }
    Err(ApiError::NotFound(format!("the last matrix run lost no message {id}")))
}
