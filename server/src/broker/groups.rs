//! Consumer groups: live members, queue assignment, committed offsets.
//!
//! Members join and stay by heartbeat; one silent for `client_timeout` is
//! dropped, and the group's queues are reassigned among the rest. The
//! assignment is a pure function of (sorted live members, sorted queues):
//! queue `i` goes to member `i % n` (RocketMQ's "averagely by circle"), so
//! every member computes the same split and no queue has two owners once
//! heartbeats settle. A new owner starts at the committed offset, so what
//! a dead member consumed without committing is delivered again.
//!
//! Offsets live in memory and are made durable by the broker as records of
//! the `%OFFSETS%` system topic in the commit log (flushed and, later,
//! replicated like any message), replayed into this map on start.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;
use waybill_client::protocol::Dedupe;

pub use crate::model::topics::OFFSETS_TOPIC;

struct Member {
    last_seen: Instant,
    topic: String,
    auto_commit: bool,
    /// The member handles through an inbox (declared on its heartbeats).
    dedupe: Option<Dedupe>,
}

#[derive(Default)]
struct Group {
    members: BTreeMap<String, Member>,
    offsets: HashMap<(String, u32), u64>,
    /// Some member ever ran with auto-commit: a loss point for the group.
    auto_commit_seen: bool,
    /// The inbox the group's members last declared (kept after they leave:
    /// an offline group still shows how it handles).
    dedupe_seen: Option<Dedupe>,
    /// Duplicates the group's inbox acknowledged without handling, since
    /// this broker started.
    suppressed: u64,
    /// The topic its members last consumed (kept after they leave).
    last_topic: Option<String>,
}

/// A group as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct GroupView {
    pub group: String,
    pub topic: Option<String>,
    pub members: Vec<String>,
    pub auto_commit: bool,
    /// `{backend, window_ms}` when the group handles through an inbox.
    pub dedupe: Option<DedupeView>,
    /// Duplicates suppressed by the group's inbox since this broker started.
    pub duplicates_suppressed: u64,
    pub offsets: Vec<(String, u32, u64)>,
}

/// A group's inbox as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct DedupeView {
    pub backend: String,
    /// 0 = keys are kept forever.
    pub window_ms: u64,
}

pub struct Groups {
    // std Mutex: map updates only, never held across an await.
    inner: Mutex<HashMap<String, Group>>,
    client_timeout: Duration,
}

