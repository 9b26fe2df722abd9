//! A journal record's framing: how it is written and how it is read back and checked.
//!
//! Layout (little-endian; docs/FORMAT.md "Engine roots"):
//! ```text
//! record:  0 body length u32 | 4 CRC32C u32 (of [8, 16) and the body) | 8 sequence u64
//!          | 16 body (plain, or nonce ‖ AES-256-GCM ciphertext ‖ tag with the sequence as AAD)
//!          | zeros to the next multiple of 8
//! ```
//!
//! A segment is read either whole, in memory (the read-only tools), or from its file as the
//! records go (open). Open checks every record but keeps only the bodies of those after the
//! checkpoint: the others (after a clean close, every record of the segment) are streamed
//! through one reused buffer for their checksum, never held.
//!
//! Owns: the record's fields and checksum, what counts as the end of a segment's records and
//! what as a torn or bad record. Must never: hand out a body whose checksum was not checked, or
//! decide what a body means (module `batch`).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use bytes::Bytes;

use crate::error::{Error, Result};
use crate::sys::crypto::Cipher;
use crate::sys::le;

const R_LEN: usize = 0;
const R_CRC: usize = R_LEN + 4;
pub(crate) const R_SEQ: usize = R_CRC + 4;
/// Bytes of a record's header.
pub(crate) const RECORD_HEADER: usize = R_SEQ + 8;

/// Bytes a record of a `len`-byte (stored) body takes in its segment, padding included.
pub(crate) fn stored_len(len: usize) -> u64 {
    (RECORD_HEADER + len).next_multiple_of(8) as u64
}

/// The header of record `seq` whose stored body is the concatenation of `pieces`.
pub(crate) fn encode_header(seq: u64, pieces: &[&[u8]]) -> [u8; RECORD_HEADER] {
    let len: usize = pieces.iter().map(|p| p.len()).sum();
    let mut h = [0u8; RECORD_HEADER];
    h[R_LEN..R_LEN + 4].copy_from_slice(&(len as u32).to_le_bytes());
    h[R_SEQ..R_SEQ + 8].copy_from_slice(&seq.to_le_bytes());
    let crc = pieces.iter().fold(crc32c::crc32c(&h[R_SEQ..]), |c, p| {
        crc32c::crc32c_append(c, p)
    });
    h[R_CRC..R_CRC + 4].copy_from_slice(&crc.to_le_bytes());
    h
}

/// The sequence number field of the record header at the start of `h` (16 bytes or more).
pub(crate) fn header_seq(h: &[u8]) -> Option<u64> {
    (h.len() >= R_SEQ + 8).then(|| le::u64_at(h, R_SEQ))
}

/// The body length field of the record header at the start of `h` (16 bytes or more).
pub(crate) fn header_len(h: &[u8]) -> Option<usize> {
    (h.len() >= RECORD_HEADER).then(|| le::u32_at(h, R_LEN) as usize)
}

/// What reading at a position of a segment found.
pub(crate) enum Scan {
    /// The record `want`, its body, and where the next one starts. The body is empty when it
    /// was not asked for ([`Body::Check`]).
    Record { body: Bytes, next: usize },
    /// A clean end: zeroes, or a record from an earlier use of the file (another sequence
    /// number).
    End,
    /// A record with the expected sequence number that fails its checks: torn.
    Torn(Error),
    /// A whole record that cannot be opened (a wrong key, altered bytes), or the segment could
    /// not be read: never a torn write.
    Bad(Error),
}

/// Whether a record's body is handed out (its checksum is checked either way; only a kept
/// body of a sealed journal is opened, and so authenticated).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Body {
    Keep,
    /// Checked, not kept: for a record whose body is never used.
    Check,
}

/// Where a segment's bytes come from.
pub(crate) trait Source {
    /// Bytes `[start, end)`; `None` when they reach past the end of the segment.
    fn range(&mut self, start: usize, end: usize) -> Result<Option<Bytes>>;
    /// CRC32C of bytes `[start, end)` appended to `crc`; `None` when they reach past the end
    /// of the segment.
    fn crc(&mut self, start: usize, end: usize, crc: u32) -> Result<Option<u32>>;
}

/// A segment read whole.
impl Source for Bytes {
    fn range(&mut self, start: usize, end: usize) -> Result<Option<Bytes>> {
        Ok((start <= end && end <= self.len()).then(|| self.slice(start..end)))
    }

    fn crc(&mut self, start: usize, end: usize, crc: u32) -> Result<Option<u32>> {
        Ok(self.get(start..end).map(|b| crc32c::crc32c_append(crc, b)))
    }
}

/// A segment file, read as the records go, a window at a time.
pub(crate) struct SegmentFile<'a> {
    file: &'a File,
    path: &'a Path,
    len: usize,
    /// File bytes `[window_at, window_at + window.len())`.
    window: Bytes,
    window_at: usize,
    /// The buffer a body that is checked and not kept is streamed through.
    scratch: Vec<u8>,
}

