//! One `NNNNN.wal` log file: the slot array, the file header, the payload area and its map.
//!
//! Owns: the byte layout of a log file (see docs/FORMAT.md), the memory map, growth of the file by
//! `fallocate` before any byte is written, the CRC32C of each entry, and the
//! per-file "verified" watermark. Must never: decide which file an index belongs to, which files
//! exist or what a damaged slot means for the log (that is `wal` and `recovery`).
//!
//! Layout (little-endian):
//! ```text
//! [0, 960_000)            30,000 slots of 32 bytes; slot k holds index base + k
//! [960_000, 960_036)      file header (magic, version, flags, file id, base index, CRC32C)
//! [960_036, 1 MiB)        zero
//! [1 MiB, ..)             payloads, in slot order, back to back
//! ```

use std::fs::{File, OpenOptions};
use std::io::IoSlice;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use bytes::Bytes;
use raft::prelude::{Entry, EntryType};

use crate::crypto::{self, Cipher};
use crate::error::{Error, Result};
use crate::fsutil;
use crate::map::{FileCopy, FileMap, FileView, Sink};

/// The sink of a file's writes: its descriptor (opening a detached file's if needed).
fn sink_of<'a>(handle: &'a mut Handle, path: &Path) -> Result<Sink<'a>> {
    match handle {
        Handle::Own(f) => Ok(Sink::Fd(f)),
        Handle::Detached(fd) => {
            if fd.is_none() {
                *fd = Some(open_rw(path)?);
            }
            match fd {
                Some(f) => Ok(Sink::Fd(f)),
                None => Err(Error::InvalidArgument(format!(
                    "no descriptor for {}",
                    path.display()
                ))),
            }
        }
    }
}

/// Largest index the engine accepts anywhere (2^62): far past any real log, and low enough that
/// index arithmetic (a file's base plus its slots, a snapshot index plus one) cannot overflow
/// on values read from a damaged or forged directory.
pub(crate) const MAX_INDEX: u64 = 1 << 62;

/// Entries per log file; the log rotates to a new file after this many.
pub(crate) const SLOTS_PER_FILE: u64 = 30_000;
/// Bytes per slot.
pub(crate) const SLOT_SIZE: usize = 32;
/// Bytes of the slot array.
pub(crate) const SLOT_AREA: usize = SLOTS_PER_FILE as usize * SLOT_SIZE;
/// Offset of the first payload byte: payloads start after the first MiB.
pub(crate) const PAYLOAD_START: u64 = 1 << 20;
/// Payload space reserved when a file is created.
const INITIAL_PAYLOAD_RESERVE: u64 = 4 << 20;
/// Largest single growth step of the payload area.
const MAX_GROWTH_STEP: u64 = 64 << 20;
/// Payload space a file reserves at once from what its saves so far project (`ensure_len`).
const MAX_PROJECTED_PAYLOAD: u64 = 1 << 30;
/// Slots a file must have filled before its payload bytes per slot count as a projection (a
/// few large entries early in a file say little about the rest).
const MIN_SLOTS_TO_PROJECT: u64 = 1024;
/// Granularity of the writes that zero a new file's slot area.
const PAGE: usize = 4096;
/// Address space reserved for a file being appended to, so it grows without a new mapping.
const ACTIVE_MAP_RESERVE: usize = 1 << 30;
/// Address space reserved for each file of an engine group (thousands of groups share one
/// process's address space and map count).
const ENGINE_MAP_RESERVE: usize = 64 << 20;
/// Payload space a new file of an engine group starts with: a group's disk use grows with its
/// data, from a few pages.
const ENGINE_INITIAL_RESERVE: u64 = 16 << 10;
/// Largest growth step of an engine group file's payload area.
const ENGINE_MAX_GROWTH: u64 = 4 << 20;

// Slot fields: each offset is the previous one plus the previous field's size.
const SLOT_TERM: usize = 0;
const SLOT_INDEX: usize = SLOT_TERM + 8;
const SLOT_OFFSET: usize = SLOT_INDEX + 8; // 6 bytes: payload start within the file
const SLOT_TYPE: usize = SLOT_OFFSET + 6;
const SLOT_FLAGS: usize = SLOT_TYPE + 1;
const SLOT_DATA_LEN: usize = SLOT_FLAGS + 1;
const SLOT_CRC: usize = SLOT_DATA_LEN + 4;
const _: () = assert!(SLOT_CRC + 4 == SLOT_SIZE);

/// Slot flag: the payload carries a context (`data ‖ u32 context_len ‖ context`).
const FLAG_CONTEXT: u8 = 1;
/// Slot flag: the payload is sealed (`u32 context_len ‖ nonce ‖ AES-256-GCM(data ‖ context) ‖
/// tag`); set exactly in encrypted stores.
const FLAG_SEALED: u8 = 2;
/// Slot flag: `truncate_entries_until` dropped the data: the entry reads back with empty data
/// (its payload bytes stay, still covered by the CRC).
const FLAG_DATA_DROPPED: u8 = 4;
const KNOWN_FLAGS: u8 = FLAG_CONTEXT | FLAG_SEALED | FLAG_DATA_DROPPED;
/// Largest value the 6-byte offset field holds.
const MAX_OFFSET: u64 = (1 << 48) - 1;

