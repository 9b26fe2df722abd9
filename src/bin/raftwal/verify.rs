//! `raftwal verify DIR [--json]`: checks every checksum — every slot and payload of every log
//! file, and the snapshot file to its last byte — and names the first damage by file and offset.
//! An encrypted store needs its key (`--key-file`; without it the command is refused, exit code
//! 2), and with it every sealed payload and snapshot chunk is authenticated, as reads do.
//!
//! On an engine root, `raftwal verify ROOT [--group ID] [--json]` checks `engine.meta`, the
//! journal and every group (or one), and reports every damage it finds (module `engine`).
//!
//! Owns: reporting what was checked. Exit code 1 when damage is found (including a damaged tail,
//! which open would cut). Must never: change the directory, or repair anything.

use std::path::PathBuf;

use serde::Serialize;

use crate::output::{self, CmdResult, Out, Progress};

/// Check every checksum in every log file and the snapshot (of a WAL directory, or of an engine
/// root's journal and groups); exit code 1 on damage (read-only).
#[derive(clap::Args)]
pub struct Args {
    /// The WAL directory (holding wal.meta), or an engine root (holding engine.meta)
    dir: PathBuf,
    /// With an engine root: check the root's shared files and only this group
    #[arg(long, value_name = "ID")]
    group: Option<u64>,
    /// Print what was checked as JSON
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub key: output::KeyArg,
}

#[derive(Serialize)]
struct Report {
    dir: String,
    ok: bool,
    #[serde(flatten)]
    checked: raftwal::inspect::VerifyReport,
}

pub fn run(args: Args) -> CmdResult {
    if output::is_engine_root(&args.dir, args.group)? {
        return crate::engine::verify(&args.dir, args.group, args.json);
    }
    // Beside a live store, damage found may be a file it changed under the reads (a recycled
    // log file, a replaced snapshot): checked again on a new read, a few times, while the
    // store keeps changing the directory.
    let mut attempt = 1;
    let checked = loop {
        let inspector = crate::output::open_inspector(&args.dir)?;
        let progress = Progress::bytes(inspector.verify_len(), "verify");
        let result = inspector.verify(&mut |n| progress.inc(n));
        progress.finish();
        match result {
            Err(raftwal::Error::Corrupt { .. } | raftwal::Error::MissingFile { .. })
                if attempt < output::LIVE_READS && inspector.changed_since_open() =>
            {
                attempt += 1;
                std::thread::sleep(output::LIVE_PAUSE);
            }
            r => break r?,
        }
    };
    let mut out = Out::new();
    if args.json {
        out.json_pretty(&Report {
            dir: output::shown(&args.dir).into_owned(),
            ok: true,
            checked,
        })?;
    } else {
        out.line(format!(
            "checked {}, {}, {} payload bytes ({}), snapshot {} bytes ({}): ok",
            output::count(checked.files_checked, "file"),
            output::count(checked.entries_checked, "entry"),
            checked.payload_bytes_checked,
            output::human_bytes(checked.payload_bytes_checked),
            checked.snapshot_bytes_checked,
            output::human_bytes(checked.snapshot_bytes_checked),
        ))?;
    }
    out.finish()
}
