//! Read-only access to an engine root (`ROOT/engine.meta`, `ROOT/journal/`, `ROOT/groups/<id>/`),
//! for the operator tools: `raftwal inspect|verify ROOT` (every group and the shared files) and
//! `--group ID` for `inspect`, `verify`, `dump` and `snapshot save`.
//!
//! A group's directory holds its state as of its meta page (which names the journal record it
//! reflects); the journal holds what came after. Each group is read as `Engine::open` reads it
//! (its meta page, the files that page relies on, their headers; never a slot area), then the
//! journal's records after the checkpoint are replayed into it in memory, part by part, as open
//! replays them: the state shown "after replay" is the group as an opened engine would serve it,
//! and `dump` and `snapshot save` read the group that way (entries still only in the journal
//! included).
//!
//! Owns: the description of an engine root as open would find it, what counts as damage there
//! (what open refuses, journal records a default open would drop, parts that contradict the
//! groups, and every checksum `verify` reads), and riding out a live engine: the tools run beside
//! an engine holding the root's lock, so when the root is marked open and what was read is not
//! clean (a checkpoint moved on, a record was in flight, a file went), it is read again, a few
//! times, before anything is reported. Must never: take the lock, write, create, rename or
//! remove anything, map a file (files are read with `pread` into copies), or panic on any
//! content.
//!
//! This file owns the entry points: `is_engine_root`, `group_ids` and `EngineInspector` (opening
//! a root or one group, the summary, one group's entries and snapshot). The rest lives in one
//! file per concern: `report` (the report types, as `--json` prints them, and how a read of the
//! root becomes a summary), `root` (one read of the root: `engine.meta`, the journal, the groups
//! and the journal's parts dealt out to them), `group` (one group's directory as its meta page
//! describes it, and entries read back from its files), `replay` (a group's log replayed in
//! memory from the journal, and the checks on each part), `verify` (every checksum, for
//! `verify`) and `retry` (reading again while a live engine changes the root).

mod group;
mod replay;
mod report;
mod retry;
mod root;
mod verify;

use std::path::{Path, PathBuf};

use bytes::Bytes;
use raft::prelude::{Entry, EntryType};

use crate::error::{Error, Result};
use crate::proto::{EngineRecord, MetaRecord};
use crate::store::meta;
use crate::store::snap::SnapshotReader;
use crate::sys::crypto::Cipher;

use group::{read_files, GroupDisk, GroupRead};
pub use report::{
    EngineSummary, EngineVerifyReport, GroupCheck, GroupJournalInfo, GroupState, GroupSummary,
    JournalCheck, JournalSummary, SegmentInfo, SpareInfo,
};
use retry::{read_with_retries, ATTEMPTS};
use root::{list_groups, RootRead};

/// Whether `path` is an engine root (it holds `engine.meta`, or, without a `wal.meta`, a group
/// directory in `groups/` or a segment in `journal/`: a root that lost its `engine.meta`, which
/// the tools then report missing; empty ones are what a first open that failed leaves, which
/// open takes for a new root) rather than a WAL directory.
pub fn is_engine_root(path: &Path) -> bool {
    let a_segment = || {
        std::fs::read_dir(path.join(crate::engine::JOURNAL_DIR)).is_ok_and(|mut l| {
            l.any(|e| e.is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".jnl")))
        })
    };
    path.join(<EngineRecord as meta::PageRecord>::FILE)
        .is_file()
        || (!path.join(crate::store::meta::META_FILE).exists()
            && (crate::engine::scan::any_group_dir(path).is_ok_and(|g| g.is_some()) || a_segment()))
}

/// The ids of the groups under an engine root, ascending (directory names only: nothing is
/// read).
pub fn group_ids(root: &Path) -> Result<Vec<u64>> {
    Ok(list_groups(root)?.0)
}

/// An engine root opened read-only.
pub struct EngineInspector {
    root: PathBuf,
    cipher: Option<Cipher>,
    read: RootRead,
    summary: EngineSummary,
    /// Reads of a root marked open that was not read clean ([`ATTEMPTS`]; 1 for a root no
    /// engine is writing, [`EngineInspector::open_once`]).
    attempts: usize,
    /// A test's live engine, moving on between the steps of each read `verify` takes again.
    #[cfg(test)]
    between: Option<std::sync::Mutex<ReadHook>>,
}

