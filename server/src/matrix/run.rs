//! One matrix run: group up, workload, fault, recovery, check, verdict.
//!
//! A run never panics and never leaves a process behind: every member is
//! killed when the [`Group`] drops (kill-on-drop children), a tmpfs is
//! unmounted when its guard drops, the temp dir goes with the run. A run
//! that cannot be carried out ends as `error` (or `skipped` when this
//! machine lacks what it needs), with the reason.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;
use std::time::{Duration, Instant};

use super::check::{self, FinalLog};
use super::faults::{self, Injected, Timing};
use super::group::{self, Group, Needs};
use super::report::{verdict, Cell, LostMessage};
use super::workload::{Outcome, Sent, Workload};
use super::{promise, Fault, MatrixError, Mode, Options};
use crate::broker::MessageId;

/// How long the consumer group gets to catch up after the producers stop.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(8);
/// How long a restarted member's start-up audit may take.
const AUDIT_TIMEOUT: Duration = Duration::from_secs(30);
/// Lost messages whose timelines are kept per run.
const TIMELINES: usize = 20;

/// Size of the tmpfs a disk-full run gives node 1 (beyond its write reserve).
const TMPFS_MB: u64 = 512;

enum Failure {
    Skip(String),
    Error(MatrixError),
}

impl From<MatrixError> for Failure {
    fn from(e: MatrixError) -> Self {
        Failure::Error(e)
    }
}

/// Runs `fault` against `mode` and judges it.
pub async fn run_one(mode: Mode, fault: Fault, opts: &Options) -> Cell {
    let mut cell = Cell {
        flush: mode.flush.into(),
        replication: mode.replication.into(),
        fault: fault.name().into(),
        promise: promise(mode, fault)
            .unwrap_or("may lose what was at risk; every loss found by the audit")
            .into(),
        ..Cell::default()
    };
    if let Some(why) = fault.not_applicable(mode) {
        cell.verdict = verdict::NOT_APPLICABLE.into();
        cell.reasons.push(why.into());
        return cell;
    }
    let t0 = Instant::now();
    match attempt(mode, fault, opts, &mut cell).await {
        Ok(injected) => judge(&mut cell, mode, fault, &injected),
        Err(Failure::Skip(why)) => {
            cell.verdict = verdict::SKIPPED.into();
            cell.reasons.push(why);
        }
        Err(Failure::Error(e)) => {
            cell.verdict = verdict::ERROR.into();
            cell.reasons.push(e.to_string());
        }
    }
    cell.duration_ms = t0.elapsed().as_millis() as u64;
    cell
}