// File header fields, stored at HEADER_OFFSET.
pub(crate) const HEADER_OFFSET: usize = SLOT_AREA;
const HDR_MAGIC: usize = 0;
const HDR_VERSION: usize = HDR_MAGIC + 8;
const HDR_FLAGS: usize = HDR_VERSION + 4;
const HDR_FILE_ID: usize = HDR_FLAGS + 4;
const HDR_BASE_INDEX: usize = HDR_FILE_ID + 8;
const HDR_CRC: usize = HDR_BASE_INDEX + 8;
const HEADER_SIZE: usize = HDR_CRC + 4;
const _: () = assert!(HEADER_OFFSET + HEADER_SIZE <= PAYLOAD_START as usize);
// The header sits in one 512-byte sector, so a crash writes all of it or none of it.
const _: () = assert!(HEADER_OFFSET % 512 + HEADER_SIZE <= 512);

const FILE_MAGIC: &[u8; 8] = b"RWALLOG\0";
/// Header flag: payloads are sealed with the store's key.
const HDR_FLAG_ENCRYPTED: u32 = 1;
/// Header flag: this file was created before the file ahead of it was flushed (a rotation
/// without `sync_writes`), so a power loss may have left that file's end unwritten: recovery may
/// treat it as tail. Cleared once everything before it is durable.
const HDR_FLAG_PREV_UNFLUSHED: u32 = 2;
/// Version of the log file layout.
pub(crate) const LOG_FORMAT_VERSION: u32 = 1;

/// The file name of log file `id`.
pub(crate) fn file_name(id: u64) -> String {
    format!("{id:05}.wal")
}

/// The id of a log file name, or `None` for any other name. Only the canonical name of an id
/// counts (what [`file_name`] makes: 5 digits or more, no extra leading zero), and only ids in
/// `[1, MAX_INDEX]`, bounded like indexes so that id arithmetic cannot overflow.
pub(crate) fn parse_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".wal")?;
    if digits.len() < 5 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let id: u64 = digits.parse().ok()?;
    (1..=MAX_INDEX)
        .contains(&id)
        .then_some(id)
        .filter(|&id| file_name(id) == name)
}

/// How a log file is opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Access {
    /// The last file: appended to, so address space is reserved for it to grow.
    Append,
    /// A full file: read, and written only if a conflicting append cuts back into it.
    Sealed,
    /// Inspection tools: opened read-only, never written.
    ReadOnly,
    /// A file of an engine group: no descriptor kept while idle (see [`Handle`]).
    Detached,
}

/// How a new log file is laid out (see [`LogFile::create`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Flavor {
    /// A `DiskStorage` file whose saves are each flushed: its first MiB written as zeroes.
    Synced,
    /// A `DiskStorage` file flushed only by `sync()`: fallocated, nothing written ahead.
    Unsynced,
    /// A file of an engine group: sparse (slot pages and payload space are allocated as they
    /// are needed, so a small group uses a few pages), detached from any descriptor.
    Engine,
}

/// How a log file's bytes are written and flushed. Either way, bytes go in with `pwritev`
/// (never through the map, which is read-only).
enum Handle {
    /// A `DiskStorage` file: its own descriptor, flushed with fdatasync.
    Own(File),
    /// A file of an engine group, which keeps no descriptor while idle (an engine caps them
    /// however many groups it hosts): one is opened when the file is written (and kept until
    /// [`LogFile::release_fd`]), or for the moment of a flush. The engine makes these files
    /// durable (its checkpoints).
    Detached(Option<File>),
}

/// Payload bytes of an engine file written between two starts of its write-back.
const WRITEBACK_BYTES: u64 = 256 << 10;

