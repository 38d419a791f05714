//! The redrive part of `/dlq`: a filter (key, reason, dead-lettered
//! between two times), "Replay all
//! matching" which starts a redrive job on the node, and the job's panel:
//! a progress bar, cancel, and each letter's outcome (`pending`,
//! `replayed`, `consumed`, `dead_again`, `skipped`) followed live, without
//! a reload.
//!
//! The start button is disabled while a request is in flight or a job of
//! the group runs; the node refuses a second running job per group (409)
//! whatever the page does.

use leptos::prelude::*;
use leptos_router::components::A;
use serde_json::{json, Value};

use crate::api::{self, arr, n, s, Load};

fn confirm(msg: &str) -> bool {
    web_sys::window()
        .and_then(|w| w.confirm_with_message(msg).ok())
        .unwrap_or(false)
}

#[component]
pub fn Redrive(
    /// The group the page shows.
    group: Signal<String>,
    /// Set with a sentence after each action.
    message: RwSignal<Option<(bool, String)>>,
) -> impl IntoView {
    let key = RwSignal::new(String::new());
    let reason = RwSignal::new(String::new());
    // `datetime-local` values (the browser's time zone), sent as RFC 3339.
    let from = RwSignal::new(String::new());
    let to = RwSignal::new(String::new());
    let busy = RwSignal::new(false);
    // The job shown: the group's newest (running or not).
    let jobs = RwSignal::new(Load::Loading);
    api::load_live(
        move || {
            let g = group.get();
            (!g.is_empty()).then(|| format!("/api/v1/dlq/jobs?group={}", api::enc(&g)))
        },
        jobs,
    );
    let newest = move || match jobs.get() {
        Load::Ready(v) => arr(&v, "jobs").first().map(|j| s(j, "id").to_string()),
        _ => None,
    };
    let running = move || match jobs.get() {
        Load::Ready(v) => arr(&v, "jobs").iter().any(|j| s(j, "state") == "running"),
        _ => false,
    };
    let job = RwSignal::new(Load::Loading);
    api::load_live(
        move || newest().map(|id| format!("/api/v1/dlq/jobs/{}", api::enc(&id))),
        job,
    );

    let start = move |_| {
        let g = group.get_untracked();
        let (k, r) = (key.get_untracked(), reason.get_untracked());
        let (f, t) = (iso(&from.get_untracked()), iso(&to.get_untracked()));
        let what = match (k.is_empty(), r.is_empty()) {
            (true, true) => "every dead letter".to_string(),
            _ => format!(
                "the dead letters{}{}",
                if k.is_empty() {
                    String::new()
                } else {
                    format!(" with key {k}")
                },
                if r.is_empty() {
                    String::new()
                } else {
                    format!(" whose reason contains \"{r}\"")
                }
            ),
        };
        if g.is_empty() || busy.get_untracked() || !confirm(&format!("Replay {what} of group {g}, 100 per second?")) {
            return;
        }
        busy.set(true);
        let body = json!({"group": g, "filter": {"key": k, "reason": r, "from": f, "to": t}, "rate_per_sec": 100});
        leptos::task::spawn_local(async move {
            match api::post_json("/api/v1/dlq/jobs", &body).await {
                Ok(v) => {
                    message.set(Some((
                        true,
                        format!("Redrive job {} started: {} letter(s)", s(&v, "id"), n(&v, "matched")),
                    )));
                    jobs.set(Load::Ready(json!({"jobs": [v]})));
                }
                Err(e) => message.set(Some((false, format!("The job did not start: {e}")))),
            }
            busy.set(false);
        });
    };
    let cancel = move |id: String| {
        if !confirm(&format!("Cancel redrive job {id}? Letters not yet replayed stay dead.")) {
            return;
        }
        leptos::task::spawn_local(async move {
            match api::post(&format!("/api/v1/dlq/jobs/{}/cancel", api::enc(&id))).await {
                Ok(_) => message.set(Some((true, format!("Redrive job {id} cancelled")))),
                Err(e) => message.set(Some((false, format!("Cancel failed: {e}")))),
            }
        });
    };

    view! {
        <div class="toolbar redrive">
            <label><span>"Key"</span><input type="text" name="key" placeholder="any" prop:value=move || key.get() on:input=move |ev| key.set(event_target_value(&ev))/></label>
            <label><span>"Dead since"</span><input type="datetime-local" name="from" prop:value=move || from.get() on:input=move |ev| from.set(event_target_value(&ev))/></label>
            <label><span>"until"</span><input type="datetime-local" name="to" prop:value=move || to.get() on:input=move |ev| to.set(event_target_value(&ev))/></label>
            <label><span>"Reason contains"</span><input type="text" name="reason" placeholder="any" prop:value=move || reason.get() on:input=move |ev| reason.set(event_target_value(&ev))/></label>
            <button class="danger start-job" on:click=start disabled=move || group.get().is_empty() || busy.get() || running()>
                {move || if running() { "A job is running…" } else { "Replay all matching" }}
            </button>
        </div>
        {move || match job.get() {
            Load::Ready(v) if !s(&v, "id").is_empty() => job_panel(v, cancel).into_any(),
            _ => ().into_any(),
        }}
    }
}

