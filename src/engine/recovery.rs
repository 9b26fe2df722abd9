//! Opening an engine root: its root record, its groups, and the replay of the journal.
//!
//! Each group is opened from its meta page, which says how far its files are durable (the last
//! index and the payload end of its last file when the page was written) and which journal
//! records it reflects: its files are mapped, files created after that page (which the journal
//! will create again) are removed, and no slot area is scanned. Then every journal record after
//! the root's checkpoint is applied, part by part, to the groups it names (the incarnation
//! tells a removed group from a new one with the same id; records a group's meta page already
//! reflects are skipped), as the commit applied it. Slots past a group's recorded end, which
//! writes after its meta page may have left, are found while the group is read (only pages
//! that hold data) and zeroed before.
//!
//! A group whose other meta copy is damaged may be opened from an older state than its newest
//! (the damaged copy may have held it): that is safe only when the journal still holds every
//! record after the copy in use (its position at or after the root's checkpoint), so that replay
//! brings the group back whole, and when no snapshot the group made on its own since (which the
//! journal does not hold) is lost. Otherwise open refuses, in both modes, naming `wal.meta`.
//!
//! Everything is read and checked (the groups, the journal) before anything is changed (a new
//! root's `engine.meta` made, files removed, slots zeroed, journal segments recycled,
//! `engine.meta` marked open): an open that fails changes nothing. That includes replay's own
//! refusals, a part no commit writes (forged with a valid checksum) and a damaged slot below a
//! replayed `truncate_entries_until`: every record is decoded and checked against the groups as
//! read before the first change ([`check_replay`], following each group's log through the
//! records in numbers, [`LogShape`]), and replay then applies the records, decoding them
//! again. Each pass holds one part decoded at a time: a record of many small parts costs heap
//! in proportion to its bytes, not to its count of parts.
//!
//! The root's key is checked first, against `engine.meta`, whose record is sealed with it (a
//! new root's is made sealed): a missing or wrong key, or a key for a plaintext root, is
//! `Error::Encryption` naming `engine.meta`, whether or not the root has groups.
//!
//! Owns: what an engine root holds at open, and the order: groups as their meta pages say,
//! then the journal. Must never: read a group's whole slot area, apply a record before the
//! groups it names are open, or change a file before every check has passed.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64};

use parking_lot::{Condvar, Mutex, RwLock};

use super::batch;
use super::checkpoint::Checkpointer;
use super::group::{self, Change, Group, JournalPos};
use super::journal::{Journal, LastEnd, Opened, RootState};
use super::open_threads::{beside, in_parallel};
use super::replayed::{self, LogShape};
use super::{commit, fds, EngineOptions, Shared, GROUPS_DIR, JOURNAL_DIR};
use crate::error::{Error, Result};
use crate::options::RecoveryMode;
use crate::proto::{EngineGroupRecord, EngineRecord, MetaRecord, SnapshotRecord};
use crate::store::log_file::{self, Access, LogFile, PastEnd, PAYLOAD_START, SLOTS_PER_FILE};
use crate::store::meta::{Copies, MetaFile, OtherCopy, PageRecord};
use crate::store::recovery as dir_recovery;
use crate::store::wal::Wal;
use crate::sys::crypto::Cipher;
use crate::sys::fsutil;

/// The largest journal sequence number or incarnation a meta page may hold (a commit a
/// nanosecond would take 146 years to reach it), the bound of the pages' own sequence.
pub(crate) use crate::store::meta::MAX_SEQ;

