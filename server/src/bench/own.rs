//! One bench run against Waybill, as `waybill bench` and `waybill-bench`
//! both run it.
//!
//! Order (each step only when it applies):
//! 1. start the own node (no `--broker`), or a 3-node group (with
//!    `--replication`), in a temp dir;
//! 2. disk probe, first half (sync flush, or a peer that fsyncs each
//!    write will be compared);
//! 3. the Waybill run: warm-up send per producer, consumers join, metrics
//!    snapshot, the timed closed loop, metrics snapshot, consumers drain;
//! 4. stop the own node(s); disk probe, second half.
//!
//! A peer run, when there is one, comes after step 4 (no node competes
//! with it) and is the caller's. Failed sends do not fail [`run`]: they are
//! counted, reported, and turned into a failure by the caller afterwards.

use std::sync::Arc;
use std::time::Duration;

use waybill_client::{ConsumeResult, ConsumerOptions, Message, Producer, ProducerOptions, PushConsumer, SendStatus};

use super::cpu;
use super::load::{drive, stamped, template, E2e, Load, LoadResult};
use super::node::{self, scrape, FsyncCounters, OwnNode};
use super::probe::{self, Probe};
use super::{unique_suffix, BenchError, Workload};
use crate::config::{FlushMode, ReplicationMode};

/// What one run against Waybill measured.
pub struct OwnRun {
    /// The client-protocol address that was driven.
    pub broker: String,
    pub load: LoadResult,
    pub fsyncs: Option<(FsyncCounters, FsyncCounters)>,
    pub e2e: Option<Arc<E2e>>,
    /// Probe halves, before and after the run (none when not probing).
    pub probes: Vec<Probe>,
    /// The driven node's CPU (user + system) per acknowledged message, µs
    /// (own node only: a `--broker` node's process is not ours to read).
    pub cpu_us_per_msg: Option<f64>,
}

/// Runs `args`' workload against Waybill (steps 1–4 above). `peer_fsyncs`:
/// a peer that fsyncs every write follows, so probe even under async flush.
pub async fn run(args: &Workload, peer_fsyncs: bool) -> Result<OwnRun, BenchError> {
    let (mut group, writer) = match (&args.broker, args.replication) {
        (Some(_), _) => (Vec::new(), 0),
        (None, ReplicationMode::None) => (
            vec![OwnNode::start(args.flush_name(), args.trace_db.as_deref()).await?],
            0,
        ),
        (None, _) => node::start_group(args.flush_name(), args.trace_db.as_deref(), args.replication_name(), 3).await?,
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
        .map_err(BenchError::io("cannot create a temp dir for the disk probe"))?;
    let probing = args.probe_secs > 0.0 && (args.flush == FlushMode::Sync || peer_fsyncs);
    let half = args.probe_secs / 2.0;
    let mut probes = Vec::new();
    if probing {
        probes.push(probe::run(probe_dir.path().to_path_buf(), half).await?);
    }

    let topic = args
        .topic
        .clone()
        .unwrap_or_else(|| format!("bench-{}", unique_suffix()));
    let target = Target {
        broker: &broker,
        http: http.as_deref(),
        topic: &topic,
        token: args.auth_token.as_deref(),
        pid: own.as_ref().and_then(OwnNode::pid),
    };
    let outcome = drive_waybill(&target, &args.load("waybill"), args.consumers).await;
    if let (Err(_), Some(node)) = (&outcome, own.as_mut()) {
        // A dead node explains a failed run better than the client's error.
        node.check_alive()?;
    }
    let (load, fsyncs, e2e, cpu_us_per_msg) = outcome?;
    if let Some(node) = own.take() {
        node.stop().await;
    }
    for node in group {
        node.stop().await;
    }
    if probing {
        probes.push(probe::run(probe_dir.path().to_path_buf(), half).await?);
    }
    Ok(OwnRun {
        broker,
        load,
        fsyncs,
        e2e,
        probes,
        cpu_us_per_msg,
    })
}

/// Where the Waybill run sends.
struct Target<'a> {
    broker: &'a str,
    /// The node's HTTP address, for its fsync counters.
    http: Option<&'a str>,
    topic: &'a str,
    token: Option<&'a str>,
    /// The node's process, for its CPU time.
    pid: Option<u32>,
}

type Measured = (
    LoadResult,
    Option<(FsyncCounters, FsyncCounters)>,
    Option<Arc<E2e>>,
    Option<f64>,
);

/// Step 3: producers warm up, consumers join, the timed loop runs between
/// two metrics snapshots, consumers drain.
async fn drive_waybill(t: &Target<'_>, load: &Load, consumers: usize) -> Result<Measured, BenchError> {
    let broker = t.broker;
    let topic: Arc<str> = Arc::from(t.topic);
    let suffix = unique_suffix();
    let mut senders = Vec::with_capacity(load.producers);
    for i in 0..load.producers {
        let mut opts = ProducerOptions::new(broker.to_string());
        opts.producer_id = Some(format!("bench-{suffix}-{i}"));
        opts.auth_token = t.token.map(str::to_string);
        let p = Arc::new(Producer::new(opts).map_err(|source| BenchError::Client {
            what: "cannot create a producer".into(),
            source,
        })?);
        // Warm-up: connects, and creates the topic before consumers join.
        send(p.clone(), topic.clone(), vec![stamped(&template(load.size))])
            .await
            .map_err(|reason| BenchError::WarmUp {
                broker: broker.to_string(),
                reason,
            })?;
        senders.push((p, topic.clone()));
    }
    let mut members = Vec::new();
    let e2e = if consumers > 0 {
        let e2e = Arc::new(E2e::default());
        for i in 0..consumers {
            let mut opts = ConsumerOptions::new(broker.to_string(), format!("bench-{suffix}"), topic.to_string());
            opts.client_id = format!("bench-{suffix}-c{i}");
            opts.auth_token = t.token.map(str::to_string);
            opts.batch = 64;
            let e = e2e.clone();
            let c = PushConsumer::start(opts, move |d| {
                e.record(&d.message.body);
                async { ConsumeResult::Success }
            })
            .await
            .map_err(|source| BenchError::Client {
                what: format!("consumer cannot join at {broker}"),
                source,
            })?;
            members.push(c);
        }
        // Let the group settle (heartbeats assign queues) before the clock starts.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        Some(e2e)
    } else {
        None
    };
    let client = reqwest::Client::new();
    let before = match t.http {
        Some(h) => Some(scrape(&client, h).await?),
        None => None,
    };
    let meter = cpu::Meter::start(t.pid);
    let result = drive(load, senders, |(p, topic), body| send(p, topic, body)).await;
    let cpu_us_per_msg = meter.per_msg(result.acked);
    let fsyncs = match (t.http, before) {
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
    Ok((result, fsyncs, e2e, cpu_us_per_msg))
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
