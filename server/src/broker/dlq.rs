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

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use waybill_client::protocol::{
    PROP_DLQ_REASON, PROP_ORIGIN_ID, PROP_ORIGIN_TOPIC, PROP_RECONSUME_TIMES, PROP_REPLAY_OF,
};

use super::retry::{dlq_topic, group_of, retry_topic};
use super::{now_ms, Broker, BrokerError, MessageId, Outgoing};

pub use crate::model::topics::REPLAYS_TOPIC;

/// One replay, as recorded.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReplayRecord {
    pub dlq_id: String,
    pub new_id: String,
    pub group: String,
    pub by: String,
    pub at_ms: i64,
}

/// Replays by dead-letter id, restored from `%REPLAYS%` on start.
#[derive(Default)]
pub struct Replays {
    // std Mutex: map updates only.
    by_dlq_id: Mutex<HashMap<String, Vec<ReplayRecord>>>,
}

impl Replays {
    /// Loads one `%REPLAYS%` record body; false if it is not one.
    pub fn load(&self, body: &[u8]) -> bool {
        match serde_json::from_slice::<ReplayRecord>(body) {
            Ok(r) => {
                self.add(r);
                true
            }
            Err(_) => false,
        }
    }

    fn add(&self, r: ReplayRecord) {
        self.by_dlq_id
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(r.dlq_id.clone())
            .or_default()
            .push(r);
    }

    fn of(&self, dlq_id: &str) -> Vec<ReplayRecord> {
        self.by_dlq_id
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(dlq_id)
            .cloned()
            .unwrap_or_default()
    }
}

/// A dead letter as the API and CLI show it.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    /// Id of the dead-letter record (what replay takes).
    pub id: String,
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
    /// `dead`, `replayed` or `quarantined`.
    pub state: &'static str,
    pub replays: Vec<ReplayRecord>,
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
            .map(|(_, pos, m)| {
                let id = MessageId {
                    node: m.node,
                    epoch: m.epoch,
                    pos,
                }
                .to_string();
                let origin_id = m.properties.get(PROP_ORIGIN_ID).cloned().unwrap_or_else(|| id.clone());
                let back = returns.get(&origin_id).copied().unwrap_or(1);
                let replays = self.consumers.replays.of(&id);
                let state = if !replays.is_empty() {
                    "replayed"
                } else if back > self.opts.replay_guard {
                    "quarantined"
                } else {
                    "dead"
                };
                DeadLetter {
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
                    id,
                }
            })
            .collect())
    }

    /// Replays one dead letter to its group. `force` overrides quarantine.
    pub async fn replay(&self, dlq_id: &str, by: &str, force: bool) -> Result<ReplayRecord, BrokerError> {
        let id: MessageId = dlq_id.parse()?;
        let m = self
            .get(&id)?
            .ok_or_else(|| BrokerError::NotFound(format!("no dead letter {dlq_id}")))?;
        let group = match group_of(&m.topic) {
            Some(g) if m.topic.starts_with("%DLQ%") => g.to_string(),
            _ => return Err(BrokerError::Invalid(format!("{dlq_id} is not a dead letter"))),
        };
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
        let mut properties = m.properties.clone();
        properties.remove(PROP_DLQ_REASON);
        properties.insert(PROP_RECONSUME_TIMES.into(), "0".into());
        properties.insert(PROP_REPLAY_OF.into(), dlq_id.to_string());
        // Due at once, on the clock pulls compare due times with.
        let due = self.opts.clock.now_ms();
        properties.insert(waybill_client::protocol::PROP_DELAY_UNTIL.into(), due.to_string());
        let topic = retry_topic(&group);
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
            at_ms: now_ms(),
        };
        let body = serde_json::to_vec(&record).map_err(|e| BrokerError::Invalid(e.to_string()))?;
        self.append_durable(
            REPLAYS_TOPIC,
            0,
            Outgoing {
                key: Some(dlq_id.to_string()),
                body,
                ..Outgoing::default()
            },
        )
        .await?;
        self.consumers.replays.add(record.clone());
        self.trace(|| {
            super::event::TraceEvent::Message(Box::new(super::event::MessageEvent {
                message_id: origin_id,
                stage: crate::model::Stage::Replay,
                at_ms: record.at_ms,
                group: Some(record.group.clone()),
                outcome: "ok",
                detail: format!(
                    "replayed from dead letter {} as {} by {}",
                    record.dlq_id, record.new_id, record.by
                ),
                record: None,
                attempt: None,
            }))
        });
        tracing::info!(dlq_id, new_id = %record.new_id, by, "dead letter replayed");
        Ok(record)
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
            done.push(self.replay(&d.id, by, false).await?);
            if let Some(p) = pause {
                tokio::time::sleep(p).await;
            }
        }
        Ok((chosen, done))
    }
}
