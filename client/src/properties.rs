//! Message property names with a meaning to Waybill, and which of them a
//! producer may set.
//!
//! The broker writes most of these itself: on retries and dead letters
//! (RocketMQ's names), on replays, on transactional messages, on records
//! applied from the Raft log. Those steer what the broker does with the
//! record (how often it was retried, when it is due, which transaction or
//! original it belongs to), so a producer that sets one could make the
//! broker dead-letter a message on its first failure, hide it as a "retry"
//! due in a year, or link it to someone else's transaction.
//!
//! Invariant: [`RESERVED`] is the one list of names refused on producer
//! input (HTTP `POST /api/v1/topics/{topic}/messages` and the wire's
//! `Produce`/`ProduceHalf`). The broker's own re-sends (retries, dead
//! letters, replays, transaction commits, Raft apply) do not pass through
//! producer input and keep setting them. Names starting with
//! [`INTERNAL_PREFIX`] are Waybill's and refused too, except the
//! [`PRODUCER_SET`] ones the SDK itself sends.

/// Original message id of a retried, dead-lettered or replayed message.
pub const PROP_ORIGIN_ID: &str = "ORIGIN_MESSAGE_ID";
/// Original topic of a retried, dead-lettered or replayed message.
pub const PROP_ORIGIN_TOPIC: &str = "RETRY_TOPIC";
/// Times the message was handed back for reconsumption.
pub const PROP_RECONSUME_TIMES: &str = "RECONSUME_TIME";
/// Wall-clock time (ms) before which a retry is not delivered.
pub const PROP_DELAY_UNTIL: &str = "DELAY_UNTIL_MS";
/// Delay level of a retry (1-based, RocketMQ's numbering).
pub const PROP_DELAY_LEVEL: &str = "DELAY";
/// Last failure reason of a dead-lettered message.
pub const PROP_DLQ_REASON: &str = "DLQ_ORIGIN_REASON";
/// How the producer sent the message (`async` for `send_async`), for the trace.
pub const PROP_SEND_MODE: &str = "WAYBILL_SEND_MODE";
/// Which try of a producer's send this is (set from the second try on).
pub const PROP_SEND_ATTEMPT: &str = "WAYBILL_SEND_ATTEMPT";
/// On a message relayed from a transactional outbox: the outbox row's id
/// (`crate::outbox`), so the trace links the database row to the message.
pub const PROP_OUTBOX_ROW: &str = "WAYBILL_OUTBOX_ROW";
/// On a message relayed from an outbox: which relay attempt sent it (1 = first).
pub const PROP_OUTBOX_ATTEMPT: &str = "WAYBILL_OUTBOX_ATTEMPT";
/// The dead letter a replay was made from.
pub const PROP_REPLAY_OF: &str = "REPLAY_OF";
/// On a replayed copy: who replayed it (with [`PROP_REPLAY_OF`], the copy
/// itself records the replay, so a crash before the `%REPLAYS%` record
/// cannot leave the letter looking unreplayed).
pub const PROP_REPLAY_BY: &str = "WAYBILL_REPLAY_BY";
/// On a replayed copy: `true` when the replay was forced over an earlier
/// replay or a quarantine.
pub const PROP_REPLAY_FORCED: &str = "WAYBILL_REPLAY_FORCED";
/// On a retry record: why the attempt before it failed (the handler's
/// text, an `--exec` exit code and stderr tail), bounded.
pub const PROP_RETRY_REASON: &str = "WAYBILL_RETRY_REASON";
/// On a replayed copy that was edited first: what was changed
/// (`body`, `key`, `property NAME`, comma-separated).
pub const PROP_REPLAY_EDITED: &str = "WAYBILL_REPLAY_EDITED";
/// On a replayed copy: the redrive job that replayed it, if one did.
pub const PROP_REPLAY_JOB: &str = "WAYBILL_REPLAY_JOB";
/// On a half message: it belongs to a transaction (RocketMQ's `TRAN_MSG`).
pub const PROP_TRANSACTION_PREPARED: &str = "TRAN_MSG";
/// On a half message: the topic it goes to when committed.
pub const PROP_REAL_TOPIC: &str = "REAL_TOPIC";
/// On a half message: the producer group asked to check it (RocketMQ's `PGROUP`).
pub const PROP_PRODUCER_GROUP: &str = "PGROUP";
/// On a committed transactional message: the id of its half message.
pub const PROP_TRANSACTION_ID: &str = "UNIQ_TRANSACTION_ID";
/// On a record applied from the Raft log: `index:seq:count` — its entry,
/// its place in the entry, the entry's message count.
pub const PROP_RAFT_ENTRY: &str = "RAFT_ENTRY";

