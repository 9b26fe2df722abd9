//! Records lying past the journal's end: valid records with the sequence numbers that would
//! come next, found past where the last segment's records end. A power loss can keep the page
//! of a later record and lose an earlier one (none of them acknowledged); damage can zero an
//! acknowledged one. Either way they are what a default open drops: `AbsoluteConsistency`
//! refuses them after a crash (module `open`), and the tools report them (`engine::scan`).
//!
//! Owns: the search (every 8-byte aligned offset past the end, a cheap shape check before
//! each checksum). Must never: change a file, or take a recycled segment's earlier records
//! (lower sequence numbers) for lost ones.

use std::path::Path;

use bytes::Bytes;

use crate::engine::record::{self, Scan, RECORD_HEADER};
use crate::error::Error;
use crate::sys::crypto::Cipher;

/// Whether the body of a plain record header at `p` (record `seq`) holds parts that decode
/// back to back, each for an incarnation other than 0, as every record's does (the first
/// [`PARTS_CHECKED`] of them, the rest left to the checksum): a necessary check far cheaper
/// than the checksum over the body its length field names. Bytes of a segment's earlier life
/// that pass for a header (an entry's index where a sequence number would be, tens of MiB for
/// a length) once cost the tools seconds of checksums per scan of a recycled segment.
pub(crate) fn parts_decode(bytes: &Bytes, p: usize, seq: u64) -> bool {
    let body_at = p + RECORD_HEADER;
    let Some(len) = bytes.get(p..body_at).and_then(record::header_len) else {
        return false;
    };
    if body_at.saturating_add(len) > bytes.len() {
        return false;
    }
    let body = bytes.slice(body_at..body_at + len);
    // Every part names an incarnation the root gave out, never 0 (zeros decode as parts).
    crate::engine::batch::parts(&body, seq)
        .take(PARTS_CHECKED)
        .all(|part| part.is_ok_and(|p| p.incarnation != 0))
}

/// The parts of a would-be record [`parts_decode`] decodes at most.
const PARTS_CHECKED: usize = 64;

/// Looks past the end of the last segment's records (at `end`, where record `want` was
/// expected) for valid records with later sequence numbers: evidence that records were written
/// after the one that ends the journal there, which a default open would drop. Records are
/// 8-byte aligned, so every aligned offset is a candidate; a recycled segment's old records
/// have lower sequence numbers and never match.
pub(crate) fn lost_after_end(
    bytes: &Bytes,
    end: usize,
    want: u64,
    cipher: Option<&Cipher>,
    path: &Path,
    torn: Option<&Error>,
) -> Option<Error> {
    let seq_at = |p: usize| record::header_seq(bytes.get(p..p + RECORD_HEADER)?);
    let mut p = end.next_multiple_of(8);
    let found = loop {
        if p + RECORD_HEADER > bytes.len() {
            return None;
        }
        if let Some(seq) = seq_at(p).filter(|&s| s >= want && s - want < 1 << 32) {
            if cipher.is_some() || parts_decode(bytes, p, seq) {
                if let Scan::Record { next, .. } = record::read_in(bytes, p, seq, cipher, path) {
                    break (p, seq, next);
                }
            }
        }
        p += 8;
    };
    let (first_at, first_seq, mut next) = found;
    let mut last_seq = first_seq;
    while let Scan::Record { next: n, .. } =
        record::read_in(bytes, next, last_seq.saturating_add(1), cipher, path)
    {
        last_seq = last_seq.saturating_add(1);
        next = n;
    }
    let why = match torn {
        Some(Error::Corrupt { reason, .. }) => format!("record {want} fails its checks: {reason}"),
        Some(e) => format!("record {want} fails its checks: {e}"),
        None => format!("no record {want} follows record {}", want.saturating_sub(1)),
    };
    let records = if first_seq == last_seq {
        format!("record {first_seq}")
    } else {
        format!("records {first_seq}..={last_seq}")
    };
    Some(Error::corrupt(
        path,
        end as u64,
        format!(
            "the journal ends here ({why}), but {records} lie after it, from offset {first_at}: they were written later (with sync_writes, acknowledged), and a default open drops them"
        ),
    ))
}
