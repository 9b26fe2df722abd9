//! The commit pipeline: group commit across callers and groups.
//!
//! Callers of `Engine::write` queue their batches; whoever finds no leader becomes it, takes
//! every batch queued so far and makes them one commit: each batch is checked part by part
//! against the state the parts (and batches) before it leave, a batch with an invalid part
//! fails alone; snapshot files of installed snapshots are written; one journal record holding
//! every accepted batch is appended and flushed once; then the parts are applied to the groups
//! and every caller gets its result. Everything that must not interleave with a commit (group
//! creation and removal, a checkpoint's tidy, close) takes the lead the same way ([`lead`]).
//! An application's snapshot of one group waits only for the commits that name that group:
//! a commit holds each group it names (`Group::checked`) from its checks to its apply.
//!
//! Owns: leadership, the checks of a commit against shadows of the groups' logs, and the order
//! journal-then-apply. Must never: apply a part before the record holding it is written (and,
//! with `sync_writes`, flushed), or leave a failed apply unreported (the engine is then
//! stopped: its memory may no longer match its files).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use parking_lot::{Mutex, MutexGuard, RwLockReadGuard};
use raft::prelude::Snapshot;

use super::batch::{self, Part};
use super::group::{Change, Group, LogOf};
use super::Shared;
use crate::error::{Error, Result};
use crate::proto::{ConfStateRecord, SnapshotRecord};
use crate::store::snap;
use crate::store::state::{self, LogView};

/// Who leads, and the batches waiting for a leader.
#[derive(Default)]
pub(crate) struct Queue {
    leading: bool,
    waiting: Vec<Arc<Waiter>>,
}

#[cfg(test)]
impl Queue {
    /// Someone leads the pipeline.
    pub(crate) fn led(&self) -> bool {
        self.leading
    }
}

/// A caller's batch and, once its commit is done, its result.
pub(crate) struct Waiter {
    parts: Mutex<Vec<Part>>,
    result: Mutex<Option<Result<()>>>,
    /// Set by the leader with the result when the batch installs a snapshot into a group whose
    /// snapshot the application is writing: the parts are handed back, untouched, for the
    /// caller to queue again once that write is over (a `DiskStorage` install waits for it).
    busy: Mutex<Option<Arc<Group>>>,
}

/// Leadership of the pipeline: held, no commit runs. Released when dropped (a panic included).
pub(crate) struct Lead<'a> {
    shared: &'a Shared,
}

impl Drop for Lead<'_> {
    fn drop(&mut self) {
        let mut q = self.shared.pipeline.lock();
        q.leading = false;
        self.shared.pipeline_cv.notify_all();
    }
}

/// [`lead`] for a change that must not follow a failed commit: the engine checked usable
/// before the wait (no wait for a stopped engine) and again once led (a commit that fails
/// stops the engine while it leads, so a caller that waited behind it learns of it here).
pub(crate) fn lead_usable(shared: &Shared) -> Result<Lead<'_>> {
    shared.check_usable()?;
    let lead = lead(shared);
    shared.check_usable()?;
    Ok(lead)
}

/// [`lead`], unless `give_up` says so while someone else leads (it is asked without the
/// pipeline's lock held, at least every few milliseconds): `None` then.
pub(crate) fn lead_unless(shared: &Shared, give_up: impl Fn() -> bool) -> Option<Lead<'_>> {
    let mut q = shared.pipeline.lock();
    while q.leading {
        if MutexGuard::unlocked(&mut q, &give_up) {
            return None;
        }
        shared
            .pipeline_cv
            .wait_for(&mut q, std::time::Duration::from_millis(5));
    }
    q.leading = true;
    Some(Lead { shared })
}

/// Waits for the pipeline to be free and takes it.
pub(crate) fn lead(shared: &Shared) -> Lead<'_> {
    let mut q = shared.pipeline.lock();
    while q.leading {
        shared.pipeline_cv.wait(&mut q);
    }
    q.leading = true;
    Lead { shared }
}

