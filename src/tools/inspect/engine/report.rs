//! The report of an engine root, as the tools print and serialize it (`--json`): the summary
//! (`EngineSummary`: the root record, the journal, every group as its files hold it and after
//! replay) and what `verify` found (`EngineVerifyReport`), and how one read of the root becomes
//! a summary.
//!
//! Owns: the report types, their fields and field names (what `--json` prints), and the words
//! naming a segment's state. Must never: read a file (a summary is built from what `root`,
//! `group` and `replay` read), or decide what is damage (it reports what they found).

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::group::GroupRead;
use super::root::RootRead;
#[cfg(doc)]
use super::EngineInspector;
use crate::error::Error;
use crate::proto::MetaRecord;
use crate::store::log_file;
use crate::store::meta::META_FORMAT_VERSION;
use crate::tools::inspect::{
    ConfStateInfo, HardStateInfo, LogFileInfo, MetaCopiesInfo, SnapshotInfo,
};

/// What an engine root holds: its root record, its journal, and its groups (every group, or the
/// one the inspector was opened for).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EngineSummary {
    /// The engine root.
    #[serde(serialize_with = "crate::tools::json_path::lossy")]
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
    #[serde(serialize_with = "crate::tools::json_path::lossy")]
    pub leftover_dirs: Vec<PathBuf>,
    /// Why a default open of the root would fail, or `None` when it would succeed. With one
    /// group read ([`EngineInspector::open_group`](super::EngineInspector::open_group)), only
    /// the journal and that group are judged: damage in another group is not seen.
    pub open_error: Option<String>,
    /// `engine.meta` changed while the journal was read (an engine at work): the report is a
    /// moment's view, consistent, but the root has moved on since.
    pub changed_while_read: bool,
}

/// The shared journal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct JournalSummary {
    /// The journal directory.
    #[serde(serialize_with = "crate::tools::json_path::lossy")]
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
    #[serde(serialize_with = "crate::tools::json_path::lossy")]
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
    #[serde(serialize_with = "crate::tools::json_path::lossy")]
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
    #[serde(serialize_with = "crate::tools::json_path::lossy")]
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
    #[serde(serialize_with = "crate::tools::json_path::lossy")]
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

impl RootRead {
    pub(super) fn summary(&self) -> EngineSummary {
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
        // What `Engine::open` refuses, in the order it meets it: a group it cannot read,
        // damage in the journal, segments lost behind a group's meta page, a group the root's
        // checks refuse (an incarnation, a snapshot lost with a meta copy), a journal part it
        // will not replay (for no possible group, or contradicting its group's log), a damaged
        // slot that replaying a truncation checks.
        let group_error = |id: &u64, g: &super::group::GroupRead| {
            g.disk.as_ref().err().map(|e| format!("group {id}: {e}"))
        };
        let open_error = self
            .disk_storage_dir
            .as_ref()
            .map(|e| e.to_string())
            .or_else(|| {
                self.first_read_error
                    .and_then(|id| self.groups.get_key_value(&id))
                    .and_then(|(id, g)| group_error(id, g))
            })
            .or_else(|| j.damage.as_ref().map(|e| format!("journal: {e}")))
            .or_else(|| {
                self.journal_behind
                    .as_ref()
                    .map(|e| format!("journal: {e}"))
            })
            .or_else(|| self.groups.iter().find_map(|(id, g)| group_error(id, g)))
            .or_else(|| self.part_damage.as_ref().map(|e| format!("journal: {e}")))
            .or_else(|| {
                // Open replays every record before it clears any group's files below a
                // truncation: a part's damage in any group comes first.
                self.groups.iter().find_map(|(id, g)| {
                    g.replay.damage.as_ref().map(|e| format!("group {id}: {e}"))
                })
            })
            .or_else(|| {
                self.groups.iter().find_map(|(id, g)| {
                    g.cleared_damage
                        .as_ref()
                        .map(|e| format!("group {id}: {e}"))
                })
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
        let replayed = self.cleared_damage.as_ref().or(self.replay.damage.as_ref());
        let damage = match (&self.disk, replayed) {
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
        journal.entries_from =
            (self.replay.shape.tail_len > 0).then_some(self.replay.shape.tail_start);
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
