//! End-to-end tests of the `raftwal` binary: each test runs the built binary on real directories
//! written with the library, and checks its stdout, stderr and exit code, and what it left on disk.
//!
//! The rules (docs/DESIGN.md §3): read commands (`inspect`, `verify`, `dump`,
//! `snapshot status|verify`) never create or change anything and a missing directory is an
//! error; `verify` names the first damage by file and offset; `snapshot restore` refuses a
//! non-empty target and a damaged archive and writes nothing then; bad input is one line on
//! stderr and a non-zero exit code, never a panic. Exit codes: 0 ok, 1 damage, 2 anything else.

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::Read;
use std::net::TcpListener;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::thread;
use std::time::SystemTime;

use raft::prelude::*;
use raft::{GetEntriesContext, Storage};
use raftwal::endpoint::{serve_archive, PULL_MAGIC};
use raftwal::{DiskStorage, Engine, MetaInfo, Options};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tempfile::TempDir;

#[path = "common/entries.rs"]
mod entries;
#[path = "common/fixture.rs"]
mod fixture;
#[path = "common/layout.rs"]
mod layout;
#[path = "common/roots.rs"]
mod roots;

use entries::{command_entry, term_of};
use layout::{
    slot_of, slot_payload_offset, META_FILE, META_RECORD_AT, PAYLOADS_AT, SLOTS_PER_FILE, SLOT_LEN,
    SNAP_DATA_AT,
};

// ---------------------------------------------------------------------------------------------
// the directory under test (written once, shared by every test that only reads it)
// ---------------------------------------------------------------------------------------------

/// Entries 1..=LAST (`command_entry(i, term_of(i))`: every 1000th entry, at ...003, is a conf
/// change, every 1000th, at ...007, has binary data and a context; the others are text
/// commands): three files' worth (30,000 per file), the first removed by the snapshot.
const LAST: u64 = 65_000;
const SNAP_INDEX: u64 = 40_000;

fn snapshot_data() -> Vec<u8> {
    (0..300_000u32)
        .map(|k| (k.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect()
}

fn write_dir(dir: &Path, last: u64, snapshot_at: Option<u64>) {
    let store = DiskStorage::open_with(
        dir,
        Options {
            sync_writes: false,
            ..Default::default()
        },
    )
    .unwrap();
    store.set_uint(MetaInfo::RaftId, 1);
    let mut cs = ConfState::default();
    cs.voters = vec![1, 2, 3];
    store.set_conf_state(&cs).unwrap();
    let mut lo = 1;
    while lo <= last {
        let hi = (lo + 5_000).min(last + 1);
        let entries: Vec<Entry> = (lo..hi).map(|i| command_entry(i, term_of(i))).collect();
        let mut hs = HardState::default();
        hs.term = term_of(hi - 1);
        hs.vote = 1;
        hs.commit = hi - 1;
        store.save(&hs, &entries, &Snapshot::default()).unwrap();
        lo = hi;
    }
    if let Some(at) = snapshot_at {
        store.create_snapshot(at, None, snapshot_data()).unwrap();
    }
    store.close().unwrap();
}

/// The shared directory: 65,000 entries, a snapshot at 40,000 with 300,000 bytes of data.
fn wal() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        fixture::shared("cli-wal", |dir| {
            write_dir(&dir.join("wal"), LAST, Some(SNAP_INDEX))
        })
        .join("wal")
    })
}

/// A copy of the shared directory, to damage.
fn wal_copy(tmp: &TempDir) -> PathBuf {
    let to = tmp.path().join("copy");
    roots::copy_tree(wal(), &to);
    to
}

// ---------------------------------------------------------------------------------------------
// running the binary
// ---------------------------------------------------------------------------------------------

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn raftwal<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_raftwal"))
        .args(args)
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap();
    let run = Run {
        code: out.status.code().expect("raftwal was killed by a signal"),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    };
    assert!(
        !run.stderr.contains("panicked") && !run.stderr.contains("backtrace"),
        "raftwal panicked: {}",
        run.stderr
    );
    run
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Succeeds, with nothing on stderr.
fn ok<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> String {
    let run = raftwal(args);
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    assert_eq!(run.stderr, "");
    run.stdout
}

/// Fails with `code`: one line on stderr, `raftwal: ...`, nothing on stdout (with `--json`,
/// one object saying so: tests/cli_scripts.rs checks it whole). Returns the line.
fn fails<S: AsRef<std::ffi::OsStr>>(args: &[S], code: i32) -> String {
    let run = raftwal(args);
    assert_eq!(
        run.code, code,
        "stdout: {}\nstderr: {}",
        run.stdout, run.stderr
    );
    if args.iter().any(|a| a.as_ref() == "--json") {
        let v: Value = serde_json::from_str(&run.stdout).unwrap();
        assert_eq!(v["ok"], false, "{v}");
    } else {
        assert_eq!(run.stdout, "");
    }
    assert_eq!(run.stderr.lines().count(), 1, "stderr: {}", run.stderr);
    assert!(
        run.stderr.starts_with("raftwal: "),
        "stderr: {}",
        run.stderr
    );
    run.stderr
}

/// Every file and directory under `root`: size, mtime, CRC32C of the bytes.
fn tree_state(root: &Path) -> BTreeMap<PathBuf, (u64, SystemTime, u32)> {
    let mut out = BTreeMap::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(dir) = todo.pop() {
        let meta = fs::metadata(&dir).unwrap();
        out.insert(dir.clone(), (0, meta.modified().unwrap(), 0));
        for ent in fs::read_dir(&dir).unwrap() {
            let path = ent.unwrap().path();
            let meta = fs::metadata(&path).unwrap();
            if meta.is_dir() {
                todo.push(path);
            } else {
                let crc = crc32c::crc32c(&fs::read(&path).unwrap());
                out.insert(path, (meta.len(), meta.modified().unwrap(), crc));
            }
        }
    }
    out
}

fn inspect_json(dir: &Path) -> Value {
    serde_json::from_str(&ok(&["inspect", p(dir), "--json"])).unwrap()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Flips one bit of the byte at `offset`.
fn flip(path: &Path, offset: u64) {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, offset).unwrap();
    b[0] ^= 0x20;
    f.write_all_at(&b, offset).unwrap();
}

