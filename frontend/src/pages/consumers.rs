//! `/consumers`: consumer groups, their members, per-queue committed
//! offsets and lag, retry-level occupancy, and whether each handles
//! idempotently (its inbox's backend and window, a warning when the window
//! is shorter than the retry schedule, the duplicates it suppressed); a
//! panel of duplicates and in-doubt messages (deliveries vs successful
//! consumes per key, per group the duplicates inboxes suppressed); and a
//! panel on transactional (half) messages and the outbox relay. Each
//! group has a chart of its lag over the last minutes.
//!
//! Each group shows its live members, and has an "Operations" panel
//! ([`super::group_ops`]: reset offsets, skip, delete), rendered once per
//! group name so the live reloads of the tables never reset it.
//!
//! Everything shown comes from `/api/v1/consumers` and
//! `/api/v1/consumers/duplicates`; a missing field reads as absent.

use leptos::prelude::*;
use leptos_router::components::A;
use serde_json::Value;

use super::group_ops::{members_table, GroupOps};
use crate::api::{self, arr, n, s, Load};

#[component]
pub fn Consumers() -> impl IntoView {
    let groups = RwSignal::new(Load::Loading);
    let dups = RwSignal::new(Load::Loading);
    api::load_live(|| Some("/api/v1/consumers".into()), groups);
    api::load_live(|| Some("/api/v1/consumers/duplicates?limit=50".into()), dups);
    // Group names only: the operations panels are keyed by them.
    let names = Memo::new(move |_| match groups.get() {
        Load::Ready(v) => arr(&v, "groups")
            .iter()
            .map(|g| s(g, "group").to_string())
            .collect::<Vec<_>>(),
        _ => Vec::new(),
    });
    view! {
        <h1>"Consumers"</h1>
        {api::show(groups, |v| {
            let gs = arr(&v, "groups").to_vec();
            if gs.is_empty() {
                return view! { <p class="empty">"No consumer group has connected yet. Start one: "
                    <code>"waybill consume --topic orders --group billing"</code></p> }.into_any();
            }
            gs.into_iter().map(|g| group(&g)).collect_view().into_any()
        })}
        <For each=move || names.get() key=|name: &String| name.clone() let:name>
            <GroupOps name=name/>
        </For>
        <section aria-labelledby="dups-h">
            <h2 id="dups-h">"Duplicates and in-doubt"</h2>
            <p class="sub">"Messages delivered more than once to a group (retries, rebalances, replays): without an idempotent handler each extra delivery may repeat its effect."</p>
            {api::show(dups, |v| {
                let rows = arr(&v, "messages").to_vec();
                let suppressed = suppressed_view(arr(&v, "groups"));
                if rows.is_empty() {
                    return view! { {suppressed} <p class="empty">"No message was delivered more than once."</p> }.into_any();
                }
                view! {
                    {suppressed}
                    <div class="scroll">
                    <table>
                        <thead><tr><th scope="col">"group"</th><th scope="col">"key"</th><th scope="col">"message"</th>
                            <th scope="col">"deliveries"</th><th scope="col">"successful consumes"</th><th scope="col">"duplicates"</th><th scope="col">"inbox"</th><th scope="col">"status"</th></tr></thead>
                        <tbody>{rows.into_iter().map(|m| {
                            let id = s(&m, "id").to_string();
                            view! {
                                <tr>
                                    <td>{s(&m, "group").to_string()}</td>
                                    <td class="key" title=s(&m, "key").to_string()>{s(&m, "key").to_string()}</td>
                                    <td class="id"><A href=format!("/messages/{id}")>{id.clone()}</A></td>
                                    <td class="num">{n(&m, "deliveries")}</td>
                                    <td class="num">{n(&m, "consumed")}</td>
                                    <td class="num">{n(&m, "duplicates")}</td>
                                    <td>{if flag(&m, "idempotent") { "deduplicated" } else { "none" }}</td>
                                    <td><span class=api::status_class(s(&m, "status"))>{s(&m, "status").to_string()}</span></td>
                                </tr>
                            }
                        }).collect_view()}</tbody>
                    </table>
                    </div>
                }.into_any()
            })}
        </section>
        <section aria-labelledby="tx-h">
            <h2 id="tx-h">"Half messages and outbox"</h2>
            <p>"Transactional (half) messages are on: a half message waits for its producer's commit or rollback, and the broker checks back with the producer group until it decides. "
               "Each one's timeline shows the prepare, every check-back and the outcome ("
               <code>"waybill produce --transaction commit|rollback|unknown"</code>" to try it). "
               "This page does not list the undecided ones yet. "
               "A message an outbox relay (a local message table) sent names its outbox row and relay attempt on its timeline's produce stage."</p>
        </section>
    }
}

