//! Checkpoints: making the groups' files durable so that the journal can be trimmed.
//!
//! A checkpoint, with commits going on throughout: (1) captures, group by group, the meta
//! record of each changed group whose files hold its whole state (its tail written first, then
//! the group held for the capture), with the journal position `S_g` it reflects (the group's
//! last applied record); a group a commit added to meanwhile is left for the next checkpoint,
//! and its durable meta page's position bounds this one; the checkpoint `S` is the engine's
//! applied position when the capture began, lowered to those bounds; the journal is flushed;
//! (2) starts the write-back of the captured groups' files a piece after each commit, then
//! flushes the file system (`syncfs`: every group's files in one device flush); (3) stores
//! the captured meta records (a group that made itself durable since, for a snapshot or a
//! removal of files, is left alone: its page is newer); (4) flushes the file system again; (5)
//! records `S` as the checkpoint in `engine.meta`, durably (waiting out a group's removal under
//! way: a group the capture no longer saw is gone for good, its directory renamed away, before
//! a checkpoint passes its records: `group::remove`; and never once the engine is stopped, as a
//! removal whose rename failed stops it); (6) trims the journal up to `S`, and gives back itself
//! what waits to be given back past its bound (module `release`).
//! A crash anywhere leaves every group either at its old meta page or at its new one, with the
//! journal holding every record after it that names the group.
//!
//! Between checkpoints the same thread is the groups' writer: it moves the tails (entries
//! journaled but not yet in a group's files) into the files, a group at a time once its tail
//! holds its own figure of 16-32 KiB ([`Pass::Due`]), so that each group's file takes few,
//! larger writes; a checkpoint writes every tail ([`Pass::All`]). While commits wait for room
//! in the journal, a second thread joins these passes over the groups (module `joined`).
//!
//! Owns: the background thread that runs checkpoints (when the journal has grown by
//! `checkpoint_bytes`, and every few seconds while anything changed) and writes the tails, and
//! the final checkpoint of a clean close. Must never: record a checkpoint before every meta
//! page it covers is durable, or let its thread outlive the engine.

use std::fs::File;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::commit;
use super::group::{Group, JournalPos};
use super::joined;
use super::journal::Journal;
use super::{EngineOptions, Shared};
use crate::error::{Error, Result};
use crate::proto::MetaRecord;
use crate::store::snap;

/// How often a checkpoint runs while anything changed (more often when the journal grows by
/// `checkpoint_bytes`).
const PERIOD: Duration = Duration::from_secs(5);
/// How often the tails are written into the groups' files.
const WRITE_PERIOD: Duration = Duration::from_millis(20);
/// Payload bytes of a group's tail written per hold of its lock.
const WRITE_CHUNK: u64 = 256 << 10;
/// The writer makes a pass once a group's tail reached its figure ([`GROUP_WRITE_BYTES`]) and
/// the tails hold this many payload bytes in all (every checkpoint writes them all). Small, so
/// that the writes and their write-back reach the disk a little at a time beside the journal's
/// flushes, not in bursts (docs/PERFORMANCE.md, "The writer's threshold").
pub(crate) const WRITE_THRESHOLD: u64 = 64 << 10;

/// A group's tail is written once it holds this many payload bytes, up to twice as many: a
/// figure of its own ([`group_write_bytes`]), so that groups fed alike come due in different
/// rounds. Few, larger writes per file instead of two small ones per group and round
/// (docs/PERFORMANCE.md, "Fewer, larger writes into the groups' files").
const GROUP_WRITE_BYTES: u64 = 16 << 10;

/// Payload bytes all the tails may hold before a pass writes tails whatever their size, until
/// they hold half of it: a bound on what thousands of groups, each short of its figure, keep in
/// memory (payloads only; each entry's own struct, held twice, comes on top).
const TAILS_HELD_MAX: u64 = 64 << 20;

/// The least write-back a checkpoint starts between two commits' flushes (a quarter MiB of
/// another file's write-back costs a flush on this disk almost nothing: docs/PERFORMANCE.md).
const MIN_PACED_BYTES: u64 = 256 << 10;

/// Times a checkpoint writes a group's tail and tries to capture it before leaving it to the
/// next checkpoint (commits keep adding to it).
const CAPTURE_TRIES: usize = 3;

/// Checkpoints' worth of journal records (`checkpoint_bytes` each) after the last trim at which
/// a checkpoint is due however little was appended since, and commits wait for it to trim.
const JOURNAL_HELD_CHECKPOINTS: u64 = 16;

/// The journal holds [`JOURNAL_HELD_CHECKPOINTS`] checkpoints' worth of records after its last
/// trim: a checkpoint is due, and commits wait for it (module `commit`).
pub(crate) fn journal_full(opts: &EngineOptions, journal: &Journal) -> bool {
    journal.held() >= journal_bound(opts)
}

/// Bytes of records the journal holds after its last trim at which commits wait: at least
/// one, so that a journal holding no record is never full. With `checkpoint_bytes` 0 (a
/// checkpoint after every write) a bound of 0 had the journal full whatever a trim left, and
/// every commit waited for room no checkpoint could make.
fn journal_bound(opts: &EngineOptions) -> u64 {
    opts.checkpoint_bytes
        .saturating_mul(JOURNAL_HELD_CHECKPOINTS)
        .max(1)
}

/// The runs the journal counts what it holds in (module `journal::held`): a 64th of the bound
/// at which commits wait ([`journal_full`]), at most a MiB, so that what the count may exceed
/// the records by (less than a run and a record) stays small beside that bound.
pub(crate) fn held_run_bytes(opts: &EngineOptions) -> u64 {
    (journal_bound(opts) / 64).min(super::journal::held::MAX_RUN_BYTES)
}

/// The background checkpoint thread and how to wake or stop it.
#[derive(Default)]
pub(crate) struct Checkpointer {
    signal: Mutex<Signal>,
    cv: Condvar,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// Groups whose snapshot files a checkpoint left untidied (the journal was full), with the
    /// snapshot to keep: the next checkpoint tidies them.
    untidied: Mutex<Vec<Untidied>>,
    /// Commits waiting for room in the journal: a pass's second thread works while any does
    /// (module `joined`).
    room_waits: AtomicUsize,
    /// Items the second thread of a pass has taken, over the engine's life.
    #[cfg(test)]
    joined_items: std::sync::atomic::AtomicU64,
    /// A pass's second thread is at work: one at a time in the engine.
    helping: AtomicBool,
}

/// A group whose snapshot files are to be tidied, and the snapshot (term, index) to keep.
type Untidied = (Arc<Group>, (u64, u64));

#[derive(Default)]
struct Signal {
    nudged: bool,
    stop: bool,
}

impl Checkpointer {
    /// Asks for a checkpoint soon (the journal has grown past `checkpoint_bytes`).
    pub(crate) fn nudge(&self) {
        self.signal.lock().nudged = true;
        self.cv.notify_one();
    }

    /// Commits waiting for room in the journal now.
    pub(crate) fn room_waits(&self) -> usize {
        self.room_waits.load(Ordering::Acquire)
    }

    /// Counts a commit as waiting for room in the journal until the returned value is dropped.
    pub(crate) fn waiting_for_room(&self) -> RoomWait<'_> {
        self.room_waits.fetch_add(1, Ordering::AcqRel);
        RoomWait(self)
    }

    /// Claims the engine's one second thread for a pass: false if a pass has it.
    pub(crate) fn claim_helper(&self) -> bool {
        self.helping
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Gives the second thread back, after it took `_took` items.
    pub(crate) fn helper_left(&self, _took: u64) {
        #[cfg(test)]
        self.joined_items.fetch_add(_took, Ordering::Relaxed);
        self.helping.store(false, Ordering::Release);
    }

    /// Items the second thread of a pass has taken so far.
    #[cfg(test)]
    pub(crate) fn joined_items_so_far(&self) -> u64 {
        self.joined_items.load(Ordering::Relaxed)
    }
}

/// A commit waiting for room in the journal ([`Checkpointer::waiting_for_room`]).
pub(crate) struct RoomWait<'a>(&'a Checkpointer);

