//! `/topics/:topic`: one topic — its counts, each queue's offsets, each
//! consumer group's lag — and a message browser, newest first, by queue
//! or across them, a page at a time ("Older →" follows the API's
//! `next_before`; "← Newer" goes back through the pages seen). Each id is
//! shortened with the whole id in its tooltip, a copy button, and a link
//! to its timeline. Its produce and consume rates are charts over time
//! (`chart::TopicCharts`), following the live feed.

use leptos::prelude::*;
use leptos_router::components::A;
use leptos_router::hooks::use_params_map;
use serde_json::Value;

use super::topics::{bytes, rate, when};
use crate::api::{self, arr, n, s, Load};

/// Messages per page of the browser.
const PAGE: usize = 20;

/// An id as `0001a2…c3d4e5` (ids are 28 hex digits).
pub fn short(id: &str) -> String {
    if id.len() <= 14 {
        return id.to_string();
    }
    format!("{}…{}", &id[..6], &id[id.len() - 6..])
}

/// A shortened id linking to its timeline, with a copy button.
pub fn id_cell(id: String) -> impl IntoView {
    let copied = RwSignal::new(false);
    let full = id.clone();
    let copy = move |_| {
        if let Some(w) = web_sys::window() {
            let _ = w.navigator().clipboard().write_text(&full);
            copied.set(true);
        }
    };
    let (href, title, label, shown) = (
        format!("/messages/{id}"),
        id.clone(),
        format!("Copy id {id}"),
        short(&id),
    );
    view! {
        <A href=href attr:title=title attr:class="msg-id">{shown}</A>
        " "
        <button class="copy small" on:click=copy aria-label=label>
            {move || if copied.get() { "Copied" } else { "Copy" }}
        </button>
    }
}

#[component]
pub fn Topic() -> impl IntoView {
    let params = use_params_map();
    let topic = move || params.with(|p| p.get("topic").unwrap_or_default());
    let info = RwSignal::new(Load::Loading);
    api::load_live(
        move || {
            let t = topic();
            (!t.is_empty()).then(|| format!("/api/v1/topics/{}", api::enc(&t)))
        },
        info,
    );
    view! {
        <p class="crumbs"><A href="/topics">"Topics"</A>" / "</p>
        <h1>{topic}</h1>
        {api::show(info, move |v| head(&v).into_any())}
        <section class="topic-charts">
            {move || view! { <crate::chart::TopicCharts topic=topic()/> }}
        </section>
        {move || view! { <Browser topic=topic()/> }}
    }
}

/// Counts, queues and lag.
fn head(v: &Value) -> impl IntoView {
    let card = |title: &'static str, value: String| {
        view! { <div class="card"><h2>{title}</h2><p class="big">{value}</p></div> }
    };
    let queues = arr(v, "per_queue").to_vec();
    let lag = arr(v, "lag").to_vec();
    view! {
        <div class="cards topic-head">
            {card("messages", n(v, "messages").to_string())}
            {card("queues", n(v, "queues").to_string())}
            {card("bytes", bytes(n(v, "bytes")))}
            {card("produced", rate(v, "produce_per_sec"))}
            {card("consumed", rate(v, "consume_per_sec"))}
            {card("last message", when(v, "last_ms"))}
        </div>
        <h2>"Queues"</h2>
        <table class="queues cardy">
            <thead><tr>
                <th scope="col">"queue"</th><th scope="col">"messages"</th>
                <th scope="col">"first offset"</th><th scope="col">"next offset"</th>
            </tr></thead>
            <tbody>
                {queues.into_iter().map(|q| view! {
                    <tr>
                        <td class="num" data-label="queue">{n(&q, "queue")}</td>
                        <td class="num" data-label="messages">{n(&q, "messages")}</td>
                        <td class="num" data-label="first offset">{n(&q, "first_offset")}</td>
                        <td class="num" data-label="next offset">{n(&q, "next_offset")}</td>
                    </tr>
                }).collect_view()}
            </tbody>
        </table>
        <h2>"Consumer groups"</h2>
        {if lag.is_empty() {
            view! { <p class="empty">"No consumer group reads this topic."</p> }.into_any()
        } else {
            view! {
                <table class="lag cardy">
                    <thead><tr><th scope="col">"group"</th><th scope="col">"lag"</th></tr></thead>
                    <tbody>
                        {lag.into_iter().map(|g| {
                            let (group, behind) = (s(&g, "group").to_string(), n(&g, "lag"));
                            view! {
                                <tr>
                                    <td data-label="group"><A href="/consumers">{group}</A></td>
                                    <td class="num" data-label="lag">{behind}</td>
                                </tr>
                            }
                        }).collect_view()}
                    </tbody>
                </table>
            }.into_any()
        }}
    }
}

