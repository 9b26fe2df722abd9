//! Damaged engine roots (docs/DESIGN.md §4 "Open/recovery", §9 "Faults": a torn end of the shared
//! files is the tail, cut by default and an error in `AbsoluteConsistency`; damage to committed
//! data is an error naming the damaged file; no method panics on any directory content), through
//! the logic of the `open_engine` fuzz target (`tests/common/fuzz/open_engine.rs`, included here
//! with `#[path]` as tests/fuzz_corpus.rs does), so that CI exercises it without libFuzzer.
//!
//! `damage_in_every_position_class`: for every position class (a journal segment's header, a
//! committed record's header and the whole record, the header and the body of a record in the torn
//! tail, bytes after the last record, one and both copies of `engine.meta`, one copy of a group's
//! `wal.meta`, a slot and a payload of a group's `.wal` file) a number of seeded damaged roots,
//! each opened in both modes and checked against the outcome its class must have; an open that
//! refuses must change nothing. A damaged group meta copy has two outcomes, both covered: the
//! group whole (also from an older copy, when the journal holds everything after it), or a
//! refusal naming `wal.meta` (when it does not, or a snapshot the group took would be lost).
//!
//! `random_mutations_never_panic`: seeded random inputs for the fuzz target's own oracle (no
//! panic, a root or a typed error, nothing read back that is not genuine, strict and tolerant
//! opens agree).

use std::time::Instant;

#[path = "common/fuzz/mod.rs"]
mod fuzz;
#[path = "common/roots.rs"]
mod roots;

use fuzz::open_engine::{run, run_damage, template_summary, CLASSES, FORGE_OP, FORGE_RECORD_OP};
use fuzz::util::splitmix;
use fuzz::{entries, layout};

