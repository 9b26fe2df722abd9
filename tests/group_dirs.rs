//! Group directories of an engine root seen from the single-directory side: `DiskStorage::open`,
//! `raftwal repair` and `snapshot restore` on `ROOT/groups/<id>` must find the engine root however
//! the path reaches it (a `groups/` that is a symbolic link to another disk included), and a repair
//! must never cut the live log over damage in a file wholly below the snapshot. Found by a review
//! of stop 32's changes; each test failed on the tree before its fix.

use std::fs;
use std::path::Path;

use raftwal::{DiskStorage, Engine};

/// Moves `root`'s `groups/` to `<tmp>/fast-disk` (another disk, say) and leaves a symbolic
/// link in its place; returns where the groups now are.
fn link_groups_elsewhere(tmp: &Path, root: &Path) -> std::path::PathBuf {
    let real = tmp.join("fast-disk");
    fs::rename(root.join("groups"), &real).unwrap();
    std::os::unix::fs::symlink(&real, root.join("groups")).unwrap();
    real
}

fn make_root_with_group(root: &Path) {
    let e = Engine::open(root).unwrap();
    e.create_group(1, 1).unwrap();
    e.close().unwrap();
}

fn entry(index: u64, term: u64) -> raft::prelude::Entry {
    let mut e = raft::prelude::Entry::default();
    e.index = index;
    e.term = term;
    e.data = format!("entry {index}").into_bytes().into();
    e
}

fn hs(commit: u64) -> raft::prelude::HardState {
    let mut hs = raft::prelude::HardState::default();
    hs.term = 1;
    hs.commit = commit;
    hs
}

/// `groups/` a symbolic link (e.g. to a faster disk): the engine runs on it, and
/// `DiskStorage::open(ROOT/groups/1)` must still be refused while the engine has the root open.
#[test]
fn disk_storage_open_refuses_group_of_running_engine_through_symlinked_groups() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    make_root_with_group(&root);
    link_groups_elsewhere(tmp.path(), &root);
    let e = Engine::open(&root).unwrap();
    assert!(
        e.group(1).is_some(),
        "precondition: the engine runs on the linked groups/"
    );
    let r = DiskStorage::open(root.join("groups/1"));
    assert!(
        r.is_err(),
        "DiskStorage::open took a running engine's group as a plain WAL directory"
    );
    drop(r);
    e.close().unwrap();
}

/// Same, after a crash (root marked open): the group's latest state is in the journal only.
#[test]
fn disk_storage_open_refuses_group_of_crashed_engine_through_symlinked_groups() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    make_root_with_group(&root);
    let real = link_groups_elsewhere(tmp.path(), &root);
    let e = Engine::open(&root).unwrap();
    std::mem::forget(e); // a crash: engine.meta stays marked open
                         // (the root's flock is held by the leaked engine in this process; a crashed process
                         // releases it, so check the marking alone through a fresh process-free copy)
    let copy = tmp.path().join("copy");
    fs::create_dir(&copy).unwrap();
    for name in ["engine.meta", "journal"] {
        let src = root.join(name);
        let status = std::process::Command::new("cp")
            .arg("-a")
            .arg(&src)
            .arg(copy.join(name))
            .status()
            .unwrap();
        assert!(status.success());
    }
    let real2 = tmp.path().join("fast-disk-2");
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(&real)
        .arg(&real2)
        .status()
        .unwrap();
    assert!(status.success());
    std::os::unix::fs::symlink(&real2, copy.join("groups")).unwrap();
    let r = DiskStorage::open(copy.join("groups/1"));
    assert!(
        r.is_err(),
        "DiskStorage::open took a crashed engine's group as a plain WAL directory"
    );
}

/// `repair` on a group of a running engine is refused (it takes the root's lock, as
/// `DiskStorage::open` does); with `groups/` a symbolic link it is not, and it cuts the
/// running engine's files under it.
#[test]
fn repair_refuses_a_running_engines_group_through_symlinked_groups() {
    use std::os::unix::fs::FileExt;
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    {
        let e = Engine::open(&root).unwrap();
        let g = e.create_group(1, 1).unwrap();
        let es: Vec<_> = (1..=100).map(|i| entry(i, 1)).collect();
        g.save(&hs(100), &es, &raft::prelude::Snapshot::default())
            .unwrap();
        drop(g);
        e.close().unwrap();
    }
    // Entry 80's slot damaged.
    let wal = root.join("groups/1/00001.wal");
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&wal)
        .unwrap();
    let at = 79 * 32 + 8;
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, at).unwrap();
    f.write_all_at(&[b[0] ^ 0x01], at).unwrap();
    drop(f);
    link_groups_elsewhere(tmp.path(), &root);
    let e = Engine::open(&root).unwrap();
    let r = raftwal::repair::repair(root.join("groups/1"), None);
    e.close().unwrap();
    assert!(r.is_err(), "repair changed a running engine's group: {r:?}");
}

