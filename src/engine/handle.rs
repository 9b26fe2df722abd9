//! [`GroupStorage`]: the handle to one group of an engine that raft-rs uses as its
//! `raft::Storage`, with `DiskStorage`'s inherent methods.
//!
//! Owns: the mapping of `DiskStorage`'s calls onto the engine (a save is a one-part commit;
//! reads lock the group's log, and its files only below the tail) and snapshots taken by the
//! application. Must never: touch a file once the engine is closed or the group removed.

use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use raft::prelude::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, Storage};

use super::batch::Part;
use super::commit;
use super::group::{Group, GroupFiles, GroupLog};
use super::Shared;
use crate::error::{Error, Result};
use crate::proto::{ConfStateRecord, SnapshotRecord};
use crate::store::meta::MetaInfo;
use crate::store::snap::{self, SnapshotReader};
use crate::store::snap_build::{self, RequestFigures, SnapshotBuildStatus, SnapshotBuilder};
use crate::store::state;

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

    /// Runs `f` on the group's log (read lock).
    fn read<T>(&self, f: impl FnOnce(&GroupLog) -> Result<T>) -> Result<T> {
        self.shared.check_usable()?;
        self.group.with_log(f)
    }

    /// Writes one part for this group as its own commit (for this incarnation of the group
    /// only: a removed group's handle writes nothing into a group created since with its id);
    /// an error is the part's own (not wrapped in `Error::Group`).
    fn commit(&self, mut part: Part) -> Result<()> {
        part.only_incarnation = Some(self.group.incarnation);
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
    /// snapshot file without holding any lock; then, with the group held (commits to other
    /// groups go on), the group's state is made durable with the snapshot in its meta page, and
    /// the files wholly below it go.
    pub fn create_snapshot_from<R: Read>(
        &self,
        index: u64,
        cs: Option<&ConfState>,
        data: R,
    ) -> Result<(), Error> {
        let timer = crate::metrics::Timer::start();
        self.write_snapshot(index, cs, data)?;
        timer.took(crate::metrics::Took::SnapshotCreate);
        Ok(())
    }

    /// [`GroupStorage::create_snapshot_from`], unmeasured.
    fn write_snapshot<R: Read>(
        &self,
        index: u64,
        cs: Option<&ConfState>,
        data: R,
    ) -> Result<(), Error> {
        #[cfg(test)]
        tests::BEFORE_SNAP_WRITER.pass(&self.shared.root);
        let _writer = self.snap_writer()?;
        let (term, cs) = self.read(|log| {
            self.check_snapshot_index(log, index)?;
            let cs = match cs {
                Some(cs) => ConfStateRecord::from(cs),
                None => log.meta.conf_state.clone().unwrap_or_default(),
            };
            Ok((self.group.term(log, index)?, cs))
        })?;
        #[cfg(test)]
        tests::BEFORE_SNAP_WRITE.pass(&self.shared.root);
        let written = snap::write_from(
            &self.group.dir,
            index,
            term,
            &cs,
            data,
            self.shared.cipher.as_ref(),
            &SnapshotGate(&self.shared, &self.group),
        )?;
        #[cfg(test)]
        tests::AFTER_SNAP_WRITE.pass(&self.shared.root);
        let record = SnapshotRecord {
            index,
            term,
            conf_state: Some(cs),
            data_len: written.data_len,
            data_crc32c: written.data_crc32c,
            plain_len: written.plain_len,
        };
        self.shared.check_usable()?;
        // The entry must still be what the snapshot was taken at when the group takes it.
        let check = |log: &GroupLog, files: &GroupFiles| {
            self.check_snapshot_index(log, index)?;
            let t = Group::term_held(log, files, index)?;
            if t != term {
                return Err(Error::InvalidArgument(format!(
                    "entry {index} changed term ({term} -> {t}) while its snapshot was written"
                )));
            }
            Ok(())
        };
        let take = |log: &mut GroupLog, files: &GroupFiles| {
            check(log, files)?;
            log.meta.snapshot = Some(record.clone());
            Ok(())
        };
        // Every entry in the files, then the snapshot in the meta page, made durable: the files
        // below it must not go before the meta page that covers them is durable. Commits to
        // other groups go on meanwhile; if commits to this one keep adding to its tail, they
        // are held back for it.
        let durable = match self.group.make_durable(&self.shared, take) {
            Ok(true) => Ok(()),
            Ok(false) => {
                let _lead = commit::lead(&self.shared);
                match self.group.make_durable(&self.shared, take) {
                    Ok(true) => Ok(()),
                    Ok(false) => Err(Error::invariant(format!(
                        "group {}: its tail could not be written with commits held",
                        self.group.id
                    ))),
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        };
        if let Err(e) = durable {
            let named = self
                .read(|log| {
                    Ok(log
                        .meta
                        .snapshot
                        .as_ref()
                        .is_some_and(|s| (s.term, s.index) == (term, index)))
                })
                .unwrap_or(true);
            if record.data_len > 0 && !named {
                // Not once the engine is closing: the next open's tidy removes it then.
                let _ = snap::Gate::pass(&SnapshotGate(&self.shared, &self.group), || {
                    let _ = std::fs::remove_file(snap::path(&self.group.dir, term, index));
                    Ok(())
                });
            }
            if matches!(e, Error::Io { .. }) {
                // The group's files may be part way: stop (opening again replays the journal).
                self.shared.poison(&e);
            }
            return Err(e);
        }
        // The older snapshot files go with the group held too: a close waits for it, and a
        // group it closed is never touched again (the root's lock is released at the end of
        // close, and another engine may own these files then).
        let done = self.group.with_both(|b| {
            b.files.wal.remove_files_below(index)?;
            b.files.durable_files = b.files.wal.file_ids();
            #[cfg(test)]
            tests::BEFORE_SNAP_TIDY.pass(&self.shared.root);
            let keep = snap::file_name(term, index);
            snap::tidy(&self.group.dir, Some(&keep), false).map(drop)
        });
        if let Err(e) = &done {
            // The group's files may be part way: stop (opening again replays the journal).
            if matches!(e, Error::Io { .. }) {
                self.shared.poison(e);
            }
        }
        done
    }

    /// The group's snapshot writer, waited for until the engine closes or the group is
    /// removed (both cancel the group's builds first, then wait for the build running). The
    /// write holding it may be waiting for its application's reader, which close and removal
    /// never wait for (its next step fails instead); a build's write waiting here for ever made
    /// them wait for that reader all the same.
    fn snap_writer(&self) -> Result<parking_lot::MutexGuard<'_, ()>> {
        loop {
            let wait = std::time::Duration::from_millis(10);
            if let Some(writer) = self.group.snap_writer.try_lock_for(wait) {
                return Ok(writer);
            }
            if self.group.builds.cancelled() {
                return Err(Error::Closed {
                    what: format!("group {} (closing, or being removed)", self.group.id),
                });
            }
        }
    }

    fn check_snapshot_index(&self, log: &GroupLog, index: u64) -> Result<()> {
        if index < log.first_index() {
            return Err(Error::SnapshotOutOfDate {
                index,
                current: log.snapshot_index(),
            });
        }
        if index > log.last_index() {
            return Err(Error::Unavailable {
                index,
                last_index: log.last_index(),
            });
        }
        Ok(())
    }

    /// `DiskStorage::set_snapshot_builder` for this group: when raft asks `snapshot()` and the
    /// stored snapshot is older than its request or records another conf state than the
    /// current one, `builder` is asked for one on a thread of its own (one build at a time),
    /// and `SnapshotTemporarilyUnavailable` is the answer until it is stored with
    /// [`GroupStorage::create_snapshot_from`]. The engine's close (or the group's removal)
    /// cancels a build and waits for its thread.
    pub fn set_snapshot_builder(&self, builder: impl SnapshotBuilder) {
        self.group.builds.set_builder(Arc::new(builder));
    }

    /// How the group's snapshot builds went: one running, stored, failed, and the last error.
    pub fn snapshot_build_status(&self) -> SnapshotBuildStatus {
        self.group.builds.status()
    }

    /// Starts a build for `request_index` (at most one at a time).
    fn start_build(&self, request_index: u64) -> Result<()> {
        let figures = self.read(|log| {
            Ok(RequestFigures {
                request_index,
                stored_index: log.snapshot_index(),
                conf_state: log
                    .meta
                    .conf_state
                    .as_ref()
                    .map(ConfState::from)
                    .unwrap_or_default(),
                checkpoint: log.meta.checkpoint_index,
            })
        })?;
        let group = self.clone();
        self.group.builds.start(figures, move |built| {
            group.create_snapshot_from(built.index, built.conf_state.as_ref(), built.data)
        })
    }

    /// The current snapshot: its metadata and its data as a stream, verified as it is read.
    pub fn snapshot_reader(&self) -> Result<SnapshotReader, Error> {
        self.read(
            |log| match log.meta.snapshot.as_ref().filter(|s| s.index > 0) {
                Some(s) => SnapshotReader::open(&self.group.dir, s, self.shared.cipher.as_ref()),
                None => Err(Error::NoSnapshot {
                    path: self.group.dir.clone(),
                }),
            },
        )
    }

    /// The checkpoint index stored with `set_uint(MetaInfo::CheckpointIndex, _)`.
    pub fn checkpoint(&self) -> Result<u64, Error> {
        self.read(|log| Ok(log.meta.checkpoint_index))
    }

    /// Sets raft id or checkpoint index in memory; durable with the group's next journaled
    /// write, [`GroupStorage::sync`], or the engine's close (or drop). The group id is the
    /// engine's (its directory's name, which open checks against the meta page), and snapshot
    /// index and term are set by snapshots only: setting them is ignored, as is any call once
    /// the group is closed or the engine's close has begun.
    pub fn set_uint(&self, key: MetaInfo, value: u64) {
        if self.shared.check_usable().is_err() {
            return;
        }
        let mut lg = self.group.log.write();
        let Some(log) = lg.as_mut() else { return };
        // Once close has begun, as after it: close journals the integers set before, group by
        // group under this lock, after it marked the engine stopping, so that a value set here
        // is either journaled by close or never taken (its final checkpoint stores changed
        // groups only: one taken later was read back and then lost).
        if self.shared.stopping() {
            return;
        }
        let slot = match key {
            MetaInfo::RaftId => &mut log.meta.raft_id,
            MetaInfo::CheckpointIndex => &mut log.meta.checkpoint_index,
            MetaInfo::GroupId | MetaInfo::SnapshotIndex | MetaInfo::SnapshotTerm => return,
        };
        if *slot != value {
            *slot = value;
            log.ints_dirty = true;
        }
    }

    /// Reads one of the meta page's integers (0 once the group is closed).
    pub fn uint(&self, key: MetaInfo) -> u64 {
        self.read(|log| {
            Ok(match key {
                MetaInfo::RaftId => log.meta.raft_id,
                MetaInfo::GroupId => log.meta.group_id,
                MetaInfo::CheckpointIndex => log.meta.checkpoint_index,
                MetaInfo::SnapshotIndex => log.snapshot_index(),
                MetaInfo::SnapshotTerm => log.snapshot_term(),
            })
        })
        .unwrap_or(0)
    }

    /// Number of entries in the log (0 once the group is closed).
    pub fn num_entries(&self) -> usize {
        self.read(|log| Ok((log.last_index() + 1 - log.first_index()) as usize))
            .unwrap_or(0)
    }

    /// Number of `.wal` files of the group (0 once the group is closed). Entries still in the
    /// engine's memory (journaled, not yet written to the group's files) may start a file only
    /// once they are written.
    pub fn num_log_files(&self) -> usize {
        if self.shared.check_usable().is_err() {
            return 0;
        }
        self.group
            .files
            .read()
            .as_ref()
            .map_or(0, |f| f.wal.num_files())
    }

    /// Makes everything written to the group so far durable (one journal flush), the meta
    /// integers set with `set_uint` included.
    pub fn sync(&self) -> Result<(), Error> {
        let ints_dirty = self.read(|log| Ok(log.ints_dirty))?;
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

impl GroupStorage {
    /// Every case of `term` but an index the files hold with no tail, out of line: the common
    /// case then has a small frame.
    #[inline(never)]
    fn term_other(&self, idx: u64) -> raft::Result<u64> {
        Ok(self.read(|log| self.group.term(log, idx))?)
    }
}

impl Storage for GroupStorage {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(self.read(|log| Ok(state::initial_state(&log.meta)))?)
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        let max_size = max_size.into();
        Ok(self.read(|log| self.group.entries(log, low, high, max_size))?)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        // The common case without building any error on its path (docs/PERFORMANCE.md, reads).
        if self.shared.usable() {
            if let Some(t) = self.group.term_in_files(idx) {
                return Ok(t);
            }
        }
        self.term_other(idx)
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.read(|log| Ok(log.first_index()))?)
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.read(|log| Ok(log.last_index()))?)
    }

    /// As `DiskStorage`'s: the stored snapshot if its index is at least `request_index`, else
    /// `SnapshotTemporarilyUnavailable`; with a snapshot builder
    /// ([`GroupStorage::set_snapshot_builder`]) a stale one (older than the request, or
    /// predating the current conf state) starts a build instead of being handed out.
    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        if self.group.builds.has_builder() {
            let serves = self.read(|log| {
                let stored = log.meta.snapshot.as_ref();
                Ok(snap_build::serves(
                    log.snapshot_index(),
                    stored.and_then(|s| s.conf_state.as_ref()),
                    log.meta.conf_state.as_ref(),
                    request_index,
                ))
            })?;
            if !serves {
                self.start_build(request_index)?;
                let available = self.read(|log| Ok(log.snapshot_index()))?;
                return Err(Error::SnapshotTemporarilyUnavailable {
                    requested: request_index,
                    available,
                }
                .into());
            }
        }
        let reader = self.read(
            |log| match log.meta.snapshot.as_ref().filter(|s| s.index > 0) {
                Some(s) if s.index >= request_index => Ok(Some(SnapshotReader::open(
                    &self.group.dir,
                    s,
                    self.shared.cipher.as_ref(),
                )?)),
                Some(s) => Err(Error::SnapshotTemporarilyUnavailable {
                    requested: request_index,
                    available: s.index,
                }),
                None => Err(Error::SnapshotTemporarilyUnavailable {
                    requested: request_index,
                    available: 0,
                }),
            },
        )?;
        let Some(mut reader) = reader else {
            return Err(Error::SnapshotTemporarilyUnavailable {
                requested: request_index,
                available: 0,
            }
            .into());
        };
        let mut data = Vec::new();
        reader
            .read_to_end(&mut data)
            .map_err(|e| reader.error_from(e))?;
        let mut snap = Snapshot::default();
        snap.set_metadata(reader.metadata().clone());
        snap.data = data.into();
        Ok(snap)
    }
}

