//! The journal at open: its segments listed and checked in order, their records read (the
//! bodies after the checkpoint kept), and where the journal ends.
//!
//! Owns: which segments are live, obsolete or after a torn end, how one segment goes on from
//! the one before, and what counts as a torn end (cut in the default mode, an error in
//! `AbsoluteConsistency`) or as damage. Must never: change a file (what open found to tidy is
//! tidied by `Journal::tidy`, once the engine's open has checked everything else).

use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};

use super::header::{read_header, Header, H_FIRST_SEQ, H_ID};
use super::held::Held;
use super::{
    parse_segment_name, segment_name, Journal, LastEnd, Opened, Record, Segment, Writer,
    SEGMENT_HEADER,
};
use crate::engine::record::{self, Body, Scan, SegmentFile};
use crate::engine::segments::{self, Next, Pool};
use crate::error::{Error, Result};
use crate::options::RecoveryMode;
use crate::sys::crypto::Cipher;

/// What `engine.meta` says of the journal.
#[derive(Debug)]
pub(crate) struct RootState {
    /// The checkpoint: records up to it are in the groups' files.
    pub checkpoint_seq: u64,
    /// The engine that wrote the journal last was closed (`engine.meta` not marked open).
    pub closed_cleanly: bool,
    /// The damage in `engine.meta`'s newer copy when the checkpoint is the older copy's
    /// (`Copies::damage`): a journal whose first segment starts after that checkpoint is then
    /// refused naming `engine.meta`, whose lost copy held a later one.
    pub older_copy: Option<Error>,
}

