//! `raftwal inspect|verify ROOT [--group ID] [--json]` on an engine root: the root record, the
//! shared journal and every group (or the one `--group` names), each group as its own files
//! hold it and as an opened engine would serve it after replaying the journal.
//!
//! Owns: the text reports of an engine root and the exit codes of both commands on one. `--json`
//! prints `raftwal::inspect::engine::EngineSummary` (inspect) or `EngineVerifyReport` (verify)
//! as serialized, damage included. Must never: change the root (it reads through
//! `raftwal::inspect::engine::EngineInspector`, which takes no lock and maps nothing).

use std::path::Path;

use raftwal::inspect::engine::{
    EngineSummary, EngineVerifyReport, GroupJournalInfo, GroupState, GroupSummary, JournalSummary,
};
use raftwal::inspect::{LogFileInfo, MetaCopiesInfo};

use crate::output::{self, count, CmdResult, Failure, Out, Progress};

/// `inspect ROOT`: the report, then exit code 1 when a default open would fail or lose
/// acknowledged records, or the journal or a group is damaged.
pub fn inspect(root: &Path, group: Option<u64>, json: bool) -> CmdResult {
    let inspector = output::open_engine(root, group)?;
    let s = inspector.summary();
    let failure = inspect_failure(s);
    Out::new().report(json, s, || report(s), failure)
}

/// Why `inspect ROOT` exits 1, if it does.
fn inspect_failure(s: &EngineSummary) -> Option<Failure> {
    if let Some(e) = &s.open_error {
        return Some(Failure::damage(format!("open will fail: {e}")));
    }
    if let Some(e) = &s.journal.lost_records {
        return Some(Failure::damage(format!(
            "open will drop journal records: {e}"
        )));
    }
    if let Some(e) = &s.journal.damage {
        return Some(Failure::damage(format!("the journal is damaged: {e}")));
    }
    let g = s.groups.iter().find(|g| g.damage.is_some())?;
    let d = g.damage.as_deref().unwrap_or_default();
    Some(Failure::damage(format!(
        "group {} is damaged: {d}",
        g.group_id
    )))
}

/// `verify ROOT`: what was checked, component by component, then exit code 1 when anything is
/// damaged (the first damage on stderr).
pub fn verify(root: &Path, group: Option<u64>, json: bool) -> CmdResult {
    let mut inspector = output::open_engine(root, group)?;
    let progress = Progress::bytes(inspector.verify_len(), "verify");
    let result = inspector.verify(&mut |n| progress.inc(n));
    progress.finish();
    let report = result.map_err(|e| output::engine_failure(root, e))?;
    let failure = match report.damage.first() {
        None => None,
        Some(first) if report.damage.len() == 1 => Some(Failure::damage(first.clone())),
        Some(first) => Some(Failure::damage(format!(
            "{} damaged places; the first: {first}",
            report.damage.len()
        ))),
    };
    Out::new().report(json, &report, || verify_lines(&report), failure)
}

fn verify_lines(r: &EngineVerifyReport) -> Vec<String> {
    let mut lines = Vec::new();
    lines.push(format!(
        "{:<16}{}",
        "engine.meta",
        r.engine_meta_damage
            .as_ref()
            .map_or("ok".to_string(), |d| format!("DAMAGED: {d}"))
    ));
    let j = &r.journal;
    lines.push(format!(
        "{:<16}{}, {} records ({} after the checkpoint), {} bytes ({}): {}",
        "journal",
        count(j.segments_checked, "segment"),
        j.records_checked,
        j.records_after_checkpoint,
        j.bytes_checked,
        output::human_bytes(j.bytes_checked),
        outcome(&j.damage)
    ));
    for g in &r.groups {
        lines.push(format!(
            "{:<16}{}, {} entries, {} payload bytes ({}), snapshot {} bytes ({}), {}: {}",
            format!("group {}", g.group_id),
            count(g.files_checked, "file"),
            g.entries_checked,
            g.payload_bytes_checked,
            output::human_bytes(g.payload_bytes_checked),
            g.snapshot_bytes_checked,
            output::human_bytes(g.snapshot_bytes_checked),
            count(g.journal_records, "journal record"),
            if g.changed_while_checked {
                "changed while it was checked (an engine at work): checked up to there, ok"
                    .to_string()
            } else {
                outcome(&g.damage)
            }
        ));
    }
    lines.push(format!(
        "checked engine root {}, {}: {}",
        r.root.display(),
        count(r.groups.len() as u64, "group"),
        if r.ok {
            "ok".to_string()
        } else {
            format!("{} damaged", r.damage.len())
        }
    ));
    lines
}

/// `ok`, or every damage found.
fn outcome(damage: &[String]) -> String {
    if damage.is_empty() {
        "ok".to_string()
    } else {
        format!("DAMAGED: {}", damage.join("; "))
    }
}

