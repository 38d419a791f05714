//! Liveness and numbers: `GET /healthz` and `GET /metrics`.
//!
//! `/healthz` is 200 while the node serves: `"ok"`, or `"degraded"` with
//! the damage recovery found (corrupt regions are listed, never served) or
//! with the disk low on space (`disk.state` `low`: writes still accepted;
//! `full`: writes refused until space returns, reads served); 503 once an
//! fsync or a log write failed and the store refuses writes for good. Its
//! `recovery` detail says whether this boot scanned the log (and why) or
//! trusted a clean shutdown's marker. Its `tracer` detail (`connecting`,
//! `ok`, `degraded`, `down`, or `off`) never changes the status code: the
//! broker serves whatever its trace store does.
//! `/metrics` is Prometheus text exposition.

use std::fmt::Write;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde_json::json;

use super::AppState;
use crate::storage::space::DiskState;
use crate::storage::store::FSYNC_BUCKETS_US;
use crate::storage::DamageKind;

pub async fn healthz(State(state): State<AppState>) -> impl IntoResponse {
    let store = state.broker.store();
    let stats = store.stats();
    let damage = store.damage();
    let corrupt = damage.iter().filter(|d| d.kind != DamageKind::TornTail).count();
    let disk = store.disk();
    let (code, status) = match (store.failure(), corrupt, disk.state) {
        (Some(_), _, _) => (StatusCode::SERVICE_UNAVAILABLE, "failed"),
        (None, 0, DiskState::Ok) => (StatusCode::OK, "ok"),
        (None, _, _) => (StatusCode::OK, "degraded"),
    };
    (
        code,
        Json(json!({
            "status": status,
            "error": store.failure(),
            "node_id": store.node_id(),
            "epoch": stats.epoch,
            "log_end": stats.log_end,
            "flushed": stats.flushed,
            "damage": damage,
            "recovery": store.opened(),
            "disk": disk,
            "tracer": match state.tracer.as_ref() {
                Some(t) => json!(t.health()),
                None => json!({ "state": "off" }),
            },
        })),
    )
}

/// `GET /api/v1/alerts`: alerts firing now.
pub async fn alerts(State(state): State<AppState>) -> Json<serde_json::Value> {
    let firing = state.alerts.as_ref().map(|a| a.firing()).unwrap_or_default();
    Json(json!({ "alerts": firing }))
}

pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let store = state.broker.store();
    let s = store.stats();
    let mut out = String::new();
    let mut counter = |name: &str, help: &str, kind: &str, v: u64| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}");
    };
    counter(
        "waybill_messages_stored_total",
        "Messages appended to the commit log.",
        "counter",
        s.appended_msgs,
    );
    counter(
        "waybill_bytes_stored_total",
        "Bytes appended to the commit log.",
        "counter",
        s.appended_bytes,
    );
    counter(
        "waybill_messages_flushed_total",
        "Messages covered by a completed fsync.",
        "counter",
        s.synced_msgs,
    );
    counter("waybill_log_end_bytes", "Commit log end position.", "gauge", s.log_end);
    counter(
        "waybill_log_flushed_bytes",
        "Commit log position covered by fsync.",
        "gauge",
        s.flushed,
    );
    counter(
        "waybill_log_segments",
        "Commit log segment files.",
        "gauge",
        s.segments as u64,
    );
    if let Some(t) = state.tracer.as_ref() {
        counter(
            "waybill_trace_queue_depth",
            "Trace events waiting to be written.",
            "gauge",
            t.queue_depth(),
        );
        counter(
            "waybill_trace_shed_total",
            "Trace events dropped because the tracer queue was full (timelines show a gap).",
            "counter",
            t.shed_count(),
        );
        counter(
            "waybill_trace_unwritten_messages",
            "Acknowledged messages the tracer holds unwritten (a crash now could take them unrecorded).",
            "gauge",
            t.unwritten(),
        );
        let w = t.window_totals();
        counter(
            "waybill_loss_windows_total",
            "Loss windows the audit reported for this node: spans where acknowledged messages may be gone \
             unrecorded.",
            "counter",
            w.windows,
        );
        counter(
            "waybill_loss_window_max_messages",
            "Upper bound on acknowledged messages gone unrecorded, summed over this node's bounded loss windows.",
            "gauge",
            w.max_messages,
        );
        counter(
            "waybill_loss_windows_unbounded",
            "Loss windows of this node whose count has no bound (a boot whose tracer never wrote a mark).",
            "gauge",
            w.unbounded,
        );
    }
    counter(
        "waybill_storage_failed",
        "1 after a failed fsync or log write: the store refuses writes.",
        "gauge",
        u64::from(store.failure().is_some()),
    );
    let disk = store.disk();
    counter(
        "waybill_disk_available_bytes",
        "Free space on the data directory's disk.",
        "gauge",
        disk.available_bytes,
    );
    counter(
        "waybill_disk_reserve_bytes",
        "Writes are refused below this much free space (and resume above it).",
        "gauge",
        disk.reserve_bytes,
    );
    counter(
        "waybill_disk_writes_refused",
        "1 while the disk is below the reserve and writes are refused.",
        "gauge",
        u64::from(disk.state == DiskState::Full),
    );
    let _ = writeln!(
        out,
        "# HELP waybill_storage_recovery_scanned 1 when this boot scanned the log, 0 when a clean shutdown's marker stood in for the scan.\n# TYPE waybill_storage_recovery_scanned gauge\nwaybill_storage_recovery_scanned {}",
        u8::from(store.opened().scanned)
    );
    let _ = writeln!(out, "# HELP waybill_storage_damaged_regions Log regions recovery could not read, by kind.\n# TYPE waybill_storage_damaged_regions gauge");
    for (kind, label) in [
        (DamageKind::Corrupt, "corrupt"),
        (DamageKind::TornTail, "torn_tail"),
        (DamageKind::MissingFlushed, "missing_flushed"),
    ] {
        let n = store.damage().iter().filter(|d| d.kind == kind).count();
        let _ = writeln!(out, "waybill_storage_damaged_regions{{kind=\"{label}\"}} {n}");
    }
    if let Some(t) = state.tracer.as_ref() {
        let now = t.state();
        let _ = writeln!(
            out,
            "# HELP waybill_trace_state The tracer's state (1 for the current one).\n# TYPE waybill_trace_state gauge"
        );
        for st in crate::trace::State::ALL {
            let _ = writeln!(
                out,
                "waybill_trace_state{{state=\"{}\"}} {}",
                st.name(),
                u8::from(st == now)
            );
        }
    }
    let _ = writeln!(out, "# HELP waybill_fsync_seconds Commit log fsync latency (one per group commit).\n# TYPE waybill_fsync_seconds histogram");
    let mut cumulative = 0;
    for (i, le) in FSYNC_BUCKETS_US.iter().enumerate() {
        cumulative += s.fsync_hist[i];
        let _ = writeln!(
            out,
            "waybill_fsync_seconds_bucket{{le=\"{}\"}} {cumulative}",
            *le as f64 / 1e6
        );
    }
    cumulative += s.fsync_hist[FSYNC_BUCKETS_US.len()];
    let _ = writeln!(out, "waybill_fsync_seconds_bucket{{le=\"+Inf\"}} {cumulative}");
    let _ = writeln!(out, "waybill_fsync_seconds_sum {}", s.fsync_nanos as f64 / 1e9);
    let _ = writeln!(out, "waybill_fsync_seconds_count {}", s.fsyncs);
    if let (Some(node), Some(c)) = (&state.node, state.cluster()) {
        let st = crate::replication::status::local(node);
        let _ = writeln!(
            out,
            "# HELP waybill_replication_info Replication mode and role of this node (value 1).\n\
             # TYPE waybill_replication_info gauge\n\
             waybill_replication_info{{mode=\"{}\",role=\"{}\",term=\"{}\"}} 1",
            c.mode.name(),
            st.role,
            st.term
        );
        let _ = writeln!(
            out,
            "# HELP waybill_replicated_position Log position confirmed by a replica (primary) or to the primary \
             (replica).\n# TYPE waybill_replicated_position gauge\nwaybill_replicated_position {}",
            st.replicated
        );
        let replicas = c.replicas();
        if !replicas.is_empty() {
            let _ = writeln!(
                out,
                "# HELP waybill_replica_lag_bytes Log bytes each replica has not confirmed.\n\
                 # TYPE waybill_replica_lag_bytes gauge"
            );
            for (id, info) in replicas {
                let lag = s.log_end.saturating_sub(info.durable);
                let _ = writeln!(out, "waybill_replica_lag_bytes{{replica=\"{id}\"}} {lag}");
                let _ = writeln!(
                    out,
                    "waybill_replica_connected{{replica=\"{id}\"}} {}",
                    u8::from(info.connected)
                );
            }
        }
    }
    super::metrics::write(&mut out, &state.broker, state.cluster());
    if let Some(a) = state.alerts.as_ref() {
        out.push_str(&a.metrics_text());
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out)
}
