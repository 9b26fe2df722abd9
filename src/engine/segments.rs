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
//!   commits. Once checkpoints trim the journal, its segments are spares. A new root's
//!   first segment, made at open with nothing beside it, is written with zeros to its end
//!   ([`Fill::Zeros`]): a fresh root's first 32 MiB of commits otherwise all pay the
//!   conversions (docs/PERFORMANCE.md, "A new root's first segment written, not reserved");
//! * its header page zero and its name durable before it is handed out (the zeroed header is
//!   flushed before the rename, so a spare's old header is never found under the new name).
//!   A spare's next page, where the first record goes, is zeroed with it: a clean close can
//!   leave a segment holding only its header ([`super::journal::Journal::close_clean`]), and
//!   open reads the body of whatever record header it finds there, to tell a record whose
//!   sequence number field alone is damaged from the end (a recycled segment's old first
//!   record: 4 MiB at each reopen of 1,024 groups, docs/PERFORMANCE.md, "Reopen: a spare's
//!   old first record").
//!
//! Taking it at rotation then costs one header write, flushed with the commit's records.
//!
//! A trimmed segment that is not kept as a spare is renamed `<id>.jnl.tmp` and given back to
//! the file system by the same thread, in turns between its preparations (module `release`).
//!
//! At rest (nothing appended for [`REST_AFTER`], every record covered by a checkpoint) the
//! thread gives back the spares and the prepared segment the same way, and none is made or
//! kept until an append ends the rest; the next segment is then prepared only once the one
//! being written is half full (`Pool::lazy`), so the first rotation after a long rest may
//! make its segment on the commit path, and the segments of the first burst after it are new
//! files (docs/PERFORMANCE.md, "The journal at rest gives back its spares").
//!
//! Owns: the spare files, the prepared segment, the trimmed segments being given back, the
//! rest, and the thread that does all of it. Must never: hand out a file whose name is not
//! durable or whose header is not zero, let two segments be prepared under one id, or shrink a
//! file that holds a record not yet covered by a durable checkpoint.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::Mutex;

use super::journal::{direct, PAGE, SEGMENT_HEADER};
use super::release::{self, Release, Releasing};
use super::Shared;
use crate::error::{Error, Result};
use crate::sys::fsutil;

/// Spare file name prefix (`spare-<16-digit id of the segment it was>.jnl`).
const SPARE_PREFIX: &str = "spare-";
/// How often the preparing thread looks for a stop when nothing wakes it.
const IDLE: Duration = Duration::from_millis(200);

/// The name of the spare that was segment `id`.
pub(crate) fn spare_name(id: u64) -> String {
    format!("{SPARE_PREFIX}{id:016}.jnl")
}

/// The id of the segment the spare named `name` was; `None` if `name` is not a spare's.
fn spare_id_of(name: &str) -> Option<u64> {
    name.strip_prefix(SPARE_PREFIX)
        .and_then(|rest| rest.strip_suffix(".jnl"))
        .filter(|d| d.len() == 16 && d.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|d| d.parse().ok())
}

/// The id of the segment the spare at `path` was, from its name.
pub(crate) fn spare_id(path: &Path) -> Option<u64> {
    spare_id_of(path.file_name()?.to_str()?)
}

/// Whether `name` is a spare's file name.
pub(crate) fn is_spare_name(name: &str) -> bool {
    spare_id_of(name).is_some()
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
    /// Spares kept at most; a trimmed segment beyond them is given back (module `release`).
    pub max_spares: usize,
    pub next: Next,
    /// The last preparation failed: the thread waits for the next rotation before it tries
    /// again (the commit path then makes its segment itself and reports what fails).
    pub stalled: bool,
    /// Trimmed segments not kept as spares, renamed, that the thread gives back to the file
    /// system (module `release`), oldest first.
    pub releases: VecDeque<Release>,
    /// The journal's next sequence number when it last began to rest
    /// ([`super::journal::Journal::rest_if_idle`]): it rests while no record was appended
    /// since (its spares and prepared segment given back, none made until an append).
    pub rested_at: Option<u64>,
    /// The journal rested since the last preparation began: the next segment is prepared only
    /// once the one being written is half full (the append that fills it so far wakes the
    /// thread), so that an engine committing now and then, each commit ending a rest, does not
    /// make and give back a whole segment for each.
    pub lazy: bool,
    /// How long nothing must be appended before the journal rests
    /// (`EngineOptions::journal_rest_after`).
    pub rest_after: Duration,
}

