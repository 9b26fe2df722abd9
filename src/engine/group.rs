//! One group of an engine: its state in memory, how a commit's part changes it, and
//! [`GroupStorage`], the `raft::Storage` handle raft-rs uses.
//!
//! Owns: the group's durable point (the journal position its meta page reflects, and the files
//! that page relies on), the rule that keeps it safe (a change that would remove a file the
//! durable meta page relies on first makes the group's current state durable, so that replay
//! from the journal always finds the files it needs), snapshots taken by the application, and
//! group creation and removal on disk. Must never: flush on the commit path except for such a
//! removal, or touch a file once the group is closed.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use raft::prelude::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, Storage};

use super::batch::Part;
use super::commit;
use super::{Shared, GROUPS_DIR};
use crate::error::{Error, Result};
use crate::fsutil;
use crate::meta::{MetaFile, MetaInfo};
use crate::proto::{ConfStateRecord, EngineGroupRecord, MetaRecord, SnapshotRecord};
use crate::snap;
use crate::state::{LogView, State};
use crate::wal::Wal;

/// One group of an engine.
pub(crate) struct Group {
    pub id: u64,
    pub dir: PathBuf,
    /// Tells this group apart from a removed one with the same id (journal parts carry it).
    pub incarnation: u64,
    /// `None` once the group is closed (engine closed) or removed.
    pub state: RwLock<Option<GroupState>>,
    /// Held while a snapshot file of this group is written.
    pub snap_writer: Mutex<()>,
}

/// A group's state while its engine is open.
pub(crate) struct GroupState {
    pub s: State,
    pub meta_file: MetaFile,
    /// The journal position the group's durable meta page reflects.
    pub durable_seq: u64,
    /// Ids of the log files the durable meta page relies on (`first > last`: none).
    pub durable_files: (u64, u64),
    /// Changed since the meta page was last written.
    pub dirty: bool,
    /// Raft id, group id or checkpoint changed (`set_uint`) since they were last journaled.
    pub ints_dirty: bool,
}

/// What a commit's part does to a group, taken from a live batch or from a journal record.
pub(crate) struct Change<'a> {
    pub snapshot: Option<&'a SnapshotRecord>,
    pub entries: &'a [Entry],
    pub hard_state: Option<&'a HardState>,
    pub conf_state: Option<ConfStateRecord>,
    pub ints: Option<[u64; 3]>,
    pub truncate: Option<u64>,
}

impl Group {
    /// Drops the group's state (its maps): every handle finds it closed.
    pub(crate) fn close(&self) {
        self.state.write().take();
    }
}

impl GroupState {
    /// The engine fields of the meta page for the state as it is now, reflecting the journal up
    /// to `journal_seq`.
    pub(crate) fn engine_record(&self, journal_seq: u64, incarnation: u64) -> EngineGroupRecord {
        EngineGroupRecord {
            journal_seq,
            last_index: self.s.wal.last(),
            tail_payload_end: self.s.wal.tail_payload_end(),
            incarnation,
            last_file_id: self.s.wal.file_ids().1,
        }
    }

    /// The meta record to store for the state as it is now.
    pub(crate) fn meta_record(&self, journal_seq: u64, incarnation: u64) -> MetaRecord {
        let mut m = self.s.meta.clone();
        m.engine = Some(self.engine_record(journal_seq, incarnation));
        m
    }

    /// Makes the group's current state durable on its own (its files flushed, then its meta
    /// page written and flushed) as reflecting the journal up to `journal_seq`, so that a
    /// change may then remove files the old meta page relied on. The journal is flushed first:
    /// the group must never be durable ahead of it.
    pub(crate) fn make_durable(
        &mut self,
        shared: &Shared,
        journal_seq: u64,
        incarnation: u64,
    ) -> Result<()> {
        shared.journal.lock().sync()?;
        self.s.wal.flush()?;
        let record = self.meta_record(journal_seq, incarnation);
        self.meta_file.store(&record)?;
        self.meta_file.flush()?;
        self.s.meta_dirty = false;
        self.durable_seq = journal_seq;
        self.durable_files = self.s.wal.file_ids();
        self.dirty = false;
        Ok(())
    }

