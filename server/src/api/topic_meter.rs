//! A topic's produce and consume rates for the topics API, from counters
//! the broker already keeps: messages stored by produce requests
//! (`Broker::produced`) and the sum of the groups' committed offsets on
//! the topic (what `/metrics` calls consumed).
//!
//! A rate is the change of a counter between two looks at least
//! [`MIN_SPAN`] apart, divided by the time between them; the first look
//! at a topic answers 0. This file is the only place that computes them,
//! so a history-based meter can replace it without touching the callers.
//!
//! Invariants: at most [`MAX_TOPICS`] samples are kept (all are dropped
//! when more are needed); a counter that goes back (an offset reset)
//! counts as no progress.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::AppState;

/// Shortest time between two samples of a topic: looks closer together
/// answer the last rate.
const MIN_SPAN: Duration = Duration::from_secs(1);
/// Most topics sampled at once.
const MAX_TOPICS: usize = 10_000;

struct Sample {
    at: Instant,
    produced: u64,
    consumed: u64,
    rates: (f64, f64),
}

/// The samples by topic. std Mutex: a short map update per call, never
/// held across an await.
fn samples() -> &'static Mutex<HashMap<String, Sample>> {
    static SAMPLES: OnceLock<Mutex<HashMap<String, Sample>>> = OnceLock::new();
    SAMPLES.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Counters of `topic` now: (produced, consumed).
fn counters(state: &AppState, topic: &str) -> (u64, u64) {
    let broker = &state.broker;
    let produced = broker
        .produced()
        .into_iter()
        .filter(|((t, _), _)| t == topic)
        .map(|(_, n)| n)
        .sum();
    let consumed = broker
        .groups()
        .views()
        .iter()
        .flat_map(|g| g.offsets.iter())
        .filter(|(t, _, _)| t == topic)
        .map(|(_, _, o)| *o)
        .sum();
    (produced, consumed)
}

/// `(produce_per_sec, consume_per_sec)` of `topic`.
pub fn rates(state: &AppState, topic: &str) -> (f64, f64) {
    let (produced, consumed) = counters(state, topic);
    let now = Instant::now();
    let mut all = samples().lock().unwrap_or_else(|p| p.into_inner());
    if let Some(s) = all.get_mut(topic) {
        let span = now.duration_since(s.at);
        if span >= MIN_SPAN {
            let secs = span.as_secs_f64();
            s.rates = (
                produced.saturating_sub(s.produced) as f64 / secs,
                consumed.saturating_sub(s.consumed) as f64 / secs,
            );
            s.at = now;
            s.produced = produced;
            s.consumed = consumed;
        }
        return s.rates;
    }
    if all.len() >= MAX_TOPICS {
        all.clear();
    }
    all.insert(
        topic.to_string(),
        Sample {
            at: now,
            produced,
            consumed,
            rates: (0.0, 0.0),
        },
    );
    (0.0, 0.0)
}
