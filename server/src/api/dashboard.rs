//! Read-only endpoints the dashboard needs beyond the core API.
//!
//! - `GET /api/v1/node`: this node's settings that decide what can be lost
//!   (flush, replication, retry policy, tracing) and its log positions.
//! - `GET /api/v1/losses?limit=N`: the latest acknowledged messages the
//!   audit found missing, newest first, and the loss windows: spans where
//!   acknowledged messages may be gone with no trace row to name them
//!   (`trace/windows.rs`), with the tracer's state.
//! - `GET /api/v1/consumers/duplicates?limit=N`: messages delivered more
//!   than once to a group (retries, replays, redelivered pull ranges), with
//!   deliveries vs successful consumes and whether the group handled them
//!   through an inbox; and per group the duplicates its inbox suppressed,
//!   counted in the trace store (`trace_commits.duplicate_count`: every
//!   commit any node traced, across restarts), where `/api/v1/consumers`'
//!   `duplicates_suppressed` is this node's count since it started.
//!
//! Nothing here writes; everything is derived from the store, the group
//! table and the trace store on each call.

use axum::extract::State;

use super::query::ApiQuery as Query;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::ApiError;
use super::AppState;
use crate::storage::Flush;
use crate::trace::db::{int, opt_str, text};
use crate::trace::timeline;

#[derive(Debug, Deserialize)]
pub struct LimitQuery {
    pub limit: Option<i64>,
}

/// Largest page of the lists here (they feed one dashboard panel each).
const MAX_LIMIT: i64 = 200;

/// The page size asked for (or `default`); outside 1 to [`MAX_LIMIT`] is a 400.
fn limit(q: &LimitQuery, default: i64) -> Result<i64, ApiError> {
    match q.limit {
        None => Ok(default),
        Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        Some(n) => Err(ApiError::BadRequest(format!("limit must be 1 to {MAX_LIMIT}, not {n}"))),
    }
}

pub async fn node(State(state): State<AppState>) -> Json<Value> {
    let b = &state.broker;
    let store = b.store();
    let (flush, interval) = match store.flush_mode() {
        Flush::Sync => ("sync", None),
        Flush::Async { interval } => ("async", Some(interval.as_millis() as u64)),
    };
    let retry = &b.options().retry;
    let stats = store.stats();
    Json(json!({
        "node_id": store.node_id(),
        "log_end": stats.log_end,
        "flushed": stats.flushed,
        "user_messages_stored": super::events::user_messages_stored(b),
        "failed": store.failure().is_some(),
        "flush": flush,
        "flush_interval_ms": interval,
        "replication": state.cluster().map_or("none", |c| c.mode.name()),
        "tracing": state.tracer.is_some(),
        "tracer": state.tracer.as_ref().map(|t| t.health()),
        "max_reconsume_times": retry.max_reconsume_times,
        "retry_delays": retry.delays.iter().map(|d| super::consumers::human(*d)).collect::<Vec<_>>().join(" "),
        "queues_per_topic": b.options().queues_per_topic,
    }))
}

pub async fn losses(State(state): State<AppState>, Query(q): Query<LimitQuery>) -> Result<Json<Value>, ApiError> {
    let limit = limit(&q, 20)?;
    let Some(tracer) = state.tracer.as_ref() else {
        return Ok(Json(json!({ "losses": [], "windows": [], "tracing": false })));
    };
    let health = tracer.health();
    // Not connected yet: nothing to list, and the answer says why.
    let Ok(pool) = tracer.pool() else {
        return Ok(Json(
            json!({ "losses": [], "windows": [], "tracing": true, "tracer": health }),
        ));
    };
    let fail = |e: &dyn std::fmt::Display| ApiError::Unavailable(format!("trace store query failed: {e}"));
    let rows = sqlx::query(
        "SELECT message_id, stage, at, detail, rec_topic AS topic, msg_key FROM trace_events \
         WHERE outcome = 'lost' ORDER BY at DESC LIMIT $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await
    .map_err(|e| fail(&e))?;
    let out: Vec<Value> = rows
        .iter()
        .map(|r| {
            json!({
                "id": text(r, "message_id"), "stage": text(r, "stage"),
                "at": crate::time::rfc3339(int(r, "at")), "detail": text(r, "detail"),
                "topic": opt_str(r, "topic"), "key": opt_str(r, "msg_key"),
            })
        })
        .collect();
    let windows: Vec<Value> = crate::trace::windows::list(pool, limit)
        .await
        .map_err(|e| fail(&e))?
        .iter()
        .map(window_json)
        .collect();
    Ok(Json(
        json!({ "losses": out, "windows": windows, "tracing": true, "tracer": health }),
    ))
}

/// A loss window as the API shows it (times RFC 3339; null: unknown).
pub fn window_json(w: &crate::trace::windows::Window) -> Value {
    json!({
        "from": w.from_ms.map(crate::time::rfc3339), "to": crate::time::rfc3339(w.to_ms),
        "from_pos": w.from_pos, "to_pos": w.to_pos, "max_count": w.max_count,
        "node": w.node, "epoch": w.epoch, "kind": w.kind, "reason": w.reason,
        "found_at": crate::time::rfc3339(w.found_ms),
    })
}

pub async fn duplicates(State(state): State<AppState>, Query(q): Query<LimitQuery>) -> Result<Json<Value>, ApiError> {
    let limit = limit(&q, 50)?;
    let Some(tracer) = state.tracer.as_ref() else {
        return Ok(Json(json!({ "messages": [], "groups": [], "tracing": false })));
    };
    let fail = |e: &dyn std::fmt::Display| ApiError::Unavailable(format!("trace store query failed: {e}"));
    let Ok(pool) = tracer.pool() else {
        return Ok(Json(
            json!({ "messages": [], "groups": [], "tracing": true, "tracer": tracer.health() }),
        ));
    };
    // Through the partial index on commits that suppressed something.
    let suppressed: Vec<Value> = sqlx::query(
        "SELECT grp, CAST(SUM(duplicate_count) AS BIGINT) AS n FROM trace_commits \
         WHERE duplicate_count IS NOT NULL GROUP BY grp ORDER BY grp",
    )
    .fetch_all(pool)
    .await
    .map_err(|e| fail(&e))?
    .iter()
    .map(|r| json!({ "group": text(r, "grp"), "suppressed": int(r, "n") }))
    .collect();
    // Candidates: messages with own group events (retries, redeliveries,
    // replays), most recent first.
    let rows = sqlx::query(
        "SELECT message_id, MAX(seq) AS last FROM trace_events WHERE grp IS NOT NULL \
         GROUP BY message_id ORDER BY last DESC LIMIT $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await
    .map_err(|e| fail(&e))?;
    let mut out = Vec::new();
    for r in &rows {
        let id = text(r, "message_id");
        let Some(tl) = timeline::load(pool, state.broker.store(), &id)
            .await
            .map_err(|e| fail(&e))?
        else {
            continue;
        };
        for g in tl.groups.iter().filter(|g| g.attempts > 1) {
            let consumed = u32::from(g.status == crate::model::Status::Consumed);
            out.push(json!({
                "id": tl.id, "key": tl.key, "topic": tl.topic, "group": g.group, "status": g.status,
                "deliveries": g.attempts, "consumed": consumed,
                "duplicates": g.attempts.saturating_sub(1), "idempotent": g.dedupe_window_ms.is_some(),
            }));
        }
    }
    Ok(Json(json!({ "messages": out, "groups": suppressed, "tracing": true })))
}