/// Where the payload of `index` starts in the log file whose slot 0 holds `base`.
fn payload_offset(file: &Path, base: u64, index: u64) -> u64 {
    let f = fs::File::open(file).unwrap();
    let mut slot = [0u8; SLOT_LEN as usize];
    f.read_exact_at(&mut slot, slot_of(base, index)).unwrap();
    slot_payload_offset(&slot)
}

// ---------------------------------------------------------------------------------------------
// inspect
// ---------------------------------------------------------------------------------------------

#[test]
fn inspect_reports_meta_snapshot_and_files() {
    let text = ok(&["inspect", p(wal())]);
    for expected in [
        "raft id         1",
        "hard state      term 7 vote 1 commit 65000",
        "conf state      voters 1,2,3 learners -",
        "snapshot        index 40000 term 5",
        "300000 bytes",
        "first index 40001, last index 65000 (25000 entries)",
        "index 30001..=60000",
        "index 60001..=65000",
        "tail damage     none",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }

    let j = inspect_json(wal());
    assert_eq!(j["raft_id"], 1);
    assert_eq!(j["format_version"], 1);
    assert_eq!(j["hard_state"]["commit"], LAST);
    assert_eq!(j["conf_state"]["voters"], serde_json::json!([1, 2, 3]));
    assert_eq!(j["snapshot"]["index"], SNAP_INDEX);
    assert_eq!(j["snapshot"]["term"], term_of(SNAP_INDEX));
    assert_eq!(j["snapshot"]["data_len"], 300_000);
    assert_eq!(j["first_index"], SNAP_INDEX + 1);
    assert_eq!(j["last_index"], LAST);
    assert_eq!(j["tail_damage"], Value::Null);
    let files = j["files"].as_array().unwrap();
    assert_eq!(files.len(), 2, "the snapshot removed the first file");
    assert_eq!(files[0]["base_index"], 30_001);
    assert_eq!(files[0]["entries"], SLOTS_PER_FILE);
    assert_eq!(files[1]["last_index"], LAST);
    assert!(files[1]["size_bytes"].as_u64().unwrap() > PAYLOADS_AT);
}

/// A copy of the shared directory whose stored commit index is `commit` (below the log's end).
fn wal_copy_with_commit(tmp: &TempDir, commit: u64) -> PathBuf {
    let dir = wal_copy(tmp);
    let store = DiskStorage::open(&dir).unwrap();
    let mut hs = store.initial_state().unwrap().hard_state;
    hs.commit = commit;
    store.save(&hs, &[], &Snapshot::default()).unwrap();
    store.close().unwrap();
    dir
}

/// Damage above the commit index is a tail: inspect reports it (exit 0: open would cut it),
/// verify fails on it naming the file, and says so once.
#[test]
fn inspect_reports_a_damaged_tail_and_verify_fails_on_it() {
    let tmp = TempDir::new().unwrap();
    let dir = wal_copy_with_commit(&tmp, 60_000);
    let tail = dir.join(inspect_json(&dir)["files"][1]["name"].as_str().unwrap());
    flip(&tail, payload_offset(&tail, 60_001, 64_000));

    let j = inspect_json(&dir);
    assert!(j["tail_damage"].as_str().unwrap().contains("64000"), "{j}");
    assert_eq!(j["last_index"], 63_999);
    assert_eq!(j["open_error"], Value::Null);
    let text = ok(&["inspect", p(&dir)]);
    assert!(!text.contains("tail damage     none"), "{text}");
    assert!(text.contains("open            ok"), "{text}");
    let err = fails(&["verify", p(&dir)], 1);
    assert!(
        err.contains(tail.file_name().unwrap().to_str().unwrap()),
        "{err}"
    );
    // One message, not the damage wrapped in another "corrupt ... at offset 0".
    assert_eq!(err.matches("corrupt ").count(), 1, "{err}");
    assert!(!err.contains("at offset 0:"), "{err}");
}