impl Journal {
    /// Opens (or creates) the journal in `dir` and reads every record after the root's
    /// checkpoint (keeping up to `max_spares` trimmed segments for reuse). Nothing in `dir` is
    /// changed (but its creation): what open found to tidy is tidied by [`Journal::tidy`], once
    /// the engine's open has checked everything else.
    /// A torn end (a record with the next sequence number whose checksum fails) is cut in
    /// `TolerateTailCorruption` and an error in `AbsoluteConsistency`; records missing in the
    /// middle (a segment that ends before the next one begins) are an error in both. A torn
    /// record at the end of a segment that the next segment starts at (by its sequence number)
    /// is a cut an earlier open made ([`Journal::seal_cut`]): the end of that segment, in both
    /// modes.
    pub(crate) fn open(
        dir: &Path,
        segment_bytes: u64,
        max_spares: usize,
        cipher: Option<Cipher>,
        root: RootState,
        mode: RecoveryMode,
        held_run_bytes: u64,
    ) -> Result<Opened> {
        let RootState {
            checkpoint_seq,
            closed_cleanly,
            older_copy,
        } = root;
        fs::create_dir_all(dir).map_err(|e| Error::io("create directory", dir, e))?;
        let mut ids = Vec::new();
        let mut spares = Vec::new();
        let mut leftovers = Vec::new();
        for ent in fs::read_dir(dir).map_err(|e| Error::io("read directory", dir, e))? {
            let ent = ent.map_err(|e| Error::io("read directory", dir, e))?;
            let Some(name) = ent.file_name().to_str().map(str::to_string) else {
                continue;
            };
            if let Some(id) = parse_segment_name(&name) {
                ids.push(id);
            } else if segments::is_spare_name(&name) {
                spares.push(ent.path());
            } else if name.ends_with(".jnl.tmp") {
                leftovers.push(ent.path());
            }
        }
        ids.sort_unstable();
        spares.sort();
        let mut segments = Vec::new();
        // Segments no longer needed (once segment `id`): removed (`Segment::found`).
        let mut unused = Vec::new();
        // Those whose header is all zeros (taken for never written).
        let mut blank = Vec::new();
        for &id in &ids {
            let path = dir.join(segment_name(id));
            match read_header(&path, id, cipher.is_some())? {
                Header::Valid {
                    first_seq,
                    prev_unflushed,
                } => segments.push(Segment {
                    id,
                    path,
                    first_seq,
                    prev_unflushed,
                    found: true,
                    header_durable: true,
                }),
                // A recycled segment whose rename or new header did not reach the disk: what it
                // holds is its previous life's records (trimmed, so all at or below a durable
                // checkpoint) or its next life's (none acknowledged: a record is, only once the
                // directory names its segment and the segment's header is flushed with it).
                // Under a later name, its header is its previous life's: a header whose records
                // are not all checkpointed is a live segment copied there, not a recycled one.
                Header::Recycled { id: other, first_seq }
                    if other > id || first_seq <= checkpoint_seq =>
                {
                    unused.push((path, id))
                }
                Header::Recycled { id: other, .. } => {
                    return Err(Error::corrupt(
                        &path,
                        H_ID as u64,
                        format!(
                            "header names segment {other}, whose records are not all checkpointed; the file name says {id}"
                        ),
                    ))
                }
                // Prepared (or created) but never written: a record is acknowledged only once its
                // segment's header is durable, so such a file holds none. The newest, usually;
                // or a trimmed segment whose header was zeroed for its next use while its rename
                // to a spare did not reach the disk. (A live segment lost this way leaves records
                // missing, which the scan below refuses.)
                Header::Blank => {
                    blank.push(id);
                    unused.push((path, id))
                }
            }
        }
        let with_header = segments.len();
        // Segments whose records all lie at or below the checkpoint are obsolete.
        let keep_from = segments
            .windows(2)
            .position(|w| w[1].first_seq > checkpoint_seq + 1)
            .unwrap_or(segments.len().saturating_sub(1));
        for s in segments.drain(..keep_from) {
            unused.push((s.path, s.id));
        }

        let mut records = Vec::new();
        let mut held = Held::new(held_run_bytes); // the records kept
        let mut expected = None::<u64>;
        let mut tail = None::<(u64, bool)>; // where the last segment's records end; torn?
        let mut keep = segments.len(); // segments from here on lie after a torn end
        let mut last_end = None; // how the last segment's records end
        let n = segments.len();
        for (pos, seg) in segments.iter().enumerate() {
            let last = pos + 1 == n;
            if let Some(want) = expected {
                if follows(want, seg.first_seq, seg.prev_unflushed, checkpoint_seq)
                    == Follow::AfterTornEnd
                {
                    let e = torn_end(&seg.path, want, seg.first_seq);
                    if mode == RecoveryMode::AbsoluteConsistency {
                        return Err(e);
                    }
                    // Not kept as the end (`LastEnd::Torn`): this segment is whole; should pages
                    // show records after it durable, what is lost is the end of the one before
                    // or segments between, which the journal's refusal names.
                    keep = pos;
                    tail = tail.map(|(at, _)| (at, true));
                    break;
                }
            }
            // Records up to the checkpoint may be gone (trimmed); none after it.
            let e = expected.unwrap_or(checkpoint_seq + 1);
            let skipped_only_checkpointed =
                seg.first_seq > e && seg.first_seq <= checkpoint_seq + 1;
            if seg.first_seq != e
                && !skipped_only_checkpointed
                && (expected.is_some() || seg.first_seq > e)
            {
                // A segment between this one and the one before it whose header reads as
                // never written: its header is what was lost, records `e` on with it.
                let before = pos.checked_sub(1).map(|p| segments[p].id);
                if let Some(&id) =
                    before.and_then(|b| blank.iter().find(|&&id| id > b && id < seg.id))
                {
                    return Err(blank_between(&dir.join(segment_name(id)), e, seg.first_seq));
                }
                // The journal's first segment after a checkpoint read from `engine.meta`'s
                // older copy: the newer, damaged one held a later checkpoint.
                if let (
                    None,
                    Some(Error::Corrupt {
                        path,
                        offset,
                        reason,
                    }),
                ) = (expected, older_copy.as_ref())
                {
                    return Err(Error::corrupt(
                        path,
                        *offset,
                        format!(
                            "{reason}; the journal does not go on from the checkpoint of the copy in use, record {checkpoint_seq}: its first live segment, {}, starts at record {}",
                            seg.path.display(),
                            seg.first_seq
                        ),
                    ));
                }
                return Err(Error::corrupt(
                    &seg.path,
                    H_FIRST_SEQ as u64,
                    format!(
                        "journal segment starts at record {}, but record {e} is the next one after the checkpoint or the segment before: records are missing",
                        seg.first_seq
                    ),
                ));
            }
            // Read as the records go; the bodies of records the checkpoint covers (their effect
            // is in the groups' files, durably) are checked, not kept.
            let file = File::open(&seg.path).map_err(|e| Error::io("open", &seg.path, e))?;
            let mut src = SegmentFile::new(&file, &seg.path)?;
            let mut at = SEGMENT_HEADER as usize;
            let mut want = seg.first_seq;
            let segment: std::sync::Arc<Path> = std::sync::Arc::from(seg.path.as_path());
            let end = loop {
                let body = if want > checkpoint_seq {
                    Body::Keep
                } else {
                    Body::Check
                };
                match record::read_record(&mut src, at, want, cipher.as_ref(), &seg.path, body) {
                    Scan::Record { body, next } => {
                        if want > checkpoint_seq {
                            records.push(Record {
                                seq: want,
                                body,
                                segment: segment.clone(),
                                at: at as u64,
                            });
                            held.hold(want, (next - at) as u64);
                        }
                        want += 1;
                        at = next;
                    }
                    Scan::End => break (at, None),
                    Scan::Torn(e) => break (at, Some(e)),
                    Scan::Bad(e) => return Err(e),
                }
            };
            if end.1.is_some() && want <= checkpoint_seq {
                // Damage in a record the checkpoint covers: whatever followed it (records after
                // the checkpoint included) cannot be read.
                if let Some(e) = end.1 {
                    return Err(e);
                }
            }
            if end.1.is_none() && last && want <= checkpoint_seq {
                return Err(ends_below_checkpoint(
                    &seg.path,
                    at as u64,
                    want,
                    checkpoint_seq,
                ));
            }
            expected = Some(want);
            // Where this segment's records end, should the journal end there.
            tail = Some((end.0 as u64, end.1.is_some()));
            match (end.1, last) {
                (Some(e), true) => {
                    if mode == RecoveryMode::AbsoluteConsistency {
                        return Err(e);
                    }
                    last_end = Some(LastEnd::Torn(e));
                }
                // After a crash, records with the next sequence numbers past the end are a
                // torn end (a power loss kept a later record's page, lost an earlier one's) or
                // damage to records that were acknowledged: a default open cuts them, as it
                // cuts a torn record.
                (None, true)
                    if mode == RecoveryMode::AbsoluteConsistency
                        && !closed_cleanly
                        && want > checkpoint_seq =>
                {
                    let lost =
                        super::lost_in_segment(&seg.path, end.0 as u64, want, cipher.as_ref())?;
                    if let Some(e) = lost {
                        return Err(e);
                    }
                }
                (None, true) => {
                    last_end = Some(LastEnd::Clean {
                        path: seg.path.clone(),
                        offset: end.0 as u64,
                        want,
                    })
                }
                // A record that fails its checks before the last segment is damage: records
                // after it (in the next segments) were acknowledged. Unless the next segment
                // starts at that very record (an earlier open cut the journal there and started
                // it: rotation never writes a record to a segment the next one starts at), or
                // after it while this one was not flushed (a torn end, decided above).
                (Some(e), false) => {
                    let next = &segments[pos + 1];
                    if follows(want, next.first_seq, next.prev_unflushed, checkpoint_seq)
                        == Follow::Damaged
                    {
                        return Err(e);
                    }
                }
                // An earlier segment ends where the next begins (checked above).
                (None, false) => {}
            }
        }
        if mode == RecoveryMode::AbsoluteConsistency && !closed_cleanly {
            // The last segment kept (all of them: a torn end was refused above).
            let after = keep
                .checked_sub(1)
                .and_then(|k| segments.get(k))
                .map_or(0, |s| s.id);
            let want = expected.unwrap_or(checkpoint_seq + 1);
            for &id in blank.iter().filter(|&&b| b > after) {
                blank_holding_records(&dir.join(segment_name(id)), want, cipher.as_ref())?;
            }
        }
        // Segments after a torn end hold records never acknowledged: removed (as spares, their
        // records' sequence numbers would come back in the records written from now on).
        let after_end: Vec<PathBuf> = segments.drain(keep..).map(|s| s.path).collect();
        leftovers.extend(after_end);
        let last_seq = expected
            .map_or(checkpoint_seq, |e| e.saturating_sub(1))
            .max(checkpoint_seq);

        let mut journal = Journal {
            dir: dir.to_path_buf(),
            segments,
            writer: None,
            unflushed: Vec::new(),
            next_seq: last_seq + 1,
            cipher,
            pool: Pool {
                dir: dir.to_path_buf(),
                segment_bytes,
                spares,
                max_spares,
                next: Next::Idle,
                stalled: false,
                releases: Default::default(),
                rested_at: None,
                lazy: false,
                rest_after: segments::REST_AFTER,
            },
            quiet_since: (last_seq + 1, std::time::Instant::now()),
            appended: 0,
            held,
            // New records go on in the last segment only after a clean close (every record
            // written to it was flushed, so where its records end is where its writes ended).
            // After a crash, past where its records end (clean or torn) it may hold records of
            // that life with the next sequence numbers: a power loss keeps the pages of
            // unflushed records in any order, so a record whose page was lost can lie before
            // one whose page was kept. A new record ending where such a record begins would
            // bring it back, so the first append starts a new segment ([`Journal::seal_cut`]).
            cut_pending: match tail {
                Some((_, torn)) => torn || !closed_cleanly,
                None => false,
            },
            untidy: (unused, leftovers),
            direct: false,
            direct_buf: Default::default(),
            direct_appends: 0,
        };
        // Appends continue in the last segment unless a new one must start (`cut_pending`).
        if let (Some((offset, _)), Some(seg), false) =
            (tail, journal.segments.last(), journal.cut_pending)
        {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&seg.path)
                .map_err(|e| Error::io("open", &seg.path, e))?;
            let len = file
                .metadata()
                .map_err(|e| Error::io("stat", &seg.path, e))?
                .len();
            // A segment larger than a segment's size was grown for one record and holds that
            // record alone (docs/FORMAT.md, "Journal segment"): appends start the next one.
            let room = if len > segment_bytes { offset } else { len };
            journal.writer = Some(Writer {
                file,
                path: seg.path.clone(),
                offset,
                len,
                room,
                dirty: false,
                direct: None,
            });
        }
        Ok(Opened {
            journal,
            records,
            segment_files: (with_header, ids.len()),
            end: last_end,
        })
    }
}

