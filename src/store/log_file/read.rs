//! The read path of a `LogFile`: decoding and range-checking slots, verifying their CRC32C (and,
//! for the tools' `verify`, opening sealed payloads without building entries), the per-file
//! "verified" watermark, and entries built as zero-copy views of the map.
//!
//! Owns: what a slot must satisfy to be read (a sealed payload: that it opens under the
//! associated data of the file's version and holds D + C bytes), and the errors that name a bad
//! one. Must never: write a byte of the file (only `set_recovered`, at open, moves the payload
//! end), or decide what a damaged slot means for the log (that is `wal` and `recovery`).

use std::borrow::Cow;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use raft::prelude::{Entry, EntryType};

use super::slot::{
    entry_aad, entry_type_from_code, slot_crc, CheckedSlot, Slot, SlotFault, FLAG_BINDS_LEN,
    FLAG_CONTEXT, FLAG_DATA_DROPPED, FLAG_SEALED, KNOWN_FLAGS, MAX_ENTRY_TYPE, MAX_OFFSET,
    SLOTS_PER_FILE, SLOT_DATA_LEN, SLOT_INDEX, SLOT_OFFSET, SLOT_SIZE, SLOT_TERM,
};
use super::{LogFile, PAGE, PAYLOAD_START};
use crate::error::{Error, Result};
use crate::sys::crypto;
use crate::sys::le;
use crate::sys::map::{FileMap, FileView};

impl LogFile {
    #[inline]
    fn slot_bytes(&self, k: u32) -> &[u8; SLOT_SIZE] {
        let at = k as usize * SLOT_SIZE;
        // The slot area lies within the map: open checked len >= PAYLOAD_START > SLOT_AREA, and
        // callers pass k < SLOTS_PER_FILE. A failed conversion cannot happen for a 32-byte slice.
        let s: &[u8] = &self.map.head()[at..at + SLOT_SIZE];
        s.try_into().unwrap_or(&[0; SLOT_SIZE])
    }

    /// The raw fields of slot `k` (no checks). `k < SLOTS_PER_FILE`.
    pub(crate) fn slot(&self, k: u32) -> Slot {
        Slot::decode(self.slot_bytes(k))
    }

    /// Asks for the page holding slot `k` ahead of a read of it ([`FileView::will_need`]),
    /// without waiting for it.
    pub(crate) fn prefetch_slot(&self, k: u32) {
        let page = u64::from(k) * SLOT_SIZE as u64 / PAGE as u64 * PAGE as u64;
        self.map.will_need(page as usize, PAGE);
    }

    /// Term and index fields of slot `k` (no other field is decoded). `k < SLOTS_PER_FILE`.
    #[inline]
    pub(crate) fn slot_term_index(&self, k: u32) -> (u64, u64) {
        let b = self.slot_bytes(k);
        (le::u64_at(b, SLOT_TERM), le::u64_at(b, SLOT_INDEX))
    }

    /// True when every byte of slot `k` is zero (never written, or cut).
    pub(crate) fn slot_is_zero(&self, k: u32) -> bool {
        self.slot_bytes(k).iter().all(|&b| b == 0)
    }

    fn slot_offset_in_file(k: u32) -> u64 {
        k as u64 * SLOT_SIZE as u64
    }

    /// Range checks of slot `k`: it holds index `base + k`, a known type and a payload inside the
    /// file. Does not read the payload.
    #[inline]
    pub(crate) fn check_slot(&self, k: u32) -> Result<CheckedSlot> {
        self.extent(k).map_err(|fault| self.slot_error(k, fault))
    }

    /// The checks of [`LogFile::check_slot`], with a small error so the read path stays lean.
    #[inline]
    fn extent(&self, k: u32) -> std::result::Result<CheckedSlot, SlotFault> {
        extent_of(
            self.slot(k),
            self.base + k as u64,
            self.cipher.is_some(),
            self.len(),
            |from, to| self.map.read(from, to),
        )
    }

    /// Describes a failed slot check (the cold path).
    #[cold]
    fn slot_error(&self, k: u32, fault: SlotFault) -> Error {
        if let Some(e) = self.map.take_io_error() {
            return Error::io("read", &self.path, e);
        }
        let at = Self::slot_offset_in_file(k);
        let expected = self.base + k as u64;
        let len = self.len();
        match fault {
            SlotFault::WrongIndex(s) => Error::corrupt(
                &self.path,
                at,
                format!("slot {k} holds index {} where index {expected} belongs", s.index),
            ),
            SlotFault::UnknownTypeOrFlags(s) => Error::corrupt(
                &self.path,
                at,
                format!(
                    "slot {k} (index {expected}) has unknown type {} or flags {:#x}",
                    s.entry_type, s.flags
                ),
            ),
            SlotFault::PayloadOutOfRange(s) => Error::corrupt(
                &self.path,
                at,
                format!(
                    "slot {k} (index {expected}) points at payload [{}, +{}) outside [{PAYLOAD_START}, {len})",
                    s.offset, s.data_len
                ),
            ),
            SlotFault::ContextOutOfRange(s, ctx_len) => Error::corrupt(
                &self.path,
                s.offset + s.data_len as u64,
                format!(
                    "context of index {expected} ({ctx_len} bytes) lies past the end of the file ({len})"
                ),
            ),
        }
    }

