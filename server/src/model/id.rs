//! Message ids: `{node:04X}{epoch:08X}{pos:016X}` — 28 hex digits.
//!
//! Like RocketMQ's offsetMsgId the id locates the message (its log
//! position), so reading by id needs no extra index. The boot epoch makes
//! ids unique across restarts: if recovery cuts a torn tail and a position
//! is handed out again, the new message carries a newer epoch. Readers
//! check that the record found at the position carries the same node and
//! epoch, so a stale id never returns another message.

use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MessageId {
    pub node: u16,
    pub epoch: u32,
    pub pos: u64,
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04X}{:08X}{:016X}", self.node, self.epoch, self.pos)
    }
}

/// Why a string is not a message id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a message id (expected 28 hex digits): {0:?}")]
pub struct BadId(pub String);

impl FromStr for MessageId {
    type Err = BadId;

    fn from_str(s: &str) -> Result<Self, BadId> {
        let bad = || BadId(s.chars().take(64).collect());
        if s.len() != 28 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        Ok(MessageId {
            node: u16::from_str_radix(&s[0..4], 16).map_err(|_| bad())?,
            epoch: u32::from_str_radix(&s[4..12], 16).map_err(|_| bad())?,
            pos: u64::from_str_radix(&s[12..28], 16).map_err(|_| bad())?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_garbage() {
        let id = MessageId {
            node: 1,
            epoch: 7,
            pos: 123_456,
        };
        let s = id.to_string();
        assert_eq!(s.len(), 28);
        assert_eq!(s.parse::<MessageId>(), Ok(id));
        assert!("xyz".parse::<MessageId>().is_err());
        assert!("G000000000000000000000000000".parse::<MessageId>().is_err());
    }
}
