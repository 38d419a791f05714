//! `waybill outbox`: the transactional outbox from the operator's side.
//!
//! - `status --db URL [--json]`: pending (and retrying), parked, sent rows
//!   kept, the oldest pending row's age, the latest error, the first
//!   parked rows. Exit 0 even with parked rows (they are reported, not
//!   failures of this command).
//! - `retry --db URL (--id N … | --all)`: parked rows back to pending.
//! - `install --db URL`: creates the table (what `migrations/outbox/` holds).
//! - `relay --db URL --broker ADDR [--name N]`: runs a relay as its own
//!   process (a sidecar beside the application), until SIGINT/SIGTERM.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use serde_json::json;
use waybill_client::outbox::{self, OutboxStatus, Relay, RelayOptions};
use waybill_client::sql::{self, redact};
use waybill_client::{Producer, ProducerOptions};

#[derive(Debug, Args)]
pub struct OutboxArgs {
    #[command(subcommand)]
    pub command: OutboxCommand,
}

#[derive(Debug, Subcommand)]
pub enum OutboxCommand {
    /// Pending, parked and sent rows, the oldest pending row's age, the latest error.
    Status {
        /// The application's database: sqlite://PATH or postgres://…
        #[arg(long, value_name = "URL")]
        db: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Send parked rows again (attempts start over).
    Retry {
        #[arg(long, value_name = "URL")]
        db: String,
        /// Row ids to retry (repeatable).
        #[arg(long = "id", value_name = "ROW", required_unless_present = "all")]
        ids: Vec<i64>,
        /// Every parked row.
        #[arg(long, conflicts_with = "ids")]
        all: bool,
    },
    /// Create the outbox table and its indexes in the database (idempotent).
    Install {
        #[arg(long, value_name = "URL")]
        db: String,
    },
    /// Run a relay: send pending rows until SEND_OK, mark them sent; until SIGINT/SIGTERM.
    Relay {
        #[arg(long, value_name = "URL")]
        db: String,
        /// Broker client-protocol address(es), comma-separated.
        #[arg(long, default_value = "127.0.0.1:9876")]
        broker: String,
        /// The broker's `--auth-token`.
        #[arg(long, env = "WAYBILL_AUTH_TOKEN", hide_env_values = true)]
        auth_token: Option<String>,
        #[command(flatten)]
        tls: super::tls::TlsArgs,
        /// Lease owner name; keep it across restarts so a restarted relay takes its rows back at once.
        #[arg(long)]
        name: Option<String>,
        /// Sends per row before it is parked.
        #[arg(long, default_value_t = 20)]
        max_attempts: u32,
        /// First retry delay in ms (doubles per attempt, up to 60 s).
        #[arg(long, default_value_t = 500)]
        backoff_ms: u64,
        /// How long a claimed row belongs to this relay (ms).
        #[arg(long, default_value_t = 60_000)]
        lease_ms: u64,
        /// Fault injection for tests: after the first batch is sent, stop before marking it and wait to be killed.
        #[arg(long, hide = true)]
        halt_before_mark: bool,
    },
}

pub async fn run(args: OutboxArgs) -> anyhow::Result<()> {
    match args.command {
        OutboxCommand::Status { db, json } => {
            let pool = open(&db).await?;
            let s = outbox::status(&pool).await?;
            if json {
                outln!("{}", status_json(&s));
            } else {
                print_status(&s);
            }
            Ok(())
        }
        OutboxCommand::Retry { db, ids, all } => {
            let pool = open(&db).await?;
            let moved = outbox::retry_parked(&pool, if all { &[] } else { &ids }).await?;
            if moved == 0 && !all {
                bail!("no parked row among {ids:?}: see `waybill outbox status --db …`");
            }
            outln!("{moved} parked row(s) back to pending");
            Ok(())
        }
        OutboxCommand::Install { db } => {
            let (pool, backend) = sql::connect(&db, 1)
                .await
                .with_context(|| format!("--db {}", redact(&db)))?;
            outbox::install(&pool, backend).await?;
            outbox::check(&pool, backend).await?;
            outln!("waybill_outbox ready in {}", redact(&db));
            Ok(())
        }
        OutboxCommand::Relay {
            db,
            broker,
            auth_token,
            tls,
            name,
            max_attempts,
            backoff_ms,
            lease_ms,
            halt_before_mark,
        } => {
            let mut popts = ProducerOptions::new(broker.clone());
            popts.brokers = broker.split(',').map(|b| b.trim().to_string()).collect();
            popts.auth_token = auth_token;
            popts.tls = tls.client()?;
            let producer = Arc::new(Producer::new(popts)?);
            let mut opts = RelayOptions::new(db.clone());
            if let Some(n) = name {
                opts.name = n;
            }
            opts.max_attempts = max_attempts.max(1);
            opts.backoff_min = Duration::from_millis(backoff_ms.max(1));
            opts.lease = Duration::from_millis(lease_ms.max(100));
            opts.halt_before_mark = halt_before_mark;
            let relay = Relay::start(opts, producer)
                .await
                .with_context(|| format!("--db {}", redact(&db)))?;
            eprintln!("waybill outbox relay: relaying {} to {broker}", redact(&db));
            waybill::serve::shutdown_signal().await;
            let s = relay.stats();
            relay.shutdown().await;
            eprintln!(
                "waybill outbox relay: stopped; sent {}, failed attempts {}, pending {}, parked {}",
                s.sent, s.failed_attempts, s.pending, s.parked
            );
            Ok(())
        }
    }
}

/// Opens the database and checks the table, naming what is wrong.
async fn open(db: &str) -> anyhow::Result<sqlx::AnyPool> {
    let (pool, backend) = sql::connect(db, 1)
        .await
        .with_context(|| format!("--db {}", redact(db)))?;
    outbox::check(&pool, backend)
        .await
        .with_context(|| format!("--db {}", redact(db)))?;
    Ok(pool)
}

fn status_json(s: &OutboxStatus) -> serde_json::Value {
    json!({
        "pending": s.pending,
        "retrying": s.retrying,
        "parked": s.parked,
        "sent": s.sent,
        "oldest_pending_ms": s.oldest_pending_ms,
        "max_attempts": s.max_attempts,
        "last_error": s.last_error.as_ref().map(|(id, e)| json!({"row": id, "error": e})),
        "parked_rows": s.parked_rows.iter().map(|p| json!({
            "row": p.id, "topic": p.topic, "key": p.key, "attempts": p.attempts,
            "last_error": p.last_error, "created_at_ms": p.created_at,
        })).collect::<Vec<_>>(),
    })
}

fn print_status(s: &OutboxStatus) {
    let age = s
        .oldest_pending_ms
        .map(|ms| format!("{:.1} s", ms as f64 / 1000.0))
        .unwrap_or_else(|| "-".into());
    outln!(
        "pending {} (retrying {}), parked {}, sent and kept {}",
        s.pending,
        s.retrying,
        s.parked,
        s.sent
    );
    outln!(
        "oldest pending: {age}; most attempts on a pending row: {}",
        s.max_attempts
    );
    if let Some((id, e)) = &s.last_error {
        outln!("latest error: row {id}: {e}");
    }
    if !s.parked_rows.is_empty() {
        outln!("parked (send again with `waybill outbox retry --db … --id ROW` or `--all`):");
        for p in &s.parked_rows {
            outln!(
                "  row {} topic {} key {} attempts {}: {}",
                p.id,
                p.topic,
                p.key.as_deref().unwrap_or("-"),
                p.attempts,
                p.last_error.as_deref().unwrap_or("")
            );
        }
    }
}