fn group(g: &Value) -> impl IntoView {
    let name = s(g, "group").to_string();
    let members = arr(g, "members")
        .iter()
        .filter_map(Value::as_str)
        .map(str::to_string)
        .collect::<Vec<_>>();
    let queues = arr(g, "queues").to_vec();
    let dead = n(g, "dead_letters");
    let (topic_q, retry_q): (Vec<Value>, Vec<Value>) = queues.into_iter().partition(|q| s(q, "kind") != "retry");
    view! {
        <section class="group" aria-label=format!("group {name}")>
            <h2>{format!("Group {name}")} <span class="sub">{format!(" on {}", s(g, "topic"))}</span></h2>
            <p>
                {format!("{} member(s): ", members.len())}
                {if members.is_empty() { "none connected".to_string() } else { members.join(", ") }}
                {g.get("auto_commit").and_then(Value::as_bool).unwrap_or(false).then(|| view! { " " <span class="st st-warn">"auto-commit: offsets move before handling (loss point)"</span> })}
            </p>
            {members_table(g)}
            {inbox_view(g)}
            <p>"Lag " <b>{n(g, "lag")}</b> " · retrying " <b>{n(g, "retrying")}</b> " · dead letters " <A href=format!("/dlq?group={}", api::enc(&name))><b>{dead}</b></A></p>
            <crate::chart::GroupLag group=name.clone()/>
            <div class="two">
                <div class="scroll">
                <table>
                    <caption>"Queues"</caption>
                    <thead><tr><th scope="col">"topic"</th><th scope="col">"queue"</th><th scope="col">"committed"</th><th scope="col">"end"</th><th scope="col">"lag"</th></tr></thead>
                    <tbody>{topic_q.into_iter().map(|q| view! {
                        <tr><td>{s(&q, "topic").to_string()}</td><td class="num">{n(&q, "queue_id")}</td><td class="num">{n(&q, "committed")}</td>
                        <td class="num">{n(&q, "end")}</td><td class="num" class:bad={n(&q, "lag") > 0}>{n(&q, "lag")}</td></tr>
                    }).collect_view()}</tbody>
                </table>
                </div>
                <div class="scroll">
                <table>
                    <caption>"Retry levels"</caption>
                    <thead><tr><th scope="col">"level"</th><th scope="col">"delay"</th><th scope="col">"waiting"</th></tr></thead>
                    <tbody>{retry_q.into_iter().map(|q| view! {
                        <tr><td class="num">{if s(&q, "delay") == "replays" { "–".to_string() } else { (n(&q, "queue_id") + 1).to_string() }}</td><td>{s(&q, "delay").to_string()}</td><td class="num" class:warn={n(&q, "lag") > 0}>{n(&q, "lag")}</td></tr>
                    }).collect_view()}</tbody>
                </table>
                </div>
            </div>
        </section>
    }
}

fn flag(v: &Value, k: &str) -> bool {
    v.get(k).and_then(Value::as_bool).unwrap_or(false)
}

/// A window in ms for people (`0` = forever): `1h`, `4h 46m`, `90s`.
fn window(ms: u64) -> String {
    const S: u64 = 1_000;
    const M: u64 = 60 * S;
    const H: u64 = 60 * M;
    let two = |a: u64, big: &str, b: u64, small: &str| {
        if b == 0 {
            format!("{a}{big}")
        } else {
            format!("{a}{big} {b}{small}")
        }
    };
    match ms {
        0 => "forever".to_string(),
        ms if ms < S => format!("{ms}ms"),
        ms if ms < M => format!("{}s", ms / S),
        ms if ms < H => two(ms / M, "m", ms % M / S, "s"),
        ms => two(ms / H, "h", ms % H / M, "m"),
    }
}

/// How the group handles duplicates: its inbox, or the risk without one.
fn inbox_view(g: &Value) -> AnyView {
    let dedupe = g.get("dedupe").filter(|d| d.is_object());
    let Some(d) = dedupe.filter(|_| flag(g, "idempotent")) else {
        return view! {
            <p class="inbox"><span class="st st-warn">"not idempotent"</span>
                " no inbox declared: a redelivered message runs the handler again (" <code>"waybill consume --dedupe sqlite://inbox.db"</code> ")"</p>
        }
        .into_any();
    };
    let warning = g
        .get("dedupe_warning")
        .and_then(Value::as_str)
        .map(|w| view! { <p class="inbox-warning"><span class="st st-warn">"inbox window too short"</span> " " {w.to_string()}</p> });
    view! {
        <p class="inbox">
            <span class="st st-ok">"idempotent"</span>
            {format!(" inbox on {}, keys kept {}", s(d, "backend"), window(n(d, "window_ms")))}
            " · duplicates suppressed " <b>{n(g, "duplicates_suppressed")}</b> " (since this node started)"
        </p>
        {warning}
    }
    .into_any()
}

/// Per group, the duplicates its inbox suppressed (from the trace store).
fn suppressed_view(groups: &[Value]) -> AnyView {
    if groups.is_empty() {
        return view! { <p class="sub">"No inbox has suppressed a duplicate yet."</p> }.into_any();
    }
    let rows = groups.to_vec();
    view! {
        <table class="suppressed">
            <caption>"Suppressed by inboxes (handled once, acknowledged again without the handler)"</caption>
            <thead><tr><th scope="col">"group"</th><th scope="col">"suppressed"</th></tr></thead>
            <tbody>{rows.into_iter().map(|r| view! {
                <tr><td>{s(&r, "group").to_string()}</td><td class="num">{n(&r, "suppressed")}</td></tr>
            }).collect_view()}</tbody>
        </table>
    }
    .into_any()
}
