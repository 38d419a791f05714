//! Transactional messages: RocketMQ's two-phase send with check-back.
//!
//! 1. *Prepare*: the producer stores a half message. It goes to `%HALF%`
//!    with its real topic and producer group in its properties; consumers
//!    never read that topic. It is as durable as any send (same flush and
//!    replication) and traced `tx_prepare`.
//! 2. *End*: the producer runs its local transaction and ends it. Commit
//!    copies the half into its real topic (a new record carrying the half's
//!    id in `UNIQ_TRANSACTION_ID`), then writes an op record to
//!    `%HALF_OP%`; rollback writes only the op record. Traced `tx_commit` /
//!    `tx_rollback`.
//! 3. *Check-back*: a half still open [`TxOptions::check_after`] after it
//!    was stored (or last checked) is queued for its producer group, whose
//!    producers long-poll `PollChecks` and answer with `EndTransaction`.
//!    After [`TxOptions::max_checks`] checks without a decision the broker
//!    rolls it back (RocketMQ's `transactionCheckMax`). Traced `tx_check`.
//!    Rounds compare due times with the broker's clock
//!    (`BrokerOptions::clock`); a half's first check is due `check_after`
//!    after its stored time.
//!
//! Invariants: the open set is `%HALF%` minus `%HALF_OP%`, rebuilt on start
//! and kept current on replicas as records arrive, so a restart or failover
//! neither forgets a transaction nor ends one twice; an end takes the half
//! out of the open set before doing its work, so two concurrent ends (the
//! producer's and a check's answer) cannot both commit.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;
use waybill_client::protocol::{
    TransactionCheck, TransactionState, PROP_PRODUCER_GROUP, PROP_REAL_TOPIC, PROP_TRANSACTION_ID,
    PROP_TRANSACTION_PREPARED,
};

use super::event::{MessageEvent, RecordRef, TraceEvent};
use super::{now_ms, topic, Broker, BrokerError, MessageId, Outgoing, SendResult};
use crate::model::Stage;
use crate::storage::StoredMessage;

pub use crate::model::topics::{HALF_OP_TOPIC, HALF_TOPIC};
/// Check-backs handed to one poll at most.
const MAX_CHECKS_PER_POLL: usize = 32;

/// Check-back timing.
#[derive(Debug, Clone, Copy)]
pub struct TxOptions {
    /// RocketMQ's `transactionTimeOut`: a half this old (since it was
    /// stored or last checked) is checked back (default 6 s).
    pub check_after: Duration,
    /// RocketMQ's `transactionCheckMax`: checks before the broker rolls
    /// the half back (default 15).
    pub max_checks: u32,
}

impl Default for TxOptions {
    fn default() -> Self {
        TxOptions {
            check_after: Duration::from_secs(6),
            max_checks: 15,
        }
    }
}

/// An open transaction.
#[derive(Debug, Clone)]
struct Open {
    id: MessageId,
    topic: String,
    group: String,
    checks: u32,
    next_check_ms: i64,
}

#[derive(Default)]
struct State {
    /// By half id (string form).
    open: BTreeMap<String, Open>,
    /// Check-backs waiting for a poll, per producer group.
    queued: HashMap<String, VecDeque<String>>,
}

/// The broker's open transactions and pending check-backs.
#[derive(Default)]
pub struct Transactions {
    // std Mutex: map updates only, never held across an await.
    state: Mutex<State>,
    checks_ready: Notify,
    /// The open set matches the log: false until rebuilt on a node that
    /// takes writes (a replica's copy of the log gains halves and ops
    /// without this node seeing them one by one).
    synced: std::sync::atomic::AtomicBool,
}

impl Transactions {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A half record (at `pos`) is open until an op record ends it.
    pub fn load_half(&self, pos: u64, m: &StoredMessage, check_after: Duration) {
        let id = MessageId {
            node: m.node,
            epoch: m.epoch,
            pos,
        };
        let (Some(topic), Some(group)) = (m.properties.get(PROP_REAL_TOPIC), m.properties.get(PROP_PRODUCER_GROUP))
        else {
            return;
        };
        let next_check_ms = m.stored_ms + check_after.as_millis() as i64;
        self.lock().open.insert(
            id.to_string(),
            Open {
                id,
                topic: topic.clone(),
                group: group.clone(),
                checks: 0,
                next_check_ms,
            },
        );
    }

