//! Dead letters: list them, replay them, and never loop.
//!
//! A replay re-produces a dead letter for its group only: it is appended to
//! the group's replay queue (`%RETRY%<group>`, after the level queues), due
//! at once, with `REPLAY_OF` naming the dead letter and the original id
//! kept. It needs no live consumer; the group picks it up when it runs.
//! Each replay is recorded durably in `%REPLAYS%` (which dead letter, the
//! new record, who, when), so the DLQ view knows what was replayed after a
//! restart. A message that came back to the DLQ more than `replay_guard`
//! times is *quarantined*: bulk replays skip it and a single replay needs
//! `force`, so a poison message cannot cycle forever.

use std::collections::{BTreeMap, HashMap, HashSet};

use std::time::Duration;

use serde::Serialize;
use waybill_client::protocol::{
    PROP_DLQ_REASON, PROP_ORIGIN_ID, PROP_ORIGIN_TOPIC, PROP_RECONSUME_TIMES, PROP_REPLAY_BY, PROP_REPLAY_EDITED,
    PROP_REPLAY_FORCED, PROP_REPLAY_JOB, PROP_REPLAY_OF,
};

use super::retry::{dlq_topic, group_of, retry_topic};
use super::{now_ms, Broker, BrokerError, MessageId, Outgoing};

pub use crate::model::topics::REPLAYS_TOPIC;

pub use super::replays::{Claim, Refusal, ReplayRecord, Replays};

/// Whether the copy `copy_id` lies below `consumed_below` (see
/// [`Broker::replays_consumed_below`]).
pub(super) fn copy_consumed(copy_id: &str, consumed_below: u64) -> bool {
    copy_id.parse::<MessageId>().is_ok_and(|c| c.pos < consumed_below)
}

/// A dead letter as the API and CLI show it.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    /// Id of the dead-letter record (what replay takes).
    pub id: String,
    /// Its offset in the group's DLQ: the order letters are listed in, and
    /// what a page cursor counts.
    pub dlq_offset: u64,
    /// The message's original id.
    pub origin_id: String,
    pub group: String,
    pub topic: String,
    pub key: Option<String>,
    pub tags: Option<String>,
    pub body: String,
    pub reason: String,
    pub reconsume_times: u32,
    pub dead_at_ms: i64,
    /// How many times this message reached the group's DLQ.
    pub returns: u32,
    /// `dead`, `replayed`, `quarantined` or `discarded`.
    pub state: &'static str,
    pub replays: Vec<ReplayRecord>,
    /// The dead letter this one's message was replayed from, when it came
    /// back to the DLQ after a replay.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replay_of: Option<String>,
}

/// Which dead letters a bulk replay takes.
#[derive(Debug, Clone, Default)]
pub struct ReplayFilter {
    pub key: Option<String>,
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
}

