//! `waybill-bench`: Waybill beside a peer. The workload of `waybill bench`
//! (same flags, same JSON) runs against Waybill and, with `--vs
//! nats://ADDR`, against NATS JetStream in the same run; the report adds
//! `peer` and `ratio` (Waybill msgs/s ÷ peer msgs/s). It lives outside the
//! server so the `waybill` binary links no peer client.
//!
//! Order of one run (each step only when it applies):
//! 1. the peer's preparation (`--peer-sync always`: install/find
//!    nats-server 2.15.1), before any measurement so pip never competes
//!    with one;
//! 2. the Waybill run ([`waybill::bench::own::run`]: own node, probe
//!    halves around the timed loop; the probe also runs under async flush
//!    when the peer fsyncs each write);
//! 3. the peer run (on the private always-sync server when asked);
//! 4. the report: a table (progress on stderr while running) or, with
//!    `--json`, exactly one JSON object on stdout. Any failed send, on
//!    either side, fails the run (non-zero exit) after the report.
//!
//! `waybill-bench --sweep` runs the performance table (1, 32 and 256 in
//! flight beside Redis and NATS, both fsyncing each write; the raw fsync
//! loop; tracing, async flush and replication rows) in one run
//! ([`sweep`]).
//!
//! `waybill-bench outbox …` measures the outbox relay against direct sends
//! and the inbox against a plain handler ([`outbox`]).
//!
//! `waybill-bench serve …` (hidden) is the own node: `waybill serve` with
//! the same flags ([`waybill::serve`]); the bench starts itself that way,
//! so it needs no `waybill` executable beside it.

use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::Parser;
use waybill::bench::report::{self, Report};
use waybill::bench::{own, probe, Workload};
use waybill::serve::{self, ServeArgs};

mod outbox;
mod peer;
mod sweep;

#[derive(Parser)]
#[command(
    name = "waybill-bench",
    version,
    about = "The `waybill bench` workload against Waybill and a peer (NATS JetStream, Redis) in one run"
)]
struct Cli {
    #[command(flatten)]
    workload: Workload,
    #[command(flatten)]
    peer: peer::PeerArgs,
    /// Run the performance table: 1, 32 and 256 in flight against Waybill, Redis (appendfsync always) and NATS (sync always), the raw fsync loop, tracing off, async flush and replication, all in one run.
    #[arg(long)]
    sweep: bool,
    /// With --sweep: also a row traced in this PostgreSQL trace store (e.g. postgres://postgres@127.0.0.1:5432/test).
    #[arg(long, requires = "sweep")]
    sweep_pg: Option<String>,
}

/// `waybill-bench serve …`: the own node.
#[derive(Parser)]
#[command(name = "waybill-bench serve")]
struct NodeCli {
    #[command(flatten)]
    serve: ServeArgs,
}

fn main() -> ExitCode {
    if std::env::args_os().nth(1).is_some_and(|a| a == "serve") {
        // The node's own argv: "serve" stands where clap expects the name.
        let node = NodeCli::parse_from(std::env::args_os().skip(1));
        serve::init_logging(serve::LOG_FILTER);
        return exit(run_node(node.serve));
    }
    if std::env::args_os().nth(1).is_some_and(|a| a == "outbox") {
        let args = outbox::OutboxBench::parse_from(std::env::args_os().skip(1));
        serve::init_logging(serve::LOG_FILTER);
        return exit(runtime().and_then(|rt| rt.block_on(outbox::run(args))));
    }
    let cli = Cli::parse();
    serve::init_logging(&format!("{},async_nats=warn", serve::LOG_FILTER));
    exit(runtime().and_then(|rt| rt.block_on(run(cli))))
}

fn exit(outcome: anyhow::Result<()>) -> ExitCode {
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("waybill-bench: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Runtime::new().context("cannot start the async runtime")
}

fn run_node(args: ServeArgs) -> anyhow::Result<()> {
    let cfg = args.into_config()?;
    runtime()?.block_on(waybill::server::serve(cfg, serve::shutdown_signal()))?;
    Ok(())
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let w = &cli.workload;
    w.validate()?;
    if cli.sweep {
        sweep::refuse_peer_flags(&cli.peer)?;
        return sweep::run(w, cli.sweep_pg.as_deref(), cli.peer.nats_venv.clone()).await;
    }
    let target = cli.peer.vs.as_deref().map(peer::Target::parse).transpose()?;
    if matches!(target, Some(peer::Target::Redis { .. })) && w.consumers > 0 {
        bail!("--consumers is not driven against Redis; compare consumers with --vs nats://…");
    }
    let peer = match target {
        Some(t) => Some(t.prepare(&cli.peer).await?),
        None => None,
    };
    let fsyncing_peer = peer.as_ref().is_some_and(peer::Prepared::fsyncs_each_write);
    let own = own::run(w, fsyncing_peer).await?;
    let peer_run = match &peer {
        Some(p) => Some((p, p.run(&w.load(p.name()), w.consumers).await?)),
        None => None,
    };
    let probe = probe::mean(&own.probes);
    let peer_report = peer_run.as_ref().map(|(p, r)| r.report(p, w.size, probe));
    let report = Report::new(w, &own, peer_report);
    if w.json {
        println!("{}", report::json(&report));
    } else {
        print!("{}", report::table(&report));
    }
    let failures: Vec<String> = own
        .load
        .failure("Waybill sends")
        .into_iter()
        .chain(peer_run.and_then(|(p, r)| r.load.failure(p.sends())))
        .collect();
    if !failures.is_empty() {
        bail!("{}", failures.join("; "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn both_command_lines_are_well_formed() {
        Cli::command().debug_assert();
        NodeCli::command().debug_assert();
        outbox::OutboxBench::command().debug_assert();
    }
}
