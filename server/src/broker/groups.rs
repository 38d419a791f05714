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
//! replicated like any message), replayed into this map on start. A
//! deleted group is a `%OFFSETS%` record too ([`delete_key`]): replaying it
//! forgets everything the group had before it.
//!
//! An operator's offset reset leaves a *fence* on each queue it moved
//! (see `offsets.rs`): until the queue's owner pulls again, commits for the
//! queue are dropped (they carry the position from before the reset), and
//! that next pull is served from the reset offset whatever offset it asks
//! for; then the fence is gone. So a live member forced past picks up the
//! new position without a client change.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;
use waybill_client::protocol::Dedupe;

pub use crate::model::topics::OFFSETS_TOPIC;

struct Member {
    last_seen: Instant,
    /// Wall-clock time of the last heartbeat (for the API).
    last_seen_ms: i64,
    /// The member's address as the broker port saw it (host:port).
    addr: String,
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
    /// Queues reset by an operator whose owner has not pulled since: the
    /// offset to serve its next pull from (see the module doc).
    fences: HashMap<(String, u32), u64>,
}

impl Group {
    /// Members heard from within `timeout` (expired ones are pruned
    /// lazily at the next heartbeat), sorted by id.
    fn live(&self, now: Instant, timeout: Duration) -> Vec<MemberView> {
        self.members
            .iter()
            .filter(|(_, m)| now.duration_since(m.last_seen) <= timeout)
            .map(|(id, m)| MemberView {
                id: id.clone(),
                host: m.addr.clone(),
                last_heartbeat_ms: m.last_seen_ms,
                topic: m.topic.clone(),
            })
            .collect()
    }

    /// The topic its members consume; kept from members that timed out,
    /// so an offline group still shows what it consumes.
    fn topic(&self) -> Option<String> {
        self.members
            .values()
            .next()
            .map(|m| m.topic.clone())
            .or_else(|| self.last_topic.clone())
    }
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
    /// The live members with their address and last heartbeat.
    pub live: Vec<MemberView>,
}

/// A live member as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct MemberView {
    pub id: String,
    /// host:port of its connection to the broker port.
    pub host: String,
    pub last_heartbeat_ms: i64,
    pub topic: String,
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

    /// Records a heartbeat from `addr` and returns this member's share of
    /// `queues`.
    #[allow(clippy::too_many_arguments)]
    pub fn heartbeat(
        &self,
        group: &str,
        client_id: &str,
        addr: &str,
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
                last_seen_ms: crate::time::now_ms(),
                addr: addr.to_string(),
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
        let n = g.members.len();
        let me = g.members.keys().position(|k| k == client_id).unwrap_or(0);
        share(queues, n, me)
    }

    /// Live members of `group` (heard from within the client timeout),
    /// sorted by id; empty for an unknown group.
    pub fn live_members(&self, group: &str) -> Vec<MemberView> {
        self.lock()
            .get(group)
            .map(|g| g.live(Instant::now(), self.client_timeout))
            .unwrap_or_default()
    }

    /// The topic `group`'s members consume (or last consumed).
    pub fn topic_of(&self, group: &str) -> Option<String> {
        self.lock().get(group)?.topic()
    }

    /// Whether the broker knows `group` (it had members or offsets).
    pub fn exists(&self, group: &str) -> bool {
        self.lock().contains_key(group)
    }

    /// Sets an operator's offset for a queue and fences the queue (see the
    /// module doc).
    pub fn reset_offset(&self, group: &str, topic: &str, queue_id: u32, offset: u64) {
        let mut all = self.lock();
        let g = all.entry(group.to_string()).or_default();
        g.offsets.insert((topic.to_string(), queue_id), offset);
        g.fences.insert((topic.to_string(), queue_id), offset);
    }

    /// A member's commit: refused (`false`) while the queue is fenced by a
    /// reset its owner has not pulled past.
    pub fn commit_offset(&self, group: &str, topic: &str, queue_id: u32, offset: u64) -> bool {
        let mut all = self.lock();
        let g = all.entry(group.to_string()).or_default();
        let key = (topic.to_string(), queue_id);
        if g.fences.contains_key(&key) {
            return false;
        }
        g.offsets.insert(key, offset);
        true
    }

    /// Takes the fence of a queue: the offset its next pull is served from.
    pub fn take_fence(&self, group: &str, topic: &str, queue_id: u32) -> Option<u64> {
        self.lock()
            .get_mut(group)
            .and_then(|g| g.fences.remove(&(topic.to_string(), queue_id)))
    }

    /// Forgets a group: members, offsets, fences. Returns how many
    /// committed offsets it had, `None` when it was unknown.
    pub fn forget(&self, group: &str) -> Option<usize> {
        self.lock().remove(group).map(|g| g.offsets.len())
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
                    topic: g.topic(),
                    // Only members heard from within the client timeout
                    // (expired ones are pruned lazily at the next heartbeat).
                    members: g.live(now, self.client_timeout).into_iter().map(|m| m.id).collect(),
                    auto_commit: g.auto_commit_seen || g.members.values().any(|m| m.auto_commit),
                    dedupe: g.dedupe_seen.as_ref().map(|d| DedupeView {
                        backend: d.backend.clone(),
                        window_ms: d.window_ms,
                    }),
                    duplicates_suppressed: g.suppressed,
                    offsets,
                    live: g.live(now, self.client_timeout),
                }
            })
            .collect();
        out.sort_by(|a, b| a.group.cmp(&b.group));
        out
    }
}

