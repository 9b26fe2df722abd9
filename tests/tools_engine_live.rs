//! The read-only tools on an engine root while an `Engine` in this process keeps writing (many
//! groups, appends, overwrites, received snapshots, `create_snapshot`, `truncate_entries_until`,
//! group creation and removal, checkpoints and journal trims made frequent by small options):
//! the library's `EngineInspector` (summary, verify, one group's entries and snapshot) and the
//! `raftwal` binary (`inspect`, `verify`, `dump --group`, `snapshot save --group`).
//!
//! What they report must be some state the engine had while they ran (each group's log range,
//! hard state and snapshot, between the model after the operations acknowledged before the read
//! began and the model after the operation in flight when it ended), never damage, never a
//! panic. Seeded (the operations; their timing against the reads is not): `RAFTWAL_TOOLS_LIVE_SEEDS` (default 2) seeds of `RAFTWAL_TOOLS_LIVE_SECS`
//! (default 6) seconds each.

#[path = "common/engine_ops.rs"]
mod engine_ops;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use engine_ops::{part_parts, run_op, snap_data, Group, Limits, Model, Op, Part, Rng};
use raftwal::inspect::engine::{EngineInspector, EngineSummary};
use raftwal::{Engine, EngineOptions};

/// The models after each operation: `history[k]` after `k` of them. An operation's model is
/// pushed before it runs; `done` counts the operations that returned.
struct Shared {
    history: Mutex<Vec<Model>>,
    done: AtomicUsize,
    stop: AtomicBool,
}

impl Shared {
    /// The models a read that began when `d0` operations had returned may show, up to now.
    fn window(&self, d0: usize) -> Vec<Model> {
        let h = self.history.lock().unwrap();
        h[d0..].to_vec()
    }
}

/// Group `gid`'s entry at `index` of `term`, as the writer wrote it (`entries::entry_in_group`).
fn entry_in_group(index: u64, term: u64, gid: u64) -> raft::prelude::Entry {
    let p = Part {
        gid,
        snapshot: None,
        first: index,
        terms: vec![term],
        hs: (0, 0, 0),
    };
    part_parts(&p).1.remove(0)
}

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// `RAFTWAL_TOOLS_LIVE_GROUPS` (default 9) live groups at most, `RAFTWAL_TOOLS_LIVE_BIG`
/// (default 8) percent of parts appending 100-400 entries (more: log files rotate).
fn limits() -> Limits {
    let max_live = env("RAFTWAL_TOOLS_LIVE_GROUPS", 9) as usize;
    Limits {
        max_id: max_live as u64 + 3,
        min_live: max_live.div_ceil(2),
        max_live,
        big_percent: env("RAFTWAL_TOOLS_LIVE_BIG", 8),
    }
}

fn writer(e: Arc<Engine>, shared: Arc<Shared>, seed: u64) {
    let mut r = Rng(seed);
    let mut m = Model::default();
    let lim = limits();
    while !shared.stop.load(Ordering::Relaxed) {
        let op = if r.chance(4) && !m.groups.is_empty() {
            let live: Vec<u64> = m.groups.keys().copied().collect();
            let gid = live[r.below(live.len() as u64) as usize];
            let g = &m.groups[&gid];
            let index = r.range(g.snap_index, g.last() + 1);
            Op::Truncate { gid, index }
        } else {
            m.gen_op(&mut r, &lim)
        };
        let mut after = m.clone();
        after.apply(&op);
        shared.history.lock().unwrap().push(after.clone());
        run_op(&e, &op).unwrap_or_else(|err| panic!("{}: {err}", op.summary()));
        shared.done.fetch_add(1, Ordering::SeqCst);
        m = after;
    }
}

/// A group's state as the tools report it: (first, last, (term, vote, commit), snapshot index).
type Seen = (u64, u64, (u64, u64, u64), u64);

fn model_state(g: &Group) -> Seen {
    (
        g.snap_index + 1,
        g.last(),
        (g.hs.0, g.hs.1, g.hs.2.max(g.snap_index)),
        g.snap_index,
    )
}

