//! A real process whose engine files live on the fault-injecting file
//! system, so a power loss can be simulated on one node of a real cluster
//! (the hidden `serve --fault-fs` flag; `waybill matrix` uses it).
//!
//! At start every file the engine owns — the commit log, the indexes, the
//! checkpoint, the clean-shutdown marker and the Raft log (see [`owned`]) —
//! is loaded from the real data dir into a [`FaultFs`] as durable. From then
//! on those files live in memory with the FaultFs's promise: a byte is
//! durable only after a successful `sync` (a name only after `sync_dir`).
//! [`PowerCut::cut`] pulls the plug: the unsynced bytes are dropped (or
//! torn), every handle from before dies, and what the "disk" durably held is
//! written over the engine's files in the real dir and fsynced, with a
//! report of what each file lost (`power-cut.json`). The caller exits at once, without any
//! shutdown step, so nothing after the cut can make data durable.
//!
//! Files outside the engine's (cluster state, the Raft vote, the trace
//! store) stay on the real disk: they are written with fsync-before-rename
//! or by SQLite, durable before their writer goes on, and a real power
//! loss would leave them as they are.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

use super::faultfs::{FaultFs, PowerLoss};
use super::fs::Fs;

/// The report a cut leaves in the data dir.
pub const REPORT: &str = "power-cut.json";

/// True for a path (relative to the data dir) the engine writes through
/// [`Fs`]: the commit log, the indexes, the checkpoint, the clean-shutdown
/// marker, the Raft log.
pub fn owned(rel: &Path) -> bool {
    let mut parts = rel.components().map(|c| c.as_os_str().to_string_lossy().into_owned());
    match parts.next().as_deref() {
        Some("log") | Some("index") => true,
        Some(first) if first.starts_with("checkpoint") => rel.components().count() == 1,
        Some(super::clean::FILE) => parts.next().is_none(),
        Some("raft") => parts.next().as_deref() == Some("raft.log") && parts.next().is_none(),
        _ => false,
    }
}

/// What one file lost at the cut.
#[derive(Debug, Clone, Serialize)]
pub struct FileCut {
    pub path: String,
    pub durable_len: u64,
    pub written_len: u64,
}

/// What a cut did, as written to [`REPORT`].
#[derive(Debug, Clone, Serialize)]
pub struct CutReport {
    pub mode: &'static str,
    /// Bytes written but never synced, over every engine file.
    pub unsynced_bytes: u64,
    /// The same for the commit log alone (where messages live).
    pub unsynced_log_bytes: u64,
    pub files: Vec<FileCut>,
}

/// The engine's files on a [`FaultFs`], loaded from and cut back to `dir`.
pub struct PowerCut {
    dir: PathBuf,
    fs: FaultFs,
}

impl PowerCut {
    /// Loads the engine's files under `dir` (if any) as durable.
    pub fn load(dir: &Path) -> io::Result<PowerCut> {
        let fs = FaultFs::new();
        let mut files = Vec::new();
        walk(dir, &mut files)?;
        let mut parents = std::collections::BTreeSet::new();
        for path in files {
            let Ok(rel) = path.strip_prefix(dir) else { continue };
            if !owned(rel) {
                continue;
            }
            let bytes = std::fs::read(&path)?;
            let f = fs.open(&path, true)?;
            f.write_at(&bytes, 0)?;
            f.sync()?;
            if let Some(p) = path.parent() {
                parents.insert(p.to_path_buf());
            }
        }
        for p in parents {
            fs.sync_dir(&p)?;
        }
        Ok(PowerCut {
            dir: dir.to_path_buf(),
            fs,
        })
    }

    /// The file system the engine must use.
    pub fn fs(&self) -> Arc<dyn Fs> {
        Arc::new(self.fs.clone())
    }

