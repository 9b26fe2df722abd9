//! Backup archives (`raftwal::archive`): save, verify, restore, and every way an archive can be
//! damaged.
//!
//! A real store is written, snapshotted and saved; the archive is checked member by member,
//! verified, and restored into a new directory that `DiskStorage::open` (and a raft-rs `RawNode`)
//! accepts. Damaged archives are built by hand with `tar` + `flate2` — each with exactly one
//! defect, from the members of a good archive — and every one must be
//! `Error::InvalidArchive { path, reason }` from `verify_archive`, `archive_status` and
//! `restore` (which then creates nothing), never a panic.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use flate2::write::GzEncoder;
use flate2::Compression;
use raft::prelude::*;
use raft::{RawNode, Storage, StorageError};
use raftwal::archive::{self, ArchiveMeta, ConfStateJson, RestoreOptions};
use raftwal::{DiskStorage, Error, MetaInfo, Options};
use sha2::{Digest, Sha256};
use tar::EntryType;
use tempfile::TempDir;

#[path = "common/entries.rs"]
mod entries;

use entries::{term_every, text_entry};

// ---------------------------------------------------------------------------------------------
// a store with a snapshot
// ---------------------------------------------------------------------------------------------

const LAST: u64 = 100;
const SNAP_AT: u64 = 60;
/// The log's term rises every 25 entries (`term_every(index, 25)`): five terms in 100 entries.
const TERM_EVERY: u64 = 25;

/// Snapshot data: `len` bytes, part text (compressible), part pseudo-random.
fn snapshot_data(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x1234_5678_9abc_def1;
    (0..len)
        .map(|i| {
            if (i / 4096) % 2 == 0 {
                b"key=value;"[i % 10]
            } else {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            }
        })
        .collect()
}

fn voters_123() -> ConfState {
    let mut cs = ConfState::default();
    cs.voters = vec![1, 2, 3];
    cs.learners = vec![4];
    cs
}

/// Entries 1..=100, hard state committed to 100, conf state voters 1,2,3 + learner 4, raft id 9,
/// and a snapshot at 60 holding `data`.
fn build_store(dir: &Path, data: &[u8]) {
    let s = DiskStorage::open(dir).unwrap();
    let es: Vec<Entry> = (1..=LAST)
        .map(|i| text_entry(i, term_every(i, TERM_EVERY)))
        .collect();
    let mut hs = HardState::default();
    hs.term = term_every(LAST, TERM_EVERY);
    hs.vote = 1;
    hs.commit = LAST;
    s.save(&hs, &es, &Snapshot::default()).unwrap();
    s.set_conf_state(&voters_123()).unwrap();
    s.set_uint(MetaInfo::RaftId, 9);
    s.create_snapshot(SNAP_AT, None, data.to_vec()).unwrap();
    s.close().unwrap();
}

struct Fixture {
    tmp: TempDir,
    wal: PathBuf,
    archive: PathBuf,
    data: Vec<u8>,
    meta: ArchiveMeta,
}

impl Fixture {
    fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }
}

fn fixture_with(len: usize) -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let wal = tmp.path().join("wal");
    let data = snapshot_data(len);
    build_store(&wal, &data);
    let archive = tmp.path().join("backup.tar.gz");
    let meta = archive::save_dir_snapshot(&wal, &archive, &mut |_| {}).unwrap();
    Fixture {
        tmp,
        wal,
        archive,
        data,
        meta,
    }
}

fn fixture() -> Fixture {
    fixture_with(300_000)
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn files_in(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for ent in fs::read_dir(dir).unwrap() {
        let p = ent.unwrap().path();
        if p.is_dir() {
            out.push((p.clone(), Vec::new()));
            out.extend(files_in(&p));
        } else {
            out.push((p.clone(), fs::read(&p).unwrap()));
        }
    }
    out.sort();
    out
}

// ---------------------------------------------------------------------------------------------
// building archives by hand
// ---------------------------------------------------------------------------------------------

/// One tar member.
#[derive(Clone)]
struct M {
    name: String,
    kind: EntryType,
    data: Vec<u8>,
}

fn reg(name: &str, data: &[u8]) -> M {
    M {
        name: name.to_string(),
        kind: EntryType::Regular,
        data: data.to_vec(),
    }
}

/// `meta.json`, `state.bin` and `SHA256SUMS` as regular members, in this order.
fn three(meta: &[u8], state: &[u8], sums: &[u8]) -> [M; 3] {
    [
        reg("meta.json", meta),
        reg("state.bin", state),
        reg("SHA256SUMS", sums),
    ]
}

/// The members of an archive, read with the `tar` crate (test archives are small).
fn members_of(path: &Path) -> Vec<M> {
    let f = File::open(path).unwrap();
    let mut a = tar::Archive::new(flate2::read::GzDecoder::new(f));
    let mut out = Vec::new();
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let name = String::from_utf8(e.path_bytes().into_owned()).unwrap();
        let kind = e.header().entry_type();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        out.push(M { name, kind, data });
    }
    out
}

fn sums(meta: &[u8], state: &[u8]) -> Vec<u8> {
    format!(
        "{}  meta.json\n{}  state.bin\n",
        sha256_hex(meta),
        sha256_hex(state)
    )
    .into_bytes()
}

/// The three members of a good archive: meta.json, state.bin, SHA256SUMS.
fn good_members(f: &Fixture) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let ms = members_of(&f.archive);
    assert_eq!(ms.len(), 3);
    (ms[0].data.clone(), ms[1].data.clone(), ms[2].data.clone())
}

/// A tar stream of `members`, with its end-of-archive marker.
fn tar_bytes(members: &[M]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for m in members {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(m.kind);
        h.set_mode(0o644);
        h.set_mtime(1_700_000_000);
        // The name goes in verbatim (`set_path` would normalize `./meta.json`).
        let name = m.name.as_bytes();
        let field = &mut h.as_old_mut().name;
        field.fill(0);
        field[..name.len()].copy_from_slice(name);
        let data: &[u8] = match m.kind {
            EntryType::Symlink | EntryType::Link => {
                h.set_link_name("elsewhere").unwrap();
                &[]
            }
            _ => &m.data,
        };
        h.set_size(data.len() as u64);
        h.set_cksum();
        b.append(&h, data).unwrap();
    }
    b.into_inner().unwrap()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn write_file(f: &Fixture, name: &str, bytes: &[u8]) -> PathBuf {
    let p = f.path(name);
    fs::write(&p, bytes).unwrap();
    p
}

fn handmade(f: &Fixture, name: &str, members: &[M]) -> PathBuf {
    write_file(f, name, &gzip(&tar_bytes(members)))
}

/// `verify_archive`, `archive_status` and `restore` all refuse `path` as an invalid archive
/// whose reason contains `needle` (case-insensitive); restore creates nothing. Returns the reason.
fn expect_invalid(f: &Fixture, path: &Path, needle: &str) -> String {
    let reason = match archive::verify_archive(path, &mut |_| {}) {
        Err(Error::InvalidArchive { path: p, reason }) => {
            assert_eq!(p, path);
            reason
        }
        Err(e) => panic!("{}: expected InvalidArchive, got {e:?}", path.display()),
        Ok(s) => panic!("{}: a damaged archive verified: {s:?}", path.display()),
    };
    println!("{}: {reason}", path.display());
    assert!(
        reason.to_lowercase().contains(&needle.to_lowercase()),
        "{}: reason {reason:?} does not mention {needle:?}",
        path.display()
    );
    match archive::archive_status(path) {
        Err(Error::InvalidArchive { reason: r, .. }) => assert_eq!(r, reason),
        other => panic!("archive_status: expected InvalidArchive, got {other:?}"),
    }
    let target = f.path("restore-target").join("nested");
    match archive::restore(path, &target, &RestoreOptions::default(), &mut |_| {}) {
        Err(Error::InvalidArchive { reason: r, .. }) => assert_eq!(r, reason),
        other => panic!("restore: expected InvalidArchive, got {other:?}"),
    }
    assert!(
        !f.path("restore-target").exists(),
        "restore created a directory"
    );
    reason
}

// ---------------------------------------------------------------------------------------------
// save and the archive's format
// ---------------------------------------------------------------------------------------------

#[test]
fn save_writes_meta_state_and_sums_in_order_and_verify_accepts_it() {
    let f = fixture();
    let ms = members_of(&f.archive);
    let names: Vec<&str> = ms.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["meta.json", "state.bin", "SHA256SUMS"]);
    assert!(ms.iter().all(|m| m.kind == EntryType::Regular));
    assert_eq!(ms[1].data, f.data);

    // meta.json: exactly these fields.
    let meta: serde_json::Value = serde_json::from_slice(&ms[0].data).unwrap();
    let obj = meta.as_object().unwrap();
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "conf_state",
            "created_unix_secs",
            "format_version",
            "index",
            "size",
            "term"
        ]
    );
    assert_eq!(meta["format_version"], 1);
    assert_eq!(meta["index"], SNAP_AT);
    assert_eq!(meta["term"], term_every(SNAP_AT, TERM_EVERY));
    assert_eq!(meta["size"], f.data.len());
    assert_eq!(meta["conf_state"]["voters"], serde_json::json!([1, 2, 3]));
    assert_eq!(meta["conf_state"]["learners"], serde_json::json!([4]));

    // SHA256SUMS in sha256sum format.
    assert_eq!(ms[2].data, sums(&ms[0].data, &ms[1].data));

    let expect = ArchiveMeta {
        format_version: 1,
        index: SNAP_AT,
        term: term_every(SNAP_AT, TERM_EVERY),
        conf_state: ConfStateJson::from(&voters_123()),
        size: f.data.len() as u64,
        created_unix_secs: f.meta.created_unix_secs,
        state_sha256: sha256_hex(&f.data),
    };
    assert_eq!(f.meta, expect);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(now.abs_diff(f.meta.created_unix_secs) < 600);

    let mut checked = 0;
    let status = archive::verify_archive(&f.archive, &mut |n| checked += n).unwrap();
    assert_eq!(checked, f.data.len() as u64);
    assert_eq!(status.meta, expect);
    let bytes = fs::read(&f.archive).unwrap();
    assert_eq!(status.archive_bytes, bytes.len() as u64);
    assert_eq!(status.archive_sha256, sha256_hex(&bytes));
    assert_eq!(archive::archive_status(&f.archive).unwrap(), status);
    assert!(!f.path("backup.tar.gz.tmp").exists());
}