/// Checks a summary against the window of models: every group shown is in a state one of them
/// gives it, a group present in all of them is shown, and nothing is damage.
fn check_summary(s: &EngineSummary, window: &[Model], only: Option<u64>) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(e) = &s.open_error {
        out.push(format!("open_error: {e}"));
    }
    if let Some(e) = &s.journal.damage {
        out.push(format!("journal damage: {e}"));
    }
    if let Some(e) = &s.journal.lost_records {
        out.push(format!("lost records: {e}"));
    }
    let ids: BTreeSet<u64> = s.group_ids.iter().copied().collect();
    let mut all: BTreeSet<u64> = window
        .iter()
        .flat_map(|m| m.groups.keys().copied())
        .collect();
    if let Some(g) = only {
        all.retain(|&x| x == g);
    }
    for gid in &all {
        if !ids.contains(gid) && window.iter().all(|m| m.groups.contains_key(gid)) {
            out.push(format!("group {gid} present throughout, not listed"));
        }
    }
    for gid in &ids {
        if !window.iter().any(|m| m.groups.contains_key(gid)) {
            out.push(format!("group {gid} listed, but in no state of the window"));
        }
    }
    for g in &s.groups {
        if let Some(d) = &g.damage {
            out.push(format!("group {} damage: {d}", g.group_id));
            continue;
        }
        let Some(a) = &g.after_replay else {
            out.push(format!("group {}: no after_replay", g.group_id));
            continue;
        };
        let seen: Seen = (
            a.first_index,
            a.last_index,
            (a.hard_state.term, a.hard_state.vote, a.hard_state.commit),
            a.snapshot.as_ref().map_or(0, |s| s.index),
        );
        let cands: Vec<Seen> = window
            .iter()
            .filter_map(|m| m.groups.get(&g.group_id))
            .map(model_state)
            .collect();
        if !cands.contains(&seen) {
            out.push(format!(
                "group {} shown as {seen:?}, in none of its states {:?}",
                g.group_id,
                dedup(cands)
            ));
        }
    }
    out
}

fn dedup(mut v: Vec<Seen>) -> Vec<Seen> {
    v.dedup();
    v
}

fn count_wal_files(root: &Path) -> usize {
    let Ok(groups) = std::fs::read_dir(root.join("groups")) else {
        return 0;
    };
    groups
        .filter_map(|g| std::fs::read_dir(g.ok()?.path()).ok())
        .map(|d| {
            d.filter(|f| {
                f.as_ref()
                    .is_ok_and(|f| f.file_name().to_string_lossy().ends_with(".wal"))
            })
            .count()
        })
        .max()
        .unwrap_or(0)
}

/// With `RAFTWAL_TOOLS_LIVE_STRACE=DIR`, each run of the binary goes under `strace -f`, its
/// trace of the calls that could change a file kept in `DIR` (checked by hand afterwards).
fn bin(args: &[&str]) -> (i32, String, String) {
    let o = match std::env::var_os("RAFTWAL_TOOLS_LIVE_STRACE") {
        Some(dir) => {
            static N: AtomicUsize = AtomicUsize::new(0);
            let out = Path::new(&dir).join(format!("{}.trace", N.fetch_add(1, Ordering::SeqCst)));
            Command::new("strace")
                .args(["-f", "-qq", "-o"])
                .arg(out)
                .args([
                    "-e",
                    "trace=openat,open,creat,unlink,unlinkat,rename,renameat,renameat2,mkdir,\
                     mkdirat,rmdir,truncate,ftruncate,fallocate,flock,mmap,link,linkat,symlink,\
                     fsync,fdatasync,pwrite64,pwritev,pwritev2",
                ])
                .arg(env!("CARGO_BIN_EXE_raftwal"))
                .args(args)
                .output()
                .unwrap()
        }
        None => Command::new(env!("CARGO_BIN_EXE_raftwal"))
            .args(args)
            .output()
            .unwrap(),
    };
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).to_string(),
        String::from_utf8_lossy(&o.stderr).to_string(),
    )
}

