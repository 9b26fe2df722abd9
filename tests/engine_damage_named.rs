//! Damage to an engine root's shared files that would drop acknowledged records or be blamed on
//! the wrong file (docs/DESIGN.md §9 "Faults": a torn end of the shared files is the tail, cut by
//! default and an error in `AbsoluteConsistency`; damage is an error naming the damaged file).
//! Found by an outside test of the engine as a black box (2026-12-07): each case below was a
//! silent open, or an error naming another file or the wrong fault, before its fix.
//!
//! Most roots are kill images (the engine still open when the root is copied) of group 1 written
//! one entry of 3,000 bytes per commit, one journal record each, in 64 KiB segments, so that the
//! journal holds several segments after its checkpoint. The records are found in the segments by
//! docs/FORMAT.md's layout ("Journal segment", "Journal record"), not by the engine's code.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use raft::prelude::{Entry, HardState};
use raft::Storage;
use raftwal::{Engine, EngineOptions, Error, RecoveryMode, WriteBatch};

#[path = "common/roots.rs"]
mod roots;

/// docs/FORMAT.md: the segment's header page; records start after it.
const SEGMENT_HEADER: u64 = 4096;
/// docs/FORMAT.md: a record's header (body length u32, CRC u32, sequence number u64).
const RECORD_HEADER: u64 = 16;

fn opts(mode: RecoveryMode) -> EngineOptions {
    EngineOptions {
        journal_segment_bytes: 64 << 10,
        recovery_mode: mode,
        ..Default::default()
    }
}

/// Entry `i` of term 1 for group 1 (3,000 bytes), with a hard state committing it.
fn commit(e: &Engine, i: u64) {
    let mut entry = Entry::default();
    (entry.index, entry.term) = (i, 1);
    entry.data = vec![(i % 251) as u8; 3_000].into();
    let mut hs = HardState::default();
    (hs.term, hs.commit) = (1, i);
    let mut b = WriteBatch::new();
    b.save(1, &hs, &[entry], &Default::default());
    e.write(&mut b).expect("write");
}

/// A root closed cleanly after group 1 took entries 1 to `n`, one commit each (its journal
/// trimmed by the close's checkpoint once it spans segments).
fn closed_after(dir: &Path, n: u64) -> PathBuf {
    let root = dir.join("root");
    let e = Engine::open_with(&root, opts(RecoveryMode::TolerateTailCorruption)).expect("open");
    e.create_group(1, 1).expect("create");
    for i in 1..=n {
        commit(&e, i);
    }
    e.close().expect("close");
    root
}

/// A kill image of a root whose journal holds entries 1 to `n` after its checkpoint (group 1
/// created and closed, then `n` commits, the engine still open).
fn killed_after(dir: &Path, n: u64) -> PathBuf {
    let root = dir.join("root");
    let e = Engine::open_with(&root, opts(RecoveryMode::TolerateTailCorruption)).expect("open");
    e.create_group(1, 1).expect("create");
    e.close().expect("close");
    let e = Engine::open_with(&root, opts(RecoveryMode::TolerateTailCorruption)).expect("open");
    for i in 1..=n {
        commit(&e, i);
    }
    let image = dir.join("image");
    roots::kill_image(&root, &image);
    e.close().expect("close");
    image
}

const BOTH_MODES: [RecoveryMode; 2] = [
    RecoveryMode::TolerateTailCorruption,
    RecoveryMode::AbsoluteConsistency,
];

/// The last of `segments` that holds records.
fn last_with_records(segments: &[PathBuf]) -> PathBuf {
    segments
        .iter()
        .rev()
        .find(|s| !records(s).is_empty())
        .expect("a segment with records")
        .clone()
}

/// A torn end at `segment`: `AbsoluteConsistency` refuses `root` naming it (the reason is
/// returned), a default open of a copy cuts group 1's log at `last_kept`.
fn strict_refuses_default_cuts(
    root: &Path,
    dir: &Path,
    segment: &Path,
    last_kept: u64,
    what: &str,
) -> String {
    let (path, reason) = refused(root, RecoveryMode::AbsoluteConsistency, what);
    assert_eq!(path, segment, "{what}: {reason}");
    assert_eq!(
        default_last(root, dir),
        last_kept,
        "{what}: the default open cuts there"
    );
    reason
}