impl Broker {
    /// The group's dead letters, oldest first.
    pub fn dead_letters(&self, group: &str) -> Result<Vec<DeadLetter>, BrokerError> {
        super::topic::validate_group(group)?;
        let topic = dlq_topic(group);
        let mut raw = Vec::new();
        self.store
            .scan_queue(&topic, 0, |offset, pos, m| raw.push((offset, pos, m)))?;
        let mut returns: BTreeMap<String, u32> = BTreeMap::new();
        for (_, _, m) in &raw {
            if let Some(o) = m.properties.get(PROP_ORIGIN_ID) {
                *returns.entry(o.clone()).or_default() += 1;
            }
        }
        Ok(raw
            .into_iter()
            .map(|(dlq_offset, pos, m)| {
                let id = MessageId {
                    node: m.node,
                    epoch: m.epoch,
                    pos,
                }
                .to_string();
                let origin_id = m.properties.get(PROP_ORIGIN_ID).cloned().unwrap_or_else(|| id.clone());
                let back = returns.get(&origin_id).copied().unwrap_or(1);
                let replays = self.consumers.replays.of(&id);
                let state = if self.consumers.replays.discarded(&id).is_some() {
                    "discarded"
                } else if !replays.is_empty() {
                    "replayed"
                } else if back > self.opts.replay_guard {
                    "quarantined"
                } else {
                    "dead"
                };
                DeadLetter {
                    dlq_offset,
                    origin_id,
                    group: group.to_string(),
                    topic: m.properties.get(PROP_ORIGIN_TOPIC).cloned().unwrap_or_default(),
                    key: m.key.clone(),
                    tags: m.tags.clone(),
                    body: String::from_utf8_lossy(&m.body).into_owned(),
                    reason: m.properties.get(PROP_DLQ_REASON).cloned().unwrap_or_default(),
                    reconsume_times: m
                        .properties
                        .get(PROP_RECONSUME_TIMES)
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0),
                    dead_at_ms: m.stored_ms,
                    returns: back,
                    state,
                    replays,
                    replay_of: m.properties.get(PROP_REPLAY_OF).cloned(),
                    id,
                }
            })
            .collect())
    }

    /// Replays one dead letter to its group, at most once: a letter that
    /// was replayed (or is being replayed by another request) is refused
    /// with a conflict naming the earlier replay. `force` overrides that
    /// and quarantine, and is recorded on the replay.
    pub async fn replay(&self, dlq_id: &str, by: &str, force: bool) -> Result<ReplayRecord, BrokerError> {
        self.replay_as(dlq_id, by, force, None, None).await
    }

    /// [`Broker::replay`] of a copy changed by `edit` (the letter stays
    /// as it is).
    pub async fn replay_edited(
        &self,
        dlq_id: &str,
        by: &str,
        force: bool,
        edit: &super::edit::Edit,
    ) -> Result<ReplayRecord, BrokerError> {
        self.replay_as(dlq_id, by, force, None, Some(edit)).await
    }

    /// [`Broker::replay`] on behalf of redrive job `job`, if any (recorded
    /// on the copy and the replay record).
    pub(super) async fn replay_as(
        &self,
        dlq_id: &str,
        by: &str,
        force: bool,
        job: Option<&str>,
        edit: Option<&super::edit::Edit>,
    ) -> Result<ReplayRecord, BrokerError> {
        if let Some(e) = edit {
            e.validate()?;
        }
        let (mut m, group) = self.dead_letter(dlq_id)?;
        // Claimed before anything is read or written: from here to the
        // recorded replay, no other request can replay this letter.
        let claim = self.consumers.replays.claim(dlq_id, force).map_err(|r| match r {
            Refusal::InProgress => {
                BrokerError::Conflict(format!("dead letter {dlq_id} is being replayed by another request"))
            }
            Refusal::Discarded(d) => BrokerError::Conflict(format!(
                "dead letter {dlq_id} was discarded at {} by {} ({}); a discarded letter is not replayed",
                crate::time::rfc3339(d.at_ms),
                d.by,
                d.reason
            )),
            Refusal::Replayed(earlier) => {
                let last = earlier.last();
                BrokerError::Conflict(format!(
                    "dead letter {dlq_id} was already replayed{}; replay with force=true to replay it again",
                    last.map_or(String::new(), |r| format!(
                        " as {} at {} by {}",
                        r.new_id,
                        crate::time::rfc3339(r.at_ms),
                        if r.by.is_empty() { "an unknown caller" } else { &r.by }
                    ))
                ))
            }
        })?;
        let entry = self
            .dead_letters(&group)?
            .into_iter()
            .find(|d| d.id == dlq_id)
            .ok_or_else(|| BrokerError::NotFound(format!("no dead letter {dlq_id}")))?;
        if entry.state == "quarantined" && !force {
            return Err(BrokerError::Conflict(format!(
                "dead letter {dlq_id} is quarantined: its message reached the DLQ {} times (guard {}); replay with force to override",
                entry.returns, self.opts.replay_guard
            )));
        }
        let forced = force && entry.state != "dead";
        let mut properties = m.properties.clone();
        // The edit first: the broker's own properties below win.
        let edited = edit.map(|e| e.changes()).unwrap_or_default();
        if let Some(e) = edit {
            e.apply(&mut m.key, &mut m.body, &mut properties);
        }
        if edited.is_empty() {
            properties.remove(PROP_REPLAY_EDITED);
        } else {
            properties.insert(PROP_REPLAY_EDITED.into(), edited.join(","));
        }
        properties.remove(PROP_DLQ_REASON);
        properties.insert(PROP_RECONSUME_TIMES.into(), "0".into());
        // The copy records its own replay: found at restart even if the
        // %REPLAYS% record below never makes it to the log.
        properties.insert(PROP_REPLAY_OF.into(), dlq_id.to_string());
        properties.insert(PROP_REPLAY_BY.into(), by.to_string());
        if forced {
            properties.insert(PROP_REPLAY_FORCED.into(), "true".into());
        } else {
            properties.remove(PROP_REPLAY_FORCED);
        }
        match job {
            Some(j) => properties.insert(PROP_REPLAY_JOB.into(), j.to_string()),
            None => properties.remove(PROP_REPLAY_JOB),
        };
        // Due at once, on the clock pulls compare due times with.
        let due = self.opts.clock.now_ms();
        properties.insert(waybill_client::protocol::PROP_DELAY_UNTIL.into(), due.to_string());
        let topic = retry_topic(&group);
        // The replay's time is when it was decided, before the copy exists:
        // a consumer may pull the copy before the `%REPLAYS%` record is
        // written, and its delivery must not read as earlier than the replay.
        let replayed_at = now_ms();
        let origin_id = m
            .properties
            .get(PROP_ORIGIN_ID)
            .cloned()
            .unwrap_or_else(|| dlq_id.to_string());
        let r = self
            .append_durable(
                &topic,
                self.opts.retry.replay_queue(),
                Outgoing::copy_of(m, &topic, properties),
            )
            .await?;
        let record = ReplayRecord {
            dlq_id: dlq_id.to_string(),
            new_id: r.id.to_string(),
            group,
            by: by.to_string(),
            at_ms: replayed_at,
            forced,
            job: job.map(str::to_string),
            edited,
        };
        self.record_json(REPLAYS_TOPIC, dlq_id, &record).await?;
        claim.done(record.clone());
        self.trace(|| {
            super::event::TraceEvent::Message(Box::new(super::event::MessageEvent {
                message_id: origin_id,
                stage: crate::model::Stage::Replay,
                at_ms: record.at_ms,
                group: Some(record.group.clone()),
                outcome: "ok",
                detail: format!(
                    "replayed from dead letter {} as {} by {}{}{}",
                    record.dlq_id,
                    record.new_id,
                    record.by,
                    if record.forced { " (forced)" } else { "" },
                    if record.edited.is_empty() {
                        String::new()
                    } else {
                        format!("; {} edited {} first", record.by, record.edited.join(", "))
                    }
                ),
                record: None,
                attempt: None,
            }))
        });
        tracing::info!(dlq_id, new_id = %record.new_id, by, "dead letter replayed");
        Ok(record)
    }

    /// What became of replayed letters' copies, by letter id: `consumed`
    /// (the group committed past the copy), `dead_again` (it came back to
    /// the DLQ) or `pending`. `letters` is the group's whole DLQ.
    pub fn replay_outcomes(&self, group: &str, letters: &[DeadLetter]) -> HashMap<String, &'static str> {
        let again: HashSet<&str> = letters.iter().filter_map(|d| d.replay_of.as_deref()).collect();
        let consumed_below = self.replays_consumed_below(group);
        letters
            .iter()
            .filter_map(|d| d.replays.last().map(|r| (d, r)))
            .map(|(d, r)| {
                let outcome = if again.contains(d.id.as_str()) {
                    "dead_again"
                } else if copy_consumed(&r.new_id, consumed_below) {
                    "consumed"
                } else {
                    "pending"
                };
                (d.id.clone(), outcome)
            })
            .collect()
    }

    /// The log position below which `group` has consumed its replayed
    /// copies. The replay queue is in log order, so a copy is consumed
    /// iff it lies before the entry at the group's committed offset: one
    /// index read per view, not one record read per copy. Unknown (an
    /// index read failing) counts nothing as consumed.
    pub(super) fn replays_consumed_below(&self, group: &str) -> u64 {
        let (topic, queue) = (retry_topic(group), self.opts.retry.replay_queue());
        let committed = self.consumers.groups.offset(group, &topic, queue).unwrap_or(0);
        if committed >= self.store.queue_len(&topic, queue) {
            return u64::MAX;
        }
        match self.store.queue_entry(&topic, queue, committed) {
            Ok(Some(e)) => e.pos,
            _ => 0,
        }
    }

    /// The dead-letter record `dlq_id` and its group; not found, or not a
    /// dead letter, is an error.
    pub(super) fn dead_letter(&self, dlq_id: &str) -> Result<(crate::storage::StoredMessage, String), BrokerError> {
        let id: MessageId = dlq_id.parse()?;
        let m = self
            .get(&id)?
            .ok_or_else(|| BrokerError::NotFound(format!("no dead letter {dlq_id}")))?;
        match group_of(&m.topic) {
            Some(g) if m.topic.starts_with("%DLQ%") => {
                let g = g.to_string();
                Ok((m, g))
            }
            // A message, but not a dead letter: there is no such letter.
            _ => Err(BrokerError::NotFound(format!(
                "no dead letter {dlq_id} (it is a message of {})",
                m.topic
            ))),
        }
    }

    /// Appends `value` as JSON to system topic `topic` (queue 0, keyed by
    /// `key`) and waits until it is durable.
    pub(super) async fn record_json(&self, topic: &str, key: &str, value: &impl Serialize) -> Result<(), BrokerError> {
        let body = serde_json::to_vec(value).map_err(|e| BrokerError::Invalid(e.to_string()))?;
        self.append_durable(
            topic,
            0,
            Outgoing {
                key: Some(key.to_string()),
                body,
                ..Outgoing::default()
            },
        )
        .await?;
        Ok(())
    }

    /// Replays every `dead` (not replayed, not quarantined) letter of the
    /// group matching `filter`, at most `rate` per second. With `dry_run`
    /// nothing changes and the letters that would be replayed are returned.
    pub async fn replay_all(
        &self,
        group: &str,
        filter: &ReplayFilter,
        by: &str,
        dry_run: bool,
        rate: Option<u32>,
    ) -> Result<(Vec<DeadLetter>, Vec<ReplayRecord>), BrokerError> {
        let chosen: Vec<DeadLetter> = self
            .dead_letters(group)?
            .into_iter()
            .filter(|d| d.state == "dead")
            .filter(|d| {
                filter
                    .key
                    .as_ref()
                    .is_none_or(|k| d.key.as_ref().is_some_and(|dk| dk.split(' ').any(|w| w == k)))
            })
            .filter(|d| filter.from_ms.is_none_or(|f| d.dead_at_ms >= f))
            .filter(|d| filter.to_ms.is_none_or(|t| d.dead_at_ms <= t))
            .collect();
        if dry_run {
            return Ok((chosen, Vec::new()));
        }
        let pause = rate
            .filter(|r| *r > 0)
            .map(|r| Duration::from_secs_f64(1.0 / f64::from(r)));
        let mut done = Vec::new();
        for d in &chosen {
            match self.replay(&d.id, by, false).await {
                Ok(r) => done.push(r),
                // Replayed meanwhile (another bulk or single replay): it
                // was replayed once, by that one; not again here.
                Err(BrokerError::Conflict(why)) => {
                    tracing::info!(dlq_id = %d.id, %why, "skipped by a bulk replay");
                    continue;
                }
                Err(e) => return Err(e),
            }
            if let Some(p) = pause {
                tokio::time::sleep(p).await;
            }
        }
        Ok((chosen, done))
    }
}
