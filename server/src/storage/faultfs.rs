//! A fault-injecting, in-memory file system for power-loss and I/O-error tests.
//!
//! It models what a disk promises and nothing more:
//! - every file (inode) keeps its current bytes and the bytes that were
//!   durable at its last successful `sync`;
//! - the directory namespace has a current and a durable view; a created,
//!   renamed or removed name becomes durable only through `sync_dir`;
//! - [`FaultFs::power_loss`] throws away everything that was not made
//!   durable (or, in [`PowerLoss::Tear`] mode, keeps a random-length prefix
//!   of each file's unsynced tail, cutting records in half), and invalidates
//!   every handle from before it — open files *and* `FaultFs` values — so
//!   the crashed engine's threads can neither write, sync, create, remove
//!   nor list anything on the "rebooted" disk. The harness must never lie:
//!   a crashed flusher that could still sync a directory after the cut
//!   would make durable what the crash should have lost. After a power loss
//!   the test takes a fresh view with [`FaultFs::reboot`].
//!
//! Sync failures can be injected with [`FaultFs::fail_syncs`]; a failed sync
//! makes nothing durable, like a real EIO.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use super::fs::{FileHandle, Fs};

/// How a simulated power loss treats bytes that were written but not synced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerLoss {
    /// All unsynced bytes vanish; files shrink to their durable length.
    DropUnsynced,
    /// Each file keeps a pseudo-random prefix (seeded) of its unsynced tail,
    /// so the last record may be cut anywhere: a torn write.
    Tear { seed: u64 },
    /// Not a power loss: the process dies (SIGKILL) and the machine does
    /// not, so every written byte and every name survives (the page cache is
    /// written back); only the crashed process's handles die.
    ProcessCrash,
}

/// What the disk held durably for one file at the moment of a power loss.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DurableFile {
    /// Length that survived a sync before the crash.
    pub durable_len: u64,
    /// Length the file had in memory when the power went.
    pub written_len: u64,
}

#[derive(Default)]
struct Inode {
    data: Vec<u8>,
    durable: Vec<u8>,
    /// Lowest offset written or cut since the last sync: a sync copies
    /// only from there (a whole-file copy per fsync would make long runs
    /// on this layer quadratic).
    dirty: Option<usize>,
}

#[derive(Default)]
struct State {
    inodes: HashMap<u64, Inode>,
    /// Names visible now.
    names: BTreeMap<PathBuf, u64>,
    /// Names that would survive a power loss.
    durable_names: BTreeMap<PathBuf, u64>,
    next_inode: u64,
    /// Bumped by each power loss; handles from an older generation fail.
    generation: u64,
    /// Number of upcoming `sync` calls that fail with EIO.
    failing_syncs: u64,
    syncs: u64,
    /// When set, the next `write_at` blocks on it (see [`FaultFs::stall_next_write`]).
    stall: Option<Arc<Stall>>,
    /// When set, every `sync` blocks on it until released ([`FaultFs::stall_syncs`]).
    sync_stall: Option<Arc<Stall>>,
    /// Size of the disk in bytes (sum of all file lengths); `None` = unlimited.
    capacity: Option<u64>,
}

impl State {
    fn used(&self) -> u64 {
        self.inodes.values().map(|n| n.data.len() as u64).sum()
    }
}

/// A write held back until the test releases it, to force an interleaving.
#[derive(Default)]
pub struct Stall {
    // std Mutex + Condvar: the stalled caller is a plain thread (the
    // flusher); the flag pair is all the state there is.
    state: Mutex<(bool, bool)>, // (a writer is waiting, released)
    changed: std::sync::Condvar,
}

impl Stall {
    /// Blocks until a write is held here (at most `limit`); true if one is.
    pub fn wait_until_held(&self, limit: std::time::Duration) -> bool {
        let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (st, _) = self
            .changed
            .wait_timeout_while(st, limit, |s| !s.0)
            .unwrap_or_else(|p| p.into_inner());
        st.0
    }

