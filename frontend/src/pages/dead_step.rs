//! The dead-letter step of a message's timeline: shown in red at the end
//! of the path when a group dead-lettered the message, with the group and
//! the last failure reason, and a Replay button right there. The button
//! finds the group's dead letter for this message (`GET /api/v1/dlq`) and
//! replays it (`POST /api/v1/dlq/{id}/replay`) behind a confirmation; the
//! answer is said in a sentence, and the timeline follows live.

use leptos::prelude::*;
use serde_json::Value;

use crate::api::{self, arr, s};

fn confirm(msg: &str) -> bool {
    web_sys::window()
        .and_then(|w| w.confirm_with_message(msg).ok())
        .unwrap_or(false)
}

/// The groups that dead-lettered message `v` (per-group status `dead`).
pub fn dead_groups(v: &Value) -> Vec<String> {
    arr(v, "groups")
        .iter()
        .filter(|g| s(g, "status") == "dead")
        .map(|g| s(g, "group").to_string())
        .collect()
}

#[component]
pub fn DeadStep(id: String, groups: Vec<String>, reason: String) -> impl IntoView {
    let said = RwSignal::new(None::<(bool, String)>);
    let busy = RwSignal::new(false);
    let replay = {
        let (id, groups) = (id.clone(), groups.clone());
        move |_| {
            if busy.get_untracked() || !confirm(&format!("Replay message {id} to {}?", groups.join(", "))) {
                return;
            }
            busy.set(true);
            let (id, groups) = (id.clone(), groups.clone());
            leptos::task::spawn_local(async move {
                let mut out = Vec::new();
                let mut ok = true;
                for g in groups {
                    let url = format!("/api/v1/dlq?group={}&state=dead", api::enc(&g));
                    let letter = match api::get(&url).await {
                        Ok(v) => arr(&v, "messages")
                            .iter()
                            .find(|d| s(d, "origin_id") == id)
                            .map(|d| s(d, "id").to_string()),
                        Err(e) => {
                            ok = false;
                            out.push(format!("Could not read the dead letters of {g}: {e}."));
                            continue;
                        }
                    };
                    let Some(letter) = letter else {
                        out.push(format!(
                            "Group {g} has no dead letter of this message waiting (replayed or discarded already)."
                        ));
                        continue;
                    };
                    match api::post(&format!("/api/v1/dlq/{}/replay", api::enc(&letter))).await {
                        Ok(v) => out.push(format!("Replayed to {g} as {}.", s(&v, "id"))),
                        Err(e) => {
                            ok = false;
                            out.push(format!("The replay to {g} was refused: {e}."));
                        }
                    }
                }
                said.set(Some((ok, out.join(" "))));
                busy.set(false);
            });
        }
    };
    view! {
        <li class="step lost" data-stage="dlq">
            <span class="dot" aria-hidden="true"></span>
            <span class="label">"Dead letter"</span>
            <span class="note">{format!("in {}", groups.join(", "))}</span>
            {(!reason.is_empty()).then(|| view! { <span class="why">{reason.clone()}</span> })}
            <button class="replay-here" on:click=replay disabled=move || busy.get()>"Replay"</button>
            {move || said.get().map(|(ok, m)| view! { <span class=if ok { "notice ok" } else { "notice error" } role="status">{m}</span> })}
        </li>
    }
}
