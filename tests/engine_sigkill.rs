//! SIGKILL durability of an engine root (docs/DESIGN.md §9 "Faults", §6): "after SIGKILL ... every
//! part of every durable commit is there, in its own group and no other; `create_group` and
//! `remove_group` are atomic under a crash (the group is whole or absent); a second `Engine` on
//! the same root, in this process or another, gets an error."
//!
//! `engine_sigkill_rounds` re-executes this test binary as a child process running only
//! `engine_sigkill_child` (selected with `--exact`, switched on by an environment variable;
//! without it the child test returns at once), as tests/sigkill.rs does for `DiskStorage`.
//!
//! The child opens the root (`sync_writes: true`; journal segments of 256 KiB and checkpoints every
//! MiB, so rounds rotate segments, recycle the spare and checkpoint in the background while they
//! are killed) and runs a deterministic sequence of operations drawn by `Model::gen_op` from its
//! seed and the model of the root the parent hands it (`model.txt`, written by the parent): batches
//! of `Engine::write` with 1-6 parts across the groups (appends, overwrites of an uncommitted
//! suffix with a higher term, hard states), one group's `GroupStorage::save`, received snapshots,
//! `create_snapshot` (compaction), `set_conf_state`, `truncate_entries_until` (any index: 0, at
//! or below the snapshot, in the log, at or past its end), `set_uint` (raft id, checkpoint index:
//! read back at once with `uint` and `checkpoint`), `GroupStorage::sync`, `Engine::sync`,
//! `create_group`, `remove_group`; about one entry in eight a conf change. Before each
//! operation it prints `BEGIN n`, after it returned `ACK n` (one write per line). Entry payloads
//! encode group, index and term; snapshot data encodes group and index; conf states the group.
//!
//! The parent kills the child with SIGKILL at a seeded instant (after a number of
//! acknowledgements, a few lines more, a short delay; or right after a `BEGIN`, with the operation
//! in flight), drains the lines still in the pipe, and replays the same generator on its own model
//! (`Model` of tests/common/engine_ops.rs, independent of the engine's code) to know what
//! operations `1..=acked` did and what the one in flight (`BEGIN` without `ACK`) would do. It then
//! opens the root (in some rounds only after killing one to three more children during their
//! `Engine::open`, that is during recovery) and checks every group:
//!
//! * the set of groups is the model's after the acknowledged operations; a group being created
//!   in flight is absent or present and empty, one being removed is present (whole) or absent;
//! * every group not touched by the operation in flight is exactly the model's: first and last
//!   index, every entry (index, term, type, payload) and term, hard state, conf state, snapshot
//!   (index, term, conf state, data), the Normal entries whose data a truncation cleared (those
//!   the log held when it ran: read back empty, every other entry with its data), raft id and
//!   checkpoint index (as the group's last journaled write, `sync` or `create_snapshot` made them
//!   durable, or one of the values `set_uint` gave them since); a group touched by it is exactly
//!   as before it or exactly as after (a truncation whole or not at all);
//! * every payload read is the one of its own group, index and term: an entry or snapshot of one
//!   group found in another is named as such.
//!
//! The parent's model then takes the state found, and the next round's child starts from it. Some
//! rounds the parent checks a copy of the killed root, so the next child itself recovers the root
//! a kill left. While a child holds the root, `Engine::open` in the parent must fail (`Locked`),
//! and the child checks the same within its own process. At the end the root is opened, checked
//! and closed cleanly, and every group directory must open with `DiskStorage::open` holding its
//! group's whole state.
//!
//! Encrypted rounds: one round in eight (which ones follows from the round's number,
//! [`encrypted`]; `RAFTWAL_ENGINE_SIGKILL_ENCRYPT=all` for all) run on a second root, opened by every engine of the round (the child, the
//! children killed during recovery, the parent's checks) and by the final `DiskStorage::open`s
//! with [`KEY`] (`EngineOptions::encryption_key`: sealed journal records, sealed payloads and
//! slots, sealed meta pages). Each root keeps its key for life, and its own model: a plaintext
//! round goes on from where the last plaintext round left its root, an encrypted round from
//! where the last encrypted one left the other. The first time each root is checked after a
//! kill, it is also opened with a key that does not fit it (no key or another key for the
//! encrypted root, a key for the plaintext one): `Error::Encryption`, and no file changed.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use raftwal::{DiskStorage, Engine, EngineOptions, Error, Options, RecoveryMode};

