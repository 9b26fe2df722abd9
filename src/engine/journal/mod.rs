//! The engine's journal: one redo log shared by every group. Each commit appends one record
//! holding every group's part of it and is made durable with one fdatasync, whatever the
//! number of groups; the groups' own files are written without a flush and made durable by
//! checkpoints, behind which the journal is trimmed. At open, the records after the last
//! checkpoint are replayed into the groups.
//!
//! Owns: the segment files (`journal/<id>.jnl`, fixed size, every block allocated; the spares and
//! the next segment are module `segments`; the record framing is module `record`; the count of
//! what it holds after its last trim is module `held`), the scan at open and what counts as its
//! torn tail. Must never: hand out a record whose checksum fails, return records out of
//! sequence, or decide what a record means (that is `batch` and the engine).
//!
//! Layout (little-endian; docs/FORMAT.md "Engine roots"):
//! ```text
//! segment: [0, 4096) header, then records back to back, each padded to 8 bytes
//! header:  0 magic "RWALJNL\0" 8 | 8 version u32 | 12 flags u32 (bit 0: bodies sealed; bit 1:
//!          started while the segment before held records not yet flushed) | 16 segment id u64
//!          | 24 first sequence number u64 | 32 CRC32C u32 (of [0, 32))
//! ```
//!
//! Files: this one (the journal, appends, flushes, rotation, trimming), `open` (reading the
//! segments at open and what counts as their torn end), `header` (a segment's header page),
//! `direct` (appends written with `O_DIRECT`).

use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use bytes::Bytes;

use self::held::Held;
use super::record;
use super::release::{self, Release};
use super::segments::{self, Job, Next, Pool, Prepared};
use crate::error::{Error, Result};
use crate::sys::crypto::Cipher;
use crate::sys::fsutil;

mod after_end;
pub(super) mod direct;
mod header;
pub(crate) mod held;
mod open;

#[cfg(test)]
pub(crate) use after_end::parts_decode;
pub(crate) use after_end::{lost_after_end, lost_in_segment};
pub(crate) use header::{read_header_of, Header, H_FIRST_SEQ, H_ID};
pub(crate) use open::{
    blank_between, blank_holding, blank_starts_with, ends_below_checkpoint, follows, page_past_end,
    segments_missing, torn_end, Follow, RootState,
};

use header::encode_header;

/// Bytes of a segment's header page; records start after it.
pub(crate) const SEGMENT_HEADER: u64 = 4096;

/// Records are written to the end of their last page, zeros after them: a write never covers
/// part of a page the cache does not hold (which a recycled segment's would need read first).
pub(crate) const PAGE: u64 = 4096;
static ZERO_PAGE: [u8; PAGE as usize] = [0; PAGE as usize];

/// Record bytes in the last segment from which a clean close starts a segment of its own
/// ([`Journal::close_clean`]): reading fewer back at the next open costs less than the
/// rotation's header write, flush and renames.
const CLOSE_ROTATE_BYTES: u64 = 1 << 20;

/// The file name of segment `id`.
fn segment_name(id: u64) -> String {
    format!("{id:016}.jnl")
}

/// The id of a segment file name (canonical spelling only).
pub(crate) fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".jnl")?;
    if digits.len() != 16 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().filter(|&id| id > 0)
}

/// One record read back at open: its sequence number and its (opened) body.
pub(crate) struct Record {
    pub seq: u64,
    pub body: Bytes,
    /// The segment that holds it and its offset there, for errors about what it says.
    pub segment: std::sync::Arc<std::path::Path>,
    pub at: u64,
}

/// A segment of the journal.
struct Segment {
    id: u64,
    path: PathBuf,
    /// Sequence number of the first record written to it.
    first_seq: u64,
    /// Started while records before it were not flushed (its header's flag).
    prev_unflushed: bool,
    /// Found by open rather than started by this engine: once trimmed it is given back to the
    /// file system (module `release`), never kept as a spare. Past where its records end it
    /// may hold records of a life that crashed, with sequence numbers still to come (their
    /// pages kept by a power loss, an earlier one's lost): reused, a new record ending where
    /// one of them begins would bring it back. A segment this engine started holds nothing
    /// after its records but what its earlier lives left there (all trimmed, so numbered below
    /// anything still to come).
    found: bool,
    /// Its header is durable: found by open (open flushes what it keeps), or flushed by a
    /// [`Journal::sync`] since it was started. [`Journal::trim`] keeps the newest such segment.
    header_durable: bool,
}

/// The segment records are appended to.
struct Writer {
    file: File,
    path: PathBuf,
    /// Where the next record goes.
    offset: u64,
    /// The segment's length (allocated).
    len: u64,
    /// Records end by here: `len`, or, in a segment grown for one record larger than a
    /// segment, that record's end (it holds that record alone; its file ends at the end of
    /// the record's last page, so that the record is written directly).
    room: u64,
    /// Records written since its last flush.
    dirty: bool,
    /// Its direct descriptor, when appends bypass the page cache (module `direct`).
    direct: Option<direct::Direct>,
}

/// The journal of an engine root.
pub(crate) struct Journal {
    dir: PathBuf,
    /// Live segments, oldest first; the last one is written.
    segments: Vec<Segment>,
    writer: Option<Writer>,
    /// Segments written before the one being written whose records are not flushed yet,
    /// oldest first (more than one only without `sync_writes`).
    unflushed: Vec<(File, PathBuf)>,
    next_seq: u64,
    cipher: Option<Cipher>,
    /// The spares and the next segment.
    pool: Pool,
    /// Bytes appended since the journal was last trimmed (the checkpoint trigger).
    appended: u64,
    /// The records after the last trim and their bytes ([`Journal::held`]).
    held: Held,
    /// Open found where the last segment's records end, torn, or after a crash, and the
    /// segment that makes that end durable is not started yet ([`Journal::seal_cut`]).
    cut_pending: bool,
    /// What open found to tidy ([`Journal::tidy`]): segments no longer needed (path, id), and
    /// leftover temporary files and segments after a torn end (removed).
    untidy: (Vec<(PathBuf, u64)>, Vec<PathBuf>),
    /// Appends bypass the page cache ([`Journal::write_directly`]).
    direct: bool,
    /// The buffer of direct appends.
    direct_buf: direct::AlignedBuf,
    /// Records appended directly (tests check that the direct path was taken).
    direct_appends: u64,
    /// The next sequence number as the journal thread last saw it change, and when (open, to
    /// begin with): the journal rests once it stood still for a while
    /// ([`Journal::rest_if_idle`]). Kept off the commit path: an append only moves the number.
    quiet_since: (u64, std::time::Instant),
}

/// What the scan at open found.
pub(crate) struct Opened {
    pub journal: Journal,
    /// Records after the checkpoint, in sequence order.
    pub records: Vec<Record>,
    /// Files named like a segment with a valid header of their own (live or not), and all the
    /// files named like one (a blank or recycled header too).
    pub segment_files: (usize, usize),
    /// How the last segment's records end, should the rest of the root show that records
    /// after that were durable: then what ends them there is what is damaged.
    pub end: Option<LastEnd>,
}

/// How the records of the journal's last segment end ([`Opened::end`]).
#[derive(Debug)]
pub(crate) enum LastEnd {
    /// At a torn record, which the default mode cut: why it fails.
    Torn(Error),
    /// Cleanly, in the segment at `path` at `offset`, where record `want` would go.
    Clean {
        path: PathBuf,
        offset: u64,
        want: u64,
    },
}

