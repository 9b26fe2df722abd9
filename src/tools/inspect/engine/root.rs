//! One read of an engine root: `engine.meta`, the journal's records after the checkpoint
//! (through `crate::engine::scan`), `engine.meta` again, the groups under `groups/` (each read
//! by `group`), then every journal part dealt out to the group it names (`replay` applies it).
//! `engine.meta` is read with the key given (its record is sealed on an encrypted root): a
//! missing or wrong key, or a key for a plaintext root, is `Error::Encryption` naming it, as
//! `Engine::open` refuses it.
//!
//! Owns: the order of the reads (what makes a live engine's checkpoints harmless, see
//! `read_root`), the listing of `groups/` and its leftovers, and the damage only the whole root
//! shows: a part for an incarnation the root never gave out, and a group read from one meta copy
//! while the other is damaged whose snapshot after replay is not the newest it made. Must never:
//! take the lock, write, create, rename or remove anything, or map a file; a read that is not
//! clean is read again by `retry`, not here.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use super::group::{check_cleared, read_group, GroupRead};
use super::is_damage;
use super::replay::Replay;
use crate::engine::replayed;
use crate::engine::scan::{self, JournalPos, JournalScan, Part, RecordAt};
use crate::error::{Error, Result};
use crate::proto::EngineRecord;
use crate::store::log_file::{Access, LogFile};
use crate::store::meta::{self, Copies};
use crate::sys::crypto::Cipher;

/// One read of the root.
pub(super) struct RootRead {
    pub(super) root: PathBuf,
    pub(super) record: EngineRecord,
    pub(super) root_copies: Copies,
    pub(super) group_ids: Vec<u64>,
    pub(super) leftover_dirs: Vec<PathBuf>,
    pub(super) only: Option<u64>,
    pub(super) groups: BTreeMap<u64, GroupRead>,
    pub(super) journal: JournalScan,
    /// A part that names no possible group (an incarnation the root never gave out).
    pub(super) part_damage: Option<Error>,
    /// The first group (in id order) that could not be read, before the root's own checks
    /// (incarnations, snapshots) marked others: open meets it before the journal.
    pub(super) first_read_error: Option<u64>,
    /// A group's meta page reflecting a record past the journal's end: segments lost.
    pub(super) journal_behind: Option<Error>,
    pub(super) parts_for_removed_groups: u64,
    /// `engine.meta` changed while the journal was read (a checkpoint ran, or a group was
    /// created): harmless unless the journal looked damaged, which is read again.
    pub(super) changed: bool,
}

/// The groups under `root/groups` (canonical names, ascending) and the leftovers of creations
/// and removals cut short.
pub(super) fn list_groups(root: &Path) -> Result<(Vec<u64>, Vec<PathBuf>)> {
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
pub(super) struct Journaled {
    pub(super) seq: u64,
    pub(super) path: PathBuf,
    pub(super) offset: u64,
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
pub(super) fn read_root(
    root: &Path,
    cipher: Option<&Cipher>,
    only: Option<u64>,
) -> Result<RootRead> {
    let (record, root_copies) = meta::read_only::<EngineRecord>(root, cipher)?;
    let root_meta = root.join(<EngineRecord as meta::PageRecord>::FILE);
    scan::check_root_numbers(&root_meta, &record)?;
    let mut records = Vec::new();
    let journal = scan::scan(
        &root.join(scan::JOURNAL_DIR),
        (record.checkpoint_seq, record.journal_begun),
        cipher,
        &mut |rec: RecordAt<'_>| {
            let parts = scan::decode_parts_at(&rec.body, rec.seq, rec.path, rec.offset)?;
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
    let (changed, next_incarnation) = match meta::read_only::<EngineRecord>(root, cipher) {
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
                cleared_damage: None,
            },
        );
    }

    let first_read_error = groups
        .iter()
        .find(|(_, g)| g.disk.is_err())
        .map(|(&id, _)| id);
    let journal_behind = match &journal.damage {
        None => page_past_journal(root, &journal, &groups, cipher)?,
        Some(_) => None,
    };
    // The next incarnation as open uses it, and every group's below it (as open checks).
    let next_incarnation = scan::next_incarnation_in_use(
        &root_copies,
        next_incarnation,
        groups
            .values()
            .filter_map(|g| g.disk.as_ref().ok().map(|d| d.eng.incarnation))
            .chain(
                records
                    .iter()
                    .flat_map(|r| r.parts.iter().map(|p| p.incarnation)),
            ),
    );
    for (&id, g) in groups.iter_mut() {
        let Ok(d) = &g.disk else { continue };
        if let Err(e) = scan::check_incarnation(
            &root_meta,
            id,
            &g.dir.join(meta::META_FILE),
            d.eng.incarnation,
            next_incarnation,
        ) {
            g.disk = Err(e);
        }
    }
    let mut part_damage = None;
    let mut removed = 0u64;
    for mut rec in records {
        for part in std::mem::take(&mut rec.parts) {
            if let Err(reason) = replayed::check_given_out(&part, next_incarnation) {
                if part_damage.is_none() {
                    part_damage = Some(Error::corrupt(
                        &rec.path,
                        rec.offset,
                        format!(
                            "journal record {} holds a part for group {} of {reason}",
                            rec.seq, part.group_id
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
    // The slots open seals again once it has replayed a truncation (a group whose replay met
    // damage fails open there first).
    for g in groups.values_mut() {
        let Ok(d) = &g.disk else { continue };
        if g.replay.damage.is_some() {
            continue;
        }
        let Some(range) = g.replay.files_cleared() else {
            continue;
        };
        if let Err(e) = check_cleared(d, range, cipher) {
            if !is_damage(&e) {
                return Err(e);
            }
            g.cleared_damage = Some(e);
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
        first_read_error,
        journal_behind,
        parts_for_removed_groups: removed,
        changed,
    })
}

/// A group's meta page that reflects a record past the end of `journal` (as read): segments
/// were lost (`scan::page_past_end`, which open refuses), unless a live
/// engine made the group durable after the journal was read. So the journal's end is read
/// again (with `engine.meta`'s checkpoint now, as a trim since may have taken the record):
/// a page is stored only once the journal is flushed up to the record it reflects.
fn page_past_journal(
    root: &Path,
    journal: &JournalScan,
    groups: &BTreeMap<u64, GroupRead>,
    cipher: Option<&Cipher>,
) -> Result<Option<Error>> {
    let last = journal.next_seq.saturating_sub(1);
    let Some(d) = groups
        .values()
        .filter_map(|g| g.disk.as_ref().ok())
        .filter(|d| JournalPos::of_page(&d.eng).last_needed() > last)
        .max_by_key(|d| JournalPos::of_page(&d.eng).last_needed())
    else {
        return Ok(None);
    };
    let (now, _) = meta::read_only::<EngineRecord>(root, cipher)?;
    let again = scan::scan(
        &journal.dir,
        (now.checkpoint_seq, now.journal_begun),
        cipher,
        &mut |_| Ok(()),
    )?;
    let needed = JournalPos::of_page(&d.eng).last_needed();
    if again.damage.is_none() && needed < again.next_seq {
        return Ok(None);
    }
    Ok(Some(scan::page_past_end(
        &journal.dir,
        &d.dir.join(meta::META_FILE),
        needed,
        last,
    )))
}
