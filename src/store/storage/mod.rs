//! `DiskStorage`: the facade raft-rs talks to, and the order of writes that makes it safe.
//!
//! Owns: the public API, the handles (clones) of one store and the directory lock they share,
//! validation of every request before anything is written, and the durable write order of
//! `save`: payloads, then slots, then (when syncing) a flush of the log, and only then the hard
//! state and snapshot in the meta page — so a durable commit index never points past durable
//! entries. Files are removed only after the meta page that makes them obsolete is durable.
//! Must never: write anything for a request it rejects, hold the lock (or leave a snapshot build
//! running) once the last handle is dropped or closed, or panic on any input.
//!
//! Files: this one (the store, open, save, the meta state, sync and close, `raft::Storage`),
//! `snapshots` (creating, installing, reading and building snapshots).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use raft::prelude::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, Storage};

use crate::error::{Error, Result};
use crate::metrics::{self, SaveMetrics, Timer, Took};
use crate::options::Options;
use crate::proto::ConfStateRecord;
use crate::store::meta::{MetaFile, MetaInfo};
use crate::store::recovery;
use crate::store::snap_build::{self, Builds};
use crate::store::state::{self, LogView, State};
use crate::sys::crypto::Cipher;
use crate::sys::fsutil;

mod snapshots;

/// A Raft log, hard state and snapshot stored in one directory. Implements [`raft::Storage`].
///
/// A `DiskStorage` is a handle: [`Clone`] is cheap and every clone is the same store (so a
/// `RawNode` and a snapshot thread can each hold one, no wrapper needed). All methods take
/// `&self` (but [`DiskStorage::close`]); readers run in parallel, writers one at a time. The
/// store stays open while any handle does: dropping or closing the last handle flushes,
/// stops a snapshot build in progress (see [`DiskStorage::set_snapshot_builder`]) and
/// releases the directory lock before it returns.
///
/// [`raft::Storage`]: https://docs.rs/raft/0.7/raft/storage/trait.Storage.html
pub struct DiskStorage {
    s: Arc<Store>,
    /// Counts as one of the store's handles (the build thread's own handle does not, so that
    /// it never keeps the store open).
    counted: bool,
}

/// The store every handle shares.
struct Store {
    dir: PathBuf,
    opts: Options,
    inner: RwLock<Inner>,
    /// Snapshot files found damaged and renamed `.broken`.
    broken: Mutex<Vec<PathBuf>>,
    /// The store's key, when it is encrypted.
    cipher: Option<Cipher>,
    /// Held by everything that writes a snapshot file or tidies the snapshot directory
    /// (`create_snapshot_from`, which writes outside `inner`'s lock, and the installs through
    /// `save` and `install_snapshot_from`): two writers at the same term and index would share
    /// a temporary file, a tidy could remove one in progress, and a loser's cleanup could
    /// remove the file the winner's meta page names. Always taken before `inner`, never while
    /// holding it.
    snap_writer: Mutex<()>,
    /// The application's snapshot builder and its one build thread.
    builds: Builds,
    /// Counted handles alive; the one that takes it to 0 closes the store.
    handles: AtomicUsize,
    /// The handles `save` records its metrics through.
    save_metrics: SaveMetrics,
    /// Holds the directory's exclusive lock; released when dropped (after `inner`) and no
    /// other holder is left (`snapshot restore` keeps one until it has undone a failed restore:
    /// [`DiskStorage::open_under`]).
    _lock: Arc<fsutil::DirLock>,
    /// For the directory of an engine group: the engine root's lock, held so that no engine
    /// opens the root meanwhile, and the root (decided once, at open: the store then refuses
    /// to change the log, [`DiskStorage::refuse_log_change`]).
    engine_root: Option<(fsutil::DirLock, PathBuf)>,
}

impl Clone for DiskStorage {
    /// Another handle to the same store.
    fn clone(&self) -> DiskStorage {
        self.s.handles.fetch_add(1, Ordering::AcqRel);
        DiskStorage {
            s: Arc::clone(&self.s),
            counted: true,
        }
    }
}

impl std::fmt::Debug for DiskStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiskStorage")
            .field("dir", &self.s.dir)
            .field("handles", &self.s.handles.load(Ordering::Acquire))
            .finish()
    }
}

/// The log (`State`, which `Inner` dereferences to) and its meta page.
struct Inner {
    meta_file: MetaFile,
    state: State,
    /// Log files counted in the `raftwal_log_files` gauge.
    files_counted: usize,
}

