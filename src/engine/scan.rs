//! A read-only scan of an engine root's journal, for the operator tools (`raftwal inspect`,
//! `verify`, `dump`, `snapshot save` on an engine root): what `Journal::open` would read, found
//! the same way (segment headers, record framing and checksums through `journal`'s own decoding,
//! the same continuity rules after the checkpoint), without its write side.
//!
//! Owns: the description of the journal as open would find it (live and obsolete segments, the
//! records after the checkpoint, where the journal ends and why) and one thing open does not
//! look for: valid records lying after the end of the last segment (a damaged record followed by
//! records that were written after it, or the next record starting a file after it whose header
//! reads as zeros), which a default open would drop. Must never: create,
//! remove, rename, write or map a file (segments are read with `read`, into memory, one at a
//! time), or take the root's lock; damage is described, never repaired.

use std::fs;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::journal::{self, lost_after_end, Follow, Header, SEGMENT_HEADER};
use super::record::{self, Scan};
use super::segments;
use crate::error::{Error, Result};
use crate::sys::crypto::Cipher;

pub(crate) use super::batch::{parts_at, Decoded as Part};
pub(crate) use super::group::JournalPos;
pub(crate) use super::journal::page_past_end;
pub(crate) use super::recovery::{
    any_group_dir, check_fallback_snapshot_files, check_group_numbers, check_incarnation,
    check_meta_fallback, check_root_numbers, next_incarnation_in_use, parse_group_name,
};
pub(crate) use super::{group_dir, GROUPS_DIR, JOURNAL_DIR};

/// One segment file of the journal, as the scan found it.
#[derive(Clone, Debug)]
pub(crate) struct SegmentScan {
    pub id: u64,
    pub path: PathBuf,
    pub len: u64,
    /// The first sequence number its header names; `None` when it has no header (prepared,
    /// never written: open removes it).
    pub first_seq: Option<u64>,
    /// Records at or below the checkpoint only: open removes it without reading it.
    pub obsolete: bool,
    /// Records read from it (checkpointed ones included).
    pub records: u64,
    /// Sequence number of the last record read from it.
    pub last_seq: Option<u64>,
    /// Where its records end (the offset of the first byte after the last record read).
    pub end: u64,
    /// A torn record at `end` that the next segment starts at: a cut an earlier open made
    /// (`Journal::seal_cut`), the end of this segment in both modes, not damage. What the
    /// record fails.
    pub cut: Option<String>,
    /// Its header says it was started while records before it were not flushed.
    pub prev_unflushed: bool,
    /// It lies after a torn end (records missing before it, or before a segment before it,
    /// that was started unflushed): open removes it, with its records.
    pub after_end: bool,
    /// Its header is all zeros (a recycled header is not).
    pub blank: bool,
}

/// A record after the checkpoint, handed to the scan's caller in sequence order.
pub(crate) struct RecordAt<'a> {
    pub seq: u64,
    pub path: &'a Path,
    /// Offset of the record's header in its segment.
    pub offset: u64,
    /// The body, opened (decrypted) when the engine is encrypted.
    pub body: Bytes,
}

/// The journal as open would find it.
#[derive(Debug, Default)]
pub(crate) struct JournalScan {
    pub dir: PathBuf,
    /// Segment files in id order, obsolete ones included.
    pub segments: Vec<SegmentScan>,
    /// The recycled segments (`spare-<id>.jnl`) and their lengths.
    pub spares: Vec<(PathBuf, u64)>,
    /// One past the last record read (the sequence number the engine's next record gets).
    pub next_seq: u64,
    /// Records read after the checkpoint, and the bytes they take.
    pub records_after_checkpoint: u64,
    pub bytes_after_checkpoint: u64,
    /// Records read in all (checkpointed ones in live segments included).
    pub records_read: u64,
    pub bytes_read: u64,
    /// A record with the next sequence number at the end of the last segment that fails its
    /// checks, with nothing valid after it: a write torn by a crash (or in flight), which open
    /// cuts by default.
    pub torn: Option<Error>,
    /// Valid records lying after the end of the last segment: a default open ends the journal
    /// before them and drops them.
    pub lost: Option<Error>,
    /// What makes open fail (the scan stops there).
    pub damage: Option<Error>,
}