/// What `raftwal verify ROOT` says of `root`, which it must fail as damage (exit code 1,
/// README "exit code").
fn verify_refuses(root: &Path) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_raftwal"))
        .arg("verify")
        .arg(root)
        .output()
        .expect("raftwal verify");
    let said =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "verify of a damaged root: {said}"
    );
    said
}

/// The journal's segment files (`<id>.jnl`), in id order.
fn segments(root: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(root.join("journal"))
        .expect("journal")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "jnl"))
        .collect();
    v.sort();
    v
}

/// The records of a segment: (offset, bytes with padding, sequence number), read back to back
/// from its header page on while each has the next sequence number.
fn records(segment: &Path) -> Vec<(u64, u64, u64)> {
    let bytes = std::fs::read(segment).expect("read");
    let first = u64::from_le_bytes(bytes[24..32].try_into().expect("8 bytes"));
    let mut out = Vec::new();
    let mut at = SEGMENT_HEADER;
    while at + RECORD_HEADER <= bytes.len() as u64 {
        let p = at as usize;
        let len = u64::from(u32::from_le_bytes(bytes[p..p + 4].try_into().expect("4")));
        let seq = u64::from_le_bytes(bytes[p + 8..p + 16].try_into().expect("8"));
        if seq != first + out.len() as u64 || len == 0 {
            break;
        }
        let size = (RECORD_HEADER + len).next_multiple_of(8);
        out.push((at, size, seq));
        at += size;
    }
    out
}

fn zero(file: &Path, at: u64, n: u64) {
    std::fs::OpenOptions::new()
        .write(true)
        .open(file)
        .expect("open")
        .write_all_at(&vec![0u8; n as usize], at)
        .expect("zero");
}

/// Group 1's last index after a default open of a copy of `root`.
fn default_last(root: &Path, dir: &Path) -> u64 {
    let copy = dir.join("default");
    roots::copy_tree(root, &copy);
    let e = Engine::open_with(&copy, opts(RecoveryMode::TolerateTailCorruption)).expect("open");
    let last = e.group(1).expect("group").last_index().expect("last");
    e.close().expect("close");
    last
}

/// The file an open of `root` in `mode` refuses, and why; it must refuse.
fn refused(root: &Path, mode: RecoveryMode, what: &str) -> (PathBuf, String) {
    match Engine::open_with(root, opts(mode)) {
        Err(Error::Corrupt { path, reason, .. }) | Err(Error::MissingFile { path, reason }) => {
            (path, reason)
        }
        Err(e) => panic!("{what}: another error: {e}"),
        Ok(e) => {
            let last = e.group(1).map(|g| g.last_index().expect("last"));
            panic!("{what}: opened in {mode:?}, group 1's log ending at {last:?}")
        }
    }
}

/// A record of the last segment zeroed, records after it intact: a torn end in the default
/// mode (cut there), refused in `AbsoluteConsistency`, naming the segment. It used to open in
/// both modes as if the journal ended cleanly at the zeroed record.
#[test]
fn a_zeroed_record_with_records_after_it_is_refused_in_absolute_consistency() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = killed_after(dir.path(), 6);
    let segs = segments(&root);
    let last = last_with_records(&segs);
    let recs = records(&last);
    assert!(recs.len() >= 3, "records {recs:?}");
    let (at, size, seq) = recs[recs.len() - 3];
    zero(&last, at, size);
    let reason = strict_refuses_default_cuts(&root, dir.path(), &last, seq - 1, "zeroed record");
    assert!(reason.contains(&format!("record {seq}")), "{reason}");
}

