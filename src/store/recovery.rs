//! Opening a WAL directory: what is on disk, what counts as damage, where the log ends.
//!
//! Owns: the decision, at open, of which files belong to the log and where it ends. The run of
//! files must have contiguous ids and arithmetic bases. Sealed files (durable before the tail
//! zone began) are checked by their header and their first live and last slots (never by reading
//! every payload); the tail zone (the last file, and without `sync_writes` the files rotated
//! since the last flush) is scanned entry by entry, payloads included, and the log ends at the
//! first empty slot, bad checksum, index/term out of order, missing file or file without a
//! header. Entries at or below the snapshot index are not part of the log: never damage. A log
//! that would end below the durable commit index is an error in either mode, naming where the
//! committed entries stop. `TolerateTailCorruption` cuts the tail; `AbsoluteConsistency` calls
//! any damage an error. Must never: return an error without naming the file and offset, alter a
//! file that is not in the tail zone, or read every payload of every file.

use std::collections::VecDeque;
use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::options::RecoveryMode;
use crate::proto::MetaRecord;
use crate::store::log_file::{
    self, Access, HeaderPeek, LogFile, PAYLOAD_START, SLOTS_PER_FILE, SLOT_SIZE,
};
use crate::store::meta::{MetaFile, META_FILE};
use crate::store::snap;
use crate::store::wal::Wal;
use crate::sys::crypto::Cipher;
use crate::sys::fsutil;

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
    // A damaged copy of the meta state may have held the newest state (a torn update looks the
    // same): strict mode refuses it; the default falls back to the copy that is whole.
    if mode == RecoveryMode::AbsoluteConsistency {
        if let Some(e) = meta_file.copies().damage(meta_file.path()) {
            return Err(e);
        }
    }
    let scan = Scan {
        mode,
        read_only: false,
        whole_log: false,
    };
    let copies = meta_file.copies();
    let mut plan =
        plan_log(dir, &meta, listing.ids, scan, cipher).map_err(|e| copies.explain(e))?;
    if let Some(e) = plan.committed_damage.take() {
        return Err(copies.explain(e));
    }
    check_snapshot_file(dir, &meta, cipher)?;

    // Every check passed: now tidy up.
    let doomed = listing.leftovers.iter().chain(&plan.remove);
    fsutil::remove_files(dir, doomed.map(PathBuf::as_path))?;
    let last = plan.last;
    if let Some(f) = plan.files.back_mut() {
        if plan.tail_damage.is_some() {
            let good = (last + 1 - f.base()) as u32;
            f.zero_slots(good, SLOTS_PER_FILE as u32)?;
        }
    }
    // What the zone's scan read may still be only in the page cache (written by a process that
    // was killed before its flush): make it durable before anything is built on it.
    for f in plan.files.iter_mut().skip(plan.scanned_from) {
        f.sync()?;
    }
    let mut meta_file = meta_file;
    if meta_file.copies().damage(meta_file.path()).is_some() {
        // Tolerated (strict mode refused it above): the damaged copy gets the state in use, so
        // that the next update cannot leave the file with only the damaged copy and its own.
        meta_file.store(&meta)?;
    }
    meta_file.sync()?;
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

/// The snapshot the meta page names must be whole: read and checked to its last byte
/// (streamed, so a snapshot of any size takes one buffer of memory). Open refuses the
/// directory otherwise; the tools call this to say so before open does.
pub(crate) fn check_snapshot_file(
    dir: &Path,
    meta: &MetaRecord,
    cipher: Option<&Cipher>,
) -> Result<()> {
    if let Some(s) = meta.snapshot.as_ref().filter(|s| s.data_len > 0) {
        let mut reader = snap::SnapshotReader::open(dir, s, cipher)?;
        std::io::copy(&mut reader, &mut std::io::sink()).map_err(|e| reader.error_from(e))?;
    }
    Ok(())
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
    /// A `snap/` directory is there (from the listing's own entry types, no extra call).
    pub has_snap_dir: bool,
    pub leftovers: Vec<PathBuf>,
}

