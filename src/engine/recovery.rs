//! Opening an engine root: its root record, its groups, and the replay of the journal.
//!
//! Each group is opened from its meta page, which says how far its files are durable (the last
//! index and the payload end of its last file when the page was written) and which journal
//! records it reflects: its files are mapped, files created after that page (which the journal
//! will create again) are removed, and no slot area is scanned. Then every journal record after
//! the root's checkpoint is applied, part by part, to the groups it names (the incarnation
//! tells a removed group from a new one with the same id; records a group's meta page already
//! reflects are skipped), as the commit applied it. Slots past a group's recorded end, which
//! writes after its meta page may have left, are zeroed before (only pages that hold data).
//!
//! Owns: what an engine root holds at open, and the order: groups as their meta pages say,
//! then the journal. Must never: read a group's whole slot area, or apply a record before the
//! groups it names are open.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64};

use parking_lot::{Condvar, Mutex, RwLock};

use super::batch;
use super::checkpoint::Checkpointer;
use super::group::{self, Change, Group};
use super::journal::Journal;
use super::{commit, EngineOptions, Shared, GROUPS_DIR, JOURNAL_DIR};
use crate::crypto::Cipher;
use crate::error::{Error, Result};
use crate::fsutil;
use crate::log_file::{self, Access, LogFile, PAYLOAD_START, SLOTS_PER_FILE};
use crate::meta::{MetaFile, PageRecord};
use crate::options::RecoveryMode;
use crate::proto::EngineRecord;
use crate::recovery as dir_recovery;
use crate::wal::Wal;

/// Opens the engine root `root` (whose lock the caller holds in `lock`).
pub(crate) fn open(
    root: PathBuf,
    opts: EngineOptions,
    cipher: Option<Cipher>,
    lock: File,
) -> Result<Shared> {
    let mode = opts.recovery_mode;
    let root_file = root.join(<EngineRecord as PageRecord>::FILE);
    let (mut root_meta, mut root_record) = if root_file.exists() {
        MetaFile::<EngineRecord>::open(&root, None)?
    } else {
        let fresh = EngineRecord {
            checkpoint_seq: 0,
            next_incarnation: 1,
            open: false,
        };
        (MetaFile::create(&root, &fresh, None)?, fresh)
    };
    if mode == RecoveryMode::AbsoluteConsistency {
        if let Some(e) = root_meta.copies().damage(root_meta.path()) {
            return Err(e);
        }
    }

    let groups = open_groups(&root, mode, cipher.as_ref())?;
    let journal_dir = root.join(JOURNAL_DIR);
    let new_journal = !journal_dir.exists();
    let opened = Journal::open(
        &journal_dir,
        opts.journal_segment_bytes,
        max_spares(&opts),
        cipher.clone(),
        root_record.checkpoint_seq,
        mode,
    )?;
    if new_journal {
        // The journal's directory entry, durable before a record in it is acknowledged (the
        // segments' names are made durable in it, but a power loss could lose the directory).
        fsutil::sync_dir(&root)?;
    }
    // Marked open before anything is replayed: from now on a group directory may depend on
    // the journal, and `DiskStorage::open` refuses it until a clean close.
    root_record.open = true;
    root_meta.store(&root_record)?;
    root_meta.flush()?;

    let shared = Shared {
        root,
        opts,
        cipher,
        groups: RwLock::new(groups),
        journal: Mutex::new(opened.journal),
        journal_cv: Condvar::new(),
        preparer: Default::default(),
        stopping: AtomicBool::new(false),
        pipeline: Mutex::new(commit::Queue::default()),
        pipeline_cv: Condvar::new(),
        applied_seq: AtomicU64::new(root_record.checkpoint_seq),
        root_meta: Mutex::new((root_meta, root_record)),
        closed: AtomicBool::new(false),
        poisoned: Mutex::new(None),
        checkpointer: Checkpointer::default(),
        unwritten: Mutex::new(Vec::new()),
        tail_bytes: AtomicU64::new(0),
        lock: Mutex::new(Some(lock)),
    };
    replay(&shared, opened.records)?;
    // A torn tail cut, durably, before anything new is acknowledged: appends after the cut
    // must never sit behind a torn record that a later open would take for damage.
    shared.journal.lock().seal_cut()?;
    Ok(shared)
}

