//! Trimmed journal segments given back to the file system a step at a time.
//!
//! A checkpoint's trim keeps some segments as spares (module `segments`); each other one it
//! renames `<id>.jnl.tmp` (a name open removes) and queues as a [`Release`], and so does a
//! journal at rest with its spares and its prepared segment (`Journal::rest_if_idle`). On
//! this disk (ext4 mounted with `discard`) a removal discards the blocks it frees before it
//! returns, about 0.3 ms per MiB, and a journal flush issued meanwhile waits behind them:
//! removed at once, under the journal's lock, a 32 MiB segment held a commit's flush for 7-9
//! ms, and a trim after a long checkpoint removed eight (docs/PERFORMANCE.md, "Trimmed
//! segments given back a step at a time"). So the journal thread gives them back in turns
//! ([`Releasing`]): right after a journal flush ends, as many bytes as the journal flushed
//! since the last turn (at least [`STEP`]), shrinking the oldest file and removing it once
//! nothing is left, and going on to the next with what the turn has left: the journal is
//! given back as fast as it is written. With no flush ending within a wait (an idle engine, or
//! one without `sync_writes`), or with more waiting than [`backlog_bound`], a turn gives back
//! all it holds without waiting; and a checkpoint that leaves more than that waiting gives back
//! the excess itself ([`give_back_past_bound`]), so the bound holds when the journal thread is
//! starved.
//!
//! Owns: the queue entries and the thread's side of the turns. Must never: touch a file a trim
//! or a rest did not rename (each holds no record, or only records at or below a durable
//! checkpoint), shrink or remove a file while holding the journal's lock (a commit holds it
//! through its flush), or let what waits to be given back grow without bound.

use std::fs::{self, OpenOptions};
use std::path::PathBuf;

use super::journal::Journal;
use super::{EngineOptions, Shared};
use crate::error::{Error, Result};

/// The least a turn gives back.
const STEP: u64 = 1 << 20;

/// The name a trimmed segment that is not kept takes while it is given back: open removes any
/// file of this form it finds (module `journal`).
pub(crate) fn release_name(id: u64) -> String {
    format!("{id:016}.jnl.tmp")
}

/// Bytes of trimmed segments waiting to be given back past which a turn gives back without
/// waiting for a flush: four checkpoints' worth (a quarter of what the journal holds before
/// commits wait for room), at least a segment.
pub(crate) fn backlog_bound(opts: &EngineOptions) -> u64 {
    opts.checkpoint_bytes
        .saturating_mul(4)
        .max(opts.journal_segment_bytes)
}

/// Gives back on the calling thread (a checkpoint, right after its trim) the oldest queued
/// files while more than [`backlog_bound`] waits in the queue. The journal thread's turns keep
/// what waits near the journal's own pace, but only while that thread gets the CPU: on a loaded
/// machine a starved one let trims pile up behind it (a test saw 4.5 MiB wait against a bound
/// of 4.25: `engine::tests::trimmed_segments_are_given_back_as_fast_as_the_journal_grows`,
/// with three other test binaries beside it). With this, what waits stays within the bound
/// plus one trim's segments whichever thread runs. Without the journal's lock while a file
/// goes (module doc).
pub(crate) fn give_back_past_bound(shared: &Shared) -> Result<()> {
    let bound = backlog_bound(&shared.opts);
    loop {
        let next = {
            let mut j = shared.journal.lock();
            if j.releases_bytes() <= bound {
                return Ok(());
            }
            j.take_release()
        };
        let Some(mut release) = next else {
            return Ok(());
        };
        let len = release.len;
        release.step(len)?;
    }
}

/// A trimmed segment (or a spare or prepared segment a rest gave up) being given back to the
/// file system: shrunk a step at a time, then
/// removed.
pub(crate) struct Release {
    pub path: PathBuf,
    /// Its length now.
    pub len: u64,
}

impl Release {
    /// Shrinks the file by `bytes` (at least one), or removes it once that leaves nothing.
    /// Returns whether it is gone.
    pub(crate) fn step(&mut self, bytes: u64) -> Result<bool> {
        let len = self.len.saturating_sub(bytes.max(1));
        if len == 0 {
            fs::remove_file(&self.path).map_err(|e| Error::io("remove", &self.path, e))?;
            return Ok(true);
        }
        let file = OpenOptions::new()
            .write(true)
            .open(&self.path)
            .map_err(|e| Error::io("open", &self.path, e))?;
        file.set_len(len)
            .map_err(|e| Error::io("shrink", &self.path, e))?;
        self.len = len;
        Ok(false)
    }
}