/// A segment whose header reads as never written (`path`) between segments that hold records,
/// the one before it ending before record `want`, the one after it starting at `next_first`:
/// its header is damaged, and the records from `want` on were in it. An error naming it
/// (open's and the tools' alike).
pub(crate) fn blank_between(path: &Path, want: u64, next_first: u64) -> Error {
    Error::corrupt(
        path,
        0,
        format!(
            "the segment's header is all zeros, as if it were never written, but it lies between segments that hold records (the one before ends before record {want}, the next starts at record {next_first}): its header is damaged, and records {want}..{next_first} were in it"
        ),
    )
}

/// A segment whose header reads as never written, after the journal's last segment (from
/// `AbsoluteConsistency` after a crash): an error if it starts with record `want`, the one
/// the journal would go on with. Its header is damaged, or it was not flushed while the record
/// was (no record in it was then acknowledged): a default open removes it all the same.
fn blank_holding_records(path: &Path, want: u64, cipher: Option<&Cipher>) -> Result<()> {
    let file = File::open(path).map_err(|e| Error::io("open", path, e))?;
    if blank_starts_with(&file, path, want, cipher)? {
        return Err(blank_holding(path, want));
    }
    Ok(())
}

/// Whether record `want` starts the segment file `file` (at `path`), whose header was read as
/// all zeros. An unreadable file, or a record `want` there that cannot be opened (altered
/// sealed bytes), is an error, as the scan of the segments with a header makes it. Open's and
/// the tools' alike.
pub(crate) fn blank_starts_with(
    file: &File,
    path: &Path,
    want: u64,
    cipher: Option<&Cipher>,
) -> Result<bool> {
    let mut src = SegmentFile::new(file, path)?;
    match record::read_record(
        &mut src,
        SEGMENT_HEADER as usize,
        want,
        cipher,
        path,
        Body::Check,
    ) {
        Scan::Record { .. } => Ok(true),
        Scan::Bad(e) => Err(e),
        Scan::End | Scan::Torn(_) => Ok(false),
    }
}