    /// Applies `change` (part of journal record `seq`), which was checked against this state
    /// (or is being replayed). Writes go to the files through their maps, unflushed.
    pub(crate) fn apply(
        &mut self,
        shared: &Shared,
        change: &Change<'_>,
        seq: u64,
        incarnation: u64,
    ) -> Result<()> {
        if let Some(rec) = change.snapshot {
            // An installed snapshot replaces the log: every file goes.
            if self.relies_on_files_after(0) {
                self.make_durable(shared, seq - 1, incarnation)?;
            }
            let first_file_id = self.s.wal.next_file_id();
            self.s.meta.snapshot = Some(rec.clone());
            self.s.meta.conf_state = rec.conf_state.clone();
            self.s.meta.first_file_id = first_file_id;
            self.s.meta_dirty = true;
            self.s.wal.reset(first_file_id)?;
        }
        if let Some(e0) = change.entries.first() {
            // A cut removes the files after the one holding its first index.
            if let Some(id) = self.s.wal.file_id_of(e0.index) {
                if self.relies_on_files_after(id) {
                    self.make_durable(shared, seq - 1, incarnation)?;
                }
            }
            self.s.wal.append(change.entries, false)?;
        }
        if let Some(hs) = change.hard_state {
            self.s.set_hard_state(hs);
        }
        if let Some(cs) = &change.conf_state {
            self.s.meta.conf_state = Some(cs.clone());
            self.s.meta_dirty = true;
        }
        if let Some([raft_id, group_id, checkpoint]) = change.ints {
            self.s.meta.raft_id = raft_id;
            self.s.meta.group_id = group_id;
            self.s.meta.checkpoint_index = checkpoint;
            self.s.meta_dirty = true;
        }
        if let Some(index) = change.truncate {
            let first = self.s.first_index();
            self.s.wal.clear_data(first, index)?;
        }
        self.dirty = true;
        Ok(())
    }

    /// The durable meta page relies on a file with an id above `id` (that a change removing
    /// every file after `id` would take away).
    fn relies_on_files_after(&self, id: u64) -> bool {
        let (first, last) = self.durable_files;
        first <= last && last > id
    }
}

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
    Ok(Group {
        id: group_id,
        dir,
        incarnation,
        state: RwLock::new(Some(GroupState {
            s: State {
                meta,
                meta_dirty: false,
                wal,
            },
            meta_file,
            durable_seq: journal_seq,
            durable_files: (1, 0),
            dirty: false,
            ints_dirty: false,
        })),
        snap_writer: Mutex::new(()),
    })
}

/// Removes a group's files, durably: its directory is renamed away (`<id>.removing`), then
/// deleted. A crash part way leaves the renamed directory, which open deletes.
pub(crate) fn remove(shared: &Shared, g: &Group) -> Result<()> {
    g.close();
    let groups = shared.root.join(GROUPS_DIR);
    let doomed = groups.join(format!("{}.removing", g.id));
    fsutil::rename_no_replace(&g.dir, &doomed)?;
    fsutil::sync_dir(&groups)?;
    std::fs::remove_dir_all(&doomed).map_err(|e| Error::io("remove", &doomed, e))?;
    fsutil::sync_dir(&groups)
}

/// A handle to one group of an [`crate::Engine`]: a `raft::Storage` with the rules of
/// `DiskStorage`, and its inherent methods with the same meaning. Cheap to clone. After the
/// engine is closed (or the group removed) every call returns an error and no file is touched.
#[derive(Clone)]
pub struct GroupStorage {
    shared: Arc<Shared>,
    group: Arc<Group>,
}

impl std::fmt::Debug for GroupStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupStorage")
            .field("group_id", &self.group.id)
            .field("dir", &self.group.dir)
            .finish()
    }
}

impl GroupStorage {
    pub(crate) fn new(shared: Arc<Shared>, group: Arc<Group>) -> GroupStorage {
        GroupStorage { shared, group }
    }

    /// The group's id.
    pub fn group_id(&self) -> u64 {
        self.group.id
    }

    /// The group's directory (in the shape of a `DiskStorage` directory).
    pub fn path(&self) -> &Path {
        &self.group.dir
    }

    fn closed(&self) -> Error {
        Error::Closed {
            what: format!("group {}", self.group.id),
        }
    }

    /// Runs `f` on the group's state (read lock).
    fn read<T>(&self, f: impl FnOnce(&GroupState) -> Result<T>) -> Result<T> {
        self.shared.check_usable()?;
        let st = self.group.state.read();
        let gs = st.as_ref().ok_or_else(|| self.closed())?;
        f(gs)
    }