impl Journal {
    /// Tidies what open found: segments no longer needed become spares (or are removed), and
    /// leftover temporary files go.
    pub(crate) fn tidy(&mut self) -> Result<()> {
        let (unused, leftovers) = std::mem::take(&mut self.untidy);
        for path in leftovers {
            let _ = fs::remove_file(path);
        }
        // Removed, never kept as spares (`Segment::found`): a segment whose header is blank or
        // recycled may hold records of its next life that a power loss kept without the header.
        for (path, _) in unused {
            fs::remove_file(&path).map_err(|e| Error::io("remove", &path, e))?;
        }
        Ok(())
    }

    /// A clean close, after its checkpoint `checkpoint`: when that covers every record and the
    /// last segment holds [`CLOSE_ROTATE_BYTES`] of them or more, starts a segment holding only
    /// its header (flushed), which makes every segment before it obsolete, and trims them; then
    /// removes the spares ([`Journal::release_spares`]). The next open then has no record to
    /// read back and check: after a close with `sync_writes` none of the last segment's records
    /// is in the page cache (they were written directly), so that open read up to a segment
    /// from the disk (docs/PERFORMANCE.md, "Reopen after a clean close"). Segment ids go on
    /// from the last one, so a file of an older life is never taken for a newer one.
    pub(crate) fn close_clean(&mut self, checkpoint: u64) -> Result<()> {
        let in_last = self
            .writer
            .as_ref()
            .map_or(0, |w| w.offset - SEGMENT_HEADER);
        if in_last >= CLOSE_ROTATE_BYTES && checkpoint + 1 == self.next_seq {
            self.rotate(self.next_seq, 0)?;
            self.sync()?;
            self.trim(checkpoint)?;
        }
        self.release_spares()
    }

    /// Removes the spares, the prepared next segment and the trimmed segments not yet given
    /// back (a clean close: the first two speed up the rotations of a running engine and would
    /// only hold disk space until the next open, whose journal thread prepares a segment again;
    /// the journal thread that gives back the last has stopped). None holds a record; a
    /// removal a crash undoes leaves a file open recycles or removes as before.
    pub(crate) fn release_spares(&mut self) -> Result<()> {
        let mut paths = std::mem::take(&mut self.pool.spares);
        paths.extend(self.pool.releases.drain(..).map(|r| r.path));
        if let Next::Ready(p) = std::mem::replace(&mut self.pool.next, Next::Idle) {
            paths.push(p.path);
        }
        for path in paths {
            fs::remove_file(&path).map_err(|e| Error::io("remove", &path, e))?;
        }
        Ok(())
    }

    /// Makes what open found durable before anything new is acknowledged: every live segment
    /// flushed (a killed engine without `sync_writes` may have left records only in the page
    /// cache, and a record acknowledged from now on must never be durable while one before it
    /// is not), then the end open found ([`Journal::seal_cut`]).
    pub(crate) fn settle(&mut self) -> Result<()> {
        for seg in &self.segments {
            File::open(&seg.path)
                .and_then(|f| f.sync_data())
                .map_err(|e| Error::io("fdatasync", &seg.path, e))?;
        }
        self.seal_cut()
    }

    /// Makes the end open found durable (open, before anything new is acknowledged): starts
    /// the next segment at the next sequence number, its header flushed, when the last
    /// segment's records ended torn, or ended at all after a crash. Until then a crash leaves
    /// a torn record at the end of the last segment, which the next open cuts again (or
    /// refuses, in `AbsoluteConsistency`); from then on every open, in either mode, finds it
    /// before a segment that starts at its sequence number, which ends its segment there. The
    /// bytes after the end stay where they are: nothing is written to the segment that held
    /// them, so no instant of the cut leaves a mix of the two, and no record of an earlier
    /// life left after a clean end (its page kept by a power loss, an earlier one's lost) is
    /// ever reached by a new record ending where it begins.
    fn seal_cut(&mut self) -> Result<()> {
        if !self.cut_pending {
            return Ok(());
        }
        self.rotate(self.next_seq, 0)?;
        self.sync()?;
        self.cut_pending = false;
        Ok(())
    }

    /// Makes sure the journal has a segment whose header is durable, starting one (at the next
    /// sequence number, holding no record) if open found none: from then on `engine.meta` can
    /// say the journal has begun ([`segments_missing`]), and a journal found with no segment
    /// is one that lost its records, not one never written. Open, before `engine.meta` says so.
    pub(crate) fn begin(&mut self) -> Result<()> {
        if !self.segments.is_empty() {
            return Ok(());
        }
        // A new root's first segment (no spare yet), written with zeros: off the commit path,
        // which makes its segments [`segments::Fill::Reserve`]d.
        self.rotate_filled(self.next_seq, 0, segments::Fill::Zeros)?;
        self.sync()
    }

    /// Appends from now on bypass the page cache when the file system takes direct writes
    /// (module `direct`): for an engine that flushes every commit. Without `sync_writes` the
    /// page cache is what makes an append cheap, so it stays.
    pub(crate) fn write_directly(&mut self) {
        self.direct = true;
        if let Some(w) = self.writer.as_mut() {
            w.direct = direct::Direct::open(&w.path);
        }
    }

    /// The last record the journal holds (or the checkpoint it starts after, if later).
    pub(crate) fn last_seq(&self) -> u64 {
        self.next_seq - 1
    }

    /// Bytes appended since the journal was last trimmed.
    pub(crate) fn appended(&self) -> u64 {
        self.appended
    }

    /// Bytes of the records after the checkpoint the journal was last trimmed to (those found
    /// at open included): what the next open would replay, and about what the next trim
    /// frees. Commits wait while it is too large (module `commit`).
    pub(crate) fn held(&self) -> u64 {
        self.held.bytes()
    }

    /// Appends a record whose body is `pieces` back to back (sealed when the engine is
    /// encrypted) and returns its sequence number. Nothing is flushed: see [`Journal::sync`].
    pub(crate) fn append(&mut self, pieces: &[&[u8]]) -> Result<u64> {
        let seq = self.next_seq;
        let sealed;
        let stored: &[&[u8]] = match &self.cipher {
            Some(c) => {
                sealed = [c.seal(&seq.to_le_bytes(), pieces)];
                &[&sealed[0][..]]
            }
            None => pieces,
        };
        let len: usize = stored.iter().map(|p| p.len()).sum();
        if len > u32::MAX as usize {
            return Err(Error::InvalidArgument(format!(
                "a commit of {len} bytes is larger than a journal record holds (4 GiB)"
            )));
        }
        let total = record::stored_len(len);
        let fits = self
            .writer
            .as_ref()
            .is_some_and(|w| w.offset + total <= w.room);
        if !fits {
            self.rotate(seq, total)?;
        }
        let w = self
            .writer
            .as_mut()
            .ok_or_else(|| Error::invariant("journal has no segment to write after rotation"))?;
        let h = record::encode_header(seq, stored);
        // The record ends at `end`; zeros follow it to the end of its last page.
        let end = w.offset + total;
        let page_end = end.next_multiple_of(PAGE).min(w.len);
        let direct = match w.direct.as_mut() {
            Some(d) => {
                let mut pieces = Vec::with_capacity(stored.len() + 1);
                pieces.push(&h[..]);
                pieces.extend_from_slice(stored);
                match d.write(
                    &mut self.direct_buf,
                    &w.file,
                    w.offset,
                    &pieces,
                    end,
                    page_end,
                ) {
                    Ok(written) => written,
                    // Written through the page cache below, as every append after it.
                    Err(_) => {
                        w.direct = None;
                        self.direct = false;
                        false
                    }
                }
            }
            None => false,
        };
        if !direct {
            let pad = (page_end - w.offset) as usize - record::RECORD_HEADER - len;
            let mut bufs = Vec::with_capacity(stored.len() + 3);
            bufs.push(std::io::IoSlice::new(&h));
            bufs.extend(stored.iter().map(|p| std::io::IoSlice::new(p)));
            let (a, b) = (
                pad.min(ZERO_PAGE.len()),
                pad.saturating_sub(ZERO_PAGE.len()),
            );
            bufs.push(std::io::IoSlice::new(&ZERO_PAGE[..a]));
            bufs.push(std::io::IoSlice::new(&ZERO_PAGE[..b]));
            crate::sys::fsutil::pwritev_all(&w.file, &mut bufs, w.offset, &w.path)?;
        }
        self.direct_appends += u64::from(direct);
        w.offset += total;
        w.dirty = true;
        self.next_seq += 1;
        self.appended += total;
        self.held.hold(seq, total);
        Ok(seq)
    }

