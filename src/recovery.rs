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
use std::path::Path;

use bytes::Bytes;

use crate::error::{Error, Result};
use crate::fsutil;
use crate::log_file::{self, LogFile, PAYLOAD_START, SLOTS_PER_FILE, SLOT_SIZE};
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
    pub snapshot_data: Bytes,
}

/// Opens (or initialises) the WAL in `dir`, whose lock the caller holds.
pub(crate) fn recover(dir: &Path, mode: RecoveryMode) -> Result<Recovered> {
    let ids = list_log_files(dir)?;
    let (meta_file, meta) = if dir.join(META_FILE).exists() {
        MetaFile::open(dir)?
    } else if let Some(&id) = ids.first() {
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
        (MetaFile::create(dir, &fresh)?, fresh)
    };

    let snap_index = meta.snapshot.as_ref().map_or(0, |s| s.index);
    let wal = recover_log(dir, mode, &meta, ids)?;

    let last_index = wal.last().max(snap_index);
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

    let snapshot_data = match &meta.snapshot {
        Some(s) if s.data_len > 0 => {
            let data = snap::read(dir, s.index, s.term, s.data_len, s.data_crc32c)?;
            snap::remove_others(dir, Some(&snap::file_name(s.term, s.index)))?;
            data
        }
        _ => {
            snap::remove_others(dir, None)?;
            Bytes::new()
        }
    };
    Ok(Recovered {
        meta_file,
        meta,
        wal,
        snapshot_data,
    })
}

/// Ids of the `NNNNN.wal` files in `dir`, sorted. Leftover temporary log files are removed; any
/// other file is ignored.
fn list_log_files(dir: &Path) -> Result<Vec<u64>> {
    let mut ids = Vec::new();
    let mut removed = false;
    let rd = fs::read_dir(dir).map_err(|e| Error::io("read directory", dir, e))?;
    for ent in rd {
        let ent = ent.map_err(|e| Error::io("read directory", dir, e))?;
        let name = ent.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(id) = log_file::parse_file_name(name) {
            ids.push(id);
        } else if name
            .strip_suffix(".tmp")
            .is_some_and(|n| log_file::parse_file_name(n).is_some() || n == META_FILE)
        {
            let p = dir.join(name);
            fs::remove_file(&p).map_err(|e| Error::io("remove", &p, e))?;
            removed = true;
        }
    }
    if removed {
        fsutil::sync_dir(dir)?;
    }
    ids.sort_unstable();
    Ok(ids)
}

fn recover_log(
    dir: &Path,
    mode: RecoveryMode,
    meta: &MetaRecord,
    mut ids: Vec<u64>,
) -> Result<Wal> {
    let snap_index = meta.snapshot.as_ref().map_or(0, |s| s.index);
    let first_file_id = meta.first_file_id.max(1);

    // Files of a log that a received snapshot replaced.
    let stale: Vec<u64> = ids
        .iter()
        .copied()
        .filter(|&id| id < first_file_id)
        .collect();
    if !stale.is_empty() {
        for id in &stale {
            fsutil::remove_file(dir, &dir.join(log_file::file_name(*id)))?;
        }
        ids.retain(|&id| id >= first_file_id);
    }
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

    // A last file without even a header is what a crash during creation can leave (creation
    // renames a finished file into place, so this takes outside interference): an empty tail.
    if let Some(&id) = ids.last() {
        let path = dir.join(log_file::file_name(id));
        let len = fs::metadata(&path)
            .map_err(|e| Error::io("stat", &path, e))?
            .len();
        if len < PAYLOAD_START || log_file::header_is_zero(&path)? {
            if mode == RecoveryMode::AbsoluteConsistency
                && len > 0
                && !log_file::header_is_zero(&path)?
            {
                return Err(Error::corrupt(
                    &path,
                    len,
                    format!("last log file is {len} bytes, shorter than its slot area"),
                ));
            }
            fsutil::remove_file(dir, &path)?;
            ids.pop();
        }
    }

    let mut files = VecDeque::with_capacity(ids.len());
    let n = ids.len();
    for (pos, &id) in ids.iter().enumerate() {
        let path = dir.join(log_file::file_name(id));
        let f = match LogFile::open(&path, id) {
            Ok(f) => f,
            Err(Error::Corrupt { .. })
                if pos + 1 == n && mode == RecoveryMode::TolerateTailCorruption =>
            {
                // The last file's header is damaged: nothing in it can be trusted.
                fsutil::remove_file(dir, &path)?;
                break;
            }
            Err(e) => return Err(e),
        };
        if let Some(first) = files.front() {
            let first: &LogFile = first;
            let expected = first.base() + SLOTS_PER_FILE * pos as u64;
            if f.base() != expected {
                return Err(Error::corrupt(
                    &path,
                    log_file::SLOT_AREA as u64,
                    format!(
                        "file starts at index {} but follows {} so it must start at {expected}",
                        f.base(),
                        log_file::file_name(first.id())
                    ),
                ));
            }
        }
        files.push_back(f);
    }

    // Ids continue after the last file kept (a removed damaged tail file leaves no gap).
    let next_file_id = files.back().map_or(first_file_id, |f| f.id() + 1);
    if files.is_empty() {
        return Ok(Wal::from_parts(dir, files, next_file_id, 0, PAYLOAD_START));
    }

    // Sealed files: full, first and last slot intact.
    let sealed = files.len() - 1;
    for f in files.iter().take(sealed) {
        f.verify_slot(0)?;
        f.verify_slot(SLOTS_PER_FILE as u32 - 1)?;
    }

    let (last, cursor) = scan_tail(
        files
            .back_mut()
            .ok_or_else(|| Error::InvalidArgument("no last file".to_string()))?,
        mode,
    )?;
    let wal_first = files.front().map_or(0, |f| f.base());
    if last >= wal_first && last > snap_index && wal_first > snap_index + 1 {
        return Err(Error::MissingFile {
            path: dir.join(log_file::file_name(first_file_id)),
            reason: format!(
                "the snapshot ends at index {snap_index} but the first log file starts at index {wal_first}"
            ),
        });
    }
    Ok(Wal::from_parts(dir, files, next_file_id, last, cursor))
}

/// Scans the last file's slots: returns the last good index and the payload cursor after it.
fn scan_tail(f: &mut LogFile, mode: RecoveryMode) -> Result<(u64, u64)> {
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
    if let Some(e) = damage {
        if mode == RecoveryMode::AbsoluteConsistency {
            return Err(e);
        }
        f.zero_slots(good, SLOTS_PER_FILE as u32);
        f.flush()?;
    }
    f.set_verified(good);
    Ok((f.base() + good as u64 - 1, cursor))
}