/// Spare segments kept: as many as a checkpoint frees (the journal then reuses its files
/// instead of making new ones), at least one.
fn max_spares(opts: &EngineOptions) -> usize {
    let per_checkpoint = opts.checkpoint_bytes / opts.journal_segment_bytes.max(1);
    (per_checkpoint as usize + 1).clamp(1, 16)
}

/// Opens every group under `root/groups`, removing what a crash during a creation or a
/// removal left.
fn open_groups(
    root: &Path,
    mode: RecoveryMode,
    cipher: Option<&Cipher>,
) -> Result<BTreeMap<u64, std::sync::Arc<Group>>> {
    let dir = root.join(GROUPS_DIR);
    let mut groups = BTreeMap::new();
    let mut leftovers = Vec::new();
    for ent in fs::read_dir(&dir).map_err(|e| Error::io("read directory", &dir, e))? {
        let ent = ent.map_err(|e| Error::io("read directory", &dir, e))?;
        if !ent.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            continue;
        }
        let Some(name) = ent.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if let Some(id) = parse_group_name(&name) {
            let g = open_group(&ent.path(), id, mode, cipher)?;
            groups.insert(id, std::sync::Arc::new(g));
        } else if name
            .strip_suffix(".tmp")
            .or_else(|| name.strip_suffix(".removing"))
            .and_then(parse_group_name)
            .is_some()
        {
            leftovers.push(ent.path());
        }
    }
    if !leftovers.is_empty() {
        for p in &leftovers {
            fs::remove_dir_all(p).map_err(|e| Error::io("remove", p, e))?;
        }
        fsutil::sync_dir(&dir)?;
    }
    Ok(groups)
}

/// A group directory's name: its id in decimal, canonical spelling only.
pub(crate) fn parse_group_name(name: &str) -> Option<u64> {
    let id: u64 = name.parse().ok()?;
    (id.to_string() == name).then_some(id)
}

/// Opens one group from its meta page: the files it relies on, mapped; files made after it
/// removed. Reads the meta page, each file's header and nothing of the slot areas.
fn open_group(dir: &Path, id: u64, mode: RecoveryMode, cipher: Option<&Cipher>) -> Result<Group> {
    let (mut meta_file, meta) = MetaFile::open(dir, cipher)?;
    if mode == RecoveryMode::AbsoluteConsistency {
        if let Some(e) = meta_file.copies().damage(meta_file.path()) {
            return Err(e);
        }
    }
    meta_file.detach();
    dir_recovery::check_meta_bounds(dir, &meta)?;
    let Some(eng) = meta.engine else {
        return Err(Error::corrupt(
            meta_file.path(),
            0,
            "the meta page of an engine group has no engine record",
        ));
    };
    if meta.group_id != id {
        return Err(Error::corrupt(
            meta_file.path(),
            0,
            format!(
                "the meta page names group {}, its directory {id}",
                meta.group_id
            ),
        ));
    }
    let listing = dir_recovery::list_dir(dir)?;
    let first_file_id = meta.first_file_id.max(1);
    let mut remove: Vec<PathBuf> = listing.leftovers;
    let mut ids = Vec::new();
    for id in listing.ids {
        if id < first_file_id {
            remove.push(dir.join(log_file::file_name(id)));
        } else {
            ids.push(id);
        }
    }
    let last = eng.last_index;
    let tail_id = eng.last_file_id;
    // Files made after the meta page was written: the journal makes them again.
    for &id in ids.iter().filter(|&&i| i > tail_id) {
        remove.push(dir.join(log_file::file_name(id)));
    }
    ids.retain(|&i| i <= tail_id);
    let mut files = std::collections::VecDeque::new();
    let mut next_file_id = first_file_id.max(tail_id + 1);
    let mut wal_last = 0;
    if let Some(&first_id) = ids.first() {
        // Files wholly below the snapshot may be gone from the front; none may be missing
        // after the first one left.
        for want in first_id..=tail_id {
            if !ids.contains(&want) {
                return Err(Error::MissingFile {
                    path: dir.join(log_file::file_name(want)),
                    reason: format!(
                        "the meta page says the log ends at index {last} in {}",
                        log_file::file_name(tail_id)
                    ),
                });
            }
            let f = LogFile::open(
                &dir.join(log_file::file_name(want)),
                want,
                Access::Detached,
                cipher,
            )?;
            if let Some(first) = files.front() {
                let expected = LogFile::base(first) + SLOTS_PER_FILE * (want - first_id);
                if f.base() != expected {
                    return Err(Error::corrupt(
                        f.path(),
                        log_file::HEADER_OFFSET as u64,
                        format!(
                            "file starts at index {} but must start at {expected}",
                            f.base()
                        ),
                    ));
                }
            }
            files.push_back(f);
        }
        let n = files.len();
        for (pos, f) in files.iter_mut().enumerate() {
            let len = f.len();
            let p = eng.tail_payload_end;
            let end = if pos + 1 == n && (PAYLOAD_START..=len).contains(&p) {
                p
            } else {
                len
            };
            f.set_recovered(0, end);
        }
        let base = files.front().map_or(1, LogFile::base);
        let snap_index = meta.snapshot.as_ref().map_or(0, |s| s.index);
        if last > snap_index && base > snap_index + 1 {
            return Err(Error::MissingFile {
                path: dir.join(log_file::file_name(first_id.saturating_sub(1).max(1))),
                reason: format!(
                    "the snapshot ends at index {snap_index} but the first log file, {}, starts at index {base}",
                    log_file::file_name(first_id)
                ),
            });
        }
        next_file_id = tail_id + 1;
        wal_last = last.max(base - 1);
        // Slots past the recorded end were written after the meta page (the journal writes
        // them again, or they belong to records that never became durable): cleared, so that
        // nothing past the end of the log looks like entries.
        if let Some(tail) = files.back_mut() {
            let k = (wal_last + 1 - tail.base()).min(SLOTS_PER_FILE) as u32;
            tail.clear_slots_from(k)?;
        }
    } else if tail_id >= first_file_id && last > meta.snapshot.as_ref().map_or(0, |s| s.index) {
        return Err(Error::MissingFile {
            path: dir.join(log_file::file_name(tail_id)),
            reason: format!("the meta page says the log ends at index {last} in it"),
        });
    }
    if !remove.is_empty() {
        fsutil::remove_files(dir, remove.iter().map(PathBuf::as_path))?;
    }
    let durable_files = match (files.front(), files.back()) {
        (Some(a), Some(b)) => (a.id(), b.id()),
        _ => (1, 0),
    };
    let mut wal = Wal::from_parts(dir, files, next_file_id, wal_last, cipher.cloned());
    wal.set_engine();
    Ok(group::assemble(
        id,
        dir.to_path_buf(),
        eng.incarnation,
        meta,
        wal,
        meta_file,
        eng.journal_seq,
        durable_files,
    ))
}

