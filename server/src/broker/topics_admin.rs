//! Topics as operators manage them: created with a queue count, deleted
//! (hidden, never rewritten) and created again.
//!
//! A topic a producer writes to without creating it exists implicitly with
//! the node's `queues_per_topic`. An operator's create records the topic
//! and its queue count in `%TOPICS%`; a delete records a tombstone with
//! each queue's end at that moment. The log keeps the deleted data, but
//! everything below those ends belongs to the deleted topic: it is hidden
//! from listing, browsing and search, and a topic created again under the
//! same name starts after it.
//!
//! Invariants: the registry is rebuilt from `%TOPICS%` on start (and kept
//! current by replication through `Consumers`), so it always equals the
//! records' replay; applying a record twice changes nothing (ends only
//! grow); a deleted topic refuses produce until it is created again; the
//! registry holds at most [`MAX_TOPICS`] topics.

use std::collections::BTreeMap;
use std::sync::RwLock;

use serde::{Deserialize, Serialize};

use super::{Broker, BrokerError, MessageId};
pub use crate::model::topics::TOPICS_TOPIC;

/// Most topics the registry keeps: creates beyond it are refused.
pub const MAX_TOPICS: usize = 10_000;
/// Most queues an operator may create a topic with.
pub const MAX_QUEUES: u32 = 64;

/// One `%TOPICS%` record.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum TopicRecord {
    Create {
        topic: String,
        queues: u32,
        at_ms: i64,
    },
    /// `ends`: each queue's `[queue, next offset]` when the topic was
    /// deleted (pairs, not a map: an internally tagged enum cannot read
    /// integer map keys back from JSON).
    Delete {
        topic: String,
        at_ms: i64,
        ends: Vec<(u32, u64)>,
    },
}

/// What the registry knows of one topic.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopicState {
    /// The operator's queue count; `None`: the node's default.
    pub queues: Option<u32>,
    pub created_ms: Option<i64>,
    pub deleted: bool,
    /// Per queue, the offsets below this belong to a deleted topic.
    pub hidden_below: BTreeMap<u32, u64>,
}

/// The topics operators created or deleted.
#[derive(Default)]
pub struct Registry {
    // std RwLock: produce reads it once per request, admin calls write it
    // briefly; never held across an await.
    topics: RwLock<BTreeMap<String, TopicState>>,
    /// Serialises create and delete, so the existence check and the record
    /// it leads to are not interleaved with another admin call (tokio
    /// Mutex: held across the durable append).
    pub(crate) admin: tokio::sync::Mutex<()>,
}

impl Registry {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, TopicState>> {
        self.topics.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies a `%TOPICS%` record body; false when it does not parse.
    pub fn load(&self, body: &[u8]) -> bool {
        let Ok(rec) = serde_json::from_slice::<TopicRecord>(body) else {
            return false;
        };
        self.apply(&rec);
        true
    }

    pub fn apply(&self, rec: &TopicRecord) {
        let mut all = self.topics.write().unwrap_or_else(|p| p.into_inner());
        match rec {
            TopicRecord::Create { topic, queues, at_ms } => {
                let s = all.entry(topic.clone()).or_default();
                s.queues = Some(*queues);
                s.created_ms = Some(*at_ms);
                s.deleted = false;
            }
            TopicRecord::Delete { topic, ends, .. } => {
                let s = all.entry(topic.clone()).or_default();
                s.deleted = true;
                for (q, end) in ends {
                    let h = s.hidden_below.entry(*q).or_default();
                    *h = (*h).max(*end);
                }
            }
        }
    }

    pub fn state(&self, topic: &str) -> Option<TopicState> {
        self.read().get(topic).cloned()
    }

    pub fn len(&self) -> usize {
        self.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.read().is_empty()
    }

