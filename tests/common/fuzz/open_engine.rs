//! Fuzz target logic `open_engine`: open an engine root built from a valid template with damage.
//!
//! The template is made once per process by the library: an engine root (journal segments of
//! 64 KiB) with four groups, written in two phases. Phase A (batches across the groups, a
//! compaction with snapshot data, a conf state) ends with a clean close: the groups' files and
//! meta pages hold it, the journal is trimmed behind the checkpoint (one segment becomes
//! the spare). Phase B (40 more batches, about 3 KiB each) is written with
//! `sync_writes: true`, and the root is imaged while the engine still has it open, as SIGKILL
//! leaves it: phase B lives only in the journal (records after the checkpoint, over several
//! segments, one of them the segment the close's trim recycled). Early in phase B, group 3
//! receives two snapshots (each install writes its meta page, so both of its meta copies lie
//! after the checkpoint) and group 4 takes one itself (`create_snapshot`: in its meta page
//! only). Every group's state after each phase B write (the oracle for a cut tail) comes from
//! [`Model`], an independent model of what the writes do, and the template is built only if the
//! engine showed exactly that after every step. Payloads encode group, index and term
//! (`payload`), so anything read back can be told genuine or not without the template.
//!
//! [`run`] (the fuzz target): the input is a list of mutations of the image's files (a byte
//! xor-ed, bytes written, a range zeroed, a file truncated, extended with garbage, deleted, or
//! copied under another journal segment's name), or, from operation byte `0xf0` on, a meta page
//! copy or a live journal record rewritten with forged fields and a valid checksum
//! ([`forge_meta`], [`forge_record`]); the result is opened in `AbsoluteConsistency` and in
//! `TolerateTailCorruption`. Nothing may panic; open returns a root or a typed error, and an
//! open that fails leaves every file as it was; every group of an opened root is read in full, and every entry and snapshot read back must be
//! genuine (its group's payload for its index and term, its group's snapshot data; with a
//! forgery, its group's payload and any snapshot a page may name), terms must agree with
//! entries and never decrease, the commit must lie within the log, and a root opened strictly
//! must be the one opened tolerantly. The read-only tools ([`inspect`]) read the same root:
//! no panic, no change, a default open predicted to fail exactly when it does, and each group
//! of a strict open shown as it opened.
//!
//! [`run_damage`] (the regular test `tests/engine_damage.rs`): one damaged byte in a chosen
//! position class, with the outcome docs/DESIGN.md §4/§9 gives for it:
//! * a journal segment's header, a record (its header or anywhere) of a segment before the last
//!   (committed data): an error naming that segment, in both modes;
//! * a record of the last segment (the torn tail), its header or its body: cut in
//!   `TolerateTailCorruption` (every group exactly as after the writes before that record),
//!   refused in `AbsoluteConsistency` naming the segment;
//! * bytes after the last record: no effect in the default mode;
//! * one copy of `engine.meta`: refused strictly naming it, the whole state tolerantly; both
//!   copies: an error naming it in both modes;
//! * one copy of a group's `wal.meta`: refused strictly naming it. Tolerantly, the copy left
//!   decides (read from the image's bytes): if it reflects the journal from before the
//!   checkpoint, refused naming `wal.meta`, the damaged copy, its position and the checkpoint
//!   (the journal cannot bring back what the damaged copy may have held); if a snapshot file of
//!   the group is newer than the snapshot that copy and the journal's installs give, refused
//!   naming that snapshot (a `create_snapshot` the damaged copy held); otherwise the whole
//!   state, exactly (falling back to an older copy when the damaged one was the newest);
//! * a slot or a payload of a group's `.wal` file holding phase A entries (durable, not
//!   compacted): open, or reading the group, is an error naming that file, and the other groups
//!   read back whole.
//!
//! An open refused in any class changes nothing in the root (every file compared).

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::OnceLock;

use bytes::Bytes;
use raft::prelude::{ConfState, Entry, HardState, Snapshot};
use raft::Storage;
use raftwal::{Engine, EngineOptions, RecoveryMode, WriteBatch};

use super::entries::ctx;
use super::layout::{self, segment_name, ENGINE_META_FILE, LOCK_FILE, META_FILE, SLOTS_PER_FILE};
use super::util::{
    pb_decode, pb_encode, pb_set_sub, pb_set_varint, pb_sub, pb_varint, scratch_dir, splitmix,
    PbMsg, Reader,
};

const SEGMENT: u64 = 64 << 10;
const GROUPS: u64 = 4;
const PHASE_B: usize = 40;
const MAX_OPS: usize = 32;
const MAX_FILE_LEN: usize = 8 << 20;
// The layout (docs/FORMAT.md, tests/common/layout.rs) as offsets into file images.
const SEGMENT_RECORDS_AT: usize = layout::SEGMENT_RECORDS_AT as usize;
const SEGMENT_HEADER_LEN: usize = layout::SEGMENT_HEADER_LEN as usize;
const SEGMENT_FIRST_SEQ_AT: usize = layout::SEGMENT_FIRST_SEQ_AT as usize;
const RECORD_LEN_AT: usize = layout::RECORD_LEN_AT as usize;
const RECORD_SEQ_AT: usize = layout::RECORD_SEQ_AT as usize;
const RECORD_CRC_AT: usize = layout::RECORD_CRC_AT as usize;
/// A record's header: everything before its body.
const RECORD_HEADER_LEN: usize = layout::RECORD_BODY_AT as usize;
const RECORD_ALIGN: usize = layout::RECORD_ALIGN as usize;
const SLOT_LEN: usize = layout::SLOT_LEN as usize;
const SLOT_INDEX_AT: usize = layout::SLOT_INDEX_AT as usize;
const PAYLOADS_AT: usize = layout::PAYLOADS_AT as usize;
const META_SEQ_AT: usize = layout::META_SEQ_AT as usize;
const META_RECORD_LEN_AT: usize = layout::META_RECORD_LEN_AT as usize;
const META_CRC_AT: usize = layout::META_CRC_AT as usize;
const META_RECORD_AT: usize = layout::META_RECORD_AT as usize;

fn opts(mode: RecoveryMode) -> EngineOptions {
    EngineOptions {
        recovery_mode: mode,
        journal_segment_bytes: SEGMENT,
        checkpoint_bytes: u64::MAX / 2,
        ..Default::default()
    }
}

// ---------------------------------------------------------------------------------------------
// content
// ---------------------------------------------------------------------------------------------

/// The data of entry `index` of term `term` in group `gid` in the template. (Not
/// `entries::entry_in_group`: the committed corpus was grown against this template, so its
/// entries stay what they were.)
pub fn payload(gid: u64, index: u64, term: u64) -> Bytes {
    let mut v = format!("g{gid}/i{index}/t{term}/").into_bytes();
    let h = splitmix(gid << 40 ^ index ^ term << 20);
    v.extend((0..(h % 160) as usize).map(|k| (h >> (k % 8 * 8)) as u8 ^ k as u8));
    Bytes::from(v)
}

fn template_entry(gid: u64, index: u64, term: u64) -> Entry {
    let mut e = Entry::default();
    e.index = index;
    e.term = term;
    e.data = payload(gid, index, term);
    e
}

fn snap_data(gid: u64, index: u64) -> Bytes {
    Bytes::from(format!("snapshot of group {gid} at {index}").repeat(40))
}

fn hard_state(term: u64, commit: u64) -> HardState {
    let mut hs = HardState::default();
    hs.term = term;
    hs.vote = 1;
    hs.commit = commit;
    hs
}

macro_rules! ensure {
    ($cond:expr, $($fmt:tt)*) => {
        if !$cond {
            return Err(format!($($fmt)*));
        }
    };
}

// ---------------------------------------------------------------------------------------------
// what a group shows
// ---------------------------------------------------------------------------------------------

/// Everything a group shows through `raft::Storage`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct View {
    first: u64,
    last: u64,
    terms: Vec<u64>,
    hs: (u64, u64, u64),
    voters: Vec<u64>,
    snap: Option<(u64, u64)>,
}

type RootView = BTreeMap<u64, View>;

/// What an input forged with valid checksums, which widens what reads may show.
#[derive(Clone, Copy, Debug, Default)]
struct Forged {
    /// A meta page or a journal record.
    any: bool,
    /// For each group (by id), the highest index a forged truncation names (added to a record,
    /// or its index changed): its Normal entries below it may read back empty.
    truncated_below: [u64; GROUPS as usize + 1],
    /// The sequence numbers of records whose part was given a kinds bit no kind defines
    /// (docs/FORMAT.md, "Journal record"; 0: none): replayed, such a record must be refused.
    undefined_kind: [u64; 8],
}

impl Forged {
    /// Notes a truncation forged for group `gid` at `index`.
    fn truncated(&mut self, gid: u64, index: u64) {
        if let Some(t) = self.truncated_below.get_mut(gid as usize) {
            *t = (*t).max(index);
        }
    }
}

