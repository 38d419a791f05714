//! Limits on what producers send, and the count of every refusal.
//!
//! Topic and group names are checked by [`super::topic`]; this file checks
//! the rest of a producer's message before anything is stored: body size
//! (`max_message_bytes`, RocketMQ's maxMessageSize of 4 MiB), key, tags,
//! producer name and properties (count, name and value lengths, total
//! size, no control characters in names). The broker's own copies (retry,
//! dead letter, replay) are not producer input and are not checked again.
//!
//! [`Refusals`] counts each refusal by reason — these, and the rate limits
//! the fronts (HTTP, broker port) apply — for `/metrics`
//! (`waybill_refused_total{reason}`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{Outgoing, MAX_KEY_LEN};

/// RocketMQ's default maxMessageSize.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 4 << 20;
// Lengths below count characters (as the OpenAPI document's `maxLength`
// does), except the key's, which counts bytes (`MAX_KEY_LEN`).

/// Longest tags string.
pub const MAX_TAGS_LEN: usize = 255;
/// Longest producer (group) name.
pub const MAX_PRODUCER_LEN: usize = 255;
/// Most properties on one message.
pub const MAX_PROPERTIES: usize = 64;
/// Longest property name.
pub const MAX_PROPERTY_NAME_LEN: usize = 255;
/// Longest property value.
pub const MAX_PROPERTY_VALUE_LEN: usize = 16 << 10;
/// All property names and values together (RocketMQ keeps them under 32 KiB).
pub const MAX_PROPERTIES_BYTES: usize = 32 << 10;

/// Why a refusal happened (the `reason` label of `waybill_refused_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    MessageSize,
    Key,
    Tags,
    Producer,
    Property,
    /// Too many requests per second (per connection or per token).
    Rate,
}

const REASONS: [Reason; 6] = [
    Reason::MessageSize,
    Reason::Key,
    Reason::Tags,
    Reason::Producer,
    Reason::Property,
    Reason::Rate,
];

impl Reason {
    pub fn label(self) -> &'static str {
        match self {
            Reason::MessageSize => "message_size",
            Reason::Key => "key",
            Reason::Tags => "tags",
            Reason::Producer => "producer",
            Reason::Property => "property",
            Reason::Rate => "rate",
        }
    }
}

/// A producer's message over a limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    #[error("message body is {len} bytes; this broker takes at most {max} (max_message_bytes)")]
    MessageSize { len: usize, max: usize },
    #[error("key {0}")]
    Key(String),
    #[error("tags {0}")]
    Tags(String),
    #[error("producer {0}")]
    Producer(String),
    #[error("properties: {0}")]
    Property(String),
}

impl LimitError {
    pub fn reason(&self) -> Reason {
        match self {
            LimitError::MessageSize { .. } => Reason::MessageSize,
            LimitError::Key(_) => Reason::Key,
            LimitError::Tags(_) => Reason::Tags,
            LimitError::Producer(_) => Reason::Producer,
            LimitError::Property(_) => Reason::Property,
        }
    }
}

/// Refusals by reason since start (relaxed counters: only read by scrapes).
#[derive(Debug, Default)]
pub struct Refusals {
    counts: [AtomicU64; REASONS.len()],
}

impl Refusals {
    pub fn add(&self, reason: Reason) {
        let i = REASONS.iter().position(|r| *r == reason).unwrap_or(0);
        self.counts[i].fetch_add(1, Ordering::Relaxed);
    }

    /// `(reason label, count)` for every reason.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        REASONS
            .iter()
            .zip(&self.counts)
            .map(|(r, c)| (r.label(), c.load(Ordering::Relaxed)))
            .collect()
    }
}

/// A string's first control character, if any.
fn control(s: &str) -> Option<char> {
    s.chars().find(|c| c.is_control())
}

