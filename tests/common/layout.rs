//! The on-disk format as docs/FORMAT.md states it, for the tests (and the fuzz logic) that read,
//! damage or forge files byte by byte: names, sizes and field offsets, and a few helpers.
//!
//! Written from the document, deliberately not from raftwal's own constants: a format change in
//! src/ that the document and this file do not follow fails the tests that use it. Offsets are
//! chained as FORMAT.md's tables are (each field at the previous one plus its size); the numbers
//! the document prints (960,000, 88,540, ...) are checked against the chains at compile time at
//! the end of this file. Field offsets are relative to the start of their structure (a slot, a
//! header, a meta region, a record).
//!
//! Included with `#[path = "common/layout.rs"] mod layout;` (and by tests/common/fuzz/mod.rs);
//! each test uses part of it.
#![allow(dead_code)]

/// The format version of meta regions and journal segment headers.
pub const META_FORMAT_VERSION: u32 = 1;
pub const SEGMENT_FORMAT_VERSION: u32 = 1;
/// The format version a new log file's header carries: 2, whose seals bind the data length
/// (see [`entry_aad`]).
pub const LOG_FORMAT_VERSION: u32 = 2;
/// The log file version before it, still read: its seals bind index, term and type alone.
pub const LOG_FORMAT_VERSION_1: u32 = 1;
/// The format version a new snapshot file's header carries: 2, whose envelope in an encrypted
/// store holds the conf state sealed (field 8), not in plaintext (field 3).
pub const SNAP_FORMAT_VERSION: u32 = 2;
/// The snapshot file version before it, still read: the conf state in plaintext.
pub const SNAP_FORMAT_VERSION_1: u32 = 1;

// ---------------------------------------------------------------------------------------------
// file names (FORMAT.md: "A WAL directory holds", "Engine roots")
// ---------------------------------------------------------------------------------------------

/// The meta page of a WAL directory.
pub const META_FILE: &str = "wal.meta";
/// The meta page of an engine root.
pub const ENGINE_META_FILE: &str = "engine.meta";
/// A log file kept for reuse.
pub const SPARE_FILE: &str = "spare.wal";
/// The lock file (a WAL directory's and an engine root's).
pub const LOCK_FILE: &str = "LOCK";

/// `NNNNN.wal`: the file id zero-padded to at least 5 digits.
pub fn log_name(id: u64) -> String {
    format!("{id:05}.wal")
}

/// `<term>-<index>.snap` under `snap/`: 16 hex digits each.
pub fn snap_name(term: u64, index: u64) -> String {
    format!("{term:016x}-{index:016x}.snap")
}

/// `<id>.jnl` under `journal/`: 16 decimal digits.
pub fn segment_name(id: u64) -> String {
    format!("{id:016}.jnl")
}

// ---------------------------------------------------------------------------------------------
// wal.meta (and engine.meta): two regions of R bytes, each a header and a record
// ---------------------------------------------------------------------------------------------

pub const META_MAGIC: &[u8; 8] = b"RWALMETA";
/// `engine.meta`'s magic (otherwise the same two-region page).
pub const ENGINE_META_MAGIC: &[u8; 8] = b"RWALROOT";
/// The smallest region `R` (a power of two): a new meta page is `2 × 4096` bytes.
pub const META_MIN_REGION: u64 = 4096;
/// A meta file shorter than this (or of odd length) is an error.
pub const META_MIN_LEN: u64 = 2 * META_MIN_REGION;

pub const META_MAGIC_AT: u64 = 0;
pub const META_VERSION_AT: u64 = META_MAGIC_AT + 8;
/// Bit 0: the record is sealed.
pub const META_FLAGS_AT: u64 = META_VERSION_AT + 4;
pub const META_SEQ_AT: u64 = META_FLAGS_AT + 4;
/// The record length `L` (u32).
pub const META_RECORD_LEN_AT: u64 = META_SEQ_AT + 8;
/// CRC32C over bytes `[0, META_CRC_AT)` and the record.
pub const META_CRC_AT: u64 = META_RECORD_LEN_AT + 4;
/// The record (protobuf `MetaRecord`, or sealed: nonce ‖ ciphertext ‖ tag).
pub const META_RECORD_AT: u64 = META_CRC_AT + 4;

// ---------------------------------------------------------------------------------------------
// NNNNN.wal log files: slot array, file header, reserved zeroes, payloads
// ---------------------------------------------------------------------------------------------

/// Entries (slots) per log file; file `n` of a run starts at `base(first file) + 30,000 × n`.
pub const SLOTS_PER_FILE: u64 = 30_000;