/// Reads the journal in `dir` as `Journal::open` would after checkpoint `checkpoint_seq` (with
/// `begun`, `engine.meta`'s word that the journal has held a segment), calling `on_record` with every record after the checkpoint, in order. Damage that open
/// refuses ends the scan and is returned in [`JournalScan::damage`] (with what was read before
/// it), as is an error `on_record` returns; I/O errors, a key that does not fit and a newer
/// format are errors.
pub(crate) fn scan(
    dir: &Path,
    (checkpoint_seq, begun): (u64, bool),
    cipher: Option<&Cipher>,
    on_record: &mut dyn FnMut(RecordAt<'_>) -> Result<()>,
) -> Result<JournalScan> {
    let mut out = JournalScan {
        dir: dir.to_path_buf(),
        next_seq: checkpoint_seq.saturating_add(1),
        ..JournalScan::default()
    };
    let listing = match fs::read_dir(dir) {
        Ok(l) => l,
        // A root whose journal was never made (open makes it), unless `engine.meta` says it
        // was.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            out.damage = journal::segments_missing(dir, checkpoint_seq, begun, None);
            return Ok(out);
        }
        Err(e) => return Err(Error::io("read directory", dir, e)),
    };
    let mut ids = Vec::new();
    for ent in listing {
        let ent = ent.map_err(|e| Error::io("read directory", dir, e))?;
        let Some(name) = ent.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if let Some(id) = journal::parse_segment_name(&name) {
            ids.push(id);
        } else if segments::is_spare_name(&name) {
            let len = ent.metadata().map_or(0, |m| m.len());
            out.spares.push((ent.path(), len));
        }
    }
    ids.sort_unstable();
    out.spares.sort();

    // Headers first, as open reads them. Each segment is read through the descriptor opened
    // here from then on: a live engine's checkpoint may retire a segment while this scan runs.
    // Renamed to a spare, the descriptor keeps reading the bytes the listing named; renamed to
    // `<id>.jnl.tmp` and shrunk (module `release`), it reads short: an I/O error, for which
    // the tools read a root marked open again (`tools::inspect::engine::retry`).
    let mut opened = Vec::with_capacity(ids.len());
    for &id in &ids {
        let path = dir.join(format!("{id:016}.jnl"));
        let file = fs::File::open(&path).map_err(|e| Error::io("open", &path, e))?;
        let len = file
            .metadata()
            .map_err(|e| Error::io("stat", &path, e))?
            .len();
        let header = match journal::read_header_of(&file, &path, id, cipher.is_some()) {
            Ok(h) => h,
            Err(e @ (Error::Corrupt { .. } | Error::MissingFile { .. })) => {
                out.damage = Some(e);
                return Ok(out);
            }
            Err(e) => return Err(e),
        };
        // As open decides (module `journal`): a blank header, or a recycled segment's old one,
        // marks a file that holds no record after the checkpoint.
        let blank = matches!(header, Header::Blank);
        let (first_seq, prev_unflushed) = match header {
            Header::Valid {
                first_seq,
                prev_unflushed,
            } => (Some(first_seq), prev_unflushed),
            Header::Blank => (None, false),
            Header::Recycled {
                id: other,
                first_seq,
            } if other > id || first_seq <= checkpoint_seq => (None, false),
            Header::Recycled { id: other, .. } => {
                out.damage = Some(Error::corrupt(
                    &path,
                    journal::H_ID as u64,
                    format!(
                        "header names segment {other}, whose records are not all checkpointed; the file name says {id}"
                    ),
                ));
                return Ok(out);
            }
        };
        opened.push(file);
        out.segments.push(SegmentScan {
            id,
            path,
            len,
            first_seq,
            obsolete: false,
            records: 0,
            last_seq: None,
            end: SEGMENT_HEADER,
            cut: None,
            prev_unflushed,
            after_end: false,
            blank,
        });
    }
    // Segments whose records all lie at or below the checkpoint are obsolete (as open decides,
    // among the segments with a header).
    let with_header: Vec<usize> = (0..out.segments.len())
        .filter(|&i| out.segments[i].first_seq.is_some())
        .collect();
    // No file named like a segment, or none with a header of its own: as open decides.
    if let Some(e) = journal::segments_missing(
        dir,
        checkpoint_seq,
        begun,
        Some((with_header.len(), ids.len())),
    ) {
        out.damage = Some(e);
        return Ok(out);
    }
    let keep_from = with_header
        .windows(2)
        .position(|w| out.segments[w[1]].first_seq > Some(checkpoint_seq.saturating_add(1)))
        .unwrap_or(with_header.len().saturating_sub(1));
    for &i in &with_header[..keep_from] {
        out.segments[i].obsolete = true;
    }

    let live: Vec<usize> = with_header[keep_from..].to_vec();
    let mut expected = None::<u64>;
    for (n, &i) in live.iter().enumerate() {
        let last = n + 1 == live.len();
        let (path, first_seq, prev_unflushed) = {
            let s = &out.segments[i];
            (s.path.clone(), s.first_seq.unwrap_or(0), s.prev_unflushed)
        };
        if let Some(want) = expected {
            if journal::follows(want, first_seq, prev_unflushed, checkpoint_seq)
                == Follow::AfterTornEnd
            {
                // A torn end (as open decides): this segment and the ones after it go, with
                // their records (never acknowledged; valid ones are reported as lost).
                for &j in &live[n..] {
                    out.segments[j].after_end = true;
                }
                let end = journal::torn_end(&path, want, first_seq);
                out.lost =
                    records_after_end(&out.segments, &opened, &live[n..], want, cipher, &end)?;
                if out.lost.is_none() && out.torn.is_none() {
                    out.torn = Some(end);
                } else if out.lost.is_some() {
                    out.torn = None;
                }
                break;
            }
        }
        let e = expected.unwrap_or(checkpoint_seq.saturating_add(1));
        let skipped_only_checkpointed =
            first_seq > e && first_seq <= checkpoint_seq.saturating_add(1);
        if first_seq != e && !skipped_only_checkpointed && (expected.is_some() || first_seq > e) {
            // A segment between this one and the one before it whose header reads as never
            // written (as open names it).
            let blank = n
                .checked_sub(1)
                .and_then(|p| (live[p] + 1..i).find(|&j| out.segments[j].blank));
            if let (Some(j), true) = (blank, expected.is_some()) {
                out.damage = Some(journal::blank_between(&out.segments[j].path, e, first_seq));
                return Ok(out);
            }
            out.damage = Some(Error::corrupt(
                &path,
                journal::H_FIRST_SEQ as u64,
                format!(
                    "journal segment starts at record {first_seq}, but record {e} is the next one after the checkpoint or the segment before: records are missing"
                ),
            ));
            return Ok(out);
        }
        let bytes = read_whole(&opened[i], &out.segments[i])?;
        let mut at = SEGMENT_HEADER as usize;
        let mut want = first_seq;
        let ended = loop {
            // As open reads it: a record the checkpoint covers is checked, its seal unopened.
            let body = if want > checkpoint_seq {
                record::Body::Keep
            } else {
                record::Body::Check
            };
            match record::read_record(&mut bytes.clone(), at, want, cipher, &path, body) {
                Scan::Record { body, next } => {
                    let stored = (next - at) as u64;
                    let seg = &mut out.segments[i];
                    seg.records += 1;
                    seg.last_seq = Some(want);
                    seg.end = next as u64;
                    out.records_read += 1;
                    out.bytes_read += stored;
                    if want > checkpoint_seq {
                        out.records_after_checkpoint += 1;
                        out.bytes_after_checkpoint += stored;
                        let r = on_record(RecordAt {
                            seq: want,
                            path: &path,
                            offset: at as u64,
                            body,
                        });
                        if let Err(e) = r {
                            return match e {
                                Error::Io { .. } | Error::Encryption { .. } => Err(e),
                                e => {
                                    out.next_seq = want.saturating_add(1);
                                    out.damage = Some(e);
                                    Ok(out)
                                }
                            };
                        }
                    }
                    want = want.saturating_add(1);
                    at = next;
                }
                Scan::End => break None,
                Scan::Torn(e) => break Some(e),
                Scan::Bad(e) => return Err(e),
            }
        };
        out.next_seq = want.max(checkpoint_seq.saturating_add(1));
        match ended {
            // Damage in a record the checkpoint covers: what follows it cannot be read.
            Some(e) if want <= checkpoint_seq => {
                out.damage = Some(e);
                return Ok(out);
            }
            // A record that fails its checks before the last segment, where the next segment
            // starts: a cut an earlier open made; or before a torn end (as open decides).
            Some(e) if !last => {
                let next = &out.segments[live[n + 1]];
                let next_first = next.first_seq.unwrap_or(0);
                match journal::follows(want, next_first, next.prev_unflushed, checkpoint_seq) {
                    Follow::Continues => out.segments[i].cut = Some(e.to_string()),
                    Follow::AfterTornEnd => out.torn = Some(e),
                    Follow::Damaged => {
                        out.damage = Some(e);
                        return Ok(out);
                    }
                }
            }
            Some(e) => out.torn = Some(e),
            // The last segment's records end at or below the checkpoint (as open decides).
            None if last && want <= checkpoint_seq => {
                out.damage = Some(journal::ends_below_checkpoint(
                    &path,
                    at as u64,
                    want,
                    checkpoint_seq,
                ));
                return Ok(out);
            }
            None => {}
        }
        if last {
            out.lost = lost_after_end(&bytes, at, want, cipher, &path, out.torn.as_ref());
            if out.lost.is_some() {
                // Not a torn tail: damage that later records follow (the loss names it).
                out.torn = None;
            }
        }
        expected = Some(want);
    }
    if out.damage.is_none() && out.lost.is_none() && !out.segments.iter().any(|s| s.after_end) {
        let after = live.last().map_or(0, |&i| i + 1);
        let want = expected.unwrap_or(checkpoint_seq.saturating_add(1));
        out.lost = next_record_in_blank_file(&out.segments, &opened, after, want, cipher)?;
        if out.lost.is_some() {
            // Not a torn tail: the records went on in the next file (the loss names it).
            out.torn = None;
        }
    }
    Ok(out)
}