impl Drop for RoomWait<'_> {
    fn drop(&mut self) {
        self.0.room_waits.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Starts the background thread (it holds the engine only weakly, and only while it runs a
/// checkpoint).
pub(crate) fn start(shared: &Arc<Shared>) -> Result<()> {
    let weak: Weak<Shared> = Arc::downgrade(shared);
    let handle = std::thread::Builder::new()
        .name("raftwal-checkpoint".to_string())
        .spawn(move || background(weak))
        .map_err(|e| Error::io("start the checkpoint thread for", &shared.root, e))?;
    *shared.checkpointer.thread.lock() = Some(handle);
    Ok(())
}

/// Stops the background thread and waits for it.
pub(crate) fn stop(shared: &Shared) {
    shared.checkpointer.signal.lock().stop = true;
    shared.checkpointer.cv.notify_all();
    if let Some(h) = shared.checkpointer.thread.lock().take() {
        let _ = h.join();
    }
}

fn background(weak: Weak<Shared>) {
    let mut last = Instant::now();
    loop {
        let nudged = {
            let Some(shared) = weak.upgrade() else { return };
            let c = &shared.checkpointer;
            let mut s = c.signal.lock();
            if !s.stop && !s.nudged {
                let cv = &c.cv;
                let _ = cv.wait_for(&mut s, WRITE_PERIOD);
            }
            if s.stop {
                return;
            }
            std::mem::take(&mut s.nudged)
        };
        let Some(shared) = weak.upgrade() else { return };
        if shared.check_usable().is_err() {
            continue;
        }
        let (appended, full) = {
            let j = shared.journal.lock();
            (j.appended(), journal_full(&shared.opts, &j))
        };
        let checkpoint = full
            || checkpoint_due(
                appended,
                shared.tail_bytes.load(Ordering::Acquire),
                last.elapsed(),
                shared.opts.checkpoint_bytes,
            );
        let write = checkpoint || nudged || writer_due(&shared);
        if checkpoint {
            last = Instant::now();
        }
        // A panic here (a bug) must not end the only thread that trims the journal with the
        // engine still running: commits would wait for room for ever once the journal is full.
        // The engine stops (its files may be part way), and the panic goes on in this thread.
        let done = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            if checkpoint {
                run(&shared, false)
            } else if write {
                write_tails(&shared, Pass::Due)
            } else {
                Ok(())
            }
        }))
        .unwrap_or_else(|payload| {
            shared.poison(&Error::invariant(
                "a checkpoint panicked; open the engine again",
            ));
            std::panic::resume_unwind(payload)
        });
        if let Err(e) = done {
            // The groups' files are in an unknown state after a failed write or flush: stop
            // the engine (opening it again replays the journal).
            shared.poison(&e);
            return;
        }
    }
}

/// Which tails a pass of the writer writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Pass {
    /// Every tail (a checkpoint).
    All,
    /// The tails that reached their group's figure ([`group_write_bytes`]); once the tails
    /// hold [`TAILS_HELD_MAX`] in all, any tail, until they hold half of it.
    Due,
}

/// The payload bytes at which group `id`'s tail is written in a [`Pass::Due`]: from
/// [`GROUP_WRITE_BYTES`] up to twice that, spread over the ids by a fixed mix of their bits
/// (neighbouring ids get unrelated figures).
pub(crate) fn group_write_bytes(id: u64) -> u64 {
    // The finalizer of SplitMix64: every bit of the id moves about half the bits of the result.
    let mut z = id.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    GROUP_WRITE_BYTES + z % GROUP_WRITE_BYTES
}

/// Whether a checkpoint is due: the journal grew by `checkpoint_bytes` since the last one, or
/// `PERIOD` passed with anything in the journal or the tails since (after a reopen the tails
/// hold what replay put there, with nothing appended yet).
fn checkpoint_due(appended: u64, tail_bytes: u64, since_last: Duration, every: u64) -> bool {
    (appended > 0 && appended >= every)
        || (since_last >= PERIOD && (appended > 0 || tail_bytes > 0))
}

/// Whether the writer has a [`Pass::Due`] to make: a group's tail reached its figure since the
/// last pass began and the tails hold [`WRITE_THRESHOLD`] in all, or they hold
/// [`TAILS_HELD_MAX`].
pub(crate) fn writer_due(shared: &Shared) -> bool {
    let held = shared.tail_bytes.load(Ordering::Acquire);
    held >= TAILS_HELD_MAX || (held >= WRITE_THRESHOLD && shared.tails_due.load(Ordering::Acquire))
}

/// Writes the tails `pass` selects into their groups' files (unflushed); the groups whose tail
/// waits stay listed for the next pass.
pub(crate) fn write_tails(shared: &Shared, pass: Pass) -> Result<()> {
    write_tails_held(shared, pass, TAILS_HELD_MAX)
}

/// [`write_tails`] with the bound of a [`Pass::Due`] at `held_max` payload bytes.
fn write_tails_held(shared: &Shared, pass: Pass, held_max: u64) -> Result<()> {
    // Groups that reach their figure from now on make the next pass due.
    shared.tails_due.store(false, Ordering::Release);
    let all = pass == Pass::All;
    // Past the bound, tails are written whatever their size, in the list's order, until the
    // tails hold half the bound: not all at once.
    let bounded = AtomicBool::new(!all && shared.tail_bytes.load(Ordering::Acquire) >= held_max);
    let mut ids = std::mem::take(&mut *shared.unwritten.lock());
    // Newest first: a commit applies its parts in the order the groups came (oldest first),
    // so the commit and the writer meet on one group at most instead of following each
    // other from group to group.
    ids.reverse();
    // The groups left waiting, newest first as the pass met them.
    let waiting = joined::each(shared, &ids, |&id| {
        let Some(g) = shared.groups.read().get(&id).cloned() else {
            return Ok(None);
        };
        if bounded.load(Ordering::Relaxed)
            && shared.tail_bytes.load(Ordering::Acquire) < held_max / 2
        {
            bounded.store(false, Ordering::Relaxed);
        }
        match g.tail_held() {
            // Written meanwhile (a snapshot of the group), or the group closed: the next
            // commit to it lists it again.
            None => return Ok(None),
            Some(bytes)
                if !all && !bounded.load(Ordering::Relaxed) && bytes < group_write_bytes(id) =>
            {
                return Ok(Some(id));
            }
            Some(_) => {}
        }
        // A bounded amount at a time: the group's log is held only to take from its tail.
        loop {
            match g.write_tail_op(shared, WRITE_CHUNK) {
                Ok(true) => {}
                Ok(false) => break,
                // Removed since it was looked up (removal takes the pipeline, this does not):
                // its tail and its files are gone with it, nothing was half written.
                Err(Error::Closed { .. }) if g.log.read().is_none() => break,
                Err(e) => return Err(e),
            }
        }
        g.settle_fds(shared, true);
        Ok(None)
    })?;
    if !waiting.is_empty() {
        relist(&mut shared.unwritten.lock(), waiting);
    }
    Ok(())
}

/// Puts the groups a pass left waiting (`waiting`, newest first, as the pass met them) back in
/// front of the groups `listed` meanwhile, oldest first as they were, each once: a group whose
/// tail was emptied meanwhile (by a snapshot) may be listed again already.
fn relist(listed: &mut Vec<u64>, mut waiting: Vec<u64>) {
    let again: std::collections::HashSet<u64> = listed.iter().copied().collect();
    waiting.retain(|id| !again.contains(id));
    waiting.reverse();
    waiting.append(listed);
    *listed = waiting;
}

