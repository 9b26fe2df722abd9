//! What an engine commit holds: [`WriteBatch`], many groups' parts, and the binary form of the
//! parts inside a journal record.
//!
//! Owns: the part (a group's hard state, entries, snapshot and the smaller changes a
//! `GroupStorage` makes) and its encoding. Must never: validate a part against a log, or apply
//! one (that is the engine's commit).
//!
//! A journal record's body is its parts back to back (little-endian):
//! ```text
//! part:  group id u64 | incarnation u64 | kinds u8 (bits below; any other bit set is
//!        refused), then the sections of the kinds present, in this order:
//!   SNAPSHOT   length u32 | SnapshotRecord (protobuf): a snapshot installed, its data file
//!              already written and durable
//!   ENTRIES    count u32 | per entry: index u64 | term u64 | type u8 | data length u32 |
//!              context length u32 | data | context
//!   HARD_STATE term u64 | vote u64 | commit u64
//!   CONF_STATE length u32 | ConfStateRecord (protobuf)
//!   INTS       raft id u64 | group id u64 | checkpoint index u64
//!   TRUNCATE   index u64 (Normal entries below it read back with empty data)
//! ```

use bytes::{Buf, Bytes};
use prost::Message;
use raft::prelude::{ConfState, Entry, EntryType, HardState, Snapshot};

use crate::error::{Error, Result};
use crate::proto::{ConfStateRecord, SnapshotRecord};

const KIND_SNAPSHOT: u8 = 1;
const KIND_ENTRIES: u8 = 2;
const KIND_HARD_STATE: u8 = 4;
const KIND_CONF_STATE: u8 = 8;
const KIND_INTS: u8 = 16;
const KIND_TRUNCATE: u8 = 32;
/// Every kind a part may hold: a kinds byte with another bit set is refused, never read as if
/// the bit were clear (the section it announces would be taken for the next part).
const KINDS_DEFINED: u8 =
    KIND_SNAPSHOT | KIND_ENTRIES | KIND_HARD_STATE | KIND_CONF_STATE | KIND_INTS | KIND_TRUNCATE;

/// Many groups' saves, written together by [`crate::Engine::write`]: one journal record, one
/// flush. Parts for the same group apply in the order they were added.
#[derive(Clone, Debug, Default)]
pub struct WriteBatch {
    pub(crate) parts: Vec<Part>,
}

impl WriteBatch {
    /// An empty batch.
    pub fn new() -> WriteBatch {
        WriteBatch::default()
    }

    /// Adds what one raft-rs `Ready` of group `group_id` asks to persist: a snapshot (index > 0
    /// installs it: it replaces the log), entries (overwriting any conflicting suffix), a hard
    /// state (a default one is not written), with the rules of `DiskStorage::save`.
    pub fn save(&mut self, group_id: u64, hs: &HardState, entries: &[Entry], snap: &Snapshot) {
        self.parts.push(Part {
            group_id,
            hard_state: (*hs != HardState::default()).then(|| hs.clone()),
            entries: entries.to_vec(),
            snapshot: (snap.get_metadata().index > 0).then(|| snap.clone()),
            ..Part::default()
        });
    }

    /// No part has been added.
    pub fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }

    /// Removes every part (the batch keeps its capacity for the next round).
    pub fn clear(&mut self) {
        self.parts.clear();
    }

    /// Number of parts.
    pub fn len(&self) -> usize {
        self.parts.len()
    }
}

/// One group's part of a commit.
#[derive(Clone, Debug, Default)]
pub(crate) struct Part {
    pub group_id: u64,
    pub hard_state: Option<HardState>,
    pub entries: Vec<Entry>,
    /// A snapshot to install (with its data, which is written to the group's snapshot file
    /// before the commit).
    pub snapshot: Option<Snapshot>,
    pub conf_state: Option<ConfState>,
    /// `truncate_entries_until(index)`.
    pub truncate: Option<u64>,
    /// Raft id, group id and checkpoint index from the meta page (`set_uint`), carried when
    /// they changed since they were last journaled.
    pub ints: Option<[u64; 3]>,
    /// Set by a `GroupStorage`: the part is for this incarnation of its group only. A handle
    /// kept across `remove_group` and a `create_group` with the same id then writes nothing
    /// into the new group. Not encoded (every journaled part carries its group's incarnation).
    pub only_incarnation: Option<u64>,
}

