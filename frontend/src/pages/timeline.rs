//! `/messages/{id}`: the message's path produce → store → flush →
//! replicate → deliver → consume as a horizontal line of steps (time and
//! node on each), the loss points drawn on the step they apply to (risk or
//! actual loss, with the reason), then every attempt, retry level, DLQ move
//! and replay in order, per-group outcomes, and the body and properties.
//! Reloads live as the message moves on.

use leptos::prelude::*;
use leptos_router::components::A;
use leptos_router::hooks::use_params_map;
use serde_json::Value;

use crate::api::{self, arr, n, s, Load};

/// The path every message walks, in order.
const PATH: &[(&str, &str)] = &[
    ("produce", "Produce"),
    ("store", "Store"),
    ("flush", "Flush"),
    ("replicate", "Replicate"),
    ("deliver", "Deliver"),
    ("consume", "Consume"),
];

#[component]
pub fn Timeline() -> impl IntoView {
    let params = use_params_map();
    let id = move || params.with(|p| p.get("id").unwrap_or_default());
    let data = RwSignal::new(Load::Loading);
    api::load_live(move || Some(format!("/api/v1/messages/{}", api::enc(&id()))), data);
    view! {
        <p class="crumbs"><A href="/messages">"Messages"</A> " / " <span class="id">{id}</span></p>
        {move || match data.get() {
            Load::Loading => view! { <p class="loading" role="status">"Loading…"</p> }.into_any(),
            Load::Failed(e) if e.contains("HTTP 404") || e.contains("HTTP 400") => view! {
                <h1>"Message not found"</h1>
                <p class="empty">{e} " — " <A href="/messages">"search for it"</A></p>
            }.into_any(),
            Load::Failed(e) => view! { <p class="error" role="alert">{e}</p> }.into_any(),
            Load::Ready(v) => page(&v).into_any(),
        }}
    }
}

