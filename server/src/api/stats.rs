//! `GET /api/v1/stats/history?from=&to=&step=&topic=&group=&kind=`: the
//! node's per-second stats of the last hour (see `trace::history`).
//!
//! - `from`, `to`: ms since the epoch or RFC 3339; `to` defaults to now,
//!   `from` to the earliest time that still fits [`MAX_POINTS`] steps;
//! - `step`: seconds per point, at least 1 (default 1); counts (`produce`,
//!   `consume`, `retry`, `dlq`) show the per-second average over the step,
//!   `lag`, `fsync_ms` and `unflushed_bytes` its maximum;
//! - `kind`: one kind or a comma-separated list (default: all);
//! - `topic` / `group`: only series about that topic / group.
//!
//! Answer: `{"step_s","from_ms","to_ms","untracked","series":[{"kind",
//! "topic"?,"group"?,"points":[[ms, value],…]}]}`; a point per step that
//! holds at least one sample. Over [`MAX_POINTS`] steps, `from` after
//! `to`, a step below 1 or an unknown kind → 400.

use axum::extract::State;

use super::query::ApiQuery as Query;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::dlq::parse_time;
use super::{ApiError, AppState};
use crate::trace::history::Kind;

/// Points per series at most (one hour at one a second).
pub const MAX_POINTS: i64 = 3_600;

#[derive(Debug, Deserialize)]
pub struct HistoryQuery {
    pub from: Option<String>,
    pub to: Option<String>,
    pub step: Option<String>,
    pub topic: Option<String>,
    pub group: Option<String>,
    pub kind: Option<String>,
}

fn kinds(list: Option<&str>) -> Result<Vec<Kind>, ApiError> {
    let Some(list) = list.filter(|l| !l.is_empty()) else {
        return Ok(Kind::ALL.to_vec());
    };
    list.split(',')
        .map(|k| {
            Kind::parse(k.trim()).ok_or_else(|| {
                let known: Vec<&str> = Kind::ALL.iter().map(|k| k.name()).collect();
                ApiError::BadRequest(format!("unknown kind {k:?}: use one of {}", known.join(", ")))
            })
        })
        .collect()
}

fn step_s(step: Option<&str>) -> Result<i64, ApiError> {
    let Some(step) = step else { return Ok(1) };
    let n = step
        .trim_end_matches('s')
        .parse::<i64>()
        .map_err(|_| ApiError::BadRequest(format!("bad step {step:?}: a whole number of seconds, at least 1")))?;
    if n < 1 {
        return Err(ApiError::BadRequest(format!("step {n} is below 1 second")));
    }
    Ok(n)
}

pub async fn history(State(state): State<AppState>, Query(q): Query<HistoryQuery>) -> Result<Json<Value>, ApiError> {
    let kinds = kinds(q.kind.as_deref())?;
    let step_s = step_s(q.step.as_deref())?;
    let step_ms = step_s.saturating_mul(1000);
    let to_ms = match q.to.as_deref() {
        Some(t) => parse_time(t)?,
        None => crate::time::now_ms(),
    };
    let from_ms = match q.from.as_deref() {
        Some(f) => parse_time(f)?,
        None => to_ms.saturating_sub((MAX_POINTS - 1).saturating_mul(step_ms)),
    };
    if from_ms > to_ms {
        return Err(ApiError::BadRequest(format!("from ({from_ms}) is after to ({to_ms})")));
    }
    let steps = to_ms.div_euclid(step_ms) - from_ms.div_euclid(step_ms) + 1;
    if steps > MAX_POINTS {
        return Err(ApiError::BadRequest(format!(
            "{steps} steps of {step_s} s between from and to: at most {MAX_POINTS}; use a larger step or a shorter range"
        )));
    }
    let series: Vec<Value> = state
        .history
        .series(from_ms, to_ms, step_ms, |k| {
            kinds.contains(&k.kind)
                && q.topic.as_ref().is_none_or(|t| k.topic.as_ref() == Some(t))
                && q.group.as_ref().is_none_or(|g| k.group.as_ref() == Some(g))
        })
        .into_iter()
        .map(|(key, points)| {
            let points: Vec<Value> = points.into_iter().map(|(at, v)| json!([at, v])).collect();
            key.to_json(("points", Value::Array(points)))
        })
        .collect();
    Ok(Json(json!({
        "step_s": step_s,
        "from_ms": from_ms,
        "to_ms": to_ms,
        "untracked": state.history.untracked(),
        "series": series,
    })))
}