/// `snapshot restore` into a new group directory of an engine root is refused (only the engine
/// creates groups; a plain WAL directory there makes `Engine::open` refuse the root), also when
/// the root's `groups/` is a symbolic link.
#[test]
fn restore_refuses_a_new_group_dir_through_symlinked_groups() {
    use raftwal::archive::{self, RestoreOptions};
    let tmp = tempfile::tempdir().unwrap();
    let wal = tmp.path().join("wal");
    {
        let s = DiskStorage::open(&wal).unwrap();
        let es: Vec<_> = (1..=10).map(|i| entry(i, 1)).collect();
        s.save(&hs(10), &es, &raft::prelude::Snapshot::default())
            .unwrap();
        s.set_conf_state(&raft::prelude::ConfState::from((vec![1], vec![])))
            .unwrap();
        s.create_snapshot(8, None, b"state".to_vec()).unwrap();
        s.close().unwrap();
    }
    let tar = tmp.path().join("backup.tar.gz");
    archive::save_dir_snapshot(&wal, &tar, &mut |_| {}).unwrap();

    let root = tmp.path().join("root");
    make_root_with_group(&root);
    // Control: with a plain groups/ the restore is refused.
    let plain = archive::restore(
        &tar,
        &root.join("groups/7"),
        &RestoreOptions::default(),
        &mut |_| {},
    );
    assert!(
        plain.is_err(),
        "control: restore into a new group dir was accepted"
    );
    link_groups_elsewhere(tmp.path(), &root);
    let linked = archive::restore(
        &tar,
        &root.join("groups/7"),
        &RestoreOptions::default(),
        &mut |_| {},
    );
    let opened = Engine::open(&root).map(|e| e.close());
    assert!(
        linked.is_err(),
        "restore wrote a plain WAL directory among the engine's groups (Engine::open now: {opened:?})"
    );
}

/// A crash between a snapshot's meta page and the removal of the log files wholly below it
/// leaves such a file (open reads it as "wholly compacted", `check_sealed`), here with its
/// header damaged too. It holds nothing of the log: open once refused the directory (docs/DESIGN.md §4:
/// damage below the snapshot never fails open), and `repair` once cut the live log after the
/// snapshot there.
#[test]
fn repair_keeps_the_live_log_when_only_a_wholly_compacted_files_header_is_damaged() {
    use raft::Storage as _;
    use std::os::unix::fs::FileExt;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let store = DiskStorage::open(&dir).unwrap();
    let mut lo = 1;
    while lo <= 30_100 {
        let hi = (lo + 999).min(30_100);
        let es: Vec<_> = (lo..=hi).map(|i| entry(i, 1)).collect();
        store
            .save(&hs(hi), &es, &raft::prelude::Snapshot::default())
            .unwrap();
        lo = hi + 1;
    }
    store.sync().unwrap();
    let file1 = dir.join("00001.wal");
    let saved = tmp.path().join("00001.wal.saved");
    fs::copy(&file1, &saved).unwrap();
    store
        .create_snapshot(30_050, None, b"state".to_vec())
        .unwrap();
    assert!(
        !file1.exists(),
        "precondition: the snapshot removed the compacted file"
    );
    store.close().unwrap();
    // The crash: the removal did not reach the disk.
    fs::copy(&saved, &file1).unwrap();
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&file1)
        .unwrap();
    let at = 960_000 + 24; // the file header's base index
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, at).unwrap();
    f.write_all_at(&[b[0] ^ 0x40], at).unwrap();
    drop(f);
    // Not part of the log: `verify` reports it, open (either mode) removes it and keeps the
    // log whole; `repair` finds nothing to do.
    let inspector = raftwal::inspect::Inspector::open(&dir).expect("inspect");
    let verified = inspector.verify(&mut |_| {});
    assert!(
        verified
            .as_ref()
            .is_err_and(|e| e.to_string().contains("00001.wal")),
        "verify reports the damaged header: {verified:?}"
    );
    drop(inspector);
    let strict = raftwal::Options {
        recovery_mode: raftwal::RecoveryMode::AbsoluteConsistency,
        ..Default::default()
    };
    let s = DiskStorage::open_with(&dir, strict.clone())
        .expect("strict open: damage below the snapshot never fails open");
    assert_eq!(
        (s.first_index().unwrap(), s.last_index().unwrap()),
        (30_051, 30_100)
    );
    assert_eq!(s.initial_state().unwrap().hard_state.commit, 30_100);
    s.close().unwrap();
    assert!(
        !file1.exists(),
        "open removed the compacted file with the damaged header"
    );
    // And repair, on a copy of the damaged directory, cuts nothing of the live log.
    fs::copy(&saved, &file1).unwrap();
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&file1)
        .unwrap();
    f.write_all_at(&[b[0] ^ 0x40], at).unwrap();
    drop(f);
    let r = raftwal::repair::repair(&dir, None);
    assert!(
        dir.join("00002.wal").exists(),
        "repair removed 00002.wal (committed entries 30,051..=30,100 after the snapshot) over damage in a file wholly below the snapshot: {r:?}"
    );
    let r = r.expect("repair");
    assert_eq!(
        r.commit_after, 30_100,
        "repair lowered the commit index: {r:?}"
    );
    let s = DiskStorage::open_with(&dir, strict).expect("strict open after repair");
    assert_eq!(
        (s.first_index().unwrap(), s.last_index().unwrap()),
        (30_051, 30_100)
    );
}