/// Runs a checkpoint. `closing`: the caller holds the pipeline (close), and every group is
/// captured.
pub(crate) fn run(shared: &Shared, closing: bool) -> Result<()> {
    // The tails, written in bounded pieces (commits wait for no more than one piece).
    write_tails(shared, Pass::All)?;
    // 1. Capture, group by group, with commits going on: each group's meta record as its
    //    files hold it, and the journal position that record reflects.
    #[cfg(test)]
    tests::BEFORE_CAPTURE.pass(&shared.root);
    let (seq, captured) = capture(shared)?;
    // Paced by the commits' flushes: without `sync_writes` there are none to pace it by.
    if !closing && shared.opts.sync_writes {
        start_writeback_paced(shared, &captured)?;
    }
    syncfs(shared)?;
    // 3. The meta pages. Each relies on the files it was captured with, all still there: a
    //    write that would have removed one stored a durable page of its own first, newer than
    //    the captured one, which is then passed by (`GroupFiles::captured_files`).
    joined::each(shared, &captured, |(g, record, files)| {
        let mut fg = g.files.write();
        let Some(f) = fg.as_mut() else {
            return Ok(None::<()>);
        };
        f.captured_files = None;
        let durable = JournalPos {
            seq: f.durable_seq,
            parts: f.durable_parts,
        };
        if durable < record_pos(record) {
            f.store(record)?;
            f.durable_files = *files;
        }
        Ok(None)
    })?;
    // 4. The meta pages, durable.
    if !captured.is_empty() {
        syncfs(shared)?;
    }
    {
        let mut root = shared.root_meta.lock();
        // Not on a stopped engine, checked under the lock a removal holds until its rename is
        // durable or has failed: a removal whose rename failed stops the engine with its
        // group out of the engine and its directory in place, and the records after that
        // group's page must stay in the journal (so must those of a group whose apply failed
        // part way). The check before this checkpoint began does not cover what stopped the
        // engine while it ran.
        shared.check_usable()?;
        let (file, record) = &mut *root;
        if record.checkpoint_seq < seq || closing {
            record.checkpoint_seq = record.checkpoint_seq.max(seq);
            if closing {
                record.open = false;
            }
            file.store(record)?;
            file.flush()?;
        }
    }
    // 6. The journal behind it (a commit waiting for room goes on), and snapshot files no meta
    //    page names any more.
    shared.journal.lock().trim(seq)?;
    shared.journal_cv.notify_all();
    super::release::give_back_past_bound(shared)?;
    // Only groups whose snapshot changed since their files were last tidied (and those an
    // earlier checkpoint left); with the pipeline held (once for all): a commit installing a
    // snapshot holds the group's `snap_writer` from its checks until the file is written, and
    // hands the install back to wait outside the pipeline when it finds it taken (which must
    // then mean the application's writer, never this tidy).
    let mut to_tidy = std::mem::take(&mut *shared.checkpointer.untidied.lock());
    to_tidy.extend(captured.iter().filter_map(|(g, record, _)| {
        let s = record.snapshot.as_ref().filter(|s| s.data_len > 0)?;
        (*g.tidied.lock() != (s.term, s.index)).then(|| (Arc::clone(g), (s.term, s.index)))
    }));
    // Each group once, with its newest snapshot (captured after those left before): checkpoints
    // left untidied one after another, while the journal stays full, must not pile up entries.
    to_tidy.reverse();
    let mut seen = std::collections::HashSet::new();
    to_tidy.retain(|(g, _)| seen.insert(g.id));
    if !to_tidy.is_empty() {
        #[cfg(test)]
        tests::BEFORE_TIDY.pass(&shared.root);
        // Not while the journal is full: a commit may hold the lead waiting for room, which
        // only the next checkpoint of this thread makes (the trim above may not have made
        // enough: commits went on during the capture). The files wait for that checkpoint.
        let lead = if closing {
            None
        } else {
            let full = || journal_full(&shared.opts, &shared.journal.lock());
            match commit::lead_unless(shared, full) {
                Some(lead) => Some(lead),
                None => {
                    shared.checkpointer.untidied.lock().extend(to_tidy);
                    return Ok(());
                }
            }
        };
        for (g, (term, index)) in to_tidy {
            // Not while a snapshot of the group is being written (its file is not named yet).
            let Some(_writer) = g.snap_writer.try_lock() else {
                continue;
            };
            // Only while the group is open, and keeping a newer snapshot installed since.
            let current = g
                .with_log(|log| Ok(log.meta.snapshot.clone()))
                .ok()
                .flatten()
                .map(|c| snap::file_name(c.term, c.index));
            if current.as_deref() == Some(snap::file_name(term, index).as_str()) {
                snap::tidy(&g.dir, current.as_deref(), false)?;
                *g.tidied.lock() = (term, index);
            }
        }
        drop(lead);
    }
    Ok(())
}

/// What a checkpoint captured: per group, the meta record to store and the files it relies on.
type Captured = Vec<(Arc<Group>, MetaRecord, (u64, u64))>;

/// What the capture made of one changed group. Moved into the captured list at once, never
/// held: the small variant's waste costs nothing a box per group would not cost more.
#[allow(clippy::large_enum_variant)]
enum Caught {
    /// Its record, to store.
    Taken((Arc<Group>, MetaRecord, (u64, u64))),
    /// Left for the next checkpoint (commits kept adding to it): the records after this
    /// position (its durable page's, or the last checkpoint's, which covered it) must stay in
    /// the journal.
    Left(u64),
}

/// Captures every changed group's meta record, without holding the pipeline: the group's tail
/// is written, then, with the group held, a record of its state is taken if the files hold all
/// of it (else the group waits for the next checkpoint, still changed). Returns the checkpoint:
/// the journal position up to which every group's state is in its files (once durable) or in
/// a meta page already durable, and the records.
fn capture(shared: &Shared) -> Result<(u64, Captured)> {
    // Every record up to `seq` is applied; every record up to the last checkpoint that names a
    // group is in that group's files and durable meta page.
    let mut seq = shared.applied_seq.load(Ordering::Acquire);
    let last_checkpoint = shared.root_meta.lock().1.checkpoint_seq;
    let groups: Vec<Arc<Group>> = shared.groups.read().values().cloned().collect();
    let got = joined::each(shared, &groups, |g| {
        let dirty = g.with_log(|log| Ok(log.dirty)).unwrap_or(false);
        if !dirty {
            return Ok(None);
        }
        let mut got = Ok(Err(0));
        for _ in 0..CAPTURE_TRIES {
            if let Err(e) = g.write_tail(shared, true) {
                // Removed since it was looked up (removal takes the pipeline, this does not):
                // its tail and its files are gone with it, nothing was half written.
                if g.log.read().is_none() {
                    got = Err(e);
                    break;
                }
                return Err(e);
            }
            got = g.with_both(|b| {
                if !b.log.tail.is_empty() {
                    // A commit added to it since the tail was written.
                    return Ok(Err(b.files.durable_seq.max(last_checkpoint)));
                }
                let at = super::group::reflected_pos(shared, b.log);
                b.log.dirty = false;
                let files = b.files.wal.file_ids();
                b.files.captured_files = Some(files);
                Ok(Ok((
                    b.files.meta_record(&b.log.meta, at, g.incarnation),
                    files,
                )))
            });
            if !matches!(got, Ok(Err(_))) {
                break;
            }
        }
        Ok(match got {
            Ok(Ok((record, files))) => Some(Caught::Taken((Arc::clone(g), record, files))),
            Ok(Err(bound)) => Some(Caught::Left(bound)),
            // Closed or removed meanwhile: nothing of it to keep.
            Err(_) => None,
        })
    })?;
    let mut captured = Vec::with_capacity(got.len());
    for caught in got {
        match caught {
            Caught::Taken(c) => captured.push(c),
            Caught::Left(bound) => seq = seq.min(bound),
        }
    }
    // No group's meta page may be durable ahead of the journal.
    shared.journal.lock().sync()?;
    Ok((seq, captured))
}

