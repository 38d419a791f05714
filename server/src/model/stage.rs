//! The names of a message's path, typed: the stages a timeline shows
//! ([`Stage`]), the statuses of a message and of a consumer group
//! ([`Status`]), the kinds of loss point ([`LossKind`]) and the producer's
//! send modes ([`SendMode`]).
//!
//! Invariants: each `as_str()` is the exact name the API, the trace store
//! and the dashboard use (SPEC section 6): those strings are the contract,
//! and `Serialize` and `FromStr` agree with `as_str()` for every value
//! (the tests check it). The trace store keeps strings: write `as_str()`,
//! read with `parse`. A stage read back may be one this version does not
//! know (a row another version wrote): [`StageName`] keeps it verbatim, so
//! old rows still load and show as written, ordered after every known
//! stage.

use std::fmt;
use std::str::FromStr;

use serde::{Serialize, Serializer};

/// A name that is none of an enum's values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {name:?}")]
pub struct UnknownName {
    /// What was being parsed (`stage`, `status`…).
    pub what: &'static str,
    pub name: String,
}

/// Defines a fieldless enum whose values have fixed names: `ALL`,
/// `as_str`, `Display`, `FromStr` and comparisons with `&str`, all from
/// one table so they cannot disagree.
macro_rules! named {
    ($(#[$meta:meta])* $name:ident ($what:literal) { $($(#[$vmeta:meta])* $variant:ident = $text:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The value's name as the API and the trace store spell it.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownName;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err(UnknownName {
                        what: $what,
                        name: s.to_string(),
                    }),
                }
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.as_str() == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }
    };
}

named! {
    /// A stage of a message's path (SPEC section 6), in path order.
    Stage ("stage") {
        Produce = "produce",
        Store = "store",
        Flush = "flush",
        Replicate = "replicate",
        Deliver = "deliver",
        Consume = "consume",
        Retry = "retry",
        Dlq = "dlq",
        Replay = "replay",
        TxPrepare = "tx_prepare",
        TxCommit = "tx_commit",
        TxRollback = "tx_rollback",
        TxCheck = "tx_check",
    }
}

impl Stage {
    /// Order of stages with equal times: the path's order.
    pub const fn rank(self) -> u8 {
        match self {
            Stage::Produce => 0,
            Stage::Store => 1,
            Stage::Flush => 2,
            Stage::Replicate => 3,
            Stage::TxPrepare => 4,
            Stage::TxCheck => 5,
            Stage::TxCommit | Stage::TxRollback => 6,
            Stage::Deliver => 7,
            Stage::Consume => 8,
            Stage::Retry => 9,
            Stage::Dlq => 10,
            Stage::Replay => 11,
        }
    }

    /// A transaction's stage (`tx_*`): the half message's path.
    pub const fn is_tx(self) -> bool {
        matches!(
            self,
            Stage::TxPrepare | Stage::TxCommit | Stage::TxRollback | Stage::TxCheck
        )
    }
}

named! {
    /// A message's status, overall or for one consumer group (SPEC
    /// section 6).
    Status ("status") {
        /// A transaction's half message, not (yet) committed.
        Half = "half",
        Stored = "stored",
        Replicated = "replicated",
        Delivered = "delivered",
        Consumed = "consumed",
        Retrying = "retrying",
        /// Dead-lettered and not replayed.
        Dead = "dead",
        Replayed = "replayed",
        RolledBack = "rolled_back",
        /// The audit found it acknowledged but gone.
        Lost = "lost",
    }
}

named! {
    /// What a loss point is: a risk the path carried, or an actual loss.
    LossKind ("loss kind") {
        Risk = "risk",
        Lost = "lost",
    }
}

named! {
    /// How the producer sent a message.
    SendMode ("send mode") {
        Sync = "sync",
        Async = "async",
        /// No answer: the producer never learns the outcome.
        Oneway = "oneway",
    }
}

/// A stage as read back from the trace store: a known [`Stage`], or a
/// name this version does not know, kept as written.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum StageName {
    Known(Stage),
    /// Shown as written; ordered after every known stage.
    Other(String),
}

