//! Restoring a backup archive into a fresh WAL directory: the options and the target checked,
//! the whole archive verified, then `state.bin` streamed out of it a second time (its hashes
//! checked again) into `install_snapshot_from`, with the membership, raft id and hard state the
//! restored node starts from.
//!
//! Owns: what a restore may write into (a missing or an empty directory) and undoing what a
//! failed restore created.
//! Must never: overwrite a non-empty directory, write anything for an archive that fails
//! verification, install data whose hash it has not checked, or leave a half-restored
//! directory behind.

use std::fs;
use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use raft::prelude::{ConfState, HardState, Snapshot, SnapshotMetadata};
use sha2::{Digest, Sha256};

use super::read::{verify_full, ArchiveReader, Verified};
use super::{ArchiveMeta, FirstError, RestoreOptions, STATE_MEMBER};
use crate::error::{Error, Result};
use crate::options::Options;
use crate::proto::ConfStateRecord;
use crate::store::meta::MetaInfo;
use crate::store::recovery::{self, RESTORING_FILE};
use crate::store::snap;
use crate::store::storage::{engine_root_of, DiskStorage};
use crate::sys::fsutil::{self, DirLock};

/// `state.bin` streamed out of the archive (second pass) into `install_snapshot_from`: its
/// SHA-256 is checked again when it ends, and a mismatch is an error from the read that would
/// have returned end of data, so a changed archive is never installed.
struct StateStream<'a, 'p> {
    r: &'a mut ArchiveReader,
    sha: Sha256,
    expected: &'a str,
    progress: &'p mut dyn FnMut(u64),
    /// The first error, typed (the engine wraps what `read` returns as an I/O error).
    failure: FirstError<Error>,
}

impl StateStream<'_, '_> {
    fn fail(&mut self, e: Error) -> io::Error {
        self.failure.keep(e, io::ErrorKind::InvalidData)
    }
}

impl Read for StateStream<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        match self.r.read_data(buf) {
            Ok(0) => {
                let now = hex::encode(self.sha.clone().finalize());
                if now != self.expected {
                    let e = self.r.invalid(format!(
                        "state.bin changed since it was verified: its SHA-256 is now {now}, was {}",
                        self.expected
                    ));
                    return Err(self.fail(e));
                }
                Ok(0)
            }
            Ok(n) => {
                self.sha.update(&buf[..n]);
                (self.progress)(n as u64);
                Ok(n)
            }
            Err(e) => Err(self.fail(e)),
        }
    }
}

/// Where a restore writes: the directory `NEW_DIR` names (`..` and symbolic links resolved as
/// far as the path exists), and the directories of it that do not exist yet.
struct Place {
    dir: PathBuf,
    /// Missing directories to make, outermost first; the last is `dir` when it is missing.
    missing: Vec<PathBuf>,
}

fn refused(dir: &Path, why: &str) -> Error {
    Error::io(
        "refuse to restore into",
        dir,
        io::Error::new(io::ErrorKind::AlreadyExists, why.to_string()),
    )
}

/// Resolves `spelled` and checks it, changing nothing: the directory it names must be missing or
/// empty, and not a new group of an engine root. A `..` after a missing directory is refused: it
/// would name a directory other than the one restore creates.
fn check_target(spelled: &Path) -> Result<Place> {
    let place = resolve(spelled, spelled)?;
    if let Some(root) = engine_root_of(spelled) {
        return Err(Error::InvalidArgument(format!(
            "refuse to restore into {}: it is in the groups directory of the engine root {}, where only the engine creates groups",
            spelled.display(),
            root.display()
        )));
    }
    if place.missing.is_empty() {
        check_empty(spelled, &place.dir)?;
    }
    Ok(place)
}

fn resolve(path: &Path, spelled: &Path) -> Result<Place> {
    match fs::symlink_metadata(path) {
        Ok(_) => {
            let dir = fs::canonicalize(path)
                .map_err(|e| Error::io("refuse to restore into", spelled, e))?;
            Ok(Place {
                dir,
                missing: Vec::new(),
            })
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let Some(Component::Normal(name)) = path.components().next_back() else {
                return Err(Error::InvalidArgument(format!(
                    "refuse to restore into {}: a `..` after a directory that does not exist names another directory than the one restore would create",
                    spelled.display()
                )));
            };
            let mut place = resolve(&fsutil::parent_dir(path), spelled)?;
            place.dir.push(name);
            place.missing.push(place.dir.clone());
            Ok(place)
        }
        Err(e) => Err(Error::io("stat", path, e)),
    }
}

