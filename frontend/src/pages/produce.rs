//! `/produce`: send one message from the browser — topic (from the topic
//! list), key, tags, properties as `k=v` lines, body (checked as JSON when
//! "JSON" is ticked) and send mode. The answer shows the send status
//! (`SEND_OK` or another SendStatus name) and the new id linking to its
//! timeline; every error is a sentence, and a form mistake is named
//! before anything is sent.

use std::collections::BTreeMap;

use leptos::prelude::*;
use leptos_router::components::A;
use serde_json::{json, Value};

use crate::api::{self, arr, s, Load};

/// Properties from `k=v` lines (blank lines skipped); the first bad line
/// is named.
fn properties(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        match line.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => {
                out.insert(k.trim().to_string(), v.trim().to_string());
            }
            _ => return Err(format!("Property line {} is not key=value: {line:?}.", i + 1)),
        }
    }
    Ok(out)
}

/// The request body, or what is wrong with the form.
fn request(key: &str, tags: &str, props: &str, body: &str, is_json: bool, mode: &str) -> Result<Value, String> {
    let props = properties(props)?;
    if is_json {
        serde_json::from_str::<Value>(body).map_err(|e| format!("The body is not valid JSON: {e}."))?;
    }
    let mut req = json!({ "body": body, "properties": props, "mode": mode });
    if !key.trim().is_empty() {
        req["key"] = json!(key.trim());
    }
    if !tags.trim().is_empty() {
        req["tags"] = json!(tags.trim());
    }
    Ok(req)
}

#[component]
pub fn Produce() -> impl IntoView {
    let topics = RwSignal::new(Load::Loading);
    api::load_live(|| Some("/api/v1/topics".into()), topics);
    let topic = RwSignal::new(String::new());
    let key = RwSignal::new(String::new());
    let tags = RwSignal::new(String::new());
    let props = RwSignal::new(String::new());
    let body = RwSignal::new(String::new());
    let is_json = RwSignal::new(false);
    let mode = RwSignal::new("sync".to_string());
    let sending = RwSignal::new(false);
    // The last answer: Ok(send answer) or Err(sentence).
    let result: RwSignal<Option<Result<Value, String>>> = RwSignal::new(None);

    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let t = topic.get_untracked();
        if t.is_empty() {
            result.set(Some(Err("Choose a topic first.".into())));
            return;
        }
        let req = match request(
            &key.get_untracked(),
            &tags.get_untracked(),
            &props.get_untracked(),
            &body.get_untracked(),
            is_json.get_untracked(),
            &mode.get_untracked(),
        ) {
            Ok(r) => r,
            Err(why) => {
                result.set(Some(Err(why)));
                return;
            }
        };
        sending.set(true);
        leptos::task::spawn_local(async move {
            let url = format!("/api/v1/topics/{}/messages", api::enc(&t));
            let r = api::post_json(&url, &req).await;
            sending.set(false);
            result.set(Some(r.map_err(|e| e.to_string())));
        });
    };

    let topic_options = move || {
        topics.with(|l| match l {
            Load::Ready(v) => arr(v, "topics")
                .iter()
                .map(|t| s(t, "topic").to_string())
                .collect::<Vec<_>>(),
            _ => Vec::new(),
        })
    };
    // The first topic is chosen once the list arrives.
    Effect::new(move |_| {
        let names = topic_options();
        if topic.get_untracked().is_empty() {
            if let Some(first) = names.first() {
                topic.set(first.clone());
            }
        }
    });

    view! {
        <h1>"Produce"</h1>
        <form class="produce" on:submit=submit aria-label="Send a message">
            <label>
                <span>"Topic"</span>
                <select name="topic" on:change=move |ev| topic.set(event_target_value(&ev))>
                    {move || topic_options().into_iter().map(|t| {
                        let (value, chosen) = (t.clone(), t.clone());
                        view! { <option value=value selected=move || topic.get() == chosen>{t}</option> }
                    }).collect_view()}
                </select>
            </label>
            {move || topics.with(|l| matches!(l, Load::Ready(v) if arr(v, "topics").is_empty())).then(|| view! {
                <p class="empty">"No topics yet: " <A href="/topics">"create one"</A> " first."</p>
            })}
            <label>
                <span>"Key"</span>
                <input name="key" placeholder="order-42" prop:value=move || key.get()
                    on:input=move |ev| key.set(event_target_value(&ev)) />
            </label>
            <label>
                <span>"Tags"</span>
                <input name="tags" placeholder="paid" prop:value=move || tags.get()
                    on:input=move |ev| tags.set(event_target_value(&ev)) />
            </label>
            <label class="wide">
                <span>"Properties (one key=value per line)"</span>
                <textarea name="properties" rows="3" placeholder="region=eu"
                    prop:value=move || props.get() on:input=move |ev| props.set(event_target_value(&ev))></textarea>
            </label>
            <label class="wide">
                <span>"Body"</span>
                <textarea name="body" rows="6" prop:value=move || body.get()
                    on:input=move |ev| body.set(event_target_value(&ev))></textarea>
            </label>
            <label class="check">
                <input type="checkbox" name="json" prop:checked=move || is_json.get()
                    on:change=move |ev| is_json.set(event_target_checked(&ev)) />
                <span>"JSON (checked before sending)"</span>
            </label>
            <label>
                <span>"Send mode"</span>
                <select name="mode" on:change=move |ev| mode.set(event_target_value(&ev))>
                    <option value="sync" selected=true>"sync"</option>
                    <option value="async">"async"</option>
                    <option value="oneway">"oneway"</option>
                </select>
            </label>
            <button type="submit" disabled=move || sending.get()>{move || if sending.get() { "Sending…" } else { "Send" }}</button>
        </form>
        {move || result.get().map(|r| match r {
            Ok(v) => {
                let id = s(&v, "id").to_string();
                let status = s(&v, "status").to_string();
                view! {
                    <div class="notice ok send-result" role="status">
                        <span class=api::status_class(&status) data-status=status.clone()>{status.clone()}</span>
                        " stored in queue " {v.get("queue_id").and_then(Value::as_u64).unwrap_or(0)}
                        " at offset " {v.get("queue_offset").and_then(Value::as_u64).unwrap_or(0)} ": "
                        <A href=format!("/messages/{id}") attr:class="sent-id id">{id.clone()}</A>
                    </div>
                }.into_any()
            }
            Err(why) => view! { <p class="notice error send-error" role="alert">{why}</p> }.into_any(),
        })}
    }
}
