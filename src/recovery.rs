//! Opening a WAL directory: what is on disk, what counts as damage, where the log ends.
//!
//! Owns: the decision, at open, of which files belong to the log and where it ends. The run of
//! files must have contiguous ids and arithmetic bases; every file but the last is checked by its
//! header and its first and last slots (never by reading every payload); the last file's slots
//! are scanned one by one and the log ends at the first empty slot, bad checksum, or index/term
//! out of order. `TolerateTailCorruption` cuts the tail there; `AbsoluteConsistency` calls any
//! damage an error. Must never: return an error without naming the file and offset, alter a file
//! that is not the tail in tolerate mode, or read every payload of every file.

use std::collections::VecDeque;
use std::fs;
use std::path::{Path, PathBuf};

use crate::crypto::Cipher;
use crate::error::{Error, Result};
use crate::fsutil;
use crate::log_file::{self, Access, LogFile, PAYLOAD_START, SLOTS_PER_FILE, SLOT_SIZE};
use crate::meta::{MetaFile, META_FILE};
use crate::options::RecoveryMode;
use crate::proto::MetaRecord;
use crate::snap;
use crate::wal::Wal;

/// What open recovered.
pub(crate) struct Recovered {
    pub meta_file: MetaFile,
    pub meta: MetaRecord,
    pub wal: Wal,
    /// Damaged snapshot files (not the current one) renamed `.broken`.
    pub broken_snapshot_files: Vec<PathBuf>,
}

/// Opens (or initialises) the WAL in `dir`, whose lock the caller holds.
///
/// Nothing on disk changes until every check has passed: a failed open leaves the directory as
/// it found it (the evidence, and whatever a stricter or later open could still salvage).
pub(crate) fn recover(
    dir: &Path,
    mode: RecoveryMode,
    cipher: Option<&Cipher>,
) -> Result<Recovered> {
    let listing = list_dir(dir)?;
    let (meta_file, meta) = if dir.join(META_FILE).exists() {
        MetaFile::open(dir, cipher)?
    } else if let Some(&id) = listing.ids.first() {
        return Err(Error::MissingFile {
            path: dir.join(META_FILE),
            reason: format!(
                "log files exist (e.g. {}) but the meta page is gone",
                log_file::file_name(id)
            ),
        });
    } else {
        let fresh = MetaRecord {
            first_file_id: 1,
            ..Default::default()
        };
        (MetaFile::create(dir, &fresh, cipher)?, fresh)
    };

    check_meta_bounds(dir, &meta)?;
    let snap_index = meta.snapshot.as_ref().map_or(0, |s| s.index);
    let mut plan = plan_log(dir, mode, &meta, listing.ids, false, cipher)?;

    let last_index = plan.last.max(snap_index);
    let commit = meta.hard_state.as_ref().map_or(0, |h| h.commit);
    if commit > last_index {
        return Err(Error::corrupt(
            dir.join(META_FILE),
            0,
            format!(
                "hard state commit index {commit} is past the last index {last_index} in the log: committed entries are missing"
            ),
        ));
    }
    // The snapshot the meta page names must be whole: read and checked to its last byte
    // (streamed, so a snapshot of any size takes one buffer of memory).
    if let Some(s) = meta.snapshot.as_ref().filter(|s| s.data_len > 0) {
        let mut reader = snap::SnapshotReader::open(dir, s, cipher)?;
        std::io::copy(&mut reader, &mut std::io::sink()).map_err(|e| reader.error_from(e))?;
    }

    // Every check passed: now tidy up.
    let doomed = listing.leftovers.iter().chain(&plan.remove);
    fsutil::remove_files(dir, doomed.map(PathBuf::as_path))?;
    if let Some(f) = plan.files.back_mut() {
        let good = (plan.last + 1 - f.base()) as u32;
        if plan.tail_damage.is_some() {
            f.zero_slots(good, SLOTS_PER_FILE as u32)?;
            f.flush()?;
        }
        f.set_recovered(good, plan.tail_payload_end);
    }
    let keep = meta
        .snapshot
        .as_ref()
        .filter(|s| s.data_len > 0)
        .map(|s| snap::file_name(s.term, s.index));
    let broken_snapshot_files = snap::tidy(dir, keep.as_deref(), true)?;

    Ok(Recovered {
        meta_file,
        meta,
        wal: Wal::from_parts(
            dir,
            plan.files,
            plan.next_file_id,
            plan.last,
            cipher.cloned(),
        ),
        broken_snapshot_files,
    })
}

/// Indexes in the meta page must be in the range the engine does arithmetic on.
pub(crate) fn check_meta_bounds(dir: &Path, meta: &MetaRecord) -> Result<()> {
    let snap = meta.snapshot.as_ref().map_or(0, |s| s.index);
    let commit = meta.hard_state.as_ref().map_or(0, |h| h.commit);
    let first_file_id = meta.first_file_id;
    if snap > log_file::MAX_INDEX
        || commit > log_file::MAX_INDEX
        || first_file_id > log_file::MAX_INDEX
    {
        return Err(Error::corrupt(
            dir.join(META_FILE),
            0,
            format!(
                "meta page holds an index past {}: snapshot {snap}, commit {commit}, first file {first_file_id}",
                log_file::MAX_INDEX
            ),
        ));
    }
    Ok(())
}

