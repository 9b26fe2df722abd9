//! A group's life: created durably under the engine root (its directory made under a
//! temporary name with its meta page, then renamed), assembled from what open read, removed.
//!
//! Owns: the steps that make a creation or a removal durable and crash-safe. Must never: leave
//! a directory under its final name before its meta page is durable.

use std::path::PathBuf;

use parking_lot::{Mutex, MutexGuard, RwLock};

use crate::engine::tail::Tail;
use crate::engine::{RootMeta, Shared, GROUPS_DIR};
use crate::error::{Error, Result};
use crate::proto::{EngineGroupRecord, MetaRecord};
use crate::store::meta::MetaFile;
use crate::store::snap_build::Builds;
use crate::store::wal::Wal;
use crate::sys::fsutil;

use super::{Group, GroupFiles, GroupLog, JournalPos};
/// Creates group `group_id` under the engine root, durably: its directory is made under a
/// temporary name with its meta page, then renamed into place.
pub(crate) fn create(
    shared: &Shared,
    group_id: u64,
    raft_id: u64,
    incarnation: u64,
) -> Result<Group> {
    let groups = shared.root.join(GROUPS_DIR);
    let dir = shared.group_dir(group_id);
    let tmp = groups.join(format!("{group_id}.tmp"));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| Error::io("remove", &tmp, e))?;
    }
    std::fs::create_dir(&tmp).map_err(|e| Error::io("create directory", &tmp, e))?;
    let journal_seq = shared
        .applied_seq
        .load(std::sync::atomic::Ordering::Acquire);
    let record = MetaRecord {
        raft_id,
        group_id,
        first_file_id: 1,
        engine: Some(EngineGroupRecord {
            journal_seq,
            incarnation,
            ..Default::default()
        }),
        ..Default::default()
    };
    let made = MetaFile::create(&tmp, &record, shared.cipher.as_ref())
        .and_then(|m| {
            drop(m);
            fsutil::rename_no_replace(&tmp, &dir)
        })
        .and_then(|()| fsutil::sync_dir(&groups));
    if let Err(e) = made {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    let (mut meta_file, meta) = MetaFile::open(&dir, shared.cipher.as_ref())?;
    meta_file.detach();
    let mut wal = Wal::from_parts(&dir, Default::default(), 1, 0, shared.cipher.clone());
    wal.set_engine();
    Ok(assemble(
        group_id,
        dir,
        incarnation,
        meta,
        wal,
        meta_file,
        JournalPos {
            seq: journal_seq,
            parts: 0,
        },
        (1, 0),
        None,
    ))
}

/// A group from its parts, with an empty tail. `files_last_term`: the term of the files' last
/// entry where the caller read it already (open); otherwise it is looked up in the files.
#[allow(clippy::too_many_arguments)]
pub(crate) fn assemble(
    id: u64,
    dir: PathBuf,
    incarnation: u64,
    meta: MetaRecord,
    wal: Wal,
    meta_file: MetaFile,
    durable: JournalPos,
    durable_files: (u64, u64),
    files_last_term: Option<u64>,
) -> Group {
    let files_last = wal.last();
    let files_last_term = match files_last_term {
        Some(term) => term,
        None if files_last > 0 => wal.term(files_last).unwrap_or(0),
        None => 0,
    };
    Group {
        id,
        dir,
        incarnation,
        log: RwLock::new(Some(GroupLog {
            meta,
            tail: Tail::default(),
            files_last,
            files_last_term,
            terms: None,
            dirty: false,
            // The last part applied, as the page's position says (module `apply`).
            applied_seq: durable.last_needed(),
            applied_parts: durable.parts,
            ints_dirty: false,
        })),
        files: RwLock::new(Some(GroupFiles {
            wal,
            meta_file,
            durable_seq: durable.seq,
            durable_parts: durable.parts,
            durable_files,
            captured_files: None,
        })),
        checked: RwLock::new(()),
        writing: Mutex::new(()),
        snap_writer: Mutex::new(()),
        tidied: Mutex::new((0, 0)),
        builds: Builds::default(),
    }
}

/// Removes a group's files, durably: its directory is renamed away (`<id>.removing`); the
/// caller then deletes it ([`delete_removed`]) once it has released the commit lead. A crash
/// part way leaves the renamed directory, which open deletes. Returns the renamed directory.
///
/// `no_checkpoint` is the root record's lock, taken before the group left the engine: no
/// checkpoint is recorded until the rename is durable. A checkpoint that no longer saw the
/// group (or found it closed) did not store its meta page, so the records after that page must
/// stay in the journal for as long as a crash can leave the directory in place; recorded past
/// them, a kill before the rename left the group as an old page said, its later writes gone
/// (tests/engine_sigkill.rs found it). A failed rename stops the engine for the same reason,
/// before the lock is released: a checkpoint that waited for it then records nothing
/// (`checkpoint::run` checks under the lock).
pub(crate) fn remove(
    shared: &Shared,
    g: &Group,
    no_checkpoint: MutexGuard<'_, RootMeta>,
) -> Result<std::path::PathBuf> {
    // Its tail goes with it, out of the engine's count.
    shared.account_tail(g.close(), 0);
    // Application snapshot writes to it: later steps find the group closed.
    shared.end_snapshot_writes(Some(&g.dir));
    shared.open_files.forget(g.id);
    let groups = shared.root.join(GROUPS_DIR);
    let doomed = removing_dir(shared, g.id);
    #[cfg(test)]
    tests::BEFORE_RENAME.pass(&shared.root);
    fsutil::rename_no_replace(&g.dir, &doomed)
        .and_then(|()| fsutil::sync_dir(&groups))
        .inspect_err(|e| shared.poison(e))?;
    drop(no_checkpoint);
    Ok(doomed)
}

/// Deletes the directory [`remove`] renamed away, durably. Runs with the commit lead released
/// (every group's commits would wait for a large group's files to go) and the engine's
/// `removals` lock held (a later removal of the same id, whose rename takes the same name,
/// waits for it).
pub(crate) fn delete_removed(shared: &Shared, doomed: &std::path::Path) -> Result<()> {
    #[cfg(test)]
    tests::BEFORE_DELETE.pass(&shared.root);
    std::fs::remove_dir_all(doomed).map_err(|e| Error::io("remove", doomed, e))?;
    fsutil::sync_dir(&shared.root.join(GROUPS_DIR))
}

/// Where a removal of group `id` renames its directory before deleting it.
fn removing_dir(shared: &Shared, id: u64) -> std::path::PathBuf {
    shared.root.join(GROUPS_DIR).join(format!("{id}.removing"))
}

/// Deletes what an earlier removal of group `id` renamed away and then failed to delete (open
/// deletes it too), so that the next removal's rename finds its name free. An error names the
/// leftover; nothing else has changed.
pub(crate) fn clear_leftover(shared: &Shared, id: u64) -> Result<()> {
    let leftover = removing_dir(shared, id);
    match std::fs::symlink_metadata(&leftover) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("stat", &leftover, e)),
        Ok(_) => std::fs::remove_dir_all(&leftover).map_err(|e| Error::io("remove", &leftover, e)),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use crate::engine::pauses::Pauses;

    /// A removal, its group out of the engine and closed, before its directory is renamed away.
    pub(crate) static BEFORE_RENAME: Pauses = Pauses::new();

    /// A removal, its directory renamed away (durably), before it is deleted.
    pub(crate) static BEFORE_DELETE: Pauses = Pauses::new();
}
