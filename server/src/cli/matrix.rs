//! `waybill matrix`: the reliability matrix from the terminal. The runs
//! and the checker are the library's [`waybill::matrix`]; this file adds
//! the process edge: flags, a progress line per run on stderr, the table
//! on stdout, `--json FILE`, the last run kept in `--data-dir` for the
//! dashboard's `/matrix`, and a non-zero exit when a promise was broken.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use waybill::matrix::{self, report, Fault, Mode, Options};

#[derive(Debug, Args)]
pub struct MatrixArgs {
    /// The CI subset: one run per promise that matters most, short phases (under 2 minutes).
    #[arg(long)]
    pub quick: bool,
    /// Configurations as FLUSH/REPLICATION, comma-separated (e.g. sync/raft,async/none) [default: all 8].
    #[arg(long, value_delimiter = ',')]
    pub modes: Vec<String>,
    /// Faults, comma-separated: kill, power-loss, primary-loss, partition, corrupt-minority, disk-full [default: all].
    #[arg(long, value_delimiter = ',')]
    pub faults: Vec<String>,
    /// Also write the full report (every cell, lost messages with their timelines) to FILE as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// The node data dir whose dashboard shows this run on /matrix (kept as matrix/last.json) [default: ./data].
    #[arg(long, default_value = "./data")]
    pub data_dir: PathBuf,
    /// Test-only: members acknowledge sync-flush sends before the fsync (the checker must fail them).
    #[arg(long, hide = true)]
    pub unsafe_ack_before_fsync: bool,
}

pub async fn run(args: MatrixArgs) -> anyhow::Result<()> {
    let modes: Vec<Mode> = if args.modes.is_empty() {
        Mode::all()
    } else {
        args.modes.iter().map(|m| Mode::parse(m)).collect::<Result<_, _>>()?
    };
    let faults: Vec<Fault> = if args.faults.is_empty() {
        Fault::ALL.to_vec()
    } else {
        args.faults.iter().map(|f| Fault::parse(f)).collect::<Result<_, _>>()?
    };
    let runs = if args.quick && args.modes.is_empty() && args.faults.is_empty() {
        matrix::quick_runs()
    } else {
        matrix::plan(&modes, &faults)
    };
    let exe = std::env::current_exe().context("cannot find the waybill executable")?;
    let mut opts = Options::new(runs, args.quick, exe);
    if args.unsafe_ack_before_fsync {
        opts.node_flags.push("--unsafe-ack-before-fsync".into());
    }
    eprintln!(
        "waybill matrix: {} run(s){}; each starts its own nodes in a temp dir",
        opts.runs.len(),
        if args.quick { " (quick)" } else { "" }
    );
    let report = matrix::run_all(&opts, |done, total, cell| {
        let width = 24;
        let filled = done * width / total.max(1);
        eprintln!(
            "[{}{}] {done}/{total} {}/{} {:<16} {:<13} acked {:>6} lost {:>4} ({:.1} s)",
            "#".repeat(filled),
            ".".repeat(width - filled),
            cell.flush,
            cell.replication,
            cell.fault,
            cell.verdict,
            cell.acked,
            cell.lost,
            cell.duration_ms as f64 / 1000.0
        );
    })
    .await;
    out!("{}", report::table(&report));
    outln!(
        "{} run(s) in {:.1} s on {} core(s): {}",
        report.rows.len(),
        report.duration_ms as f64 / 1000.0,
        report.cores,
        if report.passed {
            "every promise held"
        } else {
            "PROMISE BROKEN"
        }
    );
    if let Some(path) = &args.json {
        report::save(&report, path).with_context(|| format!("cannot write {}", path.display()))?;
    }
    let last = report::last_run_path(&args.data_dir);
    match report::save(&report, &last) {
        Ok(()) => eprintln!("kept for the dashboard's /matrix in {}", last.display()),
        Err(e) => eprintln!("waybill matrix: cannot keep the run in {}: {e}", last.display()),
    }
    if !report.passed {
        let failed: Vec<String> = report
            .failed()
            .iter()
            .map(|c| format!("{}/{} {}", c.flush, c.replication, c.fault))
            .collect();
        anyhow::bail!("{} run(s) failed: {}", failed.len(), failed.join(", "));
    }
    Ok(())
}
