//! The groups' write descriptors: which groups keep the descriptor of their last log file open
//! between writes, least recently written first.
//!
//! The writer moves many groups' tails into their files every few milliseconds; opening and closing
//! each file around each write cost two system calls per group written (about 29 opens and as many
//! closes per commit at 128 groups, docs/PERFORMANCE.md). So a written group keeps its last file's
//! descriptor, and once more groups hold one than the budget (`max_open_files` less what the engine
//! keeps for itself), the least recently written group's are closed.
//!
//! The application's snapshot writes (`create_snapshot_from`) hold their file's descriptor
//! only inside a step ([`crate::store::snap::Gate`]), and at most [`SNAPSHOT_FILES`] such steps
//! run at once, however many groups build snapshots.
//!
//! Owns: the order of the groups that hold descriptors, the snapshot writes' turns. Must never: be taken with a group's lock
//! held (it takes groups' locks to close their descriptors), or let the groups' descriptors
//! exceed the budget by more than the groups being written at that moment (each noted once its
//! write ends).

use std::collections::VecDeque;
use std::sync::{Arc, Weak};

use parking_lot::{Condvar, Mutex};

use super::group::Group;

/// Descriptors `max_open_files` leaves to the engine itself: the root's lock, the journal's
/// segments (current and prepared), `engine.meta`, one opened for a moment by each thread at
/// work (a flush, the root for `syncfs`, a file mapped again as it grows, a
/// meta page stored, a write-back started), the application's snapshot writes'
/// [`SNAPSHOT_FILES`], and the groups being
/// written (by the writer, and by its second thread while commits wait for journal room,
/// module `joined`: each one's descriptors before it is noted here, its second file at a
/// rotation).
pub(crate) const RESERVED: usize = 16;

/// The groups holding a write descriptor, least recently written first.
pub(crate) struct OpenFiles {
    order: Mutex<VecDeque<(u64, Weak<Group>)>>,
    budget: usize,
}

impl OpenFiles {
    pub(crate) fn new(max_open_files: usize) -> OpenFiles {
        OpenFiles {
            order: Mutex::new(VecDeque::new()),
            budget: max_open_files.saturating_sub(RESERVED),
        }
    }

    /// Notes that group `g` was just written and holds its descriptor; closes those of the
    /// least recently written groups past the budget. Groups are held weakly (a removed group
    /// closed its files), and not looked up in the engine's table, which a commit holds while
    /// it applies.
    pub(crate) fn written(&self, g: &Arc<Group>) {
        // The victims are closed with the list held: no other group is noted meanwhile, so the
        // descriptors never exceed the budget by more than the groups being written.
        let mut order = self.order.lock();
        if let Some(at) = order.iter().rposition(|(id, _)| *id == g.id) {
            order.remove(at);
        }
        order.push_back((g.id, Arc::downgrade(g)));
        let over = order.len().saturating_sub(self.budget);
        for (_, victim) in order.drain(..over) {
            if let Some(victim) = victim.upgrade() {
                victim.release_fds();
            }
        }
    }

    /// Forgets group `id` (its descriptors were closed with it).
    pub(crate) fn forget(&self, id: u64) {
        self.order.lock().retain(|(g, _)| *g != id);
    }
}

/// Steps of the application's snapshot writes that may hold a descriptor at once (a step writes
/// one chunk of a file into the page cache, or flushes it: none waits for the application).
pub(crate) const SNAPSHOT_FILES: usize = 2;

/// Turns for the steps of the application's snapshot writes: at most [`SNAPSHOT_FILES`] run at
/// once. A step waits only for other steps, each of which ends without waiting for anything
/// but the disk.
pub(crate) struct SnapshotTurns {
    running: Mutex<usize>,
    ended: Condvar,
}

/// A step's turn, given back when dropped.
pub(crate) struct Turn<'a>(&'a SnapshotTurns);

impl SnapshotTurns {
    pub(crate) fn new() -> SnapshotTurns {
        SnapshotTurns {
            running: Mutex::new(0),
            ended: Condvar::new(),
        }
    }

    /// Waits until fewer than [`SNAPSHOT_FILES`] steps run, and counts this one.
    pub(crate) fn take(&self) -> Turn<'_> {
        let mut running = self.running.lock();
        while *running >= SNAPSHOT_FILES {
            self.ended.wait(&mut running);
        }
        *running += 1;
        Turn(self)
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        *self.0.running.lock() -= 1;
        self.0.ended.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Barrier;

    use super::*;

    /// However many threads take turns at once, at most `SNAPSHOT_FILES` hold one at a time,
    /// and every thread gets its turn.
    #[test]
    fn at_most_snapshot_files_turns_are_held_at_once() {
        const THREADS: usize = 16;
        let turns = SnapshotTurns::new();
        let (holding, most, done) = (
            AtomicUsize::new(0),
            AtomicUsize::new(0),
            AtomicUsize::new(0),
        );
        let start = Barrier::new(THREADS);
        std::thread::scope(|s| {
            for _ in 0..THREADS {
                s.spawn(|| {
                    start.wait();
                    for _ in 0..50 {
                        let _turn = turns.take();
                        let now = holding.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        std::thread::yield_now();
                        holding.fetch_sub(1, Ordering::SeqCst);
                    }
                    done.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        assert_eq!(done.load(Ordering::SeqCst), THREADS);
        let most = most.load(Ordering::SeqCst);
        assert!(
            (1..=SNAPSHOT_FILES).contains(&most),
            "{most} turns held at once"
        );
    }
}
