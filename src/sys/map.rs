//! How the bytes of a log file are read: a shared read-only memory map and the immutable
//! `Bytes` views it hands out (the engine, which holds the directory lock), or copies made with
//! `pread` (the read-only tools, which run beside a live node and so never map). And the one
//! map written through: a meta page's (`wal.meta`, `engine.meta`: [`PageMap`]).
//!
//! Owns: every `unsafe` line of the crate (the maps and the views of them), all writes to a
//! mapped file, and the rule that makes zero-copy reads sound: bytes below the *frozen* mark of
//! the payload area never change once handed out. Writes below `PAYLOAD_START` (slots, header)
//! are never handed out; writes at or above it must land at or past the frozen mark. The map is
//! only read (it is mapped read-only): writes go through `pwritev` into the same page cache.
//! Must never: write to a frozen range, hand out a range that is not frozen, touch bytes past
//! the end of the file, or map a file from a process that does not hold the directory's lock.

use std::borrow::Cow;
use std::fs::File;
use std::io::{self, IoSlice};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Arc, Weak};

use parking_lot::Mutex;

use bytes::Bytes;
use memmap2::{MmapMut, MmapOptions, MmapRaw};

use crate::error::{Error, Result};

/// A read-write shared map of a meta page file (`wal.meta`, `engine.meta`: two fixed-size
/// copies, each written whole in turn). Its bytes are read and written only through `&self` /
/// `&mut self`, so never while a write is under way.
pub(crate) struct PageMap {
    map: MmapMut,
}

impl PageMap {
    /// Maps `file` (opened read-write) whole.
    pub(crate) fn new(file: &File, path: &Path) -> Result<PageMap> {
        // SAFETY: every byte of the mapping stays dereferenceable and is changed only through
        // it: the file is the store's own (this process holds the directory's lock; other
        // processes read meta pages with `read`, never a map, and never write them), and it is
        // never resized while mapped (a record that outgrows its copy is written to a new file
        // renamed over this one, which is then mapped anew: the old mapping keeps the old
        // inode). Writes go through `&mut self` only, so no reference to the bytes is live
        // meanwhile.
        let map = unsafe { MmapMut::map_mut(file) }.map_err(|e| Error::io("mmap", path, e))?;
        Ok(PageMap { map })
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        &self.map
    }

    /// Bytes `range` to write in place (durable after the file's next flush).
    pub(crate) fn bytes_mut(&mut self, range: std::ops::Range<usize>) -> &mut [u8] {
        &mut self.map[range]
    }
}

/// Keeps a mapping alive for as long as any `Bytes` view of it lives; the view covers the first
/// `len` bytes, all inside the file when the view was made.
struct MapOwner {
    map: Arc<MmapRaw>,
    len: usize,
}

impl AsRef<[u8]> for MapOwner {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: `[0, len)` lies inside the live mapping owned by the Arc (which outlives the
        // returned slice, borrowed from `self`) and inside the file, which no process shrinks
        // (raftwal never truncates a log file), so every byte is dereferenceable. The bytes do
        // not change while the slice is borrowed: only the process holding the directory's
        // lock maps or writes a log file (another `DiskStorage` is refused the lock; the
        // read-only tools copy with `pread` and never write), and in it every handed-out
        // `Bytes` derefs only to a sub-range below the frozen mark, which no write touches
        // again, while `FileMap::bytes` derefs the whole view only under `&FileMap`, which
        // excludes the writer (`&mut FileMap`). A file is reused (the spare) only once no
        // view of any of its mappings is left (`MapWatch`).
        unsafe { std::slice::from_raw_parts(self.map.as_ptr(), self.len) }
    }
}

