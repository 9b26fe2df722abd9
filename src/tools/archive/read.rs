//! Reading and verifying a backup archive: [`ArchiveReader`], a strict, streaming reader of the
//! gzip'd tar (restore's second pass reads through it too), and [`verify_archive`] /
//! [`archive_status`].
//!
//! Owns: every check of an archive (members' names, order and types, tar header checksums,
//! sizes, `meta.json`, `SHA256SUMS`, truncation, the end-of-archive marker, bytes after it or
//! after the gzip stream) and telling damage (`Error::InvalidArchive`) from a file that cannot
//! be read (`Error::Io`).
//! Must never: write anything, hold `state.bin` whole in memory, or pass an archive it has not
//! checked to its last byte.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use flate2::bufread::GzDecoder;
use sha2::{Digest, Sha256};

use super::{
    invalid, sha256_hex, ArchiveStatus, ConfStateJson, MetaJson, VersionOnly, BLOCK, CHUNK,
    FORMAT_VERSION, GZIP_MAGIC, MEMBERS, META_LIMIT, META_MEMBER, STATE_MEMBER, SUMS_LIMIT,
    SUMS_MEMBER,
};
use crate::error::{Error, Result};
use crate::store::log_file::MAX_INDEX;
use crate::store::snap;
use crate::sys::fsutil;

/// The archive file as read: every byte is hashed and counted, and an I/O error of the file
/// itself is remembered (so it is reported as I/O, not as a damaged archive).
struct FileTap {
    file: File,
    /// Hash of the whole file (when wanted).
    sha: Option<Sha256>,
    bytes: u64,
    io_failed: bool,
}

impl Read for FileTap {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.file.read(buf) {
            Ok(n) => {
                if let Some(sha) = self.sha.as_mut() {
                    sha.update(&buf[..n]);
                }
                self.bytes += n as u64;
                Ok(n)
            }
            Err(e) => {
                if e.kind() != io::ErrorKind::Interrupted {
                    self.io_failed = true;
                }
                Err(e)
            }
        }
    }
}

/// A strict, streaming reader of an archive: tar blocks out of the gzip stream, member by member.
pub(super) struct ArchiveReader {
    path: PathBuf,
    gz: GzDecoder<BufReader<FileTap>>,
    /// Member being read, its data bytes left and the padding after them.
    member: &'static str,
    left: u64,
    pad: u64,
}

/// What the end of an archive proves.
pub(super) struct Finished {
    /// Empty when the file was not hashed.
    archive_sha256: String,
    archive_bytes: u64,
}

fn is_zero(b: &[u8]) -> bool {
    b.iter().all(|&x| x == 0)
}

/// The tar header checksum: the sum of the header's bytes with the checksum field as spaces.
fn tar_cksum(block: &[u8]) -> u32 {
    block
        .iter()
        .enumerate()
        .map(|(i, &b)| if (148..156).contains(&i) { b' ' } else { b } as u32)
        .sum()
}

impl ArchiveReader {
    /// Opens the archive; `hash_file` asks for the SHA-256 of the whole file.
    pub(super) fn open(path: &Path, hash_file: bool) -> Result<ArchiveReader> {
        let file = File::open(path).map_err(|e| Error::io("open archive", path, e))?;
        let meta = file
            .metadata()
            .map_err(|e| Error::io("stat archive", path, e))?;
        if !meta.is_file() {
            // Not an archive at all (a directory, a device): bad input, not damage.
            let what = if meta.is_dir() {
                "a directory, not an archive file"
            } else {
                "not a regular file"
            };
            return Err(Error::io("open archive", path, io::Error::other(what)));
        }
        if meta.len() == 0 {
            return Err(invalid(path, "truncated: the file is empty"));
        }
        // gzip's two magic bytes (RFC 1952): anything else was never an archive.
        let mut magic = [0u8; 2];
        let n = file
            .read_at(&mut magic, 0)
            .map_err(|e| Error::io("read archive", path, e))?;
        if magic[..n] != GZIP_MAGIC[..n] {
            return Err(invalid(
                path,
                format!(
                    "not a gzip archive (it starts with {}, not 1f8b)",
                    hex::encode(&magic[..n])
                ),
            ));
        }
        let tap = FileTap {
            file,
            sha: hash_file.then(Sha256::new),
            bytes: 0,
            io_failed: false,
        };
        Ok(ArchiveReader {
            path: path.to_path_buf(),
            gz: GzDecoder::new(BufReader::with_capacity(CHUNK, tap)),
            member: "",
            left: 0,
            pad: 0,
        })
    }

