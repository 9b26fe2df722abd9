//! Read-only access to an engine root (`ROOT/engine.meta`, `ROOT/journal/`, `ROOT/groups/<id>/`),
//! for the operator tools: `raftwal inspect|verify ROOT` (every group and the shared files) and
//! `--group ID` for `inspect`, `verify`, `dump` and `snapshot save`.
//!
//! A group's directory holds its state as of its meta page (which names the journal record it
//! reflects); the journal holds what came after. Each group is read as `Engine::open` reads it
//! (its meta page, the files that page relies on, their headers; never a slot area), then the
//! journal's records after the checkpoint are replayed into it in memory, part by part, as open
//! replays them: the state shown "after replay" is the group as an opened engine would serve it,
//! and `dump` and `snapshot save` read the group that way (entries still only in the journal
//! included).
//!
//! Owns: the description of an engine root as open would find it, what counts as damage there
//! (what open refuses, journal records a default open would drop, parts that contradict the
//! groups, and every checksum `verify` reads), and riding out a live engine: the tools run beside
//! an engine holding the root's lock, so when the root is marked open and what was read is not
//! clean (a checkpoint moved on, a record was in flight, a file went), it is read again, a few
//! times, before anything is reported. Must never: take the lock, write, create, rename or
//! remove anything, map a file (files are read with `pread` into copies), or panic on any
//! content.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use raft::prelude::{Entry, EntryType};
use serde::Serialize;

use super::{ConfStateInfo, HardStateInfo, LogFileInfo, MetaCopiesInfo, SnapshotInfo};
use crate::crypto::Cipher;
use crate::engine::scan::{self, JournalScan, Part, RecordAt};
use crate::error::{Error, Result};
use crate::log_file::{self, Access, LogFile, SLOTS_PER_FILE};
use crate::meta::{self, Copies, META_FORMAT_VERSION};
use crate::proto::{EngineGroupRecord, EngineRecord, HardStateRecord, MetaRecord, SnapshotRecord};
use crate::recovery;
use crate::snap::SnapshotReader;

/// Reads of a root that is marked open and was not read clean (see the module comment).
const ATTEMPTS: usize = 3;
/// Pause between them: long enough for a record in flight or a checkpoint step to finish.
const RETRY_PAUSE: Duration = Duration::from_millis(200);

/// Whether `path` is an engine root (it holds `engine.meta`) rather than a WAL directory.
pub fn is_engine_root(path: &Path) -> bool {
    path.join(<EngineRecord as meta::PageRecord>::FILE)
        .is_file()
}

/// The ids of the groups under an engine root, ascending (directory names only: nothing is
/// read).
pub fn group_ids(root: &Path) -> Result<Vec<u64>> {
    Ok(list_groups(root)?.0)
}

/// What an engine root holds: its root record, its journal, and its groups (every group, or the
/// one the inspector was opened for).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EngineSummary {
    /// The engine root.
    pub root: PathBuf,
    /// Format version of `engine.meta`.
    pub format_version: u32,
    /// Journal records up to this sequence number are in every group's files.
    pub checkpoint_seq: u64,
    /// Set while an engine has the root open, and left set by one that did not close cleanly
    /// (the tools cannot tell which: they never take the lock).
    pub open: bool,
    /// The incarnation the next group created gets.
    pub next_incarnation: u64,
    /// The two copies of `engine.meta`.
    pub meta_copies: MetaCopiesInfo,
    /// The shared journal.
    pub journal: JournalSummary,
    /// Every group under `groups/`, ascending.
    pub group_ids: Vec<u64>,
    /// The groups reported: all of them, or the one asked for.
    pub groups: Vec<GroupSummary>,
    /// `groups/<id>.tmp` and `groups/<id>.removing`: a creation or removal cut short, which
    /// open deletes.
    pub leftover_dirs: Vec<PathBuf>,
    /// Why a default open of the root would fail, or `None` when it would succeed.
    pub open_error: Option<String>,
    /// `engine.meta` changed while the journal was read (an engine at work): the report is a
    /// moment's view, consistent, but the root has moved on since.
    pub changed_while_read: bool,
}

/// The shared journal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct JournalSummary {
    /// The journal directory.
    pub dir: PathBuf,
    /// The segment files, by id.
    pub segments: Vec<SegmentInfo>,
    /// The recycled segments (`spare-<id>.jnl`), which the journal reuses.
    pub spares: Vec<SpareInfo>,
    /// Records after the checkpoint (what open replays).
    pub records_after_checkpoint: u64,
    /// Sequence number of the first of them.
    pub first_seq: Option<u64>,
    /// Sequence number of the last of them.
    pub last_seq: Option<u64>,
    /// The bytes they take.
    pub bytes_after_checkpoint: u64,
    /// The sequence number the engine's next record gets.
    pub next_seq: u64,
    /// A record at the end of the last segment that fails its checks: a write torn by a crash
    /// (or still in flight), which a default open cuts.
    pub torn_tail: Option<String>,
    /// Valid records after the end of the journal, which a default open would drop.
    pub lost_records: Option<String>,
    /// Damage that makes open fail.
    pub damage: Option<String>,
    /// Parts for groups that are gone (removed), which replay skips.
    pub parts_for_removed_groups: u64,
}

/// One journal segment file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SegmentInfo {
    /// File name.
    pub name: String,
    /// Segment id (the number in its name).
    pub id: u64,
    /// File size, in bytes.
    pub size_bytes: u64,
    /// The first sequence number its header names (`None`: no header).
    pub first_seq: Option<u64>,
    /// Records read from it.
    pub records: u64,
    /// The last one's sequence number.
    pub last_seq: Option<u64>,
    /// Where its records end.
    pub end_offset: u64,
    /// `"live"`, `"obsolete"` (every record at or below the checkpoint: open recycles it),
    /// `"no header"` (prepared, never written: open recycles it), or `"after the end"` (after a
    /// torn end: records before it never reached the disk while it was started unflushed; open
    /// removes it).
    pub state: String,
    /// A torn record where its records end, which the next segment starts at: an earlier open
    /// cut the journal there (not damage; what follows it in this segment is never read).
    pub cut: Option<String>,
}

/// A recycled journal segment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SpareInfo {
    /// Its path.
    pub path: PathBuf,
    /// File size, in bytes.
    pub size_bytes: u64,
}

