//! Fuzz target logic `open_dir`: open a WAL directory built from the input bytes.
//!
//! A valid directory is made once per process by the library itself (the template: 30,300
//! entries written, a snapshot with data taken at 29,800, so 500 live entries across two log
//! files, `truncate_entries_until(30,050)`, a conf state, a hard state, meta integers) and held
//! in memory. Each input is a list of mutations applied to a copy of it: byte flips, writes,
//! zeroed ranges, truncations, appended garbage, deleted files, extra files (junk, log files
//! with other ids, leftovers, other snapshot files, directories), and forgeries that recompute
//! checksums (a slot's CRC, a log file header, a meta region with edited fields, a snapshot
//! envelope) so inputs get past the checksums into the semantic checks. The result is written
//! to a scratch directory, then:
//!
//! 1. `Inspector::open` and `verify` (read-only): must not panic; what it reads must be genuine;
//! 2. `DiskStorage::open_with` in `AbsoluteConsistency`, then in `TolerateTailCorruption` mode;
//!    a failed open must leave the directory as it was; whatever opens is read in full:
//!    first/last index, every entry, every term, initial state, snapshot. Every entry returned
//!    must be the template's entry at that index or the content of a slot whose CRC32C matches
//!    in the damaged files (a forged one) — never altered data; `term(i)` agrees with the entry
//!    read at `i`; no index in `[first_index - 1, last_index]` is `Compacted`/`Unavailable`;
//!    the commit index is within the log; the snapshot's data is the template's or matches the
//!    CRC32C recorded in a valid meta region;
//! 3. what strict mode opens, tolerant mode opens the same; what tolerant mode opens, the
//!    inspector reports the same; a directory with only unknown extra files opens exactly as
//!    the template;
//! 4. after a tolerant open: three entries are appended, the store is closed and opened again
//!    in strict mode (the cut tail must be clean now), and everything read before plus the new
//!    entries must read back.
//!
//! Input layout: byte 0 bit 0 picks the template (0: plaintext, 1: encrypted with a fixed key:
//! the same log sealed with AES-256-GCM; forged slots and records then fail authentication, so
//! only the template's own entries may be read back); then a list of mutations, each an opcode
//! byte and its arguments (see `mutate`); reads past the end yield zeroes. The empty input is the
//! intact plaintext template.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::OnceLock;

use bytes::Bytes;
use raft::prelude::{ConfState, Entry, EntryType, HardState, Snapshot};
use raft::{Storage, StorageError};
use raftwal::inspect::Inspector;
use raftwal::{DiskStorage, MetaInfo, Options, RecoveryMode};

use super::entries::{ctx, term_every};
use super::layout::{
    log_name, slot_at, snap_name, CONTEXT_LEN_LEN, FILE_BASE_AT, FILE_HEADER_AT, FILE_HEADER_LEN,
    FILE_MAGIC, LOCK_FILE, META_CRC_AT, META_FILE, META_MAGIC, META_MIN_LEN, META_MIN_REGION,
    META_RECORD_AT, META_RECORD_LEN_AT, META_SEQ_AT, PAYLOADS_AT, SLOTS_PER_FILE, SLOT_CRC_AT,
    SLOT_DATA_LEN_AT, SLOT_FLAGS_AT, SLOT_FLAG_CONTEXT, SLOT_FLAG_DATA_DROPPED, SLOT_INDEX_AT,
    SLOT_LEN, SLOT_OFFSET_AT, SLOT_OFFSET_LEN, SLOT_TERM_AT, SLOT_TYPE_AT, SNAP_DATA_AT,
    SNAP_ENVELOPE_AT, SNAP_ENVELOPE_LEN_AT,
};
use super::util::{
    pb_decode, pb_encode, pb_set_sub, pb_set_varint, pb_sub, pb_varint, scratch_dir, PbMsg, PbVal,
    Reader,
};

// ---------------------------------------------------------------------------------------------
// limits (the layout, docs/FORMAT.md: tests/common/layout.rs)
// ---------------------------------------------------------------------------------------------

/// Files never grow past this in the image.
const MAX_FILE_LEN: u64 = 12 << 20;
/// Most mutations decoded from one input.
const MAX_OPS: usize = 48;

// template shape
const TOTAL: u64 = 30_300;
const SNAP_AT: u64 = 29_800;
const TRUNC_UNTIL: u64 = 30_050;
const COMMIT: u64 = 30_250;

/// Interesting integers for forged fields.
const INTERESTING: [u64; 16] = [
    0,
    1,
    2,
    SNAP_AT - 1,
    SNAP_AT,
    SNAP_AT + 1,
    SLOTS_PER_FILE,
    SLOTS_PER_FILE + 1,
    TOTAL - 1,
    TOTAL,
    TOTAL + 1,
    2 * SLOTS_PER_FILE + 1,
    1 << 32,
    u64::MAX / 2,
    u64::MAX - 1,
    u64::MAX,
];

/// The template's term at `index`: a new term every 97 entries.
fn template_term(index: u64) -> u64 {
    term_every(index, 97)
}

/// A deterministic template entry: all entry types, empty and non-empty data, some contexts.
/// (Not `entries::entry`: the committed corpus was grown against this template, so its
/// entries stay what they were.)
fn template_entry(index: u64) -> Entry {
    let mut e = Entry::default();
    e.index = index;
    e.term = template_term(index);
    e.entry_type = match index % 10 {
        3 => EntryType::EntryConfChange,
        7 => EntryType::EntryConfChangeV2,
        _ => EntryType::EntryNormal,
    };
    let len = if index.is_multiple_of(11) {
        0
    } else {
        (index * 7 % 24) as usize
    };
    let seed = index.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    e.data = Bytes::from(
        (0..len)
            .map(|k| (seed >> ((k % 8) * 8)) as u8 ^ (k as u8).wrapping_mul(31))
            .collect::<Vec<u8>>(),
    );
    if index.is_multiple_of(7) {
        e.context = Bytes::from(format!("c{index}").into_bytes());
    }
    e
}

fn conf_state(voters: &[u64], learners: &[u64]) -> ConfState {
    let mut cs = ConfState::default();
    cs.voters = voters.to_vec();
    cs.learners = learners.to_vec();
    cs
}

fn kind_of(e: &raft::Error) -> String {
    match e {
        raft::Error::Store(StorageError::Compacted) => "Compacted".into(),
        raft::Error::Store(StorageError::Unavailable) => "Unavailable".into(),
        raft::Error::Store(StorageError::SnapshotOutOfDate) => "SnapshotOutOfDate".into(),
        raft::Error::Store(StorageError::SnapshotTemporarilyUnavailable) => {
            "SnapshotTemporarilyUnavailable".into()
        }
        other => format!("Other({other})"),
    }
}

/// `Compacted` / `Unavailable` for an index inside `[first_index - 1, last_index]` breaks the
/// contract raft-rs relies on (it panics on them); a corruption error (`Other`) is allowed.
fn out_of_range_kind(e: &raft::Error) -> bool {
    matches!(
        e,
        raft::Error::Store(StorageError::Compacted | StorageError::Unavailable)
    )
}

macro_rules! ensure {
    ($cond:expr, $($fmt:tt)*) => {
        if !$cond {
            return Err(format!($($fmt)*));
        }
    };
}

// ---------------------------------------------------------------------------------------------
// directory images
// ---------------------------------------------------------------------------------------------

/// A file's bytes: `data`, then zeroes up to `len` (log files are mostly zeroes).
#[derive(Clone, Debug)]
pub struct FileImg {
    data: Vec<u8>,
    len: u64,
}

impl FileImg {
    fn from_bytes(mut b: Vec<u8>) -> FileImg {
        let len = b.len() as u64;
        let keep = b.iter().rposition(|&x| x != 0).map_or(0, |p| p + 1);
        b.truncate(keep);
        FileImg { data: b, len }
    }

    fn byte(&self, o: u64) -> u8 {
        if o >= self.len {
            return 0;
        }
        usize::try_from(o)
            .ok()
            .and_then(|o| self.data.get(o))
            .copied()
            .unwrap_or(0)
    }

    /// `n` bytes from `o` (zeroes past the data; `None` past `len`).
    fn read(&self, o: u64, n: u64) -> Option<Vec<u8>> {
        let end = o.checked_add(n)?;
        if end > self.len {
            return None;
        }
        Some((o..end).map(|p| self.byte(p)).collect())
    }

