//! `raftwal repair` and the read-only tools against `DiskStorage::open` on damaged directories:
//! a repair cuts only what open cannot keep, names the damage it cuts for, and never calls a
//! directory whole that open refuses; errors name the file that is damaged (found by a review
//! on 2026-12-07: each test failed before its fix).

use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use raft::prelude::*;
use raft::Storage;
use raftwal::{DiskStorage, Options, RecoveryMode};

/// Where a log file's header lies (docs/FORMAT.md: after the 30,000 slots of 32 bytes).
const HEADER_AT: u64 = 960_000;

fn entry(i: u64) -> Entry {
    let mut e = Entry::default();
    (e.index, e.term, e.data) = (i, 1, format!("entry-{i}").into_bytes().into());
    e
}

/// Entries 1..=`last`, committed, saved 1,000 at a time by `save`.
fn write_entries(last: u64, save: impl Fn(&HardState, &[Entry])) {
    for lo in (1..=last).step_by(1000) {
        let hi = (lo + 999).min(last);
        let mut hs = HardState::default();
        (hs.term, hs.vote, hs.commit) = (1, 1, hi);
        let es: Vec<Entry> = (lo..=hi).map(entry).collect();
        save(&hs, &es);
    }
}

/// Entries 1..=`last`, committed, saved 1,000 at a time.
fn write_log(store: &DiskStorage, last: u64) {
    write_entries(last, |hs, es| {
        store.save(hs, es, &Snapshot::default()).unwrap()
    });
}

fn store_with(dir: &Path, last: u64, snap: Option<u64>) {
    let opts = Options {
        sync_writes: false,
        ..Default::default()
    };
    let s = DiskStorage::open_with(dir, opts).unwrap();
    write_log(&s, last);
    if let Some(at) = snap {
        s.create_snapshot(at, None, vec![7u8; 10_000]).unwrap();
    }
    s.close().unwrap();
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap().map(Result::unwrap) {
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else if e.file_name() != "LOCK" {
            fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

fn write_at(p: &Path, at: u64, b: &[u8]) {
    OpenOptions::new()
        .write(true)
        .open(p)
        .unwrap()
        .write_all_at(b, at)
        .unwrap();
}

fn flip(p: &Path, at: u64) {
    let mut b = [0u8];
    fs::File::open(p)
        .unwrap()
        .read_exact_at(&mut b, at)
        .unwrap();
    write_at(p, at, &[b[0] ^ 0x10]);
}

/// Opens a copy of `dir` (open may change what it opens) in `mode`: its first and last index.
fn open_copy(dir: &Path, mode: RecoveryMode) -> raftwal::Result<(u64, u64)> {
    let probe = dir.with_extension("probe");
    let _ = fs::remove_dir_all(&probe);
    copy_dir(dir, &probe);
    let opts = Options {
        recovery_mode: mode,
        ..Default::default()
    };
    let s = DiskStorage::open_with(&probe, opts)?;
    Ok((s.first_index().unwrap(), s.last_index().unwrap()))
}

/// A file wholly below the snapshot, left by a crash before its removal reached the disk, with
/// no header (zeroed, or cut to 4 KiB): open sets it aside in both modes and keeps the live
/// log; repair finds nothing to cut. Repair once took the file for the end of the log (no
/// header, a file after it), removed both files and lowered the commit index to the snapshot.
#[test]
fn repair_keeps_the_live_log_when_a_wholly_compacted_file_has_no_header() {
    for damage in ["header zeroed", "file cut to 4 KiB"] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("wal");
        let store = DiskStorage::open(&dir).unwrap();
        write_log(&store, 30_100);
        let (file1, saved) = (dir.join("00001.wal"), tmp.path().join("saved"));
        fs::copy(&file1, &saved).unwrap();
        store
            .create_snapshot(30_050, None, b"state".to_vec())
            .unwrap();
        store.close().unwrap();
        // A crash before the removal reached the disk.
        fs::copy(&saved, &file1).unwrap();
        if damage == "header zeroed" {
            write_at(&file1, HEADER_AT, &[0u8; 36]);
        } else {
            OpenOptions::new()
                .write(true)
                .open(&file1)
                .unwrap()
                .set_len(4096)
                .unwrap();
        }
        for mode in [
            RecoveryMode::TolerateTailCorruption,
            RecoveryMode::AbsoluteConsistency,
        ] {
            assert_eq!(open_copy(&dir, mode).unwrap(), (30_051, 30_100), "{mode:?}");
        }
        let plan = raftwal::repair::check(&dir, None).unwrap();
        assert_eq!(
            (plan.needed, plan.last_index, plan.commit_after),
            (false, 30_100, 30_100),
            "{damage}: repair cuts live committed entries open keeps: {plan:?}"
        );
    }
}

fn committed_tail(tmp: &Path) -> PathBuf {
    let dir = tmp.join("wal");
    store_with(&dir, 30_100, None);
    dir
}

/// A committed file whose header sector reads as zeros: open and verify name the file at its
/// header's offset as damaged. They once said the file "is not there", naming a file that is.
#[test]
fn a_zeroed_header_of_a_committed_file_is_named_damaged_not_missing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = committed_tail(tmp.path());
    write_at(&dir.join("00002.wal"), HEADER_AT, &[0u8; 36]);
    let err = open_copy(&dir, RecoveryMode::TolerateTailCorruption).unwrap_err();
    let verify = raftwal::inspect::Inspector::open(&dir)
        .unwrap()
        .verify(&mut |_| {})
        .unwrap_err();
    for e in [err, verify] {
        assert!(
            matches!(&e, raftwal::Error::Corrupt { offset: HEADER_AT, path, .. } if path.ends_with("00002.wal"))
                && !e.to_string().contains("is not there"),
            "{e}"
        );
    }
}

/// A repair that lowers the commit index names the damage it cuts for: the tail file's zeroed
/// header, or the tail file gone. Its report once said no damage (`null` in its JSON).
#[test]
fn repair_names_the_damage_it_drops_committed_entries_for() {
    for damage in ["header zeroed", "file deleted"] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = committed_tail(tmp.path());
        let tail = dir.join("00002.wal");
        if damage == "file deleted" {
            fs::remove_file(&tail).unwrap();
        } else {
            write_at(&tail, HEADER_AT, &[0u8; 36]);
        }
        let plan = raftwal::repair::check(&dir, None).unwrap();
        assert_eq!((plan.commit_before, plan.commit_after), (30_100, 30_000));
        assert!(
            plan.damage
                .as_deref()
                .is_some_and(|d| d.contains("00002.wal")),
            "{damage}: 100 committed entries dropped, no damage named: {plan:?}"
        );
    }
}

