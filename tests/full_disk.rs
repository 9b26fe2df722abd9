//! Running out of space: when the file system refuses more space (here: a file-size limit,
//! RLIMIT_FSIZE, in a child process, which makes fallocate fail with EFBIG the way a full disk
//! makes it fail with ENOSPC), `save` returns an error, the log is exactly as before that save,
//! nothing dies of SIGBUS or SIGXFSZ, and the store works again once space is back; also when
//! the space runs out just as a new log file is due.

use std::process::Command;

use raft::prelude::*;
use raft::Storage;
use raftwal::DiskStorage;

#[path = "common/entries.rs"]
mod entries;
#[path = "common/layout.rs"]
mod layout;

use entries::{ctx, filled_entry};
use layout::SLOTS_PER_FILE;

const CHILD_ENV: &str = "RAFTWAL_FULL_DISK_CHILD_DIR";
const ROTATION_CHILD_ENV: &str = "RAFTWAL_FULL_DISK_ROTATION_CHILD_DIR";
const ENGINE_CHILD_ENV: &str = "RAFTWAL_FULL_DISK_ENGINE_CHILD_DIR";
const JOURNAL_CHILD_ENV: &str = "RAFTWAL_FULL_DISK_JOURNAL_CHILD_DIR";
const LARGE_COMMIT_CHILD_ENV: &str = "RAFTWAL_FULL_DISK_LARGE_COMMIT_CHILD_DIR";
const LIMIT: u64 = 24 << 20;

fn set_fsize_limit(soft: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain libc calls on a valid, initialised struct.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_FSIZE, &mut lim), 0);
        lim.rlim_cur = soft as libc::rlim_t;
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &lim), 0);
    }
}

/// The child's directory, from `env`; `None` in the parent. Makes writes past the file-size
/// limit fail with EFBIG instead of killing the process.
fn child_dir(env: &str) -> Option<std::ffi::OsString> {
    let dir = std::env::var_os(env)?;
    // SAFETY: ignoring a signal is a plain libc call, made before any other thread of this
    // process touches files.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
    Some(dir)
}

/// Saves batches of `n` entries made by `make` after `last` until one is refused; returns the
/// last index saved and the refusal, after checking the refused save changed nothing.
fn save_until_refused(
    store: &DiskStorage,
    mut last: u64,
    n: u64,
    make: impl Fn(u64) -> Entry,
) -> (u64, raftwal::Error) {
    let err = loop {
        let batch: Vec<Entry> = (last + 1..=last + n).map(&make).collect();
        match store.save(&HardState::default(), &batch, &Snapshot::default()) {
            Ok(()) => last += n,
            Err(e) => break e,
        }
        assert!(last < 100_000, "the file-size limit never bit");
    };
    println!("save failed after index {last}: {err}");
    assert_eq!(
        store.last_index().unwrap(),
        last,
        "a failed save changed the log"
    );
    (last, err)
}

/// Checks `store` holds entries 1..=last, each as `make` made it.
fn check_holds(store: &DiskStorage, last: u64, make: impl Fn(u64) -> Entry) {
    assert_eq!(store.last_index().unwrap(), last);
    let es = store.entries(1, last + 1, None, ctx()).unwrap();
    assert_eq!(es.len() as u64, last);
    for e in &es {
        assert_eq!(e, &make(e.index));
    }
}

/// Runs in the child: fills the limit, checks the failed save changed nothing, lifts the limit,
/// carries on.
#[test]
fn full_disk_child() {
    let Some(dir) = child_dir(CHILD_ENV) else {
        return;
    };
    set_fsize_limit(LIMIT);
    let store = DiskStorage::open(&dir).unwrap();
    // 4 KiB of data per entry (term 1; the byte tells entries apart).
    let big = |index: u64| filled_entry(index, 1, (index % 251) as u8, 4096);
    let (mut last, err) = save_until_refused(&store, 0, 64, big);
    // The space was used: a file grows by more than a save needs when it can, but never stops
    // short of the limit because a larger step did not fit (24 MiB file, 1 MiB of slots and
    // header, 256 KiB saves, growth in whole MiB).
    assert!(
        last * 4096 >= LIMIT - (3 << 20),
        "saves stopped at index {last} ({} KiB of payloads) under a {} MiB limit: {err}",
        last * 4,
        LIMIT >> 20
    );
    check_holds(&store, last, big);
    // Space is back: the same save now succeeds, and more after it.
    set_fsize_limit(libc::RLIM_INFINITY);
    for _ in 0..8 {
        let batch: Vec<Entry> = (last + 1..=last + 64).map(big).collect();
        store
            .save(&HardState::default(), &batch, &Snapshot::default())
            .unwrap();
        last += 64;
    }
    store.close().unwrap();
    check_holds(&DiskStorage::open(&dir).unwrap(), last, big);
    println!("CHILD-OK {last}");
}