pub fn page(v: &Value) -> impl IntoView {
    let stages = arr(v, "stages").to_vec();
    let losses = arr(v, "loss_points").to_vec();
    let status = s(v, "status").to_string();
    let losses_at = |stage: &str| -> Vec<Value> { losses.iter().filter(|l| s(l, "stage") == stage).cloned().collect() };
    let extra: Vec<Value> = stages
        .iter()
        .filter(|st| !PATH.iter().any(|(p, _)| *p == s(st, "stage")))
        .cloned()
        .collect();
    let path_stages: Vec<&str> = PATH.iter().map(|(p, _)| *p).collect();
    let extra_losses: Vec<Value> = losses
        .iter()
        .filter(|l| !path_stages.contains(&s(l, "stage")))
        .cloned()
        .collect();
    view! {
        <h1>"Message " <span class="id">{s(v, "id").to_string()}</span></h1>
        <p class="facts-line">
            <span class=api::status_class(&status)>{status.clone()}</span>
            " topic " <b>{s(v, "topic").to_string()}</b>
            {(!s(v, "key").is_empty()).then(|| view! { " key " <b>{s(v, "key").to_string()}</b> })}
            {(!s(v, "tags").is_empty()).then(|| view! { " tags " <b>{s(v, "tags").to_string()}</b> })}
            {v.get("queue_id").and_then(Value::as_u64).map(|q| view! {
                " queue " <b>{q}</b> " offset " <b>{v.get("queue_offset").and_then(Value::as_u64).unwrap_or(0)}</b>
            })}
            {(!s(v, "born_at").is_empty()).then(|| view! { " · born " <span class="when">{api::time(s(v, "born_at"))}</span> })}
            {(!s(v, "stored_at").is_empty()).then(|| view! { " · stored " <span class="when">{api::time(s(v, "stored_at"))}</span> })}
            {(!s(v, "send_mode").is_empty()).then(|| format!(" · {} send", s(v, "send_mode")))}
            {(!s(v, "flush_mode").is_empty()).then(|| format!(" · {} flush", s(v, "flush_mode")))}
            {v.get("in_log").and_then(Value::as_bool).is_some_and(|b| !b).then(|| view! { " · " <b class="bad">"no longer in the log"</b> })}
        </p>
        <ol class="path" aria-label="Path of the message">
            {PATH.iter().map(|(key, label)| {
                let mine: Vec<&Value> = stages.iter().filter(|st| s(st, "stage") == *key).collect();
                let marks = losses_at(key);
                let lost = marks.iter().any(|l| s(l, "kind") == "lost");
                let first = mine.first().copied();
                let reached = first.is_some_and(|f| s(f, "outcome") != "lost");
                let class = if lost { "step lost" } else if !marks.is_empty() { "step risk" } else if reached { "step done" } else { "step todo" };
                let note = match (first, *key) {
                    (None, "replicate") => "no replication".to_string(),
                    (None, _) => "not reached".to_string(),
                    (Some(f), _) => s(f, "outcome").to_string(),
                };
                view! {
                    <li class=class data-stage=*key>
                        <span class="dot" aria-hidden="true"></span>
                        <span class="label">{*label}</span>
                        <span class="when">{first.map(|f| api::time(s(f, "at"))).unwrap_or_default()}</span>
                        <span class="node">{first.map(|f| format!("node {}", s(f, "node"))).filter(|x| x != "node ").unwrap_or_default()}</span>
                        <span class="note">{note}{(mine.len() > 1).then(|| format!(" ×{}", mine.len()))}</span>
                        {marks.into_iter().map(|l| loss_mark(&l)).collect_view()}
                    </li>
                }
            }).collect_view()}
            {
                let dead = super::dead_step::dead_groups(v);
                let reason = stages
                    .iter()
                    .rev()
                    .find(|st| s(st, "stage") == "dlq")
                    .map(|st| s(st, "detail").to_string())
                    .unwrap_or_default();
                (!dead.is_empty()).then(|| view! {
                    <super::dead_step::DeadStep id=s(v, "id").to_string() groups=dead reason=reason/>
                })
            }
        </ol>

        <section aria-labelledby="groups-h">
            <h2 id="groups-h">"Consumer groups"</h2>
            {
                let groups = arr(v, "groups").to_vec();
                if groups.is_empty() {
                    view! { <p class="empty">"No consumer group has received it yet."</p> }.into_any()
                } else {
                    view! {
                        <table>
                            <thead><tr><th scope="col">"group"</th><th scope="col">"status"</th><th scope="col">"did the group get it?"</th><th scope="col">"deliveries"</th></tr></thead>
                            <tbody>{groups.into_iter().map(|g| {
                                let delivery = s(&g, "delivery").to_string();
                                let class = match delivery.as_str() {
                                    "consumed" => "st st-ok",
                                    "retrying" | "not_consumed_yet" => "st st-warn",
                                    "dead" | "consumer_offline" => "st st-bad",
                                    _ => "st",
                                };
                                view! {
                                    <tr><td>{s(&g, "group").to_string()}</td>
                                    <td><span class=api::status_class(s(&g, "status"))>{s(&g, "status").to_string()}</span></td>
                                    <td>{(!delivery.is_empty()).then(|| view! { <span class=class data-delivery=delivery.clone()>{delivery.replace('_', " ")}</span> })}</td>
                                    <td class="num">{n(&g, "attempts")}</td></tr>
                                }
                            }).collect_view()}</tbody>
                        </table>
                    }.into_any()
                }
            }
        </section>

        <section aria-labelledby="events-h">
            <h2 id="events-h">"Every event"</h2>
            <p class="sub">{format!("{} event(s); attempts, retry levels, the DLQ move and replays in order", stages.len())}</p>
            <div class="scroll">
            <table class="events-table">
                <thead><tr><th scope="col">"time"</th><th scope="col">"stage"</th><th scope="col">"outcome"</th><th scope="col">"node"</th><th scope="col">"group"</th><th scope="col">"detail"</th></tr></thead>
                <tbody>{stages.iter().map(|st| {
                    let stage = s(st, "stage").to_string();
                    let extra_row = !path_stages.contains(&stage.as_str());
                    view! {
                        <tr class:side=extra_row data-stage=stage.clone()>
                            <td class="nowrap">{api::time(s(st, "at"))}</td>
                            <td><b>{stage.clone()}</b></td>
                            <td><span class=api::status_class(s(st, "outcome"))>{s(st, "outcome").to_string()}</span></td>
                            <td>{s(st, "node").to_string()}</td>
                            <td>{s(st, "group").to_string()}</td>
                            <td>{s(st, "detail").to_string()}</td>
                        </tr>
                    }
                }).collect_view()}</tbody>
            </table>
            </div>
            {(!extra.is_empty() || !extra_losses.is_empty()).then(|| view! {
                <div class="marks">{extra_losses.iter().map(loss_mark).collect_view()}</div>
            })}
        </section>

        <section aria-labelledby="body-h">
            <h2 id="body-h">"Body and properties"</h2>
            {body(v)}
            {
                let props: Vec<(String, String)> = v.get("properties").and_then(Value::as_object)
                    .map(|m| m.iter().map(|(k, x)| (k.clone(), x.as_str().map(str::to_string).unwrap_or_else(|| x.to_string()))).collect())
                    .unwrap_or_default();
                if props.is_empty() {
                    view! { <p class="empty">"No properties."</p> }.into_any()
                } else {
                    view! { <dl class="facts">{props.into_iter().map(|(k, x)| view! { <dt>{k}</dt><dd class="id">{x}</dd> }).collect_view()}</dl> }.into_any()
                }
            }
            <p>"Trace id: " <span class="id">{s(v, "trace_id").to_string()}</span>
               {s(v, "trace_id").is_empty().then_some("none recorded")}</p>
        </section>
    }
}