#[test]
fn save_reports_progress_and_works_while_the_store_is_open() {
    let tmp = tempfile::tempdir().unwrap();
    let wal = tmp.path().join("wal");
    let data = snapshot_data(1_000_000);
    build_store(&wal, &data);
    let s = DiskStorage::open(&wal).unwrap(); // holds the directory lock
    let out = tmp.path().join("b.tar.gz");
    let mut calls = 0;
    let mut total = 0;
    let meta = archive::save_dir_snapshot(&wal, &out, &mut |n| {
        calls += 1;
        total += n;
    })
    .unwrap();
    assert_eq!(total, data.len() as u64);
    assert!(calls > 1);
    assert_eq!(meta.size, data.len() as u64);
    drop(s);
    archive::verify_archive(&out, &mut |_| {}).unwrap();
}

#[test]
fn write_archive_streams_to_any_writer() {
    let f = fixture();
    let insp = raftwal::inspect::Inspector::open(&f.wal).unwrap();
    let mut r = insp.snapshot_reader().unwrap();
    let mut buf = Vec::new();
    let meta = archive::write_archive(&mut buf, &mut r, &mut |_| {}).unwrap();
    assert_eq!(meta.state_sha256, f.meta.state_sha256);
    let p = write_file(&f, "vec.tar.gz", &buf);
    assert_eq!(archive::verify_archive(&p, &mut |_| {}).unwrap().meta, meta);
}

#[test]
fn save_refuses_to_overwrite_an_existing_file() {
    let f = fixture();
    let before = fs::read(&f.archive).unwrap();
    let e = archive::save_dir_snapshot(&f.wal, &f.archive, &mut |_| {}).unwrap_err();
    assert!(
        matches!(&e, Error::Io { source, path, .. }
            if source.kind() == std::io::ErrorKind::AlreadyExists && *path == f.archive),
        "{e:?}"
    );
    assert_eq!(fs::read(&f.archive).unwrap(), before);
    assert!(!f.path("backup.tar.gz.tmp").exists());

    // Any existing entry counts, a directory too.
    let d = f.path("a-dir");
    fs::create_dir(&d).unwrap();
    assert!(archive::save_dir_snapshot(&f.wal, &d, &mut |_| {}).is_err());
    assert!(fs::read_dir(&d).unwrap().next().is_none());
}

#[test]
fn save_refuses_a_leftover_temporary_file_and_leaves_it_alone() {
    let f = fixture();
    let out = f.path("new.tar.gz");
    let tmp = f.path("new.tar.gz.tmp");
    fs::write(&tmp, b"someone's").unwrap();
    assert!(archive::save_dir_snapshot(&f.wal, &out, &mut |_| {}).is_err());
    assert_eq!(fs::read(&tmp).unwrap(), b"someone's");
    assert!(!out.exists());
}

#[test]
fn save_of_a_directory_without_a_snapshot_is_no_snapshot() {
    let tmp = tempfile::tempdir().unwrap();
    let wal = tmp.path().join("wal");
    let s = DiskStorage::open(&wal).unwrap();
    let es: Vec<Entry> = (1..=10)
        .map(|i| text_entry(i, term_every(i, TERM_EVERY)))
        .collect();
    s.save(&HardState::default(), &es, &Snapshot::default())
        .unwrap();
    s.close().unwrap();
    let out = tmp.path().join("b.tar.gz");
    let e = archive::save_dir_snapshot(&wal, &out, &mut |_| {}).unwrap_err();
    assert!(
        matches!(&e, Error::NoSnapshot { path } if *path == wal),
        "{e:?}"
    );
    assert!(!out.exists());
    assert!(!tmp.path().join("b.tar.gz.tmp").exists());

    // A missing directory is an error, and nothing is created.
    let missing = tmp.path().join("missing");
    assert!(archive::save_dir_snapshot(&missing, &out, &mut |_| {}).is_err());
    assert!(!missing.exists());
    assert!(!out.exists());
}

#[test]
fn a_snapshot_without_data_round_trips() {
    let tmp = tempfile::tempdir().unwrap();
    let wal = tmp.path().join("wal");
    build_store(&wal, &[]);
    let out = tmp.path().join("b.tar.gz");
    let meta = archive::save_dir_snapshot(&wal, &out, &mut |_| {}).unwrap();
    assert_eq!(meta.size, 0);
    assert_eq!(meta.state_sha256, sha256_hex(b""));
    archive::verify_archive(&out, &mut |_| {}).unwrap();
    let restored = tmp.path().join("restored");
    archive::restore(&out, &restored, &RestoreOptions::default(), &mut |_| {}).unwrap();
    let s = DiskStorage::open(&restored).unwrap();
    let snap = s.snapshot(0, 0).unwrap();
    assert_eq!(snap.get_metadata().index, SNAP_AT);
    assert!(snap.data.is_empty());
}

// ---------------------------------------------------------------------------------------------
// restore
// ---------------------------------------------------------------------------------------------

fn check_restored(dir: &Path, f: &Fixture, cs: &ConfState, raft_id: u64) -> DiskStorage {
    let s = DiskStorage::open(dir).unwrap();
    let snap = s.snapshot(SNAP_AT, 0).unwrap();
    assert_eq!(snap.get_metadata().index, SNAP_AT);
    assert_eq!(snap.get_metadata().term, term_every(SNAP_AT, TERM_EVERY));
    assert_eq!(snap.get_metadata().get_conf_state(), cs);
    assert!(snap.data[..] == f.data[..]);
    let st = s.initial_state().unwrap();
    assert_eq!(st.hard_state.term, term_every(SNAP_AT, TERM_EVERY));
    assert_eq!(st.hard_state.commit, SNAP_AT);
    assert_eq!(st.hard_state.vote, 0);
    assert_eq!(&st.conf_state, cs);
    assert_eq!(s.first_index().unwrap(), SNAP_AT + 1);
    assert_eq!(s.last_index().unwrap(), SNAP_AT);
    assert_eq!(s.term(SNAP_AT).unwrap(), term_every(SNAP_AT, TERM_EVERY));
    assert_eq!(
        s.term(SNAP_AT - 1),
        Err(raft::Error::Store(StorageError::Compacted))
    );
    assert_eq!(s.uint(MetaInfo::RaftId), raft_id);
    assert_eq!(s.uint(MetaInfo::SnapshotIndex), SNAP_AT);
    assert!(s.broken_snapshot_files().is_empty());
    s
}

