//! The one narrow door between the storage engine and the disk.
//!
//! Every byte the commit log, the indexes and the checkpoint write goes
//! through [`Fs`] and [`FileHandle`]. Production uses [`RealFs`] (positional
//! `pread`/`pwrite` and `fdatasync` on real files); fault tests swap in
//! [`super::faultfs::FaultFs`], which remembers what was synced and can
//! simulate a power loss. Keeping the trait this small is what makes that
//! swap honest: there is no other path to the disk to forget about.
//!
//! Durability contract the engine relies on (and `FaultFs` models):
//! - `write_at` is durable only after `sync` on the same file returns `Ok`.
//! - A newly created or renamed file name is durable only after `sync_dir`
//!   on its parent directory returns `Ok`.
//! - A failed `sync` means the durability of every unsynced byte is unknown;
//!   the engine must never retry and report success (fsyncgate).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

/// An open file addressed by position; all methods take `&self` so readers
/// and the single writer can share one handle without a lock.
pub trait FileHandle: Send + Sync {
    /// Reads up to `buf.len()` bytes at `offset`; returns how many were read
    /// (fewer only at end of file).
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
    /// Writes all of `buf` at `offset`, extending the file if needed.
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Makes every byte written so far (and the file length) durable.
    fn sync(&self) -> io::Result<()>;
    /// Current length in bytes.
    fn len(&self) -> io::Result<u64>;
    /// True for an empty file.
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }
    /// Truncates or extends the file to `len` bytes (durable after `sync`).
    fn set_len(&self, len: u64) -> io::Result<()>;
}

/// A directory tree the engine can create files in.
pub trait Fs: Send + Sync + 'static {
    /// Opens `path` for reading and writing, creating it when `create`.
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn FileHandle>>;
    /// Creates `path` and its parents.
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Names (not paths) of the entries directly inside `path`.
    fn list(&self, path: &Path) -> io::Result<Vec<String>>;
    /// True when `path` names a file or directory.
    fn exists(&self, path: &Path) -> bool;
    /// Removes the file at `path`.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Makes the entries of directory `path` (creations, removals) durable.
    fn sync_dir(&self, path: &Path) -> io::Result<()>;
    /// Bytes an unprivileged writer can still add to the file system that
    /// holds `path` (statvfs `f_bavail × f_frsize`).
    fn available(&self, path: &Path) -> io::Result<u64>;
}

/// True for "no space left on device".
pub fn is_enospc(e: &io::Error) -> bool {
    e.raw_os_error() == Some(ENOSPC) || e.kind() == io::ErrorKind::StorageFull
}

/// Linux's errno for a full file system.
pub const ENOSPC: i32 = 28;

/// The real file system.
#[derive(Debug, Default, Clone)]
pub struct RealFs;

struct RealFile {
    file: File,
}

impl FileHandle for RealFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let mut done = 0;
        while done < buf.len() {
            match self.file.read_at(&mut buf[done..], offset + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.file.write_all_at(buf, offset)
    }

    fn sync(&self) -> io::Result<()> {
        // fdatasync: flushes the data and the metadata needed to read it back
        // (including a changed length), skipping timestamps.
        self.file.sync_data()
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }
}

impl Fs for RealFs {
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn FileHandle>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .truncate(false)
            .open(path)?;
        Ok(Arc::new(RealFile { file }))
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir_all(path)
    }

    fn list(&self, path: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(path)? {
            names.push(entry?.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        Ok(names)
    }

    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        File::open(path)?.sync_all()
    }

    fn available(&self, path: &Path) -> io::Result<u64> {
        let st = rustix::fs::statvfs(path)?;
        Ok(st.f_bavail.saturating_mul(st.f_frsize))
    }
}
