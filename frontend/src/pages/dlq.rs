//! `/dlq`: dead letters per consumer group — reason (last error),
//! attempts, first and last failure — with replay of one or the selected,
//! each behind a confirmation, and redrive jobs over all matching letters
//! (`dlq_jobs.rs`). A replay's outcome is followed live:
//! the letter turns `replayed` (and leaves the default view) and the
//! original message's status shows whether the group now consumed it.

use std::collections::BTreeSet;

use leptos::prelude::*;
use leptos_router::components::A;
use leptos_router::hooks::{use_navigate, use_query_map};
use leptos_router::NavigateOptions;
use serde_json::Value;

use crate::api::{self, arr, n, s, Load};

/// Letters listed at once (the API's largest page).
const PAGE: usize = 200;

/// One replay this page started, and what came of it.
#[derive(Clone, Debug, PartialEq)]
struct Replayed {
    /// The original message (its timeline shows the replay).
    origin: String,
    new_id: String,
    group: String,
}

/// Keeps a replay this page made (newest first), from the API's answer.
fn remember(replays: RwSignal<Vec<Replayed>>, origin: String, answer: &Value) {
    replays.update(|r| {
        r.insert(
            0,
            Replayed {
                origin,
                new_id: s(answer, "id").to_string(),
                group: s(answer, "group").to_string(),
            },
        )
    });
}

fn confirm(msg: &str) -> bool {
    web_sys::window()
        .and_then(|w| w.confirm_with_message(msg).ok())
        .unwrap_or(false)
}

/// The text typed into a browser prompt; `None` when cancelled.
fn prompt(msg: &str, default: &str) -> Option<String> {
    web_sys::window()
        .and_then(|w| w.prompt_with_message_and_default(msg, default).ok())
        .flatten()
}

/// The first line of a body, at most 80 characters.
fn preview(body: &str) -> String {
    let line = body.lines().next().unwrap_or_default();
    let mut p: String = line.chars().take(80).collect();
    if p.len() < body.len() {
        p.push('…');
    }
    p
}