/// The journal thread's side of the turns: the file it is giving back, held between turns
/// outside the journal's lock, and the journal's flushed bytes at its last turn.
#[derive(Default)]
pub(crate) struct Releasing {
    current: Option<Release>,
    mark: Option<u64>,
}

impl Releasing {
    /// Whether anything waits to be given back (under the journal's lock).
    pub(crate) fn pending(&self, j: &Journal) -> bool {
        self.current.is_some() || j.releases_bytes() > 0
    }

    /// Under the journal's lock, before a turn: takes the oldest queued file if none is held.
    /// `None` if there is nothing to give back; else whether what waits is past `bound` (the
    /// turn then gives back all it holds without waiting).
    pub(crate) fn begin_turn(&mut self, j: &mut Journal, bound: u64) -> Option<bool> {
        if self.current.is_none() {
            self.current = j.take_release();
        }
        let Some(held) = &self.current else {
            // Nothing under way: the next turn counts the flushes from its own start.
            self.mark = None;
            return None;
        };
        Some(held.len.saturating_add(j.releases_bytes()) > bound)
    }

    /// A turn, without the journal's lock: waits for the next journal flush to end (unless
    /// `catch_up`), then gives back as many bytes as the journal flushed since the last turn
    /// (at least [`STEP`]), from the held file on to the next queued ones.
    pub(crate) fn turn(&mut self, shared: &Shared, catch_up: bool) -> Result<()> {
        let mut budget = if catch_up {
            u64::MAX
        } else {
            let since = self.mark.unwrap_or_else(|| shared.flushes.flushed_bytes());
            if shared.flushes.wait_next() {
                let now = shared.flushes.flushed_bytes();
                self.mark = Some(now);
                STEP.max(now.saturating_sub(since))
            } else {
                // No flush within the wait: nothing to hold up.
                u64::MAX
            }
        };
        #[cfg(test)]
        tests::BEFORE_TURN.pass(&shared.root);
        while let Some(held) = self.current.as_mut() {
            let len = held.len;
            if !held.step(budget)? {
                break;
            }
            self.current = None;
            budget = budget.saturating_sub(len);
            if budget == 0 {
                break;
            }
            self.current = shared.journal.lock().take_release();
        }
        Ok(())
    }

    /// Lets go of the held file after a step on it failed (the engine stops; open removes it),
    /// so that the next turn does not try it again and again.
    pub(crate) fn abandon(&mut self) {
        self.current = None;
    }

    /// Hands the held file back to the queue (the thread stops; a clean close removes it).
    pub(crate) fn put_back(&mut self, j: &mut Journal) {
        if let Some(held) = self.current.take() {
            j.keep_release(held);
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use crate::engine::pauses::Pauses;

    /// Before a turn gives anything back, without the journal's lock.
    pub(crate) static BEFORE_TURN: Pauses = Pauses::new();

    /// A release shrinks its file by the bytes asked (at least one) and says it is gone only
    /// once the step that removes it ran; a file that vanished under it is an error naming it.
    #[test]
    fn a_release_shrinks_by_its_steps_then_removes_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(super::release_name(7));
        std::fs::write(&path, vec![1u8; (3 << 20) + 100]).unwrap();
        let mut r = super::Release {
            path: path.clone(),
            len: (3 << 20) + 100,
        };
        let len = || std::fs::metadata(&path).unwrap().len();
        assert!(!r.step(1 << 20).unwrap());
        assert_eq!((len(), r.len), ((2 << 20) + 100, (2 << 20) + 100));
        assert!(!r.step(0).unwrap());
        assert_eq!(len(), (2 << 20) + 99);
        assert!(!r.step(2 << 20).unwrap());
        assert_eq!(len(), 99);
        assert!(r.step(1 << 20).unwrap());
        assert!(!path.exists());
        let mut gone = super::Release { path, len: 5 };
        let err = gone.step(1).unwrap_err().to_string();
        assert!(err.contains(&super::release_name(7)), "{err}");
    }
}
