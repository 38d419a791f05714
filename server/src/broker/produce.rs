//! The produce path: place a request's messages (locally or through Raft),
//! wait for the durability its mode promises (fsync, replica), record the
//! trace evidence before answering, and build the send results. This is
//! the hot path: one writer-lock section per message in the store, no
//! per-message allocation beyond the frame.

use super::traced::{Traced, TracedInfo};
use super::*;

/// A message ready to place: its queue, and what the trace will need.
type Ready = (u32, Outgoing, Option<TracedInfo>);

/// A request's placed messages: each result with its frame end, and the
/// trace evidence of those an observer wants.
struct Batch {
    placed: Vec<(SendResult, u64)>,
    traced: Vec<Traced>,
}

impl Broker {
    /// A sync send: stores the message and, in sync flush mode, waits for
    /// the fsync that covers it.
    pub async fn send(&self, msg: Outgoing) -> Result<SendResult, BrokerError> {
        let topic = msg.topic.clone();
        let mut results = self.send_batch(&topic, vec![msg]).await?;
        results.pop().ok_or_else(|| BrokerError::Invalid("empty batch".into()))
    }

    /// Stores a batch for one topic (one lock round per message, one wait
    /// for the fsync covering the last); every message gets a result.
    pub async fn send_batch(&self, topic: &str, msgs: Vec<Outgoing>) -> Result<Vec<SendResult>, BrokerError> {
        topic::validate(topic)?;
        if self.topic_deleted(topic) {
            return Err(BrokerError::NotFound(format!(
                "topic {topic} was deleted; create it again to produce to it"
            )));
        }
        topic::validate_properties(msgs.iter().map(|m| &m.properties))?;
        self.check_limits(&msgs)?;
        self.store_batch(topic, msgs).await
    }

    /// [`Broker::send_batch`] without the topic-name check, so the broker
    /// itself can store to system topics the same way (half messages).
    /// Four steps: prepare, place, durability, answer.
    pub(super) async fn store_batch(&self, topic: &str, msgs: Vec<Outgoing>) -> Result<Vec<SendResult>, BrokerError> {
        self.check_writable()?;
        if msgs
            .iter()
            .any(|m| m.key.as_ref().is_some_and(|k| k.len() > MAX_KEY_LEN))
        {
            return Err(BrokerError::KeyTooLong { max: MAX_KEY_LEN });
        }
        let ready = self.prepare(topic, msgs);
        let (batch, status) = match &self.replicas {
            // Raft answers per message, once a majority has it.
            Replicas::Raft(raft) => (self.place_raft(raft.as_ref(), topic, ready).await?, None),
            _ => {
                let batch = self.place_local(topic, ready)?;
                let status = match batch.placed.last() {
                    Some((_, end)) => match self.durability(*end).await {
                        SendStatus::SendOk => self.replication(*end).await,
                        other => other,
                    },
                    None => SendStatus::SendOk,
                };
                (batch, Some(status))
            }
        };
        self.consumers.appended.notify_waiters();
        Ok(self.answer(topic, batch, status).await)
    }

    /// Gives each message a W3C trace context (when it has no valid one)
    /// and its queue, and takes what the trace will need (only when an
    /// observer wants it).
    fn prepare(&self, topic: &str, msgs: Vec<Outgoing>) -> Vec<Ready> {
        let queues = self.topic_queues(topic);
        let tracing = self.interest.stored();
        let tp = waybill_client::tracecontext::PROP_TRACEPARENT;
        let mut ready = Vec::with_capacity(msgs.len());
        for mut msg in msgs {
            if msg
                .properties
                .get(tp)
                .and_then(|v| waybill_client::tracecontext::parse(v))
                .is_none()
            {
                msg.properties
                    .insert(tp.to_string(), waybill_client::tracecontext::new_traceparent());
            }
            // Keyed messages hash to a fixed queue (per-key order, like
            // RocketMQ's SelectMessageQueueByHash); the rest go round robin.
            let queue_id = match &msg.key {
                Some(k) => (storage::key_index::hash(k) % u64::from(queues)) as u32,
                None => self.next_queue.fetch_add(1, Ordering::Relaxed) % queues,
            };
            let info = tracing.then(|| {
                let traceparent = self.interest.spans.then(|| msg.properties.get(tp).cloned()).flatten();
                let attempt = msg
                    .properties
                    .get(waybill_client::protocol::PROP_SEND_ATTEMPT)
                    .and_then(|a| a.parse::<u32>().ok())
                    .unwrap_or(1);
                (msg.key.clone(), (msg.send_mode.unwrap_or("sync"), attempt), traceparent)
            });
            ready.push((queue_id, msg, info));
        }
        ready
    }

