//! Read-only access to a WAL directory, for operator tools (`raftwal inspect`, `verify`, `dump`,
//! `snapshot save`).
//!
//! Owns: opening a directory without the lock and without changing a byte (files opened
//! read-only, nothing created, removed or repaired), a summary of what is there, a full check of
//! every checksum (and, with the key, of every seal), and reads of entries and of the snapshot.
//! Must never: write, create, rename or remove anything; it describes damage instead (the tail's
//! damage in `Summary::tail_damage`).
//!
//! It reads the directory as open would in `TolerateTailCorruption` mode, so a damaged tail is
//! reported rather than refused; anything open would refuse in every mode is an error here too.
//!
//! An engine root (`raftwal::Engine`) is read by [`engine::EngineInspector`], with the same rules.
//!
//! The reports serialize (for `--json`) with their paths shown lossily: U+FFFD for what is not
//! UTF-8, so that any directory's report serializes.

pub mod engine;

use std::path::{Path, PathBuf};

use raft::prelude::{ConfState, Entry, HardState};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::options::RecoveryMode;
use crate::proto::{ConfStateRecord, MetaRecord};
use crate::store::log_file::{self, LogFile, SLOTS_PER_FILE};
use crate::store::meta::{self, Copies, OtherCopy, META_FILE, META_FORMAT_VERSION};
use crate::store::recovery;
use crate::store::snap::{self, SnapshotReader};
use crate::store::wal;
use crate::sys::crypto::Cipher;

/// A conf state, as tools print it (and as backup archives store it).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfStateInfo {
    /// Voters (of the incoming configuration, in a joint one).
    pub voters: Vec<u64>,
    /// Learners.
    pub learners: Vec<u64>,
    /// Voters of the outgoing configuration (empty unless joint).
    pub voters_outgoing: Vec<u64>,
    /// Voters of the outgoing configuration that become learners on leaving the joint one.
    pub learners_next: Vec<u64>,
    /// Whether raft leaves the joint configuration on its own.
    pub auto_leave: bool,
}

impl From<&ConfStateRecord> for ConfStateInfo {
    fn from(c: &ConfStateRecord) -> Self {
        ConfStateInfo {
            voters: c.voters.clone(),
            learners: c.learners.clone(),
            voters_outgoing: c.voters_outgoing.clone(),
            learners_next: c.learners_next.clone(),
            auto_leave: c.auto_leave,
        }
    }
}

impl From<&ConfState> for ConfStateInfo {
    fn from(c: &ConfState) -> Self {
        ConfStateInfo::from(&ConfStateRecord::from(c))
    }
}

impl From<&ConfStateInfo> for ConfStateRecord {
    fn from(c: &ConfStateInfo) -> Self {
        ConfStateRecord {
            voters: c.voters.clone(),
            learners: c.learners.clone(),
            voters_outgoing: c.voters_outgoing.clone(),
            learners_next: c.learners_next.clone(),
            auto_leave: c.auto_leave,
        }
    }
}

/// Through the stored record: only src/proto.rs maps raft's `ConfState` field by field.
impl From<&ConfStateInfo> for ConfState {
    fn from(c: &ConfStateInfo) -> Self {
        ConfState::from(&ConfStateRecord::from(c))
    }
}

/// The hard state, as tools print it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct HardStateInfo {
    /// Current term.
    pub term: u64,
    /// Who this node voted for in `term` (0: nobody).
    pub vote: u64,
    /// Commit index.
    pub commit: u64,
}

/// The current snapshot's metadata.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SnapshotInfo {
    /// Index of the last entry the snapshot covers.
    pub index: u64,
    /// Term of that entry.
    pub term: u64,
    /// The conf state at `index`.
    pub conf_state: ConfStateInfo,
    /// Length of the snapshot data, in bytes (0: no data).
    pub data_len: u64,
    /// CRC32C of the snapshot data.
    pub data_crc32c: u32,
    /// The snapshot data file, when the snapshot has data.
    #[serde(serialize_with = "crate::tools::json_path::lossy")]
    pub file: Option<PathBuf>,
}

