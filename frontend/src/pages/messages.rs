//! `/messages`: search the trace by key, id, topic, tag, status and time
//! range. The URL's query is the search: `?key=K` pre-fills the form and
//! runs at once, submitting the form navigates to the new query, and the
//! first page reloads live as messages move on. Every answer says whether
//! it covered everything: when not, the page says how far back it looked
//! and offers "Load more" (the API's cursor), appending pages; a status
//! filter that stopped early keeps scanning on demand the same way. A
//! malformed id or a range that ends before it starts is named beside its
//! field and not sent.

use leptos::prelude::*;
use leptos_router::components::A;
use leptos_router::hooks::{use_navigate, use_query_map};
use leptos_router::NavigateOptions;
use wasm_bindgen::JsValue;

use crate::api::{self, arr, s, Load};

/// Search fields, in the order of the form and the URL.
const FIELDS: &[&str] = &["key", "id", "topic", "tag", "status", "from", "to"];
/// Messages per page.
const PAGE: usize = 100;
const STATUSES: &[&str] = &[
    "",
    "stored",
    "replicated",
    "delivered",
    "consumed",
    "retrying",
    "dead",
    "replayed",
    "lost",
    "half",
    "rolled_back",
];

/// `datetime-local` value (viewer's zone) → epoch milliseconds.
fn local_to_ms(v: &str) -> Option<String> {
    let t = js_sys::Date::new(&JsValue::from_str(v)).get_time();
    (!t.is_nan()).then(|| format!("{}", t as i64))
}