const PER_CLASS: u64 = 30;
const RANDOM_INPUTS: u64 = 300;
const FORGED_INPUTS: u64 = 400;
/// `FORGED_INPUTS`, or `RAFTWAL_FORGED_INPUTS` from the environment (a longer run by hand).
fn forged_inputs() -> u64 {
    std::env::var("RAFTWAL_FORGED_INPUTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(FORGED_INPUTS)
}

#[test]
fn damage_in_every_position_class() {
    let started = Instant::now();
    eprintln!("template: {}", template_summary());
    let mut failures = Vec::new();
    let (mut cut, mut fell_back, mut meta_refused) = (0, 0, 0);
    for class in CLASSES {
        for n in 0..PER_CLASS {
            match run_damage(class, n) {
                Ok(s) => {
                    cut += usize::from(s.cut);
                    fell_back += usize::from(s.fell_back);
                    meta_refused += usize::from(s.meta_refused);
                }
                Err(e) => failures.push(format!("{class:?} #{n}: {e}")),
            }
        }
    }
    eprintln!(
        "{} damaged roots ({PER_CLASS} per class, {} classes), {cut} torn tails cut, {fell_back} \
         group meta pages fallen back to the older copy (whole), {meta_refused} refused, {} \
         failures, {:.1?}",
        PER_CLASS * CLASSES.len() as u64,
        CLASSES.len(),
        failures.len(),
        started.elapsed()
    );
    assert!(
        failures.is_empty(),
        "{} damaged roots gave the wrong outcome:\n{}",
        failures.len(),
        failures
            .iter()
            .take(12)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n\n")
    );
    assert!(
        fell_back > 0 && meta_refused > 0,
        "the group meta class covered {fell_back} fallbacks to the older copy and \
         {meta_refused} refusals: both outcomes must be covered"
    );
}

#[test]
fn random_mutations_never_panic() {
    let started = Instant::now();
    let (mut strict, mut tolerant, mut mutations) = (0, 0, 0);
    let mut failures = Vec::new();
    for n in 0..RANDOM_INPUTS {
        let len = 4 + (splitmix(n) % 60) as usize;
        let data: Vec<u8> = (0..len)
            .map(|k| splitmix(n << 16 ^ k as u64) as u8)
            .collect();
        match run(&data) {
            Ok(s) => {
                mutations += s.mutations;
                strict += usize::from(s.strict_opened);
                tolerant += usize::from(s.tolerant_opened);
            }
            Err(e) => failures.push(format!("input {n} {data:02x?}: {e}")),
        }
    }
    eprintln!(
        "{RANDOM_INPUTS} inputs, {mutations} mutations: opened strictly {strict}, tolerantly \
         {tolerant}, {} failures, {:.1?}",
        failures.len(),
        started.elapsed()
    );
    assert!(
        failures.is_empty(),
        "{} inputs failed:\n{}",
        failures.len(),
        failures
            .iter()
            .take(8)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n\n")
    );
}

/// Meta pages and journal records with valid checksums and forged fields: a meta page's
/// (`engine.meta`'s checkpoint, next incarnation and open flag; a group's raft and group ids,
/// checkpoint, hard state, snapshot, first file, and its engine part: journal position, log
/// end, tail, incarnation, last file, or none at all), or a live record's (a part's
/// incarnation, an entry's index, term or type, a hard state, the meta integers, a
/// truncation); one to three fields, one or both meta copies, one or two forgeries a root.
/// The fuzz target's oracle holds: no panic, in the engine or in the read-only tools on the
/// same root; a root or a typed error; every entry and snapshot read back is its own group's;
/// logs are contiguous, terms never decrease and agree with `term()`, commits lie within the
/// log; strict and tolerant opens agree. The byte-level mutations of
/// `random_mutations_never_panic` almost never leave a valid checksum, so they never reach the
/// checks on what a page or a record says. `RAFTWAL_FORGED_INPUTS` sets the count (10,000 by
/// hand, docs/RELIABILITY.md). The read-only tools also read every root, and must show each
/// group as a strict open shows it and say a default open fails exactly when it does.
#[test]
fn forged_pages_and_records_never_panic_or_break_a_log() {
    let started = Instant::now();
    let (mut strict, mut tolerant) = (0, 0);
    let mut failures = Vec::new();
    for n in 0..forged_inputs() {
        let mut data = Vec::new();
        for k in 0..1 + splitmix(n) % 2 {
            let h = splitmix(n ^ k << 40);
            data.push(if h.is_multiple_of(2) {
                FORGE_OP + (h >> 8) as u8 % 8
            } else {
                FORGE_RECORD_OP + (h >> 8) as u8 % 8
            });
            data.extend((0..24).map(|j| splitmix(n << 16 ^ k << 8 ^ j) as u8));
        }
        match run(&data) {
            Ok(s) => {
                strict += usize::from(s.strict_opened);
                tolerant += usize::from(s.tolerant_opened);
            }
            Err(e) => failures.push(format!("input {n} {data:02x?}: {e}")),
        }
    }
    eprintln!(
        "{} forged roots: opened strictly {strict}, tolerantly {tolerant}, {} \
         failures, {:.1?}",
        forged_inputs(),
        failures.len(),
        started.elapsed()
    );
    assert!(
        failures.is_empty(),
        "{} forged roots failed:\n{}",
        failures.len(),
        failures
            .iter()
            .take(8)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n\n")
    );
    // Some forgeries change nothing that matters (a value set to what it was): the roots open.
    assert!(strict > 0 && tolerant > 0, "no forged root opened");
}

/// A group meta page with a valid checksum whose engine fields say the log ends where its last
/// file cannot hold it (past the file's 30,000 slots, past the largest index, at `u64::MAX`), or
/// name an impossible last file, is refused at open in both modes with an error naming
/// `wal.meta`; nothing panics, now or on a read, and the refused open changes nothing. (Such a
/// page once opened, then panicked on the first `term()` of its last index, and in a release
/// build could zero the last file's slots first.)
#[test]
fn a_forged_log_end_in_a_group_meta_page_is_refused_naming_it() {
    use fuzz::layout::{
        META_FILE, META_MIN_REGION, META_RECORD_AT, META_RECORD_LEN_AT, META_SEQ_AT,
    };
    use fuzz::open_dir::encode_meta_region;
    use fuzz::util::{pb_decode, pb_encode, pb_set_sub, pb_set_varint, pb_sub};
    use raftwal::{Engine, EngineOptions, RecoveryMode, WriteBatch};

    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    {
        let e = Engine::open(&root).unwrap();
        e.create_group(1, 1).unwrap();
        let es: Vec<raft::prelude::Entry> = (1..=10)
            .map(|i| fuzz::entries::entry_in_group(i, 1, 1))
            .collect();
        let mut hs = raft::prelude::HardState::default();
        hs.term = 1;
        hs.commit = 10;
        let mut b = WriteBatch::new();
        b.save(1, &hs, &es, &Default::default());
        e.write(&mut b).unwrap();
        e.close().unwrap();
    }
    let meta = root.join("groups/1").join(META_FILE);
    let clean = std::fs::read(&meta).unwrap();
    let region = META_MIN_REGION as usize;
    assert_eq!(clean.len(), 2 * region, "two regions of the least size");
    // The newest copy: the higher sequence number of the two.
    let seq_of = |r: usize| {
        let at = r * region + META_SEQ_AT as usize;
        u64::from_le_bytes(clean[at..at + 8].try_into().unwrap())
    };
    let newest = if seq_of(1) > seq_of(0) { 1 } else { 0 };
    let len_at = newest * region + META_RECORD_LEN_AT as usize;
    let len = u32::from_le_bytes(clean[len_at..len_at + 4].try_into().unwrap()) as usize;
    let rec_at = newest * region + META_RECORD_AT as usize;
    let rec = pb_decode(&clean[rec_at..rec_at + len]).expect("the meta record decodes");
    let engine = pb_sub(&rec, 8).expect("an engine group's record has engine fields");
    assert_eq!(fuzz::util::pb_varint(&engine, 2), 10, "the log ends at 10");

    // (field of EngineGroupRecord, value): last_index = 2, last_file_id = 5.
    for (field, value) in [
        (2u32, 30_005u64),
        (2, 30_000 + 1),
        (2, (1 << 62) + 1),
        (2, u64::MAX),
        (5, u64::MAX),
        (5, (1 << 62) + 1),
    ] {
        let mut eng = engine.clone();
        pb_set_varint(&mut eng, field, value);
        let mut forged_rec = rec.clone();
        pb_set_sub(&mut forged_rec, 8, Some(&eng));
        let body = pb_encode(&forged_rec);
        let h = encode_meta_region(seq_of(newest) + 1, 1, 0, body.len() as u32, &body);
        let mut forged = clean.clone();
        let other = (1 - newest) * region;
        forged[other..other + h.len()].copy_from_slice(&h);
        std::fs::write(&meta, &forged).unwrap();
        for mode in [
            RecoveryMode::TolerateTailCorruption,
            RecoveryMode::AbsoluteConsistency,
        ] {
            let opts = EngineOptions {
                recovery_mode: mode,
                ..Default::default()
            };
            match Engine::open_with(&root, opts) {
                Ok(e) => panic!(
                    "field {field} = {value}, {mode:?}: opened with groups {:?}",
                    e.group_ids()
                ),
                Err(err) => {
                    let msg = err.to_string();
                    assert!(
                        msg.contains("wal.meta"),
                        "field {field} = {value}, {mode:?}: {msg}"
                    );
                }
            }
            assert!(
                std::fs::read(&meta).unwrap() == forged,
                "field {field} = {value}, {mode:?}: the refused open changed wal.meta"
            );
        }
    }
    // The genuine page opens whole again.
    std::fs::write(&meta, &clean).unwrap();
    let e = Engine::open(&root).unwrap();
    let g = e.group(1).unwrap();
    use raft::Storage;
    assert_eq!(g.last_index().unwrap(), 10);
    assert_eq!(g.term(10).unwrap(), 1);
}

/// The root a `create_snapshot(15)` leaves when it comes between two parts of the application
/// of record 2 (entries 11..20; with `install`, after a snapshot installed at 10, whose file
/// the snapshot at 15 tidies away): group 1's page then records record 1 as its journal
/// position. Made from a real root imaged while the engine has it open (as a kill leaves it),
/// the page's journal position set back by one record; with `tear_other`, the page's other
/// copy damaged. Returns the directory holding it, the image and the options to open it with.
fn snapshot_inside_a_replayed_record(
    install: bool,
    tear_other: bool,
) -> (
    tempfile::TempDir,
    std::path::PathBuf,
    raftwal::EngineOptions,
) {
    use fuzz::layout::{
        META_FILE, META_MIN_REGION, META_RECORD_AT, META_RECORD_LEN_AT, META_SEQ_AT,
    };
    use fuzz::open_dir::encode_meta_region;
    use fuzz::util::{pb_decode, pb_encode, pb_set_sub, pb_set_varint, pb_sub, pb_varint};
    use raftwal::{Engine, EngineOptions, WriteBatch};

    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let image = dir.path().join("image");
    let opts = EngineOptions {
        checkpoint_bytes: u64::MAX / 2,
        ..Default::default()
    };
    let e = Engine::open_with(&root, opts.clone()).unwrap();
    let g = e.create_group(1, 1).unwrap();
    let mut hs = raft::prelude::HardState::default();
    hs.term = 1;
    for range in [1..=10u64, 11..=20] {
        let es: Vec<_> = range
            .clone()
            .map(|i| fuzz::entries::entry_in_group(i, 1, 1))
            .collect();
        hs.commit = *range.end();
        let mut snap = raft::prelude::Snapshot::default();
        if install && *range.start() == 11 {
            snap.mut_metadata().index = 10;
            snap.mut_metadata().term = 1;
            snap.mut_metadata().mut_conf_state().voters = vec![1];
            snap.data = bytes::Bytes::from_static(b"state at 10");
        }
        let mut b = WriteBatch::new();
        b.save(1, &hs, &es, &snap);
        e.write(&mut b).unwrap();
    }
    g.create_snapshot(15, None, &b"state at 15"[..]).unwrap();
    roots::kill_image(&root, &image);
    drop(g);
    e.close().unwrap();

    // The page's newest copy, its journal position set back by one record.
    let meta = image.join("groups/1").join(META_FILE);
    let mut bytes = std::fs::read(&meta).unwrap();
    let region = bytes.len() / 2;
    assert!(region >= META_MIN_REGION as usize);
    let seq_of = |b: &[u8], r: usize| {
        let at = r * region + META_SEQ_AT as usize;
        u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
    };
    let newest = usize::from(seq_of(&bytes, 1) > seq_of(&bytes, 0));
    let len_at = newest * region + META_RECORD_LEN_AT as usize;
    let len = u32::from_le_bytes(bytes[len_at..len_at + 4].try_into().unwrap()) as usize;
    let rec_at = newest * region + META_RECORD_AT as usize;
    let mut rec = pb_decode(&bytes[rec_at..rec_at + len]).unwrap();
    assert_eq!(
        pb_varint(&pb_sub(&rec, 6).unwrap(), 1),
        15,
        "the page holds the snapshot"
    );
    let mut eng = pb_sub(&rec, 8).unwrap();
    let position = pb_varint(&eng, 1);
    pb_set_varint(&mut eng, 1, position - 1);
    pb_set_sub(&mut rec, 8, Some(&eng));
    let body = pb_encode(&rec);
    let h = encode_meta_region(seq_of(&bytes, newest), 1, 0, body.len() as u32, &body);
    bytes[newest * region..newest * region + h.len()].copy_from_slice(&h);
    if tear_other {
        bytes[(1 - newest) * region + META_RECORD_AT as usize] ^= 0x5a;
    }
    std::fs::write(&meta, &bytes).unwrap();
    (dir, image, opts)
}

/// Opens `image` (from [`snapshot_inside_a_replayed_record`]) and checks group 1: the snapshot
/// at 15, entries 16..20 as written, commit 20.
fn opens_with_the_snapshot_and_the_entries_after_it(
    image: &std::path::Path,
    opts: raftwal::EngineOptions,
) {
    use raft::Storage;
    let e = raftwal::Engine::open_with(image, opts).unwrap();
    let g = e.group(1).unwrap();
    assert_eq!(
        (g.first_index().unwrap(), g.last_index().unwrap()),
        (16, 20)
    );
    let got = g.entries(16, 21, None, fuzz::entries::ctx()).unwrap();
    let want: Vec<_> = (16..=20)
        .map(|i| fuzz::entries::entry_in_group(i, 1, 1))
        .collect();
    assert_eq!(got, want);
    assert_eq!(g.snapshot(0, 0).unwrap().get_metadata().index, 15);
    assert_eq!(g.initial_state().unwrap().hard_state.commit, 20);
}

/// A meta page written while a record was applied part by part, after a `create_snapshot` that
/// came in between, records the record before as its journal position, with a snapshot inside
/// the entries the record appends: replay applies that record again, and the entries at or
/// below the snapshot are compacted, not damage. The root (imaged while the engine has it
/// open, as a kill leaves it, with the page's journal position set back by one record, which is
/// what that interleaving writes) opens with the snapshot and the entries after it, and the
/// tools' verify finds no damage. (An open once refused it: "entries from index 11, but its
/// meta page puts the group's snapshot at 15".)
#[test]
fn a_snapshot_taken_inside_a_replayed_record_compacts_its_entries() {
    let (_dir, image, opts) = snapshot_inside_a_replayed_record(false, false);
    let report = raftwal::inspect::engine::EngineInspector::open_once(&image, None, None)
        .unwrap()
        .verify(&mut |_| {})
        .unwrap();
    assert!(report.ok, "verify found damage: {:?}", report.damage);
    opens_with_the_snapshot_and_the_entries_after_it(&image, opts);
}

/// The same interleaving when the record installs a snapshot (at 10, with entries 11..20) and
/// `create_snapshot(15)` then tidies its file away, with the page's other copy damaged (a
/// torn later store): the install is in the past, so the check that a fallback loses no
/// snapshot looks for the file of 15, not of 10. The root opens (tolerant mode) with the
/// snapshot at 15 and entries 16..20, and the tools predict it. (An open once refused it:
/// "the group's snapshot is at index 10, but its file ... is gone", while the tools said it
/// opens.)
#[test]
fn an_install_older_than_the_pages_snapshot_is_past_even_from_the_older_copy() {
    let (_dir, image, opts) = snapshot_inside_a_replayed_record(true, true);
    assert!(
        !image.join("groups/1/snap").read_dir().unwrap().any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .contains("000a")),
        "the snapshot file of 10 is still there"
    );
    let tools = raftwal::inspect::engine::EngineInspector::open_once(&image, None, None).unwrap();
    assert_eq!(tools.summary().open_error, None, "the tools say open fails");
    opens_with_the_snapshot_and_the_entries_after_it(&image, opts);
}