/// A segment whose header reads as never written (`path`), after the journal's last segment,
/// that record `want`, the next after the journal's end, starts: an error naming it (open's and
/// the tools' alike).
pub(crate) fn blank_holding(path: &Path, want: u64) -> Error {
    Error::corrupt(
        path,
        0,
        format!(
            "the segment's header is all zeros, as if it were never written, but record {want}, the next after the journal's end, starts it: its header is damaged or was not flushed with the record, and a default open drops it"
        ),
    )
}

/// How a segment goes on from the one before it, whose records end before record `want`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Follow {
    /// It starts at `want`.
    Continues,
    /// It starts later, and it was started while records before it were not flushed: those in
    /// between never reached the disk, and none from this segment on was acknowledged (an
    /// acknowledgement flushes every segment before its record). The journal ends before it,
    /// a torn end.
    AfterTornEnd,
    /// Records are missing before it that were durable: damage.
    Damaged,
}

/// How a segment whose header says `first_seq` and `prev_unflushed` goes on from one whose
/// records end before record `want`, after checkpoint `checkpoint_seq`.
pub(crate) fn follows(
    want: u64,
    first_seq: u64,
    prev_unflushed: bool,
    checkpoint_seq: u64,
) -> Follow {
    if first_seq == want {
        Follow::Continues
    } else if first_seq > want && prev_unflushed && want > checkpoint_seq {
        Follow::AfterTornEnd
    } else {
        Follow::Damaged
    }
}