    /// Makes every record appended so far durable (one fdatasync, two when the last append
    /// started a segment while the one before it was unflushed).
    pub(crate) fn sync(&mut self) -> Result<()> {
        use crate::metrics::{Synced, Timer};
        // Oldest first: a segment is durable only after every one before it.
        while let Some((file, path)) = self.unflushed.first() {
            let timer = Timer::start();
            file.sync_data()
                .map_err(|e| Error::io("fdatasync", path, e))?;
            timer.fsync(Synced::Journal);
            self.unflushed.remove(0);
        }
        if let Some(w) = self.writer.as_mut().filter(|w| w.dirty) {
            let timer = Timer::start();
            w.file
                .sync_data()
                .map_err(|e| Error::io("fdatasync", &w.path, e))?;
            timer.fsync(Synced::Journal);
            w.dirty = false;
        }
        // Those started since the last flush: the newest ones (every commit flushes, so
        // usually none, and never a walk over every segment).
        for seg in self.segments.iter_mut().rev() {
            if seg.header_durable {
                break;
            }
            seg.header_durable = true;
        }
        Ok(())
    }

    /// The id the next segment gets.
    fn next_id(&self) -> u64 {
        self.segments.last().map_or(1, |seg| seg.id + 1)
    }

    /// Whether an append of a record whose body is `body_len` bytes must wait for the segment
    /// being prepared (it does not fit the current one).
    pub(crate) fn must_wait(&self, body_len: usize) -> bool {
        let sealed = if self.cipher.is_some() {
            crate::sys::crypto::OVERHEAD
        } else {
            0
        };
        let total = record::stored_len(body_len + sealed);
        let fits = self
            .writer
            .as_ref()
            .is_some_and(|w| w.offset + total <= w.room);
        !fits && matches!(self.pool.next, Next::Preparing(_))
    }

    /// Whether the journal rests ([`Journal::rest_if_idle`]): no record was appended since it
    /// began to; the next append ends it (the journal thread then prepares the next segment
    /// once the one in use is half full: [`Journal::wakes_preparer`]).
    pub(crate) fn is_resting(&self) -> bool {
        self.pool.rested_at == Some(self.next_seq)
    }

    /// Whether the segment being written holds half the records it has room for.
    fn half_full(&self) -> bool {
        self.writer.as_ref().is_some_and(|w| {
            (w.offset - SEGMENT_HEADER).saturating_mul(2) >= w.room.saturating_sub(SEGMENT_HEADER)
        })
    }

    /// After an append: whether the journal thread must be woken to prepare the next segment,
    /// which it waits to do after a rest until the segment being written is half full (module
    /// `segments`, `Pool::lazy`): true from the append that gets it there until the thread
    /// begins. Otherwise the thread prepares at its own next round (every 200 ms at most, or at
    /// a checkpoint's trim); a burst may then fill the next segment first, and its commit makes
    /// one itself. Waking the thread at every rotation was measured and not kept: no more
    /// throughput, and some slower rounds (docs/PERFORMANCE.md, "Rotations on the commit
    /// path").
    pub(crate) fn wakes_preparer(&self) -> bool {
        self.pool.lazy
            && self.pool.wants_preparation(
                self.writer.is_some(),
                self.is_resting(),
                self.half_full(),
            )
    }

    /// Rests the journal once it is idle: nothing appended for a while
    /// (`EngineOptions::journal_rest_after`, by default [`segments::REST_AFTER`]) and
    /// every record covered by the checkpoint it was last trimmed to. The spares and the
    /// prepared next segment (none holds a record) are handed to the journal thread to give
    /// back, as a trim hands over the segments it does not keep (renamed `<id>.jnl.tmp`,
    /// module `release`); none is made or kept again until the next append, and after it the
    /// next segment is prepared once the one in use is half full ([`Journal::wakes_preparer`]).
    /// They only spare a burst of commits the making of files at its rotations; an idle engine
    /// of 1,024 groups kept 128 MiB in them, its journal 160 MiB (docs/PERFORMANCE.md, "Disk
    /// while open, at rest"). Returns
    /// whether it began to rest now. Not while a segment is being prepared (the next call
    /// rests once it is ready).
    pub(crate) fn rest_if_idle(&mut self) -> Result<bool> {
        if self.quiet_since.0 != self.next_seq {
            self.quiet_since = (self.next_seq, std::time::Instant::now());
        }
        let idle = self.held() == 0 && self.quiet_since.1.elapsed() >= self.pool.rest_after;
        if self.is_resting() || !idle || matches!(self.pool.next, Next::Preparing(_)) {
            return Ok(false);
        }
        (self.pool.rested_at, self.pool.lazy) = (Some(self.next_seq), true);
        // Each spare leaves the list once it is handed over: one that fails stays listed with
        // those after it, as they are on disk (the engine stops; open recycles or removes them).
        while let Some(spare) = self.pool.spares.first().cloned() {
            let len = fs::metadata(&spare).map_or(0, |m| m.len());
            match segments::spare_id(&spare) {
                Some(id) => self.release(spare, id, len)?,
                // Never: the pool lists only the spares it named ([`segments::spare_name`]).
                None => fs::remove_file(&spare).map_err(|e| Error::io("remove", &spare, e))?,
            }
            self.pool.spares.remove(0);
        }
        if let Next::Ready(p) = std::mem::replace(&mut self.pool.next, Next::Idle) {
            let Prepared {
                id,
                path,
                file,
                len,
            } = p;
            drop(file);
            self.release(path, id, len)?;
        }
        Ok(true)
    }

    /// Sets how long the journal waits, idle, before it rests (`EngineOptions`).
    pub(crate) fn set_rest_after(&mut self, after: std::time::Duration) {
        self.pool.rest_after = after;
    }

    /// The oldest trimmed segment waiting to be given back, if any (module `release`).
    pub(crate) fn take_release(&mut self) -> Option<Release> {
        self.pool.releases.pop_front()
    }

    /// Puts back a trimmed segment the thread was giving back, first in line (it stops).
    pub(crate) fn keep_release(&mut self, release: Release) {
        self.pool.releases.push_front(release);
    }