/// A read-only shared map of a log file. The mapping may reserve address space past the end of
/// the file, so that the file can grow (by fallocate) without a new mapping; only `[0, len)`,
/// the file's length, is ever touched.
pub(crate) struct FileMap {
    raw: Arc<MmapRaw>,
    /// The file's length: the part of the mapping that may be touched.
    len: usize,
    /// A view of `[0, len)`.
    view: Bytes,
    /// Offsets in `[payload_start, frozen)` may be referenced by handed-out `Bytes`: never written.
    frozen: usize,
    payload_start: usize,
    /// Mappings this map replaced when the file outgrew them (views may still hold them).
    retired: Vec<Weak<MmapRaw>>,
    /// Faults in `[0, payload_start)` read only their own page ([`FileMap::read_head_randomly`]).
    random_head: bool,
}

/// Where [`FileMap::write`] puts bytes: `pwritev` on the mapped file's descriptor, into the
/// page cache the map shares.
#[derive(Clone, Copy)]
pub(crate) enum Sink<'a> {
    Fd(&'a File),
}

/// Watches whether any view of a [`FileMap`] outlives it (see [`FileMap::watch`]).
pub(crate) struct MapWatch(Vec<Weak<MmapRaw>>);

impl MapWatch {
    /// Some handed-out view still holds one of the watched mappings.
    pub(crate) fn in_use(&self) -> bool {
        self.0.iter().any(|w| w.strong_count() > 0)
    }
}

impl FileMap {
    /// Maps `file` (of length `len`) shared and read-only, reserving `max(len, reserve)` bytes
    /// of address space. `payload_start` is where the area whose bytes may be handed out
    /// begins; nothing is frozen yet.
    pub(crate) fn new(
        file: &File,
        path: &Path,
        len: usize,
        reserve: usize,
        payload_start: usize,
    ) -> Result<FileMap> {
        let mut opts = MmapOptions::new();
        opts.len(len.max(reserve));
        // Read-only: nothing is ever written through the map.
        let raw = opts
            .map_raw_read_only(file)
            .map_err(|e| Error::io("mmap", path, e))?;
        let raw = Arc::new(raw);
        let view = Bytes::from_owner(MapOwner {
            map: raw.clone(),
            len,
        });
        Ok(FileMap {
            raw,
            len,
            view,
            frozen: payload_start.min(len),
            payload_start,
            retired: Vec::new(),
            random_head: false,
        })
    }

    /// Tells the kernel that `[0, payload_start)` (the slots and the header) is read at random:
    /// a fault there then reads its own page, not the readahead window around it (128 KiB or
    /// more of mostly unwritten slots, and payloads). An engine group reads one or two slot
    /// pages after a cold open (the term of its last entry); with readahead each cost about
    /// 250 KiB read and resident (docs/PERFORMANCE.md, "Reopen from a cold cache"). Payloads
    /// keep the readahead: they are read in runs. Advice only: a refusal changes nothing.
    pub(crate) fn read_head_randomly(&mut self) {
        self.random_head = true;
        let head = self.payload_start.min(self.raw.len());
        let _ = self.raw.advise_range(memmap2::Advice::Random, 0, head);
    }

    /// Asks the kernel to read `[start, start + len)` of the file into the page cache, without
    /// waiting for it (`MADV_WILLNEED`): a later fault there finds the page. Only the file's
    /// `[0, len)` is asked for, never the address space reserved past it. Advice only: a
    /// refusal changes nothing.
    pub(crate) fn will_need(&self, start: usize, len: usize) {
        let len = len.min(self.len.saturating_sub(start));
        if len > 0 {
            let _ = self.raw.advise_range(memmap2::Advice::WillNeed, start, len);
        }
    }

    /// A watch on every mapping this map has made. Once the `FileMap` is dropped, the watch is
    /// [`MapWatch::in_use`] exactly while a handed-out view lives.
    pub(crate) fn watch(&self) -> MapWatch {
        let mut all = self.retired.clone();
        all.push(Arc::downgrade(&self.raw));
        MapWatch(all)
    }

