//! The log as an ordered run of log files: which file and slot an index lives in, appends with
//! rotation, cutting a conflicting suffix, and removing files below a snapshot.
//!
//! Every file but the last is full (30,000 entries), and file `k` of the run starts at
//! `files[0].base + 30,000 * k`, so finding an index is arithmetic: no scan, no per-entry index on
//! the heap. Owns: that invariant, the order of file creation and removal, the spare (a file
//! that cleanup would have removed, kept as [`SPARE_NAME`] for the next rotation to reuse: its
//! blocks are already written, so flushed saves into it need no extent conversion), and for a
//! `DiskStorage` the run table of the files' terms (module `terms`), changed with the files.
//! Must never: know about hard state, snapshots or the meta page (that is `storage`), flush on
//! its own initiative (the caller says when), or build the run table from an entry it has not
//! verified.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use raft::prelude::Entry;

use crate::error::{Error, Result};
use crate::store::log_file::{self, Flavor, LogFile, Scratch, SLOTS_PER_FILE};
use crate::store::terms::TermRuns;
use crate::sys::crypto::Cipher;
use crate::sys::fsutil;

/// Name of the spare log file in a store's directory. Not a log file name (`parse_file_name`
/// refuses it), so recovery and the tools never read it as part of the log.
pub(crate) const SPARE_NAME: &str = "spare.wal";

/// The open log files of one directory.
pub(crate) struct Wal {
    dir: PathBuf,
    files: VecDeque<LogFile>,
    /// Id the next created file gets.
    next_file_id: u64,
    /// Last index held by the files (`files[0].base - 1` when they hold none; 0 without files).
    last: u64,
    /// A file was created since the directory was last fsynced.
    dir_dirty: bool,
    /// The store's key, for the files it creates.
    cipher: Option<Cipher>,
    /// The writer's reusable buffers.
    scratch: Scratch,
    /// Keep one removed file as the spare and reuse it at the next rotation (a store that flushes
    /// every save); see [`Wal::set_recycle`].
    recycle: bool,
    /// The spare file, when there is one.
    spare: Option<PathBuf>,
    /// The log of an engine group: its files are sparse and detached (`Flavor::Engine`), the
    /// engine's journal orders and persists its writes (no flush of its own, not even of a cut),
    /// and no buffer is kept between saves (thousands of groups share a process).
    engine: bool,
    /// Answer [`Wal::term_of_held`] from `terms` (a `DiskStorage`; an engine group keeps its
    /// runs itself, under its own lock).
    track_terms: bool,
    /// The files' terms as runs (module `terms`): unset until the first lookup builds them,
    /// `None` inside when that build met an entry it could not verify (lookups then read the
    /// slots, as before).
    terms: OnceLock<Option<TermRuns>>,
    /// Indexes `[from, to)` whose Normal entries [`Wal::clear_data`] has made read back empty,
    /// each slot checked then, since this `Wal` was made: a later call starts past them, so
    /// that `truncate_entries_until` called after every apply costs what it newly drops, not
    /// the whole log again. An append at an index below `to` lowers it (what is written there
    /// is new); a reset empties it.
    cleared: (u64, u64),
}

impl Wal {
    /// A run of files checked by recovery: contiguous ids, arithmetic bases, every file but the
    /// last full, and the last holding `[base, last]`.
    pub(crate) fn from_parts(
        dir: &Path,
        files: VecDeque<LogFile>,
        next_file_id: u64,
        last: u64,
        cipher: Option<Cipher>,
    ) -> Wal {
        Wal {
            dir: dir.to_path_buf(),
            files,
            next_file_id,
            last,
            dir_dirty: false,
            cipher,
            scratch: Scratch::default(),
            recycle: false,
            spare: None,
            engine: false,
            track_terms: false,
            terms: OnceLock::new(),
            cleared: (0, 0),
        }
    }

    /// Answers [`Wal::term_of_held`] from a run table of the files' terms, built at the first
    /// lookup and kept by every change to the files (a `DiskStorage`).
    pub(crate) fn track_terms(&mut self) {
        self.track_terms = true;
    }

    /// Makes this the log of an engine group (see the `engine` field).
    pub(crate) fn set_engine(&mut self) {
        self.engine = true;
        self.recycle = false;
    }

