//! The live feed: one `EventSource` on `/api/v1/events` for the whole app.
//!
//! `stats` events (every second) update [`Live::stats`] and the produce and
//! consume rates; `trace` events mark the data dirty, and the next `stats`
//! tick bumps [`Live::changed`] once — pages reload on that, so a burst of a
//! thousand trace events costs one reload per second, not a thousand. The
//! browser reconnects a dropped feed by itself; [`Live::connected`] shows it.

use leptos::prelude::*;
use serde_json::Value;
use wasm_bindgen::closure::Closure;
use wasm_bindgen::JsCast;
use web_sys::{EventSource, MessageEvent};

use crate::api::{self, arr, n, s};

/// Shared live state (all signals: `Copy`, reachable through context).
#[derive(Clone, Copy)]
pub struct Live {
    /// The last `stats` event.
    pub stats: RwSignal<Option<Value>>,
    /// Bumped at most once a second when something was traced.
    pub changed: RwSignal<u64>,
    /// Produce and consume rates (messages per second) over the last tick.
    pub rates: RwSignal<(f64, f64)>,
    pub connected: RwSignal<bool>,
    /// The latest trace events, newest first (at most [`RECENT`]).
    pub recent: RwSignal<Vec<Value>>,
    dirty: RwSignal<bool>,
}

/// How many trace events the overview keeps.
const RECENT: usize = 20;

pub fn use_live() -> Live {
    use_context::<Live>().unwrap_or_else(Live::offline)
}

/// Messages consumed so far: the sum of committed offsets on user topics.
fn committed(stats: &Value) -> u64 {
    arr(stats, "groups")
        .iter()
        .flat_map(|g| arr(g, "offsets"))
        .filter_map(|o| o.as_array())
        .filter(|o| o.first().and_then(Value::as_str).is_some_and(|t| !t.starts_with('%')))
        .filter_map(|o| o.get(2).and_then(Value::as_u64))
        .sum()
}

impl Live {
    fn offline() -> Live {
        Live {
            stats: RwSignal::new(None),
            changed: RwSignal::new(0),
            rates: RwSignal::new((0.0, 0.0)),
            connected: RwSignal::new(false),
            recent: RwSignal::new(Vec::new()),
            dirty: RwSignal::new(false),
        }
    }