    /// Every topic the registry knows, deleted ones included.
    pub fn all(&self) -> Vec<(String, TopicState)> {
        self.read().iter().map(|(t, s)| (t.clone(), s.clone())).collect()
    }
}

/// A consumer group's position on a topic.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct GroupLag {
    pub group: String,
    /// Messages of the topic the group has not committed.
    pub lag: u64,
}

impl Broker {
    fn registry(&self) -> &Registry {
        &self.consumers.topics
    }

    /// Queues of `topic`: its operator's count, or the node's default.
    pub fn topic_queues(&self, topic: &str) -> u32 {
        self.registry()
            .state(topic)
            .and_then(|s| s.queues)
            .unwrap_or(self.opts.queues_per_topic)
            .max(1)
    }

    /// Whether `topic` was deleted and not created again.
    pub fn topic_deleted(&self, topic: &str) -> bool {
        self.registry().state(topic).is_some_and(|s| s.deleted)
    }

    /// The first offset of a queue that belongs to the topic as it is now
    /// (below it: a deleted topic of the same name).
    pub fn hidden_below(&self, topic: &str, queue_id: u32) -> u64 {
        self.registry()
            .state(topic)
            .and_then(|s| s.hidden_below.get(&queue_id).copied())
            .unwrap_or(0)
    }

    /// Whether a stored message is visible: not of a deleted topic.
    pub fn visible(&self, topic: &str, queue_id: u32, offset: u64) -> bool {
        match self.registry().state(topic) {
            None => true,
            Some(s) => !s.deleted && offset >= s.hidden_below.get(&queue_id).copied().unwrap_or(0),
        }
    }

    /// Whether the message with this id on `topic` is visible (read only
    /// when the topic has a deleted past to tell apart).
    pub fn visible_id(&self, topic: &str, id: &MessageId) -> bool {
        match self.registry().state(topic) {
            None => true,
            Some(s) if s.deleted => false,
            Some(s) if s.hidden_below.values().all(|h| *h == 0) => true,
            Some(_) => match self.get(id) {
                Ok(Some(m)) => self.visible(topic, m.queue_id, m.queue_offset),
                _ => true,
            },
        }
    }

    /// User topics (no `%` system topics), sorted: those created by an
    /// operator and those produced to, minus deleted ones.
    pub fn user_topics(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .store
            .queues()
            .into_iter()
            .map(|(t, _, _)| t)
            .filter(|t| !t.starts_with('%'))
            .collect();
        names.extend(self.registry().all().into_iter().map(|(t, _)| t));
        names.sort();
        names.dedup();
        names.retain(|t| !self.topic_deleted(t));
        names
    }

    /// Whether `topic` is a user topic that exists now.
    pub fn topic_exists(&self, topic: &str) -> bool {
        if topic.starts_with('%') || self.topic_deleted(topic) {
            return false;
        }
        self.registry().state(topic).is_some() || self.store.queues().iter().any(|(t, _, _)| t == topic)
    }

    /// Groups that consume `topic` or have committed offsets on it, with
    /// their lag on it, by name.
    pub fn topic_groups(&self, topic: &str) -> Vec<GroupLag> {
        let queues = self.topic_queues(topic);
        self.groups()
            .views()
            .into_iter()
            .filter(|g| g.topic.as_deref() == Some(topic) || g.offsets.iter().any(|(t, _, _)| t == topic))
            .map(|g| {
                let lag = (0..queues)
                    .map(|q| {
                        let end = self.store.queue_len(topic, q);
                        let committed = self
                            .groups()
                            .offset(&g.group, topic, q)
                            .unwrap_or(0)
                            .max(self.hidden_below(topic, q));
                        end.saturating_sub(committed)
                    })
                    .sum();
                GroupLag { group: g.group, lag }
            })
            .collect()
    }

