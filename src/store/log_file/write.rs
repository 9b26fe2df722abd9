//! The write path of a `LogFile` and its growth policy: appending entries (payloads first, then
//! the slots describing them), sealing them in encrypted stores, zeroing and rewriting slots,
//! flushing, and reserving space with `fallocate` before any byte of a save is written.
//!
//! Owns: the order of the writes, how far a file grows at a time, and when an engine file's
//! write-back starts. Must never: write through the map (bytes go in with `pwritev`), rewrite
//! payload bytes below the payload end (handed-out entries may reference them), or choose which
//! file or slot an entry goes to (that is `wal`).

use std::fs::File;
use std::io::IoSlice;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::Ordering;

use raft::prelude::{Entry, EntryType};

use super::slot::{
    entry_aad, entry_type_code, slot_crc, SealBinding, Slot, FLAG_BINDS_LEN, FLAG_CONTEXT,
    FLAG_DATA_DROPPED, FLAG_SEALED, MAX_OFFSET, SLOTS_PER_FILE, SLOT_AREA, SLOT_CRC, SLOT_INDEX,
    SLOT_SIZE, SLOT_TERM,
};
use super::{open_rw, sink_of, Handle, LogFile, Scratch, PAGE, PAYLOAD_START};
use crate::error::{Error, Result};
use crate::sys::crypto::Cipher;
use crate::sys::fsutil;
use crate::sys::le;
use crate::sys::map::Sink;

/// What open finds past the end of an engine group's log in its last file
/// ([`LogFile::past_end`]); nothing is changed yet.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct PastEnd {
    /// The slot before the first one past the end, as written: (term, index); `None` when the
    /// log ends before this file.
    pub(crate) last_slot: Option<(u64, u64)>,
    /// Runs `[lo, hi)` of slots past the end that are not all zero (written after the meta
    /// page: the journal writes them again, or they belong to records that never became
    /// durable). Open zeroes them, so that nothing past the end of the log looks like entries.
    pub(crate) stale: Vec<(u32, u32)>,
}

/// Payload space reserved when a file is created.
pub(super) const INITIAL_PAYLOAD_RESERVE: u64 = 4 << 20;
/// Largest single growth step of the payload area.
const MAX_GROWTH_STEP: u64 = 64 << 20;
/// Payload space a file reserves at once from what its saves so far project (`ensure_len`).
const MAX_PROJECTED_PAYLOAD: u64 = 1 << 30;
/// Slots a file must have filled before its payload bytes per slot count as a projection (a
/// few large entries early in a file say little about the rest).
const MIN_SLOTS_TO_PROJECT: u64 = 1024;
/// Address space reserved for a file being appended to, so it grows without a new mapping.
pub(super) const ACTIVE_MAP_RESERVE: usize = 1 << 30;
/// Address space reserved for each file of an engine group (thousands of groups share one
/// process's address space and map count).
pub(super) const ENGINE_MAP_RESERVE: usize = 64 << 20;
/// Payload space a new file of an engine group starts with: a group's disk use grows with its
/// data, from a few pages.
pub(super) const ENGINE_INITIAL_RESERVE: u64 = 16 << 10;
/// Largest growth step of an engine group file's payload area.
const ENGINE_MAX_GROWTH: u64 = 4 << 20;

/// Payload bytes of an engine file written between two starts of its write-back: about what a
/// commit of 16 groups carries, so that the engine's writer, which starts a record's worth of
/// write-back after each journal flush, never starts a step too large for the gap before the
/// next one (docs/PERFORMANCE.md, "Write-back paced by the flushes"; 256 KiB before).
pub(super) const WRITEBACK_BYTES: u64 = 64 << 10;

/// Starts the write-back of `ranges` of `file` (`POSIX_FADV_DONTNEED` on each, see
/// [`LogFile::start_writeback`]); returns the bytes of the ranges whose advice succeeded.
fn advise_writeback(file: &File, ranges: [Option<(u64, u64)>; 2]) -> u64 {
    ranges
        .into_iter()
        .flatten()
        .filter(|&(from, to)| {
            let len = std::num::NonZeroU64::new(to - from);
            rustix::fs::fadvise(file, from, len, rustix::fs::Advice::DontNeed).is_ok()
        })
        .map(|(from, to)| to - from)
        .sum()
}

/// Widens the range `r` to cover `[from, to)`.
fn widen(r: &mut Option<(u64, u64)>, from: u64, to: u64) {
    if from < to {
        *r = Some(r.map_or((from, to), |(a, b)| (a.min(from), b.max(to))));
    }
}

/// Saves whose payloads total at most this many bytes are staged into one buffer and written
/// with one `pwrite`; larger ones go straight from the entries' buffers with `pwritev`.
const STAGE_LIMIT: u64 = 256 << 10;

