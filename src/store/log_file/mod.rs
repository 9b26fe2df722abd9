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
//!
//! This file owns the `LogFile` itself and its lifecycle: creating one (fresh or from a spare),
//! opening, closing, its descriptor and file name. The rest lives in one file per structure:
//! `slot` (the slot codec and its CRC32C), `header` (the file header codec), `read` (the read
//! path) and `write` (the write path and growth policy).

use std::fs::{File, OpenOptions};
use std::io::IoSlice;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU32;

use crate::error::{Error, Result};
use crate::sys::crypto::Cipher;
use crate::sys::fsutil;
use crate::sys::map::{FileCopy, FileMap, FileView, Sink};

mod header;
mod read;
mod slot;
mod write;

pub(crate) use header::{peek_base, peek_header, HeaderPeek, HEADER_OFFSET};
pub(crate) use read::last_slot_index;
use slot::SealBinding;
pub(crate) use slot::{SLOTS_PER_FILE, SLOT_SIZE};

use header::{decode_header, encode_header, seal_binding, HEADER_SIZE, LOG_FORMAT_VERSION};
pub(crate) use write::PastEnd;
use write::{
    ACTIVE_MAP_RESERVE, ENGINE_INITIAL_RESERVE, ENGINE_MAP_RESERVE, INITIAL_PAYLOAD_RESERVE,
    WRITEBACK_BYTES,
};

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
                None => Err(Error::invariant(format!(
                    "no descriptor for {} right after opening it",
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

/// Offset of the first payload byte: payloads start after the first MiB.
pub(crate) const PAYLOAD_START: u64 = 1 << 20;
/// Granularity of the writes that zero a new file's slot area.
const PAGE: usize = 4096;

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
    check_len(path, len)?;
    Ok((file, len))
}

/// A log file of `len` bytes is damaged if shorter than its slot area (and header): named at
/// its end, as open and the read-only tools name it.
pub(crate) fn check_len(path: &Path, len: u64) -> Result<()> {
    if len < PAYLOAD_START {
        return Err(Error::corrupt(
            path,
            len,
            format!("log file is {len} bytes, shorter than its {PAYLOAD_START}-byte slot area"),
        ));
    }
    Ok(())
}

/// Opens an existing log file read-write, for the moment a descriptor is needed.
fn open_rw(path: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| Error::io("open", path, e))
}

/// Payload space a new `DiskStorage` file reserves, given the previous file's payload bytes
/// (`hint`, 0 when there is none): the first file 4 MiB; a later one what the previous held,
/// with an eighth more as headroom below 4 MiB (sizes that vary a little then need no growth
/// step, each of which adds an extent), in whole MiB, at least 1 MiB and at most 1 GiB. A log
/// of small entries once reserved 4 MiB in every file (a 10 M-entry log of 16-byte payloads
/// took 1.6 GiB of disk for 0.5 GiB of data); it now takes what it holds, plus at most an
/// eighth or a MiB per file.
fn payload_reserve(hint: u64) -> u64 {
    let reserve = match hint {
        0 => INITIAL_PAYLOAD_RESERVE,
        h if h >= INITIAL_PAYLOAD_RESERVE => h,
        h => (h + h / 8).min(INITIAL_PAYLOAD_RESERVE),
    };
    reserve.clamp(1 << 20, 1 << 30).next_multiple_of(1 << 20)
}

/// Writes the header of a log file made new (created, or a spare taken in) at `path`: this
/// build's format version, its id and base, whether it is sealed and whether the file before it
/// was unflushed; not flushed.
fn write_new_header(
    file: &File,
    path: &Path,
    id: u64,
    base: u64,
    sealed: bool,
    prev_unflushed: bool,
) -> Result<()> {
    let h = encode_header(LOG_FORMAT_VERSION, id, base, sealed, prev_unflushed);
    file.write_all_at(&h, HEADER_OFFSET as u64)
        .map_err(|e| Error::io("write header", path, e))
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
    /// The header's format version: how this file's seals bind their slots (`seal_binding`),
    /// for every entry written to it; kept when the header is rewritten.
    version: u32,
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
    /// steady workload does not grow each new file step by step; 0 for the first file); see
    /// [`payload_reserve`].
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
                let reserve = payload_reserve(payload_hint);
                // Without room for the reserve, the first MiB is enough to start with:
                // `ensure_len` grows the file by what each save needs.
                fsutil::allocate_preferring(&file, &path, PAYLOAD_START + reserve, PAYLOAD_START)?;
            }
            if flavor == Flavor::Synced {
                zero_first_mib(&file, &path)?;
            }
            write_new_header(&file, &path, id, base, cipher.is_some(), prev_unflushed)
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
            write_new_header(&file, &path, id, base, cipher.is_some(), prev_unflushed)?;
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
        Ok(LogFile::open_keeping(path, id, access, cipher)?.0)
    }

    /// Opens the last file of an engine group at open ([`LogFile::open`], detached) and looks
    /// past the end of its log on the descriptor it was opened with, before that goes (read
    /// only: [`PastEnd`]). `slots(base)`, for the file's first index `base` as its header
    /// gives it: the first slot past the log, and the slot of the log's first index when this
    /// file holds it ([`LogFile::past_end`]).
    pub(crate) fn open_engine_tail(
        path: &Path,
        id: u64,
        cipher: Option<&Cipher>,
        slots: impl FnOnce(u64) -> (u32, Option<u32>),
    ) -> Result<(LogFile, PastEnd)> {
        let (f, fd) = LogFile::open_keeping(path, id, Access::Detached, cipher)?;
        let Some(fd) = fd else {
            return Err(Error::invariant(format!(
                "a detached open of {} returned no descriptor",
                path.display()
            )));
        };
        let (from, log_from) = slots(f.base);
        let past = f.past_end(&fd, from.min(SLOTS_PER_FILE as u32), log_from)?;
        Ok((f, past))
    }

    /// [`LogFile::open`], and the descriptor of an [`Access::Detached`] file, which the file does
    /// not keep (`None` for the other kinds: they keep theirs).
    fn open_keeping(
        path: &Path,
        id: u64,
        access: Access,
        cipher: Option<&Cipher>,
    ) -> Result<(LogFile, Option<File>)> {
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
            let mut map = FileMap::new(&file, path, len as usize, reserve, PAYLOAD_START as usize)?;
            if access == Access::Detached {
                // An engine has many groups, each reading a slot page or two at a time.
                map.read_head_randomly();
            }
            FileView::Mapped(map)
        };
        // Not through the map: a cold open read about 250 KiB per group for these 36 bytes.
        let mut h = [0u8; HEADER_SIZE];
        map.read_head(&file, HEADER_OFFSET, &mut h)
            .map_err(|e| Error::io("read header", path, e))?;
        let header = decode_header(path, &h, id, cipher.is_some())?;
        let (handle, detached) = if access == Access::Detached {
            // The map keeps the file reachable; the descriptor goes to the caller, who drops
            // it (engines cap them).
            (Handle::Detached(None), Some(file))
        } else {
            (Handle::Own(file), None)
        };
        let f = LogFile {
            path: path.to_path_buf(),
            id,
            base: header.base,
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
            prev_unflushed: header.prev_unflushed,
            version: header.version,
        };
        Ok((f, detached))
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
        let header = encode_header(
            self.version,
            self.id,
            self.base,
            self.cipher.is_some(),
            false,
        );
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

    /// How this file's sealed payloads are bound to their slots (its header's version).
    fn seal_binding(&self) -> SealBinding {
        seal_binding(self.version)
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

    #[test]
    fn a_later_file_reserves_what_the_previous_one_held() {
        const MIB: u64 = 1 << 20;
        assert_eq!(payload_reserve(0), 4 * MIB, "the first file");
        assert_eq!(
            payload_reserve(480_000),
            MIB,
            "16-byte payloads: 480 KB a file"
        );
        assert_eq!(payload_reserve(1_000_000), 2 * MIB, "an eighth of headroom");
        assert_eq!(
            payload_reserve(3_900_000),
            4 * MIB,
            "headroom stops at 4 MiB"
        );
        assert_eq!(
            payload_reserve(30_720_000),
            30 * MIB,
            "1 KiB payloads: as before"
        );
        assert_eq!(payload_reserve(5 << 30), 1 << 30, "at most 1 GiB");
    }

    #[test]
    fn a_log_of_small_entries_takes_the_disk_it_holds() {
        // Three files of 30,000 entries with 16-byte payloads (480 KB each): the second and
        // third take their slot area and about a MiB of payload space, not 4 MiB.
        let dir = tempfile::tempdir().expect("tempdir");
        let mut f =
            LogFile::create(dir.path(), 1, 1, 0, None, false, Flavor::Unsynced).expect("create");
        let mut scratch = Scratch::default();
        let mut ids = vec![];
        for id in 1..=3u64 {
            let base = (id - 1) * SLOTS_PER_FILE + 1;
            if id > 1 {
                let hint = f.payload_used();
                f = LogFile::create(dir.path(), id, base, hint, None, false, Flavor::Unsynced)
                    .expect("create");
            }
            let batch: Vec<raft::eraftpb::Entry> = (base..base + SLOTS_PER_FILE)
                .map(|i| {
                    let mut e = raft::eraftpb::Entry::default();
                    e.index = i;
                    e.term = 1;
                    e.data = vec![0x5a; 16].into();
                    e
                })
                .collect();
            f.write_entries(0, &batch, &mut scratch).expect("write");
            f.flush().expect("flush");
            ids.push(f.path().to_path_buf());
        }
        for path in &ids[1..] {
            let meta = std::fs::metadata(path).expect("metadata");
            assert!(
                meta.len() <= PAYLOAD_START + (1 << 20),
                "{}: {} bytes",
                path.display(),
                meta.len()
            );
        }
    }

    /// A file keeps its header's version, through a rewrite of its header too: a version-1
    /// file (made here by rewriting a new file's header, as an older build wrote it) and a new
    /// file (version 2). What is appended to either is sealed binding the data length, and its
    /// slots say so (`FLAG_BINDS_LEN`): the header, not authenticated, never decides how a new
    /// entry is sealed. Both read back, before and after a reopen.
    /// Engine files written at the same pace start their write-back at different rounds, each
    /// at points `WRITEBACK_BYTES` apart from an offset of its own (its phase). A checkpoint
    /// starts every file's write-back at once (`start_writeback_now`); each file must keep its
    /// phase after that, and after each step of its own. A checkpoint once restarted every
    /// file's count from where it stood, so that from the first checkpoint on every group
    /// became due in the same round, one step later and every step after: all their
    /// write-back at once, and a slow commit each time (docs/PERFORMANCE.md, "The write-back's
    /// phase, lost at each checkpoint").
    #[test]
    fn each_engine_file_keeps_its_write_back_phase_through_checkpoints() {
        use raft::eraftpb::Entry;
        let dir = tempfile::tempdir().expect("tempdir");
        let mut files: Vec<LogFile> = (0..8)
            .map(|g| {
                let d = dir.path().join(format!("group-{g}"));
                std::fs::create_dir(&d).expect("mkdir");
                LogFile::create(&d, 1, 1, 0, None, false, Flavor::Engine).expect("create")
            })
            .collect();
        let phase = |f: &LogFile| (f.writeback_at - PAYLOAD_START) % WRITEBACK_BYTES;
        let phases: Vec<u64> = files.iter().map(phase).collect();
        let mut distinct = phases.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert!(
            distinct.len() > 4,
            "the paths give the files different phases: {phases:?}"
        );
        let mut scratch = Scratch::default();
        let mut steps = 0;
        for index in 1..=300u64 {
            let mut e = Entry::default();
            (e.index, e.term) = (index, 1);
            e.data = vec![index as u8; 4000].into();
            for f in &mut files {
                f.write_entries((index - 1) as u32, std::slice::from_ref(&e), &mut scratch)
                    .expect("write");
                steps += u32::from(f.writeback_due() > 0);
                f.start_writeback();
            }
            if index % 70 == 0 {
                // A checkpoint.
                for f in &mut files {
                    f.start_writeback_now();
                }
            }
            for (g, (f, p)) in files.iter().zip(&phases).enumerate() {
                assert_eq!(phase(f), *p, "file {g} after entry {index}");
                assert!(
                    f.writeback_at > f.payload_end,
                    "file {g} after entry {index}"
                );
            }
        }
        assert!(steps >= 8 * 3, "every file took its own steps: {steps}");
    }

    #[test]
    fn a_file_keeps_its_version_and_every_new_seal_binds_the_data_length() {
        use raft::eraftpb::Entry;
        let dir = tempfile::tempdir().expect("tempdir");
        let cipher = Cipher::new(&[7; 32]);
        let entry = |index: u64| {
            let mut e = Entry::default();
            e.index = index;
            e.term = 2;
            e.data = vec![index as u8; 21].into();
            e.context = b"ctx".to_vec().into();
            e
        };
        let mut scratch = Scratch::default();
        for (id, version, binding) in [
            (1, 1, SealBinding::IndexTermType),
            (2, LOG_FORMAT_VERSION, SealBinding::WithDataLen),
        ] {
            let base = (id - 1) * SLOTS_PER_FILE + 1;
            let f = LogFile::create(
                dir.path(),
                id,
                base,
                0,
                Some(&cipher),
                true,
                Flavor::Unsynced,
            )
            .expect("create");
            let path = f.path().to_path_buf();
            drop(f);
            if version != LOG_FORMAT_VERSION {
                let h = encode_header(version, id, base, true, true);
                let file = open_rw(&path).expect("open");
                file.write_all_at(&h, HEADER_OFFSET as u64).expect("header");
            }
            let mut f = LogFile::open(&path, id, Access::Append, Some(&cipher)).expect("open");
            assert_eq!((f.version, f.seal_binding()), (version, binding));
            let written = vec![entry(base), entry(base + 1)];
            f.write_entries(0, &written, &mut scratch).expect("write");
            f.clear_prev_unflushed().expect("clear");
            f.flush().expect("flush");
            let end = f.payload_end;
            drop(f);
            let mut f = LogFile::open(&path, id, Access::Append, Some(&cipher)).expect("reopen");
            assert_eq!(f.version, version, "a rewritten header keeps its version");
            assert!(!f.prev_unflushed());
            f.set_recovered(0, end);
            let mut got = Vec::new();
            f.read_entries(0, 2, &mut got, |_| true).expect("read");
            assert_eq!(got, written);
            // The payload opens binding the data length, and only so, whatever the version.
            let c = f.check_slot(1).expect("slot");
            assert_ne!(c.slot.flags & slot::FLAG_BINDS_LEN, 0);
            let sealed = f
                .map
                .read(c.data_end as usize, c.payload_end as usize)
                .expect("payload");
            for b in [SealBinding::IndexTermType, SealBinding::WithDataLen] {
                let opened = cipher.open(slot::entry_aad(&c.slot, b).as_bytes(), &sealed);
                assert_eq!(
                    opened.is_some(),
                    b == SealBinding::WithDataLen,
                    "{version}: {b:?}"
                );
            }
        }
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
}
