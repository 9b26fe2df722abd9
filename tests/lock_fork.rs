//! A directory's lock is released when its store is dropped, even while a child process forked
//! by another thread still holds a copy of the lock's descriptor (between its fork and its
//! exec, as `Command::spawn` leaves it). A `flock` lock belongs to the open file description,
//! which that copy keeps alive: closing only this process's descriptor left the lock held, and
//! the next open in the same process failed with `Locked` (seen once in `tests/cli.rs`, beside
//! tests that spawn the `raftwal` binary).
//!
//! A test binary of its own: it forks.

use raftwal::DiskStorage;

#[test]
fn a_dropped_store_unlocks_its_directory_though_a_forked_child_holds_the_descriptor() {
    let dir = tempfile::tempdir().unwrap();
    let store = DiskStorage::open(dir.path()).unwrap();
    // SAFETY: the child only sleeps and exits (async-signal-safe calls only), holding every
    // descriptor the parent had at the fork, as a child between fork and exec does.
    let child = unsafe { libc::fork() };
    assert!(child >= 0, "fork: {}", std::io::Error::last_os_error());
    if child == 0 {
        // SAFETY: async-signal-safe; the child never returns into the test harness.
        unsafe {
            libc::usleep(2_000_000);
            libc::_exit(0);
        }
    }
    drop(store);
    let reopened = DiskStorage::open(dir.path());
    let mut status = 0;
    // SAFETY: waits for the child this test forked.
    unsafe {
        libc::kill(child, libc::SIGKILL);
        libc::waitpid(child, &mut status, 0);
    }
    assert!(
        reopened.is_ok(),
        "reopen while a forked child holds the old descriptor: {:?}",
        reopened.err()
    );
}
