//! Operator actions on a consumer group's position: reset its committed
//! offsets (to a time, to the end, to an offset; one queue or all of a
//! topic's), skip one message, delete an idle group.
//!
//! Invariants:
//! - Each is refused ([`BrokerError::Conflict`], HTTP 409, the sentence
//!   names the live members) while the group has live members, unless
//!   `force`. A dry run answers exactly as the action would and changes
//!   nothing (and is not audited).
//! - New offsets are clamped to the queue: `[0, end]` (queues keep every
//!   offset from 0); an offset past the end is refused (400), a time
//!   before the first message gives 0 and one after the last the end.
//! - Durable like member commits, but waited for: each moved queue is a
//!   `%OFFSETS%` record, a delete is a group-delete record
//!   ([`groups::delete_key`]) that replaying forgets the group at; the
//!   action answers only after its records are durable (Raft: committed),
//!   and then records itself with [`Broker::audit`].
//! - Live members forced past: the new offset is set in memory *with a
//!   fence* before the record is appended (`groups.rs`). Until the queue's
//!   owner pulls again, its commits (of its old position) are dropped, and
//!   that pull is served from the reset offset whatever it asked; the
//!   member then commits from there. The SDK needs no change. Left open: a
//!   member whose queue task stops in the instant between that pull and its
//!   answer commits its old position once (the task's final commit).
//! - A forced delete forgets the group while members run: they rejoin at
//!   their next heartbeat and their next commits create offsets again
//!   (from their own positions). Deleting is meant for idle groups.

use std::collections::BTreeSet;

use super::groups::{self, MemberView};
use super::{topic, Broker, BrokerError, Outgoing};

/// Where a reset moves a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetTo {
    /// The first message stored at or after this time (epoch ms).
    Time(i64),
    /// Past the last message: nothing is redelivered.
    End,
    /// This queue offset.
    Offset(u64),
}

/// A reset as asked.
#[derive(Debug, Clone)]
pub struct Reset {
    pub group: String,
    pub topic: String,
    pub to: ResetTo,
    /// One queue of the topic; all of them when `None`.
    pub queue: Option<u32>,
    pub force: bool,
    pub dry_run: bool,
}

/// One queue's move: committed offset before and after.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Move {
    pub queue: u32,
    pub from: u64,
    pub to: u64,
}

impl Broker {
    /// Queue ids of a user topic with data: its queue count (an operator's
    /// or the node's default), plus any other queue the store holds for it.
    /// Empty when the store has no queue of that topic.
    pub fn stored_queue_ids(&self, topic: &str) -> BTreeSet<u32> {
        let stored: BTreeSet<u32> = self
            .store()
            .queues()
            .into_iter()
            .filter(|(t, _, _)| t == topic)
            .map(|(_, q, _)| q)
            .collect();
        if stored.is_empty() {
            return stored;
        }
        (0..self.topic_queues(topic)).chain(stored).collect()
    }

    /// The group must exist and, unless `force`, have no live member.
    /// Returns the live members (forced past) for the audit.
    fn check_idle(&self, group: &str, force: bool) -> Result<Vec<MemberView>, BrokerError> {
        topic::validate_group(group)?;
        let groups = self.groups();
        if !groups.exists(group) {
            return Err(BrokerError::NotFound(format!(
                "no consumer group {group:?} on this broker"
            )));
        }
        let live = groups.live_members(group);
        if !live.is_empty() && !force {
            let names: Vec<String> = live.iter().map(|m| format!("{} ({})", m.id, m.host)).collect();
            return Err(BrokerError::Conflict(format!(
                "group {group:?} has {} live member(s): {}; stop them first, or force (they then continue from \
                 the new position)",
                live.len(),
                names.join(", ")
            )));
        }
        Ok(live)
    }

    /// The topic must be a known user topic; `queue`, when given, one of
    /// its queues. Returns the queues acted on.
    fn queues_of(&self, topic_name: &str, queue: Option<u32>) -> Result<Vec<u32>, BrokerError> {
        topic::validate(topic_name)?;
        let all = self.stored_queue_ids(topic_name);
        if all.is_empty() {
            return Err(BrokerError::NotFound(format!("no topic {topic_name:?} on this broker")));
        }
        match queue {
            None => Ok(all.into_iter().collect()),
            Some(q) if all.contains(&q) => Ok(vec![q]),
            Some(q) => Err(BrokerError::Invalid(format!(
                "topic {topic_name:?} has no queue {q} (its queues are 0 to {})",
                all.last().copied().unwrap_or(0)
            ))),
        }
    }

