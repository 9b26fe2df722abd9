//! Snapshots built on demand: the [`SnapshotBuilder`] an application registers, and the one
//! background build at a time that `raft::Storage::snapshot` starts when the stored snapshot no
//! longer serves raft.
//!
//! Owns: when a stored snapshot is stale (older than raft's request, or recording another conf
//! state than the current one), the build thread (at most one per store, started on demand,
//! joined when the store closes), the cancellation of a build by close, and the record of how
//! builds went. Must never: write a snapshot itself (the store writes what the builder returns,
//! through `create_snapshot_from`), run the builder on the caller's thread, let a failed or
//! panicking builder take the store down, or leave a build thread running once `stop` returns.

use std::io::{self, Read};
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use parking_lot::Mutex;
use raft::prelude::ConfState;

use crate::error::{Error, Result};
use crate::proto::ConfStateRecord;

/// Builds the application's state-machine snapshot when raft needs one that the store does not
/// hold (register it with `DiskStorage::set_snapshot_builder` or
/// `GroupStorage::set_snapshot_builder`).
///
/// `build` runs on a thread of the store's own, never on the raft thread, and never twice at
/// once for one store. It returns the index the state machine has applied and a reader of its
/// state at that index; the store writes it with `create_snapshot_from` (which compacts the
/// log as usual). Closures `Fn(&SnapshotRequest) -> Result<BuiltSnapshot, BuildError>` are
/// builders.
///
/// A builder must not own a handle to the store it builds for (the store would never see its
/// last handle go, and would stay open), and must not wait for the thread that closes or drops
/// the store's last handle (close waits for a running build).
pub trait SnapshotBuilder: Send + Sync + 'static {
    /// Returns the state machine's snapshot at its applied index. An error is recorded (see
    /// `snapshot_build_status`) and the next `snapshot()` call that needs a snapshot tries again.
    fn build(&self, request: &SnapshotRequest) -> Result<BuiltSnapshot, BuildError>;
}

/// What a [`SnapshotBuilder`] may fail with.
pub type BuildError = Box<dyn std::error::Error + Send + Sync>;

impl<F> SnapshotBuilder for F
where
    F: Fn(&SnapshotRequest) -> Result<BuiltSnapshot, BuildError> + Send + Sync + 'static,
{
    fn build(&self, request: &SnapshotRequest) -> Result<BuiltSnapshot, BuildError> {
        self(request)
    }
}

/// Why the store asks for a snapshot, and what it holds.
#[derive(Debug)]
pub struct SnapshotRequest {
    /// The index raft asked for (`raft::Storage::snapshot`'s `request_index`; 0: any).
    pub request_index: u64,
    /// The stored snapshot's index (0: none).
    pub stored_index: u64,
    /// The current conf state (the one `set_conf_state` last stored).
    pub conf_state: ConfState,
    /// The checkpoint index (`MetaInfo::CheckpointIndex`), which applications usually keep at
    /// their applied index.
    pub checkpoint: u64,
    cancel: Arc<AtomicBool>,
}

impl SnapshotRequest {
    /// The store is closing: the build's result will not be written; a slow builder may stop.
    pub fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Acquire)
    }
}

/// A state-machine snapshot a [`SnapshotBuilder`] returns.
pub struct BuiltSnapshot {
    /// The applied index the data reflects: at or below the store's last index, above the
    /// stored snapshot's index (else nothing is written and the build counts as failed).
    pub index: u64,
    /// The conf state at `index`, recorded in the snapshot; `None` records the store's current
    /// conf state, which is only right if no conf change was applied after `index`.
    pub conf_state: Option<ConfState>,
    /// The data, read only while it is written (a lazy reader costs nothing when the index
    /// turns out not to be newer than the stored snapshot's).
    pub data: Box<dyn Read + Send>,
}

impl std::fmt::Debug for BuiltSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BuiltSnapshot")
            .field("index", &self.index)
            .field("conf_state", &self.conf_state)
            .finish_non_exhaustive()
    }
}

/// How the store's snapshot builds went (`snapshot_build_status`).
#[derive(Clone, Debug, Default)]
pub struct SnapshotBuildStatus {
    /// A builder is registered.
    pub registered: bool,
    /// A build is running now.
    pub running: bool,
    /// Builds whose snapshot was stored.
    pub stored: u64,
    /// Builds that failed (the builder's error, a panic, or the write's error).
    pub failed: u64,
    /// The error of the last build, if it failed (`None` once a build succeeds).
    pub last_error: Option<Arc<Error>>,
}

/// Whether the stored snapshot (index `stored_index`, conf state `stored_cs`) serves a request
/// for `request_index` under the current conf state `current_cs`.
pub(crate) fn serves(
    stored_index: u64,
    stored_cs: Option<&ConfStateRecord>,
    current_cs: Option<&ConfStateRecord>,
    request_index: u64,
) -> bool {
    stored_index > 0 && stored_index >= request_index && same_conf(stored_cs, current_cs)
}

/// Conf states compared as sets: raft-rs lists voters in no particular order.
fn same_conf(a: Option<&ConfStateRecord>, b: Option<&ConfStateRecord>) -> bool {
    fn norm(c: Option<&ConfStateRecord>) -> ConfStateRecord {
        let mut c = c.cloned().unwrap_or_default();
        for v in [
            &mut c.voters,
            &mut c.learners,
            &mut c.voters_outgoing,
            &mut c.learners_next,
        ] {
            v.sort_unstable();
            v.dedup();
        }
        c
    }
    norm(a) == norm(b)
}

/// The builds of one store: its builder, the one build thread, and their record.
#[derive(Default)]
pub(crate) struct Builds {
    inner: Arc<BuildsInner>,
}