#[test]
fn restore_round_trips_into_a_fresh_directory() {
    let f = fixture();
    let dir = f.path("restored");
    let mut seen = 0;
    let meta = archive::restore(&f.archive, &dir, &RestoreOptions::default(), &mut |n| {
        seen += n
    })
    .unwrap();
    assert_eq!(meta, f.meta);
    assert_eq!(seen, 2 * f.data.len() as u64, "both passes report progress");
    let s = check_restored(&dir, &f, &voters_123(), 0);

    // The log continues after the snapshot, and survives a reopen.
    let mut e = text_entry(SNAP_AT + 1, term_every(SNAP_AT + 1, TERM_EVERY));
    e.term = term_every(SNAP_AT, TERM_EVERY) + 1;
    s.save(&HardState::default(), &[e], &Snapshot::default())
        .unwrap();
    drop(s);
    let s = DiskStorage::open(&dir).unwrap();
    assert_eq!(s.last_index().unwrap(), SNAP_AT + 1);
    drop(s);

    // The restored directory backs up to the same state.
    let again = f.path("again.tar.gz");
    let m2 = archive::save_dir_snapshot(&dir, &again, &mut |_| {}).unwrap();
    assert_eq!(m2.state_sha256, f.meta.state_sha256);
    assert_eq!((m2.index, m2.term), (f.meta.index, f.meta.term));
}

#[test]
fn restore_with_new_membership_and_raft_id_and_raft_starts_from_it() {
    let f = fixture();
    let dir = f.path("restored");
    let opts = RestoreOptions {
        raft_id: Some(1),
        voters: Some(vec![1]),
    };
    let meta = archive::restore(&f.archive, &dir, &opts, &mut |_| {}).unwrap();
    // The archive's own membership is reported; the new one is installed.
    assert_eq!(meta.conf_state, ConfStateJson::from(&voters_123()));
    let mut cs = ConfState::default();
    cs.voters = vec![1];
    let s = check_restored(&dir, &f, &cs, 1);

    // A single-voter raft-rs node starts from the restored directory and commits after it.
    let cfg = raft::Config {
        id: s.uint(MetaInfo::RaftId),
        election_tick: 10,
        heartbeat_tick: 3,
        applied: SNAP_AT,
        ..Default::default()
    };
    let logger = slog::Logger::root(slog::Discard, slog::o!());
    let mut node = RawNode::new(&cfg, s, &logger).unwrap();
    assert_eq!(node.raft.raft_log.committed, SNAP_AT);
    node.campaign().unwrap();
    for _ in 0..5 {
        if !node.has_ready() {
            break;
        }
        let mut rd = node.ready();
        let hs = rd.hs().cloned().unwrap_or_default();
        node.store().save(&hs, rd.entries(), rd.snapshot()).unwrap();
        let _ = rd.take_committed_entries();
        let mut light = node.advance(rd);
        let _ = light.take_committed_entries();
        node.advance_apply();
    }
    assert!(
        node.raft.raft_log.committed > SNAP_AT,
        "the node made progress"
    );
    assert_eq!(node.raft.term, term_every(SNAP_AT, TERM_EVERY) + 1);

    // Other voter sets.
    let dir2 = f.path("restored2");
    let opts = RestoreOptions {
        raft_id: None,
        voters: Some(vec![5, 6, 7]),
    };
    archive::restore(&f.archive, &dir2, &opts, &mut |_| {}).unwrap();
    let mut cs = ConfState::default();
    cs.voters = vec![5, 6, 7];
    check_restored(&dir2, &f, &cs, 0);
}

#[test]
fn restore_into_an_existing_empty_directory_and_into_missing_parents() {
    let f = fixture();
    let empty = f.path("empty");
    fs::create_dir(&empty).unwrap();
    archive::restore(&f.archive, &empty, &RestoreOptions::default(), &mut |_| {}).unwrap();
    check_restored(&empty, &f, &voters_123(), 0);

    let nested = f.path("a").join("b").join("c");
    archive::restore(&f.archive, &nested, &RestoreOptions::default(), &mut |_| {}).unwrap();
    check_restored(&nested, &f, &voters_123(), 0);
}

#[test]
fn restore_refuses_a_non_empty_target_and_leaves_it_untouched() {
    let f = fixture();
    // A directory with anything in it.
    let dir = f.path("busy");
    fs::create_dir_all(dir.join("sub")).unwrap();
    fs::write(dir.join("notes.txt"), b"keep me").unwrap();
    let before = files_in(&dir);
    let e =
        archive::restore(&f.archive, &dir, &RestoreOptions::default(), &mut |_| {}).unwrap_err();
    assert!(
        matches!(&e, Error::Io { source, path, .. }
            if source.kind() == std::io::ErrorKind::AlreadyExists && *path == dir),
        "{e:?}"
    );
    assert_eq!(files_in(&dir), before);

    // An existing WAL directory (the source itself).
    let before = files_in(&f.wal);
    assert!(archive::restore(&f.archive, &f.wal, &RestoreOptions::default(), &mut |_| {}).is_err());
    assert_eq!(files_in(&f.wal), before);

    // A file where the directory should be.
    let file = f.path("a-file");
    fs::write(&file, b"x").unwrap();
    assert!(archive::restore(&f.archive, &file, &RestoreOptions::default(), &mut |_| {}).is_err());
    assert_eq!(fs::read(&file).unwrap(), b"x");
}

/// Two restores into the same new (or empty) directory at once: one restores, the other is
/// refused and removes nothing of the first's.
#[test]
fn concurrent_restores_into_one_directory_leave_one_whole_restore() {
    let f = fixture();
    for (i, target) in [f.path("new").join("nested"), f.path("empty")]
        .iter()
        .enumerate()
    {
        if i == 1 {
            fs::create_dir(target).unwrap();
        }
        let results: Vec<_> = std::thread::scope(|s| {
            let runs: Vec<_> = (0..2)
                .map(|_| {
                    s.spawn(|| {
                        archive::restore(
                            &f.archive,
                            target,
                            &RestoreOptions::default(),
                            &mut |_| {},
                        )
                    })
                })
                .collect();
            runs.into_iter().map(|r| r.join().unwrap()).collect()
        });
        let won = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(won, 1, "{target:?}: {results:?}");
        check_restored(target, &f, &voters_123(), 0);
    }
}

#[test]
fn restore_refuses_a_damaged_archive_and_creates_nothing() {
    let f = fixture();
    let (meta, mut state, sums_) = good_members(&f);
    state[1234] ^= 1;
    let bad = handmade(&f, "bad.tar.gz", &three(&meta, &state, &sums_));
    // Missing target (and parent): not created.
    let target = f.path("parent").join("restored");
    assert!(matches!(
        archive::restore(&bad, &target, &RestoreOptions::default(), &mut |_| {}),
        Err(Error::InvalidArchive { .. })
    ));
    assert!(!f.path("parent").exists());
    // Empty target: stays empty.
    let empty = f.path("empty");
    fs::create_dir(&empty).unwrap();
    assert!(matches!(
        archive::restore(&bad, &empty, &RestoreOptions::default(), &mut |_| {}),
        Err(Error::InvalidArchive { .. })
    ));
    assert!(fs::read_dir(&empty).unwrap().next().is_none());
    // A missing archive.
    let e = archive::restore(
        &f.path("nope.tar.gz"),
        &target,
        &RestoreOptions::default(),
        &mut |_| {},
    )
    .unwrap_err();
    assert!(
        matches!(&e, Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound),
        "{e:?}"
    );
    assert!(!f.path("parent").exists());
}

#[test]
fn restore_refuses_bad_options_before_anything() {
    let f = fixture();
    let target = f.path("restored");
    for opts in [
        RestoreOptions {
            raft_id: Some(0),
            voters: None,
        },
        RestoreOptions {
            raft_id: None,
            voters: Some(vec![]),
        },
        RestoreOptions {
            raft_id: None,
            voters: Some(vec![1, 0]),
        },
        RestoreOptions {
            raft_id: None,
            voters: Some(vec![1, 2, 1]),
        },
    ] {
        let e = archive::restore(&f.archive, &target, &opts, &mut |_| {}).unwrap_err();
        assert!(matches!(e, Error::InvalidArgument(_)), "{opts:?}: {e:?}");
        assert!(!target.exists());
    }
}

