//! The tracer: every message's path, recorded off the hot path.
//!
//! The broker hands [`event::TraceEvent`]s to [`Tracer::record`], which
//! never blocks: events go into a bounded queue, and when it is full they
//! are shed, counted, and the period is written as a gap so affected
//! timelines say that something is missing. A writer task drains the queue
//! in batches into the trace database (SQLite by default, PostgreSQL for
//! clusters) and samples the store's flushed watermark. What can be derived
//! from ranges is stored as ranges: flushed-up-to, offsets delivered to a
//! group, offsets a group committed. Per-message rows exist only for a
//! message's own events (stored; retried; dead-lettered; replayed; lost).
//!
//! # Layout
//! - [`event`]: what the broker reports.
//! - [`live`]: event summaries for the live feed.
//! - [`otel`]: OpenTelemetry spans over OTLP/HTTP.
//! - [`runs`]: produce and store stages as runs of the log, not rows per message.
//! - [`varint`]: the compact encoding of run entries and handler times.
//! - [`db`]: connecting, migrations, row helpers.
//! - [`writer`]: the batching writer task.
//! - [`timeline`]: a message's stages, status and loss points.
//! - [`alerts`]: threshold rules, webhook, metrics.
//! - [`audit`]: after a restart, acknowledged messages missing from the log.
//! - [`search`]: search by key, id, topic, tag, time, with a cursor.

pub mod alerts;
pub mod audit;
pub mod db;
pub mod event;
pub mod live;
pub mod otel;
pub mod runs;
pub mod search;
pub mod timeline;
pub mod varint;
pub mod writer;

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sqlx::AnyPool;
use tokio::sync::{mpsc, watch};

use crate::storage::Store;
pub use event::TraceEvent;

/// Events the queue holds before the tracer sheds.
pub const QUEUE_CAPACITY: usize = 65_536;

/// Errors of the trace layer.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("trace database URL must start with sqlite: or postgres:// (got {0:?})")]
    Url(String),
    #[error("trace database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("trace database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// Counters shared by the recording side and the writer.
#[derive(Default)]
pub(crate) struct Shared {
    pub enqueued: AtomicU64,
    pub shed: AtomicU64,
    /// When shedding started (ms), 0 while not shedding.
    pub shed_since: AtomicI64,
    /// Confirmed position per replica, sampled into watermark rows.
    pub replicated: std::sync::Mutex<std::collections::BTreeMap<u16, u64>>,
}

pub struct Tracer {
    tx: mpsc::Sender<TraceEvent>,
    shared: Arc<Shared>,
    /// Events written so far (the writer publishes after each batch).
    written: watch::Receiver<u64>,
    pool: AnyPool,
    node: u16,
}

impl Tracer {
    /// Connects to `url`, migrates, and starts the writer.
    pub async fn start(url: &str, store: Arc<Store>) -> Result<Arc<Tracer>, TraceError> {
        let pool = db::connect(url).await?;
        let backend = db::backend_of(url)?;
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        let shared = Arc::new(Shared::default());
        let (written_tx, written) = watch::channel(0);
        let node = store.node_id();
        tokio::spawn(writer::run(
            pool.clone(),
            backend,
            rx,
            shared.clone(),
            written_tx,
            store,
            node,
        ));
        Ok(Arc::new(Tracer {
            tx,
            shared,
            written,
            pool,
            node,
        }))
    }

    /// Records an event without ever waiting; sheds (and counts) when full.
    pub fn record(&self, ev: TraceEvent) {
        match self.tx.try_send(ev) {
            Ok(()) => {
                self.shared.enqueued.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                self.shared.shed.fetch_add(1, Ordering::Relaxed);
                let now = chrono::Utc::now().timestamp_millis();
                let _ = self
                    .shared
                    .shed_since
                    .compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed);
            }
        }
    }

    /// Waits until every event recorded before this call is written (or
    /// `limit` passes). For tests and shutdown.
    pub async fn flush(&self, limit: Duration) -> bool {
        let target = self.shared.enqueued.load(Ordering::Relaxed);
        let mut rx = self.written.clone();
        let reached = async move { rx.wait_for(|w| *w >= target).await.is_ok() };
        tokio::time::timeout(limit, reached).await.unwrap_or(false)
    }

    /// A replica confirmed every byte below `pos` (sampled, not queued).
    pub fn note_replicated(&self, replica: u16, pos: u64) {
        if let Ok(mut m) = self.shared.replicated.lock() {
            let e = m.entry(replica).or_default();
            *e = (*e).max(pos);
        }
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub fn node(&self) -> u16 {
        self.node
    }

    /// Events waiting to be written.
    pub fn queue_depth(&self) -> u64 {
        self.shared
            .enqueued
            .load(Ordering::Relaxed)
            .saturating_sub(*self.written.borrow())
    }

    /// Events dropped because the queue was full.
    pub fn shed_count(&self) -> u64 {
        self.shared.shed.load(Ordering::Relaxed)
    }
}