/// A `datetime-local` value as RFC 3339 (UTC); `None` when empty or not
/// a time.
fn iso(local: &str) -> Option<String> {
    if local.is_empty() {
        return None;
    }
    let d = js_sys::Date::new(&wasm_bindgen::JsValue::from_str(local));
    if d.get_time().is_nan() {
        return None;
    }
    d.to_iso_string().as_string()
}

fn job_panel(v: Value, cancel: impl Fn(String) + Copy + Send + Sync + 'static) -> impl IntoView {
    let id = s(&v, "id").to_string();
    let state = s(&v, "state").to_string();
    let matched = n(&v, "matched");
    let done = n(&v, "replayed") + n(&v, "skipped");
    let pct = (done * 100).checked_div(matched).unwrap_or(100);
    let id2 = id.clone();
    view! {
        <section class="job" aria-labelledby="job-h" data-state=state.clone() data-pct=pct.to_string()>
            <h2 id="job-h">"Redrive job " <span class="id">{id.clone()}</span> " · " {state.clone()}</h2>
            <p>
                <progress max=matched.max(1).to_string() value=done.to_string()></progress>
                " " <span class="pct">{format!("{pct} %")}</span>
                {format!(" — {} of {matched} replayed, {} consumed, {} dead again{}, started by {}",
                    n(&v, "replayed"), n(&v, "consumed"), n(&v, "dead_again"),
                    if n(&v, "skipped") > 0 { format!(", {} replayed earlier by others", n(&v, "skipped")) } else { String::new() },
                    s(&v, "by"))}
                {(!s(&v, "why").is_empty()).then(|| format!(" ({})", s(&v, "why")))}
                " " {(state == "running").then(|| view! { <button class="cancel-job" on:click=move |_| cancel(id2.clone())>"Cancel"</button> })}
            </p>
            <div class="scroll">
            <table class="job-letters">
                <thead><tr><th scope="col">"dead letter"</th><th scope="col">"key"</th><th scope="col">"outcome"</th><th scope="col">"replayed as"</th></tr></thead>
                <tbody>
                    {arr(&v, "letters_detail").iter().map(|l| {
                        let outcome = s(l, "outcome").to_string();
                        let copy = s(l, "copy").to_string();
                        view! {
                            <tr data-letter=s(l, "letter").to_string() data-outcome=outcome.clone()>
                                <td class="id">{s(l, "letter").to_string()}</td>
                                <td class="key" title=s(l, "key").to_string()>{s(l, "key").to_string()}</td>
                                <td><span class=api::status_class(&outcome)>{outcome.replace('_', " ")}</span></td>
                                <td class="id">{(!copy.is_empty()).then(|| view! { <A href=format!("/messages/{copy}")>{copy.clone()}</A> })}</td>
                            </tr>
                        }
                    }).collect_view()}
                </tbody>
            </table>
            </div>
        </section>
    }
}
