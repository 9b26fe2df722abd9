//! Pulling a backup archive from a running node over TCP (`raftwal snapshot save --endpoint`), in
//! the spirit of `etcdctl snapshot save`. A running node holds its WAL directory locked, so the
//! CLI cannot read it: the node streams the archive itself, out of
//! [`DiskStorage::snapshot_reader`](crate::DiskStorage::snapshot_reader).
//!
//! The protocol, one pull per connection (the one integer in it is **big-endian**):
//!
//! ```text
//! client -> server  8 bytes  magic "RWSNAP01" (PULL_MAGIC)
//! server -> client  1 byte   status: 0 = an archive follows, 1 = an error follows
//!   status 0:       ...      the archive: exactly the bytes `archive::write_archive` writes,
//!                            up to the server closing the connection (no length up front: the
//!                            archive is written as it is read from the snapshot)
//!   status 1:       4 bytes  N, the message length, u32 big-endian (a client refuses N above
//!                            65,536: MAX_ERROR_MESSAGE)
//!                   N bytes  the message, UTF-8; then the server closes the connection
//! ```
//!
//! The end of the archive is the end of the connection, so a server that stops half-way looks
//! like a complete, shorter stream: the client catches that (and any changed byte) by verifying
//! the whole archive — gzip trailer, tar end-of-archive marker, the SHA-256 of every member —
//! before it keeps it. It follows the gzip stream as it arrives, and refuses a byte after the
//! stream's end at once, and a stream holding more than the archive's `meta.json` allows (a
//! server that goes on sending would otherwise hold it for ever). A server whose `meta.json`
//! lies is bounded by the caller's [`PullLimits`] ([`pull_archive_within`]): a deadline on
//! the whole pull, a maximum size of the archive.
//!
//! A node usually serves other protocols on the same port: it reads the first 8 bytes of a
//! connection itself and, when they are [`PULL_MAGIC`], answers with [`serve_archive`] (or
//! [`serve_error`], e.g. before its first snapshot) and closes the connection.
//!
//! Owns: the wire protocol, both sides; the client's rules for what it keeps. Must never: keep
//! or leave behind a pulled archive that failed verification or was cut short (no `OUT`, no
//! `OUT.tmp`), overwrite an existing file, wait on the network without a time limit, trust a
//! length the server sends, or hold the archive in memory.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::store::snap::SnapshotReader;
use crate::sys::fsutil::NewFile;
use crate::tools::archive::{self, ArchiveMeta, ArchiveStatus};

/// What a client sends first: "a snapshot archive, please".
pub const PULL_MAGIC: [u8; 8] = *b"RWSNAP01";
/// Status byte: an archive follows, up to the end of the connection.
pub const STATUS_ARCHIVE: u8 = 0;
/// Status byte: a u32 big-endian length and that many bytes of UTF-8 message follow.
pub const STATUS_ERROR: u8 = 1;
/// Longest error message a client reads; [`serve_error`] cuts longer ones to this.
pub const MAX_ERROR_MESSAGE: usize = 64 << 10;

/// Buffer size for receiving.
const CHUNK: usize = 256 << 10;

// ---------------------------------------------------------------------------------------------
// server side
// ---------------------------------------------------------------------------------------------

/// An error writing to the client: the connection is the caller's, raftwal knows no address
/// for it (as for [`archive::write_archive`], `Error::Stream`).
fn send_failed(e: io::Error) -> Error {
    Error::Stream {
        op: "send the snapshot pull answer",
        source: e,
    }
}

/// Answers a pull (the node has read [`PULL_MAGIC`]): status 0, then the archive of the snapshot
/// `reader` streams, in bounded memory, then a flush. The caller closes the connection after it,
/// whatever the result. `progress(n)` is told of each `n` bytes of snapshot data sent.
///
/// A reader with no snapshot (index 0) is answered with [`serve_error`] and is
/// `Error::EmptySnapshot`. Once status 0 is sent, a failure (damaged snapshot data, a client that
/// went away) can only cut the stream short, which the client detects; it is returned here as
/// from [`archive::write_archive`] (errors writing to `out` are `Error::Stream`).
pub fn serve_archive<W: Write>(
    mut out: W,
    reader: &mut SnapshotReader,
    progress: &mut dyn FnMut(u64),
) -> Result<ArchiveMeta, Error> {
    if reader.metadata().index == 0 {
        let e = Error::EmptySnapshot("there is no snapshot to pull yet".to_string());
        // The client is told why; the error returned is the reason, whether or not that worked.
        let _ = serve_error(&mut out, &e.to_string());
        return Err(e);
    }
    out.write_all(&[STATUS_ARCHIVE]).map_err(send_failed)?;
    let to_client = archive::Dest::Stream("send the snapshot archive");
    let meta = archive::write_archive_to(&mut out, &to_client, reader, progress)?;
    out.flush().map_err(send_failed)?;
    Ok(meta)
}

