//! `/messages`: search the trace by key, id, topic, status and time range.
//! The URL's query is the search: `?key=K` pre-fills the form and runs at
//! once, submitting the form navigates to the new query, and the result
//! reloads live as messages move on.

use leptos::prelude::*;
use leptos_router::components::A;
use leptos_router::hooks::{use_navigate, use_query_map};
use leptos_router::NavigateOptions;
use wasm_bindgen::JsValue;

use crate::api::{self, arr, s, Load};

/// Search fields, in the order of the form and the URL.
const FIELDS: &[&str] = &["key", "id", "topic", "status", "from", "to"];
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
        });
    }
    api::load_live(
        move || {
            let q = query.get();
            let mut parts = vec!["limit=100".to_string()];
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
            Some(format!("/api/v1/messages?{}", parts.join("&")))
        },
        result,
    );
    let submit = {
        let fields = fields.clone();
        move |ev: leptos::ev::SubmitEvent| {
            ev.prevent_default();
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
            navigate(&url, NavigateOptions::default());
        }
    };
    let status_sig = field("status");
    let input = move |name: &'static str, label: &'static str, kind: &'static str, hint: &'static str| {
        let sig = field(name);
        view! {
            <label>
                <span>{label}</span>
                <input type=kind name=name placeholder=hint
                    prop:value=move || sig.map(|s| s.get()).unwrap_or_default()
                    on:input=move |ev| if let Some(s) = sig { s.set(event_target_value(&ev)) } />
            </label>
        }
    };
    view! {
        <h1>"Messages"</h1>
        <form class="search" on:submit=submit role="search">
            {input("key", "Key", "search", "order-42")}
            {input("id", "Message id", "search", "0001…")}
            {input("topic", "Topic", "search", "orders")}
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
        {api::show(result, |v| results(&v).into_any())}
    }
}

/// This dashboard's own address (the node's HTTP address), for commands
/// the page suggests.
fn origin() -> String {
    web_sys::window()
        .and_then(|w| w.location().origin().ok())
        .unwrap_or_else(|| "http://127.0.0.1:8080".into())
}

fn results(v: &serde_json::Value) -> impl IntoView {
    let rows = arr(v, "messages").to_vec();
    if rows.is_empty() {
        return view! {
            <p class="empty">"No message matches. Produce one: "
                <code>{format!("curl -XPOST {}/api/v1/topics/orders/messages -H 'content-type: application/json' -d '{{\"key\":\"order-42\",\"body\":\"hello\"}}'", origin())}</code></p>
        }
        .into_any();
    }
    view! {
        <p class="sub">{format!("{} message(s), newest first", rows.len())}</p>
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
                            <td>{s(&m, "key").to_string()}</td>
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
