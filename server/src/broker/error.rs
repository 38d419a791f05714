//! The broker layer's error, and the one table that says how each is
//! answered over HTTP and over the wire.
//!
//! Both fronts (`api/error.rs`, `port/client.rs`) read [`BrokerError::answer`],
//! so a new variant gets its HTTP status and wire code in one place. The
//! rows keep today's answers exactly, including four where the two fronts
//! differ (a conflict, a missing record, a diverged replica, a full disk):
//! clients retry on the wire's `Unavailable` and `Internal`, so changing a
//! wire code is a behaviour change of its own. Storage faults answer HTTP
//! with a text that names the fault without the file path; the full error
//! goes to the log.

use waybill_client::protocol::ErrorCode;

use super::{BadId, TopicError};
use crate::storage::StorageError;

/// Errors of the broker layer.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error(transparent)]
    Topic(#[from] TopicError),
    #[error(transparent)]
    BadId(#[from] BadId),
    #[error("key is longer than {max} bytes")]
    KeyTooLong { max: usize },
    /// A producer's message over a limit (`limits.rs`).
    #[error(transparent)]
    Limit(#[from] super::limits::LimitError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Invalid(String),
    /// A write reached a node that is not the primary.
    #[error("{0}")]
    NotPrimary(String),
    /// Raft: a majority did not confirm in time (the write may still
    /// commit later).
    #[error("{0}")]
    Unconfirmed(String),
}

/// How an error is answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// HTTP status code.
    pub http: u16,
    /// Wire error code.
    pub wire: ErrorCode,
    /// The HTTP message when it must not be the error's own text (paths).
    pub public: Option<String>,
}

impl BrokerError {
    /// The one error → status table.
    pub fn answer(&self) -> Answer {
        use BrokerError as B;
        use ErrorCode as W;
        let (http, wire, public) = match self {
            B::Topic(_) | B::BadId(_) | B::KeyTooLong { .. } | B::Invalid(_) => (400, W::BadRequest, None),
            B::Limit(super::limits::LimitError::MessageSize { .. }) => (413, W::BadRequest, None),
            B::Limit(_) => (400, W::BadRequest, None),
            B::NotFound(_) => (404, W::NotFound, None),
            B::Conflict(_) => (409, W::BadRequest, None),
            B::NotPrimary(_) | B::Unconfirmed(_) => (503, W::Unavailable, None),
            B::Storage(s) => match s {
                StorageError::Encode(_) => (400, W::BadRequest, None),
                StorageError::Corrupt { pos, .. } => (
                    500,
                    W::Internal,
                    Some(format!(
                        "the stored record at log position {pos} is corrupt; it is not served"
                    )),
                ),
                StorageError::Failed(_) | StorageError::Closed => {
                    (503, W::Unavailable, Some("storage is not accepting writes".to_string()))
                }
                StorageError::NoRecord { .. } => (404, W::Internal, None),
                StorageError::NoSpace { .. } => (507, W::Unavailable, None),
                StorageError::Io { .. } => (500, W::Internal, Some("storage I/O error".to_string())),
                StorageError::Diverged(_) => (409, W::Internal, None),
            },
        };
        Answer { http, wire, public }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_faults_hide_paths_over_http_and_client_errors_say_what_to_fix() {
        let io = BrokerError::Storage(StorageError::Io {
            path: "/secret/data/log".into(),
            source: std::io::Error::other("EIO"),
        });
        let a = io.answer();
        assert_eq!((a.http, a.wire), (500, ErrorCode::Internal));
        assert_eq!(a.public.as_deref(), Some("storage I/O error"));
        let bad = BrokerError::Invalid("bad property".into()).answer();
        assert_eq!((bad.http, bad.wire, bad.public), (400, ErrorCode::BadRequest, None));
        let full = BrokerError::Storage(StorageError::NoSpace {
            path: "/d".into(),
            available: 1,
            reserve: 2,
        })
        .answer();
        assert_eq!((full.http, full.wire), (507, ErrorCode::Unavailable));
    }
}
