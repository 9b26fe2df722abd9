//! `raftwal snapshot save|status|verify|restore`: backup archives of a directory's snapshot, or
//! of a running node's (`save --endpoint`).
//!
//! `save ROOT --group ID` saves group `ID` of an engine root: its snapshot as an opened engine
//! would serve it (one installed through the journal included).
//!
//! Owns: the arguments and the printing; the archive itself (its members, hashes, refusal
//! rules) is `raftwal::archive`, the pull from a node `raftwal::endpoint`. Must never: overwrite an existing file or directory, or change
//! the directory it saves from or the archive it reads.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::time::Duration;

use raftwal::archive::{self, ArchiveMeta, ArchiveStatus, RestoreOptions};
use raftwal::endpoint::{self, PullLimits};
use serde::Serialize;

use crate::output::{self, CmdResult, Failure, Out, Progress};

/// How long `save --endpoint` waits to connect, or on any read or write, by default.
const PULL_TIMEOUT_SECS: u64 = 30;

/// Backup archives of a directory's snapshot: save, status, verify, restore.
#[derive(clap::Subcommand)]
pub enum Command {
    /// Write the current snapshot of a directory (DIR OUT), or of a running node
    /// (--endpoint ADDR OUT), to a new archive (.tar.gz); never overwrites
    Save {
        /// The WAL directory (holding wal.meta), or an engine root with --group; with
        /// --endpoint, the one path given is OUT
        #[arg(value_name = "DIR")]
        dir: Option<PathBuf>,
        /// The archive to create (must not exist)
        #[arg(value_name = "OUT")]
        out: Option<PathBuf>,
        /// With an engine root: the group whose snapshot to save (needed)
        #[arg(long, value_name = "ID", conflicts_with = "endpoint")]
        group: Option<u64>,
        /// Pull the archive from a running node listening at ADDR (host:port) instead
        #[arg(long, value_name = "ADDR")]
        endpoint: Option<String>,
        /// With --endpoint: give up after SECS seconds without progress (to connect, or on
        /// any read or write) [default: 30]
        #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
        timeout: Option<u64>,
        /// With --endpoint: give up once the pull has taken SECS seconds in all (a node that
        /// keeps sending within --timeout) [default: none]
        #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
        deadline: Option<u64>,
        /// With --endpoint: refuse an archive larger than BYTES, writing no more than that
        /// [default: none, only what the archive's meta.json allows]
        #[arg(long, value_name = "BYTES", value_parser = clap::value_parser!(u64).range(1..))]
        max_size: Option<u64>,
        /// Print as JSON
        #[arg(long)]
        json: bool,
        /// With DIR (not --endpoint: a node sends its snapshot decrypted)
        #[command(flatten)]
        key: output::KeyArg,
    },
    /// Show an archive's index, term, membership, size and sha256 (read-only)
    Status {
        /// The archive
        file: PathBuf,
        /// Print as JSON
        #[arg(long)]
        json: bool,
    },
    /// Check every hash in an archive; exit code 1 if it is damaged (read-only)
    Verify {
        /// The archive
        file: PathBuf,
        /// Print as JSON
        #[arg(long)]
        json: bool,
    },
    /// Create a new WAL directory whose snapshot is the archive's (verified first)
    Restore {
        /// The archive
        file: PathBuf,
        /// The directory to create; an existing non-empty one is refused
        new_dir: PathBuf,
        /// Raft id to record in the new directory's meta page
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
        raft_id: Option<u64>,
        /// New membership: the voters of the restored snapshot's conf state
        #[arg(long, value_name = "1,2,3", value_delimiter = ',', num_args = 1,
              value_parser = clap::value_parser!(u64).range(1..))]
        voters: Option<Vec<u64>>,
        /// With a key, the new store is encrypted under it
        #[command(flatten)]
        key: output::KeyArg,
    },
}

impl Command {
    /// Whether the command was asked for JSON output.
    pub fn json(&self) -> bool {
        match self {
            Command::Save { json, .. } | Command::Status { json, .. } => *json,
            Command::Verify { json, .. } => *json,
            Command::Restore { .. } => false,
        }
    }
}

/// The usage of `snapshot save`, for its own argument errors.
const SAVE_USAGE: &str =
    "raftwal snapshot save DIR OUT | raftwal snapshot save --endpoint ADDR OUT";

