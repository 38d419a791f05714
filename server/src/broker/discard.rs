//! Discarding a dead letter: the operator decides it must not be
//! replayed (a poison message, a duplicate already fixed by hand). The
//! letter stays in the DLQ as evidence, marked `discarded` with who, why
//! and when; the decision is durable (`%DLQ_DISCARDS%`, read back at
//! restart), shown on the message's timeline, and final: a discarded
//! letter is never replayed, not even with `force`.
//!
//! A discard takes the same claim a replay does, so a letter is either
//! replayed or discarded, never both, however the requests interleave.

use serde::{Deserialize, Serialize};
use waybill_client::protocol::PROP_ORIGIN_ID;

use super::dlq::Refusal;
use super::event::{MessageEvent, TraceEvent};
use super::{Broker, BrokerError};
use crate::model::topics::DLQ_DISCARDS_TOPIC;
use crate::model::Stage;

/// Longest discard reason kept (bytes).
const MAX_REASON: usize = 1024;

/// A discard, as recorded.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Discard {
    pub dlq_id: String,
    pub group: String,
    pub by: String,
    pub reason: String,
    pub at_ms: i64,
}

impl Broker {
    /// Discards dead letter `dlq_id`: refused (conflict) while it is being
    /// replayed, once replayed, or when discarded already.
    pub async fn discard(&self, dlq_id: &str, by: &str, reason: &str) -> Result<Discard, BrokerError> {
        let reason = reason.trim();
        if reason.is_empty() {
            return Err(BrokerError::Invalid("a discard needs a reason".into()));
        }
        let (m, group) = self.dead_letter(dlq_id)?;
        let claim = self.consumers.replays.claim(dlq_id, false).map_err(|r| {
            BrokerError::Conflict(match r {
                Refusal::InProgress => format!("dead letter {dlq_id} is being replayed right now"),
                Refusal::Discarded(d) => format!("dead letter {dlq_id} was discarded already by {}", d.by),
                Refusal::Replayed(e) => format!(
                    "dead letter {dlq_id} was replayed already{}",
                    e.last().map_or(String::new(), |r| format!(" as {}", r.new_id))
                ),
            })
        })?;
        let d = Discard {
            dlq_id: dlq_id.to_string(),
            group,
            by: by.to_string(),
            reason: waybill_client::consumer::tail(reason, MAX_REASON),
            at_ms: self.opts.clock.now_ms(),
        };
        self.record_json(DLQ_DISCARDS_TOPIC, dlq_id, &d).await?;
        self.consumers.replays.discard(d.clone());
        drop(claim);
        let origin = m
            .properties
            .get(PROP_ORIGIN_ID)
            .cloned()
            .unwrap_or_else(|| dlq_id.to_string());
        self.trace(|| {
            TraceEvent::Message(Box::new(MessageEvent {
                message_id: origin,
                stage: Stage::Dlq,
                at_ms: d.at_ms,
                group: Some(d.group.clone()),
                outcome: "discarded",
                detail: format!("dead letter {} discarded by {}: {}", d.dlq_id, d.by, d.reason),
                record: None,
                attempt: None,
            }))
        });
        tracing::info!(dlq_id, by, reason = %d.reason, "dead letter discarded");
        Ok(d)
    }
}
