//! The `waybill` binary: command-line parsing and the process edge.
//! `anyhow` lives here and nowhere else.

use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use waybill::serve::{self, ServeArgs};

/// `println!` for a command's output: a closed pipe (`waybill dlq list
/// --json | head`) ends the command quietly instead of panicking.
macro_rules! outln {
    ($($t:tt)*) => { crate::cli::write_out(format_args!($($t)*), true) };
}

/// `print!` with the same closed-pipe rule.
macro_rules! out {
    ($($t:tt)*) => { crate::cli::write_out(format_args!($($t)*), false) };
}

mod cli;

#[derive(Parser)]
#[command(
    name = "waybill",
    version,
    about = "Durable message broker with a built-in message tracer"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node: broker, HTTP API and dashboard.
    Serve(Box<ServeArgs>),
    /// Send messages; prints one JSON line per result.
    Produce(cli::produce::ProduceArgs),
    /// Consume a topic as a member of a consumer group.
    Consume(cli::consume::ConsumeArgs),
    /// Dead letters: list and replay.
    Dlq(cli::dlq::DlqArgs),
    /// Topics: list, show, create, delete.
    Topic(cli::topic::TopicArgs),
    /// Consumer groups: list, reset offsets, skip a message, delete.
    Group(cli::group::GroupArgs),
    /// A message's timeline (by id or key).
    Trace(cli::trace::TraceArgs),
    /// Measure throughput and latency (own node or --broker); peers: `cargo run -p waybill-bench`.
    Bench(cli::bench::BenchArgs),
    /// Replication group: status, operator failover (promote).
    Cluster(cli::cluster::ClusterArgs),
    /// The reliability matrix: flush × replication under injected faults, checked.
    Matrix(cli::matrix::MatrixArgs),
    /// The transactional outbox: status, retry parked rows, install the table, run a relay.
    Outbox(cli::outbox::OutboxArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The matrix's own producers warn on every failed send while it kills
    // nodes on purpose: only errors, unless RUST_LOG says otherwise.
    let filter = match cli.command {
        Command::Matrix(_) => "error",
        _ => serve::LOG_FILTER,
    };
    serve::init_logging(filter);
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("waybill: error: {}", sentence(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes in one line, each said once: many layers name
/// their source in their own message too ("cannot listen on …: address in
/// use"), and `{:#}` would repeat it.
fn sentence(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Runtime::new().context("cannot start the async runtime")
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Produce(args) => runtime()?.block_on(cli::produce::run(args)),
        Command::Consume(args) => runtime()?.block_on(cli::consume::run(args)),
        Command::Dlq(args) => runtime()?.block_on(cli::dlq::run(args)),
        Command::Topic(args) => runtime()?.block_on(cli::topic::run(args)),
        Command::Group(args) => runtime()?.block_on(cli::group::run(args)),
        Command::Trace(args) => runtime()?.block_on(cli::trace::run(args)),
        Command::Bench(args) => runtime()?.block_on(cli::bench::run(args)),
        Command::Cluster(args) => runtime()?.block_on(cli::cluster::run(args)),
        Command::Matrix(args) => runtime()?.block_on(cli::matrix::run(args)),
        Command::Outbox(args) => runtime()?.block_on(cli::outbox::run(args)),
        Command::Serve(args) if args.print_config => {
            out!("{}", args.layered()?.render()?);
            Ok(())
        }
        Command::Serve(args) if args.check_config => {
            outln!("{}", serve::check_line(&(*args).into_config()?));
            Ok(())
        }
        Command::Serve(args) => {
            let cfg = (*args).into_config()?;
            let rt = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
            rt.block_on(waybill::server::serve(cfg, serve::shutdown_signal()))?;
            Ok(())
        }
    }
}