// A slot (32 bytes); all zero: empty.
pub const SLOT_TERM_AT: u64 = 0;
/// The index: 0 for an empty slot, otherwise base + slot number.
pub const SLOT_INDEX_AT: u64 = SLOT_TERM_AT + 8;
/// The payload's offset within the file, 6 bytes (>= [`PAYLOADS_AT`]).
pub const SLOT_OFFSET_AT: u64 = SLOT_INDEX_AT + 8;
pub const SLOT_OFFSET_LEN: u64 = 6;
/// 0 EntryNormal, 1 EntryConfChange, 2 EntryConfChangeV2.
pub const SLOT_TYPE_AT: u64 = SLOT_OFFSET_AT + SLOT_OFFSET_LEN;
/// [`SLOT_FLAG_CONTEXT`], [`SLOT_FLAG_SEALED`], [`SLOT_FLAG_DATA_DROPPED`].
pub const SLOT_FLAGS_AT: u64 = SLOT_TYPE_AT + 1;
/// The data length `D` (u32).
pub const SLOT_DATA_LEN_AT: u64 = SLOT_FLAGS_AT + 1;
/// CRC32C over bytes `[0, SLOT_CRC_AT)` of the slot, then every payload byte.
pub const SLOT_CRC_AT: u64 = SLOT_DATA_LEN_AT + 4;
pub const SLOT_LEN: u64 = SLOT_CRC_AT + 4;

/// Slot flag bit 0: the payload carries a context (plaintext store).
pub const SLOT_FLAG_CONTEXT: u8 = 1;
/// Slot flag bit 1: the payload is sealed (encrypted store).
pub const SLOT_FLAG_SEALED: u8 = 2;
/// Slot flag bit 2: data dropped by `truncate_entries_until`.
pub const SLOT_FLAG_DATA_DROPPED: u8 = 4;
/// Slot flag bit 3 (sealed slots only): the seal binds the data length, whatever the file's
/// version (every seal since format version 2's fix sets it).
pub const SLOT_FLAG_BINDS_LEN: u8 = 8;

/// The slot array: [`SLOTS_PER_FILE`] slots from offset 0.
pub const SLOT_AREA_LEN: u64 = SLOTS_PER_FILE * SLOT_LEN;

/// The file header, right after the slot array.
pub const FILE_HEADER_AT: u64 = SLOT_AREA_LEN;
pub const FILE_MAGIC: &[u8; 8] = b"RWALLOG\0";
pub const FILE_MAGIC_AT: u64 = 0;
pub const FILE_VERSION_AT: u64 = FILE_MAGIC_AT + 8;
/// Bit 0: payloads are sealed; bit 1: created before the previous file was flushed.
pub const FILE_FLAGS_AT: u64 = FILE_VERSION_AT + 4;
/// The file id (must match the name).
pub const FILE_ID_AT: u64 = FILE_FLAGS_AT + 4;
/// The base index: the index slot 0 holds.
pub const FILE_BASE_AT: u64 = FILE_ID_AT + 8;
/// CRC32C over the header's bytes `[0, FILE_CRC_AT)`.
pub const FILE_CRC_AT: u64 = FILE_BASE_AT + 8;
pub const FILE_HEADER_LEN: u64 = FILE_CRC_AT + 4;

/// Where payloads start (1 MiB); zeroes between the header and here.
pub const PAYLOADS_AT: u64 = 1 << 20;
/// The reserved zeroes between the file header and the payloads.
pub const RESERVED_LEN: u64 = PAYLOADS_AT - (FILE_HEADER_AT + FILE_HEADER_LEN);

/// Payload with a context: data | context length (u32) | context.
pub const CONTEXT_LEN_LEN: u64 = 4;
/// A seal's nonce (AES-256-GCM): sealed payloads, meta records and snapshot chunks.
pub const NONCE_LEN: u64 = 12;
/// A seal's tag.
pub const TAG_LEN: u64 = 16;
/// A sealed payload: context length C (u32) | nonce | ciphertext (D + C bytes) | tag.
pub const SEALED_CIPHERTEXT_AT: u64 = CONTEXT_LEN_LEN + NONCE_LEN;

/// The associated data of a sealed payload (FORMAT.md, "Encryption"): index (u64) | term (u64)
/// | entry type (u8), then, in a log file of version 2, the data length D (u32).
pub fn entry_aad(version: u32, index: u64, term: u64, entry_type: u8, data_len: u32) -> Vec<u8> {
    let mut aad = [
        &index.to_le_bytes()[..],
        &term.to_le_bytes()[..],
        &[entry_type][..],
    ]
    .concat();
    if version >= LOG_FORMAT_VERSION {
        aad.extend_from_slice(&data_len.to_le_bytes());
    }
    aad
}

/// The offset of slot `k` in a log file.
pub fn slot_at(k: u64) -> u64 {
    k * SLOT_LEN
}

/// The offset of the slot of `index` in the log file whose slot 0 holds `base`.
pub fn slot_of(base: u64, index: u64) -> u64 {
    slot_at(index - base)
}