/// How long an engine appends nothing (every record covered by a checkpoint) before its
/// journal gives back the spares and the prepared segment, by default
/// (`EngineOptions::journal_rest_after`): one checkpoint period. They only
/// speed up the rotations of a burst of commits; at rest they held 160 MiB of the 413 MiB an
/// engine of 1,024 groups kept on disk (docs/PERFORMANCE.md, "Disk while open, at rest").
pub(crate) const REST_AFTER: Duration = Duration::from_secs(5);

/// What the thread does for one preparation, decided under the journal's lock.
pub(crate) struct Job {
    id: u64,
    path: PathBuf,
    spare: Option<PathBuf>,
    len: u64,
    dir: PathBuf,
    /// How a new file (no spare) gets its blocks.
    fill: Fill,
}

/// How a new segment file (one not made from a spare) gets its blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fill {
    /// Reserved with `fallocate`: fast, but the blocks are unwritten extents, and the flush of
    /// every commit that writes into one carries the extent's conversion. Every segment but a
    /// new journal's first: those made on the commit path, by a clean close or by open's
    /// cut, and those the thread prepares beside running commits (zeros written there
    /// measured worse than the conversions: docs/PERFORMANCE.md, "A new root's first segment
    /// written, not reserved").
    Reserve,
    /// Written with zeros (direct writes of 1 MiB where the file system takes them; its first
    /// [`ZEROS_AT_MOST`] bytes, the rest reserved) and flushed, so that its commits flush their
    /// records alone, as in a spare: a new journal's first segment, made at open (a fresh
    /// root's rounds at N = 16 took a quarter longer in unwritten extents).
    Zeros,
}

impl Pool {
    /// Whether the thread has work: a journal with a segment being written needs its next one
    /// (none while `resting`; after a rest, once that one is `half_full`).
    pub(crate) fn wants_preparation(&self, writing: bool, resting: bool, half_full: bool) -> bool {
        writing
            && !self.stalled
            && !resting
            && (!self.lazy || half_full)
            && matches!(self.next, Next::Idle)
    }

