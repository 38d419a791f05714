//! `/topics`: every user topic with its queues, exact message count,
//! bytes, produce and consume rates, last message and consuming groups; a
//! "Create topic" form; and per row a delete behind a confirm step. A
//! delete the node refuses (groups still have unconsumed messages) shows
//! the node's sentence and offers to delete anyway (force).
//!
//! The list reloads live and after every create or delete. On a phone the
//! table becomes one card per topic (see `table.cardy` in style.css).

use leptos::prelude::*;
use leptos_router::components::A;
use serde_json::{json, Value};

use crate::api::{self, arr, n, s, Load};

/// Bytes for people: `512 B`, `1.5 KiB`, `3.2 MiB`, `1.1 GiB`.
pub fn bytes(b: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = b as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// A per-second rate with one decimal.
pub fn rate(v: &Value, k: &str) -> String {
    format!("{:.1}/s", v.get(k).and_then(Value::as_f64).unwrap_or(0.0))
}

/// A stored time (ms since the epoch) or a dash.
pub fn when(v: &Value, k: &str) -> String {
    v.get(k)
        .and_then(Value::as_i64)
        .map(api::time_ms)
        .unwrap_or_else(|| "—".into())
}

/// A delete waiting for the operator: the topic and, once the node
/// refused it, the node's sentence.
#[derive(Clone, Debug, PartialEq)]
struct Pending {
    topic: String,
    refused: Option<String>,
    busy: bool,
}

#[component]
pub fn Topics() -> impl IntoView {
    let list = RwSignal::new(Load::Loading);
    // Bumped after a create or delete: the list loads again at once.
    let changed = RwSignal::new(0u32);
    api::load_live(
        move || {
            changed.track();
            Some("/api/v1/topics".into())
        },
        list,
    );
    let notice: RwSignal<Option<(bool, String)>> = RwSignal::new(None);
    let pending: RwSignal<Option<Pending>> = RwSignal::new(None);
    let name = RwSignal::new(String::new());
    let queues = RwSignal::new("4".to_string());
    let creating = RwSignal::new(false);

    let create = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let topic = name.get_untracked().trim().to_string();
        let q = queues.get_untracked().trim().to_string();
        let Ok(q) = q.parse::<u32>() else {
            notice.set(Some((
                false,
                format!("Queues must be a whole number from 1 to 64, not {q:?}."),
            )));
            return;
        };
        creating.set(true);
        leptos::task::spawn_local(async move {
            let r = api::post_json("/api/v1/topics", &json!({ "topic": topic, "queues": q })).await;
            creating.set(false);
            match r {
                Ok(v) => {
                    notice.set(Some((
                        true,
                        format!("Created topic {} with {} queue(s).", s(&v, "topic"), n(&v, "queues")),
                    )));
                    name.set(String::new());
                    changed.update(|c| *c = c.wrapping_add(1));
                }
                Err(e) => notice.set(Some((false, e.to_string()))),
            }
        });
    };

    let delete = move |force: bool| {
        let Some(p) = pending.get_untracked() else { return };
        pending.set(Some(Pending {
            busy: true,
            ..p.clone()
        }));
        leptos::task::spawn_local(async move {
            let q = if force { "?force=true" } else { "" };
            let url = format!("/api/v1/topics/{}{q}", api::enc(&p.topic));
            match api::delete(&url).await {
                Ok(_) => {
                    pending.set(None);
                    notice.set(Some((true, format!("Deleted topic {}.", p.topic))));
                    changed.update(|c| *c = c.wrapping_add(1));
                }
                Err(e) if e.status() == Some(409) => {
                    let why = match &e {
                        api::ApiError::Status { message, .. } => message.clone(),
                        other => other.to_string(),
                    };
                    pending.set(Some(Pending {
                        topic: p.topic,
                        refused: Some(why),
                        busy: false,
                    }));
                }
                Err(e) => {
                    pending.set(None);
                    notice.set(Some((false, e.to_string())));
                }
            }
        });
    };

    view! {
        <h1>"Topics"</h1>
        <form class="search create-topic" on:submit=create aria-label="Create topic">
            <label>
                <span>"Topic"</span>
                <input name="topic" required=true maxlength="127" placeholder="orders"
                    pattern="[A-Za-z0-9_\\-]+" title="ASCII letters, digits, _ and -"
                    prop:value=move || name.get() on:input=move |ev| name.set(event_target_value(&ev)) />
            </label>
            <label>
                <span>"Queues"</span>
                <input name="queues" type="number" min="1" max="64" required=true
                    prop:value=move || queues.get() on:input=move |ev| queues.set(event_target_value(&ev)) />
            </label>
            <button type="submit" disabled=move || creating.get()>"Create topic"</button>
        </form>
        {move || notice.get().map(|(ok, text)| {
            let (class, role) = if ok { ("notice ok", "status") } else { ("notice error", "alert") };
            view! { <p class=class role=role>{text}</p> }
        })}
        {move || pending.get().map(|p| confirm_panel(p, pending, delete))}
        {api::show(list, move |v| table(&v, pending).into_any())}
    }
}