    /// Pulls the plug and writes what survived back to the real dir.
    pub fn cut(&self, mode: PowerLoss) -> io::Result<CutReport> {
        let lost = self.fs.power_loss(mode);
        let mut report = CutReport {
            mode: match mode {
                PowerLoss::DropUnsynced => "drop",
                PowerLoss::Tear { .. } => "tear",
                PowerLoss::ProcessCrash => "process-crash",
            },
            unsynced_bytes: 0,
            unsynced_log_bytes: 0,
            files: Vec::new(),
        };
        for (path, f) in &lost {
            let unsynced = f.written_len.saturating_sub(f.durable_len);
            report.unsynced_bytes += unsynced;
            let rel = path.strip_prefix(&self.dir).unwrap_or(path);
            if rel.starts_with("log") {
                report.unsynced_log_bytes += unsynced;
            }
            report.files.push(FileCut {
                path: rel.display().to_string(),
                durable_len: f.durable_len,
                written_len: f.written_len,
            });
        }
        // The rebooted disk, written over the engine's files.
        let survived = self.fs.reboot().files()?;
        let mut old = Vec::new();
        walk(&self.dir, &mut old)?;
        for path in old {
            if path.strip_prefix(&self.dir).is_ok_and(owned) {
                std::fs::remove_file(&path)?;
            }
        }
        let mut parents = std::collections::BTreeSet::new();
        for (path, bytes) in survived {
            if let Some(p) = path.parent() {
                std::fs::create_dir_all(p)?;
                parents.insert(p.to_path_buf());
            }
            let mut f = std::fs::File::create(&path)?;
            io::Write::write_all(&mut f, &bytes)?;
            f.sync_all()?;
        }
        for p in parents {
            std::fs::File::open(&p)?.sync_all()?;
        }
        let json = serde_json::to_vec_pretty(&report).map_err(io::Error::other)?;
        let mut f = std::fs::File::create(self.dir.join(REPORT))?;
        io::Write::write_all(&mut f, &json)?;
        f.sync_all()?;
        Ok(report)
    }
}

/// Every regular file under `dir` (none when it does not exist).
fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_dir() {
            walk(&entry.path(), out)?;
        } else if kind.is_file() {
            out.push(entry.path());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_engines_files_are_owned() {
        for p in [
            "log/00000000000000000000",
            "index/queues/t/0",
            "checkpoint",
            "raft/raft.log",
        ] {
            assert!(owned(Path::new(p)), "{p}");
        }
        for p in [
            "trace.db",
            "cluster.json",
            "raft/raft.vote",
            "power-cut.json",
            "x/checkpoint",
        ] {
            assert!(!owned(Path::new(p)), "{p}");
        }
    }

    #[test]
    fn a_cut_keeps_synced_bytes_drops_the_rest_and_leaves_other_files_alone() -> io::Result<()> {
        let tmp = tempfile::tempdir()?;
        let dir = tmp.path();
        std::fs::create_dir_all(dir.join("log"))?;
        std::fs::write(dir.join("log/0"), b"old")?;
        std::fs::write(dir.join("trace.db"), b"sqlite")?;
        let cut = PowerCut::load(dir)?;
        let fs = cut.fs();
        let seg = fs.open(&dir.join("log/0"), false)?;
        seg.write_at(b"+synced", 3)?;
        seg.sync()?;
        seg.write_at(b"+lost", 10)?;
        let fresh = fs.open(&dir.join("log/1"), true)?;
        fresh.write_at(b"never named durably", 0)?;
        fresh.sync()?;
        let report = cut.cut(PowerLoss::DropUnsynced)?;
        assert_eq!(std::fs::read(dir.join("log/0"))?, b"old+synced");
        // Its name was never made durable by a directory sync.
        assert!(!dir.join("log/1").exists());
        assert_eq!(std::fs::read(dir.join("trace.db"))?, b"sqlite");
        // Only durable names are reported; the vanished file is not counted.
        assert_eq!(report.unsynced_log_bytes, 5);
        // A handle from before the cut fails after it.
        assert!(seg.write_at(b"x", 0).is_err());
        assert!(dir.join(REPORT).exists());
        Ok(())
    }
}