    pub(super) fn invalid(&self, reason: impl Into<String>) -> Error {
        invalid(&self.path, reason)
    }

    /// Turns an error reading the decompressed stream into a typed one: I/O if the file failed,
    /// otherwise a damaged archive, saying where.
    fn read_error(&self, e: io::Error, place: &str) -> Error {
        if self.gz.get_ref().get_ref().io_failed {
            return Error::io("read archive", &self.path, e);
        }
        match e.kind() {
            io::ErrorKind::UnexpectedEof => {
                self.invalid(format!("truncated: the gzip stream ends {place} ({e})"))
            }
            _ => self.invalid(format!("damaged gzip stream {place}: {e}")),
        }
    }

    /// Reads one tar block; `None` when the stream ends cleanly before it.
    fn read_block(&mut self, place: &str) -> Result<Option<[u8; BLOCK]>> {
        let mut block = [0u8; BLOCK];
        let n =
            fsutil::read_full(&mut self.gz, &mut block).map_err(|e| self.read_error(e, place))?;
        match n {
            0 => Ok(None),
            BLOCK => Ok(Some(block)),
            n => Err(self.invalid(format!(
                "truncated: the tar stream ends {n} bytes into a 512-byte block {place}"
            ))),
        }
    }

    /// Checks a header block's checksum and returns its member name, size and type.
    fn header_name(
        &self,
        block: &[u8; BLOCK],
        place: &str,
    ) -> Result<(String, u64, tar::EntryType)> {
        let h = tar::Header::from_byte_slice(block);
        let computed = tar_cksum(block);
        match h.cksum() {
            Ok(stored) if stored == computed => {}
            Ok(stored) => {
                return Err(self.invalid(format!(
                    "tar header checksum mismatch {place}: stored {stored}, computed {computed}"
                )))
            }
            Err(_) => {
                return Err(self.invalid(format!(
                    "no tar header {place}: its checksum field is not a number"
                )))
            }
        }
        let name = String::from_utf8_lossy(&h.path_bytes()).into_owned();
        let size = h
            .entry_size()
            .map_err(|e| self.invalid(format!("member {name:?}: unreadable size: {e}")))?;
        Ok((name, size, h.entry_type()))
    }

