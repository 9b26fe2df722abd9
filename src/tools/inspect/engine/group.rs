//! One group's directory as `Engine::open` reads it: its meta page (both copies), the log files
//! the page relies on (by their headers, never a slot area), the files open would remove, and
//! entries `[lo, hi)` read back from those files (for `dump` and `snapshot save`).
//!
//! Owns: what open refuses in a group's own files (a meta page missing, unreadable or naming
//! another group, a file or header missing, files that do not follow one another, a log past its
//! last slot) and the shapes a group is kept in once read (`GroupRead`, `GroupDisk`, `FileAt`).
//! Must never: look at the journal (`replay` brings a group up to date), write, create, rename
//! or remove anything, or map a file (files are read with `pread` into copies).

use std::fs;
use std::path::{Path, PathBuf};

use raft::prelude::Entry;

use super::replay::Replay;
use crate::engine::scan;
use crate::error::{Error, Result};
use crate::proto::{EngineGroupRecord, MetaRecord};
use crate::store::log_file::{self, Access, LogFile, SLOTS_PER_FILE};
use crate::store::meta::{self, Copies};
use crate::store::recovery;
use crate::store::wal;
use crate::sys::crypto::Cipher;

/// One group, as read.
pub(super) struct GroupRead {
    pub(super) dir: PathBuf,
    /// Its meta page and the files it relies on; an error when open would refuse the group.
    pub(super) disk: Result<GroupDisk>,
    /// Its log files, copied, when entries are to be read (one group only).
    pub(super) files: Vec<LogFile>,
    pub(super) replay: Replay,
    /// Damage in the slots open checks and seals again once it has replayed a truncation
    /// ([`check_cleared`]): open fails on it, but the group's other entries read back.
    pub(super) cleared_damage: Option<Error>,
}

/// A group's directory as its meta page describes it.
pub(super) struct GroupDisk {
    pub(super) dir: PathBuf,
    pub(super) meta: MetaRecord,
    pub(super) copies: Copies,
    pub(super) eng: EngineGroupRecord,
    pub(super) files: Vec<FileAt>,
    /// The files' last index (the meta page's, at least the first file's base - 1).
    pub(super) wal_last: u64,
    pub(super) leftovers: Vec<PathBuf>,
}

/// One log file a group's meta page relies on.
pub(super) struct FileAt {
    pub(super) id: u64,
    pub(super) path: PathBuf,
    pub(super) base: u64,
    pub(super) len: u64,
    /// Slots holding the log, from slot 0.
    pub(super) entries: u64,
}

