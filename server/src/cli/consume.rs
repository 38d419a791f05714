//! `waybill consume`: a push consumer for one group.
//!
//! With `--exec CMD`, each message's body goes to `sh -c CMD` on stdin with
//! `WAYBILL_MSG_ID`, `WAYBILL_MSG_KEY`, `WAYBILL_TOPIC` and
//! `WAYBILL_RECONSUME_TIMES` set; exit 0 is CONSUME_SUCCESS, anything else
//! RECONSUME_LATER. Without it each message is printed as a JSON line and
//! succeeds.
//!
//! With `--dedupe URL` (`sqlite://…`, `postgres://…`, `redis://…`) the
//! handler runs through the inbox: once per dedupe key (the message key,
//! or the id when there is none) within `--dedupe-window-ms`; a duplicate
//! is acknowledged without running it and traced as such. With SQL the key
//! is committed after `--exec` succeeded, so a crash between the two runs
//! the command again (the command's effect is not in the transaction; the
//! library's `handle_in_tx` puts it there).

use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::sync::Mutex;
use waybill_client::inbox::Inbox;
use waybill_client::{ConsumeResult, ConsumerOptions, Delivered, PushConsumer, MAX_REASON};

#[derive(Debug, Args)]
pub struct ConsumeArgs {
    /// Broker client-protocol address.
    #[arg(long, default_value = "127.0.0.1:9876")]
    pub broker: String,
    /// The broker's `--auth-token`, presented first on every connection (as the HTTP commands read it from the env).
    #[arg(long, env = "WAYBILL_AUTH_TOKEN", hide_env_values = true)]
    pub auth_token: Option<String>,
    #[command(flatten)]
    pub tls: super::tls::TlsArgs,
    /// Topic to consume.
    #[arg(long)]
    pub topic: String,
    /// Consumer group to join (members share the queues; offsets are the group's).
    #[arg(long)]
    pub group: String,
    /// Handler command, run with `sh -c` per message.
    #[arg(long)]
    pub exec: Option<String>,
    /// Exit after this many successfully consumed messages.
    #[arg(long)]
    pub count: Option<u64>,
    /// Exit after this many milliseconds with nothing to consume.
    #[arg(long)]
    pub idle_exit_ms: Option<u64>,
    /// Commit on delivery, before the handler runs (lossy: flagged as a loss point).
    #[arg(long)]
    pub auto_commit: bool,
    /// Messages per pull.
    #[arg(long, default_value_t = 32)]
    pub batch: u32,
    /// Heartbeat period in ms.
    #[arg(long, default_value_t = 1000)]
    pub heartbeat_ms: u64,
    /// A handler running longer than this counts as failed.
    #[arg(long, default_value_t = 60_000)]
    pub handler_timeout_ms: u64,
    /// Member id in the group (default: unique per process).
    #[arg(long)]
    pub client_id: Option<String>,
    /// Handle idempotently through an inbox at this URL: sqlite://PATH, postgres://… or redis://HOST:PORT.
    #[arg(long, value_name = "URL")]
    pub dedupe: Option<String>,
    /// How long the inbox remembers a handled key (ms; 0 = forever).
    #[arg(long, default_value_t = 86_400_000, requires = "dedupe")]
    pub dedupe_window_ms: u64,
    /// Commit offsets at most this often (ms; 0 = after every batch, RocketMQ persists every 5000).
    #[arg(long, default_value_t = 0)]
    pub commit_interval_ms: u64,
}

async fn run_exec(cmd: &str, d: &Delivered) -> ConsumeResult {
    let child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .env("WAYBILL_MSG_ID", &d.id)
        .env("WAYBILL_MSG_KEY", d.message.key.as_deref().unwrap_or(""))
        .env("WAYBILL_TOPIC", &d.topic)
        .env("WAYBILL_RECONSUME_TIMES", d.reconsume_times.to_string())
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            eprintln!("waybill consume: cannot run {cmd:?}: {e}");
            return ConsumeResult::reconsume_later(format!("--exec could not start: {e}"));
        }
    };
    // Its stderr still reaches ours; the last MAX_REASON bytes are kept as
    // the failure reason. Read in a task so a chatty handler never blocks.
    let stderr = child.stderr.take().map(|mut err| {
        tokio::spawn(async move {
            let mut kept: Vec<u8> = Vec::new();
            let mut buf = [0u8; 4096];
            while let Ok(n) = tokio::io::AsyncReadExt::read(&mut err, &mut buf).await {
                if n == 0 {
                    break;
                }
                let _ = std::io::Write::write_all(&mut std::io::stderr(), &buf[..n]);
                kept.extend_from_slice(&buf[..n]);
                if kept.len() > 2 * MAX_REASON {
                    kept.drain(..kept.len() - MAX_REASON);
                }
            }
            String::from_utf8_lossy(&kept).into_owned()
        })
    });
    if let Some(mut stdin) = child.stdin.take() {
        // A handler that ignores its stdin closes the pipe early: not an error.
        let _ = stdin.write_all(&d.message.body).await;
    }
    let status = child.wait().await;
    let err_text = match stderr {
        Some(t) => t.await.unwrap_or_default(),
        None => String::new(),
    };
    match status {
        Ok(status) if status.success() => ConsumeResult::Success,
        Ok(status) => {
            let how = match status.code() {
                Some(code) => format!("--exec exited with code {code}"),
                None => format!("--exec was killed ({status})"),
            };
            let err_text = err_text.trim();
            ConsumeResult::reconsume_later(if err_text.is_empty() {
                how
            } else {
                format!("{how}: {}", waybill_client::consumer::tail(err_text, MAX_REASON))
            })
        }
        Err(e) => ConsumeResult::reconsume_later(format!("--exec could not be waited for: {e}")),
    }
}