/// Answers a pull with an error: status 1, the message's length (u32 big-endian) and the
/// message, cut to [`MAX_ERROR_MESSAGE`] bytes (at a character boundary), then a flush. The
/// caller closes the connection. Errors writing to `out` are `Error::Stream`.
pub fn serve_error<W: Write>(mut out: W, message: &str) -> Result<(), Error> {
    let mut end = message.len().min(MAX_ERROR_MESSAGE);
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    let body = &message.as_bytes()[..end];
    // `end` is at most MAX_ERROR_MESSAGE (64 KiB), which fits a u32.
    let len = u32::try_from(body.len()).unwrap_or(u32::MAX);
    let mut answer = Vec::with_capacity(5 + body.len());
    answer.push(STATUS_ERROR);
    answer.extend_from_slice(&len.to_be_bytes());
    answer.extend_from_slice(body);
    out.write_all(&answer).map_err(send_failed)?;
    out.flush().map_err(send_failed)
}

// ---------------------------------------------------------------------------------------------
// client side
// ---------------------------------------------------------------------------------------------

/// Bounds a caller puts on one whole pull, beyond the `timeout` on each step. A peer can keep
/// within that timeout and within the archive its own `meta.json` describes while the pull
/// goes on for ever: a trickle, or a `meta.json` that claims a `state.bin` of exabytes. Only the
/// caller knows how large an archive it expects and how long it may wait.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PullLimits {
    /// The most archive bytes the pull takes from the node (what `OUT` would hold): a larger
    /// archive is refused before the byte past this is written. `None`: bounded only by what
    /// the archive's `meta.json` allows.
    pub max_bytes: Option<u64>,
    /// The longest the pull may take from its start to the node closing the connection after
    /// the archive (resolving, connecting, receiving; the verification of what was received,
    /// at most `max_bytes`, is local and not counted). `None`: only `timeout` on each step.
    pub deadline: Option<Duration>,
}

/// A pull's time limits: `timeout` on each step, and the caller's deadline on the whole.
struct Clock {
    timeout: Duration,
    /// The deadline as the caller gave it, and the instant it passes (`None`: no deadline,
    /// or one too far away to be an instant).
    deadline: Option<(Duration, Instant)>,
}

impl Clock {
    fn new(timeout: Duration, deadline: Option<Duration>) -> Clock {
        let now = Instant::now();
        Clock {
            timeout,
            deadline: deadline.and_then(|d| now.checked_add(d).map(|at| (d, at))),
        }
    }

    /// The longest the next step may wait: `timeout`, less as the deadline nears; `None` once
    /// the deadline has passed.
    fn wait(&self) -> Option<Duration> {
        match self.deadline {
            None => Some(self.timeout),
            Some((_, at)) => at
                .checked_duration_since(Instant::now())
                .filter(|left| !left.is_zero())
                .map(|left| left.min(self.timeout)),
        }
    }

    /// `Error::Network` for step `op` with `addr`; a timeout says how long was waited, or that
    /// the pull's deadline passed.
    fn network(&self, op: &'static str, addr: &str, e: io::Error) -> Error {
        let source = match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => match self.deadline {
                Some((d, _)) if self.wait().is_none() => io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("the pull's deadline of {d:?} passed"),
                ),
                _ => io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("timed out: nothing within {:?}", self.timeout),
                ),
            },
            _ => e,
        };
        Error::Network {
            op,
            addr: addr.to_string(),
            source,
        }
    }

    /// With a deadline, sets the connection's read and write timeouts to the next step's wait
    /// (step `op`'s error once the deadline has passed); without one they stay `timeout`.
    fn arm(&self, conn: &TcpStream, op: &'static str, addr: &str) -> Result<()> {
        if self.deadline.is_none() {
            return Ok(());
        }
        let wait = self
            .wait()
            .ok_or_else(|| self.network(op, addr, io::ErrorKind::TimedOut.into()))?;
        conn.set_read_timeout(Some(wait))
            .and_then(|()| conn.set_write_timeout(Some(wait)))
            .map_err(|e| self.network("set timeouts on the connection to", addr, e))
    }
}

