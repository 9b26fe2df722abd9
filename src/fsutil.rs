//! Small filesystem helpers shared by the modules that own files.
//!
//! Owns: directory fsync, file creation by temp-name + rename. Must never: decide what a file means.

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

use crate::error::{Error, Result};

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
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("remove", path, e)),
        }
    }
    if removed {
        sync_dir(dir)?;
    }
    Ok(())
}

/// Reserves disk blocks for the first `len` bytes of `file` (extending it), so that writes through
/// that range never need a block the filesystem cannot give: a full disk is an error here, before
/// any byte of a save is written (as does a file-size limit).
pub(crate) fn allocate(file: &File, path: &Path, len: u64) -> Result<()> {
    let current = file
        .metadata()
        .map_err(|e| Error::io("stat", path, e))?
        .len();
    if len <= current {
        return Ok(());
    }
    match rustix::fs::fallocate(file, rustix::fs::FallocateFlags::empty(), 0, len) {
        Ok(()) => Ok(()),
        Err(e) if e == rustix::io::Errno::OPNOTSUPP => {
            // Filesystems without fallocate: write zeroes over the new range, which allocates it.
            write_zeroes(file, path, current, len)
        }
        Err(e) => Err(Error::io("fallocate", path, e.into())),
    }
}

fn write_zeroes(file: &File, path: &Path, from: u64, to: u64) -> Result<()> {
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
