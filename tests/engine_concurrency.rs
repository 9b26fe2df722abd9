//! The engine under concurrent callers: `Engine::write` from many threads (group commit merges
//! them), `GroupStorage` calls beside those writes, group removal and creation, and close while
//! other threads are inside the engine. Every check is against an independent model of what was
//! acknowledged (a Vec of entries per group), and durability is checked by reopening.

#[path = "common/entries.rs"]
mod entries;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Barrier, Mutex};

use raft::prelude::*;
use raft::Storage;
use raftwal::{Engine, EngineOptions, Error, GroupStorage, MetaInfo, WriteBatch};

use entries::{ctx, entry_in_group};

fn entries(lo: u64, hi: u64, term: u64, group: u64) -> Vec<Entry> {
    (lo..=hi).map(|i| entry_in_group(i, term, group)).collect()
}

fn hs(term: u64, commit: u64) -> HardState {
    let mut h = HardState::default();
    h.term = term;
    h.vote = 1;
    h.commit = commit;
    h
}

fn all(g: &GroupStorage) -> Vec<Entry> {
    let (lo, hi) = (g.first_index().unwrap(), g.last_index().unwrap());
    g.entries(lo, hi + 1, None, ctx()).unwrap()
}

fn small() -> EngineOptions {
    EngineOptions {
        journal_segment_bytes: 256 << 10,
        checkpoint_bytes: 128 << 10,
        ..Default::default()
    }
}

/// A value set with `set_uint` while another thread writes the same group is what `uint`
/// returns afterwards, and what a reopen finds: a commit that journaled the previous value must
/// not put that one back when it applies.
#[test]
fn set_uint_is_never_undone_by_a_concurrent_write_of_the_group() {
    let dir = tempfile::tempdir().unwrap();
    let e = Engine::open(dir.path()).unwrap();
    let g = e.create_group(1, 1).unwrap();
    let commits = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let last_set = std::thread::scope(|s| {
        s.spawn(|| {
            let mut i = 1;
            while !stop.load(Ordering::Acquire) {
                g.save(&hs(1, 0), &entries(i, i, 1, 1), &Snapshot::default())
                    .unwrap();
                i += 1;
                commits.fetch_add(1, Ordering::Release);
            }
        });
        let mut v = 0u64;
        let mut reverted = None;
        while commits.load(Ordering::Acquire) < 200 {
            let now = g.uint(MetaInfo::CheckpointIndex);
            if now != v && reverted.is_none() {
                reverted = Some((v, now));
            }
            v += 1;
            g.set_uint(MetaInfo::CheckpointIndex, v);
        }
        stop.store(true, Ordering::Release);
        assert_eq!(
            reverted, None,
            "(value set, value read back): a commit that journaled an older value put it back"
        );
        v
    });
    assert_eq!(g.uint(MetaInfo::CheckpointIndex), last_set);
    g.sync().unwrap();
    e.close().unwrap();
    let e = Engine::open(dir.path()).unwrap();
    assert_eq!(
        e.group(1).unwrap().uint(MetaInfo::CheckpointIndex),
        last_set,
        "after reopen"
    );
}

/// What a caller's batch is made of in [`invalid_batches_fail_alone_in_merged_commits`].
#[derive(Clone, Copy, Debug)]
enum Kind {
    Valid,
    Gap,
    StaleSnapshot,
    UnknownGroup,
    TermBack,
    BelowFirst,
}