impl std::ops::Deref for Inner {
    type Target = State;
    fn deref(&self) -> &State {
        &self.state
    }
}

impl std::ops::DerefMut for Inner {
    fn deref_mut(&mut self) -> &mut State {
        &mut self.state
    }
}

impl Inner {
    /// Stores the meta state in the meta page (through the map).
    fn store_meta(&mut self) -> Result<()> {
        self.meta_file.store(&self.state.meta)?;
        self.state.meta_dirty = false;
        Ok(())
    }

    /// Log first, meta page second.
    fn sync(&mut self) -> Result<()> {
        self.wal.flush()?;
        if self.meta_dirty {
            self.store_meta()?;
        }
        self.meta_file.flush()
    }

    /// Brings the `raftwal_log_files` gauge up to date with the files the log holds now.
    fn count_files(&mut self) {
        if !cfg!(feature = "metrics") {
            return;
        }
        let now = self.state.wal.num_files();
        metrics::log_files(now as i64 - self.files_counted as i64);
        self.files_counted = now;
    }
}

impl DiskStorage {
    /// Opens the WAL in `dir` with default [`Options`], creating it (and `dir`) if needed.
    ///
    /// What is saved is served back through [`raft::Storage`], also after a reopen:
    ///
    /// ```
    /// use raft::prelude::{Entry, HardState, Snapshot};
    /// use raft::{GetEntriesContext, Storage};
    /// use raftwal::DiskStorage;
    ///
    /// let dir = tempfile::tempdir()?;
    /// let store = DiskStorage::open(dir.path())?;
    /// // A new directory holds an empty log, as `MemStorage::new()` does.
    /// assert_eq!((store.first_index()?, store.last_index()?), (1, 0));
    ///
    /// let mut e = Entry::default();
    /// (e.index, e.term, e.data) = (1, 2, b"put x=1".to_vec().into());
    /// store.save(&HardState::default(), &[e], &Snapshot::default())?;
    /// store.close()?;
    ///
    /// let store = DiskStorage::open(dir.path())?;
    /// assert_eq!(store.term(1)?, 2);
    /// let got = store.entries(1, 2, None, GetEntriesContext::empty(false))?;
    /// assert_eq!(&got[0].data[..], b"put x=1");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// [`raft::Storage`]: https://docs.rs/raft/0.7/raft/storage/trait.Storage.html
    pub fn open<P: AsRef<Path>>(dir: P) -> Result<DiskStorage, Error> {
        Self::open_with(dir, Options::default())
    }

