//! Whether a commit's journal flush is in flight, for the writer of the groups' files.
//!
//! The writer starts the write-back of what it wrote into a group's file as the file grows by
//! a step. Started while a commit's journal flush is in flight, that write-back shares the
//! device with the flush and holds it up; started just after one, it has the gap until the
//! next commit (docs/PERFORMANCE.md, "Write-back between flushes"). So the committer marks
//! its flush, and the writer, before it starts a write-back, waits a bounded time for the
//! next flush to end, and then starts about a record's worth before it waits again
//! ([`Flushes::pace`]; docs/PERFORMANCE.md, "Write-back paced by the flushes"). Calls that
//! settle a group's files outside the writer only wait out the flush in flight
//! ([`Flushes::wait_out`]).
//!
//! Owns: that mark. Must never: make a commit wait (the committer only sets and clears it,
//! under a lock the writer holds for a load and never while it sleeps; when
//! it settles a group's files itself, after a snapshot or a truncation, its own flush has
//! ended and nothing is in flight) or let the writer wait without bound (a stalled flush must
//! not stall the writer's progress).
//!
//! A checkpoint paces its write-back the same way: a piece about the size of the last commit
//! after each flush ([`Flushes::wait_next`], [`Flushes::last_bytes`]), so that its `syncfs`
//! finds little left to write.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

/// The longest the writer waits for a flush to end (the slow flushes in docs/PERFORMANCE.md
/// take 1-3 ms; past this, the write-back starts anyway).
const MAX_WAIT: Duration = Duration::from_millis(3);

/// The longest a checkpoint waits for the next flush to end before it takes the engine for
/// idle (rounds at 1,024 groups take 10-30 ms; docs/PERFORMANCE.md).
const MAX_WAIT_NEXT: Duration = Duration::from_millis(50);

/// Write-back the writer may start after a flush's end before it waits for the next one: at
/// least this, else the last commit's record ([`Flushes::pace`]).
const PACE_MIN_BYTES: u64 = 64 << 10;

/// The committer's journal flushes, as the writer sees them.
#[derive(Default)]
pub(crate) struct Flushes {
    in_flight: AtomicBool,
    ended: AtomicU64,
    /// Bytes of the record the last flush started carried.
    last_bytes: AtomicU64,
    /// Bytes of the records of every flush started so far (the pace at which trimmed journal
    /// segments are given back: module `release`).
    flushed_bytes: AtomicU64,
    /// For [`Flushes::wait_next`]: a flush's end is published under this lock.
    lock: Mutex<()>,
    cv: Condvar,
    /// The write-back started since the last flush's end ([`Flushes::pace`]).
    pace: Mutex<Pace>,
}

/// What [`Flushes::pace`] let start since the flush `epoch` (the count of flushes ended) ended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Pace {
    epoch: u64,
    /// Bytes of write-back started in this epoch.
    started: u64,
    /// A pace waited for this epoch's flush to end: the gap after it is the writer's.
    entered: bool,
    /// No flush ended within a wait in this epoch: no commits flush; nothing waits until one
    /// does.
    idle: bool,
}

/// A flush in flight; dropping it (whatever the flush's outcome) marks it ended.
pub(crate) struct InFlight<'a>(&'a Flushes);