    /// Turns file recycling on or off. On: a spare left in the directory is adopted. Off: a
    /// spare left by an earlier open is removed (best effort: it is not part of the log).
    pub(crate) fn set_recycle(&mut self, recycle: bool) {
        self.recycle = recycle;
        let path = self.dir.join(SPARE_NAME);
        if recycle {
            self.spare = path.is_file().then_some(path);
        } else {
            self.spare = None;
            let _ = std::fs::remove_file(path);
        }
    }

    pub(crate) fn num_files(&self) -> usize {
        self.files.len()
    }

    /// Closes the descriptors the files of an engine group opened to be written.
    pub(crate) fn release_fds(&mut self) {
        self.files.iter_mut().for_each(LogFile::release_fd);
    }

    /// Starts the write-back of everything written to the files and not yet started (see
    /// [`LogFile::start_writeback_now`]); returns its bytes.
    pub(crate) fn start_writeback_now(&mut self) -> u64 {
        self.files
            .iter_mut()
            .map(LogFile::start_writeback_now)
            .sum()
    }

    /// The bytes whose write-back [`Wal::settle_fds`] would start now (0: none).
    pub(crate) fn writeback_due(&self) -> u64 {
        self.files.back().map_or(0, LogFile::writeback_due)
    }

    /// After a write: starts the write-back of what the last file was written (see
    /// [`LogFile::start_writeback`]) and closes the descriptors of the files before it (written
    /// again only by an overwrite). Returns whether the last file still holds a descriptor.
    pub(crate) fn settle_fds(&mut self) -> bool {
        let n = self.files.len();
        for (i, f) in self.files.iter_mut().enumerate() {
            if i + 1 == n {
                f.start_writeback();
            } else {
                f.release_fd();
            }
        }
        self.files.back().is_some_and(LogFile::holds_fd)
    }

    /// Ids of the first and last file (`(1, 0)`, an empty range, without files).
    pub(crate) fn file_ids(&self) -> (u64, u64) {
        match (self.files.front(), self.files.back()) {
            (Some(a), Some(b)) => (a.id(), b.id()),
            _ => (1, 0),
        }
    }

    /// Id of the file holding `index`, if it is held.
    pub(crate) fn file_id_of(&self, index: u64) -> Option<u64> {
        if !self.contains(index) {
            return None;
        }
        let (pos, _) = self.locate(index);
        self.files.get(pos).map(LogFile::id)
    }

    /// Where file `id`'s next payload goes (`PAYLOAD_START` if it is not held).
    pub(crate) fn payload_end_of(&self, id: u64) -> u64 {
        self.files
            .iter()
            .find(|f| f.id() == id)
            .map_or(log_file::PAYLOAD_START, |f| {
                f.payload_used() + log_file::PAYLOAD_START
            })
    }

    /// Where the last file's next payload goes (`PAYLOAD_START` without files).
    pub(crate) fn tail_payload_end(&self) -> u64 {
        self.files.back().map_or(log_file::PAYLOAD_START, |f| {
            f.payload_used() + log_file::PAYLOAD_START
        })
    }

    pub(crate) fn next_file_id(&self) -> u64 {
        self.next_file_id
    }

    /// First index held in the files (meaningful only when `last >= first`).
    #[inline]
    pub(crate) fn first(&self) -> u64 {
        self.files.front().map_or(self.last + 1, |f| f.base())
    }

    /// Last index held in the files.
    pub(crate) fn last(&self) -> u64 {
        self.last
    }

    #[inline]
    fn contains(&self, index: u64) -> bool {
        !self.files.is_empty() && index >= self.first() && index <= self.last
    }

    /// File position and slot of `index`, which must be held.
    #[inline]
    fn locate(&self, index: u64) -> (usize, u32) {
        locate(self.first(), index)
    }

    /// [`Wal::term_of_held`] for an index at or after `live_from` (the first index the log
    /// holds: the caller's snapshot index plus one), from the run table when it is kept
    /// ([`Wal::track_terms`]). The table is built from `live_from` on: slots before it are not
    /// part of the log, and open never checked them.
    #[inline]
    pub(crate) fn term_of_live(&self, index: u64, live_from: u64) -> Option<u64> {
        if self.track_terms && self.contains(index) {
            if let Some(term) = self
                .terms
                .get_or_init(|| self.build_terms(live_from))
                .as_ref()
                .and_then(|runs| runs.term(index))
            {
                return Some(term);
            }
        }
        self.term_of_held(index)
    }

    /// Term of a held index, or `None` if `index` is not held or its slot holds another index
    /// ([`Wal::term`] says which).
    #[inline]
    pub(crate) fn term_of_held(&self, index: u64) -> Option<u64> {
        if !self.contains(index) {
            return None;
        }
        let (pos, k) = self.locate(index);
        let (term, held) = self.files[pos].slot_term_index(k);
        (held == index).then_some(term)
    }

