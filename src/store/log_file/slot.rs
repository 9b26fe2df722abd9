//! The slot codec: the 32-byte slot (term, index, payload offset, type, flags, data length,
//! CRC32C), its flags and entry type codes, the range-checked form of a slot, the one
//! function that computes a slot's CRC32C, and the associated data that binds a sealed payload
//! to its slot (by the file's format version).
//!
//! Owns: the byte layout of a slot (see docs/FORMAT.md), what its CRC covers and what a seal's
//! associated data binds. Must never: touch a file or its map, or judge a slot against the file
//! that holds it (its index, its payload's place: that is `read`).

use raft::prelude::EntryType;

use crate::sys::le;

/// Entries per log file; the log rotates to a new file after this many.
pub(crate) const SLOTS_PER_FILE: u64 = 30_000;
/// Bytes per slot.
pub(crate) const SLOT_SIZE: usize = 32;
/// Bytes of the slot array.
pub(crate) const SLOT_AREA: usize = SLOTS_PER_FILE as usize * SLOT_SIZE;

// Slot fields: each offset is the previous one plus the previous field's size.
pub(super) const SLOT_TERM: usize = 0;
pub(super) const SLOT_INDEX: usize = SLOT_TERM + 8;
pub(super) const SLOT_OFFSET: usize = SLOT_INDEX + 8; // 6 bytes: payload start within the file
const SLOT_TYPE: usize = SLOT_OFFSET + 6;
const SLOT_FLAGS: usize = SLOT_TYPE + 1;
pub(super) const SLOT_DATA_LEN: usize = SLOT_FLAGS + 1;
pub(super) const SLOT_CRC: usize = SLOT_DATA_LEN + 4;
const _: () = assert!(SLOT_CRC + 4 == SLOT_SIZE);

/// Slot flag: the payload carries a context (`data ‖ u32 context_len ‖ context`).
pub(super) const FLAG_CONTEXT: u8 = 1;
/// Slot flag: the payload is sealed (`u32 context_len ‖ nonce ‖ AES-256-GCM(data ‖ context) ‖
/// tag`); set exactly in encrypted stores.
pub(super) const FLAG_SEALED: u8 = 2;
/// Slot flag: `truncate_entries_until` dropped the data: the entry reads back with empty data
/// (its payload bytes stay, still covered by the CRC).
pub(super) const FLAG_DATA_DROPPED: u8 = 4;
/// Slot flag (with [`FLAG_SEALED`] only): the payload's seal binds the data length
/// ([`SealBinding::WithDataLen`]) whatever the file's version. Every seal this build makes sets
/// it: a file's header is not authenticated, so its version cannot decide how new entries are
/// sealed (a header lowered to version 1 would make them splittable). Cleared by an attacker,
/// the entry only fails to open (its seal was made with the longer associated data).
pub(super) const FLAG_BINDS_LEN: u8 = 8;
pub(super) const KNOWN_FLAGS: u8 = FLAG_CONTEXT | FLAG_SEALED | FLAG_DATA_DROPPED | FLAG_BINDS_LEN;
/// Largest value the 6-byte offset field holds.
pub(super) const MAX_OFFSET: u64 = (1 << 48) - 1;

/// The decoded fields of one slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Slot {
    pub term: u64,
    pub index: u64,
    pub offset: u64,
    pub entry_type: u8,
    pub flags: u8,
    pub data_len: u32,
    pub crc: u32,
}

impl Slot {
    pub(super) fn decode(b: &[u8; SLOT_SIZE]) -> Slot {
        let u64_at = |o: usize| le::u64_at(b, o);
        let mut off = [0u8; 8];
        off[..6].copy_from_slice(&b[SLOT_OFFSET..SLOT_OFFSET + 6]);
        Slot {
            term: u64_at(SLOT_TERM),
            index: u64_at(SLOT_INDEX),
            offset: u64::from_le_bytes(off),
            entry_type: b[SLOT_TYPE],
            flags: b[SLOT_FLAGS],
            data_len: le::u32_at(b, SLOT_DATA_LEN),
            crc: le::u32_at(b, SLOT_CRC),
        }
    }

