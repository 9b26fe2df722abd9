//! The journal's segment files before and after their use: recycled segments kept as spares,
//! and the next segment prepared off the commit path.
//!
//! A commit that fills a segment moves on to the next one. Making that file on the commit path
//! would cost a file creation, an allocation and a directory flush. So a background thread
//! (`raftwal-journal`) prepares the next segment as soon as the one before is taken:
//!
//! * named as the next segment (`<id>.jnl`), with its header page zero: open takes a newest
//!   segment whose header is zero for one never written and removes it (module `journal`);
//! * its blocks reserved: a spare (a segment the journal was trimmed of, renamed
//!   `spare-<old id>.jnl`, every block written), or a new file allocated with `fallocate`.
//!   A new file's blocks are unwritten extents, so until it is full each commit's flush also
//!   writes their conversion (the inode-table block). Filling new files with zeros first was
//!   measured and not kept (docs/PERFORMANCE.md, "Block-level traces"): fewer slow rounds, the
//!   same p99, and rounds of 30-54 ms while the 32 MiB of zeros are flushed beside the
//!   commits. Once checkpoints trim the journal, its segments are spares;
//! * its header page zero and its name durable before it is handed out (the zeroed header is
//!   flushed before the rename, so a spare's old header is never found under the new name).
//!
//! Taking it at rotation then costs one header write, flushed with the commit's records.
//!
//! A trimmed segment that is not kept as a spare is renamed `<id>.jnl.tmp` and given back to
//! the file system by the same thread when it has no segment to prepare: shrunk by a step
//! right after each journal flush, then removed ([`Release`]), never under the journal's lock.
//!
//! Owns: the spare files, the prepared segment, the trimmed segments being given back and the
//! thread that does both. Must never: hand out a file whose name is not durable or whose
//! header is not zero, let two segments be prepared under one id, or shrink a file that holds
//! a record not yet covered by a durable checkpoint.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::Mutex;

use super::journal::SEGMENT_HEADER;
use super::Shared;
use crate::error::{Error, Result};
use crate::sys::fsutil;

/// Spare file name prefix (`spare-<16-digit id of the segment it was>.jnl`).
const SPARE_PREFIX: &str = "spare-";
/// How often the preparing thread looks for a stop when nothing wakes it.
const IDLE: Duration = Duration::from_millis(200);
/// The least a step of giving back a trimmed segment shrinks it by ([`Release`]).
const RELEASE_STEP: u64 = 1 << 20;

/// The name of the spare that was segment `id`.
pub(crate) fn spare_name(id: u64) -> String {
    format!("{SPARE_PREFIX}{id:016}.jnl")
}

/// The name a trimmed segment that is not kept takes while the file system gets its blocks
/// back ([`Release`]): open removes any file of this form it finds (module `journal`).
pub(crate) fn release_name(id: u64) -> String {
    format!("{id:016}.jnl.tmp")
}

/// Whether `name` is a spare's file name.
pub(crate) fn is_spare_name(name: &str) -> bool {
    name.strip_prefix(SPARE_PREFIX)
        .and_then(|rest| rest.strip_suffix(".jnl"))
        .is_some_and(|d| d.len() == 16 && d.bytes().all(|b| b.is_ascii_digit()))
}

/// A segment ready to be written: named, header page zero, blocks reserved, name durable.
pub(crate) struct Prepared {
    pub id: u64,
    pub path: PathBuf,
    pub file: File,
    pub len: u64,
}

/// Where the next segment stands.
pub(crate) enum Next {
    /// Nothing prepared, nothing under way.
    Idle,
    /// The thread prepares segment `id` (no one else may make a file of that id).
    Preparing(u64),
    Ready(Prepared),
}

/// The spares and the prepared segment of a journal (kept under the journal's lock).
pub(crate) struct Pool {
    pub dir: PathBuf,
    pub segment_bytes: u64,
    /// Spare files, oldest first.
    pub spares: Vec<PathBuf>,
    /// Spares kept at most; a trimmed segment beyond them is removed.
    pub max_spares: usize,
    pub next: Next,
    /// The last preparation failed: the thread waits for the next rotation before it tries
    /// again (the commit path then makes its segment itself and reports what fails).
    pub stalled: bool,
    /// Trimmed segments not kept as spares, renamed, that the thread gives back to the file
    /// system a step after each journal flush, oldest first.
    pub releases: VecDeque<Release>,
}

/// A trimmed segment being given back to the file system: shrunk a step at a time, then
/// removed. On this disk (mounted with `discard`) the blocks a removal frees are discarded
/// before it returns, about 0.3 ms per MiB, and a journal flush issued meanwhile waits behind
/// them: removing a 32 MiB segment at once held a commit's flush for 7-9 ms, shrinking it by
/// 1 MiB after each flush left the flushes as they were (docs/PERFORMANCE.md, "Trimmed
/// segments given back a step at a time"). Its records all lie at or below a durable
/// checkpoint, and its name (`<id>.jnl.tmp`) is one that open removes, so a crash part way
/// leaves nothing open reads.
pub(crate) struct Release {
    pub path: PathBuf,
    /// Its length now.
    pub len: u64,
}