impl Groups {
    pub fn new(client_timeout: Duration) -> Self {
        Groups {
            inner: Mutex::new(HashMap::new()),
            client_timeout,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Group>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a heartbeat and returns this member's share of `queues`.
    pub fn heartbeat(
        &self,
        group: &str,
        client_id: &str,
        topic: &str,
        auto_commit: bool,
        dedupe: Option<Dedupe>,
        queues: &[(String, u32)],
    ) -> Vec<(String, u32)> {
        let mut all = self.lock();
        let g = all.entry(group.to_string()).or_default();
        let now = Instant::now();
        g.members.insert(
            client_id.to_string(),
            Member {
                last_seen: now,
                topic: topic.to_string(),
                auto_commit,
                dedupe: dedupe.clone(),
            },
        );
        g.auto_commit_seen |= auto_commit;
        g.last_topic = Some(topic.to_string());
        if dedupe.is_some() {
            g.dedupe_seen = dedupe;
        }
        let timeout = self.client_timeout;
        g.members.retain(|id, m| {
            let alive = now.duration_since(m.last_seen) <= timeout;
            if !alive {
                tracing::info!(group, member = %id, "consumer timed out; rebalancing");
            }
            alive
        });
        let n = g.members.len().max(1);
        let me = g.members.keys().position(|k| k == client_id).unwrap_or(0);
        let mut sorted = queues.to_vec();
        sorted.sort();
        sorted
            .into_iter()
            .enumerate()
            .filter(|(i, _)| i % n == me)
            .map(|(_, q)| q)
            .collect()
    }

    /// Removes a member at once.
    pub fn leave(&self, group: &str, client_id: &str) {
        if let Some(g) = self.lock().get_mut(group) {
            g.members.remove(client_id);
        }
    }

    /// Whether a live member of the group commits on delivery.
    pub fn auto_commit(&self, group: &str) -> bool {
        self.lock()
            .get(group)
            .is_some_and(|g| g.members.values().any(|m| m.auto_commit))
    }

    /// The inbox a live member of the group declared, if any: commits are
    /// traced with it, so a timeline knows redeliveries were deduplicated.
    pub fn dedupe(&self, group: &str) -> Option<Dedupe> {
        self.lock()
            .get(group)
            .and_then(|g| g.members.values().find_map(|m| m.dedupe.clone()))
    }

    /// Counts duplicates the group's inbox suppressed.
    pub fn suppressed(&self, group: &str, n: u64) {
        if n > 0 {
            self.lock().entry(group.to_string()).or_default().suppressed += n;
        }
    }

    pub fn offset(&self, group: &str, topic: &str, queue_id: u32) -> Option<u64> {
        self.lock()
            .get(group)
            .and_then(|g| g.offsets.get(&(topic.to_string(), queue_id)).copied())
    }

    pub fn set_offset(&self, group: &str, topic: &str, queue_id: u32, offset: u64) {
        self.lock()
            .entry(group.to_string())
            .or_default()
            .offsets
            .insert((topic.to_string(), queue_id), offset);
    }

    /// Topics each group's live members consume.
    pub fn subscriptions(&self) -> Vec<(String, String)> {
        let all = self.lock();
        let now = Instant::now();
        let mut out: Vec<(String, String)> = all
            .iter()
            .flat_map(|(g, grp)| {
                grp.members
                    .values()
                    .filter(move |m| now.duration_since(m.last_seen) <= self.client_timeout)
                    .map(move |m| (g.clone(), m.topic.clone()))
            })
            .collect();
        out.sort();
        out.dedup();
        out
    }

    pub fn views(&self) -> Vec<GroupView> {
        let all = self.lock();
        let mut out: Vec<GroupView> = all
            .iter()
            .map(|(name, g)| {
                let mut offsets: Vec<_> = g.offsets.iter().map(|((t, q), o)| (t.clone(), *q, *o)).collect();
                offsets.sort();
                let now = Instant::now();
                GroupView {
                    group: name.clone(),
                    // Kept from members that timed out: an offline group
                    // still shows what it consumes.
                    topic: g
                        .members
                        .values()
                        .next()
                        .map(|m| m.topic.clone())
                        .or_else(|| g.last_topic.clone()),
                    // Only members heard from within the client timeout
                    // (expired ones are pruned lazily at the next heartbeat).
                    members: g
                        .members
                        .iter()
                        .filter(|(_, m)| now.duration_since(m.last_seen) <= self.client_timeout)
                        .map(|(id, _)| id.clone())
                        .collect(),
                    auto_commit: g.auto_commit_seen || g.members.values().any(|m| m.auto_commit),
                    dedupe: g.dedupe_seen.as_ref().map(|d| DedupeView {
                        backend: d.backend.clone(),
                        window_ms: d.window_ms,
                    }),
                    duplicates_suppressed: g.suppressed,
                    offsets,
                }
            })
            .collect();
        out.sort_by(|a, b| a.group.cmp(&b.group));
        out
    }
}

/// Key of an offset record in `%OFFSETS%`.
pub fn offset_key(group: &str, topic: &str, queue_id: u32) -> String {
    format!("{group}\u{1}{topic}\u{1}{queue_id}")
}

/// Parses an offset record back; `None` for anything malformed.
pub fn parse_offset_record(key: &str, body: &[u8]) -> Option<(String, String, u32, u64)> {
    let mut parts = key.split('\u{1}');
    let group = parts.next()?.to_string();
    let topic = parts.next()?.to_string();
    let queue = parts.next()?.parse().ok()?;
    let offset = std::str::from_utf8(body).ok()?.parse().ok()?;
    Some((group, topic, queue, offset))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_split_queues_without_overlap_and_rebalance_on_leave() {
        let g = Groups::new(Duration::from_secs(30));
        let queues: Vec<(String, u32)> = (0..6).map(|q| ("t".to_string(), q)).collect();
        g.heartbeat("g", "a", "t", false, None, &queues);
        let a = g.heartbeat("g", "a", "t", false, None, &queues);
        let b = g.heartbeat("g", "b", "t", false, None, &queues);
        let a = if a.len() == 6 {
            g.heartbeat("g", "a", "t", false, None, &queues)
        } else {
            a
        };
        assert_eq!(a.len() + b.len(), 6);
        assert!(a.iter().all(|q| !b.contains(q)));
        g.leave("g", "b");
        assert_eq!(g.heartbeat("g", "a", "t", false, None, &queues).len(), 6);
    }

    #[test]
    fn a_group_whose_members_left_keeps_its_topic_and_inbox() {
        let g = Groups::new(Duration::from_secs(30));
        let dedupe = Dedupe {
            backend: "redis".into(),
            window_ms: 60_000,
        };
        g.heartbeat("g", "a", "orders", false, Some(dedupe), &[]);
        g.suppressed("g", 2);
        g.leave("g", "a");
        let v = &g.views()[0];
        assert!(v.members.is_empty());
        assert_eq!(v.topic.as_deref(), Some("orders"));
        assert_eq!(v.dedupe.as_ref().map(|d| d.window_ms), Some(60_000));
        assert_eq!(v.duplicates_suppressed, 2);
        assert!(g.dedupe("g").is_none(), "no live member declares it now");
    }

    #[test]
    fn offset_records_round_trip() {
        let k = offset_key("g", "%RETRY%g", 3);
        assert_eq!(
            parse_offset_record(&k, b"42"),
            Some(("g".into(), "%RETRY%g".into(), 3, 42))
        );
        assert_eq!(parse_offset_record("junk", b"x"), None);
    }
}