/// Opens the engine root `root` (whose lock the caller holds in `lock`).
pub(crate) fn open(
    root: PathBuf,
    opts: EngineOptions,
    cipher: Option<Cipher>,
    lock: fsutil::DirLock,
) -> Result<Shared> {
    let mode = opts.recovery_mode;
    let root_file = root.join(<EngineRecord as PageRecord>::FILE);
    // A new root's `engine.meta` is made once every check has passed (a refused open changes
    // nothing); until then its record is the fresh one. A root whose groups outlived its
    // `engine.meta` is refused (no group holds an incarnation below a fresh root's next).
    // `engine.meta` is sealed with the root's key: its flag says whether the root is encrypted,
    // with or without groups, and a key that does not fit is refused here, before anything else
    // is read.
    let (root_meta, mut root_record) = if root_file.exists() {
        let (m, r) = MetaFile::<EngineRecord>::open(&root, cipher.as_ref())?;
        (Some(m), r)
    } else {
        let fresh = EngineRecord {
            checkpoint_seq: 0,
            next_incarnation: 1,
            open: false,
            journal_begun: false,
        };
        (None, fresh)
    };
    if mode == RecoveryMode::AbsoluteConsistency {
        if let Some(e) = root_meta
            .as_ref()
            .and_then(|m| m.copies().damage(&root_file))
        {
            return Err(e);
        }
    }
    check_root_numbers(&root_file, &root_record)?;
    // Groups without `engine.meta`: refused before the journal is read (whose checkpoint
    // would read as 0, and a trimmed journal as records missing).
    if root_meta.is_none() {
        if let Some(id) = any_group_dir(&root)? {
            return Err(Error::MissingFile {
                path: root_file,
                reason: format!(
                    "the root holds groups (group {id}'s directory among them), but no engine.meta: the root's checkpoint and the incarnations it gave out are lost"
                ),
            });
        }
    }

    // Not capped at the cores: from a cold cache each group's reads (directory, meta page,
    // header, a slot page) wait on the device, and the threads keep that many in flight
    // (docs/PERFORMANCE.md, "Reopen from a cold cache"); warm, they cost nothing measurable.
    let threads = opts.recovery_threads;
    let checkpoint_seq = root_record.checkpoint_seq;
    let begun = root_record.journal_begun;
    let journal_dir = root.join(JOURNAL_DIR);
    let new_journal = !journal_dir.exists();
    let read_all = || read_groups(&root, mode, cipher.as_ref(), checkpoint_seq, threads);
    let open_journal = || {
        Journal::open(
            &journal_dir,
            opts.journal_segment_bytes,
            max_spares(&opts),
            cipher.clone(),
            RootState {
                checkpoint_seq,
                closed_cleanly: !root_record.open,
                older_copy: root_meta
                    .as_ref()
                    .and_then(|m| m.copies().damage(&root_file)),
            },
            mode,
            super::checkpoint::held_run_bytes(&opts),
        )
        .map(|mut opened| {
            opened.journal.set_rest_after(opts.journal_rest_after);
            opened
        })
    };
    // An existing journal is read on a thread of its own while the groups are read: its read
    // waits on the disk (direct appends leave no segment in the page cache), the groups' on
    // system calls. A new journal's directory is made only once the groups have been read
    // (an open that fails on damage changes nothing). The groups' error comes first, as
    // without the thread.
    let (read, mut opened) = if threads >= 2 && !new_journal {
        let (read, opened) = beside(open_journal, read_all);
        let read = read?;
        let opened =
            opened.ok_or_else(|| Error::invariant("the journal was read on no thread at open"))?;
        (read, opened?)
    } else {
        let read = read_all()?;
        if new_journal {
            // Refused before the directory is made (a refused open changes nothing).
            check_journal_found(
                &journal_dir,
                (checkpoint_seq, begun),
                None,
                checkpoint_seq,
                &read,
            )?;
        }
        (read, open_journal()?)
    };
    if !new_journal {
        // An existing journal, once read (a new one was checked before it was made).
        check_journal_found(
            &journal_dir,
            (checkpoint_seq, begun),
            Some(opened.segment_files),
            opened.journal.last_seq(),
            &read,
        )
        .map_err(|e| cut_before_durable(&mut opened, cipher.as_ref(), e))?;
    }
    // With engine.meta's newest copy damaged, the older one in use (tolerant mode) may
    // predate groups created since: none of the incarnations on disk is given out again.
    root_record.next_incarnation = match &root_meta {
        None => root_record.next_incarnation,
        Some(m) => next_incarnation_in_use(
            m.copies(),
            root_record.next_incarnation,
            read.groups.iter().map(|g| g.eng.incarnation).chain(
                opened
                    .records
                    .iter()
                    .flat_map(|r| batch::parts(&r.body, r.seq).map_while(Result::ok))
                    .map(|p| p.incarnation),
            ),
        ),
    };
    for g in &read.groups {
        check_incarnation(
            &root_file,
            g.id,
            g.meta_file.path(),
            g.eng.incarnation,
            root_record.next_incarnation,
        )?;
        check_fallback_snapshot(g, &opened.records)?;
    }
    // Replay's own checks, before anything changes: every record decoded here (and again
    // by `replay`, one part at a time).
    check_replay(&read.groups, &opened.records, root_record.next_incarnation)?;
    // Every check passed: now the tidying (and a new root's `engine.meta`).
    let mut root_meta = match root_meta {
        Some(m) => m,
        None => MetaFile::create(&root, &root_record, cipher.as_ref())?,
    };
    let with_snap_dir: Vec<u64> = read
        .groups
        .iter()
        .filter(|g| g.found.has_snap_dir)
        .map(|g| g.id)
        .collect();
    let groups = finish_groups(&root, read, cipher.as_ref(), threads)?;
    opened.journal.tidy()?;
    // A segment durable before `engine.meta` says the journal has begun: from then on a
    // journal found with no segment lost its records (a young root's too, with no checkpoint
    // yet to tell).
    opened.journal.begin()?;
    if new_journal {
        // The journal's directory entry, durable before a record in it is acknowledged (the
        // segments' names are made durable in it, but a power loss could lose the directory).
        fsutil::sync_dir(&root)?;
    }
    // Marked open before anything is replayed: from now on a group directory may depend on
    // the journal, and `DiskStorage::open` refuses it until a clean close.
    root_record.open = true;
    root_record.journal_begun = true;
    root_meta.store(&root_record)?;
    root_meta.flush()?;

    let open_files = super::fds::OpenFiles::new(opts.max_open_files);
    let shared = Shared {
        root,
        opts,
        cipher,
        groups: RwLock::new(groups),
        journal: Mutex::new(opened.journal),
        journal_cv: Condvar::new(),
        preparer: Default::default(),
        stopping: AtomicBool::new(false),
        pipeline: Mutex::new(commit::Queue::default()),
        pipeline_cv: Condvar::new(),
        applied_seq: AtomicU64::new(root_record.checkpoint_seq),
        root_meta: Mutex::new((root_meta, root_record)),
        closed: AtomicBool::new(false),
        poisoned: Mutex::new(None),
        is_poisoned: AtomicBool::new(false),
        checkpointer: Checkpointer::default(),
        flushes: Default::default(),
        unwritten: Mutex::new(Vec::new()),
        open_files,
        tail_bytes: AtomicU64::new(0),
        tails_due: AtomicBool::new(false),
        lock: Mutex::new(Some(lock)),
        snapshot_steps: RwLock::new(()),
        snapshot_turns: fds::SnapshotTurns::new(),
        removals: Mutex::new(()),
        snapshot_tmps: Mutex::new(Vec::new()),
    };
    // The journal as found, durable, and a torn end cut durably, before anything is replayed
    // (replay may change a group's files in place, as the record it applies says: a record a
    // killed engine left in the page cache only must be durable first) and before anything new
    // is acknowledged (appends after the cut must never sit behind a torn record that a later
    // open would take for damage).
    {
        let mut journal = shared.journal.lock();
        journal.settle()?;
        if shared.opts.sync_writes {
            journal.write_directly();
        }
    }
    replay(&shared, opened.records)?;
    // Snapshot files no group names: an application's write that a close (or a crash)
    // stopped after its file was renamed and before the group took it, or an install's file
    // written before its record. Only the groups whose listing showed a `snap/` directory: the
    // others cost nothing (a lookup each was 10-20% of a warm reopen of 1,024 groups).
    let groups = shared.groups.read();
    for g in with_snap_dir.iter().filter_map(|id| groups.get(id)) {
        let current = g.with_log(|log| {
            Ok(log
                .meta
                .snapshot
                .as_ref()
                .filter(|s| s.data_len > 0)
                .map(|s| (s.term, s.index)))
        })?;
        let keep = current.map(|(term, index)| crate::store::snap::file_name(term, index));
        crate::store::snap::tidy(&g.dir, keep.as_deref(), false)?;
        if let Some(t) = current {
            *g.tidied.lock() = t;
        }
    }
    // What a restarted node reads at once, asked for last (open's own reads and flushes never
    // queue behind it) and read while the caller goes on: from a cold cache, each group's
    // first `term()` read a slot page, group after group on the caller's thread. On this
    // thread: asking waits while the device's queue is full, and a thread of its own raced
    // the caller's first lookups and saved little (docs/PERFORMANCE.md).
    for g in groups.values() {
        g.prefetch_first_slot();
    }
    drop(groups);
    Ok(shared)
}