#[path = "common/engine_ops.rs"]
mod engine_ops;
#[path = "common/env.rs"]
mod env;
#[path = "common/roots.rs"]
mod roots;
use roots::tree;

use engine_ops::{check_group, check_root, run_op, splitmix, Limits, Model, Op, Rng};

const ENV_ROOT: &str = "RAFTWAL_ENGINE_SIGKILL_ROOT";
const ENV_SEED: &str = "RAFTWAL_ENGINE_SIGKILL_SEED";
const ENV_MODE: &str = "RAFTWAL_ENGINE_SIGKILL_MODE";
/// Set (to anything) for a child of an encrypted round: it opens the root with [`KEY`].
const ENV_KEYED: &str = "RAFTWAL_ENGINE_SIGKILL_KEYED";
const CHILD_TEST: &str = "engine_sigkill_child";

/// Rounds in `cargo test`. A longer run by hand: `RAFTWAL_ENGINE_SIGKILL_ROUNDS=1000` (and
/// `RAFTWAL_ENGINE_SIGKILL_FIRST=250` to start at another round: each round's seeds come from
/// its number); `RAFTWAL_ENGINE_SIGKILL_KEEP=DIR` keeps a copy of the root as the kills left it
/// when a round's check fails (docs/RELIABILITY.md: the long runs, and the loss they found).
const ROUNDS: u64 = 30;

