//! Who may do what: named tokens, each with a role.
//!
//! Roles are ordered — `viewer` < `operator` < `admin` — and a caller may
//! do what its role or any lower one allows:
//! - `viewer`: read (every `GET`);
//! - `operator`: the everyday writes — produce (HTTP and the broker port),
//!   consume, replay and discard dead letters, redrive jobs, offset resets,
//!   skips, group deletes;
//! - `admin`: topics (create, delete) and promotion.
//!
//! The single `--auth-token` is an `admin` token named [`AUTH_TOKEN_NAME`]
//! (group members present it to each other). Tokens are compared in
//! constant time against every entry, so neither which entry matched nor
//! where a wrong token differs shows in the time taken.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// The name writes made with `--auth-token` are recorded under.
pub const AUTH_TOKEN_NAME: &str = "auth_token";

/// What a token allows (ordered: a higher role includes the lower ones).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Viewer,
    Operator,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

/// Who made a request: the name its token was given, and its role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub name: Arc<str>,
    pub role: Role,
}

/// One token a node accepts.
#[derive(Debug, Clone)]
struct Entry {
    name: Arc<str>,
    secret: Box<[u8]>,
    role: Role,
}

/// The tokens a node accepts (never empty: no tokens means an open node,
/// and no `Tokens` at all).
#[derive(Debug, Clone)]
pub struct Tokens {
    entries: Vec<Entry>,
}

impl Tokens {
    /// The table from `--auth-token` (an admin) and the named tokens;
    /// `None` when there are none. Names and secrets are checked unique by
    /// the configuration before this is built.
    pub fn new(auth_token: Option<&str>, named: impl IntoIterator<Item = (String, String, Role)>) -> Option<Tokens> {
        let mut entries: Vec<Entry> = auth_token
            .map(|t| Entry {
                name: Arc::from(AUTH_TOKEN_NAME),
                secret: t.as_bytes().into(),
                role: Role::Admin,
            })
            .into_iter()
            .collect();
        entries.extend(named.into_iter().map(|(name, secret, role)| Entry {
            name: Arc::from(name),
            secret: secret.into_bytes().into_boxed_slice(),
            role,
        }));
        (!entries.is_empty()).then_some(Tokens { entries })
    }

    /// The caller a presented token identifies, if any. Every entry is
    /// compared, in constant time, whichever matches.
    pub fn identify(&self, given: &[u8]) -> Option<Caller> {
        let mut found = None;
        for e in &self.entries {
            if same(&e.secret, given) {
                found = Some(Caller {
                    name: e.name.clone(),
                    role: e.role,
                });
            }
        }
        found
    }
}

/// Equal in time independent of where the inputs differ.
pub fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifies_each_token_by_its_name_and_role() {
        let t = Tokens::new(
            Some("root-secret"),
            [
                ("grafana".to_string(), "view-secret".to_string(), Role::Viewer),
                ("ci".to_string(), "ops-secret".to_string(), Role::Operator),
            ],
        );
        let Some(t) = t else { panic!("tokens") };
        let who = |s: &str| t.identify(s.as_bytes()).map(|c| (c.name.to_string(), c.role));
        assert_eq!(who("root-secret"), Some((AUTH_TOKEN_NAME.into(), Role::Admin)));
        assert_eq!(who("view-secret"), Some(("grafana".into(), Role::Viewer)));
        assert_eq!(who("ops-secret"), Some(("ci".into(), Role::Operator)));
        assert_eq!(who("ops-secreT"), None);
        assert_eq!(who(""), None);
        assert!(Role::Viewer < Role::Operator && Role::Operator < Role::Admin);
    }

    #[test]
    fn no_tokens_means_an_open_node() {
        assert!(Tokens::new(None, []).is_none());
    }

    #[test]
    fn compares_whole_tokens() {
        assert!(same(b"secret", b"secret"));
        assert!(!same(b"secret", b"secreT"));
        assert!(!same(b"secret", b"secret2"));
    }
}
