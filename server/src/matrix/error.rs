//! Why a matrix run could not be carried out (as opposed to a run that
//! finished and found a broken promise, which is a result, not an error).

#[derive(Debug, thiserror::Error)]
pub enum MatrixError {
    /// A flag out of range or a name the matrix does not know.
    #[error("{0}")]
    Usage(String),
    /// A local file, temp dir, port or process could not be had.
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// A node did not start, exited, or never settled; carries its log tail.
    #[error("{0}")]
    Node(String),
    /// The HTTP API of a node failed.
    #[error("{what}")]
    Http {
        what: String,
        #[source]
        source: reqwest::Error,
    },
    /// A node's trace store could not be read.
    #[error("reading the trace store {url}")]
    Trace {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    /// The client protocol failed outside the workload (the final read).
    #[error("{what}: {source}")]
    Client {
        what: String,
        #[source]
        source: waybill_client::ClientError,
    },
}

impl MatrixError {
    /// `map_err` helper: an I/O error with what was being done.
    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> MatrixError {
        let what = what.into();
        move |source| MatrixError::Io { what, source }
    }

    pub fn http(what: impl Into<String>) -> impl FnOnce(reqwest::Error) -> MatrixError {
        let what = what.into();
        move |source| MatrixError::Http { what, source }
    }
}
