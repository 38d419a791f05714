//! `GET /api/v1/events`: server-sent events for the live dashboard.
//!
//! Two event types: `trace` (a summary of each traced stage, as it happens)
//! and `stats` (every second: log end, flushed position, messages stored,
//! tracer queue depth and shed count, consumer groups, user messages
//! stored, and `history`: the newest second of `/api/v1/stats/history`
//! so charts follow without polling). A listener that
//! falls behind skips events (it is told how many) rather than slowing the
//! broker. At shutdown every stream ends at once (it watches the node's
//! stop, `AppState::stop`), so an open dashboard tab never holds the
//! shutdown up.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::stream::{self, Stream};
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;

use super::AppState;

/// How often a `stats` event is sent.
const STATS_EVERY: Duration = Duration::from_secs(1);

pub async fn events(State(state): State<AppState>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let rx = state.live.subscribe();
    let tick = tokio::time::interval(STATS_EVERY);
    let stream = stream::unfold((rx, tick, state), |(mut rx, mut tick, state)| async move {
        let event = tokio::select! {
            biased;
            _ = state.stop.wait() => return None,
            r = rx.recv() => match r {
                Ok(v) => Event::default().event("trace").data(v.to_string()),
                Err(RecvError::Lagged(n)) => Event::default().event("lagged").data(json!({"skipped": n}).to_string()),
                Err(RecvError::Closed) => return None,
            },
            _ = tick.tick() => Event::default().event("stats").data(stats(&state).to_string()),
        };
        Some((Ok(event), (rx, tick, state)))
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

fn stats(state: &AppState) -> serde_json::Value {
    let store = state.broker.store();
    let s = store.stats();
    let tracer = state.tracer.as_ref();
    json!({
        "at_ms": crate::time::now_ms(),
        "log_end": s.log_end,
        "flushed": s.flushed,
        "messages_stored": s.appended_msgs,
        // What producers sent to user topics: the log's record count also
        // holds retries, dead letters, replays and offset commits.
        "messages_produced": state
            .broker
            .produced()
            .into_iter()
            .filter(|((topic, _), _)| !topic.starts_with('%'))
            .map(|(_, n)| n)
            .sum::<u64>(),
        "user_messages_stored": user_messages_stored(&state.broker),
        "fsyncs": s.fsyncs,
        "trace_queue_depth": tracer.map(|t| t.queue_depth()),
        "trace_shed": tracer.map(|t| t.shed_count()),
        "trace_state": tracer.map(|t| t.state().name()),
        "groups": super::consumers::groups_json(&state.broker, false),
        "alerts": state.alerts.as_ref().map(|a| a.firing()).unwrap_or_default(),
        "history": state.history.latest(),
    })
}

/// Messages stored in user topics (not `%`-prefixed): each user message
/// once, whatever retries, dead letters, replays, offset commits and
/// transaction records the log also holds (those live in `%` topics).
pub fn user_messages_stored(broker: &crate::broker::Broker) -> u64 {
    broker
        .store()
        .queues()
        .into_iter()
        .filter(|(t, _, _)| !t.starts_with('%'))
        .map(|(_, _, len)| len)
        .sum()
}