    /// Creates a user topic with `queues` queues (1 to [`MAX_QUEUES`]),
    /// durably, and records who did it.
    pub async fn create_topic(&self, topic: &str, queues: u32, by: &str) -> Result<(), BrokerError> {
        super::topic::validate(topic)?;
        if queues == 0 || queues > MAX_QUEUES {
            return Err(BrokerError::Invalid(format!(
                "queues must be 1 to {MAX_QUEUES}, not {queues}"
            )));
        }
        let _admin = self.registry().admin.lock().await;
        if self.topic_exists(topic) {
            return Err(BrokerError::Conflict(format!("topic {topic} already exists")));
        }
        if self.registry().len() >= MAX_TOPICS {
            return Err(BrokerError::Invalid(format!(
                "this node already manages {MAX_TOPICS} topics; delete one first"
            )));
        }
        let rec = TopicRecord::Create {
            topic: topic.to_string(),
            queues,
            at_ms: self.opts.clock.now_ms(),
        };
        self.record_json(TOPICS_TOPIC, topic, &rec).await?;
        self.registry().apply(&rec);
        self.audit(
            by,
            "topic.create",
            topic,
            format!("created topic {topic} with {queues} queues"),
        )
        .await?;
        Ok(())
    }

    /// Deletes a user topic: refused while a group has unconsumed messages
    /// on it, unless `force`. The data stays in the log, hidden.
    pub async fn delete_topic(&self, topic: &str, force: bool, by: &str) -> Result<(), BrokerError> {
        let _admin = self.registry().admin.lock().await;
        if !self.topic_exists(topic) {
            return Err(BrokerError::NotFound(format!("no topic {topic}")));
        }
        let lagging: Vec<GroupLag> = self.topic_groups(topic).into_iter().filter(|g| g.lag > 0).collect();
        let names: Vec<String> = lagging
            .iter()
            .map(|g| format!("{} ({} unconsumed)", g.group, g.lag))
            .collect();
        if !lagging.is_empty() && !force {
            return Err(BrokerError::Conflict(format!(
                "topic {topic} still has unconsumed messages for consumer groups {}; delete with force to drop them",
                names.join(", ")
            )));
        }
        let queues = self.topic_queues(topic);
        let mut ends: BTreeMap<u32, u64> = BTreeMap::new();
        for (t, q, len) in self.store.queues() {
            if t == topic {
                ends.insert(q, len);
            }
        }
        for q in 0..queues {
            ends.entry(q).or_insert(0);
        }
        let rec = TopicRecord::Delete {
            topic: topic.to_string(),
            at_ms: self.opts.clock.now_ms(),
            ends: ends.into_iter().collect(),
        };
        self.record_json(TOPICS_TOPIC, topic, &rec).await?;
        self.registry().apply(&rec);
        let detail = if names.is_empty() {
            format!("deleted topic {topic}")
        } else {
            format!("deleted topic {topic} with force, dropping {}", names.join(", "))
        };
        self.audit(by, "topic.delete", topic, detail).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delete_hides_what_was_there_and_a_create_reopens_after_it() {
        let r = Registry::default();
        r.apply(&TopicRecord::Create {
            topic: "t".into(),
            queues: 2,
            at_ms: 1,
        });
        let ends = vec![(0, 5), (1, 7)];
        let del = serde_json::to_vec(&TopicRecord::Delete {
            topic: "t".into(),
            at_ms: 2,
            ends,
        })
        .unwrap_or_default();
        assert!(r.load(&del));
        assert!(r.load(&del), "applying twice changes nothing");
        let s = r.state("t").unwrap_or_default();
        assert!(s.deleted);
        assert_eq!(s.hidden_below, [(0, 5), (1, 7)].into());
        r.apply(&TopicRecord::Create {
            topic: "t".into(),
            queues: 3,
            at_ms: 3,
        });
        let s = r.state("t").unwrap_or_default();
        assert_eq!((s.deleted, s.queues), (false, Some(3)));
        assert_eq!(s.hidden_below.get(&1), Some(&7));
        assert!(!r.load(b"not json"));
    }
}
