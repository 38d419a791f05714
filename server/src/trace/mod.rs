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
//! The broker never waits for the trace store: [`Tracer::spawn`] returns at
//! once, the writer connects (with backoff), runs the start-up audit and
//! then writes, while events queue and, past the queue's bound, are shed.
//! Its state (`connecting`, `ok`, `degraded`, `down`) is in [`Tracer::health`].
//!
//! Invariant behind the loss windows (see [`windows`]): at any moment at
//! most `max_unwritten` acknowledged messages are accepted by the tracer and
//! not yet written — counted in messages, released only when their rows (or
//! a gap row naming them) commit. A send the tracer cannot accept is shed
//! and reported as [`Recorded::Shed`]; under async flush the broker then
//! makes it durable before answering, so what a crash takes unrecorded is
//! bounded by the queue, never by how long the trace store was away.
//!
//! # Layout
//! - [`event`]: what the broker reports (defined in `broker::event`).
//! - [`live`]: event summaries for the live feed.
//! - [`history`]: the bounded per-second stats history behind the charts.
//! - [`otel`]: OpenTelemetry spans over OTLP/HTTP.
//! - [`runs`]: produce and store stages as runs of the log, not rows per message.
//! - [`varint`]: the compact encoding of run entries and handler times.
//! - [`db`]: connecting, migrations, row helpers.
//! - [`rows`]: a batch of events as multi-row inserts.
//! - [`mark`]: the writer's progress marks and gap rows.
//! - [`writer`]: the writer task (connect, audit, batches, retries).
//! - [`timeline`]: a message's stages, status and loss points.
//! - [`alerts`]: threshold rules, webhook, metrics.
//! - [`audit`]: after a restart, acknowledged messages missing from the log.
//! - [`windows`]: after a restart, where acknowledged messages may be gone unrecorded.
//! - [`search`]: search by key, id, topic, tag, time, with a cursor.

pub mod alerts;
pub mod audit;
pub mod db;
pub use crate::broker::event;
pub mod history;
pub mod live;
pub mod mark;
pub mod otel;
pub mod rows;
pub mod runs;
pub mod search;
pub mod sink;
pub mod timeline;
pub mod varint;
pub mod windows;
pub mod writer;

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde::Serialize;
use sqlx::AnyPool;
use tokio::sync::{mpsc, watch};

use crate::storage::Store;
pub use event::{Recorded, TraceEvent};

/// Events the queue holds before the tracer sheds.
pub const QUEUE_CAPACITY: usize = 65_536;
/// Default bound on acknowledged messages accepted and not yet written
/// (`--trace-queue-messages`): the largest count a loss window can have.
pub const DEFAULT_MAX_UNWRITTEN: u64 = 65_536;

/// Errors of the trace layer.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("trace database URL must start with sqlite: or postgres:// (got {0:?})")]
    Url(String),
    #[error("trace database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("trace database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("trace store not connected ({0})")]
    NotConnected(String),
    #[error("trace store did not answer within {0:?}")]
    Timeout(Duration),
}

/// Where the tracer stands with its trace store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum State {
    /// Not connected yet (first attempt under way).
    Connecting = 0,
    /// Writing; nothing shed since the last batch.
    Ok = 1,
    /// Writing, but events were shed (queue full): timelines have gaps.
    Degraded = 2,
    /// The trace store failed (connect, audit or write); retrying.
    Down = 3,
}

impl State {
    pub const ALL: [State; 4] = [State::Connecting, State::Ok, State::Degraded, State::Down];

    pub fn name(self) -> &'static str {
        match self {
            State::Connecting => "connecting",
            State::Ok => "ok",
            State::Degraded => "degraded",
            State::Down => "down",
        }
    }

    fn from_u8(v: u8) -> State {
        match v {
            1 => State::Ok,
            2 => State::Degraded,
            3 => State::Down,
            _ => State::Connecting,
        }
    }
}

/// The tracer's state as `/healthz` and the dashboard show it.
#[derive(Debug, Clone, Serialize)]
pub struct Health {
    pub state: State,
    /// The last failure while not `ok` (connect, audit or write).
    pub error: Option<String>,
    /// Since when (ms) the tracer is in this state.
    pub since_ms: i64,
    /// `pending`, `done`, `skipped` (Raft) or `off` (no audit asked).
    pub audit: &'static str,
    /// Events waiting to be written.
    pub queue_depth: u64,
    /// Acknowledged messages accepted and not yet written, and the bound.
    pub unwritten_messages: u64,
    pub max_unwritten_messages: u64,
    /// Events dropped since start (each period is a gap row).
    pub shed_events: u64,
}

/// Loss windows the audit found for this node, for `/metrics`.
#[derive(Debug, Clone, Copy, Default)]
pub struct WindowTotals {
    pub windows: u64,
    /// Sum of the bounded windows' `max_count`.
    pub max_messages: u64,
    /// Windows without a bound.
    pub unbounded: u64,
}