/// The journal holds every record the root says it wrote: a segment file once `engine.meta`
/// names a checkpoint or says the journal has begun (`root`: both;
/// [`segments_missing`](super::journal::segments_missing)), and every record a group's meta
/// page reflects ([`page_past_end`](super::journal::page_past_end); `last_seq`: the journal's
/// last record, or its checkpoint). Lost segments are an error naming the journal's
/// directory, rather than a journal started afresh without their records, which gives their
/// sequence numbers out again. A root an earlier build made, with no checkpoint and no page
/// past the journal's end, may have lost records all the same: nothing on it tells that from
/// a root never written (its next open marks the journal begun).
fn check_journal_found(
    dir: &Path,
    (checkpoint_seq, begun): (u64, bool),
    segment_files: Option<(usize, usize)>,
    last_seq: u64,
    read: &ReadGroups,
) -> Result<()> {
    if let Some(e) = super::journal::segments_missing(dir, checkpoint_seq, begun, segment_files) {
        return Err(e);
    }
    let needed = |g: &ReadGroup| JournalPos::of_page(&g.eng).last_needed();
    let ahead = read
        .groups
        .iter()
        .filter(|g| needed(g) > last_seq)
        .max_by_key(|g| needed(g));
    match ahead {
        Some(g) => Err(super::journal::page_past_end(
            dir,
            g.meta_file.path(),
            needed(g),
            last_seq,
        )),
        None => Ok(()),
    }
}

/// `e`, a group's meta page past the end of the journal: the page shows that records after
/// the journal's end were durable. When the journal ends in a segment that is there, at a
/// torn record the default mode cut (`LastEnd::Torn`), or where the last segment's records end
/// with valid later records after them (a zeroed record: `journal::lost_after_end`), what is
/// damaged is that segment there: the error names it, with `e` in its reason (not the
/// journal's directory, as if segments were missing, which stays the error otherwise).
fn cut_before_durable(opened: &mut Opened, cipher: Option<&Cipher>, e: Error) -> Error {
    let Error::MissingFile { reason: past, .. } = &e else {
        return e;
    };
    let at_end = match opened.end.take() {
        Some(LastEnd::Torn(cut)) => Some(cut),
        // Unreadable, it is not named: the journal's refusal stands.
        Some(LastEnd::Clean { path, offset, want }) => {
            super::journal::lost_in_segment(&path, offset, want, cipher)
                .ok()
                .flatten()
        }
        None => None,
    };
    match at_end {
        Some(Error::Corrupt {
            path,
            offset,
            reason,
        }) => Error::Corrupt {
            path,
            offset,
            reason: format!("{reason}; and records after it were durable: {past}"),
        },
        _ => e,
    }
}

/// Spare segments kept: as many as a checkpoint frees (the journal then reuses its files
/// instead of making new ones), at least one.
fn max_spares(opts: &EngineOptions) -> usize {
    let per_checkpoint = opts.checkpoint_bytes / opts.journal_segment_bytes.max(1);
    (per_checkpoint as usize + 1).clamp(1, 16)
}

/// The groups under `root/groups`, read and checked, and the leftovers of creations and
/// removals cut short (which open removes).
struct ReadGroups {
    groups: Vec<ReadGroup>,
    leftovers: Vec<PathBuf>,
}

/// Reads every group under `root/groups` (changing nothing), on up to `threads` threads
/// ([`in_parallel`]). A damaged group fails it with the same error as on one thread: the
/// first in the directory's order.
fn read_groups(
    root: &Path,
    mode: RecoveryMode,
    cipher: Option<&Cipher>,
    checkpoint_seq: u64,
    threads: usize,
) -> Result<ReadGroups> {
    let dir = root.join(GROUPS_DIR);
    let mut found = Vec::new();
    let mut leftovers = Vec::new();
    for ent in fs::read_dir(&dir).map_err(|e| Error::io("read directory", &dir, e))? {
        let ent = ent.map_err(|e| Error::io("read directory", &dir, e))?;
        if !ent.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            continue;
        }
        let Some(name) = ent.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if let Some(id) = parse_group_name(&name) {
            found.push((ent.path(), id));
        } else if name
            .strip_suffix(".tmp")
            .or_else(|| name.strip_suffix(".removing"))
            .and_then(parse_group_name)
            .is_some()
        {
            leftovers.push(ent.path());
        }
    }
    // By id, whatever order the directory lists them in: of several damaged groups, open
    // names the lowest's, as the read-only tools do.
    found.sort_unstable_by_key(|&(_, id)| id);
    let groups = in_parallel(threads, found, |(path, id)| {
        read_group(&path, id, mode, cipher, checkpoint_seq)
    })
    .into_iter()
    .collect::<Result<Vec<_>>>()?;
    Ok(ReadGroups { groups, leftovers })
}