/// An engine group's file stages a save's payloads only when they average fewer bytes than
/// this: the writer moves 16-32 KiB of a group's entries at a time, and staging them copied
/// every byte once more (docs/PERFORMANCE.md, "Fewer, larger writes into the groups' files").
/// A `DiskStorage` keeps staging.
const ENGINE_STAGE_BELOW: u64 = 512;

/// Bytes an entry's payload takes in the payload area.
pub(crate) fn payload_len(e: &Entry) -> u64 {
    let ctx = if e.context.is_empty() {
        0
    } else {
        4 + e.context.len() as u64
    };
    e.data.len() as u64 + ctx
}

impl LogFile {
    /// Makes sure the file (and map) is at least `end` bytes, growing it with fallocate first so
    /// that a full disk fails here, before any byte of the save is written. `slots_after`: the
    /// slots in use once this save is written (the payloads up to `end` belong to them).
    ///
    /// A `DiskStorage` file grows at least by doubling (4 MiB up to 64 MiB steps), and at once to
    /// where it is heading when that is further: once 1,024 slots are filled, its payload bytes
    /// per slot so far, times the slots of a file, plus an eighth (at most 1 GiB of payloads).
    /// Few large steps, because each `fallocate` is placed on its own and a file with four
    /// extents makes ext4 allocate and free an extent-tree block on every flushed save (the
    /// thrash `create`'s `zero_slot_area` avoids; docs/PERFORMANCE.md). An engine group's file
    /// grows with its data, by an eighth of it at a time (a small group stays small).
    fn ensure_len(&mut self, end: u64, slots_after: u64) -> Result<()> {
        let len = self.len();
        if end <= len {
            return Ok(());
        }
        let need = end.next_multiple_of(1 << 20);
        let want = if let Handle::Detached(_) = self.handle {
            // An engine group's file grows with its data, an eighth at a time.
            let used = end - PAYLOAD_START;
            (end + (used / 8).clamp(ENGINE_INITIAL_RESERVE, ENGINE_MAX_GROWTH))
                .next_multiple_of(PAGE as u64)
        } else {
            let step = (len - PAYLOAD_START).clamp(INITIAL_PAYLOAD_RESERVE, MAX_GROWTH_STEP);
            let used = end - PAYLOAD_START;
            let heading = if slots_after >= MIN_SLOTS_TO_PROJECT {
                (used.saturating_mul(SLOTS_PER_FILE) / slots_after.min(SLOTS_PER_FILE))
                    .saturating_mul(9)
                    / 8
            } else {
                0
            };
            end.max(len + step)
                .max(PAYLOAD_START + heading.min(MAX_PROJECTED_PAYLOAD))
                .next_multiple_of(1 << 20)
        };
        let need = need.min(want);
        let path = self.path.clone();
        // Without room for the whole step, by what this save needs.
        let got = self.with_fd(|f| fsutil::allocate_preferring(f, &path, want, need))?;
        let reserve = match &self.handle {
            Handle::Own(_) => ACTIVE_MAP_RESERVE,
            Handle::Detached(_) => ENGINE_MAP_RESERVE,
        };
        let Sink::Fd(f) = sink_of(&mut self.handle, &self.path)?;
        self.map
            .writable(&self.path)?
            .grow(f, &self.path, got as usize, reserve)
    }

    /// Runs `f` on the file's descriptor: its own, the one a detached file holds while it is
    /// written, or one opened for the moment.
    fn with_fd<T>(&self, f: impl FnOnce(&File) -> Result<T>) -> Result<T> {
        match &self.handle {
            Handle::Own(file) | Handle::Detached(Some(file)) => f(file),
            Handle::Detached(None) => f(&open_rw(&self.path)?),
        }
    }

    /// Starts the write-back of what was written through a detached file's descriptor once that
    /// is `WRITEBACK_BYTES` of payloads: the pages go to the disk in pieces of that size, file
    /// by file at different times, rather than all at once in the engine's next checkpoint
    /// flush, where they would hold up the commits' journal flushes (a flush waits for the
    /// device's queue), and not in pieces so small that their number costs the device more than
    /// the burst. `POSIX_FADV_DONTNEED` on exactly the ranges written starts their write-back
    /// and drops nothing: every page in them is dirty (or mapped, which is never dropped).
    /// Advice only: its failure changes nothing.
    pub(crate) fn start_writeback(&mut self) {
        if let Handle::Detached(Some(file)) = &self.handle {
            if self.payload_end >= self.writeback_at {
                self.writeback_at = self.next_writeback_at();
                advise_writeback(file, std::mem::take(&mut self.unstarted));
            }
        }
    }