/// A part read back from a journal record.
#[derive(Debug, Default)]
pub(crate) struct Decoded {
    pub group_id: u64,
    pub incarnation: u64,
    pub snapshot: Option<SnapshotRecord>,
    pub entries: Vec<Entry>,
    pub hard_state: Option<HardState>,
    pub conf_state: Option<ConfStateRecord>,
    pub ints: Option<[u64; 3]>,
    pub truncate: Option<u64>,
}

fn type_code(t: EntryType) -> u8 {
    match t {
        EntryType::EntryNormal => 0,
        EntryType::EntryConfChange => 1,
        EntryType::EntryConfChangeV2 => 2,
    }
}

/// A journal record's body being built: the bytes it writes itself, and the pieces of the body
/// in order (ranges of those bytes, and entry payloads written from the callers' buffers
/// without a copy).
#[derive(Default)]
pub(crate) struct Body {
    own: Vec<u8>,
    /// `Ok(range of own)` or `Err(payload)`.
    pieces: Vec<std::result::Result<std::ops::Range<usize>, Bytes>>,
    /// Where the current run of own bytes started.
    run: usize,
}

/// Payloads at least this long are written from their own buffer; shorter ones are copied
/// (an iovec costs the kernel more than copying a few hundred bytes).
const BY_REFERENCE: usize = 512;

impl Body {
    fn own(&mut self) -> &mut Vec<u8> {
        &mut self.own
    }

    fn payload(&mut self, b: &Bytes) {
        if b.len() < BY_REFERENCE {
            self.own.extend_from_slice(b);
            return;
        }
        let end = self.own.len();
        if end > self.run {
            self.pieces.push(Ok(self.run..end));
        }
        self.run = end;
        self.pieces.push(Err(b.clone()));
    }

    /// The body's pieces, in order.
    pub(crate) fn pieces(&mut self) -> Vec<&[u8]> {
        let end = self.own.len();
        if end > self.run {
            self.pieces.push(Ok(self.run..end));
            self.run = end;
        }
        self.pieces
            .iter()
            .map(|p| match p {
                Ok(r) => &self.own[r.clone()],
                Err(b) => &b[..],
            })
            .collect()
    }

    /// The body as one buffer (for tests).
    #[cfg(test)]
    pub(crate) fn concat(mut self) -> Vec<u8> {
        self.pieces().concat()
    }
}

