//! Value types every layer above storage may use: message ids, the system
//! topic names and the names of a message's path (stages, statuses, loss
//! kinds, send modes) and who may do what (tokens, roles). Nothing here
//! imports the broker, replication, the tracer or the API, so the tracer
//! can name a message without reaching up into the broker.

pub mod access;
pub mod id;
pub mod stage;
pub mod topics;

pub use id::{BadId, MessageId};
pub use stage::{LossKind, SendMode, Stage, StageName, Status};
