//! The `raftwal` binary as scripts and operators drive it (issue 14, item 7): with `--json`, a
//! failure is one JSON object on stdout (`{"ok": false, "error": {...}}`) besides its one line on
//! stderr; messages that say what is wrong (a directory given as an archive, a file that is not
//! gzip, a missing OUT, "1 file"); `--key-file` and `RAFTWAL_KEY_FILE` only where a key is used;
//! `restore --raft-id` outside `--voters` refused; `dump` over damage prints the good entries
//! first.
//!
//! Each test runs the built binary on small directories written with the library.

use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use raft::prelude::*;
use raftwal::{DiskStorage, MetaInfo, Options};
use serde_json::Value;
use tempfile::TempDir;

#[path = "common/entries.rs"]
mod entries;
#[path = "common/layout.rs"]
mod layout;

use entries::text_entry;
use layout::{slot_of, slot_payload_offset, SLOT_LEN};

/// Entries 1..=LAST (`text_entry`, term 1) in one log file; a snapshot at SNAP_INDEX.
const LAST: u64 = 100;
const SNAP_INDEX: u64 = 20;

/// A WAL directory `tmp/name`: raft id 1, voters 1,2,3, entries 1..=LAST, snapshot at SNAP_INDEX.
fn write_dir(tmp: &TempDir, name: &str) -> PathBuf {
    write_dir_to(tmp, name, LAST)
}

/// [`write_dir`] with entries 1..=`last` (a new log file every 30,000 entries).
fn write_dir_to(tmp: &TempDir, name: &str, last: u64) -> PathBuf {
    let dir = tmp.path().join(name);
    let store = DiskStorage::open_with(
        &dir,
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
    let entries: Vec<Entry> = (1..=last).map(|i| text_entry(i, 1)).collect();
    let mut hs = HardState::default();
    hs.term = 1;
    hs.vote = 1;
    hs.commit = last;
    store.save(&hs, &entries, &Snapshot::default()).unwrap();
    store
        .create_snapshot(SNAP_INDEX, None, b"state".to_vec())
        .unwrap();
    store.close().unwrap();
    dir
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn raftwal_env<S: AsRef<std::ffi::OsStr>>(args: &[S], env: &[(&str, &Path)]) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_raftwal"));
    cmd.args(args).env_remove("RAFTWAL_KEY_FILE");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let run = Run {
        code: out.status.code().expect("raftwal was killed by a signal"),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    };
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
    run
}

fn raftwal<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Run {
    raftwal_env(args, &[])
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn ok<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> String {
    let run = raftwal(args);
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    run.stdout
}

/// Fails with `code` and one line on stderr; returns the run.
fn fails<S: AsRef<std::ffi::OsStr>>(args: &[S], code: i32) -> Run {
    let run = raftwal(args);
    assert_eq!(
        run.code, code,
        "stdout: {}\nstderr: {}",
        run.stdout, run.stderr
    );
    assert_eq!(run.stderr.lines().count(), 1, "stderr: {}", run.stderr);
    assert!(run.stderr.starts_with("raftwal: "), "{}", run.stderr);
    run
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

/// The first log file of `dir`, and where the payload of `index` starts in it (its slot 0
/// holds index 1).
fn payload_of(dir: &Path, index: u64) -> (PathBuf, u64) {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "wal"))
        .collect();
    files.sort();
    let f = fs::File::open(&files[0]).unwrap();
    let mut slot = [0u8; SLOT_LEN as usize];
    f.read_exact_at(&mut slot, slot_of(1, index)).unwrap();
    (files[0].clone(), slot_payload_offset(&slot))
}

// ---------------------------------------------------------------------------------------------
// --json failures
// ---------------------------------------------------------------------------------------------

/// The failure's stdout is exactly one JSON object, `{"ok": false, "error": {...}}`, whose
/// message is the stderr line's and whose exit code is the process's.
fn json_failure(run: &Run) -> Value {
    let mut values = serde_json::Deserializer::from_str(&run.stdout).into_iter::<Value>();
    let v = values
        .next()
        .unwrap_or_else(|| panic!("no JSON on stdout; stderr: {}", run.stderr))
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", run.stdout));
    assert!(
        values.next().is_none(),
        "more than one value: {}",
        run.stdout
    );
    assert_eq!(v["ok"], false, "{v}");
    let line = run.stderr.trim_end().strip_prefix("raftwal: ").unwrap();
    assert_eq!(v["error"]["message"], line, "{v}");
    assert_eq!(v["error"]["exit_code"], run.code, "{v}");
    assert!(v["error"]["kind"].is_string(), "{v}");
    v
}

#[test]
fn json_failures_are_one_object_on_stdout_and_one_line_on_stderr() {
    let tmp = TempDir::new().unwrap();
    let dir = write_dir(&tmp, "wal");
    let missing = tmp.path().join("missing");
    let out = tmp.path().join("out.tar.gz");
    let (d, m, o) = (p(&dir), p(&missing), p(&out));
    for (args, code) in [
        (vec!["inspect", m, "--json"], 2),
        (vec!["verify", m, "--json"], 2),
        (vec!["dump", m, "--json"], 2),
        (vec!["dump", d, "--from", "1", "--json"], 2),
        (vec!["repair", m, "--json"], 2),
        (vec!["snapshot", "status", m, "--json"], 2),
        (vec!["snapshot", "verify", m, "--json"], 2),
        (vec!["snapshot", "save", m, o, "--json"], 2),
        // Bad arguments too, when --json is among them.
        (vec!["dump", d, "--from", "abc", "--json"], 2),
        (vec!["inspect", d, "--json", "--yaml"], 2),
    ] {
        let run = fails(&args, code);
        let v = json_failure(&run);
        assert_eq!(v["error"]["exit_code"], code, "{args:?}: {v}");
    }
    // Damage: exit code 1, the kind says so.
    let (file, at) = payload_of(&dir, 60);
    flip(&file, at + 2);
    let v = json_failure(&fails(&["verify", d, "--json"], 1));
    assert_eq!(v["error"]["kind"], "corrupt", "{v}");
    // inspect's report is the one object: the summary with ok and error.
    let v = json_failure(&fails(&["inspect", d, "--json"], 1));
    assert_eq!(v["raft_id"], 1, "{v}");
    // Without --json, stdout stays empty.
    assert_eq!(fails(&["verify", d], 1).stdout, "");
}

// ---------------------------------------------------------------------------------------------
// archives: messages that say what is wrong
// ---------------------------------------------------------------------------------------------

/// Stdout is one JSON document whose `ok` is not false; returns it.
fn json_report(run: &Run) -> Value {
    let v: Value = serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}): {}", run.stdout));
    assert_ne!(v["ok"], false, "{v}");
    v
}

