//! `raftwal`: the operator CLI for raftwal directories.
//!
//! The operator commands (inspect, verify, dump, snapshot save/status/verify/restore) are the
//! subject of the snapshots issue; until they land this binary only reports its version, and
//! refuses anything else with a non-zero exit code rather than pretending to act.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("--version") | Some("-V") => {
            println!("raftwal {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Some(cmd) => {
            eprintln!("raftwal: unknown command '{cmd}'");
            ExitCode::from(2)
        }
        None => {
            eprintln!("usage: raftwal --version");
            ExitCode::from(2)
        }
    }
}