impl From<&crate::proto::HardStateRecord> for HardStateInfo {
    fn from(h: &crate::proto::HardStateRecord) -> Self {
        HardStateInfo {
            term: h.term,
            vote: h.vote,
            commit: h.commit,
        }
    }
}

impl SnapshotInfo {
    /// The metadata of `s`, a snapshot of the store (or group) in `dir`.
    pub(crate) fn of(dir: &Path, s: &crate::proto::SnapshotRecord) -> SnapshotInfo {
        SnapshotInfo {
            index: s.index,
            term: s.term,
            conf_state: s
                .conf_state
                .as_ref()
                .map(ConfStateInfo::from)
                .unwrap_or_default(),
            data_len: s.data_len,
            data_crc32c: s.data_crc32c,
            file: (s.data_len > 0).then(|| snap::path(dir, s.term, s.index)),
        }
    }
}

/// One log file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LogFileInfo {
    /// File name (`NNNNN.wal`).
    pub name: String,
    /// File id (the number in its name).
    pub id: u64,
    /// Index slot 0 holds.
    pub base_index: u64,
    /// Entries the file holds (from its base index on).
    pub entries: u64,
    /// Last index it holds (`base_index - 1` when it holds none).
    pub last_index: u64,
    /// File size, in bytes.
    pub size_bytes: u64,
}

/// What a WAL directory holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// The WAL directory.
    #[serde(serialize_with = "crate::tools::json_path::lossy")]
    pub dir: PathBuf,
    /// Format version of `wal.meta`.
    pub format_version: u32,
    /// [`MetaInfo::RaftId`](crate::MetaInfo::RaftId).
    pub raft_id: u64,
    /// [`MetaInfo::GroupId`](crate::MetaInfo::GroupId).
    pub group_id: u64,
    /// [`MetaInfo::CheckpointIndex`](crate::MetaInfo::CheckpointIndex).
    pub checkpoint_index: u64,
    /// The stored hard state.
    pub hard_state: HardStateInfo,
    /// The current conf state (the one `initial_state()` returns).
    pub conf_state: ConfStateInfo,
    /// The current snapshot, if there is one.
    pub snapshot: Option<SnapshotInfo>,
    /// First index `entries()` can return (snapshot index + 1).
    pub first_index: u64,
    /// Last index of the log (as open would find it).
    pub last_index: u64,
    /// The log files, oldest first.
    pub files: Vec<LogFileInfo>,
    /// Damage that ends the log early (open would cut it there by default).
    pub tail_damage: Option<String>,
    /// Why a default-mode open of the directory would fail (e.g. damage at or below the
    /// durable commit index, which cannot be cut, or a snapshot file damaged or missing), or
    /// `None` when it would succeed.
    pub open_error: Option<String>,
    /// Which copy of the meta state is in use, and what the other one holds.
    pub meta_copies: MetaCopiesInfo,
    /// Files in the directory that open would remove (obsolete, empty tail, leftovers).
    #[serde(serialize_with = "crate::tools::json_path::lossy")]
    pub leftover_files: Vec<PathBuf>,
}

/// The two copies of the meta state in `wal.meta`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MetaCopiesInfo {
    /// The copy holding the state in use: 1 or 2 (by position in the file).
    pub in_use: u8,
    /// Its sequence number.
    pub sequence: u64,
    /// The other copy: `"older"`, `"never written"` or `"damaged"`.
    pub other: String,
    /// The other copy's sequence number, when it is valid.
    pub other_sequence: Option<u64>,
    /// What is wrong with the other copy, when it is damaged.
    pub other_damage: Option<String>,
}

impl From<&Copies> for MetaCopiesInfo {
    fn from(c: &Copies) -> Self {
        let (other, other_sequence, other_damage) = match &c.other {
            OtherCopy::Older { seq } => ("older", Some(*seq), None),
            OtherCopy::Blank => ("never written", None, None),
            OtherCopy::Damaged { offset, reason } => (
                "damaged",
                None,
                Some(format!("at offset {offset}: {reason}")),
            ),
        };
        MetaCopiesInfo {
            in_use: c.current as u8 + 1,
            sequence: c.seq,
            other: other.to_string(),
            other_sequence,
            other_damage,
        }
    }
}

