//! `/consumers`: consumer groups, their members, per-queue committed
//! offsets and lag, retry-level occupancy; a panel of duplicates and
//! in-doubt messages (deliveries vs successful consumes per key); and a
//! panel on transactional (half) messages: where to see them, and that the
//! outbox relay is not built yet.

use leptos::prelude::*;
use leptos_router::components::A;
use serde_json::Value;

use crate::api::{self, arr, n, s, Load};

#[component]
pub fn Consumers() -> impl IntoView {
    let groups = RwSignal::new(Load::Loading);
    let dups = RwSignal::new(Load::Loading);
    api::load_live(|| Some("/api/v1/consumers".into()), groups);
    api::load_live(|| Some("/api/v1/consumers/duplicates?limit=50".into()), dups);
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
        <section aria-labelledby="dups-h">
            <h2 id="dups-h">"Duplicates and in-doubt"</h2>
            <p class="sub">"Messages delivered more than once to a group (retries, rebalances, replays): without an idempotent handler each extra delivery may repeat its effect."</p>
            {api::show(dups, |v| {
                let rows = arr(&v, "messages").to_vec();
                if rows.is_empty() {
                    return view! { <p class="empty">"No message was delivered more than once."</p> }.into_any();
                }
                view! {
                    <div class="scroll">
                    <table>
                        <thead><tr><th scope="col">"group"</th><th scope="col">"key"</th><th scope="col">"message"</th>
                            <th scope="col">"deliveries"</th><th scope="col">"successful consumes"</th><th scope="col">"duplicates"</th><th scope="col">"status"</th></tr></thead>
                        <tbody>{rows.into_iter().map(|m| {
                            let id = s(&m, "id").to_string();
                            view! {
                                <tr>
                                    <td>{s(&m, "group").to_string()}</td>
                                    <td>{s(&m, "key").to_string()}</td>
                                    <td class="id"><A href=format!("/messages/{id}")>{id.clone()}</A></td>
                                    <td class="num">{n(&m, "deliveries")}</td>
                                    <td class="num">{n(&m, "consumed")}</td>
                                    <td class="num">{n(&m, "duplicates")}</td>
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
               "This page does not list the undecided ones yet, and the outbox relay (a local message table) is not built yet."</p>
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
            <p>"Lag " <b>{n(g, "lag")}</b> " · retrying " <b>{n(g, "retrying")}</b> " · dead letters " <A href=format!("/dlq?group={}", api::enc(&name))><b>{dead}</b></A></p>
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
