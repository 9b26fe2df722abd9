//! The threads of an engine's open: a list of independent items (the groups) done on a few
//! threads, and one task (the journal) done on a thread of its own beside other work.
//!
//! Owns: starting, feeding and joining those threads, the order of their results, and
//! passing on a panic as it would surface without them. Must never: change what the work
//! returns or the order callers see it in, or fail because a thread could not be started
//! (the calling thread then does the work).

use parking_lot::Mutex;

/// `a()` on a thread of its own while this thread runs `b()`; both results. When no thread can
/// be started, `a()` runs here after `b()`. (`None` for `a` only if it ran nowhere, which the
/// task's single taker rules out.)
pub(crate) fn beside<A: Send, B>(
    a: impl FnOnce() -> A + Send,
    b: impl FnOnce() -> B,
) -> (B, Option<A>) {
    let task = Mutex::new(Some(a));
    let run = || task.lock().take().map(|f| f());
    std::thread::scope(|s| {
        let started = std::thread::Builder::new()
            .name("raftwal-open".into())
            .spawn_scoped(s, run)
            .ok();
        let rb = b();
        let ra = match started.map(|h| h.join()) {
            Some(Ok(ra)) => ra,
            Some(Err(panic)) => std::panic::resume_unwind(panic),
            None => None,
        };
        (rb, ra.or_else(run))
    })
}

/// `f` of every item, in the items' order, run on up to `threads` threads, the calling thread
/// one of them. The threads take items one at a time from a shared queue, so a thread that
/// cannot be started leaves its items to the others; a panic in `f` is passed on as it would be
/// without the threads.
pub(crate) fn in_parallel<T: Send, R: Send>(
    threads: usize,
    items: Vec<T>,
    f: impl Fn(T) -> R + Sync,
) -> Vec<R> {
    let threads = threads.min(items.len());
    if threads < 2 {
        return items.into_iter().map(f).collect();
    }
    let n = items.len();
    let queue = Mutex::new(items.into_iter().enumerate());
    let work = || {
        let mut done = Vec::new();
        loop {
            let next = queue.lock().next();
            let Some((i, item)) = next else { break };
            done.push((i, f(item)));
        }
        done
    };
    let mut out: Vec<Option<R>> = std::iter::repeat_with(|| None).take(n).collect();
    std::thread::scope(|s| {
        let handles: Vec<_> = (1..threads)
            .filter_map(|_| {
                std::thread::Builder::new()
                    .name("raftwal-open".into())
                    .spawn_scoped(s, work)
                    .ok()
            })
            .collect();
        let mine = work();
        for done in std::iter::once(Ok(mine)).chain(handles.into_iter().map(|h| h.join())) {
            match done {
                Ok(done) => {
                    for (i, r) in done {
                        out[i] = Some(r);
                    }
                }
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
    });
    // Every index was taken from the queue exactly once and its result stored above.
    out.into_iter().flatten().collect()
}

#[cfg(test)]
mod tests {
    use super::in_parallel;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Work that takes longer for some items than others, so that the threads finish their
    /// items out of order.
    fn uneven(x: u64) -> u64 {
        let mut h = x;
        for _ in 0..(x % 7) * 2_000 {
            h = h.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17);
        }
        std::hint::black_box(h);
        x * 3
    }

    #[test]
    fn every_item_is_done_once_and_comes_back_in_order() {
        let want: Vec<u64> = (0..2_000).map(|x| x * 3).collect();
        for threads in [0, 1, 2, 4, 64] {
            let calls = AtomicUsize::new(0);
            let got = in_parallel(threads, (0..2_000).collect(), |x| {
                calls.fetch_add(1, Ordering::Relaxed);
                uneven(x)
            });
            assert_eq!(got, want, "{threads} threads");
            assert_eq!(calls.load(Ordering::Relaxed), 2_000, "{threads} threads");
        }
        assert!(in_parallel(4, Vec::<u64>::new(), uneven).is_empty());
        assert_eq!(in_parallel(4, vec![7], uneven), vec![21]);
    }

    #[test]
    fn beside_runs_both_and_gives_both_results() {
        let other = std::sync::Mutex::new(None);
        let (b, a) = super::beside(
            || {
                *other.lock().expect("lock") = Some(std::thread::current().id());
                uneven(6)
            },
            || uneven(5),
        );
        assert_eq!((b, a), (15, Some(18)));
        let ran_on = other.lock().expect("lock").expect("ran");
        assert_ne!(
            ran_on,
            std::thread::current().id(),
            "a ran on a thread of its own"
        );
        let caught = std::panic::catch_unwind(|| super::beside(|| panic!("a"), || 1));
        assert!(caught.is_err(), "a panic in the thread is passed on");
    }

    #[test]
    fn a_panic_in_a_thread_is_passed_on() {
        use std::sync::atomic::AtomicBool;
        // The calling thread waits (a bounded while) until a started thread has taken an item,
        // and that thread panics: the panic must come back through the join.
        let taken = AtomicBool::new(false);
        let caught = std::panic::catch_unwind(|| {
            in_parallel(2, (0..500u64).collect(), |x| {
                if std::thread::current().name() == Some("raftwal-open") {
                    taken.store(true, Ordering::SeqCst);
                    panic!("item {x} on a started thread");
                }
                let since = std::time::Instant::now();
                while !taken.load(Ordering::SeqCst) && since.elapsed().as_secs() < 10 {
                    std::thread::yield_now();
                }
                x
            })
        });
        assert!(
            taken.load(Ordering::SeqCst),
            "no started thread took an item"
        );
        assert!(caught.is_err());
    }
}
