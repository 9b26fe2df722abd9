//! The memory maps an engine holds as its groups work: each map is a region the kernel counts
//! against `vm.max_map_count` (65,530 by default, for the whole process), so maps per group
//! set how many groups one process can host. Counted in `/proc/self/maps`, in a test binary
//! of its own (the count is the whole process's: no other test may run beside it).
//!
//! A group's meta page is read and stored without a map; its log file's map is two regions
//! (its slot area is advised to be read at random: docs/PERFORMANCE.md, "Reopen from a cold
//! cache"). With three a group (the meta page mapped once stored), an engine of 25,000 groups
//! failed its close with `mmap ... wal.meta: Cannot allocate memory` (docs/PERFORMANCE.md,
//! "How many groups a process can host").

#[path = "common/entries.rs"]
mod entries;

use raft::prelude::*;
use raft::Storage;
use raftwal::{Engine, GroupStorage, WriteBatch};

use entries::{ctx, entry_in_group};

const GROUPS: u64 = 400;

fn maps() -> usize {
    std::fs::read_to_string("/proc/self/maps")
        .expect("read /proc/self/maps")
        .lines()
        .count()
}

fn hs(commit: u64) -> HardState {
    let mut h = HardState::default();
    h.term = 1;
    h.vote = 1;
    h.commit = commit;
    h
}

/// Every group read from its first to its last entry, each as written.
fn read_all(e: &Engine, last: u64) {
    for gid in 1..=GROUPS {
        let g: GroupStorage = e.group(gid).expect("group");
        let lo = g.first_index().expect("first_index");
        let got = g.entries(lo, last + 1, None, ctx()).expect("entries");
        let want: Vec<Entry> = (lo..=last).map(|i| entry_in_group(i, 1, gid)).collect();
        assert_eq!(got, want, "group {gid}");
    }
}

/// Entries `lo..=hi` for every group, one batch.
fn write_all(e: &Engine, lo: u64, hi: u64) {
    let mut b = WriteBatch::new();
    for gid in 1..=GROUPS {
        let es: Vec<Entry> = (lo..=hi).map(|i| entry_in_group(i, 1, gid)).collect();
        b.save(gid, &hs(hi), &es, &Snapshot::default());
    }
    e.write(&mut b).expect("write");
}

/// Each group made durable by itself: a snapshot it takes stores its meta page.
fn snapshot_all(e: &Engine, index: u64) {
    let mut cs = ConfState::default();
    cs.voters = vec![1];
    for gid in 1..=GROUPS {
        let g = e.group(gid).expect("group");
        g.create_snapshot(index, Some(&cs), format!("state of {gid} at {index}"))
            .expect("create_snapshot");
    }
}

#[test]
fn groups_hold_at_most_two_maps_each_whatever_they_do() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("root");
    let before = maps();
    let check = |what: &str| {
        let held = maps().saturating_sub(before);
        // Two a group, and room for the threads' stacks and the allocator's arenas (open's 16
        // threads leave both behind: glibc caches stacks, arenas stay): about 70 here, where
        // three maps a group would be 400 more.
        assert!(
            held <= 2 * GROUPS as usize + 160,
            "{what}: {held} maps for {GROUPS} groups"
        );
        eprintln!("{what}: {held} maps for {GROUPS} groups");
    };
    {
        let e = Engine::open(&root).expect("open");
        for gid in 1..=GROUPS {
            e.create_group(gid, 1).expect("create_group");
        }
        write_all(&e, 1, 4);
        read_all(&e, 4);
        snapshot_all(&e, 2);
        read_all(&e, 4);
        check("written, read and snapshotted");
        e.close().expect("close");
    }
    let e = Engine::open(&root).expect("reopen");
    read_all(&e, 4);
    check("reopened and read");
    write_all(&e, 5, 8);
    snapshot_all(&e, 6);
    read_all(&e, 8);
    check("written, snapshotted and read after reopen");
    e.close().expect("close");
}
