//! The figures the bench reports, as one JSON object or a table.
//!
//! JSON (stable names, scripts depend on them): `msgs_per_sec`,
//! `mb_per_sec` (body bytes, 10^6), `p50_ms`, `p99_ms` (send → ack),
//! `fsyncs_per_sec`, `msgs_per_fsync` (from the node's `/metrics`; null
//! when unknown), `e2e_p99_ms` (consume time − birth time; null without
//! consumers); with a peer (`waybill-bench --vs`): `peer` (the same fields
//! for the peer, plus its `target`, `server` and `sync`) and `ratio`
//! (Waybill msgs/s ÷ peer msgs/s). Extra fields: the run's shape, failure
//! counts, `probe` (the disk's 256 KiB append + fdatasync bandwidth) and
//! `probe_ratio` (the run's MB/s ÷ the probe's; sync runs only) and
//! `cpu_us_per_msg` (the server process's user + system CPU per
//! acknowledged message; null when its process is not the bench's).

use serde_json::{json, Value};

use super::load::{percentile_ms, E2e, LoadResult};
use super::node::FsyncCounters;
use super::own::OwnRun;
use super::probe::{self, Probe, BLOCK};
use super::Workload;

/// One system's figures in one run.
#[derive(Debug, Clone, Default)]
pub struct Figures {
    pub msgs: u64,
    pub failed: u64,
    pub elapsed_secs: f64,
    pub msgs_per_sec: f64,
    pub mb_per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub fsyncs_per_sec: Option<f64>,
    pub msgs_per_fsync: Option<f64>,
    pub consumed: Option<u64>,
    pub e2e_p50_ms: Option<f64>,
    pub e2e_p99_ms: Option<f64>,
    pub probe_mb_per_sec: Option<f64>,
    pub probe_ratio: Option<f64>,
    /// Which server answered (the peer's URL and version).
    pub server: Option<String>,
    /// The server process's user + system CPU per acknowledged message
    /// (µs); `None` when its process is not the bench's to read.
    pub cpu_us_per_msg: Option<f64>,
}

impl Figures {
    /// `probe`: the disk figure to compare with, for sync runs only.
    pub fn from_run(
        r: &LoadResult,
        size: usize,
        e2e: Option<&E2e>,
        fsyncs: Option<(FsyncCounters, FsyncCounters)>,
        probe: Option<Probe>,
    ) -> Figures {
        let secs = r.elapsed.as_secs_f64().max(1e-9);
        let lat = &r.latencies_us;
        let (fsyncs_per_sec, msgs_per_fsync) = match fsyncs {
            Some((b, a)) => {
                let n = a.fsyncs.saturating_sub(b.fsyncs);
                let m = a.synced_msgs.saturating_sub(b.synced_msgs);
                (Some(n as f64 / secs), (n > 0).then(|| m as f64 / n as f64))
            }
            None => (None, None),
        };
        let e2e_lat = e2e.map(E2e::sorted);
        let mb_per_sec = r.mb_per_sec(size);
        Figures {
            msgs: r.acked,
            failed: r.failed,
            elapsed_secs: secs,
            msgs_per_sec: r.msgs_per_sec(),
            mb_per_sec,
            p50_ms: percentile_ms(lat, 0.5),
            p99_ms: percentile_ms(lat, 0.99),
            p999_ms: percentile_ms(lat, 0.999),
            max_ms: percentile_ms(lat, 1.0),
            fsyncs_per_sec,
            msgs_per_fsync,
            consumed: e2e.map(E2e::consumed),
            e2e_p50_ms: e2e_lat.as_deref().map(|l| percentile_ms(l, 0.5)),
            e2e_p99_ms: e2e_lat.as_deref().map(|l| percentile_ms(l, 0.99)),
            probe_mb_per_sec: probe.map(|p| p.mb_per_sec),
            probe_ratio: probe.filter(|p| p.mb_per_sec > 0.0).map(|p| mb_per_sec / p.mb_per_sec),
            server: None,
            cpu_us_per_msg: None,
        }
    }
}

/// The peer's side of a comparison.
#[derive(Debug, Clone)]
pub struct Peer {
    /// Its name in the JSON (`target`) and the table: `nats`.
    pub target: &'static str,
    /// How it syncs its writes: `default` or `always`.
    pub sync: &'static str,
    pub figures: Figures,
}