/// A group's state: as its own files hold it, or after the journal's replay.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GroupState {
    /// [`MetaInfo::RaftId`](crate::MetaInfo::RaftId).
    pub raft_id: u64,
    /// [`MetaInfo::GroupId`](crate::MetaInfo::GroupId).
    pub group_id: u64,
    /// [`MetaInfo::CheckpointIndex`](crate::MetaInfo::CheckpointIndex).
    pub checkpoint_index: u64,
    /// The hard state.
    pub hard_state: HardStateInfo,
    /// The current conf state.
    pub conf_state: ConfStateInfo,
    /// The current snapshot, if there is one.
    pub snapshot: Option<SnapshotInfo>,
    /// First index `entries()` can return.
    pub first_index: u64,
    /// Last index of the log.
    pub last_index: u64,
}

/// What the journal holds for a group beyond its files.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct GroupJournalInfo {
    /// Records after the group's meta page with a part for it (what open replays into it).
    pub records: u64,
    /// Sequence number of the first of them.
    pub first_seq: Option<u64>,
    /// Sequence number of the last of them.
    pub last_seq: Option<u64>,
    /// Entries those parts carry (overwrites included).
    pub entries: u64,
    /// Their payload bytes.
    pub payload_bytes: u64,
    /// After replay, the entries from this index on come from the journal, not the files.
    pub entries_from: Option<u64>,
    /// Index of a snapshot those parts install, if any (the last one).
    pub snapshot_installed: Option<u64>,
    /// `truncate_entries_until` in those parts (the highest index).
    pub truncated_below: Option<u64>,
    /// Parts at or below the group's meta page (already in its files), skipped by replay.
    pub parts_in_files: u64,
    /// Parts for an earlier incarnation of this group id (a removed group), skipped.
    pub parts_for_earlier_incarnation: u64,
}

/// One group of an engine root.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GroupSummary {
    /// The group's id.
    pub group_id: u64,
    /// Its directory (`groups/<id>`).
    pub dir: PathBuf,
    /// Tells this group from a removed one with the same id (`None`: its meta page is
    /// unreadable).
    pub incarnation: Option<u64>,
    /// The two copies of its `wal.meta` (`None`: unreadable).
    pub meta_copies: Option<MetaCopiesInfo>,
    /// The journal record its meta page reflects: replay applies the later ones.
    pub journal_seq: Option<u64>,
    /// The log files its meta page relies on.
    pub files: Vec<LogFileInfo>,
    /// Files open removes: obsolete ones, files made after the meta page (the journal makes
    /// them again), `*.tmp` leftovers.
    pub leftover_files: Vec<PathBuf>,
    /// As its own files hold it.
    pub in_files: Option<GroupState>,
    /// What the journal holds for it beyond its files.
    pub journal: GroupJournalInfo,
    /// As an opened engine would serve it, after the journal's replay.
    pub after_replay: Option<GroupState>,
    /// What is wrong with it: damage open refuses, or journal parts that contradict its log.
    pub damage: Option<String>,
}

/// What [`EngineInspector::verify`] checked, and what it found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EngineVerifyReport {
    /// The engine root.
    pub root: PathBuf,
    /// No damage found anywhere (`damage` is empty).
    pub ok: bool,
    /// Damage to a copy of `engine.meta` (`None`: both copies valid, or the other never
    /// written).
    pub engine_meta_damage: Option<String>,
    /// The journal's part.
    pub journal: JournalCheck,
    /// Each group's part.
    pub groups: Vec<GroupCheck>,
    /// Every damage found, each naming its file and offset.
    pub damage: Vec<String>,
}

/// The journal's part of a verify.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct JournalCheck {
    /// Live segments checked.
    pub segments_checked: u64,
    /// Records whose checksums were checked.
    pub records_checked: u64,
    /// Bytes of records checked.
    pub bytes_checked: u64,
    /// Records after the checkpoint (what open replays).
    pub records_after_checkpoint: u64,
    /// Damage found in the journal, each naming its file and offset.
    pub damage: Vec<String>,
}

/// One group's part of a verify.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct GroupCheck {
    /// The group's id.
    pub group_id: u64,
    /// No damage found in it (`damage` is empty).
    pub ok: bool,
    /// Log files checked.
    pub files_checked: u64,
    /// Entries whose slot and payload checksums were checked.
    pub entries_checked: u64,
    /// Payload bytes checked.
    pub payload_bytes_checked: u64,
    /// Snapshot data bytes checked.
    pub snapshot_bytes_checked: u64,
    /// Journal records replayed into it (their checksums are the journal's).
    pub journal_records: u64,
    /// Damage found in it, each naming its file and offset.
    pub damage: Vec<String>,
    /// The group changed while it was checked (a live engine took a snapshot, say, and removed
    /// a file the check was reading): what was found missing or different there is not damage,
    /// and the check stopped short.
    pub changed_while_checked: bool,
}

/// An engine root opened read-only.
pub struct EngineInspector {
    root: PathBuf,
    cipher: Option<Cipher>,
    read: RootRead,
    summary: EngineSummary,
}

impl EngineInspector {
    /// Opens the engine root `root` read-only (`key`: its encryption key, if it has one) and
    /// reads every group. Nothing is created, changed or locked.
    pub fn open_with_key<P: AsRef<Path>>(
        root: P,
        key: Option<[u8; 32]>,
    ) -> Result<EngineInspector> {
        Self::open_inner(root.as_ref(), key, None)
    }

    /// [`EngineInspector::open_with_key`] for one group: only group `group_id` is read and
    /// reported, and its entries and snapshot can be read ([`EngineInspector::entries`],
    /// [`EngineInspector::snapshot_reader`]) as an opened engine would serve them.
    /// `Error::UnknownGroup` when the root has no such group.
    pub fn open_group<P: AsRef<Path>>(
        root: P,
        key: Option<[u8; 32]>,
        group_id: u64,
    ) -> Result<EngineInspector> {
        Self::open_inner(root.as_ref(), key, Some(group_id))
    }

    fn open_inner(
        root: &Path,
        key: Option<[u8; 32]>,
        only: Option<u64>,
    ) -> Result<EngineInspector> {
        let cipher = key.as_ref().map(Cipher::new);
        let read = read_with_retries(root, cipher.as_ref(), only)?;
        let summary = read.summary();
        Ok(EngineInspector {
            root: root.to_path_buf(),
            cipher,
            read,
            summary,
        })
    }

