//! `waybill matrix`: the seed article's reliability table (sync/async
//! flush × none/async/sync/Raft replication), measured on this machine
//! under injected faults and checked like Jepsen.
//!
//! Each run ([`run_one`]) starts a real group of `waybill serve` processes
//! in a temp dir ([`group`]), drives the fixed [`workload`], injects one
//! [`Fault`] while data is in flight ([`faults`]), lets the group recover,
//! and then [`check`]s what producers were told against the final log, the
//! consumer group and every member's trace audit. The promises asserted
//! ([`promise`]): nothing acknowledged is lost to a kill or a full disk;
//! sync flush loses nothing to a power cut; sync replication and Raft lose
//! nothing to primary loss, a partition or one corrupted follower; nothing
//! unexpected is ever served; every loss is found by the audit and the
//! audit names nothing present. Async rows may lose, and say how much was
//! at risk when the fault struck; nothing at risk is "not exercised".

pub mod check;
pub mod error;
pub mod faults;
pub mod group;
pub mod proxy;
pub mod report;
pub mod run;
pub mod workload;

use std::path::PathBuf;
use std::time::Duration;

pub use error::MatrixError;
pub use report::{Cell, Report};
pub use run::run_one;

/// One configuration: flush mode and replication mode, by their flag values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mode {
    pub flush: &'static str,
    pub replication: &'static str,
}

pub const FLUSHES: [&str; 2] = ["sync", "async"];
pub const REPLICATIONS: [&str; 4] = ["none", "async", "sync", "raft"];

impl Mode {
    /// `FLUSH/REPLICATION`, e.g. `sync/raft`.
    pub fn parse(s: &str) -> Result<Mode, MatrixError> {
        let (f, r) = s
            .split_once('/')
            .ok_or_else(|| MatrixError::Usage(format!("--modes: {s:?} is not FLUSH/REPLICATION (e.g. sync/raft)")))?;
        let flush = FLUSHES
            .into_iter()
            .find(|x| *x == f)
            .ok_or_else(|| MatrixError::Usage(format!("--modes: unknown flush {f:?} (sync, async)")))?;
        let replication = REPLICATIONS.into_iter().find(|x| *x == r).ok_or_else(|| {
            MatrixError::Usage(format!("--modes: unknown replication {r:?} (none, async, sync, raft)"))
        })?;
        Ok(Mode { flush, replication })
    }

    pub fn all() -> Vec<Mode> {
        FLUSHES
            .into_iter()
            .flat_map(|flush| {
                REPLICATIONS
                    .into_iter()
                    .map(move |replication| Mode { flush, replication })
            })
            .collect()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Kill,
    PowerLoss,
    PrimaryLoss,
    Partition,
    CorruptMinority,
    DiskFull,
}

impl Fault {
    pub const ALL: [Fault; 6] = [
        Fault::Kill,
        Fault::PowerLoss,
        Fault::PrimaryLoss,
        Fault::Partition,
        Fault::CorruptMinority,
        Fault::DiskFull,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Fault::Kill => "kill",
            Fault::PowerLoss => "power-loss",
            Fault::PrimaryLoss => "primary-loss",
            Fault::Partition => "partition",
            Fault::CorruptMinority => "corrupt-minority",
            Fault::DiskFull => "disk-full",
        }
    }

    pub fn parse(s: &str) -> Result<Fault, MatrixError> {
        Fault::ALL.into_iter().find(|f| f.name() == s).ok_or_else(|| {
            MatrixError::Usage(format!(
                "--faults: unknown fault {s:?} (kill, power-loss, primary-loss, partition, corrupt-minority, disk-full)"
            ))
        })
    }

    /// Why the fault means nothing for `mode`, if it does not.
    pub fn not_applicable(self, mode: Mode) -> Option<&'static str> {
        match (self, mode.replication) {
            (Fault::PrimaryLoss, "none") => Some("one node: losing its data dir loses everything, by definition"),
            (Fault::Partition, "none") => Some("one node: nothing to partition it from"),
            (Fault::CorruptMinority, "none") => Some("one node: no follower to corrupt"),
            _ => None,
        }
    }
}