fn check_empty(spelled: &Path, dir: &Path) -> Result<()> {
    if !fs::metadata(dir)
        .map_err(|e| Error::io("stat", dir, e))?
        .is_dir()
    {
        return Err(refused(spelled, "it exists and is not a directory"));
    }
    // A restore that did not finish (its marker there) is started afresh, if the directory
    // holds nothing a restore cannot have written; a store's lock file alone holds nothing (a
    // restore killed before its marker leaves one). A node holding the lock is met by the
    // claim (`fsutil::lock_dir`).
    let unfinished = recovery::restore_unfinished(dir)?;
    let rd = fs::read_dir(dir).map_err(|e| Error::io("read directory", dir, e))?;
    for ent in rd {
        let ent = ent.map_err(|e| Error::io("read directory", dir, e))?;
        let name = ent.file_name();
        let leftover = unfinished
            && name
                .to_str()
                .is_some_and(recovery::restore_may_have_written);
        if name != fsutil::LOCK_FILE && !leftover {
            return Err(refused(
                spelled,
                "the directory is not empty (restore never overwrites)",
            ));
        }
    }
    Ok(())
}

/// The target directory, held by this restore: made (with its missing parents, each made by this
/// restore or by no one) and locked (`flock` on the directory itself, so a second restore into it
/// is refused), then found empty under the lock, then the store's own lock taken (its `LOCK`
/// file), so that no node opens a store there until the restore has ended and, if it failed,
/// been undone. Only what is listed here is ever removed.
struct Claim {
    dir: PathBuf,
    /// Directories this restore made, outermost first.
    created: Vec<PathBuf>,
    /// The store's lock, shared with the store restore opens (`DiskStorage::open_under`).
    store_lock: Arc<DirLock>,
    _lock: fs::File,
}

fn claim(spelled: &Path, place: Place) -> Result<Claim> {
    let mut created = Vec::new();
    for d in &place.missing {
        match fs::create_dir(d) {
            Ok(()) => created.push(d.clone()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                remove_empty(&created);
                return Err(Error::io("create directory", d, e));
            }
        }
    }
    let locked = lock_and_check(spelled, &place.dir).and_then(|lock| {
        // Until here a node may have opened a store in the directory (then it is not empty, or
        // the store's lock is taken); from here on none can.
        match fsutil::lock_dir(&place.dir) {
            Ok(store_lock) => Ok((lock, store_lock)),
            Err(Error::Locked { .. }) => Err(refused(spelled, "a store is being opened in it")),
            Err(e) => Err(e),
        }
    });
    match locked {
        Ok((lock, store_lock)) => {
            let claim = Claim {
                dir: place.dir,
                created,
                store_lock: Arc::new(store_lock),
                _lock: lock,
            };
            if let Err(e) = claim.mark() {
                claim.undo();
                return Err(e);
            }
            Ok(claim)
        }
        Err(e) => {
            // The target may be another restore's or a node's now, even one this restore made
            // (another restore that found it made claims it before this one locks it): only
            // the empty parents made here go, never the target (a `LOCK` file this restore
            // made may stay: an empty store's lock file).
            created.retain(|d| *d != place.dir);
            remove_empty(&created);
            Err(e)
        }
    }
}

fn lock_and_check(spelled: &Path, dir: &Path) -> Result<fs::File> {
    use fs2::FileExt;
    let f = fs::File::open(dir).map_err(|e| Error::io("open directory", dir, e))?;
    if let Err(e) = f.try_lock_exclusive() {
        if e.kind() == fs2::lock_contended_error().kind() {
            return Err(refused(spelled, "another restore is writing into it"));
        }
        return Err(Error::io("lock", dir, e));
    }
    check_empty(spelled, dir)?;
    Ok(f)
}

/// Removes the directories in `dirs` that are empty, deepest first.
fn remove_empty(dirs: &[PathBuf]) {
    for d in dirs.iter().rev() {
        let _ = fs::remove_dir(d);
    }
}