    /// Lets the held write go on (it then fails if a power loss came first).
    pub fn release(&self) {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).1 = true;
        self.changed.notify_all();
    }

    fn hold(&self) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.0 = true;
        self.changed.notify_all();
        while !st.1 {
            st = self.changed.wait(st).unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// The fault-injecting file system; cheap to clone (shared state). A value
/// belongs to one power generation: after [`FaultFs::power_loss`] every
/// call on it (and on its clones and its open files) fails.
#[derive(Clone, Default)]
pub struct FaultFs {
    // std Mutex: every operation is a short in-memory copy; never held
    // across an await or another lock.
    state: Arc<Mutex<State>>,
    /// The power generation this view was taken in.
    generation: u64,
}

struct FaultFile {
    state: Arc<Mutex<State>>,
    inode: u64,
    generation: u64,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // A panic while holding this lock can only come from a bug in this
    // module; recovering the guard keeps the other test threads meaningful.
    state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn stale() -> io::Error {
    io::Error::other("file handle from before a simulated power loss")
}

fn stale_fs() -> io::Error {
    io::Error::other("file system view from before a simulated power loss")
}

impl FaultFile {
    fn with<T>(&self, f: impl FnOnce(&mut State, u64) -> io::Result<T>) -> io::Result<T> {
        let mut st = lock(&self.state);
        if st.generation != self.generation {
            return Err(stale());
        }
        f(&mut st, self.inode)
    }
}

fn inode_mut(st: &mut State, id: u64) -> io::Result<&mut Inode> {
    st.inodes
        .get_mut(&id)
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "inode vanished"))
}

impl FileHandle for FaultFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.with(|st, id| {
            let node = inode_mut(st, id)?;
            let start = usize::try_from(offset).map_err(io::Error::other)?;
            if start >= node.data.len() {
                return Ok(0);
            }
            let n = buf.len().min(node.data.len() - start);
            buf[..n].copy_from_slice(&node.data[start..start + n]);
            Ok(n)
        })
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        // Held outside the state lock, so every other operation goes on.
        let stall = lock(&self.state).stall.take();
        if let Some(stall) = stall {
            stall.hold();
        }
        self.with(|st, id| {
            let start = usize::try_from(offset).map_err(io::Error::other)?;
            let end = start + buf.len();
            if let Some(cap) = st.capacity {
                let grow = (end as u64).saturating_sub(inode_mut(st, id)?.data.len() as u64);
                if st.used() + grow > cap {
                    return Err(io::Error::from_raw_os_error(super::fs::ENOSPC));
                }
            }
            let node = inode_mut(st, id)?;
            if node.data.len() < end {
                node.data.resize(end, 0);
            }
            node.data[start..end].copy_from_slice(buf);
            node.dirty = Some(node.dirty.map_or(start, |d| d.min(start)));
            Ok(())
        })
    }

    fn sync(&self) -> io::Result<()> {
        let stall = lock(&self.state).sync_stall.clone();
        if let Some(stall) = stall {
            stall.hold();
        }
        self.with(|st, id| {
            st.syncs += 1;
            if st.failing_syncs > 0 {
                st.failing_syncs -= 1;
                return Err(io::Error::other("injected fsync failure (EIO)"));
            }
            let node = inode_mut(st, id)?;
            let from = node
                .dirty
                .take()
                .unwrap_or(node.data.len())
                .min(node.durable.len())
                .min(node.data.len());
            node.durable.truncate(from);
            node.durable.extend_from_slice(&node.data[from..]);
            Ok(())
        })
    }

    fn len(&self) -> io::Result<u64> {
        self.with(|st, id| Ok(inode_mut(st, id)?.data.len() as u64))
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.with(|st, id| {
            let len = usize::try_from(len).map_err(io::Error::other)?;
            let node = inode_mut(st, id)?;
            let from = len.min(node.data.len());
            node.data.resize(len, 0);
            node.dirty = Some(node.dirty.map_or(from, |d| d.min(from)));
            Ok(())
        })
    }
}