    /// Starts the write-back of everything written and not yet started, whatever the step
    /// (an engine checkpoint, before its `syncfs`, so that the flush finds little left to
    /// write; docs/PERFORMANCE.md, "The checkpoint's flush, paced"). A file without a
    /// descriptor opens one for the moment (a file gone since, its group removed, starts
    /// nothing). Returns the bytes whose write-back it started. Advice only: a range whose
    /// advice fails is dropped from the ranges to start, as if started; the engine's next
    /// flush writes it either way.
    pub(crate) fn start_writeback_now(&mut self) -> u64 {
        if !matches!(self.handle, Handle::Detached(_)) || self.unstarted == [None, None] {
            return 0;
        }
        let ranges = self.unstarted;
        match self.with_fd(|file| Ok(advise_writeback(file, ranges))) {
            Ok(started) => {
                self.unstarted = [None, None];
                self.writeback_at = self.next_writeback_at();
                started
            }
            Err(_) => 0,
        }
    }

    /// The file's first write-back point past its payloads: points lie `WRITEBACK_BYTES` apart
    /// from the offset the file was opened with (its phase), so that files of different groups,
    /// written at the same pace, keep starting their write-back at different rounds, whatever
    /// a step overshot and however many checkpoints started all of them at once
    /// ([`LogFile::start_writeback_now`]). A point not reached yet stays.
    fn next_writeback_at(&self) -> u64 {
        match self.payload_end.checked_sub(self.writeback_at) {
            None => self.writeback_at,
            Some(behind) => self.writeback_at + (behind / WRITEBACK_BYTES + 1) * WRITEBACK_BYTES,
        }
    }

    /// The bytes whose write-back [`LogFile::start_writeback`] would start now (0: none).
    pub(crate) fn writeback_due(&self) -> u64 {
        if matches!(self.handle, Handle::Detached(Some(_))) && self.payload_end >= self.writeback_at
        {
            self.unstarted
                .iter()
                .flatten()
                .map(|(from, to)| to - from)
                .sum()
        } else {
            0
        }
    }

    /// Closes the descriptor a detached file opened to be written (engine files keep none
    /// while idle), after [`LogFile::start_writeback`].
    pub(crate) fn release_fd(&mut self) {
        self.start_writeback();
        if let Handle::Detached(fd) = &mut self.handle {
            *fd = None;
        }
    }

    /// Whether the file holds a descriptor it opened to be written.
    pub(crate) fn holds_fd(&self) -> bool {
        matches!(self.handle, Handle::Detached(Some(_)))
    }

    /// Writes `entries` into slots starting at `first_slot`; their payloads go after the last
    /// payload written to this file. Payloads are written before slots. The caller guarantees
    /// the entries fit in the slot array and carry the indexes of their slots.
    pub(crate) fn write_entries(
        &mut self,
        first_slot: u32,
        entries: &[Entry],
        scratch: &mut Scratch,
    ) -> Result<()> {
        if let Some(cipher) = &self.cipher {
            let (payloads, slots) = seal_entries(cipher, self.payload_end, entries);
            return self.write_sealed(first_slot, entries.len(), &payloads, &slots);
        }
        let start = self.payload_end;
        let total: u64 = entries.iter().map(payload_len).sum();
        self.reserve(start + total, u64::from(first_slot) + entries.len() as u64)?;
        // Payloads, back to back, then the slots describing them. Each CRC is computed from
        // the caller's buffers, never read back. Small payloads are staged into one buffer:
        // the kernel's per-iovec cost is larger than a memcpy of a few hundred bytes.
        let engine = matches!(self.handle, Handle::Detached(_));
        let staged = total <= STAGE_LIMIT
            && entries.len() > 1
            && !(engine && total >= ENGINE_STAGE_BELOW * entries.len() as u64);
        let mut stage = std::mem::take(&mut scratch.stage);
        let mut slots = std::mem::take(&mut scratch.slots);
        stage.clear();
        slots.clear();
        // Context lengths must outlive the iovecs that point at them (unstaged path only).
        let ctx_lens: Vec<[u8; 4]> = if !staged && entries.iter().any(|e| !e.context.is_empty()) {
            entries
                .iter()
                .map(|e| (e.context.len() as u32).to_le_bytes())
                .collect()
        } else {
            Vec::new()
        };
        let mut bufs = if staged {
            Vec::new()
        } else {
            Vec::with_capacity(entries.len() * 3)
        };
        let mut at = start;
        for (i, e) in entries.iter().enumerate() {
            let ctx_len = (e.context.len() as u32).to_le_bytes();
            let slot = Slot {
                term: e.term,
                index: e.index,
                offset: at,
                entry_type: entry_type_code(e.entry_type),
                flags: if e.context.is_empty() {
                    0
                } else {
                    FLAG_CONTEXT
                },
                data_len: e.data.len() as u32,
                crc: 0,
            };
            if staged {
                stage.extend_from_slice(&e.data);
            } else if !e.data.is_empty() {
                bufs.push(IoSlice::new(&e.data));
            }
            at += e.data.len() as u64;
            if !e.context.is_empty() {
                if staged {
                    stage.extend_from_slice(&ctx_len);
                    stage.extend_from_slice(&e.context);
                } else if let Some(len) = ctx_lens.get(i) {
                    bufs.push(IoSlice::new(len));
                    bufs.push(IoSlice::new(&e.context));
                }
                at += 4 + e.context.len() as u64;
            }
            let mut b = [0u8; SLOT_SIZE];
            slot.encode_fields(&mut b);
            let crc = if e.context.is_empty() {
                slot_crc(&b, &[&e.data])
            } else {
                slot_crc(&b, &[&e.data, &ctx_len, &e.context])
            };
            b[SLOT_CRC..].copy_from_slice(&crc.to_le_bytes());
            slots.extend_from_slice(&b);
        }
        let mut one;
        let payloads: &mut [IoSlice<'_>] = if staged {
            one = [IoSlice::new(&stage)];
            &mut one
        } else {
            &mut bufs
        };
        let written =
            self.write_payloads_then_slots(first_slot, entries.len(), payloads, at, &slots);
        drop(bufs);
        // Keep the buffers for the next save unless one batch made them unusually large.
        if stage.capacity() <= 2 * STAGE_LIMIT as usize {
            scratch.stage = stage;
        }
        if slots.capacity() <= 1 << 20 {
            scratch.slots = slots;
        }
        written
    }

