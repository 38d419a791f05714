//! `waybill bench`: throughput and latency of a node over the client
//! protocol, with the disk's own fsync'd append bandwidth beside it.
//!
//! The run is [`waybill::bench::own::run`] (own node or `--broker`, probe
//! halves, the timed closed loop); this file adds the process edge: the
//! report on stdout (a table, or with `--json` exactly one JSON object;
//! progress on stderr while running) and the exit status. Any failed send
//! fails the bench (non-zero exit) after the report.
//!
//! Comparisons with peers moved to the workspace's bench crate, so this
//! binary links no peer client: `--vs` (and `--peer-sync`, `--nats-venv`)
//! are still accepted, hidden, only to fail with the command to run instead.

use std::path::PathBuf;

use anyhow::bail;
use clap::Args;
use waybill::bench::report::{self, Report};
use waybill::bench::{own, Workload};

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(flatten)]
    pub workload: Workload,
    /// Moved: `cargo run --release -p waybill-bench -- --vs nats://ADDR`.
    #[arg(long, hide = true)]
    pub vs: Option<String>,
    /// Moved to `waybill-bench`, as `--vs`.
    #[arg(long, hide = true)]
    pub peer_sync: Option<String>,
    /// Moved to `waybill-bench`, as `--vs`.
    #[arg(long, hide = true)]
    pub nats_venv: Option<PathBuf>,
}

/// What `waybill bench --vs …` says instead of running.
fn moved(a: &BenchArgs) -> String {
    let vs = a.vs.as_deref().unwrap_or("nats://ADDR");
    let sync = a
        .peer_sync
        .as_deref()
        .map_or(String::new(), |s| format!(" --peer-sync {s}"));
    format!(
        "comparisons with peers moved out of the waybill binary; run them from the source tree with \
         `cargo run --release -p waybill-bench -- --vs {vs}{sync} [the same workload flags]`"
    )
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    if args.vs.is_some() || args.peer_sync.is_some() || args.nats_venv.is_some() {
        bail!("{}", moved(&args));
    }
    let w = &args.workload;
    w.validate()?;
    let own = own::run(w, false).await?;
    let report = Report::new(w, &own, None);
    if w.json {
        outln!("{}", report::json(&report));
    } else {
        out!("{}", report::table(&report));
    }
    if let Some(failure) = own.load.failure("Waybill sends") {
        bail!("{failure}");
    }
    Ok(())
}