/// Bytes read at least at a time: a window holds many small records (one read for them all)
/// while a large record's body is read alone, or not at all when skipped.
const WINDOW: usize = 64 << 10;
/// Bytes of the buffer a body that is checked and not kept is streamed through.
const SCRATCH: usize = 256 << 10;

impl<'a> SegmentFile<'a> {
    pub(crate) fn new(file: &'a File, path: &'a Path) -> Result<SegmentFile<'a>> {
        let len = file
            .metadata()
            .map_err(|e| Error::io("stat", path, e))?
            .len();
        Ok(SegmentFile {
            file,
            path,
            len: usize::try_from(len).unwrap_or(usize::MAX),
            window: Bytes::new(),
            window_at: 0,
            scratch: Vec::new(),
        })
    }
}

impl Source for SegmentFile<'_> {
    fn range(&mut self, start: usize, end: usize) -> Result<Option<Bytes>> {
        if start > end || end > self.len {
            return Ok(None);
        }
        let held = self.window_at..self.window_at + self.window.len();
        if start >= held.start && end <= held.end {
            return Ok(Some(
                self.window
                    .slice(start - self.window_at..end - self.window_at),
            ));
        }
        let n = (end - start).max(WINDOW).min(self.len - start);
        let mut buf = vec![0u8; n];
        self.file
            .read_exact_at(&mut buf, start as u64)
            .map_err(|e| Error::io("read", self.path, e))?;
        self.window = Bytes::from(buf);
        self.window_at = start;
        Ok(Some(self.window.slice(..end - start)))
    }

    fn crc(&mut self, start: usize, end: usize, mut crc: u32) -> Result<Option<u32>> {
        if start > end || end > self.len {
            return Ok(None);
        }
        let held = self.window_at..self.window_at + self.window.len();
        if start >= held.start && end <= held.end {
            let b = &self.window[start - self.window_at..end - self.window_at];
            return Ok(Some(crc32c::crc32c_append(crc, b)));
        }
        // Streamed through one buffer, kept for the next record: no fresh memory per record
        // (a fresh buffer costs a page fault per page, more than the read and the checksum).
        self.scratch.resize(SCRATCH, 0);
        let mut at = start;
        while at < end {
            let n = (end - at).min(SCRATCH);
            self.file
                .read_exact_at(&mut self.scratch[..n], at as u64)
                .map_err(|e| Error::io("read", self.path, e))?;
            crc = crc32c::crc32c_append(crc, &self.scratch[..n]);
            at += n;
        }
        Ok(Some(crc))
    }
}

/// Reads the record expected at `at` (sequence number `want`) from a segment.
pub(crate) fn read_record(
    src: &mut impl Source,
    at: usize,
    want: u64,
    cipher: Option<&Cipher>,
    path: &Path,
    body: Body,
) -> Scan {
    match read(src, at, want, cipher, path, body) {
        Ok(scan) => scan,
        Err(e) => Scan::Bad(e),
    }
}

/// [`read_record`] of a segment read whole, body read and checked (the tools).
pub(crate) fn read_in(
    segment: &Bytes,
    at: usize,
    want: u64,
    cipher: Option<&Cipher>,
    path: &Path,
) -> Scan {
    read_record(&mut segment.clone(), at, want, cipher, path, Body::Keep)
}