impl Release {
    /// Shrinks the file by `step` bytes (at least one), or removes it once that leaves
    /// nothing. Returns whether it is gone.
    pub(crate) fn step(&mut self, step: u64) -> Result<bool> {
        let len = self.len.saturating_sub(step.max(1));
        if len == 0 {
            fs::remove_file(&self.path).map_err(|e| Error::io("remove", &self.path, e))?;
            return Ok(true);
        }
        let file = OpenOptions::new()
            .write(true)
            .open(&self.path)
            .map_err(|e| Error::io("open", &self.path, e))?;
        file.set_len(len)
            .map_err(|e| Error::io("shrink", &self.path, e))?;
        self.len = len;
        Ok(false)
    }
}

/// What the thread does for one preparation, decided under the journal's lock.
pub(crate) struct Job {
    id: u64,
    path: PathBuf,
    spare: Option<PathBuf>,
    len: u64,
    dir: PathBuf,
}

impl Pool {
    /// Whether the thread has work: a journal with a segment being written needs its next one.
    pub(crate) fn wants_preparation(&self, writing: bool) -> bool {
        writing && !self.stalled && matches!(self.next, Next::Idle)
    }

    /// Reserves segment `id` for the thread and hands it the work (a spare if there is one).
    pub(crate) fn begin(&mut self, id: u64, path: PathBuf) -> Job {
        self.next = Next::Preparing(id);
        Job {
            id,
            path,
            spare: (!self.spares.is_empty()).then(|| self.spares.remove(0)),
            len: self.segment_bytes,
            dir: self.dir.clone(),
        }
    }

    /// Takes the prepared segment if it is segment `id`.
    pub(crate) fn take(&mut self, id: u64) -> Option<Prepared> {
        match std::mem::replace(&mut self.next, Next::Idle) {
            Next::Ready(p) if p.id == id => Some(p),
            other => {
                self.next = other;
                None
            }
        }
    }

    /// Keeps the trimmed segment at `path` (of `len` bytes, once segment `id`) as a spare if
    /// one is wanted; false if not (the caller hands it to the thread to give back: module
    /// `journal`, `Journal::trim`).
    ///
    /// A segment id can be used twice (open turns a prepared, never written newest segment into
    /// a spare, and the next segment takes its id again), so a spare of that name may still be
    /// waiting: it is never replaced (that would leave it listed twice), the trimmed segment is
    /// given back instead.
    pub(crate) fn recycle(&mut self, path: &Path, id: u64, len: u64) -> bool {
        if self.spares.len() < self.max_spares && len == self.segment_bytes {
            let spare = self.dir.join(spare_name(id));
            if !self.spares.contains(&spare) && fsutil::rename_no_replace(path, &spare).is_ok() {
                self.spares.push(spare);
                return true;
            }
        }
        false
    }
}

impl Job {
    /// Makes the segment: the spare renamed (its header zeroed and flushed first), or a new
    /// file allocated; then the directory flushed.
    pub(crate) fn run(self) -> Result<Prepared> {
        let file = match &self.spare {
            Some(spare) => {
                let file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(spare)
                    .map_err(|e| Error::io("open", spare, e))?;
                file.write_all_at(&[0u8; SEGMENT_HEADER as usize], 0)
                    .map_err(|e| Error::io("write", spare, e))?;
                file.sync_data()
                    .map_err(|e| Error::io("fdatasync", spare, e))?;
                fsutil::rename_no_replace(spare, &self.path)?;
                file
            }
            None => {
                let file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create_new(true)
                    .open(&self.path)
                    .map_err(|e| Error::io("create", &self.path, e))?;
                if let Err(e) = fsutil::allocate(&file, &self.path, self.len) {
                    drop(file);
                    let _ = fs::remove_file(&self.path);
                    return Err(e);
                }
                file
            }
        };
        fsutil::sync_dir(&self.dir)?;
        let len = file
            .metadata()
            .map_err(|e| Error::io("stat", &self.path, e))?
            .len();
        Ok(Prepared {
            id: self.id,
            path: self.path,
            file,
            len,
        })
    }
}

