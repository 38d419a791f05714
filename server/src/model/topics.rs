//! System topic names: where the broker keeps its own records in the commit
//! log. Every name starts with `%`, which producers may not use.

/// Half messages of open transactions (invisible to consumers).
pub const HALF_TOPIC: &str = "%HALF%";
/// Transaction op records: key = half id, body `commit <id>` or
/// `rollback <reason>`.
pub const HALF_OP_TOPIC: &str = "%HALF_OP%";
/// Replay records of dead letters.
pub const REPLAYS_TOPIC: &str = "%REPLAYS%";
/// Dead-letter redrive jobs: key = job id, body = the job's latest
/// snapshot (JSON); the last record of a job wins.
pub const DLQ_JOBS_TOPIC: &str = "%DLQ_JOBS%";
/// Discarded dead letters: key = dead-letter id, body = who, why, when.
pub const DLQ_DISCARDS_TOPIC: &str = "%DLQ_DISCARDS%";
/// Consumer groups' committed offsets.
pub const OFFSETS_TOPIC: &str = "%OFFSETS%";
/// Operator actions (topic create/delete, offset resets, group deletes…):
/// key = the action's target, body = an `AuditEntry` (JSON).
pub const AUDIT_TOPIC: &str = "%AUDIT%";
/// Operator-managed topics: key = the topic, body = a create (with its
/// queue count) or a delete tombstone (with each queue's end), as JSON;
/// replayed in order on start, the last record of a topic wins.
pub const TOPICS_TOPIC: &str = "%TOPICS%";
/// Raft blank and membership entries.
pub const RAFT_TOPIC: &str = "%RAFT%";

/// A group's retry topic.
pub fn retry_topic(group: &str) -> String {
    format!("%RETRY%{group}")
}

/// A group's dead-letter topic.
pub fn dlq_topic(group: &str) -> String {
    format!("%DLQ%{group}")
}

/// The group a `%RETRY%`/`%DLQ%` topic belongs to.
pub fn group_of(topic: &str) -> Option<&str> {
    topic.strip_prefix("%RETRY%").or_else(|| topic.strip_prefix("%DLQ%"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_and_dlq_topics_name_their_group() {
        assert_eq!(group_of(&retry_topic("g1")), Some("g1"));
        assert_eq!(group_of(&dlq_topic("g1")), Some("g1"));
        assert_eq!(group_of("orders"), None);
    }
}