    /// The file has grown to `len` bytes (already allocated). Within the reserved address space
    /// this only extends the view; past it the file is mapped anew. Views handed out keep their
    /// mapping alive; all map the same file pages, and frozen bytes stay frozen.
    pub(crate) fn grow(
        &mut self,
        file: &File,
        path: &Path,
        len: usize,
        reserve: usize,
    ) -> Result<()> {
        if len <= self.len {
            return Ok(());
        }
        if len <= self.raw.len() {
            self.len = len;
            self.view = Bytes::from_owner(MapOwner {
                map: self.raw.clone(),
                len,
            });
            return Ok(());
        }
        // The new mapping first: if it fails, `self` (and the mappings it watches) is unchanged.
        let mut new = FileMap::new(file, path, len, reserve, self.payload_start)?;
        new.frozen = self.frozen;
        new.retired = std::mem::take(&mut self.retired);
        new.retired.retain(|w| w.strong_count() > 0);
        new.retired.push(Arc::downgrade(&self.raw));
        if self.random_head {
            new.read_head_randomly();
        }
        *self = new;
        Ok(())
    }

    /// The file's length (the part of the mapping in use).
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// `[0, len)`, for reading (slots, checksums). Excludes writers by borrowing `self`.
    #[inline]
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.view
    }

    /// A zero-copy view of payload bytes `[start, end)`, or `None` unless the range lies in the
    /// frozen part of the payload area.
    #[inline]
    pub(crate) fn payload(&self, start: usize, end: usize) -> Option<Bytes> {
        if start < self.payload_start || start > end || end > self.frozen {
            return None;
        }
        Some(self.view.slice(start..end))
    }

    /// Where the frozen part of the payload area ends.
    pub(crate) fn frozen(&self) -> usize {
        self.frozen
    }

    /// Freezes payload bytes below `end` (they may be handed out from now on). Only ever grows,
    /// except through [`FileMap::set_frozen`] at open.
    pub(crate) fn freeze(&mut self, end: usize) {
        self.frozen = self.frozen.max(end.min(self.len()));
    }

    /// Sets the frozen mark outright. Only at open, before any view is handed out (recovery moves
    /// it back to the end of the last good payload, past which damaged bytes may be rewritten).
    pub(crate) fn set_frozen(&mut self, end: usize) {
        self.frozen = end.clamp(self.payload_start, self.len());
    }

    /// Checks that `[off, off + len)` may be written: inside the file, and either below the
    /// payload area or at or past the frozen mark.
    fn check_writable(&self, off: usize, len: usize, path: &Path) -> Result<()> {
        let end = off.checked_add(len);
        let inside = end.is_some_and(|e| e <= self.len);
        let below_payloads = end.is_some_and(|e| e <= self.payload_start);
        if inside && (below_payloads || off >= self.frozen) {
            return Ok(());
        }
        // Every write is planned by the file's own writer (at its payload end, or in the slot
        // area): one the map refuses is a bug, never damage on disk.
        Err(Error::invariant(format!(
            "refused write of {len} bytes at offset {off} of {}: file is {} bytes, payloads frozen below {}",
            path.display(),
            self.len,
            self.frozen
        )))
    }

    /// Writes `bufs`, back to back, at offset `off` of the mapped file, through `sink`.
    ///
    /// Bytes go in with `pwritev` into the page cache the map shares, never through the map: a
    /// write can then only fail with an error (no SIGBUS, whatever the disk does), and a synced
    /// save measured ~20% faster than dirtying the same pages through the map.
    pub(crate) fn write(
        &mut self,
        sink: Sink<'_>,
        off: usize,
        bufs: &mut [IoSlice<'_>],
        path: &Path,
    ) -> Result<()> {
        let len: usize = bufs.iter().map(|b| b.len()).sum();
        self.check_writable(off, len, path)?;
        let Sink::Fd(file) = sink;
        crate::sys::fsutil::pwritev_all(file, bufs, off as u64, path)
    }

    /// Sets `len` bytes from `off` to zero.
    pub(crate) fn zero(
        &mut self,
        sink: Sink<'_>,
        off: usize,
        len: usize,
        path: &Path,
    ) -> Result<()> {
        const ZEROES: [u8; 4096] = [0; 4096];
        let mut done = 0;
        while done < len {
            let n = (len - done).min(ZEROES.len());
            self.write(sink, off + done, &mut [IoSlice::new(&ZEROES[..n])], path)?;
            done += n;
        }
        Ok(())
    }
}