    /// Range checks and the CRC32C of slot `k` and its payload.
    pub(crate) fn verify_slot(&self, k: u32) -> Result<CheckedSlot> {
        self.checked_payload(k).map(|(c, _)| c)
    }

    /// Everything a read of slot `k` checks: [`LogFile::verify_slot`], and in a sealed file the
    /// payload opened (authenticated) with the file's cipher, its plaintext discarded. What the
    /// tools' `verify` runs on every entry; `scratch` is the cipher's working buffer (pass the
    /// same one for every slot). A payload that fails to open is damage naming the slot.
    pub(crate) fn verify_entry(&self, k: u32, scratch: &mut Vec<u8>) -> Result<CheckedSlot> {
        let (c, payload) = self.checked_payload(k)?;
        let Some(cipher) = &self.cipher else {
            return Ok(c);
        };
        // The sealed message follows the context length (check_slot laid it out so).
        let sealed = payload
            .get((c.data_end - c.slot.offset) as usize..)
            .unwrap_or_default();
        if cipher.authenticates(
            entry_aad(&c.slot, c.slot.seal_binding(self.seal_binding())).as_bytes(),
            sealed,
            scratch,
        ) {
            return Ok(c);
        }
        Err(Error::corrupt(
            &self.path,
            c.slot.offset,
            format!(
                "slot {k} (index {}): sealed payload [{}, {}) fails authentication (altered, or sealed under another key)",
                c.slot.index, c.slot.offset, c.payload_end
            ),
        ))
    }

    /// [`LogFile::verify_slot`], with the payload it checked.
    fn checked_payload(&self, k: u32) -> Result<(CheckedSlot, Cow<'_, [u8]>)> {
        let c = self.check_slot(k)?;
        let b = self.slot_bytes(k);
        // The checks above put the payload inside the file.
        let Some(payload) = self
            .map
            .read(c.slot.offset as usize, c.payload_end as usize)
        else {
            return Err(self.unfrozen_error(k, &c));
        };
        let crc = slot_crc(b, &[&payload]);
        if crc != c.slot.crc {
            return Err(Error::corrupt(
                &self.path,
                Self::slot_offset_in_file(k),
                format!(
                    "checksum mismatch for index {} (slot {k}, payload at {}): stored {:#010x}, computed {crc:#010x}",
                    c.slot.index, c.slot.offset, c.slot.crc
                ),
            ));
        }
        Ok((c, payload))
    }

    /// Slots `[0, n)` are known good and the next payload goes at `payload_end` (what recovery
    /// found; for a sealed file, the end of its last payload). Only at open.
    pub(crate) fn set_recovered(&mut self, n: u32, payload_end: u64) {
        self.verified.store(n, Ordering::Release);
        self.payload_end = payload_end;
        self.map.set_frozen(payload_end as usize);
    }

    /// Reads slots `[lo, hi)` as entries, checking each one's CRC unless it is below the verified
    /// watermark. `keep_going` sees each entry before it is pushed and can stop the read (it
    /// returns `Ok(false)` then).
    pub(crate) fn read_entries(
        &self,
        lo: u32,
        hi: u32,
        out: &mut Vec<Entry>,
        mut keep_going: impl FnMut(&Entry) -> bool,
    ) -> Result<bool> {
        let verified = self.verified.load(Ordering::Acquire);
        // Plain payloads in a map: verified slots take the lean path below.
        let plain = match &self.map {
            FileView::Mapped(map) if self.cipher.is_none() => Some(map),
            _ => None,
        };
        let mut done = lo;
        let mut more = true;
        while done < hi {
            if let Some(map) = plain.filter(|_| done < verified) {
                let (next, go_on) =
                    self.read_verified_plain(map, done, hi.min(verified), out, &mut keep_going);
                done = next;
                if !go_on {
                    more = false;
                    break;
                }
                if done == hi {
                    break;
                }
            }
            // A slot the lean path leaves (not yet verified, a context, dropped data, damage).
            let k = done;
            let c = if k < verified {
                self.check_slot(k)?
            } else {
                self.verify_slot(k)?
            };
            let Some(e) = self.entry_from(&c) else {
                return Err(self.unfrozen_error(k, &c));
            };
            if !keep_going(&e) {
                more = false;
                break;
            }
            out.push(e);
            done = k + 1;
        }
        if lo <= verified && done > verified {
            self.verified.fetch_max(done, Ordering::AcqRel);
        }
        Ok(more)
    }

