//! The broker's one outlet to the layers above it: an [`Events`] sink.
//!
//! The broker knows nothing of the tracer, OpenTelemetry, the live feed or
//! alerts. It tells a sink what happened, and `server.rs` wires a sink that
//! fans out to them (`trace::sink::Subscribers`). Rules the broker keeps:
//! - [`Interest`] is asked once, at construction: the hot path reads two
//!   booleans and builds no event nobody wants; a node without observers
//!   pays nothing.
//! - One call per produce request ([`Events::stored`]), never per message.
//! - Nothing here blocks or does I/O on the caller's task; a sink that
//!   cannot keep up sheds, and says so ([`Recorded::Shed`]) for produce
//!   requests, so the broker can make an unsynced acknowledgement durable
//!   before it answers (see `traced.rs`).

use super::event::{Recorded, Stored, TraceEvent};
use waybill_client::Delivered;

/// What the observers want the broker to build, decided once.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Interest {
    /// Message events (stages, retries, dead letters, replays): a tracer
    /// listens.
    pub trace: bool,
    /// Per-message spans: the W3C traceparent of each stored message, and
    /// produce/commit events even without a tracer (OpenTelemetry).
    pub spans: bool,
}

impl Interest {
    /// Whether a produce request's `Stored` event is built at all.
    pub fn stored(self) -> bool {
        self.trace || self.spans
    }
}

/// Where the broker's events go. Implemented above the broker; every
/// method but [`Events::interest`] and [`Events::stored`] has a no-op
/// default so a sink takes only what it uses.
pub trait Events: Send + Sync {
    /// What to build (asked once).
    fn interest(&self) -> Interest;
    /// A produce request's messages, recorded before the producers are
    /// answered. `Shed` means no trace row will name them.
    fn stored(&self, ev: Box<Stored>) -> Recorded;
    /// Any other event: retry, dead letter, replay, delivery range, commit.
    fn event(&self, _ev: TraceEvent) {}
    /// The messages one pull handed to `group` (one span each).
    fn delivered(&self, _group: &str, _out: &[Delivered], _at_ms: i64) {}
    /// A consumer handed a delivery back with `reason`.
    fn failed(&self, _group: &str, _topic: &str, _queue_id: u32, _offset: u64, _reason: &str, _at_ms: i64) {}
    /// `group` dead-lettered a message (alerts count the inflow).
    fn dead_lettered(&self, _group: &str, _at_ms: i64) {}
    /// A replica confirmed the log up to `pos` under its flush mode.
    fn replica_acked(&self, _replica: u16, _pos: u64) {}
}

/// No observers: nothing is built, every produce request counts as queued
/// (no trace row is owed, so nothing is shed).
pub struct NoEvents;

impl Events for NoEvents {
    fn interest(&self) -> Interest {
        Interest::default()
    }