/// Group ids `1..=48`, between 8 and 32 of them at a time. A long run by hand may keep more:
/// `RAFTWAL_ENGINE_SIGKILL_GROUPS=128` keeps up to 128 (ids `1..=192`, at least 32; 4 or more), so that a
/// checkpoint's passes are long enough for a second thread to join them while commits wait
/// for room in the journal (module `engine::joined`: 64 groups or more).
fn limits() -> Limits {
    let max_live: usize = std::env::var("RAFTWAL_ENGINE_SIGKILL_GROUPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(32)
        .max(4);
    Limits {
        max_id: max_live as u64 * 3 / 2,
        min_live: max_live / 4,
        max_live,
        big_percent: 10,
    }
}

/// The engine's options, in the child and the parent alike. `checkpoint_bytes` may come from
/// `RAFTWAL_ENGINE_SIGKILL_CHECKPOINT_BYTES` (a long run by hand: smaller, checkpoints run all
/// the time and land in more of the windows a kill can hit).
fn engine_opts(key: Option<[u8; 32]>) -> EngineOptions {
    let checkpoint_bytes = std::env::var("RAFTWAL_ENGINE_SIGKILL_CHECKPOINT_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1 << 20);
    EngineOptions {
        journal_segment_bytes: 256 << 10,
        checkpoint_bytes,
        encryption_key: key,
        ..Default::default()
    }
}

/// The key of the encrypted rounds' root; [`OTHER_KEY`] is one that does not fit it.
const KEY: [u8; 32] = *b"raftwal engine sigkill test key!";
const OTHER_KEY: [u8; 32] = *b"not the key of the encrypted rt!";

/// Whether round `round` runs encrypted, on the encrypted root: one round in eight, from the
/// round's number (rounds 3, 17 and 18 of `cargo test`'s 30).
/// `RAFTWAL_ENGINE_SIGKILL_ENCRYPT=all` makes every round encrypted (a long run by hand),
/// `none` none.
fn encrypted(round: u64) -> bool {
    match std::env::var("RAFTWAL_ENGINE_SIGKILL_ENCRYPT").as_deref() {
        Ok("all") => true,
        Ok("none") => false,
        Ok(other) => panic!("RAFTWAL_ENGINE_SIGKILL_ENCRYPT={other}: want all or none"),
        Err(_) => splitmix(round ^ 0xE4C2_7E57).is_multiple_of(8),
    }
}

/// A long run by hand may aim its kills: `RAFTWAL_ENGINE_SIGKILL_AT=remove_group` kills every
/// round at the first `BEGIN` (after the round's threshold) of an operation whose summary
/// starts so (`Op::summary`: `remove_group`, `create_group`, `create_snapshot`, `write`, ...).
fn kill_at() -> Option<String> {
    std::env::var("RAFTWAL_ENGINE_SIGKILL_AT").ok()
}

// ---------------------------------------------------------------------------------------------
// the child
// ---------------------------------------------------------------------------------------------

fn line(s: &str) {
    let out = std::io::stdout();
    let mut o = out.lock();
    // one write per line: a line in the pipe is a complete acknowledgement
    o.write_all(format!("{s}\n").as_bytes()).unwrap();
    o.flush().unwrap();
}

/// The child: opens the root and runs the operations of its seed from the parent's model (mode
/// `write`), or only opens the root (mode `open`, killed during recovery). A no-op without the
/// environment variable.
#[test]
fn engine_sigkill_child() {
    let Ok(root) = std::env::var(ENV_ROOT) else {
        return;
    };
    let root = PathBuf::from(root);
    let seed: u64 = std::env::var(ENV_SEED).unwrap().parse().unwrap();
    let mode = std::env::var(ENV_MODE).unwrap();
    let key = std::env::var_os(ENV_KEYED).map(|_| KEY);
    line("OPENING");
    let mut opts = engine_opts(key);
    if seed.is_multiple_of(3) {
        // A third of the children rest whenever every record is checkpointed: the journal
        // gives back its spares and prepared segment, then prepares the next one only once the
        // segment in use is half full; the kills land in rests too.
        opts.journal_rest_after = Duration::ZERO;
    }
    let e = Engine::open_with(&root, opts).expect("child: open");
    line("OPENED");
    if mode == "open" {
        std::thread::sleep(Duration::from_secs(30));
        return;
    }
    assert!(
        matches!(Engine::open(&root), Err(Error::Locked { .. })),
        "child: a second Engine on the root in the same process must be refused"
    );
    let mut model = Model::load(&model_path(&root));
    let mut r = Rng(splitmix(seed));
    let limits = limits();
    let started = Instant::now();
    for n in 1..=100_000u64 {
        if started.elapsed() > Duration::from_secs(40) {
            break;
        }
        let op = model.gen_op(&mut r, &limits);
        line(&format!("BEGIN {n}"));
        run_op(&e, &op).unwrap_or_else(|err| panic!("child: operation {n} {op:?}: {err}"));
        line(&format!("ACK {n}"));
        model.apply(&op);
    }
    line("DONE");
}

// ---------------------------------------------------------------------------------------------
// the parent
// ---------------------------------------------------------------------------------------------

/// Where the parent hands its model to the child: beside the root, not in it.
fn model_path(root: &Path) -> PathBuf {
    root.with_extension("model.txt")
}

struct Spawned {
    child: Child,
    lines: mpsc::Receiver<String>,
    stderr: std::thread::JoinHandle<String>,
}

fn spawn(root: &Path, seed: u64, mode: &str, key: Option<[u8; 32]>) -> Spawned {
    let exe = std::env::current_exe().expect("current_exe");
    let mut cmd = Command::new(exe);
    cmd.args(["--exact", CHILD_TEST, "--nocapture", "--test-threads", "1"])
        .env(ENV_ROOT, root)
        .env(ENV_SEED, seed.to_string())
        .env(ENV_MODE, mode)
        .env_remove(ENV_KEYED);
    if let Some(k) = key {
        assert_eq!(k, KEY, "a child knows one key");
        cmd.env(ENV_KEYED, "1");
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the child");
    let stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        let mut r = BufReader::new(stdout);
        loop {
            let mut l = String::new();
            match r.read_line(&mut l) {
                Ok(0) | Err(_) => break,
                // a line cut short by the kill is not an acknowledgement
                Ok(_) if l.ends_with('\n') => {
                    // The protocol's lines; anything else is libtest's own output (which puts
                    // "test engine_sigkill_child ... " before the first of them).
                    let l = l.trim_end();
                    let ours = ["OPENING", "OPENED", "BEGIN ", "ACK ", "DONE"];
                    if let Some(k) = ours.iter().filter_map(|p| l.find(p)).min() {
                        if tx.send(l[k..].to_string()).is_err() {
                            break;
                        }
                    }
                }
                Ok(_) => {}
            }
        }
    });
    let stderr = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    Spawned {
        child,
        lines: rx,
        stderr,
    }
}

/// SIGKILLs the child and checks that it died of it.
fn kill(mut s: Spawned, what: &str) -> Vec<String> {
    s.child.kill().expect("SIGKILL"); // Child::kill sends SIGKILL on Unix
    let status = s.child.wait().expect("wait");
    let rest: Vec<String> = s.lines.iter().collect();
    let err = s.stderr.join().unwrap_or_default();
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "{what}: the child did not die of SIGKILL: {status:?}\n--- child stderr ---\n{err}"
    );
    rest
}