fn run_seed(seed: u64, secs: u64) -> (usize, usize, Vec<String>) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let e = Arc::new(
        Engine::open_with(
            &root,
            EngineOptions {
                journal_segment_bytes: 64 << 10,
                checkpoint_bytes: 96 << 10,
                ..Default::default()
            },
        )
        .unwrap(),
    );
    let shared = Arc::new(Shared {
        history: Mutex::new(vec![Model::default()]),
        done: AtomicUsize::new(0),
        stop: AtomicBool::new(false),
    });
    let w = {
        let (e, s) = (Arc::clone(&e), Arc::clone(&shared));
        std::thread::spawn(move || writer(e, s, seed))
    };
    let mut r = Rng(seed ^ 0xdead);
    let mut problems = Vec::new();
    let mut reads = 0;
    let mut slowest = Duration::ZERO;
    let start = Instant::now();
    let out = tmp.path().join("out.tar.gz");
    while start.elapsed() < Duration::from_secs(secs) {
        if w.is_finished() {
            break;
        }
        let d0 = shared.done.load(Ordering::SeqCst);
        let t0 = Instant::now();
        let gid = 1 + r.below(limits().max_id);
        let kind = r.below(8);
        let tag = |k: &str| format!("seed {seed} read {reads} ({k}, group {gid})");
        let found: (String, Vec<String>) = match kind {
            0 | 1 => match EngineInspector::open_with_key(&root, None) {
                Ok(mut ins) => {
                    let w1 = shared.window(d0);
                    let mut v = check_summary(ins.summary(), &w1, None);
                    if kind == 1 {
                        match ins.verify(&mut |_| {}) {
                            Ok(rep) if rep.ok => {}
                            Ok(rep) => v.push(format!("verify: {:?}", rep.damage)),
                            Err(e) => v.push(format!("verify: {e}")),
                        }
                        // The summary is that of the last read.
                        let w1 = shared.window(d0);
                        v.extend(check_summary(ins.summary(), &w1, None));
                    }
                    (tag(if kind == 0 { "summary" } else { "verify" }), v)
                }
                Err(e) => (tag("open"), vec![format!("open: {e}")]),
            },
            2 | 3 => (
                tag("group"),
                check_group_read_with(&root, gid, &|| shared.window(d0)),
            ),
            4 => {
                let (code, so, se) = bin(&["inspect", root.to_str().unwrap(), "--json"]);
                let w1 = shared.window(d0);
                let mut v = Vec::new();
                if code != 0 {
                    v.push(format!("inspect exit {code}: {se}"));
                }
                match serde_json::from_str::<serde_json::Value>(&so) {
                    Ok(j) => v.extend(check_json(&j, &w1)),
                    Err(e) => v.push(format!("inspect json: {e}: {so}")),
                }
                (tag("bin inspect"), v)
            }
            5 => {
                let gs = gid.to_string();
                let args: Vec<&str> = if r.chance(50) {
                    vec!["verify", root.to_str().unwrap()]
                } else {
                    vec!["verify", root.to_str().unwrap(), "--group", &gs]
                };
                let (code, _so, se) = bin(&args);
                let mut v = Vec::new();
                if code != 0 && !se.contains("no group") {
                    v.push(format!("{args:?} exit {code}: {se}"));
                }
                (tag("bin verify"), v)
            }
            6 => {
                let gs = gid.to_string();
                let (code, so, se) =
                    bin(&["dump", root.to_str().unwrap(), "--group", &gs, "--json"]);
                let w1 = shared.window(d0);
                let mut v = Vec::new();
                if code != 0 && !se.contains("no group") {
                    v.push(format!("dump exit {code}: {se}"));
                } else if code == 0 {
                    let idx: Vec<u64> = so
                        .lines()
                        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                        .filter_map(|j| j["index"].as_u64())
                        .collect();
                    if let (Some(&f), Some(&l)) = (idx.first(), idx.last()) {
                        let ok = w1
                            .iter()
                            .filter_map(|m| m.groups.get(&gid))
                            .any(|g| g.snap_index + 1 == f && g.last() == l);
                        if !ok {
                            v.push(format!("dump range [{f}, {l}] in no state"));
                        }
                    }
                }
                (tag("bin dump"), v)
            }
            _ => {
                let gs = gid.to_string();
                let _ = std::fs::remove_file(&out);
                let (code, _so, se) = bin(&[
                    "snapshot",
                    "save",
                    root.to_str().unwrap(),
                    out.to_str().unwrap(),
                    "--group",
                    &gs,
                ]);
                let mut v = Vec::new();
                if code != 0
                    && !se.contains("no group")
                    && !se.contains("no snapshot")
                    && !se.contains("has no snapshot")
                {
                    let mut states: Vec<Option<u64>> = shared
                        .window(d0)
                        .iter()
                        .map(|m| m.groups.get(&gid).map(|g| g.snap_index))
                        .collect();
                    states.dedup();
                    v.push(format!(
                        "snapshot save exit {code}: {se} (snapshot indexes since the read began: \
                         {states:?})"
                    ));
                }
                (tag("bin snapshot save"), v)
            }
        };
        reads += 1;
        let took = t0.elapsed();
        if took > Duration::from_secs(20) {
            problems.push(format!("{}: took {took:?}", found.0));
        }
        slowest = slowest.max(took);
        for p in found.1 {
            problems.push(format!("{}: {p}", found.0));
        }
    }
    shared.stop.store(true, Ordering::Relaxed);
    w.join().expect("the writer");
    let ops = shared.done.load(Ordering::SeqCst);
    let files = count_wal_files(&root);
    eprintln!(
        "seed {seed}: slowest read {slowest:?}, most .wal files in a group at the end {files}"
    );
    (reads, ops, problems)
}