    /// Reserves segment `id` for the thread and hands it the work (a spare if there is one,
    /// else a new file filled as `fill` says).
    pub(crate) fn begin(&mut self, id: u64, path: PathBuf, fill: Fill) -> Job {
        self.next = Next::Preparing(id);
        self.lazy = false;
        Job {
            id,
            path,
            spare: (!self.spares.is_empty()).then(|| self.spares.remove(0)),
            len: self.segment_bytes,
            dir: self.dir.clone(),
            fill,
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
    /// Should a spare of that name still be waiting (an id used twice), it is never replaced
    /// (that would leave it listed twice): the trimmed segment is given back instead.
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
    /// Makes the segment: the spare renamed (its header page and the page where the first
    /// record goes zeroed and flushed first), or a new file allocated (and, [`Fill::Zeros`],
    /// written with zeros and flushed); then the directory flushed.
    pub(crate) fn run(self) -> Result<Prepared> {
        let file = match &self.spare {
            Some(spare) => {
                let file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(spare)
                    .map_err(|e| Error::io("open", spare, e))?;
                // The header page, and the page where the first record goes: a segment a
                // clean close leaves holding only its header is otherwise read at the next
                // open up to its old first record's end (module doc).
                let len = file
                    .metadata()
                    .map_err(|e| Error::io("stat", spare, e))?
                    .len();
                let zeroed = (SEGMENT_HEADER + PAGE).min(len).max(SEGMENT_HEADER);
                file.write_all_at(
                    &[0u8; (SEGMENT_HEADER + PAGE) as usize][..zeroed as usize],
                    0,
                )
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
                let made =
                    fsutil::allocate(&file, &self.path, self.len).and_then(|()| match self.fill {
                        Fill::Reserve => Ok(()),
                        Fill::Zeros => write_zeros(&file, &self.path, self.len.min(ZEROS_AT_MOST)),
                    });
                if let Err(e) = made {
                    discard(file, &self.path);
                    return Err(e);
                }
                file
            }
        };
        let named = fsutil::sync_dir(&self.dir).and_then(|()| {
            file.metadata()
                .map_err(|e| Error::io("stat", &self.path, e))
        });
        match named {
            Ok(meta) => Ok(Prepared {
                id: self.id,
                path: self.path,
                file,
                len: meta.len(),
            }),
            Err(e) => {
                discard(file, &self.path);
                Err(e)
            }
        }
    }
}

/// Drops a segment that failed to be made or started, holding no record, and removes its file,
/// so that its id stays free for the next preparation (else that one fails: "File exists").
/// Not flushed: a blank segment found at open is removed.
pub(crate) fn discard(file: File, path: &Path) {
    drop(file);
    let _ = fs::remove_file(path);
}

/// The most of a segment [`Fill::Zeros`] writes: a root made with very large segments does not
/// write them whole at open (32 MiB took 27-29 ms on the disk of docs/PERFORMANCE.md).
const ZEROS_AT_MOST: u64 = 64 << 20;

/// Writes zeros over `[0, len)` of the new segment `file` at `path` and flushes them, so that
/// its blocks are written extents before a commit writes there ([`Fill::Zeros`]). Direct
/// writes of 1 MiB from the journal's aligned buffer where the file system takes them (no page
/// cache to fill, then write back and free); the rest (an unaligned end, or all of it where
/// direct writes are not taken or one is refused) through the page cache.
fn write_zeros(file: &File, path: &Path, len: u64) -> Result<()> {
    const PIECE: u64 = 1 << 20;
    let mut at = 0;
    if let Some(d) = direct::open_direct(path) {
        let mut buf = direct::AlignedBuf::default();
        let zeros = buf.get(PIECE as usize);
        zeros.fill(0);
        let aligned_end = len - len % direct::ALIGN as u64;
        while at < aligned_end {
            let n = (aligned_end - at).min(PIECE);
            if d.write_all_at(&zeros[..n as usize], at).is_err() {
                break;
            }
            at += n;
        }
    }
    fsutil::write_zeroes(file, path, at, len)?;
    file.sync_data()
        .map_err(|e| Error::io("fdatasync", path, e))
}

/// The preparing thread and how to stop it.
#[derive(Default)]
pub(crate) struct Preparer {
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// Starts the thread (it holds the engine only weakly, and only while it prepares a segment,
/// gives back trimmed ones, or waits for either).
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
    /// A turn of giving back trimmed segments; whether it catches up (module `release`).
    Release(bool),
}

fn background(weak: Weak<Shared>) {
    let mut releasing = Releasing::default();
    let mut prepared_last = false;
    loop {
        let Some(shared) = weak.upgrade() else { return };
        let work = {
            let mut j = shared.journal.lock();
            if shared.stopping() {
                releasing.put_back(&mut j);
                return;
            }
            // A segment to prepare comes first (a rotation without one makes its own on the
            // commit path), but not twice in a row while trimmed segments wait: with every
            // commit larger than a segment, each one rotates, and they would never get a turn.
            let job = if prepared_last && releasing.pending(&j) {
                None
            } else {
                j.begin_preparation()
            };
            let bound = release::backlog_bound(&shared.opts);
            if let Some(job) = job {
                Work::Prepare(job)
            } else if let Some(catch_up) = releasing.begin_turn(&mut j, bound) {
                Work::Release(catch_up)
            } else {
                prepared_last = false;
                // Idle: the spares and the prepared segment are given back by the next turns.
                match j.rest_if_idle() {
                    Ok(true) => continue,
                    Ok(false) => {}
                    // A spare that can be neither renamed nor removed: the journal directory
                    // is not what the engine left there, as in a failed turn. It stops the
                    // engine (open tidies the files left).
                    Err(e) => {
                        shared.poison(&e);
                        shared.journal_cv.notify_all();
                        continue;
                    }
                }
                let _ = shared.journal_cv.wait_for(&mut j, IDLE);
                continue;
            }
        };
        prepared_last = matches!(work, Work::Prepare(_));
        match work {
            Work::Prepare(job) => prepare(&shared, job),
            Work::Release(catch_up) => release_turn(&shared, &mut releasing, catch_up),
        }
    }
}

/// Runs `f`; a panic in it (a bug) stops the engine first (with `reason`), wakes whoever
/// waits on the journal (a commit waiting for the segment being prepared fails instead of
/// waiting for ever), then goes on in this thread.
fn stopping_on_panic<T>(shared: &Shared, reason: &str, f: impl FnOnce() -> T) -> T {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|payload| {
        shared.poison(&Error::invariant(reason));
        shared.journal_cv.notify_all();
        std::panic::resume_unwind(payload)
    })
}

fn prepare(shared: &Shared, job: Job) {
    let result = stopping_on_panic(
        shared,
        "the journal's segment preparer panicked; open the engine again",
        || {
            let result = job.run_checked();
            #[cfg(test)]
            tests::AFTER_JOB.pass(&shared.root);
            result
        },
    );
    let mut j = shared.journal.lock();
    j.finish_preparation(result);
    shared.journal_cv.notify_all();
}

/// A turn of giving back trimmed segments (module `release`). A failed shrink or removal
/// stops the engine, as a failed removal in a checkpoint's trim did: the journal directory is
/// not what the engine left there. The file is let go (it holds no record past a durable
/// checkpoint; open removes it).
fn release_turn(shared: &Shared, releasing: &mut Releasing, catch_up: bool) {
    let result = stopping_on_panic(
        shared,
        "the journal thread panicked giving back a segment; open the engine again",
        || releasing.turn(shared, catch_up),
    );
    if let Err(e) = result {
        releasing.abandon();
        shared.poison(&e);
        shared.journal_cv.notify_all();
    }
}

impl Job {
    /// [`Job::run`], keeping what is needed to undo the reservation when it fails: the spare
    /// it took, if it is still there under its own name.
    pub(crate) fn run_checked(self) -> std::result::Result<Prepared, (Error, Option<PathBuf>)> {
        let spare = self.spare.clone();
        self.run().map_err(|e| (e, spare.filter(|p| p.exists())))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::path::Path;
    use std::time::{Duration, Instant};

    use crate::engine::pauses::Pauses;

    /// The point after the preparer's job made its segment and before the journal takes it
    /// (the window in which no one else may make that file).
    pub(super) static AFTER_JOB: Pauses = Pauses::new();

    /// Makes the preparer of the engine at `root` run `f` after its next job (once).
    pub(crate) fn pause_next_preparation(root: &Path, f: impl FnOnce() + Send + 'static) {
        AFTER_JOB.add(root, f);
    }

    /// The journal directory's files by kind: spares, segments (live or prepared), and the
    /// rest (trimmed segments being given back, `.jnl.tmp`).
    fn listed(journal: &Path) -> (usize, usize, usize) {
        let mut out = (0, 0, 0);
        for ent in std::fs::read_dir(journal).unwrap() {
            let name = ent.unwrap().file_name().to_string_lossy().into_owned();
            if super::is_spare_name(&name) {
                out.0 += 1;
            } else if crate::engine::journal::parse_segment_name(&name).is_some() {
                out.1 += 1;
            } else {
                out.2 += 1;
            }
        }
        out
    }

    /// Waits up to 20 s (a bound for liveness, not a timing) for `journal`'s listing to
    /// satisfy `ok`, and returns the last listing.
    fn wait_for_listing(
        journal: &Path,
        ok: impl Fn((usize, usize, usize)) -> bool,
    ) -> (usize, usize, usize) {
        let since = Instant::now();
        loop {
            let now = listed(journal);
            if ok(now) || since.elapsed() > Duration::from_secs(20) {
                return now;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Group 1's entries `from..=to`, 10 KiB each (`ten_kib`), saved one by one.
    fn save_ten_kib(g: &crate::GroupStorage, from: u64, to: u64) {
        for i in from..=to {
            let mut en = raft::prelude::Entry::default();
            (en.index, en.term, en.data) = (i, 1, crate::engine::tests::ten_kib(i));
            let mut hs = raft::prelude::HardState::default();
            (hs.term, hs.commit) = (1, i);
            g.save(&hs, &[en], &Default::default()).unwrap();
        }
    }

    /// A journal caught resting, in each state a kill or a power loss can leave: its spares
    /// and prepared segment renamed to be given back, whole or shrunk, or with the renames
    /// lost (a spare under its own name, the prepared segment with its zero header). Open
    /// reads the journal as the checkpoint left it, removes what the rest left, and the group
    /// reads back as written and takes new entries.
    #[test]
    fn a_journal_caught_resting_never_troubles_open() {
        use crate::engine::tests::{copy_root, open_reading_forty};
        use crate::engine::{checkpoint, release, Engine, EngineOptions, JOURNAL_DIR};
        use raft::Storage;
        use std::sync::mpsc::channel;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let caught = dir.path().join("caught");
        let journal = root.join(JOURNAL_DIR);
        let opts = EngineOptions {
            journal_segment_bytes: 64 << 10,
            checkpoint_bytes: 64 << 10,
            ..Default::default()
        };
        let e = Engine::open_with(&root, opts.clone()).unwrap();
        checkpoint::stop(&e.shared);
        e.shared.journal.lock().set_rest_after(Duration::MAX);
        let g = e.create_group(1, 1).unwrap();
        save_ten_kib(&g, 1, 40);
        checkpoint::run(&e.shared, false).unwrap();
        let kept = |(s, n, o): (usize, usize, usize)| s >= 1 && n == 2 && o == 0;
        let now = wait_for_listing(&journal, kept);
        assert!(
            kept(now),
            "a spare, the live and the prepared segment: {now:?}"
        );
        let before: Vec<String> = std::fs::read_dir(&journal)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        let (tx, rx) = channel();
        let (from, to) = (root.clone(), caught.clone());
        release::tests::BEFORE_TURN.add(&root, move || {
            copy_root(&from, &to);
            let _ = tx.send(());
        });
        e.shared.journal.lock().set_rest_after(Duration::ZERO);
        rx.recv_timeout(Duration::from_secs(60))
            .expect("the journal never rested");
        e.close().unwrap();
        let renamed: Vec<String> = std::fs::read_dir(caught.join(JOURNAL_DIR))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".jnl.tmp"))
            .collect();
        assert_eq!(
            renamed.len(),
            now.0 + 1,
            "the spares and the prepared segment"
        );
        for (i, (len, rename_lost)) in [(None, false), (Some(4096), false), (None, true)]
            .into_iter()
            .enumerate()
        {
            let at = dir.path().join(format!("variant{i}"));
            copy_root(&caught, &at);
            let journal = at.join(JOURNAL_DIR);
            let mut left = Vec::new();
            for name in &renamed {
                let mut p = journal.join(name);
                if let Some(len) = len {
                    let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
                    f.set_len(len).unwrap();
                }
                if rename_lost {
                    // Back under the name it had before the rest.
                    let seg = name.trim_end_matches(".tmp");
                    let spare = format!("spare-{seg}");
                    let back = journal.join(if before.contains(&spare) { &spare } else { seg });
                    std::fs::rename(&p, &back).unwrap();
                    p = back;
                }
                left.push(p);
            }
            let what = format!("variant {i}: length {len:?}, renames lost {rename_lost}");
            let (e, g) = open_reading_forty(&at, &opts, &what);
            if !rename_lost {
                for p in &left {
                    assert!(!p.exists(), "{what}: {} left", p.display());
                }
            }
            save_ten_kib(&g, 41, 60);
            e.close().unwrap();
            let e = Engine::open_with(&at, opts.clone()).unwrap();
            assert_eq!(e.group(1).unwrap().last_index().unwrap(), 60, "{what}");
            e.close().unwrap();
        }
    }

    /// An idle engine's journal rests: once nothing was appended for a while and a checkpoint
    /// covers every record, its spares and its prepared next segment are given back, and only
    /// the segment being written stays; not while a record waits for a checkpoint. The next
    /// commits end the rest: segments are prepared and spares kept again, and every entry
    /// reads back after a reopen. Before, an idle engine of 1,024 groups kept 160 MiB of
    /// journal, a segment's worth of it in use (docs/PERFORMANCE.md, "Disk while open, at
    /// rest").
    #[test]
    fn an_idle_journal_gives_back_its_spares_and_its_prepared_segment() {
        use crate::engine::{checkpoint, Engine, EngineOptions, JOURNAL_DIR};
        use raft::Storage;
        let dir = tempfile::tempdir().unwrap();
        let journal = dir.path().join(JOURNAL_DIR);
        // Two spares at most (module `recovery`); checkpoints run by hand.
        let opts = EngineOptions {
            journal_segment_bytes: 64 << 10,
            checkpoint_bytes: 64 << 10,
            ..Default::default()
        };
        let e = Engine::open_with(dir.path(), opts.clone()).unwrap();
        checkpoint::stop(&e.shared);
        e.shared.journal.lock().set_rest_after(Duration::MAX);
        let g = e.create_group(1, 1).unwrap();
        save_ten_kib(&g, 1, 40);
        checkpoint::run(&e.shared, false).unwrap();
        // The trim kept two spares; the next segment is prepared from one of them if it was
        // not prepared before the trim.
        let kept = |(s, n, _): (usize, usize, usize)| s >= 1 && n == 2;
        let now = wait_for_listing(&journal, kept);
        assert!(
            kept(now),
            "a spare, the live and the prepared segment: {now:?}"
        );

        // A record after the checkpoint: no rest, however long the journal waits.
        save_ten_kib(&g, 41, 41);
        e.shared.journal.lock().set_rest_after(Duration::ZERO);
        std::thread::sleep(Duration::from_secs(1));
        assert!(
            !e.shared.journal.lock().is_resting(),
            "rested with a record not checkpointed"
        );
        // Its rotation may have taken the prepared segment, and the next one the spare; what
        // the checkpoint trimmed and did not keep is given back meanwhile.
        let (spares, segments, others) = wait_for_listing(&journal, |l| l.2 == 0);
        assert!(
            spares + segments >= 2 && others == 0,
            "{:?}",
            (spares, segments, others)
        );

        // Covered: the spares and the prepared segment go.
        checkpoint::run(&e.shared, false).unwrap();
        let rested = wait_for_listing(&journal, |l| l == (0, 1, 0));
        assert_eq!(rested, (0, 1, 0), "spares, segments, others at rest");
        assert!(e.shared.journal.lock().is_resting());

        // The next commits end the rest: a segment is prepared, trimmed ones kept as spares.
        e.shared.journal.lock().set_rest_after(Duration::MAX);
        save_ten_kib(&g, 42, 80);
        assert!(!e.shared.journal.lock().is_resting());
        checkpoint::run(&e.shared, false).unwrap();
        let now = wait_for_listing(&journal, kept);
        assert!(kept(now), "after the rest ended: {now:?}");

        // Closed while it rests: nothing left but the segment in use.
        e.shared.journal.lock().set_rest_after(Duration::ZERO);
        let rested = wait_for_listing(&journal, |l| l == (0, 1, 0));
        assert_eq!(rested, (0, 1, 0), "at rest again");
        e.close().unwrap();
        assert_eq!(listed(&journal), (0, 1, 0), "after a close at rest");

        let e = Engine::open_with(dir.path(), opts).unwrap();
        let g = e.group(1).unwrap();
        let read = g.entries(1, 81, u64::MAX, raft::GetEntriesContext::empty(false));
        let read = read.unwrap();
        assert_eq!(read.len(), 80);
        for en in &read {
            assert_eq!(
                (en.term, &en.data),
                (1, &crate::engine::tests::ten_kib(en.index))
            );
        }
        assert_eq!(g.initial_state().unwrap().hard_state.commit, 80);
    }
}