    /// Runs `f` on the group's state (write lock).
    fn write_state<T>(&self, f: impl FnOnce(&mut GroupState) -> Result<T>) -> Result<T> {
        self.shared.check_usable()?;
        let mut st = self.group.state.write();
        let gs = st.as_mut().ok_or_else(|| self.closed())?;
        f(gs)
    }

    /// Writes one part for this group as its own commit; an error is the part's own (not
    /// wrapped in `Error::Group`).
    fn commit(&self, part: Part) -> Result<()> {
        commit::write(&self.shared, vec![part]).map_err(|e| match e {
            Error::Group { source, .. } => *source,
            other => other,
        })
    }

    /// `DiskStorage::save` for this group: a one-part [`crate::WriteBatch`].
    pub fn save(&self, hs: &HardState, entries: &[Entry], snap: &Snapshot) -> Result<(), Error> {
        self.commit(Part {
            group_id: self.group.id,
            hard_state: (*hs != HardState::default()).then(|| hs.clone()),
            entries: entries.to_vec(),
            snapshot: (snap.get_metadata().index > 0).then(|| snap.clone()),
            ..Part::default()
        })
    }

    /// Replaces the current conf state (the one `initial_state()` returns).
    pub fn set_conf_state(&self, cs: &ConfState) -> Result<(), Error> {
        self.commit(Part {
            group_id: self.group.id,
            conf_state: Some(cs.clone()),
            ..Part::default()
        })
    }

    /// `DiskStorage::truncate_entries_until` for this group.
    pub fn truncate_entries_until(&self, index: u64) -> Result<(), Error> {
        self.commit(Part {
            group_id: self.group.id,
            truncate: Some(index),
            ..Part::default()
        })
    }

    /// `DiskStorage::create_snapshot` for this group.
    pub fn create_snapshot(
        &self,
        index: u64,
        cs: Option<&ConfState>,
        data: impl Into<Bytes>,
    ) -> Result<(), Error> {
        let data: Bytes = data.into();
        self.create_snapshot_from(index, cs, &data[..])
    }

    /// `DiskStorage::create_snapshot_from` for this group: the data is streamed into a durable
    /// snapshot file without holding the group's lock; then, with commits held back, the group's
    /// state is made durable with the snapshot in its meta page, and the files wholly below it
    /// go.
    pub fn create_snapshot_from<R: Read>(
        &self,
        index: u64,
        cs: Option<&ConfState>,
        data: R,
    ) -> Result<(), Error> {
        let _writer = self.group.snap_writer.lock();
        let (term, cs) = self.read(|gs| {
            check_snapshot_index(&gs.s, index)?;
            let cs = match cs {
                Some(cs) => ConfStateRecord::from(cs),
                None => gs.s.meta.conf_state.clone().unwrap_or_default(),
            };
            Ok((gs.s.wal.term(index)?, cs))
        })?;
        let written = snap::write_from(
            &self.group.dir,
            index,
            term,
            &cs,
            data,
            self.shared.cipher.as_ref(),
        )?;
        let record = SnapshotRecord {
            index,
            term,
            conf_state: Some(cs),
            data_len: written.data_len,
            data_crc32c: written.data_crc32c,
            plain_len: written.plain_len,
        };
        self.shared.check_usable()?;
        let _lead = commit::lead(&self.shared);
        let incarnation = self.group.incarnation;
        let applied = self
            .shared
            .applied_seq
            .load(std::sync::atomic::Ordering::Acquire);
        let dir = self.group.dir.clone();
        let result = self.write_state(|gs| {
            let still = check_snapshot_index(&gs.s, index)
                .and_then(|_| gs.s.wal.term(index))
                .and_then(|t| {
                    if t == term {
                        Ok(())
                    } else {
                        Err(Error::InvalidArgument(format!(
                            "entry {index} changed term ({term} -> {t}) while its snapshot was written"
                        )))
                    }
                });
            if let Err(e) = still {
                let named = gs
                    .s
                    .meta
                    .snapshot
                    .as_ref()
                    .is_some_and(|s| (s.term, s.index) == (term, index));
                if record.data_len > 0 && !named {
                    let _ = std::fs::remove_file(snap::path(&dir, term, index));
                }
                return Err(e);
            }
            gs.s.meta.snapshot = Some(record);
            // The files below the snapshot must not go before the meta page that covers it is
            // durable: the group's state is made durable first, then they are removed.
            gs.make_durable(&self.shared, applied, incarnation)?;
            gs.s.wal.remove_files_below(index)?;
            gs.durable_files = gs.s.wal.file_ids();
            let keep = snap::file_name(term, index);
            snap::tidy(&dir, Some(&keep), false)?;
            Ok(())
        });
        if let Err(e) = &result {
            if matches!(e, Error::Io { .. }) {
                self.shared.poison(e);
            }
        }
        result
    }