    /// Encodes every field but the CRC.
    pub(super) fn encode_fields(&self, b: &mut [u8; SLOT_SIZE]) {
        b[SLOT_TERM..SLOT_TERM + 8].copy_from_slice(&self.term.to_le_bytes());
        b[SLOT_INDEX..SLOT_INDEX + 8].copy_from_slice(&self.index.to_le_bytes());
        b[SLOT_OFFSET..SLOT_OFFSET + 6].copy_from_slice(&self.offset.to_le_bytes()[..6]);
        b[SLOT_TYPE] = self.entry_type;
        b[SLOT_FLAGS] = self.flags;
        b[SLOT_DATA_LEN..SLOT_DATA_LEN + 4].copy_from_slice(&self.data_len.to_le_bytes());
    }
}

pub(super) fn entry_type_code(t: EntryType) -> u8 {
    match t {
        EntryType::EntryNormal => 0,
        EntryType::EntryConfChange => 1,
        EntryType::EntryConfChangeV2 => 2,
    }
}

pub(super) fn entry_type_from_code(c: u8) -> Option<EntryType> {
    match c {
        0 => Some(EntryType::EntryNormal),
        1 => Some(EntryType::EntryConfChange),
        2 => Some(EntryType::EntryConfChangeV2),
        _ => None,
    }
}

/// How a sealed payload is bound to its slot: which slot fields the associated data holds. By
/// the slot's [`FLAG_BINDS_LEN`], else by its file's format version (see `header`); see
/// [`Slot::seal_binding`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SealBinding {
    /// Format version 1: index, term and type. The data length D is outside the seal, so the
    /// split of the plaintext between data and context is not authenticated; read only: no
    /// seal is made so any more (entries appended to a version-1 file set [`FLAG_BINDS_LEN`]).
    IndexTermType,
    /// Format version 2 on: index, term, type and the data length D. With D bound, the context
    /// length (the plaintext's length less D) is bound too.
    WithDataLen,
}

impl Slot {
    /// How this sealed slot's payload is bound, in a file whose header says `file`: with the
    /// data length if the slot says so or the file is of version 2 on (an honest slot of such a
    /// file always says so; a cleared flag changes nothing), else as version 1 sealed it.
    pub(super) fn seal_binding(&self, file: SealBinding) -> SealBinding {
        if self.flags & FLAG_BINDS_LEN != 0 {
            SealBinding::WithDataLen
        } else {
            file
        }
    }
}

/// Bytes of the longest associated data ([`SealBinding::WithDataLen`]).
const ENTRY_AAD_MAX: usize = 21;

/// Associated data of a sealed payload (see [`entry_aad`]).
pub(super) struct EntryAad {
    bytes: [u8; ENTRY_AAD_MAX],
    len: usize,
}