async fn attempt(mode: Mode, fault: Fault, opts: &Options, cell: &mut Cell) -> Result<Injected, Failure> {
    let root = tempfile::Builder::new()
        .prefix("waybill-matrix-")
        .tempdir()
        .map_err(MatrixError::io("cannot create a temp dir"))?;
    let mut needs = Needs {
        fault_fs: fault == Fault::PowerLoss,
        node1_dir: None,
        extra: opts.node_flags.clone(),
    };
    needs
        .extra
        .extend(["--queues-per-topic".to_string(), check::QUEUES.to_string()]);
    let _disk = if fault == Fault::DiskFull {
        let disk = Tmpfs::mount(&root.path().join("disk1"), TMPFS_MB).map_err(Failure::Skip)?;
        needs.node1_dir = Some(disk.dir.clone());
        Some(disk)
    } else {
        None
    };
    let mut group = Group::start(mode, root.path(), &opts.exe, &needs).await?;
    let writer = group.settle(&[]).await?;
    let tag = format!("m{:x}", crate::time::now_ms());
    let writer_broker = group.member(writer).broker.clone();
    let mut load = Workload::start(
        &tag,
        group.brokers(Some(writer)),
        &writer_broker,
        opts.producers,
        opts.inflight,
        opts.body,
    )
    .await?;
    tokio::time::sleep(opts.before).await;
    let fault_at = load.started.elapsed().as_millis() as u64;
    let timing = Timing { hold: opts.hold };
    let (injected, writer) = faults::inject(fault, &mut group, writer, &timing, load.started).await?;
    let struck = injected.struck_ms.unwrap_or(fault_at);
    let writer_broker = group.member(writer).broker.clone();
    load.consume_at(&writer_broker).await;
    tokio::time::sleep(opts.after).await;
    let sent = load.stop_producing().await;
    let writer = group.settle(&[]).await.unwrap_or(writer);
    let final_log = check::read_log(&group.member(writer).broker.clone(), &tag, opts.body).await?;
    let drain = Instant::now() + DRAIN_TIMEOUT;
    while load.consumed() < final_log.bodies.len() && Instant::now() < drain {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    load.stop_consuming().await;
    for id in &injected.audited {
        wait_audit(&group.member(*id).base()).await?;
    }
    let dbs: Vec<PathBuf> = group.members.iter().map(|m| m.trace_db.clone()).collect();
    let audit = check::read_audit(&dbs).await?;
    let deliveries = load.deliveries.lock().map(|d| d.clone()).unwrap_or_default();
    let lost = check::count(cell, &sent, fault_at, &final_log, &deliveries, &audit);
    cell.fault_detail = injected.detail.clone();
    cell.in_flight_what = injected.in_flight_what.clone();
    if let Some(from) = injected.at_risk_from {
        cell.in_flight_at_fault = Some(at_risk(&sent, struck, from));
    }
    for id in &injected.also_read {
        check_copy(&mut group, *id, &tag, opts.body, &final_log, &sent, cell).await;
    }
    if let Some((from, to)) = injected.full {
        disk_full_outcome(&sent, from, to, injected.full_was_writer, cell);
    }
    cell.lost_ids = lost.iter().map(|(id, _)| id.clone()).collect();
    for (id, key) in lost.iter().take(TIMELINES) {
        let (found, stage) = check::found(&audit, id);
        cell.lost_messages.push(LostMessage {
            id: id.clone(),
            key: key.clone(),
            stage,
            found: found.into(),
            timeline: timeline(&mut group, id).await,
        });
    }
    group.stop().await;
    Ok(injected)
}

/// Acknowledged before the fault, at log positions from `from` on.
fn at_risk(sent: &[Sent], struck_ms: u64, from: u64) -> u64 {
    sent.iter()
        .filter(|s| s.at_ms <= struck_ms)
        .filter_map(|s| match &s.outcome {
            Outcome::Acked { id } => MessageId::from_str(id).ok(),
            _ => None,
        })
        .filter(|id| id.pos >= from)
        .count() as u64
}

/// A member besides the writer (a healed or corrupted follower): it must
/// serve nothing this run did not send, and says how much it holds.
async fn check_copy(
    group: &mut Group,
    id: u16,
    tag: &str,
    size: usize,
    writer_log: &FinalLog,
    sent: &[Sent],
    cell: &mut Cell,
) {
    if !group.member(id).running() {
        cell.fault_detail
            .push(format!("node {id} is not running at the end of the run"));
        return;
    }
    // A follower applies what it was missing after it rejoins: give it a moment.
    let mut copy = None;
    for _ in 0..50 {
        match check::read_log(&group.member(id).broker.clone(), tag, size).await {
            Ok(log) => {
                // Caught up, or no longer catching up (a record it cannot
                // serve keeps it one short for good): each read is a full one.
                let stalled = copy
                    .as_ref()
                    .is_some_and(|c: &FinalLog| c.bodies.len() == log.bodies.len());
                let done = log.bodies.len() >= writer_log.bodies.len() || stalled;
                copy = Some(log);
                if done {
                    break;
                }
            }
            Err(e) => {
                cell.fault_detail.push(format!("node {id} could not be read: {e}"));
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let Some(copy) = copy else { return };
    let acked = sent.iter().filter(|s| matches!(s.outcome, Outcome::Acked { .. }));
    let held = acked
        .clone()
        .filter(|s| copy.bodies.contains_key(&(s.producer, s.seq)))
        .count();
    cell.fault_detail.push(format!(
        "node {id} serves {held} of {} acknowledged messages and {} unexpected record(s)",
        acked.count(),
        copy.unexpected.len()
    ));
    if !copy.unexpected.is_empty() {
        cell.unexpected += copy.unexpected.len() as u64;
        cell.reasons.push(format!(
            "node {id} serves {} record(s) this run never sent (first {})",
            copy.unexpected.len(),
            copy.unexpected[0]
        ));
    }
}

/// A full disk must refuse writes clearly and take them again afterwards;
/// a full follower's group goes on writing.
fn disk_full_outcome(sent: &[Sent], from: u64, to: u64, writer: bool, cell: &mut Cell) {
    let acked = |s: &&Sent| matches!(s.outcome, Outcome::Acked { .. });
    // The first moments after the fill may still see acks already in flight.
    let during: Vec<&Sent> = sent.iter().filter(|s| s.at_ms > from + 300 && s.at_ms <= to).collect();
    let refused: Vec<&&Sent> = during.iter().filter(|s| !acked(s)).collect();
    let acked_during = during.iter().filter(|s| acked(s)).count();
    let resumed = sent.iter().filter(|s| s.at_ms > to + 200).filter(acked).count();
    let first = refused.first().map(|s| match &s.outcome {
        Outcome::Refused { status } => status.clone(),
        Outcome::Unknown { error } => error.clone(),
        Outcome::Acked { .. } => String::new(),
    });
    cell.fault_detail.push(format!(
        "{} send(s) refused and {acked_during} acknowledged while full (first refusal: {}), {resumed} acknowledged after space returned",
        refused.len(),
        first.as_deref().unwrap_or("-")
    ));
    if writer && refused.is_empty() {
        cell.reasons
            .push("no send was refused while the writer's disk was full".into());
    }
    if !writer && acked_during == 0 {
        cell.reasons
            .push("a follower's full disk stopped the group: nothing acknowledged while it was full".into());
    }
    if resumed == 0 {
        cell.reasons.push("writes did not resume after space returned".into());
    }
}

async fn wait_audit(base: &str) -> Result<(), MatrixError> {
    let deadline = Instant::now() + AUDIT_TIMEOUT;
    loop {
        let h = group::get_json(&format!("{base}/healthz")).await?;
        if h["tracer"]["audit"] != "pending" {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(MatrixError::Node(format!(
                "the start-up audit at {base} never finished: {h}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The message's timeline from the member that acknowledged it (else any).
async fn timeline(group: &mut Group, id: &str) -> Option<serde_json::Value> {
    let node = MessageId::from_str(id).ok()?.node;
    let mut order: Vec<u16> = vec![node];
    order.extend(group.members.iter().map(|m| m.id).filter(|m| *m != node));
    for m in order {
        if !group.member(m).running() {
            continue;
        }
        let base = group.member(m).base();
        if let Ok(v) = group::get_json(&format!("{base}/api/v1/messages/{id}")).await {
            return Some(v);
        }
    }
    None
}

fn judge(cell: &mut Cell, mode: Mode, fault: Fault, injected: &Injected) {
    let promised = promise(mode, fault).is_some();
    if cell.acked == 0 {
        cell.reasons
            .push("no message was acknowledged: the workload never ran".into());
    }
    if promised && cell.lost > 0 {
        cell.reasons.push(format!(
            "{} acknowledged message(s) lost (first {})",
            cell.lost,
            cell.lost_messages.first().map_or("?", |m| m.id.as_str())
        ));
    }
    if cell.unexpected > 0 && !cell.reasons.iter().any(|r| r.contains("never sent")) {
        cell.reasons.push(format!(
            "{} record(s) in the final log this run never sent",
            cell.unexpected
        ));
    }
    if cell.silent > 0 {
        cell.reasons.push(format!(
            "{} lost message(s) the audit did not find (silent loss)",
            cell.silent
        ));
    }
    if cell.false_loss > 0 {
        cell.reasons
            .push(format!("the audit called {} present message(s) lost", cell.false_loss));
    }
    if !promised {
        for stage in cell.loss_stages.keys() {
            if stage != "flush" && stage != "replicate" {
                cell.reasons
                    .push(format!("losses attributed to {stage}, expected flush or replicate"));
            }
        }
    }
    cell.reasons.extend(injected.problems.iter().cloned());
    cell.verdict = if !cell.reasons.is_empty() {
        verdict::FAIL.into()
    } else if !promised && cell.in_flight_at_fault == Some(0) && cell.lost == 0 {
        cell.reasons
            .push("nothing was at risk when the fault struck: no loss here proves nothing".into());
        verdict::NOT_EXERCISED.into()
    } else {
        verdict::PASS.into()
    };
}

/// A small tmpfs mounted for one run; unmounted on drop.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    fn mount(dir: &Path, mb: u64) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mb}m"), "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "a full disk is simulated with a small tmpfs, and mounting one needs root: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Tmpfs { dir: dir.to_path_buf() })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}