/// Counters and state shared by the recording side and the writer.
pub(crate) struct Shared {
    pub enqueued: AtomicU64,
    pub shed: AtomicU64,
    /// Messages of accepted `Stored` events whose rows have not committed.
    pub unwritten: AtomicU64,
    pub max_unwritten: u64,
    /// Events shed since the writer last wrote a gap row. std Mutex: taken
    /// only on the shed path and once per writer round, never across an
    /// await.
    pub gap: Mutex<mark::Gap>,
    /// Confirmed position per replica, sampled into watermark rows. std
    /// Mutex: a map update per confirmation, a copy per writer round.
    pub replicated: Mutex<std::collections::BTreeMap<u16, u64>>,
    /// Set once the writer connected and migrated.
    pub pool: OnceLock<AnyPool>,
    /// A [`State`] as u8: read by every health check, written by the writer.
    pub state: AtomicU8,
    /// The last error and since when the state holds. std Mutex: written
    /// on state changes only, read by health checks.
    pub status: Mutex<(Option<String>, i64)>,
    /// `pending`, `done`, `skipped`, `off`. std Mutex: set once or twice.
    pub audit: Mutex<&'static str>,
    /// Loss windows for `/metrics`, loaded after the audit. std Mutex: set
    /// once, read per scrape.
    pub windows: Mutex<WindowTotals>,
}

impl Shared {
    fn new(max_unwritten: u64, audit: &'static str) -> Shared {
        Shared {
            enqueued: AtomicU64::new(0),
            shed: AtomicU64::new(0),
            unwritten: AtomicU64::new(0),
            max_unwritten: max_unwritten.max(1),
            gap: Mutex::new(mark::Gap::default()),
            replicated: Mutex::default(),
            pool: OnceLock::new(),
            state: AtomicU8::new(State::Connecting as u8),
            status: Mutex::new((None, now_ms())),
            audit: Mutex::new(audit),
            windows: Mutex::default(),
        }
    }

    pub fn state(&self) -> State {
        State::from_u8(self.state.load(Ordering::Acquire))
    }

    /// Moves to `state`, keeping the error (or clearing it when `ok`) and
    /// the time of the change. Logs transitions, not every round.
    pub fn set_state(&self, state: State, error: Option<String>) {
        let prev = State::from_u8(self.state.swap(state as u8, Ordering::AcqRel));
        let mut st = self.status.lock().unwrap_or_else(|p| p.into_inner());
        if prev != state {
            st.1 = now_ms();
            // Ok ↔ degraded can flip every round while the queue hovers at
            // its bound (the shed counter and gap rows tell that story).
            let flapping = matches!(
                (prev, state),
                (State::Ok, State::Degraded) | (State::Degraded, State::Ok)
            );
            match &error {
                _ if flapping => tracing::debug!(state = state.name(), error = ?error, "tracer state changed"),
                Some(e) => tracing::warn!(state = state.name(), error = %e, "tracer state changed"),
                None => tracing::info!(state = state.name(), "tracer state changed"),
            }
        }
        st.0 = error;
    }

    pub fn set_audit(&self, audit: &'static str) {
        *self.audit.lock().unwrap_or_else(|p| p.into_inner()) = audit;
    }
}

/// How a tracer is set up.
#[derive(Debug, Clone)]
pub struct Options {
    /// Most acknowledged messages accepted and not yet written; past it
    /// sends are shed ([`DEFAULT_MAX_UNWRITTEN`]).
    pub max_unwritten: u64,
    /// The start-up audit to run once connected (`None`: none).
    pub audit: Option<audit::Start>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_unwritten: DEFAULT_MAX_UNWRITTEN,
            audit: None,
        }
    }
}

pub struct Tracer {
    tx: mpsc::Sender<TraceEvent>,
    shared: Arc<Shared>,
    /// Events written so far (the writer publishes after each batch).
    written: watch::Receiver<u64>,
    /// Set to ask the writer for a last batch and a closing mark.
    closing: watch::Sender<bool>,
    /// Becomes true when the writer task has ended.
    done: watch::Receiver<bool>,
    node: u16,
}

impl Tracer {
    /// Starts the tracer without waiting for its store: the writer connects
    /// in the background (retrying with backoff), runs `opts.audit`, then
    /// writes. Fails only on a URL it cannot use.
    pub fn spawn(url: &str, store: Arc<Store>, opts: Options) -> Result<Arc<Tracer>, TraceError> {
        let backend = db::backend_of(url)?;
        Ok(Tracer::launch(
            writer::Link::Connect(url.to_string()),
            backend,
            store,
            opts,
        ))
    }

    /// Connects and migrates now, then starts the writer (no audit): for
    /// tests and benchmarks that need the pool at once.
    pub async fn start(url: &str, store: Arc<Store>) -> Result<Arc<Tracer>, TraceError> {
        let backend = db::backend_of(url)?;
        let pool = db::connect(url).await?;
        Ok(Tracer::launch(
            writer::Link::Ready(pool),
            backend,
            store,
            Options::default(),
        ))
    }