pub fn run(cmd: Command) -> CmdResult {
    match cmd {
        Command::Save {
            dir,
            out,
            group,
            endpoint,
            timeout,
            deadline,
            max_size,
            json,
            key,
        } => {
            let usage = |m: &str| Failure::usage(format!("{m} (usage: {SAVE_USAGE})"));
            match (endpoint, dir, out) {
                (Some(_), Some(_), Some(_)) => Err(usage(
                    "snapshot save takes a directory or --endpoint, not both",
                )),
                (Some(_), None, None) => Err(usage("missing OUT, the archive to create")),
                (Some(_), _, _) if key.key_file.is_some() => Err(usage(
                    "--key-file does not apply to --endpoint: the node sends its snapshot decrypted",
                )),
                // With --endpoint the one path given is OUT.
                (Some(endpoint), Some(out), None) | (Some(endpoint), None, Some(out)) => {
                    let timeout = Duration::from_secs(timeout.unwrap_or(PULL_TIMEOUT_SECS));
                    let limits = PullLimits {
                        max_bytes: max_size,
                        deadline: deadline.map(Duration::from_secs),
                    };
                    pull(&endpoint, (timeout, limits), &out, json)
                }
                (None, _, _) if timeout.is_some() => {
                    Err(usage("--timeout applies to --endpoint only"))
                }
                (None, _, _) if deadline.is_some() => {
                    Err(usage("--deadline applies to --endpoint only"))
                }
                (None, _, _) if max_size.is_some() => {
                    Err(usage("--max-size applies to --endpoint only"))
                }
                (None, Some(dir), Some(out)) => {
                    key.load()?;
                    save(&dir, group, &out, json)
                }
                (None, Some(dir), None) => Err(usage(&format!(
                    "missing OUT, the archive to create from {}",
                    dir.display()
                ))),
                (None, None, _) => Err(usage("missing DIR and OUT (or --endpoint ADDR OUT)")),
            }
        }
        Command::Status { file, json } => status(&file, json),
        Command::Verify { file, json } => verify(&file, json),
        Command::Restore {
            file,
            new_dir,
            raft_id,
            voters,
            key,
        } => {
            key.load()?;
            restore(&file, &new_dir, raft_id, voters)
        }
    }
}

/// What `snapshot save --json` prints: where the archive came from and went, what is in it.
/// Paths are shown lossily, as `output::shown` says.
#[derive(Serialize)]
struct SaveJson<'a> {
    archive: Cow<'a, str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dir: Option<Cow<'a, str>>,
    /// The group of the engine root `dir`.
    #[serde(skip_serializing_if = "Option::is_none")]
    group: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    endpoint: Option<&'a str>,
    /// Known when the archive was verified after it was written (a pull).
    #[serde(skip_serializing_if = "Option::is_none")]
    archive_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    archive_sha256: Option<&'a str>,
    #[serde(flatten)]
    meta: &'a ArchiveMeta,
}

fn save(dir: &Path, group: Option<u64>, out_path: &Path, json: bool) -> CmdResult {
    if output::is_engine_root(dir, group)? {
        let id = output::need_group(dir, group)?;
        let progress = Progress::bytes(0, "save");
        let result =
            archive::save_engine_group_snapshot(dir, id, output::key(), out_path, &mut |n| {
                progress.inc(n)
            });
        progress.finish();
        let meta = result.map_err(|e| output::engine_failure(dir, e))?;
        return print_saved(
            &SaveJson {
                archive: output::shown(out_path),
                dir: Some(output::shown(dir)),
                group: Some(id),
                endpoint: None,
                archive_bytes: None,
                archive_sha256: None,
                meta: &meta,
            },
            json,
        );
    }
    let snapshot_len = crate::output::open_inspector(dir)?
        .summary()
        .snapshot
        .as_ref()
        .map_or(0, |s| s.data_len);
    let progress = Progress::bytes(snapshot_len, "save");
    let result =
        archive::save_dir_snapshot_with_key(dir, crate::output::key(), out_path, &mut |n| {
            progress.inc(n)
        });
    progress.finish();
    let meta = result?;
    print_saved(
        &SaveJson {
            archive: output::shown(out_path),
            dir: Some(output::shown(dir)),
            group: None,
            endpoint: None,
            archive_bytes: None,
            archive_sha256: None,
            meta: &meta,
        },
        json,
    )
}

/// `snapshot save --endpoint`: the archive pulled from a running node, verified before it is kept.
fn pull(
    endpoint: &str,
    (timeout, limits): (Duration, PullLimits),
    out_path: &Path,
    json: bool,
) -> CmdResult {
    let progress = Progress::received("pull");
    let result = endpoint::pull_archive_within(endpoint, out_path, timeout, limits, &mut |n| {
        progress.inc(n)
    });
    progress.finish();
    let status = result?;
    print_saved(
        &SaveJson {
            archive: output::shown(out_path),
            dir: None,
            group: None,
            endpoint: Some(endpoint),
            archive_bytes: Some(status.archive_bytes),
            archive_sha256: Some(&status.archive_sha256),
            meta: &status.meta,
        },
        json,
    )
}