/// Member `me`'s share of `queues` among `n` live members (sorted by id):
/// queue `i` of the sorted queues goes to member `i % n`.
pub fn share(queues: &[(String, u32)], n: usize, me: usize) -> Vec<(String, u32)> {
    let n = n.max(1);
    let mut sorted = queues.to_vec();
    sorted.sort();
    sorted
        .into_iter()
        .enumerate()
        .filter(|(i, _)| i % n == me)
        .map(|(_, q)| q)
        .collect()
}

/// Marker in the key of a group-delete record in `%OFFSETS%`.
const DELETED: &str = "%DELETED%";

/// Key of the `%OFFSETS%` record saying `group` was deleted (two parts,
/// so [`parse_offset_record`] never takes it for an offset).
pub fn delete_key(group: &str) -> String {
    format!("{group}\u{1}{DELETED}")
}

/// The group a group-delete record names; `None` for any other record.
pub fn parse_delete_record(key: &str) -> Option<&str> {
    match key.split_once('\u{1}') {
        Some((group, DELETED)) => Some(group),
        _ => None,
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
        g.heartbeat("g", "a", "h:1", "t", false, None, &queues);
        let a = g.heartbeat("g", "a", "h:1", "t", false, None, &queues);
        let b = g.heartbeat("g", "b", "h:2", "t", false, None, &queues);
        let a = if a.len() == 6 {
            g.heartbeat("g", "a", "h:1", "t", false, None, &queues)
        } else {
            a
        };
        assert_eq!(a.len() + b.len(), 6);
        assert!(a.iter().all(|q| !b.contains(q)));
        g.leave("g", "b");
        assert_eq!(g.heartbeat("g", "a", "h:1", "t", false, None, &queues).len(), 6);
    }

    #[test]
    fn a_group_whose_members_left_keeps_its_topic_and_inbox() {
        let g = Groups::new(Duration::from_secs(30));
        let dedupe = Dedupe {
            backend: "redis".into(),
            window_ms: 60_000,
        };
        g.heartbeat("g", "a", "h:1", "orders", false, Some(dedupe), &[]);
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
        let d = delete_key("g");
        assert_eq!(parse_offset_record(&d, b"deleted"), None);
        assert_eq!(parse_delete_record(&d), Some("g"));
        assert_eq!(parse_delete_record(&k), None);
    }

    #[test]
    fn a_reset_fences_commits_until_the_next_pull_takes_it() {
        let g = Groups::new(Duration::from_secs(30));
        assert!(g.commit_offset("g", "t", 0, 9));
        g.reset_offset("g", "t", 0, 3);
        assert!(!g.commit_offset("g", "t", 0, 10), "the old position is dropped");
        assert_eq!(g.offset("g", "t", 0), Some(3));
        assert_eq!(g.take_fence("g", "t", 0), Some(3));
        assert_eq!(g.take_fence("g", "t", 0), None);
        assert!(g.commit_offset("g", "t", 0, 4));
        assert_eq!(g.offset("g", "t", 0), Some(4));
        assert_eq!(g.forget("g"), Some(1));
        assert!(!g.exists("g"));
    }
}