#[component]
pub fn Dlq() -> impl IntoView {
    let query = use_query_map();
    let navigate = use_navigate();
    let group = move || query.with(|q| q.get("group").unwrap_or_default());
    let consumers = RwSignal::new(Load::Loading);
    api::load_live(|| Some("/api/v1/consumers".into()), consumers);
    let letters = RwSignal::new(Load::Loading);
    api::load_live(
        move || {
            let g = group();
            // One page, newest first: every row of a page has its first
            // failure time; jobs take every matching letter, not the page.
            (!g.is_empty()).then(|| format!("/api/v1/dlq?group={}&order=newest&limit={PAGE}", api::enc(&g)))
        },
        letters,
    );
    let show_all = RwSignal::new(false);
    let selected = RwSignal::new(BTreeSet::<String>::new());
    let message = RwSignal::new(None::<(bool, String)>);
    let replays = RwSignal::new(Vec::<Replayed>::new());

    // The group list: groups the broker knows; the first one is opened.
    let groups = move || match consumers.get() {
        Load::Ready(v) => arr(&v, "groups")
            .iter()
            .map(|g| s(g, "group").to_string())
            .collect::<Vec<_>>(),
        _ => Vec::new(),
    };
    {
        let navigate = navigate.clone();
        Effect::new(move |_| {
            if group().is_empty() {
                if let Some(first) = groups().first() {
                    navigate(
                        &format!("/dlq?group={}", api::enc(first)),
                        NavigateOptions {
                            replace: true,
                            ..Default::default()
                        },
                    );
                }
            }
        });
    }

    let replay_one = move |dlq_id: String, origin: String| {
        if !confirm(&format!("Replay dead letter {dlq_id} (message {origin}) to its group?")) {
            return;
        }
        leptos::task::spawn_local(async move {
            match api::post(&format!("/api/v1/dlq/{}/replay", api::enc(&dlq_id))).await {
                Ok(v) => {
                    message.set(Some((true, format!("Replayed {origin} as {}", s(&v, "id")))));
                    remember(replays, origin, &v);
                }
                Err(e) => message.set(Some((false, format!("Replay of {dlq_id} failed: {e}")))),
            }
        });
    };
    let discard = move |dlq_id: String| {
        let Some(reason) = prompt(
            &format!("Why discard dead letter {dlq_id}? It stays here as evidence and is never replayed."),
            "",
        )
        .filter(|r| !r.trim().is_empty()) else {
            return;
        };
        leptos::task::spawn_local(async move {
            let body = serde_json::json!({ "reason": reason });
            match api::post_json(&format!("/api/v1/dlq/{}/discard", api::enc(&dlq_id)), &body).await {
                Ok(_) => message.set(Some((true, format!("Discarded {dlq_id}: {reason}")))),
                Err(e) => message.set(Some((false, format!("Discarding {dlq_id} failed: {e}")))),
            }
        });
    };
    let edit_replay = move |dlq_id: String, origin: String, body: String| {
        let Some(edited) = prompt(
            &format!("Replay {dlq_id} with this body (the dead letter itself stays as it is):"),
            &body,
        ) else {
            return;
        };
        leptos::task::spawn_local(async move {
            let req = serde_json::json!({ "edit": { "body": edited } });
            match api::post_json(&format!("/api/v1/dlq/{}/replay", api::enc(&dlq_id)), &req).await {
                Ok(v) => {
                    message.set(Some((
                        true,
                        format!("Replayed an edited copy of {origin} as {}", s(&v, "id")),
                    )));
                    remember(replays, origin, &v);
                }
                Err(e) => message.set(Some((false, format!("The edited replay of {dlq_id} failed: {e}")))),
            }
        });
    };
    let replay_selected = move |_| {
        let ids: Vec<String> = selected.get_untracked().into_iter().collect();
        if ids.is_empty() || !confirm(&format!("Replay {} selected dead letter(s)?", ids.len())) {
            return;
        }
        let origins: Vec<(String, String)> = match letters.get_untracked() {
            Load::Ready(v) => arr(&v, "messages")
                .iter()
                .map(|m| (s(m, "id").to_string(), s(m, "origin_id").to_string()))
                .collect(),
            _ => Vec::new(),
        };
        leptos::task::spawn_local(async move {
            let (mut ok, mut failed) = (0, Vec::new());
            for id in ids {
                let origin = origins
                    .iter()
                    .find(|(d, _)| *d == id)
                    .map(|(_, o)| o.clone())
                    .unwrap_or_default();
                match api::post(&format!("/api/v1/dlq/{}/replay", api::enc(&id))).await {
                    Ok(v) => {
                        ok += 1;
                        remember(replays, origin, &v);
                    }
                    Err(e) => failed.push(format!("{id}: {e}")),
                }
            }
            selected.set(BTreeSet::new());
            message.set(Some((
                failed.is_empty(),
                format!("Replayed {ok}. {}", failed.join("; ")),
            )));
        });
    };
    view! {
        <h1>"Dead letters"</h1>
        <div class="toolbar">
            <label>
                <span>"Group"</span>
                <select on:change=move |ev| {
                    let g = event_target_value(&ev);
                    selected.set(BTreeSet::new());
                    navigate(&format!("/dlq?group={}", api::enc(&g)), NavigateOptions::default());
                }>
                    {move || {
                        let current = group();
                        let mut gs = groups();
                        if !current.is_empty() && !gs.contains(&current) {
                            gs.insert(0, current.clone());
                        }
                        gs.into_iter().map(|g| view! { <option value=g.clone() selected=g == current>{g.clone()}</option> }).collect_view()
                    }}
                </select>
            </label>
            <label class="check"><input type="checkbox" prop:checked=move || show_all.get() on:change=move |ev| show_all.set(event_target_checked(&ev))/>" show replayed and quarantined"</label>
            <button on:click=replay_selected disabled=move || selected.get().is_empty()>{move || format!("Replay selected ({})", selected.get().len())}</button>
        </div>
        <crate::pages::dlq_jobs::Redrive group=Signal::derive(group) message=message/>
        {move || message.get().map(|(ok, m)| view! { <p class=if ok { "notice ok" } else { "notice error" } role="status">{m}</p> })}
        {move || {
            if group().is_empty() {
                return match consumers.get() {
                    Load::Ready(_) => view! { <p class="empty">"No consumer group yet, so no dead letters. Messages a group fails to handle "
                        "more than max-reconsume-times land here."</p> }.into_any(),
                    Load::Failed(e) => view! { <p class="error" role="alert">{e}</p> }.into_any(),
                    Load::Loading => view! { <p class="loading" role="status">"Loading…"</p> }.into_any(),
                };
            }
            match letters.get() {
                Load::Loading => view! { <p class="loading" role="status">"Loading…"</p> }.into_any(),
                Load::Failed(e) => view! { <p class="error" role="alert">{e}</p> }.into_any(),
                Load::Ready(v) => {
                    let all = show_all.get();
                    let rows: Vec<Value> = arr(&v, "messages").iter().filter(|m| all || s(m, "state") == "dead").cloned().collect();
                    if rows.is_empty() {
                        return view! { <p class="empty">{format!("No dead letters waiting in group {}.", group())}</p> }.into_any();
                    }
                    let total = n(&v, "total");
                    let shown = arr(&v, "messages").len() as u64;
                    view! {
                        {(total > shown).then(|| view! { <p class="sub">{format!("The newest {shown} of {total} letters; a redrive job takes every matching letter, not only these.")}</p> })}
                        <div class="scroll">
                        <table class="dlq">
                            <thead><tr>
                                <th scope="col"><span class="sr">"select"</span></th>
                                <th scope="col">"message"</th><th scope="col">"key"</th><th scope="col">"body"</th><th scope="col">"reason (last error)"</th>
                                <th scope="col">"attempts"</th><th scope="col">"first failure"</th><th scope="col">"last failure"</th>
                                <th scope="col">"state"</th><th scope="col">""</th>
                            </tr></thead>
                            <tbody>
                                {rows.into_iter().map(|m| {
                                    let id = s(&m, "id").to_string();
                                    let origin = s(&m, "origin_id").to_string();
                                    let state = s(&m, "state").to_string();
                                    let (id2, id3, id4, origin2, origin3) = (id.clone(), id.clone(), id.clone(), origin.clone(), origin.clone());
                                    let first = s(&m, "first_failure_at").to_string();
                                    view! {
                                        <tr data-id=id4 data-origin=origin3>
                                            <td><input type="checkbox" aria-label=format!("select {id}") disabled=state != "dead"
                                                prop:checked=move || selected.with(|s| s.contains(&id2))
                                                on:change=move |ev| { let on = event_target_checked(&ev); let id = id3.clone(); selected.update(|s| { if on { s.insert(id); } else { s.remove(&id); } }); }/></td>
                                            <td class="id"><A href=format!("/messages/{origin}")>{origin.clone()}</A></td>
                                            <td class="key" title=s(&m, "key").to_string()>{s(&m, "key").to_string()}</td>
                                            <td class="body-preview" title=s(&m, "body").to_string()>{preview(s(&m, "body"))}</td>
                                            <td class="reason">{s(&m, "reason").to_string()}</td>
                                            <td class="num">{n(&m, "reconsume_times") + 1}</td>
                                            <td class="nowrap">{if first.is_empty() { "–".to_string() } else { api::time(&first) }}</td>
                                            <td class="nowrap">{api::time_ms(m.get("dead_at_ms").and_then(Value::as_i64).unwrap_or(0))}</td>
                                            <td><span class=api::status_class(&state)>{state.clone()}</span>{(n(&m, "returns") > 1).then(|| format!(" ×{}", n(&m, "returns")))}
                                                {(!s(&m, "after_replay").is_empty()).then(|| { let after = s(&m, "after_replay").to_string(); view! { " → " <span class=api::status_class(&after) data-after=after.clone()>{after.replace('_', " ")}</span> } })}</td>
                                            <td class="actions">{(state == "dead").then(|| {
                                                let (id5, id6, origin4, body) = (id.clone(), id.clone(), origin2.clone(), s(&m, "body").to_string());
                                                view! {
                                                    <button class="replay" on:click=move |_| replay_one(id.clone(), origin2.clone())>"Replay"</button>
                                                    <button class="edit-replay" on:click=move |_| edit_replay(id5.clone(), origin4.clone(), body.clone())>"Edit & replay"</button>
                                                    <button class="discard" on:click=move |_| discard(id6.clone())>"Discard"</button>
                                                }
                                            })}</td>
                                        </tr>
                                    }
                                }).collect_view()}
                            </tbody>
                        </table>
                        </div>
                    }.into_any()
                }
            }
        }}
        <ReplayOutcomes replays=replays/>
    }
}