    /// An op record ends the half its key names.
    pub fn load_op(&self, m: &StoredMessage) {
        if let Some(id) = &m.key {
            let mut s = self.lock();
            s.open.remove(id);
            for q in s.queued.values_mut() {
                q.retain(|x| x != id);
            }
        }
    }

    /// Open transactions (for the dashboard and metrics).
    pub fn open_count(&self) -> usize {
        self.lock().open.len()
    }

    fn take(&self, id: &str) -> Option<Open> {
        let mut s = self.lock();
        let open = s.open.remove(id)?;
        if let Some(q) = s.queued.get_mut(&open.group) {
            q.retain(|x| x != id);
        }
        Some(open)
    }

    fn put_back(&self, open: Open) {
        self.lock().open.insert(open.id.to_string(), open);
    }
}

/// What an end did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// Committed: the message as stored in its real topic.
    Committed(SendResult),
    RolledBack,
    /// Still open (the producer answered `UNKNOW`); checked back later.
    StillOpen,
}

impl Broker {
    fn trace_tx(&self, id: &MessageId, stage: Stage, outcome: &'static str, detail: String, record: Option<RecordRef>) {
        self.trace_tx_at(now_ms(), id, stage, outcome, detail, record);
    }

    fn trace_tx_at(
        &self,
        at_ms: i64,
        id: &MessageId,
        stage: Stage,
        outcome: &'static str,
        detail: String,
        record: Option<RecordRef>,
    ) {
        self.trace(|| {
            TraceEvent::Message(Box::new(MessageEvent {
                message_id: id.to_string(),
                stage,
                at_ms,
                group: None,
                outcome,
                detail,
                record,
                attempt: None,
            }))
        });
    }

    /// Stores a half message for `topic` (prepare). Its id is the
    /// transaction's handle.
    pub async fn send_half(
        &self,
        topic: &str,
        producer_group: &str,
        mut msg: Outgoing,
    ) -> Result<SendResult, BrokerError> {
        topic::validate(topic)?;
        topic::validate(producer_group)?;
        topic::validate_properties([&msg.properties])?;
        self.check_limits([&msg])?;
        self.sync_transactions()?;
        msg.properties.insert(PROP_TRANSACTION_PREPARED.into(), "true".into());
        msg.properties.insert(PROP_REAL_TOPIC.into(), topic.to_string());
        msg.properties
            .insert(PROP_PRODUCER_GROUP.into(), producer_group.to_string());
        msg.topic = HALF_TOPIC.to_string();
        let mut results = self.store_batch(HALF_TOPIC, vec![msg]).await?;
        let r = results
            .pop()
            .ok_or_else(|| BrokerError::Invalid("empty batch".into()))?;
        if let Ok(m) = self.store.read(r.id.pos) {
            self.transactions
                .load_half(r.id.pos, &m, self.opts.transactions.check_after);
        }
        self.trace_tx(
            &r.id,
            Stage::TxPrepare,
            "ok",
            format!(
                "half message stored ({}), invisible to consumers of {topic} until producer group {producer_group} \
                 commits",
                r.status.name()
            ),
            None,
        );
        Ok(r)
    }

    /// Ends the transaction of half `id` as its producer decided.
    pub async fn end_transaction(
        &self,
        producer_group: &str,
        id: &str,
        state: TransactionState,
        from_check: bool,
    ) -> Result<Ended, BrokerError> {
        self.check_writable()?;
        self.sync_transactions()?;
        let parsed: MessageId = id.parse()?;
        let Some(open) = self.transactions.take(id) else {
            return Err(match self.get(&parsed)? {
                Some(m) if m.topic == HALF_TOPIC => BrokerError::Conflict(format!("transaction {id} already ended")),
                _ => BrokerError::NotFound(format!("no transaction with id {id}")),
            });
        };
        if open.group != producer_group {
            let group = open.group.clone();
            self.transactions.put_back(open);
            return Err(BrokerError::Invalid(format!(
                "transaction {id} belongs to producer group {group}, not {producer_group}"
            )));
        }
        let how = if from_check {
            "answering a check"
        } else {
            "after its local transaction"
        };
        match state {
            TransactionState::Unknown => {
                let checks = open.checks;
                self.transactions.put_back(open);
                self.trace_tx(
                    &parsed,
                    if from_check { Stage::TxCheck } else { Stage::TxPrepare },
                    "unknown",
                    format!("producer answered UNKNOW {how} (after {checks} checks): the broker will check back"),
                    None,
                );
                Ok(Ended::StillOpen)
            }
            TransactionState::Commit => match self.commit_half(&open).await {
                Ok((r, committed_ms)) => {
                    // Committed when the copy was stored (consumers may
                    // see it from then on), not when the op record landed.
                    self.trace_tx_at(
                        committed_ms,
                        &parsed,
                        Stage::TxCommit,
                        "ok",
                        format!("committed {how}: delivered to {} as {}", open.topic, r.id),
                        Some(RecordRef {
                            id: r.id.to_string(),
                            topic: open.topic.clone(),
                            queue_id: r.queue_id,
                            queue_offset: r.queue_offset,
                        }),
                    );
                    Ok(Ended::Committed(r))
                }
                Err(e) => {
                    self.transactions.put_back(open);
                    Err(e)
                }
            },
            TransactionState::Rollback => {
                self.rollback_half(&open, &format!("rolled back {how}")).await?;
                Ok(Ended::RolledBack)
            }
        }
    }

