//! Value types every layer above storage may use: message ids and the
//! system topic names. Nothing here imports the broker, replication, the
//! tracer or the API, so the tracer can name a message without reaching
//! up into the broker.

pub mod id;
pub mod topics;

pub use id::{BadId, MessageId};
