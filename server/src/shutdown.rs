//! Graceful shutdown: one [`Stop`] every listener and live stream watches,
//! and a [`Drain`] that counts the broker-port connections still working
//! on requests, so the node waits (bounded) for their answers before it
//! closes the store.
//!
//! The order on SIGTERM/SIGINT (driven by `server.rs`): stop accepting on
//! HTTP and the broker port; end every live-feed stream at once; stop
//! reading new requests; let the requests in flight get their answer (an
//! ack only once what it acknowledges is durable, else a clear error);
//! then the final flush, index sync, checkpoint and the clean-shutdown
//! marker (`storage/clean.rs`). A request cut by the drain's deadline gets
//! no answer at all: its connection closes, and the client counts it as
//! unknown, never as acknowledged.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::{watch, Notify};

/// Owned by the node; [`Shutdown::begin`] tells every [`Stop`] at once.
pub struct Shutdown {
    // watch, not broadcast: a listener that looks late still sees the
    // stop (a broadcast receiver can lag past it), and `borrow` is a check
    // that needs no await.
    tx: watch::Sender<bool>,
    drain: Drain,
}

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown {
            tx: watch::channel(false).0,
            drain: Drain::default(),
        }
    }
}

impl Shutdown {
    pub fn new() -> Self {
        Self::default()
    }

    /// A handle that resolves once the shutdown begins.
    pub fn stop(&self) -> Stop {
        Stop {
            rx: Some(self.tx.subscribe()),
        }
    }

    /// The in-flight counter the broker port registers its connections in.
    pub fn drain(&self) -> Drain {
        self.drain.clone()
    }

    /// Stops everything watching: listeners stop accepting, live streams end,
    /// connections stop reading; and no new work enters the drain.
    pub fn begin(&self) {
        self.drain.inner.closed.store(true, Ordering::Release);
        self.tx.send_replace(true);
    }
}

/// Resolves when the node shuts down; cheap to clone.
#[derive(Clone, Default)]
pub struct Stop {
    /// None: never stops (an API served without a node, in tests and tools).
    rx: Option<watch::Receiver<bool>>,
}

impl Stop {
    /// A stop that never comes.
    pub fn never() -> Stop {
        Stop { rx: None }
    }

    /// Waits for the shutdown. A [`Shutdown`] dropped without `begin` (the
    /// node is gone) counts as one.
    pub async fn wait(&self) {
        match &self.rx {
            Some(rx) => {
                let mut rx = rx.clone();
                let _ = rx.wait_for(|stopped| *stopped).await;
            }
            None => std::future::pending().await,
        }
    }

    /// Whether the shutdown has begun.
    pub fn is_set(&self) -> bool {
        self.rx.as_ref().is_some_and(|rx| *rx.borrow())
    }
}

/// Counts work in flight; [`Drain::idle`] waits for it to reach zero.
#[derive(Clone, Default)]
pub struct Drain {
    inner: Arc<DrainInner>,
}

#[derive(Default)]
struct DrainInner {
    busy: AtomicUsize,
    /// Set by [`Shutdown::begin`]: [`Drain::enter`] refuses from then on.
    closed: AtomicBool,
    /// Woken when `busy` drops to zero.
    idle: Notify,
}

/// One unit of work in flight; dropping it leaves the drain.
pub struct Busy(Arc<DrainInner>);

impl Drop for Busy {
    fn drop(&mut self) {
        if self.0.busy.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl Drain {
    /// Registers work, or None once the shutdown has begun.
    pub fn enter(&self) -> Option<Busy> {
        // Counted before the check: `idle` either sees this count or this
        // call sees `closed` and backs out (dropping the Busy).
        self.inner.busy.fetch_add(1, Ordering::AcqRel);
        let busy = Busy(self.inner.clone());
        if self.inner.closed.load(Ordering::Acquire) {
            return None;
        }
        Some(busy)
    }

    /// Work in flight now.
    pub fn busy(&self) -> usize {
        self.inner.busy.load(Ordering::Acquire)
    }

    /// Resolves once nothing is in flight (the caller bounds the wait).
    pub async fn idle(&self) {
        loop {
            let notified = self.inner.idle.notified();
            tokio::pin!(notified);
            // Registered before the check, so a drop to zero in between
            // still wakes this waiter.
            notified.as_mut().enable();
            if self.busy() == 0 {
                return;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn begin_wakes_every_stop_and_closes_the_drain() {
        let s = Shutdown::new();
        let stop = s.stop();
        let drain = s.drain();
        let busy = drain.enter();
        assert!(busy.is_some());
        let waiter = tokio::spawn({
            let stop = stop.clone();
            async move { stop.wait().await }
        });
        tokio::time::sleep(Duration::from_secs(3600)).await;
        assert!(!waiter.is_finished() && !stop.is_set());
        s.begin();
        assert!(tokio::time::timeout(Duration::from_millis(1), waiter).await.is_ok());
        assert!(stop.is_set());
        // A stop subscribed late still sees it.
        assert!(tokio::time::timeout(Duration::from_millis(1), s.stop().wait())
            .await
            .is_ok());
        assert!(drain.enter().is_none(), "no new work after the shutdown began");
        assert_eq!(drain.busy(), 1);
        let idle = tokio::spawn({
            let drain = drain.clone();
            async move { drain.idle().await }
        });
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert!(!idle.is_finished(), "work is still in flight");
        drop(busy);
        assert!(tokio::time::timeout(Duration::from_millis(1), idle).await.is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_shutdown_counts_as_a_stop_and_never_means_never() {
        let s = Shutdown::new();
        let stop = s.stop();
        drop(s);
        assert!(tokio::time::timeout(Duration::from_millis(1), stop.wait())
            .await
            .is_ok());
        assert!(tokio::time::timeout(Duration::from_secs(3600), Stop::never().wait())
            .await
            .is_err());
    }
}