    fn launch(link: writer::Link, backend: db::Backend, store: Arc<Store>, opts: Options) -> Arc<Tracer> {
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        let audit = if opts.audit.is_some() { "pending" } else { "off" };
        let shared = Arc::new(Shared::new(opts.max_unwritten, audit));
        let (written_tx, written) = watch::channel(0);
        let (closing, closing_rx) = watch::channel(false);
        let (done_tx, done) = watch::channel(false);
        let node = store.node_id();
        if let writer::Link::Ready(pool) = &link {
            // Usable as soon as this returns.
            let _ = shared.pool.set(pool.clone());
            shared.set_state(State::Ok, None);
        }
        tokio::spawn(writer::run(writer::Ctx {
            link,
            backend,
            rx,
            shared: shared.clone(),
            written: written_tx,
            store,
            audit: opts.audit,
            closing: closing_rx,
            done: done_tx,
        }));
        Arc::new(Tracer {
            tx,
            shared,
            written,
            closing,
            done,
            node,
        })
    }

    /// Records an event without ever waiting; sheds (and counts) when the
    /// queue or the bound on unwritten messages is full.
    pub fn record(&self, ev: TraceEvent) -> Recorded {
        let msgs = ev.message_count();
        let sh = &self.shared;
        if msgs > 0 {
            let before = sh.unwritten.fetch_add(msgs, Ordering::AcqRel);
            if before + msgs > sh.max_unwritten {
                sh.unwritten.fetch_sub(msgs, Ordering::AcqRel);
                self.shed(msgs);
                return Recorded::Shed;
            }
        }
        match self.tx.try_send(ev) {
            Ok(()) => {
                sh.enqueued.fetch_add(1, Ordering::Relaxed);
                Recorded::Queued
            }
            Err(_) => {
                if msgs > 0 {
                    sh.unwritten.fetch_sub(msgs, Ordering::AcqRel);
                }
                self.shed(msgs);
                Recorded::Shed
            }
        }
    }

    fn shed(&self, msgs: u64) {
        self.shared.shed.fetch_add(1, Ordering::Relaxed);
        self.shared
            .gap
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .note(now_ms(), 1, msgs);
    }

    /// Waits until every event recorded before this call is written (or
    /// `limit` passes). For tests and shutdown.
    pub async fn flush(&self, limit: Duration) -> bool {
        let target = self.shared.enqueued.load(Ordering::Relaxed);
        let mut rx = self.written.clone();
        let reached = async move { rx.wait_for(|w| *w >= target).await.is_ok() };
        tokio::time::timeout(limit, reached).await.unwrap_or(false)
    }

    /// Clean shutdown, after the store closed: the writer writes what it
    /// holds and a closing mark (nothing of this boot can be gone), within
    /// `limit` — a trace store that is down must not hold up the exit.
    pub async fn close(&self, limit: Duration) -> bool {
        self.closing.send_replace(true);
        let mut rx = self.done.clone();
        let ended = async move { rx.wait_for(|d| *d).await.is_ok() };
        tokio::time::timeout(limit, ended).await.unwrap_or(false)
    }

    /// A replica confirmed every byte below `pos` (sampled, not queued).
    pub fn note_replicated(&self, replica: u16, pos: u64) {
        if let Ok(mut m) = self.shared.replicated.lock() {
            let e = m.entry(replica).or_default();
            *e = (*e).max(pos);
        }
    }

    /// The trace store, once the writer has connected to it.
    pub fn pool(&self) -> Result<&AnyPool, TraceError> {
        self.shared
            .pool
            .get()
            .ok_or_else(|| TraceError::NotConnected(self.state().name().to_string()))
    }

    pub fn node(&self) -> u16 {
        self.node
    }

    pub fn state(&self) -> State {
        self.shared.state()
    }

    /// Events waiting to be written.
    pub fn queue_depth(&self) -> u64 {
        self.shared
            .enqueued
            .load(Ordering::Relaxed)
            .saturating_sub(*self.written.borrow())
    }

    /// Events dropped because the queue was full (or the store refused them).
    pub fn shed_count(&self) -> u64 {
        self.shared.shed.load(Ordering::Relaxed)
    }

    /// Acknowledged messages accepted and not yet written.
    pub fn unwritten(&self) -> u64 {
        self.shared.unwritten.load(Ordering::Relaxed)
    }

    pub fn max_unwritten(&self) -> u64 {
        self.shared.max_unwritten
    }

    /// Loss windows the start-up audit found for this node (all boots).
    pub fn window_totals(&self) -> WindowTotals {
        *self.shared.windows.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn health(&self) -> Health {
        let (error, since_ms) = self.shared.status.lock().unwrap_or_else(|p| p.into_inner()).clone();
        Health {
            state: self.state(),
            error,
            since_ms,
            audit: *self.shared.audit.lock().unwrap_or_else(|p| p.into_inner()),
            queue_depth: self.queue_depth(),
            unwritten_messages: self.unwritten(),
            max_unwritten_messages: self.max_unwritten(),
            shed_events: self.shed_count(),
        }
    }
}

pub(crate) use crate::time::now_ms;