impl Claim {
    /// Makes the directory's marker ([`RESTORING_FILE`]) durable before anything else is
    /// written there, so that until [`Claim::unmark`] no open takes what a killed restore left
    /// for a store. What an unfinished restore left (its marker there) is removed first.
    fn mark(&self) -> Result<()> {
        let marker = self.dir.join(RESTORING_FILE);
        if recovery::restore_unfinished(&self.dir)? {
            // Found again under the lock (`check_empty`): only what a restore writes.
            self.clear(&[fsutil::LOCK_FILE, RESTORING_FILE])?;
            fsutil::sync_dir(&self.dir)?;
            return Ok(());
        }
        let mut f = fs::File::create(&marker).map_err(|e| Error::io("create", &marker, e))?;
        io::Write::write_all(&mut f, recovery::RESTORING_MAGIC)
            .and_then(|()| f.sync_all())
            .map_err(|e| Error::io("write", &marker, e))?;
        fsutil::sync_dir(&self.dir)
    }

    /// Removes the marker once the store is whole and durable, durably.
    fn unmark(&self) -> Result<()> {
        let marker = self.dir.join(RESTORING_FILE);
        fs::remove_file(&marker).map_err(|e| Error::io("remove", &marker, e))?;
        fsutil::sync_dir(&self.dir)
    }

    /// Removes every entry of the directory but those named in `keep`, and only what a restore
    /// writes (anything else there is not a restore's: an error, nothing of it removed).
    fn clear(&self, keep: &[&str]) -> Result<()> {
        let rd = fs::read_dir(&self.dir).map_err(|e| Error::io("read directory", &self.dir, e))?;
        for ent in rd {
            let ent = ent.map_err(|e| Error::io("read directory", &self.dir, e))?;
            let name = ent.file_name();
            if keep.iter().any(|k| name == *k) {
                continue;
            }
            let p = ent.path();
            if !name
                .to_str()
                .is_some_and(recovery::restore_may_have_written)
            {
                return Err(refused(&p, "a restore never wrote it"));
            }
            let is_dir = ent.file_type().map(|t| t.is_dir()).unwrap_or(false);
            if is_dir {
                fs::remove_dir_all(&p)
            } else {
                fs::remove_file(&p)
            }
            .map_err(|e| Error::io("remove", &p, e))?;
            #[cfg(test)]
            tests::DURING_UNDO.with(|hook| {
                if let Some(f) = hook.take() {
                    f(&self.dir);
                    hook.set(Some(f));
                }
            });
        }
        Ok(())
    }

    /// Removes what a failed restore wrote (all of it: the directory was empty under the lock),
    /// and the directories it made. The store's lock file goes last: once it is unlinked, a
    /// node's open makes a new one and takes its lock (the held lock is on the old file), so
    /// anything still left to remove after it could be that node's.
    fn undo(&self) {
        // The marker goes after the rest is gone, durably: a kill part way through never
        // leaves a store without it.
        let cleared = self
            .clear(&[fsutil::LOCK_FILE, RESTORING_FILE])
            .and_then(|()| fsutil::sync_dir(&self.dir));
        if cleared.is_ok() {
            let _ = fs::remove_file(self.dir.join(RESTORING_FILE));
            let _ = fsutil::sync_dir(&self.dir);
        }
        let _ = fs::remove_file(self.dir.join(fsutil::LOCK_FILE));
        // The directories this restore made, if empty (a node may be in the target already).
        remove_empty(&self.created);
    }

    /// Makes the directories this restore made durable in their parents.
    fn sync(&self) -> Result<()> {
        for d in &self.created {
            fsutil::sync_dir(&fsutil::parent_dir(d))?;
        }
        Ok(())
    }
}

fn check_options(opts: &RestoreOptions) -> Result<()> {
    if opts.raft_id == Some(0) {
        return Err(Error::InvalidArgument(
            "raft id 0 is not a valid raft id".to_string(),
        ));
    }
    if let Some(voters) = &opts.voters {
        if voters.is_empty() {
            return Err(Error::InvalidArgument(
                "a restore with new membership needs at least one voter".to_string(),
            ));
        }
        if voters.contains(&0) {
            return Err(Error::InvalidArgument(
                "voter id 0 is not a valid raft id".to_string(),
            ));
        }
        let mut sorted = voters.clone();
        sorted.sort_unstable();
        sorted.dedup();
        if sorted.len() != voters.len() {
            return Err(Error::InvalidArgument(format!(
                "voters {voters:?} name a node twice"
            )));
        }
    }
    if let (Some(id), Some(voters)) = (opts.raft_id, &opts.voters) {
        if !voters.contains(&id) {
            return Err(Error::InvalidArgument(format!(
                "raft id {id} is not among the voters {voters:?}: the restored node would not be a member of its own cluster"
            )));
        }
    }
    Ok(())
}