/// A log file read by copying (`pread`), never mapped: what the read-only tools use. The node
/// that owns the directory may rewrite bytes while they run (cut slots, a spare file reused),
/// and a copy is only ever a snapshot of them, never a view that changes under its reader.
pub(crate) struct FileCopy {
    file: File,
    /// The file's length when it was opened.
    len: usize,
    /// `[0, head.len())` of the file (the slot area and header), copied at open.
    head: Box<[u8]>,
    /// The first I/O error a read met: reads only say "no", the error that reports the failed
    /// read takes it from here.
    io_error: Mutex<Option<io::Error>>,
}

impl FileCopy {
    /// Copies the first `head_len` bytes of `file` (of length `len`, at least `head_len`).
    pub(crate) fn new(file: File, path: &Path, len: usize, head_len: usize) -> Result<FileCopy> {
        let mut head = vec![0u8; head_len.min(len)].into_boxed_slice();
        file.read_exact_at(&mut head, 0)
            .map_err(|e| Error::io("read", path, e))?;
        Ok(FileCopy {
            file,
            len,
            head,
            io_error: Mutex::new(None),
        })
    }

    /// A copy of `[start, end)`, or `None` if it is not inside the file or cannot be read.
    fn copy(&self, start: usize, end: usize) -> Option<Vec<u8>> {
        if start > end || end > self.len {
            return None;
        }
        let mut buf = vec![0u8; end - start];
        match self.file.read_exact_at(&mut buf, start as u64) {
            Ok(()) => Some(buf),
            Err(e) => {
                self.io_error.lock().get_or_insert(e);
                None
            }
        }
    }
}

/// The bytes of one log file: mapped (the engine) or copied (the read-only tools).
pub(crate) enum FileView {
    Mapped(FileMap),
    Copied(FileCopy),
}

impl FileView {
    /// The file's length.
    pub(crate) fn len(&self) -> usize {
        match self {
            FileView::Mapped(m) => m.len(),
            FileView::Copied(c) => c.len,
        }
    }

    /// The file's first bytes, up to its payload area (slots and header).
    #[inline]
    pub(crate) fn head(&self) -> &[u8] {
        match self {
            FileView::Mapped(m) => m.bytes(),
            FileView::Copied(c) => &c.head,
        }
    }

    /// Bytes `[at, at + buf.len())` of the file's head into `buf`, without touching the map:
    /// `pread` on `file` (the mapped file's descriptor), where a first touch of the map would
    /// fault its page in with the kernel's readahead around it (docs/PERFORMANCE.md, "Reopen
    /// from a cold cache"); a copy gives them from its head, read at open with the slots.
    pub(crate) fn read_head(&self, file: &File, at: usize, buf: &mut [u8]) -> io::Result<()> {
        match self {
            FileView::Mapped(_) => file.read_exact_at(buf, at as u64),
            FileView::Copied(c) => {
                let from = c.head.get(at..at + buf.len()).ok_or_else(|| {
                    io::Error::new(io::ErrorKind::UnexpectedEof, "past the copied head")
                })?;
                buf.copy_from_slice(from);
                Ok(())
            }
        }
    }

