//! Damage (corruption) tests: a real store is written, closed, damaged on disk with `std::fs`, and
//! reopened (in both recovery modes where that matters, each on its own copy of the directory).
//!
//! The property every test keeps (docs/DESIGN.md §4 "Open/recovery", "Checksums", §6): open either
//! returns an error that names the damaged file (and, for `Corrupt`, a plausible offset), or it
//! succeeds and every entry it hands out is byte-identical to what was written — a valid prefix of
//! the log, never altered data — and nothing panics.
//!
//! Byte positions come from docs/FORMAT.md (tests/common/layout.rs): slots of 32 bytes from
//! offset 0, the log file header at 960,000, payloads from 1 MiB; `wal.meta` is two regions of
//! `len / 2` bytes; snapshot data at 4096 in `snap/<term>-<index>.snap`.

use std::fs::{self, OpenOptions};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use bytes::Bytes;
use proptest::prelude::*;
use proptest::test_runner::Config as ProptestConfig;
use raft::prelude::*;
use raft::{Storage, StorageError};
use raftwal::{DiskStorage, Error, Options, RecoveryMode};
use tempfile::TempDir;

#[path = "common/entries.rs"]
mod entries;
#[path = "common/layout.rs"]
mod layout;
#[path = "common/roots.rs"]
mod roots;

use entries::{alt_entry_at, ctx, entry_at, term_of};
use layout::{
    log_name, slot_data_len, slot_payload_offset, CONTEXT_LEN_LEN, FILE_BASE_AT, FILE_CRC_AT,
    FILE_HEADER_AT, FILE_HEADER_LEN, FILE_ID_AT, FILE_MAGIC_AT, FILE_VERSION_AT, META_CRC_AT,
    META_FILE, META_MAGIC_AT, META_MIN_REGION, META_RECORD_AT, META_RECORD_LEN_AT, META_SEQ_AT,
    META_VERSION_AT, PAYLOADS_AT, SLOTS_PER_FILE, SLOT_AREA_LEN, SLOT_CRC_AT, SLOT_DATA_LEN_AT,
    SLOT_FLAGS_AT, SLOT_INDEX_AT, SLOT_LEN, SLOT_OFFSET_AT, SLOT_TERM_AT, SNAP_DATA_AT,
    SNAP_ENVELOPE_AT, SNAP_ENVELOPE_LEN_AT,
};

const MODES: [RecoveryMode; 2] = [
    RecoveryMode::TolerateTailCorruption,
    RecoveryMode::AbsoluteConsistency,
];

// ---------------------------------------------------------------------------------------------
// entries (tests/common/entries.rs: `entry_at`, and `alt_entry_at` written after a cut)
// ---------------------------------------------------------------------------------------------

/// Bytes the entry's payload takes in the file.
fn payload_len(e: &Entry) -> u64 {
    e.data.len() as u64
        + if e.context.is_empty() {
            0
        } else {
            CONTEXT_LEN_LEN + e.context.len() as u64
        }
}

fn hs(term: u64, vote: u64, commit: u64) -> HardState {
    let mut h = HardState::default();
    h.term = term;
    h.vote = vote;
    h.commit = commit;
    h
}

// ---------------------------------------------------------------------------------------------
// stores
// ---------------------------------------------------------------------------------------------

fn opts(mode: RecoveryMode) -> Options {
    Options {
        recovery_mode: mode,
        ..Default::default()
    }
}

fn open(dir: &Path, mode: RecoveryMode) -> Result<DiskStorage, Error> {
    DiskStorage::open_with(dir, opts(mode))
}

fn must_open(dir: &Path, mode: RecoveryMode, when: &str) -> DiskStorage {
    match open(dir, mode) {
        Ok(s) => s,
        Err(e) => panic!("{when}: open in {mode:?} failed: {e}"),
    }
}

fn must_fail(dir: &Path, mode: RecoveryMode, when: &str) -> Error {
    match open(dir, mode) {
        Ok(s) => panic!(
            "{when}: open in {mode:?} succeeded (log [{}, {}]) but must fail",
            s.first_index().unwrap(),
            s.last_index().unwrap()
        ),
        Err(e) => e,
    }
}

/// Saves `gen(i)` for `i` in `lo..=hi` in batches of 5,000.
fn append(s: &DiskStorage, lo: u64, hi: u64, gen: fn(u64) -> Entry) {
    let mut i = lo;
    while i <= hi {
        let end = (i + 4_999).min(hi);
        let batch: Vec<Entry> = (i..=end).map(gen).collect();
        s.save(&HardState::default(), &batch, &Snapshot::default())
            .unwrap_or_else(|e| panic!("save {i}..={end}: {e}"));
        i = end + 1;
    }
}

/// Writes entries `1..=n` (`entry_at`), then a hard state with `commit` (if > 0), and closes.
/// Unsynced writes with one flush at close: fast, and what is on disk is the same.
fn build(dir: &Path, n: u64, commit: u64) {
    let s = DiskStorage::open_with(
        dir,
        Options {
            sync_writes: false,
            ..Default::default()
        },
    )
    .unwrap();
    append(&s, 1, n, entry_at);
    if commit > 0 {
        s.save(&hs(term_of(n), 1, commit), &[], &Snapshot::default())
            .unwrap();
    }
    s.close().unwrap();
}

/// Replaces the stored hard state of the (closed) store in `dir`.
fn set_commit(dir: &Path, term: u64, commit: u64) {
    let s = must_open(dir, RecoveryMode::TolerateTailCorruption, "set_commit");
    s.save(&hs(term, 1, commit), &[], &Snapshot::default())
        .unwrap();
    s.close().unwrap();
}

/// A fresh copy of `src` in its own temporary directory.
fn copy_of(src: &Path) -> TempDir {
    let t = tempfile::tempdir().unwrap();
    roots::copy_tree(src, t.path());
    t
}

// ---------------------------------------------------------------------------------------------
// checks
// ---------------------------------------------------------------------------------------------

/// Reads `[lo, hi]` in chunks and compares each entry (and its term) with `gen`.
fn check_range(s: &DiskStorage, lo: u64, hi: u64, gen: impl Fn(u64) -> Entry, when: &str) {
    let mut i = lo;
    while i <= hi {
        let end = (i + 9_999).min(hi);
        let got = s
            .entries(i, end + 1, None, ctx())
            .unwrap_or_else(|e| panic!("{when}: entries({i}, {}): {e:?}", end + 1));
        assert_eq!(
            got.len() as u64,
            end + 1 - i,
            "{when}: entries({i}, {})",
            end + 1
        );
        for (k, e) in got.iter().enumerate() {
            let idx = i + k as u64;
            let want = gen(idx);
            if *e != want {
                panic!("{when}: entry {idx} altered:\n got  {e:?}\n want {want:?}");
            }
        }
        i = end + 1;
    }
}

/// The store holds a prefix `[1, last]` of `1..=max_last` (no snapshot), every entry as written.
fn check_prefix(s: &DiskStorage, max_last: u64, gen: impl Fn(u64) -> Entry, when: &str) -> u64 {
    assert_eq!(s.first_index().unwrap(), 1, "{when}: first_index");
    let last = s.last_index().unwrap();
    assert!(
        last <= max_last,
        "{when}: last_index {last} past what was written ({max_last})"
    );
    check_range(s, 1, last, &gen, when);
    for i in [1, last / 2, last]
        .into_iter()
        .filter(|&i| i >= 1 && i <= last)
    {
        assert_eq!(s.term(i).unwrap(), gen(i).term, "{when}: term({i})");
    }
    last
}

fn err_path(e: &Error) -> Option<&Path> {
    match e {
        Error::Corrupt { path, .. }
        | Error::MissingFile { path, .. }
        | Error::UnsupportedVersion { path, .. }
        | Error::Io { path, .. }
        | Error::Locked { path } => Some(path),
        _ => None,
    }
}