/// Everything one run reports.
pub struct Report {
    pub broker: String,
    pub own_node: bool,
    pub flush: &'static str,
    /// Replication of the own group (`none`: one node).
    pub replication: &'static str,
    pub producers: usize,
    pub inflight: usize,
    pub size: usize,
    pub batch: usize,
    pub duration_secs: f64,
    pub consumers: usize,
    /// Probe halves, before and after the Waybill run.
    pub probes: Vec<Probe>,
    pub probe_secs: f64,
    pub waybill: Figures,
    pub peer: Option<Peer>,
}

impl Report {
    /// The report of `args`' workload run against Waybill (`own`) and,
    /// when given, a peer.
    pub fn new(args: &Workload, own: &OwnRun, peer: Option<Peer>) -> Report {
        let probe = probe::mean(&own.probes);
        Report {
            broker: own.broker.clone(),
            own_node: args.broker.is_none(),
            flush: args.flush_name(),
            replication: args.replication_name(),
            producers: args.producers,
            inflight: args.inflight,
            size: args.size,
            batch: args.batch,
            duration_secs: args.duration,
            consumers: args.consumers,
            probes: own.probes.clone(),
            probe_secs: args.probe_secs,
            waybill: Figures {
                cpu_us_per_msg: own.cpu_us_per_msg,
                ..Figures::from_run(&own.load, args.size, own.e2e.as_deref(), own.fsyncs, probe)
            },
            peer,
        }
    }

    /// Waybill msgs/s ÷ peer msgs/s.
    pub fn ratio(&self) -> Option<f64> {
        self.peer
            .as_ref()
            .filter(|p| p.figures.msgs_per_sec > 0.0)
            .map(|p| self.waybill.msgs_per_sec / p.figures.msgs_per_sec)
    }

    /// Mean of the probe halves.
    pub fn probe(&self) -> Option<Probe> {
        probe::mean(&self.probes)
    }
}

/// Rounds to 3 decimals: enough for ms and MB/s, readable in JSON.
fn r3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

pub fn figures_json(f: &Figures) -> serde_json::Map<String, Value> {
    let o = |x: Option<f64>| x.map(r3);
    let v = json!({
        "msgs_per_sec": r3(f.msgs_per_sec),
        "mb_per_sec": r3(f.mb_per_sec),
        "p50_ms": r3(f.p50_ms),
        "p99_ms": r3(f.p99_ms),
        "fsyncs_per_sec": o(f.fsyncs_per_sec),
        "msgs_per_fsync": o(f.msgs_per_fsync),
        "e2e_p99_ms": o(f.e2e_p99_ms),
        "e2e_p50_ms": o(f.e2e_p50_ms),
        "p999_ms": r3(f.p999_ms),
        "max_ms": r3(f.max_ms),
        "msgs": f.msgs,
        "failed": f.failed,
        "consumed": f.consumed,
        "elapsed_secs": r3(f.elapsed_secs),
        "probe_mb_per_sec": o(f.probe_mb_per_sec),
        "probe_ratio": o(f.probe_ratio),
        "cpu_us_per_msg": o(f.cpu_us_per_msg),
    });
    match v {
        Value::Object(m) => m,
        _ => serde_json::Map::new(),
    }
}

/// The one JSON object of `--json`.
pub fn json(r: &Report) -> String {
    let mut top = figures_json(&r.waybill);
    let extra = json!({
        "target": "waybill",
        "broker": r.broker,
        "own_node": r.own_node,
        "flush": r.flush,
        "replication": r.replication,
        "producers": r.producers,
        "inflight": r.inflight,
        "size": r.size,
        "batch": r.batch,
        "duration_secs": r.duration_secs,
        "consumers": r.consumers,
        "probe": r.probe().map(|p| json!({
            "mb_per_sec": r3(p.mb_per_sec),
            "fsyncs_per_sec": r3(p.fsyncs_per_sec),
            "fsync_p50_ms": r3(p.p50_ms),
            "fsync_p99_ms": r3(p.p99_ms),
            "halves_mb_per_sec": r.probes.iter().map(|h| r3(h.mb_per_sec)).collect::<Vec<_>>(),
            "block_bytes": BLOCK,
            "secs": r.probe_secs,
        })),
    });
    if let Value::Object(m) = extra {
        top.extend(m);
    }
    if let Some(p) = &r.peer {
        let mut peer = figures_json(&p.figures);
        peer.insert("target".into(), json!(p.target));
        peer.insert("server".into(), json!(p.figures.server));
        peer.insert("sync".into(), json!(p.sync));
        top.insert("peer".into(), Value::Object(peer));
        top.insert("ratio".into(), json!(r.ratio().map(r3)));
    }
    Value::Object(top).to_string()
}

