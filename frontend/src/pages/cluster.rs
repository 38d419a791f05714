//! `/cluster`: members, roles, log positions and replication lag from
//! `GET /api/v1/cluster`. A node without that endpoint (replication not
//! built in yet) is shown as the single member it is, from `/healthz` and
//! `/api/v1/node`.

use leptos::prelude::*;
use serde_json::{json, Value};

use crate::api::{self, n, s, Load};

/// The member table, with the single-node fallback.
#[component]
pub fn Members() -> impl IntoView {
    let cluster = RwSignal::new(Load::Loading);
    let node = RwSignal::new(Load::Loading);
    api::load_live(|| Some("/api/v1/cluster".into()), cluster);
    api::load_live(|| Some("/api/v1/node".into()), node);
    move || match (cluster.get(), node.get()) {
        (Load::Ready(v), _) => super::overview::members(&v).into_any(),
        (Load::Failed(e), Load::Ready(nd)) if e.contains("HTTP 404") => {
            let single = json!({"nodes": [{
                "id": nd.get("node_id").cloned().unwrap_or(Value::Null),
                "role": "single",
                "alive": !nd.get("failed").and_then(Value::as_bool).unwrap_or(false),
                "log_end": n(&nd, "log_end"),
                "flushed": n(&nd, "flushed"),
            }]});
            view! {
                {super::overview::members(&single)}
                <p class="sub">"One node, no replication: this node does not offer the cluster API yet."</p>
            }
            .into_any()
        }
        (Load::Failed(e), Load::Failed(_)) => view! { <p class="error" role="alert">{e}</p> }.into_any(),
        (Load::Failed(e), _) if !e.contains("HTTP 404") => view! { <p class="error" role="alert">{e}</p> }.into_any(),
        (Load::Loading, _) => view! { <p class="loading" role="status">"Loading the members…"</p> }.into_any(),
        (_, _) => view! { <p class="loading" role="status">"Loading this node…"</p> }.into_any(),
    }
}

#[component]
pub fn Cluster() -> impl IntoView {
    let node = RwSignal::new(Load::Loading);
    api::load_live(|| Some("/api/v1/node".into()), node);
    view! {
        <h1>"Cluster"</h1>
        <p>"Members, their roles and log positions (bytes). Replication lag is the primary's log end minus what a replica has."</p>
        <Members/>
        <h2>"This node"</h2>
        {api::show(node, |v| view! {
            <dl class="facts">
                <dt>"node id"</dt><dd>{v.get("node_id").map(|x| x.to_string()).unwrap_or_default()}</dd>
                <dt>"flush"</dt><dd>{s(&v, "flush").to_string()} {(s(&v, "flush") == "async").then(|| format!(" (fsync every {} ms)", n(&v, "flush_interval_ms")))}</dd>
                <dt>"replication"</dt><dd>{s(&v, "replication").to_string()}</dd>
                <dt>"trace store"</dt><dd>{if v.get("tracing").and_then(Value::as_bool).unwrap_or(false) { "on" } else { "off (--trace-db none)" }}</dd>
                <dt>"max reconsume times"</dt><dd>{n(&v, "max_reconsume_times")}</dd>
                <dt>"retry delays"</dt><dd>{s(&v, "retry_delays").to_string()}</dd>
            </dl>
        }.into_any())}
    }
}
