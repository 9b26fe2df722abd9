//! `raftwal repair DIR --accept-data-loss [--json]`: cuts the log at its first damage and lowers
//! the stored commit index (and checkpoint) to the last entry left, for a directory that open
//! refuses because the damage lies at or below the commit index. The node then catches up from
//! its leader.
//!
//! Owns: the refusal without `--accept-data-loss` (exit code 1, nothing changed, the one-line
//! message says what would be lost) and the report of what was done. Must never: change the
//! directory without the flag, or while a node or an engine holds it (the library takes the
//! locks).

use std::path::PathBuf;

use raftwal::repair::{self, RepairReport};

use crate::output::{self, CmdResult, Failure, Out};

/// Cut the log at its first damage and lower the commit index to match (loses data: needs
/// --accept-data-loss; the node then catches up from its leader).
#[derive(clap::Args)]
pub struct Args {
    /// The WAL directory (holding wal.meta)
    dir: PathBuf,
    /// Do it: drop every entry from the first damage on, committed ones included
    #[arg(long)]
    accept_data_loss: bool,
    /// Print the report as JSON (raftwal::repair::RepairReport)
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub key: output::KeyArg,
}

pub fn run(args: Args) -> CmdResult {
    if !args.dir.is_dir() {
        return Err(Failure::usage(format!(
            "{}: no such directory",
            args.dir.display()
        )));
    }
    let plan = repair::check(&args.dir, output::key())?;
    if plan.needed && !args.accept_data_loss {
        return Err(Failure::damage(format!(
            "refusing to repair {} without --accept-data-loss: it would {}",
            args.dir.display(),
            what(&plan)
        )));
    }
    let report = if plan.needed {
        repair::repair(&args.dir, output::key())?
    } else {
        plan
    };
    let mut out = Out::new();
    if args.json {
        out.json_pretty(&report)?;
    } else if report.done {
        out.line(format!(
            "repaired {}: {}",
            args.dir.display(),
            what(&report)
        ))?;
    } else {
        out.line(format!(
            "nothing to repair in {}: the log is whole up to index {} (commit index {})",
            args.dir.display(),
            report.last_index,
            report.commit_before
        ))?;
    }
    out.finish()
}

/// What a repair does (`r.done`) or would do, in one sentence.
fn what(r: &RepairReport) -> String {
    let change = |what: &str, from: u64, to: u64| {
        if r.done {
            format!("{what} lowered from {from} to {to}")
        } else {
            format!("lower the {what} from {from} to {to}")
        }
    };
    let mut s = if r.done {
        format!("log cut after index {}", r.last_index)
    } else {
        format!("cut the log after index {}", r.last_index)
    };
    if let Some(d) = &r.damage {
        s.push_str(&format!(" (first damage: {d})"));
    }
    if r.commit_after != r.commit_before {
        s.push_str(&format!(
            ", {} ({} committed entries lost; the node catches up from its leader)",
            change("commit index", r.commit_before, r.commit_after),
            r.committed_entries_lost()
        ));
    }
    if r.checkpoint_after != r.checkpoint_before {
        s.push_str(&format!(
            ", {}",
            change("checkpoint", r.checkpoint_before, r.checkpoint_after)
        ));
    }
    if !r.removed_files.is_empty() {
        let verb = if r.done { "removed" } else { "remove" };
        s.push_str(&format!(", {verb} {} file(s)", r.removed_files.len()));
    }
    s
}