impl StageName {
    /// Reads a stored name; never fails (unknown names are kept).
    pub fn parse(s: &str) -> StageName {
        s.parse()
            .map_or_else(|_| StageName::Other(s.to_string()), StageName::Known)
    }

    pub fn as_str(&self) -> &str {
        match self {
            StageName::Known(s) => s.as_str(),
            StageName::Other(s) => s,
        }
    }

    pub fn known(&self) -> Option<Stage> {
        match self {
            StageName::Known(s) => Some(*s),
            StageName::Other(_) => None,
        }
    }

    /// Order of stages with equal times; unknown stages last.
    pub fn rank(&self) -> u8 {
        self.known().map_or(12, Stage::rank)
    }

    /// A transaction's stage: `tx_*` (an unknown name too, by its prefix).
    pub fn is_tx(&self) -> bool {
        self.as_str().starts_with("tx_")
    }
}

impl From<Stage> for StageName {
    fn from(s: Stage) -> StageName {
        StageName::Known(s)
    }
}

impl fmt::Display for StageName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for StageName {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl PartialEq<Stage> for StageName {
    fn eq(&self, other: &Stage) -> bool {
        self.known() == Some(*other)
    }
}

impl PartialEq<str> for StageName {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for StageName {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json<T: Serialize>(v: T) -> String {
        serde_json::to_value(v)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default()
    }

    #[test]
    fn names_serialize_and_parse_as_spelled() {
        for s in Stage::ALL {
            assert_eq!(json(s), s.as_str());
            assert_eq!(s.as_str().parse::<Stage>(), Ok(*s));
            assert_eq!(json(StageName::from(*s)), s.as_str());
        }
        for s in Status::ALL {
            assert_eq!(json(s), s.as_str());
            assert_eq!(s.as_str().parse::<Status>(), Ok(*s));
        }
        for k in LossKind::ALL {
            assert_eq!(json(k), k.as_str());
            assert_eq!(k.as_str().parse::<LossKind>(), Ok(*k));
        }
        for m in SendMode::ALL {
            assert_eq!(json(m), m.as_str());
            assert_eq!(m.as_str().parse::<SendMode>(), Ok(*m));
        }
    }

    #[test]
    fn the_spec_names_every_stage_and_status() {
        let stages: Vec<&str> = Stage::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(
            stages,
            [
                "produce",
                "store",
                "flush",
                "replicate",
                "deliver",
                "consume",
                "retry",
                "dlq",
                "replay",
                "tx_prepare",
                "tx_commit",
                "tx_rollback",
                "tx_check"
            ]
        );
        let statuses: Vec<&str> = Status::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(
            statuses,
            [
                "half",
                "stored",
                "replicated",
                "delivered",
                "consumed",
                "retrying",
                "dead",
                "replayed",
                "rolled_back",
                "lost"
            ]
        );
    }

    #[test]
    fn unknown_stages_load_verbatim_and_rank_last() {
        let old = StageName::parse("archived");
        assert_eq!(old, StageName::Other("archived".into()));
        assert_eq!(old.as_str(), "archived");
        assert_eq!(json(&old), "archived");
        assert_eq!(old.rank(), 12);
        assert!(Stage::ALL.iter().all(|s| s.rank() < old.rank()));
        assert_eq!(StageName::parse("dlq"), Stage::Dlq);
        assert_eq!(
            "archived".parse::<Status>(),
            Err(UnknownName {
                what: "status",
                name: "archived".into()
            })
        );
    }

    #[test]
    fn ranks_follow_the_path() {
        use Stage::*;
        let path = [
            Produce, Store, Flush, Replicate, TxPrepare, TxCheck, TxCommit, Deliver, Consume, Retry, Dlq, Replay,
        ];
        assert!(path.windows(2).all(|w| w[0].rank() < w[1].rank()));
        assert_eq!(TxCommit.rank(), TxRollback.rank());
    }
}