    /// What the root holds.
    pub fn summary(&self) -> &EngineSummary {
        &self.summary
    }

    /// About the bytes [`EngineInspector::verify`] reports to its progress callback (for a
    /// progress bar's length): the groups' slots, their payload areas as allocated (payloads
    /// are read, not their lengths, to know how much of it they use), and their snapshots.
    pub fn verify_len(&self) -> u64 {
        self.read
            .groups
            .values()
            .filter_map(|g| g.disk.as_ref().ok())
            .map(|d| {
                let files: u64 = d
                    .files
                    .iter()
                    .map(|f| {
                        let payloads = f.len.saturating_sub(log_file::PAYLOAD_START);
                        payloads.saturating_add(f.entries * log_file::SLOT_SIZE as u64)
                    })
                    .fold(0u64, u64::saturating_add);
                files.saturating_add(d.meta.snapshot.as_ref().map_or(0, |s| s.data_len))
            })
            .fold(0u64, u64::saturating_add)
    }

    /// Checks everything: both copies of `engine.meta`, every record of every live journal
    /// segment (checksum, sequence, framing), every journal part against the group it names,
    /// and every group as `verify DIR` checks a directory (both meta copies, every slot and
    /// payload of every file up to the end its meta page records, the snapshot file to its last
    /// byte). A group's files lagging its journal is not damage. Damage does not stop the
    /// check: the report lists all of it, each naming its file and offset.
    ///
    /// When damage is found in a root marked open (a live engine may have changed a file
    /// while it was read), the root is read and checked again, a few times; the last check is
    /// the report, and the summary is that read's.
    pub fn verify(&mut self, progress: &mut dyn FnMut(u64)) -> Result<EngineVerifyReport> {
        let mut attempt = 1;
        loop {
            let report = self.verify_once(progress)?;
            let settled = report.ok && report.groups.iter().all(|g| !g.changed_while_checked);
            if settled || !self.read.record.open || attempt >= ATTEMPTS {
                return Ok(report);
            }
            attempt += 1;
            std::thread::sleep(RETRY_PAUSE);
            self.read = read_with_retries(&self.root, self.cipher.as_ref(), self.read.only)?;
            self.summary = self.read.summary();
        }
    }

    fn verify_once(&self, progress: &mut dyn FnMut(u64)) -> Result<EngineVerifyReport> {
        let r = &self.read;
        let engine_meta_damage = r
            .root_copies
            .damage(&r.root.join(<EngineRecord as meta::PageRecord>::FILE))
            .map(|e| e.to_string());
        let j = &r.journal;
        let mut journal = JournalCheck {
            segments_checked: j
                .segments
                .iter()
                .filter(|s| !s.obsolete && s.first_seq.is_some())
                .count() as u64,
            records_checked: j.records_read,
            bytes_checked: j.bytes_read,
            records_after_checkpoint: j.records_after_checkpoint,
            damage: Vec::new(),
        };
        // A torn record that later records follow is named by the loss it causes.
        for e in [j.damage.as_ref(), j.lost.as_ref().or(j.torn.as_ref())]
            .into_iter()
            .flatten()
        {
            journal.damage.push(e.to_string());
        }
        if let Some(e) = &r.part_damage {
            journal.damage.push(e.to_string());
        }
        let mut groups = Vec::new();
        for (&id, g) in &r.groups {
            groups.push(self.verify_group(id, g, progress)?);
        }
        let mut damage: Vec<String> = engine_meta_damage.iter().cloned().collect();
        damage.extend(journal.damage.iter().cloned());
        for g in &groups {
            damage.extend(
                g.damage
                    .iter()
                    .map(|d| format!("group {}: {d}", g.group_id)),
            );
        }
        Ok(EngineVerifyReport {
            root: r.root.clone(),
            ok: damage.is_empty(),
            engine_meta_damage,
            journal,
            groups,
            damage,
        })
    }

    fn verify_group(
        &self,
        id: u64,
        g: &GroupRead,
        progress: &mut dyn FnMut(u64),
    ) -> Result<GroupCheck> {
        let mut c = GroupCheck {
            group_id: id,
            ..GroupCheck::default()
        };
        let disk = match &g.disk {
            Ok(d) => d,
            Err(e) => {
                c.damage.push(e.to_string());
                return Ok(c);
            }
        };
        c.journal_records = g.replay.info.records;
        // A file gone since the meta page was read is damage only if the group has not moved on.
        let found = |e: Error| match e {
            e if is_damage(&e) => Ok(e),
            Error::Io { ref source, .. } if source.kind() == std::io::ErrorKind::NotFound => Ok(e),
            e => Err(e),
        };
        for f in &disk.files {
            let file = match LogFile::open(&f.path, f.id, Access::ReadOnly, self.cipher.as_ref()) {
                Ok(file) => file,
                Err(e) => {
                    c.damage.push(found(e)?.to_string());
                    continue;
                }
            };
            for k in 0..f.entries as u32 {
                match file.verify_slot(k) {
                    Ok(s) => {
                        let bytes = s.payload_end - s.slot.offset;
                        c.entries_checked += 1;
                        c.payload_bytes_checked += bytes;
                        progress(bytes + log_file::SLOT_SIZE as u64);
                    }
                    Err(e) => {
                        c.damage.push(found(e)?.to_string());
                        break;
                    }
                }
            }
            c.files_checked += 1;
        }
        if let Some(e) = disk.copies.damage(&disk.dir.join(meta::META_FILE)) {
            c.damage.push(e.to_string());
        }
        if let Some(e) = &g.replay.damage {
            c.damage.push(e.to_string());
        }
        if let Some(s) = g.replay.meta.snapshot.as_ref().filter(|s| s.data_len > 0) {
            match read_snapshot(&disk.dir, s, self.cipher.as_ref(), progress) {
                Ok(n) => c.snapshot_bytes_checked = n,
                Err(e) => c.damage.push(found(e)?.to_string()),
            }
        }
        if !c.damage.is_empty() && self.read.record.open && moved_on(disk, self.cipher.as_ref()) {
            c.damage.clear();
            c.changed_while_checked = true;
        }
        c.ok = c.damage.is_empty();
        Ok(c)
    }