/// A file among `segments[after..]` (read through `files`) whose header reads as never
/// written and whose first record is `want`, the one the journal would go on with: an error
/// naming it (its header damaged, or not flushed with the record), as the strict open after a
/// crash refuses it and a default open removes it with its records. Beside a live engine such
/// a file may be the segment being started: the engine writes a segment's header before its
/// first record, so the header, read again after the record was seen, is no longer all zeros
/// then.
fn next_record_in_blank_file(
    segments: &[SegmentScan],
    files: &[fs::File],
    after: usize,
    want: u64,
    cipher: Option<&Cipher>,
) -> Result<Option<Error>> {
    for (s, file) in segments.iter().zip(files).skip(after) {
        if !s.blank || !journal::blank_starts_with(file, &s.path, want, cipher)? {
            continue;
        }
        if matches!(
            journal::read_header_of(file, &s.path, s.id, cipher.is_some()),
            Ok(Header::Blank)
        ) {
            return Ok(Some(journal::blank_holding(&s.path, want)));
        }
    }
    Ok(None)
}

impl JournalScan {
    /// The segment ids the journal's directory lists now, ascending; `None` when it cannot be
    /// listed.
    fn listing_now(&self) -> Option<Vec<u64>> {
        let mut ids = Vec::new();
        for ent in fs::read_dir(&self.dir).ok()? {
            if let Some(id) = ent
                .ok()?
                .file_name()
                .to_str()
                .and_then(journal::parse_segment_name)
            {
                ids.push(id);
            }
        }
        ids.sort_unstable();
        Some(ids)
    }