/// The payload offset a slot's bytes record (6 bytes, little-endian).
pub fn slot_payload_offset(slot: &[u8]) -> u64 {
    let at = SLOT_OFFSET_AT as usize;
    let mut b = [0u8; 8];
    b[..SLOT_OFFSET_LEN as usize].copy_from_slice(&slot[at..at + SLOT_OFFSET_LEN as usize]);
    u64::from_le_bytes(b)
}

/// The data length `D` a slot's bytes record.
pub fn slot_data_len(slot: &[u8]) -> u64 {
    let at = SLOT_DATA_LEN_AT as usize;
    u64::from(u32::from_le_bytes(slot[at..at + 4].try_into().unwrap()))
}

/// The extent `[offset, end)` of slot `k`'s sealed payload in a log file's bytes: the context
/// length C (u32) at its offset, then nonce, D + C ciphertext bytes (D from the slot) and tag.
pub fn sealed_payload(file: &[u8], k: u64) -> (u64, u64) {
    let slot = &file[slot_at(k) as usize..slot_at(k + 1) as usize];
    let at = slot_payload_offset(slot);
    let c = &file[at as usize..(at + CONTEXT_LEN_LEN) as usize];
    let ctx_len = u64::from(u32::from_le_bytes(c.try_into().unwrap()));
    let end = at + SEALED_CIPHERTEXT_AT + slot_data_len(slot) + ctx_len + TAG_LEN;
    (at, end)
}

/// Rewrites slot `k`'s CRC32C (its bytes `[0, SLOT_CRC_AT)`, then its sealed payload) to match
/// what the file holds now: a forgery anyone can make, no key needed.
pub fn fix_sealed_slot_crc(file: &mut [u8], k: u64) {
    let (at, end) = sealed_payload(file, k);
    let slot = slot_at(k) as usize;
    let crc = crc32c::crc32c_append(
        crc32c::crc32c(&file[slot..slot + SLOT_CRC_AT as usize]),
        &file[at as usize..end as usize],
    );
    file[slot + SLOT_CRC_AT as usize..slot + SLOT_LEN as usize].copy_from_slice(&crc.to_le_bytes());
}

// ---------------------------------------------------------------------------------------------
// snap/<term>-<index>.snap
// ---------------------------------------------------------------------------------------------

pub const SNAP_MAGIC: &[u8; 8] = b"RWALSNAP";
pub const SNAP_MAGIC_AT: u64 = 0;
pub const SNAP_VERSION_AT: u64 = SNAP_MAGIC_AT + 8;
/// The envelope length `N` (u32).
pub const SNAP_ENVELOPE_LEN_AT: u64 = SNAP_VERSION_AT + 4;
/// The protobuf `SnapshotEnvelope`, then CRC32C (u32) over `[0, 16 + N)`, then zeroes.
pub const SNAP_ENVELOPE_AT: u64 = SNAP_ENVELOPE_LEN_AT + 4;
/// Where the snapshot data starts; the file is `4096 + data length` bytes.
pub const SNAP_DATA_AT: u64 = 4096;
/// Plaintext bytes per sealed chunk of an encrypted store's snapshot data (the last may hold
/// fewer); each chunk is stored as nonce | ciphertext | tag.
pub const SNAP_CHUNK_LEN: u64 = 64 << 10;

// ---------------------------------------------------------------------------------------------
// journal/<id>.jnl segments and their records
// ---------------------------------------------------------------------------------------------

pub const SEGMENT_MAGIC: &[u8; 8] = b"RWALJNL\0";
pub const SEGMENT_MAGIC_AT: u64 = 0;
pub const SEGMENT_VERSION_AT: u64 = SEGMENT_MAGIC_AT + 8;
/// Bit 0: record bodies are sealed; bit 1: started while earlier records were unflushed.
pub const SEGMENT_FLAGS_AT: u64 = SEGMENT_VERSION_AT + 4;
/// The segment id (must match the name).
pub const SEGMENT_ID_AT: u64 = SEGMENT_FLAGS_AT + 4;
/// The sequence number of the segment's first record.
pub const SEGMENT_FIRST_SEQ_AT: u64 = SEGMENT_ID_AT + 8;
/// CRC32C of the header's bytes `[0, SEGMENT_CRC_AT)`.
pub const SEGMENT_CRC_AT: u64 = SEGMENT_FIRST_SEQ_AT + 8;
pub const SEGMENT_HEADER_LEN: u64 = SEGMENT_CRC_AT + 4;
/// Where the records start (zeroes from the header's end up to here).
pub const SEGMENT_RECORDS_AT: u64 = 4096;