/// Opens the groups read, removing what their meta pages do not rely on and what a crash
/// during a creation or a removal left; the groups on up to `threads` threads. A group that
/// fails here does not stop the others' preparation (each touches only its own files, and
/// the open fails all the same, with the first failing group's error in directory order).
fn finish_groups(
    root: &Path,
    read: ReadGroups,
    cipher: Option<&Cipher>,
    threads: usize,
) -> Result<BTreeMap<u64, std::sync::Arc<Group>>> {
    let mut groups = BTreeMap::new();
    // Threads only for groups whose files change: finishing the others is a few allocations
    // each, which 1,024 groups did in 2 ms on one thread and 5 ms on 16 (docs/PERFORMANCE.md,
    // "Reopen: the slots past the end read with the rest").
    let threads = if read.groups.iter().any(ReadGroup::changes_files) {
        threads
    } else {
        1
    };
    let finished = in_parallel(threads, read.groups, |g| (g.id, finish_group(g, cipher)));
    for (id, g) in finished {
        groups.insert(id, std::sync::Arc::new(g?));
    }
    if !read.leftovers.is_empty() {
        for p in &read.leftovers {
            fs::remove_dir_all(p).map_err(|e| Error::io("remove", p, e))?;
        }
        fsutil::sync_dir(&root.join(GROUPS_DIR))?;
    }
    Ok(groups)
}

/// The id of a group directory under `root/groups`, if there is one (none, or no `groups/`).
pub(crate) fn any_group_dir(root: &Path) -> Result<Option<u64>> {
    let dir = root.join(GROUPS_DIR);
    let listing = match fs::read_dir(&dir) {
        Ok(l) => l,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("read directory", &dir, e)),
    };
    for ent in listing {
        let ent = ent.map_err(|e| Error::io("read directory", &dir, e))?;
        if let Some(id) = ent.file_name().to_str().and_then(parse_group_name) {
            return Ok(Some(id));
        }
    }
    Ok(None)
}

/// A group directory's name: its id in decimal, canonical spelling only.
pub(crate) fn parse_group_name(name: &str) -> Option<u64> {
    let id: u64 = name.parse().ok()?;
    (id.to_string() == name).then_some(id)
}

/// One group read from its meta page, with what open changes in its directory (nothing is
/// changed yet).
struct ReadGroup {
    id: u64,
    dir: PathBuf,
    meta_file: MetaFile,
    meta: MetaRecord,
    eng: EngineGroupRecord,
    /// Its files, as [`read_files`] found them.
    found: FilesRead,
}

impl ReadGroup {
    /// Finishing it changes its files: files to remove, or slots past its log to zero.
    fn changes_files(&self) -> bool {
        let f = &self.found;
        !f.remove.is_empty() || f.past_end.as_ref().is_some_and(|p| !p.stale.is_empty())
    }
}

/// Reads one group from its meta page: the files it relies on, mapped (their headers read, and
/// in the last file the slot before the recorded end and the written slot pages past it, by
/// `pread`: [`PastEnd`]). A meta copy in use while the other one is damaged is checked
/// against the journal's checkpoint ([`check_meta_fallback`]).
fn read_group(
    dir: &Path,
    id: u64,
    mode: RecoveryMode,
    cipher: Option<&Cipher>,
    checkpoint_seq: u64,
) -> Result<ReadGroup> {
    let (mut meta_file, meta) = MetaFile::open(dir, cipher)?;
    meta_file.detach();
    dir_recovery::check_meta_bounds(dir, &meta)?;
    let Some(eng) = meta.engine else {
        return Err(Error::corrupt(
            meta_file.path(),
            0,
            "the meta page of an engine group has no engine record",
        ));
    };
    // Bounded like the page's other indexes, so that no arithmetic on them overflows (a
    // forged page with a valid checksum).
    check_group_numbers(meta_file.path(), &eng)?;
    check_meta_fallback(meta_file.path(), meta_file.copies(), &eng, checkpoint_seq)?;
    if mode == RecoveryMode::AbsoluteConsistency {
        if let Some(e) = meta_file.copies().damage(meta_file.path()) {
            return Err(e);
        }
    }
    if meta.group_id != id {
        return Err(Error::corrupt(
            meta_file.path(),
            0,
            format!(
                "the meta page names group {}, its directory {id}",
                meta.group_id
            ),
        ));
    }
    let copies = meta_file.copies().clone();
    let found = read_files(dir, &meta, &eng, cipher).map_err(|e| copies.explain(e))?;
    Ok(ReadGroup {
        id,
        dir: dir.to_path_buf(),
        meta_file,
        meta,
        eng,
        found,
    })
}

/// What [`read_files`] finds in a group's directory.
struct FilesRead {
    /// The files the meta page relies on, mapped.
    files: std::collections::VecDeque<LogFile>,
    next_file_id: u64,
    wal_last: u64,
    /// Files open removes: obsolete ones, files made after the meta page, `*.tmp` leftovers.
    remove: Vec<PathBuf>,
    /// What lies past the log in its last file (slots open zeroes, the last entry's term).
    past_end: Option<PastEnd>,
    /// The group's directory holds `snap/` (open tidies only those: see [`open`]).
    has_snap_dir: bool,
}