/// `engine.meta`'s newest copy damaged, the older one in use (tolerant mode) may hold a next
/// incarnation from before groups created since: open uses the older copy (the whole state)
/// and gives out no incarnation a group on disk holds; strict mode refuses the damaged copy.
#[test]
fn an_older_engine_meta_copy_in_use_gives_out_no_incarnation_twice() {
    use fuzz::layout::{
        ENGINE_META_FILE, META_CRC_AT, META_RECORD_AT, META_RECORD_LEN_AT, META_SEQ_AT,
    };
    use fuzz::util::{pb_decode, pb_encode, pb_set_varint, pb_varint};
    use raftwal::inspect::engine::EngineInspector;
    use raftwal::{Engine, EngineOptions, RecoveryMode};

    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    {
        let e = Engine::open(&root).unwrap();
        for id in 1..=3 {
            e.create_group(id, 1).unwrap();
        }
        e.close().unwrap();
    }
    let path = root.join(ENGINE_META_FILE);
    let mut bytes = std::fs::read(&path).unwrap();
    let region = bytes.len() / 2;
    let seq_of = |b: &[u8], r: usize| {
        let at = r * region + META_SEQ_AT as usize;
        u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
    };
    let newest = usize::from(seq_of(&bytes, 1) > seq_of(&bytes, 0));
    let (n, o) = (newest * region, (1 - newest) * region);
    let len = |b: &[u8], at: usize| {
        let l = at + META_RECORD_LEN_AT as usize;
        u32::from_le_bytes(b[l..l + 4].try_into().unwrap()) as usize
    };
    let rec_at = n + META_RECORD_AT as usize;
    let mut rec = pb_decode(&bytes[rec_at..rec_at + len(&bytes, n)]).unwrap();
    assert_eq!(
        pb_varint(&rec, 2),
        4,
        "three groups made: incarnation 4 is next"
    );
    // The older copy: the newest's state with next incarnation 2 (as before groups 2 and 3),
    // resealed; the newest copy damaged.
    pb_set_varint(&mut rec, 2, 2);
    let body = pb_encode(&rec);
    let mut page = bytes[n..n + META_SEQ_AT as usize].to_vec();
    page.extend_from_slice(&(seq_of(&bytes, newest) - 1).to_le_bytes());
    page.extend_from_slice(&(body.len() as u32).to_le_bytes());
    assert_eq!(page.len(), META_CRC_AT as usize);
    let crc = crc32c::crc32c_append(crc32c::crc32c(&page), &body);
    page.extend_from_slice(&crc.to_le_bytes());
    page.extend_from_slice(&body);
    bytes[o..o + page.len()].copy_from_slice(&page);
    bytes[rec_at] ^= 0x55;
    std::fs::write(&path, &bytes).unwrap();

    let strict = EngineOptions {
        recovery_mode: RecoveryMode::AbsoluteConsistency,
        ..Default::default()
    };
    let Err(err) = Engine::open_with(&root, strict) else {
        panic!("a strict open used the older engine.meta copy")
    };
    assert!(err.to_string().contains(ENGINE_META_FILE), "{err}");
    let summary = EngineInspector::open_once(&root, None, None).unwrap();
    assert_eq!(
        summary.summary().open_error,
        None,
        "the tools say open fails"
    );
    let e = Engine::open(&root).unwrap();
    assert_eq!(e.group_ids(), vec![1, 2, 3]);
    e.create_group(4, 1).unwrap();
    e.close().unwrap();
    let next = EngineInspector::open_once(&root, None, None)
        .unwrap()
        .summary()
        .next_incarnation;
    // Groups 1-3 hold incarnations 1-3; group 4 must have taken 4 (not 2 again).
    assert_eq!(next, 5, "group 4 took incarnation {}", next - 1);
    let e = Engine::open(&root).unwrap();
    assert_eq!(e.group_ids(), vec![1, 2, 3, 4]);
}

