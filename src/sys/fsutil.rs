//! Small filesystem helpers shared by the modules that own files.
//!
//! Owns: the directory lock, directory fsync, file creation by temp-name + rename, and
//! [`NewFile`]: a new file that is written under a temporary name and never replaces an existing
//! one; reading a stream until a buffer is full. Must never: decide what a file means.

#[cfg(feature = "archive")]
use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::Path;
#[cfg(feature = "archive")]
use std::path::PathBuf;

use crate::error::{Error, Result};

/// Name of the lock file in a WAL directory.
pub(crate) const LOCK_FILE: &str = "LOCK";

/// A directory's lock ([`lock_dir`]): held until dropped.
#[derive(Debug)]
pub(crate) struct DirLock(File);

impl Drop for DirLock {
    /// Unlocks before the descriptor closes: a `flock` lock belongs to the open file
    /// description, which a child process forked meanwhile (by any thread, between its fork
    /// and its exec) still holds a copy of; closing this descriptor alone would leave the lock
    /// held until that child execs or exits (tests/lock_fork.rs).
    fn drop(&mut self) {
        let _ = fs2::FileExt::unlock(&self.0);
    }
}

/// Takes the exclusive lock of the WAL directory `dir` (which must exist), creating its lock
/// file if needed. Held until the returned lock is dropped. `Error::Locked` if another holder
/// (in this or another process) has it.
pub(crate) fn lock_dir(dir: &Path) -> Result<DirLock> {
    use fs2::FileExt;
    let lock_path = dir.join(LOCK_FILE);
    let lock = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock_path)
        .map_err(|e| Error::io("open", &lock_path, e))?;
    if let Err(e) = lock.try_lock_exclusive() {
        if e.kind() == fs2::lock_contended_error().kind() {
            return Err(Error::Locked {
                path: dir.to_path_buf(),
            });
        }
        return Err(Error::io("lock", &lock_path, e));
    }
    Ok(DirLock(lock))
}

/// Makes the directory's entries (creates, renames, removes) durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    let d = File::open(dir).map_err(|e| Error::io("open directory", dir, e))?;
    d.sync_all()
        .map_err(|e| Error::io("fsync directory", dir, e))
}

/// Writes `bytes` to `path` atomically: a temporary file is written and fsynced, renamed over
/// `path`, and the directory fsynced. A crash leaves either the old file or the new one.
pub(crate) fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    let path = dir.join(name);
    {
        let mut f = File::create(&tmp).map_err(|e| Error::io("create", &tmp, e))?;
        f.write_all(bytes)
            .map_err(|e| Error::io("write", &tmp, e))?;
        f.sync_all().map_err(|e| Error::io("fsync", &tmp, e))?;
    }
    fs::rename(&tmp, &path).map_err(|e| Error::io("rename", &tmp, e))?;
    sync_dir(dir)
}

#[cfg(feature = "archive")]
/// `path` with `suffix` appended to its file name.
pub(crate) fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = OsString::from(path.as_os_str());
    s.push(suffix);
    PathBuf::from(s)
}

#[cfg(feature = "archive")]
/// The directory holding `path` (`.` for a bare file name).
pub(crate) fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// `Error::Io` of kind `AlreadyExists` for `path`.
pub(crate) fn already_exists(path: &Path, op: &'static str) -> Error {
    Error::io(
        op,
        path,
        io::Error::new(io::ErrorKind::AlreadyExists, "file exists"),
    )
}

/// Refuses an existing `path` (even a dangling symlink): `Error::Io` of kind `AlreadyExists`,
/// "refuse to overwrite".
pub(crate) fn refuse_existing(path: &Path) -> Result<()> {
    if fs::symlink_metadata(path).is_ok() {
        return Err(already_exists(path, "refuse to overwrite"));
    }
    Ok(())
}

#[cfg(feature = "archive")]
/// A file being created as `<out>.tmp`, to become `out` only by [`NewFile::commit`]: fsynced,
/// moved to `out` without ever replacing an existing file, and the directory fsynced. Dropped
/// without a commit (an error, a panic), it removes the temporary file, so a failure leaves
/// neither `out` nor `<out>.tmp` behind.
pub(crate) struct NewFile {
    out: PathBuf,
    tmp: PathBuf,
    file: File,
    /// Set once the file is `out`: nothing to remove then.
    committed: bool,
}

#[cfg(feature = "archive")]
impl NewFile {
    /// Creates `<out>.tmp`. An existing `out` is refused (`Error::Io` of kind `AlreadyExists`,
    /// "refuse to overwrite"), and so is an existing `<out>.tmp` (left by an interrupted save:
    /// it is not removed, the error says so).
    pub(crate) fn create(out: &Path) -> Result<NewFile> {
        refuse_existing(out)?;
        let tmp = with_suffix(out, ".tmp");
        let file = match OpenOptions::new().write(true).create_new(true).open(&tmp) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(Error::io(
                    "create (left by an interrupted save? remove it)",
                    &tmp,
                    e,
                ))
            }
            Err(e) => return Err(Error::io("create", &tmp, e)),
        };
        Ok(NewFile {
            out: out.to_path_buf(),
            tmp,
            file,
            committed: false,
        })
    }

    /// The temporary file's path (`<out>.tmp`).
    pub(crate) fn tmp_path(&self) -> &Path {
        &self.tmp
    }

    /// The open temporary file, to write.
    pub(crate) fn file(&mut self) -> &mut File {
        &mut self.file
    }

    /// Flushes the temporary file's data to disk.
    pub(crate) fn sync(&self) -> Result<()> {
        self.file
            .sync_all()
            .map_err(|e| Error::io("fsync", &self.tmp, e))
    }

    /// Fsyncs the temporary file, moves it to `out` unless `out` exists (which is refused, and
    /// the temporary file removed), then fsyncs the directory. Once the move is done, `out` stays
    /// even if the directory fsync fails (that error is returned).
    pub(crate) fn commit(mut self) -> Result<()> {
        self.sync()?;
        rename_no_replace(&self.tmp, &self.out)?;
        self.committed = true;
        sync_dir(&parent_dir(&self.out))
    }
}