/// Runs in the child: space runs out exactly when the first file is full, so the next save must
/// create the second file. With no room even for its first MiB the save fails and leaves no
/// half-made file behind (the next try creates it again); with room for a little, the file
/// starts small and grows by what each save needs.
#[test]
fn full_disk_at_rotation_child() {
    let Some(dir) = child_dir(ROTATION_CHILD_ENV) else {
        return;
    };
    let small = |index: u64| filled_entry(index, 1, (index % 251) as u8, 128);
    let store = DiskStorage::open(&dir).unwrap();
    let save = |from: u64, n: u64| {
        let batch: Vec<Entry> = (from..from + n).map(small).collect();
        store.save(&HardState::default(), &batch, &Snapshot::default())
    };
    let mut last = 0;
    while last < SLOTS_PER_FILE {
        save(last + 1, 100).unwrap();
        last += 100;
    }
    let files = || {
        let mut v: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|d| d.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".wal"))
            .collect();
        v.sort();
        v
    };
    assert_eq!(files(), ["00001.wal"]);

    // Less than a first MiB: the new file cannot be made.
    set_fsize_limit(512 << 10);
    let err = save(last + 1, 100).unwrap_err();
    println!("rotation failed: {err}");
    assert_eq!(store.last_index().unwrap(), last);
    assert_eq!(files(), ["00001.wal"], "a half-made file was left behind");

    // Room for 2 MiB: the file starts with its first MiB and grows 1 MiB at a time.
    set_fsize_limit(2 << 20);
    let (mut last, err) = save_until_refused(&store, last, 100, small);
    assert!(
        last >= SLOTS_PER_FILE + 7_000,
        "the second file took only {} entries of 128 B under a 2 MiB limit: {err}",
        last - SLOTS_PER_FILE
    );
    assert_eq!(files(), ["00001.wal", "00002.wal"]);

    set_fsize_limit(libc::RLIM_INFINITY);
    save(last + 1, 100).unwrap();
    last += 100;
    store.close().unwrap();
    check_holds(&DiskStorage::open(&dir).unwrap(), last, small);
    println!("CHILD-OK {last}");
}

/// The groups of the engine tests below.
const GROUPS: u64 = 4;

/// Entry `index` of the engine tests: 4 KiB of data, term 1.
fn engine_entry(index: u64) -> Entry {
    filled_entry(index, 1, (index % 251) as u8, 4096)
}

/// One round of the engine tests: 16 entries after `last` for every group.
fn engine_round(last: u64) -> raftwal::WriteBatch {
    let es: Vec<Entry> = (last + 1..=last + 16).map(engine_entry).collect();
    let mut hs = HardState::default();
    (hs.term, hs.commit) = (1, last);
    let mut b = raftwal::WriteBatch::new();
    for g in 1..=GROUPS {
        b.save(g, &hs, &es, &Snapshot::default());
    }
    b
}

/// Writes rounds into `e` until one is refused: the last index written and the refusal.
fn engine_rounds_until_refused(e: &raftwal::Engine) -> (u64, String) {
    let mut last = 0;
    loop {
        match e.write(&mut engine_round(last)) {
            Ok(()) => last += 16,
            Err(err) => {
                let err = err.to_string();
                println!("write failed after index {last}: {err}");
                return (last, err);
            }
        }
        assert!(last < 100_000, "the file-size limit never bit");
    }
}