/// A protocol violation by the server.
fn protocol(op: &'static str, addr: &str, reason: String) -> Error {
    Error::Network {
        op,
        addr: addr.to_string(),
        source: io::Error::new(io::ErrorKind::InvalidData, reason),
    }
}

/// The addresses `addr` resolves to. With a deadline the resolver (which has no time limit of
/// ours) runs on a thread of its own, waited for at most the clock's wait; when that passes
/// first the thread is left to finish and its answer is dropped. Without one, or when no thread
/// can be started, it runs here.
fn resolve(addr: &str, clock: &Clock) -> Result<Vec<SocketAddr>> {
    const OP: &str = "resolve";
    let lookup = |name: &str| name.to_socket_addrs().map(|a| a.collect::<Vec<_>>());
    if clock.deadline.is_none() {
        return lookup(addr).map_err(|e| clock.network(OP, addr, e));
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let name = addr.to_string();
    let started = std::thread::Builder::new()
        .name("raftwal-resolve".into())
        .spawn(move || {
            // The receiver is gone once the wait is over: the answer is not wanted then.
            let _ = tx.send(lookup(&name));
        });
    if started.is_err() {
        return lookup(addr).map_err(|e| clock.network(OP, addr, e));
    }
    let wait = clock
        .wait()
        .ok_or_else(|| clock.network(OP, addr, io::ErrorKind::TimedOut.into()))?;
    match rx.recv_timeout(wait) {
        Ok(found) => found.map_err(|e| clock.network(OP, addr, e)),
        Err(_) => Err(clock.network(OP, addr, io::ErrorKind::TimedOut.into())),
    }
}

/// Resolves `addr` and connects to the first of its addresses that answers within the clock's
/// wait, with `timeout` as the read and write timeout of the connection.
fn connect(addr: &str, clock: &Clock) -> Result<TcpStream> {
    const OP: &str = "connect to";
    let addrs = resolve(addr, clock)?;
    let mut last = None;
    for a in &addrs {
        let Some(wait) = clock.wait() else {
            return Err(clock.network(OP, addr, io::ErrorKind::TimedOut.into()));
        };
        match TcpStream::connect_timeout(a, wait) {
            Ok(conn) => {
                conn.set_read_timeout(Some(clock.timeout))
                    .and_then(|()| conn.set_write_timeout(Some(clock.timeout)))
                    .map_err(|e| clock.network("set timeouts on the connection to", addr, e))?;
                return Ok(conn);
            }
            Err(e) => last = Some(e),
        }
    }
    let e = last.unwrap_or_else(|| {
        io::Error::new(io::ErrorKind::NotFound, "the name resolves to no address")
    });
    Err(clock.network(OP, addr, e))
}

/// Fills `buf` from the connection within the clock: each read waits at most the clock's wait
/// (so a peer sending a byte at a time is still held to the deadline); a connection closed
/// early is described as `early`. Errors are step `op`'s.
fn read_exact(
    conn: &mut TcpStream,
    buf: &mut [u8],
    early: &str,
    clock: &Clock,
    (op, addr): (&'static str, &str),
) -> Result<()> {
    let mut at = 0;
    while at < buf.len() {
        clock.arm(conn, op, addr)?;
        match conn.read(&mut buf[at..]) {
            Ok(0) => {
                let e = io::Error::new(io::ErrorKind::UnexpectedEof, early);
                return Err(clock.network(op, addr, e));
            }
            Ok(n) => at += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(clock.network(op, addr, e)),
        }
    }
    Ok(())
}

/// Reads the rest of a status-1 answer into `Error::Remote` (or the error reading it).
fn remote_error(conn: &mut TcpStream, addr: &str, clock: &Clock) -> Error {
    const OP: &str = "read the error message from";
    let mut len = [0u8; 4];
    if let Err(e) = read_exact(
        conn,
        &mut len,
        "the connection closed inside the error message's length",
        clock,
        (OP, addr),
    ) {
        return e;
    }
    let len = u32::from_be_bytes(len);
    let Some(len) = usize::try_from(len)
        .ok()
        .filter(|&n| n <= MAX_ERROR_MESSAGE)
    else {
        return protocol(
            OP,
            addr,
            format!(
                "an error message of {len} bytes is longer than the {MAX_ERROR_MESSAGE}-byte limit"
            ),
        );
    };
    let mut message = vec![0u8; len];
    if let Err(e) = read_exact(
        conn,
        &mut message,
        "the connection closed inside the error message",
        clock,
        (OP, addr),
    ) {
        return e;
    }
    // The message goes to a terminal as one line: control characters are shown escaped.
    let reason: String = String::from_utf8_lossy(&message)
        .chars()
        .map(|c| {
            if c.is_control() {
                c.escape_debug().to_string()
            } else {
                c.to_string()
            }
        })
        .collect();
    Error::Remote {
        addr: addr.to_string(),
        reason: if reason.is_empty() {
            "(no message)".to_string()
        } else {
            reason
        },
    }
}

/// Where a pull's gzip stream decodes to: its first bytes kept until they tell the most an
/// archive with that `meta.json` can hold ([`archive::longest_archive`]), then only counted,
/// and refused past that (a peer sending a gzip stream that never ends).
#[derive(Default)]
struct Bounded {
    /// The first header and `meta.json`, while the bound is not known.
    head: Vec<u8>,
    longest: Option<u64>,
    taken: u64,
    /// Why the stream was refused, once it is.
    refused: Option<String>,
}

impl Write for Bounded {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.taken += buf.len() as u64;
        if self.longest.is_none() {
            // `head` grows only to the first header and a `meta.json` within its limit.
            self.head.extend_from_slice(buf);
            match archive::longest_archive(&self.head) {
                Ok(None) => {}
                Ok(Some(longest)) => {
                    self.longest = Some(longest);
                    self.head = Vec::new();
                }
                Err(reason) => self.refused = Some(reason),
            }
        }
        if let Some(longest) = self.longest.filter(|&l| self.taken > l) {
            self.refused = Some(format!(
                "its gzip stream holds more than {longest} bytes, more than its meta.json allows"
            ));
        }
        match &self.refused {
            Some(reason) => Err(io::Error::new(io::ErrorKind::InvalidData, reason.clone())),
            None => Ok(buf.len()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Receives the archive into `file` up to the server closing the connection. The gzip stream
/// is followed as it arrives (decoded and dropped): a byte after its end is refused at once
/// (`Error::InvalidArchive` naming `out`), so a server that goes on sending after the archive
/// (a trickle that never ends) cannot hold the pull for ever; each read still waits at most
/// the clock's wait. A stream that does not decode is refused as soon as it does not (the
/// server may go on sending after it too); damage the decoder does not see (a changed byte
/// inside a member, a cut) is left to the verification of the whole file, which names it.
/// An archive of more than `max_bytes` is refused before the byte past them is written.
fn receive(
    conn: &mut TcpStream,
    file: &mut impl Write,
    (tmp, out): (&Path, &Path),
    addr: &str,
    (clock, max_bytes): (&Clock, Option<u64>),
    progress: &mut dyn FnMut(u64),
) -> Result<()> {
    const OP: &str = "receive the archive from";
    let mut buf = vec![0u8; CHUNK];
    let mut gz = flate2::write::GzDecoder::new(Bounded::default());
    let refused = |reason: String| Error::InvalidArchive {
        path: out.to_path_buf(),
        reason: format!("as received from {addr} (not kept): {reason}"),
    };
    let mut received = 0u64;
    loop {
        clock.arm(conn, OP, addr)?;
        let n = match conn.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(clock.network(OP, addr, e)),
        };
        let mut taken = 0;
        while taken < n {
            match gz.write(&buf[taken..n]) {
                // The gzip stream has ended: the rest is past the archive.
                Ok(0) => break,
                Ok(k) => taken += k,
                // More than the archive can hold (the gzip stream may go on for ever).
                Err(_) if gz.get_ref().refused.is_some() => {
                    let reason = gz.get_mut().refused.take().unwrap_or_default();
                    return Err(refused(reason));
                }
                // No archive follows (the server may go on sending for ever).
                Err(e) => return Err(refused(format!("not a gzip stream: {e}"))),
            }
        }
        // Counted inside the gzip stream: bytes after it are refused below as such.
        received += taken as u64;
        if let Some(max) = max_bytes.filter(|&max| received > max) {
            let e = io::Error::new(
                io::ErrorKind::FileTooLarge,
                format!("the archive is larger than the {max} bytes this pull takes at most"),
            );
            return Err(clock.network(OP, addr, e));
        }
        file.write_all(&buf[..taken])
            .map_err(|e| Error::io("write", tmp, e))?;
        progress(taken as u64);
        if taken < n {
            return Err(refused(format!(
                "{} byte(s) after the archive's gzip stream, before the node closed the connection",
                n - taken
            )));
        }
    }
}

/// Pulls a snapshot archive from the node at `addr` (`host:port`) into the new file `out`:
/// connects (each resolved address in turn, `timeout` each), sends [`PULL_MAGIC`], reads the
/// status, and streams the archive into `<out>.tmp`; that file is verified whole with
/// [`archive::verify_archive`] (read back through the page cache), and only then fsynced, moved
/// to `out` (never replacing a file) and the directory fsynced. `timeout` is also the longest wait for any read or write on the
/// connection. `progress(n)` is told of each `n` bytes of archive received.
///
/// An existing `out` or `<out>.tmp` is refused before connecting (`Error::Io` of kind
/// `AlreadyExists`). An error answer from the node is `Error::Remote` with its message; a failure
/// to resolve, connect, send or receive, a timeout, or a status byte other than 0 or 1 is
/// `Error::Network` naming `addr`; an archive that fails verification (cut short, a changed
/// byte) is `Error::InvalidArchive` naming `out` and `addr`. On any error neither `out` nor
/// `<out>.tmp` is left behind.
///
/// The pull is bounded only by `timeout` on each step and by what the archive's `meta.json`
/// allows: [`pull_archive_within`] takes the caller's bounds on the whole pull as well.
pub fn pull_archive(
    addr: &str,
    out: &Path,
    timeout: Duration,
    progress: &mut dyn FnMut(u64),
) -> Result<ArchiveStatus, Error> {
    pull_archive_within(addr, out, timeout, PullLimits::default(), progress)
}

/// [`pull_archive`] within the caller's `limits`: an archive larger than `limits.max_bytes` is
/// refused with no more than that written (`Error::Network` naming `addr`, kind
/// `FileTooLarge`: the caller's limit, not damage), and a pull not done when `limits.deadline`
/// passes is `Error::Network` (kind `TimedOut`, the message naming the deadline), whatever step
/// it was in, a byte at a time or not; either way neither `out` nor `<out>.tmp` is left behind.
/// A zero deadline or maximum size is `Error::InvalidArgument`.
pub fn pull_archive_within(
    addr: &str,
    out: &Path,
    timeout: Duration,
    limits: PullLimits,
    progress: &mut dyn FnMut(u64),
) -> Result<ArchiveStatus, Error> {
    if timeout.is_zero() {
        return Err(Error::InvalidArgument(
            "a snapshot pull needs a timeout above zero".to_string(),
        ));
    }
    if limits.deadline.is_some_and(|d| d.is_zero()) || limits.max_bytes == Some(0) {
        return Err(Error::InvalidArgument(
            "a snapshot pull's deadline and maximum size, when given, must be above zero"
                .to_string(),
        ));
    }
    let clock = Clock::new(timeout, limits.deadline);
    // Created first (it refuses an existing `out`, and a leftover `<out>.tmp`) so that nothing
    // reaches the node for a refused target; it is removed when `new` is dropped without a
    // commit, on every error below.
    let mut new = NewFile::create(out)?;
    let mut conn = connect(addr, &clock)?;
    clock.arm(&conn, "send the pull request to", addr)?;
    conn.write_all(&PULL_MAGIC)
        .and_then(|()| conn.flush())
        .map_err(|e| clock.network("send the pull request to", addr, e))?;
    let mut status = [0u8; 1];
    read_exact(
        &mut conn,
        &mut status,
        "the connection closed before the status byte (is it a raftwal node?)",
        &clock,
        ("read the answer from", addr),
    )?;
    match status[0] {
        STATUS_ARCHIVE => {}
        STATUS_ERROR => return Err(remote_error(&mut conn, addr, &clock)),
        other => {
            return Err(protocol(
                "read the answer from",
                addr,
                format!(
                    "status byte 0x{other:02x} is neither 0 (archive) nor 1 (error): is it a raftwal node?"
                ),
            ))
        }
    }
    let tmp = new.tmp_path().to_path_buf();
    receive(
        &mut conn,
        new.file(),
        (&tmp, out),
        addr,
        (&clock, limits.max_bytes),
        progress,
    )?;
    drop(conn);
    // Verified through the page cache; `commit` fsyncs before the file takes its name.
    let status = archive::verify_archive(&tmp, &mut |_| {}).map_err(|e| match e {
        Error::InvalidArchive { reason, .. } => Error::InvalidArchive {
            path: out.to_path_buf(),
            reason: format!("as received from {addr} (not kept): {reason}"),
        },
        other => other,
    })?;
    new.commit()?;
    Ok(status)
}
