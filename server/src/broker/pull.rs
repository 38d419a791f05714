//! Reading queues for consumers.
//!
//! A pull returns up to `max` messages of one queue from an offset. It
//! waits (long polling) up to `wait` when there is nothing to return, woken
//! by every newly stored message. On a retry queue it returns only messages
//! that are due and stops at the first one that is not (each retry queue
//! holds one delay level, so due times are in order); it then sleeps until
//! that one is due or the wait ends. "Due" is on the broker's clock
//! (`BrokerOptions::clock`), the one `send_back` computed the due time on.
//! A queue an operator reset is served from the reset offset, whatever
//! the pull asked (see `offsets.rs`).

use std::time::Duration;

use waybill_client::protocol::{Delivered, Message};

use super::event::{MessageEvent, RecordRef, TraceEvent};
use super::retry::{self, origin_of};
use super::{now_ms, Broker, BrokerError, MessageId};
use crate::storage::StoredMessage;

impl Broker {
    /// One pull (see the module doc). Returns the messages and the offset
    /// to pull from next.
    pub async fn pull(
        &self,
        group: &str,
        topic: &str,
        queue_id: u32,
        offset: u64,
        max: usize,
        wait: Duration,
    ) -> Result<(Vec<Delivered>, u64), BrokerError> {
        let deadline = tokio::time::Instant::now() + wait;
        let is_retry = topic.starts_with("%RETRY%");
        let asked = offset;
        let mut offset = offset;
        let mut fenced = false;
        loop {
            // An operator reset the queue: serve from there, whatever the
            // member asked (its position predates the reset; offsets.rs).
            if let Some(reset) = self.consumers.groups.take_fence(group, topic, queue_id) {
                offset = reset;
                fenced = true;
            }
            // Register for wake-ups before looking, so a message stored
            // between the look and the wait is not missed.
            let notified = self.consumers.appended.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();

            let (batch, next) = self.store.read_queue(topic, queue_id, offset, max.clamp(1, 1024))?;
            // The broker's clock, which wrote the due times (retry.rs).
            let now = self.opts.clock.now_ms();
            let mut out = Vec::with_capacity(batch.len());
            let mut next_offset = next;
            let mut not_due_until = None;
            for (off, pos, m) in batch {
                if is_retry {
                    if let Some(due) = retry::due_ms(&m) {
                        if due > now {
                            next_offset = off;
                            not_due_until = Some(due);
                            break;
                        }
                    }
                }
                out.push(delivered(pos, off, m));
            }
            if fenced && next_offset == asked {
                // Served from a reset up to exactly the member's own
                // position: a member commits only when the next offset
                // differs from the one it asked, so it would never commit
                // this batch. The last message waits for its next pull.
                if let Some(last) = out.pop() {
                    next_offset = last.queue_offset;
                }
            }
            if !out.is_empty() || tokio::time::Instant::now() >= deadline {
                self.trace_delivery(group, topic, queue_id, offset, next_offset, &out);
                return Ok((out, next_offset));
            }
            let wake = match not_due_until {
                Some(due) => {
                    let until_due = Duration::from_millis(due.saturating_sub(now).max(1) as u64);
                    deadline.min(tokio::time::Instant::now() + until_due)
                }
                None => deadline,
            };
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep_until(wake) => {}
            }
        }
    }
}

impl Broker {
    /// First deliveries are traced as one range per pull; deliveries of
    /// retry records (a message's own events) one row each.
    fn trace_delivery(&self, group: &str, topic: &str, queue_id: u32, from: u64, to: u64, out: &[Delivered]) {
        if out.is_empty() {
            return;
        }
        let now = now_ms();
        self.events.delivered(group, out, now);
        if !topic.starts_with('%') {
            self.trace(|| TraceEvent::Delivered {
                group: group.to_string(),
                topic: topic.to_string(),
                queue_id,
                from,
                to,
                at_ms: now,
            });
            return;
        }
        for d in out {
            self.trace(|| {
                TraceEvent::Message(Box::new(MessageEvent {
                    message_id: d.id.clone(),
                    stage: crate::model::Stage::Deliver,
                    at_ms: now,
                    group: Some(group.to_string()),
                    outcome: "ok",
                    detail: format!("delivered again (attempt {})", d.reconsume_times + 1),
                    record: Some(RecordRef {
                        id: d.record_id.clone(),
                        topic: d.queue_topic.clone(),
                        queue_id: d.queue_id,
                        queue_offset: d.queue_offset,
                    }),
                    attempt: Some(d.reconsume_times + 1),
                }))
            });
        }
    }
}

/// Builds what a consumer sees from a stored record at `pos`.
pub fn delivered(pos: u64, queue_offset: u64, m: StoredMessage) -> Delivered {
    let record_id = MessageId {
        node: m.node,
        epoch: m.epoch,
        pos,
    }
    .to_string();
    let origin = origin_of(&record_id, &m);
    Delivered {
        id: origin.id,
        record_id,
        topic: origin.topic,
        queue_topic: m.topic,
        queue_id: m.queue_id,
        queue_offset,
        reconsume_times: origin.reconsume_times,
        stored_ms: m.stored_ms,
        message: client_message(m.key, m.tags, m.producer, m.properties, m.body, m.born_ms),
    }
}

/// A stored record's producer-side fields, as the client protocol carries
/// them.
pub fn client_message(
    key: Option<String>,
    tags: Option<String>,
    producer: Option<String>,
    properties: std::collections::BTreeMap<String, String>,
    body: Vec<u8>,
    born_ms: i64,
) -> Message {
    Message {
        key,
        tags,
        producer,
        properties,
        body,
        born_ms,
    }
}