#[test]
fn restore_fails_and_cleans_up_if_the_archive_changes_after_verification() {
    let f = fixture();
    let (meta, state, _) = good_members(&f);
    let mut other = state.clone();
    other[77] ^= 0x10;
    // A valid archive of its own, with the same meta.json but other data.
    let swapped = gzip(&tar_bytes(&three(&meta, &other, &sums(&meta, &other))));
    let staged = write_file(&f, "staged.tar.gz", &swapped);
    archive::verify_archive(&staged, &mut |_| {}).unwrap();

    for target in [f.path("restored"), f.path("empty")] {
        if target.ends_with("empty") {
            fs::create_dir(&target).unwrap();
        }
        let victim = f.path("victim.tar.gz");
        fs::copy(&f.archive, &victim).unwrap();
        // Swap the file once the verification pass has read all of state.bin.
        let mut seen = 0u64;
        let mut swapped_in = false;
        let len = f.data.len() as u64;
        let e = archive::restore(&victim, &target, &RestoreOptions::default(), &mut |n| {
            seen += n;
            if seen == len && !swapped_in {
                fs::copy(&staged, f.path("swap.tmp")).unwrap();
                fs::rename(f.path("swap.tmp"), &victim).unwrap();
                swapped_in = true;
            }
        })
        .unwrap_err();
        assert!(swapped_in);
        match &e {
            Error::InvalidArchive { reason, .. } => {
                assert!(reason.contains("changed since it was verified"), "{reason}")
            }
            other => panic!("expected InvalidArchive, got {other:?}"),
        }
        if target.ends_with("empty") {
            assert!(
                fs::read_dir(&target).unwrap().next().is_none(),
                "left files behind"
            );
        } else {
            assert!(!target.exists(), "left the directory behind");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// damaged archives
// ---------------------------------------------------------------------------------------------

#[test]
fn a_handmade_archive_of_the_same_members_verifies() {
    // The hand-built archives below differ from a good one only by their defect.
    let f = fixture();
    let (meta, state, s) = good_members(&f);
    let p = handmade(&f, "same.tar.gz", &three(&meta, &state, &s));
    assert_eq!(
        archive::verify_archive(&p, &mut |_| {}).unwrap().meta,
        f.meta
    );
    // Zero blocks after the end-of-archive marker (record padding, as GNU tar writes) are fine.
    let mut t = tar_bytes(&three(&meta, &state, &s));
    t.resize(t.len().next_multiple_of(10240) + 10240, 0);
    let p = write_file(&f, "padded.tar.gz", &gzip(&t));
    archive::verify_archive(&p, &mut |_| {}).unwrap();
    // `sha256sum -b` style lines are fine too.
    let b = String::from_utf8(s.clone()).unwrap().replace("  ", " *");
    let p = handmade(
        &f,
        "binary-sums.tar.gz",
        &three(&meta, &state, b.as_bytes()),
    );
    archive::verify_archive(&p, &mut |_| {}).unwrap();
}

#[test]
fn an_unknown_extra_member_is_refused_wherever_it_is() {
    let f = fixture();
    let (meta, state, s) = good_members(&f);
    let extra = reg("extra.txt", b"hello");
    let good = three(&meta, &state, &s);
    for at in 0..=3 {
        let mut ms = good.to_vec();
        ms.insert(at, extra.clone());
        let p = handmade(&f, &format!("extra{at}.tar.gz"), &ms);
        expect_invalid(&f, &p, "unknown member \"extra.txt\"");
    }
    // A member with a path prefix is not the member.
    let mut ms = good.to_vec();
    ms[0].name = "./meta.json".to_string();
    let p = handmade(&f, "dot.tar.gz", &ms);
    expect_invalid(&f, &p, "unknown member \"./meta.json\"");
}

#[test]
fn a_missing_member_is_refused() {
    let f = fixture();
    let (meta, state, s) = good_members(&f);
    let good = three(&meta, &state, &s);
    for (i, needle) in [(0, "meta.json"), (1, "state.bin"), (2, "SHA256SUMS")] {
        let mut ms = good.to_vec();
        ms.remove(i);
        let p = handmade(&f, &format!("missing{i}.tar.gz"), &ms);
        let reason = expect_invalid(&f, &p, needle);
        assert!(reason.contains("missing"), "{reason}");
    }
    // No member at all.
    let p = handmade(&f, "empty-tar.tar.gz", &[]);
    expect_invalid(&f, &p, "meta.json is missing");
}

#[test]
fn members_out_of_order_or_twice_are_refused() {
    let f = fixture();
    let (meta, state, s) = good_members(&f);
    let (m, st, su) = (
        reg("meta.json", &meta),
        reg("state.bin", &state),
        reg("SHA256SUMS", &s),
    );
    for (name, ms) in [
        ("order1", vec![st.clone(), m.clone(), su.clone()]),
        ("order2", vec![m.clone(), su.clone(), st.clone()]),
        ("order3", vec![su.clone(), m.clone(), st.clone()]),
    ] {
        let p = handmade(&f, &format!("{name}.tar.gz"), &ms);
        expect_invalid(&f, &p, "out of order");
    }
    for (name, ms, needle) in [
        (
            "twice1",
            vec![m.clone(), m.clone(), st.clone(), su.clone()],
            "meta.json appears twice",
        ),
        (
            "twice2",
            vec![m.clone(), st.clone(), st.clone(), su.clone()],
            "state.bin appears twice",
        ),
        (
            "twice3",
            vec![m.clone(), st.clone(), su.clone(), su.clone()],
            "SHA256SUMS appears twice",
        ),
    ] {
        let p = handmade(&f, &format!("{name}.tar.gz"), &ms);
        expect_invalid(&f, &p, needle);
    }
}

#[test]
fn a_mismatched_hash_in_sha256sums_is_refused() {
    let f = fixture();
    let (meta, state, _) = good_members(&f);
    // A wrong hash for each member.
    for (i, needle) in [
        (0usize, "mismatch for meta.json"),
        (1, "mismatch for state.bin"),
    ] {
        let mut lines: Vec<String> = String::from_utf8(sums(&meta, &state))
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect();
        let first = if lines[i].starts_with('0') { "1" } else { "0" };
        lines[i].replace_range(0..1, first);
        let text = lines.join("\n") + "\n";
        let p = handmade(
            &f,
            &format!("hash{i}.tar.gz"),
            &three(&meta, &state, text.as_bytes()),
        );
        expect_invalid(&f, &p, needle);
    }
}

#[test]
fn a_bad_sha256sums_is_refused() {
    let f = fixture();
    let (meta, state, s) = good_members(&f);
    let text = String::from_utf8(s).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "no-state-line",
            format!("{}\n", lines[0]),
            "no line for state.bin",
        ),
        (
            "no-meta-line",
            format!("{}\n", lines[1]),
            "no line for meta.json",
        ),
        ("empty", String::new(), "does not end with a newline"),
        (
            "no-newline",
            text.trim_end().to_string(),
            "does not end with a newline",
        ),
        (
            "twice",
            format!("{}\n{}\n{}\n", lines[0], lines[1], lines[1]),
            "state.bin twice",
        ),
        (
            "extra-name",
            format!("{text}{}  other.bin\n", "a".repeat(64)),
            "\"other.bin\"",
        ),
        (
            "sums-of-sums",
            format!("{text}{}  SHA256SUMS\n", "a".repeat(64)),
            "\"SHA256SUMS\"",
        ),
        ("blank-line", format!("{text}\n"), "line 3"),
        ("one-space", text.replace("  ", " "), "line 1"),
        ("short-hash", text.replacen(&lines[0][..2], "", 1), "line 1"),
        ("not-hex", text.replacen(&lines[0][..1], "g", 1), "line 1"),
        ("crlf", text.replace('\n', "\r\n"), "\"meta.json\\r\""),
    ];
    for (name, sums_text, needle) in cases {
        let p = handmade(
            &f,
            &format!("sums-{name}.tar.gz"),
            &three(&meta, &state, sums_text.as_bytes()),
        );
        expect_invalid(&f, &p, needle);
    }
    // Not UTF-8.
    let p = handmade(
        &f,
        "sums-binary.tar.gz",
        &three(&meta, &state, &[0xff, 0xfe, b'\n']),
    );
    expect_invalid(&f, &p, "not UTF-8");
    // Too large to be what it claims.
    let p = handmade(
        &f,
        "sums-huge.tar.gz",
        &three(&meta, &state, &vec![b'a'; 100_000]),
    );
    expect_invalid(&f, &p, "at most");
}

#[test]
fn a_flipped_byte_in_state_bin_is_a_hash_mismatch() {
    let f = fixture();
    let (meta, state, s) = good_members(&f);
    for at in [0, state.len() / 2, state.len() - 1] {
        let mut bad = state.clone();
        bad[at] ^= 0x80;
        let p = handmade(&f, &format!("flip{at}.tar.gz"), &three(&meta, &bad, &s));
        expect_invalid(&f, &p, "mismatch for state.bin");
    }
    // And in meta.json (still valid JSON: a digit of the creation time).
    let text = String::from_utf8(meta.clone()).unwrap();
    let secs = f.meta.created_unix_secs.to_string();
    let other = (f.meta.created_unix_secs + 1).to_string();
    let bad = text.replace(&secs, &other);
    assert_ne!(bad, text);
    let p = handmade(
        &f,
        "flip-meta.tar.gz",
        &[
            reg("meta.json", bad.as_bytes()),
            reg("state.bin", &state),
            reg("SHA256SUMS", &s),
        ],
    );
    expect_invalid(&f, &p, "mismatch for meta.json");
}

/// meta.json as a JSON value, edited, re-encoded, with SHA256SUMS recomputed to match.
fn with_meta(f: &Fixture, name: &str, edit: impl FnOnce(&mut serde_json::Value)) -> PathBuf {
    let (meta, state, _) = good_members(f);
    let mut v: serde_json::Value = serde_json::from_slice(&meta).unwrap();
    edit(&mut v);
    let meta = serde_json::to_vec(&v).unwrap();
    handmade(f, name, &three(&meta, &state, &sums(&meta, &state)))
}

#[test]
fn a_meta_json_that_lies_about_the_size_is_refused() {
    let f = fixture();
    let len = f.data.len() as u64;
    for (i, size) in [len + 1, len - 1, 0, u64::MAX].into_iter().enumerate() {
        let p = with_meta(&f, &format!("size{i}.tar.gz"), |v| {
            v["size"] = serde_json::json!(size)
        });
        expect_invalid(&f, &p, &format!("meta.json says state.bin is {size} bytes"));
    }
}

#[test]
fn a_bad_meta_json_is_refused() {
    let f = fixture();
    let p = with_meta(&f, "v2.tar.gz", |v| v["format_version"] = 2.into());
    expect_invalid(&f, &p, "format version 2");
    let p = with_meta(&f, "v0.tar.gz", |v| v["format_version"] = 0.into());
    expect_invalid(&f, &p, "format version 0");
    let p = with_meta(&f, "index0.tar.gz", |v| v["index"] = 0.into());
    expect_invalid(&f, &p, "index 0");
    let p = with_meta(&f, "unknown-field.tar.gz", |v| {
        v["state_sha256"] = "00".into()
    });
    expect_invalid(&f, &p, "unknown field");
    let p = with_meta(&f, "missing-field.tar.gz", |v| {
        v.as_object_mut().unwrap().remove("term");
    });
    expect_invalid(&f, &p, "missing field");
    let p = with_meta(&f, "no-version.tar.gz", |v| {
        v.as_object_mut().unwrap().remove("format_version");
    });
    expect_invalid(&f, &p, "meta.json is not valid");
    let p = with_meta(&f, "negative.tar.gz", |v| v["term"] = (-1).into());
    expect_invalid(&f, &p, "meta.json is not valid");
    let p = with_meta(&f, "bad-cs.tar.gz", |v| {
        v["conf_state"]["voters"] = "1,2".into()
    });
    expect_invalid(&f, &p, "meta.json is not valid");

    let (_, state, _) = good_members(&f);
    for (i, garbage) in [
        &b"not json at all"[..],
        b"",
        b"[1,2,3]",
        b"{\"format_version\":1",
        &[0xff, 0x00, 0x7b],
    ]
    .into_iter()
    .enumerate()
    {
        let p = handmade(
            &f,
            &format!("garbage{i}.tar.gz"),
            &three(garbage, &state, &sums(garbage, &state)),
        );
        expect_invalid(&f, &p, "meta.json is not valid");
    }
    // Too large to be a meta.json (it would be read into memory).
    let big = vec![b' '; 2 << 20];
    let p = handmade(
        &f,
        "meta-huge.tar.gz",
        &three(&big, &state, &sums(&big, &state)),
    );
    expect_invalid(&f, &p, "at most");
}

#[test]
fn a_truncated_archive_is_refused_wherever_it_is_cut() {
    let f = fixture();
    let bytes = fs::read(&f.archive).unwrap();
    let n = bytes.len();
    let mut cuts: Vec<usize> = (0..7).map(|k| n * k / 7).collect();
    cuts.extend((1..=64).map(|k| n - k)); // the deflate end, the gzip trailer
    cuts.extend(0..40); // the gzip header
    cuts.extend((1..50).map(|k| n * k / 50));
    cuts.sort_unstable();
    cuts.dedup();
    for cut in cuts {
        let p = write_file(&f, "cut.tar.gz", &bytes[..cut]);
        match archive::verify_archive(&p, &mut |_| {}) {
            Err(Error::InvalidArchive { reason, .. }) => assert!(
                reason.contains("truncated") || reason.contains("gzip"),
                "cut at {cut}/{n}: {reason}"
            ),
            other => panic!("cut at {cut}/{n}: expected InvalidArchive, got {other:?}"),
        }
    }
    // One of them through every entry point.
    let p = write_file(&f, "cut.tar.gz", &bytes[..n * 3 / 7]);
    expect_invalid(&f, &p, "truncated");
}

#[test]
fn a_tar_stream_cut_inside_the_gzip_stream_is_refused() {
    // The gzip stream is whole, but the tar inside it is cut.
    let f = fixture();
    let (meta, state, s) = good_members(&f);
    let t = tar_bytes(&three(&meta, &state, &s));
    let n = t.len();
    for (cut, needle) in [
        (0, "meta.json"),
        (100, "truncated"),
        (512 + 10, "truncated"),
        (n / 2, "truncated"),
        (n - 1024 - 512, "truncated"),
        (n - 1024 - 1, "truncated"),
        (n - 1024, "without the tar end-of-archive marker"),
        (n - 512, "one zero block of two"),
        (n - 100, "truncated"),
    ] {
        let p = write_file(&f, &format!("tarcut{cut}.tar.gz"), &gzip(&t[..cut]));
        expect_invalid(&f, &p, needle);
    }
}

#[test]
fn bytes_after_the_gzip_stream_are_refused() {
    let f = fixture();
    let bytes = fs::read(&f.archive).unwrap();
    for (name, tail, needle) in [
        ("garbage", b"garbage!".to_vec(), "8 trailing byte"),
        ("one-zero", vec![0u8], "1 trailing byte"),
        ("zeros", vec![0u8; 4096], "4096 trailing byte"),
        ("second-member", gzip(b"hello"), "second gzip member"),
        ("archive-twice", bytes.clone(), "second gzip member"),
        ("gzip-magic-only", vec![0x1f, 0x8b], "second gzip member"),
    ] {
        let mut b = bytes.clone();
        b.extend_from_slice(&tail);
        let p = write_file(&f, &format!("trailing-{name}.tar.gz"), &b);
        expect_invalid(&f, &p, needle);
    }
}

#[test]
fn data_after_the_tar_end_of_archive_is_refused() {
    let f = fixture();
    let (meta, state, s) = good_members(&f);
    let good = three(&meta, &state, &s);
    let t = tar_bytes(&good);
    let n = t.len();
    // Garbage after both zero blocks.
    let mut b = t.clone();
    b.extend_from_slice(b"garbage after the end");
    let p = write_file(&f, "after-end.tar.gz", &gzip(&b));
    expect_invalid(&f, &p, "data after the tar end-of-archive marker");
    // A whole member after the end-of-archive marker.
    let mut b = t.clone();
    b.extend_from_slice(&tar_bytes(&[reg("extra.txt", b"hidden")]));
    let p = write_file(&f, "member-after-end.tar.gz", &gzip(&b));
    expect_invalid(&f, &p, "data after the tar end-of-archive marker");
    // Zeros, then a non-zero byte far after.
    let mut b = t.clone();
    b.extend_from_slice(&vec![0u8; 100_000]);
    b.push(1);
    let p = write_file(&f, "late-byte.tar.gz", &gzip(&b));
    expect_invalid(&f, &p, "data after the tar end-of-archive marker");
    // Data in the second block of the marker.
    let mut b = t.clone();
    b[n - 10] = b'x';
    let p = write_file(&f, "second-block.tar.gz", &gzip(&b));
    expect_invalid(&f, &p, "data after the first block");
    // Garbage where the marker belongs.
    let mut b = t.clone();
    b[n - 1024..n - 1000].fill(b'z');
    let p = write_file(&f, "no-marker.tar.gz", &gzip(&b));
    expect_invalid(&f, &p, "where the tar end-of-archive marker belongs");
}

#[test]
fn members_that_are_not_regular_files_are_refused() {
    let f = fixture();
    let (meta, state, s) = good_members(&f);
    for (kind, kname) in [
        (EntryType::Symlink, "symlink"),
        (EntryType::Link, "hardlink"),
        (EntryType::Directory, "dir"),
        (EntryType::Fifo, "fifo"),
        (EntryType::Char, "char"),
    ] {
        let st = M {
            name: "state.bin".to_string(),
            kind,
            data: if kind == EntryType::Directory {
                Vec::new()
            } else {
                state.clone()
            },
        };
        let p = handmade(
            &f,
            &format!("{kname}.tar.gz"),
            &[reg("meta.json", &meta), st, reg("SHA256SUMS", &s)],
        );
        expect_invalid(&f, &p, "state.bin is not a regular file");
    }
    // meta.json as a directory.
    let p = handmade(
        &f,
        "meta-dir.tar.gz",
        &[
            M {
                name: "meta.json".to_string(),
                kind: EntryType::Directory,
                data: Vec::new(),
            },
            reg("state.bin", &state),
            reg("SHA256SUMS", &s),
        ],
    );
    expect_invalid(&f, &p, "meta.json is not a regular file");
    // A pax extended header (which could rename the next member) is a member of its own.
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_size(meta.len() as u64);
    h.set_mode(0o644);
    b.append_data(&mut h, "meta.json", &meta[..]).unwrap();
    b.append_pax_extensions([("path", &b"state.bin"[..])])
        .unwrap();
    let mut h = tar::Header::new_ustar();
    h.set_size(state.len() as u64);
    h.set_mode(0o644);
    b.append_data(&mut h, "other.bin", &state[..]).unwrap();
    let mut h = tar::Header::new_ustar();
    h.set_size(s.len() as u64);
    h.set_mode(0o644);
    b.append_data(&mut h, "SHA256SUMS", &s[..]).unwrap();
    let p = write_file(&f, "pax.tar.gz", &gzip(&b.into_inner().unwrap()));
    expect_invalid(&f, &p, "tar extension header (type 'x')");
    // So is a GNU long name.
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(meta.len() as u64);
    h.set_mode(0o644);
    b.append_data(&mut h, "meta.json", &meta[..]).unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_size(state.len() as u64);
    h.set_mode(0o644);
    b.append_data(&mut h, "x".repeat(150) + "/state.bin", &state[..])
        .unwrap();
    let p = write_file(&f, "longname.tar.gz", &gzip(&b.into_inner().unwrap()));
    expect_invalid(&f, &p, "tar extension header (type 'L')");
}

#[test]
fn a_damaged_tar_header_is_refused() {
    let f = fixture();
    let (meta, state, s) = good_members(&f);
    let t = tar_bytes(&three(&meta, &state, &s));
    let state_header = 512 + meta.len().next_multiple_of(512);
    // A byte of the mtime field (covered by nothing but the header checksum).
    let mut b = t.clone();
    b[state_header + 140] ^= 0x01;
    let p = write_file(&f, "header-flip.tar.gz", &gzip(&b));
    expect_invalid(&f, &p, "tar header checksum mismatch");
    // The checksum field itself.
    let mut b = t.clone();
    b[148] = b'x';
    let p = write_file(&f, "cksum-garbage.tar.gz", &gzip(&b));
    expect_invalid(
        &f,
        &p,
        "no tar header where the header of meta.json belongs",
    );
}

/// The decompressed contents of a gzip file (test archives are small).
fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut out)
        .unwrap();
    out
}