/// Reads a group's directory as `Engine::open` does: its meta page (a copy in use while the
/// other is damaged checked against the checkpoint, `checkpoint_seq`), and the files the page
/// relies on, by their headers (no slot area is read). Damage open refuses is an error
/// (`Corrupt`, `MissingFile`), as are I/O errors and a key that does not fit.
pub(super) fn read_group(
    dir: &Path,
    id: u64,
    cipher: Option<&Cipher>,
    checkpoint_seq: u64,
) -> Result<GroupDisk> {
    let meta_path = dir.join(meta::META_FILE);
    let (meta, copies) = match meta::read_only::<MetaRecord>(dir, cipher) {
        Err(Error::Io { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound && dir.is_dir() =>
        {
            return Err(Error::MissingFile {
                path: meta_path,
                reason: format!("group {id}'s directory has no meta page"),
            })
        }
        r => r?,
    };
    recovery::check_meta_bounds(dir, &meta)?;
    let Some(eng) = meta.engine else {
        return Err(Error::corrupt(
            &meta_path,
            0,
            "the meta page of an engine group has no engine record",
        ));
    };
    // In open's order (`engine::recovery::read_group`), so that the first error is the same.
    scan::check_group_numbers(&meta_path, &eng)?;
    scan::check_meta_fallback(&meta_path, &copies, &eng, checkpoint_seq)?;
    if meta.group_id != id {
        return Err(Error::corrupt(
            &meta_path,
            0,
            format!(
                "the meta page names group {}, its directory {id}",
                meta.group_id
            ),
        ));
    }
    let (files, wal_last, leftovers) =
        group_files(dir, &meta_path, &meta, &eng, cipher).map_err(|e| copies.explain(e))?;
    Ok(GroupDisk {
        dir: dir.to_path_buf(),
        meta,
        copies,
        eng,
        files,
        wal_last,
        leftovers,
    })
}

/// The files a group's meta page relies on (by their headers), its files' last index, and the
/// files open removes.
fn group_files(
    dir: &Path,
    meta_path: &Path,
    meta: &MetaRecord,
    eng: &EngineGroupRecord,
    cipher: Option<&Cipher>,
) -> Result<(Vec<FileAt>, u64, Vec<PathBuf>)> {
    let listing = recovery::list_dir(dir)?;
    let first_file_id = meta.first_file_id.max(1);
    let tail_id = eng.last_file_id;
    let mut leftovers = listing.leftovers;
    let mut ids = Vec::new();
    for fid in listing.ids {
        if fid < first_file_id || fid > tail_id {
            leftovers.push(dir.join(log_file::file_name(fid)));
        } else {
            ids.push(fid);
        }
    }
    let last = eng.last_index;
    let snap_index = meta.snapshot.as_ref().map_or(0, |s| s.index);
    let mut files: Vec<FileAt> = Vec::new();
    let mut wal_last = 0;
    if let Some(&first_id) = ids.first() {
        for want in first_id..=tail_id {
            let path = dir.join(log_file::file_name(want));
            if !ids.contains(&want) {
                return Err(Error::MissingFile {
                    path,
                    reason: format!(
                        "the meta page says the log ends at index {last} in {}",
                        log_file::file_name(tail_id)
                    ),
                });
            }
            let peeked = log_file::peek_base(&path, want, cipher.is_some());
            // Wholly below the snapshot, its header damaged: open removes it with the files
            // before it, and the log opens without them (`engine::recovery::read_files`).
            if matches!(peeked, Err(Error::Corrupt { .. }) | Ok(None))
                && want < tail_id
                && recovery::wholly_compacted(
                    dir,
                    &(want + 1..=tail_id).collect::<Vec<_>>(),
                    want,
                    snap_index,
                    cipher,
                )?
            {
                leftovers.extend(files.drain(..).map(|f| f.path));
                leftovers.push(path);
                continue;
            }
            let peeked = peeked?;
            // A file cut short is named at its end, as open names it.
            if peeked.is_none() {
                let len = fs::metadata(&path)
                    .map_err(|e| Error::io("stat", &path, e))?
                    .len();
                log_file::check_len(&path, len)?;
            }
            let Some((base, len)) = peeked else {
                return Err(Error::corrupt(
                    &path,
                    log_file::HEADER_OFFSET as u64,
                    "no file header, but the meta page relies on this file",
                ));
            };
            if let Some(first) = files.first() {
                let expected = first.base + SLOTS_PER_FILE * (want - first.id);
                if base != expected {
                    return Err(Error::corrupt(
                        &path,
                        log_file::HEADER_OFFSET as u64,
                        format!("file starts at index {base} but must start at {expected}"),
                    ));
                }
            }
            files.push(FileAt {
                id: want,
                path,
                base,
                len,
                entries: SLOTS_PER_FILE,
            });
        }
        let base = files.first().map_or(1, |f| f.base);
        if let Some(first) = files.first().filter(|_| base > snap_index + 1) {
            return Err(recovery::late_first_file(
                dir,
                first.id,
                first_file_id,
                base,
                snap_index,
            ));
        }
        wal_last = last.max(base - 1);
        if let Some(tail) = files.last_mut() {
            let held = (wal_last + 1).saturating_sub(tail.base);
            if held > SLOTS_PER_FILE {
                return Err(Error::corrupt(
                    meta_path,
                    0,
                    format!(
                        "the meta page says the log ends at index {last}, past the last slot of {} (index {})",
                        log_file::file_name(tail.id),
                        tail.base + SLOTS_PER_FILE - 1
                    ),
                ));
            }
            tail.entries = held;
        }
    } else if tail_id >= first_file_id && last > snap_index {
        return Err(Error::MissingFile {
            path: dir.join(log_file::file_name(tail_id)),
            reason: format!("the meta page says the log ends at index {last} in it"),
        });
    }
    Ok((files, wal_last, leftovers))
}

/// Checks the slots `[from, to)` of a group's files that open seals again after replaying a
/// `truncate_entries_until` (`Replay::files_cleared`), as open checks each before it does
/// (`LogFile::verify_slot`): the first damaged one is the error open gives.
pub(super) fn check_cleared(
    disk: &GroupDisk,
    (from, to): (u64, u64),
    cipher: Option<&Cipher>,
) -> Result<()> {
    for f in &disk.files {
        let lo = from.max(f.base);
        let hi = to.min(f.base.saturating_add(f.entries));
        if lo >= hi {
            continue;
        }
        let file = LogFile::open(&f.path, f.id, Access::ReadOnly, cipher)?;
        for index in lo..hi {
            // `index - f.base` < `f.entries` <= SLOTS_PER_FILE: it fits a u32.
            file.verify_slot((index - f.base) as u32)?;
        }
    }
    Ok(())
}

/// Entries `[lo, hi)` from a group's files (`last`: the log's last index, for errors).
pub(super) fn read_files(
    disk: &GroupDisk,
    files: &[LogFile],
    lo: u64,
    hi: u64,
    last: u64,
    out: &mut Vec<Entry>,
) -> Result<()> {
    let unavailable = |index| Error::Unavailable {
        index,
        last_index: last,
    };
    if hi > disk.wal_last + 1 {
        return Err(unavailable(hi - 1));
    }
    wal::read_range(|i| files.get(i), lo, hi, last, out, |_| true)?;
    Ok(())
}