fn check_group_read_with(root: &Path, gid: u64, window: &dyn Fn() -> Vec<Model>) -> Vec<String> {
    // Open, then take the window (after the reads that matter: open reads everything).
    let ins = EngineInspector::open_group(root, None, gid);
    let w = window();
    match ins {
        Err(raftwal::Error::UnknownGroup { .. })
            if w.iter().any(|m| !m.groups.contains_key(&gid)) =>
        {
            Vec::new()
        }
        Err(e) => vec![format!("open_group({gid}): {e}")],
        Ok(ins) => check_opened_group(&ins, gid, &w, window),
    }
}

fn check_opened_group(
    ins: &EngineInspector,
    gid: u64,
    window: &[Model],
    later: &dyn Fn() -> Vec<Model>,
) -> Vec<String> {
    let mut out = check_summary(ins.summary(), window, Some(gid));
    let (first, last) = match ins.first_last() {
        Ok(x) => x,
        Err(e) => {
            out.push(format!("first_last of {gid}: {e}"));
            return out;
        }
    };
    match ins.entries(first, last + 1) {
        Ok(es) => {
            let mut prev = 0;
            for (k, e) in es.iter().enumerate() {
                let i = first + k as u64;
                let want = entry_in_group(i, e.term, gid);
                if e.index != i
                    || (e.data != want.data && !e.data.is_empty())
                    || e.context != want.context
                    || e.term < prev
                {
                    out.push(format!(
                        "group {gid} entry {i}: index {} term {} data {:?}",
                        e.index,
                        e.term,
                        String::from_utf8_lossy(&e.data[..e.data.len().min(24)])
                    ));
                    break;
                }
                prev = e.term;
            }
            if es.len() as u64 != last + 1 - first {
                out.push(format!(
                    "group {gid}: {} entries of [{first}, {last}]",
                    es.len()
                ));
            }
            let terms: Vec<u64> = es.iter().map(|e| e.term).collect();
            let fits = window
                .iter()
                .filter_map(|m| m.groups.get(&gid))
                .any(|g| g.snap_index + 1 == first && g.last() == last && g.terms == terms);
            if !fits {
                out.push(format!(
                    "group {gid}: entries [{first}, {last}] with terms in no state of the window"
                ));
            }
        }
        Err(e) => out.push(format!("entries of {gid} [{first}, {last}]: {e}")),
    }
    match ins.snapshot_reader() {
        Ok(mut r) => {
            let idx = r.metadata().index;
            let mut data = Vec::new();
            match std::io::Read::read_to_end(&mut r, &mut data) {
                Ok(_) if data == snap_data(gid, idx).as_ref() => {}
                Ok(_) => out.push(format!("group {gid}: snapshot {idx} data is not its own")),
                Err(e) => out.push(format!("group {gid}: snapshot {idx} read: {e}")),
            }
            let w2 = later();
            if !w2
                .iter()
                .filter_map(|m| m.groups.get(&gid))
                .any(|g| g.snap_index == idx)
            {
                out.push(format!("group {gid}: snapshot {idx} in no state"));
            }
        }
        Err(raftwal::Error::NoSnapshot { .. }) => {}
        // The group was removed since it was read (its snapshot with it).
        Err(raftwal::Error::UnknownGroup { .. })
            if later().iter().any(|m| !m.groups.contains_key(&gid)) => {}
        Err(e) => {
            let w2 = later();
            let states: Vec<Option<u64>> = w2
                .iter()
                .map(|m| m.groups.get(&gid).map(|g| g.snap_index))
                .collect();
            let mut states2 = states.clone();
            states2.dedup();
            out.push(format!(
                "group {gid}: snapshot_reader: {e} (snapshot indexes since the read began: {states2:?})"
            ))
        }
    }
    out
}