    /// The run table of the files' terms from `live_from` on, or `None` if a slot it needed
    /// did not verify. A binary search per run: each run costs about log2(entries) slot and
    /// payload reads, once per open.
    #[cold]
    fn build_terms(&self, live_from: u64) -> Option<TermRuns> {
        TermRuns::build(self.first().max(live_from), self.last, |i| {
            self.verified_term(i)
        })
    }

    /// Asks for the slot page of held `index` ahead of a read of it, without waiting
    /// ([`LogFile::prefetch_slot`]); nothing for an index the files do not hold.
    pub(crate) fn prefetch_slot_of(&self, index: u64) {
        if self.contains(index) {
            let (pos, k) = self.locate(index);
            self.files[pos].prefetch_slot(k);
        }
    }

    /// Term of held `index` from its slot checked against its payload's checksum (whatever the
    /// file's verified watermark says): what the run table is built from, so that a damaged
    /// slot fails the build (lookups then read each index's own slot) rather than lend a
    /// plausible wrong term to a whole run.
    fn verified_term(&self, index: u64) -> Option<u64> {
        if !self.contains(index) {
            return None;
        }
        let (pos, k) = self.locate(index);
        let checked = self.files[pos].verify_slot(k).ok()?;
        (checked.slot.index == index).then_some(checked.slot.term)
    }

    /// With a run table kept ([`Wal::track_terms`]): that `entries` (just read, checksums
    /// verified) have the terms [`Wal::term_of_live`] gives, so that `entries()` and `term()`
    /// never disagree. They can only where a slot's term breaks the log's order with a valid
    /// checksum (forged: every save keeps terms in order), which the table, built by binary
    /// search, does not see; such a slot is damage.
    pub(crate) fn check_terms(&self, entries: &[Entry], live_from: u64) -> Result<()> {
        let Some(first) = entries.first().filter(|_| self.track_terms) else {
            return Ok(());
        };
        // Builds the table if no lookup has yet (as `term()` would).
        if self.term_of_live(first.index, live_from).is_none() {
            return Ok(());
        }
        let Some(Some(runs)) = self.terms.get() else {
            return Ok(()); // no table: `term()` reads each index's own slot, as this did
        };
        self.check_term_order(runs, entries)
    }

    /// `Ok` if every one of `entries` (read from these files) has the term `runs` gives its
    /// index; else the damage of the first that does not, naming its file and slot: a slot
    /// whose checksum holds but whose term breaks the log's order (open checks a sealed file's
    /// slots only at its ends), which `term()`, answering from the runs, would contradict.
    pub(crate) fn check_term_order(&self, runs: &TermRuns, entries: &[Entry]) -> Result<()> {
        match runs.first_disagreeing(entries) {
            None => Ok(()),
            Some(e) => {
                let (pos, k) = self.locate(e.index);
                Err(Error::corrupt(
                    self.files[pos].path(),
                    k as u64 * log_file::SLOT_SIZE as u64,
                    format!(
                        "slot {k} holds index {} with term {}, out of the log's term order (its run holds term {})",
                        e.index,
                        e.term,
                        runs.term(e.index).unwrap_or(0)
                    ),
                ))
            }
        }
    }

    /// Term of a held index, read from its slot (the payload is not touched).
    pub(crate) fn term(&self, index: u64) -> Result<u64> {
        if !self.contains(index) {
            return Err(Error::Unavailable {
                index,
                last_index: self.last,
            });
        }
        let (pos, k) = self.locate(index);
        let f = &self.files[pos];
        let (term, held) = f.slot_term_index(k);
        if held != index {
            return Err(Error::corrupt(
                f.path(),
                k as u64 * log_file::SLOT_SIZE as u64,
                format!("slot {k} holds index {held} where index {index} belongs"),
            ));
        }
        Ok(term)
    }