/// Many threads, each owning a group, write at once (their batches merged into shared
/// commits); every few rounds a thread's batch holds a valid part for its group followed by an
/// invalid one (a gap, a stale snapshot, an unknown group, a term going back, entries below the
/// first index). That caller alone fails, naming the group, and nothing of its batch is
/// applied; every other caller's batch is, live and after reopen.
#[test]
fn invalid_batches_fail_alone_in_merged_commits() {
    const THREADS: u64 = 6;
    const ROUNDS: u64 = 60;
    let dir = tempfile::tempdir().unwrap();
    let models: Vec<Mutex<Vec<Entry>>> = (0..THREADS).map(|_| Mutex::new(Vec::new())).collect();
    {
        let e = Engine::open_with(dir.path(), small()).unwrap();
        for t in 0..THREADS {
            let g = e.create_group(t + 1, 1).unwrap();
            // A snapshot at 5, so that stale snapshots and entries below the first index exist.
            let mut snap = Snapshot::default();
            snap.mut_metadata().index = 5;
            snap.mut_metadata().term = 1;
            snap.mut_metadata().mut_conf_state().voters = vec![1];
            snap.data = bytes::Bytes::from_static(b"state at 5");
            g.save(&hs(1, 5), &[], &snap).unwrap();
        }
        let barrier = Barrier::new(THREADS as usize);
        let failures: Mutex<Vec<String>> = Mutex::new(Vec::new());
        std::thread::scope(|s| {
            for t in 0..THREADS {
                let (e, models, barrier, failures) = (&e, &models, &barrier, &failures);
                let fail = move |m: String| failures.lock().unwrap().push(m);
                s.spawn(move || {
                    let gid = t + 1;
                    let mut last = 5u64;
                    let mut term = 1u64;
                    for r in 0..ROUNDS {
                        barrier.wait();
                        let kind = match (r + t) % 7 {
                            1 => Kind::Gap,
                            2 => Kind::StaleSnapshot,
                            3 => Kind::UnknownGroup,
                            4 => Kind::TermBack,
                            5 => Kind::BelowFirst,
                            _ => Kind::Valid,
                        };
                        // Every few rounds a new term, so that a term going back is possible.
                        if r % 5 == 4 {
                            term += 1;
                        }
                        let good = entries(last + 1, last + 3, term, gid);
                        let mut b = WriteBatch::new();
                        b.save(gid, &hs(term, last), &good, &Snapshot::default());
                        let n = last + 3;
                        match kind {
                            Kind::Valid => {}
                            Kind::Gap => {
                                b.save(
                                    gid,
                                    &hs(term, n),
                                    &entries(n + 2, n + 2, term, gid),
                                    &Snapshot::default(),
                                );
                            }
                            Kind::StaleSnapshot => {
                                let mut snap = Snapshot::default();
                                snap.mut_metadata().index = 4;
                                snap.mut_metadata().term = 1;
                                snap.data = bytes::Bytes::from_static(b"stale");
                                b.save(gid, &hs(term, n), &[], &snap);
                            }
                            Kind::UnknownGroup => {
                                b.save(
                                    1_000 + gid,
                                    &hs(1, 0),
                                    &entries(1, 1, 1, 1_000 + gid),
                                    &Snapshot::default(),
                                );
                            }
                            Kind::TermBack => {
                                b.save(
                                    gid,
                                    &hs(term, n),
                                    &entries(n + 1, n + 1, term.saturating_sub(1), gid),
                                    &Snapshot::default(),
                                );
                            }
                            Kind::BelowFirst => {
                                b.save(
                                    gid,
                                    &hs(term, n),
                                    &entries(3, 4, 1, gid),
                                    &Snapshot::default(),
                                );
                            }
                        }
                        let r2 = e.write(&mut b);
                        if !matches!(kind, Kind::Valid) {
                            let want_group = if matches!(kind, Kind::UnknownGroup) {
                                1_000 + gid
                            } else {
                                gid
                            };
                            match r2 {
                                Err(Error::Group { group_id, .. }) if group_id == want_group => {}
                                other => fail(format!(
                                    "thread {t} round {r} {kind:?}: want an error naming group \
                                     {want_group}, got {other:?}"
                                )),
                            }
                        } else {
                            match r2 {
                                Ok(()) => {
                                    models[t as usize].lock().unwrap().extend(good);
                                    last = n;
                                }
                                Err(err) => fail(format!("thread {t} round {r} {kind:?}: {err}")),
                            }
                        }
                        // Live: exactly what was acknowledged.
                        let g = e.group(gid).unwrap();
                        let live = g.first_index().and_then(|lo| {
                            let hi = g.last_index()?;
                            g.entries(lo, hi + 1, None, ctx())
                        });
                        let want = models[t as usize].lock().unwrap().clone();
                        match live {
                            Ok(es) if es == want => {}
                            Ok(es) => fail(format!(
                                "thread {t} round {r} {kind:?}: live log ends at {:?}, \
                                 acknowledged up to {last}",
                                es.last().map(|x| (x.index, x.term))
                            )),
                            Err(err) => fail(format!("thread {t} round {r} {kind:?}: read: {err}")),
                        }
                    }
                });
            }
        });
        let failures = failures.into_inner().unwrap();
        assert!(failures.is_empty(), "{}", failures.join("\n"));
        e.close().unwrap();
    }
    let e = Engine::open(dir.path()).unwrap();
    assert_eq!(e.group_ids(), (1..=THREADS).collect::<Vec<_>>());
    for t in 0..THREADS {
        let g = e.group(t + 1).unwrap();
        assert_eq!(g.first_index().unwrap(), 6);
        assert_eq!(
            all(&g),
            *models[t as usize].lock().unwrap(),
            "group {}",
            t + 1
        );
    }
}