fn cell(x: Option<f64>, decimals: usize) -> String {
    x.map_or_else(|| "-".to_string(), |v| format!("{v:.decimals$}"))
}

/// The readable table printed without `--json`.
pub fn table(r: &Report) -> String {
    let mut out = format!(
        "waybill bench: {} producer(s) x {} in flight x {} msg(s) per send, {} B bodies, {} s, flush {}, \
         replication {}, {}\n\n",
        r.producers,
        r.inflight,
        r.batch,
        r.size,
        r.duration_secs,
        r.flush,
        r.replication,
        if r.own_node && r.replication != "none" {
            format!("primary/leader of an own 3-node group ({})", r.broker)
        } else if r.own_node {
            format!("own node ({})", r.broker)
        } else {
            format!("node at {}", r.broker)
        }
    );
    let w = &r.waybill;
    let p = r.peer.as_ref().map(|p| &p.figures);
    let mut rows: Vec<(&str, String, Option<String>)> = Vec::new();
    let mut row = |label, f: &dyn Fn(&Figures) -> String| rows.push((label, f(w), p.map(f)));
    row("msgs/s", &|f| format!("{:.0}", f.msgs_per_sec));
    row("MB/s", &|f| format!("{:.1}", f.mb_per_sec));
    row("p50 ms", &|f| format!("{:.3}", f.p50_ms));
    row("p99 ms", &|f| format!("{:.3}", f.p99_ms));
    row("p99.9 ms", &|f| format!("{:.3}", f.p999_ms));
    row("fsyncs/s", &|f| cell(f.fsyncs_per_sec, 0));
    row("msgs/fsync", &|f| cell(f.msgs_per_fsync, 1));
    row("e2e p99 ms", &|f| cell(f.e2e_p99_ms, 3));
    row("MB/s / probe", &|f| cell(f.probe_ratio, 2));
    row("CPU us/msg", &|f| cell(f.cpu_us_per_msg, 1));
    row("msgs", &|f| f.msgs.to_string());
    row("failed", &|f| f.failed.to_string());
    let target = r.peer.as_ref().map_or("peer", |p| p.target);
    let peer_head = format!("{target} (sync {})", r.peer.as_ref().map_or("default", |p| p.sync));
    out.push_str(&format!(
        "{:<14}{:>16}{}\n",
        "",
        "waybill",
        p.map_or(String::new(), |_| format!("{peer_head:>24}"))
    ));
    for (label, a, b) in rows {
        out.push_str(&format!(
            "{label:<14}{a:>16}{}\n",
            b.map_or(String::new(), |b| format!("{b:>24}"))
        ));
    }
    if let Some(server) = p.and_then(|p| p.server.as_deref()) {
        out.push_str(&format!("\npeer: {server}\n"));
    }
    if let Some(ratio) = r.ratio() {
        out.push_str(&format!("ratio (waybill msgs/s / {target} msgs/s): {ratio:.2}\n"));
    }
    if let Some(probe) = r.probe() {
        let halves: Vec<String> = r.probes.iter().map(|h| format!("{:.1}", h.mb_per_sec)).collect();
        out.push_str(&format!(
            "disk probe (256 KiB append + fdatasync, {} s): {:.1} MB/s (halves: {}), {:.0} fsyncs/s, fsync p50 {:.3} ms, p99 {:.3} ms\n",
            r.probe_secs,
            probe.mb_per_sec,
            halves.join(" / "),
            probe.fsyncs_per_sec,
            probe.p50_ms,
            probe.p99_ms
        ));
    }
    out
}