/// A property name producers may not set, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reserved {
    pub name: &'static str,
    pub why: &'static str,
}

/// Refused on producer input (a 400 over HTTP, `BadRequest` on the wire),
/// never stripped: a producer that sets one has a bug or an intent, and a
/// silent drop would hide either.
pub const RESERVED: &[Reserved] = &[
    Reserved {
        name: PROP_RECONSUME_TIMES,
        why: "the retry counter decides when a message is dead-lettered",
    },
    Reserved {
        name: PROP_ORIGIN_ID,
        why: "links a retry, dead letter or replay to its original message",
    },
    Reserved {
        name: PROP_ORIGIN_TOPIC,
        why: "names the original topic of a retry or dead letter",
    },
    Reserved {
        name: PROP_DELAY_UNTIL,
        why: "holds a retry back until its due time",
    },
    Reserved {
        name: PROP_DELAY_LEVEL,
        why: "the retry delay level; Waybill has no producer-scheduled delivery",
    },
    Reserved {
        name: PROP_DLQ_REASON,
        why: "the failure reason the broker records on a dead letter",
    },
    Reserved {
        name: PROP_REPLAY_OF,
        why: "links a replay to the dead letter it was made from",
    },
    Reserved {
        name: PROP_TRANSACTION_PREPARED,
        why: "marks a half message; the broker sets it on ProduceHalf",
    },
    Reserved {
        name: PROP_REAL_TOPIC,
        why: "where a half message goes on commit; the broker sets it",
    },
    Reserved {
        name: PROP_PRODUCER_GROUP,
        why: "who is checked back about a half message; the broker sets it",
    },
    Reserved {
        name: PROP_TRANSACTION_ID,
        why: "links a committed message to its half message",
    },
    Reserved {
        name: PROP_RAFT_ENTRY,
        why: "places a record in the Raft log; recovery reads it",
    },
];

/// Prefix of Waybill's own property names: reserved for the broker and the
/// SDK, so a later internal property can never collide with user data.
pub const INTERNAL_PREFIX: &str = "WAYBILL_";

/// `WAYBILL_*` names a producer sends itself (the SDK sets them): they only
/// describe that producer's own send, for the trace.
pub const PRODUCER_SET: &[&str] = &[PROP_SEND_MODE, PROP_SEND_ATTEMPT, PROP_OUTBOX_ROW, PROP_OUTBOX_ATTEMPT];

/// Why a producer may not set property `name`; `None` when it may.
pub fn reserved(name: &str) -> Option<&'static str> {
    if let Some(r) = RESERVED.iter().find(|r| r.name == name) {
        return Some(r.why);
    }
    (name.starts_with(INTERNAL_PREFIX) && !PRODUCER_SET.contains(&name))
        .then_some("names starting with WAYBILL_ are reserved for Waybill")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_names_are_reserved_and_producer_names_are_not() {
        for name in [
            "RECONSUME_TIME",
            "ORIGIN_MESSAGE_ID",
            "UNIQ_TRANSACTION_ID",
            "TRAN_MSG",
            "RAFT_ENTRY",
        ] {
            assert!(reserved(name).is_some(), "{name} should be reserved");
        }
        assert!(reserved("WAYBILL_SOMETHING_NEW").is_some());
        for name in [
            PROP_SEND_MODE,
            PROP_SEND_ATTEMPT,
            crate::tracecontext::PROP_TRACEPARENT,
            "order_id",
        ] {
            assert_eq!(reserved(name), None, "{name} should be allowed");
        }
        // Property names are case-sensitive, as the broker reads them.
        assert_eq!(reserved("reconsume_time"), None);
    }
}
