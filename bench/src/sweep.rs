//! `waybill-bench --sweep`: the performance table in one go, every figure
//! from the same run (this disk's fsync latency changes on its own, so
//! only figures measured together are compared).
//!
//! Order:
//! 1. peers prepared (the NATS binary installed when missing), before any
//!    measurement;
//! 2. the disk: a 256 KiB append + fdatasync probe (its state: MB/s) and
//!    the raw loop (1 KiB append + fdatasync, one at a time: what one
//!    producer could get from a broker that fsyncs each message), each for
//!    half of `--probe-secs` (at least 1 s);
//! 3. 1, 32 (4 × 8) and 256 (8 × 32) in flight: Waybill (sync flush,
//!    traced), Redis `appendfsync always`, NATS JetStream `sync_interval:
//!    always`, one after the other, each on its own private server;
//! 4. at 256 in flight: Waybill untraced, traced in PostgreSQL (with
//!    `--sweep-pg URL`), and async flush;
//! 5. replication at 256 in flight (4 × 64, sync flush, 3 nodes on
//!    loopback): none, sync replication, Raft;
//! 6. the disk again (second halves), then the table, or with `--json`
//!    one JSON object.
//!
//! Every row carries msgs/s, p50/p99 and the server's CPU µs per message.
//! A failed send on any row fails the sweep after the report.

use anyhow::bail;
use serde_json::{json, Value};
use waybill::bench::probe::{self, Probe, RAW_BLOCK};
use waybill::bench::report::{figures_json, Figures};
use waybill::bench::{own, Workload};
use waybill::config::{FlushMode, ReplicationMode};

use crate::peer::{self, PeerArgs, PeerSync, Prepared, Target};

/// The in-flight levels of the main table: (producers, in flight each).
const LEVELS: [(usize, usize); 3] = [(1, 1), (4, 8), (8, 32)];
/// The replication rows' shape: 256 in flight over 4 connections.
const REPLICATION: (usize, usize) = (4, 64);

