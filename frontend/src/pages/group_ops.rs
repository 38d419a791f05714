//! Consumer-group operations on `/consumers`: each group's live members
//! (address, last heartbeat, owned queues), and its "Operations" panel:
//! reset offsets (to a time, to the end or to an offset; one queue or
//! all) through a dry-run preview of every queue's move and a confirm
//! step, skip the next message of a queue, delete the group — each
//! confirmed. The server's 409 sentence (live members) is shown as it is,
//! with a "force" option that the next preview and confirm send.
//!
//! The panel keeps its own state (signals made once per group name), so
//! the live feed re-rendering the group tables every second never wipes a
//! preview or a refusal on screen. What is sent and shown comes from
//! `/api/v1/consumers/{group}/…`; nothing is computed here.

use leptos::prelude::*;
use serde_json::{json, Value};

use crate::api::{self, arr, n, s, ApiError};

/// The members table of one group (from `/api/v1/consumers`).
pub fn members_table(g: &Value) -> AnyView {
    let members = arr(g, "member_details").to_vec();
    if members.is_empty() {
        return ().into_any();
    }
    view! {
        <div class="scroll">
        <table class="members">
            <caption>"Members"</caption>
            <thead><tr><th scope="col">"member"</th><th scope="col">"host"</th><th scope="col">"last heartbeat"</th><th scope="col">"queues owned"</th></tr></thead>
            <tbody>{members.into_iter().map(|m| {
                let beat = m.get("last_heartbeat_ms").and_then(Value::as_i64).map(api::time_ms).unwrap_or_default();
                let owned: Vec<String> = arr(&m, "queues")
                    .iter()
                    .map(|q| format!("{}:{}", s(q, "topic"), n(q, "queue_id")))
                    .collect();
                view! {
                    <tr><td>{s(&m, "id").to_string()}</td><td>{s(&m, "host").to_string()}</td>
                    <td>{beat}</td><td class="owned">{owned.join(" ")}</td></tr>
                }
            }).collect_view()}</tbody>
        </table>
        </div>
    }
    .into_any()
}

/// One queue's move in a reset answer: `(queue, from, to)`.
fn moves(v: &Value) -> Vec<(u64, u64, u64)> {
    arr(v, "queues")
        .iter()
        .map(|m| (n(m, "queue"), n(m, "from"), n(m, "to")))
        .collect()
}

/// Where an action's answer goes: a 409 is a refusal (shown with the
/// force option), anything else a result line.
#[derive(Clone, Copy)]
struct Outcome {
    refusal: RwSignal<Option<String>>,
    result: RwSignal<Option<(bool, String)>>,
}

impl Outcome {
    fn clear(&self) {
        self.refusal.set(None);
        self.result.set(None);
    }

    fn failed(&self, what: &str, e: ApiError) {
        match e {
            ApiError::Status { status: 409, message } => self.refusal.set(Some(message)),
            e => self.result.set(Some((false, format!("{what} failed: {e}")))),
        }
    }
}

/// The reset request from the form; `Err` names the field to fix.
fn reset_body(to: &str, at: &str, offset: &str, queue: &str, force: bool, dry_run: bool) -> Result<Value, String> {
    let mut b = json!({ "to": to, "force": force, "dry_run": dry_run });
    match to {
        "time" if at.trim().is_empty() => return Err("give a time (RFC 3339 or epoch ms)".into()),
        "time" => b["at"] = json!(at.trim()),
        "offset" => match offset.trim().parse::<u64>() {
            Ok(o) => b["offset"] = json!(o),
            Err(_) => return Err("give an offset (a whole number)".into()),
        },
        _ => {}
    }
    if !queue.trim().is_empty() {
        match queue.trim().parse::<u32>() {
            Ok(q) => b["queue"] = json!(q),
            Err(_) => return Err("the queue is a whole number (empty: all queues)".into()),
        }
    }
    Ok(b)
}

