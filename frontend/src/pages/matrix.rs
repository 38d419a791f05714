//! `/matrix`: the last reliability-matrix run kept by this node
//! (`GET /api/v1/matrix`): a grid of flush × replication rows against the
//! faults, each cell its verdict and what it lost, then every run in full
//! (throughput, latency, counts, what the fault did, why it failed) with
//! each lost message linked to `/matrix/messages/{id}`, where its timeline
//! is shown as its own node served it before the run's cluster went away.

use leptos::prelude::*;
use leptos_router::components::A;
use leptos_router::hooks::use_params_map;
use serde_json::Value;

use crate::api::{self, arr, n, s, Load};

const FAULTS: &[&str] = &[
    "kill",
    "power-loss",
    "primary-loss",
    "partition",
    "corrupt-minority",
    "disk-full",
];

fn verdict_class(v: &str) -> &'static str {
    match v {
        "pass" => "st st-ok",
        "fail" | "error" => "st st-bad",
        "not exercised" | "skipped" => "st st-warn",
        _ => "st",
    }
}

#[component]
pub fn Matrix() -> impl IntoView {
    let data = RwSignal::new(Load::Loading);
    leptos::task::spawn_local(async move {
        data.set(Load::from(api::get("/api/v1/matrix").await));
    });
    view! {
        <h1>"Reliability matrix"</h1>
        <p>
            "Each run starts real " <code>"waybill serve"</code> " processes for one configuration (flush × replication), "
            "drives producers and a consumer group, injects one fault while data is in flight, and checks what producers were told "
            "against the final log, the consumers and the tracer's audit."
        </p>
        {move || match data.get() {
            Load::Loading => view! { <p class="loading" role="status">"Loading…"</p> }.into_any(),
            Load::Failed(e) if e.contains("HTTP 404") => view! {
                <p class="empty">"No matrix run kept by this node yet. Run one (about 2 minutes) and reload:"</p>
                <pre class="cmd">"waybill matrix --quick --data-dir ./data"</pre>
                <p class="sub">"Without " <code>"--quick"</code> " it runs every configuration against every fault (see README for how long)."</p>
            }.into_any(),
            Load::Failed(e) => view! { <p class="error" role="alert">{e}</p> }.into_any(),
            Load::Ready(v) => report(&v).into_any(),
        }}
    }
}

fn report(v: &Value) -> impl IntoView {
    let rows = arr(v, "rows").to_vec();
    let passed = v.get("passed").and_then(Value::as_bool).unwrap_or(false);
    let mut modes: Vec<(String, String)> = Vec::new();
    for c in &rows {
        let m = (s(c, "flush").to_string(), s(c, "replication").to_string());
        if !modes.contains(&m) {
            modes.push(m);
        }
    }
    let faults: Vec<&str> = FAULTS
        .iter()
        .copied()
        .filter(|f| rows.iter().any(|c| s(c, "fault") == *f))
        .collect();
    let grid_cells = rows.clone();
    view! {
        <p class="facts-line" data-testid="matrix-summary">
            <span class=if passed { "st st-ok" } else { "st st-bad" }>{if passed { "every promise held" } else { "promise broken" }}</span>
            {format!(" · {} run(s) · {:.0} s · {} core(s) · started {}{}", rows.len(), n(v, "duration_ms") as f64 / 1000.0, n(v, "cores"), api::time(s(v, "started")), if v.get("quick").and_then(Value::as_bool).unwrap_or(false) { " · quick" } else { "" })}
        </p>
        <div class="scroll">
        <table class="matrix-grid">
            <thead><tr><th scope="col">"flush / replication"</th>
                {faults.iter().map(|f| view! { <th scope="col">{f.to_string()}</th> }).collect_view()}
            </tr></thead>
            <tbody>{modes.into_iter().map(|(flush, repl)| {
                let row: Vec<Option<Value>> = faults.iter().map(|f| grid_cells.iter().find(|c| s(c, "flush") == flush && s(c, "replication") == repl && s(c, "fault") == *f).cloned()).collect();
                view! {
                    <tr><th scope="row">{format!("{flush} / {repl}")}</th>
                    {row.into_iter().map(|c| match c {
                        None => view! { <td>"–"</td> }.into_any(),
                        Some(c) => {
                            let verdict = s(&c, "verdict").to_string();
                            view! { <td>
                                <span class=verdict_class(&verdict)>{verdict.clone()}</span>
                                {(n(&c, "acked") > 0).then(|| view! { <br/><span class="sub">{format!("lost {} of {}", n(&c, "lost"), n(&c, "acked"))}</span> })}
                            </td> }.into_any()
                        }
                    }).collect_view()}
                    </tr>
                }
            }).collect_view()}</tbody>
        </table>
        </div>
        <h2>"Every run"</h2>
        <div class="scroll">
        <table>
            <thead><tr>
                <th scope="col">"run"</th><th scope="col">"verdict"</th><th scope="col">"msgs/s"</th><th scope="col">"p99 ms"</th>
                <th scope="col">"acked"</th><th scope="col">"lost"</th><th scope="col">"found by audit"</th><th scope="col">"unknown"</th>
                <th scope="col">"dup. to consumers"</th><th scope="col">"unexpected"</th><th scope="col">"at risk at the fault"</th>
            </tr></thead>
            <tbody>{rows.into_iter().map(|c| run_rows(&c)).collect_view()}</tbody>
        </table>
        </div>
    }
}