/// Two callers whose batches overwrite the same group's suffix land in one commit (or not):
/// whatever order they applied in, the group reads the same live and after reopen, and it is
/// the result of one of the two orders.
#[test]
fn parts_for_one_group_from_two_callers_apply_in_one_order_live_and_replayed() {
    for round in 0..20u64 {
        let dir = tempfile::tempdir().unwrap();
        let e = Engine::open(dir.path()).unwrap();
        let g = e.create_group(1, 1).unwrap();
        g.save(&hs(1, 2), &entries(1, 10, 1, 1), &Snapshot::default())
            .unwrap();
        let barrier = Barrier::new(2);
        std::thread::scope(|s| {
            let (e, barrier) = (&e, &barrier);
            s.spawn(move || {
                let mut b = WriteBatch::new();
                b.save(1, &hs(2, 2), &entries(5, 8, 2, 1), &Snapshot::default());
                barrier.wait();
                e.write(&mut b).unwrap();
            });
            s.spawn(move || {
                let mut b = WriteBatch::new();
                b.save(1, &hs(3, 2), &entries(6, 12, 3, 1), &Snapshot::default());
                barrier.wait();
                e.write(&mut b).unwrap();
            });
        });
        // A then B: 1-4 t1, 5 t2, 6-12 t3. B then A: 1-4 t1, 5-8 t2 is refused? No: A after B
        // writes 5-8 at term 2 after entry 4 (term 1): valid, the log ends at 8.
        let mut a_then_b = entries(1, 4, 1, 1);
        a_then_b.extend(entries(5, 5, 2, 1));
        a_then_b.extend(entries(6, 12, 3, 1));
        let mut b_then_a = entries(1, 4, 1, 1);
        b_then_a.extend(entries(5, 8, 2, 1));
        let live = all(&g);
        assert!(
            live == a_then_b || live == b_then_a,
            "round {round}: live {:?}",
            live.iter().map(|x| (x.index, x.term)).collect::<Vec<_>>()
        );
        let hs_live = g.initial_state().unwrap().hard_state;
        drop(g);
        e.close().unwrap();
        let e = Engine::open(dir.path()).unwrap();
        let g = e.group(1).unwrap();
        assert_eq!(all(&g), live, "round {round}: after reopen");
        assert_eq!(g.initial_state().unwrap().hard_state, hs_live);
    }
}

/// A recursive listing of a directory with every file's bytes.
fn tree(root: &std::path::Path) -> BTreeMap<std::path::PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(d) = todo.pop() {
        for ent in std::fs::read_dir(&d).unwrap() {
            let ent = ent.unwrap();
            if ent.file_type().unwrap().is_dir() {
                out.insert(ent.path(), Vec::new());
                todo.push(ent.path());
            } else {
                out.insert(ent.path(), std::fs::read(ent.path()).unwrap());
            }
        }
    }
    out
}