/// Widens the range `r` to cover `[from, to)`.
fn widen(r: &mut Option<(u64, u64)>, from: u64, to: u64) {
    if from < to {
        *r = Some(r.map_or((from, to), |(a, b)| (a.min(from), b.max(to))));
    }
}

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
    fn decode(b: &[u8; SLOT_SIZE]) -> Slot {
        let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap_or([0; 8]));
        let mut off = [0u8; 8];
        off[..6].copy_from_slice(&b[SLOT_OFFSET..SLOT_OFFSET + 6]);
        Slot {
            term: u64_at(SLOT_TERM),
            index: u64_at(SLOT_INDEX),
            offset: u64::from_le_bytes(off),
            entry_type: b[SLOT_TYPE],
            flags: b[SLOT_FLAGS],
            data_len: u32::from_le_bytes([
                b[SLOT_DATA_LEN],
                b[SLOT_DATA_LEN + 1],
                b[SLOT_DATA_LEN + 2],
                b[SLOT_DATA_LEN + 3],
            ]),
            crc: u32::from_le_bytes([
                b[SLOT_CRC],
                b[SLOT_CRC + 1],
                b[SLOT_CRC + 2],
                b[SLOT_CRC + 3],
            ]),
        }
    }

    /// Encodes every field but the CRC.
    fn encode_fields(&self, b: &mut [u8; SLOT_SIZE]) {
        b[SLOT_TERM..SLOT_TERM + 8].copy_from_slice(&self.term.to_le_bytes());
        b[SLOT_INDEX..SLOT_INDEX + 8].copy_from_slice(&self.index.to_le_bytes());
        b[SLOT_OFFSET..SLOT_OFFSET + 6].copy_from_slice(&self.offset.to_le_bytes()[..6]);
        b[SLOT_TYPE] = self.entry_type;
        b[SLOT_FLAGS] = self.flags;
        b[SLOT_DATA_LEN..SLOT_DATA_LEN + 4].copy_from_slice(&self.data_len.to_le_bytes());
    }
}

/// Opens an existing log file (read-write with `writable`) and returns it with its length, which
/// must cover the slot area and header.
fn open_sized(path: &Path, writable: bool) -> Result<(File, u64)> {
    let file = OpenOptions::new()
        .read(true)
        .write(writable)
        .open(path)
        .map_err(|e| Error::io("open", path, e))?;
    let len = file
        .metadata()
        .map_err(|e| Error::io("stat", path, e))?
        .len();
    if len < PAYLOAD_START {
        return Err(Error::corrupt(
            path,
            len,
            format!("log file is {len} bytes, shorter than its {PAYLOAD_START}-byte slot area"),
        ));
    }
    Ok((file, len))
}

/// Opens an existing log file read-write, for the moment a descriptor is needed.
fn open_rw(path: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| Error::io("open", path, e))
}

/// Writes the first MiB of a log file (slot area, header page and the pages up to the first
/// payload) as zeroes, one page per write: the page cache then holds the area in single pages,
/// and a slot write dirties one page, not a large folio written back whole.
fn zero_first_mib(file: &File, path: &Path) -> Result<()> {
    let zeroes = [0u8; PAGE];
    for i in 0..PAYLOAD_START as usize / PAGE {
        file.write_all_at(&zeroes, (i * PAGE) as u64)
            .map_err(|e| Error::io("zero slot area", path, e))?;
    }
    Ok(())
}

fn entry_type_code(t: EntryType) -> u8 {
    match t {
        EntryType::EntryNormal => 0,
        EntryType::EntryConfChange => 1,
        EntryType::EntryConfChangeV2 => 2,
    }
}

fn entry_type_from_code(c: u8) -> Option<EntryType> {
    match c {
        0 => Some(EntryType::EntryNormal),
        1 => Some(EntryType::EntryConfChange),
        2 => Some(EntryType::EntryConfChangeV2),
        _ => None,
    }
}

/// Associated data of a sealed payload: the entry's index, term and type, so a payload moved to
/// another slot (or a slot rewritten around an old payload) fails to open.
fn entry_aad(s: &Slot) -> [u8; 17] {
    let mut aad = [0u8; 17];
    aad[..8].copy_from_slice(&s.index.to_le_bytes());
    aad[8..16].copy_from_slice(&s.term.to_le_bytes());
    aad[16] = s.entry_type;
    aad
}

/// Bytes an entry's payload takes in the payload area.
pub(crate) fn payload_len(e: &Entry) -> u64 {
    let ctx = if e.context.is_empty() {
        0
    } else {
        4 + e.context.len() as u64
    };
    e.data.len() as u64 + ctx
}

/// Why a slot failed its range checks (turned into an `Error` off the hot path).
#[derive(Clone, Copy, Debug)]
enum SlotFault {
    WrongIndex(Slot),
    UnknownTypeOrFlags(Slot),
    PayloadOutOfRange(Slot),
    ContextOutOfRange(Slot, u64),
}

/// Highest entry type code.
const MAX_ENTRY_TYPE: u8 = 2;

/// A slot whose fields passed the range checks, with the payload's extent.
#[derive(Clone, Copy, Debug)]
pub(crate) struct CheckedSlot {
    pub slot: Slot,
    /// Where the context length (if any) and context start.
    pub data_end: u64,
    /// One past the last payload byte.
    pub payload_end: u64,
}

/// Saves whose payloads total at most this many bytes are staged into one buffer and written
/// with one `pwrite`; larger ones go straight from the entries' buffers with `pwritev`.
const STAGE_LIMIT: u64 = 256 << 10;

