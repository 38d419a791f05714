//! Injecting one fault into a running group while the workload runs, and
//! bringing the group back (restart, promotion or election, heal).
//!
//! Each injection says how much acknowledged data was at risk when it
//! struck (`in_flight_at_fault`), from the node's own figures read at the fault: a
//! power cut's report of unsynced bytes, or the positions in the last
//! status read before a kill. Zero there means the fault could not have
//! lost anything, and an async row then proves nothing.

use std::path::Path;
use std::time::Duration;

use super::group::{self, Group};
use super::{Fault, MatrixError};
use crate::storage::fs::Fs;
use crate::storage::powercut;

/// Free space the filler leaves: under every member's 64 MiB write
/// reserve, so the gate must refuse, and more than a 100 ms free-space
/// refresh of writes can take (see the README: another process taking
/// the last few MiB between two measurements makes a write fail, and the
/// store then refuses writes until restarted).
const FREE_WHEN_FULL: u64 = 16 << 20;

/// How long the writer's links are cut before a primary loss.
const LAG: Duration = Duration::from_millis(500);

/// How long a partition or a full disk lasts.
pub struct Timing {
    pub hold: Duration,
}

/// What an injection did.
#[derive(Debug, Default)]
pub struct Injected {
    /// Log position from which acknowledged messages were at risk.
    pub at_risk_from: Option<u64>,
    pub in_flight_what: String,
    pub detail: Vec<String>,
    /// Members restarted after a crash: their start-up audit must finish.
    pub audited: Vec<u16>,
    /// Members that hold a copy worth checking besides the writer.
    pub also_read: Vec<u16>,
    /// When the fault struck (ms since the workload started), if later
    /// than the moment the injection began.
    pub struck_ms: Option<u64>,
    /// For a full disk: ms (since the workload started) it was full, and
    /// whether the full member was the writer (else the group must go on).
    pub full: Option<(u64, u64)>,
    pub full_was_writer: bool,
    /// Problems found while injecting (e.g. writes never refused).
    pub problems: Vec<String>,
}

/// The log end and fsynced end member `id` reported, if it answered.
async fn positions(group: &Group, id: u16) -> Option<(u64, u64)> {
    let v = group.status(id).await.ok()?;
    let me = v["nodes"].as_array()?.iter().find(|n| n["self"] == true)?.clone();
    Some((me["log_end"].as_u64()?, me["flushed"].as_u64()?))
}

