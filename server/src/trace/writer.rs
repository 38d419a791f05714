//! The writer task: connects to the trace store, runs the start-up audit,
//! then drains the trace queue into the store in batches.
//!
//! Nothing here is on the broker's path: until the store answers, events
//! wait in the bounded queue (and past its bound are shed by
//! [`super::Tracer::record`]). Connecting retries with backoff; each try
//! and each write has a timeout, so a trace store that is slow, full or
//! down shows up as the tracer's state, never as a stuck broker.
//!
//! A batch is whatever arrived within [`BATCH_WINDOW`] of its first event
//! (at most [`MAX_BATCH`] events), taken after the window in one go (the
//! writer is not woken per event), written in one transaction with
//! multi-row inserts together with the watermarks that moved, a gap row for
//! events shed since the last round, and this boot's progress mark (see
//! [`super::mark`]); an idle round writes the mark alone. A batch the store
//! does not take is kept and retried, unless the store still takes a round
//! without it: then that batch is what it refuses, and it is dropped with a
//! gap row that names its acknowledged-but-unsynced messages' log range.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use sqlx::AnyPool;
use tokio::sync::{mpsc, watch};

use super::db::{self, Backend};
use super::event::TraceEvent;
use super::mark::{self, Gap, Mark};
use super::{audit, now_ms, rows, windows, Shared, State, TraceError};
use crate::storage::{Flush, Store};

/// How long a batch collects after its first event.
const BATCH_WINDOW: Duration = Duration::from_millis(50);
/// Most events per batch.
const MAX_BATCH: usize = 1000;
/// Mark and watermark period when no events arrive: how stale a mark can
/// get on an idle node.
const IDLE_TICK: Duration = Duration::from_millis(100);
/// One connect-and-migrate try: a trace store that accepts connections but
/// never answers must not keep the tracer from retrying.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// One round's transaction: a store that stops answering mid-write is
/// treated as down (the batch is kept and retried), not waited for.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Retry delays after a failed connect, audit or write: doubling from the
/// first to the last, so a store that comes back is used within seconds
/// and a store that stays away costs a try every few seconds.
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_LAST: Duration = Duration::from_secs(5);

/// How the writer reaches its store.
pub(crate) enum Link {
    /// Connect (and migrate) in the background.
    Connect(String),
    /// Already connected.
    Ready(AnyPool),
}

/// Everything the writer task owns.
pub(crate) struct Ctx {
    pub link: Link,
    pub backend: Backend,
    pub rx: mpsc::Receiver<TraceEvent>,
    pub shared: Arc<Shared>,
    pub written: watch::Sender<u64>,
    pub store: Arc<Store>,
    pub audit: Option<audit::Start>,
    /// True once [`super::Tracer::close`] asked for a clean end.
    pub closing: watch::Receiver<bool>,
    pub done: watch::Sender<bool>,
}

pub(crate) async fn run(mut ctx: Ctx) {
    let started = now_ms();
    if let Some(pool) = link(&mut ctx).await {
        if audit(&mut ctx, &pool).await {
            write_loop(&mut ctx, &pool, started).await;
        }
    }
    ctx.done.send_replace(true);
}

/// Doubling retry delays.
struct Backoff(Duration);

impl Backoff {
    fn new() -> Backoff {
        Backoff(BACKOFF_FIRST)
    }

    fn next(&mut self) -> Duration {
        let d = self.0;
        self.0 = (self.0 * 2).min(BACKOFF_LAST);
        d
    }

    fn reset(&mut self) {
        self.0 = BACKOFF_FIRST;
    }
}

/// Whether the tracer is asked to end: an explicit close, or every handle
/// to it gone.
fn ending(closing: &watch::Receiver<bool>) -> bool {
    *closing.borrow() || closing.has_changed().is_err()
}

/// Resolves once [`super::Tracer::close`] asks (or every handle is gone).
async fn asked_to_close(closing: &mut watch::Receiver<bool>) {
    let _ = closing.wait_for(|c| *c).await;
}

/// Sleeps `d`; false when asked to end meanwhile.
async fn pause(closing: &mut watch::Receiver<bool>, d: Duration) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => true,
        _ = asked_to_close(closing) => false,
    }
}