    fn u32_at(&self, o: u64) -> u32 {
        u32::from_le_bytes([
            self.byte(o),
            self.byte(o + 1),
            self.byte(o + 2),
            self.byte(o + 3),
        ])
    }

    fn u64_at(&self, o: u64) -> u64 {
        u64::from(self.u32_at(o)) | (u64::from(self.u32_at(o + 4)) << 32)
    }

    /// Writes `b` at `o` (clamped to `MAX_FILE_LEN`), growing the file if needed.
    fn write(&mut self, o: u64, b: &[u8]) {
        if o >= MAX_FILE_LEN || b.is_empty() {
            return;
        }
        let end = (o + b.len() as u64).min(MAX_FILE_LEN);
        let b = &b[..(end - o) as usize];
        if self.data.len() < end as usize {
            self.data.resize(end as usize, 0);
        }
        self.data[o as usize..end as usize].copy_from_slice(b);
        self.len = self.len.max(end);
    }

    fn zero(&mut self, o: u64, n: u64) {
        let start = (o as usize).min(self.data.len());
        let end = (o.saturating_add(n) as usize).min(self.data.len());
        self.data[start..end].fill(0);
    }

    fn set_len(&mut self, n: u64) {
        let n = n.min(MAX_FILE_LEN);
        if (n as usize) < self.data.len() {
            self.data.truncate(n as usize);
        }
        self.len = n;
    }
}

#[derive(Clone, Debug)]
enum Node {
    File(FileImg),
    Dir,
}

/// Relative path -> node. Parent directories of files are created as needed.
type Img = BTreeMap<String, Node>;

/// Calls `visit(relative path, entry)` for every entry under `root`, parents before their
/// children; `visit` returning `true` descends into that entry (a directory).
fn walk_dir(root: &Path, rel: &str, visit: &mut impl FnMut(&str, &fs::DirEntry) -> bool) {
    let p = if rel.is_empty() {
        root.to_path_buf()
    } else {
        root.join(rel)
    };
    let Ok(rd) = fs::read_dir(&p) else { return };
    for ent in rd.flatten() {
        let name = ent.file_name().to_string_lossy().into_owned();
        let r = if rel.is_empty() {
            name
        } else {
            format!("{rel}/{name}")
        };
        if visit(&r, &ent) {
            walk_dir(root, &r, visit);
        }
    }
}

fn read_image(dir: &Path) -> Img {
    let mut img = Img::new();
    walk_dir(dir, "", &mut |r, ent| {
        let Ok(ft) = ent.file_type() else {
            return false;
        };
        if ft.is_dir() {
            img.insert(r.to_string(), Node::Dir);
            return true;
        }
        if ent.file_name() != LOCK_FILE {
            let b = fs::read(dir.join(r)).unwrap_or_default();
            img.insert(r.to_string(), Node::File(FileImg::from_bytes(b)));
        }
        false
    });
    img
}

/// Writes the image into `dir` (which exists and is empty). Only non-zero 4 KiB blocks are
/// written; the rest of each file is a hole.
fn write_image(img: &Img, dir: &Path) -> Result<(), String> {
    for (name, node) in img {
        let p = dir.join(name);
        if let Some(parent) = p.parent() {
            fs::create_dir_all(parent).map_err(|e| format!("mkdir {}: {e}", parent.display()))?;
        }
        match node {
            Node::Dir => {
                fs::create_dir_all(&p).map_err(|e| format!("mkdir {}: {e}", p.display()))?;
            }
            Node::File(f) => {
                let file = fs::File::create(&p).map_err(|e| format!("create {name}: {e}"))?;
                const ZERO: [u8; 4096] = [0; 4096];
                for (k, block) in f.data.chunks(4096).enumerate() {
                    if block != &ZERO[..block.len()] {
                        file.write_all_at(block, (k * 4096) as u64)
                            .map_err(|e| format!("write {name}: {e}"))?;
                    }
                }
                file.set_len(f.len)
                    .map_err(|e| format!("set_len {name}: {e}"))?;
                // an old modification time: any later write shows (see `dir_state`)
                file.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1 << 20))
                    .map_err(|e| format!("set_modified {name}: {e}"))?;
            }
        }
    }
    Ok(())
}

/// What a failed open must not change: every entry's kind, size, inode and modification time,
/// and the content of small files (the lock file aside). The engine writes log files with
/// `pwrite` (never through its maps), which updates the modification time.
type DirState = Vec<(String, bool, u64, u64, i64, i64, u32)>;

fn dir_state(dir: &Path) -> DirState {
    use std::os::unix::fs::MetadataExt;
    let mut out = DirState::new();
    walk_dir(dir, "", &mut |r, ent| {
        // the top-level lock file
        if r == "LOCK" {
            return false;
        }
        let Ok(md) = ent.metadata() else {
            return false;
        };
        if md.is_dir() {
            out.push((r.to_string(), true, 0, 0, 0, 0, 0));
            return true;
        }
        let small = md.len() <= 65_536;
        let crc = if small {
            crc32c::crc32c(&fs::read(dir.join(r)).unwrap_or_default())
        } else {
            0
        };
        out.push((
            r.to_string(),
            false,
            md.len(),
            md.ino(),
            md.mtime(),
            md.mtime_nsec(),
            crc,
        ));
        false
    });
    out.sort();
    out
}

/// What differs between two directory states (for failure messages).
fn diff_states(before: &DirState, after: &DirState) -> String {
    let gone: Vec<&String> = before
        .iter()
        .filter(|b| !after.contains(b))
        .map(|b| &b.0)
        .collect();
    let new: Vec<&String> = after
        .iter()
        .filter(|a| !before.contains(a))
        .map(|a| &a.0)
        .collect();
    format!("before only {gone:?}, after only {new:?}")
}

/// A log file name as the engine parses it: at least 5 ASCII digits, then `.wal`.
fn wal_id(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".wal")?;
    if digits.len() < 5 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

// ---------------------------------------------------------------------------------------------
// the template
// ---------------------------------------------------------------------------------------------

/// The valid directory every input starts from, and what it holds.
pub struct Template {
    img: Img,
    first: u64,
    last: u64,
    /// Entries `first..=last` as read back after a clean reopen.
    entries: Vec<Entry>,
    hs: HardState,
    cs: ConfState,
    snap: Snapshot,
    uints: [u64; 3],
    /// The newest meta record and its sequence number.
    meta_record: PbMsg,
    meta_seq: u64,
    /// `snap/<term>-<index>.snap`.
    snap_name: String,
    /// The encryption key of the store (`None`: plaintext).
    key: Option<[u8; 32]>,
}

/// The key of the encrypted template.
const KEY: [u8; 32] = [0x42; 32];

/// The plaintext or the encrypted template (each built once per process).
fn template(encrypted: bool) -> &'static Template {
    static PLAIN: OnceLock<Template> = OnceLock::new();
    static SEALED: OnceLock<Template> = OnceLock::new();
    if encrypted {
        SEALED.get_or_init(|| build_template(Some(KEY)).expect("build the encrypted template"))
    } else {
        PLAIN.get_or_init(|| build_template(None).expect("build the template directory"))
    }
}