/// `Engine::write`: queues `parts` as one batch and returns its result once its commit is done.
pub(crate) fn write(shared: &Shared, parts: Vec<Part>) -> Result<()> {
    shared.check_usable()?;
    if parts.is_empty() {
        return Ok(());
    }
    let timer = crate::metrics::Timer::start();
    let mut parts = parts;
    loop {
        let me = queue(shared, parts);
        let busy = me.busy.lock().take();
        match busy {
            // Waited for with nothing held: the application's write ends, and its snapshot
            // takes effect (which may lead the pipeline), before the install is checked again.
            Some(g) => {
                drop(g.snap_writer.lock());
                parts = std::mem::take(&mut *me.parts.lock());
            }
            None => {
                let r = me.result.lock().take();
                r.unwrap_or_else(|| {
                    Err(Error::invariant("a commit left a batch without a result"))
                })?;
                break;
            }
        }
    }
    timer.took(crate::metrics::Took::EngineWrite);
    Ok(())
}

/// [`write`], unmeasured: queues the batch and returns once its commit set its result.
fn queue(shared: &Shared, parts: Vec<Part>) -> Arc<Waiter> {
    let me = Arc::new(Waiter {
        parts: Mutex::new(parts),
        result: Mutex::new(None),
        busy: Mutex::new(None),
    });
    let mut q = shared.pipeline.lock();
    q.waiting.push(Arc::clone(&me));
    loop {
        if me.result.lock().is_some() {
            return me;
        }
        if !q.leading {
            q.leading = true;
            let batches = std::mem::take(&mut q.waiting);
            drop(q);
            {
                let _lead = Lead { shared };
                // A panic inside the commit (a bug) must not leave the callers merged into it
                // waiting for ever for a result only the leader sets: each gets an error, the
                // engine stops (memory and files may be out of step), and the panic goes on
                // in the leader's thread.
                let led = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    process(shared, &batches)
                }));
                if let Err(payload) = led {
                    let panicked = || Error::invariant("a commit panicked; open the engine again");
                    shared.poison(&panicked());
                    for w in &batches {
                        w.result.lock().get_or_insert_with(|| Err(panicked()));
                    }
                    drop(_lead);
                    std::panic::resume_unwind(payload);
                }
            }
            q = shared.pipeline.lock();
            continue;
        }
        shared.pipeline_cv.wait(&mut q);
    }
}

/// What a group's log looks like to the checks of a commit, once the parts before in the same
/// commit are taken into account.
#[derive(Clone)]
struct Shadow {
    snap_index: u64,
    snap_term: u64,
    last: u64,
    commit: u64,
    /// Indexes up to this one may be read from the group's log as it is.
    base_upto: u64,
    /// Terms of the entries this commit appended, from `appended_from` on.
    appended_from: u64,
    terms: Vec<u64>,
}

/// A shadow and the group it stands for, for term lookups below what the commit appended.
struct View<'a> {
    shadow: &'a Shadow,
    group: &'a Group,
}

impl LogView for View<'_> {
    fn snapshot_index(&self) -> u64 {
        self.shadow.snap_index
    }
    fn snapshot_term(&self) -> u64 {
        self.shadow.snap_term
    }
    fn last_index(&self) -> u64 {
        self.shadow.last
    }
    fn commit(&self) -> u64 {
        self.shadow.commit
    }
    fn term_in_log(&self, index: u64) -> Result<u64> {
        let s = self.shadow;
        if index >= s.appended_from {
            if let Some(t) = s.terms.get((index - s.appended_from) as usize) {
                return Ok(*t);
            }
        }
        if index <= s.base_upto {
            return self.group.with_log(|log| {
                LogOf {
                    group: self.group,
                    log,
                }
                .term_in_log(index)
            });
        }
        Err(Error::Unavailable {
            index,
            last_index: s.last,
        })
    }
}

impl Shadow {
    fn of(group: &Group) -> Result<Shadow> {
        group.with_log(|log| {
            let last = log.last_index();
            Ok(Shadow {
                snap_index: log.snapshot_index(),
                snap_term: log.snapshot_term(),
                last,
                commit: log.commit(),
                base_upto: last,
                appended_from: u64::MAX,
                terms: Vec::new(),
            })
        })
    }

    /// The shadow after `part` (which passed its checks).
    fn apply(&mut self, part: &Part) {
        if let Some(s) = &part.snapshot {
            let md = s.get_metadata();
            self.snap_index = md.index;
            self.snap_term = md.term;
            self.last = md.index;
            self.base_upto = 0;
            self.appended_from = u64::MAX;
            self.terms.clear();
        }
        if let (Some(e0), Some(last)) = (part.entries.first(), part.entries.last()) {
            let start = e0.index;
            if self.appended_from != u64::MAX && start >= self.appended_from {
                self.terms.truncate((start - self.appended_from) as usize);
            } else {
                self.base_upto = self.base_upto.min(start - 1);
                self.appended_from = start;
                self.terms.clear();
            }
            self.terms.extend(part.entries.iter().map(|e| e.term));
            self.last = last.index;
        }
        if let Some(hs) = &part.hard_state {
            self.commit = hs.commit;
        }
    }
}