/// Reopens the engine at `dir`: every group holds exactly entries 1..=last, as written.
fn engine_holds(dir: &std::ffi::OsStr, opts: raftwal::EngineOptions, last: u64) -> raftwal::Engine {
    let e = raftwal::Engine::open_with(dir, opts).unwrap();
    for g in 1..=GROUPS {
        let s = e.group(g).unwrap();
        assert_eq!(s.last_index().unwrap(), last, "group {g}");
        let es = s.entries(1, last + 1, None, ctx()).unwrap();
        assert!(
            es.iter().all(|x| *x == engine_entry(x.index)),
            "group {g}'s entries"
        );
    }
    e
}

/// Runs in the child: an `Engine` with four groups writes rounds until a group's file cannot
/// grow (6 MiB file-size limit; 1 MiB journal segments, so the journal's files never reach
/// it). The write fails naming that file; the engine stops (every later write fails, saying
/// to open it again) but still hands out its groups, whose calls fail with the same reason;
/// close works; reopened once space is back, every group holds exactly the acknowledged
/// entries and takes new writes. (`group()` once answered `None` for every group of a stopped
/// engine, as if it had none, while `group_ids()` still listed them.)
#[test]
fn full_disk_engine_child() {
    use raftwal::{Engine, EngineOptions};
    let Some(dir) = child_dir(ENGINE_CHILD_ENV) else {
        return;
    };
    let opts = || EngineOptions {
        journal_segment_bytes: 1 << 20,
        checkpoint_bytes: 4 << 20,
        ..EngineOptions::default()
    };
    let e = Engine::open_with(&dir, opts()).unwrap();
    for g in 1..=GROUPS {
        e.create_group(g, 1).unwrap();
    }
    set_fsize_limit(6 << 20);
    let (last, err) = engine_rounds_until_refused(&e);
    assert!(
        err.contains("/groups/") && err.contains(".wal"),
        "the error names the group file that could not grow: {err}"
    );
    let again = e.write(&mut engine_round(last)).unwrap_err().to_string();
    assert!(again.contains("open it again"), "{again}");
    assert_eq!(e.group_ids(), vec![1, 2, 3, 4]);
    for g in 1..=GROUPS {
        let handle = e
            .group(g)
            .unwrap_or_else(|| panic!("group {g} of a stopped engine: no handle"));
        let got = handle.last_index().map_err(|e| e.to_string());
        assert!(
            got.as_ref().is_err_and(|m| m.contains("open it again")),
            "group {g}: {got:?}"
        );
    }
    set_fsize_limit(libc::RLIM_INFINITY);
    e.close().unwrap();
    let e = engine_holds(&dir, opts(), last);
    e.write(&mut engine_round(last)).unwrap();
    e.close().unwrap();
    println!("CHILD-OK {last}");
}

/// Runs in the child: the journal is what runs out (its 2 MiB segment written past a 1.5 MiB
/// file-size limit; the groups' files stay under it). The commit fails naming the segment,
/// changes nothing, and the engine goes on: once space is back the same write succeeds
/// without a reopen, and reopened, every group holds exactly the acknowledged entries.
#[test]
fn full_disk_journal_child() {
    use raftwal::{Engine, EngineOptions};
    let Some(dir) = child_dir(JOURNAL_CHILD_ENV) else {
        return;
    };
    let opts = || EngineOptions {
        journal_segment_bytes: 2 << 20,
        ..EngineOptions::default()
    };
    let e = Engine::open_with(&dir, opts()).unwrap();
    for g in 1..=GROUPS {
        e.create_group(g, 1).unwrap();
    }
    set_fsize_limit(1536 << 10);
    let (mut last, err) = engine_rounds_until_refused(&e);
    assert!(
        err.contains("/journal/") && err.contains(".jnl"),
        "the error names the journal segment: {err}"
    );
    for g in 1..=GROUPS {
        assert_eq!(e.group(g).unwrap().last_index().unwrap(), last, "group {g}");
    }
    set_fsize_limit(libc::RLIM_INFINITY);
    e.write(&mut engine_round(last)).unwrap();
    last += 16;
    e.close().unwrap();
    engine_holds(&dir, opts(), last).close().unwrap();
    println!("CHILD-OK {last}");
}