/// Appends the journal form of `part` (of the group's `incarnation`; `snapshot`: the record
/// describing its installed snapshot's file) to `body`.
pub(crate) fn encode(
    body: &mut Body,
    part: &Part,
    incarnation: u64,
    snapshot: Option<&SnapshotRecord>,
) {
    let mut kinds = 0u8;
    if snapshot.is_some() {
        kinds |= KIND_SNAPSHOT;
    }
    if !part.entries.is_empty() {
        kinds |= KIND_ENTRIES;
    }
    if part.hard_state.is_some() {
        kinds |= KIND_HARD_STATE;
    }
    if part.conf_state.is_some() {
        kinds |= KIND_CONF_STATE;
    }
    if part.ints.is_some() {
        kinds |= KIND_INTS;
    }
    if part.truncate.is_some() {
        kinds |= KIND_TRUNCATE;
    }
    let out = body.own();
    out.extend_from_slice(&part.group_id.to_le_bytes());
    out.extend_from_slice(&incarnation.to_le_bytes());
    out.push(kinds);
    if let Some(s) = snapshot {
        let b = s.encode_to_vec();
        out.extend_from_slice(&(b.len() as u32).to_le_bytes());
        out.extend_from_slice(&b);
    }
    if !part.entries.is_empty() {
        out.extend_from_slice(&(part.entries.len() as u32).to_le_bytes());
        for e in &part.entries {
            let out = body.own();
            out.extend_from_slice(&e.index.to_le_bytes());
            out.extend_from_slice(&e.term.to_le_bytes());
            out.push(type_code(e.get_entry_type()));
            out.extend_from_slice(&(e.data.len() as u32).to_le_bytes());
            out.extend_from_slice(&(e.context.len() as u32).to_le_bytes());
            body.payload(&e.data);
            body.payload(&e.context);
        }
    }
    let out = body.own();
    if let Some(hs) = &part.hard_state {
        for v in [hs.term, hs.vote, hs.commit] {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
    if let Some(cs) = &part.conf_state {
        let b = ConfStateRecord::from(cs).encode_to_vec();
        out.extend_from_slice(&(b.len() as u32).to_le_bytes());
        out.extend_from_slice(&b);
    }
    if let Some(ints) = &part.ints {
        for v in ints {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
    if let Some(i) = part.truncate {
        out.extend_from_slice(&i.to_le_bytes());
    }
}

/// [`parts`] of the record at `offset` in segment `path`: a body that does not parse although
/// its checksum matches is damage at that place (an error naming the segment), for open's
/// replay and the read-only tools alike.
pub(crate) fn parts_at<'a>(
    body: &Bytes,
    seq: u64,
    path: &'a std::path::Path,
    offset: u64,
) -> impl Iterator<Item = Result<Decoded>> + 'a {
    parts(body, seq).map(move |p| {
        p.map_err(|e| {
            let reason = match e {
                Error::Invariant(reason) => reason,
                e => e.to_string(),
            };
            Error::corrupt(path, offset, reason)
        })
    })
}

/// [`parts`] of a record collected: for the tests.
#[cfg(test)]
pub(crate) fn decode(body: &Bytes, seq: u64) -> Result<Vec<Decoded>> {
    parts(body, seq).collect()
}

/// The parts of a journal record's body (record `seq`, for error messages), decoded one at a
/// time as the iterator is advanced: a reader holds one part at a time, so the heap it takes
/// follows the record's bytes, never its count of parts (a part with no section is 17 bytes,
/// its decoded form some hundreds). Entry data and contexts are views of `body`.
///
/// A body that does not parse is [`Error::Invariant`], the iterator's last item: its checksum
/// (or, encrypted, its authentication) passed, so it holds bytes the engine wrote and cannot
/// read back. Callers that know the record's place use [`parts_at`], which reports it as
/// damage there.
pub(crate) fn parts(body: &Bytes, seq: u64) -> Parts {
    Parts {
        rest: body.clone(),
        seq,
        failed: false,
    }
}

/// The iterator [`parts`] returns.
pub(crate) struct Parts {
    rest: Bytes,
    seq: u64,
    /// A part did not parse: nothing follows the error.
    failed: bool,
}

impl Iterator for Parts {
    type Item = Result<Decoded>;

    fn next(&mut self) -> Option<Result<Decoded>> {
        if self.failed || !self.rest.has_remaining() {
            return None;
        }
        let part = decode_part(&mut self.rest, self.seq);
        self.failed = part.is_err();
        Some(part)
    }
}

/// Reads one part from the front of `b` (a body of record `seq`).
fn decode_part(b: &mut Bytes, seq: u64) -> Result<Decoded> {
    let bad = |what: &str| {
        Error::invariant(format!(
            "journal record {seq} is malformed ({what}) although its checksum matches"
        ))
    };
    if b.remaining() < 17 {
        return Err(bad("a part header is cut short"));
    }
    let mut p = Decoded {
        group_id: b.get_u64_le(),
        incarnation: b.get_u64_le(),
        ..Decoded::default()
    };
    let kinds = b.get_u8();
    if kinds & !KINDS_DEFINED != 0 {
        return Err(bad(&format!(
            "a part of group {} has kinds 0x{kinds:02x}, bits 0x{:02x} of which no part kind defines",
            p.group_id,
            kinds & !KINDS_DEFINED
        )));
    }
    let take_u32 = |b: &mut Bytes| (b.remaining() >= 4).then(|| b.get_u32_le() as usize);
    let take = |b: &mut Bytes, n: usize| (b.remaining() >= n).then(|| b.split_to(n));
    if kinds & KIND_SNAPSHOT != 0 {
        let n = take_u32(b).ok_or_else(|| bad("snapshot length"))?;
        let raw = take(b, n).ok_or_else(|| bad("snapshot record"))?;
        p.snapshot = Some(SnapshotRecord::decode(raw).map_err(|_| bad("snapshot record"))?);
    }
    if kinds & KIND_ENTRIES != 0 {
        let n = take_u32(b).ok_or_else(|| bad("entry count"))?;
        let mut entries = Vec::with_capacity(n.min(b.remaining() / 25));
        for _ in 0..n {
            if b.remaining() < 25 {
                return Err(bad("an entry header is cut short"));
            }
            let mut e = Entry::default();
            e.index = b.get_u64_le();
            e.term = b.get_u64_le();
            e.set_entry_type(match b.get_u8() {
                0 => EntryType::EntryNormal,
                1 => EntryType::EntryConfChange,
                2 => EntryType::EntryConfChangeV2,
                _ => return Err(bad("entry type")),
            });
            let dl = b.get_u32_le() as usize;
            let cl = b.get_u32_le() as usize;
            e.data = take(b, dl).ok_or_else(|| bad("entry data"))?;
            e.context = take(b, cl).ok_or_else(|| bad("entry context"))?;
            entries.push(e);
        }
        p.entries = entries;
    }
    if kinds & KIND_HARD_STATE != 0 {
        if b.remaining() < 24 {
            return Err(bad("hard state"));
        }
        let mut hs = HardState::default();
        hs.term = b.get_u64_le();
        hs.vote = b.get_u64_le();
        hs.commit = b.get_u64_le();
        p.hard_state = Some(hs);
    }
    if kinds & KIND_CONF_STATE != 0 {
        let n = take_u32(b).ok_or_else(|| bad("conf state length"))?;
        let raw = take(b, n).ok_or_else(|| bad("conf state"))?;
        p.conf_state = Some(ConfStateRecord::decode(raw).map_err(|_| bad("conf state"))?);
    }
    if kinds & KIND_INTS != 0 {
        if b.remaining() < 24 {
            return Err(bad("meta integers"));
        }
        p.ints = Some([b.get_u64_le(), b.get_u64_le(), b.get_u64_le()]);
    }
    if kinds & KIND_TRUNCATE != 0 {
        if b.remaining() < 8 {
            return Err(bad("truncate index"));
        }
        p.truncate = Some(b.get_u64_le());
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_round_trip() {
        let mut e = Entry::default();
        e.index = 7;
        e.term = 3;
        e.data = Bytes::from_static(b"data");
        e.context = Bytes::from_static(b"ctx");
        e.set_entry_type(EntryType::EntryConfChangeV2);
        let mut hs = HardState::default();
        hs.term = 3;
        hs.vote = 2;
        hs.commit = 6;
        let mut cs = ConfState::default();
        cs.voters = vec![1, 2, 3];
        let part = Part {
            group_id: 42,
            hard_state: Some(hs.clone()),
            entries: vec![e.clone()],
            conf_state: Some(cs.clone()),
            truncate: Some(5),
            ints: Some([1, 42, 6]),
            ..Part::default()
        };
        let snap = SnapshotRecord {
            index: 4,
            term: 2,
            ..Default::default()
        };
        let mut body = Body::default();
        encode(&mut body, &part, 9, Some(&snap));
        encode(&mut body, &Part::default(), 1, None);
        let parts = decode(&Bytes::from(body.concat()), 1).unwrap();
        assert_eq!(parts.len(), 2);
        let p = &parts[0];
        assert_eq!((p.group_id, p.incarnation), (42, 9));
        assert_eq!(p.entries, vec![e]);
        assert_eq!(p.hard_state, Some(hs));
        assert_eq!(p.conf_state, Some(ConfStateRecord::from(&cs)));
        assert_eq!(p.truncate, Some(5));
        assert_eq!(p.ints, Some([1, 42, 6]));
        assert_eq!(p.snapshot, Some(snap));
        assert!(parts[1].entries.is_empty() && parts[1].hard_state.is_none());
    }

    #[test]
    fn a_cut_record_is_an_error_not_a_panic() {
        let mut e = Entry::default();
        e.index = 1;
        e.data = Bytes::from(vec![1u8; 1000]);
        let part = Part {
            group_id: 1,
            entries: vec![e],
            ..Part::default()
        };
        let mut body = Body::default();
        encode(&mut body, &part, 1, None);
        let body = body.concat();
        for cut in 0..body.len() {
            // Its checksum would have passed: what the engine wrote, it cannot read (a bug).
            if let Err(e) = decode(&Bytes::copy_from_slice(&body[..cut]), 1) {
                assert!(matches!(e, Error::Invariant(_)), "cut at {cut}: {e:?}");
            }
        }
    }

    #[test]
    fn a_kind_no_part_defines_is_refused_by_name() {
        let part = Part {
            group_id: 3,
            truncate: Some(5),
            ..Part::default()
        };
        let mut body = Body::default();
        encode(&mut body, &part, 1, None);
        let clean = body.concat();
        assert!(decode(&Bytes::from(clean.clone()), 1).is_ok());
        // The kinds byte follows the group id and the incarnation.
        for bit in [64u8, 128] {
            let mut b = clean.clone();
            b[16] |= bit;
            match decode(&Bytes::from(b), 1) {
                Err(Error::Invariant(reason)) => {
                    assert!(reason.contains(&format!("bits 0x{bit:02x}")), "{reason}");
                    assert!(reason.contains("group 3"), "{reason}");
                }
                other => panic!("kinds bit {bit:#x}: {other:?}"),
            }
        }
    }
}