/// The preparing thread and how to stop it.
#[derive(Default)]
pub(crate) struct Preparer {
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// Starts the thread (it holds the engine only weakly, and only while it prepares a segment).
pub(crate) fn start(shared: &Arc<Shared>) -> Result<()> {
    let weak: Weak<Shared> = Arc::downgrade(shared);
    let handle = std::thread::Builder::new()
        .name("raftwal-journal".to_string())
        .spawn(move || background(weak))
        .map_err(|e| Error::io("start the journal thread for", &shared.root, e))?;
    *shared.preparer.thread.lock() = Some(handle);
    Ok(())
}

/// Stops the thread and waits for it (the engine is marked stopping by the caller).
pub(crate) fn stop(shared: &Shared) {
    {
        let _j = shared.journal.lock();
        shared.journal_cv.notify_all();
    }
    if let Some(h) = shared.preparer.thread.lock().take() {
        let _ = h.join();
    }
}

/// What the thread does next.
enum Work {
    Prepare(Job),
    Release(Release),
}

fn background(weak: Weak<Shared>) {
    loop {
        let Some(shared) = weak.upgrade() else { return };
        let work = {
            let mut j = shared.journal.lock();
            if shared.stopping() {
                return;
            }
            // A segment to prepare comes first: a rotation without one makes its own on the
            // commit path.
            if let Some(job) = j.begin_preparation() {
                Work::Prepare(job)
            } else if let Some(release) = j.take_release() {
                Work::Release(release)
            } else {
                let _ = shared.journal_cv.wait_for(&mut j, IDLE);
                continue;
            }
        };
        match work {
            Work::Prepare(job) => prepare(&shared, job),
            Work::Release(release) => release_step(&shared, release),
        }
    }
}

fn prepare(shared: &Shared, job: Job) {
    // A panic here (a bug) must not leave the segment marked as being prepared with the
    // engine still running: a commit that needs it would wait for it for ever. The engine
    // stops (the waiting commit fails), and the panic goes on in this thread.
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let result = job.run_checked();
        #[cfg(test)]
        tests::AFTER_JOB.pass(&shared.root);
        result
    }))
    .unwrap_or_else(|payload| {
        shared.poison(&Error::invariant(
            "the journal's segment preparer panicked; open the engine again",
        ));
        shared.journal_cv.notify_all();
        std::panic::resume_unwind(payload)
    });
    let mut j = shared.journal.lock();
    j.finish_preparation(result);
    shared.journal_cv.notify_all();
}

/// One step of giving back a trimmed segment ([`Release`]), without the journal's lock: right
/// after the next journal flush ends, in the gap before the one after, as many bytes as that
/// flush carried (at least [`RELEASE_STEP`]), so that the journal is given back as fast as it
/// is written. With no flush ending within a wait (an idle engine, or one without
/// `sync_writes`) the file is removed at once: there is no flush to hold up.
fn release_step(shared: &Shared, mut release: Release) {
    let step = if shared.flushes.wait_next() {
        RELEASE_STEP.max(shared.flushes.last_bytes())
    } else {
        u64::MAX
    };
    #[cfg(test)]
    tests::BEFORE_RELEASE_STEP.pass(&shared.root);
    match release.step(step) {
        Ok(true) => {}
        Ok(false) => shared.journal.lock().keep_release(release),
        // As a failed removal in a checkpoint's trim did: the journal directory is not what
        // the engine left it. The file holds no record past a durable checkpoint.
        Err(e) => shared.poison(&e),
    }
}

impl Job {
    /// [`Job::run`], keeping what is needed to undo the reservation when it fails.
    fn run_checked(self) -> std::result::Result<Prepared, (Error, Option<PathBuf>)> {
        let spare = self.spare.clone();
        self.run().map_err(|e| (e, spare.filter(|p| p.exists())))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::path::Path;

    use crate::engine::pauses::Pauses;

    /// The point after the preparer's job made its segment and before the journal takes it
    /// (the window in which no one else may make that file).
    pub(super) static AFTER_JOB: Pauses = Pauses::new();

    /// Before a step of giving back a trimmed segment, without the journal's lock.
    pub(crate) static BEFORE_RELEASE_STEP: Pauses = Pauses::new();

    /// Makes the preparer of the engine at `root` run `f` after its next job (once).
    pub(crate) fn pause_next_preparation(root: &Path, f: impl FnOnce() + Send + 'static) {
        AFTER_JOB.add(root, f);
    }

    /// A release shrinks its file by the step asked (at least a byte) and says it is gone only
    /// once the step that removes it ran; a file that vanished under it is an error naming it.
    #[test]
    fn a_release_shrinks_by_its_steps_then_removes_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(super::release_name(7));
        std::fs::write(&path, vec![1u8; (3 << 20) + 100]).unwrap();
        let mut r = super::Release {
            path: path.clone(),
            len: (3 << 20) + 100,
        };
        let len = || std::fs::metadata(&path).unwrap().len();
        assert!(!r.step(1 << 20).unwrap());
        assert_eq!((len(), r.len), ((2 << 20) + 100, (2 << 20) + 100));
        assert!(!r.step(0).unwrap());
        assert_eq!(len(), (2 << 20) + 99);
        assert!(!r.step(2 << 20).unwrap());
        assert_eq!(len(), 99);
        assert!(r.step(1 << 20).unwrap());
        assert!(!path.exists());
        let mut gone = super::Release { path, len: 5 };
        let err = gone.step(1).unwrap_err().to_string();
        assert!(err.contains(&super::release_name(7)), "{err}");
    }
}