    /// Bytes of the trimmed segments waiting in line to be given back.
    pub(crate) fn releases_bytes(&self) -> u64 {
        self.pool.releases.iter().map(|r| r.len).sum()
    }

    /// The preparation the thread should run now, if any (module `segments`).
    pub(crate) fn begin_preparation(&mut self) -> Option<Job> {
        if !self
            .pool
            .wants_preparation(self.writer.is_some(), self.is_resting(), self.half_full())
        {
            return None;
        }
        let id = self.next_id();
        Some(
            self.pool
                .begin(id, self.dir.join(segment_name(id)), segments::Fill::Reserve),
        )
    }

    /// Takes the outcome of the thread's preparation.
    pub(crate) fn finish_preparation(
        &mut self,
        result: std::result::Result<Prepared, (Error, Option<PathBuf>)>,
    ) {
        match result {
            Ok(p) if matches!(self.pool.next, Next::Preparing(id) if id == p.id) => {
                self.pool.next = Next::Ready(p);
            }
            Ok(_) => self.pool.next = Next::Idle,
            Err((_, spare)) => {
                // The commit path makes its segment itself (and reports what fails then).
                if let Some(spare) = spare {
                    self.pool.spares.insert(0, spare);
                }
                self.pool.next = Next::Idle;
                self.pool.stalled = true;
            }
        }
    }

    /// Starts a segment for a record of `total` bytes with sequence number `seq`: the prepared
    /// one when it is ready (nothing but its header to write), else one made here (a spare
    /// renamed, or a new file allocated, and its name made durable).
    fn rotate(&mut self, seq: u64, total: u64) -> Result<()> {
        self.rotate_filled(seq, total, segments::Fill::Reserve)
    }

    /// [`Journal::rotate`], a new file made here (none prepared, no spare) filled as `fill`
    /// says.
    fn rotate_filled(&mut self, seq: u64, total: u64, fill: segments::Fill) -> Result<()> {
        let id = self.next_id();
        let need = SEGMENT_HEADER + total;
        let p = match self.pool.take(id) {
            Some(p) => p,
            None => {
                self.pool.stalled = false;
                let job = self.pool.begin(id, self.dir.join(segment_name(id)), fill);
                let made = job.run_checked();
                self.pool.next = Next::Idle;
                made.map_err(|(e, spare)| {
                    // A spare the job did not get to rename goes: kept, it would fail the
                    // next rotation too; dropped from the list only, it would stay on disk
                    // past a clean close, which removes the spares it lists.
                    if let Some(spare) = spare {
                        let _ = std::fs::remove_file(spare);
                    }
                    e
                })?
            }
        };
        let Prepared {
            id,
            path,
            file,
            mut len,
        } = p;
        let mut room = len;
        let prev_unflushed =
            !self.unflushed.is_empty() || self.writer.as_ref().is_some_and(|w| w.dirty);
        let header = encode_header(id, seq, self.cipher.is_some(), prev_unflushed);
        let started = (|| {
            if len < need {
                // A commit larger than a segment: the file grows to hold it, to the end of its
                // last page (a whole page, so that the record is written directly like any
                // other; an odd size would send it through the page cache).
                len = need.next_multiple_of(PAGE);
                crate::sys::fsutil::allocate(&file, &path, len)?;
                room = need;
            }
            file.write_all_at(&header, 0)
                .map_err(|e| Error::io("write header", &path, e))
        })();
        if let Err(e) = started {
            // Its id is the next rotation's again.
            segments::discard(file, &path);
            return Err(e);
        }
        if let Some(old) = self.writer.take() {
            if old.dirty {
                self.unflushed.push((old.file, old.path));
            }
        }
        self.segments.push(Segment {
            id,
            path: path.clone(),
            first_seq: seq,
            prev_unflushed,
            found: false,
            header_durable: false,
        });
        let direct = if self.direct {
            direct::Direct::open(&path)
        } else {
            None
        };
        self.writer = Some(Writer {
            file,
            path,
            offset: SEGMENT_HEADER,
            len,
            room,
            dirty: true,
            direct,
        });
        Ok(())
    }

    /// Drops the segments whose records all lie at or below `seq` (a checkpoint covers them):
    /// they become spares (as many as are kept, of the usual size), or are renamed for the
    /// journal thread to give back to the file system in turns (module `release`). Removed
    /// here at once, under the journal's lock, a 32 MiB segment took 5-10 ms on this disk and
    /// a trim after a long checkpoint removed eight, holding every commit for 40-60 ms
    /// (docs/PERFORMANCE.md, "Trimmed segments given back a step at a time").
    ///
    /// The newest segment whose header is durable stays, obsolete or not: a segment started
    /// since the last flush may have its header in the page cache only, and a journal left
    /// with no segment whose header is durable reads at open as one that lost its segments
    /// ([`segments_missing`]). With `sync_writes` every commit flushes before the journal's
    /// lock is let go, so this keeps nothing more; without it, a segment until the next flush.
    pub(crate) fn trim(&mut self, seq: u64) -> Result<()> {
        let obsolete = self
            .segments
            .windows(2)
            .take_while(|w| w[1].first_seq <= seq + 1)
            .count();
        let obsolete = self
            .segments
            .iter()
            .rposition(|s| s.header_durable)
            .map_or(0, |durable| obsolete.min(durable));
        let trimmed: Vec<Segment> = self.segments.drain(..obsolete).collect();
        for seg in trimmed {
            let len = fs::metadata(&seg.path).map_or(0, |m| m.len());
            if seg.found || !self.pool.recycle(&seg.path, seg.id, len) {
                self.release(seg.path, seg.id, len)?;
            }
        }
        self.appended = 0;
        self.held.trim(seq);
        Ok(())
    }