impl Flushes {
    /// Marks a journal flush of a record of `bytes` as started, until the returned value is
    /// dropped.
    pub(crate) fn start(&self, bytes: u64) -> InFlight<'_> {
        self.last_bytes.store(bytes, Ordering::Relaxed);
        self.flushed_bytes.fetch_add(bytes, Ordering::Relaxed);
        self.in_flight.store(true, Ordering::SeqCst);
        InFlight(self)
    }

    /// Bytes of the records of every flush started so far.
    pub(crate) fn flushed_bytes(&self) -> u64 {
        self.flushed_bytes.load(Ordering::Relaxed)
    }

    /// Bytes of the record the last flush carried (0 before the first).
    pub(crate) fn last_bytes(&self) -> u64 {
        self.last_bytes.load(Ordering::Relaxed)
    }

    /// Waits for the next flush to end: the one in flight, or else the next one to start.
    /// Returns false if none ended within [`MAX_WAIT_NEXT`] (no commits for that long: the
    /// engine is idle, or it commits without flushing). Advice only, as [`Flushes::wait_out`].
    pub(crate) fn wait_next(&self) -> bool {
        self.wait_next_for(MAX_WAIT_NEXT)
    }

    fn wait_next_for(&self, max: Duration) -> bool {
        self.wait_end_after(self.ended.load(Ordering::SeqCst), max)
    }

    /// Waits, up to [`MAX_WAIT`], for the flush in flight (if any) to end. Returns whether one
    /// was in flight. Advice to the writer only: nothing depends on it for correctness.
    /// It sleeps: a `sched_yield` loop burned the writer's CPU (docs/PERFORMANCE.md).
    pub(crate) fn wait_out(&self) -> bool {
        let seen = self.ended.load(Ordering::SeqCst);
        if !self.in_flight.load(Ordering::SeqCst) {
            return false;
        }
        self.wait_end_after(seen, MAX_WAIT);
        true
    }

    /// Before `bytes` of the groups' write-back start: waits (up to [`MAX_WAIT`]) for the next
    /// journal flush to end, unless a wait already ended with the last flush's end and less
    /// than a record's worth (at least [`PACE_MIN_BYTES`]) was started since. So each piece of
    /// write-back starts in the gap right after a flush, where the commit's CPU work leaves the
    /// device idle, a record's worth at most, instead of beside the next flush: write-back
    /// started while a commit prepares its record reaches the device with that commit's flush
    /// and holds it up (docs/PERFORMANCE.md, "Write-back paced by the flushes"). With no flush
    /// ending within a wait (no commits, or commits without flushes), nothing waits again
    /// until one ends. Advice to the writer only, as [`Flushes::wait_out`].
    pub(crate) fn pace(&self, bytes: u64) {
        self.pace_for(bytes, MAX_WAIT);
    }

    fn pace_for(&self, bytes: u64, max: Duration) {
        let seen = self.ended.load(Ordering::SeqCst);
        let mut p = self.pace.lock();
        if p.epoch != seen {
            *p = Pace {
                epoch: seen,
                ..Pace::default()
            };
        }
        let budget = PACE_MIN_BYTES.max(self.last_bytes());
        if !p.idle && (!p.entered || p.started + bytes > budget) {
            // Not while holding the pace: a commit never takes it, but another writer may.
            drop(p);
            let ended = self.wait_end_after(seen, max);
            p = self.pace.lock();
            let now = self.ended.load(Ordering::SeqCst);
            if ended {
                *p = Pace {
                    epoch: now,
                    entered: true,
                    ..Pace::default()
                };
            } else if p.epoch == now {
                p.idle = true;
            }
        }
        p.started += bytes;
    }

    /// Sleeps until more than `seen` flushes have ended; false if that takes longer than `max`.
    fn wait_end_after(&self, seen: u64, max: Duration) -> bool {
        let deadline = Instant::now() + max;
        let mut guard = self.lock.lock();
        while self.ended.load(Ordering::SeqCst) == seen {
            if self.cv.wait_until(&mut guard, deadline).timed_out() {
                return false;
            }
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
        {
            // Under the lock: a waiter checks `ended` and sleeps under it, so it cannot miss
            // this end between the two. The waiter holds it only for that check, never while
            // it sleeps: the commit does not wait on it.
            let _published = self.0.lock.lock();
            self.0.ended.fetch_add(1, Ordering::SeqCst);
            self.0.in_flight.store(false, Ordering::SeqCst);
        }
        self.0.cv.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_wait_without_a_flush_and_the_mark_ends_with_its_flush() {
        let f = Flushes::default();
        assert!(!f.wait_out(), "nothing in flight");
        let flush = f.start(4096);
        assert!(f.in_flight.load(Ordering::SeqCst));
        drop(flush);
        assert!(
            !f.in_flight.load(Ordering::SeqCst),
            "an ended flush leaves no mark"
        );
        assert_eq!(f.ended(), 1);
        assert!(!f.wait_out());
        assert_eq!(f.last_bytes(), 4096);
    }

    #[test]
    fn wait_next_ends_with_the_next_flush_and_gives_up_when_none_comes() {
        let f = std::sync::Arc::new(Flushes::default());
        let started = Instant::now();
        assert!(!f.wait_next(), "no commit, no flush: the engine is idle");
        assert!(started.elapsed() >= MAX_WAIT_NEXT);
        drop(f.start(1));
        assert!(
            !f.wait_next(),
            "a flush that ended before the wait does not end it"
        );
        // A flush that starts and ends after the wait began ends it.
        let waiter = {
            let f = f.clone();
            // Far longer than the flushes below take to come: the wait must end by a flush's
            // notice, not by the clock (a wait that misses every notice returns false).
            std::thread::spawn(move || f.wait_next_for(Duration::from_secs(10)))
        };
        // Until the waiter has seen no flush end, keep flushing: each ends a wait begun before
        // it, and the waiter cannot miss them all.
        while !waiter.is_finished() {
            drop(f.start(1));
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(
            waiter.join().expect("waiter"),
            "a flush ended during the wait"
        );
    }

    /// Write-back starts right after a flush's end, a record's worth (at least
    /// `PACE_MIN_BYTES`) per flush: a pace waits for the next flush to end unless one already
    /// waited for the last end and the budget is not spent; with no flush ending, nothing
    /// waits again until one does. (Waits here are long, so that only a flush ends them.)
    #[test]
    fn write_back_is_paced_a_record_after_each_flush() {
        let f = std::sync::Arc::new(Flushes::default());
        let long = Duration::from_secs(30);
        let state = |f: &Flushes| *f.pace.lock();
        // A pace that must not wait: one that waited would give up only after `long` (and
        // leave the state as a wait that saw no flush would).
        let at_once = |f: &Flushes, bytes: u64| {
            let started = Instant::now();
            f.pace_for(bytes, long);
            assert!(started.elapsed() < long, "a pace of {bytes} bytes waited");
        };
        // Waits for the flush in flight to end, then the gap is the writer's.
        let flush = f.start(8 << 10);
        let waiter = {
            let f = f.clone();
            std::thread::spawn(move || f.pace_for(10 << 10, long))
        };
        std::thread::sleep(Duration::from_millis(50));
        assert!(!waiter.is_finished(), "the pace waits for the flush's end");
        drop(flush);
        waiter.join().expect("pace");
        let entered = Pace {
            epoch: 1,
            started: 10 << 10,
            entered: true,
            idle: false,
        };
        assert_eq!(state(&f), entered);
        // Within the budget (PACE_MIN_BYTES: the last record was smaller): no wait.
        at_once(&f, 50 << 10);
        assert_eq!(state(&f).started, 60 << 10);
        assert_eq!(state(&f).epoch, 1);
        // Past it: the next flush's end.
        let waiter = {
            let f = f.clone();
            std::thread::spawn(move || f.pace_for(10 << 10, long))
        };
        std::thread::sleep(Duration::from_millis(50));
        assert!(!waiter.is_finished(), "past the budget, the pace waits");
        drop(f.start(1 << 20));
        waiter.join().expect("pace");
        assert_eq!(
            state(&f),
            Pace {
                epoch: 2,
                ..entered
            }
        );
        // A larger record makes a larger budget.
        at_once(&f, (1 << 20) - (10 << 10));
        assert_eq!(state(&f).epoch, 2, "within the last record's size");
        // A flush ended that this writer did not wait for: the next piece waits for the next
        // flush (the gap after that one may be nearly over).
        drop(f.start(1));
        let waiter = {
            let f = f.clone();
            std::thread::spawn(move || f.pace_for(1, long))
        };
        std::thread::sleep(Duration::from_millis(50));
        assert!(
            !waiter.is_finished(),
            "a gap not waited for is not the writer's"
        );
        drop(f.start(1));
        waiter.join().expect("pace");
        assert_eq!(state(&f).epoch, 4);
        // No flush within the wait: idle, and nothing waits until a flush ends.
        let g = Flushes::default();
        g.pace_for(1, Duration::from_millis(1));
        assert!(state(&g).idle);
        at_once(&g, 1 << 30);
        assert_eq!(state(&g).started, (1 << 30) + 1, "no wait while idle");
        drop(g.start(1));
        let g = std::sync::Arc::new(g);
        let waiter = {
            let g = g.clone();
            std::thread::spawn(move || g.pace_for(1, long))
        };
        std::thread::sleep(Duration::from_millis(50));
        assert!(!waiter.is_finished(), "a flush ended: pacing again");
        drop(g.start(1));
        waiter.join().expect("pace");
    }

    /// The writer's wait for the flush in flight ends with that flush's notice, not by the
    /// clock (it sleeps on the condvar the committer notifies).
    #[test]
    fn waiting_out_a_flush_ends_with_its_notice() {
        let f = std::sync::Arc::new(Flushes::default());
        let flush = f.start(4096);
        let seen = f.ended();
        let waiter = {
            let f = f.clone();
            // Far longer than the flush below takes to end: a wait that misses the notice
            // returns false.
            std::thread::spawn(move || f.wait_end_after(seen, Duration::from_secs(10)))
        };
        std::thread::sleep(Duration::from_millis(5));
        drop(flush);
        assert!(
            waiter.join().expect("waiter"),
            "the flush ended during the wait"
        );
        // A flush that stays in flight is waited out for MAX_WAIT at most.
        let _stuck = f.start(4096);
        let started = Instant::now();
        assert!(f.wait_out(), "a flush was in flight");
        assert!(started.elapsed() >= MAX_WAIT);
    }

    #[test]
    fn a_flush_that_fails_still_ends_its_mark() {
        fn flush_that_fails(f: &Flushes) -> Result<(), ()> {
            let _flush = f.start(4096);
            Err(())
        }
        let f = Flushes::default();
        assert!(flush_that_fails(&f).is_err());
        assert!(!f.in_flight.load(Ordering::SeqCst));
        assert_eq!(f.ended(), 1);
    }
}