/// A loss point drawn on its step: risk (amber) or actual loss (red).
fn loss_mark(l: &Value) -> impl IntoView {
    let kind = s(l, "kind").to_string();
    let class = if kind == "lost" {
        "mark mark-lost"
    } else {
        "mark mark-risk"
    };
    let group = s(l, "group").to_string();
    view! {
        <span class=class role="note">
            <b>{if kind == "lost" { "LOST" } else { "risk" }}</b>
            {format!(" at {}: ", s(l, "stage"))}
            {s(l, "reason").to_string()}
            {(!group.is_empty()).then(|| format!(" [{group}]"))}
        </span>
    }
}

fn body(v: &Value) -> impl IntoView {
    if let Some(text) = v.get("body").and_then(Value::as_str) {
        // JSON (an object or array) pretty-printed; anything else as sent.
        let (shown, json) = match serde_json::from_str::<Value>(text) {
            Ok(j) if j.is_object() || j.is_array() => (
                serde_json::to_string_pretty(&j).unwrap_or_else(|_| text.to_string()),
                true,
            ),
            _ => (text.to_string(), false),
        };
        let original = text.to_string();
        let copied = RwSignal::new(false);
        let copy = move |_| {
            if let Some(w) = web_sys::window() {
                let _ = w.navigator().clipboard().write_text(&original);
                copied.set(true);
            }
        };
        return view! {
            <p class="sub body-tools">
                {if json { "JSON body, pretty-printed " } else { "Text body " }}
                <button class="copy" on:click=copy>{move || if copied.get() { "Copied" } else { "Copy body" }}</button>
            </p>
            <pre class="body" data-json=json>{shown}</pre>
        }
        .into_any();
    }
    match v.get("body_base64").and_then(Value::as_str).and_then(api::base64_bytes) {
        Some(bytes) => {
            view! { <p class="sub">"Binary body (hex):"</p><pre class="body">{api::hex(&bytes)}</pre> }.into_any()
        }
        None => {
            view! { <p class="empty">"The body is not available (the message is no longer in the log)."</p> }.into_any()
        }
    }
}