/// Lists `NNNNN.wal` files and our `.tmp` leftovers; any other entry is ignored.
pub(crate) fn list_dir(dir: &Path) -> Result<Listing> {
    let mut ids = Vec::new();
    let mut leftovers = Vec::new();
    let mut has_snap_dir = false;
    let rd = fs::read_dir(dir).map_err(|e| Error::io("read directory", dir, e))?;
    for ent in rd {
        let ent = ent.map_err(|e| Error::io("read directory", dir, e))?;
        let kind = ent.file_type().ok();
        let is_file = kind.is_some_and(|t| t.is_file());
        let name = ent.file_name();
        let Some(name) = name.to_str() else { continue };
        if name == crate::store::snap::SNAP_DIR && kind.is_some_and(|t| t.is_dir()) {
            has_snap_dir = true;
        }
        if !is_file {
            continue;
        }
        if let Some(id) = log_file::parse_file_name(name) {
            ids.push(id);
        } else if is_tmp_leftover(name) {
            leftovers.push(dir.join(name));
        }
    }
    ids.sort_unstable();
    Ok(Listing {
        ids,
        leftovers,
        has_snap_dir,
    })
}

/// The file a restore (`raftwal snapshot restore`) makes, durably, in its new directory before
/// anything else and removes once the store there is whole and durable: a directory holding it
/// is a restore that did not finish, never a store.
pub(crate) const RESTORING_FILE: &str = "RESTORING";

/// What the marker holds: a file of that name with other bytes is no restore's (and is
/// ignored, as any other unknown file is).
pub(crate) const RESTORING_MAGIC: &[u8] =
    b"raftwal: a snapshot restore into this directory has not finished\n";

/// Whether `dir` holds a restore's marker ([`RESTORING_FILE`] holding [`RESTORING_MAGIC`]).
pub(crate) fn restore_unfinished(dir: &Path) -> Result<bool> {
    let marker = dir.join(RESTORING_FILE);
    match fs::symlink_metadata(&marker) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(Error::io("stat", &marker, e)),
        Ok(m) if !m.is_file() || m.len() != RESTORING_MAGIC.len() as u64 => return Ok(false),
        Ok(_) => {}
    }
    let bytes = fs::read(&marker).map_err(|e| Error::io("read", &marker, e))?;
    Ok(bytes == RESTORING_MAGIC)
}

/// Refuses a directory a restore did not finish (its marker there): what is there may be an
/// empty store that the restore made before its snapshot streamed in. Open, `repair` and the
/// read-only tools all ask this.
pub(crate) fn refuse_unfinished_restore(dir: &Path) -> Result<()> {
    if !restore_unfinished(dir)? {
        return Ok(());
    }
    Err(Error::InvalidArgument(format!(
        "{} holds a restore that did not finish ({} is there): not a store; run the restore again into it, which starts afresh",
        dir.display(),
        dir.join(RESTORING_FILE).display()
    )))
}

/// Whether a restore can have written the directory entry `name` (`wal.meta`, a log file, a
/// spare, a file being created, `snap/`, the lock and the marker): what a restore into a
/// directory its unfinished predecessor left may remove. Anything else there is not a
/// restore's, and the directory is refused.
#[cfg(feature = "archive")]
pub(crate) fn restore_may_have_written(name: &str) -> bool {
    name == META_FILE
        || name == crate::store::snap::SNAP_DIR
        || name == crate::sys::fsutil::LOCK_FILE
        || name == RESTORING_FILE
        || name == crate::store::wal::SPARE_NAME
        || log_file::parse_file_name(name).is_some()
        || is_tmp_leftover(name)
}

/// A log file or `wal.meta` being created (`<name>.tmp`): removed at open.
fn is_tmp_leftover(name: &str) -> bool {
    name.strip_suffix(".tmp")
        .is_some_and(|n| n == META_FILE || log_file::parse_file_name(n).is_some())
}