/// The gate of an application's snapshot write for one group: the engine's
/// ([`Shared`]'s), and the group still open. Removing the group closes it and then waits for
/// the step in progress (`group::remove`), so that no step of the write touches the directory
/// once the removal began: a group created again with the same id has the same one.
struct SnapshotGate<'a>(&'a Shared, &'a Group);

impl snap::Gate for SnapshotGate<'_> {
    fn pass<T>(&self, step: impl FnOnce() -> Result<T>) -> Result<T> {
        self.0.pass(|| {
            if self.1.log.read().is_none() {
                return Err(Error::Closed {
                    what: format!("group {}", self.1.id),
                });
            }
            step()
        })
    }

    fn tmp_file(&self, tmp: &Path, exists: bool) {
        self.0.tmp_file(tmp, exists)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use crate::engine::pauses::Pauses;

    /// The point of `create_snapshot` after the group took the snapshot and before the older
    /// snapshot files go.
    pub(crate) static BEFORE_SNAP_TIDY: Pauses = Pauses::new();

    /// The point of `create_snapshot` before it takes the group's snapshot writer.
    pub(crate) static BEFORE_SNAP_WRITER: Pauses = Pauses::new();

    /// The point of `create_snapshot` after its checks and before its file is written.
    pub(crate) static BEFORE_SNAP_WRITE: Pauses = Pauses::new();

    /// The point of `create_snapshot` after its file is written and before the group takes it.
    pub(crate) static AFTER_SNAP_WRITE: Pauses = Pauses::new();

    /// A hard state committing entries 1..=`n` of term 1, and those entries.
    fn log(n: u64) -> (raft::prelude::HardState, Vec<raft::prelude::Entry>) {
        let mut hs = raft::prelude::HardState::default();
        (hs.term, hs.commit) = (1, n);
        let es = (1..=n)
            .map(|i| {
                let mut en = raft::prelude::Entry::default();
                (en.index, en.term) = (i, 1);
                en
            })
            .collect();
        (hs, es)
    }

    /// A close that comes after an application's snapshot file is written and before the
    /// group takes it: the file, which no meta page names, must not stay in the group's
    /// directory for good (close said the next open removes it; the engine's open had no
    /// tidy of snapshot files, and a checkpoint tidies only a group whose snapshot changed).
    #[test]
    fn a_snapshot_file_close_kept_from_its_group_does_not_stay() {
        use std::sync::mpsc::channel;
        let dir = tempfile::tempdir().unwrap();
        let e = crate::Engine::open(dir.path()).unwrap();
        let g = e.create_group(1, 1).unwrap();
        let (hs, es) = log(5);
        g.save(&hs, &es, &Default::default()).unwrap();
        let e = std::sync::Arc::new(parking_lot::Mutex::new(Some(e)));
        let e2 = std::sync::Arc::clone(&e);
        AFTER_SNAP_WRITE.add(dir.path(), move || {
            let (tx, rx) = channel();
            std::thread::spawn(move || {
                if let Some(engine) = e2.lock().take() {
                    engine.close().unwrap();
                }
                let _ = tx.send(());
            });
            rx.recv().unwrap();
        });
        let r = g.create_snapshot(3, None, vec![7u8; 4096]);
        assert!(r.is_err(), "closed: {r:?}");
        drop(g);
        drop(e);
        let listing = || {
            std::fs::read_dir(dir.path().join("groups/1/snap"))
                .map(|rd| {
                    rd.map(|d| d.unwrap().file_name().to_string_lossy().into_owned())
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default()
        };
        for round in 0..2u64 {
            let e = crate::Engine::open(dir.path()).unwrap();
            let g = e.group(1).unwrap();
            let mut en = raft::prelude::Entry::default();
            (en.index, en.term) = (6 + round, 1);
            g.save(&hs, &[en], &Default::default()).unwrap();
            drop(g);
            e.close().unwrap();
        }
        assert_eq!(
            listing(),
            Vec::<String>::new(),
            "the group names no snapshot file"
        );
    }

    /// A `create_snapshot` on a handle whose group is removed and created again (same id)
    /// while it runs must not write into the new group's directory: its file, renamed there,
    /// replaced the new group's own snapshot file of the same name (the new group then could
    /// not read its snapshot), and stayed there.
    #[test]
    fn a_snapshot_of_a_removed_group_leaves_the_new_group_of_the_same_id_alone() {
        use raft::Storage;
        let dir = tempfile::tempdir().unwrap();
        let e = std::sync::Arc::new(crate::Engine::open(dir.path()).unwrap());
        let (hs, es) = log(5);
        let old = e.create_group(1, 1).unwrap();
        old.save(&hs, &es, &Default::default()).unwrap();
        let e2 = std::sync::Arc::clone(&e);
        let (hs2, es2) = (hs.clone(), es.clone());
        BEFORE_SNAP_WRITE.add(dir.path(), move || {
            e2.remove_group(1).unwrap();
            let new = e2.create_group(1, 1).unwrap();
            new.save(&hs2, &es2, &Default::default()).unwrap();
            new.create_snapshot(3, None, b"the new group's".to_vec())
                .unwrap();
        });
        let r = old.create_snapshot(3, None, b"the removed group's state".to_vec());
        assert!(r.is_err(), "the removed group took a snapshot");
        let new = e.group(1).unwrap();
        let s = new.snapshot(3, 0);
        assert!(
            s.as_ref().is_ok_and(|s| &s.data[..] == b"the new group's"),
            "the new group's snapshot: {s:?} (the removed group's write: {r:?})"
        );
        drop(new);
        drop(old);
        std::sync::Arc::try_unwrap(e).unwrap().close().unwrap();
    }

    /// `create_snapshot` racing `Engine::close`: once close has returned, no file of the root
    /// changes (SPEC §9: a handle never touches the files again; the root's lock is released,
    /// so another engine may own them by then). The snapshot's removal of older snapshot files
    /// once ran outside the group's lock, and so after a close that came in between.
    #[test]
    fn a_snapshot_racing_close_touches_no_file_after_close_returned() {
        use std::sync::mpsc::channel;
        use std::time::Duration;
        let dir = tempfile::tempdir().unwrap();
        let e = crate::Engine::open(dir.path()).unwrap();
        let g = e.create_group(1, 1).unwrap();
        let (hs, es) = log(20);
        g.save(&hs, &es, &Default::default()).unwrap();
        g.create_snapshot(10, None, b"older".to_vec()).unwrap();
        let snaps = dir.path().join("groups/1/snap");
        let listing = move || {
            let mut v: Vec<String> = std::fs::read_dir(&snaps)
                .unwrap()
                .map(|d| d.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        };
        // At the pause, close runs on another thread, which lists the snapshot files as soon
        // as close has returned; the pause waits for that (3 s at most: a close that waits
        // for the snapshot cannot return before the pause ends).
        let (closed_tx, closed_rx) = channel::<Vec<String>>();
        let (returned_tx, returned_rx) = channel::<()>();
        let e = std::sync::Arc::new(parking_lot::Mutex::new(Some(e)));
        let e2 = std::sync::Arc::clone(&e);
        let list = listing.clone();
        BEFORE_SNAP_TIDY.add(dir.path(), move || {
            let e3 = std::sync::Arc::clone(&e2);
            std::thread::spawn(move || {
                let engine = e3.lock().take();
                if let Some(engine) = engine {
                    engine.close().unwrap();
                }
                let _ = closed_tx.send(list());
                let _ = returned_tx.send(());
            });
            let _ = returned_rx.recv_timeout(Duration::from_secs(3));
        });
        let r = g.create_snapshot(15, None, b"newer".to_vec());
        let at_close = closed_rx.recv_timeout(Duration::from_secs(30)).unwrap();
        assert_eq!(
            at_close,
            listing(),
            "snapshot files changed after close returned (the snapshot: {r:?})"
        );
        drop(e);
    }

    /// A reader that hands out a byte at a time, and at its first read says so and then waits
    /// (30 s at most) to be let go on.
    struct Held {
        started: Option<std::sync::mpsc::Sender<()>>,
        go_on: std::sync::mpsc::Receiver<()>,
        left: usize,
    }

    impl std::io::Read for Held {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if let Some(started) = self.started.take() {
                let _ = started.send(());
                let _ = self.go_on.recv_timeout(std::time::Duration::from_secs(30));
            }
            let n = buf.len().min(self.left).min(1);
            buf[..n].fill(7);
            self.left -= n;
            Ok(n)
        }
    }

    /// Close and `remove_group` do not wait for an application's snapshot reader (the write
    /// stops at its next step instead), but they wait for the group's snapshot build. A build
    /// whose write waited for the group's snapshot writer, held by the application's
    /// `create_snapshot_from` whose reader blocks, made them wait for that reader after all:
    /// here for ever, as the reader goes on only once they returned.
    #[test]
    fn close_and_removal_wait_for_no_application_reader_through_a_build() {
        use raft::Storage;
        use std::sync::mpsc::channel;
        use std::time::Duration;
        for removal in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let e = crate::Engine::open(dir.path()).unwrap();
            let g = e.create_group(1, 1).unwrap();
            let (hs, es) = log(20);
            g.save(&hs, &es, &Default::default()).unwrap();
            g.create_snapshot(5, None, b"older".to_vec()).unwrap();
            g.set_snapshot_builder(|_: &crate::SnapshotRequest| {
                Ok(crate::BuiltSnapshot {
                    index: 15,
                    conf_state: None,
                    data: Box::new(std::io::Cursor::new(b"built".to_vec())),
                })
            });
            // The application's write, its reader blocked, holding the snapshot writer.
            let (started_tx, started) = channel();
            let (go_on, go_on_rx) = channel();
            let reader = Held {
                started: Some(started_tx),
                go_on: go_on_rx,
                left: 4096,
            };
            let streaming = std::thread::spawn({
                let g = g.clone();
                move || g.create_snapshot_from(10, None, reader)
            });
            started
                .recv_timeout(Duration::from_secs(30))
                .expect("the application's write reads its data");
            // The build, its data built, about to wait for the snapshot writer.
            let (reached_tx, reached) = channel();
            BEFORE_SNAP_WRITER.add(dir.path(), move || {
                let _ = reached_tx.send(());
            });
            assert!(g.snapshot(15, 0).is_err(), "a build starts");
            reached
                .recv_timeout(Duration::from_secs(30))
                .expect("the build writes its snapshot");
            let (done_tx, done) = channel();
            std::thread::spawn(move || {
                let r = if removal {
                    let r = e.remove_group(1);
                    drop(e);
                    r
                } else {
                    e.close()
                };
                let _ = done_tx.send(r.map_err(|e| e.to_string()));
            });
            let r = done.recv_timeout(Duration::from_secs(20));
            let _ = go_on.send(());
            let what = if removal { "remove_group" } else { "close" };
            assert!(
                r.is_ok(),
                "{what} still waiting after 20 s for the application's reader"
            );
            r.unwrap().unwrap();
            let written = streaming.join().unwrap();
            assert!(written.is_err(), "{what}: {written:?}");
            drop(g);
        }
    }

    /// A removal of group 2 never waits for group 1's build: group 1's builder waits for the
    /// application's thread (allowed: it is not the thread removing group 1), which removes
    /// group 2 before it answers. The lock of removals, once taken before a removal stopped
    /// its group's builds, made the two wait for each other for ever (found by a review,
    /// 2026-12-07).
    #[test]
    fn removing_another_group_does_not_wait_for_a_removed_groups_build() {
        use raft::Storage;
        use std::sync::mpsc::{channel, RecvTimeoutError};
        use std::sync::{Arc, Mutex as StdMutex};
        use std::time::Duration;
        let dir = tempfile::tempdir().unwrap();
        let e = Arc::new(crate::Engine::open(dir.path()).unwrap());
        let g1 = e.create_group(1, 1).unwrap();
        e.create_group(2, 2).unwrap();
        let (hs, es) = log(20);
        g1.save(&hs, &es, &Default::default()).unwrap();
        g1.create_snapshot(5, None, b"older".to_vec()).unwrap();
        let (cancel_seen_tx, cancel_seen) = channel::<()>();
        let (answer, answer_rx) = channel::<()>();
        let answer_rx = StdMutex::new(answer_rx);
        let cancel_seen_tx = StdMutex::new(cancel_seen_tx);
        g1.set_snapshot_builder(move |req: &crate::SnapshotRequest| {
            // Asks the application's thread for its state and waits for the answer.
            let rx = answer_rx.lock().unwrap();
            let mut told = false;
            loop {
                match rx.recv_timeout(Duration::from_millis(10)) {
                    Ok(()) | Err(RecvTimeoutError::Disconnected) => break,
                    Err(RecvTimeoutError::Timeout) => {
                        if req.cancelled() && !told {
                            told = true;
                            let _ = cancel_seen_tx.lock().unwrap().send(());
                        }
                    }
                }
            }
            Ok(crate::BuiltSnapshot {
                index: 15,
                conf_state: None,
                data: Box::new(std::io::Cursor::new(b"built".to_vec())),
            })
        });
        assert!(g1.snapshot(15, 0).is_err(), "a build starts");
        drop(g1);
        // An admin thread removes group 1: it cancels the build and waits for it.
        let e1 = Arc::clone(&e);
        let removed1 = std::thread::spawn(move || e1.remove_group(1));
        cancel_seen
            .recv_timeout(Duration::from_secs(30))
            .expect("the removal of group 1 cancels the build");
        // The application's thread removes group 2, then answers the builder.
        let (done_tx, done) = channel();
        let e2 = Arc::clone(&e);
        std::thread::spawn(move || {
            let _ = done_tx.send(e2.remove_group(2).map_err(|e| e.to_string()));
        });
        let r = done.recv_timeout(Duration::from_secs(10));
        let _ = answer.send(());
        removed1.join().unwrap().unwrap();
        assert!(
            r.is_ok(),
            "remove_group(2) still waiting after 10 s for group 1's build (a deadlock while the builder waits for this thread)"
        );
        r.unwrap().unwrap();
    }
}