#[cfg(feature = "archive")]
impl Drop for NewFile {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// Removes files and makes the removals durable (one directory fsync). A file already gone is
/// not an error.
pub(crate) fn remove_files<'a>(
    dir: &Path,
    paths: impl IntoIterator<Item = &'a Path>,
) -> Result<()> {
    let mut removed = false;
    for path in paths {
        match fs::remove_file(path) {
            Ok(()) => removed = true,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("remove", path, e)),
        }
    }
    if removed {
        sync_dir(dir)?;
    }
    Ok(())
}

/// Extends `file` to `len` bytes, reserving disk blocks for the new bytes, so that writes
/// through that range never need a block the filesystem cannot give: a full disk is an error
/// here, before any byte of a save is written (as does a file-size limit). Bytes below the
/// current length are left as they are (an engine group's sparse slot area stays sparse).
pub(crate) fn allocate(file: &File, path: &Path, len: u64) -> Result<()> {
    let current = file
        .metadata()
        .map_err(|e| Error::io("stat", path, e))?
        .len();
    if len <= current {
        return Ok(());
    }
    allocate_range(file, path, current, len - current)
}

/// Reserves disk blocks for `[offset, offset + len)` of `file` (extending it if that range
/// ends past it); holes elsewhere stay holes.
pub(crate) fn allocate_range(file: &File, path: &Path, offset: u64, len: u64) -> Result<()> {
    if len == 0 {
        return Ok(());
    }
    match rustix::fs::fallocate(file, rustix::fs::FallocateFlags::empty(), offset, len) {
        Ok(()) => Ok(()),
        Err(e) if e == rustix::io::Errno::OPNOTSUPP => {
            // Filesystems without fallocate: write zeroes over the range, which allocates it
            // (only where it is new: bytes inside the file may hold data).
            let current = file
                .metadata()
                .map_err(|e| Error::io("stat", path, e))?
                .len();
            write_zeroes(file, path, offset.max(current), offset + len)
        }
        Err(e) => Err(Error::io("fallocate", path, e.into())),
    }
}

/// [`allocate`]s `want` bytes, or, when that is refused (a full disk, a quota, a file-size
/// limit), just `need`, so that the last space gets used; returns the length allocated. A
/// refusal of `need` is the error.
pub(crate) fn allocate_preferring(file: &File, path: &Path, want: u64, need: u64) -> Result<u64> {
    match allocate(file, path, want) {
        Ok(()) => Ok(want),
        Err(e) if want <= need => Err(e),
        Err(_) => allocate(file, path, need).map(|()| need),
    }
}

/// Renames `from` to `to` unless `to` exists (refused: `AlreadyExists`, "refuse to
/// overwrite"), in one step (`RENAME_NOREPLACE`). Where the file system lacks that flag, a check
/// then a rename: nothing else creates `to` in between when the caller holds the directory's
/// lock (the engine's files); for a file the CLI writes at a path the user chose, that is the
/// one window left. Never a hard link: both names must never exist at once (a journal segment
/// or log file under two names is damage).
pub(crate) fn rename_no_replace(from: &Path, to: &Path) -> Result<()> {
    use rustix::fs::{renameat_with, RenameFlags, CWD};
    use rustix::io::Errno;
    match renameat_with(CWD, from, CWD, to, RenameFlags::NOREPLACE) {
        Ok(()) => Ok(()),
        Err(Errno::EXIST) => Err(already_exists(to, "refuse to overwrite")),
        Err(Errno::INVAL | Errno::NOSYS | Errno::OPNOTSUPP) => {
            refuse_existing(to)?;
            fs::rename(from, to).map_err(|e| Error::io("rename", from, e))
        }
        Err(e) => Err(Error::io("rename", from, e.into())),
    }
}

/// Writes zeroes over `[from, to)` of `file` through the page cache, a MiB at a time.
pub(crate) fn write_zeroes(file: &File, path: &Path, from: u64, to: u64) -> Result<()> {
    use std::os::unix::fs::FileExt;
    let zeroes = vec![0u8; 1 << 20];
    let mut at = from;
    while at < to {
        let n = ((to - at) as usize).min(zeroes.len());
        file.write_all_at(&zeroes[..n], at)
            .map_err(|e| Error::io("allocate by writing zeroes", path, e))?;
        at += n as u64;
    }
    Ok(())
}

/// Writes all of `bufs`, back to back, at `offset` of `file` with `pwritev` (which takes at most
/// IOV_MAX, 1024, buffers and may write short: it loops).
pub(crate) fn pwritev_all(
    file: &File,
    bufs: &mut [io::IoSlice<'_>],
    offset: u64,
    path: &Path,
) -> Result<()> {
    let mut left: usize = bufs.iter().map(|b| b.len()).sum();
    let mut bufs = bufs;
    let mut at = offset;
    while left > 0 {
        let n = bufs.len().min(1024);
        let written = rustix::io::pwritev(file, &bufs[..n], at)
            .map_err(|e| Error::io("write", path, e.into()))?;
        if written == 0 {
            return Err(Error::io(
                "write",
                path,
                io::Error::from(io::ErrorKind::WriteZero),
            ));
        }
        at += written as u64;
        left -= written;
        io::IoSlice::advance_slices(&mut bufs, written);
    }
    Ok(())
}

/// Fills `buf` from `r` as far as it goes (short only at the end of the stream).
pub(crate) fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}
