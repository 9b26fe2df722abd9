//! `raftwal inspect DIR [--json]`: what a WAL directory holds — the meta page, the snapshot, each
//! log file with its index range, entry count and size, and any tail damage or leftover files.
//! On an engine root (`ROOT/engine.meta`), `raftwal inspect ROOT [--group ID] [--json]` reports
//! the root, its journal and its groups (module `engine`).
//!
//! Owns: the text report's layout. `--json` prints `raftwal::inspect::Summary` as it is
//! serialized. Must never: change the directory (it reads through `raftwal::inspect::Inspector`).

use std::path::PathBuf;

use raftwal::inspect::{MetaCopiesInfo, Summary};

use crate::output::{self, CmdResult, Failure, Out};

/// Show a WAL directory: meta page, snapshot, files, index ranges, sizes; or an engine root:
/// its journal and every group (read-only).
#[derive(clap::Args)]
pub struct Args {
    /// The WAL directory (holding wal.meta), or an engine root (holding engine.meta)
    dir: PathBuf,
    /// With an engine root: report only this group
    #[arg(long, value_name = "ID")]
    group: Option<u64>,
    /// Print the summary as JSON (raftwal::inspect::Summary, or
    /// raftwal::inspect::engine::EngineSummary for an engine root)
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub key: output::KeyArg,
}

pub fn run(args: Args) -> CmdResult {
    if output::is_engine_root(&args.dir, args.group)? {
        return crate::engine::inspect(&args.dir, args.group, args.json);
    }
    let inspector = crate::output::open_inspector(&args.dir)?;
    let summary = inspector.summary();
    // A directory that open refuses is damage (exit code 1), once the report is out.
    let failure = summary
        .open_error
        .as_ref()
        .map(|e| Failure::damage(format!("open will fail: {e}")));
    Out::new().report(args.json, summary, || report(summary), failure)
}

/// The text report, line by line.
fn report(s: &Summary) -> Vec<String> {
    let mut lines = vec![
        format!("directory       {}", s.dir.display()),
        format!("format version  {}", s.format_version),
        format!("raft id         {}", s.raft_id),
        format!("group id        {}", s.group_id),
        format!("checkpoint      {}", s.checkpoint_index),
        format!(
            "hard state      term {} vote {} commit {}",
            s.hard_state.term, s.hard_state.vote, s.hard_state.commit
        ),
        format!("conf state      {}", output::conf_state(&s.conf_state)),
        format!("meta copies     {}", meta_copies(&s.meta_copies)),
    ];
    match &s.snapshot {
        None => lines.push("snapshot        none".to_string()),
        Some(snap) => {
            lines.push(format!(
                "snapshot        index {} term {}, {}",
                snap.index,
                snap.term,
                output::conf_state(&snap.conf_state)
            ));
            let data = match &snap.file {
                Some(file) => format!(
                    "{} bytes ({}), crc32c {:08x}, in {}",
                    snap.data_len,
                    output::human_bytes(snap.data_len),
                    snap.data_crc32c,
                    file.display()
                ),
                None => "none".to_string(),
            };
            lines.push(format!("snapshot data   {data}"));
        }
    }
    let count = (s.last_index + 1).saturating_sub(s.first_index);
    lines.push(format!(
        "log             first index {}, last index {} ({count} entries)",
        s.first_index, s.last_index
    ));
    let total: u64 = s.files.iter().map(|f| f.size_bytes).sum();
    lines.push(format!(
        "files           {}, {total} bytes ({})",
        s.files.len(),
        output::human_bytes(total)
    ));
    for f in &s.files {
        let range = if f.entries == 0 {
            format!("no entries (base index {})", f.base_index)
        } else {
            format!("index {}..={}", f.base_index, f.last_index)
        };
        lines.push(format!(
            "  {:<12} {:<28} {:>6} entries  {:>12} bytes ({})",
            f.name,
            range,
            f.entries,
            f.size_bytes,
            output::human_bytes(f.size_bytes)
        ));
    }
    lines.push(format!(
        "tail damage     {}",
        s.tail_damage.as_deref().unwrap_or("none")
    ));
    lines.push(format!(
        "open            {}",
        match &s.open_error {
            None => "ok (default recovery mode)".to_string(),
            Some(e) => format!("will fail: {e}"),
        }
    ));
    if s.leftover_files.is_empty() {
        lines.push("leftover files  none".to_string());
    } else {
        lines.push(format!(
            "leftover files  {} (open removes them)",
            s.leftover_files.len()
        ));
        for f in &s.leftover_files {
            lines.push(format!("  {}", f.display()));
        }
    }
    lines
}

/// Which copy of the meta state is in use, and what the other holds, on one line.
pub fn meta_copies(m: &MetaCopiesInfo) -> String {
    let other = match (&m.other_sequence, &m.other_damage) {
        (Some(seq), _) => format!("older (sequence {seq})"),
        (None, Some(damage)) => format!("DAMAGED {damage}"),
        (None, None) => m.other.clone(),
    };
    format!(
        "copy {} in use (sequence {}); copy {}: {other}",
        m.in_use,
        m.sequence,
        3 - m.in_use
    )
}