/// Checks a batch's parts in order against `shadows` (the commit's view so far); returns the
/// updated shadows of the groups it touches, or the first invalid part's error naming its
/// group.
fn check_batch(
    groups: &RwLockReadGuard<'_, std::collections::BTreeMap<u64, Arc<Group>>>,
    shadows: &HashMap<u64, Shadow>,
    parts: &[Part],
) -> Result<HashMap<u64, Shadow>> {
    let mut mine: HashMap<u64, Shadow> = HashMap::new();
    for part in parts {
        let id = part.group_id;
        let wrap = |e: Error| Error::Group {
            group_id: id,
            source: Box::new(e),
        };
        let group = groups
            .get(&id)
            .filter(|g| part.only_incarnation.is_none_or(|n| n == g.incarnation))
            .ok_or_else(|| wrap(Error::UnknownGroup { group_id: id }))?;
        let shadow = match mine.entry(id) {
            std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => v.insert(match shadows.get(&id) {
                Some(s) => s.clone(),
                None => Shadow::of(group).map_err(wrap)?,
            }),
        };
        let hs = part.hard_state.clone().unwrap_or_default();
        let snap = part.snapshot.clone().unwrap_or_default();
        state::check_save(&View { shadow, group }, &hs, &part.entries, &snap).map_err(wrap)?;
        shadow.apply(part);
    }
    Ok(mine)
}

/// An error for each caller of a commit that failed as a whole (errors are not `Clone`).
fn again(e: &Error, root: &std::path::Path) -> Error {
    match e {
        Error::Closed { what } => Error::Closed { what: what.clone() },
        Error::Poisoned { reason } => Error::Poisoned {
            reason: reason.clone(),
        },
        Error::Invariant(what) => Error::Invariant(what.clone()),
        Error::InvalidArgument(what) => Error::InvalidArgument(what.clone()),
        // The file the failure is about (a journal segment, a snapshot file), not the root.
        Error::Io { op, path, source } => Error::Io {
            op,
            path: path.clone(),
            // An OS error keeps its errno (and so its text); any other its kind and text.
            source: source.raw_os_error().map_or_else(
                || std::io::Error::new(source.kind(), source.to_string()),
                std::io::Error::from_raw_os_error,
            ),
        },
        Error::Corrupt {
            path,
            offset,
            reason,
        } => Error::Corrupt {
            path: path.clone(),
            offset: *offset,
            reason: reason.clone(),
        },
        Error::Group { group_id, source } => Error::Group {
            group_id: *group_id,
            source: Box::new(again(source, root)),
        },
        other => Error::Io {
            op: "commit to",
            path: root.to_path_buf(),
            source: std::io::Error::other(other.to_string()),
        },
    }
}

/// A group whose part passed the commit's checks, missing when the commit writes or applies it:
/// the groups are held from the checks on, and a removal takes the pipeline, so it is a bug.
fn gone(group_id: u64) -> Error {
    Error::invariant(format!(
        "group {group_id} passed the commit's checks but is gone from the engine"
    ))
}