/// Reads group `gid` in full; every entry and the snapshot must be genuine. With a forgery (a
/// meta page or a record rewritten with a valid checksum), an entry of the group's own moved
/// to another index or term is genuine too, and so is a snapshot with no data: a page may say
/// so (`create_snapshot` with empty data), and nothing tells it from the page that was there.
/// Below a forged truncation of the group, so is a Normal entry with no data.
fn view<S: Storage>(s: &S, gid: u64, forged: Forged) -> Result<View, String> {
    let e = |what: &str, err: raft::Error| format!("group {gid}: {what}: {err}");
    let first = s.first_index().map_err(|x| e("first_index", x))?;
    let last = s.last_index().map_err(|x| e("last_index", x))?;
    ensure!(
        first <= last + 1,
        "group {gid}: first {first} > last {last} + 1"
    );
    let mut terms = Vec::new();
    let mut lo = first;
    while lo <= last {
        let hi = (lo + 1_000).min(last + 1);
        let got = s
            .entries(lo, hi, None, ctx())
            .map_err(|x| e("entries", x))?;
        ensure!(
            got.len() as u64 == hi - lo,
            "group {gid}: entries({lo}, {hi}) gave {}",
            got.len()
        );
        for (k, en) in got.iter().enumerate() {
            let i = lo + k as u64;
            // A forged record may move a genuine entry to another index or term of its group,
            // or say that the entries below an index were applied (a truncation: they read
            // back empty).
            let own = |d: &Bytes| d.starts_with(format!("g{gid}/").as_bytes());
            let truncated = forged
                .truncated_below
                .get(gid as usize)
                .is_some_and(|&t| i < t)
                && en.data.is_empty()
                && en.get_entry_type() == raft::prelude::EntryType::EntryNormal;
            ensure!(
                en.index == i
                    && (en.data == payload(gid, i, en.term)
                        || forged.any && own(&en.data)
                        || truncated)
                    && en.context.is_empty(),
                "group {gid}: entry {i} is not genuine: index {} term {} data {:?}",
                en.index,
                en.term,
                String::from_utf8_lossy(&en.data[..en.data.len().min(20)])
            );
            let t = s.term(i).map_err(|x| e("term", x))?;
            ensure!(
                t == en.term,
                "group {gid}: term({i}) = {t}, entry says {}",
                en.term
            );
            ensure!(
                terms.last().is_none_or(|&p| p <= en.term),
                "group {gid}: entry {i} has term {} after term {:?}: terms never decrease",
                en.term,
                terms.last()
            );
            terms.push(en.term);
        }
        lo = hi;
    }
    let st = s.initial_state().map_err(|x| e("initial_state", x))?;
    let hs = &st.hard_state;
    ensure!(
        hs.commit <= last,
        "group {gid}: commit {} is past the last index {last}: raft would panic on it",
        hs.commit
    );
    let snap = if first > 1 {
        let sn = s.snapshot(0, 0).map_err(|x| e("snapshot", x))?;
        let md = sn.get_metadata();
        ensure!(
            md.index == first - 1
                && (sn.data == snap_data(gid, md.index) || forged.any && sn.data.is_empty()),
            "group {gid}: the snapshot at {} ({} bytes) is not genuine",
            md.index,
            sn.data.len()
        );
        Some((md.index, md.term))
    } else {
        None
    };
    Ok(View {
        first,
        last,
        terms,
        hs: (hs.term, hs.vote, hs.commit),
        voters: st.conf_state.voters.clone(),
        snap,
    })
}