fn build_template(key: Option<[u8; 32]>) -> Result<Template, String> {
    let tmp = scratch_dir("raftwal-fuzz-template");
    let dir = tmp.path();
    let e = |e: raftwal::Error| e.to_string();
    {
        let s = DiskStorage::open_with(
            dir,
            Options {
                sync_writes: false,
                encryption_key: key,
                ..Default::default()
            },
        )
        .map_err(e)?;
        s.set_uint(MetaInfo::RaftId, 3);
        s.set_uint(MetaInfo::GroupId, 9);
        s.set_conf_state(&conf_state(&[1, 2, 3], &[4])).map_err(e)?;
        let mut i = 1;
        while i <= TOTAL {
            let n = 1_000.min(TOTAL + 1 - i);
            let entries: Vec<Entry> = (i..i + n).map(template_entry).collect();
            let mut hs = HardState::default();
            hs.term = template_term(i + n - 1);
            hs.vote = 1;
            hs.commit = (i + n - 1).min(COMMIT);
            s.save(&hs, &entries, &Snapshot::default()).map_err(e)?;
            i += n;
        }
        s.set_uint(MetaInfo::CheckpointIndex, 29_900);
        let data: Vec<u8> = (0..3_000u32).map(|k| (k * 7 + 1) as u8).collect();
        s.create_snapshot(SNAP_AT, None, data).map_err(e)?;
        s.truncate_entries_until(TRUNC_UNTIL).map_err(e)?;
        s.set_conf_state(&conf_state(&[1, 2, 3, 5], &[]))
            .map_err(e)?;
        s.close().map_err(e)?;
    }
    let s = DiskStorage::open_with(dir, opts(RecoveryMode::AbsoluteConsistency, key)).map_err(e)?;
    let first = s.first_index().map_err(|e| e.to_string())?;
    let last = s.last_index().map_err(|e| e.to_string())?;
    if first != SNAP_AT + 1 || last != TOTAL || s.num_log_files() != 2 {
        return Err(format!(
            "unexpected template: first {first} last {last} files {}",
            s.num_log_files()
        ));
    }
    let entries = s
        .entries(first, last + 1, None, ctx())
        .map_err(|e| e.to_string())?;
    let st = s.initial_state().map_err(|e| e.to_string())?;
    let snap = s.snapshot(0, 0).map_err(|e| e.to_string())?;
    let uints = [
        s.uint(MetaInfo::RaftId),
        s.uint(MetaInfo::GroupId),
        s.uint(MetaInfo::CheckpointIndex),
    ];
    s.close().map_err(e)?;
    let img = read_image(dir);
    let Some(Node::File(meta)) = img.get(META_FILE) else {
        return Err("template has no wal.meta".into());
    };
    // (an encrypted record does not decode as protobuf: forged records then start empty)
    let (meta_seq, meta_record) = meta_regions(meta)
        .into_iter()
        .max_by_key(|(seq, _)| *seq)
        .unwrap_or((2, PbMsg::new()));
    let md = snap.get_metadata();
    let snap_name = format!("snap/{}", snap_name(md.term, md.index));
    if !img.contains_key(&snap_name) {
        return Err(format!("template has no {snap_name}"));
    }
    Ok(Template {
        img,
        first,
        last,
        entries,
        hs: st.hard_state,
        cs: st.conf_state,
        snap,
        uints,
        meta_record,
        meta_seq,
        snap_name,
        key,
    })
}

impl Template {
    fn entry(&self, i: u64) -> Option<&Entry> {
        if i < self.first || i > self.last {
            return None;
        }
        self.entries.get((i - self.first) as usize)
    }
}

// ---------------------------------------------------------------------------------------------
// independent decoding of the (damaged) files, for the oracle and the forgeries
// ---------------------------------------------------------------------------------------------

/// Every region of a meta image with valid magic, length and CRC: (sequence, record).
fn meta_regions(f: &FileImg) -> Vec<(u64, PbMsg)> {
    let half = f.len / 2;
    let mut out = Vec::new();
    for at in [0, half] {
        if f.read(at, 8).as_deref() != Some(META_MAGIC) {
            continue;
        }
        let len = u64::from(f.u32_at(at + META_RECORD_LEN_AT));
        if META_RECORD_AT + len > half {
            continue;
        }
        let Some(head) = f.read(at, META_CRC_AT) else {
            continue;
        };
        let Some(rec) = f.read(at + META_RECORD_AT, len) else {
            continue;
        };
        let crc = crc32c::crc32c_append(crc32c::crc32c(&head), &rec);
        if crc != f.u32_at(at + META_CRC_AT) {
            continue;
        }
        if let Some(m) = pb_decode(&rec) {
            out.push((f.u64_at(at + META_SEQ_AT), m));
        }
    }
    out
}

/// Writes one meta region: header + record, with a correct CRC over both.
pub fn encode_meta_region(seq: u64, version: u32, flags: u32, len: u32, rec: &[u8]) -> Vec<u8> {
    let mut h = Vec::with_capacity(META_RECORD_AT as usize + rec.len());
    h.extend_from_slice(META_MAGIC);
    h.extend_from_slice(&version.to_le_bytes());
    h.extend_from_slice(&flags.to_le_bytes());
    h.extend_from_slice(&seq.to_le_bytes());
    h.extend_from_slice(&len.to_le_bytes());
    let crc = crc32c::crc32c_append(crc32c::crc32c(&h), rec);
    h.extend_from_slice(&crc.to_le_bytes());
    h.extend_from_slice(rec);
    h
}

/// Slot `k`'s payload extent as the engine computes it: (offset, data end, payload end), or
/// `None` if a range check fails.
fn slot_extent(f: &FileImg, k: u64) -> Option<(u64, u64, u64)> {
    let at = slot_at(k);
    let mut off = [0u8; 8];
    for (j, b) in off.iter_mut().enumerate().take(SLOT_OFFSET_LEN as usize) {
        *b = f.byte(at + SLOT_OFFSET_AT + j as u64);
    }
    let offset = u64::from_le_bytes(off);
    let flags = f.byte(at + SLOT_FLAGS_AT);
    let data_len = u64::from(f.u32_at(at + SLOT_DATA_LEN_AT));
    let data_end = offset.checked_add(data_len)?;
    if offset < PAYLOADS_AT || data_end > f.len {
        return None;
    }
    let payload_end = if flags & SLOT_FLAG_CONTEXT != 0 {
        if data_end + CONTEXT_LEN_LEN > f.len {
            return None;
        }
        let c = u64::from(f.u32_at(data_end));
        let end = data_end + CONTEXT_LEN_LEN + c;
        if end > f.len {
            return None;
        }
        end
    } else {
        data_end
    };
    Some((offset, data_end, payload_end))
}

/// The CRC32C slot `k` should hold for its current fields and payload.
fn slot_crc(f: &FileImg, k: u64) -> Option<u32> {
    let (offset, _, end) = slot_extent(f, k)?;
    let head = f.read(slot_at(k), SLOT_CRC_AT)?;
    let payload = f.read(offset, end - offset)?;
    Some(crc32c::crc32c_append(crc32c::crc32c(&head), &payload))
}

/// The entry slot `k` of a log file image holds, if every check passes (index = base + k,
/// known type and flags, payload in range, CRC32C).
fn slot_entry(f: &FileImg, base: u64, k: u64) -> Option<Entry> {
    let at = slot_at(k);
    if f.u64_at(at + SLOT_INDEX_AT) != base.checked_add(k)? {
        return None;
    }
    let ty = f.byte(at + SLOT_TYPE_AT);
    let flags = f.byte(at + SLOT_FLAGS_AT);
    // bit 0 context, bit 2 data dropped; bit 1 (sealed) only in encrypted stores
    if ty > 2 || flags & !(SLOT_FLAG_CONTEXT | SLOT_FLAG_DATA_DROPPED) != 0 {
        return None;
    }
    let (offset, data_end, payload_end) = slot_extent(f, k)?;
    if slot_crc(f, k)? != f.u32_at(at + SLOT_CRC_AT) {
        return None;
    }
    let mut e = Entry::default();
    e.term = f.u64_at(at + SLOT_TERM_AT);
    e.index = base + k;
    e.entry_type = match ty {
        0 => EntryType::EntryNormal,
        1 => EntryType::EntryConfChange,
        _ => EntryType::EntryConfChangeV2,
    };
    if flags & SLOT_FLAG_DATA_DROPPED == 0 {
        e.data = Bytes::from(f.read(offset, data_end - offset)?);
    }
    if flags & SLOT_FLAG_CONTEXT != 0 {
        e.context = Bytes::from(f.read(
            data_end + CONTEXT_LEN_LEN,
            payload_end - data_end - CONTEXT_LEN_LEN,
        )?);
    }
    Some(e)
}

/// What entries and snapshots may be read back: the template, the damaged image it was
/// turned into, and entries appended after open.
struct Oracle<'a> {
    t: &'a Template,
    img: &'a Img,
    appended: Vec<Entry>,
}

/// True if `e` is the template's entry at its index, an entry appended since, or what some
/// CRC-valid slot of the (damaged) image holds at that index.
fn genuine(o: &Oracle, e: &Entry) -> bool {
    let (t, img) = (o.t, o.img);
    if t.entry(e.index) == Some(e) || o.appended.contains(e) {
        return true;
    }
    img.iter().any(|(name, node)| {
        let (Some(_), Node::File(f)) = (wal_id(name), node) else {
            return false;
        };
        let base = f.u64_at(FILE_HEADER_AT + FILE_BASE_AT);
        e.index >= base
            && e.index - base < SLOTS_PER_FILE
            && slot_entry(f, base, e.index - base).as_ref() == Some(e)
    })
}