    /// The group the inspector was opened for ([`EngineInspector::open_group`]).
    fn only(&self) -> Result<(&GroupRead, &GroupDisk)> {
        let g = self
            .read
            .only
            .and_then(|id| self.read.groups.get(&id))
            .ok_or_else(|| {
                Error::InvalidArgument(
                    "entries and snapshots are read from an inspector opened for one group"
                        .to_string(),
                )
            })?;
        match &g.disk {
            Ok(d) => Ok((g, d)),
            Err(e) => Err(same_damage(e)),
        }
    }

    /// The first and last index of the group the inspector was opened for, after replay.
    pub fn first_last(&self) -> Result<(u64, u64)> {
        let (g, _) = self.only()?;
        if let Some(e) = &g.replay.damage {
            return Err(same_damage(e));
        }
        Ok((g.replay.first_index(), g.replay.last_index()))
    }

    /// Entries `[lo, hi)` of the group the inspector was opened for, as an opened engine would
    /// serve them: from the group's files below what the journal replaced, then from the
    /// journal. Checksums are verified (the files' slots and payloads; the journal's records
    /// were checked when read). Outside `[first_index, last_index]` is an error (`Compacted`,
    /// `Unavailable`).
    pub fn entries(&self, lo: u64, hi: u64) -> Result<Vec<Entry>> {
        let (g, disk) = self.only()?;
        let (first, last) = self.first_last()?;
        let rp = &g.replay;
        if lo < first {
            return Err(Error::Compacted {
                index: lo,
                first_index: first,
            });
        }
        if hi > last.saturating_add(1) || lo > hi {
            return Err(Error::Unavailable {
                index: hi.saturating_sub(1),
                last_index: last,
            });
        }
        let mut out = Vec::with_capacity((hi - lo).min(1 << 16) as usize);
        let split = rp.files_upper().saturating_add(1).clamp(lo, hi);
        if lo < split {
            read_files(disk, &g.files, lo, split, last, &mut out)?;
            for e in out.iter_mut() {
                if e.index < rp.truncated_below && e.get_entry_type() == EntryType::EntryNormal {
                    e.data = Bytes::new();
                }
            }
        }
        if split < hi {
            let kept = rp.kept.as_deref().unwrap_or(&[]);
            let range = split
                .checked_sub(rp.tail_start)
                .map(|from| from as usize..(hi - rp.tail_start) as usize);
            match range.and_then(|r| kept.get(r)) {
                Some(es) => out.extend_from_slice(es),
                None => {
                    return Err(Error::Unavailable {
                        index: split,
                        last_index: last,
                    })
                }
            }
        }
        Ok(out)
    }

    /// The current snapshot of the group the inspector was opened for (after replay), as a
    /// verified stream. `Error::NoSnapshot` when it has none.
    pub fn snapshot_reader(&self) -> Result<SnapshotReader> {
        let (g, disk) = self.only()?;
        match g.replay.meta.snapshot.as_ref().filter(|s| s.index > 0) {
            Some(s) => SnapshotReader::open(&disk.dir, s, self.cipher.as_ref()),
            None => Err(Error::NoSnapshot {
                path: disk.dir.clone(),
            }),
        }
    }
}

/// Reads the root, again while it is marked open and what was read is not clean (a live engine
/// moves on under the reader), at most [`ATTEMPTS`] times; the last read is what is reported.
fn read_with_retries(root: &Path, cipher: Option<&Cipher>, only: Option<u64>) -> Result<RootRead> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let last = attempt >= ATTEMPTS;
        match read_root(root, cipher, only) {
            Ok(r) if r.clean() || !r.record.open || last => return Ok(r),
            Ok(_) => {}
            Err(e) if last || !transient(&e) || !marked_open(root) => return Err(e),
            Err(_) => {}
        }
        std::thread::sleep(RETRY_PAUSE);
    }
}

/// Whether a group's meta page is no longer the one `disk` was read from (or is gone): a live
/// engine changed the group under the reader.
fn moved_on(disk: &GroupDisk, cipher: Option<&Cipher>) -> bool {
    match meta::read_only::<MetaRecord>(&disk.dir, cipher) {
        Ok((m, copies)) => m != disk.meta || copies.seq != disk.copies.seq,
        Err(_) => true,
    }
}

/// An error a live engine can cause by changing files under the reader.
fn transient(e: &Error) -> bool {
    matches!(
        e,
        Error::Io { .. } | Error::Corrupt { .. } | Error::MissingFile { .. }
    )
}

fn marked_open(root: &Path) -> bool {
    meta::read_only::<EngineRecord>(root, None).is_ok_and(|(r, _)| r.open)
}

/// Damage (exit code 1 for the tools), as opposed to an error that stops the reading.
fn is_damage(e: &Error) -> bool {
    matches!(e, Error::Corrupt { .. } | Error::MissingFile { .. })
}

/// A new error describing the same damage (errors are not `Clone`).
fn same_damage(e: &Error) -> Error {
    super::same_damage(e)
}

/// One read of the root.
struct RootRead {
    root: PathBuf,
    record: EngineRecord,
    root_copies: Copies,
    group_ids: Vec<u64>,
    leftover_dirs: Vec<PathBuf>,
    only: Option<u64>,
    groups: BTreeMap<u64, GroupRead>,
    journal: JournalScan,
    /// A part that names no possible group (an incarnation the root never gave out).
    part_damage: Option<Error>,
    parts_for_removed_groups: u64,
    /// `engine.meta` changed while the journal was read (a checkpoint ran, or a group was
    /// created): harmless unless the journal looked damaged, which is read again.
    changed: bool,
}

/// One group, as read.
struct GroupRead {
    dir: PathBuf,
    /// Its meta page and the files it relies on; an error when open would refuse the group.
    disk: Result<GroupDisk>,
    /// Its log files, copied, when entries are to be read (one group only).
    files: Vec<LogFile>,
    replay: Replay,
}

/// A group's directory as its meta page describes it.
struct GroupDisk {
    dir: PathBuf,
    meta: MetaRecord,
    copies: Copies,
    eng: EngineGroupRecord,
    files: Vec<FileAt>,
    /// The files' last index (the meta page's, at least the first file's base - 1).
    wal_last: u64,
    leftovers: Vec<PathBuf>,
}