/// What [`Inspector::verify`] checked.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// Log files checked.
    pub files_checked: u64,
    /// Entries whose slot and payload checksums were checked (and, in an encrypted store,
    /// whose sealed payloads were authenticated).
    pub entries_checked: u64,
    /// Payload bytes checked.
    pub payload_bytes_checked: u64,
    /// Snapshot data bytes checked.
    pub snapshot_bytes_checked: u64,
}

/// A WAL directory opened read-only.
pub struct Inspector {
    dir: PathBuf,
    cipher: Option<Cipher>,
    meta: MetaRecord,
    files: Vec<LogFile>,
    last: u64,
    /// Damage that ends the log early; and that a default-mode open refuses.
    tail_damage: Option<Error>,
    committed_damage: Option<Error>,
    /// Damage to the header of a log file wholly below the snapshot: not part of the log
    /// (open removes the file), but damage `verify` reports.
    compacted_damage: Option<Error>,
    /// Damage in the meta copy not in use.
    meta_damage: Option<Error>,
    /// The sequence number of the meta copy read.
    meta_seq: u64,
    summary: Summary,
}

impl Inspector {
    /// Opens `dir` read-only. A missing directory or `wal.meta` is an error; nothing is created.
    /// Reads what open reads to decide whether it would refuse the directory
    /// ([`Summary::open_error`]): the log's tail, and the snapshot file to its last byte.
    pub fn open<P: AsRef<Path>>(dir: P) -> Result<Inspector> {
        Self::open_with_key(dir, None)
    }

    /// [`Inspector::open`] for an encrypted store (`key`: its encryption key).
    pub fn open_with_key<P: AsRef<Path>>(dir: P, key: Option<[u8; 32]>) -> Result<Inspector> {
        let dir = dir.as_ref().to_path_buf();
        let cipher = key.as_ref().map(Cipher::new);
        recovery::refuse_unfinished_restore(&dir)?;
        let listing = recovery::list_dir(&dir)?;
        let (meta, copies) = meta::read_only(&dir, cipher.as_ref())?;
        let meta_damage = copies.damage(&dir.join(META_FILE));
        recovery::check_meta_bounds(&dir, &meta)?;
        let scan = recovery::Scan {
            mode: RecoveryMode::TolerateTailCorruption,
            read_only: true,
            whole_log: false,
        };
        let plan = recovery::plan_log(&dir, &meta, listing.ids, scan, cipher.as_ref())
            .map_err(|e| copies.explain(e))?;
        let committed_damage = plan.committed_damage.map(|e| copies.explain(e));
        // Open refuses committed damage first, then a snapshot file that is not whole: the
        // same check, so that the summary says what open will say. Not when a live store
        // wrote its meta page since: the file read may be one a newer snapshot replaced
        // (and removed), which open, reading the new page, would not meet.
        let open_error = match &committed_damage {
            Some(e) => Some(e.to_string()),
            None => recovery::check_snapshot_file(&dir, &meta, cipher.as_ref())
                .err()
                .filter(|_| !meta_moved_on(&dir, &meta, copies.seq, cipher.as_ref()))
                .map(|e| e.to_string()),
        };
        let files: Vec<LogFile> = plan.files.into_iter().collect();
        let snap = meta.snapshot.as_ref().filter(|s| s.index > 0);
        let snap_index = snap.map_or(0, |s| s.index);
        let last = plan.last;
        let file_infos = files
            .iter()
            .enumerate()
            .map(|(pos, f)| {
                let entries = if pos + 1 == files.len() {
                    (last + 1).saturating_sub(f.base())
                } else {
                    SLOTS_PER_FILE
                };
                LogFileInfo {
                    name: log_file::file_name(f.id()),
                    id: f.id(),
                    base_index: f.base(),
                    entries,
                    last_index: f.base() + entries - 1,
                    size_bytes: f.len(),
                }
            })
            .collect();
        let summary = Summary {
            dir: dir.clone(),
            format_version: META_FORMAT_VERSION,
            raft_id: meta.raft_id,
            group_id: meta.group_id,
            checkpoint_index: meta.checkpoint_index,
            hard_state: meta
                .hard_state
                .as_ref()
                .map(HardStateInfo::from)
                .unwrap_or_default(),
            conf_state: meta
                .conf_state
                .as_ref()
                .map(ConfStateInfo::from)
                .unwrap_or_default(),
            snapshot: snap.map(|s| SnapshotInfo::of(&dir, s)),
            first_index: snap_index + 1,
            last_index: last.max(snap_index),
            files: file_infos,
            tail_damage: plan.tail_damage.as_ref().map(Error::to_string),
            open_error,
            meta_copies: MetaCopiesInfo::from(&copies),
            leftover_files: listing.leftovers.into_iter().chain(plan.remove).collect(),
        };
        Ok(Inspector {
            dir,
            cipher,
            meta,
            files,
            last,
            tail_damage: plan.tail_damage,
            committed_damage,
            compacted_damage: plan.compacted_damage,
            meta_damage,
            meta_seq: copies.seq,
            summary,
        })
    }

