//! `/`: this node and its cluster, its user messages stored, charts of the
//! last minutes (rates, retry and DLQ inflow, fsync, unflushed bytes), what
//! its durability settings mean for
//! loss (the seed article's flush × replication table, this node's row
//! highlighted), live rates, lag, retries, dead letters, recent losses, loss
//! windows (acknowledged messages that may be gone unrecorded), the tracer's
//! state when it is not ok, and firing alerts.

use leptos::prelude::*;
use leptos_router::components::A;
use serde_json::Value;

use crate::api::{self, arr, n, s, Load};
use crate::live::use_live;

/// flush, replication, what a process crash / power loss / primary loss
/// does to acknowledged messages (RocketMQ's SYNC_FLUSH/ASYNC_FLUSH ×
/// SYNC_MASTER/ASYNC_MASTER).
const MODES: &[(&str, &str, &str)] = &[
    ("sync", "sync", "No acknowledged message is lost by a crash, a power loss or the loss of the primary's disk: the ack waits for the fsync and for the replica. Slowest."),
    ("async", "sync", "A power loss on the primary can drop its un-fsynced tail, but the replica already has every acknowledged message. Lost only if both machines lose power together."),
    ("sync", "async", "The primary's disk holds every acknowledged message; if the primary machine is lost for good, what the replica had not yet copied is lost."),
    ("async", "async", "Fastest. A power loss (up to one flush interval) or the loss of the primary (the replication lag) can lose the latest acknowledged messages."),
    ("sync", "none", "Single copy: survives crashes and power loss, not the loss of this disk or machine."),
    ("async", "none", "Single copy: a power loss drops what was written since the last fsync (up to one flush interval); the loss of the disk loses everything."),
];