    /// Appends every message here, in order; the first refusal fails the
    /// request (nothing after it is appended).
    fn place_local(&self, topic: &str, ready: Vec<Ready>) -> Result<Batch, BrokerError> {
        let mut batch = Batch {
            placed: Vec::with_capacity(ready.len()),
            traced: Vec::new(),
        };
        for (queue_id, msg, info) in ready {
            let (r, appended) = self.append(topic, queue_id, msg)?;
            if let Some(info) = info {
                batch.traced.push((r.id, appended, info));
            }
            batch.placed.push((r, appended.at.end));
        }
        Ok(batch)
    }

    /// Raft: one proposal per message, made together; each is placed once
    /// a majority has it (and it is applied here). A proposal that is not
    /// confirmed answers `FLUSH_SLAVE_TIMEOUT` (it may still commit); a
    /// leader change before anything was placed fails the request.
    async fn place_raft(
        &self,
        raft: &dyn replicas::Propose,
        topic: &str,
        ready: Vec<Ready>,
    ) -> Result<Batch, BrokerError> {
        // This member's disk is full: refuse before proposing, as a single
        // node refuses before it appends (applying waits for space on each
        // member, so a proposal now would only hang until it times out).
        let bytes: u64 = ready.iter().map(|(_, m, _)| m.body.len() as u64).sum();
        self.store.admit_space(bytes)?;
        let mut batch = Batch {
            placed: Vec::with_capacity(ready.len()),
            traced: Vec::new(),
        };
        let proposals = ready.into_iter().map(|(queue_id, msg, info)| async move {
            (queue_id, self.propose(raft, topic, queue_id, msg).await, info)
        });
        let mut timed_out = false;
        for (queue_id, r, info) in futures_util::future::join_all(proposals).await {
            match r {
                Ok((r, appended)) => {
                    if let Some(info) = info {
                        batch.traced.push((r.id, appended, info));
                    }
                    batch.placed.push((r, appended.at.end));
                }
                Err(BrokerError::NotPrimary(why)) if batch.placed.is_empty() && !timed_out => {
                    return Err(BrokerError::NotPrimary(why));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "raft proposal not confirmed");
                    timed_out = true;
                    // Not placed (yet): no position, so no id; epoch 0
                    // is never a real epoch or term.
                    let id = MessageId {
                        node: self.store.node_id(),
                        epoch: 0,
                        pos: 0,
                    };
                    batch.placed.push((
                        SendResult {
                            id,
                            status: SendStatus::FlushSlaveTimeout,
                            queue_id,
                            queue_offset: 0,
                        },
                        0,
                    ));
                }
            }
        }
        Ok(batch)
    }

    /// Records the trace evidence (before any answer: see `traced.rs`),
    /// then sets each result's status: `status` for the whole request, or
    /// (Raft, `None`) each message's own.
    async fn answer(&self, topic: &str, batch: Batch, status: Option<SendStatus>) -> Vec<SendResult> {
        let Batch { placed, traced } = batch;
        let status = if traced.is_empty() {
            status
        } else {
            let acked_ms = now_ms();
            let end = placed.iter().map(|(_, end)| *end).max().unwrap_or(0);
            self.trace_stored(topic, traced, acked_ms, status, end).await
        };
        let results: Vec<SendResult> = placed
            .into_iter()
            .map(|(mut r, _)| {
                if let Some(s) = status {
                    r.status = s;
                }
                r
            })
            .collect();
        self.produced.add(topic, &results);
        results
    }

    /// Raft mode: proposes one message and waits until a majority has it
    /// and it is applied here.
    pub(super) async fn propose(
        &self,
        raft: &dyn replicas::Propose,
        topic: &str,
        queue_id: u32,
        msg: Outgoing,
    ) -> Result<(SendResult, Placed), BrokerError> {
        let born_ms = msg.born_ms.unwrap_or_else(now_ms);
        let a = raft
            .propose(msg.into_new(topic, queue_id, born_ms))
            .await
            .map_err(|e| match e {
                replicas::Unplaced::NotLeader(why) => BrokerError::NotPrimary(why),
                replicas::Unplaced::Unconfirmed(why) => BrokerError::Unconfirmed(why),
            })?;
        Ok(placed(queue_id, born_ms, a))
    }

    /// Appends one message to a given queue (system topics included); the
    /// result's status is not yet meaningful. Returns it with the frame end.
    /// Under sync flush nothing is fsynced until [`Broker::durability`] (or
    /// [`storage::Store::flush_soon`]) asks for it.
    pub(super) fn append(
        &self,
        topic: &str,
        queue_id: u32,
        msg: Outgoing,
    ) -> Result<(SendResult, Placed), BrokerError> {
        self.check_writable()?;
        let born_ms = msg.born_ms.unwrap_or_else(now_ms);
        // Quiet: `durability` flushes inline or wakes the flusher itself.
        let appended = self.store.append_quiet(msg.into_new(topic, queue_id, born_ms))?;
        Ok(placed(queue_id, born_ms, appended))
    }

    /// Waits for what the flush mode promises about log position `end`.
    pub(super) async fn durability(&self, end: u64) -> SendStatus {
        match self.store.flush_mode() {
            storage::Flush::Async { .. } => SendStatus::SendOk,
            // Alone, a sender flushes on its own thread (no hop to the
            // flusher and back); otherwise it joins the running group commit.
            storage::Flush::Sync if self.store.flush_inline(end) => SendStatus::SendOk,
            storage::Flush::Sync => {
                // The append did not wake the flusher (see `append`).
                self.store.flush_soon();
                match self.store.wait_flushed(end, self.opts.sync_flush_timeout).await {
                    FlushOutcome::Flushed => SendStatus::SendOk,
                    FlushOutcome::TimedOut => SendStatus::FlushDiskTimeout,
                    FlushOutcome::Failed(why) => {
                        tracing::error!(end, %why, "fsync failed; durability unknown");
                        SendStatus::FlushDiskTimeout
                    }
                }
            }
        }
    }

    /// Waits for what the replication mode promises about `end`: with
    /// sync replication, a replica's confirmation.
    pub(super) async fn replication(&self, end: u64) -> SendStatus {
        match &self.replicas {
            Replicas::Ship(s) => s.wait_replicated(end).await,
            _ => SendStatus::SendOk,
        }
    }

    /// Appends to a system topic and waits for durability; internal state
    /// changes (retries, dead letters, replays) are acknowledged only when
    /// they are as durable as a producer's message would be.
    pub(super) async fn append_durable(
        &self,
        topic: &str,
        queue_id: u32,
        msg: Outgoing,
    ) -> Result<SendResult, BrokerError> {
        if let Replicas::Raft(raft) = &self.replicas {
            let (r, _) = self.propose(raft.as_ref(), topic, queue_id, msg).await?;
            self.consumers.appended.notify_waiters();
            return Ok(r);
        }
        let (mut r, placed) = self.append(topic, queue_id, msg)?;
        r.status = self.durability(placed.at.end).await;
        self.consumers.appended.notify_waiters();
        if r.status != SendStatus::SendOk {
            return Err(BrokerError::Storage(StorageError::Failed(format!(
                "{topic} record not durable: {}",
                r.status.name()
            ))));
        }
        Ok(r)
    }
}

/// The send result (status not yet decided) and placement of a message
/// that landed at `a`, whether appended here or applied by Raft.
fn placed(queue_id: u32, born_ms: i64, a: storage::Appended) -> (SendResult, Placed) {
    (
        SendResult {
            id: MessageId {
                node: a.node,
                epoch: a.epoch,
                pos: a.pos,
            },
            status: SendStatus::SendOk,
            queue_id,
            queue_offset: a.queue_offset,
        },
        Placed {
            at: a,
            queue_id,
            born_ms,
        },
    )
}