#[test]
fn a_flipped_byte_anywhere_in_the_file_is_refused_or_changes_nothing() {
    // A flipped bit is refused, unless it changes nothing that is stored: the gzip header's
    // FTEXT flag, MTIME, XFL and OS fields are covered by nothing, and deflate can encode
    // the same bytes more than one way. Then the archive verifies, but its contents are
    // exactly the original ones.
    let f = fixture_with(60_000);
    let bytes = fs::read(&f.archive).unwrap();
    let contents = gunzip(&bytes);
    let n = bytes.len();
    let mut positions: Vec<usize> = (0..n).step_by(53).collect();
    positions.extend(0..12);
    positions.extend(n - 40..n);
    let mut refused = 0;
    let mut accepted = Vec::new();
    for at in positions {
        for bit in [0x01, 0x80] {
            let mut b = bytes.clone();
            b[at] ^= bit;
            let p = write_file(&f, "flip.tar.gz", &b);
            match archive::verify_archive(&p, &mut |_| {}) {
                Err(Error::InvalidArchive { .. }) => refused += 1,
                Ok(status) => {
                    assert_eq!(status.meta, f.meta, "flip {bit:#x} at {at}/{n}");
                    assert!(
                        gunzip(&b) == contents,
                        "flip {bit:#x} at {at}/{n} changed the contents"
                    );
                    accepted.push((at, bit));
                }
                Err(e) => panic!("flip {bit:#x} at {at}/{n}: expected InvalidArchive, got {e:?}"),
            }
        }
    }
    println!("flips accepted (contents unchanged): {accepted:?}");
    assert!(refused > n / 53, "{refused}");
    // Every accepted flip left the contents as they were (checked above): bits that carry
    // nothing. Those are the gzip header's, and some in the encoding of runs of zeros, which
    // the tar stream holds at its end and in the padding after each member (a run of zeros
    // copied from distance 1 or from distance 2 is the same run). So they may sit anywhere in
    // the deflate stream, and which ones the sampled positions hit changes from run to run:
    // the archive's creation time (in its tar headers and meta.json) changes its compressed
    // bytes. CI once accepted a flip at byte 12,879 of about 29,700, contents unchanged, which
    // an older form of this check refused to allow. What is never accepted: the gzip magic
    // and method, and the trailer (CRC-32 and length of the contents).
    assert!(
        accepted.iter().all(|&(at, _)| at >= 3 && at + 8 < n),
        "{accepted:?}"
    );
}

