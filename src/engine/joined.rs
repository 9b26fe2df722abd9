//! A pass of the groups' writer or of a checkpoint over many groups, which a second thread joins
//! while commits wait for room in the journal.
//!
//! The writer and the checkpoints work one group after another on their own thread: at 10,000
//! groups a checkpoint's passes (every tail written, every changed group captured, every meta
//! page stored) take seconds of one core, most of it in the kernel (the copies into the groups'
//! files and their block allocation). Once the journal holds its bound, commits wait for that
//! checkpoint to trim it (docs/PERFORMANCE.md, "A bounded journal"), and the core the commits
//! would use sits idle. So from the moment a commit waits for room, a second thread takes the
//! pass's items from the same list, until the list ends or no commit waits any more. While
//! commits go on, a pass keeps to one thread and leaves them their core: a second thread for
//! every large pass cost the bursts a third of their throughput (docs/PERFORMANCE.md, "Two writer
//! threads, measured, not kept", and "A second thread while commits wait for room").
//!
//! Owns: handing a pass's items to at most two threads, each item once, in the list's order,
//! and gathering what each item gave in that order. Must never: hand an item out twice, return
//! before the second thread has left, or start it while no commit waits for room.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use parking_lot::Mutex;

use super::Shared;
use crate::error::Result;

/// Items a pass must still have for a second thread to join it: a thread started for fewer
/// costs about as much as it saves.
const JOIN_AT_LEAST: usize = 64;

/// Runs `f` on each of `items`, handed out in the list's order to this thread and, from the
/// moment a commit waits for room in the journal, to a second thread as well (until no commit
/// waits). Returns what the items gave (`None`s left out), in the items' order; or the first
/// error in the items' order, once both threads have stopped: no item is handed out after a
/// failure, though the other thread may have run items after the failed one meanwhile.
pub(crate) fn each<I, T, F>(shared: &Shared, items: &[I], f: F) -> Result<Vec<T>>
where
    I: Sync,
    T: Send,
    F: Fn(&I) -> Result<Option<T>> + Sync,
{
    let pass = Pass {
        items,
        f: &f,
        next: AtomicUsize::new(0),
        failed: AtomicBool::new(false),
        started: AtomicBool::new(false),
        got: Mutex::new(Vec::new()),
    };
    std::thread::scope(|scope| {
        // A panic on this thread (a bug) stops the second one at its next item.
        let _stop = StopOnPanic(&pass.failed);
        let mut mine = Vec::new();
        // A thread that could not be had is not asked for again in this pass.
        let mut no_thread = false;
        loop {
            if !no_thread
                && shared.checkpointer.room_waits() > 0
                && items
                    .len()
                    .saturating_sub(pass.next.load(Ordering::Relaxed))
                    >= JOIN_AT_LEAST
                && shared.checkpointer.claim_helper()
            {
                let pass = &pass;
                let started = std::thread::Builder::new()
                    .name("raftwal-ckpt-2".to_string())
                    .spawn_scoped(scope, move || {
                        let mut leave = Leave {
                            shared,
                            pass,
                            took: 0,
                        };
                        let mut theirs = Vec::new();
                        while shared.checkpointer.room_waits() > 0 && pass.take(&mut theirs, true) {
                            leave.took += 1;
                        }
                        pass.got.lock().append(&mut theirs);
                    });
                match started {
                    // In tests, the second thread is sure of its share however slowly it
                    // starts on a loaded machine: this one waits (up to 20 s) until it has
                    // taken an item (or left).
                    #[cfg(test)]
                    Ok(_) => pass.wait_started(),
                    #[cfg(not(test))]
                    Ok(_) => {}
                    // No thread to be had: this one goes on alone.
                    Err(_) => {
                        shared.checkpointer.helper_left(0);
                        no_thread = true;
                    }
                }
            }
            if !pass.take(&mut mine, false) {
                break;
            }
        }
        pass.got.lock().append(&mut mine);
    });
    // Both threads have left (the scope ends with the second): the results are all here.
    let mut got = pass.got.into_inner();
    got.sort_by_key(|(at, _)| *at);
    let mut out = Vec::with_capacity(got.len());
    for (_, r) in got {
        if let Some(t) = r? {
            out.push(t);
        }
    }
    Ok(out)
}