    /// The hot path of [`LogFile::read_entries`]: slots `[lo, hi)`, all below the verified
    /// watermark, of an unencrypted mapped file. Decodes only what an entry needs from each
    /// slot, with one range check per slot, and stops at the first slot that is not the common
    /// case (flags set, an unknown type, or anything out of place: the checked path then reads
    /// it and names any damage). Returns where it stopped and `false` if `keep_going` did.
    #[inline]
    fn read_verified_plain(
        &self,
        map: &FileMap,
        lo: u32,
        hi: u32,
        out: &mut Vec<Entry>,
        keep_going: &mut impl FnMut(&Entry) -> bool,
    ) -> (u32, bool) {
        let Some(slots) = map
            .bytes()
            .get(lo as usize * SLOT_SIZE..hi as usize * SLOT_SIZE)
        else {
            return (lo, true);
        };
        let first = self.base + lo as u64;
        for (i, b) in slots.chunks_exact(SLOT_SIZE).enumerate() {
            let k = lo + i as u32;
            let u64_at = |o: usize| le::u64_at(b, o);
            let index = first + i as u64;
            // The offset's 6 bytes, then type and flags: with no flag set and a known type,
            // the top 16 bits are the type code alone.
            let packed = u64_at(SLOT_OFFSET);
            let mut len = [0u8; 4];
            len.copy_from_slice(&b[SLOT_DATA_LEN..SLOT_DATA_LEN + 4]);
            let offset = (packed & MAX_OFFSET) as usize;
            let entry_type = match packed >> 48 {
                0 => EntryType::EntryNormal,
                1 => EntryType::EntryConfChange,
                2 => EntryType::EntryConfChangeV2,
                _ => return (k, true),
            };
            if u64_at(SLOT_INDEX) != index {
                return (k, true);
            }
            // Inside the frozen payloads (offset < 2^48 and the length < 2^32: no overflow).
            let Some(data) = map.payload(offset, offset + u32::from_le_bytes(len) as usize) else {
                return (k, true);
            };
            // Pushed, then shown to `keep_going` in place (one copy of the entry, not two) and
            // taken back out if it says stop.
            out.push(Entry {
                entry_type,
                term: u64_at(SLOT_TERM),
                index,
                data,
                ..Default::default()
            });
            if !out.last().is_some_and(&mut *keep_going) {
                out.pop();
                return (k, false);
            }
        }
        (hi, true)
    }

    /// Builds the entry of a checked slot. Data and context are zero-copy views of the map;
    /// `None` if they lie past the written payloads (only a damaged slot can point there).
    #[inline]
    fn entry_from(&self, c: &CheckedSlot) -> Option<Entry> {
        let s = &c.slot;
        let (data, context) = if let Some(cipher) = &self.cipher {
            // Sealed: opened (and so authenticated) on every read; the plaintext is a copy.
            let sealed = self.map.read(c.data_end as usize, c.payload_end as usize)?;
            let binding = s.seal_binding(self.seal_binding());
            let plain = cipher.open(entry_aad(s, binding).as_bytes(), &sealed)?;
            // The plaintext is data and context, D + C bytes as the slot and the payload's
            // context length say (`extent` sized the sealed bytes by them; from format version
            // 2 the seal binds D, and so C).
            let d = s.data_len as usize;
            if plain.len() + crypto::OVERHEAD != sealed.len() || plain.len() < d {
                return None;
            }
            let plain = Bytes::from(plain);
            (plain.slice(..d), plain.slice(d..))
        } else {
            let context = if s.flags & FLAG_CONTEXT != 0 {
                self.map
                    .payload(c.data_end as usize + 4, c.payload_end as usize)?
            } else {
                Bytes::new()
            };
            let data = self.map.payload(s.offset as usize, c.data_end as usize)?;
            (data, context)
        };
        Some(Entry {
            // extent() accepted only known type codes.
            entry_type: entry_type_from_code(s.entry_type).unwrap_or(EntryType::EntryNormal),
            term: s.term,
            index: s.index,
            data: if s.flags & FLAG_DATA_DROPPED != 0 {
                Bytes::new()
            } else {
                data
            },
            context,
            ..Default::default()
        })
    }