/// `Engine::close` while other threads save, read, snapshot, truncate and sync through their
/// handles: no panic, no deadlock, every call after close fails and touches no file, and a
/// reopen holds every acknowledged save.
#[test]
fn close_while_other_threads_are_inside_the_engine() {
    const GROUPS: u64 = 4;
    for round in 0..10 {
        let dir = tempfile::tempdir().unwrap();
        // Checkpoints nudged by nearly every commit: close meets one running.
        let opts = EngineOptions {
            checkpoint_bytes: 4 << 10,
            ..small()
        };
        let e = Engine::open_with(dir.path(), opts).unwrap();
        let handles: Vec<GroupStorage> = (1..=GROUPS)
            .map(|g| e.create_group(g, 1).unwrap())
            .collect();
        let acked: Vec<AtomicU64> = (0..GROUPS).map(|_| AtomicU64::new(0)).collect();
        let closed = AtomicBool::new(false);
        let after_close_ok = AtomicU64::new(0);
        let started = Barrier::new(GROUPS as usize * 2 + 1);
        let snapshot_at: Vec<AtomicU64> = (0..GROUPS).map(|_| AtomicU64::new(0)).collect();
        let returned = AtomicBool::new(false);
        std::thread::scope(|s| {
            for (k, g) in handles.iter().enumerate() {
                let (acked, closed, after, started) = (&acked, &closed, &after_close_ok, &started);
                let returned = &returned;
                let snapshot_at = &snapshot_at;
                // A writer per group.
                s.spawn(move || {
                    started.wait();
                    let mut i = 1u64;
                    loop {
                        let was_closed = returned.load(Ordering::Acquire);
                        match g.save(
                            &hs(1, i - 1),
                            &entries(i, i, 1, k as u64 + 1),
                            &Snapshot::default(),
                        ) {
                            Ok(()) => {
                                if was_closed {
                                    after.fetch_add(1, Ordering::Relaxed);
                                }
                                acked[k].store(i, Ordering::Release);
                                i += 1;
                            }
                            Err(_) if closed.load(Ordering::Acquire) => break,
                            Err(err) => panic!("group {}: save {i}: {err}", k + 1),
                        }
                        if i.is_multiple_of(16) {
                            let _ = g.truncate_entries_until(i / 2);
                        }
                        if i.is_multiple_of(40)
                            && g.create_snapshot(i - 10, None, vec![7u8; 100]).is_ok()
                        {
                            snapshot_at[k].fetch_max(i - 10, Ordering::AcqRel);
                        }
                    }
                    // Everything fails from now on.
                    assert!(g
                        .save(
                            &hs(1, 0),
                            &entries(i, i, 1, k as u64 + 1),
                            &Snapshot::default()
                        )
                        .is_err());
                    assert!(g.sync().is_err());
                    assert!(g.create_snapshot(1, None, vec![1u8]).is_err());
                    assert!(g.truncate_entries_until(2).is_err());
                    assert!(g.set_conf_state(&ConfState::default()).is_err());
                    assert!(g.first_index().is_err());
                    assert!(g.entries(1, 2, None, ctx()).is_err());
                    assert!(g.term(1).is_err());
                });
                // A reader per group.
                s.spawn(move || {
                    started.wait();
                    while !closed.load(Ordering::Acquire) {
                        if let (Ok(lo), Ok(hi)) = (g.first_index(), g.last_index()) {
                            if let Ok(es) = g.entries(lo, hi + 1, None, ctx()) {
                                for x in &es {
                                    let _ = g.term(x.index);
                                }
                            }
                        }
                        let _ = g.initial_state();
                        let _ = g.snapshot(0, 0);
                        let _ = g.checkpoint();
                    }
                });
            }
            started.wait();
            std::thread::sleep(std::time::Duration::from_millis(30 + 20 * round));
            closed.store(true, Ordering::Release);
            // Half the rounds close, half drop (which does the same).
            if round % 2 == 0 {
                e.close().expect("close");
            } else {
                drop(e);
            }
            returned.store(true, Ordering::Release);
            // What close left, compared with what is there once every thread has given up.
            let before = tree(dir.path());
            std::thread::sleep(std::time::Duration::from_millis(50));
            let after = tree(dir.path());
            assert!(
                before == after,
                "round {round}: files changed after close returned"
            );
        });
        assert_eq!(
            after_close_ok.load(Ordering::Relaxed),
            0,
            "saves acknowledged after close returned"
        );
        let e = Engine::open(dir.path()).unwrap();
        for k in 0..GROUPS {
            let g = e.group(k + 1).unwrap();
            let n = acked[k as usize].load(Ordering::Acquire);
            let last = g.last_index().unwrap();
            assert!(
                last >= n,
                "round {round}: group {}: acknowledged {n}, reopened {last}",
                k + 1
            );
            let first = g.first_index().unwrap();
            let got = g.entries(first, last + 1, None, ctx()).unwrap();
            for x in got {
                let mut want = entry_in_group(x.index, 1, k + 1);
                if x.data.is_empty() {
                    want.data = bytes::Bytes::new();
                }
                assert_eq!(x, want, "round {round}: group {}", k + 1);
            }
        }
    }
}

