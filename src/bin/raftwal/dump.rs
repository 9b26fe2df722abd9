//! `raftwal dump DIR [--from I] [--to J] [--json]`: entries `I..=J` (both included; by default the
//! whole log from the first index to the last), every checksum verified as they are read.
//!
//! Text: one line per entry, `key=value` fields —
//! `index=.. term=.. type=.. data_len=.. data=<preview> context_len=..` — the preview is the first
//! 32 bytes, quoted and escaped when they are printable UTF-8, `0x` hex otherwise, `...` when cut;
//! conf change entries also get `conf_change="..."`, decoded; a non-empty context also gets
//! `context=<preview>`. `--json`: JSON lines, one object per entry,
//! `{"index","term","entry_type","data_hex","context_hex"}`, with data and context in full as
//! lower-case hex.
//!
//! `raftwal dump ROOT --group ID [...]` dumps group `ID` of an engine root as an opened engine
//! would serve it: from the group's files, then from the journal's records not yet in them.
//!
//! Owns: the range rules (outside `[first_index, last_index]` is an error before anything is
//! printed) and the entry formats. Must never: hold the whole range in memory, or change the
//! directory.

use std::fmt::Write as _;
use std::io::IsTerminal;
use std::path::PathBuf;

use protobuf::Message as _;
use raft::prelude::{ConfChange, ConfChangeV2, Entry, EntryType};

use serde::Serialize;

use crate::output::{self, CmdResult, Failure, Out, Progress};

/// Entries read per call into the inspector.
const CHUNK: u64 = 4096;
/// Bytes of data shown in a text line.
const PREVIEW: usize = 32;
/// A dump this long shows a progress bar (when stdout is not the terminal).
const PROGRESS_MIN_ENTRIES: u64 = 1_000_000;

/// Print entries --from I to --to J (both included) as text, or JSON lines with --json (read-only).
#[derive(clap::Args)]
pub struct Args {
    /// The WAL directory (holding wal.meta), or an engine root (with --group)
    dir: PathBuf,
    /// With an engine root: the group to dump (needed)
    #[arg(long, value_name = "ID")]
    group: Option<u64>,
    /// First index to print [default: the log's first index]
    #[arg(long, value_name = "I")]
    from: Option<u64>,
    /// Last index to print, included [default: the log's last index]
    #[arg(long, value_name = "J")]
    to: Option<u64>,
    /// One JSON object per line: index, term, entry_type, data_hex, context_hex
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub key: output::KeyArg,
}

#[derive(Serialize)]
struct JsonEntry {
    index: u64,
    term: u64,
    entry_type: String,
    data_hex: String,
    context_hex: String,
}

/// Where the entries come from: a WAL directory, or one group of an engine root.
enum Log {
    Dir(raftwal::inspect::Inspector),
    Group(raftwal::inspect::engine::EngineInspector),
}

impl Log {
    fn open(args: &Args) -> Result<Log, Failure> {
        if output::is_engine_root(&args.dir, args.group)? {
            let id = output::need_group(&args.dir, args.group)?;
            Ok(Log::Group(output::open_engine(&args.dir, Some(id))?))
        } else {
            Ok(Log::Dir(output::open_inspector(&args.dir)?))
        }
    }

    fn first_last(&self) -> Result<(u64, u64), Failure> {
        match self {
            Log::Dir(i) => Ok((i.summary().first_index, i.summary().last_index)),
            Log::Group(e) => Ok(e.first_last()?),
        }
    }

    /// For a WAL directory whose log ends early at damage: that damage, and whether a default
    /// open would fail on it (the damage is then at or below the commit index).
    fn tail_damage(&self) -> Option<(&str, bool)> {
        match self {
            Log::Dir(i) => {
                let s = i.summary();
                s.tail_damage
                    .as_deref()
                    .map(|d| (d, s.open_error.is_some()))
            }
            Log::Group(_) => None,
        }
    }

    /// A WAL directory whose meta page a live store rewrote since it was read (an engine
    /// root's reads ride out a live engine on their own).
    fn changed_since_open(&self) -> bool {
        match self {
            Log::Dir(i) => i.changed_since_open(),
            Log::Group(_) => false,
        }
    }

    fn entries(&self, lo: u64, hi: u64) -> Result<Vec<Entry>, Failure> {
        Ok(match self {
            Log::Dir(i) => i.entries(lo, hi)?,
            Log::Group(e) => e.entries(lo, hi)?,
        })
    }
}