#[component]
pub fn Messages() -> impl IntoView {
    let query = use_query_map();
    let navigate = use_navigate();
    let result = RwSignal::new(Load::Loading);
    // Pages after the first ("Load more"): their messages and the cursor
    // to go on from; cleared when the question changes.
    let extra: RwSignal<Vec<serde_json::Value>> = RwSignal::new(Vec::new());
    // Set once "Load more" was used; before that the first page says.
    let later: RwSignal<Option<More>> = RwSignal::new(None);
    let more = move || {
        later.get().or_else(|| {
            result.with(|l| match l {
                Load::Ready(v) => Some(More::of(v)),
                _ => None,
            })
        })
    };
    let invalid: RwSignal<Vec<(&'static str, String)>> = RwSignal::new(Vec::new());
    let fields: Vec<(&'static str, RwSignal<String>)> =
        FIELDS.iter().map(|f| (*f, RwSignal::new(String::new()))).collect();
    let field = {
        let fields = fields.clone();
        move |name: &str| fields.iter().find(|(f, _)| *f == name).map(|(_, s)| *s)
    };
    // The URL fills the form (also on back/forward).
    {
        let fields = fields.clone();
        Effect::new(move |_| {
            let q = query.get();
            for (f, sig) in &fields {
                sig.set(q.get(f).unwrap_or_default());
            }
            extra.set(Vec::new());
            later.set(None);
        });
    }
    // Bumped by a submit: the same question asked again is asked again
    // (a navigation to the URL already shown would not fetch).
    let asked = RwSignal::new(0u32);
    let base_url = move || {
        asked.track();
        let q = query.get();
        let mut parts = vec![format!("limit={PAGE}")];
        for f in FIELDS {
            if let Some(v) = q.get(f).filter(|v| !v.is_empty()) {
                let v = if *f == "from" || *f == "to" {
                    local_to_ms(&v).unwrap_or(v)
                } else {
                    v
                };
                parts.push(format!("{f}={}", api::enc(&v)));
            }
        }
        format!("/api/v1/messages?{}", parts.join("&"))
    };
    api::load_live(move || Some(base_url()), result);
    let load_more = move |_| {
        let now = untrack(more);
        let Some(cursor) = now.as_ref().and_then(|m| m.cursor.clone()) else {
            return;
        };
        let url = format!("{}&cursor={}", untrack(base_url), api::enc(&cursor));
        later.set(Some(More {
            cursor: None,
            loading: true,
            ..now.unwrap_or_default()
        }));
        leptos::task::spawn_local(async move {
            match api::get(&url).await {
                Ok(v) => {
                    extra.update(|e| e.extend(arr(&v, "messages").iter().cloned()));
                    later.set(Some(More::of(&v)));
                }
                Err(e) => later.set(Some(More {
                    cursor: Some(cursor),
                    error: Some(e.to_string()),
                    ..More::default()
                })),
            }
        });
    };
    let submit = {
        let fields = fields.clone();
        move |ev: leptos::ev::SubmitEvent| {
            ev.prevent_default();
            let get = |f: &str| {
                fields
                    .iter()
                    .find(|(n, _)| *n == f)
                    .map(|(_, s)| s.get_untracked().trim().to_string())
                    .unwrap_or_default()
            };
            let problems = check(&get("id"), &get("from"), &get("to"));
            let stop = !problems.is_empty();
            invalid.set(problems);
            if stop {
                return;
            }
            let parts: Vec<String> = fields
                .iter()
                .filter_map(|(f, sig)| {
                    let v = sig.get_untracked();
                    (!v.trim().is_empty()).then(|| format!("{f}={}", api::enc(v.trim())))
                })
                .collect();
            let url = if parts.is_empty() {
                "/messages".to_string()
            } else {
                format!("/messages?{}", parts.join("&"))
            };
            result.set(Load::Loading);
            extra.set(Vec::new());
            later.set(None);
            asked.update(|n| *n = n.wrapping_add(1));
            navigate(&url, NavigateOptions::default());
        }
    };
    let status_sig = field("status");
    let input = move |name: &'static str, label: &'static str, kind: &'static str, hint: &'static str| {
        let sig = field(name);
        let problem = move || {
            invalid
                .get()
                .into_iter()
                .find(|(f, _)| *f == name)
                .map(|(_, why)| view! { <span class="field-error" role="alert">{why}</span> })
        };
        view! {
            <label>
                <span>{label}</span>
                <input type=kind name=name placeholder=hint
                    prop:value=move || sig.map(|s| s.get()).unwrap_or_default()
                    on:input=move |ev| if let Some(s) = sig { s.set(event_target_value(&ev)) } />
                {problem}
            </label>
        }
    };
    view! {
        <h1>"Messages"</h1>
        <form class="search" on:submit=submit role="search">
            {input("key", "Key", "search", "order-42")}
            {input("id", "Message id", "search", "0001…")}
            {input("topic", "Topic", "search", "orders")}
            {input("tag", "Tag", "search", "paid")}
            <label>
                <span>"Status"</span>
                <select name="status" on:change=move |ev| if let Some(s) = status_sig { s.set(event_target_value(&ev)) }>
                    {STATUSES.iter().map(|st| view! {
                        <option value=*st selected=move || status_sig.map(|s| s.get() == *st).unwrap_or(false)>
                            {if st.is_empty() { "any" } else { st }}
                        </option>
                    }).collect_view()}
                </select>
            </label>
            {input("from", "From", "datetime-local", "")}
            {input("to", "To", "datetime-local", "")}
            <button type="submit">"Search"</button>
        </form>
        {api::show(result, move |v| {
            let complete = more().is_none_or(|m| m.complete);
            let mut rows = arr(&v, "messages").to_vec();
            let seen: std::collections::HashSet<String> = rows.iter().map(|m| s(m, "id").to_string()).collect();
            rows.extend(extra.get().into_iter().filter(|m| !seen.contains(s(m, "id"))));
            results(rows, complete).into_any()
        })}
        {move || match more() {
            Some(m) if m.complete => {
                let n = arr_len(&result) + extra.with(Vec::len);
                (n > 0).then(|| view! { <p class="sub coverage">{format!("{n} message(s): every match")}</p> }.into_any())
            }
            Some(m) => {
                let n = arr_len(&result) + extra.with(Vec::len);
                let back = m.scanned.as_deref().map(api::time).unwrap_or_default();
                Some(view! {
                    <p class="sub coverage">
                        {format!("{n} message(s) so far; scanned back to {back}: more may match. ")}
                        <button class="more" on:click=load_more disabled=m.loading>
                            {if m.loading { "Loading…" } else { "Load more" }}
                        </button>
                        {m.error.map(|e| view! { <span class="error" role="alert">{" "}{e}</span> })}
                    </p>
                }.into_any())
            }
            None => None,
        }}
    }
}

/// Where the search stands after the pages loaded so far.
#[derive(Debug, Clone, Default, PartialEq)]
struct More {
    /// The cursor to go on from (`None` while loading or when complete).
    cursor: Option<String>,
    complete: bool,
    /// Stored time of the oldest message looked at.
    scanned: Option<String>,
    loading: bool,
    error: Option<String>,
}

impl More {
    fn of(v: &serde_json::Value) -> More {
        let cursor = v.get("next_cursor").and_then(|c| c.as_str()).map(str::to_string);
        More {
            complete: cursor.is_none(),
            cursor,
            scanned: v.get("scanned_down_to").and_then(|c| c.as_str()).map(str::to_string),
            loading: false,
            error: None,
        }
    }
}

fn arr_len(result: &RwSignal<Load>) -> usize {
    result.with(|l| match l {
        Load::Ready(v) => arr(v, "messages").len(),
        _ => 0,
    })
}

/// What is wrong with the question, per field, before it is sent.
fn check(id: &str, from: &str, to: &str) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    if !id.is_empty() && (id.len() != 28 || !id.bytes().all(|b| b.is_ascii_hexdigit())) {
        out.push((
            "id",
            format!("not a message id: ids are 28 hex digits ({} given)", id.len()),
        ));
    }
    if let (Some(f), Some(t)) = (local_to_ms(from), local_to_ms(to)) {
        if f.parse::<i64>().ok() > t.parse::<i64>().ok() {
            out.push(("to", "ends before From".to_string()));
        }
    }
    out
}

/// This dashboard's own address (the node's HTTP address), for commands
/// the page suggests.
fn origin() -> String {
    web_sys::window()
        .and_then(|w| w.location().origin().ok())
        .unwrap_or_else(|| "http://127.0.0.1:8080".into())
}

fn results(rows: Vec<serde_json::Value>, complete: bool) -> impl IntoView {
    if rows.is_empty() && !complete {
        return view! { <p class="empty">"No match in what was scanned so far."</p> }.into_any();
    }
    if rows.is_empty() {
        return view! {
            <p class="empty">"No message matches. Produce one: "
                <code>{format!("curl -XPOST {}/api/v1/topics/orders/messages -H 'content-type: application/json' -d '{{\"key\":\"order-42\",\"body\":\"hello\"}}'", origin())}</code></p>
        }
        .into_any();
    }
    view! {
        <p class="sub">"Newest first"</p>
        <div class="scroll">
        <table class="results">
            <thead><tr>
                <th scope="col">"id"</th><th scope="col">"topic"</th><th scope="col">"key"</th>
                <th scope="col">"status"</th><th scope="col">"stage reached"</th><th scope="col">"stored"</th>
            </tr></thead>
            <tbody>
                {rows.into_iter().map(|m| {
                    let id = s(&m, "id").to_string();
                    let status = s(&m, "status").to_string();
                    view! {
                        <tr>
                            <td class="id"><A href=format!("/messages/{id}")>{id.clone()}</A></td>
                            <td>{s(&m, "topic").to_string()}</td>
                            <td class="key" title=s(&m, "key").to_string()>{s(&m, "key").to_string()}</td>
                            <td><span class=api::status_class(&status)>{status.clone()}</span></td>
                            <td>{api::stage_reached(&status)}</td>
                            <td>{api::time(s(&m, "stored_at"))}</td>
                        </tr>
                    }
                }).collect_view()}
            </tbody>
        </table>
        </div>
    }
    .into_any()
}