/// What the image's log files hold at index `i` (for failure messages).
fn describe_slots(img: &Img, i: u64) -> String {
    let mut out = String::new();
    for (name, node) in img {
        let (Some(_), Node::File(f)) = (wal_id(name), node) else {
            continue;
        };
        let base = f.u64_at(FILE_HEADER_AT + FILE_BASE_AT);
        if i >= base && i - base < SLOTS_PER_FILE {
            let k = i - base;
            out.push_str(&format!(
                "\n {name} slot {k}: {:?} -> {:?}",
                f.read(slot_at(k), SLOT_LEN),
                slot_entry(f, base, k)
            ));
        }
    }
    out
}

/// True if `data` is the template's snapshot data, or has the CRC32C that a valid meta region
/// of the image records for its snapshot.
fn genuine_snapshot(t: &Template, img: &Img, data: &[u8]) -> bool {
    if data == &t.snap.data[..] {
        return true;
    }
    let Some(Node::File(meta)) = img.get(META_FILE) else {
        return false;
    };
    let crc = u64::from(crc32c::crc32c(data));
    let len = data.len() as u64;
    // data_len 0 means "no data" (no file): the CRC field is not consulted then
    meta_regions(meta).iter().any(|(_, m)| {
        pb_sub(m, 6)
            .is_some_and(|s| pb_varint(&s, 4) == len && (len == 0 || pb_varint(&s, 5) == crc))
    })
}

// ---------------------------------------------------------------------------------------------
// mutations
// ---------------------------------------------------------------------------------------------

/// What the mutations did.
#[derive(Default)]
struct Mutated {
    ops: usize,
    /// Only extra files with names the engine does not know were added: the directory must
    /// open exactly as the template.
    benign: bool,
}

fn file_names(img: &Img) -> Vec<String> {
    img.iter()
        .filter(|(_, n)| matches!(n, Node::File(_)))
        .map(|(k, _)| k.clone())
        .collect()
}

fn pick_file(r: &mut Reader, img: &Img) -> Option<String> {
    let names = file_names(img);
    if names.is_empty() {
        r.u8();
        return None;
    }
    Some(names[usize::from(r.u8()) % names.len()].clone())
}

fn pick_wal(r: &mut Reader, img: &Img) -> Option<String> {
    let names: Vec<String> = file_names(img)
        .into_iter()
        .filter(|n| wal_id(n).is_some())
        .collect();
    let b = r.u8();
    if names.is_empty() {
        return None;
    }
    Some(names[usize::from(b) % names.len()].clone())
}

fn file_mut<'a>(img: &'a mut Img, name: &str) -> Option<&'a mut FileImg> {
    match img.get_mut(name) {
        Some(Node::File(f)) => Some(f),
        _ => None,
    }
}

/// A slot number: anywhere, among the first 512, or among the last 512.
fn slot_no(r: &mut Reader) -> u64 {
    let m = r.u8();
    let v = u64::from(r.u16());
    match m % 4 {
        0 => v % SLOTS_PER_FILE,
        1 | 2 => v % 512,
        _ => SLOTS_PER_FILE - 1 - v % 512,
    }
}

/// An offset in a file of `len` bytes, aimed at the structures of the format.
fn offset(r: &mut Reader, f: &FileImg) -> u64 {
    let len = f.len;
    let m = r.u8();
    let o = match m % 8 {
        0 => u64::from(r.u32()),
        1 => slot_at(slot_no(r)) + u64::from(r.u8()) % SLOT_LEN,
        2 => slot_at(u64::from(r.u16() % 512)) + u64::from(r.u8()) % SLOT_LEN,
        3 => FILE_HEADER_AT + u64::from(r.u8() % 64),
        4 => {
            // into the payload of a slot
            let k = slot_no(r);
            let d = u64::from(r.u8());
            slot_extent(f, k).map_or(PAYLOADS_AT + d, |(o, _, _)| o + d % 64)
        }
        5 => PAYLOADS_AT + u64::from(r.u32() % (4 << 20)),
        6 => {
            // a meta region, a snapshot header
            let region = if r.bool() { len / 2 } else { 0 };
            region + u64::from(r.u16() % 4200)
        }
        _ => len.saturating_sub(1 + u64::from(r.u16())),
    };
    if len == 0 {
        0
    } else {
        o % len
    }
}

/// A value for a forged integer field.
fn value(r: &mut Reader, cur: u64) -> u64 {
    match r.u8() % 5 {
        0 => cur.wrapping_add(i64::from(r.u8() as i8) as u64),
        1 => r.u64(),
        2 => INTERESTING[usize::from(r.u8()) % INTERESTING.len()],
        3 => u64::from(r.u8()),
        _ => cur,
    }
}

fn sanitize_name(b: &[u8]) -> String {
    let s: String = b
        .iter()
        .map(|&c| match c % 40 {
            x @ 0..=25 => (b'a' + x) as char,
            x @ 26..=35 => (b'0' + x - 26) as char,
            36 => '.',
            37 => '-',
            38 => '_',
            _ => 'x',
        })
        .collect();
    if s.is_empty() || s == "." || s == ".." {
        format!("junk{s}")
    } else {
        s
    }
}

/// Names the engine gives a meaning to (or could): a junk file with any other name must not
/// change what open does.
fn special_name(name: &str) -> bool {
    name == META_FILE
        || name == LOCK_FILE
        || name == "snap"
        || name.ends_with(".wal")
        || name.ends_with(".tmp")
        || name.ends_with(".snap")
        || name.ends_with(".broken")
}

/// Content for a new log-like file.
fn wal_content(r: &mut Reader, t: &Template, id: u64) -> FileImg {
    let tmpl = |n: &str| match t.img.get(n) {
        Some(Node::File(f)) => f.clone(),
        _ => FileImg::from_bytes(Vec::new()),
    };
    match r.u8() % 6 {
        0 => FileImg::from_bytes(Vec::new()),
        1 => tmpl("00001.wal"),
        2 => tmpl("00002.wal"),
        3 => {
            let n = usize::from(r.u8());
            FileImg::from_bytes(r.bytes(n).to_vec())
        }
        4 => FileImg {
            // header never written: an empty tail
            data: Vec::new(),
            len: PAYLOADS_AT + u64::from(r.u8()) * 4096,
        },
        _ => {
            // an empty file with a valid header for its id and the arithmetic base
            let mut f = FileImg {
                data: Vec::new(),
                len: 5 << 20,
            };
            let base = SLOTS_PER_FILE
                .wrapping_mul(id.wrapping_sub(1))
                .wrapping_add(1);
            forge_header(&mut f, id, base, 1, 0);
            f
        }
    }
}

fn forge_header(f: &mut FileImg, id: u64, base: u64, version: u32, flags: u32) {
    let mut h = Vec::with_capacity(FILE_HEADER_LEN as usize);
    h.extend_from_slice(FILE_MAGIC);
    h.extend_from_slice(&version.to_le_bytes());
    h.extend_from_slice(&flags.to_le_bytes());
    h.extend_from_slice(&id.to_le_bytes());
    h.extend_from_slice(&base.to_le_bytes());
    let crc = crc32c::crc32c(&h);
    h.extend_from_slice(&crc.to_le_bytes());
    f.write(FILE_HEADER_AT, &h);
}

fn fix_slot_crc(f: &mut FileImg, k: u64) {
    if let Some(crc) = slot_crc(f, k) {
        f.write(slot_at(k) + SLOT_CRC_AT, &crc.to_le_bytes());
    }
}