    #[cold]
    pub(super) fn unfrozen_error(&self, k: u32, c: &CheckedSlot) -> Error {
        if let Some(e) = self.map.take_io_error() {
            return Error::io("read", &self.path, e);
        }
        Error::corrupt(
            &self.path,
            c.slot.offset,
            format!(
                "slot {k} (index {}): payload [{}, {}) past the written payloads ({}), or it fails authentication",
                c.slot.index,
                c.slot.offset,
                c.payload_end,
                self.map.frozen()
            ),
        )
    }
}

/// The checks of [`LogFile::check_slot`] for slot `s`, which must hold index `expected`, of a
/// file of `len` bytes (sealed payloads when `encrypted`) whose bytes `read` reads.
#[inline]
fn extent_of<'a>(
    s: Slot,
    expected: u64,
    encrypted: bool,
    len: u64,
    read: impl Fn(usize, usize) -> Option<Cow<'a, [u8]>>,
) -> std::result::Result<CheckedSlot, SlotFault> {
    if s.index != expected {
        return Err(SlotFault::WrongIndex(s));
    }
    let sealed = s.flags & FLAG_SEALED != 0;
    if s.entry_type > MAX_ENTRY_TYPE
        || s.flags & !KNOWN_FLAGS != 0
        || sealed != encrypted
        || (sealed && s.flags & FLAG_CONTEXT != 0)
        || (!sealed && s.flags & FLAG_BINDS_LEN != 0)
    {
        return Err(SlotFault::UnknownTypeOrFlags(s));
    }
    if sealed {
        let o = s.offset as usize;
        let Some(b) = read(o, o.saturating_add(4)) else {
            return Err(SlotFault::PayloadOutOfRange(s));
        };
        let ctx_len = le::u32_at(&b, 0) as u64;
        let sealed_len = crypto::OVERHEAD as u64 + s.data_len as u64 + ctx_len;
        return match (s.offset + 4).checked_add(sealed_len) {
            Some(end) if s.offset >= PAYLOAD_START && end <= len => Ok(CheckedSlot {
                slot: s,
                data_end: s.offset + 4,
                payload_end: end,
            }),
            _ => Err(SlotFault::ContextOutOfRange(s, ctx_len)),
        };
    }
    let data_end = match s.offset.checked_add(s.data_len as u64) {
        Some(end) if s.offset >= PAYLOAD_START && end <= len => end,
        _ => return Err(SlotFault::PayloadOutOfRange(s)),
    };
    let payload_end = if s.flags & FLAG_CONTEXT != 0 {
        let d = data_end as usize;
        let Some(b) = read(d, d + 4) else {
            return Err(SlotFault::ContextOutOfRange(s, 0));
        };
        let ctx_len = le::u32_at(&b, 0) as u64;
        match (data_end + 4).checked_add(ctx_len) {
            Some(end) if end <= len => end,
            _ => return Err(SlotFault::ContextOutOfRange(s, ctx_len)),
        }
    } else {
        data_end
    };
    Ok(CheckedSlot {
        slot: s,
        data_end,
        payload_end,
    })
}

/// The index in the last slot of the log file at `path`, read without its header (which may be
/// damaged): `Some` only when the slot's checksum, payload included, is good. The slots of a
/// file hold consecutive indexes, so no index the file holds is above it. `None` for a file
/// shorter than its slot area, or whose last slot is empty or damaged.
pub(crate) fn last_slot_index(path: &Path, encrypted: bool) -> Result<Option<u64>> {
    let Some((file, len)) = super::header::open_past_slot_area(path)? else {
        return Ok(None);
    };
    let mut b = [0u8; SLOT_SIZE];
    file.read_exact_at(&mut b, (SLOTS_PER_FILE - 1) * SLOT_SIZE as u64)
        .map_err(|e| Error::io("read last slot", path, e))?;
    let s = Slot::decode(&b);
    let read = |from: usize, to: usize| {
        let mut buf = vec![0u8; to.checked_sub(from)?];
        file.read_exact_at(&mut buf, from as u64).ok()?;
        Some(Cow::Owned(buf))
    };
    let Ok(c) = extent_of(s, s.index, encrypted, len, read) else {
        return Ok(None);
    };
    // The payload's checksum, read a piece at a time (its length comes from a slot not yet
    // known good).
    let mut crc = slot_crc(&b, &[]);
    let mut buf = vec![0u8; 64 << 10];
    let mut at = c.slot.offset;
    while at < c.payload_end {
        let n = buf.len().min((c.payload_end - at) as usize);
        if file.read_exact_at(&mut buf[..n], at).is_err() {
            return Ok(None);
        }
        crc = crc32c::crc32c_append(crc, &buf[..n]);
        at += n as u64;
    }
    Ok((crc == s.crc).then_some(s.index))
}