/// One log file a group's meta page relies on.
struct FileAt {
    id: u64,
    path: PathBuf,
    base: u64,
    len: u64,
    /// Slots holding the log, from slot 0.
    entries: u64,
}

impl RootRead {
    /// Nothing to read again for: no damage, no torn record, no change under the reader.
    fn clean(&self) -> bool {
        let j = &self.journal;
        j.damage.is_none()
            && j.torn.is_none()
            && j.lost.is_none()
            && self.part_damage.is_none()
            && self.groups.values().all(|g| {
                g.replay.damage.is_none()
                    && g.disk
                        .as_ref()
                        .is_ok_and(|d| !matches!(d.copies.other, meta::OtherCopy::Damaged { .. }))
            })
    }

    fn summary(&self) -> EngineSummary {
        let j = &self.journal;
        let segments = j
            .segments
            .iter()
            .map(|s| SegmentInfo {
                name: s
                    .path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                id: s.id,
                size_bytes: s.len,
                first_seq: s.first_seq,
                records: s.records,
                last_seq: s.last_seq,
                end_offset: s.end,
                state: match (s.first_seq, s.obsolete) {
                    (None, _) => "no header",
                    (Some(_), true) => "obsolete",
                    (Some(_), false) if s.after_end => "after the end",
                    (Some(_), false) => "live",
                }
                .to_string(),
                cut: s.cut.clone(),
            })
            .collect();
        let after = j.records_after_checkpoint;
        let first_seq = (after > 0).then(|| j.next_seq - after);
        let journal = JournalSummary {
            dir: j.dir.clone(),
            segments,
            spares: j
                .spares
                .iter()
                .map(|(p, n)| SpareInfo {
                    path: p.clone(),
                    size_bytes: *n,
                })
                .collect(),
            records_after_checkpoint: after,
            first_seq,
            last_seq: first_seq.map(|_| j.next_seq - 1),
            bytes_after_checkpoint: j.bytes_after_checkpoint,
            next_seq: j.next_seq,
            torn_tail: j.torn.as_ref().map(Error::to_string),
            lost_records: j.lost.as_ref().map(Error::to_string),
            damage: j
                .damage
                .as_ref()
                .or(self.part_damage.as_ref())
                .map(Error::to_string),
            parts_for_removed_groups: self.parts_for_removed_groups,
        };
        let groups: Vec<GroupSummary> = self.groups.iter().map(|(&id, g)| g.summary(id)).collect();
        let open_error = j
            .damage
            .as_ref()
            .map(|e| format!("journal: {e}"))
            .or_else(|| {
                self.groups
                    .iter()
                    .find_map(|(id, g)| g.disk.as_ref().err().map(|e| format!("group {id}: {e}")))
            });
        EngineSummary {
            root: self.root.clone(),
            format_version: META_FORMAT_VERSION,
            checkpoint_seq: self.record.checkpoint_seq,
            open: self.record.open,
            next_incarnation: self.record.next_incarnation,
            meta_copies: MetaCopiesInfo::from(&self.root_copies),
            journal,
            group_ids: self.group_ids.clone(),
            groups,
            leftover_dirs: self.leftover_dirs.clone(),
            open_error,
            changed_while_read: self.changed,
        }
    }
}

impl GroupRead {
    fn summary(&self, id: u64) -> GroupSummary {
        let damage = match (&self.disk, &self.replay.damage) {
            (Err(e), _) | (Ok(_), Some(e)) => Some(e.to_string()),
            (Ok(_), None) => None,
        };
        let Ok(d) = &self.disk else {
            return GroupSummary {
                group_id: id,
                dir: self.dir.clone(),
                incarnation: None,
                meta_copies: None,
                journal_seq: None,
                files: Vec::new(),
                leftover_files: Vec::new(),
                in_files: None,
                journal: self.replay.info.clone(),
                after_replay: None,
                damage,
            };
        };
        let files = d
            .files
            .iter()
            .map(|f| LogFileInfo {
                name: log_file::file_name(f.id),
                id: f.id,
                base_index: f.base,
                entries: f.entries,
                last_index: f.base + f.entries - 1,
                size_bytes: f.len,
            })
            .collect();
        let snap_index = d.meta.snapshot.as_ref().map_or(0, |s| s.index);
        let mut journal = self.replay.info.clone();
        journal.entries_from = (self.replay.tail_len > 0).then_some(self.replay.tail_start);
        GroupSummary {
            group_id: id,
            dir: self.dir.clone(),
            incarnation: Some(d.eng.incarnation),
            meta_copies: Some(MetaCopiesInfo::from(&d.copies)),
            journal_seq: Some(d.eng.journal_seq),
            files,
            leftover_files: d.leftovers.clone(),
            in_files: Some(state(&d.dir, &d.meta, d.wal_last.max(snap_index))),
            journal,
            after_replay: Some(state(&d.dir, &self.replay.meta, self.replay.last_index())),
            damage,
        }
    }
}

/// A group's state from its meta record and last index.
fn state(dir: &Path, m: &MetaRecord, last_index: u64) -> GroupState {
    let snap = m.snapshot.as_ref().filter(|s| s.index > 0);
    GroupState {
        raft_id: m.raft_id,
        group_id: m.group_id,
        checkpoint_index: m.checkpoint_index,
        hard_state: m
            .hard_state
            .as_ref()
            .map(HardStateInfo::from)
            .unwrap_or_default(),
        conf_state: m
            .conf_state
            .as_ref()
            .map(ConfStateInfo::from)
            .unwrap_or_default(),
        snapshot: snap.map(|s| SnapshotInfo::of(dir, s)),
        first_index: snap.map_or(0, |s| s.index) + 1,
        last_index,
    }
}

/// The groups under `root/groups` (canonical names, ascending) and the leftovers of creations
/// and removals cut short.
fn list_groups(root: &Path) -> Result<(Vec<u64>, Vec<PathBuf>)> {
    let dir = root.join(scan::GROUPS_DIR);
    let mut ids = Vec::new();
    let mut leftovers = Vec::new();
    let listing = match fs::read_dir(&dir) {
        Ok(l) => l,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((ids, leftovers)),
        Err(e) => return Err(Error::io("read directory", &dir, e)),
    };
    for ent in listing {
        let ent = ent.map_err(|e| Error::io("read directory", &dir, e))?;
        if !ent.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            continue;
        }
        let Some(name) = ent.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if let Some(id) = scan::parse_group_name(&name) {
            ids.push(id);
        } else if name
            .strip_suffix(".tmp")
            .or_else(|| name.strip_suffix(".removing"))
            .and_then(scan::parse_group_name)
            .is_some()
        {
            leftovers.push(ent.path());
        }
    }
    ids.sort_unstable();
    leftovers.sort();
    Ok((ids, leftovers))
}

