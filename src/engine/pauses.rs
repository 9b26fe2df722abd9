//! Test-only pauses at chosen points of an engine's threads (a commit between its journal
//! record and its apply, the segment preparer between making a segment and handing it over),
//! so that a unit test can put a second call into exactly that window.
//!
//! Owns: the pending pauses of one point, keyed by engine root (unit tests run in parallel, each
//! with its own root). Must never: be compiled outside tests, or pause an engine whose root no
//! test named.

use std::path::{Path, PathBuf};

use parking_lot::Mutex;

/// A pause: what to run, and the root of the engine that runs it.
type Pause = (PathBuf, Box<dyn FnOnce() + Send>);

/// The pending pauses of one point: each runs once, at the next time an engine at its root
/// passes the point.
pub(crate) struct Pauses(Mutex<Vec<Pause>>);

impl Pauses {
    pub(crate) const fn new() -> Pauses {
        Pauses(Mutex::new(Vec::new()))
    }

    /// Makes the engine at `root` run `f` the next time it passes this point.
    pub(crate) fn add(&self, root: &Path, f: impl FnOnce() + Send + 'static) {
        self.0.lock().push((root.to_path_buf(), Box::new(f)));
    }

    /// At the point: runs the pause pending for `root`, if any (without holding the list, so
    /// that other roots' engines go by meanwhile).
    pub(crate) fn pass(&self, root: &Path) {
        let f = {
            let mut pauses = self.0.lock();
            let at = pauses.iter().position(|(r, _)| r == root);
            at.map(|i| pauses.swap_remove(i).1)
        };
        if let Some(f) = f {
            f();
        }
    }
}