    /// Hands the trimmed segment at `path` (once segment `id`, `len` bytes) to the journal
    /// thread, renamed so that open removes it if a crash comes first; removed at once if that
    /// name is taken.
    fn release(&mut self, path: PathBuf, id: u64, len: u64) -> Result<()> {
        let to = self.dir.join(release::release_name(id));
        if fsutil::rename_no_replace(&path, &to).is_err() {
            return fs::remove_file(&path).map_err(|e| Error::io("remove", &path, e));
        }
        self.pool.releases.push_back(Release { path: to, len });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::engine::segments;
    use crate::options::RecoveryMode;

    fn open(dir: &Path, checkpoint: u64) -> Opened {
        open_sized(dir, 64 << 10, 2, checkpoint)
    }

    /// Opens (strictly) and tidies the journal in `dir` with segments of `segment_bytes` and
    /// up to `spares` spares.
    fn open_sized(dir: &Path, segment_bytes: u64, spares: usize, checkpoint: u64) -> Opened {
        let mut opened = Journal::open(
            dir,
            segment_bytes,
            spares,
            None,
            open::RootState {
                checkpoint_seq: checkpoint,
                // As after a clean close: appends go on in the last segment (after a crash a
                // new one starts: tests/engine_power_loss.rs, `..._revives_a_record_left_...`).
                closed_cleanly: true,
                older_copy: None,
            },
            RecoveryMode::AbsoluteConsistency,
            held::MAX_RUN_BYTES,
        )
        .expect("open");
        opened.journal.tidy().expect("tidy");
        opened
    }

    /// Record `seq`'s body: its length and bytes derived from the sequence number.
    fn body(seq: u64) -> Vec<u8> {
        let len = 100 + (seq * 7919 % 20_000) as usize;
        (0..len).map(|i| (seq as usize * 31 + i) as u8).collect()
    }

    /// What the preparing thread does, run here in line.
    fn prepare(j: &mut Journal) {
        if let Some(job) = j.begin_preparation() {
            let r = job.run().map_err(|e| (e, None));
            j.finish_preparation(r);
        }
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .expect("read_dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    /// A journal in `dir` (64 KiB segments, two spares kept) appended records of 1,000 bytes
    /// (record `seq` holds `seq as u8`) past two segments, flushed, its next segment prepared,
    /// then trimmed to its last record: segments 1 and 2 are the spares. Returns it and the
    /// last record.
    fn two_spares(dir: &Path) -> (Journal, u64) {
        let mut j = open(dir, 0).journal;
        let mut seq = 0;
        while j.segments.len() < 3 {
            seq += 1;
            assert_eq!(j.append(&[&vec![seq as u8; 1000]]).expect("append"), seq);
        }
        j.sync().expect("sync");
        prepare(&mut j);
        j.trim(seq).expect("trim");
        (j, seq)
    }

    /// A trim never leaves the journal without a segment whose header was flushed: records
    /// appended past a rotation without a flush, a trim covering every record keeps the
    /// segment before the new one (whose header may be in the page cache only: open would
    /// find no segment with a header after a power loss); once flushed, it goes.
    #[test]
    fn a_trim_keeps_the_newest_segment_whose_header_was_flushed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut j = open(dir.path(), 0).journal;
        let mut seq = 1;
        assert_eq!(j.append(&[&vec![1u8; 1000]]).expect("append"), seq);
        j.sync().expect("sync");
        let first = j.segments[0].id;
        while j.segments.len() < 2 {
            seq += 1;
            assert_eq!(j.append(&[&vec![seq as u8; 1000]]).expect("append"), seq);
        }
        j.trim(seq).expect("trim");
        assert_eq!(
            j.segments[0].id, first,
            "the only segment with a flushed header"
        );
        j.sync().expect("sync");
        j.trim(seq).expect("trim");
        assert!(
            j.segments.iter().all(|s| s.id != first),
            "trimmed once the next one's header was flushed"
        );
    }

    /// A rest hands the spares and the prepared segment over to be given back (renamed
    /// `<id>.jnl.tmp`) and keeps none; after it, the next segment is prepared only once the
    /// segment being written is half full (the append that gets it there asks for the
    /// thread), so that a commit now and then does not make and give back a whole segment
    /// each. Records and reopen are as without a rest.
    #[test]
    fn after_a_rest_the_next_segment_waits_for_half_the_one_being_written() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("journal");
        let record = |seq: u64| -> Vec<u8> { vec![seq as u8; 1000] };
        let (mut j, trimmed) = two_spares(&dir);
        let mut seq = trimmed;
        assert_eq!(j.pool.spares.len(), 2);
        assert!(matches!(j.pool.next, Next::Ready(_)));
        assert!(!j.half_full(), "the segment being written holds one record");

        assert!(!j.rest_if_idle().expect("rest"), "not idle for 5 s yet");
        j.set_rest_after(std::time::Duration::ZERO);
        assert!(j.rest_if_idle().expect("rest"));
        assert!(!j.rest_if_idle().expect("rest"), "rests once");
        assert!(j.pool.spares.is_empty() && matches!(j.pool.next, Next::Idle));
        let given: Vec<&Path> = j.pool.releases.iter().map(|r| r.path.as_path()).collect();
        assert_eq!(given.len(), 3, "the two spares and the prepared segment");
        let listed = names(&dir);
        for p in given {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            assert!(
                name.ends_with(".jnl.tmp") && listed.contains(&name),
                "{name}"
            );
        }
        assert!(
            listed.iter().all(|n| !segments::is_spare_name(n)),
            "{listed:?}"
        );
        assert!(j.begin_preparation().is_none(), "resting");

        // The next appends end the rest; the thread is asked for once the segment is half full.
        let mut asked = false;
        let mut under_half = 0;
        while !asked {
            seq += 1;
            assert_eq!(j.append(&[&record(seq)]).expect("append"), seq);
            asked = j.wakes_preparer();
            assert_eq!(asked, j.half_full(), "record {seq}");
            let job = j.begin_preparation();
            assert_eq!(job.is_some(), asked, "record {seq}");
            match job {
                Some(job) => {
                    assert!(!j.wakes_preparer(), "asked until the preparation began");
                    let r = job.run().map_err(|e| (e, None));
                    j.finish_preparation(r);
                }
                None => under_half += 1,
            }
        }
        assert!(under_half > 10, "{under_half} appends before half");
        assert_eq!(j.segments.len(), 1, "no rotation before half");
        // The next rotation takes the prepared segment, and the journal prepares as before.
        let before = j.segments.len();
        while j.segments.len() == before {
            seq += 1;
            assert_eq!(j.append(&[&record(seq)]).expect("append"), seq);
        }
        assert!(
            matches!(j.pool.next, Next::Idle),
            "the rotation took the prepared segment"
        );
        assert!(!j.wakes_preparer() && j.begin_preparation().is_some());
        j.sync().expect("sync");
        drop(j);
        let reopened = open(&dir, trimmed);
        let seqs: Vec<u64> = reopened.records.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, (trimmed + 1..=seq).collect::<Vec<_>>());
        assert!(names(&reopened.journal.dir)
            .iter()
            .all(|n| !n.ends_with(".tmp")));
    }