    /// Reads the header of the next member, which must be the regular file `expected`, and
    /// returns its size.
    pub(super) fn next_member(&mut self, expected: &'static str, position: usize) -> Result<u64> {
        let place = format!("where the header of {expected} belongs");
        let Some(block) = self.read_block(&place)? else {
            return Err(self.invalid(format!(
                "truncated: the archive ends before member {expected} (no tar end-of-archive marker)"
            )));
        };
        if is_zero(&block) {
            return Err(self.invalid(format!(
                "member {expected} is missing: the tar archive ends after {position} member(s)"
            )));
        }
        let (name, size, kind) = self.header_name(&block, &place)?;
        if kind.is_pax_local_extensions()
            || kind.is_pax_global_extensions()
            || kind.is_gnu_longname()
            || kind.is_gnu_longlink()
        {
            return Err(self.invalid(format!(
                "a tar extension header (type {:?}) {place}: an archive holds plain members only",
                kind.as_byte() as char
            )));
        }
        if name != expected {
            return Err(match MEMBERS.iter().position(|m| *m == name) {
                Some(p) if p < position => self.invalid(format!(
                    "member {name} appears twice (found where {expected} belongs)"
                )),
                Some(_) => self.invalid(format!(
                    "member {expected} is missing or out of order: found {name} in its place (members are meta.json, state.bin, SHA256SUMS, in this order)"
                )),
                None => self.invalid(format!(
                    "unknown member {name:?} where {expected} belongs (an archive holds only meta.json, state.bin and SHA256SUMS)"
                )),
            });
        }
        if kind != tar::EntryType::Regular {
            return Err(self.invalid(format!(
                "member {name} is not a regular file (tar type {:?})",
                kind.as_byte() as char
            )));
        }
        self.member = expected;
        self.left = size;
        self.pad = (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64;
        Ok(size)
    }

    /// Reads data of the current member (0 at its end). A stream that ends early is an error.
    pub(super) fn read_data(&mut self, buf: &mut [u8]) -> Result<usize> {
        if self.left == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = buf.len().min(self.left.min(usize::MAX as u64) as usize);
        loop {
            match self.gz.read(&mut buf[..want]) {
                Ok(0) => {
                    return Err(self.invalid(format!(
                        "truncated: the tar stream ends {} bytes before the end of {}",
                        self.left, self.member
                    )))
                }
                Ok(n) => {
                    self.left -= n as u64;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let place = format!("inside {}", self.member);
                    return Err(self.read_error(e, &place));
                }
            }
        }
    }

    /// Skips the padding after the current member's data (which must all have been read).
    fn end_member(&mut self) -> Result<()> {
        let mut pad = [0u8; BLOCK];
        let want = self.pad as usize;
        let place = format!("in the padding after {}", self.member);
        let n = fsutil::read_full(&mut self.gz, &mut pad[..want])
            .map_err(|e| self.read_error(e, &place))?;
        if n != want {
            return Err(self.invalid(format!(
                "truncated: the tar stream ends in the padding after {}",
                self.member
            )));
        }
        self.pad = 0;
        Ok(())
    }

    /// Reads the whole current member (at most `limit` bytes) and its padding.
    fn read_small(&mut self, limit: u64) -> Result<Vec<u8>> {
        if self.left > limit {
            return Err(self.invalid(format!(
                "member {} is {} bytes; at most {limit} are allowed",
                self.member, self.left
            )));
        }
        let mut data = vec![0u8; self.left as usize];
        let mut at = 0;
        while at < data.len() {
            at += self.read_data(&mut data[at..])?;
        }
        self.end_member()?;
        Ok(data)
    }

    /// Reads the first member, `meta.json` (with its padding): its bytes and their SHA-256.
    pub(super) fn read_meta(&mut self) -> Result<(Vec<u8>, String)> {
        self.next_member(META_MEMBER, 0)?;
        let bytes = self.read_small(META_LIMIT)?;
        let sha = sha256_hex(&bytes);
        Ok((bytes, sha))
    }

    /// Once all of `state.bin` is read: its padding, then `SHA256SUMS` checked against
    /// `meta_sha` and `state_sha`, then [`ArchiveReader::finish`].
    pub(super) fn finish_with_sums(mut self, meta_sha: &str, state_sha: &str) -> Result<Finished> {
        self.end_member()?;
        self.next_member(SUMS_MEMBER, 2)?;
        let sums = self.read_small(SUMS_LIMIT)?;
        check_sums(&self.path, &sums, meta_sha, state_sha)?;
        self.finish()
    }

    /// Checks the end: the two zero blocks of the tar end-of-archive marker, nothing but zero
    /// padding after them, the gzip trailer (CRC and length), and no byte after the gzip stream.
    fn finish(mut self) -> Result<Finished> {
        let place = "where the tar end-of-archive marker belongs";
        let Some(block) = self.read_block(place)? else {
            return Err(self.invalid(
                "truncated: the archive ends after SHA256SUMS without the tar end-of-archive marker",
            ));
        };
        if !is_zero(&block) {
            return Err(match self.header_name(&block, place) {
                Ok((name, _, _)) if MEMBERS.contains(&name.as_str()) => {
                    self.invalid(format!("member {name} appears twice (after SHA256SUMS)"))
                }
                Ok((name, _, _)) => self.invalid(format!(
                    "unknown member {name:?} after SHA256SUMS (an archive holds only meta.json, state.bin and SHA256SUMS)"
                )),
                Err(_) => self.invalid(
                    "data after SHA256SUMS where the tar end-of-archive marker belongs",
                ),
            });
        }
        let Some(block) = self.read_block(place)? else {
            return Err(
                self.invalid("truncated: the tar end-of-archive marker has one zero block of two")
            );
        };
        if !is_zero(&block) {
            return Err(self.invalid("data after the first block of the tar end-of-archive marker"));
        }
        // Zero blocks may pad the tar stream (to a record size); anything else is data after
        // the end of the archive.
        let mut buf = vec![0u8; 64 << 10];
        let mut after = 0u64;
        loop {
            let n = fsutil::read_full(&mut self.gz, &mut buf)
                .map_err(|e| self.read_error(e, "after the tar end-of-archive marker"))?;
            if n == 0 {
                break;
            }
            if let Some(k) = buf[..n].iter().position(|&b| b != 0) {
                return Err(self.invalid(format!(
                    "data after the tar end-of-archive marker: a non-zero byte {} bytes after it, inside the gzip stream",
                    after + k as u64
                )));
            }
            after += n as u64;
            // A tar record pads to at most 10 KiB (GNU tar; 64 KiB at the largest blocking
            // factor): more is no padding but a gzip bomb (1 GiB of zeros in a 1.2 MB file
            // once verified, read whole by every status, verify and restore).
            if after > MAX_PADDING {
                return Err(self.invalid(format!(
                    "more than {MAX_PADDING} zero bytes after the tar end-of-archive marker: no tar pads so much"
                )));
            }
        }
        // The gzip stream ended, its trailer checked. Nothing may follow it.
        let path = self.path;
        let mut rest = self.gz.into_inner();
        let mut trailing = 0u64;
        let mut second_member = false;
        loop {
            let chunk = match rest.fill_buf() {
                Ok(c) => c,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::io("read archive", &path, e)),
            };
            if chunk.is_empty() {
                break;
            }
            if trailing == 0 && chunk.starts_with(&[0x1f, 0x8b]) {
                second_member = true;
            }
            trailing += chunk.len() as u64;
            let n = chunk.len();
            rest.consume(n);
        }
        if trailing > 0 {
            return Err(invalid(
                &path,
                if second_member {
                    format!("a second gzip member follows the archive's gzip stream ({trailing} bytes after it)")
                } else {
                    format!("{trailing} trailing byte(s) after the gzip stream")
                },
            ));
        }
        let tap = rest.into_inner();
        Ok(Finished {
            archive_sha256: tap
                .sha
                .map(|h| hex::encode(h.finalize()))
                .unwrap_or_default(),
            archive_bytes: tap.bytes,
        })
    }
}