/// A record: the body length `B` (u32).
pub const RECORD_LEN_AT: u64 = 0;
/// CRC32C of the record's bytes `[RECORD_SEQ_AT, RECORD_BODY_AT)` and its body.
pub const RECORD_CRC_AT: u64 = RECORD_LEN_AT + 4;
/// The sequence number (u64), consecutive across segments from 1.
pub const RECORD_SEQ_AT: u64 = RECORD_CRC_AT + 4;
/// The body: the commit's parts (or nonce ‖ AES-256-GCM(parts) ‖ tag).
pub const RECORD_BODY_AT: u64 = RECORD_SEQ_AT + 8;
/// Records are padded with zeroes to a multiple of this.
pub const RECORD_ALIGN: u64 = 8;

/// A part of a record's body: the group id (u64).
pub const PART_GROUP_AT: u64 = 0;
/// The group's incarnation (u64).
pub const PART_INCARNATION_AT: u64 = PART_GROUP_AT + 8;
/// The kinds (u8): bit 0 SNAPSHOT, 1 ENTRIES, 2 HARD_STATE, 3 CONF_STATE, 4 INTS, 5 TRUNCATE.
pub const PART_KINDS_AT: u64 = PART_INCARNATION_AT + 8;
/// The sections of the kinds present, in the order of their bits.
pub const PART_SECTIONS_AT: u64 = PART_KINDS_AT + 1;
pub const PART_KIND_SNAPSHOT: u8 = 1;
pub const PART_KIND_ENTRIES: u8 = 2;
pub const PART_KIND_HARD_STATE: u8 = 4;
pub const PART_KIND_CONF_STATE: u8 = 8;
pub const PART_KIND_INTS: u8 = 16;
pub const PART_KIND_TRUNCATE: u8 = 32;
/// An entry of an ENTRIES section (after its count u32): index u64, term u64, then its type.
pub const PART_ENTRY_TYPE_AT: u64 = 16;
/// The entry's data length (u32), then its context length (u32), then data and context.
pub const PART_ENTRY_DATA_LEN_AT: u64 = PART_ENTRY_TYPE_AT + 1;
pub const PART_ENTRY_CONTEXT_LEN_AT: u64 = PART_ENTRY_DATA_LEN_AT + 4;
pub const PART_ENTRY_HEADER_LEN: u64 = PART_ENTRY_CONTEXT_LEN_AT + 4;

/// Where the record after the one at `at` with body length `body_len` starts.
pub fn next_record_at(at: u64, body_len: u64) -> u64 {
    (at + RECORD_BODY_AT + body_len).next_multiple_of(RECORD_ALIGN)
}

/// The offsets a test indexes a segment's or a meta page's bytes with, as `usize`.
pub mod idx {
    pub const SEGMENT_FIRST_SEQ_AT: usize = super::SEGMENT_FIRST_SEQ_AT as usize;
    pub const SEGMENT_RECORDS_AT: usize = super::SEGMENT_RECORDS_AT as usize;
    pub const RECORD_LEN_AT: usize = super::RECORD_LEN_AT as usize;
    pub const RECORD_SEQ_AT: usize = super::RECORD_SEQ_AT as usize;
    pub const RECORD_BODY_AT: usize = super::RECORD_BODY_AT as usize;
    pub const RECORD_ALIGN: usize = super::RECORD_ALIGN as usize;
    pub const META_SEQ_AT: usize = super::META_SEQ_AT as usize;
    pub const META_RECORD_AT: usize = super::META_RECORD_AT as usize;
}

// ---------------------------------------------------------------------------------------------
// the numbers FORMAT.md prints, against the chains above
// ---------------------------------------------------------------------------------------------

const _: () = {
    assert!(META_RECORD_AT == 32);
    assert!(SLOT_TYPE_AT == 22 && SLOT_FLAGS_AT == 23 && SLOT_DATA_LEN_AT == 24);
    assert!(SLOT_CRC_AT == 28 && SLOT_LEN == 32);
    assert!(SLOT_AREA_LEN == 960_000 && FILE_HEADER_AT == 960_000);
    assert!(FILE_BASE_AT == 24 && FILE_CRC_AT == 32 && FILE_HEADER_LEN == 36);
    assert!(FILE_HEADER_AT + FILE_HEADER_LEN == 960_036);
    assert!(RESERVED_LEN == 88_540 && PAYLOADS_AT == 1_048_576);
    assert!(SNAP_ENVELOPE_AT == 16);
    assert!(SEGMENT_FIRST_SEQ_AT == 24 && SEGMENT_HEADER_LEN == 36);
    assert!(RECORD_BODY_AT == 16);
    assert!(PART_KINDS_AT == 16 && PART_SECTIONS_AT == 17);
    assert!(PART_ENTRY_DATA_LEN_AT == 17 && PART_ENTRY_HEADER_LEN == 25);
};
