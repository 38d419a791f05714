//! The flushed watermark and the appends waiting for it.
//!
//! `advance(end)` is called by the flusher after an fsync that covered every
//! byte below `end`; it wakes exactly the waiters whose frame ends at or
//! below it — no broadcast, so 256 waiting producers cost 256 wake-ups per
//! 256 acks, not 256 per fsync. Waiters sit in a min-heap by `end`.
//!
//! Invariant: the position only grows, and a waiter registered with
//! `end <= position` is answered at once; registration and advancing take
//! the same lock, so no wake-up can be missed between "check" and "wait".
//! After `fail`, every current and future waiter gets the failure.

use std::cmp::Ordering as CmpOrdering;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::oneshot;

/// What a waiter is told: durable, or the fsync failure that makes its
/// durability unknown.
pub type FlushResult = Result<(), Arc<str>>;

struct Waiter {
    end: u64,
    tx: oneshot::Sender<FlushResult>,
}

impl PartialEq for Waiter {
    fn eq(&self, other: &Self) -> bool {
        self.end == other.end
    }
}
impl Eq for Waiter {}
impl PartialOrd for Waiter {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}
impl Ord for Waiter {
    // Reversed: BinaryHeap is a max-heap, we pop the smallest end first.
    fn cmp(&self, other: &Self) -> CmpOrdering {
        other.end.cmp(&self.end)
    }
}

#[derive(Default)]
struct Inner {
    waiters: BinaryHeap<Waiter>,
    failed: Option<Arc<str>>,
}

/// Outcome of registering interest in a position.
pub enum Registration {
    Ready,
    Failed(Arc<str>),
    Wait(oneshot::Receiver<FlushResult>),
}

pub struct Watermark {
    /// Readable without the lock (stats, the flusher's "any work?" check).
    pos: AtomicU64,
    // std Mutex: held for a heap push/pop, never across an await.
    inner: Mutex<Inner>,
}

impl Watermark {
    pub fn new(pos: u64) -> Self {
        Watermark {
            pos: AtomicU64::new(pos),
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn pos(&self) -> u64 {
        self.pos.load(Ordering::Acquire)
    }

    /// Appends waiting for an fsync (the sync-flush queue depth).
    pub fn waiters(&self) -> usize {
        self.lock().waiters.len()
    }

    pub fn failed(&self) -> Option<Arc<str>> {
        self.lock().failed.clone()
    }

    /// Waits for `end` to be covered (see [`Registration`]).
    pub fn register(&self, end: u64) -> Registration {
        let mut inner = self.lock();
        if let Some(why) = &inner.failed {
            return Registration::Failed(why.clone());
        }
        if self.pos() >= end {
            return Registration::Ready;
        }
        let (tx, rx) = oneshot::channel();
        inner.waiters.push(Waiter { end, tx });
        Registration::Wait(rx)
    }

    /// Publishes that every byte below `end` is durable.
    pub fn advance(&self, end: u64) {
        let mut ready = Vec::new();
        {
            let mut inner = self.lock();
            self.pos.fetch_max(end, Ordering::AcqRel);
            while inner.waiters.peek().is_some_and(|w| w.end <= end) {
                if let Some(w) = inner.waiters.pop() {
                    ready.push(w.tx);
                }
            }
        }
        // Wake outside the lock; a waiter that timed out dropped its
        // receiver and the send just fails.
        for tx in ready {
            let _ = tx.send(Ok(()));
        }
    }

    /// Publishes a permanent failure to every waiter, now and later.
    pub fn fail(&self, why: Arc<str>) {
        let waiters = {
            let mut inner = self.lock();
            inner.failed = Some(why.clone());
            std::mem::take(&mut inner.waiters)
        };
        for w in waiters {
            let _ = w.tx.send(Err(why.clone()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn wakes_only_the_covered_waiters_in_order() {
        let wm = Watermark::new(10);
        assert!(matches!(wm.register(5), Registration::Ready));
        let Registration::Wait(a) = wm.register(30) else {
            panic!("should wait")
        };
        let Registration::Wait(mut b) = wm.register(50) else {
            panic!("should wait")
        };
        wm.advance(40);
        assert_eq!(a.await.ok(), Some(Ok(())));
        assert!(b.try_recv().is_err(), "50 is not covered by 40");
        wm.fail(Arc::from("EIO"));
        assert!(matches!(b.await, Ok(Err(_))));
        assert!(matches!(wm.register(60), Registration::Failed(_)));
    }
}
