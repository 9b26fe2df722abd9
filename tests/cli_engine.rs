//! End-to-end tests of the `raftwal` binary on engine roots (docs/DESIGN.md §9, Tools):
//! `inspect|verify ROOT` report every group and the shared files, `--group ID` narrows `inspect`,
//! `verify`, `dump` and `snapshot save` to one group, and a group is shown as an opened engine
//! would serve it, entries only in the journal included.
//!
//! The roots are written with the public API. Most tests read a crash image: a child process
//! writes a root (a clean close, then more commits that only the journal holds) and exits
//! without closing the engine, so that nothing moves the journal's records into the groups'
//! files afterwards (a live engine checkpoints every few seconds). Others read a root while an
//! engine in this process holds it. The rules checked: the tools never change the root, report
//! damage by file and offset with exit code 1, and refuse bad input with exit code 2.

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Instant, SystemTime};

#[path = "common/entries.rs"]
mod entries;
#[path = "common/fixture.rs"]
mod fixture;
#[path = "common/layout.rs"]
mod layout;
#[path = "common/roots.rs"]
mod roots;

use bytes::Bytes;
use raft::prelude::*;
use raft::{GetEntriesContext, Storage};
use raftwal::{Engine, EngineOptions, WriteBatch};
use serde_json::Value;
use tempfile::TempDir;

use entries::entry_in_group;
use layout::{
    next_record_at, segment_name, slot_at, slot_data_len, slot_payload_offset, CONTEXT_LEN_LEN,
    META_FILE, META_RECORD_AT, PART_INCARNATION_AT, RECORD_BODY_AT, RECORD_CRC_AT, RECORD_LEN_AT,
    RECORD_SEQ_AT, SEGMENT_RECORDS_AT, SLOTS_PER_FILE, SLOT_CRC_AT, SLOT_FLAGS_AT,
    SLOT_FLAG_CONTEXT, SLOT_FLAG_DATA_DROPPED, SLOT_LEN, SLOT_TERM_AT,
};

// ---------------------------------------------------------------------------------------------
// the roots under test
// ---------------------------------------------------------------------------------------------

/// The key of the encrypted crash image.
const KEY: [u8; 32] = [0x3c; 32];
/// Set in the child process that writes a crash image: the root to write.
const CHILD_ROOT: &str = "RAFTWAL_TEST_CRASH_ROOT";
/// Set (to anything) in that child when the root is to be encrypted with [`KEY`].
const CHILD_KEY: &str = "RAFTWAL_TEST_CRASH_KEY";
/// Set in that child to the journal segment size to use (default: the engine's).
const CHILD_SEGMENT: &str = "RAFTWAL_TEST_CRASH_SEGMENT";
/// The child gives up (and is run again) when its commits after the reopen took this long: a
/// background checkpoint (every 5 s while anything changed) could have run.
const CHILD_BUDGET_SECS: u64 = 3;
/// Exit code of a child that gave up.
const CHILD_TOO_SLOW: i32 = 3;

fn entries(lo: u64, hi: u64, term: u64, group: u64) -> Vec<Entry> {
    (lo..=hi).map(|i| entry_in_group(i, term, group)).collect()
}

/// Group 1's `truncate_entries_until`: its entries below read back with empty data.
const TRUNCATED: u64 = 45;

/// Group 1's entries `lo..=hi` as the history leaves them.
fn group1(lo: u64, hi: u64) -> Vec<Entry> {
    let mut es = entries(lo, hi, 1, 1);
    for e in es.iter_mut().filter(|e| e.index < TRUNCATED) {
        e.data = Bytes::new();
    }
    es
}

fn hs(term: u64, vote: u64, commit: u64) -> HardState {
    let mut h = HardState::default();
    h.term = term;
    h.vote = vote;
    h.commit = commit;
    h
}

fn snapshot_data() -> Vec<u8> {
    (0..3000u32).map(|k| (k * 7 % 251) as u8).collect()
}

fn opts(key: Option<[u8; 32]>, segment_bytes: Option<u64>) -> EngineOptions {
    let d = EngineOptions::default();
    EngineOptions {
        encryption_key: key,
        journal_segment_bytes: segment_bytes.unwrap_or(d.journal_segment_bytes),
        ..d
    }
}

/// The crash image's history. Journal records: 1 (batch A, then a clean close: the checkpoint);
/// after the reopen 2 (B), 3 (C), 4 (D), 5 (E), 6, 7, which only the journal holds.
///
/// - group 1 (raft id 11): entries 1..=40 in A (commit 40), 41..=60 in B (commit 58), 61..=62
///   in E (commit 60), then `truncate_entries_until(45)` (6) and a conf state, voters 1 and 2
///   (7);
/// - group 2 (raft id 22): 1..=10 in A (commit 5), then C overwrites 8..=12 with term 2;
/// - group 7 (raft id 77): D installs a snapshot at index 100 (term 3, 3,000 bytes of data)
///   and appends 101..=103;
/// - group 8: 1..=3 in A, 4..=5 in B, then removed (its part of B names a group that is gone).
fn write_history(
    root: &Path,
    key: Option<[u8; 32]>,
    segment_bytes: Option<u64>,
) -> Result<Engine, ()> {
    let e = Engine::open_with(root, opts(key, segment_bytes)).unwrap();
    for (g, raft) in [(1, 11), (2, 22), (7, 77), (8, 88)] {
        e.create_group(g, raft).unwrap();
    }
    let mut b = WriteBatch::new();
    b.save(
        1,
        &hs(1, 1, 40),
        &entries(1, 40, 1, 1),
        &Snapshot::default(),
    );
    b.save(2, &hs(1, 2, 5), &entries(1, 10, 1, 2), &Snapshot::default());
    b.save(8, &hs(1, 8, 3), &entries(1, 3, 1, 8), &Snapshot::default());
    e.write(&mut b).unwrap();
    e.close().unwrap();

    let e = Engine::open_with(root, opts(key, segment_bytes)).unwrap();
    let start = Instant::now();
    b.save(
        1,
        &hs(1, 1, 58),
        &entries(41, 60, 1, 1),
        &Snapshot::default(),
    );
    b.save(8, &hs(1, 8, 5), &entries(4, 5, 1, 8), &Snapshot::default());
    e.write(&mut b).unwrap();
    e.remove_group(8).unwrap();
    b.save(2, &hs(2, 2, 7), &entries(8, 12, 2, 2), &Snapshot::default());
    e.write(&mut b).unwrap();
    let mut snap = Snapshot::default();
    snap.data = snapshot_data().into();
    snap.mut_metadata().index = 100;
    snap.mut_metadata().term = 3;
    snap.mut_metadata().mut_conf_state().voters = vec![1, 2, 3];
    b.save(7, &hs(3, 1, 101), &entries(101, 103, 3, 7), &snap);
    e.write(&mut b).unwrap();
    b.save(
        1,
        &hs(1, 1, 60),
        &entries(61, 62, 1, 1),
        &Snapshot::default(),
    );
    e.write(&mut b).unwrap();
    let g1 = e.group(1).unwrap();
    g1.truncate_entries_until(TRUNCATED).unwrap();
    let mut cs = ConfState::default();
    cs.voters = vec![1, 2];
    g1.set_conf_state(&cs).unwrap();
    if start.elapsed().as_secs() >= CHILD_BUDGET_SECS {
        return Err(());
    }
    Ok(e)
}

/// Not a test: the child process of [`crash_image`] (it does nothing unless `CHILD_ROOT` is
/// set). It writes the history and exits without closing the engine.
#[test]
#[ignore]
fn crash_image_writer() {
    let Some(root) = std::env::var_os(CHILD_ROOT) else {
        return;
    };
    let key = std::env::var_os(CHILD_KEY).map(|_| KEY);
    let segment = std::env::var(CHILD_SEGMENT)
        .ok()
        .and_then(|s| s.parse().ok());
    match write_history(Path::new(&root), key, segment) {
        Ok(engine) => {
            // Exit with the engine open: no close, no checkpoint.
            std::mem::forget(engine);
            std::process::exit(0)
        }
        Err(()) => std::process::exit(CHILD_TOO_SLOW),
    }
}

/// A root written by [`write_history`] in a child process that exited with the engine open:
/// what a crash leaves (the root marked open, records 2..=7 only in the journal).
fn crash_image(root: &Path, key: Option<[u8; 32]>, segment_bytes: Option<u64>) {
    for _ in 0..5 {
        let _ = fs::remove_dir_all(root);
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args([
            "crash_image_writer",
            "--exact",
            "--ignored",
            "--test-threads=1",
        ])
        .env(CHILD_ROOT, root);
        if key.is_some() {
            cmd.env(CHILD_KEY, "1");
        }
        if let Some(n) = segment_bytes {
            cmd.env(CHILD_SEGMENT, n.to_string());
        }
        let out = cmd.output().unwrap();
        match out.status.code() {
            Some(0) => return,
            Some(CHILD_TOO_SLOW) => continue,
            _ => panic!(
                "the writer failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        }
    }
    panic!("the writer was too slow five times");
}

/// The shared crash image (plaintext), written once.
fn image() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        fixture::shared("cli-engine-crash-image", |dir| {
            crash_image(&dir.join("root"), None, None)
        })
        .join("root")
    })
}

/// A copy of the crash image, to damage or to open.
fn image_copy(tmp: &TempDir) -> PathBuf {
    let to = tmp.path().join("copy");
    roots::kill_image(image(), &to);
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
        .env_remove("RAFTWAL_KEY_FILE")
        .output()
        .unwrap();
    let run = Run {
        code: out.status.code().expect("raftwal was killed by a signal"),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    };
    assert!(
        !run.stderr.contains("panicked") && !run.stderr.contains("internal error"),
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
    assert_eq!(
        run.code, 0,
        "stdout: {}\nstderr: {}",
        run.stdout, run.stderr
    );
    assert_eq!(run.stderr, "");
    run.stdout
}

/// Exits with `code` and one line on stderr, `raftwal: ...` (stdout may hold a report).
fn fails<S: AsRef<std::ffi::OsStr>>(args: &[S], code: i32) -> Run {
    let run = raftwal(args);
    assert_eq!(
        run.code, code,
        "stdout: {}\nstderr: {}",
        run.stdout, run.stderr
    );
    assert_eq!(run.stderr.lines().count(), 1, "stderr: {}", run.stderr);
    assert!(
        run.stderr.starts_with("raftwal: "),
        "stderr: {}",
        run.stderr
    );
    run
}

fn json(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not one JSON document ({e}): {s}"))
}

fn inspect_json(root: &Path) -> Value {
    json(&ok(&["inspect", p(root), "--json"]))
}

/// What `inspect ROOT --json` says open will fail on (it exits 1).
fn open_will_fail(root: &Path) -> String {
    let run = fails(&["inspect", p(root), "--json"], 1);
    json(&run.stdout)["open_error"]
        .as_str()
        .unwrap_or_else(|| panic!("no open_error: {}", run.stdout))
        .to_string()
}

/// The error of `Engine::open_with` on a copy of `root` made at `to` (the root itself stays
/// as it is, for the tools); `what` says what an open that succeeds did wrong.
fn open_copy_fails(root: &Path, to: &Path, opts: EngineOptions, what: &str) -> String {
    roots::copy_tree(root, to);
    match Engine::open_with(to, opts) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("{what}"),
    }
}