/// The "Operations" panel of group `name`.
#[component]
pub fn GroupOps(name: String) -> impl IntoView {
    let base = format!("/api/v1/consumers/{}", api::enc(&name));
    let to = RwSignal::new("end".to_string());
    let at = RwSignal::new(String::new());
    let offset = RwSignal::new(String::new());
    let queue = RwSignal::new(String::new());
    let force = RwSignal::new(false);
    let preview = RwSignal::new(None::<Vec<(u64, u64, u64)>>);
    let skip_queue = RwSignal::new(String::new());
    let skip_offset = RwSignal::new(String::new());
    let confirming = RwSignal::new(None::<&'static str>);
    let out = Outcome {
        refusal: RwSignal::new(None),
        result: RwSignal::new(None),
    };

    let reset = {
        let url = format!("{base}/offsets");
        move |dry_run: bool| {
            out.clear();
            let body = match reset_body(
                &to.get_untracked(),
                &at.get_untracked(),
                &offset.get_untracked(),
                &queue.get_untracked(),
                force.get_untracked(),
                dry_run,
            ) {
                Ok(b) => b,
                Err(why) => return out.result.set(Some((false, why))),
            };
            let url = url.clone();
            leptos::task::spawn_local(async move {
                match api::post_json(&url, &body).await {
                    Ok(v) if dry_run => preview.set(Some(moves(&v))),
                    Ok(v) => {
                        preview.set(None);
                        let moved: Vec<String> =
                            moves(&v).iter().map(|(q, f, t)| format!("queue {q} {f}→{t}")).collect();
                        out.result
                            .set(Some((true, format!("Reset done: {}", moved.join(", ")))));
                    }
                    Err(e) => {
                        preview.set(None);
                        out.failed("The reset", e);
                    }
                }
            });
        }
    };
    let skip = {
        let url = format!("{base}/skip");
        move || {
            out.clear();
            confirming.set(None);
            let (Ok(q), Ok(o)) = (
                skip_queue.get_untracked().trim().parse::<u32>(),
                skip_offset.get_untracked().trim().parse::<u64>(),
            ) else {
                return out
                    .result
                    .set(Some((false, "give the queue and the offset to skip".into())));
            };
            let body = json!({ "queue": q, "offset": o, "force": force.get_untracked() });
            let url = url.clone();
            leptos::task::spawn_local(async move {
                match api::post_json(&url, &body).await {
                    Ok(v) => out.result.set(Some((
                        true,
                        format!("Skipped offset {o} of queue {q}: the group is now at {}", n(&v, "to")),
                    ))),
                    Err(e) => out.failed("The skip", e),
                }
            });
        }
    };
    let delete = {
        let url = base.clone();
        move || {
            out.clear();
            confirming.set(None);
            let url = format!("{url}?force={}", force.get_untracked());
            leptos::task::spawn_local(async move {
                match api::delete(&url).await {
                    Ok(v) => out.result.set(Some((
                        true,
                        format!("Deleted the group and its {} committed offset(s)", n(&v, "offsets")),
                    ))),
                    Err(e) => out.failed("The delete", e),
                }
            });
        }
    };
    let reset_preview = reset.clone();
    let input = move |sig: RwSignal<String>, name: &'static str, label: &'static str, hint: &'static str| {
        view! {
            <label>{label}
                <input name=name placeholder=hint size="14" prop:value=move || sig.get()
                    on:input=move |ev| { sig.set(event_target_value(&ev)); preview.set(None); }/>
            </label>
        }
    };
    view! {
        <section class="group-ops" data-group=name.clone() aria-label=format!("operations on group {name}")>
            <h2>{format!("Operations on {name}")}</h2>
            <div class="toolbar">
                <label>"Reset offsets"
                    <select name="to" prop:value=move || to.get()
                        on:change=move |ev| { to.set(event_target_value(&ev)); preview.set(None); }>
                        <option value="end">"to the end"</option>
                        <option value="time">"to a time"</option>
                        <option value="offset">"to an offset"</option>
                    </select>
                </label>
                {move || (to.get() == "time").then(|| input(at, "at", "time", "2026-01-31T12:00:00Z"))}
                {move || (to.get() == "offset").then(|| input(offset, "offset", "offset", "0"))}
                {input(queue, "queue", "queue", "all")}
                <button class="preview" on:click=move |_| reset_preview(true)>"Preview"</button>
            </div>
            {move || preview.get().map(|rows| {
                let confirm = reset.clone();
                view! {
                    <div class="scroll">
                    <table class="preview">
                        <caption>"Preview: nothing changed yet"</caption>
                        <thead><tr><th scope="col">"queue"</th><th scope="col">"from"</th><th scope="col">"to"</th></tr></thead>
                        <tbody>{rows.into_iter().map(|(q, f, t)| view! {
                            <tr><td class="num">{q}</td><td class="num">{f}</td><td class="num">{format!("→ {t}")}</td></tr>
                        }).collect_view()}</tbody>
                    </table>
                    </div>
                    <p>
                        <button class="confirm danger" on:click=move |_| confirm(false)>"Confirm reset"</button>
                        " " <button class="cancel" on:click=move |_| preview.set(None)>"Cancel"</button>
                    </p>
                }
            })}
            <div class="toolbar">
                {input(skip_queue, "skip-queue", "skip: queue", "0")}
                {input(skip_offset, "skip-offset", "offset", "its next")}
                <button class="skip" on:click=move |_| { out.clear(); confirming.set(Some("skip")) }>"Skip message…"</button>
                <button class="delete danger" on:click=move |_| { out.clear(); confirming.set(Some("delete")) }>"Delete group…"</button>
            </div>
            {move || confirming.get().map(|what| {
                let (skip, delete) = (skip.clone(), delete.clone());
                let text = if what == "skip" {
                    format!("Skip the message at offset {} of queue {}? It is never delivered to this group.",
                        skip_offset.get_untracked(), skip_queue.get_untracked())
                } else {
                    "Delete this group? Its committed offsets are forgotten; a new member starts from the beginning.".to_string()
                };
                view! {
                    <p class="confirming" role="alert">{text} " "
                        <button class="confirm-action danger" on:click=move |_| { if what == "skip" { skip() } else { delete() } }>"Confirm"</button>
                        " " <button class="cancel" on:click=move |_| confirming.set(None)>"Cancel"</button>
                    </p>
                }
            })}
            {move || out.refusal.get().map(|why| view! { <p class="error refusal" role="alert">{why}</p> })}
            {move || (out.refusal.get().is_some() || force.get()).then(|| view! {
                <label class="check"><input type="checkbox" name="force" prop:checked=move || force.get()
                    on:change=move |ev| { force.set(event_target_checked(&ev)); preview.set(None); }/>
                    " force: act anyway (live members continue from the new position)"</label>
            })}
            {move || out.result.get().map(|(ok, text)| view! {
                <p class="ops-result" class:error=move || !ok role="status">{text}</p>
            })}
        </section>
    }
}