/// Entries `from..=to` of term 1 for group 1, with a hard state committing them, in a batch.
fn batch_of(from: u64, to: u64) -> raftwal::WriteBatch {
    let es: Vec<raft::prelude::Entry> = (from..=to)
        .map(|i| fuzz::entries::entry_in_group(i, 1, 1))
        .collect();
    let mut hs = raft::prelude::HardState::default();
    (hs.term, hs.commit) = (1, to);
    let mut b = raftwal::WriteBatch::new();
    b.save(1, &hs, &es, &Default::default());
    b
}

/// What a kill leaves of a root whose journal holds records after its checkpoint: entries
/// 1 to 10 written and closed (the checkpoint), then 11 to 20 written, the engine still open.
fn killed_after_the_checkpoint(dir: &std::path::Path) -> std::path::PathBuf {
    let root = dir.join("root");
    let e = raftwal::Engine::open(&root).unwrap();
    e.create_group(1, 1).unwrap();
    e.write(&mut batch_of(1, 10)).unwrap();
    e.close().unwrap();
    let e = raftwal::Engine::open(&root).unwrap();
    e.write(&mut batch_of(11, 20)).unwrap();
    let image = dir.join("image");
    roots::kill_image(&root, &image);
    image
}

/// The reason of open's refusal of `opened`, which must name the journal directory `journal`
/// as missing (`what`: the case, for the messages).
fn journal_missing(
    opened: raftwal::Result<raftwal::Engine>,
    journal: &std::path::Path,
    what: &str,
) -> String {
    match opened {
        Err(raftwal::Error::MissingFile { path, reason }) => {
            assert_eq!(path, journal, "{what}: {reason}");
            reason
        }
        Err(e) => panic!("{what}: another error: {e}"),
        Ok(_) => panic!("{what}: opened, without the records the lost journal held"),
    }
}