/// What is in the directory: log file ids (sorted) and leftover temporary files of ours.
pub(crate) struct Listing {
    pub ids: Vec<u64>,
    pub leftovers: Vec<PathBuf>,
}

/// Lists `NNNNN.wal` files and our `.tmp` leftovers; any other entry is ignored.
pub(crate) fn list_dir(dir: &Path) -> Result<Listing> {
    let mut ids = Vec::new();
    let mut leftovers = Vec::new();
    let rd = fs::read_dir(dir).map_err(|e| Error::io("read directory", dir, e))?;
    for ent in rd {
        let ent = ent.map_err(|e| Error::io("read directory", dir, e))?;
        let is_file = ent.file_type().map(|t| t.is_file()).unwrap_or(false);
        let name = ent.file_name();
        let Some(name) = name.to_str() else { continue };
        if !is_file {
            continue;
        }
        if let Some(id) = log_file::parse_file_name(name) {
            ids.push(id);
        } else if name
            .strip_suffix(".tmp")
            .is_some_and(|n| log_file::parse_file_name(n).is_some() || n == META_FILE)
        {
            leftovers.push(dir.join(name));
        }
    }
    ids.sort_unstable();
    Ok(Listing { ids, leftovers })
}

/// The log as recovery found it, and the changes to make once every check has passed.
pub(crate) struct LogPlan {
    pub files: VecDeque<LogFile>,
    pub next_file_id: u64,
    /// Last good index held by the files.
    pub last: u64,
    /// Where the tail file's next payload goes: after its last good entry's.
    pub tail_payload_end: u64,
    /// What ended the tail, when it was damage (only in tolerate mode): the slots from `last`
    /// on are to be zeroed.
    pub tail_damage: Option<Error>,
    /// Files to remove: obsolete, or an empty tail.
    pub remove: Vec<PathBuf>,
}