/// Zero bytes allowed after the tar end-of-archive marker (record padding).
const MAX_PADDING: u64 = 64 << 10;

/// The most bytes an archive's tar stream (the gzip stream's content) can hold, from its first
/// bytes `head` as they arrive: `Ok(None)` until they hold the first header and `meta.json`;
/// then the three members at the sizes `meta.json` and the limits allow, their headers and
/// padding, the end-of-archive marker and the most padding after it. A pull bounds what it
/// takes from a peer by it (a peer could send a gzip stream that never ends). An archive that
/// cannot be one (the first member is not `meta.json`, or `meta.json` gives no size) is
/// `Err` with the reason. The whole archive is verified later, as any archive.
pub(crate) fn longest_archive(head: &[u8]) -> std::result::Result<Option<u64>, String> {
    let Some(block) = head.get(..BLOCK) else {
        return Ok(None);
    };
    let h = tar::Header::from_byte_slice(block);
    if h.path_bytes().as_ref() != META_MEMBER.as_bytes() {
        return Err(format!(
            "its first member is {:?}, not {META_MEMBER}",
            String::from_utf8_lossy(&h.path_bytes())
        ));
    }
    let meta_len = h
        .entry_size()
        .map_err(|e| format!("{META_MEMBER}: unreadable size: {e}"))?;
    if meta_len > META_LIMIT {
        return Err(format!(
            "{META_MEMBER} is {meta_len} bytes; at most {META_LIMIT} are allowed"
        ));
    }
    let Some(meta) = head.get(BLOCK..BLOCK + meta_len as usize) else {
        return Ok(None);
    };
    #[derive(serde::Deserialize)]
    struct SizeOnly {
        size: u64,
    }
    let state_len = serde_json::from_slice::<SizeOnly>(meta)
        .map_err(|e| format!("{META_MEMBER} gives no size of {STATE_MEMBER}: {e}"))?
        .size;
    let member = |len: u64| {
        (BLOCK as u64)
            .saturating_add(len.saturating_add(BLOCK as u64 - 1) / BLOCK as u64 * BLOCK as u64)
    };
    Ok(Some(
        member(meta_len)
            .saturating_add(member(state_len))
            .saturating_add(member(SUMS_LIMIT))
            .saturating_add(2 * BLOCK as u64)
            .saturating_add(MAX_PADDING),
    ))
}

