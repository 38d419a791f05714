//! Topic names: what producers may use, and the system topics' prefixes.
//!
//! User topics follow RocketMQ's rule minus the reserved `%`: ASCII letters,
//! digits, `_` and `-`, 1 to 127 characters. Names starting with `%` are
//! system topics (`%RETRY%<group>`, `%DLQ%<group>`), created by the broker
//! only. The rule also keeps topic names safe as directory names.

/// Longest topic name accepted (RocketMQ's limit).
pub const MAX_TOPIC_LEN: usize = 127;

/// Why a topic name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    #[error("topic name is empty")]
    Empty,
    #[error("topic name is longer than {MAX_TOPIC_LEN} characters")]
    TooLong,
    #[error("topic name {0:?} may only contain ASCII letters, digits, '_' and '-'")]
    Illegal(String),
}

/// Checks a topic name given by a producer.
pub fn validate(topic: &str) -> Result<(), TopicError> {
    if topic.is_empty() {
        return Err(TopicError::Empty);
    }
    if topic.len() > MAX_TOPIC_LEN {
        return Err(TopicError::TooLong);
    }
    if !topic
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(TopicError::Illegal(topic.chars().take(MAX_TOPIC_LEN).collect()));
    }
    Ok(())
}

/// Checks a consumer group name (same rules: it becomes part of the
/// `%RETRY%<group>` and `%DLQ%<group>` topic names).
pub fn validate_group(group: &str) -> Result<(), TopicError> {
    validate(group)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_names_and_refuses_paths_and_system_prefixes() {
        assert!(validate("orders_v2-eu").is_ok());
        assert_eq!(validate(""), Err(TopicError::Empty));
        assert!(validate("../etc").is_err());
        assert!(validate("%DLQ%g").is_err());
        assert!(validate("a b").is_err());
        assert_eq!(validate(&"x".repeat(128)), Err(TopicError::TooLong));
    }
}