/// The error names one of `names` (a path ending with it, compared by components).
fn assert_names_one_of(e: &Error, names: &[&str], when: &str) {
    let p = err_path(e).unwrap_or_else(|| panic!("{when}: error names no file: {e:?}"));
    assert!(
        names.iter().any(|n| p.ends_with(n)),
        "{when}: error should name one of {names:?}, names {}: {e}",
        p.display()
    );
}

fn assert_names(e: &Error, name: &str, when: &str) {
    assert_names_one_of(e, &[name], when);
}

/// `Error::Corrupt` naming `name` at an offset inside one of `offsets`.
fn assert_corrupt(e: &Error, name: &str, offsets: &[Range<u64>], when: &str) {
    match e {
        Error::Corrupt { path, offset, .. } => {
            assert!(path.ends_with(name), "{when}: should name {name}: {e}");
            assert!(
                offsets.iter().any(|r| r.contains(offset)),
                "{when}: offset {offset} not within {offsets:?}: {e}"
            );
        }
        other => panic!("{when}: expected Corrupt naming {name}, got {other:?}"),
    }
}

fn is_missing(e: &Error, name: &str, when: &str) {
    match e {
        Error::MissingFile { path, .. } => {
            assert!(path.ends_with(name), "{when}: should name {name}: {e}")
        }
        other => panic!("{when}: expected MissingFile naming {name}, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// byte surgery
// ---------------------------------------------------------------------------------------------

fn read_at(path: &Path, off: u64, len: usize) -> Vec<u8> {
    let f = fs::File::open(path).unwrap();
    let mut b = vec![0u8; len];
    f.read_exact_at(&mut b, off).unwrap();
    b
}

fn write_at(path: &Path, off: u64, bytes: &[u8]) {
    let f = OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(bytes, off).unwrap();
    f.sync_all().unwrap();
}

fn xor_at(path: &Path, off: u64, mask: u8) {
    let mut b = read_at(path, off, 1);
    b[0] ^= mask;
    write_at(path, off, &b);
}

fn zero_at(path: &Path, off: u64, len: usize) {
    write_at(path, off, &vec![0u8; len]);
}

fn u32_le(b: &[u8]) -> u32 {
    u32::from_le_bytes(b[..4].try_into().unwrap())
}

fn u64_le(b: &[u8]) -> u64 {
    u64::from_le_bytes(b[..8].try_into().unwrap())
}

/// Decoded fields of slot `k`.
#[derive(Debug)]
struct SlotInfo {
    term: u64,
    index: u64,
    offset: u64,
    flags: u8,
    data_len: u64,
}

fn slot_from(b: &[u8]) -> SlotInfo {
    SlotInfo {
        term: u64_le(&b[SLOT_TERM_AT as usize..]),
        index: u64_le(&b[SLOT_INDEX_AT as usize..]),
        offset: slot_payload_offset(b),
        flags: b[SLOT_FLAGS_AT as usize],
        data_len: slot_data_len(b),
    }
}

fn read_slot(path: &Path, k: u64) -> SlotInfo {
    slot_from(&read_at(path, k * SLOT_LEN, SLOT_LEN as usize))
}

/// The payload byte range `[start, end)` of slot `k`, checked against what was written.
fn payload_range(path: &Path, k: u64, want: &Entry) -> Range<u64> {
    let s = read_slot(path, k);
    assert_eq!(s.index, want.index, "slot {k} of {}: {s:?}", path.display());
    assert_eq!(s.term, want.term, "slot {k} of {}: {s:?}", path.display());
    assert_eq!(s.data_len, want.data.len() as u64, "slot {k}: {s:?}");
    assert_eq!(
        s.flags & 1 == 1,
        !want.context.is_empty(),
        "slot {k}: {s:?}"
    );
    s.offset..s.offset + payload_len(want)
}

fn snap_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir.join("snap"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "snap"))
        .collect();
    v.sort();
    v
}

// ---------------------------------------------------------------------------------------------
// tail damage
// ---------------------------------------------------------------------------------------------

/// Torn tail: the last entry's slot partly zeroed, or its last payload byte flipped. Default mode
/// cuts the log before it and keeps accepting appends; AbsoluteConsistency refuses.
#[test]
fn torn_tail_is_cut_in_default_mode_and_refused_in_absolute_mode() {
    // The last entry carries a context (98 % 7 == 0): its last payload byte is a context byte.
    const N: u64 = 98;
    let base = tempfile::tempdir().unwrap();
    build(base.path(), N, 90);
    let file = log_name(1);
    let last_payload = payload_range(&base.path().join(&file), N - 1, &entry_at(N));
    assert!(!entry_at(N).context.is_empty());

    let slot_at = (N - 1) * SLOT_LEN;
    type Damage<'a> = (&'a str, Box<dyn Fn(&Path)>);
    let damages: [Damage; 3] = [
        (
            "second half of the last slot zeroed",
            Box::new(move |p| zero_at(p, slot_at + 16, 16)),
        ),
        (
            "first half of the last slot zeroed",
            Box::new(move |p| zero_at(p, slot_at, 16)),
        ),
        (
            "last payload byte flipped",
            Box::new({
                let at = last_payload.end - 1;
                move |p| xor_at(p, at, 0x40)
            }),
        ),
    ];
    for (what, damage) in &damages {
        for mode in MODES {
            let when = format!("{what}, {mode:?}");
            let d = copy_of(base.path());
            damage(&d.path().join(&file));
            match mode {
                RecoveryMode::TolerateTailCorruption => {
                    let s = must_open(d.path(), mode, &when);
                    let last = check_prefix(&s, N, entry_at, &when);
                    assert_eq!(
                        last,
                        N - 1,
                        "{when}: the log must be cut right before the torn entry"
                    );
                    assert!(
                        matches!(
                            s.term(N),
                            Err(raft::Error::Store(StorageError::Unavailable))
                        ),
                        "{when}: term({N}) must be Unavailable after the cut"
                    );
                    // The store keeps working: new entries from N on, then a reopen.
                    append(&s, N, N + 9, entry_at);
                    s.save(&hs(term_of(N + 9), 1, N + 9), &[], &Snapshot::default())
                        .unwrap();
                    s.close().unwrap();
                    for m in MODES {
                        let s = must_open(
                            d.path(),
                            m,
                            &format!("{when}: reopen after append in {m:?}"),
                        );
                        let last = check_prefix(&s, N + 9, entry_at, &when);
                        assert_eq!(
                            last,
                            N + 9,
                            "{when}: appended entries must survive a reopen"
                        );
                        s.close().unwrap();
                    }
                }
                RecoveryMode::AbsoluteConsistency => {
                    let e = must_fail(d.path(), mode, &when);
                    assert_corrupt(
                        &e,
                        &file,
                        &[slot_at..slot_at + SLOT_LEN, last_payload.clone()],
                        &when,
                    );
                }
            }
        }
    }
}