    /// Whether this scan read every record from its start to the journal's end as it was
    /// when the scan began: no damage, no records lost or left after a torn end, and every
    /// segment it read still listed (a live engine's checkpoint retires a segment by renaming
    /// it to a spare and zeroing its first pages, which a scan reading it meanwhile can meet
    /// as the journal's end). Segments started since hold only records written after it began.
    pub(crate) fn read_whole_journal(&self) -> bool {
        if self.damage.is_some() || self.lost.is_some() || self.segments.iter().any(|s| s.after_end)
        {
            return false;
        }
        self.listing_now().is_some_and(|ids| {
            self.segments
                .iter()
                .all(|s| ids.binary_search(&s.id).is_ok())
        })
    }

    /// Whether the journal has moved on since this scan: a segment file started or retired
    /// since (the listing no longer names the segments scanned), or a whole record with the
    /// next sequence number now lying where the records ended (in the last segment with a
    /// header, or at the start of a prepared one after it). A record met torn there, as a
    /// killed engine leaves its tail, is not one: its writer never finished it, so nothing the
    /// engine did after it can be on disk. A listing or read that fails counts as moved on.
    /// Costs one directory listing and a record's read; for a live engine's readers, who read
    /// the root again only when it has (verify's read again of a slot cut since:
    /// `tools::inspect::engine::verify`). A scan that met damage has not moved on.
    pub(crate) fn moved_on_since(&self, cipher: Option<&Cipher>) -> bool {
        let Some(ids) = self.listing_now() else {
            return true;
        };
        if !ids.iter().eq(self.segments.iter().map(|s| &s.id)) {
            return true;
        }
        if self.damage.is_some() {
            return false;
        }
        let from = self
            .segments
            .iter()
            .rposition(|s| s.first_seq.is_some())
            .unwrap_or(0);
        self.segments[from..].iter().any(|s| {
            let Ok(file) = fs::File::open(&s.path) else {
                return true;
            };
            let Ok(mut src) = record::SegmentFile::new(&file, &s.path) else {
                return true;
            };
            match record::read_record(
                &mut src,
                s.end as usize,
                self.next_seq,
                cipher,
                &s.path,
                record::Body::Check,
            ) {
                Scan::Record { .. } | Scan::Bad(_) => true,
                Scan::End | Scan::Torn(_) => false,
            }
        })
    }
}