    /// Whether the directory's meta page is no longer the one this inspector read (or cannot
    /// be read): a live store wrote since. Its files may then have changed under the reads
    /// too (a file a snapshot made obsolete is recycled as the next one, in place), so damage
    /// found is to be checked again on a new inspector before it is reported; damage found
    /// while this is `false` is in the files as read.
    pub fn changed_since_open(&self) -> bool {
        meta_moved_on(&self.dir, &self.meta, self.meta_seq, self.cipher.as_ref())
    }

    /// What the directory holds.
    pub fn summary(&self) -> &Summary {
        &self.summary
    }

    /// The stored hard state.
    pub fn hard_state(&self) -> HardState {
        self.meta
            .hard_state
            .as_ref()
            .map(HardState::from)
            .unwrap_or_default()
    }

    /// Checks every checksum: every slot and payload of every file up to the end of the log
    /// (entries at or below the snapshot index included), the snapshot file to its last byte,
    /// and both copies of the meta state. In an encrypted store (opened with its key) every
    /// sealed payload is opened too, as a read opens it, and every snapshot chunk: what fails
    /// authentication is damage. `progress` is told how many bytes were checked as it
    /// goes. The first damage is the error, naming the file and offset; damage that ends the
    /// log counts (open would cut the log there, or refuse it), and so does a damaged copy of
    /// the meta state that open does not use.
    pub fn verify(&self, progress: &mut dyn FnMut(u64)) -> Result<VerifyReport> {
        let mut report = VerifyReport::default();
        let mut scratch = Vec::new();
        for (f, info) in self.files.iter().zip(&self.summary.files) {
            for k in 0..info.entries as u32 {
                let c = f.verify_entry(k, &mut scratch)?;
                let bytes = c.payload_end - c.slot.offset;
                report.entries_checked += 1;
                report.payload_bytes_checked += bytes;
                progress(bytes + log_file::SLOT_SIZE as u64);
            }
            report.files_checked += 1;
        }
        let log_damage = (self.committed_damage.as_ref())
            .or(self.tail_damage.as_ref())
            .or(self.compacted_damage.as_ref());
        if let Some(damage) = log_damage {
            return Err(same_damage(damage));
        }
        if let Some(s) = self.meta.snapshot.as_ref().filter(|s| s.data_len > 0) {
            let mut reader = open_snapshot(&self.dir, s, self.cipher.as_ref())?;
            let mut buf = vec![0u8; 256 << 10];
            loop {
                let n =
                    std::io::Read::read(&mut reader, &mut buf).map_err(|e| reader.error_from(e))?;
                if n == 0 {
                    break;
                }
                report.snapshot_bytes_checked += n as u64;
                progress(n as u64);
            }
        }
        if let Some(damage) = self.meta_damage.as_ref() {
            return Err(same_damage(damage));
        }
        Ok(report)
    }

    /// Total bytes [`Inspector::verify`] reports to its progress callback (for a progress bar's
    /// length): every entry's slot and payload, and the snapshot data.
    pub fn verify_len(&self) -> u64 {
        let files: u64 = self
            .files
            .iter()
            .zip(&self.summary.files)
            .map(|(f, info)| f.payload_used() + info.entries * log_file::SLOT_SIZE as u64)
            .sum();
        let snapshot = self.meta.snapshot.as_ref().map_or(0, |s| {
            if self.cipher.is_some() {
                s.plain_len
            } else {
                s.data_len
            }
        });
        files.saturating_add(snapshot)
    }