    /// Opens the WAL in `dir`, creating it (and `dir`) if needed, recovering it otherwise. A new
    /// WAL directory (missing or empty) in an engine root's `groups/` is refused
    /// (`Error::InvalidArgument`): groups are the engine's to create. An existing group of an
    /// engine root opens once the engine closed it cleanly (its `engine.meta` says so), with the
    /// root's key: `engine.meta` is sealed with it, as the group is.
    ///
    /// ```
    /// use raftwal::{DiskStorage, Options, RecoveryMode};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let opts = Options {
    ///     sync_writes: false, // flushed by sync(), close() or drop
    ///     recovery_mode: RecoveryMode::AbsoluteConsistency, // any damage is an error
    ///     ..Options::default()
    /// };
    /// let store = DiskStorage::open_with(dir.path(), opts)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn open_with<P: AsRef<Path>>(dir: P, opts: Options) -> Result<DiskStorage, Error> {
        Self::open_locked(dir.as_ref(), opts, None)
    }

    /// [`DiskStorage::open_with`] in a directory whose lock the caller took
    /// ([`fsutil::lock_dir`]) and keeps: the lock is let go when both the caller and the store
    /// have dropped it. `snapshot restore` claims the new directory with it, so that no node
    /// opens the directory between restore's check that it is empty and the restore's end, nor
    /// before restore has undone a failed one (whose undo would then remove the node's files).
    #[cfg(feature = "archive")]
    pub(crate) fn open_under(
        dir: &Path,
        opts: Options,
        held: Arc<fsutil::DirLock>,
    ) -> Result<DiskStorage, Error> {
        Self::open_locked(dir, opts, Some(held))
    }

    fn open_locked(
        dir: &Path,
        opts: Options,
        held: Option<Arc<fsutil::DirLock>>,
    ) -> Result<DiskStorage, Error> {
        let timer = Timer::start();
        let dir = dir.to_path_buf();
        refuse_new_store_among_groups(&dir)?;
        std::fs::create_dir_all(&dir).map_err(|e| Error::io("create directory", &dir, e))?;
        let lock = match held {
            // A restore opening the store it is making (it holds the lock).
            Some(lock) => lock,
            None => {
                let lock = Arc::new(fsutil::lock_dir(&dir)?);
                crate::store::recovery::refuse_unfinished_restore(&dir)?;
                lock
            }
        };
        let cipher = opts.encryption_key.as_ref().map(Cipher::new);
        let engine_lock = engine_root_lock(&dir, cipher.as_ref())?;
        let mut r = recovery::recover(&dir, opts.recovery_mode, cipher.as_ref())?;
        r.wal
            .set_recycle(opts.sync_writes && opts.recycle_log_files);
        r.wal.track_terms();
        let mut inner = Inner {
            meta_file: r.meta_file,
            state: State {
                meta: r.meta,
                meta_dirty: false,
                wal: r.wal,
            },
            files_counted: 0,
        };
        inner.count_files();
        timer.took(Took::RecoveryDiskStorage);
        let store = Store {
            dir,
            opts,
            inner: RwLock::new(inner),
            broken: Mutex::new(r.broken_snapshot_files),
            cipher,
            snap_writer: Mutex::new(()),
            builds: Builds::default(),
            handles: AtomicUsize::new(1),
            save_metrics: SaveMetrics::new(),
            _lock: lock,
            engine_root: engine_lock,
        };
        Ok(DiskStorage {
            s: Arc::new(store),
            counted: true,
        })
    }

    /// Persists what a raft-rs `Ready` asks for: a newer snapshot first (it replaces the log),
    /// then the entries (overwriting any conflicting suffix), then a non-default hard state.
    /// Invalid requests (stale snapshot, gap, entries below the first index or not contiguous,
    /// terms that decrease or start below the term of the entry or snapshot they follow) are an
    /// error and change nothing: what `save` accepts, a reopen keeps.
    ///
    /// One rule goes beyond `MemStorage::append`: entries may not overwrite entries at or below
    /// the stored commit index, and a save may not leave the commit index past the last entry
    /// (`InvalidAppend`, nothing changed). raft-rs never asks for either (committed entries never
    /// change); a crash in the middle of such an overwrite would leave a durable commit index
    /// pointing past durable entries, which open refuses.
    ///
    /// In a raft-rs Ready loop it takes `ready.hs()` (or a default hard state), `ready.entries()`
    /// and `ready.snapshot()` in one call:
    ///
    /// ```
    /// use raft::prelude::{Entry, HardState, Snapshot};
    /// use raft::Storage;
    /// use raftwal::DiskStorage;
    ///
    /// let dir = tempfile::tempdir()?;
    /// let store = DiskStorage::open(dir.path())?;
    /// let entry = |index, term| {
    ///     let mut e = Entry::default();
    ///     (e.index, e.term) = (index, term);
    ///     e
    /// };
    /// let mut hs = HardState::default();
    /// (hs.term, hs.vote, hs.commit) = (1, 1, 2);
    /// store.save(&hs, &[entry(1, 1), entry(2, 1), entry(3, 1)], &Snapshot::default())?;
    /// assert_eq!(store.initial_state()?.hard_state, hs);
    ///
    /// // A new leader's entries replace the uncommitted suffix from index 3 on.
    /// store.save(&HardState::default(), &[entry(3, 2), entry(4, 2)], &Snapshot::default())?;
    /// assert_eq!((store.last_index()?, store.term(3)?), (4, 2));
    ///
    /// // A gap is refused, and nothing changes.
    /// assert!(store.save(&HardState::default(), &[entry(6, 2)], &Snapshot::default()).is_err());
    /// assert_eq!(store.last_index()?, 4);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn save(&self, hs: &HardState, entries: &[Entry], snap: &Snapshot) -> Result<(), Error> {
        let timer = Timer::start();
        let snap_index = snap.get_metadata().index;
        if !entries.is_empty() || snap_index > 0 {
            self.refuse_log_change("save entries or a snapshot")?;
        }
        // A snapshot file is written only while holding `snap_writer` (taken before `inner`).
        let _writer = (snap_index > 0).then(|| self.s.snap_writer.lock());
        let mut inner = self.s.inner.write();
        state::check_save(&inner.state, hs, entries, snap)?;
        let installing = snap_index > 0;
        let sync = self.s.opts.sync_writes;
        if installing {
            self.install_snapshot(&mut inner, snap.get_metadata(), &snap.data[..])?;
        }
        if !entries.is_empty() {
            inner.wal.append(entries, sync)?;
            self.s.save_metrics.appended(entries);
            inner.count_files();
        }
        // Stored in the meta page only by `sync`, after the log is flushed: written earlier,
        // the kernel could write the page back before the entries it commits.
        inner.set_hard_state(hs);
        if sync {
            inner.sync()?;
        }
        self.s.save_metrics.saved(timer);
        Ok(())
    }

    /// Refuses a change to the log (entries, snapshots) in the directory of an engine group:
    /// `Engine::open` trusts the log's end as the engine recorded it in the group's meta page
    /// (docs/FORMAT.md), so what a `DiskStorage` appended, overwrote or cut there would be lost
    /// or come back. Hard states, conf states and meta integers, which the engine reads from
    /// the page, may still change.
    fn refuse_log_change(&self, what: &str) -> Result<()> {
        match &self.s.engine_root {
            Some((_, root)) => Err(Error::InvalidArgument(format!(
                "refuse to {what} in {}: it is a group of the engine root {}, whose log only the engine changes (Engine::open trusts where the engine recorded its end); open the root with Engine::open to write to it",
                self.s.dir.display(),
                root.display()
            ))),
            None => Ok(()),
        }
    }

    /// Replaces the current conf state (the one `initial_state()` returns).
    pub fn set_conf_state(&self, cs: &ConfState) -> Result<(), Error> {
        let mut inner = self.s.inner.write();
        inner.meta.conf_state = Some(ConfStateRecord::from(cs));
        inner.meta_dirty = true;
        if self.s.opts.sync_writes {
            inner.sync()?;
        }
        Ok(())
    }

    /// The checkpoint index the application stored with `set_uint(MetaInfo::CheckpointIndex, _)`.
    pub fn checkpoint(&self) -> Result<u64, Error> {
        Ok(self.s.inner.read().meta.checkpoint_index)
    }

    /// Sets raft id, group id or checkpoint index in memory; durable with the next flushed write,
    /// `sync()`, `close()` or drop. Snapshot index and term are set by snapshots only: setting
    /// them here is ignored.
    pub fn set_uint(&self, key: MetaInfo, value: u64) {
        let mut inner = self.s.inner.write();
        let slot = match key {
            MetaInfo::RaftId => &mut inner.meta.raft_id,
            MetaInfo::GroupId => &mut inner.meta.group_id,
            MetaInfo::CheckpointIndex => &mut inner.meta.checkpoint_index,
            MetaInfo::SnapshotIndex | MetaInfo::SnapshotTerm => return,
        };
        if *slot != value {
            *slot = value;
            inner.meta_dirty = true;
        }
    }

    /// Reads one of the meta page's integers.
    pub fn uint(&self, key: MetaInfo) -> u64 {
        let inner = self.s.inner.read();
        match key {
            MetaInfo::RaftId => inner.meta.raft_id,
            MetaInfo::GroupId => inner.meta.group_id,
            MetaInfo::CheckpointIndex => inner.meta.checkpoint_index,
            MetaInfo::SnapshotIndex => inner.snapshot_index(),
            MetaInfo::SnapshotTerm => inner.snapshot_term(),
        }
    }

    /// Drops the data of Normal entries below `index`: they keep index, term and type and read
    /// back with empty data. Other entry types are untouched.
    pub fn truncate_entries_until(&self, index: u64) -> Result<(), Error> {
        let mut inner = self.s.inner.write();
        // Entries at or below the snapshot are not part of the log: never read, never touched.
        let first = inner.first_index();
        inner.wal.clear_data(first, index)?;
        if self.s.opts.sync_writes {
            inner.sync()?;
        }
        Ok(())
    }

    /// Number of entries in the log (`last_index() + 1 - first_index()`).
    pub fn num_entries(&self) -> usize {
        self.s.inner.read().num_entries()
    }

    /// Number of `.wal` files in the directory.
    pub fn num_log_files(&self) -> usize {
        self.s.inner.read().wal.num_files()
    }

    /// Makes everything written so far durable: the log, then the meta page. With
    /// [`Options::sync_writes`] off, one `sync` covers many saves:
    ///
    /// ```
    /// use raft::prelude::{Entry, HardState, Snapshot};
    /// use raftwal::{DiskStorage, Options};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let opts = Options { sync_writes: false, ..Options::default() };
    /// let store = DiskStorage::open_with(dir.path(), opts)?;
    /// for index in 1..=100 {
    ///     let mut e = Entry::default();
    ///     (e.index, e.term) = (index, 1);
    ///     store.save(&HardState::default(), &[e], &Snapshot::default())?; // page cache only
    /// }
    /// store.sync()?; // the 100 entries are durable now
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn sync(&self) -> Result<(), Error> {
        self.s.inner.write().sync()
    }

    /// Syncs, and gives up this handle. Other handles (clones) keep working: the store closes
    /// with its last handle, closed or dropped, which stops a snapshot build in progress (see
    /// [`DiskStorage::set_snapshot_builder`]) and releases the directory lock before it returns.
    /// Errors that dropping the last handle would swallow are returned here.
    ///
    /// ```
    /// use raftwal::{DiskStorage, Error};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let store = DiskStorage::open(dir.path())?;
    /// // The directory is locked while it is open, against this process too.
    /// assert!(matches!(DiskStorage::open(dir.path()), Err(Error::Locked { .. })));
    /// store.close()?;
    /// let store = DiskStorage::open(dir.path())?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn close(mut self) -> Result<(), Error> {
        if !self.counted {
            return self.sync();
        }
        // This handle no longer counts, whatever happens next: drop has nothing left to do.
        self.counted = false;
        if self.s.handles.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.s.builds.stop();
        }
        self.sync()
        // When this was the last handle, the store goes with it (after the build thread, which
        // was its only other owner): its drop releases the lock, its own sync finds nothing left.
    }

    /// The directory this storage lives in.
    pub fn path(&self) -> &Path {
        &self.s.dir
    }
}