/// How [`plan_log`] reads the log.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Scan {
    pub mode: RecoveryMode,
    /// Inspection tools: files opened read-only, and no entry counts as verified afterwards.
    pub read_only: bool,
    /// Every file is scanned entry by entry, payloads included, as a tail is (`repair`): the log
    /// ends at the first damage anywhere, a damaged file header included (the log then ends
    /// after the file before it).
    pub whole_log: bool,
}

/// The log as recovery found it, and the changes to make once every check has passed.
pub(crate) struct LogPlan {
    /// The files holding the log, each with its recovered payload end and verified slots set.
    pub files: VecDeque<LogFile>,
    pub next_file_id: u64,
    /// Last good index held by the files.
    pub last: u64,
    /// Files from this position of `files` on were scanned entry by entry (the tail zone):
    /// what recovery read of them, it makes durable before handing it out.
    pub scanned_from: usize,
    /// What ended the log, when it was damage (only in tolerate mode): the last file's slots
    /// after `last` are to be zeroed, later files removed.
    pub tail_damage: Option<Error>,
    /// The log ends below the durable commit index: open refuses in either mode, naming the
    /// `.wal` file, offset and index where the committed entries stop.
    pub committed_damage: Option<Error>,
    /// Files to remove: obsolete, an empty tail, or files after the end of the log (newest
    /// first, so that a crash part way leaves the log's files without a gap).
    pub remove: Vec<PathBuf>,
    /// Damage to the header of a file wholly below the snapshot (a crash left it before
    /// cleanup): the file is in `remove` with those before it (it holds nothing of the log),
    /// and the log goes on.
    pub compacted_damage: Option<Error>,
}