/// Applies the journal's records after the checkpoint to the groups they name, then zeroes the
/// slots past each replayed group's end that earlier writes may have left.
fn replay(shared: &Shared, records: Vec<super::journal::Record>) -> Result<()> {
    let groups = shared.groups.read();
    for rec in records {
        for part in batch::decode(&rec.body, rec.seq)? {
            let Some(g) = groups.get(&part.group_id) else {
                continue;
            };
            if g.incarnation != part.incarnation {
                continue;
            }
            let durable_seq = g.files.read().as_ref().map_or(u64::MAX, |f| f.durable_seq);
            if rec.seq <= durable_seq {
                continue;
            }
            check_contiguous(g, &part, rec.seq)?;
            let change = Change {
                snapshot: part.snapshot.as_ref(),
                entries: &part.entries,
                hard_state: part.hard_state.as_ref(),
                conf_state: part.conf_state.clone(),
                ints: part.ints,
                truncate: part.truncate,
            };
            g.apply(shared, &change, rec.seq)?;
        }
        shared
            .applied_seq
            .store(rec.seq, std::sync::atomic::Ordering::Release);
    }
    Ok(())
}

/// A replayed part's entries must continue the group's log as its meta page left it: a gap
/// means the meta page's state is older than the journal's (its newest copy lost to damage, and
/// the records in between trimmed), and applying it would leave a log with a hole.
fn check_contiguous(g: &Group, part: &batch::Decoded, seq: u64) -> Result<()> {
    let Some(e0) = part.entries.first().filter(|_| part.snapshot.is_none()) else {
        return Ok(());
    };
    let last = g.with_log(|log| Ok(log.last_index()))?;
    if e0.index > last + 1 {
        return Err(Error::corrupt(
            g.dir.join(crate::meta::META_FILE),
            0,
            format!(
                "journal record {seq} continues group {}'s log at index {}, but its meta page ends the log at {last}: the newest state of the meta page is lost",
                g.id, e0.index
            ),
        ));
    }
    Ok(())
}