/// Checks one producer message against the limits.
pub fn check(msg: &Outgoing, max_message_bytes: usize) -> Result<(), LimitError> {
    if msg.body.len() > max_message_bytes {
        return Err(LimitError::MessageSize {
            len: msg.body.len(),
            max: max_message_bytes,
        });
    }
    if let Some(k) = &msg.key {
        if k.len() > MAX_KEY_LEN {
            return Err(LimitError::Key(format!("is longer than {MAX_KEY_LEN} bytes")));
        }
        if let Some(c) = control(k) {
            return Err(LimitError::Key(format!("contains the control character {c:?}")));
        }
    }
    if let Some(t) = &msg.tags {
        if t.chars().count() > MAX_TAGS_LEN {
            return Err(LimitError::Tags(format!("are longer than {MAX_TAGS_LEN} characters")));
        }
        if let Some(c) = control(t) {
            return Err(LimitError::Tags(format!("contain the control character {c:?}")));
        }
    }
    if let Some(p) = &msg.producer {
        if p.chars().count() > MAX_PRODUCER_LEN || control(p).is_some() {
            return Err(LimitError::Producer(format!(
                "must be at most {MAX_PRODUCER_LEN} characters without control characters"
            )));
        }
    }
    check_properties(&msg.properties)
}

fn check_properties(props: &BTreeMap<String, String>) -> Result<(), LimitError> {
    let bad = |why: String| Err(LimitError::Property(why));
    if props.len() > MAX_PROPERTIES {
        return bad(format!("{} given; at most {MAX_PROPERTIES}", props.len()));
    }
    let mut total = 0usize;
    for (name, value) in props {
        let shown: String = name.chars().take(64).collect();
        let name_len = name.chars().count();
        if name_len == 0 || name_len > MAX_PROPERTY_NAME_LEN {
            return bad(format!(
                "name {shown:?} must be 1 to {MAX_PROPERTY_NAME_LEN} characters"
            ));
        }
        if let Some(c) = control(name) {
            return bad(format!("name {shown:?} contains the control character {c:?}"));
        }
        let value_len = value.chars().count();
        if value_len > MAX_PROPERTY_VALUE_LEN {
            return bad(format!(
                "value of {shown:?} is longer than {MAX_PROPERTY_VALUE_LEN} characters"
            ));
        }
        total += name_len + value_len;
    }
    if total > MAX_PROPERTIES_BYTES {
        return bad(format!(
            "{total} characters of names and values; at most {MAX_PROPERTIES_BYTES}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg() -> Outgoing {
        Outgoing {
            topic: "t".into(),
            key: Some("order-1".into()),
            tags: Some("paid".into()),
            producer: None,
            properties: BTreeMap::new(),
            body: b"hello".to_vec(),
            born_ms: None,
            send_mode: None,
        }
    }

    fn reason(m: &Outgoing) -> Option<&'static str> {
        check(m, 16).err().map(|e| e.reason().label())
    }

    #[test]
    fn refuses_each_field_over_its_limit_and_names_the_reason() {
        assert_eq!(reason(&msg()), None);
        let mut m = msg();
        m.body = vec![0; 17];
        assert_eq!(reason(&m), Some("message_size"));
        let mut m = msg();
        m.key = Some("a\nb".into());
        assert_eq!(reason(&m), Some("key"));
        let mut m = msg();
        m.key = Some("k".repeat(MAX_KEY_LEN + 1));
        assert_eq!(reason(&m), Some("key"));
        let mut m = msg();
        m.tags = Some("t".repeat(MAX_TAGS_LEN + 1));
        assert_eq!(reason(&m), Some("tags"));
        let mut m = msg();
        m.producer = Some("p\0".into());
        assert_eq!(reason(&m), Some("producer"));
        let mut m = msg();
        m.properties.insert("bad\u{1}name".into(), "v".into());
        assert_eq!(reason(&m), Some("property"));
        let mut m = msg();
        m.properties = (0..=MAX_PROPERTIES).map(|i| (format!("p{i}"), String::new())).collect();
        assert_eq!(reason(&m), Some("property"));
        let mut m = msg();
        m.properties = (0..3)
            .map(|i| (format!("p{i}"), "v".repeat(MAX_PROPERTY_VALUE_LEN)))
            .collect();
        assert_eq!(reason(&m), Some("property"));
        let mut m = msg();
        m.properties.insert("json".into(), "{\"a\":\n1}\t".into());
        m.key = Some("order 42 ünïcode".into());
        assert_eq!(reason(&m), None, "values may hold any text, keys spaces and unicode");
    }

    #[test]
    fn counts_refusals_by_reason() {
        let r = Refusals::default();
        r.add(Reason::Rate);
        r.add(Reason::Rate);
        r.add(Reason::Key);
        let s: BTreeMap<_, _> = r.snapshot().into_iter().collect();
        assert_eq!((s["rate"], s["key"], s["message_size"]), (2, 1, 0));
    }
}