fn run_rows(c: &Value) -> impl IntoView {
    let verdict = s(c, "verdict").to_string();
    let found = n(c, "audit_named") + n(c, "audit_windowed");
    let in_flight_at_fault = c
        .get("in_flight_at_fault")
        .and_then(Value::as_u64)
        .map_or("–".to_string(), |x| x.to_string());
    let notes: Vec<String> = arr(c, "reasons")
        .iter()
        .chain(arr(c, "fault_detail"))
        .filter_map(|x| x.as_str().map(str::to_string))
        .collect();
    let lost = arr(c, "lost_messages").to_vec();
    let stages: Vec<String> = c
        .get("loss_stages")
        .and_then(Value::as_object)
        .map(|m| m.iter().map(|(k, v)| format!("{k}: {v}")).collect())
        .unwrap_or_default();
    view! {
        <tr data-run=format!("{}/{}/{}", s(c, "flush"), s(c, "replication"), s(c, "fault"))>
            <td>{format!("{} / {} · {}", s(c, "flush"), s(c, "replication"), s(c, "fault"))}</td>
            <td><span class=verdict_class(&verdict)>{verdict.clone()}</span></td>
            <td class="num">{format!("{:.0}", c.get("msgs_per_sec").and_then(Value::as_f64).unwrap_or(0.0))}</td>
            <td class="num">{format!("{:.2}", c.get("p99_ms").and_then(Value::as_f64).unwrap_or(0.0))}</td>
            <td class="num">{n(c, "acked")}</td>
            <td class="num">{n(c, "lost")}{(!stages.is_empty()).then(|| format!(" ({})", stages.join(", ")))}</td>
            <td class="num">{format!("{found} of {}", n(c, "lost"))}</td>
            <td class="num">{n(c, "unknown")}</td>
            <td class="num">{n(c, "duplicated_to_consumers")}</td>
            <td class="num">{n(c, "unexpected")}</td>
            <td class="num" title=s(c, "in_flight_what").to_string()>{in_flight_at_fault}</td>
        </tr>
        <tr class="detail"><td colspan="11">
            <span class="sub">{s(c, "promise").to_string()}</span>
            {(!notes.is_empty()).then(|| view! { <ul>{notes.into_iter().map(|x| view! { <li>{x}</li> }).collect_view()}</ul> })}
            {(!lost.is_empty()).then(|| view! {
                <p>"Lost: " {lost.into_iter().map(|m| {
                    let id = s(&m, "id").to_string();
                    let how = match s(&m, "stage") { "" => s(&m, "found").to_string(), st => format!("{} at {st}", s(&m, "found")) };
                    view! { <A href=format!("/matrix/messages/{id}") attr:class="id">{id.clone()}</A> {format!(" ({how}) ")} }
                }).collect_view()}</p>
            })}
        </td></tr>
    }
}

/// `/matrix/messages/{id}`: a message the last run lost, with its timeline.
#[component]
pub fn LostMessage() -> impl IntoView {
    let params = use_params_map();
    let id = move || params.with(|p| p.get("id").unwrap_or_default());
    let data = RwSignal::new(Load::Loading);
    Effect::new(move |_| {
        let url = format!("/api/v1/matrix/messages/{}", api::enc(&id()));
        leptos::task::spawn_local(async move {
            data.set(Load::from(api::get(&url).await));
        });
    });
    view! {
        <p class="crumbs"><A href="/matrix">"Reliability matrix"</A> " / " <span class="id">{id}</span></p>
        {move || match data.get() {
            Load::Loading => view! { <p class="loading" role="status">"Loading…"</p> }.into_any(),
            Load::Failed(e) => view! { <p class="error" role="alert">{e}</p> }.into_any(),
            Load::Ready(v) => {
                let run = v.get("run").cloned().unwrap_or_default();
                let found = match (s(&v, "found"), s(&v, "stage")) {
                    ("named", st) => format!("the audit named it lost at {st}"),
                    ("window", _) => "inside a loss window the audit reported (no trace row could name it)".to_string(),
                    _ => "the audit did not find it: a silent loss".to_string(),
                };
                view! {
                    <p class="facts-line" data-testid="lost-run">
                        {format!("Lost in the run {} flush / {} replication · {} ({}): {found}.", s(&run, "flush"), s(&run, "replication"), s(&run, "fault"), s(&run, "verdict"))}
                    </p>
                    {match v.get("timeline").filter(|t| !t.is_null()) {
                        Some(t) => super::timeline::page(t).into_any(),
                        None => view! { <p class="empty">"Its node was not running at the end of the run: no timeline was kept."</p> }.into_any(),
                    }}
                }.into_any()
            }
        }}
    }
}