/// The journal gone from a root whose `engine.meta` names a checkpoint (the whole directory,
/// its segments, or its segments left only as spares): every record after the checkpoint is
/// lost, acknowledged entries 11 to 20 here. Open refuses in both modes, naming the journal's
/// directory, and changes nothing; a journal started afresh would once open the root without
/// them (and give their sequence numbers out again).
#[test]
fn a_journal_gone_from_a_root_with_a_checkpoint_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let image = killed_after_the_checkpoint(dir.path());
    each_lost_journal_is_refused(&image, &dir.path().join("case"), "checkpoint", "");
}

/// A root's journal lost: the directory removed, its segments removed, or its segments left
/// only as spares.
type JournalLoss = (&'static str, fn(&std::path::Path));
const JOURNAL_LOSSES: [JournalLoss; 3] = [
    ("the directory removed", |j| {
        std::fs::remove_dir_all(j).unwrap()
    }),
    ("its segments removed", |j| {
        for ent in std::fs::read_dir(j).unwrap() {
            std::fs::remove_file(ent.unwrap().path()).unwrap();
        }
    }),
    ("its segments renamed as spares", |j| {
        for ent in std::fs::read_dir(j).unwrap() {
            let p = ent.unwrap().path();
            let name = p.file_name().unwrap().to_str().unwrap().to_string();
            if !name.starts_with("spare-") {
                std::fs::rename(&p, j.join(format!("spare-{name}"))).unwrap();
            }
        }
    }),
];

/// Each of [`JOURNAL_LOSSES`] done to a copy of `image` (at `copy`), opened in both modes: open
/// refuses, naming the journal directory with a reason that contains `says`, and changes no
/// file. `name`: the image, for the messages.
fn each_lost_journal_is_refused(
    image: &std::path::Path,
    copy: &std::path::Path,
    says: &str,
    name: &str,
) {
    use raftwal::{Engine, EngineOptions, RecoveryMode};
    for (what, lose) in JOURNAL_LOSSES {
        for mode in [
            RecoveryMode::TolerateTailCorruption,
            RecoveryMode::AbsoluteConsistency,
        ] {
            let case = format!("{name}{what}, {mode:?}");
            let _ = std::fs::remove_dir_all(copy);
            roots::copy_tree(image, copy);
            let journal = copy.join("journal");
            lose(&journal);
            let before = fuzz::open_engine::read_image(copy);
            let opts = EngineOptions {
                recovery_mode: mode,
                ..Default::default()
            };
            let reason = journal_missing(Engine::open_with(copy, opts), &journal, &case);
            assert!(reason.contains(says), "{case}: {reason}");
            assert!(
                before == fuzz::open_engine::read_image(copy),
                "{case}: the refused open changed the root"
            );
        }
    }
}

/// With no checkpoint yet (a young root), the journal gone behind a group's meta page that
/// reflects records in it (`create_snapshot` made the group durable): open refuses, naming
/// the journal. The image with its journal opens whole.
#[test]
fn a_journal_gone_behind_a_groups_meta_page_is_refused_naming_it() {
    use raft::Storage;
    use raftwal::Engine;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let e = Engine::open(&root).unwrap();
    e.create_group(1, 1).unwrap();
    e.write(&mut batch_of(1, 10)).unwrap();
    e.group(1)
        .unwrap()
        .create_snapshot(5, None, bytes::Bytes::from_static(b"at 5"))
        .unwrap();
    e.write(&mut batch_of(11, 20)).unwrap();
    let image = dir.path().join("image");
    roots::kill_image(&root, &image);
    let whole = dir.path().join("whole");
    roots::copy_tree(&image, &whole);
    std::fs::remove_dir_all(image.join("journal")).unwrap();
    journal_missing(
        Engine::open(&image),
        &image.join("journal"),
        "no checkpoint",
    );
    let e = Engine::open(&whole).unwrap();
    assert_eq!(e.group(1).unwrap().last_index().unwrap(), 20);
}

/// A root made and never written has a journal segment from its first open on (holding only
/// its header), closed or killed: it opens again, and so do its kill images.
#[test]
fn a_root_never_written_opens_again_with_its_first_segment() {
    use raftwal::Engine;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let e = Engine::open(&root).unwrap();
    e.create_group(1, 1).unwrap();
    let image = dir.path().join("image");
    roots::kill_image(&root, &image);
    e.close().unwrap();
    for r in [&root, &image] {
        let segments = std::fs::read_dir(r.join("journal"))
            .unwrap()
            .filter(|ent| {
                let name = ent.as_ref().unwrap().file_name();
                let name = name.to_str().unwrap();
                name.ends_with(".jnl") && !name.starts_with("spare-")
            })
            .count();
        assert!(
            segments >= 1,
            "{}: no segment after the first open",
            r.display()
        );
        Engine::open(r).unwrap().close().unwrap();
    }
}

/// A young root (no checkpoint yet, no group page reflecting a record) whose journal is lost:
/// its directory, its segments, or its segments left only as spares. Open once started a
/// journal afresh and opened the group empty: ten acknowledged entries and the hard state
/// gone without a word, as nothing on disk told such a root from one never written. Now the
/// root's first open makes a segment durable and then says so in `engine.meta`, and open
/// refuses a lost journal in both modes, naming it, changing nothing. A root never written
/// whose journal is removed is refused the same way (it is damage too). The kill image with
/// its journal opens whole.
#[test]
fn a_young_roots_lost_journal_is_refused_naming_it() {
    use raft::Storage;
    use raftwal::Engine;
    let dir = tempfile::tempdir().unwrap();
    let (written, never) = (dir.path().join("written"), dir.path().join("never"));
    let e = Engine::open(&written).unwrap();
    e.create_group(1, 1).unwrap();
    e.write(&mut batch_of(1, 10)).unwrap();
    let young = dir.path().join("young");
    roots::kill_image(&written, &young);
    e.close().unwrap();
    Engine::open(&never).unwrap().close().unwrap();
    {
        let whole = dir.path().join("whole");
        roots::copy_tree(&young, &whole);
        let e = Engine::open(&whole).unwrap();
        let g = e.group(1).unwrap();
        assert_eq!(
            g.last_index().unwrap(),
            10,
            "the kill image with its journal"
        );
        e.close().unwrap();
    }
    for (image, name) in [(&young, "written, killed: "), (&never, "never written: ")] {
        each_lost_journal_is_refused(image, &dir.path().join("case"), "first open", name);
    }
}

/// A forged slot with a valid checksum whose term breaks the group's term order, in the middle
/// of a file (open reads a group's slots only at the ends): `term()` answers from the group's
/// run table, `entries()` read the slot, and the two once disagreed on that index (as
/// `DiskStorage` did before `open_dir` fuzz run 7 found it). `entries()` over it is now damage
/// naming the group's file, whether `term()` has built the table first or not; reads that do
/// not cover the slot, and `term()` of every index, are unchanged.
#[test]
fn a_forged_slot_out_of_term_order_is_damage_never_a_disagreement() {
    use fuzz::layout::{slot_data_len, slot_of, slot_payload_offset, SLOT_CRC_AT, SLOT_LEN};
    use raft::{GetEntriesContext, Storage};
    use std::os::unix::fs::FileExt;

    const FORGED: u64 = 12;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    {
        let e = raftwal::Engine::open(&root).unwrap();
        e.create_group(1, 1).unwrap();
        // Terms 1 for 1..=50, 2 for 51..=100.
        let es: Vec<raft::prelude::Entry> = (1..=100)
            .map(|i| fuzz::entries::entry_in_group(i, 1 + u64::from(i > 50), 1))
            .collect();
        let mut hs = raft::prelude::HardState::default();
        (hs.term, hs.commit) = (2, 100);
        let mut b = raftwal::WriteBatch::new();
        b.save(1, &hs, &es, &Default::default());
        e.write(&mut b).unwrap();
        e.close().unwrap();
    }
    let file = root.join("groups/1").join(fuzz::layout::log_name(1));
    {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&file)
            .unwrap();
        let at = slot_of(1, FORGED);
        let mut slot = [0u8; SLOT_LEN as usize];
        f.read_exact_at(&mut slot, at).unwrap();
        assert_eq!(u64::from_le_bytes(slot[..8].try_into().unwrap()), 1);
        slot[..8].copy_from_slice(&3u64.to_le_bytes());
        let mut payload = vec![0u8; slot_data_len(&slot) as usize];
        f.read_exact_at(&mut payload, slot_payload_offset(&slot))
            .unwrap();
        let crc_at = SLOT_CRC_AT as usize;
        let crc = crc32c::crc32c_append(crc32c::crc32c(&slot[..crc_at]), &payload);
        slot[crc_at..].copy_from_slice(&crc.to_le_bytes());
        f.write_all_at(&slot, at).unwrap();
    }
    let ctx = || GetEntriesContext::empty(false);
    for term_first in [true, false] {
        let e = raftwal::Engine::open(&root).unwrap();
        let g = e.group(1).unwrap();
        if term_first {
            assert_eq!(g.term(FORGED).unwrap(), 1, "the run table's term");
        }
        match g.entries(FORGED - 2, FORGED + 3, None, ctx()) {
            Ok(es) => {
                let read = es[2].term;
                let table = g.term(FORGED).unwrap();
                panic!("term_first {term_first}: entries() read term {read}, term() says {table}");
            }
            Err(err) => {
                let msg = err.to_string();
                assert!(
                    msg.contains("00001.wal") && msg.contains("term order"),
                    "term_first {term_first}: {msg}"
                );
            }
        }
        // Around it, the log reads as written; every index's term is its run's.
        assert_eq!(g.entries(1, FORGED, None, ctx()).unwrap().len(), 11);
        assert_eq!(g.entries(FORGED + 1, 101, None, ctx()).unwrap().len(), 88);
        for i in 1..=100 {
            assert_eq!(g.term(i).unwrap(), 1 + u64::from(i > 50), "index {i}");
        }
        e.close().unwrap();
    }
}