/// Damage at a committed index (the shared directory commits everything): open would refuse
/// it, so inspect prints its report, says that open will fail and why, and exits 1; verify
/// fails naming the damaged file, offset and index.
#[test]
fn inspect_exits_1_when_open_will_fail_on_committed_damage() {
    let tmp = TempDir::new().unwrap();
    let dir = wal_copy(&tmp);
    let tail = dir.join(inspect_json(&dir)["files"][1]["name"].as_str().unwrap());
    let tail_name = tail.file_name().unwrap().to_str().unwrap().to_string();
    flip(&tail, payload_offset(&tail, 60_001, 64_000));

    let run = raftwal(&["inspect", p(&dir)]);
    assert_eq!(
        run.code, 1,
        "stdout: {}
stderr: {}",
        run.stdout, run.stderr
    );
    assert!(
        run.stdout.contains("open            will fail"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("64000"), "{}", run.stdout);
    assert!(
        run.stderr.starts_with("raftwal: open will fail: "),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains(&tail_name), "{}", run.stderr);
    assert!(run.stderr.contains("commit index 65000"), "{}", run.stderr);
    assert!(!run.stderr.contains("wal.meta"), "{}", run.stderr);
    let run = raftwal(&["inspect", p(&dir), "--json"]);
    assert_eq!(run.code, 1);
    let j: Value = serde_json::from_str(&run.stdout).unwrap();
    assert!(
        j["open_error"].as_str().unwrap().contains("index 64000"),
        "{j}"
    );
    let err = fails(&["verify", p(&dir)], 1);
    assert!(err.contains(&tail_name), "{err}");
    assert!(err.contains("index 64000"), "{err}");
}

/// Open reads the snapshot file the meta page names to its last byte and refuses it damaged or
/// missing: inspect predicts that refusal (its report says open will fail, and why; exit 1) as
/// it does committed damage, and verify fails on it too.
#[test]
fn inspect_exits_1_when_open_will_fail_on_the_snapshot_file() {
    let tmp = TempDir::new().unwrap();
    for damage in ["data byte flipped", "file deleted"] {
        let dir = tmp.path().join(damage.replace(' ', "-"));
        roots::copy_tree(wal(), &dir);
        let snap = inspect_json(&dir)["snapshot"]["file"]
            .as_str()
            .unwrap()
            .to_string();
        let snap = dir.join("snap").join(Path::new(&snap).file_name().unwrap());
        let snap_name = snap.file_name().unwrap().to_str().unwrap().to_string();
        if damage == "file deleted" {
            fs::remove_file(&snap).unwrap();
        } else {
            flip(&snap, SNAP_DATA_AT + 150_000);
        }
        let opened = tmp.path().join("opened");
        let _ = fs::remove_dir_all(&opened);
        roots::copy_tree(&dir, &opened);
        let refused = DiskStorage::open(&opened).map(drop).unwrap_err();
        // What open says, of `dir`.
        let refused = refused.to_string().replace(p(&opened), p(&dir));

        let run = raftwal(&["inspect", p(&dir)]);
        assert_eq!(
            run.code, 1,
            "{damage}: open refuses ({refused}), yet inspect exits {}\nstdout: {}\nstderr: {}",
            run.code, run.stdout, run.stderr
        );
        assert!(
            run.stdout.contains("open            will fail"),
            "{damage}: {}",
            run.stdout
        );
        assert_eq!(
            run.stderr.trim_end(),
            format!("raftwal: open will fail: {refused}"),
            "{damage}"
        );
        assert!(run.stderr.contains(&snap_name), "{damage}: {}", run.stderr);
        let run = raftwal(&["inspect", p(&dir), "--json"]);
        assert_eq!(run.code, 1, "{damage}");
        let j: Value = serde_json::from_str(&run.stdout).unwrap();
        assert_eq!(j["open_error"], refused, "{damage}: {j}");
        let err = fails(&["verify", p(&dir)], 1);
        assert!(err.contains(&snap_name), "{damage}: {err}");
    }
}

/// `raftwal repair`: without `--accept-data-loss` it refuses (exit 1), says what it would drop
/// and changes nothing; with it, the log is cut before the damage, the commit index lowered to
/// match, and the directory opens in both recovery modes with every entry before the damage.
/// Refused while a node holds the directory.
#[test]
fn repair_cuts_committed_damage_only_with_accept_data_loss() {
    let tmp = TempDir::new().unwrap();
    let dir = wal_copy(&tmp);
    let tail = dir.join(inspect_json(&dir)["files"][1]["name"].as_str().unwrap());
    flip(&tail, payload_offset(&tail, 60_001, 64_000));
    assert!(
        DiskStorage::open(&dir).is_err(),
        "open refuses committed damage"
    );

    let before = tree_state(&dir);
    let err = fails(&["repair", p(&dir)], 1);
    assert!(err.contains("--accept-data-loss"), "{err}");
    assert!(err.contains("after index 63999"), "{err}");
    assert!(
        err.contains("lower the commit index from 65000 to 63999"),
        "{err}"
    );
    assert_eq!(
        tree_state(&dir),
        before,
        "repair without the flag changed the directory"
    );

    let other = tmp.path().join("held");
    roots::copy_tree(&dir, &other);
    let lock = fs::File::create(other.join("LOCK")).unwrap();
    fs2::FileExt::lock_exclusive(&lock).unwrap();
    let err = fails(&["repair", p(&other), "--accept-data-loss"], 2);
    assert!(err.contains("locked"), "{err}");
    drop(lock);

    let text = ok(&["repair", p(&dir), "--accept-data-loss"]);
    assert!(text.contains("repaired"), "{text}");
    assert!(
        text.contains("commit index lowered from 65000 to 63999"),
        "{text}"
    );
    for mode in [
        raftwal::RecoveryMode::TolerateTailCorruption,
        raftwal::RecoveryMode::AbsoluteConsistency,
    ] {
        let store = DiskStorage::open_with(
            &dir,
            Options {
                recovery_mode: mode,
                ..Default::default()
            },
        )
        .unwrap_or_else(|e| panic!("{mode:?}: {e}"));
        assert_eq!(store.last_index().unwrap(), 63_999, "{mode:?}");
        assert_eq!(store.initial_state().unwrap().hard_state.commit, 63_999);
        let got = store
            .entries(63_000, 64_000, None, GetEntriesContext::empty(false))
            .unwrap();
        let want: Vec<Entry> = (63_000..64_000)
            .map(|i| command_entry(i, term_of(i)))
            .collect();
        assert_eq!(got, want, "{mode:?}");
        store.close().unwrap();
    }
    ok(&["verify", p(&dir)]);
    let again = ok(&["repair", p(&dir), "--accept-data-loss"]);
    assert!(again.contains("nothing to repair"), "{again}");
}

/// A damaged header of a file in the middle of the log: verify names it and open refuses it
/// (committed entries lie in and after it); `repair --accept-data-loss` cuts the log after the
/// file before it and removes it and the files after it.
#[test]
fn repair_cuts_before_a_middle_file_with_a_damaged_header() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path().join("wal");
    write_dir(&dir, LAST, None);
    let middle = dir.join(layout::log_name(2));
    flip(&middle, layout::FILE_HEADER_AT + 20);
    let err = fails(&["verify", p(&dir)], 1);
    assert!(err.contains("00002.wal"), "{err}");
    assert!(DiskStorage::open(&dir).is_err(), "open refuses the damage");

    let err = fails(&["repair", p(&dir)], 1);
    assert!(err.contains("cut the log after index 30000"), "{err}");
    assert!(err.contains("00002.wal"), "{err}");
    assert!(err.contains("remove 2 file(s)"), "{err}");
    let text = ok(&["repair", p(&dir), "--accept-data-loss"]);
    assert!(
        text.contains("commit index lowered from 65000 to 30000"),
        "{text}"
    );
    assert!(!middle.exists() && !dir.join(layout::log_name(3)).exists());
    let store = DiskStorage::open_with(
        &dir,
        Options {
            recovery_mode: raftwal::RecoveryMode::AbsoluteConsistency,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(store.last_index().unwrap(), 30_000);
    assert_eq!(store.initial_state().unwrap().hard_state.commit, 30_000);
    let got = store
        .entries(29_990, 30_001, None, GetEntriesContext::empty(false))
        .unwrap();
    let want: Vec<Entry> = (29_990..30_001)
        .map(|i| command_entry(i, term_of(i)))
        .collect();
    assert_eq!(got, want);
    store.close().unwrap();
    ok(&["verify", p(&dir)]);
}

/// An empty last file (what a crash during a rotation leaves) is an ordinary tail, not damage:
/// verify passes and repair, with or without the flag, has nothing to do (open removes it).
#[test]
fn an_empty_last_file_is_nothing_to_repair() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path().join("wal");
    write_dir(&dir, SLOTS_PER_FILE, None);
    fs::write(dir.join(layout::log_name(2)), b"").unwrap();
    ok(&["verify", p(&dir)]);
    let before = tree_state(&dir);
    for args in [
        vec!["repair", p(&dir)],
        vec!["repair", p(&dir), "--accept-data-loss"],
    ] {
        let text = ok(&args);
        assert!(text.contains("nothing to repair"), "{text}");
        assert!(text.contains("whole up to index 30000"), "{text}");
    }
    assert_eq!(tree_state(&dir), before, "repair changed the directory");
    let json: Value = serde_json::from_str(&ok(&["repair", p(&dir), "--json"])).unwrap();
    assert_eq!(json["needed"], false, "{json}");
    assert_eq!(json["removed_files"], serde_json::json!([]), "{json}");
}

/// After the snapshot removed `00001.wal`, the first live file deleted: every command names it.
#[test]
fn a_missing_first_live_file_is_named_by_every_command() {
    let tmp = TempDir::new().unwrap();
    let dir = wal_copy(&tmp);
    let first = inspect_json(&dir)["files"][0]["name"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(first, "00002.wal");
    fs::remove_file(dir.join(&first)).unwrap();
    for cmd in ["inspect", "verify", "dump"] {
        let err = fails(&[cmd, p(&dir)], 1);
        assert!(
            err.contains("missing") && err.contains(&first),
            "{cmd}: {err}"
        );
    }
}

/// The newest copy of the meta state damaged: open falls back to the older copy, so `verify`
/// must say so (exit 1, naming wal.meta and the copy), and `inspect` shows which copy is used.
#[test]
fn verify_reports_a_damaged_meta_copy_and_inspect_shows_the_copy_in_use() {
    let tmp = TempDir::new().unwrap();
    // One more meta update, so that both copies hold the snapshot.
    let dir = wal_copy_with_commit(&tmp, 64_000);
    let j = inspect_json(&dir);
    assert_eq!(j["meta_copies"]["other"], "older", "{j}");
    let in_use = j["meta_copies"]["in_use"].as_u64().unwrap();
    let text = ok(&["inspect", p(&dir)]);
    assert!(
        text.contains(&format!("meta copies     copy {in_use} in use")),
        "{text}"
    );
    let meta = dir.join(META_FILE);
    let region = fs::metadata(&meta).unwrap().len() / 2;
    flip(&meta, (in_use - 1) * region + META_RECORD_AT + 8);

    let err = fails(&["verify", p(&dir)], 1);
    assert!(err.contains("wal.meta"), "{err}");
    assert!(err.contains(&format!("copy {in_use}")), "{err}");
    let j = inspect_json(&dir);
    assert_eq!(j["meta_copies"]["in_use"], 3 - in_use, "{j}");
    assert_eq!(j["meta_copies"]["other"], "damaged", "{j}");
    let text = ok(&["inspect", p(&dir)]);
    assert!(text.contains("DAMAGED"), "{text}");

    // Where the older copy does not fit the files (it predates the snapshot that removed
    // 00001.wal), the error says that open fell back to it.
    let tmp = TempDir::new().unwrap();
    let dir = wal_copy(&tmp);
    let in_use = inspect_json(&dir)["meta_copies"]["in_use"]
        .as_u64()
        .unwrap();
    flip(&meta_of(&dir), (in_use - 1) * region + META_RECORD_AT + 8);
    let err = fails(&["inspect", p(&dir)], 1);
    assert!(err.contains("00001.wal"), "{err}");
    assert!(
        err.contains(&format!("wal.meta's copy {in_use} is damaged")),
        "{err}"
    );
    let e = DiskStorage::open(&dir).expect_err("open fails");
    assert!(e.to_string().contains("wal.meta's copy"), "{e}");
}

fn meta_of(dir: &Path) -> PathBuf {
    dir.join(META_FILE)
}

// ---------------------------------------------------------------------------------------------
// verify
// ---------------------------------------------------------------------------------------------

#[test]
fn verify_checks_every_file_and_the_snapshot() {
    let text = ok(&["verify", p(wal())]);
    assert!(text.trim_end().ends_with(": ok"), "{text}");
    assert!(text.contains("checked 2 files, 35000 entries"), "{text}");
    assert!(text.contains("snapshot 300000 bytes"), "{text}");

    let j: Value = serde_json::from_str(&ok(&["verify", p(wal()), "--json"])).unwrap();
    assert_eq!(j["ok"], true);
    assert_eq!(j["files_checked"], 2);
    assert_eq!(j["entries_checked"], 35_000);
    assert_eq!(j["snapshot_bytes_checked"], 300_000);
}

#[test]
fn verify_names_the_damaged_file_and_offset_with_exit_code_1() {
    let tmp = TempDir::new().unwrap();
    let dir = wal_copy(&tmp);
    let sealed = inspect_json(&dir)["files"][0]["name"]
        .as_str()
        .unwrap()
        .to_string();
    let path = dir.join(&sealed);
    // A payload byte of a sealed file: open does not read it, verify must.
    flip(&path, payload_offset(&path, 30_001, 45_000) + 3);

    let err = fails(&["verify", p(&dir)], 1);
    assert!(err.contains(&sealed), "{err}");
    assert!(err.contains("at offset "), "{err}");
    assert!(err.contains("45000"), "{err}");
    fails(&["verify", p(&dir), "--json"], 1);
    // Reading the damaged entry is refused too, after the entries before it.
    let run = raftwal(&["dump", p(&dir), "--from", "44990", "--to", "45010"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert_eq!(run.stdout.lines().count(), 10, "{}", run.stdout);
    ok(&["dump", p(&dir), "--from", "44990", "--to", "44999"]);
}

/// With the key, `verify` authenticates every sealed payload, as a read does: a ciphertext byte
/// flipped with its slot CRC fixed up is damage (exit code 1) naming the file, slot and index,
/// and `dump` refuses the entry rather than printing it. Review 33 found `verify` checking the
/// CRC only: it passed (exit 0) a store whose entry 2 the node could not read.
#[test]
fn verify_with_the_key_names_an_entry_that_fails_authentication() {
    let tmp = TempDir::new().unwrap();
    let key = [0x42u8; 32];
    let key_file = tmp.path().join("key");
    fs::write(&key_file, hex(&key)).unwrap();
    let k = p(&key_file);
    let dir = tmp.path().join("wal");
    let opts = || Options {
        encryption_key: Some(key),
        ..Default::default()
    };
    let store = DiskStorage::open_with(&dir, opts()).unwrap();
    let es: Vec<Entry> = (1..=3).map(|i| command_entry(i, 1)).collect();
    let mut hs = HardState::default();
    hs.term = 1;
    hs.commit = 3;
    store.save(&hs, &es, &Snapshot::default()).unwrap();
    store.close().unwrap();
    assert!(ok(&["verify", p(&dir), "--key-file", k]).contains("3 entries"));
    // Without the key verify is refused (the meta page is sealed), as docs/RELIABILITY.md says.
    let err = fails(&["verify", p(&dir)], 2);
    assert!(err.contains("encrypted"), "{err}");

    let wal = dir.join(layout::log_name(1));
    let mut bytes = fs::read(&wal).unwrap();
    let (at, _) = layout::sealed_payload(&bytes, 1);
    bytes[(at + layout::SEALED_CIPHERTEXT_AT) as usize] ^= 0x01;
    layout::fix_sealed_slot_crc(&mut bytes, 1);
    fs::write(&wal, &bytes).unwrap();
    // The node cannot read entry 2.
    let store = DiskStorage::open_with(&dir, opts()).unwrap();
    assert!(store
        .entries(2, 3, None, GetEntriesContext::empty(false))
        .is_err());
    store.close().unwrap();

    let err = fails(&["verify", p(&dir), "--key-file", k], 1);
    assert!(
        err.contains(&format!("{} at offset {at}", wal.display()))
            && err.contains("slot 1 (index 2)")
            && err.contains("fails authentication"),
        "{err}"
    );
    fails(&["verify", p(&dir), "--key-file", k, "--json"], 1);
    let run = raftwal(&["dump", p(&dir), "--key-file", k]);
    assert_eq!(
        run.code, 1,
        "stdout: {}\nstderr: {}",
        run.stdout, run.stderr
    );
    assert!(
        run.stderr.contains("index 2") && run.stderr.contains("fails authentication"),
        "{}",
        run.stderr
    );
    let printed: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(printed.len(), 1, "{}", run.stdout);
    assert!(printed[0].starts_with("index=1 "), "{}", run.stdout);
    assert!(ok(&["dump", p(&dir), "--key-file", k, "--from", "3"]).starts_with("index=3 "));
}

#[test]
fn verify_reports_a_damaged_snapshot_file() {
    let tmp = TempDir::new().unwrap();
    let dir = wal_copy(&tmp);
    let snap = inspect_json(&dir)["snapshot"]["file"]
        .as_str()
        .unwrap()
        .to_string();
    let snap = dir.join("snap").join(Path::new(&snap).file_name().unwrap());
    flip(&snap, SNAP_DATA_AT + 150_000);
    let err = fails(&["verify", p(&dir)], 1);
    assert!(err.contains(".snap"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// dump
// ---------------------------------------------------------------------------------------------

#[test]
fn dump_prints_one_text_line_per_entry() {
    let text = ok(&["dump", p(wal()), "--from", "40001", "--to", "40010"]);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 10);
    assert_eq!(
        lines[0],
        "index=40001 term=5 type=EntryNormal data_len=28 data=\"put user:40001 visits=280007\" context_len=0"
    );
    assert!(
        lines[2].starts_with("index=40003 term=5 type=EntryConfChange "),
        "{}",
        lines[2]
    );
    assert!(
        lines[2].ends_with("conf_change=\"AddLearnerNode 4\""),
        "{}",
        lines[2]
    );
    assert_eq!(
        lines[6],
        "index=40007 term=5 type=EntryNormal data_len=5 data=0x000102feff context_len=3 context=\"ctx\""
    );
    assert!(lines[9].starts_with("index=40010 "));
}

#[test]
fn dump_json_lines_carry_data_and_context_in_hex_across_files() {
    // 59,995..=60,005 spans the sealed file and the tail file.
    let text = ok(&[
        "dump",
        p(wal()),
        "--from",
        "59995",
        "--to",
        "60005",
        "--json",
    ]);
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 11);
    for (j, index) in lines.iter().zip(59_995..) {
        let e = command_entry(index, term_of(index));
        assert_eq!(j["index"], index);
        assert_eq!(j["term"], e.term);
        assert_eq!(j["entry_type"], format!("{:?}", e.get_entry_type()));
        assert_eq!(j["data_hex"], hex(&e.data));
        assert_eq!(j["context_hex"], hex(&e.context));
    }
}

#[test]
fn dump_defaults_to_the_whole_log() {
    let text = ok(&["dump", p(wal())]);
    assert_eq!(text.lines().count() as u64, LAST - SNAP_INDEX);
    assert!(text.starts_with("index=40001 "));
    assert!(text.lines().last().unwrap().starts_with("index=65000 "));
}

#[test]
fn dump_outside_the_log_is_an_error_with_exit_code_2() {
    let dir = p(wal());
    for (from, to) in [
        ("10", "20"),
        ("40000", "40001"),
        ("64999", "65001"),
        ("50", "40"),
    ] {
        let err = fails(&["dump", dir, "--from", from, "--to", to], 2);
        assert!(!err.contains("panicked"), "{err}");
    }
    fails(&["dump", dir, "--to", "70000"], 2);
    fails(&["dump", dir, "--from", "1", "--json"], 2);
}

// ---------------------------------------------------------------------------------------------
// snapshot archives
// ---------------------------------------------------------------------------------------------

#[test]
fn snapshot_save_status_verify_restore_round_trip() {
    let tmp = TempDir::new().unwrap();
    let archive = tmp.path().join("backup.tar.gz");
    let before = tree_state(wal());
    let saved = ok(&["snapshot", "save", p(wal()), p(&archive)]);
    assert!(saved.contains("index 40000 term 5"), "{saved}");
    assert_eq!(tree_state(wal()), before, "save changed the WAL directory");

    let data = snapshot_data();
    let status = ok(&["snapshot", "status", p(&archive)]);
    assert!(status.contains("index           40000"), "{status}");
    assert!(status.contains(&sha256_hex(&data)), "{status}");
    let j: Value =
        serde_json::from_str(&ok(&["snapshot", "status", p(&archive), "--json"])).unwrap();
    let bytes = fs::read(&archive).unwrap();
    assert_eq!(j["index"], SNAP_INDEX);
    assert_eq!(j["term"], term_of(SNAP_INDEX));
    assert_eq!(j["conf_state"]["voters"], serde_json::json!([1, 2, 3]));
    assert_eq!(j["size"], data.len());
    assert_eq!(j["state_sha256"], sha256_hex(&data));
    assert_eq!(j["archive_bytes"], bytes.len());
    assert_eq!(j["archive_sha256"], sha256_hex(&bytes));

    let verified = ok(&["snapshot", "verify", p(&archive)]);
    assert!(verified.contains("ok"), "{verified}");
    let j: Value =
        serde_json::from_str(&ok(&["snapshot", "verify", p(&archive), "--json"])).unwrap();
    assert_eq!(j["ok"], true);

    // With new membership and raft id.
    let restored = tmp.path().join("restored");
    ok(&[
        "snapshot",
        "restore",
        p(&archive),
        p(&restored),
        "--raft-id",
        "5",
        "--voters",
        "4,5,6",
    ]);
    {
        let store = DiskStorage::open(&restored).unwrap();
        let snap = store.snapshot(0, 0).unwrap();
        assert_eq!(snap.get_metadata().index, SNAP_INDEX);
        assert_eq!(snap.get_metadata().term, term_of(SNAP_INDEX));
        assert_eq!(snap.get_metadata().get_conf_state().voters, vec![4, 5, 6]);
        assert_eq!(&snap.data[..], &data[..]);
        assert_eq!(store.uint(MetaInfo::RaftId), 5);
        assert_eq!(store.first_index().unwrap(), SNAP_INDEX + 1);
        assert_eq!(store.last_index().unwrap(), SNAP_INDEX);
        let state = store.initial_state().unwrap();
        assert_eq!(state.conf_state.voters, vec![4, 5, 6]);
    }
    ok(&["verify", p(&restored)]);

    // Into an existing empty directory, membership as archived.
    let empty = tmp.path().join("empty");
    fs::create_dir(&empty).unwrap();
    ok(&["snapshot", "restore", p(&archive), p(&empty)]);
    let store = DiskStorage::open(&empty).unwrap();
    let snap = store.snapshot(0, 0).unwrap();
    assert_eq!(snap.get_metadata().get_conf_state().voters, vec![1, 2, 3]);
    assert_eq!(&snap.data[..], &data[..]);
}

#[test]
fn snapshot_save_never_overwrites() {
    let tmp = TempDir::new().unwrap();
    let archive = tmp.path().join("backup.tar.gz");
    fs::write(&archive, b"precious").unwrap();
    let run = raftwal(&["snapshot", "save", p(wal()), p(&archive)]);
    assert_ne!(run.code, 0);
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    assert_eq!(fs::read(&archive).unwrap(), b"precious");
}

#[test]
fn snapshot_save_of_a_directory_without_snapshot_is_an_error() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path().join("wal");
    write_dir(&dir, 100, None);
    let archive = tmp.path().join("backup.tar.gz");
    fails(&["snapshot", "save", p(&dir), p(&archive)], 2);
    assert!(!archive.exists());
}

#[test]
fn snapshot_restore_refuses_a_non_empty_target() {
    let tmp = TempDir::new().unwrap();
    let archive = tmp.path().join("backup.tar.gz");
    ok(&["snapshot", "save", p(wal()), p(&archive)]);
    let target = tmp.path().join("target");
    fs::create_dir(&target).unwrap();
    fs::write(target.join("keep.txt"), b"keep").unwrap();
    let before = tree_state(&target);
    let run = raftwal(&["snapshot", "restore", p(&archive), p(&target)]);
    assert_ne!(run.code, 0);
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    assert_eq!(tree_state(&target), before, "restore touched the target");

    // A live WAL directory is non-empty too.
    let before = tree_state(wal());
    let run = raftwal(&["snapshot", "restore", p(&archive), p(wal())]);
    assert_ne!(run.code, 0);
    assert_eq!(tree_state(wal()), before);
}

/// `NEW_DIR` is judged as the directory it names, not as it is spelled: `T/new/..` names `T`
/// once `new` exists, and a symbolic link names what it points to. Restore refuses both when
/// that directory is not empty, and never creates, writes or removes anything in it (the
/// clean-up of a failed restore included: here `T` is a store another process holds open).
#[test]
fn snapshot_restore_through_dotdot_or_a_symlink_never_touches_the_directory_it_names() {
    let tmp = TempDir::new().unwrap();
    let archive = tmp.path().join("backup.tar.gz");
    ok(&["snapshot", "save", p(wal()), p(&archive)]);

    let busy = tmp.path().join("busy");
    fs::create_dir(&busy).unwrap();
    fs::write(busy.join("keep.txt"), b"keep").unwrap();
    let live = tmp.path().join("live");
    write_dir(&live, 10, None);
    let open = DiskStorage::open(&live).unwrap();
    let link = tmp.path().join("link");
    std::os::unix::fs::symlink(&busy, &link).unwrap();

    for (names, target) in [
        (&busy, busy.join("new").join("..")),
        (&live, live.join("new").join("..")),
        (&busy, link.clone()),
        (&busy, link.join("new").join("..")),
    ] {
        let before = tree_state(names);
        let line = fails(&["snapshot", "restore", p(&archive), p(&target)], 2);
        assert!(line.contains(p(&target)), "{target:?}: {line}");
        assert_eq!(
            tree_state(names),
            before,
            "restore into {target:?} touched {names:?}"
        );
    }
    drop(open);
    DiskStorage::open(&live).unwrap();
}

/// `ROOT/groups/<id>` of an engine root is the engine's to create (`Engine::create_group`): a
/// plain WAL directory there has no engine record, and the engine would no longer open. Restore
/// refuses it (exit code 2), however the path is spelled, and creates nothing.
#[test]
fn snapshot_restore_refuses_a_new_directory_among_an_engine_roots_groups() {
    let tmp = TempDir::new().unwrap();
    let archive = tmp.path().join("backup.tar.gz");
    ok(&["snapshot", "save", p(wal()), p(&archive)]);
    let root = tmp.path().join("root");
    let engine = Engine::open(&root).unwrap();
    drop(engine.create_group(1, 1).unwrap());
    engine.close().unwrap();

    let groups = root.join("groups");
    for target in [
        groups.join("7"),
        groups.join("..").join("groups").join("8"),
        groups.join("7").join("..").join("9"),
    ] {
        let before = tree_state(&root);
        let line = fails(&["snapshot", "restore", p(&archive), p(&target)], 2);
        assert!(line.contains(p(&target)), "{target:?}: {line}");
        assert_eq!(
            tree_state(&root),
            before,
            "restore into {target:?} changed the root"
        );
    }
    let engine = Engine::open(&root).unwrap();
    assert_eq!(engine.group_ids(), vec![1]);
    engine.close().unwrap();
}

#[test]
fn snapshot_verify_and_restore_refuse_a_damaged_archive() {
    let tmp = TempDir::new().unwrap();
    let archive = tmp.path().join("backup.tar.gz");
    ok(&["snapshot", "save", p(wal()), p(&archive)]);
    let len = fs::metadata(&archive).unwrap().len();

    let flipped = tmp.path().join("flipped.tar.gz");
    fs::copy(&archive, &flipped).unwrap();
    flip(&flipped, len / 2);
    fails(&["snapshot", "verify", p(&flipped)], 1);
    let target = tmp.path().join("from-flipped");
    let run = raftwal(&["snapshot", "restore", p(&flipped), p(&target)]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        !target.exists(),
        "restore wrote before verifying the archive"
    );

    let truncated = tmp.path().join("truncated.tar.gz");
    fs::write(&truncated, &fs::read(&archive).unwrap()[..len as usize / 2]).unwrap();
    fails(&["snapshot", "verify", p(&truncated)], 1);
    let target = tmp.path().join("from-truncated");
    let run = raftwal(&["snapshot", "restore", p(&truncated), p(&target)]);
    assert_ne!(run.code, 0);
    assert!(!target.exists());
}

#[test]
fn snapshot_save_with_endpoint_pulls_from_a_running_node() {
    let tmp = TempDir::new().unwrap();
    let node_dir = tmp.path().join("node");
    write_dir(&node_dir, 100, Some(80));
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    // The node holds its directory open (and locked) and answers three pulls (the third client
    // goes away half-way).
    let node = thread::spawn(move || {
        let store = DiskStorage::open(&node_dir).unwrap();
        for pull in 0..3 {
            let (mut conn, _) = listener.accept().unwrap();
            let mut magic = [0u8; 8];
            conn.read_exact(&mut magic).unwrap();
            assert_eq!(magic, PULL_MAGIC);
            let mut reader = store.snapshot_reader().unwrap();
            let served = serve_archive(&mut conn, &mut reader, &mut |_| {});
            if pull < 2 {
                served.unwrap();
            }
        }
    });

    let archive = tmp.path().join("pulled.tar.gz");
    let saved = ok(&["snapshot", "save", "--endpoint", &addr, p(&archive)]);
    assert!(saved.contains("saved snapshot index 80 term 1"), "{saved}");
    assert!(saved.contains("300000 bytes of state"), "{saved}");
    assert!(saved.contains(&addr), "{saved}");
    let verified = ok(&["snapshot", "verify", p(&archive)]);
    assert!(verified.contains("verify          ok"), "{verified}");
    assert!(
        verified.contains(&sha256_hex(&snapshot_data())),
        "{verified}"
    );

    let archive2 = tmp.path().join("pulled-2.tar.gz");
    let j: Value = serde_json::from_str(&ok(&[
        "snapshot",
        "save",
        "--endpoint",
        &addr,
        "--timeout",
        "5",
        "--deadline",
        "60",
        p(&archive2),
        "--json",
    ]))
    .unwrap();
    let bytes = fs::read(&archive2).unwrap();
    assert_eq!(j["endpoint"], addr.as_str());
    assert_eq!(j["archive"], p(&archive2));
    assert_eq!(j["index"], 80);
    assert_eq!(j["term"], 1);
    assert_eq!(j["conf_state"]["voters"], serde_json::json!([1, 2, 3]));
    assert_eq!(j["size"], 300_000);
    assert_eq!(j["state_sha256"], sha256_hex(&snapshot_data()));
    assert_eq!(j["archive_bytes"], bytes.len());
    assert_eq!(j["archive_sha256"], sha256_hex(&bytes));

    // An archive larger than --max-size is refused (exit 2: the operator's limit, not damage),
    // nothing kept.
    let archive3 = tmp.path().join("pulled-3.tar.gz");
    let err = fails(
        &[
            "snapshot",
            "save",
            "--endpoint",
            &addr,
            "--max-size",
            "4096",
            p(&archive3),
        ],
        2,
    );
    assert!(err.contains("larger than the 4096 bytes"), "{err}");
    node.join().unwrap();
    assert!(!archive3.exists());
    assert!(!tmp.path().join("pulled-3.tar.gz.tmp").exists());

    // Never over an existing file (refused before connecting: the node has stopped).
    let before = fs::read(&archive).unwrap();
    fails(&["snapshot", "save", "--endpoint", &addr, p(&archive)], 2);
    assert_eq!(fs::read(&archive).unwrap(), before);
}

#[test]
fn snapshot_save_with_endpoint_and_nothing_listening_names_the_address() {
    let addr = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().to_string()
    };
    let tmp = TempDir::new().unwrap();
    let archive = tmp.path().join("pulled.tar.gz");
    let err = fails(
        &[
            "snapshot",
            "save",
            "--endpoint",
            &addr,
            "--timeout",
            "2",
            p(&archive),
        ],
        2,
    );
    assert!(err.contains(&addr), "{err}");
    assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 0);
}

#[test]
fn snapshot_save_takes_a_directory_or_an_endpoint_not_both() {
    let tmp = TempDir::new().unwrap();
    let out = tmp.path().join("out.tar.gz");
    let (dir, out) = (p(wal()), p(&out));
    let err = fails(
        &["snapshot", "save", "--endpoint", "127.0.0.1:1", dir, out],
        2,
    );
    assert!(err.contains("--endpoint"), "{err}");
    fails(&["snapshot", "save", "--timeout", "5", dir, out], 2);
    fails(&["snapshot", "save", "--deadline", "5", dir, out], 2);
    fails(&["snapshot", "save", "--max-size", "5", dir, out], 2);
    fails(&["snapshot", "save", out], 2);
    fails(&["snapshot", "save", "--endpoint", "127.0.0.1:1"], 2);
    fails(
        &[
            "snapshot",
            "save",
            "--endpoint",
            "127.0.0.1:1",
            "--timeout",
            "0",
            out,
        ],
        2,
    );
    for zero in ["--deadline", "--max-size"] {
        fails(
            &[
                "snapshot",
                "save",
                "--endpoint",
                "127.0.0.1:1",
                zero,
                "0",
                out,
            ],
            2,
        );
    }
    assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 0);
    // The directory form is unchanged, and has --json too.
    let j: Value = serde_json::from_str(&ok(&["snapshot", "save", dir, out, "--json"])).unwrap();
    assert_eq!(j["index"], SNAP_INDEX);
    assert_eq!(j["dir"], dir);
    assert_eq!(j["archive"], out);
    assert_eq!(j.get("endpoint"), None);
}

// ---------------------------------------------------------------------------------------------
// read commands change nothing; missing input; bad arguments
// ---------------------------------------------------------------------------------------------

#[test]
fn read_commands_change_nothing() {
    let tmp = TempDir::new().unwrap();
    let archive = tmp.path().join("backup.tar.gz");
    ok(&["snapshot", "save", p(wal()), p(&archive)]);
    let dir = p(wal());
    let wal_before = tree_state(wal());
    let tmp_before = tree_state(tmp.path());
    ok(&["inspect", dir]);
    ok(&["inspect", dir, "--json"]);
    ok(&["verify", dir]);
    ok(&["dump", dir, "--from", "40001", "--to", "40100"]);
    ok(&["dump", dir, "--from", "64000", "--json"]);
    ok(&["snapshot", "status", p(&archive)]);
    ok(&["snapshot", "verify", p(&archive), "--json"]);
    assert_eq!(tree_state(wal()), wal_before);
    assert_eq!(tree_state(tmp.path()), tmp_before);
}

#[test]
fn a_missing_directory_or_archive_is_an_error_and_is_not_created() {
    let tmp = TempDir::new().unwrap();
    let missing = tmp.path().join("missing");
    let m = p(&missing);
    for args in [
        vec!["inspect", m],
        vec!["inspect", m, "--json"],
        vec!["verify", m],
        vec!["dump", m],
        vec!["dump", m, "--from", "1", "--to", "2"],
        vec!["snapshot", "status", m],
        vec!["snapshot", "verify", m],
        vec!["snapshot", "save", m, p(&tmp.path().join("out.tar.gz"))],
    ] {
        let err = fails(&args, 2);
        assert!(err.contains("missing"), "{args:?}: {err}");
        assert!(!missing.exists(), "{args:?} created {m}");
    }
    assert!(!tmp.path().join("out.tar.gz").exists());

    // A directory without wal.meta: an error, and wal.meta is not created.
    let empty = tmp.path().join("empty");
    fs::create_dir(&empty).unwrap();
    for cmd in ["inspect", "verify", "dump"] {
        let err = fails(&[cmd, p(&empty)], 2);
        assert!(err.contains("wal.meta"), "{cmd}: {err}");
        assert_eq!(
            fs::read_dir(&empty).unwrap().count(),
            0,
            "{cmd} created a file"
        );
    }
}

#[test]
fn bad_arguments_are_one_line_and_exit_code_2() {
    let dir = p(wal());
    let tmp = TempDir::new().unwrap();
    let (a, b) = (tmp.path().join("a.tar.gz"), tmp.path().join("b"));
    let (a, b) = (p(&a), p(&b));
    for args in [
        vec!["frobnicate"],
        vec!["inspect"],
        vec!["inspect", dir, "--yaml"],
        vec!["dump", dir, "--from", "abc"],
        vec!["dump", dir, "--from", "-1"],
        vec!["snapshot", "frobnicate"],
        vec!["snapshot", "restore", a, b, "--voters", "1,x"],
        vec!["snapshot", "restore", a, b, "--voters", "1,2,2"],
        vec!["snapshot", "restore", a, b, "--raft-id", "0"],
    ] {
        fails(&args, 2);
    }
    assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 0);
    // No command at all: the help, on stderr, exit code 2.
    let run = raftwal::<&str>(&[]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("Usage: raftwal"), "{}", run.stderr);
    // Help and version are not errors.
    assert!(ok(&["--help"]).contains("inspect"));
    assert!(ok(&["--version"]).starts_with("raftwal "));
}