/// One thread writes group 1 with `Engine::write` while another, through its `GroupStorage`,
/// takes snapshots just below what was acknowledged, truncates, sets the conf state, reads
/// the checkpoint and syncs. Every call succeeds, and the group reads as the model says (the
/// acknowledged entries after the last snapshot, data cleared below the last truncation, the
/// last conf state), live and after reopen.
#[test]
fn group_storage_calls_beside_engine_writes_of_the_same_group() {
    let dir = tempfile::tempdir().unwrap();
    let acked = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let model: Mutex<Vec<Entry>> = Mutex::new(Vec::new());
    let (snap_at, cut_at, voters) = {
        let e = Engine::open_with(dir.path(), small()).unwrap();
        let g = e.create_group(1, 1).unwrap();
        let res = std::thread::scope(|s| {
            let (e, acked, stop, model) = (&e, &acked, &stop, &model);
            let writer = s.spawn(move || {
                let mut last = 0;
                while !stop.load(Ordering::Acquire) || last < 300 {
                    let es = entries(last + 1, last + 3, 1, 1);
                    let mut b = WriteBatch::new();
                    b.save(1, &hs(1, last), &es, &Snapshot::default());
                    e.write(&mut b)
                        .unwrap_or_else(|err| panic!("write {}: {err}", last + 1));
                    model.lock().unwrap().extend(es);
                    last += 3;
                    acked.store(last, Ordering::Release);
                }
            });
            let (mut snap_at, mut cut_at, mut voters) = (0u64, 0u64, 0u64);
            let mut round = 0u64;
            while acked.load(Ordering::Acquire) < 600 {
                round += 1;
                let last = acked.load(Ordering::Acquire);
                match round % 4 {
                    0 if last > snap_at + 10 => {
                        let at = last - 5;
                        g.create_snapshot(at, None, vec![round as u8; 200])
                            .unwrap_or_else(|err| panic!("create_snapshot({at}): {err}"));
                        snap_at = at;
                    }
                    1 if last > cut_at + 2 => {
                        let at = last - 1;
                        g.truncate_entries_until(at)
                            .unwrap_or_else(|err| panic!("truncate_entries_until({at}): {err}"));
                        cut_at = at;
                    }
                    2 => {
                        voters = round;
                        let mut cs = ConfState::default();
                        cs.voters = vec![1, voters];
                        g.set_conf_state(&cs).unwrap();
                    }
                    _ => {
                        g.set_uint(MetaInfo::CheckpointIndex, round);
                        g.sync().unwrap();
                        assert_eq!(g.checkpoint().unwrap(), round);
                    }
                }
            }
            stop.store(true, Ordering::Release);
            writer.join().unwrap();
            (snap_at, cut_at, voters)
        });
        let check = |g: &GroupStorage, when: &str| {
            let want: Vec<Entry> = model
                .lock()
                .unwrap()
                .iter()
                .filter(|x| x.index > res.0)
                .map(|x| {
                    let mut x = x.clone();
                    if x.index < res.1 && x.get_entry_type() == EntryType::EntryNormal {
                        x.data = bytes::Bytes::new();
                    }
                    x
                })
                .collect();
            assert_eq!(g.first_index().unwrap(), res.0 + 1, "{when}");
            assert_eq!(all(g), want, "{when}");
            assert_eq!(
                g.initial_state().unwrap().conf_state.voters,
                vec![1, res.2],
                "{when}"
            );
        };
        check(&g, "live");
        e.close().unwrap();
        res
    };
    let e = Engine::open(dir.path()).unwrap();
    let g = e.group(1).unwrap();
    assert_eq!(g.first_index().unwrap(), snap_at + 1, "after reopen");
    let want: Vec<Entry> = model
        .lock()
        .unwrap()
        .iter()
        .filter(|x| x.index > snap_at)
        .map(|x| {
            let mut x = x.clone();
            if x.index < cut_at && x.get_entry_type() == EntryType::EntryNormal {
                x.data = bytes::Bytes::new();
            }
            x
        })
        .collect();
    assert_eq!(all(&g), want, "after reopen");
    assert_eq!(
        g.initial_state().unwrap().conf_state.voters,
        vec![1, voters],
        "after reopen"
    );
}

