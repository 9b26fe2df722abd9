//! Riding out a live engine: the tools run beside an engine holding the root's lock, so when
//! the root is marked open (or was opened or closed since it was read) and what was read is not
//! clean (a checkpoint moved on, a record was in flight, a file went), it is read again, a few
//! times, with a pause between, before anything is reported.
//!
//! Owns: how many reads and how long between them, what counts as clean, which errors a live
//! engine can cause, and whether the root or a group's meta page moved on under the reader.
//! Must never: read again a root that no engine had open while it was read, read again without
//! bound, or take the lock (it waits for the engine, never stops it).

use std::path::Path;
use std::time::Duration;

use super::group::GroupDisk;
use super::root::{read_root_with, Between, RootRead};
use crate::error::{Error, Result};
use crate::proto::EngineRecord;
use crate::store::meta;
use crate::sys::crypto::Cipher;

/// Reads of a root that is marked open and was not read clean (see the module comment).
pub(super) const ATTEMPTS: usize = 3;
/// Pause between them: long enough for a record in flight or a checkpoint step to finish.
pub(super) const RETRY_PAUSE: Duration = Duration::from_millis(200);

/// Reads the root, again while it is marked open (or was opened or closed since the read began)
/// and what was read is not clean or failed as a live engine can make it fail (a live engine
/// moves on under the reader), at most `attempts` times ([`ATTEMPTS`] but in tests); the last
/// read is what is reported.
pub(super) fn read_with_retries(
    root: &Path,
    cipher: Option<&Cipher>,
    only: Option<u64>,
    attempts: usize,
) -> Result<RootRead> {
    read_with_retries_with(root, cipher, (only, attempts), &mut |_| {})
}

/// [`read_with_retries`], with `between` run between the reads of each attempt.
fn read_with_retries_with(
    root: &Path,
    cipher: Option<&Cipher>,
    (only, attempts): (Option<u64>, usize),
    between: &mut dyn FnMut(Between),
) -> Result<RootRead> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let last = attempt >= attempts;
        let before = engine_state(root, cipher);
        match read_root_with(root, cipher, only, between) {
            Ok(r) if r.clean() || !live(root, cipher, &r) || last => return Ok(r),
            Ok(_) => {}
            Err(e) if last || !transient(&e) || !live_across(root, cipher, before) => {
                return Err(e)
            }
            Err(_) => {}
        }
        std::thread::sleep(RETRY_PAUSE);
    }
}

/// Whether a group's meta page is no longer the one `disk` was read from (or is gone): a live
/// engine changed the group under the reader.
pub(super) fn moved_on(disk: &GroupDisk, cipher: Option<&Cipher>) -> bool {
    crate::tools::inspect::meta_moved_on(&disk.dir, &disk.meta, disk.copies.seq, cipher)
}

/// An error a live engine can cause by changing files under the reader.
fn transient(e: &Error) -> bool {
    matches!(
        e,
        Error::Io { .. } | Error::Corrupt { .. } | Error::MissingFile { .. }
    )
}

/// Whether an engine may have changed the root while `read` was taken: it was marked open, or
/// `engine.meta` is no longer the copy read (an engine opened or closed it since: a node
/// restarting beside the reader), or can no longer be read.
pub(super) fn live(root: &Path, cipher: Option<&Cipher>, read: &RootRead) -> bool {
    read.record.open
        || meta::read_only::<EngineRecord>(root, cipher)
            .map_or(true, |(_, copies)| copies.seq != read.root_copies.seq)
}

/// `engine.meta` as an engine leaves it: marked open or not, and the sequence number of the
/// copy read (`None` if it cannot be read).
fn engine_state(root: &Path, cipher: Option<&Cipher>) -> Option<(bool, u64)> {
    meta::read_only::<EngineRecord>(root, cipher)
        .ok()
        .map(|(r, copies)| (r.open, copies.seq))
}

/// Whether an engine may have changed the root during a read that failed, `engine.meta`
/// having been `before` when it began: marked open then or now, or stored since (an engine
/// opened and closed it meanwhile: a node restarting beside the reader).
fn live_across(root: &Path, cipher: Option<&Cipher>, before: Option<(bool, u64)>) -> bool {
    let now = engine_state(root, cipher);
    before.is_some_and(|(open, _)| open) || now.is_some_and(|(open, _)| open) || now != before
}

impl RootRead {
    /// Nothing to read again for: no damage, no torn record, no change under the reader.
    fn clean(&self) -> bool {
        let j = &self.journal;
        j.damage.is_none()
            && j.torn.is_none()
            && j.lost.is_none()
            && self.part_damage.is_none()
            && self.journal_behind.is_none()
            && !self.journal_moved()
            && self.groups.values().all(|g| {
                g.replay.damage.is_none()
                    && g.cleared_damage.is_none()
                    && g.disk
                        .as_ref()
                        .is_ok_and(|d| !matches!(d.copies.other, meta::OtherCopy::Damaged { .. }))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::{read_with_retries_with, Between, ATTEMPTS};
    use crate::Engine;
    use raft::prelude::{Entry, HardState, Snapshot};

    /// `dump --group`'s read of a root closed when it began: between the group's meta page
    /// and its log files, an engine opens the root (a node restarting), takes a snapshot that
    /// removes the group's first `.wal` file, and closes again. The file's absence is that
    /// engine's doing, not an error of the tool: the root is read again. The error path asked
    /// only whether the root was marked open now, so the read failed ("No such file or
    /// directory" on `00001.wal`).
    #[test]
    fn a_file_an_engine_opened_and_closed_meanwhile_removed_is_read_again() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let last = crate::store::log_file::SLOTS_PER_FILE + 5;
        {
            let e = Engine::open(&root).unwrap();
            let g = e.create_group(1, 1).unwrap();
            let mut hs = HardState::default();
            (hs.term, hs.vote) = (1, 1);
            let mut next = 1;
            while next <= last {
                let batch: Vec<Entry> = (next..(next + 5_000).min(last + 1))
                    .map(|i| {
                        let mut en = Entry::default();
                        (en.index, en.term) = (i, 1);
                        en
                    })
                    .collect();
                next += batch.len() as u64;
                hs.commit = next - 1;
                g.save(&hs, &batch, &Snapshot::default()).unwrap();
            }
            e.close().unwrap();
        }
        let first_wal = root.join("groups/1/00001.wal");
        assert!(first_wal.exists());
        let mut restarted = false;
        let read = read_with_retries_with(&root, None, (Some(1), ATTEMPTS), &mut |at| {
            if at == Between::PageAndFiles && !restarted {
                restarted = true;
                let e = Engine::open(&root).unwrap();
                let g = e.group(1).unwrap();
                g.create_snapshot(last - 2, None, b"snap".to_vec()).unwrap();
                e.close().unwrap();
                assert!(!first_wal.exists(), "the snapshot left the first file");
            }
        });
        assert!(restarted);
        let read = match read {
            Ok(r) => r,
            Err(e) => panic!("the read across a restart failed: {e}"),
        };
        let g = &read.groups[&1];
        let snap = g.replay.meta.snapshot.as_ref().map_or(0, |s| s.index);
        assert_eq!(
            snap,
            last - 2,
            "the read shows the group before the restart"
        );
    }
}
