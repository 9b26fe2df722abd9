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
use super::root::{read_root, RootRead};
use crate::error::{Error, Result};
use crate::proto::EngineRecord;
use crate::store::meta;
use crate::sys::crypto::Cipher;

/// Reads of a root that is marked open and was not read clean (see the module comment).
pub(super) const ATTEMPTS: usize = 3;
/// Pause between them: long enough for a record in flight or a checkpoint step to finish.
pub(super) const RETRY_PAUSE: Duration = Duration::from_millis(200);

/// Reads the root, again while it is marked open and what was read is not clean (a live engine
/// moves on under the reader), at most `attempts` times ([`ATTEMPTS`] but in tests); the last
/// read is what is reported.
pub(super) fn read_with_retries(
    root: &Path,
    cipher: Option<&Cipher>,
    only: Option<u64>,
    attempts: usize,
) -> Result<RootRead> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let last = attempt >= attempts;
        match read_root(root, cipher, only) {
            Ok(r) if r.clean() || !live(root, cipher, &r) || last => return Ok(r),
            Ok(_) => {}
            Err(e) if last || !transient(&e) || !marked_open(root, cipher) => return Err(e),
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

fn marked_open(root: &Path, cipher: Option<&Cipher>) -> bool {
    meta::read_only::<EngineRecord>(root, cipher).is_ok_and(|(r, _)| r.open)
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
            && !self.journal_moved
            && self.groups.values().all(|g| {
                g.replay.damage.is_none()
                    && g.cleared_damage.is_none()
                    && g.disk
                        .as_ref()
                        .is_ok_and(|d| !matches!(d.copies.other, meta::OtherCopy::Damaged { .. }))
            })
    }
}