#[test]
fn things_that_are_not_archives_are_refused() {
    let f = fixture();
    let (meta, state, s) = good_members(&f);
    // A plain (uncompressed) tar.
    let t = tar_bytes(&three(&meta, &state, &s));
    let p = write_file(&f, "plain.tar", &t);
    expect_invalid(&f, &p, "gzip");
    // An empty file.
    let p = write_file(&f, "empty.tar.gz", b"");
    expect_invalid(&f, &p, "the file is empty");
    // gzip of something that is not tar.
    let p = write_file(&f, "text.gz", &gzip(&vec![b'a'; 5000]));
    expect_invalid(&f, &p, "no tar header");
    // A directory is not an archive at all: an I/O error (bad input), not damage.
    let d = f.path("a-dir.tar.gz");
    fs::create_dir(&d).unwrap();
    let e = archive::verify_archive(&d, &mut |_| {}).unwrap_err();
    assert!(
        matches!(&e, Error::Io { .. }) && e.to_string().contains("a directory"),
        "{e:?}"
    );
    // Nor is a file that does not start as gzip does (here: text).
    let p = write_file(&f, "notes.txt", b"not an archive\n");
    expect_invalid(&f, &p, "not a gzip archive");
    // A missing file is an I/O error, not damage.
    let e = archive::verify_archive(&f.path("missing.tar.gz"), &mut |_| {}).unwrap_err();
    assert!(
        matches!(&e, Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound),
        "{e:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// stores encrypted at rest
// ---------------------------------------------------------------------------------------------

#[test]
fn an_encrypted_store_saves_with_its_key_and_restores_under_a_key() {
    let tmp = tempfile::tempdir().unwrap();
    let wal = tmp.path().join("wal");
    let key = [7u8; 32];
    let keyed = Options {
        encryption_key: Some(key),
        ..Default::default()
    };
    let data = snapshot_data(200_000);
    {
        let s = DiskStorage::open_with(&wal, keyed.clone()).unwrap();
        let es: Vec<Entry> = (1..=LAST)
            .map(|i| text_entry(i, term_every(i, TERM_EVERY)))
            .collect();
        s.save(&HardState::default(), &es, &Snapshot::default())
            .unwrap();
        s.set_conf_state(&voters_123()).unwrap();
        s.create_snapshot(SNAP_AT, None, data.clone()).unwrap();
    }
    // Without the key: refused, nothing written.
    let out = tmp.path().join("b.tar.gz");
    let e = archive::save_dir_snapshot(&wal, &out, &mut |_| {}).unwrap_err();
    assert!(matches!(e, Error::Encryption { .. }), "{e:?}");
    assert!(!out.exists());
    // With it: the archive holds the plaintext state.
    let meta = archive::save_dir_snapshot_with_key(&wal, Some(key), &out, &mut |_| {}).unwrap();
    assert_eq!(meta.size, data.len() as u64);
    assert_eq!(meta.state_sha256, sha256_hex(&data));
    assert_eq!(members_of(&out)[1].data, data);

    // Restored under a key: encrypted again, and readable with it only.
    let restored = tmp.path().join("restored");
    archive::restore_with_store_options(
        &out,
        &restored,
        &RestoreOptions::default(),
        &keyed,
        &mut |_| {},
    )
    .unwrap();
    assert!(matches!(
        DiskStorage::open(&restored),
        Err(Error::Encryption { .. })
    ));
    let s = DiskStorage::open_with(&restored, keyed).unwrap();
    let snap = s.snapshot(SNAP_AT, 0).unwrap();
    assert!(snap.data[..] == data[..]);
    assert_eq!(s.first_index().unwrap(), SNAP_AT + 1);
    drop(s);
    // Restored without one: a plaintext store.
    let plain = tmp.path().join("plain");
    archive::restore(&out, &plain, &RestoreOptions::default(), &mut |_| {}).unwrap();
    let s = DiskStorage::open(&plain).unwrap();
    assert!(s.snapshot(SNAP_AT, 0).unwrap().data[..] == data[..]);
}

// ---------------------------------------------------------------------------------------------
// arbitrary damage
// ---------------------------------------------------------------------------------------------

mod arbitrary {
    use super::*;
    use proptest::prelude::*;
    use std::sync::OnceLock;

    /// One small archive for every case: its bytes, its decompressed contents, its meta.
    fn base() -> &'static (Fixture, Vec<u8>, Vec<u8>) {
        static BASE: OnceLock<(Fixture, Vec<u8>, Vec<u8>)> = OnceLock::new();
        BASE.get_or_init(|| {
            let f = fixture_with(20_000);
            let bytes = fs::read(&f.archive).unwrap();
            let contents = gunzip(&bytes);
            (f, bytes, contents)
        })
    }

    #[derive(Debug, Clone)]
    enum Damage {
        Overwrite { at: usize, with: Vec<u8> },
        Insert { at: usize, with: Vec<u8> },
        Remove { at: usize, len: usize },
        Truncate { at: usize },
    }

    fn damage() -> impl Strategy<Value = Damage> {
        prop_oneof![
            (any::<usize>(), prop::collection::vec(any::<u8>(), 1..16))
                .prop_map(|(at, with)| Damage::Overwrite { at, with }),
            (any::<usize>(), prop::collection::vec(any::<u8>(), 1..16))
                .prop_map(|(at, with)| Damage::Insert { at, with }),
            (any::<usize>(), 1usize..64).prop_map(|(at, len)| Damage::Remove { at, len }),
            any::<usize>().prop_map(|at| Damage::Truncate { at }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

        /// Whatever is done to the file, verify never panics, and never accepts contents that
        /// differ from the original.
        #[test]
        fn damage_is_refused_or_harmless(ds in prop::collection::vec(damage(), 1..4)) {
            let (f, bytes, contents) = base();
            let mut b = bytes.clone();
            for d in &ds {
                let n = b.len().max(1);
                match d {
                    Damage::Overwrite { at, with } => {
                        let at = at % n;
                        for (i, x) in with.iter().enumerate() {
                            if let Some(y) = b.get_mut(at + i) {
                                *y = *x;
                            }
                        }
                    }
                    Damage::Insert { at, with } => {
                        let at = at % (b.len() + 1);
                        b.splice(at..at, with.iter().copied());
                    }
                    Damage::Remove { at, len } => {
                        let at = at % n;
                        let end = (at + len).min(b.len());
                        b.drain(at.min(end)..end);
                    }
                    Damage::Truncate { at } => b.truncate(at % n),
                }
            }
            let p = f.path(&format!("arb-{}.tar.gz", std::process::id()));
            fs::write(&p, &b).unwrap();
            match archive::verify_archive(&p, &mut |_| {}) {
                Err(Error::InvalidArchive { .. }) => {}
                Ok(status) => {
                    prop_assert_eq!(&status.meta, &f.meta);
                    prop_assert!(gunzip(&b) == *contents, "accepted altered contents: {:?}", ds);
                }
                Err(e) => prop_assert!(false, "{:?}: expected InvalidArchive, got {:?}", ds, e),
            }
        }
    }
}

#[test]
fn installing_an_empty_snapshot_is_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    let store = raftwal::DiskStorage::open(dir.path()).unwrap();
    let md = raft::prelude::SnapshotMetadata::default();
    let e = store.install_snapshot_from(&md, &b"state"[..]).unwrap_err();
    assert!(matches!(e, Error::EmptySnapshot(_)), "{e:?}");
    assert!(matches!(
        store.snapshot_reader(),
        Err(Error::NoSnapshot { .. })
    ));
}

/// What `verify` passes, `restore` restores: an archive whose meta.json is well formed and whose
/// hashes all match must not verify "ok" and then be refused by restore (an operator checks
/// backups with `verify`; the day they restore one is the day it must work). An index past the
/// log's largest and a conf state too large for a snapshot file's header once verified (found
/// by a review, 2026-12-07).
#[test]
fn an_archive_that_verifies_is_one_that_restores() {
    let f = fixture();
    type Edit = Box<dyn FnOnce(&mut serde_json::Value)>;
    let cases: Vec<(&str, Edit)> = vec![
        // Past the largest index the log holds (install refuses it).
        (
            "index-past-max.tar.gz",
            Box::new(|v| v["index"] = serde_json::json!((1u64 << 62) + 1)),
        ),
        // A conf state that does not fit the snapshot file's 4 KiB header block.
        (
            "huge-conf.tar.gz",
            Box::new(|v| {
                v["conf_state"]["voters"] = serde_json::json!((1u64..=3000).collect::<Vec<_>>())
            }),
        ),
    ];
    let mut wrong = Vec::new();
    for (name, edit) in cases {
        let p = with_meta(&f, name, edit);
        let verified = archive::verify_archive(&p, &mut |_| {});
        let target = f.path(&format!("restored-{name}"));
        let restored = archive::restore(&p, &target, &RestoreOptions::default(), &mut |_| {});
        if verified.is_ok() != restored.is_ok() {
            wrong.push(format!(
                "{name}: verify {:?}, restore {:?}",
                verified.map(|_| "ok"),
                restored.map(|_| "ok")
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "verify and restore disagree:\n{}",
        wrong.join("\n")
    );
}

/// An archive whose meta.json conf state no raft-rs node can start from (a node both voter and
/// learner; learners_next without a joint configuration) is refused by verify and restore. It
/// once verified and restored "ok" into a store on which `RawNode::new` panics (found by a
/// review, 2026-12-07).
#[test]
fn a_conf_state_raft_cannot_start_from_is_refused() {
    let f = fixture();
    let cases: Vec<(&str, serde_json::Value)> = vec![
        (
            "voter-and-learner.tar.gz",
            serde_json::json!({"voters": [1, 2, 3], "learners": [3], "voters_outgoing": [],
                               "learners_next": [], "auto_leave": false}),
        ),
        (
            "learners-next-not-joint.tar.gz",
            serde_json::json!({"voters": [1, 2, 3], "learners": [], "voters_outgoing": [],
                               "learners_next": [4], "auto_leave": false}),
        ),
    ];
    let mut wrong = Vec::new();
    for (name, cs) in cases {
        let p = with_meta(&f, name, |v| v["conf_state"] = cs);
        let verified = archive::verify_archive(&p, &mut |_| {}).is_ok();
        let target = f.path(&format!("restored-{name}"));
        let restored = archive::restore(&p, &target, &RestoreOptions::default(), &mut |_| {});
        if restored.is_err() {
            // Refused, and by verify too: an archive that verifies restores.
            assert!(!verified, "{name}: verify ok, restore {restored:?}");
            continue;
        }
        let started = std::panic::catch_unwind(|| {
            let s = DiskStorage::open(&target).unwrap();
            let cfg = raft::Config {
                id: 1,
                applied: SNAP_AT,
                ..Default::default()
            };
            let logger = slog::Logger::root(slog::Discard, slog::o!());
            RawNode::new(&cfg, s, &logger).map(|_| ())
        });
        match started {
            Ok(Ok(())) => {}
            Ok(Err(e)) => wrong.push(format!(
                "{name}: verify ok={verified}, restore ok, RawNode::new: {e}"
            )),
            Err(_) => wrong.push(format!(
                "{name}: verify ok={verified}, restore ok, RawNode::new panicked"
            )),
        }
    }
    assert!(
        wrong.is_empty(),
        "restored stores raft cannot start from:\n{}",
        wrong.join("\n")
    );
}

/// What a restore killed part way leaves: its marker (`RESTORING`) and an empty store. Open,
/// the read-only tools and repair refuse the directory, naming the marker; a restore run again
/// into it starts afresh and gives the whole store.
#[test]
fn a_directory_an_unfinished_restore_left_is_refused_and_restored_afresh() {
    let f = fixture();
    let target = f.path("unfinished");
    {
        let s = DiskStorage::open(&target).unwrap();
        s.close().unwrap();
    }
    // The marker as docs/FORMAT.md gives it.
    fs::write(
        target.join("RESTORING"),
        b"raftwal: a snapshot restore into this directory has not finished\n",
    )
    .unwrap();
    let refused = |what: &str, r: Result<(), Error>| match r {
        Err(Error::InvalidArgument(reason)) => {
            assert!(reason.contains("RESTORING"), "{what}: {reason}")
        }
        other => panic!("{what}: {other:?}"),
    };
    refused("open", DiskStorage::open(&target).map(|_| ()));
    refused(
        "inspect",
        raftwal::inspect::Inspector::open(&target).map(|_| ()),
    );
    refused("repair", raftwal::repair::check(&target, None).map(|_| ()));
    restore_as_node_1_whole(&f.archive, &target);
}

/// Restores `archive` into `target` with raft id 1 and checks the whole store is there: the
/// archive's snapshot, the raft id, the commit at the snapshot, no marker left.
fn restore_as_node_1_whole(archive: &Path, target: &Path) {
    let opts = RestoreOptions {
        raft_id: Some(1),
        ..Default::default()
    };
    archive::restore(archive, target, &opts, &mut |_| {}).unwrap();
    assert!(!target.join("RESTORING").exists());
    let s = DiskStorage::open(target).unwrap();
    assert_eq!(
        (s.uint(MetaInfo::SnapshotIndex), s.uint(MetaInfo::RaftId)),
        (SNAP_AT, 1)
    );
    assert_eq!(s.initial_state().unwrap().hard_state.commit, SNAP_AT);
}

/// A restore killed half-way (SIGKILL, a power cut, an OOM kill), once the new store's
/// `wal.meta` exists: the directory is refused by open (never a store holding less than the
/// archive), and a restore run again into it gives the whole store. A kill once left an empty
/// store there (raft id 0, no snapshot) that a node would start from and that a second restore
/// refused as not empty (found by a review, 2026-12-07: 3 kills of 3).
#[test]
fn a_restore_killed_half_way_leaves_no_store_and_runs_again() {
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};
    let tmp = tempfile::tempdir().unwrap();
    let wal = tmp.path().join("wal");
    // 32 MiB of incompressible data: the install takes long enough to be caught in it.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut data = Vec::with_capacity(32 << 20);
    while data.len() < 32 << 20 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        data.extend_from_slice(&x.to_le_bytes());
    }
    build_store(&wal, &data);
    drop(data);
    let backup = tmp.path().join("big.tar.gz");
    archive::save_dir_snapshot(&wal, &backup, &mut |_| {}).unwrap();

    let target = tmp.path().join("restored");
    let mut child = Command::new(env!("CARGO_BIN_EXE_raftwal"))
        .args(["snapshot", "restore"])
        .arg(&backup)
        .arg(&target)
        .args(["--raft-id", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !target.join("wal.meta").exists() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "restore ended before it was caught"
        );
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "restore never started writing"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // Never less than the archive: refused, or (had it just finished) the whole store.
    match DiskStorage::open(&target) {
        Err(Error::InvalidArgument(reason)) => assert!(reason.contains("RESTORING"), "{reason}"),
        Err(e) => panic!("open after the kill: {e}"),
        Ok(s) => assert_eq!(
            (s.uint(MetaInfo::SnapshotIndex), s.uint(MetaInfo::RaftId)),
            (SNAP_AT, 1),
            "a killed restore left a store holding less than the archive"
        ),
    }
    // Refused: the restore run again. (Had it just finished, the store was checked above.)
    if target.join("RESTORING").exists() {
        restore_as_node_1_whole(&backup, &target);
    }
}

/// A gzip bomb is refused: verify once accepted any amount of zero bytes after the tar
/// end-of-archive marker ("zero blocks may pad the tar stream"), so a 1.2 MB file that inflates
/// to 1 GiB verified "ok" (and `status`, `restore` and a pull read all of it, every time; found
/// by a review, 2026-12-07). A tar writer pads to one record at most (GNU tar: 10,240 bytes);
/// verify allows 64 KiB. Here 64 MiB of zeros.
#[test]
fn a_gzip_bomb_of_zero_padding_is_refused() {
    let f = fixture();
    let (meta, state, sums_bytes) = good_members(&f);
    let tar = tar_bytes(&three(&meta, &state, &sums_bytes));
    let p = f.path("bomb.tar.gz");
    let mut e = GzEncoder::new(File::create(&p).unwrap(), Compression::best());
    e.write_all(&tar).unwrap();
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..64 {
        e.write_all(&zeros).unwrap();
    }
    e.finish().unwrap().sync_all().unwrap();
    let file_len = fs::metadata(&p).unwrap().len();
    let started = std::time::Instant::now();
    let verified = archive::verify_archive(&p, &mut |_| {});
    assert!(
        verified.is_err(),
        "a {file_len}-byte archive holding 64 MiB of zeros after the tar end-of-archive marker verified ok (in {:?})",
        started.elapsed()
    );
}

/// A store at `dir` (with `key`, if any) whose conf state has `n` voters with 6-byte ids, and a
/// snapshot taken at its last entry: whether the snapshot could be taken (its file's 4 KiB
/// header holds the conf state: in plaintext, or sealed, which is longer).
fn snapshot_with_voters(dir: &Path, n: u64, key: Option<[u8; 32]>) -> bool {
    let opts = Options {
        encryption_key: key,
        ..Default::default()
    };
    let s = DiskStorage::open_with(dir, opts).unwrap();
    let mut hs = HardState::default();
    (hs.term, hs.commit) = (1, 2);
    s.save(
        &hs,
        &[text_entry(1, 1), text_entry(2, 1)],
        &Snapshot::default(),
    )
    .unwrap();
    let mut cs = ConfState::default();
    cs.voters = (0..n).map(|i| (1 << 40) + i).collect();
    s.set_conf_state(&cs).unwrap();
    let taken = s.create_snapshot(2, None, b"state".to_vec()).is_ok();
    s.close().unwrap();
    taken
}

/// The most voters (6-byte ids) whose conf state a snapshot file's header holds, with `key`.
fn most_voters(tmp: &Path, key: Option<[u8; 32]>) -> u64 {
    let (mut fits, mut too_many) = (1u64, 2_000u64);
    while too_many - fits > 1 {
        let mid = (fits + too_many) / 2;
        let dir = tmp.join(format!("probe-{}-{mid}", key.is_some()));
        if snapshot_with_voters(&dir, mid, key) {
            fits = mid;
        } else {
            too_many = mid;
        }
    }
    fits
}

/// A conf state that fits a plaintext snapshot file's header but not a sealed one (sealed, it
/// is longer): a plaintext store snapshots it, and its archive verifies and restores into a
/// plaintext store; a restore that would encrypt the store refuses it before writing anything.
/// verify once refused such an archive, saved from a live store, measuring the sealed header
/// whatever the restore (a review's suspicion, 2026-12-07).
#[test]
fn an_archive_whose_conf_state_fits_only_a_plaintext_header_verifies_and_restores_plaintext() {
    let tmp = tempfile::tempdir().unwrap();
    let key = Some([7u8; 32]);
    let (plain, sealed) = (most_voters(tmp.path(), None), most_voters(tmp.path(), key));
    assert!(sealed < plain, "sealed {sealed}, plaintext {plain} voters");
    let wal = tmp.path().join("wal");
    assert!(snapshot_with_voters(&wal, plain, None));
    let out = tmp.path().join("backup.tar.gz");
    let meta = archive::save_dir_snapshot(&wal, &out, &mut |_| {}).unwrap();
    assert_eq!(meta.conf_state.voters.len() as u64, plain);
    archive::verify_archive(&out, &mut |_| {}).unwrap();
    let restored = tmp.path().join("restored");
    archive::restore(&out, &restored, &RestoreOptions::default(), &mut |_| {}).unwrap();
    let s = DiskStorage::open(&restored).unwrap();
    assert_eq!(s.snapshot(0, 0).unwrap().get_metadata().index, 2);
    assert_eq!(
        s.initial_state().unwrap().conf_state.voters.len() as u64,
        plain
    );
    s.close().unwrap();
    let encrypted = tmp.path().join("encrypted");
    let store = Options {
        encryption_key: key,
        ..Default::default()
    };
    let err = archive::restore_with_store_options(
        &out,
        &encrypted,
        &RestoreOptions::default(),
        &store,
        &mut |_| {},
    )
    .unwrap_err();
    assert!(err.to_string().contains("conf state"), "{err}");
    assert!(
        !encrypted.exists() || fs::read_dir(&encrypted).unwrap().next().is_none(),
        "a refused restore left files"
    );
}