/// The text report of an engine root, line by line.
fn report(s: &EngineSummary) -> Vec<String> {
    let mut lines = vec![
        format!("engine root     {}", s.root.display()),
        format!("format version  {}", s.format_version),
        format!(
            "state           {}",
            if s.open {
                "open (an engine has the root open, or did not close it cleanly)"
            } else {
                "closed cleanly (every group's directory holds its whole state)"
            }
        ),
        format!("checkpoint      journal record {}", s.checkpoint_seq),
        format!("incarnations    next {}", s.next_incarnation),
        format!("meta copies     {}", meta_copies(&s.meta_copies)),
    ];
    journal(&s.journal, &mut lines);
    lines.push(format!(
        "groups          {} ({})",
        s.group_ids.len(),
        output::ids(&s.group_ids)
    ));
    if s.leftover_dirs.is_empty() {
        lines.push("leftover dirs   none".to_string());
    } else {
        lines.push(format!(
            "leftover dirs   {} (open removes them)",
            s.leftover_dirs.len()
        ));
        for d in &s.leftover_dirs {
            lines.push(format!("  {}", d.display()));
        }
    }
    lines.push(format!(
        "open            {}",
        match (&s.open_error, &s.journal.lost_records) {
            (Some(e), _) => format!("will fail: {e}"),
            (None, Some(_)) => {
                "succeeds (default recovery mode), but drops the lost records above".to_string()
            }
            (None, None) => "ok (default recovery mode)".to_string(),
        }
    ));
    if s.changed_while_read {
        lines.push(
            "note            an engine checkpointed (or made a group) while the journal was read: this is a moment's view"
                .to_string(),
        );
    }
    for g in &s.groups {
        lines.push(String::new());
        group(g, &mut lines);
    }
    lines
}

fn journal(j: &JournalSummary, lines: &mut Vec<String>) {
    let spare_bytes: u64 = j.spares.iter().map(|s| s.size_bytes).sum();
    let spare = match j.spares.len() {
        0 => ", no spare".to_string(),
        n => format!(
            ", {} ({})",
            count(n as u64, "spare"),
            output::human_bytes(spare_bytes)
        ),
    };
    lines.push(format!(
        "journal         {} in {}{spare}",
        count(j.segments.len() as u64, "segment"),
        j.dir.display()
    ));
    for seg in &j.segments {
        let records = match (seg.first_seq, seg.last_seq) {
            (Some(a), Some(b)) => format!("records {a}..={b}"),
            (Some(a), None) => format!("from record {a}, none read"),
            (None, _) => "no header (prepared)".to_string(),
        };
        let state = match seg.state.as_str() {
            "live" => "live",
            "obsolete" => "obsolete: open recycles it",
            "after the end" => "after a torn end: open removes it",
            _ => "never written: open recycles it",
        };
        lines.push(format!(
            "  {:<22} {:<26} {:>7} records  {:>12} bytes ({}), {state}",
            seg.name,
            records,
            seg.records,
            seg.size_bytes,
            output::human_bytes(seg.size_bytes)
        ));
        if let Some(cut) = &seg.cut {
            lines.push(format!(
                "  {:<22} ends at a cut an earlier open made (the next segment starts there): {cut}",
                ""
            ));
        }
    }
    let replay = match (j.first_seq, j.last_seq) {
        (Some(a), Some(b)) => format!(
            "{} after the checkpoint ({a}..={b}), {} bytes ({}); open replays them",
            count(j.records_after_checkpoint, "record"),
            j.bytes_after_checkpoint,
            output::human_bytes(j.bytes_after_checkpoint)
        ),
        _ => "nothing after the checkpoint".to_string(),
    };
    lines.push(format!("replay          {replay}"));
    lines.push(format!(
        "torn tail       {}",
        j.torn_tail
            .as_deref()
            .map_or("none".to_string(), |t| format!("{t} (open cuts it)"))
    ));
    if let Some(l) = &j.lost_records {
        lines.push(format!("lost records    {l}"));
    }
    if let Some(d) = &j.damage {
        lines.push(format!("journal damage  {d}"));
    }
    if j.parts_for_removed_groups > 0 {
        lines.push(format!(
            "removed groups  {} for groups that are gone (replay skips them)",
            count(j.parts_for_removed_groups, "part")
        ));
    }
}