/// For a group directory of an engine root: takes the root's lock (refused while an engine
/// has the root open) and checks that the engine was closed cleanly (else the group's latest
/// state may be in the engine's journal only). `DiskStorage::open` and `raftwal repair` take it,
/// with the key they open the group with (`cipher`): the root's `engine.meta` is sealed with the
/// same key as its groups.
pub(crate) fn engine_root_lock(
    dir: &Path,
    cipher: Option<&Cipher>,
) -> Result<Option<(fsutil::DirLock, PathBuf)>> {
    match engine_root_of(dir) {
        Some(root) => {
            let lock = fsutil::lock_dir(&root)?;
            check_engine_closed(dir, &root, cipher)?;
            Ok(Some((lock, root)))
        }
        None => Ok(None),
    }
}

/// For a group directory of an engine root: the check of [`engine_root_lock`] without the lock
/// (the read-only tools take none). An engine marks its root open before it replays anything,
/// so this refuses a running engine's group as well as a crashed one's.
pub(crate) fn check_engine_group_closed(dir: &Path, cipher: Option<&Cipher>) -> Result<()> {
    match engine_root_of(dir) {
        Some(root) => check_engine_closed(dir, &root, cipher),
        None => Ok(()),
    }
}

/// A new WAL directory (missing, or an empty directory) inside an engine root's `groups/` is
/// refused: only `Engine::create_group` makes a group there (a plain WAL directory has no
/// engine record, and `Engine::open` would refuse the root).
fn refuse_new_store_among_groups(dir: &Path) -> Result<()> {
    let Some(root) = engine_root_of(dir) else {
        return Ok(());
    };
    let is_new = match std::fs::read_dir(dir) {
        Ok(mut rd) => rd.next().is_none(),
        Err(e) => e.kind() == std::io::ErrorKind::NotFound,
    };
    if !is_new {
        return Ok(());
    }
    Err(Error::InvalidArgument(format!(
        "refuse to create a WAL directory at {}: it is in the groups directory of the engine root {}, where only the engine creates groups (Engine::create_group); a plain WAL directory there would make Engine::open refuse the root",
        dir.display(),
        root.display()
    )))
}