    /// Opens the feed; the connection lives as long as the page.
    pub fn connect() -> Live {
        let live = Live::offline();
        // EventSource cannot send headers: the token rides in the query
        // (the node accepts it there for this one route).
        let url = match crate::api::token() {
            Some(t) => format!(
                "/api/v1/events?access_token={}",
                String::from(js_sys::encode_uri_component(&t))
            ),
            None => "/api/v1/events".to_string(),
        };
        let Ok(es) = EventSource::new(&url) else {
            return live;
        };
        let on_stats = Closure::<dyn FnMut(MessageEvent)>::new(move |ev: MessageEvent| {
            let Some(v) = ev
                .data()
                .as_string()
                .and_then(|t| serde_json::from_str::<Value>(&t).ok())
            else {
                return;
            };
            if let Some(prev) = live.stats.get_untracked() {
                let dt = (n(&v, "at_ms").saturating_sub(n(&prev, "at_ms"))) as f64 / 1000.0;
                if dt > 0.0 {
                    // Sends to user topics, not every record the log took
                    // (retries, dead letters, offset commits are records too).
                    let produced = n(&v, "messages_produced").saturating_sub(n(&prev, "messages_produced"));
                    let consumed = committed(&v).saturating_sub(committed(&prev));
                    live.rates.set((produced as f64 / dt, consumed as f64 / dt));
                }
            }
            live.stats.set(Some(v));
            live.connected.set(true);
            if live.dirty.get_untracked() {
                live.dirty.set(false);
                live.changed.update(|c| *c += 1);
            }
        });
        let on_trace = Closure::<dyn FnMut(MessageEvent)>::new(move |ev: MessageEvent| {
            live.dirty.set(true);
            if let Some(v) = ev
                .data()
                .as_string()
                .and_then(|t| serde_json::from_str::<Value>(&t).ok())
            {
                live.recent.update(|r| {
                    r.insert(0, v);
                    r.truncate(RECENT);
                });
            }
        });
        // A dropped feed may have missed events, and every page may show an
        // error from while the node was away: the first tick after the
        // reconnect reloads them all.
        let on_error = Closure::<dyn FnMut(web_sys::Event)>::new(move |_| {
            live.connected.set(false);
            live.dirty.set(true);
        });
        let _ = es.add_event_listener_with_callback("stats", on_stats.as_ref().unchecked_ref());
        let _ = es.add_event_listener_with_callback("trace", on_trace.as_ref().unchecked_ref());
        // A listener that fell behind missed events: reload to be safe.
        let _ = es.add_event_listener_with_callback("lagged", on_trace.as_ref().unchecked_ref());
        es.set_onerror(Some(on_error.as_ref().unchecked_ref()));
        // A browser keeps about six HTTP/1.1 connections per host, and a
        // feed is one for as long as it is open. A page left for another
        // (or kept in the back/forward cache) closes its feed, so pages
        // loaded one after another never starve each other's API calls;
        // a page shown again from that cache reloads for a fresh feed.
        if let Some(w) = web_sys::window() {
            let feed = es.clone();
            let on_hide = Closure::<dyn FnMut(web_sys::Event)>::new(move |_| feed.close());
            let feed = es.clone();
            let on_show = Closure::<dyn FnMut(web_sys::Event)>::new(move |_| {
                if feed.ready_state() == EventSource::CLOSED {
                    if let Some(w) = web_sys::window() {
                        let _ = w.location().reload();
                    }
                }
            });
            let _ = w.add_event_listener_with_callback("pagehide", on_hide.as_ref().unchecked_ref());
            let _ = w.add_event_listener_with_callback("pageshow", on_show.as_ref().unchecked_ref());
            on_hide.forget();
            on_show.forget();
        }
        // The feed and its handlers live for the whole page.
        on_stats.forget();
        on_trace.forget();
        on_error.forget();
        std::mem::forget(es);
        live
    }
}

/// While the feed is down (after it had been up once), a banner on every
/// page says the node is not answering and what the page does about it;
/// it goes away by itself with the first tick after the reconnect.
#[component]
pub fn NodeDown() -> impl IntoView {
    let live = use_live();
    let seen = RwSignal::new(false);
    Effect::new(move |_| {
        if live.connected.get() {
            seen.set(true);
        }
    });
    view! {
        {move || {
            (seen.get() && !live.connected.get())
                .then(|| {
                    view! {
                        <div class="banner node-down" role="alert">
                            <strong>"The node is not answering. "</strong>
                            "What this page shows may be out of date: it reloads by itself when the node is back. \
                             Check that `waybill serve` is running."
                        </div>
                    }
                })
        }}
    }
}

/// "live" / "reconnecting" in the header.
#[component]
pub fn Indicator() -> impl IntoView {
    let live = use_live();
    view! {
        <span class="live" class:on=move || live.connected.get() role="status" aria-live="polite">
            {move || if live.connected.get() { "● live" } else { "○ not connected" }}
        </span>
    }
}

/// Firing alerts, on every page: from the live feed, or one fetch before it
/// connects.
#[component]
pub fn AlertBanner() -> impl IntoView {
    let live = use_live();
    let fetched = RwSignal::new(Vec::<Value>::new());
    leptos::task::spawn_local(async move {
        if let Ok(v) = api::get("/api/v1/alerts").await {
            fetched.set(arr(&v, "alerts").to_vec());
        }
    });
    let alerts = move || match live.stats.get() {
        Some(st) => arr(&st, "alerts").to_vec(),
        None => fetched.get(),
    };
    view! {
        {move || {
            let a = alerts();
            (!a.is_empty())
                .then(|| {
                    view! {
                        <div class="banner" role="alert">
                            <strong>{format!("{} alert(s) firing: ", a.len())}</strong>
                            {a.iter().map(|x| s(x, "summary").to_string()).collect::<Vec<_>>().join(" · ")}
                        </div>
                    }
                })
        }}
    }
}
