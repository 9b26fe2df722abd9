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
//! raftwal snapshot save --endpoint ADDR OUT.tar.gz [--timeout SECS] [--deadline SECS]
//!                      [--max-size BYTES] [--json]
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
//! refused target, an internal error: kind `invariant`, a bug in raftwal). Errors are one line on stderr, `raftwal: <message>`; results go to stdout.
//! With `--json`, a failure is also one JSON object on stdout,
//! `{"ok": false, "error": {"kind", "message", "exit_code", "path"?, "offset"?}}` (inside the
//! report for `inspect` and `verify`, the last line for `dump`).
//!
//! `--key-file PATH` (or `RAFTWAL_KEY_FILE`) gives the key of an encrypted store to the commands
//! that read or write one: `inspect`, `verify`, `dump`, `repair`, `snapshot save DIR`,
//! `snapshot restore` (archives and pulls are plaintext: the others take no key).
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
/// Exit codes: 0 success, 1 damage found, 2 bad input or any other error. With --json, a
/// failure is also one JSON object on stdout: {"ok": false, "error": {...}}.
#[derive(Parser)]
#[command(name = "raftwal", version)]
struct Cli {
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

impl Command {
    /// Whether the command was asked for JSON output.
    fn json(&self) -> bool {
        match self {
            Command::Inspect(a) => a.json,
            Command::Verify(a) => a.json,
            Command::Dump(a) => a.json,
            Command::Repair(a) => a.json,
            Command::Snapshot(c) => c.json(),
        }
    }
}

fn run(command: Command) -> CmdResult {
    match command {
        Command::Inspect(a) => a.key.load().and_then(|()| inspect::run(a)),
        Command::Verify(a) => a.key.load().and_then(|()| verify::run(a)),
        Command::Dump(a) => a.key.load().and_then(|()| dump::run(a)),
        Command::Repair(a) => a.key.load().and_then(|()| repair::run(a)),
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
    let json = cli.command.json();
    match panic::catch_unwind(AssertUnwindSafe(|| run(cli.command))) {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(failure)) => failure.report(json),
        Err(_) => {
            if json {
                let failure = Failure::usage("internal error (a bug, please report it)");
                let doc = serde_json::json!({ "ok": false, "error": failure.json() });
                let _ = writeln!(std::io::stdout().lock(), "{doc}");
            }
            ExitCode::from(2)
        }
    }
}

/// Help and version go out as clap writes them; an argument error becomes one line with the
/// command's usage (exit code 2), and a JSON object on stdout when `--json` is among the
/// arguments.
fn usage_error(e: clap::Error) -> ExitCode {
    let json = std::env::args_os().skip(1).any(|a| a == "--json");
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
            Failure::usage(format!("{message}{usage}")).report(json)
        }
    }
}
