//! Why a bench run failed: one enum for the whole bench layer, each
//! variant carrying what was being done (a path, an address, the node's
//! log) and keeping the source error, so the binaries print the full chain.

use std::path::PathBuf;

use crate::broker::topic::TopicError;

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A flag out of range, or a combination the bench refuses.
    #[error("{0}")]
    Usage(String),
    #[error("bad --topic {topic:?}")]
    Topic {
        topic: String,
        #[source]
        source: TopicError,
    },
    /// A local file, temp dir, port or process could not be had.
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// The probe's write + fdatasync failed.
    #[error("probe write + fdatasync failed in {}", path.display())]
    Probe {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A blocking task (the probe) panicked or was cancelled.
    #[error("the {what} thread failed")]
    Thread {
        what: &'static str,
        #[source]
        source: tokio::task::JoinError,
    },
    /// The own node died, stayed silent, or its group found no writer; the
    /// message carries the tail of its log.
    #[error("{0}")]
    Node(String),
    /// The node's HTTP API (its `/metrics`) did not answer as expected.
    #[error("{what}")]
    Http {
        what: String,
        #[source]
        source: Option<reqwest::Error>,
    },
    /// The client SDK refused or failed (producer, consumer).
    #[error("{what}")]
    Client {
        what: String,
        #[source]
        source: waybill_client::ClientError,
    },
    /// The warm-up send (it connects and creates the topic) failed.
    #[error("warm-up send to {broker} failed: {reason}")]
    WarmUp { broker: String, reason: String },
}

impl BenchError {
    /// An [`BenchError::Io`] with what was being done.
    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> BenchError {
        let what = what.into();
        move |source| BenchError::Io { what, source }
    }
}