/// Applies the mutations the input describes.
fn mutate(img: &mut Img, t: &Template, r: &mut Reader) -> Mutated {
    let mut m = Mutated {
        ops: 0,
        benign: true,
    };
    while !r.is_empty() && m.ops < MAX_OPS {
        m.ops += 1;
        let op = r.u8() % 16;
        if op != 6 {
            m.benign = false;
        }
        match op {
            // flip bits
            0 => {
                let Some(n) = pick_file(r, img) else { continue };
                let Some(f) = file_mut(img, &n) else { continue };
                let o = offset(r, f);
                let mask = r.u8().max(1);
                if o < f.len {
                    let b = f.byte(o) ^ mask;
                    f.write(o, &[b]);
                }
            }
            // write bytes
            1 => {
                let Some(n) = pick_file(r, img) else { continue };
                let Some(f) = file_mut(img, &n) else { continue };
                let o = offset(r, f);
                let k = usize::from(r.u8() % 33);
                f.write(o, r.bytes(k));
            }
            // zero a range
            2 => {
                let Some(n) = pick_file(r, img) else { continue };
                let Some(f) = file_mut(img, &n) else { continue };
                let o = offset(r, f);
                let k = match r.u8() % 4 {
                    0 => u64::from(r.u8()),
                    1 => 4096,
                    2 => u64::from(r.u16()) * 16,
                    _ => u64::from(r.u32()),
                };
                f.zero(o, k);
            }
            // truncate
            3 => {
                let Some(n) = pick_file(r, img) else { continue };
                let Some(f) = file_mut(img, &n) else { continue };
                let o = offset(r, f);
                f.set_len(o);
            }
            // append garbage (or zeroes)
            4 => {
                let Some(n) = pick_file(r, img) else { continue };
                let Some(f) = file_mut(img, &n) else { continue };
                let k = u64::from(r.u16() % 8192) + 1;
                let plen = usize::from(r.u8() % 16);
                let pat = r.bytes(plen).to_vec();
                let at = f.len;
                if pat.is_empty() {
                    f.set_len(at + k);
                } else {
                    let b: Vec<u8> = pat.iter().copied().cycle().take(k as usize).collect();
                    f.write(at, &b);
                }
            }
            // delete a file or a directory (with what is inside)
            5 => {
                let names: Vec<String> = img.keys().cloned().collect();
                let b = r.u8();
                if names.is_empty() {
                    continue;
                }
                let n = names[usize::from(b) % names.len()].clone();
                let prefix = format!("{n}/");
                img.retain(|k, _| *k != n && !k.starts_with(&prefix));
            }
            // an extra file
            6 => add_extra(img, t, r, &mut m),
            // recompute a slot's CRC
            7 => {
                let Some(n) = pick_wal(r, img) else { continue };
                let k = slot_no(r);
                if let Some(f) = file_mut(img, &n) {
                    fix_slot_crc(f, k);
                }
            }
            // forge a log file header (valid CRC)
            8 => {
                let Some(n) = pick_wal(r, img) else { continue };
                let id = wal_id(&n).unwrap_or(0);
                let Some(f) = file_mut(img, &n) else { continue };
                let cur = f.u64_at(FILE_HEADER_AT + FILE_BASE_AT);
                let base = match r.u8() % 4 {
                    0 => SLOTS_PER_FILE
                        .wrapping_mul(id.wrapping_sub(1))
                        .wrapping_add(1),
                    _ => value(r, cur),
                };
                let id = if r.u8().is_multiple_of(8) {
                    value(r, id)
                } else {
                    id
                };
                let version = if r.u8().is_multiple_of(8) { r.u32() } else { 1 };
                let flags = if r.u8().is_multiple_of(8) { r.u32() } else { 0 };
                forge_header(f, id, base, version, flags);
            }
            // forge a meta region (edited record, valid CRC)
            9 => forge_meta(img, t, r),
            // forge a snapshot file header
            10 => forge_snap(img, r),
            // copy a slot (32 bytes) from one place to another, maybe across files
            11 => {
                let (Some(a), Some(b)) = (pick_wal(r, img), pick_wal(r, img)) else {
                    continue;
                };
                let (ka, kb) = (slot_no(r), slot_no(r));
                let src = match img.get(&a) {
                    Some(Node::File(f)) => f.read(slot_at(ka), SLOT_LEN),
                    _ => None,
                };
                if let (Some(src), Some(f)) = (src, file_mut(img, &b)) {
                    f.write(slot_at(kb), &src);
                }
            }
            // set a file's exact length
            12 => {
                let Some(n) = pick_file(r, img) else { continue };
                let Some(f) = file_mut(img, &n) else { continue };
                let len = match r.u8() % 6 {
                    0 => u64::from(r.u32()),
                    1 => (PAYLOADS_AT + u64::from(r.u8())).saturating_sub(128),
                    2 => (META_MIN_LEN + u64::from(r.u8())).saturating_sub(128),
                    3 => (f.len + u64::from(r.u8())).saturating_sub(128),
                    4 => SNAP_DATA_AT + u64::from(r.u16()),
                    _ => FILE_HEADER_AT + u64::from(r.u8() % 40),
                };
                f.set_len(len);
            }
            // forge a slot: edited fields, valid CRC
            13 => {
                let Some(n) = pick_wal(r, img) else { continue };
                let k = slot_no(r);
                let Some(f) = file_mut(img, &n) else { continue };
                let at = slot_at(k);
                for _ in 0..1 + r.u8() % 3 {
                    match r.u8() % 7 {
                        0 => {
                            let v = value(r, f.u64_at(at + SLOT_TERM_AT));
                            f.write(at + SLOT_TERM_AT, &v.to_le_bytes());
                        }
                        1 => {
                            let v = value(r, f.u64_at(at + SLOT_INDEX_AT));
                            f.write(at + SLOT_INDEX_AT, &v.to_le_bytes());
                        }
                        2 => {
                            let cur = f.u64_at(at + SLOT_OFFSET_AT) & 0xffff_ffff_ffff;
                            let v = value(r, cur);
                            f.write(
                                at + SLOT_OFFSET_AT,
                                &v.to_le_bytes()[..SLOT_OFFSET_LEN as usize],
                            );
                        }
                        3 => {
                            let v = r.u8() % 5;
                            f.write(at + SLOT_TYPE_AT, &[v]);
                        }
                        4 => {
                            let v = r.u8() % 9;
                            f.write(at + SLOT_FLAGS_AT, &[v]);
                        }
                        5 => {
                            let v = value(r, u64::from(f.u32_at(at + SLOT_DATA_LEN_AT))) as u32;
                            f.write(at + SLOT_DATA_LEN_AT, &v.to_le_bytes());
                        }
                        _ => {
                            // payload offset of another slot
                            let k2 = slot_no(r);
                            if let Some(src) = f.read(slot_at(k2) + SLOT_OFFSET_AT, SLOT_OFFSET_LEN)
                            {
                                f.write(at + SLOT_OFFSET_AT, &src);
                            }
                        }
                    }
                }
                fix_slot_crc(f, k);
            }
            // rebuild wal.meta with another region size, template record in both regions
            14 => {
                let shift = r.u8() % 4;
                let region = META_MIN_REGION << shift;
                let rec = pb_encode(&t.meta_record);
                let mut f = FileImg {
                    data: Vec::new(),
                    len: 2 * region,
                };
                let seq = t.meta_seq;
                let (s0, s1) = if r.bool() {
                    (seq, seq.wrapping_sub(1))
                } else {
                    (seq.wrapping_sub(1), seq)
                };
                f.write(0, &encode_meta_region(s0, 1, 0, rec.len() as u32, &rec));
                if r.bool() {
                    f.write(
                        region,
                        &encode_meta_region(s1, 1, 0, rec.len() as u32, &rec),
                    );
                }
                img.insert(META_FILE.into(), Node::File(f));
            }
            // write an interesting integer
            _ => {
                let Some(n) = pick_file(r, img) else { continue };
                let Some(f) = file_mut(img, &n) else { continue };
                let o = offset(r, f);
                let width = [1usize, 2, 4, 8][usize::from(r.u8() % 4)];
                let cur = f.u64_at(o);
                let v = value(r, cur).to_le_bytes();
                f.write(o, &v[..width]);
            }
        }
    }
    m
}

