//! What a matrix run found, as stored and shown: one [`Cell`] per
//! (flush, replication, fault), the terminal table, and the last run kept
//! in a node's data dir (`matrix/last.json`) for the dashboard's `/matrix`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Where the last run lives inside a data dir.
pub fn last_run_path(data_dir: &Path) -> PathBuf {
    data_dir.join("matrix").join("last.json")
}

/// How a run ended.
pub mod verdict {
    /// Every assertion held, and a fault that can lose data had data in flight.
    pub const PASS: &str = "pass";
    /// An assertion failed: see the reasons.
    pub const FAIL: &str = "fail";
    /// Nothing was at risk when the fault struck (e.g. no unsynced data
    /// under async flush): no loss proves nothing.
    pub const NOT_EXERCISED: &str = "not exercised";
    /// Could not run here (e.g. no root for a tmpfs); the reason says why.
    pub const SKIPPED: &str = "skipped";
    /// The fault means nothing for this mode (a partition of one node).
    pub const NOT_APPLICABLE: &str = "n/a";
    /// The run itself broke (a node never started); the reason says how.
    pub const ERROR: &str = "error";
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LostMessage {
    pub id: String,
    pub key: String,
    /// The stage the tracer's audit attributed the loss to.
    pub stage: Option<String>,
    /// `named` (the audit marked it lost), `window` (inside a loss window
    /// the audit reported) or `silent` (neither: a checker failure).
    pub found: String,
    /// The message's timeline as its node's API served it at the end of the run.
    pub timeline: Option<Value>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Cell {
    pub flush: String,
    pub replication: String,
    pub fault: String,
    pub verdict: String,
    /// What this run asserts.
    pub promise: String,
    /// Why it failed, was skipped or not exercised.
    pub reasons: Vec<String>,
    /// Acknowledged sends per second and p99 latency before the fault.
    pub msgs_per_sec: f64,
    pub p99_ms: f64,
    pub sent: u64,
    pub acked: u64,
    /// Answered with a status short of `SEND_OK`.
    pub refused: u64,
    /// No answer (timed out, connection lost).
    pub unknown: u64,
    /// Of the unknown ones, how many the final log holds.
    pub unknown_present: u64,
    /// Acknowledged, absent from the final log.
    pub lost: u64,
    /// Bodies the final log holds more than once (a retried send).
    pub duplicated: u64,
    /// Messages the consumer group handled more than once.
    pub duplicated_to_consumers: u64,
    /// Distinct messages the group handled.
    pub consumed: u64,
    /// Present in the final log but never sent by this run (or changed).
    pub unexpected: u64,
    /// Of the lost: named by the audit, inside a reported loss window, neither.
    pub audit_named: u64,
    pub audit_windowed: u64,
    pub silent: u64,
    /// Messages the audit called lost that the final log holds.
    pub false_loss: u64,
    /// Lost messages per stage the audit named.
    pub loss_stages: BTreeMap<String, u64>,
    /// Acknowledged data at risk when the fault struck, and what was counted.
    pub in_flight_at_fault: Option<u64>,
    pub in_flight_what: String,
    /// What the fault did, step by step.
    pub fault_detail: Vec<String>,
    /// Every lost message's id, in send order.
    pub lost_ids: Vec<String>,
    /// The first lost messages, each with how the audit found it and its timeline.
    pub lost_messages: Vec<LostMessage>,
    pub duration_ms: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Report {
    pub started: String,
    pub duration_ms: u64,
    pub quick: bool,
    /// True when no cell failed or errored.
    pub passed: bool,
    pub cores: usize,
    pub rows: Vec<Cell>,
}

impl Report {
    pub fn failed(&self) -> Vec<&Cell> {
        self.rows
            .iter()
            .filter(|c| c.verdict == verdict::FAIL || c.verdict == verdict::ERROR)
            .collect()
    }
}

/// Writes `report` to `path` (creating its folder), pretty JSON.
pub fn save(report: &Report, path: &Path) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let json = serde_json::to_vec_pretty(report).map_err(std::io::Error::other)?;
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, json)?;
    std::fs::rename(&tmp, path)
}

/// The report at `path`; `None` when there is none.
pub fn load(path: &Path) -> std::io::Result<Option<Report>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn in_flight_at_fault(c: &Cell) -> String {
    match c.in_flight_at_fault {
        Some(n) => n.to_string(),
        None => "-".into(),
    }
}

/// The terminal table: one line per cell, then the reasons of every cell
/// that did not pass.
pub fn table(report: &Report) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "{:<6} {:<6} {:<17} {:<14} {:>9} {:>7} {:>7} {:>6} {:>6} {:>6} {:>5} {:>6} {:>9}  {}\n",
        "flush",
        "repl",
        "fault",
        "verdict",
        "msgs/s",
        "p99 ms",
        "acked",
        "lost",
        "unkn",
        "dup",
        "unexp",
        "audit",
        "in flight",
        "loss stages"
    ));
    for c in &report.rows {
        let stages: Vec<String> = c.loss_stages.iter().map(|(s, n)| format!("{s}:{n}")).collect();
        out.push_str(&format!(
            "{:<6} {:<6} {:<17} {:<14} {:>9.0} {:>7.2} {:>7} {:>6} {:>6} {:>6} {:>5} {:>6} {:>9}  {}\n",
            c.flush,
            c.replication,
            c.fault,
            c.verdict,
            c.msgs_per_sec,
            c.p99_ms,
            c.acked,
            c.lost,
            c.unknown,
            c.duplicated_to_consumers,
            c.unexpected,
            format!("{}/{}", c.audit_named + c.audit_windowed, c.lost),
            in_flight_at_fault(c),
            stages.join(" ")
        ));
    }
    for c in report.rows.iter().filter(|c| c.verdict != verdict::PASS) {
        for r in &c.reasons {
            out.push_str(&format!(
                "  {} {}/{} {}: {r}\n",
                c.verdict, c.flush, c.replication, c.fault
            ));
        }
    }
    out
}
