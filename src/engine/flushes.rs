//! Whether a commit's journal flush is in flight, for the writer of the groups' files.
//!
//! The writer starts the write-back of what it wrote into a group's file as the file grows by
//! a step. Started while a commit's journal flush is in flight, that write-back shares the
//! device with the flush and holds it up; started just after one, it has the gap until the
//! next commit (docs/PERFORMANCE.md, "Write-back between flushes"). So the committer marks
//! its flush, and the writer, before it starts a write-back, waits a bounded time for the
//! flush in flight to end.
//!
//! Owns: that mark. Must never: make a commit wait (the committer only sets and clears it; when
//! it settles a group's files itself, after a snapshot or a truncation, its own flush has
//! ended and nothing is in flight) or let the writer wait without bound (a stalled flush must
//! not stall the writer's progress).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The longest the writer waits for a flush to end (the slow flushes in docs/PERFORMANCE.md
/// take 1-3 ms; past this, the write-back starts anyway).
const MAX_WAIT: Duration = Duration::from_millis(3);

/// The committer's journal flushes, as the writer sees them.
#[derive(Default)]
pub(crate) struct Flushes {
    in_flight: AtomicBool,
    ended: AtomicU64,
}

/// A flush in flight; dropping it (whatever the flush's outcome) marks it ended.
pub(crate) struct InFlight<'a>(&'a Flushes);

impl Flushes {
    /// Marks a journal flush as started, until the returned value is dropped.
    pub(crate) fn start(&self) -> InFlight<'_> {
        self.in_flight.store(true, Ordering::SeqCst);
        InFlight(self)
    }

    /// Waits, up to [`MAX_WAIT`], for the flush in flight (if any) to end. Returns whether one
    /// was in flight. Advice to the writer only: nothing depends on it for correctness.
    pub(crate) fn wait_out(&self) -> bool {
        let seen = self.ended.load(Ordering::SeqCst);
        if !self.in_flight.load(Ordering::SeqCst) {
            return false;
        }
        let start = Instant::now();
        while self.ended.load(Ordering::SeqCst) == seen && start.elapsed() < MAX_WAIT {
            // The committer needs a core to finish its flush: give this one up meanwhile.
            std::thread::yield_now();
        }
        true
    }

    /// Flushes ended so far.
    #[cfg(test)]
    fn ended(&self) -> u64 {
        self.ended.load(Ordering::SeqCst)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.ended.fetch_add(1, Ordering::SeqCst);
        self.0.in_flight.store(false, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_wait_without_a_flush_and_the_mark_ends_with_its_flush() {
        let f = Flushes::default();
        assert!(!f.wait_out(), "nothing in flight");
        let flush = f.start();
        assert!(f.in_flight.load(Ordering::SeqCst));
        drop(flush);
        assert!(
            !f.in_flight.load(Ordering::SeqCst),
            "an ended flush leaves no mark"
        );
        assert_eq!(f.ended(), 1);
        assert!(!f.wait_out());
    }

    #[test]
    fn a_flush_that_fails_still_ends_its_mark() {
        fn flush_that_fails(f: &Flushes) -> Result<(), ()> {
            let _flush = f.start();
            Err(())
        }
        let f = Flushes::default();
        assert!(flush_that_fails(&f).is_err());
        assert!(!f.in_flight.load(Ordering::SeqCst));
        assert_eq!(f.ended(), 1);
    }
}
