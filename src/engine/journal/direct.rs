//! Journal appends with `O_DIRECT`: the record goes from one reused, page-aligned buffer to the
//! device, past the page cache. A synced commit then copies its bytes once, into memory this
//! process already holds, instead of into page-cache pages that must be allocated for it (and
//! later written back and freed), and its `fdatasync` finds no record pages to write (only a
//! new segment's header, written through the page cache at rotation).
//!
//! Records are packed back to back, so a record usually starts inside a page the one before it
//! ended in. A direct write covers whole pages: it starts at that page with the bytes already
//! written there (kept from the last write, the *carry*, or read back from the file) and ends
//! with the zeros to the end of its last page that every append writes anyway (module
//! `journal`). What reaches the file is byte for byte what a buffered append writes.
//!
//! Owns: the direct descriptor of the segment being written, the carry, the aligned buffer.
//! Must never: write anything a buffered append would not, or leave a record half written
//! without an error (a direct write that cannot be made reports so, and the journal writes the
//! record through the page cache instead).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// The alignment of a direct write's offset, length and memory: a page, which covers every
/// logical block size a Linux block device reports (512 to 4,096 bytes).
pub(crate) const ALIGN: usize = 4096;

/// The largest single direct write: a record larger than this is written in pieces of this
/// size, one after the other, so the buffer stays small whatever the commit.
const PIECE: usize = 8 << 20;

/// A page-aligned, reusable buffer (a `Vec` with room to start at an aligned address).
#[derive(Default)]
pub(crate) struct AlignedBuf {
    bytes: Vec<u8>,
}

impl AlignedBuf {
    /// `len` bytes starting at an aligned address (contents unspecified).
    pub(crate) fn get(&mut self, len: usize) -> &mut [u8] {
        if self.bytes.len() < len + ALIGN {
            self.bytes = vec![0; (len + ALIGN).next_multiple_of(ALIGN)];
        }
        // The address rounded up to the alignment (plain arithmetic on the address, which
        // `ALIGN` extra bytes always leave room for).
        let addr = self.bytes.as_ptr() as usize;
        let start = addr.next_multiple_of(ALIGN) - addr;
        &mut self.bytes[start..start + len]
    }
}

/// A descriptor of `path` for direct writes; `None` when its file system does not take them.
pub(crate) fn open_direct(path: &Path) -> Option<File> {
    use rustix::fs::{Mode, OFlags};
    rustix::fs::open(
        path,
        OFlags::WRONLY | OFlags::DIRECT | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ok()
    .map(File::from)
}

/// The direct descriptor of one segment and the carry of its last write.
pub(super) struct Direct {
    file: File,
    /// The bytes from the start of the page holding the write position up to it, as written
    /// (valid when `carry_at` is that page's offset).
    carry: Vec<u8>,
    carry_at: Option<u64>,
}

impl Direct {
    /// Opens `path` for direct writes; `None` when its file system does not take them.
    pub(super) fn open(path: &Path) -> Option<Direct> {
        Some(Direct {
            file: open_direct(path)?,
            carry: Vec::new(),
            carry_at: None,
        })
    }

    /// Writes `pieces` at `offset` followed by zeros to `end` (the end of the last page), through
    /// `buf`; the next record starts at `next` (the record's end, at most `end`). `reader` is a
    /// buffered descriptor of the same file, to read the carry when this writer does not hold
    /// it. `Ok(false)`: nothing written, `end` is not page-aligned (a segment of an odd size,
    /// as journals written before segments grew by whole pages may hold): write it through the
    /// page cache. An error: not known to be written; the caller writes it through the page
    /// cache, and stops writing directly.
    pub(super) fn write(
        &mut self,
        buf: &mut AlignedBuf,
        reader: &File,
        offset: u64,
        pieces: &[&[u8]],
        next: u64,
        end: u64,
    ) -> std::io::Result<bool> {
        if next < offset || next > end {
            self.carry_at = None;
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("a record from {offset} to {next} does not end by {end}"),
            ));
        }
        if !end.is_multiple_of(ALIGN as u64) {
            self.carry_at = None;
            return Ok(false);
        }
        let page = offset / ALIGN as u64 * ALIGN as u64;
        let head = (offset - page) as usize;
        let held = self.carry_at == Some(page) && self.carry.len() == head;
        // Invalid until this write is whole.
        self.carry_at = None;
        if !held {
            self.carry.resize(head, 0);
            reader.read_exact_at(&mut self.carry, page)?;
        }
        let total = (end - page) as usize;
        let mut source = Gather {
            parts: std::iter::once(&self.carry[..]).chain(pieces.iter().copied()),
            current: &[],
        };
        let mut done = 0;
        let mut out: &mut [u8] = &mut [];
        while done < total {
            let len = (total - done).min(PIECE);
            out = buf.get(len);
            let filled = source.fill(out);
            out[filled..].fill(0);
            let at = page + done as u64;
            let n = loop {
                match self.file.write_at(out, at) {
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    r => break r?,
                }
            };
            if n != len {
                // A direct write is not split by the page cache: a short one is an error here
                // rather than a loop over unaligned remainders.
                return Err(std::io::Error::new(
                    std::io::ErrorKind::WriteZero,
                    format!("a direct write of {len} bytes at {at} wrote {n}"),
                ));
            }
            done += len;
        }
        // The carry for the next record: from its page's start to where it begins, which lie in
        // the last piece written (pieces are whole pages and the last one ends at `end`).
        let next_page = next / ALIGN as u64 * ALIGN as u64;
        let last_at = page + (done - out.len()) as u64;
        let (from, to) = ((next_page - last_at) as usize, (next - last_at) as usize);
        self.carry.clear();
        self.carry.extend_from_slice(&out[from..to]);
        self.carry_at = Some(next_page);
        Ok(true)
    }
}

/// The bytes of several slices, back to back, handed out in order.
struct Gather<'a, I: Iterator<Item = &'a [u8]>> {
    parts: I,
    current: &'a [u8],
}

impl<'a, I: Iterator<Item = &'a [u8]>> Gather<'a, I> {
    /// Fills `out` from the front as far as the bytes go; returns how many it filled.
    fn fill(&mut self, out: &mut [u8]) -> usize {
        let mut at = 0;
        while at < out.len() {
            if self.current.is_empty() {
                match self.parts.next() {
                    Some(p) => self.current = p,
                    None => break,
                }
                continue;
            }
            let n = self.current.len().min(out.len() - at);
            out[at..at + n].copy_from_slice(&self.current[..n]);
            self.current = &self.current[n..];
            at += n;
        }
        at
    }
}