/// A zeroed 4 KiB sector in the middle of the tail file's slot area, valid slots after it.
#[test]
fn zeroed_sector_in_tail_cuts_at_first_zeroed_slot_and_never_resurrects_later_slots() {
    const N: u64 = 500;
    // Slots 128..256 (indexes 129..=256) are zeroed; slots 256..500 stay valid.
    const FIRST_ZEROED: u64 = 4096 / SLOT_LEN; // slot 128 = index 129
    let base = tempfile::tempdir().unwrap();
    build(base.path(), N, 100);
    let file = log_name(1);
    zero_at(&base.path().join(&file), 4096, 4096);

    // AbsoluteConsistency: an error naming the file, at the sector or at the first valid slot
    // after it.
    let d = copy_of(base.path());
    let e = must_fail(d.path(), RecoveryMode::AbsoluteConsistency, "absolute");
    assert_corrupt(
        &e,
        &file,
        std::slice::from_ref(&(4096..8192 + SLOT_LEN)),
        "absolute",
    );

    // Default: cut at the first zeroed slot.
    let d = copy_of(base.path());
    let mode = RecoveryMode::TolerateTailCorruption;
    let s = must_open(d.path(), mode, "default");
    let last = check_prefix(&s, N, entry_at, "default");
    assert_eq!(
        last, FIRST_ZEROED,
        "default: the log ends before the zeroed sector"
    );
    for i in [FIRST_ZEROED + 1, 300, N] {
        assert!(
            s.term(i).is_err(),
            "term({i}) after the cut must be an error"
        );
    }
    // Append different entries over the cut region; the old slots after them must stay gone.
    let new_last = FIRST_ZEROED + 12;
    append(&s, FIRST_ZEROED + 1, new_last, alt_entry_at);
    s.close().unwrap();
    let expect = |i: u64| {
        if i <= FIRST_ZEROED {
            entry_at(i)
        } else {
            alt_entry_at(i)
        }
    };
    for m in MODES {
        let when = format!("reopen after append in {m:?}");
        let s = must_open(d.path(), m, &when);
        let last = check_prefix(&s, new_last, expect, &when);
        assert_eq!(
            last, new_last,
            "{when}: old slots 256..500 came back or new entries were lost"
        );
        s.close().unwrap();
    }
    // On disk: nothing is left after the new entries.
    let p = d.path().join(&file);
    for k in [new_last, 255, 256, 300, N - 1] {
        assert_eq!(
            read_at(&p, k * SLOT_LEN, SLOT_LEN as usize),
            vec![0u8; SLOT_LEN as usize],
            "slot {k} must be empty after the repair"
        );
    }
}

/// An open that fails must not have destroyed anything: a default-mode open that cuts the tail
/// and then finds the commit index past the cut (or that finds the tail file's header damaged)
/// returns an error; the valid slots after the damage must still be on disk for an operator to
/// salvage, and the file must still be there.
#[test]
fn failed_default_open_keeps_valid_slots_after_the_cut() {
    const N: u64 = 500;
    // Zeroed sector, commit = N, so the cut log would lose committed entries.
    let d = tempfile::tempdir().unwrap();
    build(d.path(), N, N);
    let p = d.path().join(log_name(1));
    zero_at(&p, 4096, 4096);
    let before = read_at(&p, 0, SLOT_AREA_LEN as usize);
    let e = must_fail(
        d.path(),
        RecoveryMode::TolerateTailCorruption,
        "zeroed sector, commit = N",
    );
    assert_names_one_of(&e, &[&log_name(1), META_FILE], "zeroed sector, commit = N");
    let after = read_at(&p, 0, SLOT_AREA_LEN as usize);
    let changed: Vec<u64> = (0..SLOTS_PER_FILE)
        .filter(|&k| {
            let r = (k * SLOT_LEN) as usize..((k + 1) * SLOT_LEN) as usize;
            before[r.clone()] != after[r]
        })
        .collect();
    assert!(
        changed.is_empty(),
        "a default-mode open that returned an error ({e}) rewrote {} slots of {} (first {:?}, last {:?}): \
         valid committed entries after the damage were destroyed",
        changed.len(),
        log_name(1),
        changed.first(),
        changed.last()
    );
    // The damage is still reported as such by a strict open.
    let e = must_fail(
        d.path(),
        RecoveryMode::AbsoluteConsistency,
        "strict open after the failed one",
    );
    assert_corrupt(
        &e,
        &log_name(1),
        std::slice::from_ref(&(4096..8192 + SLOT_LEN)),
        "strict open after the failed one",
    );
}

/// As above: the only (so last) file's header flipped, commit = N. Default mode treats a tail file
/// with a damaged header as cut entirely; when that loses committed entries open fails, and the
/// file it gave up on must still be there.
#[test]
fn failed_default_open_keeps_a_tail_file_with_a_damaged_header() {
    const N: u64 = 500;
    let d = tempfile::tempdir().unwrap();
    build(d.path(), N, N);
    let p = d.path().join(log_name(1));
    xor_at(&p, FILE_HEADER_AT + FILE_BASE_AT, 0x01);
    let e = must_fail(
        d.path(),
        RecoveryMode::TolerateTailCorruption,
        "tail header flipped, commit = N",
    );
    assert_names_one_of(
        &e,
        &[&log_name(1), META_FILE],
        "tail header flipped, commit = N",
    );
    assert!(
        p.exists(),
        "a default-mode open that returned an error ({e}) deleted {} with {N} committed entries",
        log_name(1)
    );
}

// ---------------------------------------------------------------------------------------------
// sealed files
// ---------------------------------------------------------------------------------------------

/// 3 files: 30,000 + 30,000 + 500 entries; commit = last.
const BIG: u64 = 2 * SLOTS_PER_FILE + 500;

fn build_big() -> TempDir {
    let d = tempfile::tempdir().unwrap();
    build(d.path(), BIG, BIG);
    for id in 1..=3 {
        assert!(
            d.path().join(log_name(id)).exists(),
            "{} missing after build",
            log_name(id)
        );
    }
    assert!(!d.path().join(log_name(4)).exists());
    d
}

/// A flipped payload byte in a sealed file: open may succeed (sealed payloads are not read at
/// open), but `entries()` over the damaged index fails and never returns the altered bytes;
/// undamaged ranges read fine.
#[test]
fn sealed_payload_bit_flip_is_never_returned_by_entries() {
    let base = build_big();
    let file = log_name(1);
    let p = base.path().join(&file);
    // 15,005: data bytes; 15,008: has a context, flip its last (context) byte.
    let (a, b) = (15_005u64, 15_008u64);
    assert!(!entry_at(a).data.is_empty() && !entry_at(b).context.is_empty());
    let ra = payload_range(&p, a - 1, &entry_at(a));
    let rb = payload_range(&p, b - 1, &entry_at(b));
    xor_at(&p, ra.start + 3, 0x08);
    xor_at(&p, rb.end - 1, 0x01);

    for mode in MODES {
        let when = format!("{mode:?}");
        let d = copy_of(base.path());
        let s = match open(d.path(), mode) {
            Ok(s) => s,
            Err(e) => {
                assert_names(&e, &file, &when);
                continue;
            }
        };
        assert_eq!(s.last_index().unwrap(), BIG, "{when}");
        for (lo, hi) in [
            (a, a + 1),
            (b, b + 1),
            (a - 5, a + 5),
            (b - 1, b + 20),
            (1, 30_001),
            (a, BIG + 1),
        ] {
            match s.entries(lo, hi, None, ctx()) {
                Err(_) => {}
                Ok(got) => panic!(
                    "{when}: entries({lo}, {hi}) over damaged index {a}/{b} returned {} entries instead of an error{}",
                    got.len(),
                    got.iter()
                        .find(|e| **e != entry_at(e.index))
                        .map(|e| format!(", including ALTERED entry {}", e.index))
                        .unwrap_or_default()
                ),
            }
        }
        // Terms live in the (intact) slots.
        assert_eq!(s.term(a).unwrap(), term_of(a), "{when}");
        // Undamaged ranges, before, between and after, in the same file and the next ones.
        check_range(&s, 1, a - 1, entry_at, &when);
        check_range(&s, a + 1, b - 1, entry_at, &when);
        check_range(&s, b + 1, BIG, entry_at, &when);
        // Still an error on a second try (no watermark lets it through).
        assert!(
            s.entries(a, a + 1, None, ctx()).is_err(),
            "{when}: second read of {a}"
        );
        assert!(
            s.entries(a - 1, a + 1, Some(u64::MAX), ctx()).is_err(),
            "{when}: read of {a} with max_size"
        );
        s.close().unwrap();
    }
}