    /// Entries `[lo, hi)` (all held), checksums verified, cut to the longest prefix whose total
    /// `compute_size()` fits `max_size` (at least one entry).
    pub(crate) fn entries(&self, lo: u64, hi: u64, max_size: Option<u64>) -> Result<Vec<Entry>> {
        if lo >= hi {
            return Ok(Vec::new());
        }
        let mut out = Vec::with_capacity(((hi - lo) as usize).min(1024));
        if !self.contains(lo) || !self.contains(hi - 1) {
            return Err(Error::Unavailable {
                index: hi - 1,
                last_index: self.last,
            });
        }
        let mut size = 0u64;
        let budget = |e: &Entry| match max_size {
            None | Some(u64::MAX) => true,
            Some(max) => {
                let first = size == 0;
                size += u64::from(protobuf::Message::compute_size(e));
                first || size <= max
            }
        };
        read_range(|i| self.files.get(i), lo, hi, self.last, &mut out, budget)?;
        Ok(out)
    }

    /// Appends `entries` (contiguous, increasing). The first may be at or below `last + 1`: every
    /// held entry from its index on is cut first, across files. A first index past `last + 1` is
    /// only passed when everything held is covered by a snapshot: the files are dropped and the log
    /// restarts there.
    ///
    /// A cut is flushed before the entries that replace it whatever the sync policy (else a power
    /// loss could mix old and new entries into a log no node held). With `sync`, a full file is
    /// also flushed before the next one is created, so no file ever exists after a sealed file
    /// that is not whole; without it, recovery treats a torn file before the last as tail.
    pub(crate) fn append(&mut self, entries: &[Entry], sync: bool) -> Result<()> {
        if let Some(e) = entries.first() {
            // Written from `e.index` on (or, if the write fails, in doubt from there).
            self.cleared.1 = self.cleared.1.min(e.index);
        }
        let written = self.append_files(entries, sync);
        if self.track_terms {
            if written.is_err() {
                // What the files hold is in doubt: the next lookup builds the table again.
                self.terms = OnceLock::new();
            } else if let Some(Some(runs)) = self.terms.get_mut() {
                runs.written(entries);
            }
        }
        written
    }