fn view_root(e: &Engine, forged: Forged) -> Result<RootView, String> {
    let mut out = RootView::new();
    for gid in e.group_ids() {
        let g = e
            .group(gid)
            .ok_or(format!("group {gid} listed but absent"))?;
        out.insert(gid, view(&g, gid, forged)?);
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// the model: what the template's writes leave, independent of the engine
// ---------------------------------------------------------------------------------------------

/// One group as its writes leave it.
#[derive(Clone, Debug)]
struct ModelGroup {
    /// Terms of the entries from `first` on.
    first: u64,
    terms: Vec<u64>,
    hs: (u64, u64, u64),
    voters: Vec<u64>,
    snap: Option<(u64, u64)>,
}

#[derive(Clone, Debug, Default)]
struct Model {
    groups: BTreeMap<u64, ModelGroup>,
}

impl Model {
    fn create(&mut self, gid: u64) {
        let g = ModelGroup {
            first: 1,
            terms: Vec::new(),
            hs: (0, 0, 0),
            voters: Vec::new(),
            snap: None,
        };
        self.groups.insert(gid, g);
    }

    fn group(&mut self, gid: u64) -> &mut ModelGroup {
        self.groups.get_mut(&gid).expect("a created group")
    }

    /// Entries `lo..lo + n` of term `term` (overwriting from `lo`), then the hard state.
    fn append(&mut self, gid: u64, lo: u64, n: u64, term: u64, hs: (u64, u64, u64)) {
        let g = self.group(gid);
        g.terms.truncate((lo - g.first) as usize);
        g.terms.extend((0..n).map(|_| term));
        g.hs = hs;
    }

    /// A snapshot the group takes at `index` (its conf state kept).
    fn compact(&mut self, gid: u64, index: u64) {
        let g = self.group(gid);
        let term = g.terms[(index - g.first) as usize];
        g.terms.drain(..=(index - g.first) as usize);
        g.first = index + 1;
        g.snap = Some((index, term));
    }

    /// A received snapshot: it replaces the log, its conf state becomes the group's.
    fn install(&mut self, gid: u64, index: u64, term: u64, voters: &[u64]) {
        let g = self.group(gid);
        g.first = index + 1;
        g.terms.clear();
        g.snap = Some((index, term));
        g.voters = voters.to_vec();
    }

    fn view(&self) -> RootView {
        self.groups
            .iter()
            .map(|(&gid, g)| {
                let v = View {
                    first: g.first,
                    last: g.first + g.terms.len() as u64 - 1,
                    terms: g.terms.clone(),
                    hs: g.hs,
                    voters: g.voters.clone(),
                    snap: g.snap,
                };
                (gid, v)
            })
            .collect()
    }
}

/// Checks that the engine shows what the model says.
fn agree(e: &Engine, model: &Model, step: &str) -> Result<RootView, String> {
    let seen = view_root(e, Forged::default())?;
    let want = model.view();
    ensure!(
        seen == want,
        "template, {step}: the engine shows\n {seen:?}\nthe model says\n {want:?}"
    );
    Ok(want)
}

// ---------------------------------------------------------------------------------------------
// the template
// ---------------------------------------------------------------------------------------------

/// Relative path -> content (`None`: a directory).
type Img = BTreeMap<String, Option<Vec<u8>>>;

/// One journal record in the image.
#[derive(Clone, Debug)]
struct Rec {
    file: String,
    at: usize,
    len: usize,
    seq: u64,
}

pub struct Template {
    img: Img,
    /// `views[k]`: every group after `k` phase B writes.
    views: Vec<RootView>,
    /// The live segments (name order) and their records after the checkpoint.
    segments: Vec<String>,
    records: Vec<Rec>,
    checkpoint: u64,
    /// For each group: its `.wal` files and the indexes of phase A entries in them that are
    /// live (above the snapshot), with their slot position: (file, index, slot offset). Empty
    /// for a group whose log a received snapshot replaced.
    durable_slots: BTreeMap<u64, Vec<(String, u64, usize)>>,
    /// Snapshots received in phase B: (group, journal record, index).
    installs: Vec<(u64, u64, u64)>,
}

/// Phase B: group 3 receives snapshots with these writes (1-based), group 4 takes one itself
/// after this write; all early, so that their records are not in the last segment (the torn
/// tail classes cut there, after them).
const INSTALLS_AT: [usize; 2] = [2, 5];
const COMPACT_AFTER: usize = 3;
/// The conf state of the snapshots group 3 receives.
const INSTALL_VOTERS: [u64; 4] = [1, 2, 3, 4];

fn template() -> &'static Template {
    static T: OnceLock<Template> = OnceLock::new();
    T.get_or_init(|| {
        // A background checkpoint (every 5 s of an open engine) during phase B would leave
        // fewer records after the checkpoint than the template needs: build it again.
        let mut last = String::new();
        for _ in 0..3 {
            match build_template() {
                Ok(t) => return t,
                Err(e) => last = e,
            }
        }
        panic!("build the engine template: {last}")
    })
}

/// One batch across the groups (entries of `term`); group `install`, if any, receives a
/// snapshot 5 past its last index first (its entries follow the snapshot). Returns the index
/// of that snapshot.
fn write_batch(
    e: &Engine,
    r: &mut u64,
    next: &mut BTreeMap<u64, u64>,
    term: u64,
    install: Option<u64>,
    model: &mut Model,
) -> Result<Option<u64>, String> {
    let mut b = WriteBatch::new();
    let mut installed = None;
    for gid in 1..=GROUPS {
        *r = splitmix(*r);
        // Most groups in every batch, group 1 in all: one journal record per batch.
        if gid > 1 && (*r).is_multiple_of(4) && install != Some(gid) {
            continue;
        }
        let mut snap = Snapshot::default();
        if install == Some(gid) {
            let index = next[&gid] + 4;
            snap.mut_metadata().index = index;
            snap.mut_metadata().term = term;
            snap.mut_metadata().mut_conf_state().voters = INSTALL_VOTERS.to_vec();
            snap.data = snap_data(gid, index);
            model.install(gid, index, term, &INSTALL_VOTERS);
            next.insert(gid, index + 1);
            installed = Some(index);
        }
        let lo = next[&gid];
        let n = 1 + *r % 8;
        let es: Vec<Entry> = (lo..lo + n).map(|i| template_entry(gid, i, term)).collect();
        b.save(gid, &hard_state(term, lo + n - 1), &es, &snap);
        model.append(gid, lo, n, term, (term, 1, lo + n - 1));
        next.insert(gid, lo + n);
    }
    e.write(&mut b).map_err(|x| x.to_string())?;
    Ok(installed)
}

fn build_template() -> Result<Template, String> {
    let tmp = scratch_dir("raftwal-fuzz-engine-template");
    let root = tmp.path().join("root");
    let err = |x: raftwal::Error| x.to_string();
    let mut r = 7u64;
    let mut next: BTreeMap<u64, u64> = (1..=GROUPS).map(|g| (g, 1)).collect();
    let mut model = Model::default();
    {
        let e =
            Engine::open_with(&root, opts(RecoveryMode::TolerateTailCorruption)).map_err(err)?;
        for gid in 1..=GROUPS {
            e.create_group(gid, 10 + gid).map_err(err)?;
            model.create(gid);
        }
        for _ in 0..30 {
            write_batch(&e, &mut r, &mut next, 1, None, &mut model)?;
        }
        let g2 = e.group(2).ok_or("group 2")?;
        let at = next[&2] / 2;
        g2.create_snapshot(at, None, snap_data(2, at))
            .map_err(err)?;
        model.compact(2, at);
        let mut cs = ConfState::default();
        cs.voters = vec![1, 2, 3];
        e.group(1)
            .ok_or("group 1")?
            .set_conf_state(&cs)
            .map_err(err)?;
        model.group(1).voters = cs.voters.clone();
        // More than a segment: the close's trim leaves a spare, which phase B recycles.
        for _ in 0..40 {
            write_batch(&e, &mut r, &mut next, 1, None, &mut model)?;
        }
        agree(&e, &model, "after phase A")?;
        e.close().map_err(err)?;
    }
    let e = Engine::open_with(&root, opts(RecoveryMode::TolerateTailCorruption)).map_err(err)?;
    let mut views = vec![agree(&e, &model, "after the reopen")?];
    let mut installs = Vec::new();
    for k in 1..=PHASE_B {
        let install = INSTALLS_AT.contains(&k).then_some(3);
        if let Some(index) = write_batch(&e, &mut r, &mut next, 2, install, &mut model)? {
            installs.push((3, k as u64, index));
        }
        if k == COMPACT_AFTER {
            // Half of phase A's entries: the other half stay live in the files.
            let at = views[0][&4].last / 2;
            let g4 = e.group(4).ok_or("group 4")?;
            g4.create_snapshot(at, None, snap_data(4, at))
                .map_err(err)?;
            model.compact(4, at);
        }
        views.push(agree(&e, &model, &format!("phase B write {k}"))?);
    }
    let img = read_image(&root);
    e.close().map_err(err)?;

    // The journal as the image holds it, decoded independently of the engine.
    let checkpoint = root_checkpoint(&img).ok_or("engine.meta has no valid copy")?;
    let mut names: Vec<String> = img
        .keys()
        .filter(|n| {
            n.starts_with("journal/")
                && n.len() == "journal/".len() + segment_name(1).len()
                && n.ends_with(".jnl")
        })
        .cloned()
        .collect();
    names.sort();
    let mut segments = Vec::new();
    let mut records = Vec::new();
    let mut want: Option<u64> = None;
    for name in &names {
        let Some(Some(b)) = img.get(name) else {
            continue;
        };
        let first = u64::from_le_bytes(
            b[SEGMENT_FIRST_SEQ_AT..SEGMENT_FIRST_SEQ_AT + 8]
                .try_into()
                .map_err(|_| "header")?,
        );
        let mut at = SEGMENT_RECORDS_AT;
        let mut seq = want.unwrap_or(first);
        let mut live = false;
        while at + RECORD_HEADER_LEN <= b.len() {
            let l = at + RECORD_LEN_AT;
            let len = u32::from_le_bytes(b[l..l + 4].try_into().unwrap()) as usize;
            let q = at + RECORD_SEQ_AT;
            let s = u64::from_le_bytes(b[q..q + 8].try_into().unwrap());
            if s != seq || at + RECORD_HEADER_LEN + len > b.len() {
                break;
            }
            if s > checkpoint {
                live = true;
                records.push(Rec {
                    file: name.clone(),
                    at,
                    len: RECORD_HEADER_LEN + len,
                    seq: s,
                });
            }
            seq += 1;
            at = (at + RECORD_HEADER_LEN + len).next_multiple_of(RECORD_ALIGN);
        }
        want = Some(seq);
        if live {
            segments.push(name.clone());
        }
    }
    if records.len() != PHASE_B || segments.len() < 2 {
        return Err(format!(
            "unexpected template journal: {} records after checkpoint {checkpoint} in {segments:?} (files {names:?})",
            records.len()
        ));
    }
    // Phase B write k is record checkpoint + k.
    let installs: Vec<(u64, u64, u64)> = installs
        .into_iter()
        .map(|(gid, k, index)| (gid, checkpoint + k, index))
        .collect();
    let last_seg = segments.last().cloned().unwrap_or_default();
    let early = INSTALLS_AT
        .iter()
        .max()
        .copied()
        .unwrap_or(0)
        .max(COMPACT_AFTER) as u64;
    ensure!(
        records
            .iter()
            .all(|r| r.seq > checkpoint + early || r.file != last_seg),
        "template: phase B's snapshot records reach the last segment {last_seg}"
    );
    let full = views.last().ok_or("views")?;
    let mut durable_slots = BTreeMap::new();
    for gid in 1..=GROUPS {
        // Phase A's entries that phase B did not compact (or replace).
        let v = &views[0][&gid];
        let first = v.first.max(full[&gid].first);
        let mut slots = Vec::new();
        for (name, node) in &img {
            let prefix = format!("groups/{gid}/");
            let Some(file) = name.strip_prefix(&prefix) else {
                continue;
            };
            let Some(Some(b)) = node.as_ref().map(|b| (file.ends_with(".wal")).then_some(b)) else {
                continue;
            };
            for k in 0..SLOTS_PER_FILE as usize {
                let at = k * SLOT_LEN;
                let Some(s) = b.get(at..at + SLOT_LEN) else {
                    break;
                };
                let index =
                    u64::from_le_bytes(s[SLOT_INDEX_AT..SLOT_INDEX_AT + 8].try_into().unwrap());
                if index == 0 {
                    continue;
                }
                if index >= first && index <= v.last {
                    slots.push((name.clone(), index, at));
                }
            }
        }
        durable_slots.insert(gid, slots);
    }
    // Group 3's log was replaced by the snapshots it received; every other group has some.
    if (1..=GROUPS).any(|g| g != 3 && durable_slots[&g].is_empty()) {
        return Err("a group has no durable slot in the template".into());
    }
    Ok(Template {
        img,
        views,
        segments,
        records,
        checkpoint,
        durable_slots,
        installs,
    })
}

/// Every file and directory under `root` (the lock file aside), with the files' bytes.
pub fn read_image(root: &Path) -> Img {
    fn walk(root: &Path, rel: &str, img: &mut Img) {
        let dir = if rel.is_empty() {
            root.to_path_buf()
        } else {
            root.join(rel)
        };
        let Ok(rd) = fs::read_dir(&dir) else { return };
        for ent in rd.flatten() {
            let name = ent.file_name().to_string_lossy().into_owned();
            let r = if rel.is_empty() {
                name.clone()
            } else {
                format!("{rel}/{name}")
            };
            let Ok(ft) = ent.file_type() else { continue };
            if ft.is_dir() {
                img.insert(r.clone(), None);
                walk(root, &r, img);
            } else if name != LOCK_FILE {
                img.insert(r, Some(fs::read(ent.path()).unwrap_or_default()));
            }
        }
    }
    let mut img = Img::new();
    walk(root, "", &mut img);
    img
}

/// The regions of a meta file (`engine.meta`, `wal.meta`): (offset, length) of each copy that
/// has its magic, and the checkpoint sequence of the newest valid `engine.meta` copy.
fn regions(b: &[u8]) -> Vec<(usize, usize, u64, Option<Vec<u8>>)> {
    let half = b.len() / 2;
    let mut out = Vec::new();
    for at in [0, half] {
        let Some(h) = b.get(at..at + META_RECORD_AT) else {
            continue;
        };
        let seq = u64::from_le_bytes(h[META_SEQ_AT..META_SEQ_AT + 8].try_into().unwrap());
        let len = u32::from_le_bytes(
            h[META_RECORD_LEN_AT..META_RECORD_LEN_AT + 4]
                .try_into()
                .unwrap(),
        ) as usize;
        let crc = u32::from_le_bytes(h[META_CRC_AT..META_CRC_AT + 4].try_into().unwrap());
        let rec = b
            .get(at + META_RECORD_AT..at + META_RECORD_AT + len)
            .filter(|_| META_RECORD_AT + len <= half);
        let valid =
            rec.filter(|r| crc32c::crc32c_append(crc32c::crc32c(&h[..META_CRC_AT]), r) == crc);
        out.push((
            at,
            META_RECORD_AT + len.min(half.saturating_sub(META_RECORD_AT)),
            seq,
            valid.map(<[u8]>::to_vec),
        ));
    }
    out
}

fn root_checkpoint(img: &Img) -> Option<u64> {
    let Some(Some(b)) = img.get(ENGINE_META_FILE) else {
        return None;
    };
    regions(b)
        .into_iter()
        .filter_map(|(_, _, seq, rec)| Some((seq, pb_varint(&pb_decode(&rec?)?, 1))))
        .max()
        .map(|(_, cp)| cp)
}

fn write_image(img: &Img, dir: &Path) -> Result<(), String> {
    for (name, node) in img {
        let p = dir.join(name);
        match node {
            None => fs::create_dir_all(&p).map_err(|e| format!("mkdir {name}: {e}"))?,
            Some(b) => {
                if let Some(parent) = p.parent() {
                    fs::create_dir_all(parent).map_err(|e| format!("mkdir: {e}"))?;
                }
                let f = fs::File::create(&p).map_err(|e| format!("create {name}: {e}"))?;
                const ZERO: [u8; 4096] = [0; 4096];
                for (k, block) in b.chunks(4096).enumerate() {
                    if block != &ZERO[..block.len()] {
                        f.write_all_at(block, (k * 4096) as u64)
                            .map_err(|e| format!("write {name}: {e}"))?;
                    }
                }
                f.set_len(b.len() as u64)
                    .map_err(|e| format!("set_len {name}: {e}"))?;
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// opening a damaged root
// ---------------------------------------------------------------------------------------------

/// What opening a damaged root gave in one mode.
enum Opened {
    Root(RootView),
    Refused(String),
    /// Open succeeded but reading a group failed (the message).
    ReadError(String),
}

/// Opens the image in `mode` and reads every group; an open that fails must leave every file
/// as it was (a refused open changes nothing, replay's refusals included).
fn open_and_read(img: &Img, mode: RecoveryMode, forged: Forged) -> Result<Opened, String> {
    let tmp = scratch_dir("raftwal-fuzz-engine");
    let dir = tmp.path().join("root");
    write_image(img, &dir)?;
    let e = match Engine::open_with(&dir, opts(mode)) {
        Ok(e) => e,
        Err(err) => {
            let after = read_image(&dir);
            let changed: Vec<&String> = img
                .keys()
                .chain(after.keys())
                .filter(|k| img.get(*k) != after.get(*k))
                .collect();
            ensure!(
                changed.is_empty(),
                "{mode:?}: the open failed ({err}) but changed {changed:?}"
            );
            return Ok(Opened::Refused(err.to_string()));
        }
    };
    let r = match view_root(&e, forged) {
        Ok(v) => Opened::Root(v),
        Err(msg)
            if msg.contains("not genuine")
                || msg.contains("disagrees")
                || msg.contains("first") && msg.contains("> last") =>
        {
            return Err(msg)
        }
        Err(msg) => Opened::ReadError(msg),
    };
    // Close errors are allowed (a damaged file may fail a checkpoint); a panic is not.
    let _ = e.close();
    Ok(r)
}

/// What the read-only tools made of a root: whether a default open would fail, and each
/// group's state after replay (first, last, hard state, snapshot) where they could tell.
struct ToolsView {
    open_error: Option<String>,
    groups: BTreeMap<u64, ToolsGroup>,
}

/// First and last index, hard state (term, vote, commit), snapshot (index, term).
type ToolsGroup = (u64, u64, (u64, u64, u64), Option<(u64, u64)>);

/// The read-only tools on the damaged root (`raftwal inspect|verify|dump`: a recovery of their
/// own, run beside a live engine in real use): a report or a typed error, never a panic, and
/// nothing changed. What they say a default open does and what it would serve is checked
/// against the engine's opens of the same root in [`run`] (two recoveries, one answer).
fn inspect(img: &Img) -> Result<Option<ToolsView>, String> {
    use raftwal::inspect::engine::EngineInspector;
    let tmp = scratch_dir("raftwal-fuzz-tools");
    let dir = tmp.path().join("root");
    write_image(img, &dir)?;
    let before = read_image(&dir);
    let mut view = None;
    if let Ok(mut ins) = EngineInspector::open_once(&dir, None, None) {
        let sum = ins.summary();
        view = Some(ToolsView {
            open_error: sum.open_error.clone(),
            groups: sum
                .groups
                .iter()
                .filter_map(|g| {
                    let st = g.after_replay.as_ref().filter(|_| g.damage.is_none())?;
                    let hs = &st.hard_state;
                    Some((
                        g.group_id,
                        (
                            st.first_index,
                            st.last_index,
                            (hs.term, hs.vote, hs.commit),
                            st.snapshot.as_ref().map(|s| (s.index, s.term)),
                        ),
                    ))
                })
                .collect(),
        });
        let _ = ins.verify(&mut |_| {});
    }
    for gid in 1..=GROUPS {
        let Ok(ins) = EngineInspector::open_once(&dir, None, Some(gid)) else {
            continue;
        };
        if let Ok((first, last)) = ins.first_last() {
            if first <= last {
                let _ = ins.entries(first, last.min(first + 500) + 1);
            }
        }
        if let Ok(mut r) = ins.snapshot_reader() {
            let _ = std::io::copy(&mut r, &mut std::io::sink());
        }
    }
    ensure!(
        read_image(&dir) == before,
        "the read-only tools changed the root"
    );
    Ok(view)
}

/// The tools' view against what the engine did: a default open fails exactly when they say it
/// would, and a group the engine opened strictly shows the state they read for it.
fn compare_tools(tools: &ToolsView, strict: &Opened, tolerant: &Opened) -> Result<(), String> {
    let refused = |o: &Opened| match o {
        Opened::Refused(msg) => Some(msg.clone()),
        _ => None,
    };
    ensure!(
        tools.open_error.is_some() == refused(tolerant).is_some(),
        "the tools say a default open {}, but it {}",
        tools
            .open_error
            .as_ref()
            .map_or("succeeds".to_string(), |m| format!("fails ({m})")),
        refused(tolerant).map_or("succeeded".to_string(), |m| format!("failed: {m}"))
    );
    if let Opened::Root(v) = strict {
        for (gid, g) in v {
            let Some(&(first, last, hs, snap)) = tools.groups.get(gid) else {
                continue;
            };
            // The engine reports a commit of at least the snapshot's index (entries in a
            // snapshot are committed); the tools show the hard state as stored.
            let snap_index = snap.map_or(0, |(index, _)| index);
            let hs = (hs.0, hs.1, hs.2.max(snap_index));
            ensure!(
                (first, last, hs, snap) == (g.first, g.last, g.hs, g.snap),
                "group {gid}: the tools read log {first}..={last}, hard state {hs:?}, snapshot {snap:?}; the engine opened {}..={}, {:?}, {:?}",
                g.first,
                g.last,
                g.hs,
                g.snap
            );
        }
    }
    Ok(())
}

/// What a fuzz input did.
#[derive(Default, Debug, Clone, Copy)]
pub struct Stats {
    pub mutations: usize,
    pub strict_opened: bool,
    pub tolerant_opened: bool,
}

/// The fuzz target: mutations from `data` on the template, opened in both modes.
pub fn run(data: &[u8]) -> Result<Stats, String> {
    let t = template();
    let mut img = t.img.clone();
    let files: Vec<String> = img
        .iter()
        .filter(|(_, n)| n.is_some())
        .map(|(k, _)| k.clone())
        .collect();
    let mut recs = t.records.clone();
    let mut r = Reader::new(data);
    let mut stats = Stats::default();
    let mut forged = Forged::default();
    while !r.is_empty() && stats.mutations < MAX_OPS {
        let op = r.u8();
        let name = files[usize::from(r.u8()) % files.len()].clone();
        if op >= FORGE_OP {
            // A meta page copy rewritten with a forged field and a valid checksum.
            stats.mutations += 1;
            forged.any = true;
            forge_meta(&mut img, &files, usize::from(op - FORGE_OP), &mut r);
            continue;
        }
        if op >= FORGE_RECORD_OP {
            // A journal record with a forged field and a valid checksum.
            stats.mutations += 1;
            forged.any = true;
            forge_record(
                &mut img,
                &mut recs,
                usize::from(op - FORGE_RECORD_OP),
                &mut r,
                &mut forged,
            );
            continue;
        }
        // Offsets mostly near interesting places: the start, the payload area, the end.
        let raw = r.u32() as usize;
        let Some(Some(b)) = img.get_mut(&name) else {
            continue;
        };
        let off = match r.u8() % 4 {
            0 => raw % 4096,
            1 => PAYLOADS_AT + raw % 65_536,
            2 => b.len().saturating_sub(1 + raw % 8192),
            _ => raw % b.len().max(1),
        };
        stats.mutations += 1;
        match op % 8 {
            0 | 1 => {
                let x = r.u8() | 1;
                if let Some(v) = b.get_mut(off) {
                    *v ^= x;
                }
            }
            2 => {
                let n = usize::from(r.u8() % 32);
                let bytes = r.bytes(n).to_vec();
                let end = (off + bytes.len()).min(MAX_FILE_LEN);
                if b.len() < end {
                    b.resize(end, 0);
                }
                b[off.min(end)..end].copy_from_slice(&bytes[..end - off.min(end)]);
            }
            3 => {
                let n = usize::from(r.u16());
                let end = (off + n).min(b.len());
                if off < end {
                    b[off..end].fill(0);
                }
            }
            4 => b.truncate(off),
            5 => {
                let n = usize::from(r.u16() % 4096);
                let g = r.u64();
                b.extend((0..n).map(|k| (splitmix(g ^ k as u64) & 0xff) as u8));
                b.truncate(MAX_FILE_LEN);
            }
            6 => {
                img.remove(&name);
            }
            _ => {
                // A copy under another journal segment's name (a recycled or stray segment).
                let id = 1 + u64::from(r.u8() % 12);
                let copy = b.clone();
                img.insert(format!("journal/{}", segment_name(id)), Some(copy));
            }
        }
    }
    let tools = inspect(&img)?;
    let strict = open_and_read(&img, RecoveryMode::AbsoluteConsistency, forged)?;
    let tolerant = open_and_read(&img, RecoveryMode::TolerateTailCorruption, forged)?;
    if let Some(tools) = &tools {
        compare_tools(tools, &strict, &tolerant)?;
    }
    // A record after the checkpoint that still holds a part with a kind no version defines,
    // whole and with a valid checksum, which every record from the checkpoint to it leads to
    // unbroken (so that no earlier record ends the journal before it), is refused by a strict
    // open (a tolerant one may also cut the journal at damage elsewhere).
    if let Some(cp) = root_checkpoint(&img) {
        if let Some(seq) = forged
            .undefined_kind
            .into_iter()
            .filter(|&s| s > cp)
            .find(|&s| reaches_undefined_kind(&img, &recs, cp, s))
        {
            ensure!(
                matches!(strict, Opened::Refused(_)),
                "strict: record {seq} holds a part with an undefined kind: {}",
                describe(&strict)
            );
        }
    }
    if let (Opened::Root(s), Opened::Root(t)) = (&strict, &tolerant) {
        ensure!(
            s == t,
            "strict and tolerant opens differ:\n strict   {s:?}\n tolerant {t:?}"
        );
    }
    stats.strict_opened = matches!(strict, Opened::Root(_));
    stats.tolerant_opened = matches!(tolerant, Opened::Root(_));
    Ok(stats)
}

/// Operation bytes from this one on forge a meta page ([`forge_meta`]); from
/// [`FORGE_RECORD_OP`] to it, a journal record ([`forge_record`]); below, `op % 8` picks a
/// byte-level mutation.
pub const FORGE_OP: u8 = 0xf8;
pub const FORGE_RECORD_OP: u8 = 0xf0;

// A part's layout (docs/FORMAT.md, "Journal record"; tests/common/layout.rs), as offsets.
use layout::{
    PART_KIND_CONF_STATE as KIND_CONF_STATE, PART_KIND_ENTRIES as KIND_ENTRIES,
    PART_KIND_HARD_STATE as KIND_HARD_STATE, PART_KIND_INTS as KIND_INTS,
    PART_KIND_SNAPSHOT as KIND_SNAPSHOT, PART_KIND_TRUNCATE as KIND_TRUNCATE,
};
const KINDS_DEFINED: u8 =
    KIND_SNAPSHOT | KIND_ENTRIES | KIND_HARD_STATE | KIND_CONF_STATE | KIND_INTS | KIND_TRUNCATE;
const PART_INCARNATION_AT: usize = layout::PART_INCARNATION_AT as usize;
const PART_KINDS_AT: usize = layout::PART_KINDS_AT as usize;
const PART_SECTIONS_AT: usize = layout::PART_SECTIONS_AT as usize;
const ENTRY_TYPE_AT: usize = layout::PART_ENTRY_TYPE_AT as usize;
const ENTRY_DATA_LEN_AT: usize = layout::PART_ENTRY_DATA_LEN_AT as usize;
const ENTRY_CONTEXT_LEN_AT: usize = layout::PART_ENTRY_CONTEXT_LEN_AT as usize;
const ENTRY_HEADER_LEN: usize = layout::PART_ENTRY_HEADER_LEN as usize;

/// Where one part of a record's body lies: its start, its kinds byte and each section present
/// as (kind, start, end), all offsets into the body.
struct PartLayout {
    at: usize,
    gid: u64,
    kinds: u8,
    sections: Vec<(u8, usize, usize)>,
    end: usize,
}

/// The parts of a record's body as docs/FORMAT.md lays them out, read independently of the
/// engine; stops at the first part that does not fit.
fn layout_parts(body: &[u8]) -> Vec<PartLayout> {
    let u32_at = |at: usize| {
        body.get(at..at + 4)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap()) as usize)
    };
    let mut out = Vec::new();
    let mut at = 0;
    'parts: while at + PART_SECTIONS_AT <= body.len() {
        let gid = u64::from_le_bytes(body[at..at + 8].try_into().unwrap());
        let kinds = body[at + PART_KINDS_AT];
        let mut p = PartLayout {
            at,
            gid,
            kinds,
            sections: Vec::new(),
            end: 0,
        };
        let mut pos = at + PART_SECTIONS_AT;
        for kind in [
            KIND_SNAPSHOT,
            KIND_ENTRIES,
            KIND_HARD_STATE,
            KIND_CONF_STATE,
            KIND_INTS,
            KIND_TRUNCATE,
        ] {
            if kinds & kind == 0 {
                continue;
            }
            let start = pos;
            pos += match kind {
                KIND_SNAPSHOT | KIND_CONF_STATE => {
                    let Some(n) = u32_at(pos) else { break 'parts };
                    4 + n
                }
                KIND_ENTRIES => {
                    let Some(n) = u32_at(pos) else { break 'parts };
                    let mut e = pos + 4;
                    for _ in 0..n {
                        let (Some(dl), Some(cl)) = (
                            u32_at(e + ENTRY_DATA_LEN_AT),
                            u32_at(e + ENTRY_CONTEXT_LEN_AT),
                        ) else {
                            break 'parts;
                        };
                        e += ENTRY_HEADER_LEN + dl + cl;
                    }
                    e - pos
                }
                KIND_HARD_STATE | KIND_INTS => 24,
                _ => 8,
            };
            if pos > body.len() {
                break 'parts;
            }
            p.sections.push((kind, start, pos));
        }
        p.end = pos;
        at = pos;
        out.push(p);
    }
    out
}

/// The fixed-width fields of a record's body, as (offset in the body, width, what): what
/// [`forge_record`] may change without moving a byte. Lengths and counts are among them, so a
/// record that says its sections are longer or shorter than they are is forged too.
fn record_fields(body: &[u8]) -> Vec<(usize, usize, &'static str)> {
    let mut out = Vec::new();
    for p in layout_parts(body) {
        // The group id is left alone: a part moved to another group with its incarnation is
        // a record no check can tell from a genuine one.
        out.push((p.at + PART_INCARNATION_AT, 8, "incarnation"));
        out.push((p.at + PART_KINDS_AT, 1, "kinds"));
        for &(kind, at, end) in &p.sections {
            match kind {
                KIND_SNAPSHOT => out.push((at, 4, "snapshot length")),
                KIND_CONF_STATE => out.push((at, 4, "conf state length")),
                KIND_ENTRIES => {
                    out.push((at, 4, "entry count"));
                    let mut e = at + 4;
                    while e + ENTRY_HEADER_LEN <= end {
                        out.push((e, 8, "entry index"));
                        out.push((e + 8, 8, "entry term"));
                        out.push((e + ENTRY_TYPE_AT, 1, "entry type"));
                        out.push((e + ENTRY_DATA_LEN_AT, 4, "entry data length"));
                        out.push((e + ENTRY_CONTEXT_LEN_AT, 4, "entry context length"));
                        let n = |k: usize| {
                            u32::from_le_bytes(body[k..k + 4].try_into().unwrap()) as usize
                        };
                        e += ENTRY_HEADER_LEN
                            + n(e + ENTRY_DATA_LEN_AT)
                            + n(e + ENTRY_CONTEXT_LEN_AT);
                    }
                }
                KIND_HARD_STATE => {
                    out.push((at, 8, "hard state term"));
                    out.push((at + 8, 8, "hard state vote"));
                    out.push((at + 16, 8, "hard state commit"));
                }
                KIND_INTS => {
                    out.push((at, 8, "raft id"));
                    out.push((at + 8, 8, "group id (ints)"));
                    out.push((at + 16, 8, "checkpoint index"));
                }
                _ => out.push((at, 8, "truncate index")),
            }
        }
    }
    out.retain(|&(o, w, _)| o + w <= body.len());
    out
}

/// Rewrites live journal record `which` (or one near it) as a writer's bug would leave it, with
/// a valid checksum: one to three fixed-width fields changed in place (an entry's index, term or
/// type, a length or count, a hard state, a part's incarnation, ...); or a snapshot's record
/// (its index, term, data length and checksum, conf state) rewritten; or a section the part did
/// not have added to it (a hard state, a conf state, the ids and checkpoint index, a truncation,
/// a snapshot). A record whose length changes moves the records after it in its segment
/// (`recs` follows them). Open must refuse the record (naming its segment or the group's meta
/// page) or open a root whose logs are logs: contiguous, terms that agree, commits within the
/// log, every group's data its own. A part's kinds byte may get a known bit flipped (its
/// sections then read as others) or a bit no kind defines, which open must refuse. Notes in
/// `forged` the group and index of a truncation it forged (the group's Normal entries below
/// it may then read back empty), each of them, and a record given an undefined kind.
fn forge_record(
    img: &mut Img,
    recs: &mut [Rec],
    which: usize,
    r: &mut Reader,
    forged: &mut Forged,
) -> Option<()> {
    if recs.is_empty() {
        return None;
    }
    let mut k = (which + usize::from(r.u8())) % recs.len();
    let mode = r.u8() % 4;
    let body_of = |img: &Img, rec: &Rec| -> Option<Vec<u8>> {
        let Some(Some(b)) = img.get(&rec.file) else {
            return None;
        };
        b.get(rec.at + RECORD_HEADER_LEN..rec.at + rec.len)
            .map(<[u8]>::to_vec)
    };
    if mode == 2 {
        // The records that install a snapshot: the next one from `k` on.
        let has_snapshot = |rec: &Rec| {
            body_of(img, rec).is_some_and(|b| {
                layout_parts(&b)
                    .iter()
                    .any(|p| p.kinds & KIND_SNAPSHOT != 0)
            })
        };
        let j = (0..recs.len())
            .map(|d| (k + d) % recs.len())
            .find(|&j| has_snapshot(&recs[j]))?;
        k = j;
    }
    let mut body = body_of(img, &recs[k])?;
    match mode {
        0 | 1 => {
            let fields = record_fields(&body);
            if fields.is_empty() {
                return None;
            }
            for _ in 0..1 + r.u8() % 3 {
                let pick = usize::from(r.u16());
                // One pick in eight a kinds byte, whatever the count of the other fields.
                let kinds: Vec<_> = fields.iter().filter(|f| f.2 == "kinds").collect();
                let (at, width, what) = if pick % 8 == 0 && !kinds.is_empty() {
                    *kinds[pick / 8 % kinds.len()]
                } else {
                    fields[pick % fields.len()]
                };
                match width {
                    1 if what == "kinds" => {
                        body[at] ^= match r.u8() % 3 {
                            0 => 1 << (r.u8() % 6),
                            1 => 0x40 << (r.u8() % 2),
                            _ => r.u8(),
                        };
                        if body[at] & !KINDS_DEFINED != 0 {
                            let seq = recs[k].seq;
                            if let Some(free) = forged.undefined_kind.iter_mut().find(|s| **s == 0)
                            {
                                *free = seq;
                            }
                        }
                    }
                    1 => {
                        body[at] = match r.u8() % 3 {
                            0 => body[at].wrapping_add(1),
                            1 => 3,
                            _ => r.u8(),
                        }
                    }
                    4 => {
                        let cur = u32::from_le_bytes(body[at..at + 4].try_into().unwrap());
                        let v = match r.u8() % 4 {
                            0 => cur.wrapping_add(i32::from(r.u8() as i8) as u32),
                            1 => 0,
                            2 => u32::MAX,
                            _ => r.u32(),
                        };
                        body[at..at + 4].copy_from_slice(&v.to_le_bytes());
                    }
                    _ => {
                        let cur = u64::from_le_bytes(body[at..at + 8].try_into().unwrap());
                        let v = forged_value(r, cur);
                        body[at..at + 8].copy_from_slice(&v.to_le_bytes());
                        if what == "truncate index" {
                            let gid = layout_parts(&body)
                                .iter()
                                .find(|p| p.at < at && at < p.end)
                                .map_or(0, |p| p.gid);
                            forged.truncated(gid, v);
                        }
                    }
                }
            }
        }
        2 => {
            let parts = layout_parts(&body);
            let &(_, at, end) = parts
                .iter()
                .flat_map(|p| p.sections.iter())
                .find(|s| s.0 == KIND_SNAPSHOT)?;
            let mut rec = pb_decode(&body[at + 4..end])?;
            for _ in 0..1 + r.u8() % 3 {
                forge_snapshot_field(&mut rec, r);
            }
            let pb = pb_encode(&rec);
            let mut section = (pb.len() as u32).to_le_bytes().to_vec();
            section.extend_from_slice(&pb);
            body.splice(at..end, section);
        }
        _ => {
            let parts = layout_parts(&body);
            if parts.is_empty() {
                return None;
            }
            let p = &parts[usize::from(r.u8()) % parts.len()];
            const ADDED: [u8; 5] = [
                KIND_HARD_STATE,
                KIND_CONF_STATE,
                KIND_INTS,
                KIND_TRUNCATE,
                KIND_SNAPSHOT,
            ];
            let kind = ADDED[usize::from(r.u8()) % ADDED.len()];
            if p.kinds & kind != 0 {
                return None;
            }
            // The part's first entry index, a plausible value to start a forged one from.
            let near = p
                .sections
                .iter()
                .find(|s| s.0 == KIND_ENTRIES)
                .and_then(|&(_, at, _)| body.get(at + 4..at + 12))
                .map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap()));
            let mut section = Vec::new();
            let u64s = |section: &mut Vec<u8>, vs: &[u64]| {
                for v in vs {
                    section.extend_from_slice(&v.to_le_bytes());
                }
            };
            match kind {
                KIND_HARD_STATE => {
                    let vs = [
                        forged_value(r, 2),
                        forged_value(r, 1),
                        forged_value(r, near),
                    ];
                    u64s(&mut section, &vs);
                }
                KIND_INTS => {
                    let vs = [
                        forged_value(r, 1),
                        forged_value(r, p.gid),
                        forged_value(r, near),
                    ];
                    u64s(&mut section, &vs);
                }
                KIND_TRUNCATE => {
                    let v = forged_value(r, near);
                    forged.truncated(p.gid, v);
                    u64s(&mut section, &[v]);
                }
                KIND_CONF_STATE => {
                    let mut cs = PbMsg::new();
                    pb_set_varint(&mut cs, 1, forged_value(r, 1));
                    let pb = pb_encode(&cs);
                    section.extend_from_slice(&(pb.len() as u32).to_le_bytes());
                    section.extend_from_slice(&pb);
                }
                _ => {
                    let mut sn = PbMsg::new();
                    pb_set_varint(&mut sn, 1, forged_value(r, near));
                    pb_set_varint(&mut sn, 2, forged_value(r, 2));
                    for _ in 0..r.u8() % 3 {
                        forge_snapshot_field(&mut sn, r);
                    }
                    let pb = pb_encode(&sn);
                    section.extend_from_slice(&(pb.len() as u32).to_le_bytes());
                    section.extend_from_slice(&pb);
                }
            }
            // Sections lie in the order of their kinds' bits.
            let insert_at = p
                .sections
                .iter()
                .find(|s| s.0 > kind)
                .map_or(p.end, |s| s.1);
            body[p.at + PART_KINDS_AT] |= kind;
            body.splice(insert_at..insert_at, section);
        }
    }
    put_record(img, recs, k, &body);
    Some(())
}

/// One field of a `SnapshotRecord` (proto/raftwal.proto) set to a forged value, or its conf
/// state dropped.
fn forge_snapshot_field(rec: &mut PbMsg, r: &mut Reader) {
    // (sub-record, field): 0 is the record itself, 3 its conf state.
    const FIELDS: [(u32, u32); 11] = [
        (0, 1),
        (0, 2),
        (0, 4),
        (0, 5),
        (0, 6),
        (3, 1),
        (3, 2),
        (3, 3),
        (3, 4),
        (3, 5),
        (3, 0),
    ];
    match FIELDS[usize::from(r.u8()) % FIELDS.len()] {
        (3, 0) => pb_set_sub(rec, 3, None),
        (0, f) => {
            let v = forged_value(r, pb_varint(rec, f));
            pb_set_varint(rec, f, if f == 5 { v & 0xffff_ffff } else { v });
        }
        (sub, f) => {
            let mut m = pb_sub(rec, sub).unwrap_or_default();
            let v = forged_value(r, pb_varint(&m, f));
            pb_set_varint(&mut m, f, if f == 5 { v & 1 } else { v });
            pb_set_sub(rec, sub, Some(&m));
        }
    }
}

/// Whether record `seq` holds a part whose kinds byte has a bit no kind defines, and it and
/// every record from `checkpoint + 1` to it lie in `img` where `recs` places them, whole, with
/// their sequence numbers and valid checksums, each in the segment of the one before it or the
/// next segment's first: a journal an open reads up to record `seq`.
fn reaches_undefined_kind(img: &Img, recs: &[Rec], checkpoint: u64, seq: u64) -> bool {
    let body = |want: u64| -> Option<(&Rec, &[u8])> {
        let rec = recs.iter().find(|r| r.seq == want)?;
        let Some(Some(b)) = img.get(&rec.file) else {
            return None;
        };
        let h = b.get(rec.at..rec.at + RECORD_HEADER_LEN)?;
        let u32_at = |at: usize| u32::from_le_bytes(h[at..at + 4].try_into().unwrap());
        let len = u32_at(RECORD_LEN_AT) as usize;
        let body = b.get(rec.at + RECORD_HEADER_LEN..rec.at + RECORD_HEADER_LEN + len)?;
        let crc = crc32c::crc32c_append(crc32c::crc32c(&h[RECORD_SEQ_AT..]), body);
        let seq_now = u64::from_le_bytes(h[RECORD_SEQ_AT..RECORD_SEQ_AT + 8].try_into().unwrap());
        (crc == u32_at(RECORD_CRC_AT) && seq_now == want).then_some((rec, body))
    };
    let mut before: Option<&Rec> = None;
    for want in checkpoint + 1..=seq {
        let Some((rec, b)) = body(want) else {
            return false;
        };
        // In the segment of the record before, right after it, or first in another segment.
        let follows = before.is_none_or(|p| {
            if p.file == rec.file {
                rec.at == (p.at + p.len).next_multiple_of(RECORD_ALIGN)
            } else {
                rec.at == layout::SEGMENT_RECORDS_AT as usize
            }
        });
        if !follows {
            return false;
        }
        if want == seq {
            return layout_parts(b)
                .iter()
                .any(|p| p.kinds & !KINDS_DEFINED != 0);
        }
        before = Some(rec);
    }
    false
}

/// Writes `body` as live record `k`'s, sealed with a valid checksum. A body of another length
/// moves the records after it in the segment (their positions in `recs` with them) and zeroes
/// what follows the last to the end of its page, as the journal leaves a segment; a body that
/// would no longer fit in the segment is not written.
fn put_record(img: &mut Img, recs: &mut [Rec], k: usize, body: &[u8]) {
    let rec = recs[k].clone();
    let Some(Some(b)) = img.get_mut(&rec.file) else {
        return;
    };
    let Ok(len) = u32::try_from(body.len()) else {
        return;
    };
    let old_end = (rec.at + rec.len).next_multiple_of(RECORD_ALIGN);
    let after: Vec<usize> = (0..recs.len())
        .filter(|&j| recs[j].file == rec.file && recs[j].at > rec.at)
        .collect();
    let tail_end = after
        .iter()
        .map(|&j| (recs[j].at + recs[j].len).next_multiple_of(RECORD_ALIGN))
        .max()
        .unwrap_or(old_end);
    let mut out = b[..rec.at].to_vec();
    // The header as the image holds it (an earlier mutation may have changed its sequence
    // number), with the new length.
    let mut header = [0u8; RECORD_HEADER_LEN];
    header.copy_from_slice(&b[rec.at..rec.at + RECORD_HEADER_LEN]);
    header[RECORD_LEN_AT..RECORD_LEN_AT + 4].copy_from_slice(&len.to_le_bytes());
    let crc = crc32c::crc32c_append(crc32c::crc32c(&header[RECORD_SEQ_AT..]), body);
    header[RECORD_CRC_AT..RECORD_CRC_AT + 4].copy_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&header);
    out.extend_from_slice(body);
    out.resize(out.len().next_multiple_of(RECORD_ALIGN), 0);
    let moved_by = out.len() as isize - old_end as isize;
    let Some(following) = b.get(old_end..tail_end) else {
        return;
    };
    out.extend_from_slice(following);
    let zero_to = out
        .len()
        .next_multiple_of(4096)
        .max(tail_end.next_multiple_of(4096));
    if zero_to > b.len() {
        return;
    }
    out.resize(zero_to, 0);
    b[..zero_to].copy_from_slice(&out);
    recs[k].len = RECORD_HEADER_LEN + body.len();
    for j in after {
        recs[j].at = recs[j].at.wrapping_add_signed(moved_by);
    }
}

/// Values a forged field takes besides the input's own: the edges of the fields' ranges.
const FORGED: [u64; 12] = [
    0,
    1,
    2,
    SLOTS_PER_FILE,
    SLOTS_PER_FILE + 1,
    2 * SLOTS_PER_FILE,
    1 << 32,
    1 << 62,
    (1 << 62) + 1,
    u64::MAX / 2,
    u64::MAX - 1,
    u64::MAX,
];

fn forged_value(r: &mut Reader, cur: u64) -> u64 {
    match r.u8() % 4 {
        0 => cur.wrapping_add(i64::from(r.u8() as i8) as u64),
        1 => r.u64(),
        2 => FORGED[usize::from(r.u8()) % FORGED.len()],
        _ => u64::from(r.u8()),
    }
}

/// Rewrites one or both copies of a meta page (`engine.meta`, or group `which`'s `wal.meta`)
/// with a record whose fields the input changes and a valid checksum: what a bug in a writer,
/// or a page copied from elsewhere, would leave. Open must refuse what cannot hold (naming the
/// page) or open a root whose groups show only their own, genuine data.
fn forge_meta(img: &mut Img, files: &[String], which: usize, r: &mut Reader) {
    let metas: Vec<&String> = files
        .iter()
        .filter(|n| n.as_str() == ENGINE_META_FILE || n.ends_with(META_FILE))
        .collect();
    let Some(name) = metas.get(which % metas.len().max(1)).map(|n| (*n).clone()) else {
        return;
    };
    let root = name == ENGINE_META_FILE;
    let Some(Some(b)) = img.get_mut(&name) else {
        return;
    };
    let regs = regions(b);
    let copies = r.u8() % 3;
    let Some(&(at, _, seq, _)) = regs.get(usize::from(copies % 2)).or(regs.first()) else {
        return;
    };
    let Some(mut rec) = regs
        .iter()
        .find(|g| g.0 == at)
        .and_then(|g| g.3.clone())
        .or_else(|| regs.iter().find_map(|g| g.3.clone()))
        .and_then(|v| pb_decode(&v))
    else {
        return;
    };
    for _ in 0..1 + r.u8() % 3 {
        forge_field(&mut rec, root, r);
    }
    let body = pb_encode(&rec);
    let seq = match r.u8() % 4 {
        0 => seq,
        k @ (1 | 2) => seq.wrapping_add(u64::from(k)),
        _ => r.u64(),
    };
    let half = b.len() / 2;
    if META_RECORD_AT + body.len() > half {
        return;
    }
    let targets: &[usize] = match copies {
        0 => &[0],
        1 => &[1],
        _ => &[0, 1],
    };
    for &k in targets {
        let at = k * half;
        // Copy 1 of a pair written together is the older one, as the engine leaves them.
        let s = if targets.len() == 2 && k == 1 {
            seq.wrapping_sub(1)
        } else {
            seq
        };
        let mut page = b[at..at + META_SEQ_AT].to_vec();
        page.extend_from_slice(&s.to_le_bytes());
        page.extend_from_slice(&(body.len() as u32).to_le_bytes());
        let crc = crc32c::crc32c_append(crc32c::crc32c(&page), &body);
        page.extend_from_slice(&crc.to_le_bytes());
        page.extend_from_slice(&body);
        b[at..at + page.len()].copy_from_slice(&page);
    }
}

/// One field of a meta record (docs/FORMAT.md: `EngineRecord`, `MetaRecord` with its
/// `EngineGroupRecord`) set to a forged value, or a sub-record dropped.
fn forge_field(rec: &mut PbMsg, root: bool, r: &mut Reader) {
    let pick = r.u8();
    if root {
        let f = 1 + u32::from(pick % 3);
        let v = forged_value(r, pb_varint(rec, f));
        pb_set_varint(rec, f, if f == 3 { v & 1 } else { v });
        return;
    }
    // (sub-record, field): 0 is the record itself.
    const FIELDS: [(u32, u32); 18] = [
        (0, 1),
        (0, 2),
        (0, 3),
        (0, 7),
        (4, 1),
        (4, 2),
        (4, 3),
        (6, 1),
        (6, 2),
        (6, 4),
        (6, 5),
        (6, 6),
        (8, 1),
        (8, 2),
        (8, 3),
        (8, 4),
        (8, 5),
        (8, 0),
    ];
    match FIELDS[usize::from(pick) % FIELDS.len()] {
        (0, f) => {
            let v = forged_value(r, pb_varint(rec, f));
            pb_set_varint(rec, f, v);
        }
        // The engine's part dropped: the page of a DiskStorage directory.
        (8, 0) => pb_set_sub(rec, 8, None),
        (sub, f) => {
            let mut m = pb_sub(rec, sub).unwrap_or_default();
            let v = forged_value(r, pb_varint(&m, f));
            pb_set_varint(
                &mut m,
                f,
                if sub == 6 && f == 5 {
                    v & 0xffff_ffff
                } else {
                    v
                },
            );
            pb_set_sub(rec, sub, Some(&m));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// damage by position class, with the outcome it must have
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    JournalHeader,
    CommittedRecordHeader,
    CommittedRecord,
    TailRecordHeader,
    TailRecordBody,
    AfterLastRecord,
    RootMetaOneCopy,
    RootMetaBothCopies,
    GroupMetaOneCopy,
    GroupSlot,
    GroupPayload,
}

pub const CLASSES: [Class; 11] = [
    Class::JournalHeader,
    Class::CommittedRecordHeader,
    Class::CommittedRecord,
    Class::TailRecordHeader,
    Class::TailRecordBody,
    Class::AfterLastRecord,
    Class::RootMetaOneCopy,
    Class::RootMetaBothCopies,
    Class::GroupMetaOneCopy,
    Class::GroupSlot,
    Class::GroupPayload,
];

/// What one damaged root gave (for the test's figures).
#[derive(Debug, Default, Clone, Copy)]
pub struct DamageStats {
    pub cut: bool,
    /// The newest copy of a group's meta page damaged, and the group whole from the other.
    pub fell_back: bool,
    /// A group's meta copy damaged, and open refused to use the other.
    pub meta_refused: bool,
}

fn xor(img: &mut Img, name: &str, off: usize, h: u64) {
    if let Some(Some(b)) = img.get_mut(name) {
        if let Some(v) = b.get_mut(off) {
            *v ^= ((h >> 8) as u8) | 1;
        }
    }
}

fn names(msg: &str, file: &str) -> bool {
    msg.contains(file)
}

/// Damages the template in `class` (position drawn from `n`) and checks the outcome.
pub fn run_damage(class: Class, n: u64) -> Result<DamageStats, String> {
    let t = template();
    let mut img = t.img.clone();
    let h = splitmix(n ^ (class as u64) << 32);
    let pick = |v: usize| (h % v.max(1) as u64) as usize;
    let mut out = DamageStats::default();
    let last_seg = t.segments.last().expect("segments").clone();
    let full = t.views.last().expect("views");
    let strict =
        |img: &Img| open_and_read(img, RecoveryMode::AbsoluteConsistency, Forged::default());
    let tolerant =
        |img: &Img| open_and_read(img, RecoveryMode::TolerateTailCorruption, Forged::default());
    let refused_naming = |o: Opened, file: &str, mode: &str| -> Result<(), String> {
        match o {
            Opened::Refused(m) if names(&m, file) => Ok(()),
            Opened::Refused(m) => Err(format!(
                "{mode}: refused, but the error does not name {file}: {m}"
            )),
            Opened::ReadError(m) => Err(format!("{mode}: opened, then a read failed: {m}")),
            Opened::Root(_) => Err(format!("{mode}: opened; damage in {file} must be refused")),
        }
    };
    let whole = |o: Opened, mode: &str| -> Result<(), String> {
        match o {
            Opened::Root(v) if v == *full => Ok(()),
            Opened::Root(v) => Err(format!(
                "{mode}: opened to another state:\n got  {v:?}\n want {full:?}"
            )),
            Opened::Refused(m) => Err(format!("{mode}: refused: {m}")),
            Opened::ReadError(m) => Err(format!("{mode}: a read failed: {m}")),
        }
    };
    match class {
        Class::JournalHeader => {
            let seg = &t.segments[pick(t.segments.len())];
            xor(&mut img, seg, pick(SEGMENT_HEADER_LEN), h);
            refused_naming(strict(&img)?, seg, "strict")?;
            refused_naming(tolerant(&img)?, seg, "tolerant")?;
        }
        Class::CommittedRecord | Class::CommittedRecordHeader => {
            let recs: Vec<&Rec> = t.records.iter().filter(|r| r.file != last_seg).collect();
            let rec = recs[pick(recs.len())];
            let off = if class == Class::CommittedRecordHeader {
                (splitmix(h) % RECORD_HEADER_LEN as u64) as usize
            } else {
                pick(rec.len)
            };
            xor(&mut img, &rec.file, rec.at + off, h);
            refused_naming(strict(&img)?, &rec.file, "strict")?;
            refused_naming(tolerant(&img)?, &rec.file, "tolerant")?;
        }
        Class::TailRecordHeader | Class::TailRecordBody => {
            let recs: Vec<&Rec> = t.records.iter().filter(|r| r.file == last_seg).collect();
            let rec = recs[pick(recs.len())];
            let off = if class == Class::TailRecordHeader {
                pick(RECORD_HEADER_LEN)
            } else {
                RECORD_HEADER_LEN + pick(rec.len - RECORD_HEADER_LEN)
            };
            xor(&mut img, &rec.file, rec.at + off, h);
            refused_naming(strict(&img)?, &rec.file, "strict")?;
            // Cut at that record: every group as after the writes before it.
            let last_seq = t.records.last().expect("records").seq;
            let k = PHASE_B - (last_seq - rec.seq) as usize - 1;
            match tolerant(&img)? {
                Opened::Root(v) if v == t.views[k] => out.cut = true,
                Opened::Root(v) => {
                    return Err(format!(
                        "tolerant: record {} damaged; want the state after {k} of the writes after the checkpoint:\n got  {v:?}\n want {:?}",
                        rec.seq, t.views[k]
                    ))
                }
                Opened::Refused(m) => return Err(format!("tolerant: a torn tail was refused: {m}")),
                Opened::ReadError(m) => return Err(format!("tolerant: a read failed: {m}")),
            }
        }
        Class::AfterLastRecord => {
            let rec = t.records.last().expect("records");
            let end = (rec.at + rec.len).next_multiple_of(RECORD_ALIGN);
            let len = t.img[&rec.file].as_ref().map_or(0, Vec::len);
            xor(&mut img, &rec.file, end + pick(len - end), h);
            whole(tolerant(&img)?, "tolerant")?;
            match strict(&img)? {
                Opened::Refused(m) if names(&m, &rec.file) => {}
                o => whole(o, "strict")?,
            }
        }
        Class::RootMetaOneCopy | Class::RootMetaBothCopies => {
            let name = ENGINE_META_FILE;
            let b = t.img[name].clone().expect("engine.meta");
            let rs = regions(&b);
            let both = class == Class::RootMetaBothCopies;
            for (k, (at, len, _, _)) in rs.iter().enumerate() {
                if both || k == pick(rs.len()) {
                    xor(
                        &mut img,
                        name,
                        at + (splitmix(h ^ k as u64) as usize) % len,
                        h,
                    );
                }
            }
            refused_naming(strict(&img)?, name, "strict")?;
            if both {
                refused_naming(tolerant(&img)?, name, "tolerant")?;
            } else {
                whole(tolerant(&img)?, "tolerant")?;
            }
        }
        Class::GroupMetaOneCopy => {
            let gid = 1 + pick(GROUPS as usize) as u64;
            let name = format!("groups/{gid}/{META_FILE}");
            let b = t.img[&name].clone().ok_or("wal.meta")?;
            let rs = regions(&b);
            // Drawn apart from the group (`pick` would tie the copy to the group's id).
            let k = (splitmix(h ^ 0xC0B1) % rs.len() as u64) as usize;
            let (at, len, seq, _) = rs[k];
            xor(&mut img, &name, at + (splitmix(h) as usize) % len, h);
            refused_naming(strict(&img)?, &name, "strict")?;
            // What the copy left holds, read from its bytes.
            let (_, _, other_seq, other) = &rs[1 - k];
            let rec = other.as_deref().and_then(pb_decode).ok_or(format!(
                "{name}: the template's copy {} is not valid",
                2 - k
            ))?;
            let position = pb_sub(&rec, 8).map_or(0, |e| pb_varint(&e, 1));
            let snapshot = pb_sub(&rec, 6).map_or(0, |s| pb_varint(&s, 1));
            let damaged = format!("copy {} of the meta state is damaged", k + 1);
            let refusal: Option<Vec<String>> = if position < t.checkpoint {
                // The journal is trimmed up to the checkpoint: what the damaged copy may hold
                // beyond this one is gone.
                Some(vec![
                    damaged,
                    format!("reflects the journal up to record {position}"),
                    format!("the checkpoint, record {}", t.checkpoint),
                ])
            } else {
                // The snapshot after replay: the copy's, or the last one the journal installs
                // after it; a newer snapshot file is one the damaged copy named.
                let after = t
                    .installs
                    .iter()
                    .filter(|(g, rec_seq, _)| *g == gid && *rec_seq > position)
                    .map(|x| x.2)
                    .next_back()
                    .unwrap_or(snapshot);
                snapshot_files(&t.img, gid)
                    .into_iter()
                    .find(|&i| i > after)
                    .map(|i| vec![damaged, format!("holds a snapshot at index {i}")])
            };
            match (refusal, tolerant(&img)?) {
                (Some(words), Opened::Refused(m)) => {
                    ensure!(
                        names(&m, &name) && words.iter().all(|w| m.contains(w.as_str())),
                        "tolerant: copy {} damaged, the other at journal record {position} (checkpoint {}): refused, but not saying {words:?} about {name}: {m}",
                        k + 1,
                        t.checkpoint
                    );
                    out.meta_refused = true;
                }
                (Some(words), o) => {
                    return Err(format!(
                        "tolerant: copy {} damaged, the other at journal record {position} (checkpoint {}): must be refused ({words:?}), but {}",
                        k + 1,
                        t.checkpoint,
                        describe(&o)
                    ))
                }
                (None, o) => {
                    whole(o, "tolerant")?;
                    out.fell_back = seq > *other_seq;
                }
            }
        }
        Class::GroupSlot | Class::GroupPayload => {
            let with_slots: Vec<u64> = (1..=GROUPS)
                .filter(|g| !t.durable_slots[g].is_empty())
                .collect();
            let gid = with_slots[pick(with_slots.len())];
            let slots = &t.durable_slots[&gid];
            let (file, index, at) = slots[pick(slots.len())].clone();
            let off = if class == Class::GroupSlot {
                // Every byte of a slot is covered by its CRC or validated.
                at + (splitmix(h) as usize) % SLOT_LEN
            } else {
                let b = t.img[&file].as_ref().ok_or("wal")?;
                let slot = &b[at..at + SLOT_LEN];
                let p = layout::slot_payload_offset(slot) as usize;
                let dl = layout::slot_data_len(slot) as usize;
                p + (splitmix(h) as usize) % dl.max(1)
            };
            xor(&mut img, &file, off, h);
            for (mode, o) in [("strict", strict(&img)?), ("tolerant", tolerant(&img)?)] {
                match o {
                    Opened::Refused(m) | Opened::ReadError(m) if names(&m, &file) => {}
                    Opened::Refused(m) | Opened::ReadError(m) => {
                        return Err(format!("{mode}: entry {index} of group {gid} damaged in {file}: the error does not name it: {m}"))
                    }
                    Opened::Root(v) => {
                        return Err(format!(
                            "{mode}: entry {index} of group {gid} damaged in {file} (offset {off}), yet every read succeeded (group view {:?})",
                            v.get(&gid).map(|g| (g.first, g.last))
                        ))
                    }
                }
            }
        }
    }
    Ok(out)
}

/// The indexes of group `gid`'s snapshot files in `img` (`snap/<term>-<index>.snap`, hex).
fn snapshot_files(img: &Img, gid: u64) -> Vec<u64> {
    let prefix = format!("groups/{gid}/snap/");
    img.iter()
        .filter(|(_, n)| n.is_some())
        .filter_map(|(k, _)| {
            let name = k.strip_prefix(&prefix)?.strip_suffix(".snap")?;
            let (_, index) = name.split_once('-')?;
            u64::from_str_radix(index, 16).ok()
        })
        .collect()
}

fn describe(o: &Opened) -> String {
    match o {
        Opened::Root(_) => "it opened".to_string(),
        Opened::Refused(m) => format!("it was refused otherwise: {m}"),
        Opened::ReadError(m) => format!("it opened and a read failed: {m}"),
    }
}

/// The template's figures, for the test's summary: live segments, records after the
/// checkpoint, the checkpoint.
pub fn template_summary() -> String {
    let t = template();
    format!(
        "{} groups, {} live journal segments, {} records after checkpoint {}, {} files",
        GROUPS,
        t.segments.len(),
        t.records.len(),
        t.checkpoint,
        t.img.values().filter(|n| n.is_some()).count()
    )
}