/// The files a group's meta page relies on, mapped, and what open removes or clears.
fn read_files(
    dir: &Path,
    meta: &MetaRecord,
    eng: &EngineGroupRecord,
    cipher: Option<&Cipher>,
) -> Result<FilesRead> {
    let listing = dir_recovery::list_dir(dir)?;
    let has_snap_dir = listing.has_snap_dir;
    let first_file_id = meta.first_file_id.max(1);
    let mut remove: Vec<PathBuf> = listing.leftovers;
    let mut ids = Vec::new();
    for id in listing.ids {
        if id < first_file_id {
            remove.push(dir.join(log_file::file_name(id)));
        } else {
            ids.push(id);
        }
    }
    let last = eng.last_index;
    let tail_id = eng.last_file_id;
    // Files made after the meta page was written: the journal makes them again.
    for &id in ids.iter().filter(|&&i| i > tail_id) {
        remove.push(dir.join(log_file::file_name(id)));
    }
    ids.retain(|&i| i <= tail_id);
    let mut files = std::collections::VecDeque::new();
    let mut next_file_id = first_file_id.max(tail_id + 1);
    let mut wal_last = 0;
    let mut past_end = None;
    let snap_index = meta.snapshot.as_ref().map_or(0, |s| s.index);
    if let Some(&first_id) = ids.first() {
        // Files wholly below the snapshot may be gone from the front; none may be missing
        // after the first one left.
        for want in first_id..=tail_id {
            if !ids.contains(&want) {
                return Err(Error::MissingFile {
                    path: dir.join(log_file::file_name(want)),
                    reason: format!(
                        "the meta page says the log ends at index {last} in {}",
                        log_file::file_name(tail_id)
                    ),
                });
            }
            let path = dir.join(log_file::file_name(want));
            let f = if want == tail_id {
                // Slots past the recorded end were written after the meta page (the journal
                // writes them again, or they belong to records that never became durable):
                // found now, on the descriptor the file is opened with, and zeroed once every
                // group has been read, so that nothing past the end of the log looks like
                // entries.
                let first_base = files.front().map(LogFile::base);
                let (f, past) = LogFile::open_engine_tail(&path, want, cipher, |base| {
                    // The log's first index is in this file when it is the group's first.
                    let log_from = first_base
                        .is_none()
                        .then(|| (snap_index + 1).saturating_sub(base))
                        .filter(|&k| k < SLOTS_PER_FILE)
                        .map(|k| k as u32);
                    (
                        first_slot_past(last, first_base.unwrap_or(base), base),
                        log_from,
                    )
                })?;
                if last >= f.base().saturating_add(SLOTS_PER_FILE) {
                    return Err(Error::corrupt(
                        dir.join(crate::store::meta::META_FILE),
                        0,
                        format!(
                            "the meta page says the log ends at index {last} in {}, which holds indexes {} to {}",
                            log_file::file_name(want),
                            f.base(),
                            f.base() + SLOTS_PER_FILE - 1
                        ),
                    ));
                }
                past_end = Some(past);
                f
            } else {
                match LogFile::open(&path, want, Access::Detached, cipher) {
                    // Wholly below the snapshot (a crash kept it before its removal): nothing
                    // of the log, so its damage never fails open (docs/DESIGN.md §4). It goes,
                    // with the files before it, as in a `DiskStorage` directory.
                    Err(Error::Corrupt { .. })
                        if dir_recovery::wholly_compacted(
                            dir,
                            &(want + 1..=tail_id).collect::<Vec<_>>(),
                            want,
                            snap_index,
                            cipher,
                        )? =>
                    {
                        remove.extend(files.drain(..).map(|f| f.path().to_path_buf()));
                        remove.push(path);
                        continue;
                    }
                    f => f?,
                }
            };
            if let Some(first) = files.front() {
                let expected = LogFile::base(first) + SLOTS_PER_FILE * (want - first.id());
                if f.base() != expected {
                    return Err(Error::corrupt(
                        f.path(),
                        log_file::HEADER_OFFSET as u64,
                        format!(
                            "file starts at index {} but must start at {expected}",
                            f.base()
                        ),
                    ));
                }
            }
            files.push_back(f);
        }
        let n = files.len();
        for (pos, f) in files.iter_mut().enumerate() {
            let len = f.len();
            let p = eng.tail_payload_end;
            let end = if pos + 1 == n && (PAYLOAD_START..=len).contains(&p) {
                p
            } else {
                len
            };
            f.set_recovered(0, end);
        }
        let base = files.front().map_or(1, LogFile::base);
        // The log goes on from the snapshot: the first file must hold index `snap_index + 1`
        // or an index before it, whatever the page says of the log's end.
        if let Some(first) = files.front().filter(|_| base > snap_index + 1) {
            return Err(dir_recovery::late_first_file(
                dir,
                first.id(),
                first_file_id,
                base,
                snap_index,
            ));
        }
        next_file_id = tail_id + 1;
        wal_last = log_end(last, base);
    } else if tail_id >= first_file_id && last > meta.snapshot.as_ref().map_or(0, |s| s.index) {
        return Err(Error::MissingFile {
            path: dir.join(log_file::file_name(tail_id)),
            reason: format!("the meta page says the log ends at index {last} in it"),
        });
    }
    Ok(FilesRead {
        files,
        next_file_id,
        wal_last,
        remove,
        past_end,
        has_snap_dir,
    })
}

/// Where a group's log ends: at `last` (its meta page's), or just before the first file's
/// first index `first_base` when that lies after it (a snapshot past the log).
fn log_end(last: u64, first_base: u64) -> u64 {
    last.max(first_base.saturating_sub(1))
}

/// The first slot past the log ([`log_end`]) in its last file, whose first index is `base`: 0
/// when the log ends before this file (every written slot of it lies past the end); no more
/// than the file's slots.
fn first_slot_past(last: u64, first_base: u64, base: u64) -> u32 {
    log_end(last, first_base)
        .saturating_add(1)
        .saturating_sub(base)
        .min(SLOTS_PER_FILE) as u32
}