#[component]
pub fn Overview() -> impl IntoView {
    let live = use_live();
    let cluster = RwSignal::new(Load::Loading);
    let node = RwSignal::new(Load::Loading);
    let consumers = RwSignal::new(Load::Loading);
    let losses = RwSignal::new(Load::Loading);
    api::load_live(|| Some("/api/v1/cluster".into()), cluster);
    api::load_live(|| Some("/api/v1/node".into()), node);
    api::load_live(|| Some("/api/v1/consumers".into()), consumers);
    api::load_live(|| Some("/api/v1/losses?limit=10".into()), losses);

    // flush and replication: the cluster answer when there is one, else this node's.
    let modes = move || {
        let from = |l: Load| match l {
            Load::Ready(v) => Some((s(&v, "flush").to_string(), s(&v, "replication").to_string())),
            _ => None,
        };
        from(cluster.get())
            .filter(|(f, _)| !f.is_empty())
            .or_else(|| from(node.get()))
            .map(|(f, r)| (f, if r.is_empty() { "none".to_string() } else { r }))
    };

    view! {
        <h1>"Overview"</h1>
        <section class="cards" aria-label="Live numbers">
            <div class="card">
                <h2>"Produce"</h2>
                <p class="big">{move || format!("{:.1}/s", live.rates.get().0)}</p>
                <p class="sub">{move || live.stats.get().map(|st| format!("{} sent to user topics since start", n(&st, "messages_produced"))).unwrap_or_default()}</p>
            </div>
            <div class="card">
                <h2>"Consume"</h2>
                <p class="big">{move || format!("{:.1}/s", live.rates.get().1)}</p>
                <p class="sub">"committed offsets per second"</p>
            </div>
            <div class="card">
                <h2>"Consumer lag"</h2>
                <p class="big">{move || match consumers.get() { Load::Ready(v) => total(&v, "lag").to_string(), _ => "–".into() }}</p>
                <p class="sub">"messages not yet committed"</p>
            </div>
            <div class="card">
                <h2>"Retrying"</h2>
                <p class="big">{move || match consumers.get() { Load::Ready(v) => total(&v, "retrying").to_string(), _ => "–".into() }}</p>
                <p class="sub">"waiting in retry levels"</p>
            </div>
            <div class="card">
                <h2>"Dead letters"</h2>
                <p class="big">{move || match consumers.get() { Load::Ready(v) => total(&v, "dead_letters").to_string(), _ => "–".into() }}</p>
                <p class="sub"><A href="/dlq">"not replayed"</A></p>
            </div>
            <div class="card" data-card="stored">
                <h2>"Stored"</h2>
                <p class="big">{move || live.stats.get().and_then(|st| st.get("user_messages_stored").and_then(Value::as_u64)).map(|v| v.to_string()).unwrap_or_else(|| "–".into())}</p>
                <p class="sub">"user messages (not retries, dead letters, replays)"</p>
            </div>
            <div class="card">
                <h2>"Flushed"</h2>
                <p class="big">{move || live.stats.get().map(|st| { let un = n(&st, "log_end").saturating_sub(n(&st, "flushed")); if un == 0 { "all".to_string() } else { format!("{un} B behind") } }).unwrap_or_else(|| "–".into())}</p>
                <p class="sub">"log bytes not yet fsynced"</p>
            </div>
        </section>

        <section aria-labelledby="charts-h">
            <h2 id="charts-h">"Last ten minutes"</h2>
            <crate::chart::OverviewCharts/>
        </section>

        <section aria-labelledby="alerts-h">
            <h2 id="alerts-h">"Alerts"</h2>
            {move || {
                let alerts = live.stats.get().map(|st| arr(&st, "alerts").to_vec()).unwrap_or_default();
                if alerts.is_empty() {
                    view! { <p class="empty">"No alert is firing."</p> }.into_any()
                } else {
                    view! {
                        <ul class="alerts">
                            {alerts.into_iter().map(|a| view! {
                                <li><span class="st st-bad">{s(&a, "alert").to_string()}</span> " " {s(&a, "summary").to_string()}
                                " " <span class="sub">{format!("since {}", api::time_ms(n(&a, "since_ms") as i64))}</span></li>
                            }).collect_view()}
                        </ul>
                    }.into_any()
                }
            }}
        </section>

        <section aria-labelledby="members-h">
            <h2 id="members-h">"Cluster members"</h2>
            <crate::pages::cluster::Members/>
        </section>

        <section aria-labelledby="modes-h">
            <h2 id="modes-h">"What an acknowledgement survives here"</h2>
            <p>{move || match modes() {
                Some((f, r)) => format!("This node runs flush = {f}, replication = {r}. Its row is highlighted."),
                None => "Loading this node's settings…".into(),
            }}</p>
            <div class="scroll">
            <table class="modes">
                <thead><tr><th scope="col">"flush"</th><th scope="col">"replication"</th><th scope="col">"what can be lost"</th></tr></thead>
                <tbody>
                    {MODES.iter().map(|(f, r, what)| {
                        let here = move || modes().is_some_and(|(mf, mr)| mf == *f && mr == *r);
                        view! {
                            <tr class:here=here>
                                <td>{*f}</td><td>{*r}</td>
                                <td>{*what} {move || here().then(|| view! { <strong class="here-tag">" ← this node"</strong> })}</td>
                            </tr>
                        }
                    }).collect_view()}
                </tbody>
            </table>
            </div>
        </section>

        <section aria-labelledby="losses-h">
            <h2 id="losses-h">"Recent losses"</h2>
            {api::show(losses, |v| {
                let rows = arr(&v, "losses").to_vec();
                let windows = arr(&v, "windows").to_vec();
                let tracer = v.get("tracer").cloned().unwrap_or(Value::Null);
                let state = s(&tracer, "state").to_string();
                let note = (!state.is_empty() && state != "ok").then(|| {
                    let err = s(&tracer, "error").to_string();
                    view! { <p class="tracer-state"><span class="st st-bad">{format!("tracer {state}")}</span> " " {err}</p> }
                });
                if rows.is_empty() && windows.is_empty() {
                    let empty = if state == "connecting" || state == "down" {
                        "The trace store is not reachable yet: losses are listed once the tracer connects and audits."
                    } else {
                        "No acknowledged message has been found missing by the audit."
                    };
                    return view! { {note} <p class="empty">{empty}</p> }.into_any();
                }
                view! {
                    {note}
                    <ul class="windows">
                        {windows.into_iter().map(|w| view! { <li>{window_line(&w)} " " <span class="sub">{s(&w, "reason").to_string()}</span></li> }).collect_view()}
                    </ul>
                    <ul>
                        {rows.into_iter().map(|l| {
                            let id = s(&l, "id").to_string();
                            view! { <li><A href=format!("/messages/{id}")>{id.clone()}</A> " lost at " <b>{s(&l, "stage").to_string()}</b> ": " {s(&l, "detail").to_string()}</li> }
                        }).collect_view()}
                    </ul>
                }.into_any()
            })}
        </section>

        <section aria-labelledby="recent-h">
            <h2 id="recent-h">"Latest events"</h2>
            {move || {
                let r = live.recent.get();
                if r.is_empty() {
                    return view! { <p class="empty">"Nothing traced since this page opened. Produce a message to see it here."</p> }.into_any();
                }
                view! {
                    <ul class="events">
                        {r.into_iter().map(|e| {
                            let id = s(&e, "id").to_string();
                            let what = if s(&e, "type") == "stage" { s(&e, "stage").to_string() } else { s(&e, "type").to_string() };
                            view! {
                                <li>
                                    <span class="sub">{api::time_ms(e.get("at_ms").and_then(Value::as_i64).unwrap_or(0))}</span> " "
                                    <span class=api::status_class(s(&e, "outcome"))>{what}</span> " "
                                    {(!id.is_empty()).then(|| view! { <A href=format!("/messages/{id}")>{id.clone()}</A> })}
                                    " " {s(&e, "group").to_string()} " " {s(&e, "topic").to_string()}
                                </li>
                            }
                        }).collect_view()}
                    </ul>
                }.into_any()
            }}
        </section>
    }
}