/// The current snapshot file damaged: open refuses in both modes, and so does repair, naming
/// the file (a cut of the log cannot mend it). Repair once said "nothing to repair ... the log
/// is whole" and exited 0, with and without `--accept-data-loss`.
#[test]
fn repair_does_not_call_a_directory_open_refuses_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    store_with(&dir, 2_000, Some(1_500));
    let snap = fs::read_dir(dir.join("snap"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    flip(&snap, 5_000);
    for mode in [
        RecoveryMode::TolerateTailCorruption,
        RecoveryMode::AbsoluteConsistency,
    ] {
        assert!(open_copy(&dir, mode).is_err(), "{mode:?}");
    }
    for flag in [None, Some("--accept-data-loss")] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_raftwal"))
            .arg("repair")
            .arg(&dir)
            .args(flag)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.code() != Some(0) && !stdout.contains("nothing to repair"),
            "{flag:?}: exit {:?}: {stdout}",
            out.status.code()
        );
        assert!(stderr.contains(".snap"), "{flag:?}: {stderr}");
    }
}

/// The snapshot at the log's last index, which ends a full file: the file is the last one and
/// wholly below the snapshot. Its header damaged (a byte flipped) or gone (zeroed), it holds
/// nothing of the log: open sets it aside in both modes, losing nothing, and the log goes on
/// after the snapshot; repair finds nothing to cut. Open once refused it in both modes (no
/// later file told where it starts); found by a review (2026-12-07).
#[test]
fn the_last_file_wholly_below_the_snapshot_with_a_damaged_header_is_set_aside() {
    for damage in ["header flipped", "header zeroed"] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("wal");
        store_with(&dir, 30_000, Some(30_000));
        let file1 = dir.join("00001.wal");
        assert!(file1.exists(), "the last file stays after the snapshot");
        if damage == "header flipped" {
            flip(&file1, HEADER_AT + 9);
        } else {
            write_at(&file1, HEADER_AT, &[0u8; 36]);
        }
        for mode in [
            RecoveryMode::TolerateTailCorruption,
            RecoveryMode::AbsoluteConsistency,
        ] {
            assert_eq!(
                open_copy(&dir, mode).map_err(|e| e.to_string()),
                Ok((30_001, 30_000)),
                "{damage}, {mode:?}"
            );
        }
        let plan = raftwal::repair::check(&dir, None).unwrap();
        assert_eq!(
            (plan.needed, plan.last_index, plan.commit_after),
            (false, 30_000, 30_000),
            "{damage}: {plan:?}"
        );
        if damage == "header flipped" {
            // `verify` still reports the damage.
            let verify = raftwal::inspect::Inspector::open(&dir)
                .unwrap()
                .verify(&mut |_| {})
                .unwrap_err();
            assert!(verify.to_string().contains("00001.wal"), "{verify}");
        }
        // The log goes on after the snapshot, and reads back after another open.
        let s = DiskStorage::open(&dir).unwrap();
        let mut hs = HardState::default();
        (hs.term, hs.vote, hs.commit) = (1, 1, 30_002);
        s.save(&hs, &[entry(30_001), entry(30_002)], &Snapshot::default())
            .unwrap();
        s.close().unwrap();
        let s = DiskStorage::open(&dir).unwrap();
        assert_eq!(
            (s.first_index().unwrap(), s.last_index().unwrap()),
            (30_001, 30_002)
        );
        assert_eq!(
            s.entries(30_001, 30_003, None, raft::GetEntriesContext::empty(false))
                .unwrap(),
            vec![entry(30_001), entry(30_002)],
            "{damage}"
        );
    }
}