/// Restores the archive into a fresh WAL directory `new_dir`. In order: the options are checked;
/// `new_dir` must name a missing or an empty directory, judged as the directory it names (`..`
/// and symbolic links resolved; never overwritten: `Error::Io` of kind `AlreadyExists`
/// otherwise, also while another restore or an open store holds it; `Error::InvalidArgument` for a `..` after a
/// missing directory, or a new group directory of an engine root); the whole archive is verified
/// (nothing is written if it fails); the directory is claimed (found empty again, and the store's
/// lock taken and held to the end, so that no node opens a store there meanwhile);
/// then a marker (`RESTORING`) is made durable in it, which open, `repair` and the read-only
/// tools refuse until the restore removes it once the store is whole and durable (a restore
/// killed part way leaves a directory no node starts from, and a restore run again into it
/// starts afresh); then a WAL directory is created with [`DiskStorage::open`] (default [`Options`]; see
/// [`restore_with_store_options`]), the snapshot installed with
/// `install_snapshot_from` streaming `state.bin` out of the archive a second time (the hashes of
/// all three members and the archive's structure checked again: a changed file fails the
/// restore), with the conf state replaced by `voters` (as voters only) when given,
/// `MetaInfo::RaftId` set when given, and the hard state set to term = snapshot term, commit =
/// snapshot index, so raft-rs starts from the snapshot. If anything fails once the directory
/// exists, what restore created is removed (and nothing else). `progress(n)` is told of each `n` bytes of
/// `state.bin` read, in both passes (2 × size in all). Returns the archive's metadata (with its
/// own conf state, whatever `voters` says).
pub fn restore(
    archive: &Path,
    new_dir: &Path,
    opts: &RestoreOptions,
    progress: &mut dyn FnMut(u64),
) -> Result<ArchiveMeta, Error> {
    restore_with_store_options(archive, new_dir, opts, &Options::default(), progress)
}

/// [`restore`] creating the new directory with `store` options: with an `encryption_key`, the
/// restored store is encrypted at rest under it (and needs it to open).
pub fn restore_with_store_options(
    archive: &Path,
    new_dir: &Path,
    opts: &RestoreOptions,
    store: &Options,
    progress: &mut dyn FnMut(u64),
) -> Result<ArchiveMeta, Error> {
    check_options(opts)?;
    check_target(new_dir)?;
    let verified = verify_full(archive, false, progress)?;
    // The snapshot file's header must hold the conf state as this store keeps it (sealed with a
    // key, which makes it longer), before anything is written.
    let meta = &verified.status.meta;
    let cs = ConfStateRecord::from(&restored_conf_state(opts, meta));
    let encrypted = store.encryption_key.is_some();
    snap::check_header_fits(meta.index, meta.term, &cs, meta.size, encrypted).map_err(|e| {
        Error::InvalidArchive {
            path: archive.to_path_buf(),
            reason: format!("its conf state cannot be stored in this store's snapshot file: {e}"),
        }
    })?;
    let claim = claim(new_dir, check_target(new_dir)?)?;
    #[cfg(test)]
    tests::AFTER_CLAIM.with(|hook| hook.take().map(|f| f(&claim.dir)));
    // The store is opened through the resolved path: the one checked and locked.
    match install(archive, &claim, opts, store, &verified, progress).and_then(|()| claim.unmark()) {
        Ok(()) => {
            claim.sync()?;
            Ok(verified.status.meta)
        }
        Err(e) => {
            claim.undo();
            Err(e)
        }
    }
}

/// The conf state a restore stores: the archive's, or the voters `opts` replaces it with.
fn restored_conf_state(opts: &RestoreOptions, meta: &ArchiveMeta) -> ConfState {
    match &opts.voters {
        Some(voters) => ConfState {
            voters: voters.clone(),
            ..Default::default()
        },
        None => ConfState::from(&meta.conf_state),
    }
}