/// One thread removes and creates group 1 over and over while others write batches naming
/// group 1 and their own group: a batch that meets group 1 missing (or a log it does not
/// follow) fails whole, the others' groups hold exactly what was acknowledged, the engine keeps
/// working, and a reopen finds group 1 whole or absent.
#[test]
fn remove_and_create_beside_writes_naming_the_group() {
    const WRITERS: u64 = 3;
    let dir = tempfile::tempdir().unwrap();
    let models: Vec<Mutex<Vec<Entry>>> = (0..WRITERS).map(|_| Mutex::new(Vec::new())).collect();
    let stop = AtomicBool::new(false);
    let oks = AtomicU64::new(0);
    {
        let e = Engine::open_with(dir.path(), small()).unwrap();
        e.create_group(1, 1).unwrap();
        for w in 0..WRITERS {
            e.create_group(10 + w, 1).unwrap();
        }
        std::thread::scope(|s| {
            let (e, models, stop, oks) = (&e, &models, &stop, &oks);
            let mut writers = Vec::new();
            for w in 0..WRITERS {
                writers.push(s.spawn(move || {
                    let gid = 10 + w;
                    let mut last = 0;
                    let mut rounds = 0;
                    while !stop.load(Ordering::Acquire) {
                        rounds += 1;
                        let one = e.group(1).and_then(|g| g.last_index().ok()).unwrap_or(0);
                        let mine = entries(last + 1, last + 2, 1, gid);
                        let mut b = WriteBatch::new();
                        b.save(gid, &hs(1, last), &mine, &Snapshot::default());
                        b.save(
                            1,
                            &HardState::default(),
                            &entries(one + 1, one + 1, 1, 1),
                            &Snapshot::default(),
                        );
                        match e.write(&mut b) {
                            Ok(()) => {
                                models[w as usize].lock().unwrap().extend(mine);
                                last += 2;
                                oks.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(Error::Group { group_id: 1, .. }) => {}
                            Err(err) => panic!("writer {w} round {rounds}: {err}"),
                        }
                        let g = e.group(gid).unwrap();
                        assert_eq!(
                            all(&g),
                            *models[w as usize].lock().unwrap(),
                            "writer {w} round {rounds}"
                        );
                    }
                }));
            }
            for round in 0..150u64 {
                e.remove_group(1)
                    .unwrap_or_else(|err| panic!("remove round {round}: {err}"));
                e.create_group(1, 1)
                    .unwrap_or_else(|err| panic!("create round {round}: {err}"));
                if round.is_multiple_of(10) {
                    std::thread::yield_now();
                }
            }
            stop.store(true, Ordering::Release);
            for w in writers {
                w.join().unwrap();
            }
        });
        // Still working.
        let mut b = WriteBatch::new();
        b.save(
            1,
            &HardState::default(),
            &entries(1, 1, 1, 1),
            &Snapshot::default(),
        );
        let one = e.group(1).unwrap().last_index().unwrap();
        b.clear();
        b.save(
            1,
            &HardState::default(),
            &entries(one + 1, one + 1, 1, 1),
            &Snapshot::default(),
        );
        e.write(&mut b).unwrap();
        e.close().unwrap();
    }
    assert!(oks.load(Ordering::Relaxed) > 0);
    let e = Engine::open(dir.path()).unwrap();
    let mut want_ids = vec![1];
    want_ids.extend((0..WRITERS).map(|w| 10 + w));
    assert_eq!(e.group_ids(), want_ids);
    let one = e.group(1).unwrap();
    let n = one.last_index().unwrap();
    assert_eq!(all(&one), entries(1, n, 1, 1));
    for w in 0..WRITERS {
        let g = e.group(10 + w).unwrap();
        assert_eq!(all(&g), *models[w as usize].lock().unwrap(), "writer {w}");
    }
}

const FULL_CHILD_ENV: &str = "RAFTWAL_ENGINE_CONCURRENCY_FULL_CHILD_DIR";

/// Runs in a child process whose files may not grow past 8 MiB (RLIMIT_FSIZE: writes past it
/// fail with EFBIG, as a full disk's fail with ENOSPC): one thread installs a snapshot of
/// 16 MiB into group 1 (its file cannot be written: the install fails), another appends small
/// entries to group 2, a third keeps commits going so that the two meet in merged commits.
/// Group 2's appends must all succeed: the install's failure is its own.
#[test]
fn a_snapshot_install_that_cannot_be_written_fails_alone_child() {
    let Some(dir) = std::env::var_os(FULL_CHILD_ENV) else {
        return;
    };
    // SAFETY: plain libc calls, made before this test starts any thread.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        assert_eq!(libc::getrlimit(libc::RLIMIT_FSIZE, &mut lim), 0);
        lim.rlim_cur = 8 << 20;
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &lim), 0);
    }
    let opts = EngineOptions {
        journal_segment_bytes: 1 << 20,
        ..Default::default()
    };
    let e = Engine::open_with(&dir, opts).unwrap();
    let g1 = e.create_group(1, 1).unwrap();
    g1.save(&hs(1, 0), &entries(1, 3, 1, 1), &Snapshot::default())
        .unwrap();
    e.create_group(2, 1).unwrap();
    e.create_group(3, 1).unwrap();
    let stop = AtomicBool::new(false);
    let failures: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let installs_failed = AtomicU64::new(0);
    std::thread::scope(|s| {
        let (e, stop, failures, installs_failed) = (&e, &stop, &failures, &installs_failed);
        // The pace: commits back to back, so that the others queue behind them and merge.
        s.spawn(move || {
            let mut last = 0;
            while !stop.load(Ordering::Acquire) {
                let mut b = WriteBatch::new();
                b.save(
                    3,
                    &hs(1, last),
                    &entries(last + 1, last + 1, 1, 3),
                    &Snapshot::default(),
                );
                match e.write(&mut b) {
                    Ok(()) => last += 1,
                    Err(err) => failures
                        .lock()
                        .unwrap()
                        .push(format!("append {} to group 3: {err}", last + 1)),
                }
            }
        });
        let appender = s.spawn(move || {
            let mut last = 0;
            let mut model = Vec::new();
            while !stop.load(Ordering::Acquire) {
                let es = entries(last + 1, last + 1, 1, 2);
                let mut b = WriteBatch::new();
                b.save(2, &hs(1, last), &es, &Snapshot::default());
                match e.write(&mut b) {
                    Ok(()) => {
                        model.extend(es);
                        last += 1;
                    }
                    Err(err) => failures
                        .lock()
                        .unwrap()
                        .push(format!("append {} to group 2: {err}", last + 1)),
                }
            }
            model
        });
        let data = bytes::Bytes::from(vec![9u8; 16 << 20]);
        for k in 0..30u64 {
            let mut snap = Snapshot::default();
            snap.mut_metadata().index = 10 * (k + 1);
            snap.mut_metadata().term = 1;
            snap.data = data.clone();
            let mut b = WriteBatch::new();
            b.save(1, &hs(1, 10 * (k + 1)), &[], &snap);
            if e.write(&mut b).is_err() {
                installs_failed.fetch_add(1, Ordering::Relaxed);
            }
        }
        stop.store(true, Ordering::Release);
        let model = appender.join().unwrap();
        assert_eq!(all(&e.group(2).unwrap()), model);
    });
    assert_eq!(
        installs_failed.load(Ordering::Relaxed),
        30,
        "installs past the limit"
    );
    let failures = failures.into_inner().unwrap();
    assert!(
        failures.is_empty(),
        "{} appends to groups 2 and 3 failed with the install into group 1, the first: {}",
        failures.len(),
        failures[0]
    );
    println!("CHILD-OK");
}

