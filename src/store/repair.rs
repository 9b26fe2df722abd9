//! `raftwal repair DIR --accept-data-loss`: the operator's way out of a log that open refuses
//! because its damage lies at or below the durable commit index (a cut there would drop
//! committed entries, so recovery never makes it on its own).
//!
//! Owns: finding the first damage anywhere in the log (every live entry of every file checked,
//! payloads included, as open checks a tail), cutting the log there, and lowering the stored
//! commit index and checkpoint to the last entry left; the node then catches up from its
//! leader. In a group directory of an engine root, the engine fields of the meta page are
//! rewritten to the cut too (the engine trusts them instead of scanning), and the repair is
//! refused unless the engine was closed cleanly (its journal then holds nothing for replay to
//! put back past the cut). [`check`] says what [`repair`] would do without changing anything.
//! What open tidies by itself (an empty tail, leftovers) is not a repair. Must never: run
//! without the directory lock (and an engine root's), change anything before every check has
//! passed, or touch the snapshot, the hard state's term and vote, or any entry before the
//! first damage.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::options::RecoveryMode;
use crate::proto::{EngineGroupRecord, MetaRecord};
use crate::store::log_file::{PAYLOAD_START, SLOTS_PER_FILE};
use crate::store::meta::{self, MetaFile};
use crate::store::recovery::{self, LogPlan, Scan};
use crate::store::storage;
use crate::sys::crypto::Cipher;
use crate::sys::fsutil;

/// What a repair does (or, from [`check`], would do) to a directory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RepairReport {
    /// The WAL directory.
    #[serde(serialize_with = "crate::tools::json_path::lossy")]
    pub dir: PathBuf,
    /// The first damage in the log (file, offset, what is wrong), when there is any.
    pub damage: Option<String>,
    /// The last index that stays (the snapshot index when no entry does).
    pub last_index: u64,
    /// Files removed (only by a repair that is `needed`): log files after the damage, and
    /// leftovers open would remove anyway.
    #[serde(serialize_with = "crate::tools::json_path::lossy")]
    pub removed_files: Vec<PathBuf>,
    /// The stored commit index before the repair.
    pub commit_before: u64,
    /// The commit index after it (at most `last_index`).
    pub commit_after: u64,
    /// The checkpoint index before the repair.
    pub checkpoint_before: u64,
    /// The checkpoint index after it (at most `last_index`).
    pub checkpoint_after: u64,
    /// Anything changes at all (`false`: the log is whole and within its commit index; an
    /// empty tail or leftovers, which open removes by itself, are not a reason to repair).
    pub needed: bool,
    /// The changes were made (`repair`), or only described (`check`).
    pub done: bool,
}

impl RepairReport {
    /// Committed entries the repair drops (its commit index falls by this much).
    pub fn committed_entries_lost(&self) -> u64 {
        self.commit_before - self.commit_after
    }
}

/// What [`repair`] would do to `dir` (read-only: nothing is created or changed, no lock is
/// taken). `key`: the store's encryption key, if it has one. Refused, as [`repair`] is, for a
/// group directory of an engine root that an engine has open or did not close cleanly.
pub fn check<P: AsRef<Path>>(dir: P, key: Option<[u8; 32]>) -> Result<RepairReport> {
    let dir = dir.as_ref();
    let cipher = key.as_ref().map(Cipher::new);
    storage::check_engine_group_closed(dir, cipher.as_ref())?;
    recovery::refuse_unfinished_restore(dir)?;
    let listing = recovery::list_dir(dir)?;
    let (meta, _) = meta::read_only(dir, cipher.as_ref())?;
    recovery::check_meta_bounds(dir, &meta)?;
    // Damage open refuses and a cut cannot mend: an error naming it, never "nothing to
    // repair" (the snapshot file is read whole, as open reads it).
    recovery::check_snapshot_file(dir, &meta, cipher.as_ref())?;
    let plan = plan(dir, &meta, listing.ids, true, cipher.as_ref())?;
    Ok(report(dir, &meta, &plan, listing.leftovers, false))
}