fn group(g: &GroupSummary, lines: &mut Vec<String>) {
    let head = match g.incarnation {
        Some(inc) => format!(
            "group {:<10}raft id {}, incarnation {}, {}",
            g.group_id,
            g.after_replay.as_ref().map_or(0, |s| s.raft_id),
            inc,
            g.dir.display()
        ),
        None => format!("group {:<10}{}", g.group_id, g.dir.display()),
    };
    lines.push(head);
    if let Some(m) = &g.meta_copies {
        lines.push(format!("  meta copies   {}", meta_copies(m)));
    }
    if let (Some(files), Some(seq)) = (&g.in_files, g.journal_seq) {
        lines.push(format!(
            "  in its files  {}, as of journal record {seq}",
            range(files)
        ));
        log_files(&g.files, lines);
        lines.push(format!("  in journal    {}", in_journal(&g.journal)));
    }
    if let (Some(files), Some(after)) = (&g.in_files, &g.after_replay) {
        lines.push(format!("  after replay  {}", range(after)));
        let hs = |s: &GroupState| {
            format!(
                "term {} vote {} commit {}",
                s.hard_state.term, s.hard_state.vote, s.hard_state.commit
            )
        };
        lines.push(format!("  hard state    {}", differs(hs(after), hs(files))));
        let cs = |s: &GroupState| output::conf_state(&s.conf_state);
        lines.push(format!("  conf state    {}", differs(cs(after), cs(files))));
        let snap = |s: &GroupState| match &s.snapshot {
            None => "none".to_string(),
            Some(sn) => {
                let data = match &sn.file {
                    Some(f) => format!(
                        "{} bytes ({}) in {}",
                        sn.data_len,
                        output::human_bytes(sn.data_len),
                        f.display()
                    ),
                    None => "no data".to_string(),
                };
                format!("index {} term {}, {data}", sn.index, sn.term)
            }
        };
        lines.push(format!(
            "  snapshot      {}",
            differs(snap(after), snap(files))
        ));
        let cp = |s: &GroupState| s.checkpoint_index.to_string();
        lines.push(format!("  checkpoint    {}", differs(cp(after), cp(files))));
    }
    if !g.leftover_files.is_empty() {
        lines.push(format!(
            "  leftovers     {} file(s) open removes",
            g.leftover_files.len()
        ));
        for f in &g.leftover_files {
            lines.push(format!("    {}", f.display()));
        }
    }
    lines.push(format!(
        "  damage        {}",
        g.damage.as_deref().unwrap_or("none")
    ));
}

/// `after`, and what the files hold when the journal changed it.
fn differs(after: String, files: String) -> String {
    if after == files {
        after
    } else {
        format!("{after} (its files: {files})")
    }
}

fn range(s: &GroupState) -> String {
    let count = s.last_index.saturating_add(1).saturating_sub(s.first_index);
    format!(
        "first index {}, last index {} ({count} entries)",
        s.first_index, s.last_index
    )
}

fn log_files(files: &[LogFileInfo], lines: &mut Vec<String>) {
    let total: u64 = files.iter().map(|f| f.size_bytes).sum();
    lines.push(format!(
        "  log files     {}, {total} bytes ({})",
        files.len(),
        output::human_bytes(total)
    ));
    for f in files {
        let range = if f.entries == 0 {
            format!("no entries (base index {})", f.base_index)
        } else {
            format!("index {}..={}", f.base_index, f.last_index)
        };
        lines.push(format!(
            "    {:<12} {:<28} {:>6} entries  {:>12} bytes ({})",
            f.name,
            range,
            f.entries,
            f.size_bytes,
            output::human_bytes(f.size_bytes)
        ));
    }
}

fn in_journal(j: &GroupJournalInfo) -> String {
    let mut s = match (j.first_seq, j.last_seq) {
        (Some(a), Some(b)) => {
            let seqs = if a == b {
                a.to_string()
            } else {
                format!("{a}..={b}")
            };
            let mut s = format!(
                "{} ({seqs}), {} entries ({})",
                count(j.records, "record"),
                j.entries,
                output::human_bytes(j.payload_bytes)
            );
            if let Some(from) = j.entries_from {
                s.push_str(&format!(
                    "; from index {from} on, the log is in the journal"
                ));
            }
            if let Some(i) = j.snapshot_installed {
                s.push_str(&format!("; installs a snapshot at index {i}"));
            }
            if let Some(i) = j.truncated_below {
                s.push_str(&format!("; truncates data below index {i}"));
            }
            s
        }
        _ => "nothing beyond its files".to_string(),
    };
    if j.parts_in_files > 0 {
        s.push_str(&format!(
            " ({} already in its files)",
            count(j.parts_in_files, "part")
        ));
    }
    if j.parts_for_earlier_incarnation > 0 {
        s.push_str(&format!(
            " ({} for an earlier group with this id, skipped)",
            count(j.parts_for_earlier_incarnation, "part")
        ));
    }
    s
}

/// Which copy of a meta state is in use, and what the other holds, on one line.
fn meta_copies(m: &MetaCopiesInfo) -> String {
    crate::inspect::meta_copies(m)
}