/// "N messages acknowledged between T1 and T2 may be gone unrecorded": a
/// loss window of `/api/v1/losses` in one line.
fn window_line(w: &Value) -> String {
    let count = match w.get("max_count").and_then(Value::as_u64) {
        Some(c) => format!("Up to {c} messages"),
        None => "An unknown number of messages".to_string(),
    };
    let from = match s(w, "from") {
        "" => "an unknown time".to_string(),
        t => api::time(t),
    };
    let to_pos = w
        .get("to_pos")
        .and_then(Value::as_u64)
        .map(|p| format!(" to {p}"))
        .unwrap_or_default();
    format!(
        "{count} acknowledged between {from} and {} may be gone unrecorded (node {} boot {}, log positions from {}{to_pos}).",
        api::time(s(w, "to")),
        n(w, "node"),
        n(w, "epoch"),
        n(w, "from_pos"),
    )
}

/// Sum of a per-group number over all groups.
fn total(v: &Value, field: &str) -> u64 {
    arr(v, "groups").iter().map(|g| n(g, field)).sum()
}

/// The member list of `/api/v1/cluster`.
pub fn members(v: &Value) -> impl IntoView {
    let nodes = arr(v, "nodes").to_vec();
    if nodes.is_empty() {
        return view! { <p class="empty">"No cluster members reported."</p> }.into_any();
    }
    view! {
        <div class="scroll">
        <table>
            <thead><tr>
                <th scope="col">"node"</th><th scope="col">"role"</th><th scope="col">"alive"</th>
                <th scope="col">"broker"</th><th scope="col">"http"</th>
                <th scope="col">"log end"</th><th scope="col">"flushed"</th><th scope="col">"replicated"</th><th scope="col">"replication lag"</th>
            </tr></thead>
            <tbody>
                {nodes.into_iter().map(|m| {
                    let alive = m.get("alive").and_then(Value::as_bool).unwrap_or(false);
                    let id = m.get("id").map(|i| i.to_string()).unwrap_or_default();
                    // The server's lag (primary's end − this node's confirmed) when it gives one.
                    let lag = m.get("lag").and_then(Value::as_u64).or_else(|| {
                        m.get("replicated").and_then(Value::as_u64).map(|r| n(&m, "log_end").saturating_sub(r))
                    });
                    let me = m.get("self").and_then(Value::as_bool).unwrap_or(false);
                    view! {
                        <tr class:here=me>
                            <td>{id}{me.then_some(" (this node)")}</td>
                            <td>{s(&m, "role").to_string()}</td>
                            <td><span class=if alive { "st st-ok" } else { "st st-bad" }>{if alive { "alive" } else { "down" }}</span></td>
                            <td>{s(&m, "broker_addr").to_string()}</td>
                            <td>{s(&m, "http_addr").to_string()}</td>
                            <td class="num">{n(&m, "log_end")}</td>
                            <td class="num">{n(&m, "flushed")}</td>
                            <td class="num">{m.get("replicated").and_then(Value::as_u64).map(|r| r.to_string()).unwrap_or_else(|| "–".into())}</td>
                            <td class="num">{lag.map(|l| format!("{l} B")).unwrap_or_else(|| "–".into())}</td>
                        </tr>
                    }
                }).collect_view()}
            </tbody>
        </table>
        </div>
    }
    .into_any()
}