/// Cuts the log in `dir` at its first damage and lowers the commit index and checkpoint to the
/// last entry left (durably: the meta page first, so that a crash part way leaves a directory
/// that opens, or that a second repair finishes). Takes the directory's lock: refused while a
/// node has the directory open; for a group directory of an engine root, the root's lock too
/// (as `DiskStorage::open` does: refused while an engine has the root open, or when it did
/// not close it cleanly).
pub fn repair<P: AsRef<Path>>(dir: P, key: Option<[u8; 32]>) -> Result<RepairReport> {
    let dir = dir.as_ref();
    if !dir.join(meta::META_FILE).is_file() {
        return Err(Error::MissingFile {
            path: dir.join(meta::META_FILE),
            reason: "not a raftwal directory (no meta page)".to_string(),
        });
    }
    let _lock = fsutil::lock_dir(dir)?;
    let cipher = key.as_ref().map(Cipher::new);
    let _engine_lock = storage::engine_root_lock(dir, cipher.as_ref())?;
    recovery::refuse_unfinished_restore(dir)?;
    let listing = recovery::list_dir(dir)?;
    let (mut meta_file, mut meta) = MetaFile::open(dir, cipher.as_ref())?;
    recovery::check_meta_bounds(dir, &meta)?;
    recovery::check_snapshot_file(dir, &meta, cipher.as_ref())?;
    let mut plan = plan(dir, &meta, listing.ids, false, cipher.as_ref())?;
    let r = report(dir, &meta, &plan, listing.leftovers, true);
    if !r.needed {
        return Ok(RepairReport { done: false, ..r });
    }
    let engine = meta
        .engine
        .as_ref()
        .and_then(|e| engine_fields_cut(e, &plan, &r));
    if (r.commit_after, r.checkpoint_after) != (r.commit_before, r.checkpoint_before)
        || engine.is_some()
    {
        if let Some(hs) = meta.hard_state.as_mut() {
            hs.commit = r.commit_after;
        }
        meta.checkpoint_index = r.checkpoint_after;
        if let Some(e) = engine {
            meta.engine = Some(e);
        }
        meta_file.store(&meta)?;
        meta_file.flush()?;
    }
    fsutil::remove_files(dir, r.removed_files.iter().map(PathBuf::as_path))?;
    let last = plan.last;
    if let Some(f) = plan.files.back_mut() {
        if plan.tail_damage.is_some() {
            f.zero_slots((last + 1 - f.base()) as u32, SLOTS_PER_FILE as u32)?;
        }
        f.sync()?;
    }
    Ok(r)
}

/// An engine group's fields for the log as the cut leaves it, when the cut lies before the log's
/// end they record (`Engine::open` trusts them: it zeroes the slots past `last_index` and
/// removes the files after `last_file_id`, so the cut must be there). Written as the engine
/// writes them (`GroupFiles::engine_record`); the journal position stays: after a clean close
/// the journal holds no record after it for replay to apply.
fn engine_fields_cut(
    eng: &EngineGroupRecord,
    plan: &LogPlan,
    r: &RepairReport,
) -> Option<EngineGroupRecord> {
    if r.last_index >= eng.last_index {
        return None;
    }
    let tail = plan.files.back();
    Some(EngineGroupRecord {
        last_index: r.last_index,
        tail_payload_end: tail.map_or(PAYLOAD_START, |f| f.payload_used() + PAYLOAD_START),
        last_file_id: tail.map_or(0, |f| f.id()),
        ..*eng
    })
}

/// The log scanned whole, as open scans a tail, in the default recovery mode.
fn plan(
    dir: &Path,
    meta: &MetaRecord,
    ids: Vec<u64>,
    read_only: bool,
    cipher: Option<&Cipher>,
) -> Result<LogPlan> {
    let scan = Scan {
        mode: RecoveryMode::TolerateTailCorruption,
        read_only,
        whole_log: true,
    };
    recovery::plan_log(dir, meta, ids, scan, cipher)
}

fn report(
    dir: &Path,
    meta: &MetaRecord,
    plan: &LogPlan,
    leftovers: Vec<PathBuf>,
    done: bool,
) -> RepairReport {
    let snap_index = meta.snapshot.as_ref().map_or(0, |s| s.index);
    let last_index = plan.last.max(snap_index);
    let commit_before = meta.hard_state.as_ref().map_or(0, |h| h.commit);
    let checkpoint_before = meta.checkpoint_index;
    let commit_after = commit_before.min(last_index);
    let checkpoint_after = checkpoint_before.min(last_index);
    // Removing an empty tail, obsolete files or leftovers loses nothing, and open does it by
    // itself: on their own they are not a repair.
    let needed = plan.tail_damage.is_some()
        || commit_after != commit_before
        || checkpoint_after != checkpoint_before;
    let removed_files = if needed {
        leftovers.into_iter().chain(plan.remove.clone()).collect()
    } else {
        Vec::new()
    };
    RepairReport {
        dir: dir.to_path_buf(),
        // The damage the cut is for: in the tail, or what makes committed entries go.
        damage: plan
            .tail_damage
            .as_ref()
            .or(plan.committed_damage.as_ref())
            .map(Error::to_string),
        last_index,
        removed_files,
        commit_before,
        commit_after,
        checkpoint_before,
        checkpoint_after,
        needed,
        done: done && needed,
    }
}