/// What `snapshot save` prints, from a directory or (`--endpoint`) from a node.
fn print_saved(saved: &SaveJson, json: bool) -> CmdResult {
    let mut out = Out::new();
    if json {
        out.json_pretty(saved)?;
        return out.finish();
    }
    let meta = saved.meta;
    let from = match (saved.endpoint, saved.group) {
        (Some(e), _) => format!(" from {e}"),
        (None, Some(g)) => format!(" of group {g}"),
        (None, None) => String::new(),
    };
    out.line(format!(
        "saved snapshot index {} term {} ({}, {} bytes of state){from} to {}",
        meta.index,
        meta.term,
        conf_state(meta),
        meta.size,
        saved.archive
    ))?;
    out.finish()
}

/// An archive's status as `--json` prints it: the archive's own fields, then its metadata.
#[derive(Serialize)]
struct StatusJson<'a> {
    archive: Cow<'a, str>,
    archive_bytes: u64,
    archive_sha256: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    ok: Option<bool>,
    #[serde(flatten)]
    meta: &'a ArchiveMeta,
}

fn status(file: &Path, json: bool) -> CmdResult {
    // An archive is described only once it has been checked whole: damage is exit code 1 here too.
    print_status(file, &checked(file, "status")?, json, None)
}

fn verify(file: &Path, json: bool) -> CmdResult {
    print_status(file, &checked(file, "verify")?, json, Some(true))
}

/// The archive, verified whole, with a progress bar for a large one.
fn checked(file: &Path, what: &str) -> Result<ArchiveStatus, Failure> {
    let progress = Progress::archive(file, what);
    let result = archive::verify_archive(file, &mut |n| progress.inc(n));
    progress.finish();
    Ok(result?)
}

fn print_status(file: &Path, s: &ArchiveStatus, json: bool, ok: Option<bool>) -> CmdResult {
    let mut out = Out::new();
    if json {
        out.json_pretty(&StatusJson {
            archive: output::shown(file),
            archive_bytes: s.archive_bytes,
            archive_sha256: &s.archive_sha256,
            ok,
            meta: &s.meta,
        })?;
        return out.finish();
    }
    let m = &s.meta;
    out.line(format!("archive         {}", file.display()))?;
    out.line(format!("archive bytes   {}", s.archive_bytes))?;
    out.line(format!("archive sha256  {}", s.archive_sha256))?;
    out.line(format!("format version  {}", m.format_version))?;
    out.line(format!("index           {}", m.index))?;
    out.line(format!("term            {}", m.term))?;
    out.line(format!("conf state      {}", conf_state(m)))?;
    out.line(format!(
        "state size      {} bytes ({})",
        m.size,
        output::human_bytes(m.size)
    ))?;
    out.line(format!("state sha256    {}", m.state_sha256))?;
    out.line(format!(
        "created         {} (unix {})",
        utc(m.created_unix_secs),
        m.created_unix_secs
    ))?;
    if ok == Some(true) {
        out.line("verify          ok")?;
    }
    out.finish()
}

fn restore(
    file: &Path,
    new_dir: &Path,
    raft_id: Option<u64>,
    voters: Option<Vec<u64>>,
) -> CmdResult {
    let progress = Progress::archive(file, "restore (verify, then install)");
    let opts = RestoreOptions { raft_id, voters };
    // With a key (`--key-file`, RAFTWAL_KEY_FILE) the new store is encrypted under it.
    let store = raftwal::Options {
        encryption_key: output::key(),
        ..Default::default()
    };
    let result =
        archive::restore_with_store_options(file, new_dir, &opts, &store, &mut |n| progress.inc(n));
    progress.finish();
    let meta = result?;
    if let (Some(id), None) = (raft_id, &opts.voters) {
        let cs = &meta.conf_state;
        if !cs.voters.contains(&id) && !cs.learners.contains(&id) {
            // Restored anyway: the node may be added to the cluster later (a conf change).
            eprintln!(
                "raftwal: warning: raft id {id} is not a member of the archive's conf state ({}): give --voters to restore a new cluster's membership",
                conf_state(&meta)
            );
        }
    }
    let membership = match &opts.voters {
        Some(v) => format!(
            "voters {} (the archive has {})",
            output::ids(v),
            conf_state(&meta)
        ),
        None => conf_state(&meta),
    };
    let mut out = Out::new();
    out.line(format!(
        "restored snapshot index {} term {} ({} bytes of state) into {}: {membership}{}{}",
        meta.index,
        meta.term,
        meta.size,
        new_dir.display(),
        raft_id.map_or(String::new(), |id| format!(", raft id {id}")),
        if store.encryption_key.is_some() {
            ", encrypted with the given key"
        } else {
            ""
        }
    ))?;
    out.finish()
}

/// The archive's conf state on one line.
fn conf_state(m: &ArchiveMeta) -> String {
    output::conf_state(&m.conf_state)
}

/// Seconds since the epoch as `YYYY-MM-DD hh:mm:ss UTC` (civil-from-days, H. Hinnant).
fn utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::utc;

    #[test]
    fn utc_formats_known_instants() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc(1_700_000_000), "2023-11-14 22:13:20 UTC");
    }
}
