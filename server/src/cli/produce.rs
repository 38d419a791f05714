//! `waybill produce`: sends messages and prints one JSON line per result.

use std::io::Read;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use serde_json::json;
use tokio::sync::Semaphore;
use waybill_client::{Message, Producer, ProducerOptions, SendResult, SendStatus, TransactionState};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Wait for each result.
    Sync,
    /// Results arrive through callbacks, in completion order.
    Async,
    /// Fire and forget: no result, nothing printed (an unconfirmed send).
    Oneway,
}

#[derive(Debug, Args)]
pub struct ProduceArgs {
    /// Broker client-protocol address.
    #[arg(long, default_value = "127.0.0.1:9876")]
    pub broker: String,
    /// The broker's `--auth-token`, presented first on every connection (as the HTTP commands read it from the env).
    #[arg(long, env = "WAYBILL_AUTH_TOKEN", hide_env_values = true)]
    pub auth_token: Option<String>,
    #[command(flatten)]
    pub tls: super::tls::TlsArgs,
    /// Topic to send to (created on first use).
    #[arg(long)]
    pub topic: String,
    /// Message key (searchable; several keys separated by spaces). `{n}` is
    /// replaced by the message's number, from 0: `--key 'order-{n}' --count 10000`.
    #[arg(long)]
    pub key: Option<String>,
    /// Message tag (consumers and searches can filter on it).
    #[arg(long)]
    pub tag: Option<String>,
    /// Property `NAME=VALUE`, repeatable.
    #[arg(long = "property", value_parser = parse_property)]
    pub properties: Vec<(String, String)>,
    /// Body text (`{n}` as in --key); without it (and without --size or --lines) the body is read from stdin.
    #[arg(long)]
    pub body: Option<String>,
    /// One message per line of stdin (the line is the body; `{n}` in --key counts the lines).
    #[arg(long, conflicts_with_all = ["body", "size", "count"])]
    pub lines: bool,
    /// Generate a body of this many bytes instead.
    #[arg(long)]
    pub size: Option<usize>,
    /// How to send: wait for each result, results by callback, or fire and forget.
    #[arg(long, value_enum, default_value_t = Mode::Sync)]
    pub mode: Mode,
    /// Messages to send.
    #[arg(long, default_value_t = 1)]
    pub count: u64,
    /// Sends in flight at once.
    #[arg(long, default_value_t = 1)]
    pub concurrency: usize,
    /// RocketMQ's retryTimesWhenSendFailed.
    #[arg(long, default_value_t = 2)]
    pub retries: u32,
    /// Send each message as a transaction whose local transaction decides
    /// this (`unknown` leaves it to the broker's check-backs, which nobody
    /// answers here: the broker rolls it back after its check limit).
    #[arg(long, value_enum, conflicts_with = "mode")]
    pub transaction: Option<TxOutcome>,
    /// Producer group of transactional sends (checked back by the broker).
    #[arg(long, default_value = "waybill-cli")]
    pub producer_group: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TxOutcome {
    Commit,
    Rollback,
    Unknown,
}

impl TxOutcome {
    fn state(self) -> TransactionState {
        match self {
            TxOutcome::Commit => TransactionState::Commit,
            TxOutcome::Rollback => TransactionState::Rollback,
            TxOutcome::Unknown => TransactionState::Unknown,
        }
    }
}

fn parse_property(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("property {s:?} must look like NAME=VALUE"))
}

fn line(r: &SendResult, key: Option<&str>) -> String {
    json!({
        "id": r.id,
        "key": key,
        "status": r.status.name(),
        "queue_id": r.queue_id,
        "queue_offset": r.queue_offset,
        "attempt": r.attempt,
    })
    .to_string()
}