impl Fs for FaultFs {
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn FileHandle>> {
        let mut st = self.current()?;
        let inode = match st.names.get(path) {
            Some(id) => *id,
            None if create => {
                st.next_inode += 1;
                let id = st.next_inode;
                st.inodes.insert(id, Inode::default());
                st.names.insert(path.to_path_buf(), id);
                id
            }
            None => {
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("{} not found", path.display()),
                ))
            }
        };
        Ok(Arc::new(FaultFile {
            state: self.state.clone(),
            inode,
            generation: st.generation,
        }))
    }

    fn create_dir_all(&self, _path: &Path) -> io::Result<()> {
        // Directories are implicit: a name's parent is its directory.
        self.current().map(drop)
    }

    fn list(&self, path: &Path) -> io::Result<Vec<String>> {
        let st = self.current()?;
        let mut out: Vec<String> = Vec::new();
        for name in st.names.keys() {
            if let Ok(rest) = name.strip_prefix(path) {
                if let Some(first) = rest.components().next() {
                    let s = first.as_os_str().to_string_lossy().into_owned();
                    if out.last() != Some(&s) && !out.contains(&s) {
                        out.push(s);
                    }
                }
            }
        }
        out.sort();
        Ok(out)
    }

    fn exists(&self, path: &Path) -> bool {
        let Ok(st) = self.current() else {
            return false;
        };
        st.names.keys().any(|n| n == path || n.starts_with(path))
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut st = self.current()?;
        st.names
            .remove(path)
            .map(|_| ())
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such file"))
    }

    fn available(&self, _path: &Path) -> io::Result<u64> {
        let st = self.current()?;
        Ok(st.capacity.map_or(u64::MAX / 2, |cap| cap.saturating_sub(st.used())))
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        let mut st = self.current()?;
        let current: Vec<(PathBuf, u64)> = st
            .names
            .iter()
            .filter(|(n, _)| n.parent() == Some(path))
            .map(|(n, id)| (n.clone(), *id))
            .collect();
        st.durable_names.retain(|n, _| n.parent() != Some(path));
        st.durable_names.extend(current);
        Ok(())
    }
}

impl FaultFs {
    /// A fresh, empty disk.
    pub fn new() -> Self {
        Self::default()
    }