/// Parses and checks `meta.json`.
fn parse_meta(path: &Path, bytes: &[u8]) -> Result<MetaJson> {
    let version: VersionOnly = serde_json::from_slice(bytes)
        .map_err(|e| invalid(path, format!("meta.json is not valid: {e}")))?;
    if version.format_version != FORMAT_VERSION {
        return Err(invalid(
            path,
            format!(
                "meta.json has format version {}; this build reads version {FORMAT_VERSION}",
                version.format_version
            ),
        ));
    }
    let meta: MetaJson = serde_json::from_slice(bytes)
        .map_err(|e| invalid(path, format!("meta.json is not valid: {e}")))?;
    if meta.index == 0 {
        return Err(invalid(
            path,
            "meta.json says index 0, which is no snapshot",
        ));
    }
    // What a restore refuses, refused here too: an archive that verifies restores.
    if meta.index > MAX_INDEX {
        return Err(invalid(
            path,
            format!(
                "meta.json says index {}, past the largest index a log holds ({MAX_INDEX})",
                meta.index
            ),
        ));
    }
    check_conf_state(&meta.conf_state).map_err(|why| {
        invalid(
            path,
            format!("meta.json's conf state {why}: raft-rs cannot start from it"),
        )
    })?;
    let record = crate::proto::ConfStateRecord::from(&meta.conf_state);
    // Measured for a plaintext store: a restore that encrypts checks the sealed form too.
    snap::check_header_fits(meta.index, meta.term, &record, meta.size, false).map_err(|e| {
        invalid(
            path,
            format!("meta.json's conf state cannot be stored in a snapshot file: {e}"),
        )
    })?;
    Ok(meta)
}

/// A conf state raft-rs can restore (`RawNode::new` panics on one it cannot): no node 0, no
/// node twice in a list, no learner that is a voter of either configuration, `learners_next`
/// only outgoing voters that are not incoming ones, `auto_leave` only in a joint
/// configuration.
fn check_conf_state(cs: &ConfStateJson) -> std::result::Result<(), String> {
    for (name, ids) in [
        ("voters", &cs.voters),
        ("learners", &cs.learners),
        ("voters_outgoing", &cs.voters_outgoing),
        ("learners_next", &cs.learners_next),
    ] {
        if ids.contains(&0) {
            return Err(format!("names node 0 among its {name}"));
        }
        let distinct: std::collections::BTreeSet<_> = ids.iter().collect();
        if distinct.len() != ids.len() {
            return Err(format!("names a node twice among its {name}"));
        }
    }
    if let Some(id) = cs
        .learners
        .iter()
        .find(|id| cs.voters.contains(id) || cs.voters_outgoing.contains(id))
    {
        return Err(format!("names node {id} both a learner and a voter"));
    }
    if let Some(id) = cs
        .learners_next
        .iter()
        .find(|id| !cs.voters_outgoing.contains(id) || cs.voters.contains(id))
    {
        return Err(format!(
            "names node {id} among learners_next, which holds outgoing voters that are not incoming ones"
        ));
    }
    if cs.auto_leave && cs.voters_outgoing.is_empty() {
        return Err("sets auto_leave outside a joint configuration".to_string());
    }
    Ok(())
}

fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Checks `SHA256SUMS`: one `sha256sum` line for each of `meta.json` and `state.bin`, no other
/// line, each hash matching.
fn check_sums(path: &Path, bytes: &[u8], meta_sha: &str, state_sha: &str) -> Result<()> {
    let text =
        std::str::from_utf8(bytes).map_err(|_| invalid(path, "SHA256SUMS is not UTF-8 text"))?;
    let Some(body) = text.strip_suffix('\n') else {
        return Err(invalid(
            path,
            "SHA256SUMS does not end with a newline (truncated?)",
        ));
    };
    let mut seen = [false; 2];
    for (n, line) in body.split('\n').enumerate() {
        let bad_line = || {
            invalid(
                path,
                format!(
                    "SHA256SUMS line {} is not `<sha256 hex>  <name>`: {line:?}",
                    n + 1
                ),
            )
        };
        let (hash, rest) = line.split_at_checked(64).ok_or_else(bad_line)?;
        let name = rest
            .strip_prefix("  ")
            .or_else(|| rest.strip_prefix(" *"))
            .ok_or_else(bad_line)?;
        if !is_sha256_hex(hash) {
            return Err(bad_line());
        }
        let (slot, computed) = match name {
            META_MEMBER => (0, meta_sha),
            STATE_MEMBER => (1, state_sha),
            other => {
                return Err(invalid(
                    path,
                    format!(
                        "SHA256SUMS lists {other:?}, which is not a hashed member of the archive"
                    ),
                ))
            }
        };
        if seen[slot] {
            return Err(invalid(path, format!("SHA256SUMS lists {name} twice")));
        }
        seen[slot] = true;
        if !hash.eq_ignore_ascii_case(computed) {
            return Err(invalid(
                path,
                format!("SHA-256 mismatch for {name}: SHA256SUMS says {hash}, the data hashes to {computed}"),
            ));
        }
    }
    for (i, name) in [META_MEMBER, STATE_MEMBER].iter().enumerate() {
        if !seen[i] {
            return Err(invalid(path, format!("SHA256SUMS has no line for {name}")));
        }
    }
    Ok(())
}

/// The result of a full verification pass, with what a second pass must find again.
pub(super) struct Verified {
    pub(super) status: ArchiveStatus,
    pub(super) meta_sha: String,
}

/// Verifies the whole archive; `hash_file` asks for the whole file's SHA-256 too (empty
/// otherwise).
pub(super) fn verify_full(
    path: &Path,
    hash_file: bool,
    progress: &mut dyn FnMut(u64),
) -> Result<Verified> {
    let mut r = ArchiveReader::open(path, hash_file)?;
    let (meta_bytes, meta_sha) = r.read_meta()?;
    let meta = parse_meta(path, &meta_bytes)?;

    let size = r.next_member(STATE_MEMBER, 1)?;
    if size != meta.size {
        return Err(r.invalid(format!(
            "meta.json says state.bin is {} bytes; the archive's state.bin is {size} bytes",
            meta.size
        )));
    }
    let mut sha = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = r.read_data(&mut buf)?;
        if n == 0 {
            break;
        }
        sha.update(&buf[..n]);
        progress(n as u64);
    }
    drop(buf);
    let state_sha = hex::encode(sha.finalize());
    let end = r.finish_with_sums(&meta_sha, &state_sha)?;
    Ok(Verified {
        status: ArchiveStatus {
            meta: meta.into_meta(state_sha),
            archive_sha256: end.archive_sha256,
            archive_bytes: end.archive_bytes,
        },
        meta_sha,
    })
}

/// Reads and fully verifies the archive at `path`, streaming, in bounded memory: exactly the
/// three members, each a regular file, in order; `meta.json` parsable, of this format version,
/// with the size `state.bin` has; every hash in `SHA256SUMS` matching and both members listed;
/// no truncation (the tar end-of-archive marker and the gzip trailer present and right); no
/// data after the tar end-of-archive marker but zero padding; no byte after the gzip stream
/// (so no second gzip member). `progress(n)` is told of each `n` bytes of `state.bin` checked.
/// Damage is `Error::InvalidArchive` with the reason; a file that cannot be read is `Error::Io`.
pub fn verify_archive(path: &Path, progress: &mut dyn FnMut(u64)) -> Result<ArchiveStatus, Error> {
    verify_full(path, true, progress).map(|v| v.status)
}

/// [`verify_archive`] without progress: what `snapshot status` shows (an archive is described
/// only once it has been checked whole).
pub fn archive_status(path: &Path) -> Result<ArchiveStatus, Error> {
    verify_archive(path, &mut |_| {})
}