/// Every byte of segment `s` (its length as the scan found it), read through `file`, the
/// descriptor the scan opened it with.
fn read_whole(file: &fs::File, s: &SegmentScan) -> Result<Bytes> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; s.len as usize];
    file.read_exact_at(&mut buf, 0)
        .map_err(|e| Error::io("read", &s.path, e))?;
    Ok(Bytes::from(buf))
}

/// The valid records in the segments `after` (indexes into `segments` and `files`) that lie
/// after a torn end (record `want` missing before them, `end` saying why), each segment read
/// from its first record on: an error naming them, which a default open drops; `None` if there
/// is none.
fn records_after_end(
    segments: &[SegmentScan],
    files: &[fs::File],
    after: &[usize],
    want: u64,
    cipher: Option<&Cipher>,
    end: &Error,
) -> Result<Option<Error>> {
    let mut found: Option<(PathBuf, u64, u64)> = None;
    for &j in after {
        let s = &segments[j];
        let Some(first) = s.first_seq else { continue };
        let bytes = read_whole(&files[j], s)?;
        let (mut at, mut seq) = (SEGMENT_HEADER as usize, first);
        while let Scan::Record { next, .. } = record::read_in(&bytes, at, seq, cipher, &s.path) {
            let f = found.get_or_insert((s.path.clone(), seq, seq));
            f.2 = seq;
            seq = seq.saturating_add(1);
            at = next;
        }
    }
    let why = match end {
        Error::Corrupt { reason, .. } => reason.clone(),
        e => e.to_string(),
    };
    Ok(found.map(|(path, a, b)| {
        let records = if a == b {
            format!("record {a}")
        } else {
            format!("records {a}..={b}")
        };
        Error::corrupt(
            &path,
            SEGMENT_HEADER,
            format!(
                "the journal ends before record {want} ({why}), but {records} lie after it, from this segment on: written later (never acknowledged if the segments before were not flushed), and a default open drops them"
            ),
        )
    }))
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use raft::prelude::{Entry, HardState, Snapshot};

    use std::os::unix::fs::FileExt;

    use super::journal::parts_decode;
    use super::{next_record_in_blank_file, SegmentScan, JOURNAL_DIR, SEGMENT_HEADER};
    use crate::Engine;

    /// The journal's segment files under `root`, in id order.
    fn segment_files(root: &std::path::Path) -> Vec<std::path::PathBuf> {
        let mut v: Vec<_> = std::fs::read_dir(root.join(JOURNAL_DIR))
            .unwrap()
            .map(|d| d.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "jnl"))
            .collect();
        v.sort();
        v
    }

    /// The check that comes before a checksum in the search for records after the journal's
    /// end (`lost_after_end`): a record's body is parts back to back. A written record passes;
    /// bytes of a segment's earlier life shaped like a header, naming a MiB of body whose
    /// first part decodes and whose second is zeros, do not (such bytes cost the tools about
    /// 19 s of checksums per scan of a recycled segment, in a root of 76 MB).
    #[test]
    fn only_a_body_of_parts_passes_for_a_record_past_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let e = Engine::open(dir.path()).unwrap();
        let g = e.create_group(1, 1).unwrap();
        let mut hs = HardState::default();
        (hs.term, hs.commit) = (1, 3);
        let entries: Vec<Entry> = (1..=3)
            .map(|i| {
                let mut en = Entry::default();
                (en.index, en.term, en.data) = (i, 1, vec![i as u8; 100].into());
                en
            })
            .collect();
        g.save(&hs, &entries, &Snapshot::default()).unwrap();
        let segments = segment_files(dir.path());
        let bytes = Bytes::from(std::fs::read(&segments[0]).unwrap());
        let at = SEGMENT_HEADER as usize;
        let seq = u64::from_le_bytes(bytes[at + 8..at + 16].try_into().unwrap());
        assert!(
            seq >= 1 && parts_decode(&bytes, at, seq),
            "a written record"
        );

        let mut junk = vec![0u8; 2 << 20];
        junk[0..4].copy_from_slice(&(1u32 << 20).to_le_bytes());
        junk[8..16].copy_from_slice(&seq.to_le_bytes());
        let part = 16;
        junk[part..part + 8].copy_from_slice(&1u64.to_le_bytes()); // group id
        junk[part + 8..part + 16].copy_from_slice(&1u64.to_le_bytes()); // incarnation
        junk[part + 16] = 1 << 2; // HARD_STATE, then its 24 bytes; the next part is zeros
        let junk = Bytes::from(junk);
        assert!(
            !parts_decode(&junk, 0, seq),
            "a body whose second part is zeros (incarnation 0)"
        );
        e.close().unwrap();
    }

    /// A file after the journal's last segment whose header the scan read as all zeros and
    /// whose first record is the next one: damage while its header still reads as zeros, not
    /// once it reads as a header (a live engine starting the segment, header first, between
    /// the scan's read of the headers and its read of the record).
    #[test]
    fn a_blank_file_holding_the_next_record_is_damage_only_while_its_header_stays_blank() {
        let dir = tempfile::tempdir().unwrap();
        let e = Engine::open(dir.path()).unwrap();
        let g = e.create_group(1, 1).unwrap();
        let mut en = Entry::default();
        (en.index, en.term) = (1, 1);
        g.save(&HardState::default(), &[en], &Snapshot::default())
            .unwrap();
        let paths = segment_files(dir.path());
        // The segment holding the record, as the scan would have found it blank.
        let path = paths
            .iter()
            .find(|p| std::fs::read(p).unwrap()[..8] != [0u8; 8])
            .unwrap()
            .clone();
        let bytes = std::fs::read(&path).unwrap();
        let at = SEGMENT_HEADER as usize;
        let seq = u64::from_le_bytes(bytes[at + 8..at + 16].try_into().unwrap());
        let id: u64 = path.file_stem().unwrap().to_str().unwrap().parse().unwrap();
        let seen = SegmentScan {
            id,
            path: path.clone(),
            len: bytes.len() as u64,
            first_seq: None,
            obsolete: false,
            records: 0,
            last_seq: None,
            end: SEGMENT_HEADER,
            cut: None,
            prev_unflushed: false,
            after_end: false,
            blank: true,
        };
        let check = || {
            let file = std::fs::File::open(&path).unwrap();
            next_record_in_blank_file(std::slice::from_ref(&seen), &[file], 0, seq, None).unwrap()
        };
        assert!(check().is_none(), "its header reads as a header now");
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .write_all_at(&[0u8; 36], 0)
            .unwrap();
        let lost = check().expect("a blank header before the next record");
        assert!(
            lost.to_string().contains(&format!("record {seq}")),
            "{lost}"
        );
        assert!(
            next_record_in_blank_file(
                std::slice::from_ref(&seen),
                &[std::fs::File::open(&path).unwrap()],
                0,
                seq + 1,
                None
            )
            .unwrap()
            .is_none(),
            "another record than the next"
        );
        drop(e);
    }
}
