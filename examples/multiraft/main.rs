//! Multi-Raft on one `raftwal::Engine` per node, end to end.
//!
//! Run it with `cargo run --release --example multiraft` (`-- --help` for the flags).
//!
//! Three nodes in one process, connected by channels. Each node is an `Engine` hosting every
//! group (64 by default), each group a raft-rs `RawNode` over the group's `GroupStorage`, driven
//! the TiKV way with raft-rs async ready: one raft thread collects every group's Ready into one
//! `WriteBatch`, a writer thread persists it with one `Engine::write` (one journal flush for
//! all groups), and the Readies' persisted messages go out only once that write is durable
//! (module `node`). A client proposes puts to every group's leader; node 2 is stopped (engine
//! closed), the others keep going, node 2 is reopened from its root and its catch-up timed. The
//! report gives writes/s, commits per second, groups and entries per commit, and the catch-up
//! time, then checks every group's state machine on every node; the exit status is non-zero if
//! a check fails.
//!
//! `tests/multiraft.rs` runs the same flow, smaller.

mod cluster;
mod node;
mod scenario;
mod sm;
mod store;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

#[derive(Parser, Debug)]
#[command(
    about = "Three raft-rs nodes, each an Engine hosting many groups, driven with async ready"
)]
struct Args {
    /// Raft groups on each node.
    #[arg(long, default_value_t = 64)]
    groups: u64,
    /// Proposals in each of the three phases (all up, node 2 down, node 2 back).
    #[arg(long, default_value_t = 100_000)]
    proposals: u64,
    /// Proposals outstanding per group.
    #[arg(long, default_value_t = 16)]
    window: usize,
    /// A new or empty directory for the nodes' engine roots (default: a temporary directory).
    /// Removed at the end unless --keep.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Keep the directory at the end.
    #[arg(long)]
    keep: bool,
    /// A short run: 5,000 proposals per phase.
    #[arg(long)]
    quick: bool,
    /// Entries applied between a group's snapshots (log compaction); 0: never.
    #[arg(long, default_value_t = 2_500)]
    compact_every: u64,
    /// Milliseconds per raft tick (elections take 10 to 20 ticks, heartbeats every 2).
    #[arg(long, default_value_t = 20)]
    tick_ms: u64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let (root, tmp) = match &args.dir {
        Some(d) if d.read_dir().is_ok_and(|mut e| e.next().is_some()) => {
            eprintln!(
                "{} is not empty: give a new or empty directory",
                d.display()
            );
            return ExitCode::FAILURE;
        }
        Some(d) => (d.clone(), None),
        None => match tempfile::Builder::new()
            .prefix("raftwal-multiraft-")
            .tempdir()
        {
            Ok(t) => (t.path().to_path_buf(), Some(t)),
            Err(e) => {
                eprintln!("cannot make a temporary directory: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    let opts = scenario::Options {
        root: root.clone(),
        groups: args.groups,
        proposals: if args.quick { 5_000 } else { args.proposals },
        window: args.window,
        tick: Duration::from_millis(args.tick_ms),
        compact_every: args.compact_every,
        limit: Duration::from_secs(120),
    };
    let result = scenario::run(&opts);
    match (args.keep, tmp) {
        (true, Some(t)) => println!("\nkept {}", t.keep().display()),
        (true, None) => println!("\nkept {}", root.display()),
        (false, Some(t)) => drop(t),
        (false, None) => {
            // Only what the run made: the directory was new or empty.
            if let Err(e) = std::fs::remove_dir_all(&root) {
                eprintln!("cannot remove {}: {e}", root.display());
            }
        }
    }
    match result {
        Ok(r) if r.problems.is_empty() => ExitCode::SUCCESS,
        Ok(_) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("\nthe run failed: {e}");
            ExitCode::FAILURE
        }
    }
}
