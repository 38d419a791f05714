//! The NATS peer (`waybill-bench --vs nats://ADDR`): the same workload
//! against NATS JetStream, in the same run.
//!
//! Invariants:
//! - The stream is the bench's own: a fresh, temp-named, file-storage
//!   stream on a temp subject, deleted afterwards whether the run
//!   succeeded or not. Nothing else on the server is touched.
//! - Same shape as the Waybill run: `producers` connections (one
//!   `async_nats::Client` each), each with `inflight` slots that publish
//!   and wait for the JetStream ack (`PublishAck`: stored by the stream) —
//!   the counterpart of a sync send answered `SEND_OK` (with `--batch B`,
//!   B publishes pipelined, then their B acks). One warm-up
//!   publish per connection happens before the clock starts.
//! - Consumers (`--consumers N`) are N connections bound to one durable
//!   pull consumer with explicit acks (JetStream's consumer group), each
//!   recording end-to-end latency from the body's birth stamp.
//! - What an ack means depends on the server's `sync_interval`: the
//!   default syncs every 2 minutes, `always` fsyncs each write (see
//!   [`super::nats_server`]). The report says which one ran.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use async_nats::jetstream::{self, consumer::pull, consumer::AckPolicy, stream::StorageType};
use async_nats::Subject;
use futures_util::StreamExt;

use waybill::bench::cpu;
use waybill::bench::load::{drive, stamped, template, E2e, Load, LoadResult};

use super::PeerRun;

const CONSUMER: &str = "waybill-bench";

/// Runs `load` (and `consumers` consumers) against the JetStream at `url`;
/// the run's `server` names the URL and the server's version.
/// `pid`: the server's process when it is the bench's own (its CPU per
/// message is then reported).
pub async fn run(url: &str, load: &Load, consumers: usize, pid: Option<u32>) -> anyhow::Result<PeerRun> {
    let admin = async_nats::connect(url)
        .await
        .with_context(|| format!("cannot connect to NATS at {url}"))?;
    let version = admin.server_info().version;
    let js = jetstream::new(admin.clone());
    let tag = format!(
        "{}_{:x}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    );
    let name = format!("WAYBILL_BENCH_{tag}");
    let subject = format!("waybill.bench.{tag}");
    js.create_stream(jetstream::stream::Config {
        name: name.clone(),
        subjects: vec![subject.clone()],
        storage: StorageType::File,
        ..Default::default()
    })
    .await
    .with_context(|| format!("cannot create the JetStream stream {name} on {url} (is JetStream enabled?)"))?;
    let outcome = run_on_stream(url, &js, &name, Subject::from(subject), load, consumers, pid).await;
    if let Err(e) = js.delete_stream(&name).await {
        tracing::warn!(stream = %name, error = %e, "cannot delete the bench stream");
    }
    let (load, e2e, cpu_us_per_msg) = outcome?;
    Ok(PeerRun {
        load,
        server: format!("{url} (nats-server {version})"),
        e2e,
        cpu_us_per_msg,
    })
}

async fn run_on_stream(
    url: &str,
    js: &jetstream::Context,
    stream: &str,
    subject: Subject,
    load: &Load,
    consumers: usize,
    pid: Option<u32>,
) -> anyhow::Result<(LoadResult, Option<Arc<E2e>>, Option<f64>)> {
    let mut consumer_tasks = Vec::new();
    let e2e = if consumers > 0 {
        let s = js.get_stream(stream).await.context("cannot open the bench stream")?;
        s.create_consumer(pull::Config {
            durable_name: Some(CONSUMER.into()),
            ack_policy: AckPolicy::Explicit,
            ..Default::default()
        })
        .await
        .context("cannot create the JetStream consumer")?;
        let e2e = Arc::new(E2e::default());
        for _ in 0..consumers {
            let client = async_nats::connect(url).await.context("cannot connect a consumer")?;
            let consumer: jetstream::consumer::PullConsumer = jetstream::new(client)
                .get_stream(stream)
                .await
                .context("cannot open the bench stream")?
                .get_consumer(CONSUMER)
                .await
                .map_err(|e| anyhow::anyhow!("cannot bind to the JetStream consumer: {e}"))?;
            let mut messages = consumer.messages().await.context("cannot start consuming")?;
            let e2e = e2e.clone();
            consumer_tasks.push(tokio::spawn(async move {
                while let Some(m) = messages.next().await {
                    match m {
                        Ok(m) => {
                            e2e.record(&m.payload);
                            if let Err(e) = m.ack().await {
                                tracing::debug!(error = %e, "ack failed");
                            }
                        }
                        Err(e) => tracing::debug!(error = %e, "consume error"),
                    }
                }
            }));
        }
        Some(e2e)
    } else {
        None
    };
    let mut senders = Vec::with_capacity(load.producers);
    for _ in 0..load.producers {
        let client = async_nats::connect(url)
            .await
            .with_context(|| format!("cannot connect a producer to {url}"))?;
        let ctx = jetstream::new(client);
        publish(ctx.clone(), subject.clone(), vec![stamped(&template(load.size))])
            .await
            .map_err(anyhow::Error::msg)
            .context("warm-up publish failed")?;
        senders.push((ctx, subject.clone()));
    }
    let meter = cpu::Meter::start(pid);
    let result = drive(load, senders, |(ctx, subject), body| publish(ctx, subject, body)).await;
    let cpu_us_per_msg = meter.per_msg(result.acked);
    if let Some(e2e) = &e2e {
        let target = result.acked + load.producers as u64;
        if !e2e.wait_for(target, Duration::from_secs(5)).await {
            tracing::warn!(
                consumed = e2e.consumed(),
                target,
                "NATS consumers did not get every message"
            );
        }
    }
    for t in consumer_tasks {
        t.abort();
    }
    Ok((result, e2e, cpu_us_per_msg))
}

/// Publishes `bodies` (pipelined) and waits for every JetStream ack.
async fn publish(ctx: jetstream::Context, subject: Subject, bodies: Vec<Vec<u8>>) -> Result<(), String> {
    let mut acks = Vec::with_capacity(bodies.len());
    for body in bodies {
        let ack = ctx
            .publish(subject.clone(), body.into())
            .await
            .map_err(|e| format!("publish failed: {e}"))?;
        acks.push(ack);
    }
    for ack in acks {
        ack.await.map_err(|e| format!("no JetStream ack: {e}"))?;
    }
    Ok(())
}