fn next_line(s: &mut Spawned, what: &str) -> String {
    match s.lines.recv_timeout(Duration::from_secs(60)) {
        Ok(l) => l,
        Err(_) => {
            let _ = s.child.kill();
            let status = s.child.wait();
            let err = std::mem::replace(&mut s.stderr, std::thread::spawn(String::new))
                .join()
                .unwrap_or_default();
            panic!("{what}: the child stopped talking ({status:?})\n--- child stderr ---\n{err}")
        }
    }
}

/// What a killed writer acknowledged: the last `ACK` and the last `BEGIN`.
#[derive(Default)]
struct Acks {
    acked: u64,
    begun: u64,
}

impl Acks {
    fn take(&mut self, l: &str, what: &str) {
        if let Some(n) = l.strip_prefix("ACK ") {
            self.acked = n.parse().unwrap();
        } else if let Some(n) = l.strip_prefix("BEGIN ") {
            self.begun = n.parse().unwrap();
        } else {
            assert!(
                l != "DONE",
                "{what}: the writer finished before it was killed"
            );
        }
    }
}

/// Opens `root` and checks it ([`check_root`]); returns the model of what was found.
fn verify(
    root: &Path,
    key: Option<[u8; 32]>,
    what: &str,
    before: &Model,
    inflight: Option<(&Op, &Model)>,
) -> Model {
    // The root as the kills left it, for a failing check (`RAFTWAL_ENGINE_SIGKILL_KEEP`).
    let keep = std::env::var_os("RAFTWAL_ENGINE_SIGKILL_KEEP").map(PathBuf::from);
    let as_killed = keep.as_ref().map(|dir| {
        let copy = dir.join(format!("as-killed-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&copy);
        roots::kill_image(root, &copy);
        copy
    });
    let e = Engine::open_with(root, engine_opts(key))
        .unwrap_or_else(|e| panic!("{what}: open after SIGKILL: {e}"));
    let found = check_root(&e, before, inflight).unwrap_or_else(|err| {
        let kept = as_killed.as_ref().map_or(String::new(), |c| {
            format!(" (the root as killed: {})", c.display())
        });
        panic!("{what}: {err}{kept}")
    });
    if let Some(copy) = as_killed {
        let _ = std::fs::remove_dir_all(copy);
    }
    e.close().unwrap_or_else(|e| panic!("{what}: close: {e}"));
    found
}

/// Whether `found` (integers as read) is the state `m` (integers possibly still to be made
/// durable) describes.
fn same_state(found: &Model, m: &Model) -> bool {
    found.groups.len() == m.groups.len()
        && found.groups.iter().all(|(gid, f)| {
            m.groups.get(gid).is_some_and(|g| {
                let mut g = g.clone();
                if g.ints_may_be((f.raft_id, f.checkpoint)) {
                    (g.raft_id, g.checkpoint) = (f.raft_id, f.checkpoint);
                    g.pending.clear();
                }
                g == *f
            })
        })
}

/// A root a kill left, opened with keys that do not fit it (`keys`): each open is
/// `Error::Encryption` and changes nothing, byte for byte.
fn refuses_keys(root: &Path, keys: &[Option<[u8; 32]>], what: &str) {
    let before = tree(root);
    for key in keys {
        let which = match key {
            None => "no key",
            Some(k) if *k == KEY => "the key of the encrypted root",
            Some(_) => "another key",
        };
        match Engine::open_with(root, engine_opts(*key)) {
            Err(Error::Encryption { .. }) => {}
            Err(e) => panic!("{what}: opened with {which}: not Error::Encryption but {e:?}"),
            Ok(_) => panic!("{what}: opened with {which}: the open succeeded"),
        }
        let changed = roots::changed(&before, &tree(root));
        assert!(
            changed.is_empty(),
            "{what}: the open with {which} changed {changed:?}"
        );
    }
}

fn test_dir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(d) = tempfile::Builder::new()
            .prefix("raftwal-engine-sigkill")
            .tempdir_in(shm)
        {
            return d;
        }
    }
    tempfile::tempdir().unwrap()
}

/// One of the test's roots: the plaintext one or the encrypted one, with its model and key.
struct Root {
    path: PathBuf,
    key: Option<[u8; 32]>,
    model: Model,
    /// Whether a round has run on it.
    used: bool,
    /// Whether it was opened with keys that do not fit it.
    keys_refused: bool,
}

