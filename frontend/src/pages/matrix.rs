//! `/matrix`: the reliability matrix (flush × replication, measured under
//! injected faults) is a later issue; until then this page says what it
//! will show and how to measure each flush mode by hand today.

use leptos::prelude::*;

#[component]
pub fn Matrix() -> impl IntoView {
    view! {
        <h1>"Reliability matrix"</h1>
        <p class="empty">"No matrix run yet: " <code>"waybill matrix"</code> " arrives with a later issue."</p>
        <p>
            "The matrix will run one workload against each configuration — flush sync/async × replication none/sync/async/raft — "
            "inject faults (process kill, a power loss that drops unsynced writes, primary loss with failover, a partitioned replica) "
            "and show per configuration: throughput, p99 latency, messages acknowledged, messages lost and where they were lost, "
            "each lost message linked to its timeline."
        </p>
        <h2>"Measure the flush modes today"</h2>
        <p>"Each command starts its own node in a temporary folder and prints throughput, latency and fsync figures:"</p>
        <pre class="cmd">"waybill bench --flush sync  --producers 8 --inflight 32 --size 1024 --duration 10\nwaybill bench --flush async --producers 8 --inflight 32 --size 1024 --duration 10"</pre>
        <p>"Add " <code>"--json"</code> " for one machine-readable object, " <code>"--consumers 1"</code> " for end-to-end latency."</p>
        <div class="scroll">
        <table>
            <thead><tr><th scope="col">"flush"</th><th scope="col">"none"</th><th scope="col">"sync"</th><th scope="col">"async"</th><th scope="col">"raft"</th></tr></thead>
            <tbody>
                <tr><td>"sync"</td><td>"waybill bench --flush sync"</td><td>"–"</td><td>"–"</td><td>"–"</td></tr>
                <tr><td>"async"</td><td>"waybill bench --flush async"</td><td>"–"</td><td>"–"</td><td>"–"</td></tr>
            </tbody>
        </table>
        </div>
        <p class="sub">"Replication columns fill in when replication and the matrix command land."</p>
    }
}
