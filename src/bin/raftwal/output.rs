//! What every command shares: the failure type and its exit code, stdout for results, progress
//! bars on stderr, and the small formatters (sizes, hex, data previews, conf states).
//!
//! Owns: the exit code policy (0 ok, 1 damage found, 2 anything else) and the rule that stdout
//! carries only results (text or JSON) while stderr carries errors and progress. Must never:
//! draw a progress bar unless stderr is a terminal, or let a closed pipe turn into a panic.

use std::fmt::Write as _;
use std::io::{self, BufWriter, IsTerminal, StdoutLock, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use raftwal::inspect::engine::EngineInspector;
use raftwal::inspect::ConfStateInfo;

/// Work smaller than this finishes in about a second: no progress bar.
const PROGRESS_MIN_BYTES: u64 = 64 << 20;

/// Reads of a WAL directory that `verify` and `dump` make when they meet damage in one a live
/// store changed since it was read (`Inspector::changed_since_open`), and the pause between
/// them (the engine root's reads ride out a live engine the same way, in the library).
pub const LIVE_READS: usize = 3;
pub const LIVE_PAUSE: std::time::Duration = std::time::Duration::from_millis(200);
/// A bar over a known total of bytes.
const BYTES_TEMPLATE: &str = "{msg} [{bar:40}] {bytes}/{total_bytes} ({eta})";
/// A bar over a known number of entries.
const ITEMS_TEMPLATE: &str = "{msg} [{bar:40}] {human_pos}/{human_len} entries ({eta})";
/// A counter of bytes whose total is not known up front.
const OPEN_TEMPLATE: &str = "{msg} {spinner} {bytes} of state ({bytes_per_sec})";
/// A counter of bytes received over the network, whose total is not known up front.
const RECEIVED_TEMPLATE: &str = "{msg} {spinner} {bytes} received ({bytes_per_sec})";

/// Why a command stopped early, and the exit code that says so.
#[derive(Debug)]
pub struct Failure {
    /// One line for stderr; `None` when there is nothing to say (stdout was closed by a reader
    /// such as `head`, which is not an error).
    message: Option<String>,
    code: u8,
    /// What went wrong, for `--json`: `usage`, `damage`, or the library error's kind
    /// (`io`, `corrupt`, `missing_file`, `invalid_archive`, `invariant`, ...).
    kind: &'static str,
    /// The file or directory the error names, when it names one.
    path: Option<PathBuf>,
    /// The offset in `path` where damage was found.
    offset: Option<u64>,
    /// Its JSON object is already on stdout (inside a report): `report` prints only the line.
    printed: bool,
}

impl Failure {
    fn new(message: impl Into<String>, code: u8, kind: &'static str) -> Failure {
        Failure {
            message: Some(message.into()),
            code,
            kind,
            path: None,
            offset: None,
            printed: false,
        }
    }

    /// Bad input from the operator (exit code 2).
    pub fn usage(message: impl Into<String>) -> Failure {
        Failure::new(message, 2, "usage")
    }

    /// Damage found (exit code 1), described by `message`.
    pub fn damage(message: impl Into<String>) -> Failure {
        Failure::new(message, 1, "damage")
    }

    /// Writing results to stdout failed. A closed pipe ends the command quietly.
    pub fn stdout(e: io::Error) -> Failure {
        if e.kind() == io::ErrorKind::BrokenPipe {
            Failure {
                message: None,
                code: 0,
                kind: "closed_stdout",
                path: None,
                offset: None,
                printed: true,
            }
        } else {
            Failure::new(format!("write to stdout: {e}"), 2, "io")
        }
    }

    /// A report could not be serialized as JSON (a bug: paths are shown lossily, see
    /// [`shown`]).
    pub fn serialize(e: serde_json::Error) -> Failure {
        Failure::new(format!("serialize the report as JSON: {e}"), 2, "invariant")
    }

    /// The failure as `--json` shows it: `{"kind", "message", "exit_code"}`, and `path` and
    /// `offset` when the error names them.
    pub fn json(&self) -> serde_json::Value {
        let mut error = serde_json::json!({
            "kind": self.kind,
            "message": self.line(),
            "exit_code": self.code,
        });
        if let Some(path) = &self.path {
            error["path"] = path.to_string_lossy().into();
        }
        if let Some(offset) = self.offset {
            error["offset"] = offset.into();
        }
        error
    }

    /// The message on one line, even when an error carries a newline inside.
    fn line(&self) -> String {
        self.message
            .as_deref()
            .unwrap_or_default()
            .replace('\n', " ")
    }

    /// Prints the message (one line on stderr) and, with `json`, the failure as one object on
    /// stdout, `{"ok": false, "error": {...}}` (unless a report carried it already); returns
    /// the exit code.
    pub fn report(self, json: bool) -> ExitCode {
        if self.message.is_none() {
            return ExitCode::from(self.code);
        }
        if json && !self.printed {
            let doc = serde_json::json!({ "ok": false, "error": self.json() });
            let mut out = io::stdout().lock();
            let _ = writeln!(out, "{doc}").and_then(|()| out.flush());
        }
        let _ = writeln!(io::stderr().lock(), "raftwal: {}", self.line());
        ExitCode::from(self.code)
    }
}

impl From<raftwal::Error> for Failure {
    /// Damage found on disk or in an archive is exit code 1; every other error (a missing
    /// directory, an index out of range, an I/O error, a refused target, a bug in raftwal:
    /// `invariant`) is exit code 2.
    fn from(e: raftwal::Error) -> Failure {
        use raftwal::Error as E;
        let (kind, path, offset) = match &e {
            E::Io { path, .. } => ("io", Some(path), None),
            E::Locked { path } => ("locked", Some(path), None),
            E::Corrupt { path, offset, .. } => ("corrupt", Some(path), Some(*offset)),
            E::MissingFile { path, .. } => ("missing_file", Some(path), None),
            E::UnsupportedVersion { path, .. } => ("unsupported_version", Some(path), None),
            E::Compacted { .. } => ("compacted", None, None),
            E::Unavailable { .. } => ("unavailable", None, None),
            E::SnapshotOutOfDate { .. } => ("snapshot_out_of_date", None, None),
            E::SnapshotTemporarilyUnavailable { .. } => {
                ("snapshot_temporarily_unavailable", None, None)
            }
            E::Encryption { path, .. } => ("encryption", Some(path), None),
            E::NoSnapshot { path } => ("no_snapshot", Some(path), None),
            E::EmptySnapshot(_) => ("empty_snapshot", None, None),
            E::InvalidArchive { path, .. } => ("invalid_archive", Some(path), None),
            E::InvalidAppend(_) => ("invalid_append", None, None),
            E::InvalidArgument(_) => ("invalid_argument", None, None),
            E::Invariant(_) => ("invariant", None, None),
            E::Stream { .. } => ("stream", None, None),
            E::Network { .. } => ("network", None, None),
            E::Remote { .. } => ("remote", None, None),
            E::Group { .. } => ("group", None, None),
            E::UnknownGroup { .. } => ("unknown_group", None, None),
            E::GroupExists { .. } => ("group_exists", None, None),
            E::Closed { .. } => ("closed", None, None),
            E::Poisoned { .. } => ("poisoned", None, None),
            E::SnapshotBuild { .. } => ("snapshot_build", None, None),
        };
        let code = match e {
            E::Corrupt { .. } | E::MissingFile { .. } | E::InvalidArchive { .. } => 1,
            _ => 2,
        };
        Failure {
            path: path.cloned(),
            offset,
            ..Failure::new(e.to_string(), code, kind)
        }
    }
}

/// What commands return.
pub type CmdResult = Result<(), Failure>;

/// Buffered stdout, for results only.
pub struct Out(BufWriter<StdoutLock<'static>>);

impl Out {
    pub fn new() -> Out {
        Out(BufWriter::with_capacity(64 << 10, io::stdout().lock()))
    }

    /// Writes one line.
    pub fn line(&mut self, s: impl std::fmt::Display) -> CmdResult {
        writeln!(self.0, "{s}").map_err(Failure::stdout)
    }

    /// Writes `value` as pretty JSON on its own. Serialized whole before any of it is
    /// written: a value that cannot be is a failure with nothing on stdout, never half a
    /// document.
    pub fn json_pretty(&mut self, value: &impl serde::Serialize) -> CmdResult {
        let doc = serde_json::to_vec_pretty(value).map_err(Failure::serialize)?;
        self.0.write_all(&doc).map_err(Failure::stdout)?;
        self.line("")
    }

    /// Writes `value` as pretty JSON; with a `failure`, the same object also carries
    /// `"ok": false` and the `"error"` (so `--json` prints one object), and the failure is
    /// returned, marked as printed.
    /// Prints a command's report: `value` as one JSON document (with `ok` and `error` when
    /// the command fails), or its text `lines`; then the command's result is `failure`.
    pub fn report(
        mut self,
        json: bool,
        value: &impl serde::Serialize,
        lines: impl FnOnce() -> Vec<String>,
        failure: Option<Failure>,
    ) -> CmdResult {
        if json {
            self.json_report(value, failure)?;
            return self.finish();
        }
        for line in lines() {
            self.line(line)?;
        }
        self.finish()?;
        failure.map_or(Ok(()), Err)
    }

    pub fn json_report(
        &mut self,
        value: &impl serde::Serialize,
        failure: Option<Failure>,
    ) -> CmdResult {
        let Some(mut failure) = failure else {
            return self.json_pretty(value);
        };
        let mut doc = serde_json::to_value(value).map_err(Failure::serialize)?;
        if let serde_json::Value::Object(fields) = &mut doc {
            fields.insert("ok".into(), false.into());
            fields.insert("error".into(), failure.json());
            failure.printed = true;
        }
        self.json_pretty(&doc)?;
        self.0.flush().map_err(Failure::stdout)?;
        Err(failure)
    }

    /// Writes `value` as one line of JSON (for JSON lines output), serialized whole first.
    pub fn json_line(&mut self, value: &impl serde::Serialize) -> CmdResult {
        let line = serde_json::to_vec(value).map_err(Failure::serialize)?;
        self.0.write_all(&line).map_err(Failure::stdout)?;
        self.line("")
    }

    pub fn finish(mut self) -> CmdResult {
        self.0.flush().map_err(Failure::stdout)
    }
}

/// A progress bar on stderr, shown only for large work on a terminal (never on stdout, so
/// `--json` output and pipes stay clean).
pub struct Progress {
    bar: Option<ProgressBar>,
    /// For work whose size is not known up front: the bar is drawn only once its position
    /// reaches this.
    reveal_at: Option<u64>,
}

impl Progress {
    /// A bar over `total` bytes, labelled `what`.
    pub fn bytes(total: u64, what: &str) -> Progress {
        Progress::new(
            Some(total),
            total >= PROGRESS_MIN_BYTES,
            what,
            BYTES_TEMPLATE,
        )
    }

    /// A counter of the bytes of `archive`'s `state.bin` processed: their total is known only
    /// once the archive is read, so it shows bytes and rate; shown when the archive is large.
    pub fn archive(archive: &Path, what: &str) -> Progress {
        let len = std::fs::metadata(archive).map_or(0, |m| m.len());
        Progress::new(None, len >= PROGRESS_MIN_BYTES, what, OPEN_TEMPLATE)
    }

    /// A counter of bytes received (an archive pulled from a node), labelled `what`: its total
    /// is not known, so it is drawn once as many bytes as make large work have come in.
    pub fn received(what: &str) -> Progress {
        let mut p = Progress::new(None, true, what, RECEIVED_TEMPLATE);
        if let Some(bar) = &p.bar {
            bar.set_draw_target(ProgressDrawTarget::hidden());
            p.reveal_at = Some(PROGRESS_MIN_BYTES);
        }
        p
    }

    /// A bar over `total` items (entries), labelled `what`; shown when `large`.
    pub fn items(total: u64, large: bool, what: &str) -> Progress {
        Progress::new(Some(total), large, what, ITEMS_TEMPLATE)
    }

    fn new(total: Option<u64>, large: bool, what: &str, template: &str) -> Progress {
        if !large || !io::stderr().is_terminal() {
            return Progress {
                bar: None,
                reveal_at: None,
            };
        }
        let bar = ProgressBar::with_draw_target(total, ProgressDrawTarget::stderr());
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(what.to_string());
        Progress {
            bar: Some(bar),
            reveal_at: None,
        }
    }

    /// Adds `n` to the position.
    pub fn inc(&self, n: u64) {
        if let Some(bar) = &self.bar {
            bar.inc(n);
            if let Some(at) = self.reveal_at {
                if bar.is_hidden() && bar.position() >= at {
                    bar.set_draw_target(ProgressDrawTarget::stderr());
                }
            }
        }
    }

    /// Removes the bar from the terminal.
    pub fn finish(self) {
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}

/// `1536` → `"1.5 KiB"`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// `1 file`, `2 files`; `1 entry`, `2 entries`.
pub fn count(n: u64, what: &str) -> String {
    match (n, what.strip_suffix('y')) {
        (1, _) => format!("1 {what}"),
        (_, Some(stem)) => format!("{n} {stem}ies"),
        (_, None) => format!("{n} {what}s"),
    }
}

/// A short, one-line view of `bytes`: quoted and escaped when its first `max` bytes are
/// printable UTF-8, `0x`-prefixed hex otherwise; `...` when cut.
pub fn preview(bytes: &[u8], max: usize) -> String {
    let cut = bytes.len() > max;
    let head = &bytes[..bytes.len().min(max)];
    let text = match std::str::from_utf8(head) {
        Ok(s) => Some(s),
        // A multi-byte character split by the cut: keep what precedes it.
        Err(e) if cut && e.error_len().is_none() => {
            std::str::from_utf8(&head[..e.valid_up_to()]).ok()
        }
        Err(_) => None,
    };
    let more = if cut { "..." } else { "" };
    match text {
        Some(s)
            if !s
                .chars()
                .any(|c| c.is_control() && !matches!(c, '\n' | '\t' | '\r')) =>
        {
            format!("\"{}\"{more}", s.escape_debug())
        }
        _ => format!("0x{}{more}", hex::encode(head)),
    }
}

/// `[1, 2, 3]` → `"1,2,3"`; empty → `"-"`.
pub fn ids(ids: &[u64]) -> String {
    if ids.is_empty() {
        return "-".to_string();
    }
    ids.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
}

/// A conf state on one line; the joint-consensus fields only when they are set.
pub fn conf_state(c: &ConfStateInfo) -> String {
    let mut s = format!("voters {} learners {}", ids(&c.voters), ids(&c.learners));
    if !c.voters_outgoing.is_empty() || !c.learners_next.is_empty() || c.auto_leave {
        let _ = write!(
            s,
            " voters_outgoing {} learners_next {} auto_leave {}",
            ids(&c.voters_outgoing),
            ids(&c.learners_next),
            c.auto_leave
        );
    }
    s
}

static KEY: std::sync::OnceLock<[u8; 32]> = std::sync::OnceLock::new();

/// The environment variable that stands for `--key-file` where `--key-file` is accepted.
pub const KEY_FILE_ENV: &str = "RAFTWAL_KEY_FILE";

/// `--key-file`, for the commands that read or write an encrypted store.
#[derive(clap::Args)]
pub struct KeyArg {
    /// Key of an encrypted store: a file holding 32 raw bytes or 64 hex digits [env:
    /// RAFTWAL_KEY_FILE]
    #[arg(long, value_name = "PATH")]
    pub key_file: Option<PathBuf>,
}

impl KeyArg {
    /// Reads the key named by `--key-file`, or else by `RAFTWAL_KEY_FILE`, for [`key`].
    pub fn load(&self) -> CmdResult {
        let path = self.key_file.clone().or_else(|| {
            std::env::var_os(KEY_FILE_ENV)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        });
        if let Some(path) = path {
            let _ = KEY.set(read_key(&path)?);
        }
        Ok(())
    }
}

/// Reads a key file: 32 raw bytes, or 64 hex digits (surrounding whitespace ignored).
pub fn read_key(path: &std::path::Path) -> Result<[u8; 32], Failure> {
    let bytes = std::fs::read(path)
        .map_err(|e| Failure::usage(format!("key file {}: {e}", path.display())))?;
    if let Ok(raw) = <[u8; 32]>::try_from(bytes.as_slice()) {
        return Ok(raw);
    }
    let text = String::from_utf8_lossy(&bytes);
    let hex = text.trim();
    let mut key = [0u8; 32];
    let ok = hex.len() == 64
        && hex.is_ascii()
        && key.iter_mut().enumerate().all(|(i, b)| {
            u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)
                .map(|v| *b = v)
                .is_ok()
        });
    if ok {
        Ok(key)
    } else {
        Err(Failure::usage(format!(
            "key file {}: expected 32 raw bytes or 64 hex digits",
            path.display()
        )))
    }
}

/// The `--key-file` key, if one was given.
pub fn key() -> Option<[u8; 32]> {
    KEY.get().copied()
}

/// A path as the reports show it, text or JSON: each byte sequence that is not UTF-8 as
/// U+FFFD (JSON strings are UTF-8; a script gets a document it can parse, and the path as
/// `display` shows it).
pub fn shown(path: &Path) -> std::borrow::Cow<'_, str> {
    path.to_string_lossy()
}

/// Opens a WAL directory read-only, with the `--key-file` key when one was given.
pub fn open_inspector(dir: &std::path::Path) -> Result<raftwal::inspect::Inspector, Failure> {
    Ok(raftwal::inspect::Inspector::open_with_key(dir, key())?)
}

/// Whether `path` is an engine root, for a command given `--group` or not: `--group` with a
/// WAL directory is a usage error.
pub fn is_engine_root(path: &Path, group: Option<u64>) -> Result<bool, Failure> {
    if raftwal::inspect::engine::is_engine_root(path) {
        return Ok(true);
    }
    match group {
        Some(_) => Err(Failure::usage(format!(
            "--group needs an engine root, and {} is not one (it has no engine.meta)",
            path.display()
        ))),
        None => Ok(false),
    }
}

/// The group a command that reads one group's log is for: `--group ID` is needed with an
/// engine root.
pub fn need_group(root: &Path, group: Option<u64>) -> Result<u64, Failure> {
    group.ok_or_else(|| {
        Failure::usage(format!(
            "{} is an engine root: name the group with --group ID (its groups: {})",
            root.display(),
            root_groups(root)
        ))
    })
}

/// Opens an engine root read-only (every group, or only `group`), with the `--key-file` key.
pub fn open_engine(root: &Path, group: Option<u64>) -> Result<EngineInspector, Failure> {
    let opened = match group {
        None => EngineInspector::open_with_key(root, key()),
        Some(id) => EngineInspector::open_group(root, key(), id),
    };
    opened.map_err(|e| engine_failure(root, e))
}

/// A failure about an engine root: an unknown group is named with the groups there are.
pub fn engine_failure(root: &Path, e: raftwal::Error) -> Failure {
    match e {
        raftwal::Error::UnknownGroup { group_id } => Failure::usage(format!(
            "no group {group_id} in the engine at {} (its groups: {})",
            root.display(),
            root_groups(root)
        )),
        e => e.into(),
    }
}

fn root_groups(root: &Path) -> String {
    ids(&raftwal::inspect::engine::group_ids(root).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preview_quotes_text_and_hexes_binary() {
        assert_eq!(preview(b"", 8), "\"\"");
        assert_eq!(preview(b"set a=1", 32), "\"set a=1\"");
        assert_eq!(preview(b"line\n\"q\"", 32), "\"line\\n\\\"q\\\"\"");
        assert_eq!(preview(b"abcdefgh", 4), "\"abcd\"...");
        assert_eq!(preview(&[0, 1, 0xff], 8), "0x0001ff");
        assert_eq!(preview(&[0, 1, 0xff], 2), "0x0001...");
        // "é" is two bytes; a cut in its middle keeps the text before it.
        assert_eq!(preview("aé".as_bytes(), 2), "\"a\"...");
    }

    #[test]
    fn progress_templates_parse() {
        for t in [
            BYTES_TEMPLATE,
            ITEMS_TEMPLATE,
            OPEN_TEMPLATE,
            RECEIVED_TEMPLATE,
        ] {
            assert!(ProgressStyle::with_template(t).is_ok(), "{t}");
        }
    }

    /// Damage is exit code 1; a bug in raftwal is not damage: its own kind, exit code 2.
    #[test]
    fn error_kinds_and_exit_codes() {
        let invariant = Failure::from(raftwal::Error::Invariant(
            "journal has no segment to write after rotation".to_string(),
        ));
        let v = invariant.json();
        assert_eq!(v["kind"], "invariant", "{v}");
        assert_eq!(v["exit_code"], 2, "{v}");
        assert!(v.get("path").is_none(), "{v}");
        let message = v["message"].as_str().unwrap_or_default();
        assert!(message.contains("a bug in raftwal"), "{message}");

        let stream = Failure::from(raftwal::Error::Stream {
            op: "write the archive",
            source: io::Error::from(io::ErrorKind::BrokenPipe),
        });
        let v = stream.json();
        assert_eq!(
            (v["kind"].as_str(), v["exit_code"].as_u64()),
            (Some("stream"), Some(2))
        );
        assert!(v.get("path").is_none(), "{v}");

        let corrupt = Failure::from(raftwal::Error::Corrupt {
            path: PathBuf::from("00001.wal"),
            offset: 64,
            reason: "checksum mismatch".to_string(),
        });
        let v = corrupt.json();
        assert_eq!(
            (v["kind"].as_str(), v["exit_code"].as_u64()),
            (Some("corrupt"), Some(1))
        );
        assert_eq!(
            (v["path"].as_str(), v["offset"].as_u64()),
            (Some("00001.wal"), Some(64))
        );
    }

    #[test]
    fn human_bytes_uses_binary_units() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(5 << 20), "5.0 MiB");
    }
}
