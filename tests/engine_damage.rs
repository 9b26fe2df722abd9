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

use fuzz::open_engine::{run, run_damage, template_summary, CLASSES};
use fuzz::util::splitmix;

const PER_CLASS: u64 = 30;
const RANDOM_INPUTS: u64 = 300;

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