    /// `[start, end)` of the file, to read (checksums, lengths), or `None` if it is not inside
    /// the file (or, copied, cannot be read: see [`FileView::take_io_error`]).
    #[inline]
    pub(crate) fn read(&self, start: usize, end: usize) -> Option<Cow<'_, [u8]>> {
        match self {
            FileView::Mapped(m) => m.bytes().get(start..end).map(Cow::Borrowed),
            FileView::Copied(c) => c.copy(start, end).map(Cow::Owned),
        }
    }

    /// Payload bytes `[start, end)` to hand out: a zero-copy view of the frozen part of the map,
    /// or a copy.
    #[inline]
    pub(crate) fn payload(&self, start: usize, end: usize) -> Option<Bytes> {
        match self {
            FileView::Mapped(m) => m.payload(start, end),
            FileView::Copied(c) => c.copy(start, end).map(Bytes::from),
        }
    }

    /// The I/O error a copying read met, if any (taken: the next call says `None`).
    pub(crate) fn take_io_error(&self) -> Option<io::Error> {
        match self {
            FileView::Mapped(_) => None,
            FileView::Copied(c) => c.io_error.lock().take(),
        }
    }

    /// Where the frozen part of the payload area ends (a copy is all frozen).
    pub(crate) fn frozen(&self) -> usize {
        match self {
            FileView::Mapped(m) => m.frozen(),
            FileView::Copied(c) => c.len,
        }
    }

    /// The map, to write through its checks, or an error for a file the tools opened.
    pub(crate) fn writable(&mut self, path: &Path) -> Result<&mut FileMap> {
        match self {
            FileView::Mapped(m) => Ok(m),
            FileView::Copied(_) => Err(Error::io(
                "write",
                path,
                io::Error::new(io::ErrorKind::PermissionDenied, "opened read-only"),
            )),
        }
    }

    /// See [`FileMap::set_frozen`]; nothing to do for a copy.
    pub(crate) fn set_frozen(&mut self, end: usize) {
        if let FileView::Mapped(m) = self {
            m.set_frozen(end);
        }
    }

    /// See [`FileMap::will_need`]; a copy reads with `pread` when asked, so nothing to do.
    pub(crate) fn will_need(&self, start: usize, len: usize) {
        if let FileView::Mapped(m) = self {
            m.will_need(start, len);
        }
    }

    /// See [`FileMap::watch`]; a copy is watched by nothing.
    pub(crate) fn watch(&self) -> MapWatch {
        match self {
            FileView::Mapped(m) => m.watch(),
            FileView::Copied(_) => MapWatch(Vec::new()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAYLOAD_START: usize = 1 << 20;

    /// A new file `f` of `len` bytes in `dir`, open to read and write.
    fn sized_file(dir: &Path, len: usize) -> (std::path::PathBuf, File) {
        let path = dir.join("f");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .expect("create");
        file.set_len(len as u64).expect("set_len");
        (path, file)
    }

    /// Advice for ranges in the file, across its end, inside the reserved address space past
    /// it and far past the reservation (offsets near `usize::MAX` too): nothing panics and the
    /// file's bytes read back as they were.
    #[test]
    fn asking_for_pages_anywhere_never_panics_or_changes_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let len = 3 * 4096;
        let (path, file) = sized_file(dir.path(), len);
        file.write_all_at(&[7u8; 3 * 4096], 0).unwrap();
        // 64 KiB of address space reserved past a 12 KiB file.
        let map = FileMap::new(&file, &path, len, 64 << 10, 4096).unwrap();
        assert_eq!(map.len, len);
        for (start, n) in [
            (0, 4096),
            (8192, 8192),
            (len, 4096),
            (32 << 10, 4096),
            (1 << 40, 4096),
            (usize::MAX - 10, 4096),
        ] {
            map.will_need(start, n);
        }
        assert!(map.bytes().iter().all(|&b| b == 7));
        assert_eq!(map.bytes().len(), len);
    }

    /// Growth past the reserved address space maps the file anew. Views of the old mapping
    /// stay valid and unchanged, and the map's watch still sees them (the file must not be
    /// reused while they live); once they are dropped, nothing is watched.
    #[test]
    fn growth_past_the_reserve_remaps_and_old_views_stay_watched() {
        let dir = tempfile::tempdir().unwrap();
        let len = PAYLOAD_START + (64 << 10);
        let (path, file) = sized_file(dir.path(), len);
        // No address space reserved past the file: the next growth must remap.
        let mut map = FileMap::new(&file, &path, len, len, PAYLOAD_START).unwrap();
        map.write(
            Sink::Fd(&file),
            PAYLOAD_START,
            &mut [IoSlice::new(&[0xA5; 100])],
            &path,
        )
        .unwrap();
        map.freeze(PAYLOAD_START + 100);
        let old = map.payload(PAYLOAD_START, PAYLOAD_START + 100).unwrap();
        let first_mapping = Arc::downgrade(&map.raw);

        let grown = 4 * len;
        file.set_len(grown as u64).unwrap();
        map.grow(&file, &path, grown, grown).unwrap();
        assert_eq!(map.len(), grown);
        assert!(
            !Weak::ptr_eq(&first_mapping, &Arc::downgrade(&map.raw)),
            "growth past the reserve did not map the file anew"
        );
        // Bytes written after the remap land past the frozen mark; the old view is unchanged.
        let at = PAYLOAD_START + 100;
        map.write(
            Sink::Fd(&file),
            at,
            &mut [IoSlice::new(&[0x5A; 100])],
            &path,
        )
        .unwrap();
        map.freeze(at + 100);
        assert_eq!(&old[..], &[0xA5; 100][..]);
        assert_eq!(&map.payload(at, at + 100).unwrap()[..], &[0x5A; 100][..]);
        // A write into the frozen payloads is refused: a bug in its writer, not damage on disk.
        let refused = map
            .write(
                Sink::Fd(&file),
                PAYLOAD_START,
                &mut [IoSlice::new(&[1])],
                &path,
            )
            .unwrap_err();
        assert!(
            matches!(&refused, Error::Invariant(m) if m.contains("refused write")),
            "{refused:?}"
        );

        let watch = map.watch();
        drop(map);
        assert!(watch.in_use(), "a view of the retired mapping is alive");
        assert_eq!(&old[..], &[0xA5; 100][..], "the view outlives the map");
        drop(old);
        assert!(!watch.in_use(), "nothing holds a mapping any more");
    }

    /// The `VmFlags` of the mapping that contains address `at`, from `/proc/self/smaps`.
    fn vm_flags(at: usize) -> Vec<String> {
        let smaps = std::fs::read_to_string("/proc/self/smaps").expect("read smaps");
        let mut inside = false;
        for line in smaps.lines() {
            let range = line.split_whitespace().next().unwrap_or("");
            if let Some((a, b)) = range.split_once('-') {
                if let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
                {
                    inside = (a..b).contains(&at);
                    continue;
                }
            }
            if inside {
                if let Some(flags) = line.strip_prefix("VmFlags:") {
                    return flags.split_whitespace().map(str::to_string).collect();
                }
            }
        }
        panic!("no mapping holds {at:#x}");
    }

    /// An engine file's map reads its slot area at random (`rr`: no readahead around a fault)
    /// and its payloads in order, and keeps that when growth maps the file anew.
    #[test]
    fn the_slot_area_is_read_at_random_also_after_a_remap() {
        const HEAD: usize = 1 << 20;
        let dir = tempfile::tempdir().expect("tempdir");
        let len = 2 * HEAD;
        let (path, file) = sized_file(dir.path(), len);
        let mut map = FileMap::new(&file, &path, len, len, HEAD).expect("map");
        let base = map.raw.as_ptr() as usize;
        assert!(
            !vm_flags(base).contains(&"rr".to_string()),
            "before the advice"
        );
        map.read_head_randomly();
        for (at, random) in [(0, true), (HEAD - 1, true), (HEAD, false), (len - 1, false)] {
            let flags = vm_flags(map.raw.as_ptr() as usize + at);
            assert_eq!(
                flags.contains(&"rr".to_string()),
                random,
                "byte {at}: {flags:?}"
            );
        }
        // Past the reserve: a new mapping, advised the same.
        file.set_len(4 * len as u64).expect("grow");
        map.grow(&file, &path, 4 * len, 4 * len).expect("grow map");
        assert_ne!(map.raw.as_ptr() as usize, base, "a new mapping");
        for (at, random) in [(0, true), (HEAD - 1, true), (HEAD, false)] {
            let flags = vm_flags(map.raw.as_ptr() as usize + at);
            assert_eq!(
                flags.contains(&"rr".to_string()),
                random,
                "grown, byte {at}: {flags:?}"
            );
        }
    }
}