#[derive(Default)]
struct BuildsInner {
    builder: Mutex<Option<Arc<dyn SnapshotBuilder>>>,
    state: Mutex<BuildState>,
    /// Set (for good) when the store closes.
    cancel: Arc<AtomicBool>,
}

#[derive(Default)]
struct BuildState {
    running: bool,
    thread: Option<JoinHandle<()>>,
    stored: u64,
    failed: u64,
    last_error: Option<Arc<Error>>,
}

/// What the store's part of a build knows: the request's figures.
pub(crate) struct RequestFigures {
    pub request_index: u64,
    pub stored_index: u64,
    pub conf_state: ConfState,
    pub checkpoint: u64,
}

impl Builds {
    pub(crate) fn set_builder(&self, builder: Arc<dyn SnapshotBuilder>) {
        *self.inner.builder.lock() = Some(builder);
    }

    pub(crate) fn has_builder(&self) -> bool {
        self.inner.builder.lock().is_some()
    }

    /// Starts a build unless one is running or the store is closing. `write` stores what the
    /// builder returned (its data reader stops with an error once the store is closing).
    pub(crate) fn start<W>(&self, figures: RequestFigures, write: W) -> Result<()>
    where
        W: FnOnce(BuiltSnapshot) -> Result<()> + Send + 'static,
    {
        let Some(builder) = self.inner.builder.lock().clone() else {
            return Ok(());
        };
        let mut state = self.inner.state.lock();
        if state.running || self.inner.cancel.load(Ordering::Acquire) {
            return Ok(());
        }
        // The previous build has finished (`running` is false): reap its thread.
        if let Some(t) = state.thread.take() {
            let _ = t.join();
        }
        let request = SnapshotRequest {
            request_index: figures.request_index,
            stored_index: figures.stored_index,
            conf_state: figures.conf_state,
            checkpoint: figures.checkpoint,
            cancel: Arc::clone(&self.inner.cancel),
        };
        let inner = Arc::clone(&self.inner);
        let thread = std::thread::Builder::new()
            .name("raftwal-snapshot-build".to_string())
            .spawn(move || {
                let result = build_and_write(&*builder, &request, &inner.cancel, write);
                let mut state = inner.state.lock();
                match result {
                    Ok(()) => {
                        state.stored += 1;
                        state.last_error = None;
                    }
                    Err(e) => {
                        state.failed += 1;
                        state.last_error = Some(Arc::new(e));
                    }
                }
                state.running = false;
            })
            .map_err(|e| Error::io("start a snapshot build thread for", "the store", e))?;
        state.running = true;
        state.thread = Some(thread);
        Ok(())
    }

    /// The store is closing (or the engine's group being removed): [`Builds::stop`] was called.
    pub(crate) fn cancelled(&self) -> bool {
        self.inner.cancel.load(Ordering::Acquire)
    }

    pub(crate) fn status(&self) -> SnapshotBuildStatus {
        let state = self.inner.state.lock();
        SnapshotBuildStatus {
            registered: self.has_builder(),
            running: state.running,
            stored: state.stored,
            failed: state.failed,
            last_error: state.last_error.clone(),
        }
    }

    /// Cancels a running build and waits for its thread; no build starts afterwards.
    pub(crate) fn stop(&self) {
        self.inner.cancel.store(true, Ordering::Release);
        let thread = self.inner.state.lock().thread.take();
        if let Some(t) = thread {
            // A builder that (against its contract) owns the store's last handle drops it on
            // the build thread itself when it is replaced: that thread cannot wait for itself,
            // and is ending anyway.
            if t.thread().id() != std::thread::current().id() {
                // A panic in the builder is caught inside the thread; nothing else panics there.
                let _ = t.join();
            }
        }
    }
}

/// One build: the builder (panics caught), then the write, unless the store is closing.
fn build_and_write<W>(
    builder: &dyn SnapshotBuilder,
    request: &SnapshotRequest,
    cancel: &Arc<AtomicBool>,
    write: W,
) -> Result<()>
where
    W: FnOnce(BuiltSnapshot) -> Result<()>,
{
    let built = match panic::catch_unwind(AssertUnwindSafe(|| builder.build(request))) {
        Ok(Ok(built)) => built,
        Ok(Err(e)) => return Err(Error::SnapshotBuild { source: e }),
        Err(_) => {
            return Err(Error::SnapshotBuild {
                source: "the snapshot builder panicked".into(),
            })
        }
    };
    if cancel.load(Ordering::Acquire) {
        return Err(closing());
    }
    let data = Box::new(Cancellable {
        data: built.data,
        cancel: Arc::clone(cancel),
        panicked: false,
    });
    write(BuiltSnapshot { data, ..built })
}

fn closing() -> Error {
    Error::Closed {
        what: "the store (closed while a snapshot was built)".to_string(),
    }
}

/// A data reader that fails once the store is closing, so that a write in progress stops at
/// its next chunk; and fails, for good, where the builder's reader panics (a panic in the
/// write would unwind the build thread past its bookkeeping: `running` for ever, no build
/// again), so that the write fails as for any read error and removes its `.tmp`.
struct Cancellable {
    data: Box<dyn Read + Send>,
    cancel: Arc<AtomicBool>,
    /// The builder's reader panicked: it is never read again (its state is not relied on).
    panicked: bool,
}

impl Read for Cancellable {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.cancel.load(Ordering::Acquire) {
            return Err(io::Error::other("the store is closing"));
        }
        if !self.panicked {
            match panic::catch_unwind(AssertUnwindSafe(|| self.data.read(buf))) {
                Ok(read) => return read,
                Err(_) => self.panicked = true,
            }
        }
        Err(io::Error::other(
            "the snapshot builder's data reader panicked",
        ))
    }
}