/// A journal record after the checkpoint, its parts decoded.
struct Journaled {
    seq: u64,
    path: PathBuf,
    offset: u64,
    parts: Vec<Part>,
}

/// Reads the root once: `engine.meta`, the journal after its checkpoint, `engine.meta` again,
/// then the groups, into which the journal's records are replayed.
///
/// The order makes a live engine's checkpoints harmless: the journal is read right after the
/// checkpoint it starts from (a checkpoint that trims the journal meanwhile shows as records
/// missing, and the root is read again), and the groups after it. A group whose meta page is
/// newer than the records read (a checkpoint since) skips them; a record read is never trimmed
/// before the meta pages reflecting it are durable, so none is missed.
fn read_root(root: &Path, cipher: Option<&Cipher>, only: Option<u64>) -> Result<RootRead> {
    let (record, root_copies) = meta::read_only::<EngineRecord>(root, None)?;
    let mut records = Vec::new();
    let journal = scan::scan(
        &root.join(scan::JOURNAL_DIR),
        record.checkpoint_seq,
        cipher,
        &mut |rec: RecordAt<'_>| {
            let parts = scan::decode_parts(&rec.body, rec.seq).map_err(|e| {
                let reason = match e {
                    Error::InvalidArgument(m) => m,
                    other => other.to_string(),
                };
                Error::corrupt(rec.path, rec.offset, reason)
            })?;
            records.push(Journaled {
                seq: rec.seq,
                path: rec.path.to_path_buf(),
                offset: rec.offset,
                parts,
            });
            Ok(())
        },
    )?;
    // Groups created while the journal was read have incarnations the first read did not know.
    let (changed, next_incarnation) = match meta::read_only::<EngineRecord>(root, None) {
        Ok((after, copies)) => (
            after != record || copies.seq != root_copies.seq,
            after.next_incarnation.max(record.next_incarnation),
        ),
        Err(_) => (true, record.next_incarnation),
    };

    let (group_ids, leftover_dirs) = list_groups(root)?;
    if let Some(id) = only.filter(|id| !group_ids.contains(id)) {
        return Err(Error::UnknownGroup { group_id: id });
    }
    let mut groups = BTreeMap::new();
    for &id in group_ids
        .iter()
        .filter(|&&id| only.is_none() || only == Some(id))
    {
        let dir = scan::group_dir(root, id);
        let disk = match read_group(&dir, id, cipher, record.checkpoint_seq) {
            Ok(d) => Ok(d),
            Err(e) if is_damage(&e) => Err(e),
            Err(e) => return Err(e),
        };
        let files = match (&disk, only) {
            (Ok(d), Some(_)) => d
                .files
                .iter()
                .map(|f| LogFile::open(&f.path, f.id, Access::ReadOnly, cipher))
                .collect::<Result<Vec<_>>>()?,
            _ => Vec::new(),
        };
        let replay = match &disk {
            Ok(d) => Replay::new(d, only.is_some()),
            Err(_) => Replay::default(),
        };
        groups.insert(
            id,
            GroupRead {
                dir,
                disk,
                files,
                replay,
            },
        );
    }

    let mut part_damage = None;
    let mut removed = 0u64;
    for mut rec in records {
        for part in std::mem::take(&mut rec.parts) {
            if part.incarnation == 0 || part.incarnation >= next_incarnation.max(1) {
                if part_damage.is_none() {
                    part_damage = Some(Error::corrupt(
                        &rec.path,
                        rec.offset,
                        format!(
                            "journal record {} holds a part for group {} of incarnation {}, which the root never gave out (its next incarnation is {next_incarnation})",
                            rec.seq, part.group_id, part.incarnation
                        ),
                    ));
                }
                continue;
            }
            match groups.get_mut(&part.group_id) {
                Some(g) => g.replay.apply(&rec, part),
                None if !group_ids.contains(&part.group_id) => removed += 1,
                None => {}
            }
        }
    }
    // A group read from one meta copy while the other is damaged: open refuses it when the
    // snapshot after replay is not the newest the group made (as open decides).
    for g in groups.values_mut() {
        let refused = match &g.disk {
            Ok(d) => scan::check_fallback_snapshot_files(
                &d.dir,
                &d.copies,
                g.replay.meta.snapshot.as_ref(),
            )
            .err(),
            Err(_) => None,
        };
        if let Some(e) = refused {
            g.disk = Err(e);
        }
    }
    Ok(RootRead {
        root: root.to_path_buf(),
        record,
        root_copies,
        group_ids,
        leftover_dirs,
        only,
        groups,
        journal,
        part_damage,
        parts_for_removed_groups: removed,
        changed,
    })
}