/// One open log file, mapped read-write over its whole (fallocated) length.
pub(crate) struct LogFile {
    path: PathBuf,
    id: u64,
    base: u64,
    handle: Handle,
    /// The file's bytes: mapped, or (read-only tools) copied.
    map: FileView,
    /// Where the next payload goes. Payload bytes below it are frozen: handed-out entries may
    /// reference them, so they are never rewritten (a cut suffix's space is not reused).
    payload_end: u64,
    /// Slots `[0, verified)` have had their CRC checked (or were written) since open.
    verified: AtomicU32,
    /// Written since the last flush.
    dirty: bool,
    /// Engine files: the byte ranges written (payloads, slots) whose write-back to the disk is
    /// not started yet, and the payload offset past which it is (see [`LogFile::release_fd`]).
    unstarted: [Option<(u64, u64)>; 2],
    writeback_at: u64,
    /// Seals payloads when the store is encrypted.
    cipher: Option<Cipher>,
    /// The header says the file ahead of this one may not have been flushed when it was made.
    prev_unflushed: bool,
}

/// Buffers the writer reuses from save to save (one per log, not per file): small payloads
/// copied back to back (one buffer for the kernel to copy instead of one iovec per entry), and
/// the encoded slots.
#[derive(Default)]
pub(crate) struct Scratch {
    stage: Vec<u8>,
    slots: Vec<u8>,
}