/// A test's hook into the reads `verify` takes again ([`root::read_root_with`]).
#[cfg(test)]
type ReadHook = Box<dyn FnMut(root::Between) + Send>;

impl EngineInspector {
    /// Opens the engine root `root` read-only (`key`: its encryption key, if it has one) and
    /// reads every group. Nothing is created, changed or locked.
    pub fn open_with_key<P: AsRef<Path>>(
        root: P,
        key: Option<[u8; 32]>,
    ) -> Result<EngineInspector> {
        Self::open_inner(root.as_ref(), key, None, ATTEMPTS)
    }

    /// [`EngineInspector::open_with_key`] for one group: only group `group_id` is read and
    /// reported, and its entries and snapshot can be read ([`EngineInspector::entries`],
    /// [`EngineInspector::snapshot_reader`]) as an opened engine would serve them.
    /// `Error::UnknownGroup` when the root has no such group.
    pub fn open_group<P: AsRef<Path>>(
        root: P,
        key: Option<[u8; 32]>,
        group_id: u64,
    ) -> Result<EngineInspector> {
        Self::open_inner(root.as_ref(), key, Some(group_id), ATTEMPTS)
    }

    /// [`EngineInspector::open_with_key`] (`group_id` `None`) or
    /// [`EngineInspector::open_group`], for a root no engine is writing (a copy, a test's
    /// image of a killed engine): what is read is not read again, however it looks, by the
    /// open or by [`EngineInspector::verify`] (a root marked open and not clean is read again
    /// after a pause otherwise, in case a live engine moved on under the reader). `verify` may
    /// still read the root once more, to explain a slot that fails in a root marked open; on a
    /// root no engine writes that finds what the first read found.
    #[doc(hidden)]
    pub fn open_once<P: AsRef<Path>>(
        root: P,
        key: Option<[u8; 32]>,
        group_id: Option<u64>,
    ) -> Result<EngineInspector> {
        Self::open_inner(root.as_ref(), key, group_id, 1)
    }

    fn open_inner(
        root: &Path,
        key: Option<[u8; 32]>,
        only: Option<u64>,
        attempts: usize,
    ) -> Result<EngineInspector> {
        let cipher = key.as_ref().map(Cipher::new);
        let read = read_with_retries(root, cipher.as_ref(), only, attempts)?;
        let summary = read.summary();
        Ok(EngineInspector {
            root: root.to_path_buf(),
            cipher,
            read,
            summary,
            attempts,
            #[cfg(test)]
            between: None,
        })
    }

    /// What the root holds.
    pub fn summary(&self) -> &EngineSummary {
        &self.summary
    }

    /// The group the inspector was opened for ([`EngineInspector::open_group`]).
    fn only(&self) -> Result<(&GroupRead, &GroupDisk)> {
        let g = self
            .read
            .only
            .and_then(|id| self.read.groups.get(&id))
            .ok_or_else(|| {
                Error::InvalidArgument(
                    "entries and snapshots are read from an inspector opened for one group"
                        .to_string(),
                )
            })?;
        match &g.disk {
            Ok(d) => Ok((g, d)),
            Err(e) => Err(same_damage(e)),
        }
    }

    /// The first and last index of the group the inspector was opened for, after replay.
    pub fn first_last(&self) -> Result<(u64, u64)> {
        let (g, _) = self.only()?;
        if let Some(e) = &g.replay.damage {
            return Err(same_damage(e));
        }
        Ok((g.replay.first_index(), g.replay.last_index()))
    }

