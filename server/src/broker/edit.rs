//! Edit before replay: a dead letter is replayed as a copy with a changed
//! body, key or properties (a malformed payload fixed by hand, a key
//! corrected). The letter itself is never changed: it stays as evidence.
//! What was edited, and by whom, is recorded on the copy and the replay
//! record and said on the message's timeline.
//!
//! Edits pass the rules producer input passes: reserved property names are
//! refused, keys and bodies are bounded.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{topic, BrokerError, MAX_KEY_LEN};

/// Largest edited body (bytes): the HTTP API's default request limit.
pub const MAX_EDIT_BODY: usize = 4 * 1024 * 1024;

/// Changes applied to a replayed copy; absent parts stay as they were.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Edit {
    /// The new body (text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// The new key (empty: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// User properties to set (added or replaced; others are kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub properties: Option<BTreeMap<String, String>>,
}

impl Edit {
    /// Refuses what a producer could not send either.
    pub fn validate(&self) -> Result<(), BrokerError> {
        if self.body.as_ref().is_some_and(|b| b.len() > MAX_EDIT_BODY) {
            return Err(BrokerError::Invalid(format!(
                "edited body is larger than {MAX_EDIT_BODY} bytes"
            )));
        }
        if self.key.as_ref().is_some_and(|k| k.len() > MAX_KEY_LEN) {
            return Err(BrokerError::KeyTooLong { max: MAX_KEY_LEN });
        }
        if let Some(p) = &self.properties {
            topic::validate_properties([p])?;
        }
        // The key and property limits a producer's message has.
        let as_sent = super::Outgoing {
            key: self.key.clone().filter(|k| !k.is_empty()),
            properties: self.properties.clone().unwrap_or_default(),
            ..super::Outgoing::default()
        };
        super::limits::check(&as_sent, MAX_EDIT_BODY)?;
        Ok(())
    }

    /// What it changes, in words (`body`, `key`, `property NAME`).
    pub fn changes(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.body.is_some() {
            out.push("body".to_string());
        }
        if self.key.is_some() {
            out.push("key".to_string());
        }
        for name in self.properties.iter().flat_map(|p| p.keys()) {
            out.push(format!("property {name}"));
        }
        out
    }

    /// Applies the edit to a copy's key, body and properties.
    pub fn apply(&self, key: &mut Option<String>, body: &mut Vec<u8>, properties: &mut BTreeMap<String, String>) {
        if let Some(b) = &self.body {
            *body = b.clone().into_bytes();
        }
        if let Some(k) = &self.key {
            *key = (!k.is_empty()).then(|| k.clone());
        }
        for (name, value) in self.properties.iter().flatten() {
            properties.insert(name.clone(), value.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_edit_changes_only_what_it_names_and_refuses_reserved_properties() {
        let e = Edit {
            body: Some("fixed".into()),
            key: None,
            properties: Some(BTreeMap::from([("region".to_string(), "eu".to_string())])),
        };
        assert!(e.validate().is_ok());
        assert_eq!(e.changes(), ["body", "property region"]);
        let (mut key, mut body) = (Some("k".to_string()), b"broken".to_vec());
        let mut props = BTreeMap::from([("a".to_string(), "1".to_string())]);
        e.apply(&mut key, &mut body, &mut props);
        assert_eq!((key.as_deref(), body.as_slice()), (Some("k"), b"fixed".as_slice()));
        assert_eq!(props.len(), 2);
        let reserved = Edit {
            properties: Some(BTreeMap::from([("REPLAY_OF".to_string(), "x".to_string())])),
            ..Edit::default()
        };
        assert!(reserved.validate().is_err());
        let long_key = Edit {
            key: Some("k".repeat(MAX_KEY_LEN + 1)),
            ..Edit::default()
        };
        assert!(long_key.validate().is_err());
    }
}