/// A file whose last slot lies at or below the snapshot's index only because that slot is
/// damaged (its index field flipped) holds live entries: open and repair never set it aside for
/// it. The tail file's header damaged too, open refuses in both modes (committed entries are in
/// it), naming the file.
#[test]
fn a_damaged_last_slot_never_makes_a_live_file_look_wholly_below_the_snapshot() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    store_with(&dir, 30_000, Some(10));
    let file1 = dir.join("00001.wal");
    // Slot 29,999's index field (8 bytes at 8) says 5: below the snapshot.
    write_at(&file1, 29_999 * 32 + 8, &5u64.to_le_bytes());
    flip(&file1, HEADER_AT + 9);
    for mode in [
        RecoveryMode::TolerateTailCorruption,
        RecoveryMode::AbsoluteConsistency,
    ] {
        let err = open_copy(&dir, mode).unwrap_err();
        assert!(err.to_string().contains("00001.wal"), "{mode:?}: {err}");
    }
}

/// The first live file gone after a snapshot (`00002.wal`, the snapshot having removed
/// `00001.wal`): open refuses, naming it, and `repair --accept-data-loss` cuts the log to the
/// snapshot (every later entry, committed or not, goes: the node catches up from its leader),
/// after which the store opens and the log goes on. Repair once refused too, leaving no way
/// out; found by a review (2026-12-07).
#[test]
fn repair_cuts_to_the_snapshot_when_the_first_live_file_is_missing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    store_with(&dir, 60_100, Some(30_050));
    assert!(!dir.join("00001.wal").exists());
    fs::remove_file(dir.join("00002.wal")).unwrap();
    for mode in [
        RecoveryMode::TolerateTailCorruption,
        RecoveryMode::AbsoluteConsistency,
    ] {
        let err = open_copy(&dir, mode).unwrap_err();
        assert!(err.to_string().contains("00002.wal"), "{mode:?}: {err}");
    }
    let plan = raftwal::repair::check(&dir, None).unwrap();
    assert_eq!(
        (
            plan.needed,
            plan.last_index,
            plan.commit_before,
            plan.commit_after
        ),
        (true, 30_050, 60_100, 30_050),
        "{plan:?}"
    );
    assert!(
        plan.damage
            .as_deref()
            .is_some_and(|d| d.contains("00002.wal")),
        "{plan:?}"
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_raftwal"))
        .arg("repair")
        .arg(&dir)
        .arg("--accept-data-loss")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = DiskStorage::open(&dir).unwrap();
    assert_eq!(
        (s.first_index().unwrap(), s.last_index().unwrap()),
        (30_051, 30_050)
    );
    assert_eq!(s.initial_state().unwrap().hard_state.commit, 30_050);
    s.close().unwrap();
    goes_on_after_the_snapshot(&dir, 30_050);
}

/// The last file wholly below the snapshot, its header damaged, with a file before it that a
/// crash kept (its removal never reached the disk): open sets both aside, as repair does, and
/// the log goes on. Open once refused it (the scan of the file before it met the damaged header
/// first) while repair called the directory whole; found by a review of the change that set
/// such a file aside (2026-12-07).
#[test]
fn a_damaged_last_file_below_the_snapshot_goes_with_the_files_before_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let s = DiskStorage::open(&dir).unwrap();
    write_log(&s, 60_000);
    let (file1, saved) = (dir.join("00001.wal"), tmp.path().join("saved"));
    fs::copy(&file1, &saved).unwrap();
    s.create_snapshot(60_000, None, b"state".to_vec()).unwrap();
    s.close().unwrap();
    // A crash before the removal of 00001.wal reached the disk; then 00002.wal's header rots.
    fs::copy(&saved, &file1).unwrap();
    flip(&dir.join("00002.wal"), HEADER_AT + 9);
    for mode in [
        RecoveryMode::TolerateTailCorruption,
        RecoveryMode::AbsoluteConsistency,
    ] {
        assert_eq!(
            open_copy(&dir, mode).map_err(|e| e.to_string()),
            Ok((60_001, 60_000)),
            "{mode:?}"
        );
    }
    let plan = raftwal::repair::check(&dir, None).unwrap();
    assert_eq!((plan.needed, plan.last_index), (false, 60_000), "{plan:?}");
    goes_on_after_the_snapshot(&dir, 60_000);
}