/// A path that is not UTF-8 is shown in `--json` output lossily (U+FFFD for what is not UTF-8,
/// as the text output shows it): every command prints one valid JSON document and exits with
/// its own outcome, here success, having done its work.
#[test]
fn json_output_shows_a_non_utf8_path_lossily() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let tmp = TempDir::new().unwrap();
    let odd = |name: &[u8]| tmp.path().join(OsStr::from_bytes(name));
    let (dir, archive, restored) = (odd(b"st\xffore"), odd(b"o\xff.tgz"), odd(b"n\xffew"));
    fs::rename(write_dir(&tmp, "wal"), &dir).unwrap();
    let shown = |path: &Path| path.to_string_lossy().into_owned();
    assert!(shown(&dir).contains('\u{fffd}'));
    let run = |args: &[&OsStr]| json_report(&raftwal(args));
    let (json, s) = (OsStr::new("--json"), OsStr::new("snapshot"));

    let doc = run(&["inspect".as_ref(), dir.as_os_str(), json]);
    assert_eq!(doc["dir"], shown(&dir));
    let snap = doc["snapshot"]["file"].as_str().unwrap();
    assert!(snap.starts_with(&shown(&dir)), "{doc}");
    assert_eq!(
        run(&["verify".as_ref(), dir.as_os_str(), json])["dir"],
        shown(&dir)
    );
    assert_eq!(
        run(&["repair".as_ref(), dir.as_os_str(), json])["dir"],
        shown(&dir)
    );
    let dump = ok(&["dump".as_ref(), dir.as_os_str(), json]);
    assert_eq!(dump.lines().count() as u64, LAST - SNAP_INDEX);

    let doc = run(&[
        s,
        "save".as_ref(),
        dir.as_os_str(),
        archive.as_os_str(),
        json,
    ]);
    assert!(archive.is_file(), "save wrote no archive: {doc}");
    assert_eq!(doc["archive"], shown(&archive));
    for cmd in ["status", "verify"] {
        let doc = run(&[s, cmd.as_ref(), archive.as_os_str(), json]);
        assert_eq!(doc["archive"], shown(&archive), "{cmd}");
    }
    ok(&[
        s,
        "restore".as_ref(),
        archive.as_os_str(),
        restored.as_os_str(),
    ]);
    assert!(restored.join("wal.meta").is_file());

    let root = odd(b"ro\xffot");
    let engine = raftwal::Engine::open(&root).unwrap();
    engine.create_group(1, 1).unwrap();
    engine.close().unwrap();
    for cmd in ["inspect", "verify"] {
        let doc = run(&[cmd.as_ref(), root.as_os_str(), json]);
        assert_eq!(doc["root"], shown(&root), "{cmd}");
    }
}