/// Reads a group's directory as `Engine::open` does: its meta page (a copy in use while the
/// other is damaged checked against the checkpoint, `checkpoint_seq`), and the files the page
/// relies on, by their headers (no slot area is read). Damage open refuses is an error
/// (`Corrupt`, `MissingFile`), as are I/O errors and a key that does not fit.
fn read_group(
    dir: &Path,
    id: u64,
    cipher: Option<&Cipher>,
    checkpoint_seq: u64,
) -> Result<GroupDisk> {
    let meta_path = dir.join(meta::META_FILE);
    let (meta, copies) = match meta::read_only::<MetaRecord>(dir, cipher) {
        Err(Error::Io { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound && dir.is_dir() =>
        {
            return Err(Error::MissingFile {
                path: meta_path,
                reason: format!("group {id}'s directory has no meta page"),
            })
        }
        r => r?,
    };
    recovery::check_meta_bounds(dir, &meta)?;
    let Some(eng) = meta.engine else {
        return Err(Error::corrupt(
            &meta_path,
            0,
            "the meta page of an engine group has no engine record",
        ));
    };
    scan::check_meta_fallback(&meta_path, &copies, &eng, checkpoint_seq)?;
    if meta.group_id != id {
        return Err(Error::corrupt(
            &meta_path,
            0,
            format!(
                "the meta page names group {}, its directory {id}",
                meta.group_id
            ),
        ));
    }
    if eng.last_index > log_file::MAX_INDEX || eng.last_file_id > log_file::MAX_INDEX {
        return Err(Error::corrupt(
            &meta_path,
            0,
            format!(
                "the meta page's engine record holds an index past {}: last index {}, last file {}",
                log_file::MAX_INDEX,
                eng.last_index,
                eng.last_file_id
            ),
        ));
    }
    let (files, wal_last, leftovers) =
        group_files(dir, &meta_path, &meta, &eng, cipher).map_err(|e| copies.explain(e))?;
    Ok(GroupDisk {
        dir: dir.to_path_buf(),
        meta,
        copies,
        eng,
        files,
        wal_last,
        leftovers,
    })
}

/// The files a group's meta page relies on (by their headers), its files' last index, and the
/// files open removes.
fn group_files(
    dir: &Path,
    meta_path: &Path,
    meta: &MetaRecord,
    eng: &EngineGroupRecord,
    cipher: Option<&Cipher>,
) -> Result<(Vec<FileAt>, u64, Vec<PathBuf>)> {
    let listing = recovery::list_dir(dir)?;
    let first_file_id = meta.first_file_id.max(1);
    let tail_id = eng.last_file_id;
    let mut leftovers = listing.leftovers;
    let mut ids = Vec::new();
    for fid in listing.ids {
        if fid < first_file_id || fid > tail_id {
            leftovers.push(dir.join(log_file::file_name(fid)));
        } else {
            ids.push(fid);
        }
    }
    let last = eng.last_index;
    let snap_index = meta.snapshot.as_ref().map_or(0, |s| s.index);
    let mut files: Vec<FileAt> = Vec::new();
    let mut wal_last = 0;
    if let Some(&first_id) = ids.first() {
        for want in first_id..=tail_id {
            let path = dir.join(log_file::file_name(want));
            if !ids.contains(&want) {
                return Err(Error::MissingFile {
                    path,
                    reason: format!(
                        "the meta page says the log ends at index {last} in {}",
                        log_file::file_name(tail_id)
                    ),
                });
            }
            let Some((base, len)) = log_file::peek_base(&path, want, cipher.is_some())? else {
                return Err(Error::corrupt(
                    &path,
                    log_file::HEADER_OFFSET as u64,
                    "no file header, but the meta page relies on this file",
                ));
            };
            if let Some(first) = files.first() {
                let expected = first.base + SLOTS_PER_FILE * (want - first_id);
                if base != expected {
                    return Err(Error::corrupt(
                        &path,
                        log_file::HEADER_OFFSET as u64,
                        format!("file starts at index {base} but must start at {expected}"),
                    ));
                }
            }
            files.push(FileAt {
                id: want,
                path,
                base,
                len,
                entries: SLOTS_PER_FILE,
            });
        }
        let base = files.first().map_or(1, |f| f.base);
        if last > snap_index && base > snap_index + 1 {
            return Err(Error::MissingFile {
                path: dir.join(log_file::file_name(first_id.saturating_sub(1).max(1))),
                reason: format!(
                    "the snapshot ends at index {snap_index} but the first log file, {}, starts at index {base}",
                    log_file::file_name(first_id)
                ),
            });
        }
        wal_last = last.max(base - 1);
        if let Some(tail) = files.last_mut() {
            let held = (wal_last + 1).saturating_sub(tail.base);
            if held > SLOTS_PER_FILE {
                return Err(Error::corrupt(
                    meta_path,
                    0,
                    format!(
                        "the meta page says the log ends at index {last}, past the last slot of {} (index {})",
                        log_file::file_name(tail.id),
                        tail.base + SLOTS_PER_FILE - 1
                    ),
                ));
            }
            tail.entries = held;
        }
    } else if tail_id >= first_file_id && last > snap_index {
        return Err(Error::MissingFile {
            path: dir.join(log_file::file_name(tail_id)),
            reason: format!("the meta page says the log ends at index {last} in it"),
        });
    }
    Ok((files, wal_last, leftovers))
}

/// Reads a snapshot file to its last byte (checking its checksum), reporting bytes as read.
fn read_snapshot(
    dir: &Path,
    s: &SnapshotRecord,
    cipher: Option<&Cipher>,
    progress: &mut dyn FnMut(u64),
) -> Result<u64> {
    let mut reader = SnapshotReader::open(dir, s, cipher)?;
    let mut buf = vec![0u8; 256 << 10];
    let mut total = 0;
    loop {
        let n = std::io::Read::read(&mut reader, &mut buf).map_err(|e| reader.error_from(e))?;
        if n == 0 {
            return Ok(total);
        }
        total += n as u64;
        progress(n as u64);
    }
}

/// Entries `[lo, hi)` from a group's files (`last`: the log's last index, for errors).
fn read_files(
    disk: &GroupDisk,
    files: &[LogFile],
    lo: u64,
    hi: u64,
    last: u64,
    out: &mut Vec<Entry>,
) -> Result<()> {
    let unavailable = |index| Error::Unavailable {
        index,
        last_index: last,
    };
    let Some(first) = files.first().filter(|f| lo >= f.base()) else {
        return Err(unavailable(lo));
    };
    if hi > disk.wal_last + 1 {
        return Err(unavailable(hi - 1));
    }
    let mut index = lo;
    while index < hi {
        let rel = index - first.base();
        let (pos, k) = (
            (rel / SLOTS_PER_FILE) as usize,
            (rel % SLOTS_PER_FILE) as u32,
        );
        let in_file = (SLOTS_PER_FILE - k as u64).min(hi - index);
        let f = files.get(pos).ok_or_else(|| unavailable(index))?;
        f.read_entries(k, k + in_file as u32, out, |_| true)?;
        index += in_file;
    }
    Ok(())
}

/// A group's log replayed in memory from its meta page on, as `Engine::open` replays the
/// journal into it: entries past the files (an overwrite cuts what follows, as the engine's
/// tail does), the meta changes, installed snapshots, `truncate_entries_until`.
#[derive(Default)]
struct Replay {
    incarnation: u64,
    /// The journal record the group's meta page reflects.
    durable_seq: u64,
    meta: MetaRecord,
    /// The files' last index (0 once a snapshot install dropped them).
    files_last: u64,
    /// The entries past the files: `[tail_start, tail_start + tail_len)`.
    tail_start: u64,
    tail_len: u64,
    /// Those entries, when they are to be read (one group).
    kept: Option<Vec<Entry>>,
    /// Normal entries below this index read back with empty data.
    truncated_below: u64,
    info: GroupJournalInfo,
    /// A part that contradicts the log (replay stops there for this group).
    damage: Option<Error>,
}

impl Replay {
    fn new(d: &GroupDisk, keep: bool) -> Replay {
        Replay {
            incarnation: d.eng.incarnation,
            durable_seq: d.eng.journal_seq,
            meta: d.meta.clone(),
            files_last: d.wal_last,
            kept: keep.then(Vec::new),
            ..Replay::default()
        }
    }

    fn snapshot_index(&self) -> u64 {
        self.meta.snapshot.as_ref().map_or(0, |s| s.index)
    }

    fn first_index(&self) -> u64 {
        self.snapshot_index().saturating_add(1)
    }

    fn last_index(&self) -> u64 {
        if self.tail_len > 0 {
            self.tail_start + self.tail_len - 1
        } else {
            self.files_last.max(self.snapshot_index())
        }
    }

    /// The last index read from the files.
    fn files_upper(&self) -> u64 {
        if self.tail_len > 0 {
            self.files_last.min(self.tail_start - 1)
        } else {
            self.files_last
        }
    }

    /// Applies a part of record `rec` (its incarnation is one the root gave out).
    fn apply(&mut self, rec: &Journaled, part: Part) {
        if part.incarnation > self.incarnation {
            if self.damage.is_none() {
                self.damage = Some(Error::corrupt(
                    &rec.path,
                    rec.offset,
                    format!(
                        "journal record {} holds a part for incarnation {} of group {}, but the group's directory holds incarnation {}, an older one",
                        rec.seq, part.incarnation, part.group_id, self.incarnation
                    ),
                ));
            }
            return;
        }
        if part.incarnation < self.incarnation {
            self.info.parts_for_earlier_incarnation += 1;
            return;
        }
        if rec.seq <= self.durable_seq {
            self.info.parts_in_files += 1;
            return;
        }
        if self.damage.is_some() {
            return;
        }
        if let Err(reason) = self.check(&part) {
            self.damage = Some(Error::corrupt(
                &rec.path,
                rec.offset,
                format!(
                    "journal record {}: group {}'s part {reason}",
                    rec.seq, part.group_id
                ),
            ));
            return;
        }
        let info = &mut self.info;
        if info.last_seq != Some(rec.seq) {
            info.records += 1;
            info.first_seq.get_or_insert(rec.seq);
            info.last_seq = Some(rec.seq);
        }
        if let Some(s) = part.snapshot {
            info.snapshot_installed = Some(s.index);
            // The snapshot replaces the log: the files' entries and the tail go.
            self.meta.conf_state = s.conf_state.clone();
            self.meta.snapshot = Some(s);
            self.files_last = 0;
            self.tail_len = 0;
            if let Some(k) = &mut self.kept {
                k.clear();
            }
        }
        if let Some(e0) = part.entries.first() {
            let i = e0.index;
            let n = part.entries.len() as u64;
            self.info.entries += n;
            self.info.payload_bytes += part
                .entries
                .iter()
                .map(|e| (e.data.len() + e.context.len()) as u64)
                .sum::<u64>();
            if self.tail_len > 0 && i >= self.tail_start {
                self.tail_len = i - self.tail_start;
            } else {
                self.tail_start = i;
                self.tail_len = 0;
            }
            self.tail_len += n;
            if let Some(k) = &mut self.kept {
                k.truncate((i.saturating_sub(self.tail_start)) as usize);
                // Copies: the segment's buffer can go once it is scanned.
                k.extend(part.entries.iter().map(|e| Entry {
                    data: Bytes::copy_from_slice(&e.data),
                    context: Bytes::copy_from_slice(&e.context),
                    ..e.clone()
                }));
            }
        }
        if let Some(hs) = part.hard_state.filter(|hs| *hs != Default::default()) {
            self.meta.hard_state = Some(HardStateRecord::from(&hs));
        }
        if let Some(cs) = part.conf_state {
            self.meta.conf_state = Some(cs);
        }
        if let Some([raft_id, group_id, checkpoint]) = part.ints {
            self.meta.raft_id = raft_id;
            self.meta.group_id = group_id;
            self.meta.checkpoint_index = checkpoint;
        }
        if let Some(index) = part.truncate {
            self.truncated_below = self.truncated_below.max(index);
            self.info.truncated_below = Some(self.truncated_below);
            if let Some(k) = &mut self.kept {
                for e in k.iter_mut() {
                    if e.index < index && e.get_entry_type() == EntryType::EntryNormal {
                        e.data = Bytes::new();
                    }
                }
            }
        }
    }

    /// What open's replay takes on trust and the commit checked: the part's entries are
    /// contiguous, start after the snapshot, and leave no gap after the log.
    fn check(&self, part: &Part) -> std::result::Result<(), String> {
        if let Some(s) = part
            .snapshot
            .as_ref()
            .filter(|s| s.index > log_file::MAX_INDEX)
        {
            return Err(format!(
                "installs a snapshot at index {}, past {}",
                s.index,
                log_file::MAX_INDEX
            ));
        }
        let snap = part
            .snapshot
            .as_ref()
            .map_or(self.snapshot_index(), |s| s.index);
        let last = if part.snapshot.is_some() {
            snap
        } else {
            self.last_index()
        };
        let Some(e0) = part.entries.first() else {
            return Ok(());
        };
        if e0.index <= snap || e0.index > last.saturating_add(1) || e0.index > log_file::MAX_INDEX {
            return Err(format!(
                "has entries from index {}, but the group's log holds {}..={last} there (snapshot {snap}): {}",
                e0.index,
                snap.saturating_add(1),
                if e0.index <= snap { "below its first index" } else { "a gap" }
            ));
        }
        for (k, e) in part.entries.iter().enumerate() {
            if e.index != e0.index + k as u64 {
                return Err(format!(
                    "has entry {} where index {} belongs: its entries are not contiguous",
                    e.index,
                    e0.index + k as u64
                ));
            }
        }
        Ok(())
    }
}