fn add_extra(img: &mut Img, t: &Template, r: &mut Reader, m: &mut Mutated) {
    let kind = r.u8() % 8;
    if kind != 0 {
        m.benign = false;
    }
    let (name, node) = match kind {
        0 => {
            let n = usize::from(r.u8() % 24);
            let name = sanitize_name(r.bytes(n));
            let k = usize::from(r.u8());
            if special_name(&name) || img.contains_key(&name) {
                m.benign = false;
            }
            (name, Node::File(FileImg::from_bytes(r.bytes(k).to_vec())))
        }
        1 => {
            let id = u64::from(r.u8() % 8);
            (log_name(id), Node::File(wal_content(r, t, id)))
        }
        2 => {
            let id = r.u64();
            (log_name(id), Node::File(wal_content(r, t, id)))
        }
        3 => {
            let names = [
                "wal.meta.tmp".to_string(),
                "00002.wal.tmp".to_string(),
                "00003.wal.tmp".to_string(),
                format!("{}.tmp", t.snap_name),
            ];
            let name = names[usize::from(r.u8()) % names.len()].clone();
            let k = usize::from(r.u8());
            (name, Node::File(FileImg::from_bytes(r.bytes(k).to_vec())))
        }
        4 => {
            let md = t.snap.get_metadata();
            let term = value(r, md.term);
            let index = value(r, md.index);
            let content = match (r.u8() % 3, t.img.get(&t.snap_name)) {
                (0, Some(Node::File(f))) => f.clone(),
                _ => {
                    let k = usize::from(r.u8());
                    FileImg::from_bytes(r.bytes(k).to_vec())
                }
            };
            (
                format!("snap/{}", snap_name(term, index)),
                Node::File(content),
            )
        }
        5 => {
            let names = [
                "00003.wal",
                "00000.wal",
                "snap/x.snap",
                "snap/y.snap.tmp",
                "LOCK",
                "wal.meta.tmp",
                "00003.wal.tmp",
                "junkdir",
            ];
            (
                names[usize::from(r.u8()) % names.len()].to_string(),
                Node::Dir,
            )
        }
        6 => {
            // names next to the log file pattern
            let names = [
                "0001.wal",
                "000001.wal",
                "000002.wal",
                "00002.WAL",
                "00003.wal",
                "99999.wal",
                "100000.wal",
                "00001.wal.broken",
            ];
            let name = names[usize::from(r.u8()) % names.len()].to_string();
            let id = wal_id(&name).unwrap_or(3);
            (name, Node::File(wal_content(r, t, id)))
        }
        _ => {
            // copy an existing file under another name
            let Some(src) = pick_file(r, img) else { return };
            let names = [
                "00003.wal",
                "00000.wal",
                "00001.wal",
                "00002.wal",
                "wal.meta",
                "snap/0000000000000001-0000000000000001.snap",
            ];
            let name = names[usize::from(r.u8()) % names.len()].to_string();
            let Some(node) = img.get(&src).cloned() else {
                return;
            };
            (name, node)
        }
    };
    // a file under a path that is a file, or a directory over a file's children: skip
    if let Some((parent, _)) = name.rsplit_once('/') {
        if matches!(img.get(parent), Some(Node::File(_))) {
            return;
        }
        img.entry(parent.to_string()).or_insert(Node::Dir);
    }
    let prefix = format!("{name}/");
    img.retain(|k, _| !k.starts_with(&prefix));
    img.insert(name, node);
}

fn forge_meta(img: &mut Img, t: &Template, r: &mut Reader) {
    let mut rec = t.meta_record.clone();
    let mut raw: Option<Vec<u8>> = None;
    for _ in 0..1 + r.u8() % 4 {
        let field = r.u8() % 16;
        match field {
            // raft id, group id, checkpoint, first_file_id
            0..=2 | 10 => {
                let f = if field == 10 { 7 } else { u32::from(field) + 1 };
                let v = value(r, pb_varint(&rec, f));
                pb_set_varint(&mut rec, f, v);
            }
            // hard state term / vote / commit
            3..=5 => {
                let mut hs = pb_sub(&rec, 4).unwrap_or_default();
                let f = u32::from(field - 2);
                let v = value(r, pb_varint(&hs, f));
                pb_set_varint(&mut hs, f, v);
                pb_set_sub(&mut rec, 4, Some(&hs));
            }
            // snapshot index / term / data_len / data_crc32c
            6..=9 => {
                let mut s = pb_sub(&rec, 6).unwrap_or_default();
                let f = [1, 2, 4, 5][usize::from(field - 6)];
                let v = if r.u8().is_multiple_of(3) {
                    // what the snapshot file in the image holds now
                    match img.get(&t.snap_name) {
                        Some(Node::File(sf)) => {
                            let data = sf
                                .read(SNAP_DATA_AT, sf.len.saturating_sub(SNAP_DATA_AT))
                                .unwrap_or_default();
                            if f == 4 {
                                data.len() as u64
                            } else {
                                u64::from(crc32c::crc32c(&data))
                            }
                        }
                        _ => 0,
                    }
                } else {
                    value(r, pb_varint(&s, f))
                };
                pb_set_varint(&mut s, f, v);
                pb_set_sub(&mut rec, 6, Some(&s));
            }
            // remove hard state / conf state / snapshot
            11 => {
                let f = [4, 5, 6][usize::from(r.u8() % 3)];
                pb_set_sub(&mut rec, f, None);
            }
            // conf state (current or the snapshot's): voters from input
            12 | 13 => {
                let n = usize::from(r.u8() % 40);
                let mut packed = Vec::new();
                for &b in r.bytes(n) {
                    let mut v = u64::from(b);
                    while v >= 0x80 {
                        packed.push((v as u8) | 0x80);
                        v >>= 7;
                    }
                    packed.push(v as u8);
                }
                let cs: PbMsg = vec![(1, PbVal::Bytes(packed))];
                if field == 12 {
                    pb_set_sub(&mut rec, 5, Some(&cs));
                } else {
                    let mut s = pb_sub(&rec, 6).unwrap_or_default();
                    pb_set_sub(&mut s, 3, Some(&cs));
                    pb_set_sub(&mut rec, 6, Some(&s));
                }
            }
            // raw record bytes
            14 => {
                let n = usize::from(r.u8() % 64);
                raw = Some(r.bytes(n).to_vec());
            }
            // an unknown field
            _ => {
                let v = r.u64();
                rec.push((15, PbVal::Varint(v)));
            }
        }
    }
    let body = raw.unwrap_or_else(|| pb_encode(&rec));
    let which = r.u8() % 3;
    let seq = match r.u8() % 4 {
        0 => r.u64(),
        k => t.meta_seq.wrapping_add(u64::from(k)),
    };
    let version = if r.u8().is_multiple_of(8) { r.u32() } else { 1 };
    let flags = if r.u8().is_multiple_of(8) { r.u32() } else { 0 };
    let len = if r.u8().is_multiple_of(16) {
        r.u32()
    } else {
        body.len() as u32
    };
    let Some(f) = file_mut(img, META_FILE) else {
        return;
    };
    let half = f.len / 2;
    if META_RECORD_AT + body.len() as u64 > half {
        return;
    }
    let region = encode_meta_region(seq, version, flags, len, &body);
    if which != 1 {
        f.write(0, &region);
    }
    if which != 0 {
        let other = encode_meta_region(seq.wrapping_sub(1), version, flags, len, &body);
        f.write(half, if which == 1 { &region } else { &other });
    }
}

fn forge_snap(img: &mut Img, r: &mut Reader) {
    let names: Vec<String> = file_names(img)
        .into_iter()
        .filter(|n| n.starts_with("snap/") && n.ends_with(".snap"))
        .collect();
    let b = r.u8();
    let mode = r.u8() % 3;
    if names.is_empty() {
        return;
    }
    let name = names[usize::from(b) % names.len()].clone();
    let Some(f) = file_mut(img, &name) else {
        return;
    };
    let n = u64::from(f.u32_at(SNAP_ENVELOPE_LEN_AT));
    if SNAP_ENVELOPE_AT + n + 4 > SNAP_DATA_AT {
        return;
    }
    if mode > 0 {
        // re-encode the envelope: data length and CRC32C of the data the file holds now,
        // maybe index / term edited
        let Some(env) = f.read(SNAP_ENVELOPE_AT, n).and_then(|b| pb_decode(&b)) else {
            return;
        };
        let mut env = env;
        let data = f
            .read(SNAP_DATA_AT, f.len.saturating_sub(SNAP_DATA_AT))
            .unwrap_or_default();
        pb_set_varint(&mut env, 4, data.len() as u64);
        pb_set_varint(&mut env, 5, u64::from(crc32c::crc32c(&data)));
        if mode == 2 {
            let fld = 1 + u32::from(r.u8() % 2);
            let v = value(r, pb_varint(&env, fld));
            pb_set_varint(&mut env, fld, v);
        }
        let body = pb_encode(&env);
        if SNAP_ENVELOPE_AT + body.len() as u64 + 4 > SNAP_DATA_AT {
            return;
        }
        f.write(SNAP_ENVELOPE_LEN_AT, &(body.len() as u32).to_le_bytes());
        f.write(SNAP_ENVELOPE_AT, &body);
    }
    let n = u64::from(f.u32_at(SNAP_ENVELOPE_LEN_AT));
    if let Some(h) = f.read(0, SNAP_ENVELOPE_AT + n) {
        let crc = crc32c::crc32c(&h);
        f.write(SNAP_ENVELOPE_AT + n, &crc.to_le_bytes());
    }
}

