//! Retry levels and dead letters (RocketMQ's consumerSendMsgBack).
//!
//! A message the handler failed is re-appended to `%RETRY%<group>`, on the
//! queue of its delay level, with the absolute time it becomes due
//! (`DELAY_UNTIL_MS`). Within one level every message has the same delay, so
//! each level queue is ordered by due time and a pull can stop at the first
//! message not yet due. Being ordinary log records, pending retries survive
//! restarts and replicate. Past `max_reconsume_times` the message goes to
//! `%DLQ%<group>` instead, with the last failure as its reason.
//!
//! Levels: RocketMQ's 18 (`1s 5s 10s 30s 1m … 2h`), the first retry at level
//! 3, one level up per retry. With `--retry-delays` the list is the user's
//! and the first retry uses its first entry. The queue after the last level
//! holds replays of dead letters (due at once).

use std::collections::BTreeMap;
use std::time::Duration;

use crate::model::Stage;
use crate::storage::StoredMessage;
use waybill_client::protocol::{
    PROP_DELAY_LEVEL, PROP_DELAY_UNTIL, PROP_DLQ_REASON, PROP_ORIGIN_ID, PROP_ORIGIN_TOPIC, PROP_RECONSUME_TIMES,
};

/// RocketMQ's messageDelayLevel.
pub const ROCKETMQ_DELAYS: &str = "1s,5s,10s,30s,1m,2m,3m,4m,5m,6m,7m,8m,9m,10m,20m,30m,1h,2h";

pub use crate::model::topics::{dlq_topic, group_of, retry_topic};

/// Parses `10ms,50ms,1s,2m,1h` into durations.
pub fn parse_delays(s: &str) -> Result<Vec<Duration>, String> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (num, unit) = part
            .find(|c: char| !c.is_ascii_digit())
            .map(|i| part.split_at(i))
            .ok_or_else(|| format!("delay {part:?} needs a unit (ms, s, m, h)"))?;
        let n: u64 = num.parse().map_err(|_| format!("delay {part:?} is not a number"))?;
        let d = match unit {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n * 60),
            "h" => Duration::from_secs(n * 3600),
            _ => return Err(format!("delay {part:?}: unknown unit {unit:?}")),
        };
        out.push(d);
    }
    if out.is_empty() {
        return Err("at least one retry delay is needed".into());
    }
    Ok(out)
}

/// How failed messages are retried.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub delays: Vec<Duration>,
    /// 1-based level of the first retry (3 with RocketMQ's table).
    pub start_level: u32,
    /// RocketMQ's maxReconsumeTimes (default 16).
    pub max_reconsume_times: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            delays: parse_delays(ROCKETMQ_DELAYS).unwrap_or_default(),
            start_level: 3,
            max_reconsume_times: 16,
        }
    }
}

impl RetryPolicy {
    /// A user-given delay list: retries start at its first entry.
    pub fn with_delays(delays: Vec<Duration>, max_reconsume_times: u32) -> Self {
        RetryPolicy {
            delays,
            start_level: 1,
            max_reconsume_times,
        }
    }

    /// 1-based delay level for a message already reconsumed `times` times.
    pub fn level_for(&self, times: u32) -> u32 {
        (self.start_level + times).min(self.delays.len() as u32).max(1)
    }

    pub fn delay_of(&self, level: u32) -> Duration {
        self.delays
            .get(level.saturating_sub(1) as usize)
            .copied()
            .unwrap_or_default()
    }

    /// The whole retry schedule: the delays a message waits through from
    /// its first failure to the last retry before the dead-letter queue
    /// (one per reconsume, up to `max_reconsume_times`). An inbox that
    /// forgets keys sooner can see a retry of a message it already handled.
    pub fn schedule(&self) -> Duration {
        if self.delays.is_empty() {
            return Duration::ZERO;
        }
        let last = self.delays.len() as u32;
        let mut total = Duration::ZERO;
        for times in 0..self.max_reconsume_times {
            let level = self.level_for(times);
            if level == last {
                // Every retry from here waits the last level's delay.
                let rest = self.max_reconsume_times - times;
                return total.saturating_add(self.delay_of(level).saturating_mul(rest));
            }
            total = total.saturating_add(self.delay_of(level));
        }
        total
    }