fn install(
    archive: &Path,
    claim: &Claim,
    opts: &RestoreOptions,
    store: &Options,
    verified: &Verified,
    progress: &mut dyn FnMut(u64),
) -> Result<()> {
    let meta = &verified.status.meta;
    // The members' hashes are checked again; the whole file's is not needed for that.
    let mut r = ArchiveReader::open(archive, false)?;
    let (_, meta_sha) = r.read_meta()?;
    if meta_sha != verified.meta_sha {
        return Err(r.invalid("meta.json changed since the archive was verified"));
    }
    let size = r.next_member(STATE_MEMBER, 1)?;
    if size != meta.size {
        return Err(r.invalid("state.bin changed size since the archive was verified"));
    }

    let mut md = SnapshotMetadata::default();
    md.index = meta.index;
    md.term = meta.term;
    md.set_conf_state(restored_conf_state(opts, meta));

    let storage = DiskStorage::open_under(&claim.dir, store.clone(), claim.store_lock.clone())?;
    let mut stream = StateStream {
        r: &mut r,
        sha: Sha256::new(),
        expected: &meta.state_sha256,
        progress,
        failure: FirstError(None),
    };
    if let Err(e) = storage.install_snapshot_from(&md, &mut stream) {
        return Err(stream.failure.take().unwrap_or(e));
    }
    r.finish_with_sums(&verified.meta_sha, &meta.state_sha256)?;

    if let Some(id) = opts.raft_id {
        storage.set_uint(MetaInfo::RaftId, id);
    }
    let mut hs = HardState::default();
    hs.term = meta.term;
    hs.commit = meta.index;
    storage.save(&hs, &[], &Snapshot::default())?;
    storage.close()
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use raft::prelude::{Entry, HardState, Snapshot};
    use raft::Storage;

    use super::*;
    use crate::tools::archive::save_dir_snapshot;

    /// What runs right after a claim (`AFTER_CLAIM`).
    type Hook = Box<dyn FnOnce(&Path)>;
    /// What runs after each removal of a failed restore's undo (`DURING_UNDO`).
    type StepHook = Box<dyn Fn(&Path)>;

    thread_local! {
        /// Runs once, right after the next restore on this thread has claimed its directory:
        /// the moment a node starting in the same directory could open a store there.
        pub(super) static AFTER_CLAIM: Cell<Option<Hook>> = const { Cell::new(None) };
        /// Runs after each file or directory a failed restore's undo removes.
        pub(super) static DURING_UNDO: Cell<Option<StepHook>> = const { Cell::new(None) };
    }

    fn entry(index: u64) -> Entry {
        let mut e = Entry::default();
        (e.index, e.term, e.data) = (index, 1, vec![index as u8; 8].into());
        e
    }

    /// An archive `backup.tar.gz` in `dir` of a store (also in `dir`) holding entries 1..=10,
    /// committed, and a snapshot at 8 holding `state`.
    fn archive_in(dir: &Path, state: Vec<u8>) -> PathBuf {
        let wal = dir.join("wal");
        {
            let s = DiskStorage::open(&wal).expect("open");
            let mut hs = HardState::default();
            (hs.term, hs.commit) = (1, 10);
            let es: Vec<Entry> = (1..=10).map(entry).collect();
            s.save(&hs, &es, &Snapshot::default()).expect("save");
            s.create_snapshot(8, None, state).expect("snapshot");
            s.close().expect("close");
        }
        let archive = dir.join("backup.tar.gz");
        save_dir_snapshot(&wal, &archive, &mut |_| {}).expect("save archive");
        archive
    }

    /// A node opening a store in the directory a restore has just claimed (found empty):
    /// before the claim took the store's lock, the node's open succeeded, restore's own open
    /// then failed on the lock, and its undo removed the node's files (the node's acknowledged
    /// entries gone, under a running node). Now the node is refused until the restore ends,
    /// and the restore succeeds.
    #[test]
    fn a_node_opening_the_claimed_directory_never_loses_its_files() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let archive = archive_in(tmp.path(), b"state".to_vec());

        let target = tmp.path().join("restored");
        std::fs::create_dir(&target).expect("mkdir");
        let node: std::rc::Rc<Cell<Option<Result<DiskStorage>>>> = Default::default();
        let seen = node.clone();
        AFTER_CLAIM.with(|hook| {
            hook.set(Some(Box::new(move |dir: &Path| {
                // The node starts: opens the empty directory and writes an entry.
                let opened = DiskStorage::open(dir).and_then(|s| {
                    let mut hs = HardState::default();
                    (hs.term, hs.commit) = (1, 1);
                    s.save(&hs, &[entry(1)], &Snapshot::default())?;
                    Ok(s)
                });
                seen.set(Some(opened));
            })))
        });
        let restored = restore(&archive, &target, &RestoreOptions::default(), &mut |_| {});
        let node = node.take().expect("the hook ran");
        match (&restored, &node) {
            (Ok(_), Err(Error::Locked { .. })) => {}
            (Err(e), Ok(s)) => panic!(
                "restore failed ({e}) after the node opened; the node's log now ends at {:?}, \
                 its wal.meta exists: {}",
                s.last_index(),
                target.join("wal.meta").exists()
            ),
            (r, n) => panic!("restore {r:?}, node {:?}", n.as_ref().map(|_| ())),
        }
        drop(node);
        let s = DiskStorage::open(&target).expect("open the restored store");
        assert_eq!(
            s.first_index().expect("first"),
            9,
            "the archive's snapshot at 8"
        );
    }

    /// A restore that fails after its claim (the archive cut short under it) undoes what it
    /// wrote, and a node trying to open a store in the directory at every step of that undo is
    /// refused (the restore still holds the store's lock file) until the undo has ended; the
    /// directory is then empty and the node's store opens. The undo once removed the lock file
    /// among the rest, in the directory's order: a node could then make a new one, open, and
    /// have its files removed by the rest of the undo (found by a review).
    #[test]
    fn a_node_is_refused_at_every_step_of_a_failed_restores_undo() {
        use std::rc::Rc;
        let tmp = tempfile::tempdir().expect("tempdir");
        let archive = archive_in(tmp.path(), vec![7u8; 200_000]);
        let target = tmp.path().join("restored");
        std::fs::create_dir(&target).expect("mkdir");

        // The archive cut short once the restore has claimed the directory: install fails.
        let cut = archive.clone();
        AFTER_CLAIM.with(|hook| {
            hook.set(Some(Box::new(move |_: &Path| {
                let len = std::fs::metadata(&cut).expect("archive").len();
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .open(&cut)
                    .expect("open");
                f.set_len(len / 2).expect("cut the archive");
            })))
        });
        let steps: Rc<Cell<(u32, u32)>> = Default::default();
        let seen = steps.clone();
        DURING_UNDO.with(|hook| {
            hook.set(Some(Box::new(move |dir: &Path| {
                let (n, opened) = seen.get();
                let node = DiskStorage::open(dir);
                seen.set((n + 1, opened + u32::from(node.is_ok())));
            })))
        });
        let restored = restore(&archive, &target, &RestoreOptions::default(), &mut |_| {});
        DURING_UNDO.with(|hook| hook.set(None));
        assert!(restored.is_err(), "the cut archive restored");
        let (n, opened) = steps.get();
        assert!(n >= 2, "the undo removed {n} entries");
        assert_eq!(
            opened, 0,
            "a node opened a store during {opened} of {n} undo steps"
        );
        let left: Vec<_> = std::fs::read_dir(&target)
            .expect("read")
            .flatten()
            .collect();
        assert!(left.is_empty(), "left after the undo: {left:?}");
        DiskStorage::open(&target).expect("a node opens the emptied directory");
    }

    /// A file named `RESTORING` in a stopped node's store (the operator's, a script's: not a
    /// restore's marker) never lets a restore remove the store or anything else there; nor
    /// does a real marker let it remove what a restore never writes (an engine root's
    /// `engine.meta`, a file of the operator's). Both were removed once (found by a review,
    /// 2026-12-07).
    #[test]
    fn a_marker_never_lets_restore_remove_what_no_restore_wrote() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let archive = archive_in(tmp.path(), b"state".to_vec());
        let node = tmp.path().join("node");
        {
            let s = DiskStorage::open(&node).expect("open");
            let mut hs = HardState::default();
            (hs.term, hs.commit) = (5, 40);
            let es: Vec<Entry> = (1..=40).map(entry).collect();
            s.save(&hs, &es, &Snapshot::default()).expect("save");
            s.close().expect("close");
        }
        std::fs::write(node.join("notes.txt"), b"operator notes").expect("notes");
        for marker in [&b""[..], recovery::RESTORING_MAGIC] {
            std::fs::write(node.join(RESTORING_FILE), marker).expect("marker");
            let r = restore(&archive, &node, &RestoreOptions::default(), &mut |_| {});
            assert!(
                r.is_err(),
                "restored over a node's store (marker {marker:?})"
            );
            assert!(node.join("notes.txt").exists() && node.join("wal.meta").exists());
        }
        // An engine root holding the marker.
        let root = tmp.path().join("engine");
        {
            let e = crate::Engine::open(&root).expect("engine");
            e.create_group(1, 1).expect("group");
            e.close().expect("close");
        }
        std::fs::write(root.join(RESTORING_FILE), recovery::RESTORING_MAGIC).expect("marker");
        let r = restore(&archive, &root, &RestoreOptions::default(), &mut |_| {});
        assert!(r.is_err(), "restored over an engine root");
        assert!(root.join("engine.meta").exists() && root.join("groups/1").exists());
    }
}
