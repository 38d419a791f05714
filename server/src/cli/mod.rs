//! Client subcommands of the `waybill` binary (the process edge: anyhow).
//!
//! - [`produce`]: `waybill produce`, over the client protocol.
//! - [`consume`]: `waybill consume`, a push consumer with `--exec`.
//! - [`dlq`]: `waybill dlq list|replay`, over the HTTP API.

pub mod consume;
pub mod dlq;
pub mod produce;