/// Opens a group read by [`read_group`]: the written slots past its log zeroed, the files its
/// meta page does not rely on removed.
fn finish_group(g: ReadGroup, cipher: Option<&Cipher>) -> Result<Group> {
    let ReadGroup {
        id,
        dir,
        meta_file,
        meta,
        eng,
        found:
            FilesRead {
                mut files,
                next_file_id,
                wal_last,
                remove,
                past_end,
                has_snap_dir: _,
            },
    } = g;
    let mut last_term = None;
    if let (Some(past), Some(tail)) = (past_end, files.back_mut()) {
        for (lo, hi) in past.stale {
            tail.zero_slots(lo, hi)?;
        }
        // Clearing opened the file's descriptor; no group keeps one from open: the budget
        // (module `fds`) does not know them yet, and every group so cleared would keep its own.
        tail.release_fd();
        // The term of the log's last entry, as the files' lookup gives it (0 unless the slot
        // holds that index), read with the slots past it.
        last_term = past
            .last_slot
            .map(|(term, index)| if index == wal_last { term } else { 0 });
    }
    if !remove.is_empty() {
        fsutil::remove_files(&dir, remove.iter().map(PathBuf::as_path))?;
    }
    let durable_files = match (files.front(), files.back()) {
        (Some(a), Some(b)) => (a.id(), b.id()),
        _ => (1, 0),
    };
    let mut wal = Wal::from_parts(&dir, files, next_file_id, wal_last, cipher.cloned());
    wal.set_engine();
    Ok(group::assemble(
        id,
        dir,
        eng.incarnation,
        meta,
        wal,
        meta_file,
        JournalPos::of_page(&eng),
        durable_files,
        last_term,
    ))
}

/// The copy of a group's meta page in use while the other copy is damaged: the damaged one
/// may have held a newer state, whose changes replay must then bring back. It can only if the
/// journal still holds every record after the copy in use, that is, if its position is at or
/// after the root's checkpoint (the journal is trimmed up to it). Otherwise the error names
/// `wal.meta`, the copies, the position and the checkpoint (in both modes).
pub(crate) fn check_meta_fallback(
    path: &Path,
    copies: &Copies,
    eng: &EngineGroupRecord,
    checkpoint_seq: u64,
) -> Result<()> {
    let OtherCopy::Damaged { offset, reason } = &copies.other else {
        return Ok(());
    };
    if eng.journal_seq >= checkpoint_seq {
        return Ok(());
    }
    let (used, damaged) = (copies.current + 1, 2 - copies.current);
    Err(Error::corrupt(
        path,
        *offset,
        format!(
            "copy {damaged} of the meta state is damaged ({reason}); copy {used} (sequence {}) reflects the journal up to record {}, but the journal holds only the records after the checkpoint, record {checkpoint_seq}: if copy {damaged} held the newest state, what records {}..={checkpoint_seq} changed in this group is in neither, so open does not fall back to copy {used} (a crash that tore an update never acknowledged looks the same)",
            copies.seq,
            eng.journal_seq,
            eng.journal_seq + 1
        ),
    ))
}

/// `engine.meta`'s numbers, bounded so that no arithmetic on them overflows (a forged page
/// with a valid checksum): both count up, one a commit and one a created group.
pub(crate) fn check_root_numbers(path: &Path, r: &EngineRecord) -> Result<()> {
    if r.checkpoint_seq > MAX_SEQ || r.next_incarnation > MAX_SEQ {
        return Err(Error::corrupt(
            path,
            0,
            format!(
                "engine.meta holds a number past {MAX_SEQ}: checkpoint record {}, next incarnation {}",
                r.checkpoint_seq, r.next_incarnation
            ),
        ));
    }
    Ok(())
}

/// A group meta page's engine numbers, bounded like its other indexes (`path`: the page).
pub(crate) fn check_group_numbers(path: &Path, eng: &EngineGroupRecord) -> Result<()> {
    if eng.last_index > log_file::MAX_INDEX
        || eng.last_file_id > log_file::MAX_INDEX
        || eng.journal_seq > MAX_SEQ
        || eng.incarnation > MAX_SEQ
        || eng.incarnation == 0
    {
        return Err(Error::corrupt(
            path,
            0,
            format!(
                "the meta page holds a number out of its range (indexes and positions up to {}, incarnations from 1): last index {}, last file {}, journal record {}, incarnation {}",
                log_file::MAX_INDEX,
                eng.last_index,
                eng.last_file_id,
                eng.journal_seq,
                eng.incarnation
            ),
        ));
    }
    Ok(())
}

/// `engine.meta`'s next incarnation as open uses it (`copies`: its two copies; `found`: the
/// incarnations of the groups' pages and of the journal's parts). Its newest copy damaged, open
/// (tolerant) uses the older one, which may hold a next incarnation from before groups created
/// since: raised past every incarnation found (those below the bound, so that it stays within
/// it), so that none is given out twice. Otherwise as the page holds it (what lies at or past
/// it is damage).
pub(crate) fn next_incarnation_in_use(
    copies: &Copies,
    next: u64,
    found: impl IntoIterator<Item = u64>,
) -> u64 {
    if !matches!(copies.other, OtherCopy::Damaged { .. }) {
        return next;
    }
    found
        .into_iter()
        .filter(|&i| i < MAX_SEQ)
        .map(|i| i + 1)
        .fold(next, u64::max)
}

/// A group's incarnation was given out before it was made: `engine.meta` (`root_meta`) holds
/// the next one, durable before any group takes it (`Engine::create_group`). A group holding
/// one at or past it means one of the two pages is damaged (or `engine.meta`'s newest copy is,
/// and the older one in use predates the group); opening would give that incarnation out
/// again, and a group made with it would take the journal's records of the group that holds
/// it.
pub(crate) fn check_incarnation(
    root_meta: &Path,
    group_id: u64,
    group_meta: &Path,
    incarnation: u64,
    next_incarnation: u64,
) -> Result<()> {
    if incarnation < next_incarnation {
        return Ok(());
    }
    Err(Error::corrupt(
        root_meta,
        0,
        format!(
            "engine.meta gives out incarnation {next_incarnation} next, but group {group_id}'s meta page ({}) holds incarnation {incarnation}, which it cannot have been given yet",
            group_meta.display()
        ),
    ))
}