    /// Queues of a retry topic: one per level, then the replay queue.
    pub fn retry_queues(&self) -> u32 {
        self.delays.len() as u32 + 1
    }

    pub fn replay_queue(&self) -> u32 {
        self.delays.len() as u32
    }
}

/// Longest failure reason kept on a retry or dead-letter record (bytes):
/// the SDK sends at most `waybill_client::MAX_REASON` of the handler's own
/// text plus what it adds (timing, the RECONSUME_LATER prefix).
const MAX_REASON_KEPT: usize = 2048;

/// The identity a message keeps across retries.
pub struct Origin {
    pub id: String,
    pub topic: String,
    pub reconsume_times: u32,
}

/// Reads the origin of a delivered record (itself, for a first delivery).
pub fn origin_of(record_id: &str, m: &StoredMessage) -> Origin {
    Origin {
        id: m
            .properties
            .get(PROP_ORIGIN_ID)
            .cloned()
            .unwrap_or_else(|| record_id.to_string()),
        topic: m
            .properties
            .get(PROP_ORIGIN_TOPIC)
            .cloned()
            .unwrap_or_else(|| m.topic.clone()),
        reconsume_times: m
            .properties
            .get(PROP_RECONSUME_TIMES)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
    }
}

/// Properties of the retry record for a message failed `times` times so
/// far (this failure included), due at `due_ms`.
pub fn retry_properties(
    base: &BTreeMap<String, String>,
    origin: &Origin,
    times: u32,
    level: u32,
    due_ms: i64,
) -> BTreeMap<String, String> {
    let mut p = base.clone();
    p.insert(PROP_ORIGIN_ID.into(), origin.id.clone());
    p.insert(PROP_ORIGIN_TOPIC.into(), origin.topic.clone());
    p.insert(PROP_RECONSUME_TIMES.into(), times.to_string());
    p.insert(PROP_DELAY_LEVEL.into(), level.to_string());
    p.insert(PROP_DELAY_UNTIL.into(), due_ms.to_string());
    p
}

/// Properties of the dead-letter record.
pub fn dlq_properties(base: &BTreeMap<String, String>, origin: &Origin, reason: &str) -> BTreeMap<String, String> {
    let mut p = base.clone();
    p.insert(PROP_ORIGIN_ID.into(), origin.id.clone());
    p.insert(PROP_ORIGIN_TOPIC.into(), origin.topic.clone());
    p.insert(PROP_RECONSUME_TIMES.into(), origin.reconsume_times.to_string());
    p.insert(PROP_DLQ_REASON.into(), reason.to_string());
    p.remove(PROP_DELAY_UNTIL);
    p.remove(PROP_DELAY_LEVEL);
    p
}

/// When a retry record becomes due (`None`: not a retry record, due now).
pub fn due_ms(m: &StoredMessage) -> Option<i64> {
    m.properties.get(PROP_DELAY_UNTIL).and_then(|v| v.parse().ok())
}