/// Group 1 of a new engine at `root` holding entries `1..=last` (term 1, commit `last`), written
/// in batches of 1,000.
fn group_with(root: &std::path::Path, last: u64) -> raftwal::Engine {
    let e = raftwal::Engine::open(root).unwrap();
    e.create_group(1, 1).unwrap();
    for lo in (1..=last).step_by(1000) {
        let hi = (lo + 999).min(last);
        let es: Vec<raft::prelude::Entry> = (lo..=hi)
            .map(|i| entries::entry_in_group(i, 1, 1))
            .collect();
        let mut hs = raft::prelude::HardState::default();
        (hs.term, hs.vote, hs.commit) = (1, 1, hi);
        let mut b = raftwal::WriteBatch::new();
        b.save(1, &hs, &es, &raft::prelude::Snapshot::default());
        e.write(&mut b).unwrap();
    }
    e
}

/// Opens the root in `mode`: group 1's (first, last) index.
fn group_range(root: &std::path::Path, mode: raftwal::RecoveryMode) -> Result<(u64, u64), String> {
    use raft::Storage;
    let opts = raftwal::EngineOptions {
        recovery_mode: mode,
        ..Default::default()
    };
    let e = raftwal::Engine::open_with(root, opts).map_err(|e| e.to_string())?;
    let g = e.group(1).unwrap();
    let range = (g.first_index().unwrap(), g.last_index().unwrap());
    e.close().unwrap();
    Ok(range)
}