/// The engine root a directory is a group of (`ROOT/groups/<id>` with `ROOT/engine.meta`),
/// judged by the path as written and by the directory it names (`..` and symbolic links
/// resolved as far as the path exists): either makes it a group. A root whose `groups` is a
/// link elsewhere is found through the path as written, a group reached through `..` or a
/// link to it through the resolved one.
pub(crate) fn engine_root_of(dir: &Path) -> Option<PathBuf> {
    engine_root_as_spelled(dir).or_else(|| engine_root_as_spelled(&resolved(dir)))
}

fn engine_root_as_spelled(dir: &Path) -> Option<PathBuf> {
    let parent = dir.parent()?;
    if parent.file_name()? != "groups" {
        return None;
    }
    let root = parent.parent()?;
    root.join("engine.meta")
        .is_file()
        .then(|| root.to_path_buf())
}

/// `path` with `..` and symbolic links resolved as far as it exists, the missing rest appended
/// as spelled (as written when not even that can be done).
fn resolved(path: &Path) -> PathBuf {
    if let Ok(p) = std::fs::canonicalize(path) {
        return p;
    }
    match (path.parent(), path.file_name()) {
        (Some(parent), Some(name)) => {
            let parent = if parent.as_os_str().is_empty() {
                Path::new(".")
            } else {
                parent
            };
            resolved(parent).join(name)
        }
        _ => path.to_path_buf(),
    }
}