    /// [`Wal::append`] to the files (the run table aside).
    fn append_files(&mut self, entries: &[Entry], sync: bool) -> Result<()> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        let start = first.index;
        if start <= self.last && !self.files.is_empty() && start >= self.first() {
            self.cut_from(start)?;
            if !self.engine {
                self.flush()?;
            }
        } else if start != self.last + 1 || self.files.is_empty() {
            let next = self.next_file_id;
            self.reset(next)?;
        }
        let mut rest = entries;
        while !rest.is_empty() {
            let index = rest[0].index;
            let need_file = match self.files.back() {
                None => true,
                Some(f) => index - f.base() >= SLOTS_PER_FILE,
            };
            if need_file {
                // With `sync`, the full file is made durable before the next one exists.
                // Without, the new file's header says so, and recovery may treat the full
                // file as tail until a flush clears the flag.
                let prev_unflushed = if sync {
                    self.flush()?;
                    false
                } else {
                    self.files.back().is_some_and(LogFile::is_dirty)
                };
                self.rotate(index, prev_unflushed, sync)?;
            }
            let f = self.files.back_mut().ok_or_else(|| {
                Error::invariant(format!(
                    "log {} has no file after rotation",
                    self.dir.display()
                ))
            })?;
            let k = (index - f.base()) as u32;
            let fit = (SLOTS_PER_FILE - k as u64).min(rest.len() as u64) as usize;
            if self.engine {
                f.write_entries(k, &rest[..fit], &mut Scratch::default())?;
            } else {
                f.write_entries(k, &rest[..fit], &mut self.scratch)?;
            }
            self.last = rest[fit - 1].index;
            rest = &rest[fit..];
        }
        Ok(())
    }

    /// Starts the next file, whose slot 0 holds `base`. `synced`: the writes that follow will each be flushed,
    /// so the new file's first MiB is written as real zeroes first (see `LogFile::create`).
    fn rotate(&mut self, base: u64, prev_unflushed: bool, synced: bool) -> Result<()> {
        let hint = self.files.back().map_or(0, LogFile::payload_used);
        // A spare exists only with recycling on (a store that flushes every save). If it cannot
        // be reused, it is gone (`create_from_spare` removes it) and a new file is made.
        let reused = self.spare.take().and_then(|spare| {
            LogFile::create_from_spare(
                &spare,
                &self.dir,
                self.next_file_id,
                base,
                self.cipher.as_ref(),
                prev_unflushed,
            )
            .ok()
        });
        let f = match reused {
            Some(f) => f,
            None => LogFile::create(
                &self.dir,
                self.next_file_id,
                base,
                hint,
                self.cipher.as_ref(),
                prev_unflushed,
                match (self.engine, synced) {
                    (true, _) => Flavor::Engine,
                    (false, true) => Flavor::Synced,
                    (false, false) => Flavor::Unsynced,
                },
            )?,
        };
        self.next_file_id += 1;
        self.files.push_back(f);
        self.dir_dirty = true;
        Ok(())
    }

    /// Cuts every held entry at or after `index` (which is held). Files after the one holding it
    /// are removed first, newest first and each removal durable before the next, so a crash
    /// never leaves a sealed file that is not full, nor a gap in the run of files.
    fn cut_from(&mut self, index: u64) -> Result<()> {
        let (pos, k) = self.locate(index);
        let later: Vec<LogFile> = self.files.drain(pos + 1..).collect();
        if !later.is_empty() {
            // The files held now end with file `pos`, which is full: an error below must not
            // leave `last` pointing into files no longer held.
            self.last = self.files[pos].base() + SLOTS_PER_FILE - 1;
            self.next_file_id = self.files[pos].id() + 1;
        }
        for f in later.into_iter().rev() {
            self.remove(vec![f])?;
        }
        let f = &mut self.files[pos];
        let used = (self.last - f.base() + 1).min(SLOTS_PER_FILE) as u32;
        f.zero_slots(k, used)?;
        self.next_file_id = f.id() + 1;
        self.last = index - 1;
        Ok(())
    }

    /// Removes every file whose entries are all below `index` (the file holding `index` stays).
    pub(crate) fn remove_files_below(&mut self, index: u64) -> Result<()> {
        let below = self
            .files
            .iter()
            .take(self.files.len().saturating_sub(1))
            .take_while(|f| f.base() + SLOTS_PER_FILE <= index)
            .count();
        let doomed: Vec<LogFile> = self.files.drain(..below).collect();
        let first = self.first();
        if let Some(Some(runs)) = self.terms.get_mut() {
            runs.compact(first);
        }
        self.remove(doomed)
    }

    /// Unmaps and removes `files` (in their order), then fsyncs the directory once. With recycling
    /// on and no spare yet, the first file that no handed-out entry still references becomes the spare
    /// instead (renamed; a file still referenced is removed, as its views must never change).
    fn remove(&mut self, files: Vec<LogFile>) -> Result<()> {
        let mut paths = Vec::with_capacity(files.len());
        let mut renamed = false;
        for f in files {
            let path = f.path().to_path_buf();
            let unreferenced = f.close();
            if unreferenced && self.recycle && self.spare.is_none() {
                let spare = self.dir.join(SPARE_NAME);
                // The spare is only an optimisation: a file that cannot become it is removed.
                if std::fs::rename(&path, &spare).is_ok() {
                    self.spare = Some(spare);
                    renamed = true;
                    continue;
                }
            }
            paths.push(path);
        }
        if paths.is_empty() {
            // Only a rename: it is durable with the directory (a crash before leaves the file
            // under its old name, below the snapshot, which open removes).
            if renamed {
                fsutil::sync_dir(&self.dir)?;
            }
            return Ok(());
        }
        // Syncs the directory, the rename included.
        fsutil::remove_files(&self.dir, paths.iter().map(PathBuf::as_path))
    }

    /// Removes every file; the next file created gets id `next_file_id`.
    pub(crate) fn reset(&mut self, next_file_id: u64) -> Result<()> {
        if self.track_terms {
            self.terms = OnceLock::new();
        }
        self.cleared = (0, 0);
        let all: Vec<LogFile> = self.files.drain(..).collect();
        self.remove(all)?;
        self.next_file_id = self.next_file_id.max(next_file_id);
        self.last = 0;
        if self.track_terms {
            self.terms = OnceLock::from(Some(TermRuns::default()));
        }
        Ok(())
    }

    /// Makes Normal entries in `[from, to)` (those held) read back with empty data, each slot
    /// checked before it is sealed again; the indexes an earlier call cleared (and nothing has
    /// written since) are not read again.
    pub(crate) fn clear_data(&mut self, from: u64, to: u64) -> Result<()> {
        if self.files.is_empty() {
            return Ok(());
        }
        let end = to.min(self.last + 1);
        let lo = from.max(self.first());
        let (done_from, done_to) = self.cleared;
        let joins = done_from <= lo && lo <= done_to;
        let start = if joins { done_to.max(lo) } else { lo };
        if start >= end {
            return Ok(());
        }
        // A failure leaves `cleared` as it was: the next call checks these slots again.
        for (pos, slots) in spans(self.first(), start, end) {
            let f = &mut self.files[pos];
            for s in slots {
                f.clear_data(s)?;
            }
        }
        self.cleared = (if joins { done_from } else { lo }, end);
        Ok(())
    }

    /// fdatasync of every file written since its last flush.
    pub(crate) fn flush(&mut self) -> Result<()> {
        for f in self.files.iter_mut() {
            f.flush()?;
        }
        if self.dir_dirty {
            fsutil::sync_dir(&self.dir)?;
            self.dir_dirty = false;
        }
        // Every file is durable now: no file needs its predecessor treated as tail any more.
        if let Some(last) = self.files.back_mut() {
            if last.prev_unflushed() {
                last.clear_prev_unflushed()?;
                last.flush()?;
            }
        }
        Ok(())
    }
}