/// What the read-only tools say of the root: the error a default open would meet, or group 1's
/// (first, last) index.
fn tools_range(root: &std::path::Path) -> Result<(u64, u64), String> {
    let ins = raftwal::inspect::engine::EngineInspector::open_once(root, None, None)
        .map_err(|e| e.to_string())?;
    let sum = ins.summary();
    if let Some(e) = &sum.open_error {
        return Err(e.clone());
    }
    let g = sum.groups.iter().find(|g| g.group_id == 1).unwrap();
    let st = g.after_replay.as_ref().unwrap();
    Ok((st.first_index, st.last_index))
}

/// Flips a bit of the header of `file` (at its `at`-th byte), or sets its base to `base` with
/// its checksum made valid again.
fn rewrite_header(file: &std::path::Path, at: Option<u64>, base: Option<u64>) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(file)
        .unwrap();
    let mut h = [0u8; layout::FILE_HEADER_LEN as usize];
    f.read_exact_at(&mut h, layout::FILE_HEADER_AT).unwrap();
    if let Some(at) = at {
        h[at as usize] ^= 0x40;
    }
    if let Some(base) = base {
        let b = layout::FILE_BASE_AT as usize;
        h[b..b + 8].copy_from_slice(&base.to_le_bytes());
        let c = layout::FILE_CRC_AT as usize;
        let crc = crc32c::crc32c(&h[..c]);
        h[c..c + 4].copy_from_slice(&crc.to_le_bytes());
    }
    f.write_all_at(&h, layout::FILE_HEADER_AT).unwrap();
}

/// A log file wholly below a group's snapshot, left by a crash before its removal, whose
/// header is damaged: open, in both modes, keeps the log whole and removes the file (docs/
/// DESIGN.md §4: damage at or below the snapshot index never fails open), and the tools say
/// so before it. Open once refused the root in both modes ("log file header checksum
/// mismatch" on the file), where a `DiskStorage` directory opens (found by a review).
#[test]
fn a_wholly_compacted_files_damaged_header_never_fails_open() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let file1 = root.join("groups/1/00001.wal");
    let saved = tmp.path().join("00001.wal.saved");
    group_with(&root, 30_100).close().unwrap();
    std::fs::copy(&file1, &saved).unwrap();
    let e = raftwal::Engine::open(&root).unwrap();
    e.group(1)
        .unwrap()
        .create_snapshot(30_050, None, b"state".to_vec())
        .unwrap();
    e.close().unwrap();
    assert!(!file1.exists(), "the snapshot removed the file below it");
    let mode = raftwal::RecoveryMode::TolerateTailCorruption;
    // The crash lost the removal: the file intact opens as part of nothing.
    std::fs::copy(&saved, &file1).unwrap();
    assert_eq!(group_range(&root, mode), Ok((30_051, 30_100)));
    for at in [0, 8, layout::FILE_BASE_AT, layout::FILE_CRC_AT] {
        for mode in [
            raftwal::RecoveryMode::TolerateTailCorruption,
            raftwal::RecoveryMode::AbsoluteConsistency,
        ] {
            std::fs::copy(&saved, &file1).unwrap();
            rewrite_header(&file1, Some(at), None);
            assert_eq!(
                tools_range(&root),
                Ok((30_051, 30_100)),
                "the tools, header byte {at} damaged"
            );
            assert_eq!(
                group_range(&root, mode),
                Ok((30_051, 30_100)),
                "{mode:?}, header byte {at} damaged"
            );
            assert!(!file1.exists(), "{mode:?}: open removed the file");
            assert_eq!(group_range(&root, mode), Ok((30_051, 30_100)));
        }
    }
}

