//! The produce path: place a request's messages (locally or through Raft),
//! wait for the durability its mode promises (fsync, replica), record the
//! trace evidence before answering, and build the send results. This is
//! the hot path: one writer-lock section per message in the store, no
//! per-message allocation beyond the frame.

use super::*;

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
        topic::validate_properties(msgs.iter().map(|m| &m.properties))?;
        self.store_batch(topic, msgs).await
    }

    /// [`Broker::send_batch`] without the topic-name check, so the broker
    /// itself can store to system topics the same way (half messages).
    pub(super) async fn store_batch(&self, topic: &str, msgs: Vec<Outgoing>) -> Result<Vec<SendResult>, BrokerError> {
        self.check_writable()?;
        if msgs
            .iter()
            .any(|m| m.key.as_ref().is_some_and(|k| k.len() > MAX_KEY_LEN))
        {
            return Err(BrokerError::KeyTooLong { max: MAX_KEY_LEN });
        }
        let queues = self.opts.queues_per_topic.max(1);
        let tracing = self.tracer.get().is_some() || self.otel.get().is_some();
        let mut pending = Vec::with_capacity(msgs.len());
        let mut traced = Vec::new();
        for mut msg in msgs {
            // A message without a valid W3C trace context gets one here.
            let tp = waybill_client::tracecontext::PROP_TRACEPARENT;
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
                let traceparent = self.otel.get().and_then(|_| msg.properties.get(tp).cloned());
                let attempt = msg
                    .properties
                    .get(waybill_client::protocol::PROP_SEND_ATTEMPT)
                    .and_then(|a| a.parse::<u32>().ok())
                    .unwrap_or(1);
                (msg.key.clone(), (msg.send_mode.unwrap_or("sync"), attempt), traceparent)
            });
            pending.push((queue_id, msg, info));
        }
        let mut placed = Vec::with_capacity(pending.len());
        let status = if let Some(raft) = self.raft.get() {
            // Raft: one entry per message, proposed together; each is
            // SEND_OK once a majority has it (and it is applied here).
            let proposals = pending.into_iter().map(|(queue_id, msg, info)| async move {
                (queue_id, self.propose(raft, topic, queue_id, msg).await, info)
            });
            let mut timed_out = false;
            for (queue_id, r, info) in futures_util::future::join_all(proposals).await {
                match r {
                    Ok((r, appended)) => {
                        if let Some(info) = info {
                            traced.push((r.id, appended, info));
                        }
                        placed.push((r, appended.end));
                    }
                    Err(BrokerError::NotPrimary(why)) if placed.is_empty() && !timed_out => {
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
                        placed.push((
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
            None
        } else {
            for (queue_id, msg, info) in pending {
                let (r, appended) = self.append(topic, queue_id, msg)?;
                if let Some(info) = info {
                    traced.push((r.id, appended, info));
                }
                placed.push((r, appended.end));
            }
            Some(match placed.last() {
                Some((_, end)) => match self.durability(*end).await {
                    SendStatus::SendOk => self.replication(*end).await,
                    other => other,
                },
                None => SendStatus::SendOk,
            })
        };
        self.appended.notify_waiters();
        let acked_ms = now_ms();
        if let Some(o) = self.otel.get() {
            for (id, a, (_, _, traceparent)) in &traced {
                if let Some(tp) = traceparent {
                    o.stored(&id.to_string(), topic, tp, a.born_ms, a.stored_ms, acked_ms);
                }
            }
        }
        let status = match self.tracer.get() {
            Some(t) if !traced.is_empty() => {
                let end = placed.iter().map(|(_, end)| *end).max().unwrap_or(0);
                self.trace_stored(t, topic, traced, acked_ms, status, end).await
            }
            _ => status,
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
        Ok(results)
    }

    /// Raft mode: proposes one message and waits until a majority has it
    /// and it is applied here.
    pub(super) async fn propose(
        &self,
        raft: &crate::replication::raft::RaftNode,
        topic: &str,
        queue_id: u32,
        msg: Outgoing,
    ) -> Result<(SendResult, Placed), BrokerError> {
        use crate::replication::raft::{Msg, ProposeError};
        let born_ms = msg.born_ms.unwrap_or_else(now_ms);
        let m = Msg {
            queue_id,
            key: msg.key,
            tags: msg.tags,
            producer: msg.producer,
            properties: msg.properties,
            body: msg.body,
            born_ms,
        };
        let p = raft.propose(topic, m).await.map_err(|e| match e {
            ProposeError::NotLeader { .. } => BrokerError::NotPrimary(e.to_string()),
            other => BrokerError::Unconfirmed(other.to_string()),
        })?;
        Ok(placed(
            queue_id,
            born_ms,
            storage::Appended {
                pos: p.pos,
                end: p.end,
                queue_offset: p.queue_offset,
                node: p.node,
                epoch: p.epoch,
                stored_ms: p.stored_ms,
            },
        ))
    }

    /// Appends one message to a given queue (system topics included); the
    /// result's status is not yet meaningful. Returns it with the frame end.
    pub(super) fn append(
        &self,
        topic: &str,
        queue_id: u32,
        msg: Outgoing,
    ) -> Result<(SendResult, Placed), BrokerError> {
        self.check_writable()?;
        let born_ms = msg.born_ms.unwrap_or_else(now_ms);
        let appended = self.store.append(NewMessage {
            topic: topic.to_string(),
            queue_id,
            key: msg.key,
            tags: msg.tags,
            producer: msg.producer,
            properties: msg.properties,
            body: msg.body,
            born_ms,
        })?;
        Ok(placed(queue_id, born_ms, appended))
    }

    /// Waits for what the flush mode promises about log position `end`.
    pub(super) async fn durability(&self, end: u64) -> SendStatus {
        match self.store.flush_mode() {
            storage::Flush::Async { .. } => SendStatus::SendOk,
            storage::Flush::Sync => match self.store.wait_flushed(end, self.opts.sync_flush_timeout).await {
                FlushOutcome::Flushed => SendStatus::SendOk,
                FlushOutcome::TimedOut => SendStatus::FlushDiskTimeout,
                FlushOutcome::Failed(why) => {
                    tracing::error!(end, %why, "fsync failed; durability unknown");
                    SendStatus::FlushDiskTimeout
                }
            },
        }
    }

    /// Waits for what the replication mode promises about `end`: with
    /// sync replication, a replica's confirmation.
    pub(super) async fn replication(&self, end: u64) -> SendStatus {
        match self.cluster.get() {
            Some(c) if c.mode == crate::replication::Mode::Sync => c.wait_replicated(end).await,
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
        if let Some(raft) = self.raft.get() {
            let (r, _) = self.propose(raft, topic, queue_id, msg).await?;
            self.appended.notify_waiters();
            return Ok(r);
        }
        let (mut r, placed) = self.append(topic, queue_id, msg)?;
        r.status = self.durability(placed.end).await;
        self.appended.notify_waiters();
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
            queue_id,
            queue_offset: a.queue_offset,
            pos: a.pos,
            end: a.end,
            born_ms,
            stored_ms: a.stored_ms,
        },
    )
}