/// Makes one commit of `batches` (the caller leads) and sets every batch's result.
fn process(shared: &Shared, batches: &[Arc<Waiter>]) {
    // An install's time counts from here: its snapshot file is written with its batch's checks.
    let timer = crate::metrics::Timer::start();
    let set = |w: &Waiter, r: Result<()>| *w.result.lock() = Some(r);
    if let Err(e) = shared.check_usable() {
        for w in batches {
            set(w, Err(again(&e, &shared.root)));
        }
        return;
    }
    let groups = shared.groups.read();
    let taken: Vec<Vec<Part>> = batches
        .iter()
        .map(|w| std::mem::take(&mut *w.parts.lock()))
        .collect();
    // Every group the commit names held from its checks to its apply (`Group::checked`): an
    // application's snapshot waits for the apply rather than change the log in between.
    let mut ids: Vec<u64> = taken.iter().flatten().map(|p| p.group_id).collect();
    ids.sort_unstable();
    ids.dedup();
    let named: Vec<_> = ids
        .iter()
        .filter_map(|id| groups.get(id))
        .map(|g| g.checked.read())
        .collect();
    let mut shadows: HashMap<u64, Shadow> = HashMap::new();
    let mut accepted: Vec<(&Waiter, Vec<Part>)> = Vec::new();
    // The snapshot writers of the groups the accepted batches install into, held until their
    // files are written: taken with the checks, so that one held by the application fails
    // only the batch that installs into its group.
    let mut writers: HashMap<u64, MutexGuard<'_, ()>> = HashMap::new();
    // Per accepted batch, its installed snapshots' files, written (durably) with its checks:
    // one that cannot be written (a full disk) fails that batch alone, before the batches
    // after it are checked against a log it would have left.
    let mut installs: Vec<Vec<Option<SnapshotRecord>>> = Vec::new();
    for (w, parts) in batches.iter().zip(taken) {
        let new_writers = match install_writers(&groups, &writers, &parts) {
            Ok(mine) => mine,
            Err(busy) => {
                // Handed back whole (nothing of it checked or written), to come again.
                *w.parts.lock() = parts;
                *w.busy.lock() = Some(Arc::clone(busy));
                set(w, Ok(()));
                continue;
            }
        };
        let outcome = check_batch(&groups, &shadows, &parts).and_then(|mine| {
            let recs = write_snapshot_files(shared, &groups, &parts)?;
            Ok((mine, recs))
        });
        match outcome {
            Ok((mine, recs)) => {
                shadows.extend(mine);
                writers.extend(new_writers);
                accepted.push((w, parts));
                installs.push(recs);
            }
            Err(e) => set(w, Err(e)),
        }
    }
    if accepted.is_empty() {
        return;
    }
    match commit(shared, &groups, &mut accepted, &installs, timer) {
        Ok(()) => {
            for (w, _) in &accepted {
                set(w, Ok(()));
            }
        }
        Err(e) => {
            for (w, _) in &accepted {
                set(w, Err(again(&e, &shared.root)));
            }
        }
    }
    drop(writers);
    drop(named);
    drop(groups);
    let appended = shared.journal.lock().appended();
    if appended >= shared.opts.checkpoint_bytes || super::checkpoint::writer_due(shared) {
        shared.checkpointer.nudge();
    }
}

