//! Running out of space: when the file system refuses more space (here: a file-size limit,
//! RLIMIT_FSIZE, in a child process, which makes fallocate fail with EFBIG the way a full disk
//! makes it fail with ENOSPC), `save` returns an error, the log is exactly as before that save,
//! nothing dies of SIGBUS or SIGXFSZ, and the store works again once space is back.

use std::process::Command;

use bytes::Bytes;
use raft::prelude::*;
use raft::{GetEntriesContext, Storage};
use raftwal::DiskStorage;

const CHILD_ENV: &str = "RAFTWAL_FULL_DISK_CHILD_DIR";
const LIMIT: u64 = 24 << 20;

fn entry(index: u64) -> Entry {
    let mut e = Entry::default();
    e.index = index;
    e.term = 1;
    e.data = Bytes::from(vec![(index % 251) as u8; 4096]);
    e
}

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

/// Runs in the child: fills the limit, checks the failed save changed nothing, lifts the limit,
/// carries on.
#[test]
fn full_disk_child() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    // SAFETY: ignoring SIGXFSZ makes writes past the limit fail with EFBIG instead of killing
    // the process; set before any other thread of this process touches files.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
    set_fsize_limit(LIMIT);
    let store = DiskStorage::open(&dir).unwrap();
    let mut last = 0;
    let err = loop {
        let batch: Vec<Entry> = (last + 1..=last + 64).map(entry).collect();
        match store.save(&HardState::default(), &batch, &Snapshot::default()) {
            Ok(()) => last += 64,
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
    let es = store
        .entries(1, last + 1, None, GetEntriesContext::empty(false))
        .unwrap();
    assert_eq!(es.len() as u64, last);
    for e in &es {
        assert_eq!(e, &entry(e.index));
    }
    // Space is back: the same save now succeeds, and more after it.
    set_fsize_limit(libc::RLIM_INFINITY);
    for _ in 0..8 {
        let batch: Vec<Entry> = (last + 1..=last + 64).map(entry).collect();
        store
            .save(&HardState::default(), &batch, &Snapshot::default())
            .unwrap();
        last += 64;
    }
    store.close().unwrap();
    let store = DiskStorage::open(&dir).unwrap();
    assert_eq!(store.last_index().unwrap(), last);
    let es = store
        .entries(1, last + 1, None, GetEntriesContext::empty(false))
        .unwrap();
    for e in &es {
        assert_eq!(e, &entry(e.index));
    }
    println!("CHILD-OK {last}");
}

#[test]
fn save_fails_cleanly_when_space_runs_out_and_works_again_after() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "full_disk_child",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(CHILD_ENV, dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("CHILD-OK"),
        "child failed: {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    assert!(stdout.contains("save failed after index"), "{stdout}");
}