    /// The checkpoint index stored with `set_uint(MetaInfo::CheckpointIndex, _)`.
    pub fn checkpoint(&self) -> Result<u64, Error> {
        self.read(|gs| Ok(gs.s.meta.checkpoint_index))
    }

    /// Sets raft id, group id or checkpoint index in memory; durable with the group's next
    /// journaled write or [`GroupStorage::sync`]. Snapshot index and term are set by snapshots
    /// only: setting them is ignored, as is any call once the group is closed.
    pub fn set_uint(&self, key: MetaInfo, value: u64) {
        let _ = self.write_state(|gs| {
            let slot = match key {
                MetaInfo::RaftId => &mut gs.s.meta.raft_id,
                MetaInfo::GroupId => &mut gs.s.meta.group_id,
                MetaInfo::CheckpointIndex => &mut gs.s.meta.checkpoint_index,
                MetaInfo::SnapshotIndex | MetaInfo::SnapshotTerm => return Ok(()),
            };
            if *slot != value {
                *slot = value;
                gs.ints_dirty = true;
            }
            Ok(())
        });
    }

    /// Reads one of the meta page's integers (0 once the group is closed).
    pub fn uint(&self, key: MetaInfo) -> u64 {
        self.read(|gs| {
            Ok(match key {
                MetaInfo::RaftId => gs.s.meta.raft_id,
                MetaInfo::GroupId => gs.s.meta.group_id,
                MetaInfo::CheckpointIndex => gs.s.meta.checkpoint_index,
                MetaInfo::SnapshotIndex => gs.s.snapshot_index(),
                MetaInfo::SnapshotTerm => gs.s.snapshot_term(),
            })
        })
        .unwrap_or(0)
    }

    /// Number of entries in the log (0 once the group is closed).
    pub fn num_entries(&self) -> usize {
        self.read(|gs| Ok(gs.s.num_entries())).unwrap_or(0)
    }

    /// Number of `.wal` files of the group (0 once the group is closed).
    pub fn num_log_files(&self) -> usize {
        self.read(|gs| Ok(gs.s.wal.num_files())).unwrap_or(0)
    }

    /// Makes everything written to the group so far durable (one journal flush), the meta
    /// integers set with `set_uint` included.
    pub fn sync(&self) -> Result<(), Error> {
        let ints_dirty = self.read(|gs| Ok(gs.ints_dirty))?;
        if ints_dirty {
            self.commit(Part {
                group_id: self.group.id,
                ..Part::default()
            })?;
        }
        self.shared.check_usable()?;
        let _lead = commit::lead(&self.shared);
        self.shared.journal.lock().sync()
    }
}

/// `create_snapshot`'s index must be in the log.
fn check_snapshot_index(s: &State, index: u64) -> Result<()> {
    if index < s.first_index() {
        return Err(Error::SnapshotOutOfDate {
            index,
            current: s.snapshot_index(),
        });
    }
    if index > s.last_index() {
        return Err(Error::Unavailable {
            index,
            last_index: s.last_index(),
        });
    }
    Ok(())
}

impl Storage for GroupStorage {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(self.read(|gs| Ok(gs.s.initial_state()))?)
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        let max_size = max_size.into();
        Ok(self.read(|gs| gs.s.entries(low, high, max_size))?)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        Ok(self.read(|gs| gs.s.term(idx))?)
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.read(|gs| Ok(gs.s.first_index()))?)
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.read(|gs| Ok(gs.s.last_index()))?)
    }

    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        let cipher = self.shared.cipher.clone();
        Ok(self.read(|gs| {
            gs.s.snapshot(&self.group.dir, cipher.as_ref(), request_index)
        })?)
    }
}