/// With the other meta copy damaged, the group's snapshot after replay (`snapshot`: the copy
/// in use's, or the last one the journal installs after it) must be the newest the group
/// made: a snapshot the group took itself (`create_snapshot`) is in its meta page only, not
/// in the journal, so a copy older than it (the damaged one held it) would lose it. Seen by
/// the files: the snapshot named must have its file (a newer snapshot tidies older files
/// away), and no snapshot file may be newer.
pub(crate) fn check_fallback_snapshot_files(
    dir: &Path,
    copies: &Copies,
    snapshot: Option<&SnapshotRecord>,
) -> Result<()> {
    let OtherCopy::Damaged { offset, .. } = &copies.other else {
        return Ok(());
    };
    let path = dir.join(crate::store::meta::META_FILE);
    let (used, damaged) = (copies.current + 1, 2 - copies.current);
    let (term, index, data) = snapshot.map_or((0, 0, 0), |s| (s.term, s.index, s.data_len));
    let refuse = |what: String| {
        Error::corrupt(
            &path,
            *offset,
            format!(
                "copy {damaged} of the meta state is damaged; with copy {used} (sequence {}) and the journal, the group's snapshot is at index {index}, but {what}: copy {damaged} held a newer snapshot, which falling back would lose (a crash that tore an update never acknowledged looks the same)",
                copies.seq
            ),
        )
    };
    let named = crate::store::snap::path(dir, term, index);
    if data > 0 && !named.exists() {
        return Err(refuse(format!("its file {} is gone", named.display())));
    }
    let snap_dir = dir.join(crate::store::snap::SNAP_DIR);
    let listing = match fs::read_dir(&snap_dir) {
        Ok(l) => l,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io("read directory", &snap_dir, e)),
    };
    for ent in listing {
        let ent = ent.map_err(|e| Error::io("read directory", &snap_dir, e))?;
        let name = ent.file_name();
        let Some((_, i)) = name.to_str().and_then(crate::store::snap::parse_file_name) else {
            continue;
        };
        if i > index {
            return Err(refuse(format!(
                "{} holds a snapshot at index {i}",
                ent.path().display()
            )));
        }
    }
    Ok(())
}

/// [`check_fallback_snapshot_files`] for a group read at open, with the snapshots the journal's
/// records after its meta page install.
fn check_fallback_snapshot(g: &ReadGroup, records: &[super::journal::Record]) -> Result<()> {
    if !matches!(g.meta_file.copies().other, OtherCopy::Damaged { .. }) {
        return Ok(());
    }
    let mut snapshot = g.meta.snapshot.clone();
    for rec in records.iter().filter(|r| r.seq > g.eng.journal_seq) {
        for part in batch::parts_at(&rec.body, rec.seq, &rec.segment, rec.at) {
            let part = part?;
            if part.group_id == g.id && part.incarnation == g.eng.incarnation {
                // As replay takes it: an install older than the snapshot is in the past
                // (`replayed::settle`).
                let current = snapshot.as_ref().map_or(0, |s| s.index);
                if let Some(s) = part.snapshot.filter(|s| s.index >= current) {
                    snapshot = Some(s);
                }
            }
        }
    }
    check_fallback_snapshot_files(&g.dir, g.meta_file.copies(), snapshot.as_ref())
}

/// Replay's checks, made on the groups as read, before open changes anything (so that an open
/// that refuses changes nothing, as for damage found while reading): every record after the
/// checkpoint decoded, each part checked as [`replay`] checks it against its group's log as
/// the records before it leave it ([`LogShape`]: whose part it is, its own shape, no gap, its
/// commit within the log), then the slots each group's replayed truncations will seal again
/// (`LogFile::verify_slot`, as `Wal::clear_data` checks each). The tools replay into the same
/// [`LogShape`]. [`replay`] decodes the records again, and checks each part again as it
/// applies it: neither holds more than one part decoded at a time.
fn check_replay(
    groups: &[ReadGroup],
    records: &[super::journal::Record],
    next_incarnation: u64,
) -> Result<()> {
    let mut shapes: BTreeMap<u64, (&ReadGroup, LogShape)> = groups
        .iter()
        .map(|g| {
            let snapshot = g.meta.snapshot.as_ref().map_or(0, |s| s.index);
            (g.id, (g, LogShape::new(snapshot, g.found.wal_last)))
        })
        .collect();
    for rec in records {
        let mut numbered: BTreeMap<u64, u32> = BTreeMap::new();
        for part in batch::parts_at(&rec.body, rec.seq, &rec.segment, rec.at) {
            let part = &mut part?;
            replayed::check_given_out(part, next_incarnation)
                .map_err(|e| malformed(rec, part.group_id, e))?;
            let Some((g, shape)) = shapes.get_mut(&part.group_id) else {
                continue;
            };
            if !replayed::is_for(part, g.eng.incarnation).map_err(|e| malformed(rec, g.id, e))? {
                continue;
            }
            let number = numbered.entry(g.id).or_default();
            *number += 1;
            if JournalPos::of_page(&g.eng).reflects(rec.seq, *number) {
                continue;
            }
            check_part(
                rec,
                g.id,
                &g.dir,
                part,
                shape.snapshot_index,
                shape.last_index(),
            )?;
            shape.take(part);
        }
    }
    for (g, shape) in shapes.values() {
        let Some((from, to)) = shape.files_cleared() else {
            continue;
        };
        for f in &g.found.files {
            let base = f.base();
            for index in from.max(base)..to.min(base.saturating_add(SLOTS_PER_FILE)) {
                // `index - base` < SLOTS_PER_FILE: it fits a u32.
                f.verify_slot((index - base) as u32)?;
            }
        }
    }
    Ok(())
}