fn read(
    src: &mut impl Source,
    at: usize,
    want: u64,
    cipher: Option<&Cipher>,
    path: &Path,
    body: Body,
) -> Result<Scan> {
    let Some(h) = src.range(at, at + RECORD_HEADER)? else {
        return Ok(Scan::End);
    };
    let len = le::u32_at(&h, R_LEN) as usize;
    let crc = le::u32_at(&h, R_CRC);
    let seq = header_seq(&h).unwrap_or(0);
    let torn = |reason: String| Scan::Torn(Error::corrupt(path, at as u64, reason));
    let body_at = at + RECORD_HEADER;
    let next = (body_at + len).next_multiple_of(8);
    if seq != want {
        // The record `want` whose sequence number field alone is damaged: its length and
        // checksum hold for `want`. Anything else is the end (zeroes, or bytes of the segment's
        // previous life).
        let own = src.range(body_at, body_at + len)?.is_some_and(|stored| {
            crc32c::crc32c_append(crc32c::crc32c(&want.to_le_bytes()), &stored) == crc
        });
        if own {
            return Ok(torn(format!(
                "journal record {want}: its sequence number field reads {seq}"
            )));
        }
        return Ok(Scan::End);
    }
    // A kept body is read whole; a checked one only streamed through its checksum.
    let expected = crc32c::crc32c(&h[R_SEQ..]);
    let (computed, stored) = match body {
        Body::Check => (src.crc(body_at, body_at + len, expected)?, None),
        Body::Keep => match src.range(body_at, body_at + len)? {
            Some(b) => (Some(crc32c::crc32c_append(expected, &b)), Some(b)),
            None => (None, None),
        },
    };
    let Some(computed) = computed else {
        return Ok(torn(format!(
            "journal record {seq} claims {len} bytes, past the end of its segment"
        )));
    };
    if computed != crc {
        return Ok(torn(format!(
            "journal record {seq}: checksum mismatch (stored {crc:#010x}, computed {computed:#010x})"
        )));
    }
    let Some(stored) = stored else {
        return Ok(Scan::Record {
            body: Bytes::new(),
            next,
        });
    };
    let body = match cipher {
        Some(c) => match c.open(&seq.to_le_bytes(), &stored) {
            Some(plain) => Bytes::from(plain),
            // The key opened `engine.meta` before any record is read (open and the tools
            // alike): a record whose checksum holds and whose seal does not was altered.
            None => {
                return Err(Error::corrupt(
                    path,
                    at as u64,
                    format!(
                        "journal record {seq} fails authentication (its checksum holds: its sealed body was altered)"
                    ),
                ))
            }
        },
        None => stored,
    };
    Ok(Scan::Record { body, next })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A segment's bytes: `header` zero bytes, then records `first..` of the given body
    /// lengths, each padded to 8 bytes; then zeros.
    fn segment(header: usize, first: u64, lens: &[usize]) -> Vec<u8> {
        let mut b = vec![0u8; header];
        for (k, &len) in lens.iter().enumerate() {
            let seq = first + k as u64;
            let body: Vec<u8> = (0..len).map(|i| (i as u64 * 31 + seq) as u8).collect();
            b.extend_from_slice(&encode_header(seq, &[&body]));
            b.extend_from_slice(&body);
            b.resize(b.len().next_multiple_of(8), 0);
        }
        b.resize(b.len() + 4096, 0);
        b
    }

    /// Walks a segment from `header`: each record's outcome, with its body when kept.
    fn walk(src: &mut impl Source, header: usize, first: u64, body: Body) -> Vec<String> {
        let (mut at, mut want, mut out) = (header, first, Vec::new());
        loop {
            match read_record(src, at, want, None, Path::new("seg"), body) {
                Scan::Record { body, next } => {
                    out.push(format!("{want}@{at}: {}", body.len()));
                    at = next;
                    want += 1;
                }
                Scan::End => return out,
                Scan::Torn(e) => return [out, vec![format!("torn {e}")]].concat(),
                Scan::Bad(e) => return [out, vec![format!("bad {e}")]].concat(),
            }
        }
    }

    /// The file reader (windows, bodies larger than a window or the scratch buffer, bodies
    /// checked and not kept) finds what the whole segment in memory gives, whole and with a
    /// byte of any record damaged.
    #[test]
    fn the_file_reader_agrees_with_the_segment_read_whole() {
        let lens = [
            10,
            1,
            WINDOW - 40,
            WINDOW + 7,
            3,
            SCRATCH * 2 + 5,
            SCRATCH - 16,
            1,
            5000,
        ];
        let whole = segment(4096, 7, &lens);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seg");
        let mut damaged_at = vec![None];
        let mut at = 4096;
        for &len in &lens {
            // The header's length, its sequence number, the body's first and last bytes.
            damaged_at.extend(
                [
                    at,
                    at + R_SEQ,
                    at + RECORD_HEADER,
                    at + RECORD_HEADER + len - 1,
                ]
                .map(Some),
            );
            at += stored_len(len) as usize;
        }
        for damage in damaged_at {
            let mut b = whole.clone();
            if let Some(at) = damage {
                b[at] ^= 0x10;
            }
            std::fs::write(&path, &b).unwrap();
            let file = File::open(&path).unwrap();
            let want = walk(&mut Bytes::from(b.clone()), 4096, 7, Body::Keep);
            let kept = walk(
                &mut SegmentFile::new(&file, &path).unwrap(),
                4096,
                7,
                Body::Keep,
            );
            assert_eq!(kept, want, "damage at {damage:?}");
            let checked: Vec<String> = walk(
                &mut SegmentFile::new(&file, &path).unwrap(),
                4096,
                7,
                Body::Check,
            );
            let want_checked: Vec<String> = want
                .iter()
                .map(|s| match s.split_once(": ") {
                    Some((r, _)) if !s.starts_with("torn") && !s.starts_with("bad") => {
                        format!("{r}: 0")
                    }
                    _ => s.clone(),
                })
                .collect();
            assert_eq!(checked, want_checked, "damage at {damage:?}");
            if damage.is_none() {
                assert_eq!(want.len(), lens.len(), "{want:?}");
            } else {
                assert!(want.len() <= lens.len() + 1, "{want:?}");
            }
        }
    }
}