/// One message without an inbox: `--exec`, or print it as a JSON line.
async fn handle(exec: Option<&str>, d: &Delivered) -> ConsumeResult {
    match exec {
        Some(cmd) => run_exec(cmd, d).await,
        None => {
            outln!(
                "{}",
                json!({
                    "id": d.id,
                    "key": d.message.key,
                    "topic": d.topic,
                    "queue_id": d.queue_id,
                    "queue_offset": d.queue_offset,
                    "reconsume_times": d.reconsume_times,
                    "body": String::from_utf8_lossy(&d.message.body),
                })
            );
            ConsumeResult::Success
        }
    }
}

pub async fn run(args: ConsumeArgs) -> anyhow::Result<()> {
    let mut opts = ConsumerOptions::new(args.broker.clone(), args.group.clone(), args.topic.clone());
    opts.auto_commit = args.auto_commit;
    opts.auth_token.clone_from(&args.auth_token);
    opts.tls = args.tls.client()?;
    opts.batch = args.batch.max(1);
    opts.heartbeat_interval = Duration::from_millis(args.heartbeat_ms.max(10));
    opts.handler_timeout = Duration::from_millis(args.handler_timeout_ms.max(1));
    opts.commit_interval = Duration::from_millis(args.commit_interval_ms);
    if let Some(id) = args.client_id.clone() {
        opts.client_id = id;
    }
    let inbox = match &args.dedupe {
        Some(url) => {
            let inbox = Inbox::connect(url, &args.group)
                .await
                .with_context(|| format!("--dedupe {}", waybill_client::sql::redact(url)))?
                .with_window(Duration::from_millis(args.dedupe_window_ms));
            opts = inbox.declare(opts);
            Some(inbox)
        }
        None => None,
    };
    let duplicates = Arc::new(AtomicU64::new(0));
    let successes = Arc::new(AtomicU64::new(0));
    // Last delivery time, for --idle-exit-ms; std Instant behind a tokio
    // Mutex because handlers update it from many tasks.
    let last = Arc::new(Mutex::new(Instant::now()));
    let exec = args.exec.clone();
    let (s, l, dups) = (successes.clone(), last.clone(), duplicates.clone());
    let consumer = PushConsumer::start(opts, move |d: Delivered| {
        let (exec, s, l, dups, inbox) = (exec.clone(), s.clone(), l.clone(), dups.clone(), inbox.clone());
        async move {
            *l.lock().await = Instant::now();
            let result = match &inbox {
                Some(inbox) => {
                    inbox
                        .handle(d, |d| async move { handle(exec.as_deref(), &d).await })
                        .await
                }
                None => handle(exec.as_deref(), &d).await,
            };
            match &result {
                ConsumeResult::Success => {
                    s.fetch_add(1, Ordering::Relaxed);
                }
                ConsumeResult::Duplicate(_) => {
                    s.fetch_add(1, Ordering::Relaxed);
                    dups.fetch_add(1, Ordering::Relaxed);
                }
                _ => {}
            }
            *l.lock().await = Instant::now();
            result
        }
    })
    .await?;
    loop {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if args.count.is_some_and(|n| successes.load(Ordering::Relaxed) >= n) {
            break;
        }
        if let Some(ms) = args.idle_exit_ms {
            if last.lock().await.elapsed() >= Duration::from_millis(ms) {
                break;
            }
        }
        if args.count.is_none() && args.idle_exit_ms.is_none() {
            // Runs until interrupted.
            tokio::select! {
                _ = tokio::signal::ctrl_c() => break,
                _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
            }
        }
    }
    consumer.shutdown().await;
    if args.dedupe.is_some() {
        eprintln!(
            "waybill consume: {} consumed, {} of them duplicates the inbox acknowledged without running the handler",
            successes.load(Ordering::Relaxed),
            duplicates.load(Ordering::Relaxed)
        );
    }
    if let Some(n) = args.count {
        let got = successes.load(Ordering::Relaxed);
        if got < n {
            bail!("consumed {got} of {n} messages");
        }
    }
    Ok(())
}