    /// The state, if this view is still of the current power generation.
    fn current(&self) -> io::Result<MutexGuard<'_, State>> {
        let st = lock(&self.state);
        if st.generation != self.generation {
            return Err(stale_fs());
        }
        Ok(st)
    }

    /// A view of the disk as it is now, after any power losses so far: what
    /// a rebooted machine would mount.
    pub fn reboot(&self) -> FaultFs {
        FaultFs {
            state: self.state.clone(),
            generation: lock(&self.state).generation,
        }
    }

    /// Makes the next `write_at` on any file block until the returned
    /// [`Stall`] is released: the test can then make other threads act
    /// while that write is on its way (e.g. a segment roll during a flusher
    /// write).
    pub fn stall_next_write(&self) -> Arc<Stall> {
        let stall = Arc::new(Stall::default());
        lock(&self.state).stall = Some(stall.clone());
        stall
    }

    /// Makes every `sync` from now on wait until the returned [`Stall`] is
    /// released: what is unsynced stays so while the test looks at it.
    pub fn stall_syncs(&self) -> Arc<Stall> {
        let stall = Arc::new(Stall::default());
        lock(&self.state).sync_stall = Some(stall.clone());
        stall
    }

    /// Sets the disk's size: writes that would grow the files past it fail
    /// with ENOSPC, and [`Fs::available`] reports what is left. `None`
    /// makes it unlimited again (space returns).
    pub fn set_capacity(&self, bytes: Option<u64>) {
        lock(&self.state).capacity = bytes;
    }

    /// Bytes all files hold now.
    pub fn used(&self) -> u64 {
        lock(&self.state).used()
    }

    /// Makes the next `n` calls to `sync` fail with an I/O error.
    pub fn fail_syncs(&self, n: u64) {
        lock(&self.state).failing_syncs = n;
    }

    /// Number of successful and failed `sync` calls so far.
    pub fn sync_count(&self) -> u64 {
        lock(&self.state).syncs
    }

    /// Pulls the plug. Returns, per surviving path, what was durable and
    /// what had been written, measured at the instant of the crash. Every
    /// view and file handle from before it fails from now on, this one too:
    /// continue with [`FaultFs::reboot`].
    pub fn power_loss(&self, mode: PowerLoss) -> BTreeMap<PathBuf, DurableFile> {
        let mut st = lock(&self.state);
        st.generation += 1;
        let mut rng = match mode {
            PowerLoss::Tear { seed } => seed | 1,
            PowerLoss::DropUnsynced | PowerLoss::ProcessCrash => 1,
        };
        if mode == PowerLoss::ProcessCrash {
            let names = st.names.clone();
            let mut report = BTreeMap::new();
            for (path, id) in &names {
                if let Some(node) = st.inodes.get(id) {
                    let len = node.data.len() as u64;
                    report.insert(
                        path.clone(),
                        DurableFile {
                            durable_len: len,
                            written_len: len,
                        },
                    );
                }
            }
            st.durable_names = names;
            for node in st.inodes.values_mut() {
                node.durable = node.data.clone();
            }
            st.failing_syncs = 0;
            return report;
        }
        let mut report = BTreeMap::new();
        let names = st.durable_names.clone();
        let mut alive = HashMap::new();
        for (path, id) in &names {
            let Some(node) = st.inodes.get(id) else {
                continue;
            };
            let durable_len = node.durable.len();
            let mut data = node.durable.clone();
            if let PowerLoss::Tear { .. } = mode {
                // Keep a random prefix of the bytes past the durable length.
                if node.data.len() > durable_len {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    let extra = node.data.len() - durable_len;
                    let keep = (rng % (extra as u64 + 1)) as usize;
                    data.extend_from_slice(&node.data[durable_len..durable_len + keep]);
                }
            }
            report.insert(
                path.clone(),
                DurableFile {
                    durable_len: durable_len as u64,
                    written_len: node.data.len() as u64,
                },
            );
            alive.insert(
                *id,
                Inode {
                    durable: node.durable.clone(),
                    data,
                    dirty: None,
                },
            );
        }
        // After reboot, what is on the platter is what the files hold; the
        // torn prefix is now "durable" in the sense that it is really there.
        for node in alive.values_mut() {
            node.durable = node.data.clone();
        }
        st.inodes = alive;
        st.names = names;
        st.failing_syncs = 0;
        report
    }

    /// Every file this view holds, with its current bytes: what a rebooted
    /// disk shows (see `storage/powercut.rs`, which writes it back to a real
    /// directory).
    pub fn files(&self) -> io::Result<Vec<(PathBuf, Vec<u8>)>> {
        let st = self.current()?;
        Ok(st
            .names
            .iter()
            .filter_map(|(p, id)| st.inodes.get(id).map(|n| (p.clone(), n.data.clone())))
            .collect())
    }

    /// Overwrites one byte of the current contents (bit rot, for recovery tests).
    pub fn corrupt_byte(&self, path: &Path, offset: u64) -> io::Result<()> {
        let mut st = self.current()?;
        let id = *st
            .names
            .get(path)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such file"))?;
        let node = inode_mut(&mut st, id)?;
        let i = usize::try_from(offset).map_err(io::Error::other)?;
        let byte = node
            .data
            .get_mut(i)
            .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "offset past end"))?;
        *byte ^= 0x5a;
        node.durable = node.data.clone();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsynced_bytes_and_names_vanish() -> io::Result<()> {
        let fs = FaultFs::new();
        let dir = Path::new("/d");
        let a = fs.open(&dir.join("a"), true)?;
        a.write_at(b"hello", 0)?;
        a.sync()?;
        fs.sync_dir(dir)?;
        a.write_at(b" world", 5)?;
        let b = fs.open(&dir.join("b"), true)?;
        b.write_at(b"x", 0)?;
        b.sync()?; // synced data, but the name was never made durable
        let report = fs.power_loss(PowerLoss::DropUnsynced);
        let fs = fs.reboot();
        assert_eq!(report[&dir.join("a")].durable_len, 5);
        assert_eq!(report[&dir.join("a")].written_len, 11);
        assert!(!fs.exists(&dir.join("b")));
        let a2 = fs.open(&dir.join("a"), false)?;
        assert_eq!(a2.len()?, 5);
        assert!(a.read_at(&mut [0; 1], 0).is_err(), "old handle must be dead");
        Ok(())
    }

    #[test]
    fn failed_sync_makes_nothing_durable() -> io::Result<()> {
        let fs = FaultFs::new();
        let dir = Path::new("/d");
        let a = fs.open(&dir.join("a"), true)?;
        fs.sync_dir(dir)?;
        a.write_at(b"data", 0)?;
        fs.fail_syncs(1);
        assert!(a.sync().is_err());
        fs.power_loss(PowerLoss::DropUnsynced);
        assert_eq!(fs.reboot().open(&dir.join("a"), false)?.len()?, 0);
        Ok(())
    }

    #[test]
    fn tear_keeps_a_prefix_of_the_unsynced_tail() -> io::Result<()> {
        let fs = FaultFs::new();
        let dir = Path::new("/d");
        let a = fs.open(&dir.join("a"), true)?;
        fs.sync_dir(dir)?;
        a.write_at(&[7u8; 100], 0)?;
        a.sync()?;
        a.write_at(&[9u8; 1000], 100)?;
        fs.power_loss(PowerLoss::Tear { seed: 42 });
        let len = fs.reboot().open(&dir.join("a"), false)?.len()?;
        assert!((100..=1100).contains(&len));
        Ok(())
    }

    #[test]
    fn every_handle_and_view_from_before_a_power_loss_fails_after_it() -> io::Result<()> {
        let fs = FaultFs::new();
        let crashed = fs.clone(); // what the crashed engine's threads hold
        let dir = Path::new("/d");
        let a = fs.open(&dir.join("a"), true)?;
        fs.sync_dir(dir)?;
        a.write_at(b"acked?", 0)?;
        fs.power_loss(PowerLoss::DropUnsynced);
        // Files: no read, write, sync, length change or length query.
        assert!(a.read_at(&mut [0; 1], 0).is_err());
        assert!(a.write_at(b"x", 0).is_err());
        assert!(a.sync().is_err());
        assert!(a.set_len(0).is_err());
        assert!(a.len().is_err());
        // The namespace: no open, create, list, remove or directory sync.
        for view in [&fs, &crashed] {
            assert!(view.open(&dir.join("a"), false).is_err());
            assert!(view.open(&dir.join("new"), true).is_err());
            assert!(view.list(dir).is_err());
            assert!(view.remove_file(&dir.join("a")).is_err());
            assert!(view.sync_dir(dir).is_err());
            assert!(view.create_dir_all(dir).is_err());
            assert!(!view.exists(&dir.join("a")));
        }
        // The rebooted view sees the durable state and works.
        let now = fs.reboot();
        assert_eq!(now.open(&dir.join("a"), false)?.len()?, 0);
        now.sync_dir(dir)?;
        // A second power loss kills the first reboot's view too.
        now.power_loss(PowerLoss::DropUnsynced);
        assert!(now.sync_dir(dir).is_err());
        assert!(now.reboot().sync_dir(dir).is_ok());
        Ok(())
    }
}