    /// Copies the half into its real topic, then records the op.
    /// Returns the copy's result and when it was stored.
    async fn commit_half(&self, open: &Open) -> Result<(SendResult, i64), BrokerError> {
        let half = self
            .get(&open.id)?
            .ok_or_else(|| BrokerError::NotFound(format!("half message {} is not in the log", open.id)))?;
        let mut properties = half.properties;
        properties.remove(PROP_TRANSACTION_PREPARED);
        properties.remove(PROP_REAL_TOPIC);
        properties.remove(PROP_PRODUCER_GROUP);
        properties.insert(PROP_TRANSACTION_ID.into(), open.id.to_string());
        let msg = Outgoing {
            topic: open.topic.clone(),
            key: half.key,
            tags: half.tags,
            producer: half.producer,
            properties,
            body: half.body,
            born_ms: Some(half.born_ms),
            send_mode: Some("sync"),
        };
        let mut results = self.store_batch(&open.topic, vec![msg]).await?;
        let r = results
            .pop()
            .ok_or_else(|| BrokerError::Invalid("empty batch".into()))?;
        let stored_ms = self.get(&r.id).ok().flatten().map_or_else(now_ms, |m| m.stored_ms);
        self.record_op(&open.id, format!("commit {}", r.id)).await?;
        Ok((r, stored_ms))
    }

    async fn rollback_half(&self, open: &Open, why: &str) -> Result<(), BrokerError> {
        if let Err(e) = self.record_op(&open.id, format!("rollback {why}")).await {
            self.transactions.put_back(open.clone());
            return Err(e);
        }
        self.trace_tx(&open.id, Stage::TxRollback, "rolled_back", why.to_string(), None);
        Ok(())
    }

    async fn record_op(&self, id: &MessageId, body: String) -> Result<(), BrokerError> {
        let op = Outgoing {
            topic: HALF_OP_TOPIC.into(),
            key: Some(id.to_string()),
            body: body.into_bytes(),
            ..Outgoing::default()
        };
        self.append_durable(HALF_OP_TOPIC, 0, op).await.map(|_| ())
    }

    /// Rebuilds the open set from the log (`%HALF%` minus `%HALF_OP%`) the
    /// first time this node takes writes, and after it served as a replica.
    pub(crate) fn sync_transactions(&self) -> Result<(), BrokerError> {
        use std::sync::atomic::Ordering;
        if self.check_writable().is_err() {
            self.transactions.synced.store(false, Ordering::Release);
            return Ok(());
        }
        if self.transactions.synced.load(Ordering::Acquire) {
            return Ok(());
        }
        let fresh = Transactions::default();
        let after = self.opts.transactions.check_after;
        for queue in 0..self.opts.queues_per_topic.max(1) {
            self.store
                .scan_queue(HALF_TOPIC, queue, |_, pos, m| fresh.load_half(pos, &m, after))?;
        }
        self.store.scan_queue(HALF_OP_TOPIC, 0, |_, _, m| fresh.load_op(&m))?;
        let open = std::mem::take(&mut fresh.lock().open);
        let n = open.len();
        {
            let mut s = self.transactions.lock();
            s.open = open;
            s.queued.clear();
        }
        self.transactions.synced.store(true, Ordering::Release);
        if n > 0 {
            tracing::info!(open = n, "open transactions restored from the log");
        }
        Ok(())
    }