impl super::Broker {
    /// RocketMQ's consumerSendMsgBack: the group failed the delivered record
    /// `record_id`; schedule its next retry or dead-letter it. Returns the
    /// new record's id once it is durable.
    pub async fn send_back(&self, group: &str, record_id: &str, reason: &str) -> Result<String, super::BrokerError> {
        use super::{BrokerError, MessageId, Outgoing};
        super::topic::validate_group(group)?;
        // A reason comes from the client: kept bounded (its end, where an
        // error says what went wrong last) on every record that carries it.
        let reason = &waybill_client::consumer::tail(reason, MAX_REASON_KEPT);
        let id: MessageId = record_id.parse()?;
        let m = self
            .get(&id)?
            .ok_or_else(|| BrokerError::NotFound(format!("no record {record_id} to send back")))?;
        let origin = origin_of(record_id, &m);
        let policy = &self.opts.retry;
        let failed = super::event::RecordRef {
            id: record_id.to_string(),
            topic: m.topic.clone(),
            queue_id: m.queue_id,
            queue_offset: m.queue_offset,
        };
        let attempt = origin.reconsume_times + 1;
        self.events
            .failed(group, &m.topic, m.queue_id, m.queue_offset, reason, super::now_ms());
        let (topic, queue, properties, stage, detail) = if origin.reconsume_times >= policy.max_reconsume_times {
            tracing::info!(group, id = %origin.id, times = origin.reconsume_times, "dead-lettered");
            self.events.dead_lettered(group, super::now_ms());
            let detail = format!(
                "attempt {attempt} failed ({reason}); retries exhausted (max_reconsume_times {}): dead-lettered",
                policy.max_reconsume_times
            );
            (
                dlq_topic(group),
                0,
                dlq_properties(&m.properties, &origin, reason),
                Stage::Dlq,
                detail,
            )
        } else {
            let level = policy.level_for(origin.reconsume_times);
            let delay = policy.delay_of(level);
            // Rounded up to the next millisecond: due times are whole ms,
            // and flooring would let a retry come up to 1 ms early.
            let due = self.opts.clock.now_ceil_ms() + delay.as_millis() as i64;
            let mut props = retry_properties(&m.properties, &origin, origin.reconsume_times + 1, level, due);
            props.insert(waybill_client::protocol::PROP_RETRY_REASON.into(), reason.to_string());
            let detail = format!("attempt {attempt} failed ({reason}); retry at level {level} in {delay:?}");
            (retry_topic(group), level - 1, props, Stage::Retry, detail)
        };
        let origin_id = origin.id.clone();
        let r = self
            .append_durable(&topic, queue, Outgoing::copy_of(m, &topic, properties))
            .await?;
        self.trace(|| {
            super::event::TraceEvent::Message(Box::new(super::event::MessageEvent {
                message_id: origin_id,
                stage,
                at_ms: super::now_ms(),
                group: Some(group.to_string()),
                outcome: if stage == Stage::Dlq { "dead" } else { "failed" },
                detail: format!("{detail}; new record {}", r.id),
                record: Some(failed),
                attempt: Some(attempt),
            }))
        });
        Ok(r.id.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rocketmq_levels_start_at_three_and_cap_at_the_last() {
        let p = RetryPolicy::default();
        assert_eq!(p.delays.len(), 18);
        assert_eq!(p.level_for(0), 3);
        assert_eq!(p.delay_of(3), Duration::from_secs(10));
        assert_eq!(p.level_for(100), 18);
        // 10s 30s 1m … 10m 20m 30m 1h 2h: 16 retries span 4h 45m 40s.
        assert_eq!(p.schedule(), Duration::from_secs(4 * 3600 + 45 * 60 + 40));
        let capped = RetryPolicy {
            max_reconsume_times: u32::MAX,
            ..RetryPolicy::default()
        };
        assert!(capped.schedule() > Duration::from_secs(3600 * 24 * 365));
        assert_eq!(p.delay_of(18), Duration::from_secs(7200));
    }

    #[test]
    fn custom_delays_start_at_their_first_entry() -> Result<(), String> {
        let p = RetryPolicy::with_delays(parse_delays("10ms, 50ms,1s")?, 3);
        assert_eq!(p.level_for(0), 1);
        assert_eq!(p.delay_of(p.level_for(1)), Duration::from_millis(50));
        assert_eq!(p.level_for(9), 3);
        assert_eq!(p.schedule(), Duration::from_millis(10 + 50 + 1000));
        assert_eq!(RetryPolicy::with_delays(Vec::new(), 16).schedule(), Duration::ZERO);
        assert!(parse_delays("5x").is_err());
        assert!(parse_delays("").is_err());
        Ok(())
    }
}