/// What a run asserts about acknowledged messages, beyond what every run
/// asserts (nothing unexpected, no silent or false loss).
pub fn promise(mode: Mode, fault: Fault) -> Option<&'static str> {
    let replicated_safely = matches!(mode.replication, "sync" | "raft");
    match fault {
        Fault::Kill => Some("nothing acknowledged lost: a killed process keeps the page cache"),
        Fault::DiskFull => Some("nothing acknowledged lost; writes refused while full, resumed after"),
        Fault::PowerLoss if mode.flush == "sync" => Some("nothing acknowledged lost: acknowledged after fsync"),
        Fault::PrimaryLoss | Fault::Partition | Fault::CorruptMinority if replicated_safely => {
            Some("nothing acknowledged lost: acknowledged after another member had it")
        }
        _ => None,
    }
}

/// Shape of every run.
#[derive(Debug, Clone)]
pub struct Options {
    pub runs: Vec<(Mode, Fault)>,
    pub quick: bool,
    pub producers: u32,
    pub inflight: usize,
    pub body: usize,
    /// Workload before the fault, and after recovery.
    pub before: Duration,
    pub after: Duration,
    /// How long a partition or a full disk lasts.
    pub hold: Duration,
    /// The `waybill` executable the members run.
    pub exe: PathBuf,
    /// Extra `serve` flags for every member (the checker's own test passes
    /// the hidden `--unsafe-ack-before-fsync` to break a node on purpose).
    pub node_flags: Vec<String>,
}

/// The quick matrix: one run per promise that matters most, and async rows
/// that must show a loss found by the audit. Under two minutes here.
pub fn quick_runs() -> Vec<(Mode, Fault)> {
    let m = |s: &str| {
        Mode::parse(s).unwrap_or(Mode {
            flush: "sync",
            replication: "none",
        })
    };
    vec![
        (m("sync/none"), Fault::Kill),
        (m("sync/none"), Fault::PowerLoss),
        (m("async/none"), Fault::PowerLoss),
        (m("sync/none"), Fault::DiskFull),
        (m("sync/sync"), Fault::PrimaryLoss),
        (m("async/async"), Fault::PrimaryLoss),
        (m("sync/sync"), Fault::CorruptMinority),
        (m("sync/raft"), Fault::Partition),
        (m("sync/raft"), Fault::CorruptMinority),
    ]
}

/// Every applicable (mode, fault) of `modes` × `faults`, in table order.
pub fn plan(modes: &[Mode], faults: &[Fault]) -> Vec<(Mode, Fault)> {
    let mut out = Vec::new();
    for m in modes {
        for f in faults {
            out.push((*m, *f));
        }
    }
    out
}

impl Options {
    pub fn new(runs: Vec<(Mode, Fault)>, quick: bool, exe: PathBuf) -> Options {
        Options {
            runs,
            quick,
            producers: if quick { 2 } else { 4 },
            inflight: if quick { 8 } else { 16 },
            body: 256,
            before: Duration::from_millis(if quick { 1500 } else { 4000 }),
            after: Duration::from_millis(if quick { 1500 } else { 4000 }),
            hold: Duration::from_millis(if quick { 2500 } else { 4000 }),
            exe,
            node_flags: Vec::new(),
        }
    }
}

/// Runs every planned run in turn; `progress(done, total, cell)` after each.
pub async fn run_all(opts: &Options, mut progress: impl FnMut(usize, usize, &Cell)) -> Report {
    let started = crate::time::rfc3339(crate::time::now_ms());
    let t0 = std::time::Instant::now();
    let mut rows = Vec::new();
    let total = opts.runs.len();
    for (i, (mode, fault)) in opts.runs.iter().enumerate() {
        let cell = run_one(*mode, *fault, opts).await;
        progress(i + 1, total, &cell);
        rows.push(cell);
    }
    let mut report = Report {
        started,
        duration_ms: t0.elapsed().as_millis() as u64,
        quick: opts.quick,
        passed: true,
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        rows,
    };
    report.passed = report.failed().is_empty();
    report
}