/// Marks a pass failed if its thread unwinds from a panic, so that the other thread takes no
/// more items.
struct StopOnPanic<'a>(&'a AtomicBool);

impl Drop for StopOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.store(true, Ordering::Release);
        }
    }
}

/// The second thread leaving its pass, however it leaves: a panic (a bug) stops the pass, and
/// the thread is given back to the engine in every case.
struct Leave<'a, I, F, T> {
    shared: &'a Shared,
    pass: &'a Pass<'a, I, F, T>,
    took: u64,
}

impl<I, F, T> Drop for Leave<'_, I, F, T> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.pass.failed.store(true, Ordering::Release);
        }
        self.pass.started.store(true, Ordering::Release);
        self.shared.checkpointer.helper_left(self.took);
    }
}

/// A pass's list and where it stands.
struct Pass<'a, I, F, T> {
    items: &'a [I],
    f: &'a F,
    /// The next item to hand out.
    next: AtomicUsize,
    /// An item failed: neither thread takes another.
    failed: AtomicBool,
    /// The second thread has taken an item, or left.
    started: AtomicBool,
    /// What the items gave, values and errors (not `None`s), by their places in the list (each
    /// thread's share once it stopped).
    got: Mutex<Vec<(usize, Result<Option<T>>)>>,
}