/// Works out which files hold the log and where it ends, changing nothing on disk. With
/// `read_only` the files are opened read-only (inspection tools).
pub(crate) fn plan_log(
    dir: &Path,
    mode: RecoveryMode,
    meta: &MetaRecord,
    mut ids: Vec<u64>,
    read_only: bool,
    cipher: Option<&Cipher>,
) -> Result<LogPlan> {
    let snap_index = meta.snapshot.as_ref().map_or(0, |s| s.index);
    let first_file_id = meta.first_file_id.max(1);
    let mut remove = Vec::new();

    // Files of a log that a received snapshot replaced.
    for id in ids.iter().filter(|&&id| id < first_file_id) {
        remove.push(dir.join(log_file::file_name(*id)));
    }
    ids.retain(|&id| id >= first_file_id);
    for w in ids.windows(2) {
        if w[1] != w[0] + 1 {
            return Err(Error::MissingFile {
                path: dir.join(log_file::file_name(w[0] + 1)),
                reason: format!(
                    "log files {} and {} exist, the one between them does not",
                    log_file::file_name(w[0]),
                    log_file::file_name(w[1])
                ),
            });
        }
    }

    // A last file without a header (shorter than its slot area, or a header area of zeroes) is
    // what a crash during creation can leave: an empty tail, in either mode. A header that is
    // there but damaged is damage, like any other file's.
    if let Some(&id) = ids.last() {
        let path = dir.join(log_file::file_name(id));
        let len = fs::metadata(&path)
            .map_err(|e| Error::io("stat", &path, e))?
            .len();
        if len < PAYLOAD_START || log_file::header_is_zero(&path)? {
            remove.push(path);
            ids.pop();
        }
    }

    let mut files: VecDeque<LogFile> = VecDeque::with_capacity(ids.len());
    for (pos, &id) in ids.iter().enumerate() {
        let path = dir.join(log_file::file_name(id));
        let access = match (read_only, pos + 1 == ids.len()) {
            (true, _) => Access::ReadOnly,
            (false, true) => Access::Append,
            (false, false) => Access::Sealed,
        };
        let f = LogFile::open(&path, id, access, cipher)?;
        if let Some(first) = files.front() {
            let expected = (pos as u64)
                .checked_mul(SLOTS_PER_FILE)
                .and_then(|n| first.base().checked_add(n));
            if Some(f.base()) != expected {
                return Err(Error::corrupt(
                    &path,
                    log_file::SLOT_AREA as u64,
                    format!(
                        "file starts at index {} but follows {} so it must start at {expected:?}",
                        f.base(),
                        log_file::file_name(first.id())
                    ),
                ));
            }
        }
        files.push_back(f);
    }
    // Ids continue after the last file kept (a removed empty tail leaves no gap).
    let next_file_id = files.back().map_or(first_file_id, |f| f.id() + 1);
    if files.is_empty() {
        return Ok(LogPlan {
            files,
            next_file_id,
            last: 0,
            tail_payload_end: PAYLOAD_START,
            tail_damage: None,
            remove,
        });
    }

    // Sealed files: full, first and last slot intact. Their payloads are not read here.
    //
    // One exception makes the file before the last part of the tail: without `sync_writes`, a
    // full file is not flushed before the next one is created, so a power loss during the save
    // that rotated can leave the next file on disk while the end of the full one is not. The
    // next file's header says so (until a flush makes everything durable and clears it). Then,
    // in tolerate mode, the full file is scanned like a tail and cut where it breaks, and the
    // last file, which follows the cut, goes. Without that flag it is damage, as always.
    let sealed = files.len() - 1;
    let last_may_follow_torn = files.back().is_some_and(LogFile::prev_unflushed);
    let mut torn_before_last = None;
    for (pos, f) in files.iter_mut().take(sealed).enumerate() {
        let check = f
            .verify_slot(0)
            .and_then(|_| f.verify_slot(SLOTS_PER_FILE as u32 - 1));
        match check {
            Ok(last_slot) => f.set_recovered(0, last_slot.payload_end),
            Err(e @ Error::Corrupt { .. })
                if pos + 1 == sealed
                    && last_may_follow_torn
                    && mode == RecoveryMode::TolerateTailCorruption =>
            {
                torn_before_last = Some(e);
            }
            Err(e) => return Err(e),
        }
    }
    if torn_before_last.is_some() {
        if let Some(last) = files.pop_back() {
            remove.push(last.path().to_path_buf());
        }
    }
    // Ids continue after the last file kept (a removed file leaves no gap).
    let next_file_id = files.back().map_or(first_file_id, |f| f.id() + 1);
    let Some(tail) = files.back() else {
        return Err(Error::InvalidArgument(
            "no log file left to scan".to_string(),
        ));
    };

    let scan = scan_tail(tail);
    let tail_damage = match scan.damage {
        Some(e) if mode == RecoveryMode::AbsoluteConsistency => return Err(e),
        other => other,
    };
    let last = tail.base() + scan.good as u64 - 1;
    let wal_first = files.front().map_or(0, |f| f.base());
    // The files must hold every index from the snapshot on up to `last` (an empty last file
    // claims the indexes before its base: the files before it must be there).
    if last > snap_index && wal_first > snap_index + 1 {
        return Err(Error::MissingFile {
            path: dir.join(log_file::file_name(first_file_id)),
            reason: format!(
                "the snapshot ends at index {snap_index} but the first log file starts at index {wal_first}"
            ),
        });
    }
    Ok(LogPlan {
        files,
        next_file_id,
        last,
        tail_payload_end: scan.cursor,
        tail_damage,
        remove,
    })
}

/// Where the tail file's log ends.
struct TailScan {
    /// Slots `[0, good)` hold the log.
    good: u32,
    /// Payload cursor after slot `good - 1`.
    cursor: u64,
    /// What ended the log, when it was not a clean end (an empty slot with only empty ones after).
    damage: Option<Error>,
}

/// Scans the tail file's slots (reading only; the caller decides what to do about damage).
fn scan_tail(f: &LogFile) -> TailScan {
    let mut cursor = PAYLOAD_START;
    let mut prev_term = 0;
    let mut good = 0u32;
    let mut damage: Option<Error> = None;
    while (good as u64) < SLOTS_PER_FILE {
        if f.slot_is_zero(good) {
            break;
        }
        match f.verify_slot(good) {
            // A payload starts where the previous one ended, or later: `truncate_entries_until`
            // moves a cleared entry's offset past its dropped data.
            Ok(c) if c.slot.offset >= cursor && c.slot.term >= prev_term => {
                cursor = c.payload_end;
                prev_term = c.slot.term;
                good += 1;
            }
            Ok(c) => {
                damage = Some(Error::corrupt(
                    f.path(),
                    good as u64 * SLOT_SIZE as u64,
                    format!(
                        "slot {good} (index {}) breaks the log: payload at {} before the previous payload's end {cursor}, or term {} after term {prev_term}",
                        c.slot.index, c.slot.offset, c.slot.term
                    ),
                ));
                break;
            }
            Err(e) => {
                damage = Some(e);
                break;
            }
        }
    }
    // Anything written after the end of the log is damage too (e.g. a zeroed sector in the tail).
    if damage.is_none() {
        if let Some(k) = (good..SLOTS_PER_FILE as u32).find(|&k| !f.slot_is_zero(k)) {
            damage = Some(Error::corrupt(
                f.path(),
                k as u64 * SLOT_SIZE as u64,
                format!("slot {k} holds data after the end of the log at slot {good}"),
            ));
        }
    }
    TailScan {
        good,
        cursor,
        damage,
    }
}