// ---------------------------------------------------------------------------------------------
// the checks
// ---------------------------------------------------------------------------------------------

/// What an opened store showed.
#[derive(Debug, PartialEq)]
struct Seen {
    first: u64,
    last: u64,
    /// Entry read at each index of `[first, last]` (`None`: the read failed), when the range
    /// was small enough to read in full.
    entries: Option<Vec<Option<Entry>>>,
    hs: HardState,
    cs: ConfState,
}

/// Ranges larger than this are read at both ends only (only a damaged directory can claim one).
const READ_ALL_MAX: u64 = 70_000;

fn read_store(s: &DiskStorage, o: &Oracle) -> Result<Seen, String> {
    let (t, img) = (o.t, o.img);
    let first = s.first_index().map_err(|e| format!("first_index: {e}"))?;
    let last = s.last_index().map_err(|e| format!("last_index: {e}"))?;
    ensure!(first >= 1, "first_index {first}");
    ensure!(
        last + 1 >= first,
        "last_index {last} below first_index {first} - 1"
    );
    let snap_index = first - 1;
    ensure!(
        s.uint(MetaInfo::SnapshotIndex) == snap_index,
        "uint(SnapshotIndex) {} but first_index {first}",
        s.uint(MetaInfo::SnapshotIndex)
    );
    let st = s
        .initial_state()
        .map_err(|e| format!("initial_state: {e}"))?;
    ensure!(
        st.hard_state.commit <= last,
        "hard state commit {} past last_index {last}",
        st.hard_state.commit
    );

    // term of the snapshot index, and below / above the range
    let snap_term = s.uint(MetaInfo::SnapshotTerm);
    let t0 = s.term(snap_index);
    ensure!(
        matches!(t0, Ok(x) if x == snap_term),
        "term({snap_index}) (snapshot index): {t0:?}, want Ok({snap_term})"
    );
    if snap_index > 0 {
        let r = s.term(snap_index - 1);
        ensure!(
            matches!(&r, Err(raft::Error::Store(StorageError::Compacted))),
            "term({}) below the snapshot: {r:?}, want Compacted",
            snap_index - 1
        );
    }
    let r = s.term(last + 1);
    ensure!(
        matches!(&r, Err(raft::Error::Store(StorageError::Unavailable))),
        "term({}) past last_index: {r:?}, want Unavailable",
        last + 1
    );
    let r = s.entries(first, last + 2, None, ctx());
    ensure!(
        matches!(&r, Err(raft::Error::Store(StorageError::Unavailable))),
        "entries({first}, {}) past last_index + 1: {}, want Unavailable",
        last + 2,
        r.as_ref()
            .map_or_else(kind_of, |v| format!("Ok({} entries)", v.len()))
    );

    // the entries, in chunks; a chunk that fails is read entry by entry
    let n = last + 1 - first;
    let read_one = |i: u64| -> Result<Option<Entry>, String> {
        let got = match s.entries(i, i + 1, None, ctx()) {
            Ok(mut v) => {
                ensure!(v.len() == 1, "entries({i}, {}): {} entries", i + 1, v.len());
                v.pop()
            }
            Err(e) => {
                ensure!(
                    !out_of_range_kind(&e),
                    "entries({i}, {}) inside [first_index {first}, last_index {last}]: {}",
                    i + 1,
                    kind_of(&e)
                );
                None
            }
        };
        if let Some(e) = &got {
            ensure!(
                e.index == i && genuine(o, e),
                "entries({i}, {}) returned altered data: {e:?}\n template has {:?}{}",
                i + 1,
                t.entry(i),
                describe_slots(img, i)
            );
        }
        // the term read from the slot agrees with the entry read; in range, never out of range
        match s.term(i) {
            Ok(term) => {
                if let Some(e) = &got {
                    ensure!(
                        term == e.term,
                        "term({i}) = {term} but entries() returned term {} at {i}",
                        e.term
                    );
                }
            }
            Err(err) => {
                ensure!(
                    !out_of_range_kind(&err),
                    "term({i}) inside [first_index {first}, last_index {last}]: {}",
                    kind_of(&err)
                );
                ensure!(
                    got.is_none(),
                    "term({i}) failed ({err}) but entries() returned {got:?}"
                );
            }
        }
        Ok(got)
    };
    let entries = if n <= READ_ALL_MAX {
        let mut out: Vec<Option<Entry>> = Vec::with_capacity(n as usize);
        let mut lo = first;
        while lo <= last {
            let hi = (lo + 512).min(last + 1);
            match s.entries(lo, hi, None, ctx()) {
                Ok(v) => {
                    ensure!(
                        v.len() as u64 == hi - lo,
                        "entries({lo}, {hi}): {} entries",
                        v.len()
                    );
                    for (k, e) in v.iter().enumerate() {
                        let i = lo + k as u64;
                        ensure!(
                            e.index == i && genuine(o, e),
                            "entries({lo}, {hi}) returned altered data at {i}: {e:?}\n template has {:?}{}",
                            t.entry(i),
                            describe_slots(img, i)
                        );
                    }
                    for i in lo..hi {
                        let one = read_one(i)?;
                        ensure!(
                            one.as_ref() == v.get((i - lo) as usize),
                            "entries({i}, {}) = {one:?} differs from entries({lo}, {hi})",
                            i + 1
                        );
                        out.push(one);
                    }
                }
                Err(e) => {
                    ensure!(
                        !out_of_range_kind(&e),
                        "entries({lo}, {hi}) inside [first_index {first}, last_index {last}]: {}",
                        kind_of(&e)
                    );
                    for i in lo..hi {
                        out.push(read_one(i)?);
                    }
                }
            }
            lo = hi;
        }
        Some(out)
    } else {
        for i in (first..first + 1_000).chain(last - 1_000..=last) {
            read_one(i)?;
        }
        None
    };

    // a size-limited read: a non-empty prefix of what was read
    if let Some(es) = &entries {
        let k = es.iter().position(Option::is_none).unwrap_or(es.len());
        if k > 0 {
            let hi = first + k as u64;
            match s.entries(first, hi, Some(64), ctx()) {
                Ok(v) => {
                    let mut want: Vec<Entry> = es[..k].iter().flatten().cloned().collect();
                    raft::util::limit_size(&mut want, Some(64));
                    ensure!(
                        v == want,
                        "entries({first}, {hi}, 64): not the prefix that fits"
                    );
                }
                Err(e) => return Err(format!("entries({first}, {hi}, 64): {e}")),
            }
        }
    }

    // the snapshot
    if snap_index > 0 {
        match s.snapshot(snap_index, 0) {
            Ok(sn) => {
                let md = sn.get_metadata();
                ensure!(
                    md.index == snap_index && md.term == snap_term,
                    "snapshot(): index {} term {}, want {snap_index} {snap_term}",
                    md.index,
                    md.term
                );
                ensure!(
                    genuine_snapshot(t, img, &sn.data),
                    "snapshot() returned altered data ({} bytes)",
                    sn.data.len()
                );
            }
            // the file was checked at open; nothing changed it since
            Err(e) => return Err(format!("snapshot({snap_index}, 0): {e}")),
        }
    }
    let r = s.snapshot(snap_index + 1, 0);
    ensure!(
        matches!(
            &r,
            Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable
            ))
        ),
        "snapshot({}, 0) above the snapshot: {}, want SnapshotTemporarilyUnavailable",
        snap_index + 1,
        r.as_ref()
            .map_or_else(kind_of, |x| format!("Ok(index {})", x.get_metadata().index))
    );
    let _ = s.checkpoint();
    let _ = s.num_entries();
    let _ = s.num_log_files();
    Ok(Seen {
        first,
        last,
        entries,
        hs: st.hard_state,
        cs: st.conf_state,
    })
}