#[test]
fn snapshot_status_of_a_directory_is_a_usage_error_not_damage() {
    let tmp = TempDir::new().unwrap();
    for cmd in ["status", "verify"] {
        let run = fails(&["snapshot", cmd, p(tmp.path())], 2);
        assert!(run.stderr.contains("directory"), "{}", run.stderr);
    }
}

#[test]
fn a_file_that_is_not_gzip_is_named_so_not_truncated() {
    let tmp = TempDir::new().unwrap();
    let file = tmp.path().join("notes.txt");
    fs::write(&file, "these are notes, not an archive\n").unwrap();
    let target = tmp.path().join("restored");
    for args in [
        vec!["snapshot", "status", p(&file)],
        vec!["snapshot", "verify", p(&file)],
        vec!["snapshot", "restore", p(&file), p(&target)],
    ] {
        let run = fails(&args, 1);
        assert!(
            run.stderr.contains("not a gzip archive"),
            "{args:?}: {}",
            run.stderr
        );
        assert!(!run.stderr.contains("truncated"), "{}", run.stderr);
    }
    assert!(!target.exists());
}

#[test]
fn snapshot_save_without_out_names_the_missing_out() {
    let tmp = TempDir::new().unwrap();
    let dir = write_dir(&tmp, "wal");
    let run = fails(&["snapshot", "save", p(&dir)], 2);
    assert!(run.stderr.contains("missing OUT"), "{}", run.stderr);
    assert!(!run.stderr.contains("<DIR>"), "{}", run.stderr);
}

// ---------------------------------------------------------------------------------------------
// plurals
// ---------------------------------------------------------------------------------------------

#[test]
fn verify_counts_one_file_in_the_singular() {
    let tmp = TempDir::new().unwrap();
    let dir = write_dir(&tmp, "wal");
    let text = ok(&["verify", p(&dir)]);
    assert!(
        text.starts_with(&format!("checked 1 file, {LAST} entries,")),
        "{text}"
    );
}

// ---------------------------------------------------------------------------------------------
// --key-file and RAFTWAL_KEY_FILE
// ---------------------------------------------------------------------------------------------