/// Writes the accepted batches as one journal record, flushes it (with `sync_writes`), and
/// applies every part.
fn commit(
    shared: &Shared,
    groups: &RwLockReadGuard<'_, std::collections::BTreeMap<u64, Arc<Group>>>,
    accepted: &mut [(&Waiter, Vec<Part>)],
    installs: &[Vec<Option<SnapshotRecord>>],
    timer: crate::metrics::Timer,
) -> Result<()> {
    check_space(shared, accepted)?;
    let mut body = batch::Body::default();
    for ((_, parts), recs) in accepted.iter_mut().zip(installs) {
        for (part, rec) in parts.iter_mut().zip(recs) {
            let g = groups
                .get(&part.group_id)
                .ok_or_else(|| gone(part.group_id))?;
            if let Some(log) = g.log.read().as_ref().filter(|log| log.ints_dirty) {
                let m = &log.meta;
                part.ints = Some([m.raft_id, m.group_id, m.checkpoint_index]);
            }
            batch::encode(&mut body, part, g.incarnation, rec.as_ref());
        }
    }
    let seq = {
        let mut journal = shared.journal.lock();
        let pieces = body.pieces();
        let len = pieces.iter().map(|p| p.len()).sum();
        // The next segment is being prepared: wait for it rather than make one here. And while
        // the journal is full, wait for the checkpoint that makes due to trim it: its disk use
        // and the replay at open stay bounded however far the groups' files fall behind
        // (docs/PERFORMANCE.md, "A bounded journal"). A checkpoint trims before it needs the
        // lead this commit holds.
        let mut room_wait = None;
        loop {
            let full = super::checkpoint::journal_full(&shared.opts, &journal);
            let preparing = journal.must_wait(len);
            // Closing, no checkpoint will come to make room; but the segment being prepared
            // will (the preparer finishes its job before it stops), and this commit must not
            // make it too: the two would collide on its file.
            if !preparing && (!full || shared.stopping()) {
                break;
            }
            // A failed checkpoint or preparer (an error, or a panic: a bug) stops the engine:
            // this commit fails with it rather than wait for room or a segment no one makes.
            shared.check_usable()?;
            if full {
                shared.checkpointer.nudge();
                // Counted while it waits: a checkpoint's pass takes a second thread meanwhile
                // (module `joined`).
                room_wait.get_or_insert_with(|| shared.checkpointer.waiting_for_room());
            } else {
                // Waiting for the next segment only: no more a wait for room.
                room_wait = None;
            }
            shared
                .journal_cv
                .wait_for(&mut journal, std::time::Duration::from_millis(100));
        }
        drop(room_wait);
        let seq = journal.append(&pieces)?;
        if journal.wakes_preparer() {
            // After a rest, the segment being written is half full: the journal thread
            // prepares the next one.
            shared.journal_cv.notify_all();
        }
        if shared.opts.sync_writes {
            // A failed flush leaves the record's durability unknown: stop.
            let _flush = shared.flushes.start(len as u64);
            journal.sync().inspect_err(|e| shared.poison(e))?;
        }
        seq
    };
    // Counted before the apply moves the entries into the tails.
    let appended = cfg!(feature = "metrics").then(|| {
        let parts = accepted.iter().flat_map(|(_, parts)| parts);
        parts.fold((0, 0), |(n, b), p| {
            (
                n + p.entries.len(),
                b + crate::metrics::payload_bytes(&p.entries),
            )
        })
    });
    #[cfg(test)]
    tests::BEFORE_APPLY.pass(&shared.root);
    // Each group's parts in the record, numbered in its order as replay numbers them.
    let mut numbered: std::collections::BTreeMap<u64, u32> = Default::default();
    for ((_, parts), recs) in accepted.iter_mut().zip(installs) {
        for (part, rec) in parts.iter_mut().zip(recs) {
            let n = numbered.entry(part.group_id).or_default();
            *n += 1;
            apply_live(shared, groups, part, rec.as_ref(), seq, *n)
                .inspect_err(|e| shared.poison(e))?;
        }
    }
    shared.applied_seq.store(seq, Ordering::Release);
    if let Some((entries, bytes)) = appended {
        if installs.iter().flatten().any(Option::is_some) {
            timer.took(crate::metrics::Took::SnapshotInstall);
        }
        crate::metrics::appended(entries, bytes);
        crate::metrics::engine_commit(accepted.len());
    }
    Ok(())
}

/// Applies a live part (checked, journaled; the `number`th of record `seq`'s parts for its
/// group) to its group; its entries move into the group's tail.
fn apply_live(
    shared: &Shared,
    groups: &RwLockReadGuard<'_, std::collections::BTreeMap<u64, Arc<Group>>>,
    part: &mut Part,
    snapshot: Option<&SnapshotRecord>,
    seq: u64,
    number: u32,
) -> Result<()> {
    let g = groups
        .get(&part.group_id)
        .ok_or_else(|| gone(part.group_id))?;
    let change = Change {
        snapshot,
        entries: std::mem::take(&mut part.entries),
        hard_state: part.hard_state.as_ref(),
        conf_state: part.conf_state.as_ref().map(ConfStateRecord::from),
        ints: part.ints,
        truncate: part.truncate,
        part: number,
    };
    g.apply(shared, change, seq)
}

/// The snapshot writers of the groups `parts` install into, but those in `held` (taken for an
/// earlier batch of the commit); a group missing is left to the checks. `Err` names a group
/// whose writer the application holds (it is writing a snapshot of that group): the batch
/// waits for that write outside the pipeline ([`write`]) rather than hold every commit behind
/// an application's reader.
fn install_writers<'g>(
    groups: &'g RwLockReadGuard<'_, std::collections::BTreeMap<u64, Arc<Group>>>,
    held: &HashMap<u64, MutexGuard<'g, ()>>,
    parts: &[Part],
) -> std::result::Result<HashMap<u64, MutexGuard<'g, ()>>, &'g Arc<Group>> {
    let mut mine = HashMap::new();
    for part in parts.iter().filter(|p| p.snapshot.is_some()) {
        let id = part.group_id;
        if held.contains_key(&id) || mine.contains_key(&id) {
            continue;
        }
        let Some(g) = groups.get(&id) else { continue };
        mine.insert(id, g.snap_writer.try_lock().ok_or(g)?);
    }
    Ok(mine)
}