/// Works out which files hold the log and where it ends, changing nothing on disk.
///
/// The files split in two. The *sealed* files were durable before the tail zone began: each is
/// checked by its header, its first live slot and its last slot (payloads are not read). The
/// *tail zone* starts at the last file whose header is there and says the file before it was
/// flushed when it was made (`HeaderPeek::Present { prev_unflushed: false }`): with
/// `sync_writes` that is the last file; without, rotations since the last flush may have left
/// several files whose ends (or headers, or directory entries) never reached the disk. Zone
/// files are scanned entry by entry, payloads included, and the log ends at the first empty,
/// damaged or out-of-order slot, missing file or file without a header; files after that end
/// are not part of the log. Entries at or below the snapshot index are not part of the log
/// either: they are skipped, never damage.
pub(crate) fn plan_log(
    dir: &Path,
    meta: &MetaRecord,
    mut ids: Vec<u64>,
    scan: Scan,
    cipher: Option<&Cipher>,
) -> Result<LogPlan> {
    let snap_index = meta.snapshot.as_ref().map_or(0, |s| s.index);
    let snap_term = meta.snapshot.as_ref().map_or(0, |s| s.term);
    let commit = meta.hard_state.as_ref().map_or(0, |h| h.commit);
    let first_file_id = meta.first_file_id.max(1);
    let mut remove = Vec::new();

    // Files of a log that a received snapshot replaced.
    for id in ids.iter().filter(|&&id| id < first_file_id) {
        remove.push(dir.join(log_file::file_name(*id)));
    }
    ids.retain(|&id| id >= first_file_id);

    // The last file, its header damaged, is set aside when its own last slot shows it wholly
    // below the snapshot. Not in an engine group's directory: `Engine::open` keeps no such
    // rule (it refuses the file), and a repair must not call whole what it refuses.
    let last_compacted = |path: &Path| -> Result<bool> {
        if meta.engine.is_some() {
            return Ok(false);
        }
        last_file_compacted(path, snap_index, cipher.is_some())
    };
    let zone = if scan.whole_log {
        0
    } else {
        tail_zone_start(dir, &ids, cipher.is_some())?
    };
    // Up to the zone's first file, every file is there.
    let sealed_run = &ids[..(zone + 1).min(ids.len())];
    for w in sealed_run.windows(2) {
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
    let access = |zone_file: bool| match (scan.read_only, zone_file) {
        (true, _) => Access::ReadOnly,
        (false, true) => Access::Append,
        (false, false) => Access::Sealed,
    };

    let mut files: VecDeque<LogFile> = VecDeque::with_capacity(ids.len());
    // The term of the entry the next file's first live slot follows.
    let mut prev_term = snap_term;
    let mut compacted_damage = None;
    for (pos, &id) in ids[..zone].iter().enumerate() {
        let path = dir.join(log_file::file_name(id));
        let f = match LogFile::open(&path, id, access(false), cipher) {
            Err(e @ Error::Corrupt { .. })
                if wholly_compacted(dir, &ids[pos + 1..], id, snap_index, cipher)? =>
            {
                compacted_damage = Some(e);
                set_aside_compacted(&mut files, &mut remove, path);
                continue;
            }
            f => f?,
        };
        check_base(&f, files.back())?;
        let (payload_end, last_term) = check_sealed(&f, snap_index)?;
        prev_term = prev_term.max(last_term);
        let mut f = f;
        f.set_recovered(0, payload_end);
        files.push_back(f);
    }

    let scanned_from = files.len();
    let mut tail_damage = None;
    let mut tail_good = SLOTS_PER_FILE as u32;
    let mut kept = zone;
    for pos in zone..ids.len() {
        let id = ids[pos];
        let path = dir.join(log_file::file_name(id));
        if pos > zone && id != ids[pos - 1] + 1 {
            // Created after the last flush, its directory entry lost: the log ends before it.
            tail_damage = Some(Error::MissingFile {
                path: dir.join(log_file::file_name(ids[pos - 1] + 1)),
                reason: format!(
                    "the log ends at a full {} and {} exists after a gap",
                    log_file::file_name(ids[pos - 1]),
                    log_file::file_name(id)
                ),
            });
            break;
        }
        // The first later file with a header, if any: files without one after the end of the
        // log are an empty tail (what a crash during rotation leaves), not damage.
        let later = first_with_header(
            dir,
            &ids[pos + 1..],
            cipher.is_some(),
            scan.whole_log,
            &last_compacted,
        )?;
        let header = match log_file::peek_header(&path, id, cipher.is_some()) {
            Err(e @ Error::Corrupt { .. })
                if wholly_compacted(dir, &ids[pos + 1..], id, snap_index, cipher)?
                    || (pos + 1 == ids.len() && last_compacted(&path)?) =>
            {
                compacted_damage = Some(e);
                set_aside_compacted(&mut files, &mut remove, path);
                kept = pos + 1;
                continue;
            }
            Err(e @ Error::Corrupt { .. }) if scan.whole_log => {
                tail_damage = Some(e);
                break;
            }
            header => header?,
        };
        if header == HeaderPeek::Absent {
            // A file wholly below the snapshot whose header never reached the disk (or was
            // zeroed since) holds nothing of the log: set aside, as a damaged header is.
            if later.is_some() && wholly_compacted(dir, &ids[pos + 1..], id, snap_index, cipher)? {
                compacted_damage = Some(Error::corrupt(
                    &path,
                    log_file::HEADER_OFFSET as u64,
                    "no file header",
                ));
                set_aside_compacted(&mut files, &mut remove, path);
                kept = pos + 1;
                continue;
            }
            if let Some(next) = later {
                tail_damage = Some(Error::corrupt(
                    &path,
                    log_file::HEADER_OFFSET as u64,
                    format!(
                        "no file header, but {} exists after it",
                        log_file::file_name(next)
                    ),
                ));
            }
            break;
        }
        let opened = LogFile::open(&path, id, access(true), cipher)
            .and_then(|f| check_base(&f, files.back()).map(|()| f));
        let mut f = match opened {
            Err(e @ Error::Corrupt { .. }) if scan.whole_log => {
                tail_damage = Some(e);
                break;
            }
            f => f?,
        };
        let s = scan_file(&f, snap_index, prev_term);
        prev_term = s.last_term;
        f.set_recovered(if scan.read_only { 0 } else { s.good }, s.cursor);
        let full = s.good as u64 == SLOTS_PER_FILE && s.damage.is_none();
        let good = s.good;
        files.push_back(f);
        kept = pos + 1;
        tail_good = good;
        if !full {
            tail_damage = s.damage.or_else(|| {
                later.map(|next| {
                    Error::corrupt(
                        &path,
                        good as u64 * SLOT_SIZE as u64,
                        format!(
                            "the log ends at slot {good} of a file that is not full, but {} exists after it",
                            log_file::file_name(next)
                        ),
                    )
                })
            });
            break;
        }
    }
    // Files after the end of the log, newest first.
    for &id in ids[kept..].iter().rev() {
        remove.push(dir.join(log_file::file_name(id)));
    }

    // Ids continue after the last file kept (a removed file leaves no gap).
    let next_file_id = match files.back() {
        Some(f) => f.id() + 1,
        None => ids.get(zone).copied().unwrap_or(first_file_id),
    };
    let mut last = files.back().map_or(0, |f| f.base() + tail_good as u64 - 1);
    let wal_first = files.front().map_or(0, |f| f.base());
    // The files must hold every index from the snapshot on up to `last` (an empty last file
    // claims the indexes before its base: the files before it must be there).
    if let Some(first) = files
        .front()
        .filter(|_| last > snap_index && wal_first > snap_index + 1)
    {
        let late = late_first_file(dir, first.id(), first_file_id, wal_first, snap_index);
        if !scan.whole_log {
            return Err(late);
        }
        // The whole-log scan (`repair`): the log ends at the snapshot, its files all go.
        remove.extend(files.drain(..).rev().map(|f| f.path().to_path_buf()));
        tail_damage = Some(late);
        last = 0;
    }
    let end = last.max(snap_index);
    let committed_damage = (commit > end).then(|| {
        committed_loss(
            dir,
            tail_damage.as_ref(),
            files.back(),
            next_file_id,
            end,
            commit,
        )
    });
    if committed_damage.is_none() && scan.mode == RecoveryMode::AbsoluteConsistency {
        if let Some(e) = tail_damage {
            return Err(e);
        }
    }
    Ok(LogPlan {
        files,
        next_file_id,
        last,
        scanned_from,
        tail_damage,
        committed_damage,
        remove,
        compacted_damage,
    })
}

/// Position in `ids` of the first file of the tail zone (see [`plan_log`]): walking back from
/// the last file, the first whose header is there and does not say that the file before it may
/// be unflushed. Files without a header, with a damaged one, or whose header says so, belong to
/// the zone.
fn tail_zone_start(dir: &Path, ids: &[u64], encrypted: bool) -> Result<usize> {
    for (pos, &id) in ids.iter().enumerate().rev() {
        let path = dir.join(log_file::file_name(id));
        match log_file::peek_header(&path, id, encrypted) {
            Ok(HeaderPeek::Present {
                prev_unflushed: false,
            }) => return Ok(pos),
            Ok(HeaderPeek::Present {
                prev_unflushed: true,
            })
            | Ok(HeaderPeek::Absent) => {}
            // A damaged header: the zone's scan decides what it means (the file may lie
            // wholly below the snapshot), or names it.
            Err(Error::Corrupt { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(0)
}

/// The first of `ids` whose file has a header. `damaged_counts`: a damaged header counts as
/// one (the whole-log scan, which ends the log at the first damage, whatever follows it).
/// Otherwise a damaged header is an error naming it, unless it is the last file's and
/// `last_compacted` says the scan sets it aside (it holds nothing of the log).
fn first_with_header(
    dir: &Path,
    ids: &[u64],
    encrypted: bool,
    damaged_counts: bool,
    last_compacted: &dyn Fn(&Path) -> Result<bool>,
) -> Result<Option<u64>> {
    for (pos, &id) in ids.iter().enumerate() {
        let path = dir.join(log_file::file_name(id));
        match log_file::peek_header(&path, id, encrypted) {
            Ok(HeaderPeek::Absent) => {}
            Ok(HeaderPeek::Present { .. }) => return Ok(Some(id)),
            Err(Error::Corrupt { .. }) if pos + 1 == ids.len() && last_compacted(&path)? => {}
            Err(Error::Corrupt { .. }) if damaged_counts => return Ok(Some(id)),
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

/// The error for a log (a `DiskStorage` directory's, an engine group's) whose first log file (`first_id`, present) starts at `base`, past
/// the index after the snapshot's: the file before it is missing, or, when it is the first file
/// the meta page names, its own header is wrong (it is there: never reported missing).
pub(crate) fn late_first_file(
    dir: &Path,
    first_id: u64,
    first_file_id: u64,
    base: u64,
    snap_index: u64,
) -> Error {
    let reason = format!(
        "the snapshot ends at index {snap_index} but the first log file, {}, starts at index {base}",
        log_file::file_name(first_id)
    );
    if first_id > first_file_id {
        Error::MissingFile {
            path: dir.join(log_file::file_name(first_id - 1)),
            reason,
        }
    } else {
        Error::corrupt(
            dir.join(log_file::file_name(first_id)),
            log_file::HEADER_OFFSET as u64,
            format!("{reason}, and the meta page names it as the first"),
        )
    }
}

/// A file wholly below the snapshot whose header is damaged (a crash left it before cleanup):
/// it holds nothing of the log, so damage to it never fails open (docs/DESIGN.md §4) nor ends
/// the log (which would drop the live files after it). It goes to `remove`, with the files
/// before it (all below the snapshot too); `verify` still reports it.
fn set_aside_compacted(files: &mut VecDeque<LogFile>, remove: &mut Vec<PathBuf>, path: PathBuf) {
    remove.extend(files.drain(..).map(|f| f.path().to_path_buf()));
    remove.push(path);
}

/// For a file `id` whose header is damaged: whether the first later file of `later` that
/// opens (its header valid) shows that every index `id` could hold lies at or below
/// `snap_index` (files are consecutive, each 30,000 indexes after the one before).
pub(crate) fn wholly_compacted(
    dir: &Path,
    later: &[u64],
    id: u64,
    snap_index: u64,
    cipher: Option<&Cipher>,
) -> Result<bool> {
    for &next in later {
        let path = dir.join(log_file::file_name(next));
        let Ok(f) = LogFile::open(&path, next, Access::ReadOnly, cipher) else {
            continue;
        };
        let files_between = next - id; // `id`'s base is this many files before `next`'s
        let last_of_id = f
            .base()
            .checked_sub((files_between - 1) * SLOTS_PER_FILE)
            .and_then(|b| b.checked_sub(1));
        return Ok(last_of_id.is_some_and(|last| last <= snap_index));
    }
    Ok(false)
}

/// For the last log file, whose header is damaged (no later file tells where it starts):
/// whether its own last slot, its checksum good, holds an index at or below `snap_index` (the
/// snapshot at the log's last index, which ends a full file). Every index the file holds is
/// then at or below the snapshot: it holds nothing of the log.
fn last_file_compacted(path: &Path, snap_index: u64, encrypted: bool) -> Result<bool> {
    Ok(log_file::last_slot_index(path, encrypted)?.is_some_and(|last| last <= snap_index))
}

/// A file's base must follow the previous file's: 30,000 indexes later.
fn check_base(f: &LogFile, prev: Option<&LogFile>) -> Result<()> {
    let Some(prev) = prev else { return Ok(()) };
    let expected = prev.base().checked_add(SLOTS_PER_FILE);
    if Some(f.base()) != expected {
        return Err(Error::corrupt(
            f.path(),
            log_file::HEADER_OFFSET as u64,
            format!(
                "file starts at index {} but follows {} so it must start at {expected:?}",
                f.base(),
                log_file::file_name(prev.id())
            ),
        ));
    }
    Ok(())
}

/// Checks a sealed (full, durable) file by its first live slot and its last slot, and returns
/// its payload end and last term. Slots at or below the snapshot index are not part of the log
/// and are not checked.
fn check_sealed(f: &LogFile, snap_index: u64) -> Result<(u64, u64)> {
    let last_k = SLOTS_PER_FILE as u32 - 1;
    let first_live = (snap_index + 1).saturating_sub(f.base());
    if first_live > u64::from(last_k) {
        // Wholly compacted (kept by a crash before cleanup): nothing in it is read again.
        let end = f.check_slot(last_k).map_or(f.len(), |c| c.payload_end);
        return Ok((end, 0));
    }
    f.verify_slot(first_live as u32)?;
    let c = f.verify_slot(last_k)?;
    Ok((c.payload_end, c.slot.term))
}

/// The error for a log that ends below the durable commit index: it names where the committed
/// entries stop (the damaged `.wal` file and offset, an empty slot, or the missing next file).
fn committed_loss(
    dir: &Path,
    damage: Option<&Error>,
    tail: Option<&LogFile>,
    next_file_id: u64,
    end: u64,
    commit: u64,
) -> Error {
    let why = format!(
        "the log cannot end there: index {} is at or below the durable commit index {commit}, so committed entries would be lost; `raftwal repair DIR --accept-data-loss` cuts the log there and lowers the commit index (the node then catches up from its leader)",
        end + 1
    );
    match (damage, tail) {
        (
            Some(Error::Corrupt {
                path,
                offset,
                reason,
            }),
            _,
        ) => Error::Corrupt {
            path: path.clone(),
            offset: *offset,
            reason: format!("{reason}; {why}"),
        },
        (Some(Error::MissingFile { path, reason }), _) => Error::MissingFile {
            path: path.clone(),
            reason: format!("{reason}; {why}"),
        },
        (_, Some(f)) if f.base() + SLOTS_PER_FILE - 1 > end => {
            let k = end + 1 - f.base();
            Error::corrupt(
                f.path(),
                k * SLOT_SIZE as u64,
                format!("slot {k} (index {}) is empty; {why}", end + 1),
            )
        }
        _ => {
            let path = dir.join(log_file::file_name(next_file_id));
            if path.exists() {
                // There, but without a header (zeroed, or cut shorter than its place).
                return Error::corrupt(
                    &path,
                    log_file::HEADER_OFFSET as u64,
                    format!(
                        "no file header, but index {}, at or below the commit index, belongs in this file; {why}",
                        end + 1
                    ),
                );
            }
            Error::MissingFile {
                path,
                reason: format!(
                    "the log ends at index {end}, the file that would hold index {} is not there; {why}",
                    end + 1
                ),
            }
        }
    }
}

/// What a scan of one file found.
struct FileScan {
    /// Slots `[0, good)` hold the log (those at or below the snapshot index unchecked).
    good: u32,
    /// Where the file's next payload goes: after its last good entry's.
    cursor: u64,
    /// What ended the log, when it was not a clean end (an empty slot with only empty ones
    /// after it).
    damage: Option<Error>,
    /// Term of the last good entry (`prev_term` if none).
    last_term: u64,
}

/// Scans a file's slots entry by entry, payloads included (reading only; the caller decides
/// what to do about damage). `prev_term`: the term of the entry (or snapshot) the first live
/// slot follows.
fn scan_file(f: &LogFile, snap_index: u64, mut prev_term: u64) -> FileScan {
    // Slots at or below the snapshot index are not part of the log: skipped, never damage.
    // Their payloads stay where they are, so the next payload goes after theirs (when they
    // are in range) if no live entry follows them here.
    let k0 = (snap_index + 1)
        .saturating_sub(f.base())
        .min(SLOTS_PER_FILE) as u32;
    let compacted_end = (0..k0)
        .filter_map(|k| f.check_slot(k).ok())
        .map(|c| c.payload_end)
        .fold(PAYLOAD_START, u64::max);
    let mut cursor = PAYLOAD_START;
    let mut good = k0;
    let mut damage: Option<Error> = None;
    while (good as u64) < SLOTS_PER_FILE {
        if f.slot_is_zero(good) {
            break;
        }
        match f.verify_slot(good) {
            // Payloads follow each other in slot order; terms never decrease.
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
    FileScan {
        good,
        cursor: if good > k0 { cursor } else { compacted_end },
        damage,
        last_term: prev_term,
    }
}