/// The last segment's header zeroed, its records intact: refused in `AbsoluteConsistency`,
/// naming the segment (it used to be taken for a segment never written, and removed, in both
/// modes); the default open ends the journal before it. `raftwal verify` names it too (it
/// reported the root ok: the tools passed over such a file as the strict open once did).
#[test]
fn a_zeroed_header_of_the_last_segment_is_refused_in_absolute_consistency() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = killed_after(dir.path(), 40);
    let segs = segments(&root);
    let last = last_with_records(&segs);
    assert!(segs.len() >= 3, "segments {segs:?}");
    let first = records(&last)[0].2;
    zero(&last, 0, 36);
    strict_refuses_default_cuts(&root, dir.path(), &last, first - 1, "zeroed header");
    let said = verify_refuses(&root);
    let name = last.file_name().expect("name").to_string_lossy();
    assert!(
        said.contains(&*name) && said.contains(&format!("record {first}")),
        "verify names {name} and record {first}: {said}"
    );
}

/// A segment's header zeroed in the middle of the journal: refused in both modes, naming that
/// segment (the refusal used to name the segment after it, intact, as starting too late).
#[test]
fn a_zeroed_header_in_the_middle_of_the_journal_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = killed_after(dir.path(), 40);
    let segs: Vec<PathBuf> = segments(&root)
        .into_iter()
        .filter(|s| !records(s).is_empty())
        .collect();
    assert!(segs.len() >= 3, "segments {segs:?}");
    let middle = segs[segs.len() / 2].clone();
    zero(&middle, 0, 36);
    for mode in BOTH_MODES {
        let (path, reason) = refused(&root, mode, "zeroed middle header");
        assert_eq!(path, middle, "{mode:?}: {reason}");
    }
    // The tools name it too.
    let said = verify_refuses(&root);
    let name = middle.file_name().expect("name").to_string_lossy();
    assert!(said.contains(&*name), "verify names {name}: {said}");
}

/// After a clean close, `engine.meta`'s newest copy damaged: the older copy's checkpoint
/// predates the journal (trimmed since). Both modes refuse naming `engine.meta` (the default
/// open used to name a journal segment, intact, as starting too late).
#[test]
fn a_damaged_newest_engine_meta_copy_is_named_when_the_older_one_predates_the_journal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = closed_after(dir.path(), 40);
    let meta = root.join("engine.meta");
    let bytes = std::fs::read(&meta).expect("read");
    // docs/FORMAT.md: two copies, one per half; each copy's sequence number at its offset 16.
    let half = bytes.len() / 2;
    let seq = |at: usize| u64::from_le_bytes(bytes[at + 16..at + 24].try_into().expect("8"));
    let newest = if seq(0) > seq(half) { 0 } else { half };
    let mut damaged = bytes.clone();
    damaged[newest + 32] ^= 1;
    std::fs::write(&meta, damaged).expect("write");
    for mode in BOTH_MODES {
        let (path, reason) = refused(&root, mode, "damaged engine.meta copy");
        assert_eq!(path, meta, "{mode:?}: {reason}");
    }
}

/// `engine.meta` deleted from a root that holds groups: refused in both modes as a missing
/// file named `engine.meta` (it used to be called damage at its offset 0, an incarnation the
/// fresh record it stood in for had not given out; and where the journal was trimmed, records
/// missing in its first segment, intact: found by a review).
#[test]
fn a_missing_engine_meta_beside_groups_is_named_missing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = closed_after(dir.path(), 40);
    let first = records(&segments(&root)[0]);
    assert!(
        first.first().is_none_or(|r| r.2 > 1),
        "the journal was trimmed: {first:?}"
    );
    let meta = root.join("engine.meta");
    std::fs::remove_file(&meta).expect("remove");
    for mode in BOTH_MODES {
        match Engine::open_with(&root, opts(mode)) {
            Err(Error::MissingFile { path, reason }) => assert_eq!(path, meta, "{reason}"),
            Err(e) => panic!("{mode:?}: another error: {e}"),
            Ok(_) => panic!("{mode:?}: opened without engine.meta"),
        }
        assert!(!meta.exists(), "a refused open makes no engine.meta");
    }
    // The tools read it as an engine root whose engine.meta is missing.
    let said = verify_refuses(&root);
    assert!(
        said.contains("engine.meta"),
        "verify names engine.meta: {said}"
    );
}