#[test]
fn engine_sigkill_rounds() {
    let started = Instant::now();
    let tmp = test_dir();
    let mut roots = [None, Some(KEY)].map(|key| Root {
        path: tmp.path().join(if key.is_some() {
            "root-encrypted"
        } else {
            "root"
        }),
        key,
        model: Model::default(),
        used: false,
        keys_refused: false,
    });
    let mut encrypted_rounds = 0;
    let (mut in_flight_kills, mut recovery_kills, mut copies, mut ops) = (0, 0, 0, 0u64);
    // Operations in flight found done, and found not done.
    let (mut done, mut undone) = (0, 0);
    // Of the operations acknowledged; and the groups found with data a truncation cleared.
    let (mut truncations, mut set_uints, mut syncs, mut cleared) = (0, 0, 0, 0);
    let rounds = env::env_range(
        "RAFTWAL_ENGINE_SIGKILL_FIRST",
        "RAFTWAL_ENGINE_SIGKILL_ROUNDS",
        ROUNDS,
    );
    let count = rounds.end - rounds.start;
    let limits = limits();
    for round in rounds {
        let enc = encrypted(round);
        encrypted_rounds += usize::from(enc);
        let Root {
            path: root,
            key,
            model,
            used,
            keys_refused,
        } = &mut roots[usize::from(enc)];
        let (root, key) = (root.as_path(), *key);
        *used = true;
        let what = format!("round {round}{}", if enc { " (encrypted)" } else { "" });
        let mut r = Rng(splitmix(0x5EED_0000 + round));
        let seed = splitmix(round ^ 0xC0FFEE);
        model.save(&model_path(root));
        let mut child = spawn(root, seed, "write", key);
        assert_eq!(next_line(&mut child, &what), "OPENING");
        assert_eq!(next_line(&mut child, &what), "OPENED");
        // Kill after `threshold` acknowledgements and `extra` more lines (then a short delay),
        // or at the first BEGIN after the threshold, with its operation in flight.
        let mut threshold = r.range(20, 1_200);
        if enc && cfg!(debug_assertions) {
            // Unoptimised, the cipher's generic code (instantiated in raftwal, built at
            // opt-level 0 whatever Cargo.toml says of aes-gcm) seals and opens about 10x
            // slower than a plaintext round writes and reads: rounds of 20-79 acknowledgements
            // keep `cargo test`'s time (+7%). A release build runs them whole.
            threshold = 20 + threshold % 60;
        }
        let extra = r.below(4);
        let aimed = kill_at();
        let at_begin = r.chance(40) || aimed.is_some();
        let delay = Duration::from_micros(r.below(2_000));
        let mut acks = Acks::default();
        let mut after_threshold = None;
        // The child's operations as the parent's generator draws them (for an aimed kill).
        let mut gen = (Rng(splitmix(seed)), model.clone(), Vec::<String>::new());
        let mut summary = |n: u64| {
            let (g, m, done) = &mut gen;
            while (done.len() as u64) < n {
                let op = m.gen_op(g, &limits);
                m.apply(&op);
                done.push(op.summary());
            }
            done[n as usize - 1].clone()
        };
        loop {
            let l = next_line(&mut child, &what);
            acks.take(&l, &what);
            if acks.acked >= threshold {
                let n = after_threshold.get_or_insert(0);
                *n += 1;
                let begun = l.strip_prefix("BEGIN ").and_then(|n| n.parse().ok());
                let aimed_at = match (&aimed, begun) {
                    (None, _) => true,
                    (Some(kind), Some(n)) => summary(n).starts_with(kind.as_str()),
                    (Some(_), None) => false,
                };
                if (at_begin && begun.is_some() && aimed_at) || (!at_begin && *n > extra) {
                    break;
                }
            }
        }
        if !at_begin {
            std::thread::sleep(delay);
        }
        assert!(
            matches!(
                Engine::open_with(root, engine_opts(key)),
                Err(Error::Locked { .. })
            ),
            "{what}: a second Engine on the root of a running child must be refused"
        );
        for l in kill(child, &what) {
            acks.take(&l, &what);
        }
        // The generator replayed: the acknowledged operations, and the one in flight.
        let mut g = Rng(splitmix(seed));
        let mut before = model.clone();
        for _ in 0..acks.acked {
            let op = before.gen_op(&mut g, &limits);
            match op {
                Op::Truncate { .. } => truncations += 1,
                Op::SetUint { .. } => set_uints += 1,
                Op::Sync { .. } => syncs += 1,
                _ => {}
            }
            before.apply(&op);
        }
        ops += acks.acked;
        let inflight = (acks.begun > acks.acked).then(|| {
            let op = before.gen_op(&mut g, &limits);
            let mut after = before.clone();
            after.apply(&op);
            (op, after)
        });
        in_flight_kills += usize::from(inflight.is_some());
        // Kills during recovery: the next open must recover from those too.
        let kills = if r.chance(35) { r.range(1, 3) } else { 0 };
        for k in 0..kills {
            let mut c = spawn(root, 0, "open", key);
            assert_eq!(next_line(&mut c, &what), "OPENING");
            std::thread::sleep(Duration::from_micros(r.below(8_000)));
            let rest = kill(c, &format!("{what}, recovery kill {k}"));
            recovery_kills += usize::from(!rest.iter().any(|l| l == "OPENED"));
        }
        // Some rounds check a copy, and the next child recovers the killed root itself.
        let check_copy = r.chance(40);
        let checked = if check_copy {
            copies += 1;
            let copy = tmp.path().join(format!("copy{round}"));
            roots::kill_image(root, &copy);
            copy
        } else {
            root.to_path_buf()
        };
        // Once per root: keys that do not fit it are refused, and change nothing.
        if !*keys_refused {
            *keys_refused = true;
            let wrong = match key {
                Some(_) => vec![None, Some(OTHER_KEY)],
                None => vec![Some(KEY)],
            };
            refuses_keys(&checked, &wrong, &what);
        }
        let found = verify(
            &checked,
            key,
            &what,
            &before,
            inflight.as_ref().map(|(op, after)| (op, after)),
        );
        if check_copy {
            std::fs::remove_dir_all(&checked).unwrap();
        }
        eprintln!(
            "{what}: killed after {} acknowledged operations{}, {} groups, {} recovery kills, \
             checked {}, {:.1?}",
            acks.acked,
            match &inflight {
                Some((op, _)) => format!(" with a {} in flight", op.summary()),
                None => String::new(),
            },
            found.groups.len(),
            kills,
            if check_copy { "a copy" } else { "the root" },
            started.elapsed()
        );
        if let Some((_, after)) = &inflight {
            if same_state(&found, after) {
                done += 1;
            } else if same_state(&found, &before) {
                undone += 1;
            }
        }
        cleared += found
            .groups
            .iter()
            .filter(|(gid, g)| g.cleared_seen(**gid) > g.snap_index + 1)
            .count();
        *model = found;
    }
    // A clean close: every group directory is a DiskStorage directory with its group's state.
    for Root {
        path: root,
        key,
        model,
        ..
    } in roots.iter().filter(|r| r.used)
    {
        let e = Engine::open_with(root, engine_opts(*key)).expect("final open");
        assert_eq!(
            e.group_ids(),
            model.groups.keys().copied().collect::<Vec<_>>()
        );
        for (gid, g) in &model.groups {
            check_group(&e.group(*gid).unwrap(), *gid, &[g])
                .unwrap_or_else(|err| panic!("final: group {gid}: {err}"));
        }
        e.close().expect("final close");
        for (gid, g) in &model.groups {
            let dir = root.join("groups").join(gid.to_string());
            let s = DiskStorage::open_with(
                &dir,
                Options {
                    recovery_mode: RecoveryMode::AbsoluteConsistency,
                    encryption_key: *key,
                    ..Default::default()
                },
            )
            .unwrap_or_else(|e| {
                panic!("DiskStorage::open of group {gid} after a clean close: {e}")
            });
            check_group(&s, *gid, &[g])
                .unwrap_or_else(|err| panic!("group {gid} as a DiskStorage: {err}"));
            assert_eq!(
                s.uint(raftwal::MetaInfo::RaftId),
                g.raft_id,
                "group {gid}'s raft id"
            );
            assert_eq!(
                s.uint(raftwal::MetaInfo::GroupId),
                *gid,
                "group {gid}'s group id"
            );
            s.close().unwrap();
        }
    }
    eprintln!(
        "{count} rounds ({encrypted_rounds} encrypted), {ops} operations acknowledged \
         ({truncations} truncations, {set_uints} set_uint, {syncs} syncs), {in_flight_kills} \
         kills with an operation in flight ({done} found done, {undone} not done), \
         {recovery_kills} kills during recovery, {copies} copies checked, {cleared} groups found \
         with data cleared, {} + {} groups at the end, {:.1?}",
        roots[0].model.groups.len(),
        roots[1].model.groups.len(),
        started.elapsed()
    );
    assert!(
        in_flight_kills > 0,
        "no kill landed with an operation in flight"
    );
}