    /// Entries `[lo, hi)` of the group the inspector was opened for, as an opened engine would
    /// serve them: from the group's files below what the journal replaced, then from the
    /// journal. Checksums are verified (the files' slots and payloads; the journal's records
    /// were checked when read). Outside `[first_index, last_index]` is an error (`Compacted`,
    /// `Unavailable`).
    pub fn entries(&self, lo: u64, hi: u64) -> Result<Vec<Entry>> {
        let (g, disk) = self.only()?;
        let (first, last) = self.first_last()?;
        let rp = &g.replay;
        if lo < first {
            return Err(Error::Compacted {
                index: lo,
                first_index: first,
            });
        }
        if hi > last.saturating_add(1) || lo > hi {
            return Err(Error::Unavailable {
                index: hi.saturating_sub(1),
                last_index: last,
            });
        }
        let mut out = Vec::with_capacity((hi - lo).min(1 << 16) as usize);
        let split = rp.files_upper().saturating_add(1).clamp(lo, hi);
        if lo < split {
            read_files(disk, &g.files, lo, split, last, &mut out)?;
            for e in out.iter_mut() {
                if e.index < rp.shape.truncated_below
                    && e.get_entry_type() == EntryType::EntryNormal
                {
                    e.data = Bytes::new();
                }
            }
        }
        if split < hi {
            let kept = rp.kept.as_deref().unwrap_or(&[]);
            let range = split
                .checked_sub(rp.shape.tail_start)
                .map(|from| from as usize..(hi - rp.shape.tail_start) as usize);
            match range.and_then(|r| kept.get(r)) {
                Some(es) => out.extend_from_slice(es),
                None => {
                    return Err(Error::Unavailable {
                        index: split,
                        last_index: last,
                    })
                }
            }
        }
        Ok(out)
    }

    /// The current snapshot of the group the inspector was opened for (after replay), as a
    /// verified stream. `Error::NoSnapshot` when it has none.
    pub fn snapshot_reader(&self) -> Result<SnapshotReader> {
        let (g, disk) = self.only()?;
        match g.replay.meta.snapshot.as_ref().filter(|s| s.index > 0) {
            // Beside a live engine that replaced it since: the one the meta page names now.
            Some(s) => match super::open_snapshot(&disk.dir, s, self.cipher.as_ref()) {
                Err(Error::MissingFile { .. }) if self.group_gone(disk) => {
                    Err(Error::UnknownGroup {
                        group_id: disk.meta.group_id,
                    })
                }
                r => r,
            },
            None => Err(Error::NoSnapshot {
                path: disk.dir.clone(),
            }),
        }
    }

    /// Whether the group read is gone since: removed by a live engine (its meta page with
    /// it), or removed and created again (another incarnation's page). Its files went with it,
    /// which is not damage.
    fn group_gone(&self, disk: &GroupDisk) -> bool {
        match meta::read_only::<MetaRecord>(&disk.dir, self.cipher.as_ref()) {
            Ok((now, _)) => now
                .engine
                .is_none_or(|e| e.incarnation != disk.eng.incarnation),
            Err(_) => !disk.dir.join(meta::META_FILE).exists(),
        }
    }
}

/// Damage (exit code 1 for the tools), as opposed to an error that stops the reading.
fn is_damage(e: &Error) -> bool {
    matches!(e, Error::Corrupt { .. } | Error::MissingFile { .. })
}

/// A new error describing the same damage (errors are not `Clone`).
fn same_damage(e: &Error) -> Error {
    super::same_damage(e)
}

#[cfg(test)]
mod tests {
    use super::EngineInspector;
    use crate::Engine;
    use bytes::Bytes;

    /// An inspector's snapshot of a group, read before the group made a newer one and removed
    /// the file of the one read (a live engine): the newer one is served, not a missing file
    /// (`raftwal snapshot save --group` once failed so beside an engine taking snapshots).
    #[test]
    fn a_snapshot_replaced_after_the_read_is_read_again() {
        let dir = tempfile::tempdir().unwrap();
        let e = Engine::open(dir.path()).unwrap();
        let g = e.create_group(1, 1).unwrap();
        let mut es = Vec::new();
        for i in 1..=10 {
            let mut en = raft::prelude::Entry::default();
            (en.index, en.term) = (i, 1);
            es.push(en);
        }
        let mut hs = raft::prelude::HardState::default();
        (hs.term, hs.commit) = (1, 10);
        g.save(&hs, &es, &Default::default()).unwrap();
        g.create_snapshot(5, None, Bytes::from_static(b"at 5"))
            .unwrap();
        let inspector = EngineInspector::open_group(dir.path(), None, 1).unwrap();
        g.create_snapshot(8, None, Bytes::from_static(b"at 8"))
            .unwrap();
        let reader = inspector.snapshot_reader().unwrap();
        assert_eq!(reader.metadata().index, 8);
    }
}