/// Writes the data of the snapshots `parts` install to their groups' snapshot files (durable),
/// before any record names them; describes each (`None` for a part that installs none). An
/// error names the group.
fn write_snapshot_files(
    shared: &Shared,
    groups: &RwLockReadGuard<'_, std::collections::BTreeMap<u64, Arc<Group>>>,
    parts: &[Part],
) -> Result<Vec<Option<SnapshotRecord>>> {
    let mut written = Vec::with_capacity(parts.len());
    for part in parts {
        let Some(s) = &part.snapshot else {
            written.push(None);
            continue;
        };
        match write_snapshot_file(shared, groups, part.group_id, s) {
            Ok(rec) => written.push(Some(rec)),
            Err(e) => {
                // The batch fails whole: the files written for its parts before this one go
                // too (no record will name them; each is new, a stale install being refused
                // by the checks). Left, they stayed until the next open.
                for (part, rec) in parts.iter().zip(&written) {
                    let (Some(rec), Some(g)) = (rec, groups.get(&part.group_id)) else {
                        continue;
                    };
                    if rec.data_len > 0 {
                        let _ = std::fs::remove_file(snap::path(&g.dir, rec.term, rec.index));
                    }
                }
                return Err(Error::Group {
                    group_id: part.group_id,
                    source: Box::new(e),
                });
            }
        }
    }
    Ok(written)
}

/// Writes an installed snapshot's data to the group's snapshot file (durable) and describes it.
/// The caller holds the group's snapshot writer ([`install_writers`]).
fn write_snapshot_file(
    shared: &Shared,
    groups: &RwLockReadGuard<'_, std::collections::BTreeMap<u64, Arc<Group>>>,
    group_id: u64,
    s: &Snapshot,
) -> Result<SnapshotRecord> {
    let g = groups.get(&group_id).ok_or_else(|| gone(group_id))?;
    let md = s.get_metadata();
    let cs = ConfStateRecord::from(md.get_conf_state());
    let written = snap::write_from(
        &g.dir,
        md.index,
        md.term,
        &cs,
        &s.data[..],
        shared.cipher.as_ref(),
        // Installs are written inside a commit, and close waits for the commit it is in.
        &snap::Unstoppable,
    )?;
    Ok(SnapshotRecord {
        index: md.index,
        term: md.term,
        conf_state: Some(cs),
        data_len: written.data_len,
        data_crc32c: written.data_crc32c,
        plain_len: written.plain_len,
    })
}

