//! `raftwal`: the operator CLI for raftwal directories.
//!
//! ```text
//! raftwal inspect DIR [--json]                 meta page, snapshot, files, index ranges, sizes
//! raftwal verify DIR [--json]                  every checksum of every file and the snapshot
//! raftwal dump DIR [--from I] [--to J] [--json]  entries I..=J as text, or JSON lines
//! raftwal snapshot save DIR OUT.tar.gz [--json]  the directory's snapshot as a backup archive
//! raftwal inspect|verify ROOT [--group ID] [--json]
//!                                              an engine root: engine.meta, the journal, every
//!                                              group (or one) before and after replay
//! raftwal dump ROOT --group ID [...]           a group's entries as an opened engine serves them
//! raftwal snapshot save ROOT --group ID OUT.tar.gz [--json]
//! raftwal snapshot save --endpoint ADDR OUT.tar.gz [--timeout SECS] [--json]
//!                                              the same, pulled from a running node over TCP
//! raftwal snapshot status FILE [--json]        an archive's index, term, membership, size, sha256
//! raftwal snapshot verify FILE [--json]        every hash in an archive
//! raftwal snapshot restore FILE NEW_DIR [--raft-id N] [--voters 1,2,3]
//! raftwal repair DIR --accept-data-loss [--json]
//!                                              cut the log at its first damage, lower the
//!                                              commit index to match (drops committed entries)
//! ```
//!
//! Exit codes: 0 success; 1 damage found (a checksum, a missing file, an invalid archive);
//! 2 anything else (bad arguments, a missing directory, an index out of range, I/O errors, a
//! refused target). Errors are one line on stderr, `raftwal: <message>`; results go to stdout.
//!
//! Owns: argument parsing and dispatch, and turning every outcome into an exit code. Must never:
//! change a WAL directory but through `repair` (and only with `--accept-data-loss`), or from a
//! read command (`inspect`, `verify`, `dump`, `snapshot status`,
//! `snapshot verify` only read, through `raftwal::inspect` and `raftwal::archive`), or panic.

mod dump;
mod engine;
mod inspect;
mod output;
mod repair;
mod snapshot;
mod verify;

use std::io::Write;
use std::panic::{self, AssertUnwindSafe};
use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::{Parser, Subcommand};

use output::{CmdResult, Failure};

/// Inspect, verify, dump, back up and restore raftwal WAL directories and engine roots.
///
/// Exit codes: 0 success, 1 damage found, 2 bad input or any other error.
#[derive(Parser)]
#[command(name = "raftwal", version)]
struct Cli {
    /// Key of an encrypted store: a file holding 32 raw bytes or 64 hex digits (also
    /// RAFTWAL_KEY_FILE).
    #[arg(long, global = true, value_name = "PATH", env = "RAFTWAL_KEY_FILE")]
    key_file: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Inspect(inspect::Args),
    Verify(verify::Args),
    Dump(dump::Args),
    Repair(repair::Args),
    #[command(subcommand)]
    Snapshot(snapshot::Command),
}

fn run(cli: Cli) -> CmdResult {
    if let Some(path) = &cli.key_file {
        output::set_key(output::read_key(path)?);
    }
    match cli.command {
        Command::Inspect(a) => inspect::run(a),
        Command::Verify(a) => verify::run(a),
        Command::Dump(a) => dump::run(a),
        Command::Repair(a) => repair::run(a),
        Command::Snapshot(c) => snapshot::run(c),
    }
}

fn main() -> ExitCode {
    // A bug must still end in one line, not a backtrace.
    panic::set_hook(Box::new(|info| {
        let info = info.to_string().replace('\n', " ");
        let _ = writeln!(
            std::io::stderr().lock(),
            "raftwal: internal error (a bug, please report it): {info}"
        );
    }));
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    match panic::catch_unwind(AssertUnwindSafe(|| run(cli))) {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(failure)) => failure.report(),
        Err(_) => ExitCode::from(2),
    }
}

/// Help and version go out as clap writes them; an argument error becomes one line with the
/// command's usage (exit code 2).
fn usage_error(e: clap::Error) -> ExitCode {
    match e.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            ExitCode::from(e.exit_code().clamp(0, 255) as u8)
        }
        _ => {
            let text = e.render().to_string();
            let first = text.lines().next().unwrap_or("invalid arguments");
            let mut message = first.strip_prefix("error: ").unwrap_or(first).to_string();
            // "the following required arguments were not provided:" lists them indented below.
            if message.ends_with(':') {
                let listed: Vec<&str> = text
                    .lines()
                    .skip(1)
                    .take_while(|l| l.starts_with("  "))
                    .map(str::trim)
                    .collect();
                if !listed.is_empty() {
                    message = format!("{message} {}", listed.join(", "));
                }
            }
            let usage = text
                .lines()
                .find_map(|l| l.trim().strip_prefix("Usage: "))
                .map(|u| format!(" (usage: {u})"))
                .unwrap_or_default();
            Failure::usage(format!("{message}{usage}")).report()
        }
    }
}