impl EntryAad {
    pub(super) fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// Associated data of a sealed payload: the entry's index (u64), term (u64) and type (u8), then
/// (from format version 2) its data length D (u32). A payload moved to another slot, a slot
/// rewritten around an old payload, or a payload whose data/context split was moved (D and
/// the context length changed together) then fails to open.
pub(super) fn entry_aad(s: &Slot, binding: SealBinding) -> EntryAad {
    let mut bytes = [0u8; ENTRY_AAD_MAX];
    bytes[..8].copy_from_slice(&s.index.to_le_bytes());
    bytes[8..16].copy_from_slice(&s.term.to_le_bytes());
    bytes[16] = s.entry_type;
    let len = match binding {
        SealBinding::IndexTermType => 17,
        SealBinding::WithDataLen => {
            bytes[17..21].copy_from_slice(&s.data_len.to_le_bytes());
            ENTRY_AAD_MAX
        }
    };
    EntryAad { bytes, len }
}

/// Why a slot failed its range checks (turned into an `Error` off the hot path).
#[derive(Clone, Copy, Debug)]
pub(super) enum SlotFault {
    WrongIndex(Slot),
    UnknownTypeOrFlags(Slot),
    PayloadOutOfRange(Slot),
    ContextOutOfRange(Slot, u64),
}

/// Highest entry type code.
pub(super) const MAX_ENTRY_TYPE: u8 = 2;

/// A slot whose fields passed the range checks, with the payload's extent.
#[derive(Clone, Copy, Debug)]
pub(crate) struct CheckedSlot {
    pub slot: Slot,
    /// Where the context length (if any) and context start.
    pub data_end: u64,
    /// One past the last payload byte.
    pub payload_end: u64,
}

/// The CRC32C of a slot: over its bytes `[0, SLOT_CRC)` (every field but the CRC itself), then
/// over each of `parts` in order (the payload bytes as they lie in the file).
#[inline]
pub(super) fn slot_crc(slot_bytes: &[u8; SLOT_SIZE], parts: &[&[u8]]) -> u32 {
    parts
        .iter()
        .fold(crc32c::crc32c(&slot_bytes[..SLOT_CRC]), |crc, part| {
            crc32c::crc32c_append(crc, part)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_fields_round_trip() {
        let s = Slot {
            term: 9,
            index: 1 << 40,
            offset: MAX_OFFSET,
            entry_type: 2,
            flags: FLAG_CONTEXT,
            data_len: u32::MAX,
            crc: 0,
        };
        let mut b = [0u8; SLOT_SIZE];
        s.encode_fields(&mut b);
        assert_eq!(Slot::decode(&b), s);
    }

    #[test]
    fn the_associated_data_binds_the_data_length_from_version_2() {
        let s = Slot {
            term: 0x0102,
            index: 0x0a0b,
            offset: 1 << 20,
            entry_type: 2,
            flags: FLAG_SEALED,
            data_len: 0x0403_0201,
            crc: 0,
        };
        let mut v1 = vec![
            0x0b, 0x0a, 0, 0, 0, 0, 0, 0, 0x02, 0x01, 0, 0, 0, 0, 0, 0, 2,
        ];
        assert_eq!(
            entry_aad(&s, SealBinding::IndexTermType).as_bytes(),
            &v1[..]
        );
        v1.extend_from_slice(&[1, 2, 3, 4]);
        assert_eq!(entry_aad(&s, SealBinding::WithDataLen).as_bytes(), &v1[..]);
        // Another split of the same plaintext: another associated data (version 2 only).
        let moved = Slot {
            data_len: s.data_len - 4,
            ..s
        };
        assert_eq!(
            entry_aad(&moved, SealBinding::IndexTermType).as_bytes(),
            entry_aad(&s, SealBinding::IndexTermType).as_bytes()
        );
        assert_ne!(
            entry_aad(&moved, SealBinding::WithDataLen).as_bytes(),
            entry_aad(&s, SealBinding::WithDataLen).as_bytes()
        );
    }

    #[test]
    fn slot_crc_covers_the_fields_then_each_part_in_order() {
        let mut b = [0u8; SLOT_SIZE];
        Slot {
            term: 3,
            index: 7,
            offset: 1 << 20,
            entry_type: 0,
            flags: FLAG_CONTEXT,
            data_len: 5,
            crc: 0,
        }
        .encode_fields(&mut b);
        let (data, ctx_len, ctx) = (&b"hello"[..], 3u32.to_le_bytes(), &b"ctx"[..]);
        let fields = crc32c::crc32c(&b[..SLOT_CRC]);
        assert_eq!(slot_crc(&b, &[]), fields);
        assert_eq!(slot_crc(&b, &[data]), crc32c::crc32c_append(fields, data));
        let mut whole = b.to_vec();
        whole.truncate(SLOT_CRC);
        whole.extend_from_slice(data);
        whole.extend_from_slice(&ctx_len);
        whole.extend_from_slice(ctx);
        assert_eq!(slot_crc(&b, &[data, &ctx_len, ctx]), crc32c::crc32c(&whole));
    }
}