impl<I, F, T> Pass<'_, I, F, T>
where
    F: Fn(&I) -> Result<Option<T>>,
{
    /// Takes the next item and runs it, keeping what it gave in `out`. False once the list has
    /// ended or an item failed. `second`: the second thread takes it.
    fn take(&self, out: &mut Vec<(usize, Result<Option<T>>)>, second: bool) -> bool {
        if self.failed.load(Ordering::Acquire) {
            return false;
        }
        let at = self.next.fetch_add(1, Ordering::Relaxed);
        let Some(item) = self.items.get(at) else {
            return false;
        };
        if second {
            self.started.store(true, Ordering::Release);
        }
        match (self.f)(item) {
            Ok(None) => {}
            Err(e) => {
                self.failed.store(true, Ordering::Release);
                out.push((at, Err(e)));
            }
            r => out.push((at, r)),
        }
        true
    }

    /// Waits (up to 20 s) until the second thread has taken an item, or left.
    #[cfg(test)]
    fn wait_started(&self) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while !self.started.load(Ordering::Acquire) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Engine;
    use crate::error::Error;
    use std::collections::HashSet;
    use std::thread::ThreadId;

    /// Notes the thread running an item in `ran`; with `two`, then waits (up to 20 s) until
    /// two threads have run one, so that each of them is sure of a share however the machine
    /// schedules them.
    fn noted(ran: &Mutex<Vec<ThreadId>>, two: bool) {
        ran.lock().push(std::thread::current().id());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while two
            && ran.lock().iter().collect::<HashSet<_>>().len() < 2
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    /// What the items gave and the threads that ran them; with `second`, each item waits
    /// until two threads have run one ([`noted`]).
    fn run_all(shared: &Shared, n: usize, second: bool) -> (Vec<usize>, Vec<ThreadId>) {
        let items: Vec<usize> = (0..n).collect();
        let ran = Mutex::new(Vec::new());
        let got = each(shared, &items, |&i| {
            noted(&ran, second);
            Ok((i % 3 != 0).then_some(i))
        })
        .expect("no item fails");
        (got, ran.into_inner())
    }

    /// An engine with no checkpoint thread: a checkpoint of its own would take the second
    /// thread.
    fn without_checkpoints(root: &std::path::Path) -> Engine {
        let engine = Engine::open(root).expect("open");
        engine.stop_background();
        engine
    }

    #[test]
    fn a_second_thread_takes_a_share_only_while_a_commit_waits_for_room() {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = without_checkpoints(dir.path());
        let shared = &engine.shared;
        let me = std::thread::current().id();
        let expected: Vec<usize> = (0..400).filter(|i| i % 3 != 0).collect();

        let (got, ran) = run_all(shared, 400, false);
        assert_eq!(got, expected, "what the items gave, in their order");
        assert!(
            ran.iter().all(|t| *t == me),
            "a second thread with no commit waiting"
        );

        let wait = shared.checkpointer.waiting_for_room();
        let (got, ran) = run_all(shared, 400, true);
        assert_eq!(
            got, expected,
            "each item once, what it gave in the items' order"
        );
        assert_eq!(ran.len(), 400, "each item ran once");
        let threads: HashSet<ThreadId> = ran.iter().copied().collect();
        assert_eq!(
            threads.len(),
            2,
            "two threads while a commit waits: {threads:?}"
        );
        drop(wait);

        // Too short a list for a second thread to be worth its start.
        let _wait = shared.checkpointer.waiting_for_room();
        let (_, ran) = run_all(shared, JOIN_AT_LEAST - 1, false);
        assert!(
            ran.iter().all(|t| *t == me),
            "a second thread for a short list"
        );
    }

    #[test]
    fn the_first_failure_in_the_items_order_ends_the_pass_on_both_threads() {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = without_checkpoints(dir.path());
        let shared = &engine.shared;
        let _wait = shared.checkpointer.waiting_for_room();
        let items: Vec<usize> = (0..1000).collect();
        let ran = Mutex::new(Vec::new());
        let r = each(shared, &items, |&i| {
            noted(&ran, true);
            std::thread::sleep(std::time::Duration::from_micros(100));
            if i >= 300 && i % 50 == 0 {
                return Err(Error::invariant(format!("item {i} failed")));
            }
            Ok(Some(i))
        });
        let err = r.expect_err("a failed item fails the pass").to_string();
        assert!(err.contains("item 300 failed"), "{err}");
        let ran = ran.into_inner();
        let threads: HashSet<&ThreadId> = ran.iter().collect();
        assert_eq!(threads.len(), 2, "the pass ran on one thread");
        // Item 350 fails too, whichever thread runs it, and the other thread has at most one
        // item in hand when it does: neither takes another, and items past 352 never run.
        assert!(
            ran.len() < 400,
            "items ran after the failures: {}",
            ran.len()
        );
    }

    /// A panic on the second thread (a bug) stops the pass on this thread too, at its next
    /// item, reaches the caller, and gives the second thread back to the engine.
    #[test]
    fn a_panic_on_the_second_thread_stops_the_pass_and_gives_the_thread_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = without_checkpoints(dir.path());
        let shared = &engine.shared;
        let wait = shared.checkpointer.waiting_for_room();
        let items: Vec<usize> = (0..1000).collect();
        let ran = Mutex::new(0usize);
        let me = std::thread::current().id();
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            each(shared, &items, |&i| {
                *ran.lock() += 1;
                if std::thread::current().id() != me {
                    panic!("a bug on the second thread (the test's), at item {i}");
                }
                // 5 s for the whole list: the second thread's unwinding has that long to stop it.
                std::thread::sleep(std::time::Duration::from_millis(5));
                Ok(Some(i))
            })
        }));
        assert!(caught.is_err(), "the panic did not reach the caller");
        let ran = ran.into_inner();
        assert!(
            ran < 100,
            "this thread went on after the panic: {ran} items ran"
        );
        drop(wait);
        assert!(
            shared.checkpointer.claim_helper(),
            "the second thread was not given back"
        );
        shared.checkpointer.helper_left(0);
    }
}