/// Refuses a commit the disk has no room for, before anything of it is written: the groups'
/// files are grown as the parts are applied, after the journal record, and a growth that
/// failed then would stop the engine.
fn check_space(shared: &Shared, accepted: &[(&Waiter, Vec<Part>)]) -> Result<()> {
    let need: u64 = accepted
        .iter()
        .flat_map(|(_, ps)| ps.iter())
        .map(|p| {
            p.entries
                .iter()
                .map(|e| 2 * (e.data.len() + e.context.len()) as u64 + 128)
                .sum::<u64>()
        })
        .sum();
    let st = rustix::fs::statvfs(&shared.root)
        .map_err(|e| Error::io("statvfs", &shared.root, e.into()))?;
    let avail = st.f_bavail.saturating_mul(st.f_frsize);
    // Room for the growth steps of the groups' files too.
    let margin = 64 << 20;
    if avail < need.saturating_add(margin) {
        return Err(Error::io(
            "reserve space for a commit in",
            &shared.root,
            std::io::Error::from_raw_os_error(rustix::io::Errno::NOSPC.raw_os_error()),
        ));
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::path::{Path, PathBuf};

    /// The point between a commit's journal record and its apply (the window in which its
    /// checks must still hold).
    pub(super) static BEFORE_APPLY: crate::engine::pauses::Pauses =
        crate::engine::pauses::Pauses::new();

    /// Batches waiting for the pipeline (to tell when callers have queued behind a lead).
    pub(crate) fn waiting(shared: &Shared) -> usize {
        shared.pipeline.lock().waiting.len()
    }

    /// Makes the next commit of the engine at `root` run `f` between its journal record and its
    /// apply (once; the commits of other roots, the other unit tests', go by).
    pub(crate) fn pause_next_commit(root: &Path, f: impl FnOnce() + Send + 'static) {
        BEFORE_APPLY.add(root, f);
    }

    /// A commit that panics (a bug; here a pause that panics between its journal record and
    /// its apply) fails every caller merged into it and stops the engine; the panic goes on in
    /// the leader's thread. The other callers once waited for ever for the result only the
    /// leader sets.
    #[test]
    fn a_commit_that_panics_fails_every_caller_in_it_and_stops_the_engine() {
        use std::sync::mpsc::channel;
        use std::sync::Arc;
        use std::time::Duration;
        let dir = tempfile::tempdir().unwrap();
        let e = Arc::new(crate::Engine::open(dir.path()).unwrap());
        for g in 1..=3 {
            e.create_group(g, 1).unwrap();
        }
        pause_next_commit(dir.path(), || {
            panic!("a bug in the commit (a test's pause)")
        });
        let (done, results) = channel();
        // Held so that the three callers queue into one commit.
        let lead = super::lead(&e.shared);
        // Not scoped: with the defect, two of them never return, and the test must fail
        // rather than wait for them.
        for g in 1..=3u64 {
            let (e, done) = (Arc::clone(&e), done.clone());
            std::thread::spawn(move || {
                let mut en = raft::prelude::Entry::default();
                (en.index, en.term) = (1, 1);
                let mut hs = raft::prelude::HardState::default();
                hs.term = 1;
                let mut b = crate::WriteBatch::new();
                b.save(g, &hs, &[en], &Default::default());
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| e.write(&mut b)));
                let _ = done.send((g, r.map(|r| r.map_err(|e| e.to_string()))));
            });
        }
        while waiting(&e.shared) < 3 {
            std::thread::sleep(Duration::from_millis(1));
        }
        drop(lead);
        let mut got = Vec::new();
        for _ in 0..3 {
            match results.recv_timeout(Duration::from_secs(20)) {
                Ok(r) => got.push(r),
                Err(_) => panic!("callers still waiting after 20 s; results: {got:?}"),
            }
        }
        let panicked = got.iter().filter(|(_, r)| r.is_err()).count();
        let failed = got
            .iter()
            .filter(|(_, r)| matches!(r, Ok(Err(m)) if m.contains("a commit panicked")))
            .count();
        assert_eq!((panicked, failed), (1, 2), "{got:?}");
        let mut b = crate::WriteBatch::new();
        b.save(1, &Default::default(), &[], &Default::default());
        let after = e.write(&mut b).map_err(|e| e.to_string());
        assert!(
            after
                .as_ref()
                .is_err_and(|m| m.contains("a commit panicked")),
            "a write after: {after:?}"
        );
        let g = e.group(1).unwrap();
        let r = raft::Storage::last_index(&g);
        assert!(
            r.as_ref()
                .is_err_and(|m| m.to_string().contains("a commit panicked")),
            "{r:?}"
        );
    }

    /// Every caller of a failed commit gets the error as it was made: the file an I/O error
    /// names (a journal segment, not the root), and the kind the CLI maps to an exit code.
    #[test]
    fn each_caller_gets_the_commits_error_with_its_file_and_kind() {
        let root = Path::new("/root-of-engine");
        let seg = PathBuf::from("/root-of-engine/journal/0000000000000001.jnl");
        let io = Error::Io {
            op: "fdatasync",
            path: seg.clone(),
            source: std::io::Error::new(std::io::ErrorKind::StorageFull, "no space"),
        };
        match again(&io, root) {
            Error::Io { op, path, source } => {
                assert_eq!((op, path), ("fdatasync", seg.clone()));
                assert_eq!(source.kind(), std::io::ErrorKind::StorageFull);
            }
            other => panic!("{other:?}"),
        }
        let eio = Error::Io {
            op: "fdatasync",
            path: seg.clone(),
            source: std::io::Error::from_raw_os_error(5),
        };
        match again(&eio, root) {
            Error::Io { source, .. } => assert_eq!(source.raw_os_error(), Some(5)),
            other => panic!("{other:?}"),
        }
        let big = Error::InvalidArgument("a commit of 5 GiB".to_string());
        assert!(matches!(again(&big, root), Error::InvalidArgument(m) if m == "a commit of 5 GiB"));
        let damage = Error::corrupt(&seg, 4096, "bad record");
        match again(&damage, root) {
            Error::Corrupt {
                path,
                offset,
                reason,
            } => {
                assert_eq!((path, offset, reason.as_str()), (seg, 4096, "bad record"))
            }
            other => panic!("{other:?}"),
        }
    }
}