/// Starts the write-back of what the captured groups' files hold and have not started, a
/// piece after each commit's journal flush, each about the size of that commit's record (at
/// least [`MIN_PACED_BYTES`]); the tails keep being written meanwhile. Left to the `syncfs`,
/// that write-back (about half a write-back step per file: 16-25 MiB at 128 groups) went to
/// the device in one burst, a `syncfs` of 14-24 ms beside which commits took 3-7 ms
/// (docs/PERFORMANCE.md, "The checkpoint's flush, paced"). With no commit within
/// `MAX_WAIT_NEXT` (an idle engine, commits waiting for room in the journal, or the engine
/// closing), the rest is started at once, on a second thread too while commits wait (module
/// `joined`: at 10,000 groups that start allocates their blocks, seconds of one core). Advice
/// only: the `syncfs` makes it all durable.
fn start_writeback_paced(shared: &Shared, captured: &Captured) -> Result<()> {
    let start = |g: &Group| {
        g.files
            .write()
            .as_mut()
            .map_or(0, |f| f.wal.start_writeback_now())
    };
    let mut piece = 0;
    let mut rest = captured.as_slice();
    shared.flushes.wait_out();
    while let Some(((g, _, _), after)) = rest.split_first() {
        if piece >= MIN_PACED_BYTES.max(shared.flushes.last_bytes()) {
            let paced = !shared.stopping() && shared.flushes.wait_next();
            piece = 0;
            if writer_due(shared) {
                write_tails(shared, Pass::Due)?;
            }
            if !paced {
                break;
            }
        }
        piece += start(g);
        rest = after;
    }
    joined::each(shared, rest, |(g, _, _)| {
        start(g);
        Ok(None::<()>)
    })?;
    Ok(())
}

/// The journal position a captured record reflects.
fn record_pos(record: &MetaRecord) -> JournalPos {
    record
        .engine
        .as_ref()
        .map_or(JournalPos::default(), JournalPos::of_page)
}