    /// Resets a group's committed offsets (see the module doc); returns
    /// each queue's move.
    pub async fn reset_offsets(&self, by: &str, r: &Reset) -> Result<Vec<Move>, BrokerError> {
        let live = self.check_idle(&r.group, r.force)?;
        let queues = self.queues_of(&r.topic, r.queue)?;
        let mut moves = Vec::with_capacity(queues.len());
        for q in queues {
            let end = self.store().queue_len(&r.topic, q);
            let to = match r.to {
                ResetTo::End => end,
                ResetTo::Time(at_ms) => self.store().offset_at_time(&r.topic, q, at_ms)?,
                ResetTo::Offset(o) if o <= end => o,
                ResetTo::Offset(o) => {
                    return Err(BrokerError::Invalid(format!(
                        "offset {o} is past the end of queue {q} of topic {:?} (offsets 0 to {end})",
                        r.topic
                    )))
                }
            };
            let from = self.groups().offset(&r.group, &r.topic, q).unwrap_or(0);
            moves.push(Move { queue: q, from, to });
        }
        if r.dry_run {
            return Ok(moves);
        }
        for m in &moves {
            self.put_offset(&r.group, &r.topic, m.queue, m.to).await?;
        }
        let target = match r.to {
            ResetTo::End => "the end".to_string(),
            ResetTo::Time(ms) => format!("time {} ({ms} ms)", crate::time::rfc3339(ms)),
            ResetTo::Offset(o) => format!("offset {o}"),
        };
        let moved: Vec<String> = moves
            .iter()
            .map(|m| format!("queue {} {}→{}", m.queue, m.from, m.to))
            .collect();
        let detail = format!(
            "reset topic {} to {target}: {}{}",
            r.topic,
            moved.join(", "),
            forced(&live)
        );
        self.audit(by, "group.reset", &r.group, detail).await?;
        Ok(moves)
    }

    /// Skips one message: the group's next message on the queue, at
    /// `offset`, is committed past without being delivered.
    pub async fn skip_message(
        &self,
        by: &str,
        group: &str,
        topic_name: &str,
        queue: u32,
        offset: u64,
        force: bool,
    ) -> Result<Move, BrokerError> {
        let live = self.check_idle(group, force)?;
        self.queues_of(topic_name, Some(queue))?;
        let end = self.store().queue_len(topic_name, queue);
        let from = self.groups().offset(group, topic_name, queue).unwrap_or(0);
        if offset >= end {
            return Err(BrokerError::Invalid(format!(
                "queue {queue} of topic {topic_name:?} has no message at offset {offset} (its end is {end})"
            )));
        }
        if offset != from {
            return Err(BrokerError::Invalid(format!(
                "group {group:?} is at offset {from} of queue {queue} of topic {topic_name:?}: only its next \
                 message (offset {from}) can be skipped; reset the offsets to move further"
            )));
        }
        let to = offset + 1;
        self.put_offset(group, topic_name, queue, to).await?;
        let detail = format!(
            "skipped the message at offset {offset} of topic {topic_name} queue {queue}{}",
            forced(&live)
        );
        self.audit(by, "group.skip", group, detail).await?;
        Ok(Move { queue, from, to })
    }

    /// Deletes a group: its members, committed offsets and fences are
    /// forgotten, durably. Returns how many offsets it had.
    pub async fn delete_group(&self, by: &str, group: &str, force: bool) -> Result<usize, BrokerError> {
        let live = self.check_idle(group, force)?;
        let offsets = self.groups().forget(group).unwrap_or(0);
        let record = Outgoing {
            key: Some(groups::delete_key(group)),
            body: b"deleted".to_vec(),
            ..Outgoing::default()
        };
        self.append_durable(groups::OFFSETS_TOPIC, 0, record).await?;
        let detail = format!(
            "deleted the group and its {offsets} committed offset(s){}",
            forced(&live)
        );
        self.audit(by, "group.delete", group, detail).await?;
        Ok(offsets)
    }

    /// Sets an operator's offset: in memory with a fence first (so a live
    /// member's commit of its old position cannot come after it), then
    /// durably; long polls are woken so a waiting pull takes the fence.
    async fn put_offset(&self, group: &str, topic_name: &str, queue: u32, offset: u64) -> Result<(), BrokerError> {
        self.groups().reset_offset(group, topic_name, queue, offset);
        self.consumers.appended.notify_waiters();
        let record = Outgoing {
            key: Some(groups::offset_key(group, topic_name, queue)),
            body: offset.to_string().into_bytes(),
            ..Outgoing::default()
        };
        self.append_durable(groups::OFFSETS_TOPIC, 0, record).await?;
        Ok(())
    }
}

/// The audit's note on live members an action was forced past.
fn forced(live: &[MemberView]) -> String {
    if live.is_empty() {
        return String::new();
    }
    let ids: Vec<&str> = live.iter().map(|m| m.id.as_str()).collect();
    format!(" (forced past live members {})", ids.join(", "))
}
