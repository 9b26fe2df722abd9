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

/// [`lost_after_end`] on segment `path` as it is on disk (read whole), for the end of its
/// records at `end`, where record `want` was expected, and no torn record there.
pub(crate) fn lost_in_segment(
    path: &Path,
    end: u64,
    want: u64,
    cipher: Option<&Cipher>,
) -> crate::error::Result<Option<Error>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io("read", path, e))?;
    Ok(lost_after_end(
        &bytes.into(),
        end as usize,
        want,
        cipher,
        path,
        None,
    ))
}

/// Bytes a record takes at least: its header and a body of one byte, padded to 8.
const MIN_RECORD: u64 = (RECORD_HEADER as u64 + 1).next_multiple_of(8);

/// Looks past the end of the last segment's records (at `end`, where record `want` was
/// expected) for valid records with later sequence numbers: evidence that records were written
/// after the one that ends the journal there, which a default open would drop. Records are
/// 8-byte aligned, so every aligned offset is a candidate; a recycled segment's old records
/// have lower sequence numbers and never match. A candidate numbered `s` at `p` counts only
/// if the records before it that are not there (`want` to `s - 1`) could have filled the bytes
/// from `end` to `p`: a record `s` far ahead of the space before it is not this journal's
/// (record-shaped bytes an application stored as entry data, in a recycled segment: their
/// checksum covers only their own sequence number and body).
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
        let room = (p - end) as u64;
        if let Some(seq) =
            seq_at(p).filter(|&s| s > want && (s - want).saturating_mul(MIN_RECORD) <= room)
        {
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

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use raft::prelude::{Entry, HardState, Snapshot};

    use super::lost_after_end;
    use crate::engine::journal::SEGMENT_HEADER;
    use crate::engine::record::{self, RECORD_HEADER};
    use crate::Engine;

    /// A segment holding two records of group 1 (three entries of 100 bytes each), its bytes.
    fn two_records() -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let e = Engine::open(dir.path()).unwrap();
        let g = e.create_group(1, 1).unwrap();
        for first in [1u64, 4] {
            let mut hs = HardState::default();
            (hs.term, hs.commit) = (1, first + 2);
            let entries: Vec<Entry> = (first..first + 3)
                .map(|i| {
                    let mut en = Entry::default();
                    (en.index, en.term, en.data) = (i, 1, vec![i as u8; 100].into());
                    en
                })
                .collect();
            g.save(&hs, &entries, &Snapshot::default()).unwrap();
        }
        let mut segments: Vec<_> = std::fs::read_dir(dir.path().join("journal"))
            .unwrap()
            .map(|d| d.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "jnl"))
            .collect();
        segments.sort();
        std::fs::read(&segments[0]).unwrap()
    }

    /// The first record zeroed: the second, right after it, is a record lost past the end.
    /// Renumbered far ahead (its checksum made again, as bytes an application stored could
    /// carry), it no longer is: the records before it could not have filled the space.
    #[test]
    fn a_record_counts_as_lost_only_if_the_missing_ones_fit_before_it() {
        let bytes = two_records();
        let at = SEGMENT_HEADER as usize;
        let seq = u64::from_le_bytes(bytes[at + 8..at + 16].try_into().unwrap());
        let len = record::header_len(&bytes[at..]).unwrap();
        let second = at + record::stored_len(len) as usize;
        let mut zeroed = bytes.clone();
        zeroed[at..second].fill(0);
        let path = std::path::Path::new("segment");
        let found = lost_after_end(&Bytes::from(zeroed.clone()), at, seq, None, path, None);
        assert!(found.is_some(), "the second record, after the zeroed first");

        for ahead in [100u64, 1_000, 1 << 31] {
            let mut forged = zeroed.clone();
            let len2 = record::header_len(&forged[second..]).unwrap();
            let body = forged[second + RECORD_HEADER..second + RECORD_HEADER + len2].to_vec();
            let h = record::encode_header(seq + ahead, &[&body]);
            forged[second..second + RECORD_HEADER].copy_from_slice(&h);
            let found = lost_after_end(&Bytes::from(forged), at, seq, None, path, None);
            assert!(
                found.is_none(),
                "record {} ahead of the space: {found:?}",
                seq + ahead
            );
        }
    }
}