/// The store at `dir`, its log ending at its snapshot (`snap`), takes the next entry, which
/// reads back after another open.
fn goes_on_after_the_snapshot(dir: &Path, snap: u64) {
    let s = DiskStorage::open(dir).unwrap();
    assert_eq!(
        (s.first_index().unwrap(), s.last_index().unwrap()),
        (snap + 1, snap)
    );
    let mut hs = HardState::default();
    (hs.term, hs.vote, hs.commit) = (1, 1, snap + 1);
    s.save(&hs, &[entry(snap + 1)], &Snapshot::default())
        .unwrap();
    s.close().unwrap();
    let s = DiskStorage::open(dir).unwrap();
    assert_eq!(
        (s.first_index().unwrap(), s.last_index().unwrap()),
        (snap + 1, snap + 1)
    );
    assert_eq!(
        s.entries(
            snap + 1,
            snap + 2,
            None,
            raft::GetEntriesContext::empty(false)
        )
        .unwrap(),
        vec![entry(snap + 1)]
    );
}

/// The same damage in an engine group (its last file wholly below the snapshot, its header
/// damaged): `Engine::open` refuses it, so repair on the group's directory must not call it
/// whole: it cuts the file, and the engine then opens. Repair once found "nothing to repair"
/// (exit 0) for it, and the engine could not open (found by a review, 2026-12-07).
#[test]
fn repair_on_an_engine_group_agrees_with_engine_open_on_a_damaged_last_file() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let e = raftwal::Engine::open(&root).unwrap();
    let g = e.create_group(1, 1).unwrap();
    write_entries(30_000, |hs, es| {
        g.save(hs, es, &Snapshot::default()).unwrap()
    });
    g.create_snapshot(30_000, None, b"state".to_vec()).unwrap();
    drop(g);
    e.close().unwrap();
    let gdir = root.join("groups/1");
    assert!(gdir.join("00001.wal").exists());
    flip(&gdir.join("00001.wal"), HEADER_AT + 9);
    assert!(
        raftwal::Engine::open(&root).is_err(),
        "the engine refuses it"
    );
    let plan = raftwal::repair::check(&gdir, None).unwrap();
    assert!(plan.needed, "{plan:?}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_raftwal"))
        .arg("repair")
        .arg(&gdir)
        .arg("--accept-data-loss")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let e = raftwal::Engine::open(&root).unwrap();
    let g = e.group(1).unwrap();
    assert_eq!(
        (g.first_index().unwrap(), g.last_index().unwrap()),
        (30_001, 30_000)
    );
    drop(g);
    e.close().unwrap();
}

/// Below the snapshot, a kept file with no header (zeroed) before the last file, whose header
/// is damaged: open (both modes) and verify keep the log, and repair's check reports nothing
/// to cut. The whole-log scan once took the damaged last file for a later header and reported
/// "no file header, but 00003.wal exists after it" (found by a review, 2026-12-07).
#[test]
fn open_and_repair_agree_on_an_empty_header_before_a_damaged_last_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let s = DiskStorage::open(&dir).unwrap();
    write_log(&s, 90_000);
    let (file2, saved) = (dir.join("00002.wal"), tmp.path().join("saved"));
    fs::copy(&file2, &saved).unwrap();
    s.create_snapshot(90_000, None, b"state".to_vec()).unwrap();
    s.close().unwrap();
    assert!(!file2.exists() && dir.join("00003.wal").exists());
    // A crash kept 00002.wal, whose header then reads as zeros; 00003.wal's header rots.
    fs::copy(&saved, &file2).unwrap();
    write_at(&file2, HEADER_AT, &[0u8; 36]);
    flip(&dir.join("00003.wal"), HEADER_AT + 9);
    let mut opened = Vec::new();
    for mode in [
        RecoveryMode::TolerateTailCorruption,
        RecoveryMode::AbsoluteConsistency,
    ] {
        opened.push(open_copy(&dir, mode).map_err(|e| e.to_string()));
    }
    let verify = raftwal::inspect::Inspector::open(&dir)
        .unwrap()
        .verify(&mut |_| {})
        .map(|_| ())
        .map_err(|e| e.to_string());
    let plan = raftwal::repair::check(&dir, None).unwrap();
    assert_eq!(opened, vec![Ok((90_001, 90_000)); 2]);
    assert_eq!(verify, Ok(()));
    assert!(!plan.needed, "{plan:?}");
}