/// A bit flip in the first or last slot of a sealed file: open fails naming that file.
#[test]
fn sealed_first_or_last_slot_bit_flip_is_an_error() {
    let base = build_big();
    // (file id, slot, byte within the slot, mask)
    let last = SLOTS_PER_FILE - 1;
    let cases = [
        (1u64, 0u64, SLOT_TERM_AT, 0x01u8),  // file 1 first slot: term
        (1, last, SLOT_CRC_AT + 1, 0x80),    // file 1 last slot: crc
        (2, 0, SLOT_DATA_LEN_AT + 2, 0x04),  // file 2 first slot: data length
        (2, last, SLOT_OFFSET_AT + 1, 0x02), // file 2 last slot: payload offset
        (2, last, SLOT_INDEX_AT, 0x10),      // file 2 last slot: index
    ];
    for (id, k, byte, mask) in cases {
        let file = log_name(id);
        let damaged = copy_of(base.path());
        xor_at(&damaged.path().join(&file), k * SLOT_LEN + byte, mask);
        for mode in MODES {
            let when = format!("{file} slot {k} byte {byte}, {mode:?}");
            let d = copy_of(damaged.path());
            let e = must_fail(d.path(), mode, &when);
            // A damaged offset or length may be reported where the payload was expected.
            assert_corrupt(
                &e,
                &file,
                &[k * SLOT_LEN..k * SLOT_LEN + SLOT_LEN, PAYLOADS_AT..u64::MAX],
                &when,
            );
        }
    }
}

/// A bit flip in a sealed slot in the middle of a file: open may succeed (only the first and last
/// slots of sealed files are checked at open), but `entries()` never returns the damaged entry.
#[test]
fn sealed_middle_slot_bit_flip_is_never_returned_by_entries() {
    let base = build_big();
    let file = log_name(2);
    let i = SLOTS_PER_FILE + 12_345;
    let k = i - SLOTS_PER_FILE - 1;
    // Flip a data-length bit (bit 0 of the length: stays in range, only the CRC notices).
    xor_at(
        &base.path().join(&file),
        k * SLOT_LEN + SLOT_DATA_LEN_AT,
        0x01,
    );
    for mode in MODES {
        let when = format!("{mode:?}");
        let d = copy_of(base.path());
        let s = match open(d.path(), mode) {
            Ok(s) => s,
            Err(e) => {
                assert_names(&e, &file, &when);
                continue;
            }
        };
        if let Ok(got) = s.entries(i - 2, i + 2, None, ctx()) {
            panic!("{when}: entries over damaged slot {i} returned {got:?}");
        }
        check_range(&s, i + 1, i + 500, entry_at, &when);
        check_range(&s, i - 500, i - 1, entry_at, &when);
        s.close().unwrap();
    }
}