    /// Entries `[lo, hi)`, checksums verified. Indexes outside `[first_index, last_index]` are
    /// an error (`Compacted`, `Unavailable`).
    pub fn entries(&self, lo: u64, hi: u64) -> Result<Vec<Entry>> {
        if lo < self.summary.first_index {
            return Err(Error::Compacted {
                index: lo,
                first_index: self.summary.first_index,
            });
        }
        if hi > self.last + 1 || lo > hi {
            return Err(Error::Unavailable {
                index: hi.saturating_sub(1),
                last_index: self.summary.last_index,
            });
        }
        let mut out = Vec::with_capacity((hi - lo).min(1 << 16) as usize);
        if lo == hi {
            return Ok(out);
        }
        // The files must hold the range (a damaged directory can hold less than the meta page
        // says: entries below the first file's base are then unavailable, not a wrap-around).
        wal::read_range(
            |i| self.files.get(i),
            lo,
            hi,
            self.summary.last_index,
            &mut out,
            |_| true,
        )?;
        Ok(out)
    }

    /// The current snapshot as a verified stream. `Error::NoSnapshot` when there is none.
    /// Beside a live store that replaced the snapshot read (and removed its file), the one its
    /// meta page names now.
    pub fn snapshot_reader(&self) -> Result<SnapshotReader> {
        match self.meta.snapshot.as_ref().filter(|s| s.index > 0) {
            Some(s) => open_snapshot(&self.dir, s, self.cipher.as_ref()),
            None => Err(Error::NoSnapshot {
                path: self.dir.clone(),
            }),
        }
    }
}

/// Whether the meta page of `dir` is no longer the one read (`read`, from the copy of sequence
/// `seq`), or cannot be read: a live store or engine group wrote since.
pub(crate) fn meta_moved_on(
    dir: &Path,
    read: &MetaRecord,
    seq: u64,
    cipher: Option<&Cipher>,
) -> bool {
    match meta::read_only::<MetaRecord>(dir, cipher) {
        Ok((now, copies)) => now != *read || copies.seq != seq,
        Err(_) => true,
    }
}

/// The snapshot `read` (from the meta page of `dir` as read) as a verified stream, or, if its
/// file is gone because a live store (or engine group) replaced it since, the newer one the
/// meta page names now: read again as the store goes on taking snapshots, a bounded number of
/// times (microseconds each, against the milliseconds a snapshot takes), before the missing
/// file is reported as such.
pub(crate) fn open_snapshot(
    dir: &Path,
    read: &crate::proto::SnapshotRecord,
    cipher: Option<&Cipher>,
) -> Result<SnapshotReader> {
    let missing = match SnapshotReader::open(dir, read, cipher) {
        Err(e @ Error::MissingFile { .. }) => e,
        r => return r,
    };
    for _ in 0..REPLACED_SNAPSHOT_TRIES {
        let Ok((now, _)) = meta::read_only::<MetaRecord>(dir, cipher) else {
            break;
        };
        let Some(s) = now.snapshot.as_ref().filter(|s| s.index > read.index) else {
            break;
        };
        match SnapshotReader::open(dir, s, cipher) {
            Err(Error::MissingFile { .. }) => continue,
            r => return r,
        }
    }
    Err(missing)
}

/// Times [`open_snapshot`] reads a meta page again for a replaced snapshot.
const REPLACED_SNAPSHOT_TRIES: usize = 100;

/// The damage `e` describes, as a new error of the same kind (errors are not `Clone`: an I/O
/// error cannot be copied, but damage is only ever `Corrupt` or `MissingFile`; anything else
/// kept as damage is a bug).
fn same_damage(e: &Error) -> Error {
    match e {
        Error::Corrupt {
            path,
            offset,
            reason,
        } => Error::corrupt(path, *offset, reason.clone()),
        Error::MissingFile { path, reason } => Error::MissingFile {
            path: path.clone(),
            reason: reason.clone(),
        },
        other => Error::invariant(format!("kept as damage, but not damage: {other}")),
    }
}