/// The message browser of one topic.
#[component]
fn Browser(topic: String) -> impl IntoView {
    let queue = RwSignal::new(String::new());
    // The `before` of each page seen; the last is the page shown.
    let pages: RwSignal<Vec<Option<u64>>> = RwSignal::new(vec![None]);
    let page = RwSignal::new(Load::Loading);
    let queues = RwSignal::new(0u64);
    {
        let topic = topic.clone();
        Effect::new(move |_| {
            let before = pages.with(|p| p.last().copied().flatten());
            let q = queue.get();
            let mut url = format!("/api/v1/topics/{}/messages?limit={PAGE}", api::enc(&topic));
            if !q.is_empty() {
                url.push_str(&format!("&queue={q}"));
            }
            if let Some(b) = before {
                url.push_str(&format!("&before={b}"));
            }
            let info_url = format!("/api/v1/topics/{}", api::enc(&topic));
            leptos::task::spawn_local(async move {
                if let Ok(v) = api::get(&info_url).await {
                    queues.set(n(&v, "queues"));
                }
                page.set(Load::from(api::get(&url).await));
            });
        });
    }
    let older = move |_| {
        let next = page.with_untracked(|l| match l {
            Load::Ready(v) => v.get("next_before").and_then(Value::as_u64),
            _ => None,
        });
        if let Some(b) = next {
            page.set(Load::Loading);
            pages.update(|p| p.push(Some(b)));
        }
    };
    let newer = move |_| {
        if pages.with_untracked(Vec::len) > 1 {
            page.set(Load::Loading);
            pages.update(|p| {
                p.pop();
            });
        }
    };
    let has_older =
        move || page.with(|l| matches!(l, Load::Ready(v) if v.get("next_before").and_then(Value::as_u64).is_some()));
    view! {
        <h2>"Messages"</h2>
        <div class="toolbar browse-tools">
            <label>
                <span>"Queue"</span>
                <select name="queue" on:change=move |ev| {
                    queue.set(event_target_value(&ev));
                    pages.set(vec![None]);
                }>
                    <option value="">"all queues"</option>
                    {move || (0..queues.get()).map(|q| view! {
                        <option value=q.to_string() selected=move || queue.get() == q.to_string()>{format!("queue {q}")}</option>
                    }).collect_view()}
                </select>
            </label>
            <button class="newer" on:click=newer disabled=move || pages.with(|p| p.len() <= 1)>"← Newer"</button>
            <button class="older" on:click=older disabled=move || !has_older()>"Older →"</button>
            <span class="sub">{move || format!("page {}", pages.with(Vec::len))}</span>
        </div>
        {api::show(page, move |v| rows(&v).into_any())}
    }
}

fn rows(v: &Value) -> impl IntoView {
    let msgs = arr(v, "messages").to_vec();
    if msgs.is_empty() {
        return view! { <p class="empty">"No messages here."</p> }.into_any();
    }
    view! {
        <p class="sub">"Newest first"</p>
        <table class="browse cardy">
            <thead><tr>
                <th scope="col">"id"</th><th scope="col">"queue"</th><th scope="col">"offset"</th>
                <th scope="col">"key"</th><th scope="col" class="secondary">"tags"</th>
                <th scope="col">"stored"</th><th scope="col" class="secondary">"size"</th>
                <th scope="col" class="secondary">"body"</th>
            </tr></thead>
            <tbody>
                {msgs.into_iter().map(|m| view! {
                    <tr>
                        <td class="id" data-label="id">{id_cell(s(&m, "id").to_string())}</td>
                        <td class="num" data-label="queue">{n(&m, "queue")}</td>
                        <td class="num" data-label="offset">{n(&m, "offset")}</td>
                        <td class="key" data-label="key">{s(&m, "key").to_string()}</td>
                        <td class="secondary" data-label="tags">{s(&m, "tags").to_string()}</td>
                        <td data-label="stored">{when(&m, "stored_ms")}</td>
                        <td class="num secondary" data-label="size">{bytes(n(&m, "size"))}</td>
                        <td class="body-preview secondary" data-label="body" title=s(&m, "body_preview").to_string()>
                            {s(&m, "body_preview").chars().take(60).collect::<String>()}
                        </td>
                    </tr>
                }).collect_view()}
            </tbody>
        </table>
    }
    .into_any()
}