/// A bit flip in a sealed file's header: an error in both modes.
#[test]
fn sealed_header_bit_flip_is_an_error() {
    let base = build_big();
    // (file id, byte within the header, mask)
    for (id, byte, mask) in [
        (1u64, FILE_MAGIC_AT, 0x20u8),
        (1, FILE_BASE_AT, 0x01),
        (2, FILE_ID_AT, 0x01),
        (2, FILE_CRC_AT + 1, 0x10),
        (2, FILE_VERSION_AT + 1, 0x02),
    ] {
        let file = log_name(id);
        let damaged = copy_of(base.path());
        xor_at(&damaged.path().join(&file), FILE_HEADER_AT + byte, mask);
        for mode in MODES {
            let when = format!("{file} header byte {byte}, {mode:?}");
            let d = copy_of(damaged.path());
            let e = must_fail(d.path(), mode, &when);
            assert_corrupt(
                &e,
                &file,
                std::slice::from_ref(&(FILE_HEADER_AT..FILE_HEADER_AT + FILE_HEADER_LEN)),
                &when,
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// missing files
// ---------------------------------------------------------------------------------------------

/// Log file `id` of a 3-file log deleted: every open mode fails, naming it.
fn missing_file_is_an_error_naming_it(id: u64) {
    let base = build_big();
    fs::remove_file(base.path().join(log_name(id))).unwrap();
    for mode in MODES {
        let d = copy_of(base.path());
        let e = must_fail(d.path(), mode, &format!("{mode:?}"));
        is_missing(&e, &log_name(id), &format!("{mode:?}"));
    }
}

#[test]
fn missing_middle_file_is_an_error_naming_it() {
    missing_file_is_an_error_naming_it(2);
}

#[test]
fn missing_first_file_is_an_error_naming_it() {
    missing_file_is_an_error_naming_it(1);
}

/// The last of 3 files deleted: with the commit index in it, open fails (committed entries are
/// missing); with the commit index inside the remaining files, open succeeds with the shorter log
/// and the store carries on.
#[test]
fn missing_tail_file_fails_iff_commit_points_past_the_remaining_log() {
    let base = build_big();
    let tail = log_name(3);

    // commit = BIG, in the deleted file.
    let d = copy_of(base.path());
    fs::remove_file(d.path().join(&tail)).unwrap();
    for mode in MODES {
        let when = format!("commit past the log, {mode:?}");
        let dd = copy_of(d.path());
        let e = must_fail(dd.path(), mode, &when);
        assert_names_one_of(&e, &["wal.meta", &tail], &when);
    }

    // commit inside file 2.
    let d = copy_of(base.path());
    set_commit(d.path(), term_of(BIG), 50_000);
    fs::remove_file(d.path().join(&tail)).unwrap();
    for mode in MODES {
        let when = format!("commit inside the log, {mode:?}");
        let dd = copy_of(d.path());
        let s = match (mode, open(dd.path(), mode)) {
            (_, Ok(s)) => s,
            (RecoveryMode::AbsoluteConsistency, Err(e)) => {
                // Undetectable in general; an error is acceptable in strict mode if it names it.
                assert_names_one_of(&e, &["wal.meta", &tail], &when);
                continue;
            }
            (_, Err(e)) => panic!("{when}: open failed: {e}"),
        };
        let last = check_prefix(&s, BIG, entry_at, &when);
        assert_eq!(last, 2 * SLOTS_PER_FILE, "{when}: the log ends with file 2");
        assert_eq!(
            s.initial_state().unwrap().hard_state.commit,
            50_000,
            "{when}"
        );
        // The store carries on: new entries go to a new third file and survive a reopen.
        append(
            &s,
            2 * SLOTS_PER_FILE + 1,
            2 * SLOTS_PER_FILE + 10,
            alt_entry_at,
        );
        s.close().unwrap();
        let s = must_open(dd.path(), mode, &format!("{when}: reopen"));
        let expect = |i: u64| {
            if i <= 2 * SLOTS_PER_FILE {
                entry_at(i)
            } else {
                alt_entry_at(i)
            }
        };
        let last = check_prefix(&s, 2 * SLOTS_PER_FILE + 10, expect, &when);
        assert_eq!(last, 2 * SLOTS_PER_FILE + 10, "{when}: reopen");
        s.close().unwrap();
    }
}

/// After a snapshot removed `00001.wal`, the first live file `00002.wal` deleted: the error names
/// `00002.wal` (the file that should hold the entry after the snapshot), not `00001.wal`.
#[test]
fn missing_first_live_file_after_a_snapshot_is_an_error_naming_it() {
    let base = build_big();
    {
        let s = must_open(
            base.path(),
            RecoveryMode::TolerateTailCorruption,
            "snapshot",
        );
        s.create_snapshot(40_000, None, Bytes::from_static(b"state"))
            .unwrap();
        s.close().unwrap();
    }
    assert!(
        !base.path().join(log_name(1)).exists(),
        "the snapshot removed 00001.wal"
    );
    fs::remove_file(base.path().join(log_name(2))).unwrap();
    for mode in MODES {
        let d = copy_of(base.path());
        let e = must_fail(d.path(), mode, &format!("{mode:?}"));
        is_missing(&e, &log_name(2), &format!("{mode:?}"));
    }
    let e = raftwal::inspect::Inspector::open(base.path()).err();
    let e = e.expect("the inspector opens a directory with a missing file");
    is_missing(&e, &log_name(2), "inspector");
}

// ---------------------------------------------------------------------------------------------
// damage below the snapshot, damage at or below the commit index
// ---------------------------------------------------------------------------------------------

/// Damage in entries at or below the snapshot index (still in a live file): they are not part of
/// the log, so open succeeds in both modes with every live entry, nothing is cut, the store
/// carries on (truncation and appends included), and `verify` still reports the damage.
#[test]
fn damage_below_the_snapshot_never_fails_open_nor_cuts_live_entries() {
    const N: u64 = 500;
    const SNAP: u64 = 400;
    let base = tempfile::tempdir().unwrap();
    build(base.path(), N, N);
    {
        let s = must_open(
            base.path(),
            RecoveryMode::TolerateTailCorruption,
            "snapshot",
        );
        s.create_snapshot(SNAP, None, Bytes::from_static(b"state"))
            .unwrap();
        s.close().unwrap();
    }
    let wal = base.path().join(log_name(1));
    let e3 = entry_at(3);
    type Damage = Box<dyn Fn(&Path)>;
    let damages: Vec<(&str, Damage)> = vec![
        (
            "payload bit of entry 3",
            Box::new(|d: &Path| {
                let p = d.join(log_name(1));
                let r = payload_range(&p, 2, &entry_at(3));
                xor_at(&p, r.start, 0x10)
            }),
        ),
        (
            "term field of slot 2",
            Box::new(|d: &Path| xor_at(&d.join(log_name(1)), 2 * SLOT_LEN + SLOT_TERM_AT, 0x01)),
        ),
        (
            "index field of slot 0",
            Box::new(|d: &Path| xor_at(&d.join(log_name(1)), SLOT_INDEX_AT, 0x40)),
        ),
        (
            "slot 5 zeroed",
            Box::new(|d: &Path| zero_at(&d.join(log_name(1)), 5 * SLOT_LEN, SLOT_LEN as usize)),
        ),
        (
            "slot 399 (the snapshot index) zeroed",
            Box::new(|d: &Path| zero_at(&d.join(log_name(1)), 399 * SLOT_LEN, SLOT_LEN as usize)),
        ),
    ];
    assert!(payload_range(&wal, 2, &e3).end > PAYLOADS_AT);
    for (what, damage) in &damages {
        let damaged = copy_of(base.path());
        damage(damaged.path());
        for mode in MODES {
            let when = format!("{what}, {mode:?}");
            let d = copy_of(damaged.path());
            let s = must_open(d.path(), mode, &when);
            assert_eq!(s.first_index().unwrap(), SNAP + 1, "{when}");
            assert_eq!(s.last_index().unwrap(), N, "{when}: live entries were cut");
            check_range(&s, SNAP + 1, N, entry_at, &when);
            s.truncate_entries_until(450)
                .unwrap_or_else(|e| panic!("{when}: truncate: {e}"));
            append(&s, N + 1, N + 5, entry_at);
            s.close().unwrap();
            let s = must_open(d.path(), mode, &format!("{when}: reopen"));
            assert_eq!(s.last_index().unwrap(), N + 5, "{when}: reopen");
            check_range(&s, 450, N + 5, entry_at, &when);
            s.close().unwrap();
        }
        let verify = raftwal::inspect::Inspector::open(damaged.path())
            .unwrap_or_else(|e| panic!("{what}: inspector: {e}"))
            .verify(&mut |_| {});
        let e = verify
            .err()
            .unwrap_or_else(|| panic!("{what}: verify passed"));
        assert_names(&e, &log_name(1), what);
    }
}

/// The same in a sealed file: a snapshot at 40,000 removed `00001.wal`; slot 0 of `00002.wal`
/// (index 30,001, compacted) damaged. Open checks a sealed file's first live slot, not slot 0.
#[test]
fn damage_below_the_snapshot_in_a_sealed_file_never_fails_open() {
    let base = build_big();
    {
        let s = must_open(
            base.path(),
            RecoveryMode::TolerateTailCorruption,
            "snapshot",
        );
        s.create_snapshot(40_000, None, Bytes::from_static(b"state"))
            .unwrap();
        s.close().unwrap();
    }
    let sealed = base.path().join(log_name(2));
    let r = payload_range(&sealed, 0, &entry_at(30_001));
    xor_at(&sealed, r.start, 0x08);
    xor_at(&sealed, 0, 0x01);
    for mode in MODES {
        let when = format!("{mode:?}");
        let d = copy_of(base.path());
        let s = must_open(d.path(), mode, &when);
        assert_eq!(s.first_index().unwrap(), 40_001, "{when}");
        assert_eq!(s.last_index().unwrap(), BIG, "{when}");
        check_range(&s, 40_001, BIG, entry_at, &when);
        s.close().unwrap();
    }
}

/// A flipped payload byte at an index at or below the durable commit index, in the last file:
/// the tail scan finds it, but cutting there would drop committed entries, so open fails in both
/// modes with an error naming the damaged `.wal` file, the slot's offset and the index (never
/// `wal.meta`, which only points past it).
#[test]
fn damage_at_a_committed_index_fails_open_naming_the_wal_file_and_index() {
    const N: u64 = 503;
    const AT: u64 = 500;
    let base = tempfile::tempdir().unwrap();
    build(base.path(), N, N);
    let wal = base.path().join(log_name(1));
    let r = payload_range(&wal, AT - 1, &entry_at(AT));
    xor_at(&wal, r.start + 1, 0x02);
    for mode in MODES {
        let when = format!("{mode:?}");
        let d = copy_of(base.path());
        let e = must_fail(d.path(), mode, &when);
        assert_corrupt(
            &e,
            &log_name(1),
            &[(AT - 1) * SLOT_LEN..AT * SLOT_LEN, r.clone()],
            &when,
        );
        let text = e.to_string();
        assert!(text.contains(&format!("index {AT}")), "{when}: {text}");
        assert!(
            text.contains("commit"),
            "{when}: says why it cannot be cut: {text}"
        );
        assert!(text.contains("repair"), "{when}: names the way out: {text}");
        // Nothing was changed by the failed open.
        assert_eq!(
            fs::read(d.path().join(log_name(1))).unwrap(),
            fs::read(&wal).unwrap(),
            "{when}"
        );
    }
    // Below the commit index it is no tail cut; above it, it is (default mode).
    let d = copy_of(base.path());
    set_commit_raw(d.path(), AT - 1);
    let s = must_open(
        d.path(),
        RecoveryMode::TolerateTailCorruption,
        "commit below the damage",
    );
    assert_eq!(s.last_index().unwrap(), AT - 1);
    s.close().unwrap();
}

/// Lowers the stored commit index of a store whose log cannot be opened, by rewriting `wal.meta`
/// through a fresh store on an empty copy (the meta page holds no log data).
fn set_commit_raw(dir: &Path, commit: u64) {
    let tmp = tempfile::tempdir().unwrap();
    {
        let s = must_open(
            tmp.path(),
            RecoveryMode::TolerateTailCorruption,
            "meta donor",
        );
        let batch: Vec<Entry> = (1..=commit).map(entry_at).collect();
        s.save(
            &hs(term_of(commit), 1, commit),
            &batch,
            &Snapshot::default(),
        )
        .unwrap();
        s.close().unwrap();
    }
    fs::copy(tmp.path().join(META_FILE), dir.join(META_FILE)).unwrap();
}

// ---------------------------------------------------------------------------------------------
// wal.meta
// ---------------------------------------------------------------------------------------------

/// Region offsets of `wal.meta` (newest first) by sequence number.
fn meta_regions(dir: &Path) -> (u64, u64, u64) {
    let p = dir.join(META_FILE);
    let len = fs::metadata(&p).unwrap().len();
    let r = len / 2;
    let seq0 = u64_le(&read_at(&p, META_SEQ_AT, 8));
    let seq1 = u64_le(&read_at(&p, r + META_SEQ_AT, 8));
    assert_ne!(seq0, seq1, "both regions hold sequence {seq0}");
    if seq0 > seq1 {
        (0, r, r)
    } else {
        (r, 0, r)
    }
}

/// Store for the meta tests: 100 entries, hard state `OLD_HS` then `NEW_HS`, each in its own
/// meta update (so the two regions hold them).
fn build_meta_store(dir: &Path) {
    let s = must_open(dir, RecoveryMode::TolerateTailCorruption, "build");
    let batch: Vec<Entry> = (1..=100).map(entry_at).collect();
    s.save(&old_hs(), &batch, &Snapshot::default()).unwrap();
    s.save(&new_hs(), &[], &Snapshot::default()).unwrap();
    s.close().unwrap();
}

fn old_hs() -> HardState {
    hs(1, 1, 50)
}

fn new_hs() -> HardState {
    hs(2, 3, 80)
}

#[test]
fn meta_truncated_is_an_error() {
    let base = tempfile::tempdir().unwrap();
    build_meta_store(base.path());
    let f = fs::OpenOptions::new()
        .write(true)
        .open(base.path().join(META_FILE))
        .unwrap();
    f.set_len(100).unwrap();
    drop(f);
    for mode in MODES {
        let d = copy_of(base.path());
        let e = must_fail(d.path(), mode, &format!("{mode:?}"));
        assert_names(&e, META_FILE, &format!("{mode:?}"));
        assert!(matches!(e, Error::Corrupt { .. }), "{mode:?}: {e:?}");
    }
}

#[test]
fn meta_missing_with_log_files_is_an_error() {
    let base = tempfile::tempdir().unwrap();
    build_meta_store(base.path());
    fs::remove_file(base.path().join(META_FILE)).unwrap();
    for mode in MODES {
        let d = copy_of(base.path());
        let e = must_fail(d.path(), mode, &format!("{mode:?}"));
        assert_names(&e, META_FILE, &format!("{mode:?}"));
    }
}

/// One region damaged: the default open uses the other copy (older or newer) and mends the
/// damaged one with that state, never writing over the good copy; strict mode and `verify`
/// report the damaged copy.
#[test]
fn meta_one_region_flipped_opens_with_the_other_copy() {
    let base = tempfile::tempdir().unwrap();
    build_meta_store(base.path());
    let (newest, older, _) = meta_regions(base.path());
    for (what, region, expect) in [("newest", newest, old_hs()), ("older", older, new_hs())] {
        for mode in MODES {
            let when = format!("{what} region flipped, {mode:?}");
            let d = copy_of(base.path());
            xor_at(&d.path().join(META_FILE), region + META_RECORD_AT, 0x01);
            // Which copy held the newest state cannot be told from the damage (a torn
            // update looks the same): strict mode refuses, naming wal.meta and the copy;
            // `verify` reports it whatever the mode.
            let copy = format!("copy {}", region / meta_regions(base.path()).2 + 1);
            let in_region = region..region + META_MIN_REGION;
            let in_region = std::slice::from_ref(&in_region);
            let e = raftwal::inspect::Inspector::open(d.path())
                .unwrap()
                .verify(&mut |_| {})
                .err()
                .unwrap_or_else(|| panic!("{when}: verify passed"));
            assert_corrupt(&e, META_FILE, in_region, &when);
            assert!(e.to_string().contains(&copy), "{when}: {e}");
            if mode == RecoveryMode::AbsoluteConsistency {
                let e = must_fail(d.path(), mode, &when);
                assert_corrupt(&e, META_FILE, in_region, &when);
                assert!(e.to_string().contains(&copy), "{when}: {e}");
                continue;
            }
            let good = fs::read(d.path().join(META_FILE)).unwrap();
            let good_copy = if region == newest { older } else { newest };
            let s = must_open(d.path(), mode, &when);
            assert_eq!(s.initial_state().unwrap().hard_state, expect, "{when}");
            check_prefix(&s, 100, entry_at, &when);
            assert_eq!(s.last_index().unwrap(), 100, "{when}");
            // The tolerated damage is mended at open: the damaged region now holds the state in
            // use (the newest copy), the copy open fell back to is untouched, and `verify`
            // passes beside the open store.
            let (n1, _, r) = meta_regions(d.path());
            assert_eq!(n1, region, "{when}: open did not rewrite the damaged copy");
            let now = fs::read(d.path().join(META_FILE)).unwrap();
            let span = good_copy as usize..(good_copy + r) as usize;
            assert_eq!(
                now[span.clone()],
                good[span],
                "{when}: open wrote over the good copy"
            );
            raftwal::inspect::Inspector::open(d.path())
                .unwrap()
                .verify(&mut |_| {})
                .unwrap_or_else(|e| panic!("{when}: verify after open: {e}"));
            let next = hs(7, 2, 90);
            s.save(&next, &[], &Snapshot::default()).unwrap();
            s.close().unwrap();
            let s = must_open(d.path(), mode, &format!("{when}: reopen"));
            assert_eq!(
                s.initial_state().unwrap().hard_state,
                next,
                "{when}: reopen"
            );
            s.close().unwrap();
        }
    }
}

#[test]
fn meta_both_regions_flipped_is_an_error() {
    let base = tempfile::tempdir().unwrap();
    build_meta_store(base.path());
    let (newest, older, _) = meta_regions(base.path());
    xor_at(
        &base.path().join(META_FILE),
        newest + META_RECORD_AT + 1,
        0x04,
    );
    xor_at(&base.path().join(META_FILE), older + META_MAGIC_AT, 0x01);
    for mode in MODES {
        let when = format!("{mode:?}");
        let d = copy_of(base.path());
        let e = must_fail(d.path(), mode, &when);
        assert_names(&e, META_FILE, &when);
        assert!(matches!(e, Error::Corrupt { .. }), "{when}: {e:?}");
    }
}

/// Sets the format version of the region at `region` to `version`, CRC recomputed.
fn set_meta_version(path: &Path, region: u64, version: u32) {
    let (v, l, c) = (
        META_VERSION_AT as usize,
        META_RECORD_LEN_AT as usize,
        META_CRC_AT as usize,
    );
    let head = read_at(path, region, META_RECORD_AT as usize);
    let len = u32_le(&head[l..]) as usize;
    let record = read_at(path, region + META_RECORD_AT, len);
    let mut h = head.clone();
    h[v..v + 4].copy_from_slice(&version.to_le_bytes());
    let crc = crc32c::crc32c_append(crc32c::crc32c(&h[..c]), &record);
    h[c..c + 4].copy_from_slice(&crc.to_le_bytes());
    write_at(path, region, &h);
}

#[test]
fn meta_newer_format_version_is_unsupported() {
    let base = tempfile::tempdir().unwrap();
    build_meta_store(base.path());
    let (newest, older, _) = meta_regions(base.path());
    set_meta_version(&base.path().join(META_FILE), newest, 99);
    set_meta_version(&base.path().join(META_FILE), older, 99);
    for mode in MODES {
        let when = format!("{mode:?}");
        let d = copy_of(base.path());
        match must_fail(d.path(), mode, &when) {
            Error::UnsupportedVersion {
                path,
                found,
                supported,
            } => {
                assert!(path.ends_with(META_FILE), "{when}: {}", path.display());
                assert_eq!(found, 99, "{when}");
                assert_eq!(supported, 1, "{when}");
            }
            other => panic!("{when}: expected UnsupportedVersion, got {other:?}"),
        }
    }
}

/// FORMAT.md: "A region with a newer format version is refused (`Error::UnsupportedVersion`)".
/// When only the newest copy has a newer version (valid checksum: written by a newer build),
/// silently falling back to the older copy would roll the hard state back.
#[test]
fn meta_newer_format_version_in_newest_region_is_refused() {
    let base = tempfile::tempdir().unwrap();
    build_meta_store(base.path());
    let (newest, _, _) = meta_regions(base.path());
    set_meta_version(&base.path().join(META_FILE), newest, 2);
    for mode in MODES {
        let when = format!("{mode:?}");
        let d = copy_of(base.path());
        match open(d.path(), mode) {
            Err(Error::UnsupportedVersion { path, found, .. }) => {
                assert!(path.ends_with(META_FILE), "{when}: {}", path.display());
                assert_eq!(found, 2, "{when}");
            }
            Err(other) => panic!("{when}: expected UnsupportedVersion, got {other:?}"),
            Ok(s) => panic!(
                "{when}: open succeeded with hard state {:?} from the older copy, ignoring a newer-format newest copy",
                s.initial_state().unwrap().hard_state
            ),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// snapshot files
// ---------------------------------------------------------------------------------------------

fn build_snap_store(dir: &Path) -> (PathBuf, Bytes) {
    let data = Bytes::from(
        (0..10_000u32)
            .map(|i| (i * 7 % 251) as u8)
            .collect::<Vec<u8>>(),
    );
    let s = must_open(dir, RecoveryMode::TolerateTailCorruption, "build");
    append(&s, 1, 200, entry_at);
    s.save(&hs(term_of(200), 1, 150), &[], &Snapshot::default())
        .unwrap();
    s.create_snapshot(120, None, data.clone()).unwrap();
    s.close().unwrap();
    let files = snap_files(dir);
    assert_eq!(files.len(), 1, "one snapshot file: {files:?}");
    (files[0].clone(), data)
}

#[test]
fn snapshot_file_damage_is_an_error_naming_it() {
    let base = tempfile::tempdir().unwrap();
    let (snap, data) = build_snap_store(base.path());
    let name = PathBuf::from("snap").join(snap.file_name().unwrap());
    let name = name.to_str().unwrap();
    let len = fs::metadata(&snap).unwrap().len();
    assert_eq!(
        len,
        SNAP_DATA_AT + data.len() as u64,
        "FORMAT.md: 4096 + data length"
    );

    // Intact copy: opens, snapshot data as written.
    for mode in MODES {
        let d = copy_of(base.path());
        let s = must_open(d.path(), mode, "intact");
        let sn = s.snapshot(120, 0).unwrap();
        assert_eq!(sn.get_metadata().index, 120);
        assert_eq!(sn.data, data);
        assert_eq!(s.first_index().unwrap(), 121);
        check_range(&s, 121, 200, entry_at, "intact");
        s.close().unwrap();
    }

    let rel = |d: &Path| d.join(name);
    // Data byte flipped.
    for (what, at) in [
        ("data byte", SNAP_DATA_AT + 4321),
        ("last data byte", len - 1),
        ("header byte", SNAP_ENVELOPE_AT + 4),
    ] {
        for mode in MODES {
            let when = format!("{what} flipped, {mode:?}");
            let d = copy_of(base.path());
            xor_at(&rel(d.path()), at, 0x10);
            let e = must_fail(d.path(), mode, &when);
            assert_corrupt(&e, name, std::slice::from_ref(&(0..len)), &when);
        }
    }
    // Truncated.
    for mode in MODES {
        let when = format!("truncated, {mode:?}");
        let d = copy_of(base.path());
        let f = OpenOptions::new().write(true).open(rel(d.path())).unwrap();
        f.set_len(len - 1).unwrap();
        drop(f);
        let e = must_fail(d.path(), mode, &when);
        assert_names(&e, name, &when);
    }
    // Deleted.
    for mode in MODES {
        let when = format!("deleted, {mode:?}");
        let d = copy_of(base.path());
        fs::remove_file(rel(d.path())).unwrap();
        let e = must_fail(d.path(), mode, &when);
        is_missing(&e, name, &when);
    }
}

/// FORMAT.md: the snapshot header is zero from the end of its checksum up to 4096. A byte set
/// there is damage (the header's checksum does not cover it): open and verify refuse it, naming
/// the file and the byte's offset.
#[test]
fn snapshot_header_padding_must_be_zero() {
    let base = tempfile::tempdir().unwrap();
    let (snap, _) = build_snap_store(base.path());
    let name = PathBuf::from("snap").join(snap.file_name().unwrap());
    let name = name.to_str().unwrap();
    let envelope_len =
        u32::from_le_bytes(read_at(&snap, SNAP_ENVELOPE_LEN_AT, 4).try_into().unwrap()) as u64;
    let padding = SNAP_ENVELOPE_AT + envelope_len + 4..SNAP_DATA_AT;
    assert!(
        read_at(&snap, padding.start, padding.clone().count())
            .iter()
            .all(|&b| b == 0),
        "the writer leaves the padding zero"
    );
    for at in [padding.start, padding.start + 1000, SNAP_DATA_AT - 1] {
        let byte = at..at + 1;
        let byte = std::slice::from_ref(&byte);
        let what = format!("padding byte {at} set");
        let damaged = copy_of(base.path());
        xor_at(&damaged.path().join(name), at, 0x01);
        let verify = raftwal::inspect::Inspector::open(damaged.path())
            .unwrap_or_else(|e| panic!("{what}: inspector: {e}"))
            .verify(&mut |_| {});
        let e = verify
            .err()
            .unwrap_or_else(|| panic!("{what}: verify passed"));
        assert_corrupt(&e, name, byte, &what);
        for mode in MODES {
            let when = format!("{what}, {mode:?}");
            let d = copy_of(damaged.path());
            let e = must_fail(d.path(), mode, &when);
            assert_corrupt(&e, name, byte, &when);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// files that are not damage
// ---------------------------------------------------------------------------------------------

/// An empty `NNNNN.wal` with the next id (a crash during rotation) is an empty tail.
#[test]
fn empty_trailing_log_file_is_an_empty_tail() {
    const N: u64 = 300;
    let base = tempfile::tempdir().unwrap();
    build(base.path(), N, N);
    for (what, len) in [("0-byte", 0u64), ("4 KiB of zeroes", 4096)] {
        let damaged = copy_of(base.path());
        let f = fs::File::create(damaged.path().join(log_name(2))).unwrap();
        f.set_len(len).unwrap();
        drop(f);
        for mode in MODES {
            let when = format!("{what} {}, {mode:?}", log_name(2));
            let d = copy_of(damaged.path());
            let s = match (mode, open(d.path(), mode)) {
                (_, Ok(s)) => s,
                (RecoveryMode::AbsoluteConsistency, Err(e)) => {
                    assert_names(&e, &log_name(2), &when);
                    continue;
                }
                (_, Err(e)) => panic!("{when}: open failed: {e}"),
            };
            let last = check_prefix(&s, N, entry_at, &when);
            assert_eq!(last, N, "{when}: log intact");
            append(&s, N + 1, N + 5, entry_at);
            s.close().unwrap();
            let s = must_open(d.path(), mode, &format!("{when}: reopen"));
            assert_eq!(
                check_prefix(&s, N + 5, entry_at, &when),
                N + 5,
                "{when}: reopen"
            );
            s.close().unwrap();
        }
    }
}

/// Files and directories raftwal does not own are left alone and do not disturb open.
#[test]
fn unknown_files_are_ignored() {
    const N: u64 = 300;
    let base = tempfile::tempdir().unwrap();
    build(base.path(), N, N);
    let files = [
        "notes.txt",
        "README",
        "00001.wal.bak",
        "1.wal",
        "abcde.wal",
        "00001.walx",
        "wal.meta.old",
        "x9f3k2",
    ];
    for f in files {
        fs::write(base.path().join(f), format!("garbage {f}").repeat(100)).unwrap();
    }
    fs::create_dir(base.path().join("foo")).unwrap();
    fs::write(base.path().join("foo").join("00002.wal"), b"not a log file").unwrap();
    fs::create_dir(base.path().join("bar.wal")).unwrap();
    for mode in MODES {
        let when = format!("{mode:?}");
        let d = copy_of(base.path());
        let s = must_open(d.path(), mode, &when);
        assert_eq!(check_prefix(&s, N, entry_at, &when), N, "{when}");
        append(&s, N + 1, N + 3, entry_at);
        s.close().unwrap();
        let s = must_open(d.path(), mode, &format!("{when}: reopen"));
        assert_eq!(check_prefix(&s, N + 3, entry_at, &when), N + 3, "{when}");
        s.close().unwrap();
        for f in files {
            assert_eq!(
                fs::read(d.path().join(f)).unwrap(),
                format!("garbage {f}").repeat(100).into_bytes(),
                "{when}: {f} was changed"
            );
        }
        assert!(d.path().join("foo").join("00002.wal").exists(), "{when}");
        assert!(d.path().join("bar.wal").is_dir(), "{when}");
    }
}

/// Only canonical names are log files (`NNNNN.wal`, 5 digits or more, no extra leading zero,
/// ids from 1 up to the largest index): a stray `000001.wal` beside `00001.wal` (the same id
/// written another way), `00000.wal`, or ids near `u64::MAX` (which would overflow recovery's
/// id arithmetic and could name, and delete, `00000.wal`) are unknown files: ignored, unchanged.
#[test]
fn non_canonical_and_out_of_range_log_file_names_are_ignored() {
    const N: u64 = 300;
    let base = tempfile::tempdir().unwrap();
    build(base.path(), N, N);
    let real = fs::read(base.path().join(log_name(1))).unwrap();
    let strays = [
        "000001.wal",
        "000002.wal",
        "0000000000000000000001.wal",
        "00000.wal",
        "18446744073709551615.wal",
        "18446744073709551614.wal",
        "4611686018427387905.wal",
        "99999999999999999999999.wal",
    ];
    for f in strays {
        // A copy of a real log file under each name: only its name keeps it out of the log.
        fs::write(base.path().join(f), &real).unwrap();
    }
    for mode in MODES {
        let when = format!("{mode:?}");
        let d = copy_of(base.path());
        let s = must_open(d.path(), mode, &when);
        assert_eq!(check_prefix(&s, N, entry_at, &when), N, "{when}");
        assert_eq!(
            s.num_log_files(),
            1,
            "{when}: the strays count as log files"
        );
        append(&s, N + 1, N + 3, entry_at);
        s.close().unwrap();
        let s = must_open(d.path(), mode, &format!("{when}: reopen"));
        assert_eq!(check_prefix(&s, N + 3, entry_at, &when), N + 3, "{when}");
        s.close().unwrap();
        for f in strays {
            assert_eq!(
                fs::read(d.path().join(f)).ok().as_deref(),
                Some(&real[..]),
                "{when}: {f} was changed or removed"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// fuzz
// ---------------------------------------------------------------------------------------------

/// A small closed single-file store, kept in memory: the bytes of `wal.meta` and `00001.wal`.
struct Template {
    meta: Vec<u8>,
    wal: Vec<u8>,
    n: u64,
    /// One past the last payload byte.
    payload_end: u64,
}

fn template() -> &'static Template {
    static T: OnceLock<Template> = OnceLock::new();
    T.get_or_init(|| {
        const N: u64 = 200;
        let d = tempfile::tempdir().unwrap();
        build(d.path(), N, 0);
        let wal = fs::read(d.path().join(log_name(1))).unwrap();
        let meta = fs::read(d.path().join(META_FILE)).unwrap();
        let payload_end = PAYLOADS_AT + (1..=N).map(|i| payload_len(&entry_at(i))).sum::<u64>();
        let last = payload_range(&d.path().join(log_name(1)), N - 1, &entry_at(N));
        assert_eq!(
            last.end, payload_end,
            "payloads are back to back from 1 MiB"
        );
        Template {
            meta,
            wal,
            n: N,
            payload_end,
        }
    })
}

/// Writes the template with `flips` applied to a new directory. The log file keeps its length;
/// it is written sparse (only the non-zero regions), which reads back the same.
fn write_damaged(t: &Template, flips: &[(u64, u8)]) -> TempDir {
    let d = tempfile::tempdir().unwrap();
    fs::write(d.path().join(META_FILE), &t.meta).unwrap();
    let mut wal = t.wal.clone();
    for &(at, mask) in flips {
        wal[at as usize] ^= mask;
    }
    let p = d.path().join(log_name(1));
    let f = fs::File::create(&p).unwrap();
    f.set_len(wal.len() as u64).unwrap();
    let slot_end = (t.n + 4) * SLOT_LEN;
    for r in [
        0..slot_end,
        FILE_HEADER_AT..FILE_HEADER_AT + FILE_HEADER_LEN,
        PAYLOADS_AT..t.payload_end + 64,
    ] {
        f.write_all_at(&wal[r.start as usize..r.end as usize], r.start)
            .unwrap();
    }
    drop(f);
    d
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 64,
        failure_persistence: None,
        max_shrink_iters: 256,
        ..ProptestConfig::default()
    })]

    /// 1–8 random bytes flipped in the used slot area or payload area of the last log file:
    /// default-mode open never panics, and whatever it keeps reads back exactly as written.
    /// AbsoluteConsistency either refuses or keeps the whole log.
    #[test]
    fn random_tail_damage_never_yields_altered_entries(
        flips in proptest::collection::vec((any::<proptest::sample::Index>(), 1u8..=255u8), 1..=8)
    ) {
        let t = template();
        let slot_span = (t.n + 2) * SLOT_LEN;
        let payload_span = t.payload_end + 16 - PAYLOADS_AT;
        let flips: Vec<(u64, u8)> = flips
            .iter()
            .map(|(ix, mask)| {
                let p = ix.index((slot_span + payload_span) as usize) as u64;
                let at = if p < slot_span { p } else { PAYLOADS_AT + (p - slot_span) };
                (at, *mask)
            })
            .collect();

        // Default mode.
        let d = write_damaged(t, &flips);
        match open(d.path(), RecoveryMode::TolerateTailCorruption) {
            Err(e) => {
                // Tail damage is tolerated: an error is only acceptable if it names the file.
                assert_names(&e, &log_name(1), &format!("default, flips {flips:?}"));
            }
            Ok(s) => {
                let when = format!("default, flips {flips:?}");
                let last = check_prefix(&s, t.n, entry_at, &when);
                // Reading every kept entry one by one, too (no batched path hides anything).
                for i in 1..=last {
                    let e = s.entries(i, i + 1, None, ctx()).unwrap();
                    prop_assert_eq!(&e[0], &entry_at(i), "{}", when);
                }
                s.close().unwrap();
                // After the repair, the directory is consistent: a strict open agrees.
                let s = must_open(d.path(), RecoveryMode::AbsoluteConsistency, &format!("{when}: strict reopen"));
                prop_assert_eq!(s.last_index().unwrap(), last, "{}", when);
                s.close().unwrap();
            }
        }

        // AbsoluteConsistency: refuse, or (damage only in unused bytes) keep everything.
        let d = write_damaged(t, &flips);
        match open(d.path(), RecoveryMode::AbsoluteConsistency) {
            Err(e) => assert_names(&e, &log_name(1), &format!("absolute, flips {flips:?}")),
            Ok(s) => {
                let when = format!("absolute, flips {flips:?}");
                let last = check_prefix(&s, t.n, entry_at, &when);
                prop_assert_eq!(last, t.n, "{}: strict open succeeded but dropped entries", when);
                s.close().unwrap();
            }
        }
    }
}