/// One measured row: Waybill's figures and each peer's.
struct Row {
    label: String,
    producers: usize,
    inflight: usize,
    waybill: Figures,
    peers: Vec<(&'static str, Figures)>,
}

/// The disk, before and after.
#[derive(Default)]
struct Disk {
    probe: Vec<Probe>,
    raw: Vec<Probe>,
}

/// Runs the sweep for `w` (its size, duration, probe length and JSON
/// switch are used; the shapes are the sweep's own).
pub async fn run(w: &Workload, pg: Option<&str>, nats_venv: Option<std::path::PathBuf>) -> anyhow::Result<()> {
    if w.broker.is_some() {
        bail!("--sweep starts its own nodes and servers; it takes no --broker");
    }
    let args = |vs: &str| PeerArgs {
        vs: Some(vs.into()),
        peer_sync: Some(PeerSync::Always),
        nats_venv: nats_venv.clone(),
        redis_server: None,
    };
    let redis_args = args("redis://127.0.0.1:6379");
    let nats_args = args("nats://127.0.0.1:4222");
    let redis = Target::parse("redis://127.0.0.1:6379")?.prepare(&redis_args).await?;
    let nats = Target::parse("nats://127.0.0.1:4222")?.prepare(&nats_args).await?;

    let mut disk = Disk::default();
    let half = (w.probe_secs / 2.0).max(1.0);
    probe_disk(&mut disk, half).await?;
    let mut rows = Vec::new();
    let mut failures = Vec::new();
    for (producers, inflight) in LEVELS {
        let shape = shaped(w, producers, inflight, FlushMode::Sync, ReplicationMode::None, None);
        let label = format!("{} in flight", producers * inflight);
        let mut row = waybill_row(&shape, label, &mut failures).await?;
        for p in [&redis, &nats] {
            row.peers
                .push((p.name(), peer_figures(&shape, p, &mut failures).await?));
        }
        rows.push(row);
    }
    // Each extra row is said beside its baseline, made before it: tracing
    // rows beside the untraced one (tracing's cost), replication rows
    // beside the single node.
    let (p, i) = LEVELS[2];
    let mut extra: Vec<(Row, Option<String>)> = Vec::new();
    let shape = shaped(w, p, i, FlushMode::Sync, ReplicationMode::None, Some("none"));
    let r = waybill_row(&shape, "256, tracing off".into(), &mut failures).await?;
    let untraced = r.waybill.clone();
    let traced = rows.last().map(|t| &t.waybill);
    let vs = traced.and_then(|t| ratio(t, &untraced));
    extra.push((r, vs.map(|x| format!("traced (SQLite) / untraced: {x:.2}"))));
    if let Some(pg) = pg {
        let traced = shaped(w, p, i, FlushMode::Sync, ReplicationMode::None, Some(pg));
        let r = waybill_row(&traced, "256, traced in PostgreSQL".into(), &mut failures).await?;
        let vs = ratio(&r.waybill, &untraced).map(|x| format!("traced (PostgreSQL) / untraced: {x:.2}"));
        extra.push((r, vs));
    }
    let asynced = shaped(w, p, i, FlushMode::Async, ReplicationMode::None, None);
    extra.push((
        waybill_row(&asynced, "256, async flush".into(), &mut failures).await?,
        None,
    ));
    let (p, i) = REPLICATION;
    let single = shaped(w, p, i, FlushMode::Sync, ReplicationMode::None, None);
    let single = waybill_row(&single, "4 x 64, one node".into(), &mut failures).await?;
    let base = single.waybill.clone();
    extra.push((single, None));
    for (mode, label) in [
        (ReplicationMode::Sync, "4 x 64, sync replication"),
        (ReplicationMode::Raft, "4 x 64, Raft"),
    ] {
        let shape = shaped(w, p, i, FlushMode::Sync, mode, None);
        let r = waybill_row(&shape, label.into(), &mut failures).await?;
        let vs = ratio(&r.waybill, &base).map(|x| format!("/ one node: {x:.2}"));
        extra.push((r, vs));
    }
    probe_disk(&mut disk, half).await?;
    if w.json {
        println!("{}", json_report(w, &disk, &rows, &extra));
    } else {
        print!("{}", table(w, &disk, &rows, &extra));
    }
    if !failures.is_empty() {
        bail!("{}", failures.join("; "));
    }
    Ok(())
}

/// `w` with the sweep's shape for one row.
fn shaped(
    w: &Workload,
    producers: usize,
    inflight: usize,
    flush: FlushMode,
    replication: ReplicationMode,
    trace_db: Option<&str>,
) -> Workload {
    let mut s = w.clone();
    s.producers = producers;
    s.inflight = inflight;
    s.flush = flush;
    s.replication = replication;
    s.trace_db = trace_db.map(str::to_string).or_else(|| w.trace_db.clone());
    s.consumers = 0;
    s.batch = 1;
    // The sweep probes the disk itself, around all rows.
    s.probe_secs = 0.0;
    s
}

async fn probe_disk(disk: &mut Disk, secs: f64) -> anyhow::Result<()> {
    let dir = tempfile::Builder::new().prefix("waybill-sweep-disk-").tempdir()?;
    disk.probe.push(probe::run(dir.path().to_path_buf(), secs).await?);
    disk.raw
        .push(probe::run_loop(dir.path().to_path_buf(), secs, RAW_BLOCK).await?);
    Ok(())
}

async fn waybill_row(w: &Workload, label: String, failures: &mut Vec<String>) -> anyhow::Result<Row> {
    let run = own::run(w, false).await?;
    failures.extend(run.load.failure(&format!("Waybill sends ({label})")));
    Ok(Row {
        label,
        producers: w.producers,
        inflight: w.inflight,
        waybill: Figures {
            cpu_us_per_msg: run.cpu_us_per_msg,
            ..Figures::from_run(&run.load, w.size, None, run.fsyncs, None)
        },
        peers: Vec::new(),
    })
}

async fn peer_figures(w: &Workload, p: &Prepared, failures: &mut Vec<String>) -> anyhow::Result<Figures> {
    let r = p.run(&w.load(p.name()), 0).await?;
    failures.extend(r.load.failure(p.sends()));
    Ok(r.report(p, w.size, None).figures)
}

/// Waybill msgs/s ÷ `other` msgs/s.
fn ratio(a: &Figures, b: &Figures) -> Option<f64> {
    (b.msgs_per_sec > 0.0).then(|| a.msgs_per_sec / b.msgs_per_sec)
}

fn r3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn probe_json(p: Option<Probe>) -> Value {
    p.map_or(Value::Null, |p| {
        json!({
            "mb_per_sec": r3(p.mb_per_sec),
            "fsyncs_per_sec": r3(p.fsyncs_per_sec),
            "p50_ms": r3(p.p50_ms),
            "p99_ms": r3(p.p99_ms),
        })
    })
}

fn row_json(r: &Row) -> Value {
    let mut o = serde_json::Map::new();
    o.insert("label".into(), json!(r.label));
    o.insert("producers".into(), json!(r.producers));
    o.insert("inflight".into(), json!(r.inflight));
    o.insert("waybill".into(), Value::Object(figures_json(&r.waybill)));
    for (name, f) in &r.peers {
        o.insert((*name).into(), Value::Object(figures_json(f)));
        o.insert(format!("ratio_{name}"), json!(ratio(&r.waybill, f).map(r3)));
    }
    Value::Object(o)
}

fn json_report(w: &Workload, disk: &Disk, rows: &[Row], extra: &[(Row, Option<String>)]) -> String {
    json!({
        "size": w.size,
        "duration_secs": w.duration,
        "probe": probe_json(probe::mean(&disk.probe)),
        "raw_fsync_loop": probe_json(probe::mean(&disk.raw)),
        "raw_halves_per_sec": disk.raw.iter().map(|p| r3(p.fsyncs_per_sec)).collect::<Vec<_>>(),
        "rows": rows.iter().map(row_json).collect::<Vec<_>>(),
        "extra": extra.iter().map(|(r, vs)| {
            let mut v = row_json(r);
            if let Value::Object(o) = &mut v {
                o.insert("compared".into(), json!(vs));
            }
            v
        }).collect::<Vec<_>>(),
    })
    .to_string()
}

fn cpu(f: &Figures) -> String {
    f.cpu_us_per_msg.map_or_else(|| "-".into(), |c| format!("{c:.1}"))
}

fn cells(f: &Figures) -> String {
    format!(
        "{:>9.0} {:>7.3} {:>7.3} {:>6}",
        f.msgs_per_sec,
        f.p50_ms,
        f.p99_ms,
        cpu(f)
    )
}

fn table(w: &Workload, disk: &Disk, rows: &[Row], extra: &[(Row, Option<String>)]) -> String {
    let mut out = format!(
        "waybill-bench --sweep: {} B bodies, {} s per row, sync flush, Waybill traced in SQLite unless a row says otherwise\n",
        w.size, w.duration
    );
    if let (Some(p), Some(raw)) = (probe::mean(&disk.probe), probe::mean(&disk.raw)) {
        let halves: Vec<String> = disk.raw.iter().map(|h| format!("{:.0}", h.fsyncs_per_sec)).collect();
        out.push_str(&format!(
            "disk: 256 KiB append + fdatasync {:.0} MB/s (fsync p50 {:.3} ms); raw 1 KiB append + fdatasync loop {:.0}/s (halves {}), p50 {:.3} ms\n\n",
            p.mb_per_sec,
            p.p50_ms,
            raw.fsyncs_per_sec,
            halves.join(" / "),
            raw.p50_ms
        ));
    }
    let head = "   msgs/s  p50 ms  p99 ms CPU µs";
    out.push_str(&format!(
        "{:<14}| {:<31} | {:<31} | {:<31} | {:>7} {:>7}\n",
        "in flight", "waybill", "redis (appendfsync always)", "nats (sync always)", "/redis", "/nats"
    ));
    out.push_str(&format!("{:<14}|{head} |{head} |{head} |\n", ""));
    for r in rows {
        let mut line = format!("{:<14}|{} |", r.label, cells(&r.waybill));
        let mut ratios = String::new();
        for (_, f) in &r.peers {
            line.push_str(&format!("{} |", cells(f)));
            ratios.push_str(&format!(
                " {:>7}",
                ratio(&r.waybill, f).map_or("-".into(), |x| format!("{x:.2}"))
            ));
        }
        out.push_str(&format!("{line}{ratios}\n"));
    }
    if let (Some(one), Some(raw)) = (rows.first(), probe::mean(&disk.raw)) {
        if raw.fsyncs_per_sec > 0.0 {
            out.push_str(&format!(
                "1 in flight / raw fsync loop: {:.2}\n",
                one.waybill.msgs_per_sec / raw.fsyncs_per_sec
            ));
        }
    }
    out.push_str(&format!("\n{:<28}|{head} | compared\n", "Waybill, more rows"));
    for (r, vs) in extra {
        out.push_str(&format!(
            "{:<28}|{} | {}\n",
            r.label,
            cells(&r.waybill),
            vs.as_deref().unwrap_or("")
        ));
    }
    out
}

/// The sweep's flags beside `--sweep` itself.
pub fn refuse_peer_flags(p: &peer::PeerArgs) -> anyhow::Result<()> {
    if p.vs.is_some() || p.peer_sync.is_some() {
        bail!("--sweep runs its own Redis and NATS (both fsyncing each write); drop --vs/--peer-sync");
    }
    Ok(())
}