#[test]
fn a_snapshot_install_that_cannot_be_written_fails_alone() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_snapshot_install_that_cannot_be_written_fails_alone_child",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(FULL_CHILD_ENV, dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("CHILD-OK"),
        "child failed: {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
}

/// Snapshot data an application streams in: its second read waits until the test lets it go
/// on (the test closes the engine meanwhile), then it yields the rest.
struct HeldReader {
    left: usize,
    reads: usize,
    started: std::sync::mpsc::Sender<()>,
    go_on: std::sync::mpsc::Receiver<()>,
}

impl std::io::Read for HeldReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.reads += 1;
        if self.reads == 2 {
            self.started.send(()).unwrap();
            self.go_on.recv().unwrap();
        }
        let n = buf.len().min(self.left).min(4096);
        buf[..n].fill(0x5a);
        self.left -= n;
        Ok(n)
    }
}

/// A `create_snapshot_from` whose data is still being read when `close` returns touches no
/// file after that (SPEC §9: a handle never touches the files again; the root's lock is gone
/// and another engine may own them): its write stops at the next step and fails, whatever its
/// reader does, and close does not wait for the reader. The next open finds the group whole,
/// with its older snapshot.
#[test]
fn a_snapshot_streaming_while_close_runs_touches_no_file_after_close_returned() {
    for key in [None, Some([7u8; 32])] {
        let dir = tempfile::tempdir().unwrap();
        let opts = EngineOptions {
            encryption_key: key,
            ..Default::default()
        };
        let e = Engine::open_with(dir.path(), opts.clone()).unwrap();
        let g = e.create_group(1, 1).unwrap();
        g.save(&hs(1, 20), &entries(1, 20, 1, 1), &Snapshot::default())
            .unwrap();
        g.create_snapshot(5, None, vec![1u8; 100]).unwrap();
        let (started_tx, started) = std::sync::mpsc::channel();
        let (go_on, go_on_rx) = std::sync::mpsc::channel();
        let reader = HeldReader {
            left: 3 << 20,
            reads: 0,
            started: started_tx,
            go_on: go_on_rx,
        };
        let streaming = std::thread::spawn({
            let g = g.clone();
            move || g.create_snapshot_from(10, None, reader)
        });
        started.recv().unwrap();
        e.close().unwrap();
        let at_close = tree(dir.path());
        go_on.send(()).unwrap();
        let result = streaming.join().unwrap();
        assert!(
            matches!(result, Err(Error::Closed { .. })),
            "key {key:?}: the snapshot streamed across close: {result:?}"
        );
        let after = tree(dir.path());
        let changed: Vec<_> = after
            .iter()
            .filter(|(p, bytes)| at_close.get(*p) != Some(*bytes))
            .map(|(p, _)| p.clone())
            .chain(at_close.keys().filter(|p| !after.contains_key(*p)).cloned())
            .collect();
        assert!(
            changed.is_empty(),
            "key {key:?}: files changed after close returned: {changed:?}"
        );
        let e = Engine::open_with(dir.path(), opts).unwrap();
        let g = e.group(1).unwrap();
        assert_eq!(g.snapshot(0, 0).unwrap().get_metadata().index, 5);
        assert_eq!(g.first_index().unwrap(), 6);
        assert_eq!(all(&g), entries(6, 20, 1, 1), "key {key:?}");
        e.close().unwrap();
        let leftovers: Vec<_> = tree(dir.path())
            .into_keys()
            .filter(|p| p.to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "key {key:?}: {leftovers:?}");
    }
}