impl LogFile {
    /// Creates log file `id` whose slot 0 holds `base`: space reserved with fallocate (the slot
    /// array reads as zeroes), then the header written. Nothing is flushed here: the new file
    /// is dirty, and the caller makes it and the directory entry durable with its next flush
    /// (until then a crash can leave the file without its header, which open treats as an
    /// empty tail; the header lies in one 512-byte sector, so it is never torn).
    ///
    /// `payload_hint`: payload bytes to reserve up front (the previous file's use, so that a
    /// steady workload does not grow each new file step by step); at least 4 MiB, at most 1 GiB.
    /// Without room for it the file starts with its first MiB alone. A file that cannot be made
    /// whole is removed again before the error returns.
    ///
    /// `zero_slot_area`: write the whole first MiB (the slot area, the header's page and the
    /// pages up to the first payload byte) as real zeroes, one page per write, instead of
    /// leaving it a fallocated (unwritten) extent: a flushed write into an unwritten extent also
    /// writes the extent's conversion, so writers that flush every save want it. All of the
    /// first MiB, not just the slots: an unwritten gap before the payloads gives the file one
    /// extent too many for the inode, and ext4 then allocates and frees an extent block on every
    /// flushed save. Unsynced writers skip it: the page cache absorbs the conversions, and the
    /// writes would cost them more than they save (figures in docs/PERFORMANCE.md).
    pub(crate) fn create(
        dir: &Path,
        id: u64,
        base: u64,
        payload_hint: u64,
        cipher: Option<&Cipher>,
        prev_unflushed: bool,
        flavor: Flavor,
    ) -> Result<LogFile> {
        let path = dir.join(file_name(id));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| Error::io("create", &path, e))?;
        let lay_out = || -> Result<()> {
            if flavor == Flavor::Engine {
                // Sparse: the header's page and a few pages of payload; slot pages come as
                // they are needed (`make_room`).
                let page = (HEADER_OFFSET as u64 / PAGE as u64) * PAGE as u64;
                fsutil::allocate_range(&file, &path, page, PAGE as u64)?;
                fsutil::allocate_range(&file, &path, PAYLOAD_START, ENGINE_INITIAL_RESERVE)?;
            } else {
                let reserve = payload_hint
                    .clamp(INITIAL_PAYLOAD_RESERVE, 1 << 30)
                    .next_multiple_of(1 << 20);
                // Without room for the reserve, the first MiB is enough to start with:
                // `ensure_len` grows the file by what each save needs.
                fsutil::allocate_preferring(&file, &path, PAYLOAD_START + reserve, PAYLOAD_START)?;
            }
            if flavor == Flavor::Synced {
                zero_first_mib(&file, &path)?;
            }
            file.write_all_at(
                &encode_header(id, base, cipher.is_some(), prev_unflushed),
                HEADER_OFFSET as u64,
            )
            .map_err(|e| Error::io("write header", &path, e))
        };
        let access = if flavor == Flavor::Engine {
            Access::Detached
        } else {
            Access::Append
        };
        match lay_out().and_then(|()| LogFile::open(&path, id, access, cipher)) {
            Ok(mut f) => {
                f.dirty = true;
                Ok(f)
            }
            Err(e) => {
                // Nothing names the half-made file yet (open would drop it as an empty tail):
                // remove it now, so that the next attempt can create it again.
                drop(file);
                let _ = std::fs::remove_file(&path);
                Err(e)
            }
        }
    }

    /// Makes log file `id` (slot 0 holds `base`) out of the spare at `spare`, a log file that
    /// cleanup took out of the log. Its first MiB is written as zeroes and flushed *before* it
    /// takes its new name, so that name never shows stale slots or an old header; then it is
    /// renamed (never over an existing file) and gets its header, made durable by the next
    /// flush like a new file's (a crash before leaves a zero header: an empty tail). The
    /// payload area keeps old bytes that no slot references; they are written blocks, so a
    /// flushed save into them converts no extent (no inode write: the point of reusing it).
    /// On error nothing of it is left: the spare and any renamed file are removed.
    pub(crate) fn create_from_spare(
        spare: &Path,
        dir: &Path,
        id: u64,
        base: u64,
        cipher: Option<&Cipher>,
        prev_unflushed: bool,
    ) -> Result<LogFile> {
        let path = dir.join(file_name(id));
        let mut renamed = false;
        let mut make = || -> Result<LogFile> {
            let (file, _) = open_sized(spare, true)?;
            zero_first_mib(&file, spare)?;
            file.sync_data()
                .map_err(|e| Error::io("fdatasync", spare, e))?;
            fsutil::rename_no_replace(spare, &path)?;
            renamed = true;
            file.write_all_at(
                &encode_header(id, base, cipher.is_some(), prev_unflushed),
                HEADER_OFFSET as u64,
            )
            .map_err(|e| Error::io("write header", &path, e))?;
            let mut f = LogFile::open(&path, id, Access::Append, cipher)?;
            f.dirty = true;
            Ok(f)
        };
        let made = make();
        if made.is_err() {
            let _ = std::fs::remove_file(if renamed { &path } else { spare });
        }
        made
    }

    /// Drops the file's handle and map; `true` when no handed-out entry references the map any
    /// more (its bytes may then be reused without changing what a reader holds).
    pub(crate) fn close(self) -> bool {
        let watch = self.map.watch();
        drop(self);
        !watch.in_use()
    }

    /// Opens and maps an existing log file and checks its header. Slots are not checked here.
    pub(crate) fn open(
        path: &Path,
        id: u64,
        access: Access,
        cipher: Option<&Cipher>,
    ) -> Result<LogFile> {
        let (file, len) = open_sized(path, access != Access::ReadOnly)?;
        let reserve = match access {
            Access::Append => ACTIVE_MAP_RESERVE,
            Access::Detached => ENGINE_MAP_RESERVE,
            Access::Sealed | Access::ReadOnly => 0,
        };
        // The tools never map: a live node may rewrite what they read (module `map`).
        let map = if access == Access::ReadOnly {
            let own = file.try_clone().map_err(|e| Error::io("open", path, e))?;
            FileView::Copied(FileCopy::new(
                own,
                path,
                len as usize,
                PAYLOAD_START as usize,
            )?)
        } else {
            FileView::Mapped(FileMap::new(
                &file,
                path,
                len as usize,
                reserve,
                PAYLOAD_START as usize,
            )?)
        };
        let (base, prev_unflushed) = decode_header(
            path,
            &map.head()[HEADER_OFFSET..HEADER_OFFSET + HEADER_SIZE],
            id,
            cipher.is_some(),
        )?;
        let handle = if access == Access::Detached {
            // The map keeps the file reachable; the descriptor goes (engines cap them).
            drop(file);
            Handle::Detached(None)
        } else {
            Handle::Own(file)
        };
        Ok(LogFile {
            path: path.to_path_buf(),
            id,
            base,
            handle,
            map,
            payload_end: PAYLOAD_START,
            verified: AtomicU32::new(0),
            dirty: false,
            unstarted: [None, None],
            // Files of different groups, written at the same pace, start their write-back at
            // different rounds (an offset from the file's path).
            writeback_at: PAYLOAD_START
                + u64::from(crc32c::crc32c(path.as_os_str().as_encoded_bytes())) % WRITEBACK_BYTES,
            cipher: cipher.cloned(),
            prev_unflushed,
        })
    }

    /// Written since its last flush.
    pub(crate) fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// Created before the file ahead of it was flushed (see `HDR_FLAG_PREV_UNFLUSHED`).
    pub(crate) fn prev_unflushed(&self) -> bool {
        self.prev_unflushed
    }

    /// Everything before this file is durable now: clears the flag (made durable by this file's
    /// next flush).
    pub(crate) fn clear_prev_unflushed(&mut self) -> Result<()> {
        if !self.prev_unflushed {
            return Ok(());
        }
        let header = encode_header(self.id, self.base, self.cipher.is_some(), false);
        let sink = sink_of(&mut self.handle, &self.path)?;
        self.map.writable(&self.path)?.write(
            sink,
            HEADER_OFFSET,
            &mut [IoSlice::new(&header)],
            &self.path,
        )?;
        self.prev_unflushed = false;
        self.dirty = true;
        Ok(())
    }

    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    pub(crate) fn base(&self) -> u64 {
        self.base
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Payload bytes written to this file so far.
    pub(crate) fn payload_used(&self) -> u64 {
        self.payload_end - PAYLOAD_START
    }

    /// Bytes of the file (and of the map).
    pub(crate) fn len(&self) -> u64 {
        self.map.len() as u64
    }

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

    /// Term and index fields of slot `k` (no other field is decoded). `k < SLOTS_PER_FILE`.
    #[inline]
    pub(crate) fn slot_term_index(&self, k: u32) -> (u64, u64) {
        let b = self.slot_bytes(k);
        let mut term = [0u8; 8];
        let mut index = [0u8; 8];
        term.copy_from_slice(&b[SLOT_TERM..SLOT_TERM + 8]);
        index.copy_from_slice(&b[SLOT_INDEX..SLOT_INDEX + 8]);
        (u64::from_le_bytes(term), u64::from_le_bytes(index))
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
        let s = self.slot(k);
        if s.index != self.base + k as u64 {
            return Err(SlotFault::WrongIndex(s));
        }
        let sealed = s.flags & FLAG_SEALED != 0;
        if s.entry_type > MAX_ENTRY_TYPE
            || s.flags & !KNOWN_FLAGS != 0
            || sealed != self.cipher.is_some()
            || (sealed && s.flags & FLAG_CONTEXT != 0)
        {
            return Err(SlotFault::UnknownTypeOrFlags(s));
        }
        let len = self.len();
        if sealed {
            let o = s.offset as usize;
            let Some(b) = self.map.read(o, o.saturating_add(4)) else {
                return Err(SlotFault::PayloadOutOfRange(s));
            };
            let ctx_len = u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as u64;
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
            let Some(b) = self.map.read(d, d + 4) else {
                return Err(SlotFault::ContextOutOfRange(s, 0));
            };
            let ctx_len = u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as u64;
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
        let c = self.check_slot(k)?;
        let b = self.slot_bytes(k);
        let crc = crc32c::crc32c(&b[..SLOT_CRC]);
        // The checks above put the payload inside the file.
        let Some(payload) = self
            .map
            .read(c.slot.offset as usize, c.payload_end as usize)
        else {
            return Err(self.unfrozen_error(k, &c));
        };
        let crc = crc32c::crc32c_append(crc, &payload);
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
        Ok(c)
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
            let u64_at = |o: usize| {
                let mut w = [0u8; 8];
                w.copy_from_slice(&b[o..o + 8]);
                u64::from_le_bytes(w)
            };
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
            let plain = Bytes::from(cipher.open(&entry_aad(s), &sealed)?);
            let split = (s.data_len as usize).min(plain.len());
            (plain.slice(..split), plain.slice(split..))
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
    fn unfrozen_error(&self, k: u32, c: &CheckedSlot) -> Error {
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
                self.writeback_at = self.payload_end + WRITEBACK_BYTES;
                for (from, to) in self.unstarted.iter_mut().filter_map(Option::take) {
                    let len = std::num::NonZeroU64::new(to - from);
                    let _ = rustix::fs::fadvise(file, from, len, rustix::fs::Advice::DontNeed);
                }
            }
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
        let staged = total <= STAGE_LIMIT && entries.len() > 1;
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
            let mut crc = crc32c::crc32c_append(crc32c::crc32c(&b[..SLOT_CRC]), &e.data);
            if !e.context.is_empty() {
                crc = crc32c::crc32c_append(crc, &ctx_len);
                crc = crc32c::crc32c_append(crc, &e.context);
            }
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

    /// Zeroes every written slot from `from` on (an engine group's file at open: slots past
    /// the end its meta page records were written after it, and the journal writes them
    /// again). Only the slot pages that hold data are touched (`SEEK_DATA`), so a sparse slot
    /// area is not read.
    pub(crate) fn clear_slots_from(&mut self, from: u32) -> Result<()> {
        use rustix::fs::{seek, SeekFrom};
        let end = SLOT_AREA as u64;
        let mut at = u64::from(from) * SLOT_SIZE as u64;
        let file = open_rw(&self.path)?;
        while at < end {
            let data = match seek(&file, SeekFrom::Data(at)) {
                Ok(d) => d,
                Err(rustix::io::Errno::NXIO) => break,
                Err(e) => return Err(Error::io("seek data in", &self.path, e.into())),
            };
            if data >= end {
                break;
            }
            let hole = match seek(&file, SeekFrom::Hole(data)) {
                Ok(h) => h.min(end),
                Err(e) => return Err(Error::io("seek hole in", &self.path, e.into())),
            };
            let (a, b) = (
                (data.max(at) / SLOT_SIZE as u64) as u32,
                hole.div_ceil(SLOT_SIZE as u64).min(SLOTS_PER_FILE) as u32,
            );
            // Only slots that are not all zero are written (a page of zeroes stays as it is).
            let nonzero: Vec<u32> = (a..b).filter(|&k| !self.slot_is_zero(k)).collect();
            if let (Some(&lo), Some(&hi)) = (nonzero.first(), nonzero.last()) {
                self.zero_slots(lo, hi + 1)?;
            }
            at = hole;
        }
        Ok(())
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
        let crc = crc32c::crc32c_append(crc32c::crc32c(&b[..SLOT_CRC]), &payload);
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
/// each under a fresh nonce, bound to its entry's index, term and type. Returns the payload
/// bytes and the encoded slots describing them.
fn seal_entries(cipher: &Cipher, start: u64, entries: &[Entry]) -> (Vec<u8>, Vec<u8>) {
    let mut payloads = Vec::new();
    let mut slots = Vec::with_capacity(entries.len() * SLOT_SIZE);
    for e in entries {
        let slot = Slot {
            term: e.term,
            index: e.index,
            offset: start + payloads.len() as u64,
            entry_type: entry_type_code(e.entry_type),
            flags: FLAG_SEALED,
            data_len: e.data.len() as u32,
            crc: 0,
        };
        let p0 = payloads.len();
        payloads.extend_from_slice(&(e.context.len() as u32).to_le_bytes());
        payloads.extend_from_slice(&cipher.seal(&entry_aad(&slot), &[&e.data, &e.context]));
        let mut b = [0u8; SLOT_SIZE];
        slot.encode_fields(&mut b);
        let crc = crc32c::crc32c_append(crc32c::crc32c(&b[..SLOT_CRC]), &payloads[p0..]);
        b[SLOT_CRC..].copy_from_slice(&crc.to_le_bytes());
        slots.extend_from_slice(&b);
    }
    (payloads, slots)
}

fn encode_header(id: u64, base: u64, encrypted: bool, prev_unflushed: bool) -> [u8; HEADER_SIZE] {
    let mut flags = if encrypted { HDR_FLAG_ENCRYPTED } else { 0 };
    if prev_unflushed {
        flags |= HDR_FLAG_PREV_UNFLUSHED;
    }
    let mut h = [0u8; HEADER_SIZE];
    h[HDR_MAGIC..HDR_MAGIC + 8].copy_from_slice(FILE_MAGIC);
    h[HDR_VERSION..HDR_VERSION + 4].copy_from_slice(&LOG_FORMAT_VERSION.to_le_bytes());
    h[HDR_FLAGS..HDR_FLAGS + 4].copy_from_slice(&flags.to_le_bytes());
    h[HDR_FILE_ID..HDR_FILE_ID + 8].copy_from_slice(&id.to_le_bytes());
    h[HDR_BASE_INDEX..HDR_BASE_INDEX + 8].copy_from_slice(&base.to_le_bytes());
    let crc = crc32c::crc32c(&h[..HDR_CRC]);
    h[HDR_CRC..].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Checks a file header (including that it is encrypted exactly when a key is given) and
/// returns the base index and whether the previous file may be unflushed.
fn decode_header(path: &Path, h: &[u8], id: u64, encrypted: bool) -> Result<(u64, bool)> {
    let at = HEADER_OFFSET as u64;
    let u32_at = |o: usize| u32::from_le_bytes([h[o], h[o + 1], h[o + 2], h[o + 3]]);
    let u64_at = |o: usize| u64::from_le_bytes(h[o..o + 8].try_into().unwrap_or([0; 8]));
    if &h[HDR_MAGIC..HDR_MAGIC + 8] != FILE_MAGIC {
        return Err(Error::corrupt(path, at, "bad log file magic"));
    }
    let crc = crc32c::crc32c(&h[..HDR_CRC]);
    if crc != u32_at(HDR_CRC) {
        return Err(Error::corrupt(
            path,
            at,
            "log file header checksum mismatch",
        ));
    }
    let version = u32_at(HDR_VERSION);
    if version > LOG_FORMAT_VERSION {
        return Err(Error::UnsupportedVersion {
            path: path.to_path_buf(),
            found: version,
            supported: LOG_FORMAT_VERSION,
        });
    }
    let flags = u32_at(HDR_FLAGS);
    if flags & !(HDR_FLAG_ENCRYPTED | HDR_FLAG_PREV_UNFLUSHED) != 0 {
        return Err(Error::corrupt(
            path,
            at + HDR_FLAGS as u64,
            format!("unknown log file flags {flags:#x}"),
        ));
    }
    if (flags & HDR_FLAG_ENCRYPTED != 0) != encrypted {
        return Err(Error::Encryption {
            path: path.to_path_buf(),
            reason: if encrypted {
                "log file is plaintext but the store is opened with a key".to_string()
            } else {
                "log file is encrypted but no key was given".to_string()
            },
        });
    }
    let file_id = u64_at(HDR_FILE_ID);
    if file_id != id {
        return Err(Error::corrupt(
            path,
            at + HDR_FILE_ID as u64,
            format!("header names file id {file_id}, the file name says {id}"),
        ));
    }
    let base = u64_at(HDR_BASE_INDEX);
    if base == 0 || base > MAX_INDEX {
        return Err(Error::corrupt(
            path,
            at + HDR_BASE_INDEX as u64,
            format!("base index {base} outside [1, {MAX_INDEX}]"),
        ));
    }
    Ok((base, flags & HDR_FLAG_PREV_UNFLUSHED != 0))
}

/// What a log file's header says, read without mapping the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HeaderPeek {
    /// No header: the file is shorter than its slot area, or its header bytes are all zero (a
    /// file created, or made from the spare, whose header never reached the disk). The header
    /// lies in one 512-byte sector, so a crash leaves all of it or none of it.
    Absent,
    /// A valid header; `prev_unflushed` as in `HDR_FLAG_PREV_UNFLUSHED`.
    Present { prev_unflushed: bool },
}

/// Reads and checks the header of log file `id` at `path`; a header that is there but fails
/// its checks is an error naming the file.
pub(crate) fn peek_header(path: &Path, id: u64, encrypted: bool) -> Result<HeaderPeek> {
    let file = File::open(path).map_err(|e| Error::io("open", path, e))?;
    let len = file
        .metadata()
        .map_err(|e| Error::io("stat", path, e))?
        .len();
    if len < PAYLOAD_START {
        return Ok(HeaderPeek::Absent);
    }
    let mut h = [0u8; HEADER_SIZE];
    file.read_exact_at(&mut h, HEADER_OFFSET as u64)
        .map_err(|e| Error::io("read header", path, e))?;
    if h.iter().all(|&b| b == 0) {
        return Ok(HeaderPeek::Absent);
    }
    let (_, prev_unflushed) = decode_header(path, &h, id, encrypted)?;
    Ok(HeaderPeek::Present { prev_unflushed })
}

/// The base index and length of log file `id` at `path`, from its header alone (the read-only
/// tools, which describe a file without copying its slot area); `None` when it has no header
/// (as [`HeaderPeek::Absent`]). A header that is there but fails its checks is an error.
pub(crate) fn peek_base(path: &Path, id: u64, encrypted: bool) -> Result<Option<(u64, u64)>> {
    let file = File::open(path).map_err(|e| Error::io("open", path, e))?;
    let len = file
        .metadata()
        .map_err(|e| Error::io("stat", path, e))?
        .len();
    if len < PAYLOAD_START {
        return Ok(None);
    }
    let mut h = [0u8; HEADER_SIZE];
    file.read_exact_at(&mut h, HEADER_OFFSET as u64)
        .map_err(|e| Error::io("read header", path, e))?;
    if h.iter().all(|&b| b == 0) {
        return Ok(None);
    }
    let (base, _) = decode_header(path, &h, id, encrypted)?;
    Ok(Some((base, len)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_round_trip() {
        assert_eq!(file_name(7), "00007.wal");
        assert_eq!(parse_file_name("00007.wal"), Some(7));
        assert_eq!(parse_file_name("123456.wal"), Some(123456));
        assert_eq!(parse_file_name("7.wal"), None);
        assert_eq!(parse_file_name("00007.wal.tmp"), None);
        assert_eq!(parse_file_name("abcde.wal"), None);
        assert_eq!(parse_file_name("000007.wal"), None);
        assert_eq!(parse_file_name("00000.wal"), None);
        assert_eq!(parse_file_name(&file_name(MAX_INDEX)), Some(MAX_INDEX));
        assert_eq!(parse_file_name(&file_name(MAX_INDEX + 1)), None);
        assert_eq!(parse_file_name("18446744073709551615.wal"), None);
    }

    /// Where the file system reports the first hole at or after `from` (ext4 reports a
    /// fallocated extent that was never written as a hole).
    fn first_hole(path: &Path, from: u64) -> u64 {
        let f = File::open(path).expect("open");
        rustix::fs::seek(&f, rustix::fs::SeekFrom::Hole(from)).expect("SEEK_HOLE")
    }

    #[test]
    fn a_file_for_synced_writes_has_no_unwritten_space_before_its_payloads() {
        // An unwritten gap below the payloads costs an extent-tree block per flushed save on
        // ext4 (see `LogFile::create`): the first MiB must be written through.
        let dir = tempfile::tempdir().expect("tempdir");
        let mut f =
            LogFile::create(dir.path(), 1, 1, 0, None, false, Flavor::Synced).expect("create");
        f.flush().expect("flush");
        let hole = first_hole(f.path(), 0);
        assert!(
            hole >= PAYLOAD_START,
            "the first MiB of a file for synced writes has a hole at {hole}"
        );
        // An unsynced writer's file keeps its fallocated slot area (nothing is zeroed). Only
        // meaningful where the file system tells unwritten extents apart (ext4, xfs).
        let mut g =
            LogFile::create(dir.path(), 2, 1, 0, None, false, Flavor::Unsynced).expect("create");
        g.flush().expect("flush");
        let hole = first_hole(g.path(), 0);
        assert!(hole < PAYLOAD_START || hole >= g.len(), "hole at {hole}");
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
            let batch: Vec<Entry> = (next..(next + 64).min(SLOTS_PER_FILE + 1))
                .map(|i| {
                    let mut e = Entry::default();
                    e.index = i;
                    e.term = 1;
                    e.data = Bytes::from(vec![i as u8; 1024]);
                    e
                })
                .collect();
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
}