/// A record zeroed below what a group's meta page says is durable: a checkpoint stored the
/// page (records 1 to 10 in the group's files) and the kill came before `engine.meta` took its
/// checkpoint, so the journal still holds those records after the root's checkpoint. The
/// default open's cut at the zeroed record would lose records the page reflects, so it
/// refuses; it named the journal directory, as if segments were missing, and now names the
/// segment and the zeroed record, as `AbsoluteConsistency` does.
#[test]
fn a_cut_below_records_a_meta_page_reflects_names_the_damaged_record() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = killed_after(dir.path(), 10);
    // The groups as the original root's close left them: pages at record 10, files durable.
    let closed_groups = dir.path().join("root").join("groups");
    std::fs::remove_dir_all(root.join("groups")).expect("remove");
    roots::copy_tree(&closed_groups, &root.join("groups"));
    let last = last_with_records(&segments(&root));
    let recs = records(&last);
    assert!(recs.len() >= 6, "records {recs:?}");
    let (at, size, seq) = recs[3];
    zero(&last, at, size);
    for mode in BOTH_MODES {
        let (path, reason) = refused(&root, mode, "zeroed durable record");
        assert_eq!(path, last, "{mode:?}: {reason}");
        assert!(
            reason.contains(&format!("record {seq}")),
            "{mode:?}: {reason}"
        );
    }
}

/// Group 1's `wal.meta` with one of its two copies (each a half of the file, docs/FORMAT.md)
/// overwritten with zeros, `newest` or the older one; returns the page's path.
fn zero_meta_copy(root: &Path, newest: bool) -> PathBuf {
    let meta = root.join("groups").join("1").join("wal.meta");
    let bytes = std::fs::read(&meta).expect("read");
    let half = bytes.len() / 2;
    let seq = |at: usize| u64::from_le_bytes(bytes[at + 16..at + 24].try_into().expect("8"));
    let newer = if seq(0) > seq(half) { 0 } else { half };
    let at = if newest { newer } else { half - newer };
    zero(&meta, at as u64, half as u64);
    meta
}

/// After a clean close, the newest copy of a group's meta page zero-filled: the older copy's
/// position predates the journal (trimmed since), so what the records after it changed is
/// nowhere. Both modes refuse naming `wal.meta`, and so does `raftwal verify`. A copy of zeros
/// was taken for one never written: both modes opened with the older copy, the group's log
/// cut back and its commit index with it (found by an outside differential test of verify and
/// open, 2026-12-08). A group whose page was stored once since it was made (its older copy
/// the page `create_group` wrote) is refused the same way.
#[test]
fn a_zeroed_newest_meta_copy_of_a_group_is_refused() {
    for commits in [40, 1] {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = closed_after(dir.path(), commits);
        let meta = zero_meta_copy(&root, true);
        for mode in BOTH_MODES {
            let (path, reason) = refused(&root, mode, "zeroed newest meta copy");
            assert_eq!(path, meta, "{commits} commits, {mode:?}: {reason}");
        }
        let said = verify_refuses(&root);
        assert!(said.contains("wal.meta"), "verify names wal.meta: {said}");
    }
}

/// The older copy of a group's meta page zero-filled: the newest copy holds every change (a
/// clean close's checkpoint covers them), so the default open serves every entry;
/// `AbsoluteConsistency` refuses naming `wal.meta`, as it refuses any damaged copy, and
/// `raftwal verify` reports it (it said ok: a copy of zeros was taken for one never written).
#[test]
fn a_zeroed_older_meta_copy_of_a_group_is_reported_and_opens() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = closed_after(dir.path(), 40);
    let meta = zero_meta_copy(&root, false);
    let said = verify_refuses(&root);
    assert!(said.contains("wal.meta"), "verify names wal.meta: {said}");
    let (path, reason) = refused(
        &root,
        RecoveryMode::AbsoluteConsistency,
        "zeroed older copy",
    );
    assert_eq!(path, meta, "{reason}");
    let copy = dir.path().join("default");
    roots::copy_tree(&root, &copy);
    let e = Engine::open_with(&copy, opts(RecoveryMode::TolerateTailCorruption)).expect("open");
    let g = e.group(1).expect("group");
    assert_eq!(g.last_index().expect("last"), 40);
    assert_eq!(g.initial_state().expect("state").hard_state.commit, 40);
    e.close().expect("close");
}