/// Applies the journal's records after the checkpoint (checked by [`check_replay`]) to the
/// groups they name, then zeroes the slots past each replayed group's end that earlier writes
/// may have left.
fn replay(shared: &Shared, records: Vec<super::journal::Record>) -> Result<()> {
    let groups = shared.groups.read();
    let next_incarnation = shared.root_meta.lock().1.next_incarnation;
    // Each group's highest replayed `truncate_entries_until`: its files' part is applied once
    // replay ends (`Group::clear_files_below`).
    let mut truncated: BTreeMap<u64, u64> = BTreeMap::new();
    for rec in records {
        let mut numbered: BTreeMap<u64, u32> = BTreeMap::new();
        for part in batch::parts_at(&rec.body, rec.seq, &rec.segment, rec.at) {
            let mut part = part?;
            replayed::check_given_out(&part, next_incarnation)
                .map_err(|e| malformed(&rec, part.group_id, e))?;
            let Some(g) = groups.get(&part.group_id) else {
                continue;
            };
            if !replayed::is_for(&part, g.incarnation).map_err(|e| malformed(&rec, g.id, e))? {
                continue;
            }
            let number = numbered.entry(g.id).or_default();
            *number += 1;
            let durable = g.files.read().as_ref().map(|f| JournalPos {
                seq: f.durable_seq,
                parts: f.durable_parts,
            });
            if durable.is_none_or(|d| d.reflects(rec.seq, *number)) {
                continue;
            }
            let (snapshot, last) =
                g.with_log(|log| Ok((log.snapshot_index(), log.last_index())))?;
            check_part(&rec, g.id, &g.dir, &mut part, snapshot, last)?;
            let change = Change {
                snapshot: part.snapshot.as_ref(),
                entries: std::mem::take(&mut part.entries),
                hard_state: part.hard_state.as_ref(),
                conf_state: part.conf_state.clone(),
                ints: part.ints,
                truncate: None,
                part: *number,
            };
            g.apply(shared, change, rec.seq)?;
            if let Some(index) = part.truncate {
                g.clear_tail_below(shared, index)?;
                let t = truncated.entry(g.id).or_default();
                *t = (*t).max(index);
            }
        }
        shared
            .applied_seq
            .store(rec.seq, std::sync::atomic::Ordering::Release);
    }
    // Every group's slots were checked before open changed anything (`check_replay`). Each
    // group's descriptor then goes into the budget, as a commit's does.
    for (id, index) in truncated {
        let Some(g) = groups.get(&id) else { continue };
        g.clear_files_below(index)?;
        g.settle_fds(shared, false);
    }
    Ok(())
}

/// A journal record whose checksum matches but whose part for group `group` no commit writes
/// (`reason`, from [`replayed`]): an error naming its segment and offset.
fn malformed(rec: &super::journal::Record, group: u64, reason: String) -> Error {
    Error::corrupt(
        &*rec.segment,
        rec.at,
        format!(
            "journal record {}, its part for group {group}, holds {reason}, although its checksum matches",
            rec.seq
        ),
    )
}

/// Replay's rules for a part of record `rec` for group `id` (directory `dir`), whose log has
/// its snapshot at `snapshot` and ends at `last`, in open's order: the part's own shape, the
/// part settled against the snapshot ([`replayed::settle`], which changes it), no gap, its
/// commit within the log. [`check_replay`] and [`replay`] both ask them.
fn check_part(
    rec: &super::journal::Record,
    id: u64,
    dir: &Path,
    part: &mut batch::Decoded,
    snapshot: u64,
    last: u64,
) -> Result<()> {
    replayed::check_shape(part).map_err(|e| malformed(rec, id, e))?;
    replayed::settle(part, snapshot);
    check_contiguous(id, dir, part, rec, last)?;
    replayed::check_commit(part, last).map_err(|e| malformed(rec, id, e))
}

/// A replayed part's entries must continue the group's log as its meta page left it: a gap
/// means the meta page's state is older than the journal's (its newest copy lost to damage, and
/// the records in between trimmed), and applying it would leave a log with a hole.
fn check_contiguous(
    id: u64,
    dir: &Path,
    part: &batch::Decoded,
    rec: &super::journal::Record,
    last: u64,
) -> Result<()> {
    replayed::check_continues(part, last).map_err(|reason| {
        Error::corrupt(
            dir.join(crate::store::meta::META_FILE),
            0,
            format!(
                "journal record {} ({} at offset {}) holds group {}'s {reason}: the newest state of the meta page is lost (or the record is damaged)",
                rec.seq,
                rec.segment.display(),
                rec.at,
                id
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::{first_slot_past, SLOTS_PER_FILE};

    /// The first slot past the log in its last file: the log in that file alone, over several
    /// files, ending in an earlier file, before every file (a snapshot past an empty log), and
    /// at the edges of the index space.
    #[test]
    fn the_first_slot_past_the_log_in_its_last_file() {
        let n = SLOTS_PER_FILE;
        // One file from index 1: the log ends at 100, slot 99 holds it, slot 100 is past it.
        assert_eq!(first_slot_past(100, 1, 1), 100);
        assert_eq!(first_slot_past(0, 1, 1), 0);
        assert_eq!(first_slot_past(n, 1, 1), n as u32);
        // A second file (from n + 1) holding the end at n + 10: its slot 10 is past it.
        assert_eq!(first_slot_past(n + 10, 1, n + 1), 10);
        assert_eq!(first_slot_past(n, 1, n + 1), 0);
        // The end lies in an earlier file than the last one: all of the last is past it.
        assert_eq!(first_slot_past(5, 1, 2 * n + 1), 0);
        // The log starts after a snapshot at 500 (first file from 501) and is empty.
        assert_eq!(first_slot_past(0, 501, 501), 0);
        assert_eq!(first_slot_past(499, 501, 501), 0);
        // Never past the file's slots, never an overflow.
        assert_eq!(first_slot_past(u64::MAX, 1, 1), n as u32);
        assert_eq!(first_slot_past(0, 0, 0), 1);
    }
}