#[test]
fn key_file_is_accepted_only_where_a_key_is_used_and_the_env_wherever_the_flag_is() {
    let tmp = TempDir::new().unwrap();
    let key_file = tmp.path().join("key");
    fs::write(&key_file, "ab".repeat(32)).unwrap();
    let dir = write_dir(&tmp, "wal");
    let archive = tmp.path().join("backup.tar.gz");
    ok(&["snapshot", "save", p(&dir), p(&archive)]);
    let k = p(&key_file);

    // An archive holds no encrypted bytes: status and verify take no key, and a key in the
    // environment (even one that cannot be read) does not stop them.
    for cmd in ["status", "verify"] {
        let run = fails(&["snapshot", cmd, p(&archive), "--key-file", k], 2);
        assert!(run.stderr.contains("--key-file"), "{}", run.stderr);
        let run = raftwal_env(
            &["snapshot", cmd, p(&archive)],
            &[("RAFTWAL_KEY_FILE", &tmp.path().join("no-such-key"))],
        );
        assert_eq!(run.code, 0, "{cmd}: {}", run.stderr);
    }
    // A pull gets the node's plaintext snapshot: no key either.
    let run = fails(
        &[
            "snapshot",
            "save",
            "--endpoint",
            "127.0.0.1:9",
            p(&tmp.path().join("pulled.tar.gz")),
            "--key-file",
            k,
        ],
        2,
    );
    assert!(run.stderr.contains("--key-file"), "{}", run.stderr);

    // An encrypted store, restored with the key from the environment, is read with it by every
    // command that reads a store, from the flag or from the environment.
    let enc = tmp.path().join("encrypted");
    let run = raftwal_env(
        &["snapshot", "restore", p(&archive), p(&enc)],
        &[("RAFTWAL_KEY_FILE", &key_file)],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let e = p(&enc);
    let out2 = tmp.path().join("again.tar.gz");
    for args in [
        vec!["inspect", e],
        vec!["verify", e],
        vec!["dump", e],
        vec!["repair", e],
        vec!["snapshot", "save", e, p(&out2)],
    ] {
        // Without a key the store cannot be read.
        assert_ne!(raftwal(&args).code, 0, "{args:?} read it without a key");
        let run = raftwal_env(&args, &[("RAFTWAL_KEY_FILE", &key_file)]);
        assert_eq!(run.code, 0, "{args:?} with the env: {}", run.stderr);
        let _ = fs::remove_file(&out2);
        let mut with_flag = args.clone();
        with_flag.extend(["--key-file", k]);
        assert_eq!(raftwal(&with_flag).code, 0, "{with_flag:?}");
        let _ = fs::remove_file(&out2);
    }
}

// ---------------------------------------------------------------------------------------------
// restore --raft-id
// ---------------------------------------------------------------------------------------------

#[test]
fn restore_refuses_a_raft_id_outside_the_voters_and_warns_outside_the_archives() {
    let tmp = TempDir::new().unwrap();
    let dir = write_dir(&tmp, "wal");
    let archive = tmp.path().join("backup.tar.gz");
    ok(&["snapshot", "save", p(&dir), p(&archive)]);
    let target = tmp.path().join("restored");
    let a = p(&archive);
    let t = p(&target);

    let run = fails(
        &[
            "snapshot",
            "restore",
            a,
            t,
            "--raft-id",
            "4",
            "--voters",
            "1,2,3",
        ],
        2,
    );
    assert!(run.stderr.contains("raft id 4"), "{}", run.stderr);
    assert!(!target.exists(), "a refused restore created {t}");

    // Without --voters the archive's membership is kept: an id outside it is warned about.
    let run = raftwal(&["snapshot", "restore", a, t, "--raft-id", "4"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stderr.contains("warning"), "{}", run.stderr);
    assert!(run.stderr.contains("raft id 4"), "{}", run.stderr);
    fs::remove_dir_all(&target).unwrap();

    // An id among them: no warning.
    let run = raftwal(&[
        "snapshot",
        "restore",
        a,
        t,
        "--raft-id",
        "4",
        "--voters",
        "4,5,6",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.stderr, "");
    fs::remove_dir_all(&target).unwrap();
    let run = raftwal(&["snapshot", "restore", a, t, "--raft-id", "2"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.stderr, "");
}

// ---------------------------------------------------------------------------------------------
// dump over damage
// ---------------------------------------------------------------------------------------------

#[test]
fn dump_prints_the_good_entries_before_damage_then_the_error() {
    let tmp = TempDir::new().unwrap();
    // Two files: damage in the sealed first one is not a torn tail that open would cut.
    let dir = write_dir_to(&tmp, "wal", 30_100);
    let (file, at) = payload_of(&dir, 60);
    flip(&file, at + 2);
    let run = fails(&["dump", p(&dir), "--to", "100"], 1);
    let indexes: Vec<&str> = run
        .stdout
        .lines()
        .map(|l| l.split(' ').next().unwrap())
        .collect();
    let want: Vec<String> = (SNAP_INDEX + 1..60).map(|i| format!("index={i}")).collect();
    assert_eq!(indexes, want, "stdout: {}", run.stdout);
    assert!(run.stderr.contains("60"), "{}", run.stderr);

    // JSON lines: the good entries, then the error object as the last line.
    let run = fails(
        &["dump", p(&dir), "--from", "50", "--to", "70", "--json"],
        1,
    );
    let lines: Vec<Value> = run
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 11, "{}", run.stdout);
    for (j, index) in lines.iter().zip(50..60) {
        assert_eq!(j["index"], index);
    }
    assert_eq!(lines[10]["ok"], false);
    assert_eq!(lines[10]["error"]["exit_code"], 1);
}

#[test]
fn dump_over_damage_in_the_last_file_prints_the_entries_before_it_then_the_damage() {
    let tmp = TempDir::new().unwrap();
    // One file, committed to LAST: damage at 60 ends the log there and open would refuse it.
    let dir = write_dir(&tmp, "wal");
    let (file, at) = payload_of(&dir, 60);
    flip(&file, at + 2);
    for (args, from) in [
        (vec!["dump", p(&dir)], SNAP_INDEX + 1),
        (vec!["dump", p(&dir), "--from", "50", "--to", "70"], 50),
    ] {
        let run = fails(&args, 1);
        let indexes: Vec<&str> = run
            .stdout
            .lines()
            .map(|l| l.split(' ').next().unwrap())
            .collect();
        let want: Vec<String> = (from..60).map(|i| format!("index={i}")).collect();
        assert_eq!(indexes, want, "{args:?}: {}", run.stdout);
        assert!(run.stderr.contains("damaged"), "{}", run.stderr);
    }
    // A range before the damage is whole: exit code 0.
    let run = raftwal(&["dump", p(&dir), "--from", "30", "--to", "40"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.stdout.lines().count(), 11);
}