/// A group's first log file whose header (its checksum valid: a writer's bug, or a forgery)
/// says it starts past the snapshot and the index after it: open refuses it in both modes,
/// naming that file, and changes nothing; the tools say so. With a snapshot and no entry past
/// it, open once served a log `[11, 999]` whose every entry and term was `Unavailable`, and
/// zeroed the file's slots; without a snapshot it named the file, present, as missing (found
/// by a review).
#[test]
fn a_first_file_starting_past_the_snapshot_is_refused_naming_it() {
    for snapshot in [true, false] {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        let e = group_with(&root, 10);
        if snapshot {
            e.group(1)
                .unwrap()
                .create_snapshot(10, None, b"s".to_vec())
                .unwrap();
        }
        e.close().unwrap();
        let file1 = root.join("groups/1/00001.wal");
        rewrite_header(&file1, None, Some(1000));
        let before = std::fs::read(&file1).unwrap();
        let tools = tools_range(&root);
        assert!(
            tools.as_ref().is_err_and(|e| e.contains("00001.wal")),
            "snapshot {snapshot}: the tools say {tools:?}"
        );
        for mode in [
            raftwal::RecoveryMode::TolerateTailCorruption,
            raftwal::RecoveryMode::AbsoluteConsistency,
        ] {
            let got = raftwal::Engine::open_with(
                &root,
                raftwal::EngineOptions {
                    recovery_mode: mode,
                    ..Default::default()
                },
            );
            let err = match got {
                Err(e) => e,
                Ok(e) => {
                    use raft::Storage;
                    let g = e.group(1).unwrap();
                    panic!(
                        "snapshot {snapshot}, {mode:?}: opened, log [{}, {}]",
                        g.first_index().unwrap(),
                        g.last_index().unwrap()
                    );
                }
            };
            assert!(
                matches!(&err, raftwal::Error::Corrupt { path, .. } if *path == file1),
                "snapshot {snapshot}, {mode:?}: {err}"
            );
            assert_eq!(
                std::fs::read(&file1).unwrap(),
                before,
                "open changed the file"
            );
        }
    }
}

/// A journal record after the checkpoint whose part has a kinds bit no version defines (0x40),
/// its checksum valid: a writer from a later version, or a bug. Open refuses it in both modes,
/// naming the segment and the kinds byte, and changes nothing. Such a bit was once ignored: the
/// part decoded as if it were clear, and a section it announced would have been read as the next
/// part (found by reading the code, 2026-12-05).
#[test]
fn a_journal_part_with_a_kind_no_version_defines_is_refused_naming_its_segment() {
    use layout::{
        PART_KINDS_AT, PART_KIND_ENTRIES, PART_SECTIONS_AT, RECORD_BODY_AT, RECORD_CRC_AT,
        RECORD_LEN_AT, RECORD_SEQ_AT, SEGMENT_RECORDS_AT,
    };
    const UNDEFINED_KIND: u8 = 0x40;
    let dir = tempfile::tempdir().unwrap();
    let image = killed_after_the_checkpoint(dir.path());
    let u32_at = |b: &[u8], at: usize| u32::from_le_bytes(b[at..at + 4].try_into().unwrap());
    // The record holding entries 11 to 20 of group 1 (the first entry's index leads its
    // ENTRIES section, after the count), read by docs/FORMAT.md's layout.
    let mut forged = None;
    for seg in std::fs::read_dir(image.join("journal")).unwrap().flatten() {
        let path = seg.path();
        if path.extension().is_none_or(|x| x != "jnl") {
            continue;
        }
        let mut b = std::fs::read(&path).unwrap();
        let mut at = SEGMENT_RECORDS_AT as usize;
        while at + RECORD_BODY_AT as usize <= b.len() {
            let len = u32_at(&b, at + RECORD_LEN_AT as usize) as usize;
            let body_at = at + RECORD_BODY_AT as usize;
            if len == 0 || body_at + len > b.len() {
                break;
            }
            let crc_of = |b: &[u8]| crc32c::crc32c(&b[at + RECORD_SEQ_AT as usize..body_at + len]);
            if crc_of(&b) != u32_at(&b, at + RECORD_CRC_AT as usize) {
                break;
            }
            let kinds_at = body_at + PART_KINDS_AT as usize;
            let first_index_at = body_at + PART_SECTIONS_AT as usize + 4;
            let group = u64::from_le_bytes(b[body_at..body_at + 8].try_into().unwrap());
            let first =
                u64::from_le_bytes(b[first_index_at..first_index_at + 8].try_into().unwrap());
            if group == 1 && b[kinds_at] & PART_KIND_ENTRIES != 0 && first == 11 {
                b[kinds_at] |= UNDEFINED_KIND;
                let crc = crc_of(&b);
                b[at + RECORD_CRC_AT as usize..][..4].copy_from_slice(&crc.to_le_bytes());
                std::fs::write(&path, &b).unwrap();
                forged = Some((path.clone(), at));
                break;
            }
            at = layout::next_record_at(at as u64, len as u64) as usize;
        }
    }
    let (segment, at) = forged.expect("the record of entries 11 to 20 is in a live segment");
    let before = roots::tree(&image);
    for mode in [
        raftwal::RecoveryMode::TolerateTailCorruption,
        raftwal::RecoveryMode::AbsoluteConsistency,
    ] {
        let opts = raftwal::EngineOptions {
            recovery_mode: mode,
            ..Default::default()
        };
        match raftwal::Engine::open_with(&image, opts) {
            Ok(e) => {
                let g = e.group(1).unwrap();
                panic!(
                    "{mode:?}: opened with the part's unknown kind ignored, log {:?}..={:?}",
                    raft::Storage::first_index(&g),
                    raft::Storage::last_index(&g)
                );
            }
            Err(raftwal::Error::Corrupt {
                path,
                offset,
                reason,
            }) => {
                assert_eq!(
                    (path, offset),
                    (segment.clone(), at as u64),
                    "{mode:?}: {reason}"
                );
                assert!(reason.contains("kinds"), "{mode:?}: {reason}");
            }
            Err(err) => panic!("{mode:?}: another error: {err}"),
        }
        assert!(
            roots::tree(&image) == before,
            "{mode:?}: the refused open changed the root"
        );
    }
    // The read-only tools read the record as open does, and say open fails there.
    let report = raftwal::inspect::engine::EngineInspector::open_once(&image, None, None).unwrap();
    let why = report.summary().open_error.clone();
    let name = segment.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        why.as_deref()
            .is_some_and(|w| w.contains(&name) && w.contains("kinds")),
        "the tools: {why:?}"
    );
}