/// Injects `fault`, with `writer` the member taking writes, and waits for
/// the group to take writes again; returns what happened and the writer.
pub async fn inject(
    fault: Fault,
    group: &mut Group,
    writer: u16,
    timing: &Timing,
    started: std::time::Instant,
) -> Result<(Injected, u16), MatrixError> {
    let mut out = Injected::default();
    let now = || started.elapsed().as_millis() as u64;
    let follower = group
        .members
        .iter()
        .map(|m| m.id)
        .find(|id| *id != writer)
        .unwrap_or(writer);
    let writer_after = match fault {
        Fault::Kill => {
            if let Some((end, flushed)) = positions(group, writer).await {
                out.at_risk_from = Some(flushed.min(end));
                out.in_flight_what = "acknowledged messages past the fsynced end at the last status before the kill (a kill keeps the page cache: not at risk)".into();
            }
            group.member(writer).kill().await;
            out.struck_ms = Some(now());
            out.detail.push(format!("SIGKILL node {writer} (the writer)"));
            tokio::time::sleep(Duration::from_millis(300)).await;
            group.restart(writer).await?;
            out.detail.push(format!("restarted node {writer}"));
            out.audited.push(writer);
            group.settle(&[]).await?
        }
        Fault::PowerLoss => {
            // Cut while the log has bytes past its fsynced end, as a power
            // cut under load would: with async flush the flusher may have
            // caught up at any one instant, and a cut then tests nothing.
            // Bounded (2 s); the cut happens either way.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
            while tokio::time::Instant::now() < deadline {
                if positions(group, writer)
                    .await
                    .is_some_and(|(end, flushed)| end > flushed)
                {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            group.member(writer).signal_and_wait("USR2").await?;
            out.struck_ms = Some(now());
            let report_path = group.member(writer).data_dir.join(powercut::REPORT);
            let report = std::fs::read_to_string(&report_path)
                .map_err(MatrixError::io(format!("node {writer} left no power-cut report")))?;
            let v: serde_json::Value = serde_json::from_str(&report).unwrap_or_default();
            out.at_risk_from = durable_log_end(&v);
            out.in_flight_what = "acknowledged messages past the fsynced end of the commit log at the power cut".into();
            out.detail.push(format!(
                "power cut on node {writer} (the writer): unsynced writes torn, {} unsynced bytes, {} of them in the commit log",
                v["unsynced_bytes"], v["unsynced_log_bytes"]
            ));
            match group.restart(writer).await {
                Ok(()) => {
                    out.detail
                        .push(format!("restarted node {writer} on what its disk kept"));
                    out.audited.push(writer);
                    group.settle(&[]).await?
                }
                Err(_) if group.members.len() > 1 => {
                    // The group goes on without it; the run says why it stays down.
                    let last = last_line(&group.member(writer).log_tail());
                    out.problems
                        .push(format!("node {writer} could not restart after the power cut: {last}"));
                    group.settle(&[writer]).await?
                }
                Err(e) => return Err(e),
            }
        }
        Fault::PrimaryLoss => {
            // On loopback a replica keeps up to the byte; a real one lags
            // under load. Cut the writer's links first, so it dies with
            // writing its replicas never got: what async replication acks
            // then is at risk, and sync replication must refuse to ack it.
            group.partition(writer, true);
            tokio::time::sleep(LAG).await;
            group.member(writer).kill().await;
            out.struck_ms = Some(now());
            group.partition(writer, false);
            out.detail.push(format!(
                "node {writer}'s links to the other members cut for {LAG:?} (replication lags), then"
            ));
            // What the survivors hold once the writer is gone: acknowledged
            // messages past it were never replicated.
            out.at_risk_from = best_survivor_end(group, writer).await;
            out.in_flight_what =
                "acknowledged messages past the furthest surviving replica's log end when the writer died".into();
            group.member(writer).wipe()?;
            out.detail.push(format!(
                "node {writer} (the writer) killed and its data dir removed for good"
            ));
            let after = if group.mode.replication != "raft" {
                let target = promote_target(group, writer).await.unwrap_or(follower);
                let base = group.member(target).base();
                group::post_json(&format!("{base}/api/v1/cluster/promote")).await?;
                out.detail.push(format!("promoted node {target}"));
                let w = group.settle(&[writer]).await?;
                // A new disk, the old trace store: the node rejoins as a
                // replica and its audit names what the group never got.
                group.restart(writer).await?;
                out.detail.push(format!(
                    "node {writer} restarted on an empty data dir (its trace store kept) and rejoined as a replica"
                ));
                out.audited.push(writer);
                w
            } else {
                out.detail.push("the remaining members elected a leader; node {writer} stays down (a Raft member with a lost disk must not vote again)".replace("{writer}", &writer.to_string()));
                group.settle(&[writer]).await?
            };
            after
        }
        Fault::Partition => {
            let victim = if group.mode.replication == "raft" {
                writer
            } else {
                follower
            };
            group.partition(victim, true);
            out.detail.push(format!(
                "node {victim} ({}) cut off from the others for {:?}",
                if victim == writer { "the leader" } else { "a replica" },
                timing.hold
            ));
            tokio::time::sleep(timing.hold).await;
            group.partition(victim, false);
            out.detail.push("healed".into());
            out.in_flight_what =
                "not counted: a partition with a majority intact puts no acknowledged data at risk".into();
            out.also_read.push(victim);
            group.settle(&[]).await?
        }
        Fault::CorruptMinority => {
            group.member(follower).kill().await;
            let dir = group.member(follower).data_dir.clone();
            let (file, at) = flip_a_byte(&dir, group.mode.replication == "raft")?;
            out.detail.push(format!(
                "node {follower} (a follower) stopped; one byte flipped in {file} at offset {at}"
            ));
            match group.restart(follower).await {
                Ok(()) => out.detail.push(format!("restarted node {follower}")),
                Err(_) => {
                    // The member's last words say why (its whole log is in the run's temp dir).
                    let last = last_line(&group.member(follower).log_tail());
                    out.detail
                        .push(format!("node {follower} refused to start on its corrupted log: {last}"));
                }
            }
            out.also_read.push(follower);
            out.in_flight_what = "not counted: the corrupted copy is one follower's".into();
            group.settle(&[]).await.or_else(|_| Ok::<u16, MatrixError>(writer))?
        }
        Fault::DiskFull => {
            let dir = group.member(1).data_dir.clone();
            let filler = dir.parent().unwrap_or(&dir).join("filler");
            fill(&dir, &filler, FREE_WHEN_FULL)?;
            let from = now();
            out.detail.push(format!(
                "node 1's disk filled to under its write reserve{}",
                if writer == 1 { " (the writer)" } else { "" }
            ));
            tokio::time::sleep(timing.hold).await;
            std::fs::remove_file(&filler).map_err(MatrixError::io("cannot remove the filler"))?;
            let to = now();
            out.full = Some((from, to));
            out.full_was_writer = writer == 1;
            out.detail.push(format!("space returned after {:?}", timing.hold));
            group.settle(&[]).await?
        }
    };
    Ok((out, writer_after))
}

/// The last line of a member's log: its last words when it would not start.
fn last_line(log: &str) -> String {
    log.lines().last().unwrap_or("").chars().take(400).collect()
}

/// From a power-cut report: the commit log's durable end (the last
/// segment's base plus what of it was durable).
fn durable_log_end(v: &serde_json::Value) -> Option<u64> {
    v["files"]
        .as_array()?
        .iter()
        .filter_map(|f| {
            let path = f["path"].as_str()?;
            let name = path.strip_prefix("log/")?.strip_suffix(".log")?;
            let base: u64 = name.parse().ok()?;
            Some(base + f["durable_len"].as_u64()?)
        })
        .max()
}

/// The furthest log end any member but `lost` reports about itself.
async fn best_survivor_end(group: &Group, lost: u16) -> Option<u64> {
    let mut best = None;
    for m in group.members.iter().filter(|m| m.id != lost) {
        let Ok(v) = group.status(m.id).await else { continue };
        let end = v["nodes"]
            .as_array()
            .and_then(|a| a.iter().find(|n| n["self"] == true))
            .and_then(|n| n["log_end"].as_u64());
        best = best.max(end);
    }
    best
}

/// The live replica holding the most of the log (promoting a laggard is refused).
async fn promote_target(group: &Group, lost: u16) -> Option<u16> {
    let mut best: Option<(u64, u16)> = None;
    for m in group.members.iter().filter(|m| m.id != lost) {
        let Ok(v) = group.status(m.id).await else { continue };
        let end = v["nodes"]
            .as_array()
            .and_then(|a| a.iter().find(|n| n["self"] == true))
            .and_then(|n| n["log_end"].as_u64())
            .unwrap_or(0);
        if best.is_none_or(|(e, _)| end > e) {
            best = Some((end, m.id));
        }
    }
    best.map(|(_, id)| id)
}

/// Flips one byte in the middle of the follower's Raft log (Raft) or first
/// commit log segment (primary/replica): written and fsynced long before.
fn flip_a_byte(dir: &Path, raft: bool) -> Result<(String, u64), MatrixError> {
    let path = if raft {
        dir.join("raft").join("raft.log")
    } else {
        let log = dir.join("log");
        let mut names: Vec<_> = std::fs::read_dir(&log)
            .map_err(MatrixError::io(format!("cannot list {}", log.display())))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        names.sort();
        names
            .into_iter()
            .next()
            .ok_or_else(|| MatrixError::Node(format!("no segment in {}", log.display())))?
    };
    let mut bytes = std::fs::read(&path).map_err(MatrixError::io(format!("cannot read {}", path.display())))?;
    if bytes.is_empty() {
        return Err(MatrixError::Node(format!("{} is empty", path.display())));
    }
    let at = bytes.len() / 2;
    bytes[at] ^= 0x5a;
    std::fs::write(&path, &bytes).map_err(MatrixError::io(format!("cannot write {}", path.display())))?;
    let rel = path.strip_prefix(dir).unwrap_or(&path).display().to_string();
    Ok((rel, at as u64))
}

/// Writes `filler` until the file system holding `dir` has less than
/// `leave` bytes free.
fn fill(dir: &Path, filler: &Path, leave: u64) -> Result<(), MatrixError> {
    let free = crate::storage::fs::RealFs
        .available(dir)
        .map_err(MatrixError::io("cannot read the free space"))?;
    let size = free.saturating_sub(leave);
    let f = std::fs::File::create(filler).map_err(MatrixError::io("cannot create the filler"))?;
    let chunk = vec![0u8; 1 << 20];
    let mut done = 0u64;
    let mut w = std::io::BufWriter::new(f);
    while done < size {
        let n = (size - done).min(chunk.len() as u64) as usize;
        if std::io::Write::write_all(&mut w, &chunk[..n]).is_err() {
            break;
        }
        done += n as u64;
    }
    let _ = std::io::Write::flush(&mut w);
    Ok(())
}
