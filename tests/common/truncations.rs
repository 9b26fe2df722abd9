//! `truncate_entries_until` against an independent model, through random appends (overwrites
//! included), compactions, truncations, reopens and kills: the Normal entries below the highest index
//! a truncation gave since each was written read back empty, every other entry as written.
//! Included with `#[path]` by tests/log_files.rs (`DiskStorage`) and tests/engine.rs (a group
//! of an `Engine`), each with its own [`Log`].
#![allow(dead_code)]

use bytes::Bytes;
use raft::prelude::{Entry, EntryType};

/// A log under test, as its storage changes it.
pub trait Log {
    /// Writes `entries` (contiguous; the first may overwrite what is there from its index on).
    fn append(&mut self, entries: &[Entry]);
    fn truncate_until(&mut self, index: u64);
    /// `create_snapshot(index)`: entries up to `index` are compacted.
    fn compact(&mut self, index: u64);
    /// Closes and opens the storage again.
    fn reopen(&mut self);
    /// Opens, in place of the storage, a copy of its files taken while it is open: what a kill
    /// leaves (whatever was acknowledged is in it; an engine replays its journal).
    fn crash(&mut self);
    /// `(first_index, entries [first, last])`.
    fn read(&self) -> (u64, Vec<Entry>);
}

/// How many seeds a test runs: `default`, or `RAFTWAL_TRUNCATION_SEEDS` (for longer runs by
/// hand).
pub fn seeds(default: u64) -> u64 {
    std::env::var("RAFTWAL_TRUNCATION_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Entry `index` of term `term`, written the `gen`-th time: Normal with data that names all
/// three (so an entry written again reads back different), every ninth a conf change (its
/// data is never dropped).
fn written(index: u64, term: u64, gen: u64, len: usize) -> Entry {
    let mut e = Entry::default();
    (e.index, e.term) = (index, term);
    if index.is_multiple_of(9) {
        e.set_entry_type(EntryType::EntryConfChange);
    }
    let mut data = format!("{index}/{term}/{gen}/").into_bytes();
    data.resize(len.max(data.len()), b'x');
    e.data = Bytes::from(data);
    e
}

/// Runs `steps` random operations on `log` from seed `seed`, checking it against the model after
/// each one. Entries carry `len` bytes of data (larger ones make an engine write its groups'
/// files sooner).
pub fn run(log: &mut impl Log, seed: u64, steps: usize, len: usize) -> Result<(), String> {
    let mut r = seed;
    let mut rand = |n: u64| {
        r = splitmix(r);
        r % n.max(1)
    };
    // The model: the live entries from `first`, as they must read back.
    let mut first = 1u64;
    let mut model: Vec<Entry> = Vec::new();
    let mut gen = 0u64;
    for step in 0..steps {
        let last = first + model.len() as u64 - 1;
        let what = match rand(10) {
            0..=4 => {
                // An append after the log, or an overwrite from inside it (a new term).
                let term = model.last().map_or(1, |e| e.term);
                let (from, term) = if model.is_empty() || rand(3) > 0 {
                    (last + 1, term)
                } else {
                    (first + rand(model.len() as u64), term + 1)
                };
                gen += 1;
                let n = 1 + rand(40);
                let es: Vec<Entry> = (from..from + n)
                    .map(|i| written(i, term, gen, len))
                    .collect();
                log.append(&es);
                model.truncate((from - first) as usize);
                model.extend(es);
                format!("append {from}..{} (term {term})", from + n)
            }
            5..=7 => {
                let until = first + rand(model.len() as u64 + 2);
                log.truncate_until(until);
                for e in model.iter_mut() {
                    if e.index < until && e.get_entry_type() == EntryType::EntryNormal {
                        e.data = Bytes::new();
                    }
                }
                format!("truncate_entries_until({until})")
            }
            8 if model.len() > 1 => {
                let at = first + rand(model.len() as u64 / 2);
                log.compact(at);
                model.drain(..(at + 1 - first) as usize);
                first = at + 1;
                format!("compact to {at}")
            }
            _ if rand(2) == 0 => {
                log.crash();
                "kill".to_string()
            }
            _ => {
                log.reopen();
                "reopen".to_string()
            }
        };
        let (got_first, got) = log.read();
        if got_first != first || got != model {
            let diff = got.iter().zip(&model).find(|(g, w)| g != w).map(|(g, w)| {
                format!(
                    "entry {}: read {}, the model says {}",
                    w.index,
                    show(g),
                    show(w)
                )
            });
            return Err(format!(
                "seed {seed}, step {step} ({what}): first index {got_first}, {} entries; the \
                 model says {first}, {} entries. {}",
                got.len(),
                model.len(),
                diff.unwrap_or_default()
            ));
        }
    }
    Ok(())
}

/// An entry in a line: index, term, type and the start of its data.
fn show(e: &Entry) -> String {
    let d = &e.data[..e.data.len().min(16)];
    format!(
        "({}, term {}, {:?}, {} bytes of data {:?})",
        e.index,
        e.term,
        e.get_entry_type(),
        e.data.len(),
        String::from_utf8_lossy(d)
    )
}
