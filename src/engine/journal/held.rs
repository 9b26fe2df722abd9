//! What the journal holds after its last trim ([`crate::engine::journal::Journal::held`]): the
//! bytes of the records no checkpoint covers yet, which commits wait on once they reach the
//! journal's bound (module `checkpoint`), counted in runs of consecutive records (a 64th of
//! that bound, at most [`MAX_RUN_BYTES`]), so that the count's memory stays small however small
//! the records (one entry a record would be tens of millions of entries, hundreds of MiB, for
//! tiny unsynced records in a journal at its 1 GiB bound).
//!
//! Owns: that count. Must never: count a record twice, or drop a record above the checkpoint
//! it is trimmed to (the count may be high, by less than a run, never low).

use std::collections::VecDeque;

/// The most bytes of records after which a run is closed and the next record starts another.
pub(crate) const MAX_RUN_BYTES: u64 = 1 << 20;

/// The records after the last trim, in runs.
#[derive(Debug)]
pub(crate) struct Held {
    /// Runs of consecutive records, oldest first: (the last record's sequence number, the
    /// run's bytes).
    runs: VecDeque<(u64, u64)>,
    bytes: u64,
    run_bytes: u64,
}

impl Held {
    /// Nothing held; runs closed at `run_bytes` (0: a run a record, the exact count).
    pub(crate) fn new(run_bytes: u64) -> Held {
        Held {
            runs: VecDeque::new(),
            bytes: 0,
            run_bytes,
        }
    }

    /// The bytes of the records held (high by less than a run, plus its last record, when a
    /// trim fell inside a run).
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Counts record `seq` of `bytes` (stored), the one after every record counted so far.
    pub(crate) fn hold(&mut self, seq: u64, bytes: u64) {
        match self.runs.back_mut() {
            Some((last, run)) if *run < self.run_bytes => {
                *last = seq;
                *run += bytes;
            }
            _ => self.runs.push_back((seq, bytes)),
        }
        self.bytes += bytes;
    }

    /// Drops the runs whose records all lie at or below `seq` (a checkpoint covers them); a
    /// run with records on both sides stays whole until a later trim passes it.
    pub(crate) fn trim(&mut self, seq: u64) {
        while let Some(&(last, bytes)) = self.runs.front() {
            if last > seq {
                break;
            }
            self.runs.pop_front();
            self.bytes -= bytes;
        }
    }

    /// How many runs are kept (the count's memory).
    #[cfg(test)]
    pub(crate) fn runs(&self) -> usize {
        self.runs.len()
    }
}

#[cfg(test)]
mod tests {
    use super::Held;

    /// Record `seq` takes `size(seq)` bytes; the model keeps every record.
    fn size(seq: u64) -> u64 {
        (seq * 7_919) % 3_000 + 8
    }

    /// With a run a record, the count is exact through any trims; with runs of `k` bytes it is
    /// never below the exact count and above it by less than a run and a record, and the
    /// runs kept never exceed the bytes held over `k`, plus one.
    #[test]
    fn the_count_is_exact_with_a_run_a_record_and_bounded_with_longer_runs() {
        for k in [0u64, 1, 4_096, 65_536] {
            let mut held = Held::new(k);
            let mut model: Vec<(u64, u64)> = Vec::new();
            let mut trimmed = 0;
            for seq in 1..=20_000u64 {
                held.hold(seq, size(seq));
                model.push((seq, size(seq)));
                if seq % 997 == 0 {
                    trimmed = seq - seq % 13 - 1;
                    held.trim(trimmed);
                    model.retain(|&(s, _)| s > trimmed);
                }
                let exact: u64 = model.iter().map(|&(_, b)| b).sum();
                if k == 0 {
                    assert_eq!(held.bytes(), exact, "k {k}, record {seq}");
                } else {
                    assert!(held.bytes() >= exact, "k {k}, record {seq}: low");
                    assert!(
                        held.bytes() < exact + k + 3_008,
                        "k {k}, record {seq}: {} for {exact}",
                        held.bytes()
                    );
                    assert!(
                        held.runs() as u64 <= held.bytes() / k + 1,
                        "k {k}, record {seq}: {} runs for {} bytes",
                        held.runs(),
                        held.bytes()
                    );
                }
            }
            // A trim past every record leaves nothing, however the runs fell.
            held.trim(u64::MAX);
            assert_eq!(
                (held.bytes(), held.runs()),
                (0, 0),
                "k {k}, trimmed {trimmed}"
            );
        }
    }
}