    /// A spare that can be neither renamed nor removed (gone from under the journal) fails the
    /// rest, naming it, and stays listed with the spares after it and the prepared segment,
    /// all still on disk: none drops out of the list while its file stays (before, the list
    /// was emptied first, and the spares after a failure were on disk but listed nowhere).
    #[test]
    fn a_spare_the_rest_cannot_hand_over_stays_listed_with_those_after_it() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (mut j, _) = two_spares(&tmp.path().join("journal"));
        let spares = j.pool.spares.clone();
        assert_eq!(spares.len(), 2);
        fs::remove_file(&spares[0]).expect("remove by hand");
        j.set_rest_after(std::time::Duration::ZERO);
        let err = j.rest_if_idle().expect_err("a spare gone").to_string();
        let name = spares[0]
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        assert!(err.contains(&name), "{err}");
        assert_eq!(
            j.pool.spares, spares,
            "the failed spare and the one after it"
        );
        assert!(spares[1].exists());
        assert!(
            matches!(j.pool.next, Next::Ready(_)),
            "the prepared segment kept"
        );
        assert!(j.pool.releases.is_empty());
    }

    #[test]
    fn records_survive_rotations_recycled_segments_and_reopen() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("journal");
        let mut j = open(&dir, 0).journal;
        let mut checkpoint = 0;
        let mut recycled = 0;
        for seq in 1..=400u64 {
            if seq % 3 == 0 {
                prepare(&mut j);
            }
            let got = j.append(&[&body(seq)]).expect("append");
            assert_eq!(got, seq);
            j.sync().expect("sync");
            if seq % 50 == 0 {
                // A checkpoint 10 records behind: the segments before it become spares.
                checkpoint = seq - 10;
                j.trim(checkpoint).expect("trim");
                recycled += j.pool.spares.len();
            }
        }
        assert!(recycled > 0, "no segment was ever kept as a spare");
        drop(j);
        let opened = open(&dir, checkpoint);
        let seqs: Vec<u64> = opened.records.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, (checkpoint + 1..=400).collect::<Vec<_>>());
        for r in &opened.records {
            assert_eq!(&r.body[..], &body(r.seq)[..], "record {}", r.seq);
        }
        // Appends go on after the reopen, into the segments (and spares) found.
        let mut j = opened.journal;
        for seq in 401..=500 {
            prepare(&mut j);
            assert_eq!(j.append(&[&body(seq)]).expect("append"), seq);
        }
        j.sync().expect("sync");
        drop(j);
        let opened = open(&dir, checkpoint);
        assert_eq!(opened.records.last().map(|r| r.seq), Some(500));
        assert_eq!(opened.records.len() as u64, 500 - checkpoint);
    }

    /// Appends through the page cache and direct appends leave the same bytes in every file:
    /// records of every size (a few bytes to two pages; records ending exactly at the end of a
    /// page; records larger than a segment, one filling its grown segment to the last byte, one
    /// ending inside the last page of it), rotations into recycled spares, and a reopen in the
    /// middle of a page (the direct writer reads the bytes before the position back from the
    /// file).
    #[test]
    fn direct_appends_write_the_same_bytes_as_buffered_ones() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dirs = [tmp.path().join("buffered"), tmp.path().join("direct")];
        let page = PAGE as usize;
        // The body length of record `seq`, from where the journal writes it (the same in both
        // runs: the offsets are).
        let size = |seq: u64, j: &Journal| -> usize {
            let w = j.writer.as_ref();
            match seq {
                // Larger than a segment, filling the one grown for it to the last byte.
                37 => 38 * page - SEGMENT_HEADER as usize - record::RECORD_HEADER,
                // Larger than a segment, ending inside a page: the segment grows to the end
                // of that page.
                38 => 100_001,
                // Ending exactly at the end of a page (of the next segment if it does not fit).
                s if s % 30 == 0 => {
                    let at = w.map_or(SEGMENT_HEADER, |w| w.offset);
                    let mut r = at.next_multiple_of(PAGE) - at;
                    if r < 64 {
                        r += PAGE;
                    }
                    if w.is_none_or(|w| at + r > w.room) {
                        r = PAGE;
                    }
                    r as usize - record::RECORD_HEADER
                }
                _ => body(seq).len() % 9_000,
            }
        };
        let record = |seq: u64, len: usize| -> Vec<u8> {
            (0..len)
                .map(|i| (seq as usize * 131 + i * 7) as u8)
                .collect()
        };
        let mut lens = Vec::new();
        let (mut directly, mut page_ends) = (0, 0);
        for (n, dir) in dirs.iter().enumerate() {
            let mut checkpoint = 0;
            let mut j = open(dir, 0).journal;
            for seq in 1..=160u64 {
                if seq == 1 || seq == 101 {
                    if seq == 101 {
                        // Reopen in the middle of a page.
                        directly += j.direct_appends;
                        drop(j);
                        j = open(dir, checkpoint).journal;
                    }
                    if n == 1 {
                        j.write_directly();
                    }
                }
                if seq % 4 == 0 {
                    prepare(&mut j);
                }
                let len = size(seq, &j);
                if n == 0 {
                    lens.push(len);
                } else {
                    assert_eq!(lens[seq as usize - 1], len, "record {seq}");
                }
                assert_eq!(j.append(&[&record(seq, len)[..]]).expect("append"), seq);
                if n == 1 && seq % 30 == 0 {
                    let at = j.writer.as_ref().map_or(0, |w| w.offset);
                    assert_eq!(at % PAGE, 0, "record {seq} ends a page");
                    page_ends += 1;
                }
                j.sync().expect("sync");
                if seq % 40 == 0 {
                    checkpoint = seq - 5;
                    j.trim(checkpoint).expect("trim");
                }
            }
            if n == 1 {
                directly += j.direct_appends;
            }
            drop(j);
            let opened = open(dir, checkpoint);
            for r in &opened.records {
                let want = record(r.seq, lens[r.seq as usize - 1]);
                assert_eq!(&r.body[..], &want[..], "record {}", r.seq);
            }
            assert_eq!(opened.records.last().map(|r| r.seq), Some(160));
        }
        assert_eq!(page_ends, 5);
        // Where the file system takes direct writes, every append went direct, the ones that
        // grew a segment too.
        let probe = tmp.path().join("probe");
        fs::write(&probe, b"").expect("probe");
        if direct::Direct::open(&probe).is_some() {
            assert_eq!(directly, 160, "appends written directly");
        }
        assert_eq!(names(&dirs[0]), names(&dirs[1]));
        for name in names(&dirs[0]) {
            let a = fs::read(dirs[0].join(&name)).expect("read");
            let b = fs::read(dirs[1].join(&name)).expect("read");
            assert_eq!(a.len(), b.len(), "{name}");
            assert_eq!(a.len() % page, 0, "{name} holds a whole number of pages");
            if let Some(at) = (0..a.len()).find(|&i| a[i] != b[i]) {
                panic!("{name} differs at byte {at}");
            }
        }
    }

    /// Tiny records (what unsynced commits of a few bytes append) are counted in runs: the
    /// count's memory follows the bytes held, not the number of records (one entry a record
    /// was 16 bytes each: a journal at its 1 GiB bound held tens of millions of them).
    #[test]
    fn the_held_count_of_tiny_records_keeps_a_run_a_mebibyte() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("journal");
        let mut j = open_sized(&dir, 1 << 20, 1, 0).journal;
        for seq in 1..=60_000u64 {
            assert_eq!(j.append(&[&seq.to_le_bytes()]).expect("append"), seq);
        }
        let bytes = j.held();
        assert!(bytes > 60_000 * 8, "{bytes} bytes held");
        assert!(
            j.held.runs() as u64 <= bytes / held::MAX_RUN_BYTES + 1,
            "{} runs for {bytes} bytes of 60,000 records",
            j.held.runs()
        );
    }

    /// `held` counts the bytes of the records after the last trim, as the files lay them out:
    /// each append adds the distance its record moved the write position; a trim drops the
    /// records at or below its checkpoint; an open counts the records after its checkpoint.
    #[test]
    fn held_counts_the_records_after_the_last_trim() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("journal");
        let mut j = open_sized(&dir, 64 << 10, 1, 0).journal;
        // A run a record: the exact count through the trims (module `held` tests the runs the
        // journal keeps, never below the exact count and high by less than a run).
        j.held = Held::new(0);
        // (sequence number, bytes it took in its segment)
        let mut took: Vec<(u64, u64)> = Vec::new();
        for seq in 1..=60u64 {
            let before = j.writer.as_ref().map(|w| (w.path.clone(), w.offset));
            let body = vec![seq as u8; (seq as usize * 997) % 9_000];
            assert_eq!(j.append(&[&body]).expect("append"), seq);
            j.sync().expect("sync");
            let w = j.writer.as_ref().expect("a segment");
            let start = match before {
                Some((path, offset)) if path == w.path => offset,
                _ => SEGMENT_HEADER,
            };
            took.push((seq, w.offset - start));
            let want: u64 = took.iter().map(|&(_, b)| b).sum();
            assert_eq!(j.held(), want, "after record {seq}");
            if seq % 20 == 0 {
                let checkpoint = seq - 7;
                j.trim(checkpoint).expect("trim");
                took.retain(|&(s, _)| s > checkpoint);
                let want: u64 = took.iter().map(|&(_, b)| b).sum();
                assert_eq!(j.held(), want, "after the trim to {checkpoint}");
            }
        }
        drop(j);
        // Open with the last checkpoint, 53: the records after it.
        let opened = open_sized(&dir, 64 << 10, 1, 53);
        let want: u64 = took.iter().filter(|&&(s, _)| s > 53).map(|&(_, b)| b).sum();
        assert_eq!(opened.journal.held(), want);
        assert_eq!(opened.records.len(), 7);
    }

    /// A segment grown for a record larger than a segment holds that record alone, in the life
    /// that wrote it and after a reopen: the next record starts the next segment, though the
    /// grown file's last page has room after the record.
    #[test]
    fn a_segment_grown_for_a_large_record_holds_it_alone() {
        let tmp = tempfile::tempdir().expect("tempdir");
        for reopen in [false, true] {
            let dir = tmp.path().join(format!("journal-{reopen}"));
            let mut j = open_sized(&dir, 1 << 20, 1, 0).journal;
            assert_eq!(j.append(&[b"small"]).expect("append"), 1);
            // Ends 100 bytes into a page of the grown segment.
            let big = vec![7u8; (2 << 20) + 100 - record::RECORD_HEADER];
            assert_eq!(j.append(&[&big]).expect("append"), 2);
            j.sync().expect("sync");
            if reopen {
                drop(j);
                j = open_sized(&dir, 1 << 20, 1, 0).journal;
            }
            assert_eq!(j.append(&[b"after"]).expect("append"), 3);
            j.sync().expect("sync");
            drop(j);
            let ids: Vec<u64> = (1..=3).collect();
            let want: Vec<String> = ids.iter().map(|&id| segment_name(id)).collect();
            assert_eq!(names(&dir), want, "reopen {reopen}");
            let grown = fs::metadata(dir.join(segment_name(2))).expect("stat").len();
            assert_eq!(grown, SEGMENT_HEADER + (2 << 20) + PAGE, "reopen {reopen}");
            let opened = open_sized(&dir, 1 << 20, 1, 0);
            let seqs: Vec<u64> = opened.records.iter().map(|r| r.seq).collect();
            assert_eq!(seqs, vec![1, 2, 3], "reopen {reopen}");
            assert_eq!(opened.records[1].body.len(), big.len());
        }
    }

    /// A clean close whose last segment holds 1 MiB of records or more leaves one segment, the
    /// next id, holding only its header; the next open reads no record and appends go on with
    /// the next sequence number. A smaller last segment is left as it is (its records are read
    /// back and checked, as after any open). A crash between the new segment and the trim
    /// leaves both, the older one obsolete.
    #[test]
    fn a_clean_close_starts_a_segment_of_its_own_once_the_last_holds_a_mebibyte() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let record = |seq: u64| -> Vec<u8> { vec![seq as u8; 40 << 10] };
        // (records written before the close, whether the close starts a segment)
        for (n, rotates) in [(10u64, false), (30, true)] {
            let dir = tmp.path().join(format!("journal-{n}"));
            let mut j = open_sized(&dir, 4 << 20, 1, 0).journal;
            for seq in 1..=n {
                if seq % 8 == 0 {
                    prepare(&mut j);
                }
                assert_eq!(j.append(&[&record(seq)]).expect("append"), seq);
                j.sync().expect("sync");
            }
            let last_id = j.segments.last().expect("a segment").id;
            j.close_clean(n).expect("close");
            drop(j);
            let want_id = if rotates { last_id + 1 } else { last_id };
            assert_eq!(names(&dir), vec![segment_name(want_id)], "{n} records");
            let mut opened = open_sized(&dir, 4 << 20, 1, n);
            assert!(opened.records.is_empty(), "{n} records");
            let w = opened.journal.writer.as_ref().expect("a segment to write");
            assert_eq!(w.offset == SEGMENT_HEADER, rotates, "{n} records");
            assert_eq!(opened.journal.append(&[b"after"]).expect("append"), n + 1);
            opened.journal.sync().expect("sync");
            drop(opened);
            let reopened = open_sized(&dir, 4 << 20, 1, n);
            let seqs: Vec<u64> = reopened.records.iter().map(|r| r.seq).collect();
            assert_eq!(seqs, vec![n + 1], "{n} records");
            assert_eq!(&reopened.records[0].body[..], b"after");
        }
        // A crash after the new segment is durable and before the trim.
        let dir = tmp.path().join("journal-crash");
        let mut j = open_sized(&dir, 4 << 20, 1, 0).journal;
        for seq in 1..=30 {
            j.append(&[&record(seq)]).expect("append");
        }
        j.sync().expect("sync");
        j.rotate(31, 0).expect("rotate");
        j.sync().expect("sync");
        drop(j);
        let opened = open_sized(&dir, 4 << 20, 1, 30);
        assert!(opened.records.is_empty());
        let ids: Vec<u64> = opened.journal.segments.iter().map(|s| s.id).collect();
        assert_eq!(ids, vec![2]);
        assert_eq!(opened.journal.next_seq, 31);
    }

    /// A clean close that starts its segment from a recycled spare leaves nothing of the
    /// spare's earlier life where the first record goes: the next open reads no record and no
    /// byte of one. (Before, the spare's old first record was there, and open read its body
    /// whole, up to a segment, to tell it from a record whose sequence number field alone was
    /// damaged: about 4 MiB at each reopen of 1,024 groups, 40 MiB at 10,000.)
    #[test]
    fn a_segment_made_from_a_spare_holds_zeros_where_its_first_record_goes() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("journal");
        // 4 MiB segments hold three 1 MiB records; one spare is kept.
        let mut j = open_sized(&dir, 4 << 20, 1, 0).journal;
        let record = |seq: u64| -> Vec<u8> { vec![seq as u8; 1 << 20] };
        for seq in 1..=3 {
            assert_eq!(j.append(&[&record(seq)]).expect("append"), seq);
        }
        prepare(&mut j);
        assert_eq!(j.append(&[&record(4)]).expect("append"), 4);
        j.sync().expect("sync");
        // Segment 1 (records 1-3) becomes the spare, and segment 3 is made from it.
        j.trim(3).expect("trim");
        assert_eq!(j.pool.spares.len(), 1, "segment 1 kept as the spare");
        for seq in 5..=6 {
            assert_eq!(j.append(&[&record(seq)]).expect("append"), seq);
        }
        j.sync().expect("sync");
        prepare(&mut j);
        assert!(j.pool.spares.is_empty(), "segment 3 made from the spare");
        j.close_clean(6).expect("close");
        drop(j);
        assert_eq!(names(&dir), vec![segment_name(3)]);
        let bytes = fs::read(dir.join(segment_name(3))).expect("read");
        let first = SEGMENT_HEADER as usize..(SEGMENT_HEADER + PAGE) as usize;
        assert!(
            bytes[first].iter().all(|&b| b == 0),
            "the page where segment 3's first record goes holds bytes of segment 1's records"
        );
        let mut opened = open_sized(&dir, 4 << 20, 1, 6);
        assert!(opened.records.is_empty());
        assert_eq!(opened.journal.append(&[b"after"]).expect("append"), 7);
        opened.journal.sync().expect("sync");
        drop(opened);
        let reopened = open_sized(&dir, 4 << 20, 1, 6);
        let seqs: Vec<u64> = reopened.records.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, vec![7]);
    }

    /// A new journal's first segment is written with zeros to its end, not only reserved: a
    /// commit whose record lands in unwritten extents has its flush carry their conversion
    /// (a fresh root's rounds at N = 16 took a quarter longer: docs/PERFORMANCE.md, "A new
    /// root's first segment written, not reserved"). Checked by what the file system reports
    /// as data: where reserved blocks read as holes (ext4, xfs), an unwritten extent is a hole
    /// to `SEEK_DATA`.
    #[test]
    fn a_new_journals_first_segment_is_written_not_reserved() {
        use rustix::fs::{seek, SeekFrom};
        let tmp = tempfile::tempdir().expect("tempdir");
        let reserved = tmp.path().join("reserved");
        let f = File::create(&reserved).expect("create");
        crate::sys::fsutil::allocate(&f, &reserved, 1 << 20).expect("allocate");
        if seek(&f, SeekFrom::Data(0)).is_ok() {
            eprintln!("this file system reports reserved blocks as data: nothing to tell apart");
            return;
        }
        let dir = tmp.path().join("journal");
        let mut j = open_sized(&dir, 1 << 20, 1, 0).journal;
        j.begin().expect("begin");
        drop(j);
        let path = dir.join(segment_name(1));
        let f = File::open(&path).expect("open");
        assert_eq!(f.metadata().expect("stat").len(), 1 << 20);
        for at in (0..1u64 << 20).step_by(64 << 10) {
            assert_eq!(
                seek(&f, SeekFrom::Data(at)).ok(),
                Some(at),
                "byte {at} of {} is not written",
                path.display()
            );
        }
    }

    /// A record larger than a direct write's piece is written in several, in order.
    #[test]
    fn a_record_larger_than_a_direct_piece_reads_back_whole() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("journal");
        let mut j = open_sized(&dir, 32 << 20, 1, 0).journal;
        j.write_directly();
        let big: Vec<u8> = (0..(19 << 20) + 12_345)
            .map(|i: usize| ((i * 31) >> 3) as u8)
            .collect();
        for seq in 1..=3u64 {
            let body: &[u8] = if seq == 2 { &big } else { b"small record" };
            assert_eq!(j.append(&[body]).expect("append"), seq);
            j.sync().expect("sync");
        }
        let direct_taken = j.writer.as_ref().is_some_and(|w| w.direct.is_some());
        let written_directly = j.direct_appends;
        drop(j);
        let opened = open_sized(&dir, 32 << 20, 1, 0);
        let bodies: Vec<&[u8]> = opened.records.iter().map(|r| &r.body[..]).collect();
        if direct_taken {
            assert_eq!(written_directly, 3, "records written directly");
        }
        assert_eq!(
            bodies,
            [&b"small record"[..], &big[..], &b"small record"[..]]
        );
    }

    #[test]
    fn a_record_is_followed_by_zeros_to_the_end_of_its_page() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("journal");
        fs::create_dir_all(&dir).expect("mkdir");
        // A spare whose old bytes are all 0xAA.
        fs::write(dir.join(segments::spare_name(7)), vec![0xAA; 64 << 10]).expect("spare");
        let mut j = open(&dir, 0).journal;
        j.append(&[b"first"]).expect("append");
        prepare(&mut j);
        // The first segment was made on the commit path from the spare; its header and the
        // first record's page hold nothing of the old bytes.
        let path = dir.join(segment_name(1));
        let bytes = fs::read(&path).expect("read");
        let end = SEGMENT_HEADER as usize + record::stored_len(5) as usize;
        assert!(bytes[end..SEGMENT_HEADER as usize * 2]
            .iter()
            .all(|&b| b == 0));
        assert!(bytes[SEGMENT_HEADER as usize * 2..]
            .iter()
            .all(|&b| b == 0xAA));
    }

    /// A prepared segment left behind at open becomes a spare named after its id, and that id
    /// is the next segment's again: the segment later made under it, once trimmed, must not be
    /// renamed over the spare still waiting under that name (seen by the engine's SIGKILL
    /// test: a listed spare that no longer existed failed a commit).
    #[test]
    fn a_spare_named_after_a_reused_id_is_never_replaced() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("journal");
        let mut j = open(&dir, 0).journal;
        j.append(&[b"one"]).expect("append");
        j.sync().expect("sync");
        prepare(&mut j);
        drop(j);
        // Two older spares, listed (by name) before the one open makes of segment 2.
        for id in [100, 101] {
            fs::write(dir.join(segments::spare_name(id)), vec![0u8; 64 << 10]).expect("spare");
        }
        let mut j = open_sized(&dir, 64 << 10, 4, 0).journal;
        for seq in 2..=300u64 {
            assert_eq!(j.append(&[&body(seq)]).expect("append"), seq);
            j.sync().expect("sync");
            if seq % 7 == 0 {
                j.trim(seq - 1).expect("trim");
            }
            let mut listed = j.pool.spares.clone();
            for s in &listed {
                assert!(
                    s.exists(),
                    "record {seq}: spare {} is listed but gone",
                    s.display()
                );
            }
            listed.sort();
            listed.dedup();
            assert_eq!(
                listed.len(),
                j.pool.spares.len(),
                "record {seq}: a spare listed twice"
            );
        }
    }

    /// A segment found at open is never kept as a spare (`Segment::found`): a blank header
    /// does not prove that no record of its next life reached the disk.
    #[test]
    fn a_prepared_segment_left_behind_is_removed_at_open() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("journal");
        let mut j = open(&dir, 0).journal;
        j.append(&[b"one"]).expect("append");
        j.sync().expect("sync");
        prepare(&mut j);
        assert!(matches!(j.pool.next, Next::Ready(_)));
        drop(j);
        assert_eq!(names(&dir), [segment_name(1), segment_name(2)]);
        let opened = open(&dir, 0);
        assert_eq!(opened.records.len(), 1);
        assert_eq!(names(&dir), [segment_name(1)]);
    }

    /// A segment whose header (its checksum valid) names record 0 as its first, which no
    /// writer gives out, opens in both modes without an overflow: the record before the first
    /// expected was taken as `0 - 1` (a panic in a debug build; found by a review).
    #[test]
    fn a_segment_claiming_record_0_first_opens_without_overflow() {
        for mode in [
            RecoveryMode::AbsoluteConsistency,
            RecoveryMode::TolerateTailCorruption,
        ] {
            let tmp = tempfile::tempdir().expect("tempdir");
            let dir = tmp.path().join("journal");
            fs::create_dir(&dir).expect("mkdir");
            let mut page = vec![0u8; PAGE as usize];
            page[..header::H_LEN].copy_from_slice(&encode_header(1, 0, false, false));
            fs::write(dir.join(segment_name(1)), &page).expect("write");
            let opened = Journal::open(
                &dir,
                64 << 10,
                2,
                None,
                open::RootState {
                    checkpoint_seq: 0,
                    closed_cleanly: true,
                    older_copy: None,
                },
                mode,
                held::MAX_RUN_BYTES,
            );
            if let Ok(mut opened) = opened {
                assert!(opened.records.is_empty());
                // Sequence numbers from 1, as in a new journal.
                assert_eq!(opened.journal.append(&[b"one"]).expect("append"), 1);
            }
        }
    }
}