pub fn run(args: Args) -> CmdResult {
    let mut log = Log::open(&args)?;
    let (first, last) = log.first_last()?;
    let from = args.from.unwrap_or(first);
    let mut to = args.to.unwrap_or(last);
    // A log that ends early at damage: the entries up to it, then the damage (exit code 1),
    // when the range asked for reaches past it, or when open would fail on it (damage at or
    // below the commit index; a torn tail that open cuts is not part of the log).
    let mut tail_failure = None;
    if let Some((damage, open_fails)) = log.tail_damage() {
        if (to > last && from <= last.saturating_add(1)) || (args.to.is_none() && open_fails) {
            let failure = Failure::damage(format!(
                "the log ends at index {last}, damaged after it: {damage}"
            ));
            if from > last {
                // Nothing readable in the range: only the damage.
                return Err(failure);
            }
            to = last;
            tail_failure = Some(failure);
        }
    }
    if args.from.is_some() || args.to.is_some() {
        if from > to {
            return Err(Failure::usage(format!("--from {from} is after --to {to}")));
        }
        if last < first {
            return Err(Failure::usage(format!(
                "the log holds no entries (first index {first}, last index {last})"
            )));
        }
        if from < first || to > last {
            return Err(Failure::usage(format!(
                "range {from}..={to} is outside the log: it holds {first}..={last}"
            )));
        }
    }
    let mut out = Out::new();
    let count = to.saturating_add(1).saturating_sub(from);
    let progress = Progress::items(
        count,
        count >= PROGRESS_MIN_ENTRIES && !std::io::stdout().is_terminal(),
        "dump",
    );
    let print = |out: &mut Out, e: &Entry| {
        if args.json {
            out.json_line(&JsonEntry {
                index: e.index,
                term: e.term,
                entry_type: format!("{:?}", e.get_entry_type()),
                data_hex: hex::encode(&e.data),
                context_hex: hex::encode(&e.context),
            })
        } else {
            out.line(text_line(e))
        }
    };
    let mut reread = 1;
    let mut lo = from;
    while lo <= to {
        let hi = to.saturating_add(1).min(lo.saturating_add(CHUNK));
        let read = log.entries(lo, hi);
        if read.is_err() && reread < output::LIVE_READS && log.changed_since_open() {
            // A live store changed the directory under the read (a log file recycled in
            // place): the same chunk from a new read of it.
            reread += 1;
            std::thread::sleep(output::LIVE_PAUSE);
            log = Log::open(&args)?;
            continue;
        }
        match read {
            Ok(chunk) => {
                for e in &chunk {
                    print(&mut out, e)?;
                }
            }
            Err(chunk_error) => {
                // Damage in this chunk: the entries before it one by one, then the error
                // (of the first entry that cannot be read, which names it).
                progress.finish();
                let mut error = chunk_error;
                for i in lo..hi {
                    match log.entries(i, i + 1) {
                        Ok(one) => {
                            for e in &one {
                                print(&mut out, e)?;
                            }
                        }
                        Err(e) => {
                            error = e;
                            break;
                        }
                    }
                }
                out.finish()?;
                return Err(error);
            }
        }
        progress.inc(hi - lo);
        lo = hi;
    }
    progress.finish();
    out.finish()?;
    tail_failure.map_or(Ok(()), Err)
}

/// One entry as a text line.
fn text_line(e: &Entry) -> String {
    let kind = e.get_entry_type();
    let mut line = format!(
        "index={} term={} type={kind:?} data_len={} data={} context_len={}",
        e.index,
        e.term,
        e.data.len(),
        output::preview(&e.data, PREVIEW),
        e.context.len()
    );
    if !e.context.is_empty() {
        let _ = write!(line, " context={}", output::preview(&e.context, PREVIEW));
    }
    if let Some(change) = conf_change(kind, &e.data) {
        let _ = write!(line, " conf_change=\"{change}\"");
    }
    line
}

/// A conf change entry's change, decoded (`None` for other entries and undecodable data).
fn conf_change(kind: EntryType, data: &[u8]) -> Option<String> {
    match kind {
        EntryType::EntryNormal => None,
        EntryType::EntryConfChange => {
            let cc = ConfChange::parse_from_bytes(data).ok()?;
            Some(format!("{:?} {}", cc.get_change_type(), cc.node_id))
        }
        EntryType::EntryConfChangeV2 => {
            let cc = ConfChangeV2::parse_from_bytes(data).ok()?;
            let changes: Vec<String> = cc
                .get_changes()
                .iter()
                .map(|c| format!("{:?} {}", c.get_change_type(), c.node_id))
                .collect();
            Some(format!(
                "{}; transition {:?}",
                changes.join(", "),
                cc.get_transition()
            ))
        }
    }
}