fn check_is_template(seen: &Seen, t: &Template, s: &DiskStorage) -> Result<(), String> {
    ensure!(
        seen.first == t.first && seen.last == t.last,
        "[{}, {}] where the template holds [{}, {}]",
        seen.first,
        seen.last,
        t.first,
        t.last
    );
    let want: Vec<Option<Entry>> = t.entries.iter().cloned().map(Some).collect();
    ensure!(
        seen.entries.as_ref() == Some(&want),
        "entries differ from the template's"
    );
    ensure!(
        seen.hs == t.hs && seen.cs == t.cs,
        "initial state {:?} {:?}, template {:?} {:?}",
        seen.hs,
        seen.cs,
        t.hs,
        t.cs
    );
    let uints = [
        s.uint(MetaInfo::RaftId),
        s.uint(MetaInfo::GroupId),
        s.uint(MetaInfo::CheckpointIndex),
    ];
    ensure!(
        uints == t.uints,
        "meta integers {uints:?}, template {:?}",
        t.uints
    );
    let sn = s.snapshot(0, 0).map_err(|e| format!("snapshot: {e}"))?;
    ensure!(sn == t.snap, "snapshot differs from the template's");
    Ok(())
}

fn opts(mode: RecoveryMode, key: Option<[u8; 32]>) -> Options {
    Options {
        sync_writes: false,
        recovery_mode: mode,
        encryption_key: key,
        ..Options::default()
    }
}

/// After a tolerant open: append three entries, close, reopen strictly, read everything again.
fn append_and_reopen(s: DiskStorage, seen: &Seen, o: &Oracle, dir: &Path) -> Result<(), String> {
    let Ok(term) = s.term(seen.last) else {
        // a damaged entry at the end of a sealed file: nothing to append after
        return Ok(());
    };
    let term = term.max(1);
    let new: Vec<Entry> = (seen.last + 1..=seen.last + 3)
        .map(|i| {
            let mut e = Entry::default();
            e.index = i;
            e.term = term;
            e.data = Bytes::from(format!("appended-{i}").into_bytes());
            e
        })
        .collect();
    s.save(&HardState::default(), &new, &Snapshot::default())
        .map_err(|e| format!("append at {} after a tolerant open: {e}", seen.last + 1))?;
    s.close()
        .map_err(|e| format!("close after the append: {e}"))?;
    let s = DiskStorage::open_with(dir, opts(RecoveryMode::AbsoluteConsistency, o.t.key)).map_err(
        |e| format!("strict reopen after a tolerant open and an append of 3 entries: {e}"),
    )?;
    let o = Oracle {
        t: o.t,
        img: o.img,
        appended: new.clone(),
    };
    let after = read_store(&s, &o)?;
    ensure!(
        after.first == seen.first && after.last == seen.last + 3,
        "after the append and reopen: [{}, {}], want [{}, {}]",
        after.first,
        after.last,
        seen.first,
        seen.last + 3
    );
    if let (Some(before), Some(now)) = (&seen.entries, &after.entries) {
        for (k, b) in before.iter().enumerate() {
            if let Some(b) = b {
                ensure!(
                    now[k].as_ref() == Some(b),
                    "entry {} read {b:?} before the append, {:?} after",
                    seen.first + k as u64,
                    now[k]
                );
            }
        }
        let tail: Vec<Entry> = now[before.len()..].iter().flatten().cloned().collect();
        ensure!(tail == new, "appended entries read back as {tail:?}");
    }
    ensure!(
        after.hs == seen.hs && after.cs == seen.cs,
        "initial state changed by the append"
    );
    s.close().map_err(|e| format!("final close: {e}"))?;
    Ok(())
}

/// What one input led to (for the replay test's summary).
#[derive(Clone, Copy, Debug, Default)]
pub struct Stats {
    pub mutations: usize,
    pub strict_opened: bool,
    pub tolerant_opened: bool,
    pub inspected: bool,
}

/// Runs one fuzz input. `Err` describes a violated property (a panic in the engine propagates
/// as a panic).
pub fn run(data: &[u8]) -> Result<Stats, String> {
    let mut r = Reader::new(data);
    let t = template(r.u8() & 1 == 1);
    let mut img = t.img.clone();
    let m = mutate(&mut img, t, &mut r);
    let work = scratch_dir("raftwal-fuzz-open");
    let dir = work.path().join("wal");
    fs::create_dir(&dir).map_err(|e| format!("mkdir: {e}"))?;
    write_image(&img, &dir)?;
    let mut stats = Stats {
        mutations: m.ops,
        ..Stats::default()
    };
    let o = Oracle {
        t,
        img: &img,
        appended: Vec::new(),
    };

    // 1. read-only inspection
    let inspected = match Inspector::open_with_key(&dir, t.key) {
        Ok(insp) => {
            let _ = insp.verify(&mut |_| {});
            let _ = insp.verify_len();
            let _ = insp.hard_state();
            let sum = insp.summary().clone();
            if sum.last_index + 1 >= sum.first_index
                && sum.last_index + 1 - sum.first_index <= READ_ALL_MAX
            {
                if let Ok(es) = insp.entries(sum.first_index, sum.last_index + 1) {
                    for e in &es {
                        ensure!(
                            genuine(&o, e),
                            "Inspector::entries returned altered data: {e:?}"
                        );
                    }
                }
            }
            if let Ok(mut rd) = insp.snapshot_reader() {
                let mut buf = Vec::new();
                if rd.read_to_end(&mut buf).is_ok() {
                    ensure!(
                        genuine_snapshot(t, &img, &buf),
                        "Inspector::snapshot_reader returned altered data"
                    );
                }
            }
            Some((sum.first_index, sum.last_index))
        }
        Err(_) => None,
    };
    stats.inspected = inspected.is_some();

    // 2. strict open
    let before = dir_state(&dir);
    let strict = match DiskStorage::open_with(&dir, opts(RecoveryMode::AbsoluteConsistency, t.key))
    {
        Ok(s) => {
            let seen = read_store(&s, &o).map_err(|e| format!("strict open: {e}"))?;
            if m.benign {
                check_is_template(&seen, t, &s)
                    .map_err(|e| format!("strict open of an intact directory: {e}"))?;
            }
            s.close().map_err(|e| format!("close: {e}"))?;
            Some(seen)
        }
        Err(e) => {
            let after = dir_state(&dir);
            ensure!(
                after == before,
                "a failed strict open changed the directory (error: {e}): {}",
                diff_states(&before, &after)
            );
            ensure!(!m.benign, "strict open of an intact directory failed: {e}");
            None
        }
    };
    stats.strict_opened = strict.is_some();

    // 3. tolerant open
    let before = dir_state(&dir);
    match DiskStorage::open_with(&dir, opts(RecoveryMode::TolerateTailCorruption, t.key)) {
        Ok(s) => {
            stats.tolerant_opened = true;
            let seen = read_store(&s, &o).map_err(|e| format!("tolerant open: {e}"))?;
            if let Some(a) = &strict {
                ensure!(
                    *a == seen,
                    "strict and tolerant opens differ: [{}, {}] vs [{}, {}]",
                    a.first,
                    a.last,
                    seen.first,
                    seen.last
                );
            }
            if img.contains_key(META_FILE) {
                match inspected {
                    Some((f, l)) => ensure!(
                        (f, l) == (seen.first, seen.last),
                        "Inspector saw [{f}, {l}], tolerant open [{}, {}]",
                        seen.first,
                        seen.last
                    ),
                    None => {
                        return Err("Inspector::open failed where a tolerant open succeeds".into())
                    }
                }
            }
            if m.benign {
                check_is_template(&seen, t, &s)
                    .map_err(|e| format!("tolerant open of an intact directory: {e}"))?;
            }
            append_and_reopen(s, &seen, &o, &dir)?;
        }
        Err(e) => {
            let after = dir_state(&dir);
            ensure!(
                after == before,
                "a failed tolerant open changed the directory (error: {e}): {}",
                diff_states(&before, &after)
            );
            ensure!(
                strict.is_none(),
                "strict open succeeded but tolerant open failed: {e}"
            );
        }
    }
    Ok(stats)
}
