//! Topic names: what producers may use, and the system topics' prefixes.
//!
//! User topics follow RocketMQ's rule minus the reserved `%`: ASCII letters,
//! digits, `_` and `-`, 1 to 127 characters. Names starting with `%` are
//! system topics (`%RETRY%<group>`, `%DLQ%<group>`), created by the broker
//! only. The rule also keeps topic names safe as directory names.
//!
//! Producers also may not set the property names the broker owns (retry
//! counters, replay and transaction links, …): the one list and the reason
//! for each is [`waybill_client::properties::RESERVED`]; both HTTP and the
//! wire produce paths end in [`validate_properties`].

/// Longest topic name accepted (RocketMQ's limit).
pub const MAX_TOPIC_LEN: usize = 127;

/// Why a name a producer gave (topic, group, property) was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    #[error("topic name is empty")]
    Empty,
    #[error("topic name is longer than {MAX_TOPIC_LEN} characters")]
    TooLong,
    #[error("topic name {0:?} may only contain ASCII letters, digits, '_' and '-'")]
    Illegal(String),
    /// A property the broker owns.
    #[error("property {name:?} is reserved for the broker ({why}); producers cannot set it")]
    ReservedProperty { name: String, why: &'static str },
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

/// Refuses producer messages (their property maps) when one sets a
/// property the broker owns; the error names the first such property.
pub fn validate_properties<'a>(
    messages: impl IntoIterator<Item = &'a std::collections::BTreeMap<String, String>>,
) -> Result<(), TopicError> {
    let reserved = messages
        .into_iter()
        .flat_map(|p| p.keys())
        .find_map(|k| waybill_client::properties::reserved(k).map(|why| (k, why)));
    match reserved {
        Some((name, why)) => Err(TopicError::ReservedProperty {
            name: name.chars().take(MAX_TOPIC_LEN).collect(),
            why,
        }),
        None => Ok(()),
    }
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

    #[test]
    fn refuses_broker_owned_properties_by_name() {
        let props =
            |k: &str| -> std::collections::BTreeMap<String, String> { [(k.to_string(), "99".to_string())].into() };
        let e = validate_properties([&props("RECONSUME_TIME")])
            .err()
            .map(|e| e.to_string());
        assert!(e.is_some_and(|e| e.contains("\"RECONSUME_TIME\" is reserved")));
        assert!(validate_properties([&props("WAYBILL_SEND_ATTEMPT")]).is_ok());
        assert!(validate_properties([&props("order")]).is_ok());
    }
}
