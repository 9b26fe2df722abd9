//! Shared by the benches (included with `#[path]`): deterministic, incompressible payloads and
//! the `Entry` batches built from them.

use raft::prelude::Entry;

/// A small xorshift generator: deterministic, incompressible payloads without extra crates.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(n + 8);
        while v.len() < n {
            v.extend_from_slice(&self.next().to_le_bytes());
        }
        v.truncate(n);
        v
    }
}

/// Entries `first..first + n`, term 1, each with `size` random payload bytes.
pub fn batch(rng: &mut Rng, first: u64, n: usize, size: usize) -> Vec<Entry> {
    (0..n as u64)
        .map(|i| {
            let mut e = Entry::default();
            e.index = first + i;
            e.term = 1;
            e.data = rng.bytes(size).into();
            e
        })
        .collect()
}