pub async fn run(args: ProduceArgs) -> anyhow::Result<()> {
    if args.concurrency == 0 {
        bail!("--concurrency must be at least 1");
    }
    let mut lines: Option<Vec<Vec<u8>>> = None;
    let body = match (&args.body, args.size) {
        _ if args.lines => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("cannot read the bodies from stdin")?;
            lines = Some(text.lines().map(|l| l.as_bytes().to_vec()).collect());
            Vec::new()
        }
        (Some(b), _) => b.clone().into_bytes(),
        (None, Some(n)) => (0..n).map(|i| b'a' + (i % 26) as u8).collect(),
        (None, None) => {
            let mut buf = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buf)
                .context("cannot read the body from stdin")?;
            buf
        }
    };
    let count = lines.as_ref().map_or(args.count, |l| l.len() as u64);
    let numbered = |text: &str, n: u64| text.replace("{n}", &n.to_string());
    let body_numbered = args.body.as_deref().is_some_and(|b| b.contains("{n}"));
    let mut opts = ProducerOptions::new(args.broker.clone());
    opts.retry_times_when_send_failed = args.retries;
    opts.producer_id = Some(format!("cli-{}", std::process::id()));
    opts.group = Some(args.producer_group.clone());
    opts.auth_token.clone_from(&args.auth_token);
    opts.tls = args.tls.client()?;
    let producer = Arc::new(Producer::new(opts)?);
    let message = Message {
        key: args.key.clone(),
        tags: args.tag.clone(),
        properties: args.properties.iter().cloned().collect(),
        body,
        ..Message::default()
    };
    if let Some(outcome) = args.transaction {
        return transactions(&args, &producer, message, outcome).await;
    }
    let failed = Arc::new(AtomicBool::new(false));
    let permits = Arc::new(Semaphore::new(args.concurrency));
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for n in 0..count {
        let permit = permits.clone().acquire_owned().await?;
        let mut message = message.clone();
        let key = args.key.as_deref().map(|k| numbered(k, n));
        message.key.clone_from(&key);
        if let Some(lines) = &lines {
            message.body = lines.get(n as usize).cloned().unwrap_or_default();
        } else if body_numbered {
            message.body = numbered(args.body.as_deref().unwrap_or_default(), n).into_bytes();
        }
        let (producer, failed, done) = (producer.clone(), failed.clone(), done.clone());
        let topic = args.topic.clone();
        let failed_oneway = failed.clone();
        let report = move |r: Result<SendResult, waybill_client::ClientError>| {
            match r {
                Ok(r) => {
                    outln!("{}", line(&r, key.as_deref()));
                    if r.status != SendStatus::SendOk {
                        failed.store(true, Ordering::Relaxed);
                    }
                }
                Err(e) => {
                    eprintln!("waybill produce: send failed: {e}");
                    failed.store(true, Ordering::Relaxed);
                }
            }
            done.fetch_add(1, Ordering::Relaxed);
        };
        match args.mode {
            Mode::Sync => tasks.push(tokio::spawn(async move {
                report(producer.send(&topic, message).await);
                drop(permit);
            })),
            Mode::Async => producer.send_async(&topic, message, move |r| {
                report(r);
                drop(permit);
            }),
            Mode::Oneway => tasks.push(tokio::spawn(async move {
                if let Err(e) = producer.send_oneway(&topic, message).await {
                    eprintln!("waybill produce: oneway send failed: {e}");
                    failed_oneway.store(true, Ordering::Relaxed);
                }
                drop(permit);
            })),
        }
    }
    for t in tasks {
        t.await?;
    }
    if args.mode == Mode::Async {
        while done.load(Ordering::Relaxed) < count {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    if args.mode == Mode::Oneway {
        // Let the writer task put the last frames on the wire.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    if failed.load(Ordering::Relaxed) {
        bail!("some messages were not acknowledged with SEND_OK");
    }
    Ok(())
}

/// `--transaction`: one transaction per message, in turn; a line each
/// with the half's id (the transaction) and, when committed, the copy's.
async fn transactions(
    args: &ProduceArgs,
    producer: &Producer,
    message: Message,
    outcome: TxOutcome,
) -> anyhow::Result<()> {
    let mut failed = false;
    for _ in 0..args.count {
        let r = producer
            .send_in_transaction(&args.topic, message.clone(), |_| async move { outcome.state() })
            .await
            .context("transactional send failed")?;
        outln!(
            "{}",
            json!({
                "id": r.half.id,
                "key": args.key,
                "status": r.half.status.name(),
                "transaction": r.state.name(),
                "committed_id": r.committed.as_ref().map(|c| c.id.clone()),
            })
        );
        failed |= r.half.status != SendStatus::SendOk || (outcome == TxOutcome::Commit && r.committed.is_none());
    }
    if failed {
        bail!("some transactions were not stored with SEND_OK or not committed");
    }
    Ok(())
}