/// A kill image of a root closed cleanly after entries 1 to 20, then reopened and written
/// entries 21 and 22: the close's checkpoint lies in the last segment, which goes on with the
/// two records after it (docs/FORMAT.md: after a clean close, new records go on in the last
/// segment).
fn checkpoint_in_the_last_segment(dir: &Path) -> PathBuf {
    let root = closed_after(dir, 20);
    let e = Engine::open_with(&root, opts(RecoveryMode::TolerateTailCorruption)).expect("open");
    commit(&e, 21);
    commit(&e, 22);
    let image = dir.join("image");
    roots::kill_image(&root, &image);
    e.close().expect("close");
    image
}

/// The last segment cut at a record boundary below the checkpoint: the records from there up
/// to the checkpoint were durable before it was stored, and the two after it were
/// acknowledged. Both modes refuse naming the segment, and so does `raftwal verify`; both
/// opened, the journal taken to end there and entries 21 and 22 gone (found by an outside
/// differential test of verify and open, 2026-12-08).
#[test]
fn the_last_segment_cut_below_the_checkpoint_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let image = checkpoint_in_the_last_segment(dir.path());
    let last = last_with_records(&segments(&image));
    let recs = records(&last);
    // Its first record is one the close's checkpoint covers (entry 20's or before).
    assert!(recs.len() >= 3 && recs[0].2 <= 20, "records {recs:?}");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&last)
        .expect("open")
        .set_len(recs[0].0)
        .expect("cut");
    for mode in BOTH_MODES {
        let (path, reason) = refused(&image, mode, "last segment cut below the checkpoint");
        assert_eq!(path, last, "{mode:?}: {reason}");
        assert!(reason.contains("checkpoint"), "{mode:?}: {reason}");
    }
    let said = verify_refuses(&image);
    let name = last.file_name().expect("name").to_string_lossy();
    assert!(said.contains(&*name), "verify names {name}: {said}");
}

/// Every segment with a header of its own removed, or its header zeroed, a file of zeros
/// named like the next segment left (a prepared one): the journal that held the records after
/// the checkpoint is gone. Both modes refuse naming the journal's directory, and so does
/// `raftwal verify`; both opened (the zero-header file counted as a segment), entries 21 and
/// 22 gone (found by the same outside test).
#[test]
fn a_journal_left_with_no_segment_header_is_refused() {
    for zeroed in [false, true] {
        let dir = tempfile::tempdir().expect("tempdir");
        let image = checkpoint_in_the_last_segment(dir.path());
        let segs = segments(&image);
        let mut next = 0;
        for s in &segs {
            let bytes = std::fs::read(s).expect("read");
            let id: u64 = s
                .file_stem()
                .and_then(|n| n.to_str())
                .and_then(|n| n.parse().ok())
                .expect("segment id");
            next = next.max(id + 1);
            if bytes.len() >= 8 && bytes[..8] != [0u8; 8] {
                if zeroed {
                    zero(s, 0, 36);
                } else {
                    std::fs::remove_file(s).expect("remove");
                }
            }
        }
        let prepared = image.join("journal").join(format!("{next:016}.jnl"));
        std::fs::write(&prepared, vec![0u8; 64 << 10]).expect("prepared");
        for mode in BOTH_MODES {
            match Engine::open_with(&image, opts(mode)) {
                Err(Error::MissingFile { path, reason }) => {
                    assert_eq!(path, image.join("journal"), "{zeroed} {mode:?}: {reason}")
                }
                Err(e) => panic!("{zeroed} {mode:?}: another error: {e}"),
                Ok(e) => {
                    let last = e.group(1).map(|g| g.last_index().expect("last"));
                    panic!("{zeroed} {mode:?}: opened, group 1's log ending at {last:?}")
                }
            }
        }
        let said = verify_refuses(&image);
        assert!(said.contains("journal"), "verify names the journal: {said}");
    }
}