/// The confirm step of a delete (and, when refused, the force offer).
fn confirm_panel(
    p: Pending,
    pending: RwSignal<Option<Pending>>,
    delete: impl Fn(bool) + Copy + Send + Sync + 'static,
) -> impl IntoView {
    let cancel = move |_| pending.set(None);
    let (text, force) = match &p.refused {
        None => (
            format!(
                "Delete topic {}? Its messages stay in the log but are hidden, and producers are refused until it is created again.",
                p.topic
            ),
            false,
        ),
        Some(why) => (format!("The node refused: {why}"), true),
    };
    view! {
        <div class="confirm notice error" role="alertdialog" aria-label="Confirm delete">
            <p class="confirm-text">{text}</p>
            <button class="danger confirm-delete" disabled=p.busy on:click=move |_| delete(force)>
                {if force { "Delete anyway (force)" } else { "Delete" }}
            </button>
            " "
            <button class="cancel" on:click=cancel>"Cancel"</button>
        </div>
    }
}

fn table(v: &Value, pending: RwSignal<Option<Pending>>) -> impl IntoView {
    let topics = arr(v, "topics").to_vec();
    if topics.is_empty() {
        return view! { <p class="empty">"No topics yet. Create one above, or produce to a new topic name."</p> }
            .into_any();
    }
    view! {
        <table class="topics cardy">
            <thead><tr>
                <th scope="col">"topic"</th><th scope="col">"queues"</th><th scope="col">"messages"</th>
                <th scope="col" class="secondary">"bytes"</th><th scope="col" class="secondary">"in"</th>
                <th scope="col" class="secondary">"out"</th><th scope="col" class="secondary">"last message"</th>
                <th scope="col" class="secondary">"groups"</th><th scope="col"><span class="sr">"actions"</span></th>
            </tr></thead>
            <tbody>
                {topics.into_iter().map(|t| {
                    let name = s(&t, "topic").to_string();
                    let groups: Vec<String> = arr(&t, "groups").iter().filter_map(Value::as_str).map(str::to_string).collect();
                    let ask = {
                        let name = name.clone();
                        move |_| pending.set(Some(Pending { topic: name.clone(), refused: None, busy: false }))
                    };
                    let (href, shown) = (format!("/topics/{}", api::enc(&name)), name.clone());
                    view! {
                        <tr data-topic=name>
                            <td class="name" data-label="topic"><A href=href>{shown}</A></td>
                            <td class="num queues" data-label="queues">{n(&t, "queues")}</td>
                            <td class="num messages" data-label="messages">{n(&t, "messages")}</td>
                            <td class="num secondary" data-label="bytes">{bytes(n(&t, "bytes"))}</td>
                            <td class="num secondary" data-label="in">{rate(&t, "produce_per_sec")}</td>
                            <td class="num secondary" data-label="out">{rate(&t, "consume_per_sec")}</td>
                            <td class="secondary" data-label="last message">{when(&t, "last_ms")}</td>
                            <td class="secondary" data-label="groups">{if groups.is_empty() { "—".to_string() } else { groups.join(", ") }}</td>
                            <td class="actions"><button class="danger delete" on:click=ask>"Delete"</button></td>
                        </tr>
                    }
                }).collect_view()}
            </tbody>
        </table>
    }
    .into_any()
}