    /// Check-backs for `producer_group`, waiting up to `wait` for one.
    pub async fn poll_checks(&self, producer_group: &str, wait: Duration) -> Vec<TransactionCheck> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let notified = self.transactions.checks_ready.notified();
            let ids: Vec<String> = {
                let mut s = self.transactions.lock();
                let q = s.queued.entry(producer_group.to_string()).or_default();
                let n = q.len().min(MAX_CHECKS_PER_POLL);
                q.drain(..n).collect()
            };
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                let Some(open) = self.transactions.lock().open.get(&id).cloned() else {
                    continue;
                };
                if let Ok(Some(m)) = self.get(&open.id) {
                    out.push(TransactionCheck {
                        id,
                        topic: open.topic.clone(),
                        check_times: open.checks,
                        message: super::pull::client_message(
                            m.key,
                            m.tags,
                            m.producer,
                            m.properties,
                            m.body,
                            m.born_ms,
                        ),
                    });
                }
            }
            if !out.is_empty() || tokio::time::Instant::now() >= deadline {
                return out;
            }
            let _ = tokio::time::timeout_at(deadline, notified).await;
        }
    }

    /// One round of check-backs: asks about halves that are due, rolls
    /// back those out of checks. Only the node taking writes checks.
    pub async fn check_transactions(&self) {
        if let Err(e) = self.sync_transactions() {
            tracing::warn!(error = %e, "cannot read open transactions from the log");
            return;
        }
        if self.check_writable().is_err() {
            return;
        }
        let now = self.opts.clock.now_ms();
        let max = self.opts.transactions.max_checks;
        let every = self.opts.transactions.check_after.as_millis() as i64;
        let mut give_up = Vec::new();
        let mut asked = Vec::new();
        {
            let mut s = self.transactions.lock();
            let State { open, queued } = &mut *s;
            for (id, o) in open.iter_mut().filter(|(_, o)| o.next_check_ms <= now) {
                if o.checks >= max {
                    give_up.push(id.clone());
                    continue;
                }
                o.checks += 1;
                o.next_check_ms = now + every;
                let q = queued.entry(o.group.clone()).or_default();
                if !q.contains(id) {
                    q.push_back(id.clone());
                }
                asked.push((o.id, o.group.clone(), o.checks));
            }
        }
        for (id, group, n) in asked {
            self.trace_tx(
                &id,
                Stage::TxCheck,
                "asked",
                format!("check {n} of {max}: asked producer group {group} whether its transaction committed"),
                None,
            );
        }
        for id in give_up {
            if let Some(open) = self.transactions.take(&id) {
                let why = format!(
                    "rolled back by the broker: {max} checks went unanswered or UNKNOW (producer group {})",
                    open.group
                );
                if let Err(e) = self.rollback_half(&open, &why).await {
                    tracing::warn!(%id, error = %e, "transaction rollback failed; retried next round");
                }
            }
        }
        self.transactions.checks_ready.notify_waiters();
    }

    pub fn transactions(&self) -> &Transactions {
        &self.transactions
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn half(pos: u64, stored_ms: i64) -> StoredMessage {
        StoredMessage {
            node: 1,
            epoch: 1,
            born_ms: stored_ms,
            stored_ms,
            topic: HALF_TOPIC.into(),
            queue_id: 0,
            queue_offset: pos,
            key: None,
            tags: None,
            producer: None,
            properties: [
                (PROP_REAL_TOPIC.to_string(), "orders".to_string()),
                (PROP_PRODUCER_GROUP.to_string(), "pg".to_string()),
            ]
            .into(),
            body: Vec::new(),
        }
    }

    #[test]
    fn the_open_set_is_halves_minus_ops() {
        let t = Transactions::default();
        t.load_half(10, &half(10, 1_000), Duration::from_secs(6));
        t.load_half(20, &half(20, 1_000), Duration::from_secs(6));
        let first = MessageId {
            node: 1,
            epoch: 1,
            pos: 10,
        };
        let op = StoredMessage {
            topic: HALF_OP_TOPIC.into(),
            key: Some(first.to_string()),
            ..half(30, 2_000)
        };
        t.load_op(&op);
        assert_eq!(t.open_count(), 1);
        assert!(t.take(&first.to_string()).is_none(), "ended once, never again");
        let second = MessageId { pos: 20, ..first };
        let open = t.take(&second.to_string()).expect("still open");
        assert_eq!(
            (open.topic.as_str(), open.group.as_str(), open.next_check_ms),
            ("orders", "pg", 7_000)
        );
    }
}