/// Flushes the file system holding the engine root: every group's files in one call. Through
/// the C library's `syncfs` symbol (rustix's `use-libc` backend) rather than a raw system call,
/// so that a test binary defining `syncfs` sees this flush as it sees `fdatasync` and `fsync`
/// (tests/engine_power_loss.rs).
fn syncfs(shared: &Shared) -> Result<()> {
    let dir = File::open(&shared.root).map_err(|e| Error::io("open", &shared.root, e))?;
    rustix::fs::syncfs(&dir).map_err(|e| Error::io("syncfs", &shared.root, e.into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::pauses::Pauses;

    /// A checkpoint, its journal trimmed, before it takes the lead to tidy snapshot files.
    pub(super) static BEFORE_TIDY: Pauses = Pauses::new();

    /// A checkpoint, the tails written, before its capture.
    pub(super) static BEFORE_CAPTURE: Pauses = Pauses::new();
    use crate::engine::{Engine, EngineOptions, WriteBatch};
    use raft::prelude::{Entry, HardState, Snapshot};
    use raft::{GetEntriesContext, Storage};

    fn ctx() -> GetEntriesContext {
        GetEntriesContext::empty(false)
    }

    fn entries(lo: u64, hi: u64, size: usize) -> Vec<Entry> {
        (lo..hi)
            .map(|i| {
                let mut e = Entry::default();
                e.index = i;
                e.term = 1;
                e.data = vec![i as u8; size].into();
                e
            })
            .collect()
    }

    fn hs(commit: u64) -> HardState {
        let mut h = HardState::default();
        h.term = 1;
        h.commit = commit;
        h
    }

    /// An engine whose background writer is stopped: the test runs the passes itself.
    fn engine_by_hand(dir: &std::path::Path) -> Engine {
        let opts = EngineOptions {
            checkpoint_bytes: 1 << 40,
            ..EngineOptions::default()
        };
        let engine = Engine::open_with(dir, opts).expect("open");
        stop(&engine.shared);
        engine
    }

    /// Groups 1 to 8, each holding one entry of 10,000 bytes in its tail: 80,000 bytes in all
    /// (past `WRITE_THRESHOLD`), each short of its figure.
    fn short_of_their_figures(engine: &Engine) {
        let mut b = WriteBatch::new();
        for id in 1..=8 {
            engine.create_group(id, 1).expect("group");
            b.save(id, &hs(1), &entries(1, 2, 10_000), &Snapshot::default());
        }
        engine.write(&mut b).expect("write");
    }

    #[test]
    fn each_group_has_its_own_figure_between_one_and_two_steps() {
        let figures: Vec<u64> = (1..=1024).map(group_write_bytes).collect();
        assert!(figures
            .iter()
            .all(|&f| (GROUP_WRITE_BYTES..2 * GROUP_WRITE_BYTES).contains(&f)));
        let mut distinct = figures.clone();
        distinct.sort_unstable();
        distinct.dedup();
        // 1,024 draws from 16,384 values: about 32 collide.
        assert!(distinct.len() > 950, "{} distinct figures", distinct.len());
        // Spread over the range: the mean is near its middle, and the 16 groups of a small
        // engine do not all reach theirs in the same round.
        let mean = figures.iter().sum::<u64>() / figures.len() as u64;
        let middle = GROUP_WRITE_BYTES * 3 / 2;
        assert!(
            mean.abs_diff(middle) < GROUP_WRITE_BYTES / 10,
            "mean {mean}"
        );
        let rounds: std::collections::BTreeSet<u64> =
            (1..=16).map(|id| group_write_bytes(id) / 4096).collect();
        assert!(
            rounds.len() >= 3,
            "16 groups reach their figure in {rounds:?} rounds"
        );
    }

    /// The writer takes a tail's operations under the group's lock, writes them into the files
    /// without it, then notes them written. In between, the tail has no operation left but the
    /// files do not hold its entries yet: reads must still answer from the tail (seen failing:
    /// `term` answered from the files' old entries, the engine model's random sequences
    /// caught it once tails stayed longer).
    #[test]
    fn reads_between_taking_a_tail_and_writing_it_answer_from_the_tail() {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = engine_by_hand(dir.path());
        let shared = &engine.shared;
        let g = engine.create_group(1, 1).expect("group 1");
        let mut b = WriteBatch::new();
        b.save(1, &hs(3), &entries(1, 11, 64), &Snapshot::default());
        engine.write(&mut b).expect("write");
        write_tails(shared, Pass::All).expect("into the files");
        // The files' terms known (built by the first lookup), as in a running node.
        assert_eq!(g.term(7).expect("term"), 1);
        // An overwrite from index 5 at term 2, journaled, in the tail.
        let new: Vec<Entry> = entries(5, 9, 32)
            .into_iter()
            .map(|mut e| {
                e.term = 2;
                e
            })
            .collect();
        let mut h = hs(3);
        h.term = 2;
        let mut b = WriteBatch::new();
        b.save(1, &h, &new, &Snapshot::default());
        engine.write(&mut b).expect("overwrite");
        // The writer's first step: the operation taken (not yet in the files).
        let group = shared.groups.read()[&1].clone();
        let taken = group
            .log
            .write()
            .as_mut()
            .and_then(|log| log.tail.pop(u64::MAX))
            .expect("an operation to take");
        assert_eq!(taken.entries, new);
        assert_eq!(g.last_index().expect("last"), 8);
        for i in 5..=8 {
            assert_eq!(g.term(i).expect("term"), 2, "term({i})");
        }
        assert_eq!(g.term(4).expect("term"), 1);
        let mut want = entries(1, 5, 64);
        want.extend(new.iter().cloned());
        assert_eq!(g.entries(1, 9, None, ctx()).expect("entries"), want);
        assert_eq!(g.entries(6, 9, None, ctx()).expect("entries"), want[5..]);
    }

    /// Copies a root as a kill leaves it (the lock file aside).
    fn kill_image(from: &std::path::Path, to: &std::path::Path) {
        std::fs::create_dir_all(to).expect("image dir");
        for ent in std::fs::read_dir(from).expect("list") {
            let ent = ent.expect("entry");
            let target = to.join(ent.file_name());
            if ent.file_type().expect("type").is_dir() {
                kill_image(&ent.path(), &target);
            } else if ent.file_name() != "LOCK" {
                std::fs::copy(ent.path(), &target).expect("copy");
            }
        }
    }

    /// An overwrite written into a group's files (its slots past it cleared; no meta page
    /// stored since, so the page still names the old end), entries after it in the tail, then
    /// `truncate_entries_until` past them, then a kill. Open replays the truncation: the files'
    /// slots it checks and seals again are those below the tail's start, not the cleared ones
    /// the tail replaces (open once refused this root: "slot 60 holds index 0 where index 61
    /// belongs"; found by a review). The read-only tools agree.
    #[test]
    fn a_replayed_truncation_checks_no_slot_the_tail_replaces() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("root");
        {
            let e = Engine::open(&root).expect("open");
            e.create_group(1, 1).expect("group 1");
            let mut b = WriteBatch::new();
            b.save(1, &hs(49), &entries(1, 101, 64), &Snapshot::default());
            e.write(&mut b).expect("write");
            e.close().expect("close");
        }
        let engine = engine_by_hand(&root);
        let shared = &engine.shared;
        let g = engine.group(1).expect("group 1");
        let term2 = |lo, hi| -> Vec<Entry> {
            entries(lo, hi, 32)
                .into_iter()
                .map(|mut e| {
                    e.term = 2;
                    e
                })
                .collect()
        };
        let mut h = hs(49);
        h.term = 2;
        let mut b = WriteBatch::new();
        b.save(1, &h, &term2(50, 61), &Snapshot::default());
        engine.write(&mut b).expect("overwrite");
        write_tails(shared, Pass::All).expect("into the files");
        let mut b = WriteBatch::new();
        b.save(1, &h, &term2(61, 71), &Snapshot::default());
        engine.write(&mut b).expect("write");
        g.truncate_entries_until(71).expect("truncate");
        let image = dir.path().join("image");
        kill_image(&root, &image);

        let mut want = entries(1, 50, 64);
        want.extend(term2(50, 71));
        for e in want.iter_mut() {
            e.data = bytes::Bytes::new();
        }
        let tools = crate::inspect::engine::EngineInspector::open_once(&image, None, None)
            .expect("inspect")
            .summary()
            .open_error
            .clone();
        assert_eq!(tools, None, "the tools say open fails");
        let e = Engine::open(&image).expect("open after the kill");
        let g = e.group(1).expect("group 1");
        assert_eq!(g.entries(1, 71, None, ctx()).expect("entries"), want);
        assert_eq!(g.last_index().expect("last"), 70);
        e.close().expect("close");
    }

    /// An engine (background stopped) with groups 1 and 2: 20 entries written to group 1, 5 to
    /// group 2, no checkpoint yet (group 1's page is its creation page).
    fn two_groups_written(root: &std::path::Path) -> Engine {
        let engine = engine_by_hand(root);
        engine.create_group(1, 1).expect("group 1");
        engine.create_group(2, 1).expect("group 2");
        let mut b = WriteBatch::new();
        b.save(1, &hs(20), &entries(1, 21, 100), &Snapshot::default());
        b.save(2, &hs(5), &entries(1, 6, 100), &Snapshot::default());
        engine.write(&mut b).expect("write");
        engine
    }

    /// `e` holds group 1 whole (`what` names it) and group 2, as [`two_groups_written`] wrote.
    fn assert_written(e: &Engine, what: &str) {
        let g = e.group(1).unwrap_or_else(|| panic!("{what}: absent"));
        let ends = (
            g.first_index().expect("first"),
            g.last_index().expect("last"),
        );
        assert_eq!(ends, (1, 20), "{what}: lost entries");
        let got = g.entries(1, 21, None, ctx()).expect("entries");
        assert_eq!(got, entries(1, 21, 100), "{what}");
        assert_eq!(
            g.initial_state().expect("state").hard_state,
            hs(20),
            "{what}"
        );
        let g2 = e.group(2).expect("group 2");
        let got = g2.entries(1, 6, None, ctx()).expect("entries");
        assert_eq!(got, entries(1, 6, 100), "group 2");
    }

    /// A checkpoint while a group is being removed, then a kill before the removal's rename:
    /// the group's directory is still there, so its records after its meta page must still be
    /// in the journal. The checkpoint ran after the removal took the group out of the engine
    /// and did not see it: it recorded a position past the group's records and trimmed them,
    /// and open found the group with its log as its creation page left it (seen in
    /// tests/engine_sigkill.rs: twice in about 8,700 rounds, a `remove_group` in flight).
    #[test]
    fn a_checkpoint_during_a_removal_leaves_the_group_whole_or_absent_after_a_kill() {
        use std::sync::mpsc::channel;
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("root");
        let engine = two_groups_written(&root);
        // At the pause, a checkpoint runs on another thread, as the background thread would
        // (given two seconds: one that waits for the removal cannot end before the pause
        // does), then the root is copied as a kill there would leave it.
        let image = dir.path().join("image");
        let (shared, from, to) = (Arc::clone(&engine.shared), root.clone(), image.clone());
        let checkpoint = Arc::new(Mutex::new(None));
        let slot = Arc::clone(&checkpoint);
        crate::engine::group::lifecycle_tests::BEFORE_RENAME.add(&root, move || {
            let (done_tx, done_rx) = channel();
            *slot.lock() = Some(std::thread::spawn(move || {
                let r = run(&shared, false);
                let _ = done_tx.send(());
                r
            }));
            let _ = done_rx.recv_timeout(Duration::from_secs(2));
            kill_image(&from, &to);
        });
        engine.remove_group(1).expect("remove group 1");
        let ran = checkpoint.lock().take().expect("the pause ran");
        ran.join().expect("no panic").expect("the checkpoint");
        let e = Engine::open(&image).expect("open after the kill");
        if e.group(1).is_some() {
            assert_written(&e, "group 1, present after a kill during its removal");
        }
        e.close().expect("close");
        engine.close().expect("close");
    }

    /// A commit waits for journal room holding the pipeline's lead; the checkpoint meant to
    /// make it trims only up to what it captured, which can leave the journal still full
    /// (commits went on meanwhile), and then, to tidy a group's snapshot files, waited for the
    /// lead: neither ever went on (seen as a hang of tests/engine_sigkill.rs with checkpoints
    /// of 64 KiB: the commit in `commit`, the checkpoint in `lead`). The tidy now waits for
    /// the lead only while the journal has room, and leaves the files for the next checkpoint.
    #[test]
    fn a_checkpoint_never_waits_for_the_lead_of_a_commit_waiting_for_journal_room() {
        use std::sync::mpsc::channel;
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = EngineOptions {
            checkpoint_bytes: 4 << 10,
            ..EngineOptions::default()
        };
        let engine = Engine::open_with(dir.path(), opts).expect("open");
        stop(&engine.shared);
        let g = engine.create_group(1, 1).expect("group 1");
        engine.create_group(2, 1).expect("group 2");
        let mut b = WriteBatch::new();
        b.save(1, &hs(10), &entries(1, 11, 100), &Snapshot::default());
        engine.write(&mut b).expect("write");
        // A snapshot with data, not yet tidied by a checkpoint, and group 1 changed since: the
        // next checkpoint captures it and tidies its snapshot files.
        g.create_snapshot(5, None, b"state".to_vec())
            .expect("snapshot");
        let mut b = WriteBatch::new();
        b.save(1, &hs(11), &entries(11, 12, 100), &Snapshot::default());
        engine.write(&mut b).expect("write");
        // Before the tidy: commits to group 2 fill the journal past its bound, then one more
        // commit waits for room, holding the lead.
        let shared = Arc::clone(&engine.shared);
        let (waiting_tx, waiting_rx) = channel();
        BEFORE_TIDY.add(dir.path(), move || {
            let mut next = 1;
            while !journal_full(&shared.opts, &shared.journal.lock()) {
                let mut b = WriteBatch::new();
                b.save(
                    2,
                    &hs(next),
                    &entries(next, next + 8, 1000),
                    &Snapshot::default(),
                );
                super::super::commit::write(&shared, std::mem::take(&mut b.parts))
                    .expect("fill the journal");
                next += 8;
            }
            let s = Arc::clone(&shared);
            let waiting = std::thread::spawn(move || {
                let mut b = WriteBatch::new();
                b.save(
                    2,
                    &hs(next),
                    &entries(next, next + 1, 10),
                    &Snapshot::default(),
                );
                super::super::commit::write(&s, std::mem::take(&mut b.parts))
            });
            // Until that commit leads (and so waits for room), or ended (it failed: the test
            // then fails on its result, rather than wait here).
            while !shared.pipeline.lock().led() && !waiting.is_finished() {
                std::thread::yield_now();
            }
            let _ = waiting_tx.send(waiting);
        });
        let (done_tx, done_rx) = channel();
        let s = Arc::clone(&engine.shared);
        std::thread::spawn(move || {
            // The checkpoint with the pause, then (as the background thread would) the next.
            let r = run(&s, false).and_then(|()| run(&s, false));
            let _ = done_tx.send(r.map_err(|e| e.to_string()));
        });
        let done = done_rx.recv_timeout(Duration::from_secs(20));
        assert!(
            done.is_ok(),
            "the checkpoint waits for the lead of a commit that waits for the checkpoint"
        );
        done.expect("ended").expect("the checkpoints");
        assert_eq!(
            *engine.shared.groups.read()[&1].tidied.lock(),
            (1, 5),
            "group 1's snapshot files were left untidied"
        );
        let waiting = waiting_rx.recv().expect("the waiting commit");
        waiting
            .join()
            .expect("no panic")
            .expect("the commit that waited for room");
        engine.close().expect("close");
    }

    /// A removal whose rename fails stops the engine (its group is out of the engine, closed,
    /// its directory still in place): a checkpoint waiting for the removal must not record a
    /// position past the group's records once it goes on. It did: the removal's failure
    /// released the root record's lock, the checkpoint (not seeing the group) recorded the
    /// engine's applied position, and open found the group with its log as its creation page
    /// left it. The rename fails here because `<id>.removing` exists (a removal of the same id
    /// whose deletion failed leaves it), made at the pause before the rename.
    #[test]
    fn a_checkpoint_after_a_failed_removal_leaves_the_group_whole() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("root");
        let engine = two_groups_written(&root);
        // At the pause the rename's target is made, and a checkpoint starts on another thread
        // (it waits for the root record's lock the removal holds, or runs once it is free).
        let shared = Arc::clone(&engine.shared);
        let doomed = root.join("groups").join("1.removing");
        let checkpoint = Arc::new(Mutex::new(None));
        let slot = Arc::clone(&checkpoint);
        crate::engine::group::lifecycle_tests::BEFORE_RENAME.add(&root, move || {
            std::fs::create_dir(&doomed).expect("the rename's target");
            *slot.lock() = Some(std::thread::spawn(move || run(&shared, false)));
        });
        let removed = engine.remove_group(1);
        assert!(removed.is_err(), "the removal's rename failed: {removed:?}");
        let ran = checkpoint.lock().take().expect("the pause ran");
        // Its outcome aside (a stopped engine may refuse it): what it recorded is what counts.
        let _ = ran.join().expect("no panic");
        let image = dir.path().join("image");
        kill_image(&root, &image);
        let e = Engine::open(&image).expect("open after the kill");
        assert_written(&e, "group 1, whose removal failed");
        e.close().expect("close");
        drop(engine);
    }

    /// A removal deletes its group's renamed directory with the commit lead released: a commit
    /// to another group made while the deletion is held up completes (deleting a large group's
    /// files takes a while, and every group's commits waited for it). It once held the lead
    /// until the directory was gone (a review's suspicion, 2026-12-07).
    #[test]
    fn commits_to_other_groups_go_on_while_a_removed_groups_directory_is_deleted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("root");
        let engine = two_groups_written(&root);
        let g2 = engine.group(2).expect("group 2");
        let during = Arc::new(Mutex::new(None));
        let slot = Arc::clone(&during);
        crate::engine::group::lifecycle_tests::BEFORE_DELETE.add(&root, move || {
            let (done, finished) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let r = g2.save(&hs(6), &entries(6, 7, 100), &Snapshot::default());
                let _ = done.send(r.map_err(|e| e.to_string()));
            });
            *slot.lock() = Some(finished.recv_timeout(std::time::Duration::from_secs(10)));
        });
        engine.remove_group(1).expect("remove");
        let during = during.lock().take().expect("the pause ran");
        assert!(
            matches!(during, Ok(Ok(()))),
            "a commit to group 2 while group 1's directory was deleted: {during:?}"
        );
        assert!(!root.join("groups").join("1.removing").exists());
        let g = engine.group(2).expect("group 2");
        assert_eq!(g.last_index().expect("last"), 6);
        engine.close().expect("close");
    }

    /// A removed group's tail leaves the engine's count of tail bytes with it (the count bounds
    /// what the tails hold: a leak would make every pass write every tail).
    #[test]
    fn removing_a_group_takes_its_tail_out_of_the_count() {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = engine_by_hand(dir.path());
        let shared = &engine.shared;
        engine.create_group(1, 1).expect("group 1");
        engine.create_group(2, 1).expect("group 2");
        let mut b = WriteBatch::new();
        b.save(1, &hs(2), &entries(1, 3, 1000), &Snapshot::default());
        b.save(2, &hs(1), &entries(1, 2, 300), &Snapshot::default());
        engine.write(&mut b).expect("write");
        assert_eq!(shared.tail_bytes.load(Ordering::Acquire), 2300);
        engine.remove_group(1).expect("remove");
        assert_eq!(shared.tail_bytes.load(Ordering::Acquire), 300);
        write_tails(shared, Pass::All).expect("full pass");
        assert_eq!(shared.tail_bytes.load(Ordering::Acquire), 0);
    }

    #[test]
    fn groups_left_waiting_go_back_first_oldest_first_and_once() {
        // The pass met 9, 4, 2 (newest first); meanwhile 7 and 4 were listed.
        let mut listed = vec![7, 4];
        relist(&mut listed, vec![9, 4, 2]);
        assert_eq!(listed, vec![2, 9, 7, 4]);
        let mut listed = Vec::new();
        relist(&mut listed, vec![3, 1]);
        assert_eq!(listed, vec![1, 3]);
    }

    #[test]
    fn a_checkpoint_comes_due_with_the_journal_or_with_time_and_anything_held() {
        let every = 64 << 20;
        let (soon, later) = (Duration::from_millis(10), PERIOD);
        assert!(
            checkpoint_due(every, 0, soon, every),
            "the journal grew by its step"
        );
        assert!(
            checkpoint_due(1, 0, later, every),
            "time, with records appended"
        );
        assert!(
            checkpoint_due(0, 100, later, every),
            "time, with tails replayed at open and nothing appended since"
        );
        assert!(!checkpoint_due(0, 0, later, every), "nothing to do");
        assert!(!checkpoint_due(1, 100, soon, every), "not yet");
        // `checkpoint_bytes` 0: a checkpoint after every write, none while nothing is written
        // (an idle engine once ran one, a `syncfs`, every 20 ms).
        assert!(checkpoint_due(1, 0, soon, 0), "a write, with a step of 0");
        assert!(!checkpoint_due(0, 0, soon, 0), "idle, with a step of 0");
    }

    /// The writer makes a pass only when some group's tail reached its figure: tails that are
    /// many but each short of it (80 KB over 8 groups) make none, however often commits come.
    #[test]
    fn a_pass_comes_due_when_a_group_reaches_its_figure() {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = engine_by_hand(dir.path());
        let shared = &engine.shared;
        short_of_their_figures(&engine);
        assert_eq!(shared.tail_bytes.load(Ordering::Acquire), 80_000);
        assert!(!writer_due(shared), "no group reached its figure");
        let mut b = WriteBatch::new();
        b.save(3, &hs(2), &entries(2, 3, 30_000), &Snapshot::default());
        engine.write(&mut b).expect("write");
        assert!(writer_due(shared), "group 3 reached its figure");
        write_tails(shared, Pass::Due).expect("due pass");
        assert_eq!(shared.groups.read()[&3].tail_held(), None);
        assert!(!writer_due(shared), "the pass wrote what was due");
        assert_eq!(shared.unwritten.lock().len(), 7);
    }

    /// Tails replayed at open, each short of its figure and nothing committed since: the
    /// background thread's timed checkpoint writes them (the journal's growth never will).
    #[test]
    fn tails_replayed_at_open_are_written_without_new_commits() {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = engine_by_hand(&dir.path().join("a"));
        short_of_their_figures(&engine);
        // The root as a crash would leave it: the records durable, the tails not written.
        kill_image(&dir.path().join("a"), &dir.path().join("b"));
        drop(engine);
        let engine = Engine::open(dir.path().join("b")).expect("open the copy");
        let shared = &engine.shared;
        assert_eq!(
            shared.tail_bytes.load(Ordering::Acquire),
            80_000,
            "replayed"
        );
        // A bound for a liveness check, not a timing: the checkpoint comes after PERIOD.
        let deadline = Instant::now() + PERIOD * 6;
        while shared.tail_bytes.load(Ordering::Acquire) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(shared.tail_bytes.load(Ordering::Acquire), 0, "written");
        assert!(shared.unwritten.lock().is_empty());
        for id in 1..=8 {
            let g = engine.group(id).expect("group");
            assert_eq!(
                g.entries(1, 2, None, ctx()).expect("read"),
                entries(1, 2, 10_000)
            );
        }
    }

    #[test]
    fn a_due_pass_writes_the_tails_that_reached_their_figure_and_keeps_the_others() {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = engine_by_hand(dir.path());
        let shared = &engine.shared;
        let big = engine.create_group(1, 1).expect("group 1");
        let small = engine.create_group(2, 1).expect("group 2");
        // Group 1 past twice the step (past any group's figure), group 2 short of one step.
        let (big_entries, small_entries) = (entries(1, 11, 4096), entries(1, 2, 1024));
        let mut b = WriteBatch::new();
        b.save(1, &hs(10), &big_entries, &Snapshot::default());
        b.save(2, &hs(1), &small_entries, &Snapshot::default());
        engine.write(&mut b).expect("write");
        let held = |id: u64| shared.groups.read()[&id].tail_held();
        assert_eq!(held(1), Some(40 << 10));
        assert_eq!(held(2), Some(1 << 10));

        write_tails(shared, Pass::Due).expect("due pass");
        assert_eq!(held(1), None, "group 1 reached its figure: written");
        assert_eq!(held(2), Some(1 << 10), "group 2 did not: its tail waits");
        assert_eq!(*shared.unwritten.lock(), vec![2], "and it stays listed");
        assert_eq!(shared.tail_bytes.load(Ordering::Acquire), 1 << 10);
        // Both read back whole, from the files and from the tail.
        assert_eq!(
            big.entries(1, 11, None, ctx()).expect("read 1"),
            big_entries
        );
        assert_eq!(
            small.entries(1, 2, None, ctx()).expect("read 2"),
            small_entries
        );

        // The tails holding more than the bound in all: every tail is written.
        write_tails_held(shared, Pass::Due, 1 << 10).expect("bounded pass");
        assert_eq!(held(2), None);
        assert!(shared.unwritten.lock().is_empty());
        assert_eq!(shared.tail_bytes.load(Ordering::Acquire), 0);

        // A checkpoint's pass writes every tail, however small.
        let mut b = WriteBatch::new();
        b.save(2, &hs(2), &entries(2, 3, 100), &Snapshot::default());
        engine.write(&mut b).expect("write");
        assert_eq!(held(2), Some(100));
        write_tails(shared, Pass::All).expect("full pass");
        assert_eq!(held(2), None);
        drop((big, small));
        engine.close().expect("close");

        let engine = Engine::open(dir.path()).expect("reopen");
        let small = engine.group(2).expect("group 2");
        assert_eq!(small.last_index().expect("last"), 2);
        assert_eq!(
            engine
                .group(1)
                .expect("group 1")
                .entries(1, 11, None, ctx())
                .expect("read"),
            big_entries
        );
    }

    /// (Found by a review.) A checkpoint captures group 1's page (its log in files 1 and 2,
    /// up to index 30,010) while an overwrite of 29,990..=29,999 is journaled and about to be
    /// applied; the overwrite is applied once the page is captured, and the checkpoint's paced
    /// write-back makes a `Pass::Due` that writes it into the files, removing file 2 (the
    /// durable page of the group, made at its creation, relies on no file, so the write was
    /// not taken for a destructive one). The checkpoint then stored the captured page, which
    /// relies on file 2, and a kill after it left a root open refused ("MissingFile
    /// 00002.wal"). Open must succeed and give the overwritten log.
    #[test]
    fn a_captured_page_never_relies_on_a_file_removed_before_it_is_stored() {
        use std::sync::mpsc::channel;
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("root");
        let engine = engine_by_hand(&root);
        let shared = &engine.shared;
        let g = engine.create_group(1, 1).expect("group 1");
        let mut lo = 1;
        while lo < 30_011 {
            let hi = (lo + 1000).min(30_011);
            g.save(&hs(0), &entries(lo, hi, 100), &Snapshot::default())
                .expect("save");
            lo = hi;
        }
        // Groups captured after group 1, each leaving its write-back unstarted now and then:
        // past a quarter MiB of them, the paced write-back waits and makes its `Pass::Due`.
        let mut others = Vec::new();
        for id in 2..=40 {
            let o = engine.create_group(id, 1).expect("group");
            o.save(&hs(0), &entries(1, 11, 4000), &Snapshot::default())
                .expect("save");
            others.push(o);
        }
        let over: Vec<Entry> = entries(29_990, 30_000, 8 << 10)
            .into_iter()
            .map(|mut e| {
                e.term = 2;
                e
            })
            .collect();
        let group1 = Arc::clone(&shared.groups.read()[&1]);
        let (reached, reached_rx) = channel();
        crate::engine::commit::tests::pause_next_commit(&root, move || {
            let _ = reached.send(());
            // Applied once the checkpoint has captured group 1.
            let deadline = Instant::now() + Duration::from_secs(30);
            while group1.with_log(|l| Ok(l.dirty)).unwrap_or(false) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_micros(50));
            }
        });
        std::thread::scope(|s| {
            let w = s.spawn(|| {
                let mut h = hs(0);
                h.term = 2;
                g.save(&h, &over, &Snapshot::default())
            });
            reached_rx
                .recv_timeout(Duration::from_secs(30))
                .expect("the overwrite journaled");
            run(shared, false).expect("checkpoint");
            w.join().expect("join").expect("overwrite");
        });
        assert!(
            !root.join("groups/1/00002.wal").exists(),
            "precondition: the checkpoint's paced pass wrote the overwrite (file 2 removed)"
        );
        let image = dir.path().join("image");
        kill_image(&root, &image);
        let e = Engine::open(&image).expect("open after the kill");
        let g = e.group(1).expect("group 1");
        assert_eq!(g.last_index().expect("last"), 29_999);
        assert_eq!(g.term(29_989).expect("term"), 1);
        assert_eq!(g.term(29_999).expect("term"), 2);
        drop(others);
    }

    /// `checkpoint_bytes: 0` (a checkpoint after every write) bounds the journal at 0 bytes:
    /// the journal counted as full whatever it held, so every commit waited for room that no
    /// trim could make (checkpoints ran, the journal stayed "full"), until close.
    #[test]
    fn writes_go_on_with_checkpoint_bytes_zero() {
        use std::sync::mpsc::channel;
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = EngineOptions {
            checkpoint_bytes: 0,
            ..EngineOptions::default()
        };
        let engine = Arc::new(Engine::open_with(dir.path(), opts).expect("open"));
        let g = engine.create_group(1, 1).expect("group 1");
        let (done_tx, done_rx) = channel();
        // Not scoped: with the defect the writes never return, and the test must fail rather
        // than wait for them.
        std::thread::spawn(move || {
            let r = (1..=3u64)
                .try_for_each(|i| g.save(&hs(i), &entries(i, i + 1, 100), &Snapshot::default()));
            let _ = done_tx.send(r.map_err(|e| e.to_string()));
        });
        let done = done_rx.recv_timeout(Duration::from_secs(20));
        assert!(done.is_ok(), "three writes still waiting after 20 s");
        done.expect("ended").expect("the writes");
    }

    /// A panic in the background thread (a bug; here a pause that panics in its first
    /// checkpoint) ended the only thread that trims the journal, and left the engine running:
    /// once the journal reached its bound, every commit waited for room for ever (until
    /// close). The engine now stops, and the commits waiting fail.
    /// A `set_uint` made while `close` runs (here from its final checkpoint, after close has
    /// journaled the integers of the groups that had any unsaved) is either kept or never
    /// seen: the value read back during close is the value the reopened group holds. It was
    /// accepted and read back, and the closing checkpoint, which takes only changed groups,
    /// left it out: gone after the reopen (found by a review).
    #[test]
    fn a_set_uint_during_close_is_kept_or_never_seen() {
        use crate::store::meta::MetaInfo;
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("root");
        let engine = Engine::open(&root).expect("open");
        let g = engine.create_group(1, 1).expect("group");
        let mut b = WriteBatch::new();
        b.save(1, &hs(1), &entries(1, 2, 10), &Snapshot::default());
        engine.write(&mut b).expect("write");
        // The group clean, its page stored: close has no integer of it to journal.
        engine.checkpoint_now().expect("checkpoint");
        let (tx, rx) = std::sync::mpsc::channel();
        let h = g.clone();
        BEFORE_CAPTURE.add(&root, move || {
            h.set_uint(MetaInfo::CheckpointIndex, 42);
            let _ = tx.send(h.uint(MetaInfo::CheckpointIndex));
        });
        engine.close().expect("close");
        let seen = rx.recv().expect("the pause ran during close");
        let engine = Engine::open(&root).expect("reopen");
        let kept = engine
            .group(1)
            .expect("group")
            .uint(MetaInfo::CheckpointIndex);
        assert_eq!(
            kept, seen,
            "read back {seen} during close, {kept} after the reopen"
        );
    }

    #[test]
    fn a_checkpoint_that_panics_stops_the_engine_rather_than_leave_commits_waiting() {
        use std::sync::mpsc::channel;
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = EngineOptions {
            checkpoint_bytes: 4 << 10,
            ..EngineOptions::default()
        };
        BEFORE_CAPTURE.add(dir.path(), || {
            panic!("a bug in the checkpoint (a test's pause)")
        });
        let engine = Engine::open_with(dir.path(), opts).expect("open");
        let g = engine.create_group(1, 1).expect("group 1");
        let (done_tx, done_rx) = channel();
        // Not scoped: with the defect the writes never return, and the test must fail rather
        // than wait for them. 40 writes of 8 KiB: five times the journal's bound (64 KiB).
        std::thread::spawn(move || {
            let r = (1..=40u64).try_for_each(|i| {
                g.save(&hs(i), &entries(i, i + 1, 8 << 10), &Snapshot::default())
            });
            let _ = done_tx.send(r.map_err(|e| e.to_string()));
        });
        let done = done_rx.recv_timeout(Duration::from_secs(20));
        assert!(done.is_ok(), "writes still waiting for room after 20 s");
        let failed = done.expect("ended");
        assert!(
            failed
                .as_ref()
                .is_err_and(|m| m.contains("a checkpoint panicked")),
            "the writes: {failed:?}"
        );
        drop(engine);
    }

    /// The payload of group `id`'s entry `index` in the test below: the model it checks by.
    fn payload(id: u64, index: u64) -> Vec<u8> {
        let mut p = format!("group {id} entry {index} ").into_bytes();
        p.resize(200, (id ^ index) as u8);
        p
    }

    /// The descriptors this process holds on files under `root`.
    fn fds_under(root: &std::path::Path) -> usize {
        let Ok(list) = std::fs::read_dir("/proc/self/fd") else {
            return 0;
        };
        list.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
            .filter(|target| target.starts_with(root))
            .count()
    }

    /// Every group holds entries 1..=`last`, as [`payload`] made them.
    fn assert_holds(engine: &Engine, groups: u64, last: u64, what: &str) {
        for id in 1..=groups {
            let g = engine.group(id).expect("group");
            let got = g.entries(1, last + 1, None, ctx()).expect("entries");
            let want: Vec<Vec<u8>> = (1..=last).map(|i| payload(id, i)).collect();
            let got: Vec<Vec<u8>> = got.iter().map(|e| e.data.to_vec()).collect();
            assert!(got == want, "{what}: group {id} holds other entries");
        }
    }

    /// A checkpoint of 300 groups, paused before its capture while commits fill the journal
    /// to its bound and one more waits for room: the capture and the meta pages then take a
    /// second thread (module `joined`). Every entry is in its group after the checkpoint,
    /// after a kill (the root copied while open) and after a clean close, and the descriptors
    /// under the root stay within `max_open_files` with two threads writing groups.
    #[test]
    fn a_second_thread_joins_a_checkpoint_while_commits_wait_for_room() {
        use std::sync::mpsc::channel;
        const GROUPS: u64 = 300;
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("root");
        let opts = EngineOptions {
            checkpoint_bytes: 16 << 10,
            max_open_files: 24,
            ..EngineOptions::default()
        };
        let engine = Engine::open_with(&root, opts.clone()).expect("open");
        stop(&engine.shared);
        let round = |shared: &Shared, index: u64| {
            let mut b = WriteBatch::new();
            for id in 1..=GROUPS {
                let mut e = Entry::default();
                e.index = index;
                e.term = 1;
                e.data = payload(id, index).into();
                b.save(id, &hs(index), &[e], &Snapshot::default());
            }
            super::super::commit::write(shared, std::mem::take(&mut b.parts))
        };
        for id in 1..=GROUPS {
            engine.create_group(id, 1).expect("group");
        }
        round(&engine.shared, 1).expect("round 1");
        // At the pause: rounds until the journal is full, then one more, which waits for room.
        let shared = Arc::clone(&engine.shared);
        let (last_tx, last_rx) = channel();
        BEFORE_CAPTURE.add(&root, move || {
            let mut index = 2;
            while !journal_full(&shared.opts, &shared.journal.lock()) {
                round(&shared, index).expect("fill the journal");
                index += 1;
            }
            let s = Arc::clone(&shared);
            let waiting = std::thread::spawn(move || round(&s, index));
            while shared.checkpointer.room_waits() == 0 && !waiting.is_finished() {
                std::thread::sleep(Duration::from_millis(1));
            }
            let _ = last_tx.send((index, waiting));
        });
        let most_fds = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (done_tx, done_rx) = channel();
        let s = Arc::clone(&engine.shared);
        let (most, under) = (Arc::clone(&most_fds), root.clone());
        std::thread::spawn(move || {
            let checkpoint = std::thread::spawn(move || run(&s, false));
            while !checkpoint.is_finished() {
                most.fetch_max(fds_under(&under), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(1));
            }
            let _ = done_tx.send(checkpoint.join().map(|r| r.map_err(|e| e.to_string())));
        });
        let done = done_rx.recv_timeout(Duration::from_secs(60));
        assert!(done.is_ok(), "the checkpoint did not end within 60 s");
        done.expect("ended")
            .expect("no panic")
            .expect("the checkpoint");
        let (last, waiting) = last_rx.recv().expect("the waiting round");
        waiting
            .join()
            .expect("no panic")
            .expect("the round that waited for room");
        assert_eq!(
            engine.shared.checkpointer.room_waits(),
            0,
            "a commit still counted as waiting for room"
        );
        let joined = engine.shared.checkpointer.joined_items_so_far();
        assert!(joined > 0, "no second thread joined the checkpoint");
        let most = most_fds.load(Ordering::Relaxed);
        assert!(
            most <= opts.max_open_files,
            "{most} descriptors under the root, more than max_open_files"
        );
        assert_holds(&engine, GROUPS, last, "after the checkpoint");
        let image = dir.path().join("killed");
        kill_image(&root, &image);
        let killed = Engine::open(&image).expect("open the killed copy");
        assert_holds(&killed, GROUPS, last, "after a kill");
        drop(killed);
        engine.close().expect("close");
        let reopened = Engine::open(&root).expect("reopen");
        assert_holds(&reopened, GROUPS, last, "after a clean close");
    }
}
