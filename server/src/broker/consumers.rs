//! Consumer-side state the broker keeps in memory: group membership and
//! committed offsets, replay records, redrive jobs, and the wake-up for
//! long polls.
//!
//! It is rebuilt from the system topics (`%OFFSETS%` with its group
//! deletes, `%REPLAYS%`) when
//! the node starts, and kept current by whatever appends those records:
//! the broker itself, or replication applying a primary's (or the Raft
//! log's) records on this node. Replication reaches it through the narrow
//! [`Applied`] trait, never through the broker.

use std::time::Duration;

use tokio::sync::Notify;

use super::{dlq, groups, redrive, topics_admin, BrokerError, MessageId};
use crate::storage::{Store, StoredMessage};

/// Told about system records that landed by replication.
pub trait Applied: Send + Sync {
    /// `system` holds the system-topic records of what was just applied;
    /// called after every applied batch (also when it holds none: long
    /// polls wake up for the new messages).
    fn applied(&self, system: &[StoredMessage]);
}

/// Groups, replays and the "something was stored" signal.
pub struct Consumers {
    pub(crate) groups: groups::Groups,
    pub(crate) replays: dlq::Replays,
    /// Redrive jobs (restored from `%DLQ_JOBS%`).
    pub(crate) jobs: redrive::Jobs,
    /// Operator-managed topics (restored from `%TOPICS%`).
    pub(crate) topics: topics_admin::Registry,
    /// Woken after every stored message: long-polling pulls wait on it.
    pub(crate) appended: Notify,
}

impl Consumers {
    /// Restores committed offsets and replays from `store`: `%REPLAYS%`
    /// records, and the replayed copies in each group's replay queue
    /// (queue `replay_queue` of `%RETRY%<group>`), which a crash may have
    /// left without their record.
    pub fn restore(store: &Store, client_timeout: Duration, replay_queue: u32) -> Result<Consumers, BrokerError> {
        let c = Consumers {
            groups: groups::Groups::new(client_timeout),
            replays: dlq::Replays::default(),
            jobs: redrive::Jobs::default(),
            topics: topics_admin::Registry::default(),
            appended: Notify::new(),
        };
        let mut offsets = 0;
        store.scan_queue(groups::OFFSETS_TOPIC, 0, |_, _, m| {
            if c.apply_offset(&m) {
                offsets += 1;
            }
        })?;
        let mut replays = 0;
        store.scan_queue(dlq::REPLAYS_TOPIC, 0, |_, _, m| {
            if c.replays.load(&m.body) {
                replays += 1;
            }
        })?;
        let mut discards = 0;
        store.scan_queue(crate::model::topics::DLQ_DISCARDS_TOPIC, 0, |_, _, m| {
            if c.replays.load_discard(&m.body) {
                discards += 1;
            }
        })?;
        let mut jobs = 0;
        store.scan_queue(redrive::DLQ_JOBS_TOPIC, 0, |_, _, m| {
            if c.jobs.load(&m.body) {
                jobs += 1;
            }
        })?;
        let mut topics = 0;
        store.scan_queue(topics_admin::TOPICS_TOPIC, 0, |_, _, m| {
            if c.topics.load(&m.body) {
                topics += 1;
            }
        })?;
        let mut copies = 0;
        for (topic, queue, _) in store.queues() {
            let Some(group) = topic.strip_prefix("%RETRY%").filter(|_| queue == replay_queue) else {
                continue;
            };
            store.scan_queue(&topic, queue, |_, pos, m| {
                let id = MessageId {
                    node: m.node,
                    epoch: m.epoch,
                    pos,
                };
                if c.replays.load_copy(group, &id.to_string(), &m) {
                    copies += 1;
                }
            })?;
        }
        tracing::info!(
            offsets,
            replays,
            copies,
            jobs,
            discards,
            topics,
            "consumer state restored"
        );
        Ok(c)
    }

    /// The groups, their members and committed offsets.
    pub fn groups(&self) -> &groups::Groups {
        &self.groups
    }

    fn apply_offset(&self, m: &StoredMessage) -> bool {
        let key = m.key.as_deref().unwrap_or_default();
        if let Some(group) = groups::parse_delete_record(key) {
            self.groups.forget(group);
            return true;
        }
        match groups::parse_offset_record(key, &m.body) {
            Some((g, t, q, o)) => {
                self.groups.set_offset(&g, &t, q, o);
                true
            }
            None => false,
        }
    }
}

impl Applied for Consumers {
    /// Committed offsets and replay records, so a promoted replica (or a
    /// new Raft leader) has them.
    fn applied(&self, system: &[StoredMessage]) {
        for m in system {
            if m.topic == groups::OFFSETS_TOPIC {
                self.apply_offset(m);
            } else if m.topic == dlq::REPLAYS_TOPIC {
                self.replays.load(&m.body);
            } else if m.topic == redrive::DLQ_JOBS_TOPIC {
                self.jobs.load(&m.body);
            } else if m.topic == crate::model::topics::DLQ_DISCARDS_TOPIC {
                self.replays.load_discard(&m.body);
            } else if m.topic == topics_admin::TOPICS_TOPIC {
                self.topics.load(&m.body);
            }
        }
        self.appended.notify_waiters();
    }
}