fn check_json(j: &serde_json::Value, window: &[Model]) -> Vec<String> {
    match serde_json::from_value::<serde_json::Value>(j.clone()) {
        Ok(_) => {}
        Err(e) => return vec![e.to_string()],
    }
    let mut out = Vec::new();
    for k in ["open_error"] {
        if !j[k].is_null() {
            out.push(format!("{k}: {}", j[k]));
        }
    }
    for k in ["damage", "lost_records"] {
        if !j["journal"][k].is_null() {
            out.push(format!("journal {k}: {}", j["journal"][k]));
        }
    }
    for g in j["groups"].as_array().into_iter().flatten() {
        let gid = g["group_id"].as_u64().unwrap();
        if !g["damage"].is_null() {
            out.push(format!("group {gid} damage: {}", g["damage"]));
            continue;
        }
        let a = &g["after_replay"];
        let seen: Seen = (
            a["first_index"].as_u64().unwrap_or(0),
            a["last_index"].as_u64().unwrap_or(0),
            (
                a["hard_state"]["term"].as_u64().unwrap_or(0),
                a["hard_state"]["vote"].as_u64().unwrap_or(0),
                a["hard_state"]["commit"].as_u64().unwrap_or(0),
            ),
            a["snapshot"]["index"].as_u64().unwrap_or(0),
        );
        let cands: Vec<Seen> = window
            .iter()
            .filter_map(|m| m.groups.get(&gid))
            .map(model_state)
            .collect();
        if !cands.contains(&seen) {
            out.push(format!(
                "group {gid} shown as {seen:?}, in none of {:?}",
                dedup(cands)
            ));
        }
    }
    out
}

#[test]
#[ignore = "a timing-driven loop for reviews (what it finds is reduced to deterministic tests: \
            tests/tools_engine_races.rs, tools::inspect::engine::root): cargo test --test \
            tools_engine_live -- --ignored"]
fn the_tools_report_a_state_the_engine_had_while_it_writes() {
    let seeds: u64 = std::env::var("RAFTWAL_TOOLS_LIVE_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    let first: u64 = std::env::var("RAFTWAL_TOOLS_LIVE_FIRST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let secs: u64 = std::env::var("RAFTWAL_TOOLS_LIVE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(6);
    let mut all = Vec::new();
    for seed in first..first + seeds {
        let (reads, ops, problems) = run_seed(seed, secs);
        eprintln!(
            "seed {seed}: {reads} reads, {ops} ops, {} problems",
            problems.len()
        );
        for p in problems.iter().take(20) {
            eprintln!("  {p}");
        }
        all.extend(problems);
    }
    assert!(all.is_empty(), "{} problems", all.len());
}