/// The torn end before segment `path` ([`Follow::AfterTornEnd`]).
pub(crate) fn torn_end(path: &Path, want: u64, first_seq: u64) -> Error {
    Error::corrupt(
        path,
        H_FIRST_SEQ as u64,
        format!(
            "journal segment starts at record {first_seq}, but the segment before ends before record {want}: it was started while records before it were not flushed, and records {want}..{first_seq} never reached the disk (a torn end: the journal ends before this segment, whose records were never acknowledged)"
        ),
    )
}

/// The journal lost from a root whose `engine.meta` names checkpoint `checkpoint_seq`, or says
/// the journal has begun (`begun`: an open made sure it held a segment, [`Journal::begin`]):
/// from then on the journal always has a segment whose header is durable (the one written last
/// is never trimmed, and [`Journal::trim`] keeps the newest whose header was flushed). `None`
/// while it has one (`segment_files`: the files in `dir` named like a segment with a valid
/// header of their own, and all the files named like one; `None` for a missing directory), or
/// for a root that has neither (never opened by a build that marks the journal
/// begun, and with no checkpoint: nothing on disk tells its lost journal from none written).
pub(crate) fn segments_missing(
    dir: &Path,
    checkpoint_seq: u64,
    begun: bool,
    segment_files: Option<(usize, usize)>,
) -> Option<Error> {
    if (checkpoint_seq == 0 && !begun) || segment_files.is_some_and(|(valid, _)| valid > 0) {
        return None;
    }
    let named;
    let found = match segment_files {
        None => "the directory is missing",
        Some((_, 0)) => "it holds no segment",
        Some((_, n)) => {
            named = format!("none of the {n} files named like a segment has a header of its own (all zeros, or an earlier life's): no segment with a header is left");
            &named
        }
    };
    let said = if checkpoint_seq > 0 {
        format!("engine.meta's checkpoint is at journal record {checkpoint_seq}, but {found}: the records after the checkpoint are lost")
    } else {
        format!("engine.meta says the journal has held a segment since the root's first open, but {found}: every record written since is lost")
    };
    Some(Error::MissingFile {
        path: dir.to_path_buf(),
        reason: said,
    })
}

/// The journal's last segment (`path`), whose records end at `offset` before record `want`,
/// at or below the checkpoint (`checkpoint_seq`): the records from `want` up to the checkpoint
/// were durable before the checkpoint was stored, and the segment holding the checkpoint's
/// record is never trimmed while it is the last one, so its end was cut off (and with it any
/// acknowledged record after the checkpoint). An error in both modes, naming the segment.
pub(crate) fn ends_below_checkpoint(
    path: &Path,
    offset: u64,
    want: u64,
    checkpoint_seq: u64,
) -> Error {
    Error::corrupt(
        path,
        offset,
        format!(
            "the journal's last segment ends before record {want}, but engine.meta's checkpoint is at record {checkpoint_seq}: records {want}..={checkpoint_seq} were durable before the checkpoint was stored, so the segment's end is lost (with any record acknowledged after the checkpoint)"
        ),
    )
}

/// A group's meta page (`page`) that reflects journal record `page_seq`, past the end of the
/// journal in `dir` (`last_seq`, or its checkpoint if later): a page is stored only once the
/// journal is flushed up to the record it reflects, so segments that held records were lost.
pub(crate) fn page_past_end(dir: &Path, page: &Path, page_seq: u64, last_seq: u64) -> Error {
    Error::MissingFile {
        path: dir.to_path_buf(),
        reason: format!(
            "{} reflects journal record {page_seq}, but the journal ends at record {last_seq}: the segments that held the records up to it are missing",
            page.display()
        ),
    }
}