/// Runs the binary with `RAFTWAL_KEY_FILE` set.
fn raftwal_with_key_env<S: AsRef<std::ffi::OsStr>>(args: &[S], key_file: &Path) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_raftwal"))
        .args(args)
        .env("RAFTWAL_KEY_FILE", key_file)
        .output()
        .unwrap();
    Run {
        code: out.status.code().expect("raftwal was killed by a signal"),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

/// An operator who gives a key to `snapshot restore` (`--key-file` or `RAFTWAL_KEY_FILE`) gets a
/// store encrypted under it: it opens with the key only, and no file in it holds the state's
/// bytes in plaintext.
#[test]
fn snapshot_restore_with_a_key_writes_an_encrypted_store() {
    let tmp = TempDir::new().unwrap();
    let key = [0x5au8; 32];
    let key_file = tmp.path().join("key");
    fs::write(&key_file, hex(&key)).unwrap();
    let archive = tmp.path().join("backup.tar.gz");
    ok(&["snapshot", "save", p(wal()), p(&archive)]);
    // A recognisable state: every 64-byte window of it is unique enough to search for.
    let data = snapshot_data();
    let restored_by_flag = tmp.path().join("by-flag");
    let restored_by_env = tmp.path().join("by-env");
    ok(&[
        "snapshot",
        "restore",
        p(&archive),
        p(&restored_by_flag),
        "--key-file",
        p(&key_file),
    ]);
    let run = raftwal_with_key_env(
        &["snapshot", "restore", p(&archive), p(&restored_by_env)],
        &key_file,
    );
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    for dir in [&restored_by_flag, &restored_by_env] {
        let plain = DiskStorage::open(dir);
        assert!(
            matches!(plain, Err(raftwal::Error::Encryption { .. })),
            "{}: opens without the key: {:?}",
            dir.display(),
            plain.as_ref().map(|_| ())
        );
        drop(plain);
        let store = DiskStorage::open_with(
            dir,
            Options {
                encryption_key: Some(key),
                ..Default::default()
            },
        )
        .unwrap();
        let snap = store.snapshot(0, 0).unwrap();
        assert_eq!(snap.get_metadata().index, SNAP_INDEX);
        assert_eq!(&snap.data[..], &data[..]);
        store.close().unwrap();
        let mut todo = vec![dir.to_path_buf()];
        while let Some(d) = todo.pop() {
            for ent in fs::read_dir(&d).unwrap() {
                let path = ent.unwrap().path();
                if path.is_dir() {
                    todo.push(path);
                    continue;
                }
                let bytes = fs::read(&path).unwrap();
                assert!(
                    !bytes.windows(64).any(|w| w == &data[1000..1064]),
                    "{} holds the state in plaintext",
                    path.display()
                );
            }
        }
    }
}