    fn stored(&self, _ev: Box<Stored>) -> Recorded {
        Recorded::Queued
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use super::*;
    use crate::broker::{Broker, BrokerOptions, Outgoing, SendStatus, Wiring};
    use crate::storage::fs::RealFs;
    use crate::storage::{Flush, Store, StoreOptions};

    /// Keeps what it is told; answers `verdict` for produce requests.
    struct Recording {
        interest: Interest,
        verdict: Recorded,
        stored: Mutex<Vec<Stored>>,
        /// Log flushed mark seen when each request was recorded.
        flushed_at_record: Mutex<Vec<u64>>,
        store: Mutex<Option<Arc<Store>>>,
    }

    impl Recording {
        fn new(trace: bool, spans: bool, verdict: Recorded) -> Arc<Recording> {
            Arc::new(Recording {
                interest: Interest { trace, spans },
                verdict,
                stored: Mutex::new(Vec::new()),
                flushed_at_record: Mutex::new(Vec::new()),
                store: Mutex::new(None),
            })
        }
    }

    impl Events for Recording {
        fn interest(&self) -> Interest {
            self.interest
        }

        fn stored(&self, ev: Box<Stored>) -> Recorded {
            if let Some(s) = self.store.lock().ok().and_then(|s| s.clone()) {
                if let Ok(mut f) = self.flushed_at_record.lock() {
                    f.push(s.stats().flushed);
                }
            }
            if let Ok(mut s) = self.stored.lock() {
                s.push(*ev);
            }
            self.verdict
        }
    }

    fn broker(dir: &std::path::Path, flush: Flush, sink: &Arc<Recording>) -> anyhow::Result<(Broker, Arc<Store>)> {
        let store = Arc::new(Store::open(
            Arc::new(RealFs),
            StoreOptions::new(dir.join("data"), flush),
        )?);
        *sink.store.lock().map_err(|_| anyhow::anyhow!("poisoned"))? = Some(store.clone());
        let events: Arc<dyn Events> = sink.clone();
        let b = Broker::wired(store.clone(), BrokerOptions::default(), Wiring::events(events))?;
        Ok((b, store))
    }

    fn msgs(n: usize) -> Vec<Outgoing> {
        (0..n)
            .map(|i| Outgoing {
                key: Some(format!("k{i}")),
                body: format!("body {i}").into_bytes(),
                ..Outgoing::default()
            })
            .collect()
    }

    #[tokio::test]
    async fn one_stored_event_per_request_and_traceparents_only_for_spans() -> anyhow::Result<()> {
        for spans in [false, true] {
            let dir = tempfile::tempdir()?;
            let sink = Recording::new(true, spans, Recorded::Queued);
            let (b, _store) = broker(dir.path(), Flush::Sync, &sink)?;
            let results = b.send_batch("orders", msgs(3)).await?;
            assert!(results.iter().all(|r| r.status == SendStatus::SendOk));
            let stored = sink.stored.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
            assert_eq!(stored.len(), 1, "one event per request");
            let ev = &stored[0];
            assert_eq!(ev.topic, "orders");
            assert_eq!(ev.messages.len(), 3);
            for (m, r) in ev.messages.iter().zip(&results) {
                assert_eq!(
                    (m.pos, m.queue_id, m.queue_offset),
                    (r.id.pos, r.queue_id, r.queue_offset)
                );
                assert_eq!(m.traceparent.is_some(), spans, "{m:?}");
            }
            assert_eq!(ev.replication, "none");
        }
        Ok(())
    }

    #[tokio::test]
    async fn nothing_is_built_for_a_sink_that_wants_nothing() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let sink = Recording::new(false, false, Recorded::Shed);
        let (b, _store) = broker(dir.path(), Flush::Sync, &sink)?;
        b.send_batch("orders", msgs(2)).await?;
        assert!(sink.stored.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.is_empty());
        Ok(())
    }

    /// Async flush, an fsync an hour away: a shed acknowledgement is made
    /// durable before the answer; a queued one is not waited for.
    #[tokio::test]
    async fn a_shed_async_acknowledgement_is_fsynced_before_the_answer() -> anyhow::Result<()> {
        let hour = Flush::Async {
            interval: Duration::from_secs(3600),
        };
        for (verdict, synced) in [(Recorded::Shed, true), (Recorded::Queued, false)] {
            let dir = tempfile::tempdir()?;
            let sink = Recording::new(true, false, verdict);
            let (b, store) = broker(dir.path(), hour, &sink)?;
            let r = b.send_batch("orders", msgs(2)).await?;
            assert!(r.iter().all(|r| r.status == SendStatus::SendOk));
            let end = store.stats().log_end;
            assert_eq!(store.stats().flushed >= end, synced, "{verdict:?}");
            // Recorded before the fsync: the event came first either way.
            let at_record = sink.flushed_at_record.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
            assert!(at_record.iter().all(|f| *f < end), "{at_record:?}");
        }
        Ok(())
    }
}