/// File position and slot of `index` in a run of consecutive files whose first file starts at
/// index `first`: the one place an index is mapped to where it lies (files hold
/// `SLOTS_PER_FILE` entries each, in order).
#[inline]
pub(crate) fn locate(first: u64, index: u64) -> (usize, u32) {
    let rel = index - first;
    (
        (rel / SLOTS_PER_FILE) as usize,
        (rel % SLOTS_PER_FILE) as u32,
    )
}

/// The pieces of `[lo, hi)` (`lo >= first`) file by file, in a run of consecutive files whose
/// first starts at index `first`: each file's position and the slots of the range in it.
pub(crate) fn spans(
    first: u64,
    lo: u64,
    hi: u64,
) -> impl Iterator<Item = (usize, std::ops::Range<u32>)> {
    let mut index = lo;
    std::iter::from_fn(move || {
        if index >= hi {
            return None;
        }
        let (pos, k) = locate(first, index);
        let in_file = (SLOTS_PER_FILE - u64::from(k)).min(hi - index);
        index += in_file;
        Some((pos, k..k + in_file as u32))
    })
}

/// Reads entries `[lo, hi)` from the files `file(0)`, `file(1)`, ... (consecutive, the first
/// starting at or below `lo`) into `out`, checksums verified; `keep_going` is asked of each entry read (false: stop there,
/// and `Ok(false)`). A part of the range past the files is `Unavailable` (naming `last_index`,
/// the log's last index): a damaged directory can hold fewer files than its meta page says.
/// The read path of `Wal::entries` and of the read-only tools.
pub(crate) fn read_range<'a>(
    file: impl Fn(usize) -> Option<&'a LogFile>,
    lo: u64,
    hi: u64,
    last_index: u64,
    out: &mut Vec<Entry>,
    mut keep_going: impl FnMut(&Entry) -> bool,
) -> Result<bool> {
    let unavailable = |index| Error::Unavailable { index, last_index };
    let Some(first) = file(0).filter(|f| lo >= f.base()) else {
        return Err(unavailable(lo));
    };
    for (pos, slots) in spans(first.base(), lo, hi) {
        let f = file(pos).ok_or_else(|| {
            unavailable(first.base() + pos as u64 * SLOTS_PER_FILE + u64::from(slots.start))
        })?;
        if !f.read_entries(slots.start, slots.end, out, &mut keep_going)? {
            return Ok(false);
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `spans` against the index-by-index mapping: every index of the range once, in order,
    /// in the file and slot that `locate` gives, for ranges inside one file and across several.
    #[test]
    fn spans_cover_a_range_index_by_index() {
        let n = SLOTS_PER_FILE;
        for first in [1, 7, n * 3 + 1] {
            for (lo, hi) in [(0, 1), (0, n), (5, n + 5), (n - 1, n + 1), (1, 3 * n + 2)] {
                let (lo, hi) = (first + lo, first + hi);
                let got: Vec<(usize, u32)> = spans(first, lo, hi)
                    .flat_map(|(pos, slots)| slots.map(move |k| (pos, k)))
                    .collect();
                let want: Vec<(usize, u32)> = (lo..hi).map(|i| locate(first, i)).collect();
                assert_eq!(got, want, "first {first}, [{lo}, {hi})");
                let want_pieces = (lo..hi).map(|i| locate(first, i).0).collect::<Vec<_>>();
                let mut pieces = want_pieces.clone();
                pieces.dedup();
                assert_eq!(spans(first, lo, hi).count(), pieces.len());
            }
        }
        assert_eq!(spans(1, 5, 5).count(), 0);
        assert_eq!(locate(1, n), (0, (n - 1) as u32));
        assert_eq!(locate(1, n + 1), (1, 0));
    }
}
