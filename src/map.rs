//! A shared read-write memory map of one file, and the immutable `Bytes` views it hands out.
//!
//! Owns: every `unsafe` line of the engine's data path (mapping, and writing through the map), and
//! the rule that makes zero-copy reads sound: bytes below the *frozen* mark of the payload area
//! never change once handed out. Writes below `PAYLOAD_START` (slots, header) are never handed
//! out; writes at or above it must land at or past the frozen mark. Must never: write to a frozen
//! range, hand out a range that is not frozen, or touch bytes past the end of the file.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use memmap2::MmapRaw;

use crate::error::{Error, Result};

/// Keeps a mapping alive for as long as any `Bytes` view of it lives.
struct MapOwner(Arc<MmapRaw>);

impl AsRef<[u8]> for MapOwner {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: the pointer and length describe a live mapping owned by the Arc, which outlives
        // the returned slice (it borrows `self`). Every handed-out `Bytes` derefs only to a
        // sub-range below the frozen mark, which no write touches again; `FileMap::bytes` derefs
        // the whole mapping only under `&FileMap`, which excludes the writer (`&mut FileMap`).
        unsafe { std::slice::from_raw_parts(self.0.as_ptr(), self.0.len()) }
    }
}

/// A read-write shared map of a whole file.
pub(crate) struct FileMap {
    raw: Arc<MmapRaw>,
    view: Bytes,
    /// Offsets in `[payload_start, frozen)` may be referenced by handed-out `Bytes`: never written.
    frozen: usize,
    payload_start: usize,
}

impl FileMap {
    /// Maps all of `file` (its current length) read-write and shared. `payload_start` is where
    /// the area whose bytes may be handed out begins; nothing is frozen yet.
    pub(crate) fn new(file: &File, path: &Path, payload_start: usize) -> Result<FileMap> {
        let raw = MmapRaw::map_raw(file).map_err(|e| Error::io("mmap", path, e))?;
        let raw = Arc::new(raw);
        let view = Bytes::from_owner(MapOwner(raw.clone()));
        Ok(FileMap {
            raw,
            view,
            frozen: payload_start,
            payload_start,
        })
    }

    /// Replaces the mapping with one of the file's current (larger) length. Views handed out
    /// keep the old mapping alive; both map the same file pages, and frozen bytes stay frozen.
    pub(crate) fn remap(&mut self, file: &File, path: &Path) -> Result<()> {
        let frozen = self.frozen;
        *self = FileMap::new(file, path, self.payload_start)?;
        self.frozen = frozen;
        Ok(())
    }

    pub(crate) fn len(&self) -> usize {
        self.raw.len()
    }

    /// The whole mapping, for reading (slots, checksums). Excludes writers by borrowing `self`.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.view
    }

    /// A zero-copy view of payload bytes `[start, end)`, or `None` unless the range lies in the
    /// frozen part of the payload area.
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

    /// Checks that `[off, off + len)` may be written: inside the map, and either below the payload
    /// area or at or past the frozen mark.
    fn check_writable(&self, off: usize, len: usize, path: &Path) -> Result<()> {
        let end = off.checked_add(len);
        let inside = end.is_some_and(|e| e <= self.len());
        let below_payloads = end.is_some_and(|e| e <= self.payload_start);
        if inside && (below_payloads || off >= self.frozen) {
            return Ok(());
        }
        Err(Error::corrupt(
            path,
            off as u64,
            format!(
                "refused write of {len} bytes: map is {} bytes, payloads frozen below {}",
                self.len(),
                self.frozen
            ),
        ))
    }

    /// Copies `src` to offset `off`.
    pub(crate) fn write(&mut self, off: usize, src: &[u8], path: &Path) -> Result<()> {
        self.check_writable(off, src.len(), path)?;
        // SAFETY: `[off, off + len)` lies inside the live mapping (checked), and is either in the
        // slot/header area, which is never handed out, or at or past the frozen mark, which no
        // handed-out view reaches. `&mut self` excludes every reference from `bytes()`. `src` is
        // a separate buffer (never the map), so the ranges do not overlap.
        unsafe {
            std::ptr::copy_nonoverlapping(src.as_ptr(), self.raw.as_mut_ptr().add(off), src.len());
        }
        Ok(())
    }

    /// Sets `len` bytes from `off` to zero.
    pub(crate) fn zero(&mut self, off: usize, len: usize, path: &Path) -> Result<()> {
        self.check_writable(off, len, path)?;
        // SAFETY: as in `write`: inside the mapping, never in a handed-out range, and `&mut self`
        // excludes readers of the whole mapping.
        unsafe {
            std::ptr::write_bytes(self.raw.as_mut_ptr().add(off), 0, len);
        }
        Ok(())
    }
}