    /// Writes the output of [`seal_entries`] for the `n` entries from `first_slot`.
    fn write_sealed(
        &mut self,
        first_slot: u32,
        n: usize,
        payloads: &[u8],
        slots: &[u8],
    ) -> Result<()> {
        let end = self.payload_end + payloads.len() as u64;
        self.reserve(end, u64::from(first_slot) + n as u64)?;
        let mut bufs = [IoSlice::new(payloads)];
        self.write_payloads_then_slots(first_slot, n, &mut bufs, end, slots)
    }

    /// Makes room for payloads up to `end` (the format's limit, then fallocate) before anything
    /// of a save is written; `slots_after` as in `ensure_len`.
    fn reserve(&mut self, end: u64, slots_after: u64) -> Result<()> {
        if end > MAX_OFFSET {
            return Err(Error::InvalidArgument(format!(
                "log file {} would grow past {MAX_OFFSET} bytes",
                self.path.display()
            )));
        }
        self.ensure_len(end, slots_after)
    }

    /// Writes `payloads` at the payload end and then `slots` (the `n` slots from `first_slot`
    /// describing them), in that order, and moves the payload end to `end`.
    fn write_payloads_then_slots(
        &mut self,
        first_slot: u32,
        n: usize,
        payloads: &mut [IoSlice<'_>],
        end: u64,
        slots: &[u8],
    ) -> Result<()> {
        if matches!(self.handle, Handle::Detached(_)) {
            let slots_at = u64::from(first_slot) * SLOT_SIZE as u64;
            widen(&mut self.unstarted[0], self.payload_end, end);
            widen(
                &mut self.unstarted[1],
                slots_at,
                slots_at + slots.len() as u64,
            );
        }
        let sink = sink_of(&mut self.handle, &self.path)?;
        let map = self.map.writable(&self.path)?;
        self.dirty = true;
        map.write(sink, self.payload_end as usize, payloads, &self.path)?;
        self.payload_end = end;
        map.freeze(end as usize);
        map.write(
            sink,
            first_slot as usize * SLOT_SIZE,
            &mut [IoSlice::new(slots)],
            &self.path,
        )?;
        let n = first_slot + n as u32;
        if self.verified.load(Ordering::Acquire) >= first_slot {
            self.verified.store(n, Ordering::Release);
        }
        Ok(())
    }

    /// What lies past the end of an engine group's log in this, its last file, at open:
    /// `from` is the first slot past the end its meta page records, `log_from` the slot of
    /// the log's first index when this file holds it. Read only, on `file` (the descriptor the
    /// file was opened with): the caller zeroes the runs found ([`LogFile::zero_slots`]) once
    /// every group has been read. Only the slot pages that hold data are read (`SEEK_DATA`),
    /// so a sparse slot area is not.
    pub(crate) fn past_end(
        &self,
        file: &File,
        from: u32,
        log_from: Option<u32>,
    ) -> Result<PastEnd> {
        use rustix::fs::{seek, SeekFrom};
        let last_slot = match from.checked_sub(1) {
            Some(k) => {
                let b = read_last_slot(file, &self.path, k, log_from)?;
                Some((le::u64_at(&b, SLOT_TERM), le::u64_at(&b, SLOT_INDEX)))
            }
            None => None,
        };
        let end = SLOT_AREA as u64;
        let mut at = u64::from(from) * SLOT_SIZE as u64;
        let mut stale = Vec::new();
        while at < end {
            let data = match seek(file, SeekFrom::Data(at)) {
                Ok(d) => d,
                Err(rustix::io::Errno::NXIO) => break,
                Err(e) => return Err(Error::io("seek data in", &self.path, e.into())),
            };
            if data >= end {
                break;
            }
            let hole = match seek(file, SeekFrom::Hole(data)) {
                Ok(h) => h.min(end),
                Err(e) => return Err(Error::io("seek hole in", &self.path, e.into())),
            };
            let (a, b) = (
                (data.max(at) / SLOT_SIZE as u64) as u32,
                hole.div_ceil(SLOT_SIZE as u64).min(SLOTS_PER_FILE) as u32,
            );
            // Read with `pread`, not through the map: touching the map would fault its pages
            // in (and their neighbours), which cost a reopen more than the read.
            if let Some((lo, hi)) = nonzero_slots(file, &self.path, a, b)? {
                stale.push((lo, hi + 1));
            }
            at = hole;
        }
        Ok(PastEnd { last_slot, stale })
    }

    /// Zeroes slots `[from, to)`: they no longer hold entries. Their payload space is not reused.
    pub(crate) fn zero_slots(&mut self, from: u32, to: u32) -> Result<()> {
        if from >= to {
            return Ok(());
        }
        let sink = sink_of(&mut self.handle, &self.path)?;
        let map = self.map.writable(&self.path)?;
        self.dirty = true;
        self.verified.fetch_min(from, Ordering::AcqRel);
        map.zero(
            sink,
            from as usize * SLOT_SIZE,
            (to - from) as usize * SLOT_SIZE,
            &self.path,
        )
    }

    /// Marks slot `k` (a checked Normal entry) so that it reads back with empty data, keeping its
    /// index, term, type and context; the payload bytes stay, the CRC is recomputed.
    pub(crate) fn clear_data(&mut self, k: u32) -> Result<()> {
        let c = self.verify_slot(k)?;
        let s = c.slot;
        if s.entry_type != entry_type_code(EntryType::EntryNormal)
            || s.data_len == 0
            || s.flags & FLAG_DATA_DROPPED != 0
        {
            return Ok(());
        }
        let s = Slot {
            flags: s.flags | FLAG_DATA_DROPPED,
            ..s
        };
        let mut b = [0u8; SLOT_SIZE];
        s.encode_fields(&mut b);
        let Some(payload) = self.map.read(s.offset as usize, c.payload_end as usize) else {
            return Err(self.unfrozen_error(k, &c));
        };
        let crc = slot_crc(&b, &[&payload]);
        b[SLOT_CRC..].copy_from_slice(&crc.to_le_bytes());
        self.dirty = true;
        let sink = sink_of(&mut self.handle, &self.path)?;
        self.map.writable(&self.path)?.write(
            sink,
            k as usize * SLOT_SIZE,
            &mut [IoSlice::new(&b)],
            &self.path,
        )
    }

    /// Flushes the file (one fdatasync) whether or not this process wrote to it: what another
    /// process left in the page cache becomes durable too.
    pub(crate) fn sync(&mut self) -> Result<()> {
        self.dirty = true;
        self.flush()
    }

    /// Flushes what was written (one fdatasync) if anything was.
    pub(crate) fn flush(&mut self) -> Result<()> {
        if self.dirty {
            let path = &self.path;
            let timer = crate::metrics::Timer::start();
            self.with_fd(|f| f.sync_data().map_err(|e| Error::io("fdatasync", path, e)))?;
            timer.fsync(crate::metrics::Synced::Log);
            self.dirty = false;
        }
        Ok(())
    }
}

/// Seals `entries` (for an encrypted store) as payloads that start at file offset `start`:
/// each under a fresh nonce, bound to its slot by index, term, type and data length, whatever
/// the file's version, which its slot says (`FLAG_BINDS_LEN`). Returns the payload bytes and
/// the encoded slots describing them.
fn seal_entries(cipher: &Cipher, start: u64, entries: &[Entry]) -> (Vec<u8>, Vec<u8>) {
    let mut payloads = Vec::new();
    let mut slots = Vec::with_capacity(entries.len() * SLOT_SIZE);
    for e in entries {
        let slot = Slot {
            term: e.term,
            index: e.index,
            offset: start + payloads.len() as u64,
            entry_type: entry_type_code(e.entry_type),
            flags: FLAG_SEALED | FLAG_BINDS_LEN,
            data_len: e.data.len() as u32,
            crc: 0,
        };
        let p0 = payloads.len();
        payloads.extend_from_slice(&(e.context.len() as u32).to_le_bytes());
        payloads.extend_from_slice(&cipher.seal(
            entry_aad(&slot, SealBinding::WithDataLen).as_bytes(),
            &[&e.data, &e.context],
        ));
        let mut b = [0u8; SLOT_SIZE];
        slot.encode_fields(&mut b);
        let crc = slot_crc(&b, &[&payloads[p0..]]);
        b[SLOT_CRC..].copy_from_slice(&crc.to_le_bytes());
        slots.extend_from_slice(&b);
    }
    (payloads, slots)
}

/// Slot pages read in one request with the last slot's at open when the log's first slot
/// lies that close before it.
const READ_TOGETHER: u64 = 8;

/// Slot `k` of `file`, the log's last, read with `pread`; with it, when the log's first slot
/// `log_from` lies in this file no more than [`READ_TOGETHER`] pages before it, every page
/// from the first slot's on, in the same request. A restarted node's first `term()` of the
/// group reads the first slot (the term runs' build, module `terms`): from a cold cache that
/// was a device read of its own per group, where a request of a few pages costs the device
/// about what one page does (docs/PERFORMANCE.md, "Reopen: the first slot read with the
/// last").
fn read_last_slot(
    file: &File,
    path: &Path,
    k: u32,
    log_from: Option<u32>,
) -> Result<[u8; SLOT_SIZE]> {
    let at = u64::from(k) * SLOT_SIZE as u64;
    let page = PAGE as u64;
    let start = match log_from {
        Some(first) if first <= k => {
            let first_page = u64::from(first) * SLOT_SIZE as u64 / page * page;
            if at / page * page - first_page < READ_TOGETHER * page {
                first_page
            } else {
                at
            }
        }
        _ => at,
    };
    let mut buf = vec![0u8; (at - start) as usize + SLOT_SIZE];
    file.read_exact_at(&mut buf, start)
        .map_err(|e| Error::io("read slot of", path, e))?;
    let mut b = [0u8; SLOT_SIZE];
    b.copy_from_slice(&buf[buf.len() - SLOT_SIZE..]);
    Ok(b)
}

/// The first and last slot in `[a, b)` of `file` that is not all zero, read with `pread`.
fn nonzero_slots(file: &File, path: &Path, a: u32, b: u32) -> Result<Option<(u32, u32)>> {
    const CHUNK: usize = 16 << 10;
    let mut buf = [0u8; CHUNK];
    let (mut lo, mut hi) = (None, None);
    let mut k = a;
    while k < b {
        let n = ((b - k) as usize * SLOT_SIZE).min(CHUNK);
        let at = u64::from(k) * SLOT_SIZE as u64;
        file.read_exact_at(&mut buf[..n], at)
            .map_err(|e| Error::io("read slots of", path, e))?;
        for (i, slot) in buf[..n].chunks_exact(SLOT_SIZE).enumerate() {
            if slot != [0u8; SLOT_SIZE] {
                let s = k + i as u32;
                lo.get_or_insert(s);
                hi = Some(s);
            }
        }
        k += (n / SLOT_SIZE) as u32;
    }
    Ok(lo.zip(hi))
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::store::log_file::Flavor;

    fn entries(from: u64, n: u64, len: usize) -> Vec<Entry> {
        (from..from + n)
            .map(|i| {
                let mut e = Entry::default();
                e.index = i;
                e.term = 1;
                e.data = Bytes::from(vec![i as u8; len]);
                e
            })
            .collect()
    }

    #[test]
    fn asking_for_a_slot_page_reads_nothing_wrong_and_changes_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut f, mut scratch) = engine_file(dir.path());
        let written = entries(1, 200, 100);
        f.write_entries(0, &written, &mut scratch).expect("write");
        let before = std::fs::read(&f.path).expect("read");
        // Slots in the area, the last one, and far past the map (nothing to ask for).
        for k in [0, 1, 199, 200, SLOTS_PER_FILE as u32 - 1, u32::MAX] {
            f.prefetch_slot(k);
        }
        assert!(
            std::fs::read(&f.path).expect("read") == before,
            "advice writes nothing"
        );
        for (k, e) in written.iter().enumerate() {
            assert_eq!(f.slot_term_index(k as u32), (e.term, e.index));
        }
    }

    /// A new engine group's log file (id 1, from index 1) in `dir`, and a writer's buffers.
    fn engine_file(dir: &std::path::Path) -> (LogFile, Scratch) {
        let f = LogFile::create(dir, 1, 1, 0, None, false, Flavor::Engine).expect("create");
        (f, Scratch::default())
    }

    /// The last slot open reads is the same whether the log's first slot is read with it
    /// (the same page, a few pages before, one page too far, in another file) or not.
    #[test]
    fn the_last_slot_reads_the_same_with_the_first_slot_or_without() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut f, mut scratch) = engine_file(dir.path());
        // Slots 0..2,000 (16 slot pages), the term growing every 100 entries.
        let mut written = entries(1, 2_000, 100);
        for e in &mut written {
            e.term = 1 + e.index / 100;
        }
        f.write_entries(0, &written, &mut scratch).expect("write");
        let raw = std::fs::File::open(&f.path).expect("open");
        let per_page = (PAGE / SLOT_SIZE) as u32;
        for from in [1, 2, 100, per_page, per_page + 1, 1_000, 2_000] {
            let alone = f.past_end(&raw, from, None).expect("past end");
            let e = &written[from as usize - 1];
            assert_eq!(
                alone.last_slot,
                Some((e.term, e.index)),
                "slot {}",
                from - 1
            );
            let k = from - 1;
            let with_first = [
                0,
                k,
                k / per_page * per_page,
                k.saturating_sub((READ_TOGETHER as u32 - 1) * per_page),
                k.saturating_sub(READ_TOGETHER as u32 * per_page),
                k + 1,
            ];
            for first in with_first {
                let together = f.past_end(&raw, from, Some(first)).expect("past end");
                assert_eq!(together, alone, "last slot {k}, the log's first {first}");
            }
        }
    }

    /// Open clears the slots a group's file holds past the end its meta page records: every
    /// slot from there on reads zero afterwards, those before it and the header are as they
    /// were, and the slot pages that held nothing stay holes.
    #[test]
    fn zeroing_what_lies_past_an_index_clears_every_written_slot_after_it_and_only_those() {
        use rustix::fs::{seek, SeekFrom};
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut f, mut scratch) = engine_file(dir.path());
        // Slots 0..300 (three slot pages; the term grows every 64 entries), then stale slots
        // far past them: a run in the middle of the area, and two in the last slot page (which
        // the header shares).
        let mut written = entries(1, 300, 100);
        for e in &mut written {
            e.term = 1 + e.index / 64;
        }
        f.write_entries(0, &written, &mut scratch).expect("write");
        let end = f.payload_end;
        let path = f.path.clone();
        drop(f);
        let raw = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .expect("open");
        // 600 stale slots in a row (more than one 16 KiB read), and two more.
        for k in (15_000u64..15_600).chain([29_950, 29_999]) {
            raw.write_all_at(&[0xA5; SLOT_SIZE], k * SLOT_SIZE as u64)
                .expect("stale slot");
        }
        let before = std::fs::read(&path).expect("read");
        let (mut g, past) = LogFile::open_engine_tail(&path, 1, None, |base| {
            assert_eq!(base, 1, "the header's first index");
            (100, Some(0))
        })
        .expect("open");
        let unchanged = std::fs::read(&path).expect("read");
        assert!(unchanged == before, "looking past the end writes nothing");
        assert_eq!(past.last_slot, Some((2, 100)), "slot 99: index 100, term 2");
        let stale: Vec<u32> = past.stale.iter().flat_map(|&(lo, hi)| lo..hi).collect();
        let nonzero: Vec<u32> = (100..SLOTS_PER_FILE as u32)
            .filter(|&k| {
                let at = k as usize * SLOT_SIZE;
                before[at..at + SLOT_SIZE] != [0u8; SLOT_SIZE]
            })
            .collect();
        assert_eq!(nonzero.len(), 200 + 600 + 2);
        for k in &nonzero {
            assert!(stale.contains(k), "written slot {k} past the end found");
        }
        g.set_recovered(0, end);
        for &(lo, hi) in &past.stale {
            g.zero_slots(lo, hi).expect("zero");
        }
        drop(g);

        let after = std::fs::read(&path).expect("read");
        let cut = 100 * SLOT_SIZE;
        assert_eq!(
            after[..cut],
            before[..cut],
            "slots before the cut unchanged"
        );
        let area = SLOTS_PER_FILE as usize * SLOT_SIZE;
        if let Some(at) = after[cut..area].iter().position(|&b| b != 0) {
            panic!("slot {} not cleared", (cut + at) / SLOT_SIZE);
        }
        assert_eq!(
            after[area..],
            before[area..],
            "header and payloads unchanged"
        );
        let g = LogFile::open(&path, 1, super::super::Access::Detached, None).expect("reopen");
        for k in 0..100 {
            g.verify_slot(k)
                .expect("a slot before the cut still checks");
        }
        // Pages between the written ones are still holes.
        let file = File::open(&path).expect("open");
        let page = 4096u64;
        let hole_at = 4 * page;
        let data = seek(&file, SeekFrom::Data(hole_at)).expect("seek data");
        assert_eq!(
            data,
            15_000 * SLOT_SIZE as u64 / page * page,
            "a hole stays a hole"
        );
    }

    #[test]
    fn write_back_now_starts_each_written_range_once_with_or_without_a_descriptor() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut f, mut scratch) = engine_file(dir.path());
        assert_eq!(f.start_writeback_now(), 0, "nothing written");
        // 10 entries of 1,000 bytes: their payloads (each padded to 8 bytes) and 10 slots.
        f.write_entries(0, &entries(1, 10, 1000), &mut scratch)
            .expect("write");
        let payloads = f.payload_end - PAYLOAD_START;
        assert!(payloads >= 10_000, "{payloads}");
        assert!(f.holds_fd(), "a written engine file keeps its descriptor");
        assert_eq!(
            f.start_writeback_now(),
            payloads + 10 * SLOT_SIZE as u64,
            "the payloads and the slots written"
        );
        assert_eq!(f.start_writeback_now(), 0, "started once");
        // The next write-back point a whole step past the end. The file's phase comes from its
        // path, here a temporary one: a point within the next entry's bytes (about one path
        // in 65) started its write-back as the descriptor was dropped, and the call below
        // found nothing left to start.
        f.writeback_at = f.payload_end + WRITEBACK_BYTES;
        // Below a write-back step, dropping the descriptor starts nothing: the checkpoint's
        // call opens one for the moment.
        f.write_entries(10, &entries(11, 1, 1000), &mut scratch)
            .expect("write");
        f.release_fd();
        assert!(!f.holds_fd());
        assert_eq!(
            f.start_writeback_now(),
            f.payload_end - PAYLOAD_START - payloads + SLOT_SIZE as u64
        );
        assert_eq!(f.start_writeback_now(), 0);
        // The file gone (its group removed meanwhile) and no descriptor held: nothing started,
        // no error, no panic.
        f.write_entries(11, &entries(12, 1, 1000), &mut scratch)
            .expect("write");
        f.release_fd();
        std::fs::remove_file(&f.path).expect("remove");
        assert_eq!(f.start_writeback_now(), 0);
    }

    /// An engine group's file writes large payloads straight from the entries' buffers and
    /// stages small ones: either way, with and without contexts, every slot checks against its
    /// payload and the entries read back as written, from a fresh map of the file too.
    #[test]
    fn an_engine_file_reads_back_staged_and_unstaged_saves_alike() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut f, mut scratch) = engine_file(dir.path());
        let mut all = Vec::new();
        let mut next = 1u64;
        // (entries, data bytes, context bytes): unstaged (1 KiB on average), staged (100 B),
        // unstaged with contexts, staged with contexts, a single large entry.
        for (n, len, ctx) in [
            (16, 1024, 0),
            (16, 100, 0),
            (8, 2000, 9),
            (8, 60, 5),
            (1, 4096, 0),
        ] {
            let mut batch = entries(next, n, len);
            for e in &mut batch {
                e.data = Bytes::from(
                    (0..len)
                        .map(|b| (b as u64 ^ e.index) as u8)
                        .collect::<Vec<u8>>(),
                );
                if ctx > 0 {
                    e.context = Bytes::from(vec![e.index as u8 ^ 0xA5; ctx]);
                }
            }
            f.write_entries((next - 1) as u32, &batch, &mut scratch)
                .expect("write");
            next += n;
            all.extend(batch);
        }
        let n = all.len() as u32;
        for k in 0..n {
            f.verify_slot(k).expect("slot checks against its payload");
        }
        let mut got = Vec::new();
        f.read_entries(0, n, &mut got, |_| true).expect("read");
        assert_eq!(got, all);
        // From the file as a reopen maps it.
        let end = f.payload_end;
        let path = f.path.clone();
        drop(f);
        let mut g = LogFile::open(&path, 1, super::super::Access::Detached, None).expect("open");
        g.set_recovered(0, end);
        for k in 0..n {
            g.verify_slot(k).expect("slot checks after reopen");
        }
        let mut got = Vec::new();
        g.read_entries(0, n, &mut got, |_| true).expect("read");
        assert_eq!(got, all);
    }

    #[test]
    fn a_growing_file_reserves_at_once_what_its_saves_project() {
        // 1 KiB payloads, 64 per save: the first 4 MiB are full after 4,096 entries, and the
        // file is heading for 30,000 KiB. One growth step must reserve all of it (each step
        // tends to be one more extent; see `ensure_len`), and filling the file needs no other.
        let dir = tempfile::tempdir().expect("tempdir");
        let mut f =
            LogFile::create(dir.path(), 1, 1, 0, None, false, Flavor::Unsynced).expect("create");
        let mut scratch = Scratch::default();
        let created = f.len();
        let mut lens = vec![created];
        let mut next = 1u64;
        while next <= SLOTS_PER_FILE {
            let batch = entries(next, 64.min(SLOTS_PER_FILE + 1 - next), 1024);
            f.write_entries((next - 1) as u32, &batch, &mut scratch)
                .expect("write");
            next += batch.len() as u64;
            if f.len() != *lens.last().expect("one length at least") {
                lens.push(f.len());
            }
        }
        assert_eq!(created, PAYLOAD_START + INITIAL_PAYLOAD_RESERVE);
        assert_eq!(lens.len(), 2, "the file grew in steps: {lens:?}");
        assert!(lens[1] >= PAYLOAD_START + SLOTS_PER_FILE * 1024, "{lens:?}");
        assert!(
            lens[1] <= PAYLOAD_START + SLOTS_PER_FILE * 1024 * 5 / 4,
            "{lens:?}"
        );

        // A few large entries early in a file project nothing: one 8 MiB entry grows the file
        // to what it needs, not to 30,000 times its size.
        let mut g =
            LogFile::create(dir.path(), 2, 1, 0, None, false, Flavor::Unsynced).expect("create");
        let mut e = Entry::default();
        e.index = 1;
        e.term = 1;
        e.data = Bytes::from(vec![7u8; 8 << 20]);
        g.write_entries(0, &[e], &mut scratch).expect("write");
        assert_eq!(g.len(), 9 << 20, "one 8 MiB entry");
    }
}