/// The replays started here, each with the original message's live status.
#[component]
fn ReplayOutcomes(replays: RwSignal<Vec<Replayed>>) -> impl IntoView {
    let live = crate::live::use_live();
    let statuses = RwSignal::new(std::collections::BTreeMap::<String, String>::new());
    Effect::new(move |_| {
        live.changed.track();
        for r in replays.get() {
            if r.origin.is_empty() {
                continue;
            }
            leptos::task::spawn_local(async move {
                if let Ok(v) = api::get(&format!("/api/v1/messages/{}", api::enc(&r.origin))).await {
                    // The group's own status when the trace has it.
                    let status = arr(&v, "groups")
                        .iter()
                        .find(|g| s(g, "group") == r.group)
                        .map(|g| s(g, "status"))
                        .unwrap_or_else(|| s(&v, "status"))
                        .to_string();
                    statuses.update(|m| {
                        m.insert(r.origin.clone(), status);
                    });
                }
            });
        }
    });
    move || {
        let list = replays.get();
        (!list.is_empty()).then(|| {
            view! {
                <section aria-labelledby="replays-h" class="replays">
                    <h2 id="replays-h">"Replays from this page"</h2>
                    <ul>
                        {list.into_iter().map(|r| {
                            let st = statuses.with(|m| m.get(&r.origin).cloned()).unwrap_or_else(|| "replayed".into());
                            view! {
                                <li>
                                    "new record " <span class="id">{r.new_id.clone()}</span>
                                    {(!r.origin.is_empty()).then(|| view! {
                                        " of " <A href=format!("/messages/{}", r.origin)>{r.origin.clone()}</A>
                                        " → " <span class=api::status_class(&st) data-outcome=st.clone()>{st.clone()}</span>
                                    })}
                                </li>
                            }
                        }).collect_view()}
                    </ul>
                </section>
            }
        })
    }
}