/// Connects and migrates, retrying until it works or the tracer ends.
async fn link(ctx: &mut Ctx) -> Option<AnyPool> {
    let url = match std::mem::replace(&mut ctx.link, Link::Connect(String::new())) {
        // Set up by Tracer::start already.
        Link::Ready(pool) => return Some(pool),
        Link::Connect(url) => url,
    };
    let mut backoff = Backoff::new();
    loop {
        let attempt = tokio::time::timeout(CONNECT_TIMEOUT, db::connect(&url));
        let outcome = tokio::select! {
            r = attempt => r,
            _ = asked_to_close(&mut ctx.closing) => return None,
        };
        let why = match outcome {
            Ok(Ok(pool)) => {
                let _ = ctx.shared.pool.set(pool.clone());
                ctx.shared.set_state(State::Ok, None);
                return Some(pool);
            }
            Ok(Err(e)) => format!("cannot connect: {e}"),
            Err(_) => format!("cannot connect: no answer within {CONNECT_TIMEOUT:?}"),
        };
        ctx.shared.set_state(State::Down, Some(why));
        if ending(&ctx.closing) || !pause(&mut ctx.closing, backoff.next()).await {
            return None;
        }
    }
}

/// Runs the start-up audit (if asked), retrying until it completes; false
/// when the tracer ended first.
async fn audit(ctx: &mut Ctx, pool: &AnyPool) -> bool {
    let Some(start) = ctx.audit else {
        return true;
    };
    let mut backoff = Backoff::new();
    loop {
        let outcome = tokio::select! {
            r = audit::run(pool, &ctx.store, &start) => r,
            _ = asked_to_close(&mut ctx.closing) => return false,
        };
        match outcome {
            Ok(report) => {
                tracing::info!(
                    checked = report.checked,
                    lost = report.lost.len(),
                    windows = report.windows.len(),
                    "trace audit done"
                );
                match windows::totals(pool, ctx.store.node_id()).await {
                    Ok(t) => *ctx.shared.windows.lock().unwrap_or_else(|p| p.into_inner()) = t,
                    Err(e) => tracing::warn!(error = %e, "cannot count loss windows"),
                }
                ctx.shared.set_audit("done");
                ctx.shared.set_state(State::Ok, None);
                return true;
            }
            Err(e) => {
                ctx.shared
                    .set_state(State::Down, Some(format!("start-up audit failed: {e}")));
                if ending(&ctx.closing) || !pause(&mut ctx.closing, backoff.next()).await {
                    return false;
                }
            }
        }
    }
}

/// Takes what is queued into `batch` (up to [`MAX_BATCH`]); true when the
/// queue was found empty.
fn drain(rx: &mut mpsc::Receiver<TraceEvent>, batch: &mut Vec<TraceEvent>) -> bool {
    while batch.len() < MAX_BATCH {
        match rx.try_recv() {
            Ok(ev) => batch.push(ev),
            Err(_) => return true,
        }
    }
    false
}

/// What one round writes besides the batch.
struct Round<'a> {
    node: u16,
    mark: &'a Mark,
    gap: &'a Gap,
    /// The flushed watermark, when it moved.
    flushed: Option<u64>,
    /// `(replica, confirmed position)` that moved.
    replicated: &'a [(u16, u64)],
}

