//! A send's evidence for the tracer, and what a send costs when the tracer
//! cannot take it.
//!
//! The broker builds one `Stored` event per produce request and records it
//! *before* answering the producer: an answer followed by a crash before
//! the record would be an acknowledgement the trace never hears of.
//! Recording never waits. When the tracer sheds the event (its queue, or
//! its bound on unwritten messages, is full: the trace store is slow or
//! away), no row will ever name these messages, and under async flush a
//! power loss could take acknowledged messages unrecorded for as long as
//! the outage lasts. So a shed send that is about to be acknowledged
//! without an fsync is made durable first: the flusher is asked for an
//! fsync now and the answer waits for it, as under sync flush
//! (`FLUSH_DISK_TIMEOUT` if it does not come within `sync_flush_timeout`).
//! The broker waits on its own disk, never on the trace store, and only for
//! sends made while the tracer sheds; what a crash can take unrecorded is
//! then bounded by the tracer's queue (see `trace/windows.rs`).

use super::event::{Recorded, Stored, StoredMsg};
use super::{storage, Broker, MessageId, Placed, SendStatus};
use crate::storage::FlushOutcome;

/// What the trace needs of a message beyond its placement: (key, (send
/// mode, attempt), traceparent).
pub(super) type TracedInfo = (Option<String>, (&'static str, u32), Option<String>);

/// A stored message as the trace sees it: id, placement, and its info.
pub(super) type Traced = (MessageId, Placed, TracedInfo);

impl Broker {
    /// Records a produce request's messages (answered at `acked_ms` with
    /// `status`; `None`: per message, Raft) and returns the status to
    /// answer with: a shed, unsynced acknowledgement waits for the fsync
    /// covering `end` first.
    pub(super) async fn trace_stored(
        &self,
        topic: &str,
        traced: Vec<Traced>,
        acked_ms: i64,
        status: Option<SendStatus>,
        end: u64,
    ) -> Option<SendStatus> {
        let ev = Stored {
            topic: topic.to_string(),
            messages: traced
                .into_iter()
                .map(|(id, a, (key, (send_mode, attempt), traceparent))| StoredMsg {
                    node: id.node,
                    epoch: id.epoch,
                    pos: a.at.pos,
                    end: a.at.end,
                    queue_id: a.queue_id,
                    queue_offset: a.at.queue_offset,
                    born_ms: a.born_ms,
                    stored_ms: a.at.stored_ms,
                    key,
                    send_mode,
                    attempt,
                    traceparent,
                })
                .collect(),
            acked_ms,
            flush_mode: match self.store.flush_mode() {
                storage::Flush::Sync => "sync",
                storage::Flush::Async { .. } => "async",
            },
            send_status: status.unwrap_or(SendStatus::SendOk).name(),
            replication: self.replicas.name(),
        };
        // Raft answers per message after a majority has it: no wait here.
        let at_risk = status.is_some() && ev.messages.iter().any(|m| ev.at_risk(m));
        if self.events.stored(Box::new(ev)) == Recorded::Queued || !at_risk {
            return status;
        }
        self.store.flush_soon();
        match self.store.wait_flushed(end, self.opts.sync_flush_timeout).await {
            FlushOutcome::Flushed => status,
            FlushOutcome::TimedOut => {
                tracing::warn!(end, "trace shed and no fsync in time: FLUSH_DISK_TIMEOUT");
                Some(SendStatus::FlushDiskTimeout)
            }
            FlushOutcome::Failed(why) => {
                tracing::error!(end, %why, "fsync failed; durability unknown");
                Some(SendStatus::FlushDiskTimeout)
            }
        }
    }
}