/// Whether the engine at `root` closed cleanly, from its `engine.meta` (opened with `cipher`:
/// a key that does not fit the root is `Error::Encryption` naming `engine.meta`, as it would
/// be for the group's own meta page).
fn check_engine_closed(dir: &Path, root: &Path, cipher: Option<&Cipher>) -> Result<()> {
    use crate::proto::EngineRecord;
    let (record, _) = crate::store::meta::read_only::<EngineRecord>(root, cipher)?;
    if record.open {
        return Err(Error::InvalidArgument(format!(
            "{} is a group of the engine at {}, which is open or was not closed cleanly: the group's latest state may be in the engine's journal; close the engine, or open it (Engine::open) to replay the journal and close it",
            dir.display(),
            root.display()
        )));
    }
    Ok(())
}

impl Drop for DiskStorage {
    fn drop(&mut self) {
        if self.counted && self.s.handles.fetch_sub(1, Ordering::AcqRel) == 1 {
            // The last handle: the build thread goes first (it holds the store), then the
            // store's own drop flushes and releases the lock.
            self.s.builds.stop();
        }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        // Errors cannot be returned from drop; `close()` is the way to see them.
        let inner = self.inner.get_mut();
        let _ = inner.sync();
        metrics::log_files(-(inner.files_counted as i64));
    }
}

impl Storage for DiskStorage {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(self.s.inner.read().initial_state())
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        Ok(self.s.inner.read().entries(low, high, max_size.into())?)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        Ok(self.s.inner.read().term(idx)?)
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.s.inner.read().first_index())
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.s.inner.read().last_index())
    }

    /// The stored snapshot, with its data, if its index is at least `request_index`; otherwise
    /// `SnapshotTemporarilyUnavailable` (raft asks again later).
    ///
    /// Without a snapshot builder this is all: the stored snapshot is the last one `save`
    /// installed or `create_snapshot` took, with the conf state it recorded. raft-rs's
    /// `MemStorage` builds its snapshot at the commit index with the current membership; here
    /// the application must keep the stored one current instead. After applying a conf change
    /// that adds a node, call `set_conf_state`, then `create_snapshot` at the applied index
    /// (its conf state then lists the new node), before the new node needs a snapshot: a node
    /// refuses a snapshot whose conf state does not list it ("attempted to restore snapshot
    /// but it is not in the ConfState") and never joins.
    ///
    /// With a builder ([`DiskStorage::set_snapshot_builder`]), a stored snapshot older than
    /// `request_index` or recording another conf state than the current one is not handed out:
    /// a build starts (one at a time, off this thread) and the answer is
    /// `SnapshotTemporarilyUnavailable` until its snapshot is stored.
    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        {
            let inner = self.s.inner.read();
            let stored = inner.meta.snapshot.as_ref();
            let serves = snap_build::serves(
                inner.snapshot_index(),
                stored.and_then(|s| s.conf_state.as_ref()),
                inner.meta.conf_state.as_ref(),
                request_index,
            );
            // A group of an engine root takes no snapshot of its own (its log is the
            // engine's): the stored one is served, as without a builder.
            if serves || !self.s.builds.has_builder() || self.s.engine_root.is_some() {
                return Ok(inner.snapshot(&self.s.dir, self.s.cipher.as_ref(), request_index)?);
            }
        }
        self.start_build(request_index)?;
        let available = self.s.inner.read().snapshot_index();
        Err(Error::SnapshotTemporarilyUnavailable {
            requested: request_index,
            available,
        }
        .into())
    }
}