async fn write_loop(ctx: &mut Ctx, pool: &AnyPool, started: i64) {
    let sh = ctx.shared.clone();
    let node = ctx.store.node_id();
    let flush_mode = match ctx.store.flush_mode() {
        Flush::Sync => "sync",
        Flush::Async { .. } => "async",
    };
    let mut batch: Vec<TraceEvent> = Vec::with_capacity(MAX_BATCH);
    // Nothing was accepted before the tracer existed.
    let mut covered_at = started;
    let mut backlog = false;
    let mut last_flushed = u64::MAX;
    let mut last_replicated: BTreeMap<u16, u64> = BTreeMap::new();
    let mut total = 0u64;
    let mut backoff = Backoff::new();
    loop {
        let ending_now = ending(&ctx.closing);
        if batch.is_empty() && !ending_now {
            let first = tokio::select! {
                r = tokio::time::timeout(IDLE_TICK, ctx.rx.recv()) => r.ok().flatten(),
                _ = asked_to_close(&mut ctx.closing) => None,
            };
            if let Some(ev) = first {
                batch.push(ev);
                // Sleep through the window, then take what queued up: no
                // wake-up per event (each would cost the broker a task
                // switch on a busy core). Behind, there is no point in
                // waiting.
                if !backlog {
                    tokio::time::sleep(BATCH_WINDOW).await;
                }
            }
        }
        // The clock before the drain: what the drain leaves was pushed
        // after this reading.
        let now = now_ms();
        let emptied = drain(&mut ctx.rx, &mut batch);
        backlog = !emptied;
        // Found empty: everything accepted before `now` is in the batch.
        // Stopped at the limit: what is left was pushed after each taken
        // event, so after the time its sender read before recording it.
        let covered = if emptied {
            now
        } else {
            batch
                .iter()
                .filter_map(TraceEvent::recorded_after)
                .fold(covered_at, i64::max)
        };
        let stats = ctx.store.stats();
        let gap = std::mem::take(&mut *sh.gap.lock().unwrap_or_else(|p| p.into_inner()));
        let replicated: Vec<(u16, u64)> = sh
            .replicated
            .lock()
            .map(|m| {
                m.iter()
                    .filter(|(id, pos)| last_replicated.get(id) != Some(pos))
                    .map(|(id, pos)| (*id, *pos))
                    .collect()
            })
            .unwrap_or_default();
        let mark = Mark {
            epoch: ctx.store.epoch(),
            first_at: started,
            at: now,
            covered_at: covered,
            log_end: stats.log_end,
            flushed: stats.flushed,
            flush_mode,
            max_unwritten: sh.max_unwritten,
            // Only an explicit close after the store closed may say so.
            closed: *ctx.closing.borrow() && emptied && ctx.store.failure().is_none(),
        };
        let round = Round {
            node,
            mark: &mark,
            gap: &gap,
            flushed: (stats.flushed != last_flushed).then_some(stats.flushed),
            replicated: &replicated,
        };
        let msgs: u64 = batch.iter().map(TraceEvent::message_count).sum();
        match commit(pool, ctx.backend, &batch, &round).await {
            Ok(()) => {
                last_flushed = stats.flushed;
                last_replicated.extend(replicated.iter().copied());
                covered_at = covered;
                backoff.reset();
                if gap.is_empty() {
                    sh.set_state(State::Ok, None);
                } else {
                    sh.set_state(
                        State::Degraded,
                        Some(format!(
                            "shedding: {} events ({} messages) dropped in the last round (queue full); a gap row \
                             marks them",
                            gap.events, gap.messages
                        )),
                    );
                }
            }
            Err(e) => {
                // The store down, or this batch it cannot take? A round
                // without the batch (its gap row instead) tells.
                let mut refused = gap.clone();
                refused.merge(&Gap::of_batch(&batch, now));
                let without = Round {
                    gap: &refused,
                    flushed: None,
                    replicated: &[],
                    ..round
                };
                if batch.is_empty() || commit(pool, ctx.backend, &[], &without).await.is_err() {
                    sh.gap.lock().unwrap_or_else(|p| p.into_inner()).merge(&gap);
                    sh.set_state(State::Down, Some(format!("write failed (batch kept, retrying): {e}")));
                    let wait = backoff.next();
                    if ending_now {
                        tokio::time::sleep(wait).await;
                    } else {
                        pause(&mut ctx.closing, wait).await;
                    }
                    continue;
                }
                tracing::error!(error = %e, events = batch.len(), "trace store refused a batch; dropped with a gap row");
                sh.shed.fetch_add(batch.len() as u64, Ordering::Relaxed);
                covered_at = covered;
                sh.set_state(State::Degraded, Some(format!("a batch was refused and dropped: {e}")));
            }
        }
        sh.unwritten.fetch_sub(msgs, Ordering::AcqRel);
        total += batch.len() as u64;
        batch.clear();
        ctx.written.send_replace(total);
        if ending_now && emptied {
            return;
        }
    }
}

/// One round in one transaction, within [`WRITE_TIMEOUT`].
async fn commit(pool: &AnyPool, backend: Backend, batch: &[TraceEvent], r: &Round<'_>) -> Result<(), TraceError> {
    let work = async {
        let mut tx = pool.begin().await?;
        rows::insert(&mut tx, backend, batch, r.node).await?;
        rows::watermarks(&mut tx, r.node, r.mark.at, r.flushed, r.replicated).await?;
        mark::write_gap(&mut tx, r.node, r.mark.epoch, r.gap).await?;
        mark::write_mark(&mut tx, r.node, r.mark).await?;
        tx.commit().await?;
        Ok(())
    };
    tokio::time::timeout(WRITE_TIMEOUT, work)
        .await
        .map_err(|_| TraceError::Timeout(WRITE_TIMEOUT))?
}