/// Runs in the child: a commit larger than a journal segment takes the segment prepared for
/// it and grows it past a file-size limit (8 MiB for a 16 MiB record). The commit fails naming
/// the segment and changes nothing; once space is back, commits go on through many more
/// segments without a reopen, and reopened, every group holds exactly the acknowledged
/// entries. (The failed segment once stayed on disk under its id, and every later segment
/// with that id failed to be made: "create .../0000000000000002.jnl: File exists", for ever,
/// the engine not stopped; found by a review.)
#[test]
fn full_disk_large_commit_child() {
    use raftwal::{Engine, EngineOptions};
    let Some(dir) = child_dir(LARGE_COMMIT_CHILD_ENV) else {
        return;
    };
    let opts = || EngineOptions {
        journal_segment_bytes: 64 << 10,
        ..EngineOptions::default()
    };
    let e = Engine::open_with(&dir, opts()).unwrap();
    for g in 1..=GROUPS {
        e.create_group(g, 1).unwrap();
    }
    e.write(&mut engine_round(0)).unwrap();
    let mut last = 16;
    // The next segment, prepared by the engine's thread: the large commit takes it.
    let next = std::path::Path::new(&dir).join("journal/0000000000000002.jnl");
    let t0 = std::time::Instant::now();
    while !next.exists() {
        assert!(
            t0.elapsed().as_secs() < 20,
            "no segment prepared at {next:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    set_fsize_limit(8 << 20);
    let big: Vec<Entry> = (last + 1..=last + 16)
        .map(|i| filled_entry(i, 1, (i % 251) as u8, 1 << 20))
        .collect();
    let mut b = raftwal::WriteBatch::new();
    b.save(1, &HardState::default(), &big, &Snapshot::default());
    let err = e.write(&mut b).unwrap_err().to_string();
    println!("write failed after index {last}: {err}");
    assert!(err.contains("/journal/") && err.contains(".jnl"), "{err}");
    set_fsize_limit(libc::RLIM_INFINITY);
    for g in 1..=GROUPS {
        assert_eq!(e.group(g).unwrap().last_index().unwrap(), last, "group {g}");
    }
    // 64 KiB of records a round: a segment or more each.
    for _ in 0..40 {
        e.write(&mut engine_round(last))
            .unwrap_or_else(|err| panic!("the round after index {last}, space back: {err}"));
        last += 16;
    }
    e.close().unwrap();
    engine_holds(&dir, opts(), last).close().unwrap();
    println!("CHILD-OK {last}");
}

/// Runs test `name` of this binary in a child process with `env` naming a fresh directory.
fn run_child(name: &str, env: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", name, "--nocapture", "--test-threads", "1"])
        .env(env, dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("CHILD-OK"),
        "child failed: {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    stdout
}

#[test]
fn space_running_out_when_a_new_file_is_due_fails_cleanly_and_recovers() {
    let stdout = run_child("full_disk_at_rotation_child", ROTATION_CHILD_ENV);
    assert!(stdout.contains("rotation failed"), "{stdout}");
}

#[test]
fn save_fails_cleanly_when_space_runs_out_and_works_again_after() {
    let stdout = run_child("full_disk_child", CHILD_ENV);
    assert!(stdout.contains("save failed after index"), "{stdout}");
}

#[test]
fn an_engine_out_of_space_fails_its_writes_keeps_its_groups_and_reopens_whole() {
    let stdout = run_child("full_disk_engine_child", ENGINE_CHILD_ENV);
    assert!(stdout.contains("write failed after index"), "{stdout}");
}

#[test]
fn a_journal_out_of_space_fails_the_commit_and_goes_on_once_space_is_back() {
    let stdout = run_child("full_disk_journal_child", JOURNAL_CHILD_ENV);
    assert!(stdout.contains("write failed after index"), "{stdout}");
}

#[test]
fn a_commit_larger_than_a_segment_refused_for_space_leaves_later_segments_free() {
    let stdout = run_child("full_disk_large_commit_child", LARGE_COMMIT_CHILD_ENV);
    assert!(stdout.contains("write failed after index"), "{stdout}");
}