/// The summary of group `id` in an inspect document.
fn group(doc: &Value, id: u64) -> &Value {
    doc["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["group_id"] == id)
        .unwrap_or_else(|| panic!("no group {id} in {doc}"))
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

/// The journal's only segment in the crash image.
fn segment(root: &Path) -> PathBuf {
    root.join("journal").join(segment_name(1))
}

/// Offsets of the records of a journal segment, by sequence number, read as docs/FORMAT.md
/// lays them out: a 4 KiB header, then records of `length u32 | crc u32 | sequence u64 | body`
/// padded to 8 bytes.
fn record_offsets(path: &Path) -> BTreeMap<u64, u64> {
    let bytes = fs::read(path).unwrap();
    let u = |at: u64, n: usize| bytes[at as usize..at as usize + n].to_vec();
    let mut at = SEGMENT_RECORDS_AT;
    let mut out = BTreeMap::new();
    while (at + RECORD_BODY_AT) as usize <= bytes.len() {
        let len = u32::from_le_bytes(u(at + RECORD_LEN_AT, 4).try_into().unwrap()) as u64;
        let seq = u64::from_le_bytes(u(at + RECORD_SEQ_AT, 8).try_into().unwrap());
        if seq == 0 {
            return out;
        }
        out.insert(seq, at);
        at = next_record_at(at, len);
    }
    out
}

/// Entries `lo..=hi` as `dump --json` prints them.
fn dump_lines(es: &[Entry]) -> Vec<Value> {
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    es.iter()
        .map(|e| {
            serde_json::json!({
                "index": e.index,
                "term": e.term,
                "entry_type": format!("{:?}", e.get_entry_type()),
                "data_hex": hex(&e.data),
                "context_hex": hex(&e.context),
            })
        })
        .collect()
}

fn dump_json(root: &Path, group: &str, extra: &[&str]) -> Vec<Value> {
    let mut args = vec!["dump", p(root), "--group", group, "--json"];
    args.extend_from_slice(extra);
    ok(&args).lines().map(json).collect()
}

// ---------------------------------------------------------------------------------------------
// inspect
// ---------------------------------------------------------------------------------------------

/// The root record, the journal after the checkpoint, and each group in its files and after
/// replay, as the history wrote them.
#[test]
fn inspect_root_reports_every_group_before_and_after_the_journal() {
    let doc = inspect_json(image());
    assert_eq!(doc["checkpoint_seq"], 1);
    assert_eq!(doc["open"], true);
    assert_eq!(doc["next_incarnation"], 5);
    assert_eq!(doc["group_ids"], serde_json::json!([1, 2, 7]));
    assert_eq!(doc["open_error"], Value::Null);
    let j = &doc["journal"];
    assert_eq!(j["records_after_checkpoint"], 6);
    assert_eq!(
        (j["first_seq"].clone(), j["last_seq"].clone()),
        (2.into(), 7.into())
    );
    assert_eq!(j["next_seq"], 8);
    assert_eq!(j["torn_tail"], Value::Null);
    assert_eq!(j["lost_records"], Value::Null);
    assert_eq!(
        j["parts_for_removed_groups"], 1,
        "group 8's part of record 2"
    );
    assert_eq!(j["segments"][0]["first_seq"], 1);
    assert_eq!(j["segments"][0]["records"], 7);
    assert_eq!(j["segments"][0]["state"], "live");

    let g1 = group(&doc, 1);
    assert_eq!(g1["incarnation"], 1);
    assert_eq!(g1["journal_seq"], 1);
    assert_eq!(g1["in_files"]["last_index"], 40);
    assert_eq!(g1["in_files"]["hard_state"]["commit"], 40);
    assert_eq!(g1["files"][0]["name"], "00001.wal");
    assert_eq!(g1["files"][0]["entries"], 40);
    assert_eq!(g1["journal"]["records"], 4);
    assert_eq!(g1["journal"]["entries"], 22);
    assert_eq!(g1["journal"]["entries_from"], 41);
    assert_eq!(g1["journal"]["truncated_below"], TRUNCATED);
    assert_eq!(
        g1["in_files"]["conf_state"]["voters"],
        serde_json::json!([])
    );
    assert_eq!(
        g1["after_replay"]["conf_state"]["voters"],
        serde_json::json!([1, 2])
    );
    assert_eq!(g1["after_replay"]["raft_id"], 11);
    assert_eq!(g1["after_replay"]["first_index"], 1);
    assert_eq!(g1["after_replay"]["last_index"], 62);
    assert_eq!(g1["after_replay"]["hard_state"]["commit"], 60);

    let g2 = group(&doc, 2);
    assert_eq!(g2["in_files"]["last_index"], 10);
    assert_eq!(
        g2["journal"]["entries_from"], 8,
        "the overwrite from index 8"
    );
    assert_eq!(g2["after_replay"]["last_index"], 12);
    assert_eq!(g2["after_replay"]["hard_state"]["term"], 2);

    let g7 = group(&doc, 7);
    assert_eq!(g7["journal"]["snapshot_installed"], 100);
    assert_eq!(g7["after_replay"]["snapshot"]["index"], 100);
    assert_eq!(g7["after_replay"]["snapshot"]["data_len"], 3000);
    assert_eq!(g7["after_replay"]["first_index"], 101);
    assert_eq!(g7["after_replay"]["last_index"], 103);
    for g in [g1, g2, g7] {
        assert_eq!(g["damage"], Value::Null);
    }

    let text = ok(&["inspect", p(image())]);
    for expected in [
        "checkpoint      journal record 1",
        "replay          6 records after the checkpoint (2..=7)",
        "groups          3 (1,2,7)",
        "group 1         raft id 11, incarnation 1",
        "  in its files  first index 1, last index 40 (40 entries), as of journal record 1",
        "  in journal    4 records (2..=7), 22 entries",
        "removed groups  1 part for groups that are gone",
        "from index 41 on, the log is in the journal",
        "  after replay  first index 1, last index 62 (62 entries)",
        "  hard state    term 1 vote 1 commit 60 (its files: term 1 vote 1 commit 40)",
        "  snapshot      index 100 term 3, 3000 bytes",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
}

/// What `inspect` says an opened engine serves is what `Engine::open` serves.
#[test]
fn inspect_and_dump_agree_with_the_engine_after_replay() {
    let tmp = TempDir::new().unwrap();
    let root = image_copy(&tmp);
    let doc = inspect_json(&root);
    let dumps: Vec<(u64, Vec<Value>)> = [1u64, 2, 7]
        .iter()
        .map(|&id| (id, dump_json(&root, &id.to_string(), &[])))
        .collect();
    let engine = Engine::open(&root).unwrap();
    for (id, dump) in dumps {
        let g = engine.group(id).unwrap();
        let (first, last) = (g.first_index().unwrap(), g.last_index().unwrap());
        let after = &group(&doc, id)["after_replay"];
        assert_eq!(
            (after["first_index"].clone(), after["last_index"].clone()),
            (first.into(), last.into())
        );
        let rs = g.initial_state().unwrap();
        assert_eq!(after["hard_state"]["commit"], rs.hard_state.commit);
        assert_eq!(after["hard_state"]["term"], rs.hard_state.term);
        let served = g
            .entries(first, last + 1, None, GetEntriesContext::empty(false))
            .unwrap();
        assert_eq!(dump, dump_lines(&served), "group {id}");
    }
    engine.close().unwrap();
}

#[test]
fn group_narrows_inspect_to_one_group() {
    let doc = json(&ok(&["inspect", p(image()), "--group", "2", "--json"]));
    let groups = doc["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 1);
    assert_eq!(groups[0]["group_id"], 2);
    assert_eq!(groups[0]["after_replay"]["last_index"], 12);
    assert_eq!(doc["group_ids"], serde_json::json!([1, 2, 7]));
    let text = ok(&["inspect", p(image()), "--group", "7"]);
    assert!(text.contains("group 7 "), "{text}");
    assert!(
        !text.contains("group 1 ") && !text.contains("group 2 "),
        "{text}"
    );
}

/// After a clean close the journal holds nothing for any group.
#[test]
fn after_a_clean_close_every_group_is_whole_in_its_files() {
    let tmp = TempDir::new().unwrap();
    let root = image_copy(&tmp);
    Engine::open(&root).unwrap().close().unwrap();
    let doc = inspect_json(&root);
    assert_eq!(doc["open"], false);
    assert_eq!(doc["journal"]["records_after_checkpoint"], 0);
    for id in [1, 2, 7] {
        let g = group(&doc, id);
        assert_eq!(g["journal"]["records"], 0, "group {id}");
        assert_eq!(g["in_files"], g["after_replay"], "group {id}");
    }
    assert_eq!(group(&doc, 1)["in_files"]["last_index"], 62);
    let text = ok(&["inspect", p(&root)]);
    assert!(text.contains("state           closed cleanly"), "{text}");
    assert!(
        text.contains("  in journal    nothing beyond its files"),
        "{text}"
    );
    let verify = ok(&["verify", p(&root)]);
    assert!(verify.ends_with(": ok\n"), "{verify}");
}

// ---------------------------------------------------------------------------------------------
// verify
// ---------------------------------------------------------------------------------------------

#[test]
fn verify_root_checks_the_journal_and_every_group() {
    let text = ok(&["verify", p(image())]);
    for expected in [
        "engine.meta     ok",
        "journal         1 segment, 7 records (6 after the checkpoint)",
        "group 1         1 file, 40 entries",
        "4 journal records: ok",
        "1 journal record: ok",
        "group 7         0 files, 0 entries, 0 payload bytes (0 B), snapshot 3000 bytes",
        "3 groups: ok",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    let doc = json(&ok(&["verify", p(image()), "--json"]));
    assert_eq!(doc["ok"], true);
    assert_eq!(doc["journal"]["records_checked"], 7);
    assert_eq!(doc["groups"].as_array().unwrap().len(), 3);
    assert_eq!(doc["groups"][0]["entries_checked"], 40);
    let one = json(&ok(&["verify", p(image()), "--group", "2", "--json"]));
    let groups = one["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 1);
    assert_eq!(groups[0]["group_id"], 2);
    assert_eq!(groups[0]["entries_checked"], 10);
}

/// A group's snapshot file damaged or deleted: `Engine::open` does not read group snapshot
/// files (the group's `snapshot()` fails on it later), so `inspect ROOT` agrees that open
/// succeeds; `verify ROOT` reads the file and fails on it (exit 1), naming it.
#[test]
fn a_damaged_group_snapshot_file_fails_verify_and_inspect_agrees_with_open() {
    let tmp = TempDir::new().unwrap();
    for damage in ["data byte flipped", "file deleted"] {
        let root = tmp.path().join(damage.replace(' ', "-"));
        roots::copy_tree(image(), &root);
        let snap_dir = root.join("groups").join("7").join("snap");
        let snap = fs::read_dir(&snap_dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|x| x == "snap"))
            .unwrap();
        let snap_name = snap.file_name().unwrap().to_str().unwrap().to_string();
        if damage == "file deleted" {
            fs::remove_file(&snap).unwrap();
        } else {
            flip(&snap, 4096 + 100);
        }
        let opened = tmp.path().join("opened");
        let _ = fs::remove_dir_all(&opened);
        roots::copy_tree(&root, &opened);
        let engine = Engine::open(&opened);
        let inspect = raftwal(&["inspect", p(&root), "--json"]);
        let doc = json(&inspect.stdout);
        match &engine {
            Ok(_) => {
                assert_eq!(inspect.code, 0, "{damage}: {}", inspect.stderr);
                assert_eq!(doc["open_error"], Value::Null, "{damage}: {doc}");
            }
            Err(e) => {
                assert_eq!(inspect.code, 1, "{damage}: open refuses ({e})");
                assert!(doc["open_error"].is_string(), "{damage}: {doc}");
            }
        }
        if let Ok(engine) = engine {
            let g = engine.group(7).unwrap();
            let got = g.snapshot(0, 0).map(|s| s.data.len());
            assert!(
                got.is_err(),
                "{damage}: the group serves its snapshot: {got:?}"
            );
        }
        let err = fails(&["verify", p(&root)], 1).stderr;
        assert!(err.contains(&snap_name), "{damage}: {err}");
    }
}

/// A damaged record the checkpoint covers: open fails (what follows it cannot be read).
#[test]
fn a_damaged_checkpointed_journal_record_fails_open_and_verify() {
    let tmp = TempDir::new().unwrap();
    let root = image_copy(&tmp);
    let seg = segment(&root);
    let at = record_offsets(&seg)[&1];
    flip(&seg, at + RECORD_BODY_AT + 40);
    let run = fails(&["inspect", p(&root)], 1);
    assert!(
        run.stderr.contains("open will fail: journal: corrupt"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains(&format!("0000000000000001.jnl at offset {at}")),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("journal record 1: checksum mismatch"),
        "{}",
        run.stderr
    );
    assert!(
        run.stdout.contains("journal damage  corrupt"),
        "{}",
        run.stdout
    );
    let run = fails(&["verify", p(&root)], 1);
    assert!(
        run.stderr.contains(&format!("offset {at}")),
        "{}",
        run.stderr
    );
    assert!(
        run.stdout.contains("journal         1 segment, 0 records"),
        "{}",
        run.stdout
    );
    assert!(
        Engine::open(&root).is_err(),
        "the engine opens what the tools call damaged"
    );
}

/// A damaged record that later records follow: a default open ends the journal there and
/// drops them, without failing. The tools name it. (Record 5, past record 4's install, whose
/// meta page reflects record 3: below that, the next test.)
#[test]
fn a_damaged_record_before_later_ones_is_reported_as_lost_records() {
    let tmp = TempDir::new().unwrap();
    let root = image_copy(&tmp);
    let seg = segment(&root);
    let at = record_offsets(&seg)[&5];
    flip(&seg, at + RECORD_BODY_AT + 20);
    let run = fails(&["inspect", p(&root), "--json"], 1);
    let doc = json(&run.stdout);
    let lost = doc["journal"]["lost_records"].as_str().unwrap();
    assert!(lost.contains(&format!("offset {at}")), "{lost}");
    assert!(lost.contains("records 6..=7"), "{lost}");
    assert!(
        run.stderr.contains("open will drop journal records"),
        "{}",
        run.stderr
    );
    assert_eq!(doc["journal"]["torn_tail"], Value::Null, "not a torn tail");
    // Replay ends before the damaged record: group 1's entries 61 and 62 are not applied,
    // group 2's overwrite (record 3) is.
    assert_eq!(group(&doc, 1)["after_replay"]["last_index"], 60);
    assert_eq!(group(&doc, 2)["after_replay"]["last_index"], 12);
    let run = fails(&["inspect", p(&root)], 1);
    assert!(
        run.stdout.contains(
            "open            succeeds (default recovery mode), but drops the lost records above"
        ),
        "{}",
        run.stdout
    );
    let run = fails(&["verify", p(&root)], 1);
    assert!(run.stderr.contains("records 6..=7"), "{}", run.stderr);
    assert!(
        run.stdout
            .contains("journal         1 segment, 4 records (3 after the checkpoint)"),
        "{}",
        run.stdout
    );
    // What the engine does with it: opens, and serves group 1 without entries 61 and 62.
    let engine = Engine::open(&root).unwrap();
    assert_eq!(engine.group(1).unwrap().last_index().unwrap(), 60);
    assert_eq!(engine.group(2).unwrap().last_index().unwrap(), 12);
    engine.close().unwrap();
}

/// A damaged record that a group's meta page reflects (record 3: group 7's install in
/// record 4 stored its page at record 3) is no torn write: the page proves it was durable.
/// Open refuses it in both modes (strictly naming the record, by default the page and the
/// journal), and the tools say so. A default open
/// once ended the journal before it and numbered the next commit 3, which replay would then
/// skip for group 7 (its page already reflects a record 3), losing it after a crash.
#[test]
fn a_damaged_record_a_group_page_reflects_fails_open_in_both_modes() {
    let tmp = TempDir::new().unwrap();
    let root = image_copy(&tmp);
    let seg = segment(&root);
    let at = record_offsets(&seg)[&3];
    flip(&seg, at + RECORD_BODY_AT + 20);
    for mode in [
        raftwal::RecoveryMode::TolerateTailCorruption,
        raftwal::RecoveryMode::AbsoluteConsistency,
    ] {
        let opts = EngineOptions {
            recovery_mode: mode,
            ..Default::default()
        };
        let err = open_copy_fails(
            &root,
            &tmp.path().join(format!("{mode:?}")),
            opts,
            &format!("{mode:?}: opened, cutting a record group 7's page reflects"),
        );
        // Strictly, the damaged record itself; by default, the page that shows it durable.
        let named = match mode {
            raftwal::RecoveryMode::AbsoluteConsistency => "journal record 3: checksum mismatch",
            _ => "groups/7/wal.meta reflects journal record 3",
        };
        assert!(err.contains(named), "{mode:?}: {err}");
    }
    let open_error = open_will_fail(&root);
    assert!(
        open_error.contains("groups/7/wal.meta reflects journal record 3"),
        "{open_error}"
    );
}

/// The last record damaged: a torn tail, which a default open cuts. `inspect` shows it (exit
/// 0, as a damaged tail of a WAL directory); `verify` calls it damage.
#[test]
fn a_torn_journal_tail_is_shown_and_fails_verify() {
    let tmp = TempDir::new().unwrap();
    let root = image_copy(&tmp);
    let seg = segment(&root);
    let at = record_offsets(&seg)[&7];
    flip(&seg, at + RECORD_BODY_AT + 10);
    let doc = inspect_json(&root);
    let torn = doc["journal"]["torn_tail"].as_str().unwrap();
    assert!(
        torn.contains(&format!("0000000000000001.jnl at offset {at}")),
        "{torn}"
    );
    assert!(torn.contains("journal record 7"), "{torn}");
    assert_eq!(doc["journal"]["lost_records"], Value::Null);
    assert_eq!(doc["journal"]["last_seq"], 6);
    // Group 1 as open will serve it: without record 7's conf state.
    let g1 = &group(&doc, 1)["after_replay"];
    assert_eq!(g1["conf_state"]["voters"], serde_json::json!([]));
    assert_eq!(g1["last_index"], 62);
    let text = ok(&["inspect", p(&root)]);
    assert!(text.contains("(open cuts it)"), "{text}");
    let run = fails(&["verify", p(&root)], 1);
    assert!(
        run.stderr.contains(&format!("offset {at}")),
        "{}",
        run.stderr
    );
    assert!(run.stdout.contains("journal "), "{}", run.stdout);
    assert!(run.stdout.contains("DAMAGED"), "{}", run.stdout);
}

/// Opens the root at `from` in this process, runs `f`, and copies the root as a kill leaves it
/// (the page cache, the lock aside) to `to`; again, from `from`, if that took so long that the
/// engine's periodic checkpoint (every 5 s while anything changed) may have run.
fn opened_and_killed(from: &Path, to: &Path, f: impl Fn(&Engine)) {
    for _ in 0..5 {
        let tmp = TempDir::new().unwrap();
        let work = tmp.path().join("root");
        roots::kill_image(from, &work);
        let start = Instant::now();
        let engine = Engine::open(&work).unwrap();
        f(&engine);
        let _ = fs::remove_dir_all(to);
        roots::kill_image(&work, to);
        let slow = start.elapsed().as_secs() >= CHILD_BUDGET_SECS;
        drop(engine);
        if !slow {
            return;
        }
    }
    panic!("five runs took longer than the checkpoint period");
}

/// A torn tail that a default open cut, then a commit and a crash: the segment holding the torn
/// record ends there, and the next one (which that open started) starts at its sequence number.
/// That is a cut, not damage: `inspect` shows it, `verify` passes, and the tools replay what
/// open replays (in either mode).
#[test]
fn a_tail_cut_by_an_earlier_open_is_shown_and_is_not_damage() {
    let tmp = TempDir::new().unwrap();
    let torn = image_copy(&tmp);
    let seg = segment(&torn);
    let at = record_offsets(&seg)[&7];
    flip(&seg, at + RECORD_BODY_AT + 10);
    let root = tmp.path().join("cut");
    opened_and_killed(&torn, &root, |e| {
        let g = e.group(1).unwrap();
        g.save(&hs(1, 1, 61), &entries(63, 64, 1, 1), &Snapshot::default())
            .unwrap();
    });
    let doc = inspect_json(&root);
    // Segment 1 holds the torn record, 2 is the one the cutting open started (3, if listed, is
    // the next one prepared, never written).
    let segs = doc["journal"]["segments"].as_array().unwrap();
    assert_eq!(segs[0]["id"], 1, "{doc}");
    assert_eq!(segs[1]["id"], 2, "{doc}");
    assert!(segs[2..].iter().all(|s| s["first_seq"].is_null()), "{doc}");
    let cut = segs[0]["cut"].as_str().unwrap();
    assert!(
        cut.contains(&format!("0000000000000001.jnl at offset {at}")) && cut.contains("record 7"),
        "{cut}"
    );
    assert_eq!(segs[0]["last_seq"], 6);
    assert_eq!(segs[1]["first_seq"], 7);
    assert_eq!(segs[1]["cut"], Value::Null);
    assert_eq!(doc["journal"]["last_seq"], 7);
    assert_eq!(doc["journal"]["torn_tail"], Value::Null);
    assert_eq!(doc["journal"]["damage"], Value::Null);
    assert_eq!(doc["open_error"], Value::Null);
    let g1 = &group(&doc, 1)["after_replay"];
    assert_eq!(g1["last_index"], 64);
    assert_eq!(g1["conf_state"]["voters"], serde_json::json!([]));
    let text = ok(&["inspect", p(&root)]);
    assert!(
        text.contains("ends at a cut an earlier open made (the next segment starts there)"),
        "{text}"
    );
    let verify = ok(&["verify", p(&root)]);
    assert!(verify.ends_with(": ok\n"), "{verify}");
    let dump = dump_json(&root, "1", &[]);
    for mode in [
        raftwal::RecoveryMode::AbsoluteConsistency,
        raftwal::RecoveryMode::TolerateTailCorruption,
    ] {
        let copy = TempDir::new().unwrap();
        roots::kill_image(&root, copy.path());
        let opts = EngineOptions {
            recovery_mode: mode,
            ..EngineOptions::default()
        };
        let engine = Engine::open_with(copy.path(), opts).unwrap();
        let g = engine.group(1).unwrap();
        let served = g
            .entries(1, 65, None, GetEntriesContext::empty(false))
            .unwrap();
        assert_eq!(dump, dump_lines(&served), "{mode:?}");
        engine.close().unwrap();
    }
}

/// A journal of several segments (small ones): each is listed, those whose records all lie at or
/// below the checkpoint as obsolete, the others live and continuous; the groups after replay
/// are those of the one-segment image. After a clean close the trimmed segment is the spare.
#[test]
fn a_journal_of_several_segments_is_read_across_them() {
    let tmp = TempDir::new().unwrap();
    let root = tmp.path().join("root");
    crash_image(&root, None, Some(SEGMENT_RECORDS_AT + 600));
    let doc = inspect_json(&root);
    let segs = doc["journal"]["segments"].as_array().unwrap().clone();
    assert!(segs.len() >= 3, "{segs:#?}");
    assert_eq!(segs[0]["state"], "obsolete");
    let live: Vec<&Value> = segs.iter().filter(|s| s["state"] == "live").collect();
    assert!(live.len() >= 2, "{segs:#?}");
    for w in live.windows(2) {
        let next = w[0]["last_seq"].as_u64().unwrap() + 1;
        assert_eq!(w[1]["first_seq"], next, "{segs:#?}");
    }
    assert_eq!(doc["journal"]["records_after_checkpoint"], 6);
    let main = inspect_json(image());
    for id in [1, 2, 7] {
        let state = |doc: &Value| {
            let mut s = group(doc, id)["after_replay"].clone();
            s["snapshot"]["file"] = Value::Null;
            s
        };
        assert_eq!(state(&doc), state(&main), "group {id}");
    }
    ok(&["verify", p(&root)]);

    // A clean close leaves no spare (they would only hold disk space until the next open).
    let closed = tmp.path().join("closed");
    roots::kill_image(&root, &closed);
    Engine::open_with(&closed, opts(None, Some(SEGMENT_RECORDS_AT + 600)))
        .unwrap()
        .close()
        .unwrap();
    let doc = inspect_json(&closed);
    assert_eq!(
        doc["journal"]["spares"].as_array().unwrap().len(),
        0,
        "{doc}"
    );
    let names: Vec<String> = fs::read_dir(closed.join("journal"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(names.iter().all(|n| !n.starts_with("spare-")), "{names:?}");

    // A journal holding a spare: the obsolete first segment renamed as a checkpoint's trim
    // renames it (docs/FORMAT.md), which a crash before the next rotation leaves behind.
    let spared = tmp.path().join("spared");
    roots::kill_image(&root, &spared);
    let mut segs: Vec<String> = fs::read_dir(spared.join("journal"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.len() == segment_name(1).len() && n.ends_with(".jnl"))
        .collect();
    segs.sort();
    let jdir = spared.join("journal");
    fs::rename(
        jdir.join(&segs[0]),
        jdir.join(format!("spare-{}", &segs[0])),
    )
    .unwrap();
    let doc = inspect_json(&spared);
    let spares = doc["journal"]["spares"].as_array().unwrap();
    assert_eq!(spares.len(), 1, "{doc}");
    let name = spares[0]["path"].as_str().unwrap();
    assert!(name.contains("journal/spare-"), "{name}");
    let text = ok(&["inspect", p(&spared)]);
    assert!(text.contains(", 1 spare ("), "{text}");
    ok(&["verify", p(&spared)]);
}

/// A damaged record in a segment before the last: records after it were acknowledged, so open
/// fails (it never cuts there); the tools say so, naming the segment and offset.
#[test]
fn a_damaged_record_before_the_last_segment_fails_open() {
    let tmp = TempDir::new().unwrap();
    let root = tmp.path().join("root");
    crash_image(&root, None, Some(SEGMENT_RECORDS_AT + 600));
    let doc = inspect_json(&root);
    let segs = doc["journal"]["segments"].as_array().unwrap();
    let live: Vec<&Value> = segs.iter().filter(|s| s["state"] == "live").collect();
    assert!(live.len() >= 2, "{segs:#?}");
    let name = live[0]["name"].as_str().unwrap();
    let seg = root.join("journal").join(name);
    let (seq, at) = record_offsets(&seg).into_iter().next().unwrap();
    flip(&seg, at + RECORD_BODY_AT + 8);
    let run = fails(&["inspect", p(&root)], 1);
    let expected = format!("{name} at offset {at}: journal record {seq}: checksum mismatch");
    assert!(
        run.stderr.contains("open will fail: journal: corrupt"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains(&expected), "{}", run.stderr);
    let run = fails(&["verify", p(&root)], 1);
    assert!(run.stderr.contains(&expected), "{}", run.stderr);
    assert!(Engine::open(&root).is_err());
}

/// Rewrites the incarnation of the first part of the record at `at` (docs/FORMAT.md: a part
/// starts with group id u64 | incarnation u64), with the record's CRC32C (over its sequence
/// number and body) made to match: a record open reads as whole.
fn forge_incarnation(seg: &Path, at: u64, incarnation: u64) {
    let f = OpenOptions::new().read(true).write(true).open(seg).unwrap();
    let mut h = [0u8; RECORD_BODY_AT as usize];
    f.read_exact_at(&mut h, at).unwrap();
    let (l, q, i) = (
        RECORD_LEN_AT as usize,
        RECORD_SEQ_AT as usize,
        PART_INCARNATION_AT as usize,
    );
    let len = u32::from_le_bytes(h[l..l + 4].try_into().unwrap()) as usize;
    let mut body = vec![0u8; len];
    f.read_exact_at(&mut body, at + RECORD_BODY_AT).unwrap();
    body[i..i + 8].copy_from_slice(&incarnation.to_le_bytes());
    let crc = crc32c::crc32c_append(crc32c::crc32c(&h[q..]), &body);
    f.write_all_at(&crc.to_le_bytes(), at + RECORD_CRC_AT)
        .unwrap();
    f.write_all_at(&body, at + RECORD_BODY_AT).unwrap();
}

/// Each journal part names a group and its incarnation: a part for an earlier incarnation (a
/// removed group with the same id) is skipped, as open skips it; a part for an incarnation the
/// root never gave out, or newer than the group's, is damage, which open refuses.
#[test]
fn journal_parts_are_checked_against_the_groups_they_name() {
    let tmp = TempDir::new().unwrap();
    // Record 3 holds group 2's overwrite (group 2 is incarnation 2).
    let earlier = tmp.path().join("earlier");
    roots::kill_image(image(), &earlier);
    let seg = segment(&earlier);
    forge_incarnation(&seg, record_offsets(&seg)[&3], 1);
    let doc = inspect_json(&earlier);
    let g2 = group(&doc, 2);
    assert_eq!(g2["journal"]["parts_for_earlier_incarnation"], 1);
    assert_eq!(g2["after_replay"]["last_index"], 10);
    assert_eq!(g2["damage"], Value::Null);
    ok(&["verify", p(&earlier)]);

    let never = tmp.path().join("never");
    roots::kill_image(image(), &never);
    let seg = segment(&never);
    let at = record_offsets(&seg)[&3];
    forge_incarnation(&seg, at, 9);
    let run = fails(&["inspect", p(&never), "--json"], 1);
    assert!(run.stderr.contains("open will fail"), "{}", run.stderr);
    let doc = json(&run.stdout);
    let damage = doc["journal"]["damage"].as_str().unwrap();
    assert!(damage.contains(&format!("at offset {at}")), "{damage}");
    assert!(
        damage.contains("incarnation 9, which the root never gave out"),
        "{damage}"
    );
    let run = fails(&["verify", p(&never)], 1);
    assert!(run.stderr.contains("never gave out"), "{}", run.stderr);
    let Err(err) = raftwal::Engine::open(&never) else {
        panic!("open accepted a part for an incarnation never given out")
    };
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("0000000000000001.jnl at offset {at}"))
            && msg.contains("incarnation 9"),
        "{msg}"
    );

    // Incarnation 0: never given out (the first group gets 1).
    let zero = tmp.path().join("zero");
    roots::kill_image(image(), &zero);
    let seg = segment(&zero);
    forge_incarnation(&seg, record_offsets(&seg)[&3], 0);
    let run = fails(&["inspect", p(&zero), "--json"], 1);
    assert!(run.stderr.contains("open will fail"), "{}", run.stderr);
    let Err(err) = raftwal::Engine::open(&zero) else {
        panic!("open accepted a part for incarnation 0 (and dropped its entries)")
    };
    assert!(err.to_string().contains("incarnation 0"), "{err}");

    let newer = tmp.path().join("newer");
    roots::kill_image(image(), &newer);
    let seg = segment(&newer);
    forge_incarnation(&seg, record_offsets(&seg)[&3], 4);
    let run = fails(&["inspect", p(&newer), "--json"], 1);
    assert!(run.stderr.contains("open will fail"), "{}", run.stderr);
    let doc = json(&run.stdout);
    let damage = group(&doc, 2)["damage"].as_str().unwrap();
    assert!(damage.contains("incarnation 4 of group 2"), "{damage}");
    assert!(
        damage.contains("holds incarnation 2, an older one"),
        "{damage}"
    );
    fails(&["verify", p(&newer)], 1);
    let Err(err) = raftwal::Engine::open(&newer) else {
        panic!("open accepted a part for a newer incarnation than the group's")
    };
    assert!(err.to_string().contains("an older one"), "{err}");
}

/// Open meets the damage of a replayed part (group 2's, in record 3) before it clears the
/// files below a truncation (group 1's, record 6, over a damaged slot): the tools' "open will
/// fail" names the part, as open does, not the slot of the group with the lower id (it once
/// did).
#[test]
fn the_tools_name_the_damage_open_meets_first() {
    let tmp = TempDir::new().unwrap();
    let root = image_copy(&tmp);
    flip(
        &root.join("groups/1/00001.wal"),
        slot_at(4) + SLOT_TERM_AT + 2,
    );
    let seg = segment(&root);
    forge_incarnation(&seg, record_offsets(&seg)[&3], 4);
    let Err(err) = raftwal::Engine::open(&root) else {
        panic!("opened a root with a part for a newer incarnation")
    };
    assert!(err.to_string().contains("incarnation 4"), "{err}");
    let run = fails(&["inspect", p(&root), "--json"], 1);
    let doc = json(&run.stdout);
    let open_error = doc["open_error"].as_str().unwrap();
    assert!(open_error.contains("incarnation 4"), "{open_error}");
    assert!(open_error.starts_with("group 2"), "{open_error}");
}

/// A damaged meta copy not in use: `verify` names `wal.meta` (as for a WAL directory).
#[test]
fn a_damaged_group_meta_copy_fails_verify_naming_the_file() {
    let tmp = TempDir::new().unwrap();
    let root = image_copy(&tmp);
    let doc = inspect_json(&root);
    let copies = &group(&doc, 2)["meta_copies"];
    assert_eq!(copies["in_use"], 2);
    let meta = root.join("groups/2").join(META_FILE);
    flip(&meta, META_RECORD_AT + 8);
    let run = fails(&["verify", p(&root)], 1);
    assert!(run.stderr.contains("group 2: corrupt"), "{}", run.stderr);
    assert!(
        run.stderr.contains("groups/2/wal.meta at offset"),
        "{}",
        run.stderr
    );
    assert!(
        run.stdout.contains("group 1         1 file, 40 entries"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("group 2         ") && run.stdout.contains("DAMAGED"),
        "{}",
        run.stdout
    );
    let doc = json(&fails(&["verify", p(&root), "--json"], 1).stdout);
    assert_eq!(doc["ok"], false);
    assert_eq!(doc["groups"][0]["ok"], true);
    assert_eq!(doc["groups"][1]["ok"], false);
    // Narrowed to another group, the damage is not looked at.
    ok(&["verify", p(&root), "--group", "1"]);
}

/// The meta copy in use damaged, the other copy from the group's creation (journal record 0),
/// before the checkpoint (record 1): the journal no longer holds what the damaged copy held (40
/// entries), so open refuses, in both modes, and changes nothing; the tools say the same,
/// naming `wal.meta`, the copies, the position and the checkpoint.
#[test]
fn a_group_meta_fallback_the_journal_cannot_make_whole_is_refused() {
    let tmp = TempDir::new().unwrap();
    let root = image_copy(&tmp);
    let meta = root.join("groups/1").join(META_FILE);
    let region = fs::metadata(&meta).unwrap().len() / 2;
    flip(&meta, region + META_RECORD_AT + 8);
    let words = [
        "groups/1/wal.meta at offset",
        "copy 2 of the meta state is damaged",
        "copy 1 (sequence 2) reflects the journal up to record 0",
        "only the records after the checkpoint, record 1",
    ];
    let run = fails(&["inspect", p(&root), "--json"], 1);
    assert!(
        run.stderr.contains("open will fail: group 1: corrupt"),
        "{}",
        run.stderr
    );
    let doc = json(&run.stdout);
    let damage = group(&doc, 1)["damage"].as_str().unwrap().to_string();
    let open_error = doc["open_error"].as_str().unwrap().to_string();
    let verify = fails(&["verify", p(&root)], 1);
    for w in words {
        assert!(damage.contains(w), "{w:?} not in {damage}");
        assert!(open_error.contains(w), "{w:?} not in {open_error}");
        assert!(verify.stderr.contains(w), "{w:?} not in {}", verify.stderr);
    }
    // The lock file aside: open takes it first (the copy has none, as a kill's image).
    let files = |root: &Path| -> Vec<(PathBuf, u64, u32)> {
        tree_state(root)
            .into_iter()
            .filter(|(p, _)| !p.ends_with("LOCK"))
            .map(|(p, (len, _, crc))| (p, len, crc))
            .collect()
    };
    let before = files(&root);
    for mode in [
        raftwal::RecoveryMode::TolerateTailCorruption,
        raftwal::RecoveryMode::AbsoluteConsistency,
    ] {
        let opts = EngineOptions {
            recovery_mode: mode,
            ..EngineOptions::default()
        };
        match Engine::open_with(&root, opts) {
            Ok(_) => panic!("{mode:?}: opened"),
            Err(e) => {
                let msg = e.to_string();
                for w in words {
                    assert!(msg.contains(w), "{mode:?}: {w:?} not in {msg}");
                }
            }
        }
        assert_eq!(
            files(&root),
            before,
            "{mode:?}: a refused open changed the root"
        );
    }
}

/// The meta copy in use damaged, the other copy written after the checkpoint: group 7's
/// copies are its two snapshot installs' (the image's, after record 3, and one more here, after
/// record 7); the journal holds every record after the older one, and open brings the group
/// back whole. The tools show it whole after replay, and `verify` reports the damaged copy.
#[test]
fn a_group_meta_fallback_the_journal_makes_whole_is_shown_whole() {
    let tmp = TempDir::new().unwrap();
    let root = tmp.path().join("root");
    let mut snap = Snapshot::default();
    snap.data = Bytes::from(snapshot_data());
    snap.mut_metadata().index = 200;
    snap.mut_metadata().term = 4;
    snap.mut_metadata().mut_conf_state().voters = vec![1, 2, 3, 4];
    opened_and_killed(image(), &root, |e| {
        let g = e.group(7).unwrap();
        g.save(&hs(4, 1, 201), &entries(201, 202, 4, 7), &snap)
            .unwrap();
    });
    let whole = group(&inspect_json(&root), 7)["after_replay"].clone();
    assert_eq!(whole["last_index"], 202);
    let meta = root.join("groups/7").join(META_FILE);
    let newest = json(&ok(&["inspect", p(&root), "--group", "7", "--json"]))["groups"][0]
        ["meta_copies"]["in_use"]
        .as_u64()
        .unwrap();
    let region = fs::metadata(&meta).unwrap().len() / 2;
    flip(&meta, (newest - 1) * region + META_RECORD_AT + 8);
    let doc = inspect_json(&root);
    let g7 = group(&doc, 7);
    assert_eq!(g7["meta_copies"]["in_use"], 3 - newest, "{g7}");
    assert_eq!(g7["meta_copies"]["other"], "damaged", "{g7}");
    assert_eq!(g7["journal_seq"], 3);
    assert_eq!(g7["after_replay"], whole);
    assert_eq!(g7["damage"], Value::Null);
    assert_eq!(doc["open_error"], Value::Null);
    let verify = fails(&["verify", p(&root)], 1);
    assert!(
        verify.stderr.contains("groups/7/wal.meta at offset"),
        "{}",
        verify.stderr
    );
    let engine = Engine::open(&root).unwrap();
    let g = engine.group(7).unwrap();
    assert_eq!(
        (g.first_index().unwrap(), g.last_index().unwrap()),
        (201, 202)
    );
    let served = g
        .entries(201, 203, None, GetEntriesContext::empty(false))
        .unwrap();
    assert_eq!(served, entries(201, 202, 4, 7));
    let s = g.snapshot(0, 0).unwrap();
    assert_eq!(s.get_metadata().index, 200);
    assert_eq!(s.data, Bytes::from(snapshot_data()));
    engine.close().unwrap();
}

/// A bit flipped in a slot of a group's log file: `verify` names the file and the slot's
/// offset; `dump` refuses to print the entry. The slot lies below the group's
/// `truncate_entries_until(45)`, which open replays from the journal by sealing each slot below
/// it again with its data dropped, each checked first: so open fails naming the file, and
/// `inspect` says it will (it once said open succeeds).
#[test]
fn a_damaged_group_slot_fails_verify_and_dump() {
    let tmp = TempDir::new().unwrap();
    let root = image_copy(&tmp);
    let wal = root.join("groups/1/00001.wal");
    flip(&wal, slot_at(4) + SLOT_TERM_AT + 2);
    let run = fails(&["inspect", p(&root), "--json"], 1);
    assert!(run.stderr.contains("open will fail"), "{}", run.stderr);
    let doc = json(&run.stdout);
    let damage = group(&doc, 1)["damage"].as_str().unwrap();
    assert!(damage.contains("00001.wal at offset 128"), "{damage}");
    let Err(err) = raftwal::Engine::open(&root) else {
        panic!("open replayed a truncation over a damaged slot")
    };
    assert!(
        err.to_string().contains("groups/1/00001.wal at offset 128"),
        "{err}"
    );
    let run = fails(&["verify", p(&root)], 1);
    assert!(
        run.stderr.contains("groups/1/00001.wal at offset 128"),
        "{}",
        run.stderr
    );
    assert!(
        run.stdout.contains("group 2         1 file, 10 entries"),
        "{}",
        run.stdout
    );
    let run = fails(&["dump", p(&root), "--group", "1"], 1);
    assert!(
        run.stderr.contains("00001.wal at offset 128"),
        "{}",
        run.stderr
    );
    ok(&[
        "dump",
        p(&root),
        "--group",
        "1",
        "--from",
        "6",
        "--to",
        "62",
    ]);
}

// ---------------------------------------------------------------------------------------------
// dump and snapshot save
// ---------------------------------------------------------------------------------------------

/// Clears flag bit 2 ("data dropped", docs/FORMAT.md) of every slot of `wal` that has it, with
/// the slot's CRC32C recomputed: the file as it was before `truncate_entries_until` wrote it.
fn undo_truncate(wal: &Path) -> usize {
    let f = OpenOptions::new().read(true).write(true).open(wal).unwrap();
    let mut undone = 0;
    let (flags, crc_at) = (SLOT_FLAGS_AT as usize, SLOT_CRC_AT as usize);
    for k in 0..SLOTS_PER_FILE {
        let mut slot = [0u8; SLOT_LEN as usize];
        f.read_exact_at(&mut slot, slot_at(k)).unwrap();
        if slot.iter().all(|&b| b == 0) {
            break;
        }
        if slot[flags] & SLOT_FLAG_DATA_DROPPED == 0 {
            continue;
        }
        slot[flags] &= !SLOT_FLAG_DATA_DROPPED;
        let offset = slot_payload_offset(&slot);
        let mut end = offset + slot_data_len(&slot);
        if slot[flags] & SLOT_FLAG_CONTEXT != 0 {
            let mut c = [0u8; CONTEXT_LEN_LEN as usize];
            f.read_exact_at(&mut c, end).unwrap();
            end += CONTEXT_LEN_LEN + u32::from_le_bytes(c) as u64;
        }
        let mut payload = vec![0u8; (end - offset) as usize];
        f.read_exact_at(&mut payload, offset).unwrap();
        let crc = crc32c::crc32c_append(crc32c::crc32c(&slot[..crc_at]), &payload);
        slot[crc_at..].copy_from_slice(&crc.to_le_bytes());
        f.write_all_at(&slot, slot_at(k)).unwrap();
        undone += 1;
    }
    undone
}

/// A `truncate_entries_until` that only the journal holds (its writes to the files lost, as in
/// a power cut before a checkpoint) is applied to the files' entries too, as replay does.
#[test]
fn a_truncate_only_the_journal_holds_applies_to_the_files_entries() {
    let tmp = TempDir::new().unwrap();
    let root = image_copy(&tmp);
    let undone = undo_truncate(&root.join("groups/1/00001.wal"));
    assert!(undone > 0, "no slot had its data dropped");
    ok(&["verify", p(&root), "--group", "1"]);
    assert_eq!(dump_json(&root, "1", &[]), dump_lines(&group1(1, 62)));
    let engine = Engine::open(&root).unwrap();
    let g = engine.group(1).unwrap();
    let served = g
        .entries(1, 63, None, GetEntriesContext::empty(false))
        .unwrap();
    assert_eq!(served, group1(1, 62));
    engine.close().unwrap();
}

/// `dump ROOT --group ID` serves the log as an opened engine would: from the files below what
/// the journal replaced, then from the journal.
#[test]
fn dump_group_reads_the_files_then_the_journal() {
    let lines = dump_json(image(), "2", &[]);
    let expected: Vec<Entry> = entries(1, 7, 1, 2)
        .into_iter()
        .chain(entries(8, 12, 2, 2))
        .collect();
    assert_eq!(lines, dump_lines(&expected));
    let lines = dump_json(image(), "1", &["--from", "38", "--to", "45"]);
    assert_eq!(lines, dump_lines(&group1(38, 45)));
    let text = ok(&["dump", p(image()), "--group", "7"]);
    assert_eq!(text.lines().count(), 3, "{text}");
    assert!(text.starts_with("index=101 term=3 "), "{text}");
    let err = fails(
        &[
            "dump",
            p(image()),
            "--group",
            "7",
            "--from",
            "50",
            "--to",
            "101",
        ],
        2,
    );
    assert!(
        err.stderr.contains("outside the log: it holds 101..=103"),
        "{}",
        err.stderr
    );
}

#[test]
fn snapshot_save_group_archives_the_groups_snapshot() {
    let tmp = TempDir::new().unwrap();
    let out = tmp.path().join("g7.tar.gz");
    let text = ok(&["snapshot", "save", p(image()), p(&out), "--group", "7"]);
    assert!(text.contains("saved snapshot index 100 term 3"), "{text}");
    assert!(text.contains("of group 7"), "{text}");
    let status = json(&ok(&["snapshot", "status", p(&out), "--json"]));
    assert_eq!(status["index"], 100);
    assert_eq!(status["term"], 3);
    assert_eq!(status["size"], 3000);
    assert_eq!(status["conf_state"]["voters"], serde_json::json!([1, 2, 3]));
    let restored = tmp.path().join("restored");
    ok(&["snapshot", "restore", p(&out), p(&restored)]);
    let store = raftwal::DiskStorage::open(&restored).unwrap();
    assert_eq!(
        &store.snapshot(0, 0).unwrap().data[..],
        &snapshot_data()[..]
    );
    store.close().unwrap();
    // Group 1 has no snapshot.
    let err = fails(
        &[
            "snapshot",
            "save",
            p(image()),
            p(&tmp.path().join("g1.tar.gz")),
            "--group",
            "1",
        ],
        2,
    );
    assert!(err.stderr.contains("has no snapshot"), "{}", err.stderr);
}

// ---------------------------------------------------------------------------------------------
// bad input, read-only, keys
// ---------------------------------------------------------------------------------------------

#[test]
fn an_unknown_group_is_an_error_with_exit_code_2() {
    let tmp = TempDir::new().unwrap();
    let out = tmp.path().join("x.tar.gz");
    for args in [
        vec!["inspect", p(image()), "--group", "9"],
        vec!["verify", p(image()), "--group", "9"],
        vec!["dump", p(image()), "--group", "9"],
        vec!["snapshot", "save", p(image()), p(&out), "--group", "9"],
    ] {
        let run = fails(&args, 2);
        assert!(
            run.stderr.contains("no group 9 in the engine at")
                && run.stderr.contains("(its groups: 1,2,7)"),
            "{args:?}: {}",
            run.stderr
        );
        assert_eq!(run.stdout, "");
    }
    assert!(!out.exists());
}

#[test]
fn group_needs_an_engine_root_and_dump_needs_a_group() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path().join("wal");
    let store = raftwal::DiskStorage::open(&dir).unwrap();
    store
        .save(&hs(1, 1, 1), &entries(1, 1, 1, 0), &Snapshot::default())
        .unwrap();
    store.close().unwrap();
    for cmd in ["inspect", "verify", "dump"] {
        let run = fails(&[cmd, p(&dir), "--group", "1"], 2);
        assert!(
            run.stderr.contains("--group needs an engine root"),
            "{}",
            run.stderr
        );
    }
    let run = fails(&["dump", p(image())], 2);
    assert!(
        run.stderr
            .contains("is an engine root: name the group with --group ID (its groups: 1,2,7)"),
        "{}",
        run.stderr
    );
    let run = fails(
        &[
            "snapshot",
            "save",
            p(image()),
            p(&tmp.path().join("a.tar.gz")),
        ],
        2,
    );
    assert!(
        run.stderr.contains("name the group with --group ID"),
        "{}",
        run.stderr
    );
}

/// Every read command leaves the root as it found it: no lock taken, nothing written.
#[test]
fn read_commands_change_nothing_in_a_root() {
    let tmp = TempDir::new().unwrap();
    let root = image_copy(&tmp);
    let before = tree_state(&root);
    ok(&["inspect", p(&root)]);
    ok(&["inspect", p(&root), "--json", "--group", "1"]);
    ok(&["verify", p(&root)]);
    ok(&["dump", p(&root), "--group", "2"]);
    ok(&[
        "snapshot",
        "save",
        p(&root),
        p(&tmp.path().join("s.tar.gz")),
        "--group",
        "7",
    ]);
    assert_eq!(tree_state(&root), before);
}

/// An encrypted root needs its key, given as for a WAL directory (`--key-file`).
#[test]
fn an_encrypted_root_is_read_with_its_key() {
    let tmp = TempDir::new().unwrap();
    let root = tmp.path().join("root");
    crash_image(&root, Some(KEY), None);
    let key_file = tmp.path().join("key");
    fs::write(
        &key_file,
        KEY.iter().map(|b| format!("{b:02x}")).collect::<String>(),
    )
    .unwrap();
    let run = fails(&["inspect", p(&root)], 2);
    assert!(run.stderr.contains("encrypted"), "{}", run.stderr);
    let k = p(&key_file);
    let doc = json(&ok(&["inspect", p(&root), "--json", "--key-file", k]));
    assert_eq!(group(&doc, 1)["after_replay"]["last_index"], 62);
    let lines: Vec<Value> = ok(&["dump", p(&root), "--group", "2", "--json", "--key-file", k])
        .lines()
        .map(json)
        .collect();
    let expected: Vec<Entry> = entries(1, 7, 1, 2)
        .into_iter()
        .chain(entries(8, 12, 2, 2))
        .collect();
    assert_eq!(lines, dump_lines(&expected));
    ok(&["verify", p(&root), "--key-file", k]);
    let wrong = tmp.path().join("wrong");
    fs::write(&wrong, [7u8; 32]).unwrap();
    let run = fails(&["verify", p(&root), "--key-file", p(&wrong)], 2);
    assert!(run.stderr.contains("raftwal: "), "{}", run.stderr);
}

/// With the key, `verify ROOT` (and `--group`) authenticates every sealed payload of every
/// group, as a read does: a ciphertext byte of group 1's entry 30 flipped with its slot CRC fixed
/// up is damage (exit code 1) naming the file, slot and index, and `dump --group 1` refuses the
/// entry. Review 33 found verify checking the CRC only, so it passed such a root.
#[test]
fn verify_root_with_the_key_names_a_group_entry_that_fails_authentication() {
    let tmp = TempDir::new().unwrap();
    let root = tmp.path().join("root");
    crash_image(&root, Some(KEY), None);
    let key_file = tmp.path().join("key");
    fs::write(&key_file, KEY).unwrap();
    let k = p(&key_file);
    ok(&["verify", p(&root), "--key-file", k]);

    let wal = root.join("groups/1").join(layout::log_name(1));
    let mut bytes = fs::read(&wal).unwrap();
    let (at, _) = layout::sealed_payload(&bytes, 29);
    bytes[(at + layout::SEALED_CIPHERTEXT_AT) as usize] ^= 0x01;
    layout::fix_sealed_slot_crc(&mut bytes, 29);
    fs::write(&wal, &bytes).unwrap();

    let named = |s: &str| {
        s.contains(&format!("groups/1/00001.wal at offset {at}"))
            && s.contains("slot 29 (index 30)")
            && s.contains("fails authentication")
    };
    for args in [
        vec!["verify", p(&root), "--key-file", k],
        vec!["verify", p(&root), "--key-file", k, "--group", "1"],
    ] {
        let run = fails(&args, 1);
        assert!(named(&run.stderr), "{args:?}: {}", run.stderr);
    }
    let run = fails(&["verify", p(&root), "--key-file", k, "--json"], 1);
    let doc = json(&run.stdout);
    let damage = group(&doc, 1)["damage"].as_array().unwrap();
    assert!(
        damage.iter().any(|d| named(d.as_str().unwrap())),
        "{damage:?}"
    );
    ok(&["verify", p(&root), "--key-file", k, "--group", "2"]);
    let run = fails(&["dump", p(&root), "--group", "1", "--key-file", k], 1);
    assert!(
        run.stderr.contains("index 30") && run.stderr.contains("fails authentication"),
        "{}",
        run.stderr
    );
    // The entries before it are printed, it is not.
    let printed: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(printed.len(), 29, "{}", run.stdout);
    assert!(printed[28].starts_with("index=29 "), "{}", run.stdout);
    ok(&[
        "dump",
        p(&root),
        "--group",
        "1",
        "--key-file",
        k,
        "--from",
        "31",
    ]);
}

/// A root's encryption is its `engine.meta`'s: on a root with no group (before the first, or
/// every group removed) the tools refuse a key that does not fit as `Engine::open` does, exit 2
/// naming `engine.meta` (no key, another key, a key for a plaintext root), and read it with its
/// own. (They once read such a root whatever key they were given, and so did open.)
#[test]
fn the_tools_refuse_a_key_that_does_not_fit_a_root_without_groups() {
    let tmp = TempDir::new().unwrap();
    let keyed = tmp.path().join("keyed");
    let e = Engine::open_with(&keyed, opts(Some(KEY), None)).unwrap();
    e.create_group(3, 33).unwrap();
    e.remove_group(3).unwrap();
    e.close().unwrap();
    let plain = tmp.path().join("plain");
    Engine::open_with(&plain, opts(None, None))
        .unwrap()
        .close()
        .unwrap();
    let key_file = tmp.path().join("key");
    fs::write(
        &key_file,
        KEY.iter().map(|b| format!("{b:02x}")).collect::<String>(),
    )
    .unwrap();
    let wrong = tmp.path().join("wrong");
    fs::write(&wrong, [7u8; 32]).unwrap();
    let k = p(&key_file);
    for cmd in ["inspect", "verify"] {
        for (root, key, words) in [
            (&keyed, None, "is encrypted"),
            (&keyed, Some(p(&wrong)), "does not open"),
            (&plain, Some(k), "not encrypted"),
        ] {
            let mut args = vec![cmd, p(root)];
            args.extend(key.map(|k| ["--key-file", k]).into_iter().flatten());
            let run = fails(&args, 2);
            assert!(
                run.stderr.contains("engine.meta") && run.stderr.contains(words),
                "{args:?}: {}",
                run.stderr
            );
        }
        ok(&[cmd, p(&keyed), "--key-file", k]);
        ok(&[cmd, p(&plain)]);
    }
}

// ---------------------------------------------------------------------------------------------
// beside a live engine
// ---------------------------------------------------------------------------------------------

/// The tools read a root while an engine in this process holds its lock, with commits only in
/// the journal (no checkpoint yet: the root's checkpoint is the one the close left, which the
/// check confirms, or the scenario runs again).
#[test]
fn inspect_verify_and_dump_run_beside_a_live_engine() {
    for _ in 0..5 {
        let tmp = TempDir::new().unwrap();
        let root = tmp.path().join("root");
        let Ok(engine) = write_history(&root, None, None) else {
            continue;
        };
        let before = inspect_json(&root);
        let verify = ok(&["verify", p(&root)]);
        let dump = dump_json(&root, "1", &["--from", "39", "--to", "62"]);
        let after = inspect_json(&root);
        if before["checkpoint_seq"] != 1 || after["checkpoint_seq"] != 1 {
            // A background checkpoint ran meanwhile: the journal no longer holds the records.
            continue;
        }
        assert_eq!(before["open"], true);
        assert!(root.join("LOCK").exists());
        let g1 = group(&before, 1);
        assert_eq!(g1["in_files"]["last_index"], 40);
        assert_eq!(g1["after_replay"]["last_index"], 62);
        let served = engine.group(1).unwrap().last_index().unwrap();
        assert_eq!(served, 62);
        assert!(verify.contains("3 groups: ok"), "{verify}");
        assert_eq!(dump, dump_lines(&group1(39, 62)));
        engine.close().unwrap();
        return;
    }
    panic!("a checkpoint ran during every attempt");
}

/// The tools beside an engine at work (commits to three groups, checkpoints and journal trims
/// every few commits, a snapshot of group 2 every five, which removes its older snapshot file):
/// every run ends with exit code 0 (a moment's view, consistent, without false damage) and
/// never a panic.
#[test]
fn the_tools_ride_out_an_engine_at_work() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let tmp = TempDir::new().unwrap();
    let root = tmp.path().join("root");
    let e = Arc::new(
        Engine::open_with(
            &root,
            EngineOptions {
                journal_segment_bytes: 64 << 10,
                checkpoint_bytes: 128 << 10,
                ..Default::default()
            },
        )
        .unwrap(),
    );
    for g in 1..=3 {
        e.create_group(g, g).unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (e, stop) = (Arc::clone(&e), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut next = [1u64; 4];
            let mut b = WriteBatch::new();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                for g in 1..=3u64 {
                    let lo = next[g as usize];
                    let es: Vec<Entry> = (lo..lo + 8)
                        .map(|i| {
                            let mut x = entry_in_group(i, 1, g);
                            x.data = Bytes::from(vec![g as u8; 500]);
                            x
                        })
                        .collect();
                    b.save(g, &hs(1, 1, lo + 7), &es, &Snapshot::default());
                    next[g as usize] += 8;
                }
                e.write(&mut b).unwrap();
                n += 1;
                if n.is_multiple_of(5) {
                    let g = e.group(2).unwrap();
                    let last = g.last_index().unwrap();
                    g.create_snapshot(last - 5, None, vec![9u8; 1000]).unwrap();
                }
            }
            n
        })
    };
    let start = Instant::now();
    let mut failures = Vec::new();
    let mut runs = 0;
    while start.elapsed().as_secs() < 4 {
        for args in [
            vec!["inspect", p(&root)],
            vec!["verify", p(&root)],
            vec!["dump", p(&root), "--group", "2", "--json"],
        ] {
            let run = raftwal(&args);
            runs += 1;
            if run.code != 0 {
                failures.push(format!("{args:?}: exit {}: {}", run.code, run.stderr));
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    let commits = writer.join().unwrap();
    assert!(
        failures.is_empty(),
        "{} of {runs} runs failed: {failures:#?}",
        failures.len()
    );
    assert!(commits > 10, "the engine barely wrote ({commits} commits)");
}

/// The journal gone from a root whose checkpoint it held records after (the crash image: its
/// directory removed, or every segment in it): open refuses, naming the journal's directory,
/// and the tools say so ("open will fail", `verify` exit 1) rather than report a root that
/// opens without the records after the checkpoint.
#[test]
fn a_journal_gone_after_the_checkpoint_fails_open_and_the_tools() {
    for whole_dir in [true, false] {
        let tmp = TempDir::new().unwrap();
        let root = image_copy(&tmp);
        assert!(inspect_json(&root)["checkpoint_seq"].as_u64().unwrap() > 0);
        let journal = root.join("journal");
        if whole_dir {
            fs::remove_dir_all(&journal).unwrap();
        } else {
            for ent in fs::read_dir(&journal).unwrap() {
                fs::remove_file(ent.unwrap().path()).unwrap();
            }
        }
        let err = open_copy_fails(
            &root,
            &tmp.path().join("opened"),
            EngineOptions::default(),
            "opened without the journal's records",
        );
        assert!(err.contains("checkpoint"), "{err}");
        let open_error = open_will_fail(&root);
        assert!(open_error.starts_with("journal: "), "{open_error}");
        assert!(
            open_error.contains(p(&journal)) && open_error.contains("checkpoint"),
            "{open_error}"
        );
        let run = fails(&["verify", p(&root)], 1);
        assert!(run.stderr.contains("checkpoint"), "{}", run.stderr);
    }
}

/// A young root (written, killed before any checkpoint) whose journal directory is gone:
/// `inspect` says open will fail, naming the journal, and `verify` fails, as `Engine::open`
/// refuses it (`tests/engine_damage.rs` `a_young_roots_lost_journal_is_refused_naming_it`).
/// Before `engine.meta` said the journal had begun, the tools, like open, saw a root never
/// written, with its group empty.
#[test]
fn a_young_roots_lost_journal_fails_open_and_the_tools() {
    let tmp = TempDir::new().unwrap();
    let live = tmp.path().join("live");
    let e = Engine::open(&live).unwrap();
    e.create_group(1, 1).unwrap();
    let es: Vec<Entry> = (1..=10).map(|i| entry_in_group(i, 1, 1)).collect();
    let mut hs = HardState::default();
    (hs.term, hs.commit) = (1, 10);
    let mut b = WriteBatch::new();
    b.save(1, &hs, &es, &Snapshot::default());
    e.write(&mut b).unwrap();
    let root = tmp.path().join("young");
    roots::kill_image(&live, &root);
    e.close().unwrap();
    assert_eq!(inspect_json(&root)["checkpoint_seq"].as_u64(), Some(0));
    let journal = root.join("journal");
    fs::remove_dir_all(&journal).unwrap();
    let err = open_copy_fails(
        &root,
        &tmp.path().join("opened"),
        EngineOptions::default(),
        "opened without the journal's records",
    );
    assert!(err.contains("first open"), "{err}");
    let open_error = open_will_fail(&root);
    assert!(
        open_error.starts_with("journal: ") && open_error.contains(p(&journal)),
        "{open_error}"
    );
    let run = fails(&["verify", p(&root)], 1);
    assert!(run.stderr.contains("first open"), "{}", run.stderr);
}

/// A group's `.wal` header and a checkpointed journal record both damaged: open reads the
/// groups before the journal and names the `.wal` file; "open will fail" names it too (it once named the
/// journal record).
#[test]
fn open_will_fail_names_a_groups_damage_before_the_journals() {
    let tmp = TempDir::new().unwrap();
    let root = image_copy(&tmp);
    flip(
        &root.join("groups/1").join(layout::log_name(1)),
        layout::FILE_HEADER_AT + 20,
    );
    let seg = segment(&root);
    // Record 1, below the checkpoint: damage, not a torn tail.
    let at = record_offsets(&seg)[&1];
    flip(&seg, at + layout::RECORD_BODY_AT + 3);
    let err = open_copy_fails(
        &root,
        &tmp.path().join("opened"),
        EngineOptions::default(),
        "opened a damaged root",
    );
    assert!(err.contains("00001.wal"), "{err}");
    let open_error = open_will_fail(&root);
    assert!(
        open_error.starts_with("group 1: ") && open_error.contains("00001.wal"),
        "{open_error}"
    );
}

// ---------------------------------------------------------------------------------------------
// repair of a group directory
// ---------------------------------------------------------------------------------------------

/// Flips a payload byte of group 1's entry `index` (in its first file).
fn flip_group1_payload(root: &Path, index: u64) {
    let wal = root.join("groups/1").join(layout::log_name(1));
    let f = fs::File::open(&wal).unwrap();
    let mut slot = [0u8; SLOT_LEN as usize];
    f.read_exact_at(&mut slot, slot_at(index - 1)).unwrap();
    flip(&wal, slot_payload_offset(&slot) + 3);
}

/// `raftwal repair` on a group directory is refused, as `DiskStorage::open` is, while an engine
/// has the root open and on a root an engine did not close cleanly (the group's latest state
/// may be in the journal, which a repair of its files would not see); nothing changes.
#[test]
fn repair_is_refused_on_a_group_of_an_open_or_crashed_engine() {
    let tmp = TempDir::new().unwrap();
    let root = image_copy(&tmp);
    let gdir = root.join("groups/1");
    let before = tree_state(&root);
    for args in [
        vec!["repair", p(&gdir)],
        vec!["repair", p(&gdir), "--accept-data-loss"],
    ] {
        let err = fails(&args, 2).stderr;
        assert!(err.contains("not closed cleanly"), "{err}");
    }
    assert_eq!(tree_state(&root), before, "repair changed a crashed root");

    Engine::open(&root).unwrap().close().unwrap();
    flip_group1_payload(&root, 50);
    let engine = Engine::open(&root).unwrap();
    let before = tree_state(&gdir);
    let err = fails(&["repair", p(&gdir), "--accept-data-loss"], 2).stderr;
    assert!(err.contains("engine"), "{err}");
    assert_eq!(
        tree_state(&gdir),
        before,
        "repair changed a running engine's group"
    );
    engine.close().unwrap();
}

/// `raftwal repair --accept-data-loss` on a group of a cleanly closed root cuts the group's log
/// and rewrites the engine fields of its meta page to match (`last_index`, `tail_payload_end`,
/// `last_file_id`), which `Engine::open` trusts instead of scanning: the engine then serves the
/// log up to the cut and takes appends after it. A clean close leaves no journal record after
/// the checkpoint, so replay puts nothing back past the cut.
#[test]
fn repair_of_an_engine_group_rewrites_the_engine_fields_to_the_cut() {
    let tmp = TempDir::new().unwrap();
    let root = image_copy(&tmp);
    Engine::open(&root).unwrap().close().unwrap();
    flip_group1_payload(&root, 50);
    let gdir = root.join("groups/1");
    let text = ok(&["repair", p(&gdir), "--accept-data-loss"]);
    assert!(text.contains("log cut after index 49"), "{text}");
    assert!(
        text.contains("commit index lowered from 60 to 49"),
        "{text}"
    );
    let verify = ok(&["verify", p(&root)]);
    assert!(verify.ends_with(": ok\n"), "{verify}");

    let ctx = || GetEntriesContext::empty(false);
    let engine = Engine::open(&root).unwrap();
    let g = engine.group(1).unwrap();
    assert_eq!(g.last_index().unwrap(), 49);
    assert_eq!(g.initial_state().unwrap().hard_state.commit, 49);
    assert_eq!(g.entries(1, 50, None, ctx()).unwrap(), group1(1, 49));
    assert!(g.term(50).is_err(), "index 50 was cut");
    g.save(&HardState::default(), &group1(50, 52), &Snapshot::default())
        .unwrap();
    drop(g);
    engine.close().unwrap();
    let engine = Engine::open(&root).unwrap();
    let g = engine.group(1).unwrap();
    assert_eq!(g.last_index().unwrap(), 52);
    assert_eq!(g.entries(40, 53, None, ctx()).unwrap(), group1(40, 52));
    drop(g);
    engine.close().unwrap();
    ok(&["verify", p(&root)]);
}

/// A cleanly closed root holding groups `ids`, each with entries 1 to 10 (commit 10).
fn closed_root(root: &Path, ids: &[u64]) {
    let e = Engine::open(root).unwrap();
    let mut b = WriteBatch::new();
    for &id in ids {
        e.create_group(id, 1).unwrap();
        b.save(
            id,
            &hs(1, 1, 10),
            &entries(1, 10, 1, id),
            &Snapshot::default(),
        );
    }
    e.write(&mut b).unwrap();
    e.close().unwrap();
}

/// Four ways the tools once judged a root otherwise than open does (found by a review,
/// 2026-12-06), each checked against `Engine::open` on a copy; each failed before its fix:
/// - a `wal.meta` beside `engine.meta`: open refuses the root, `inspect` said it opens (exit 0);
/// - two damaged groups: open named the first its directory listed, the tools the lowest id
///   (open now reads the groups in id order);
/// - segments lost behind a group's meta page: open and `inspect` refuse, `verify` said ok;
/// - a group's log file cut short: open names it at its end, the tools at offset 960,000 with
///   "no file header".
#[test]
fn the_tools_judge_a_root_as_open_does() {
    let tmp = tempfile::tempdir().unwrap();

    let root = tmp.path().join("wal-meta");
    closed_root(&root, &[1]);
    fs::copy(root.join("groups/1/wal.meta"), root.join("wal.meta")).unwrap();
    let tools = open_will_fail(&root);
    let copy = tmp.path().join("c1");
    let open = open_copy_fails(&root, &copy, opts(None, None), "a wal.meta");
    assert_eq!(tools, open.replace(p(&copy), p(&root)));
    assert_eq!(raftwal(&["verify", p(&root)]).code, 1);

    let root = tmp.path().join("two-damaged");
    let ids: Vec<u64> = (1..=8).collect();
    closed_root(&root, &ids);
    for id in [3, 6] {
        fs::write(
            root.join(format!("groups/{id}/wal.meta")),
            b"not a meta page",
        )
        .unwrap();
    }
    let tools = open_will_fail(&root);
    let open = open_copy_fails(
        &root,
        &tmp.path().join("c2"),
        opts(None, None),
        "two damaged",
    );
    assert!(open.contains("groups/3/wal.meta"), "open: {open}");
    assert!(tools.contains("groups/3/wal.meta"), "tools: {tools}");

    let live = tmp.path().join("live");
    let e = Engine::open(&live).unwrap();
    let g = e.create_group(1, 1).unwrap();
    g.save(&hs(1, 1, 10), &entries(1, 10, 1, 1), &Snapshot::default())
        .unwrap();
    g.create_snapshot(5, None, Bytes::from_static(b"at 5"))
        .unwrap();
    let root = tmp.path().join("journal-behind");
    roots::kill_image(&live, &root);
    drop(g);
    e.close().unwrap();
    for ent in fs::read_dir(root.join("journal")).unwrap() {
        let path = ent.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        if name.ends_with(".jnl") && !name.starts_with("spare-") {
            let mut b = fs::read(&path).unwrap();
            let at = layout::SEGMENT_RECORDS_AT as usize;
            if b.len() > at {
                b[at..].fill(0);
            }
            fs::write(&path, b).unwrap();
        }
    }
    let tools = open_will_fail(&root);
    let open = open_copy_fails(
        &root,
        &tmp.path().join("c3"),
        opts(None, None),
        "lost records",
    );
    assert!(
        open.contains("journal ends") && tools.contains("journal ends"),
        "open: {open}\ntools: {tools}"
    );
    let verify = raftwal(&["verify", p(&root)]);
    assert_eq!(verify.code, 1, "verify: {}{}", verify.stdout, verify.stderr);

    let root = tmp.path().join("cut-file");
    closed_root(&root, &[1]);
    let wal = root.join("groups/1").join(layout::log_name(1));
    OpenOptions::new()
        .write(true)
        .open(&wal)
        .unwrap()
        .set_len(4096)
        .unwrap();
    let tools = open_will_fail(&root);
    let copy = tmp.path().join("c4");
    let open = open_copy_fails(&root, &copy, opts(None, None), "a cut file");
    assert!(open.contains("at offset 4096"), "open: {open}");
    let open = open.replace(p(&copy), p(&root));
    assert!(tools.ends_with(&open), "open: {open}\ntools: {tools}");
}

/// Alters one byte of the sealed body of record `seq` in `segment_path` and fixes the record's
/// checksum again (which needs no key): what only tampering, or a writer's bug, leaves.
fn alter_sealed_record(segment_path: &Path, seq: u64) {
    let at = record_offsets(segment_path)[&seq];
    let mut b = fs::read(segment_path).unwrap();
    let u32_at =
        |b: &[u8], o: u64| u32::from_le_bytes(b[o as usize..o as usize + 4].try_into().unwrap());
    let len = u32_at(&b, at + RECORD_LEN_AT) as u64;
    b[(at + RECORD_BODY_AT + 12) as usize] ^= 0x01;
    let crc =
        crc32c::crc32c(&b[(at + RECORD_SEQ_AT) as usize..(at + RECORD_BODY_AT + len) as usize]);
    b[(at + RECORD_CRC_AT) as usize..(at + RECORD_CRC_AT + 4) as usize]
        .copy_from_slice(&crc.to_le_bytes());
    fs::write(segment_path, b).unwrap();
}

/// A sealed journal record altered with its checksum fixed, opened with the root's own key:
/// damage (`Corrupt` naming the segment, `verify` exit 1), never "the key does not fit"; and,
/// once the checkpoint covers the record, the root opens and the tools read it as open does
/// (open checks such a record's checksum, not its seal). Open reported `Error::Encryption`
/// ("fails authentication with this key") and `verify` exit 2 for the first, and the tools
/// refused the second root (exit 2) where open opened it (found by a review, 2026-12-06).
#[test]
fn an_altered_sealed_record_is_damage_and_is_read_as_open_reads_it() {
    let tmp = tempfile::tempdir().unwrap();
    let key_file = tmp.path().join("key");
    fs::write(&key_file, KEY).unwrap();
    let k = p(&key_file);
    let write = |root: &Path| {
        let e = Engine::open_with(root, opts(Some(KEY), None)).unwrap();
        e.create_group(1, 1).unwrap();
        let mut b = WriteBatch::new();
        b.save(1, &hs(1, 1, 5), &entries(1, 5, 1, 1), &Snapshot::default());
        e.write(&mut b).unwrap();
        e
    };
    // After a crash: the record lies after the checkpoint, open replays it.
    let live = tmp.path().join("live");
    let root = tmp.path().join("crashed");
    let e = write(&live);
    roots::kill_image(&live, &root);
    e.close().unwrap();
    let seq = *record_offsets(&segment(&root)).keys().last().unwrap();
    alter_sealed_record(&segment(&root), seq);
    let copy = tmp.path().join("crashed-copy");
    roots::copy_tree(&root, &copy);
    match Engine::open_with(&copy, opts(Some(KEY), None)) {
        Err(raftwal::Error::Corrupt { path, .. }) => assert_eq!(path, segment(&copy)),
        other => panic!("the root's own key, an altered record: {:?}", other.err()),
    }
    let run = fails(&["verify", p(&root), "--key-file", k], 1);
    assert!(
        run.stderr.contains("fails authentication"),
        "{}",
        run.stderr
    );

    // After a clean close: the checkpoint covers the record.
    let root = tmp.path().join("closed");
    write(&root).close().unwrap();
    let seq = *record_offsets(&segment(&root)).keys().last().unwrap();
    alter_sealed_record(&segment(&root), seq);
    ok(&["inspect", p(&root), "--key-file", k]);
    ok(&["verify", p(&root), "--key-file", k]);
    Engine::open_with(&root, opts(Some(KEY), None))
        .unwrap()
        .close()
        .unwrap();
}
