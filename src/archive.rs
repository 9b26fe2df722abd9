//! Backup archives of a snapshot (`raftwal snapshot save|status|verify|restore`), in the spirit of
//! Consul's snapshot archive: a gzip'd tar holding exactly three members, in this order:
//!
//! * `meta.json` — format version, index, term, conf state, size of `state.bin`, creation time;
//! * `state.bin` — the snapshot data, verbatim;
//! * `SHA256SUMS` — `sha256sum` lines for `meta.json` and `state.bin`.
//!
//! Owns: the archive format; writing an archive from a [`SnapshotReader`] in bounded memory;
//! verifying one strictly (unknown, missing, misplaced or non-regular members, hash mismatches,
//! size lies, truncation anywhere, trailing bytes after the gzip stream, a second gzip member,
//! data after the tar end-of-archive marker); and restoring one into a fresh WAL directory.
//! Must never: hold `state.bin` whole in memory, overwrite an existing archive or a non-empty
//! directory, write anything for an archive that fails verification, install data whose hash it
//! has not checked, or leave a half-restored directory behind.
//!
//! `state.bin`'s SHA-256 is not in `meta.json`: `meta.json` comes first and the archive is written
//! in one streaming pass, so the hash is known only once `state.bin` is written; `SHA256SUMS`, the
//! last member, covers both. [`ArchiveMeta::state_sha256`] is filled in from it.
//!
//! Progress callbacks are told how many bytes of `state.bin` were just processed (a delta, as in
//! [`crate::inspect::Inspector::verify`]).
//!
//! `state.bin` is the snapshot's plaintext, also for a store encrypted at rest (saved with
//! [`save_dir_snapshot_with_key`]); [`restore_with_store_options`] can encrypt the restored
//! store under a key again.

use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use flate2::bufread::GzDecoder;
use flate2::write::GzEncoder;
use flate2::Compression;
use raft::prelude::{ConfState, HardState, Snapshot, SnapshotMetadata};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::fsutil;
use crate::inspect::{ConfStateInfo, Inspector};
use crate::meta::MetaInfo;
use crate::options::Options;
use crate::snap::SnapshotReader;
use crate::storage::DiskStorage;

/// Version of the archive format this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// First member: the snapshot's metadata as JSON.
pub const META_MEMBER: &str = "meta.json";
/// Second member: the snapshot data.
pub const STATE_MEMBER: &str = "state.bin";
/// Third member: SHA-256 sums of the other two.
pub const SUMS_MEMBER: &str = "SHA256SUMS";
const MEMBERS: [&str; 3] = [META_MEMBER, STATE_MEMBER, SUMS_MEMBER];

/// Tar block size.
const BLOCK: usize = 512;
/// The first two bytes of every gzip stream.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
/// Buffer size for streaming.
const CHUNK: usize = 256 << 10;
/// Largest `meta.json` accepted (it is read into memory).
const META_LIMIT: u64 = 1 << 20;
/// Largest `SHA256SUMS` accepted (it is read into memory).
const SUMS_LIMIT: u64 = 64 << 10;
/// gzip level: snapshot data is often already compact, and a backup should not take long.
const GZIP_LEVEL: u32 = 1;

/// A conf state as `meta.json` holds it: the inspector's, strict about unknown fields.
pub type ConfStateJson = ConfStateInfo;

/// What an archive describes: `meta.json`'s contents plus the SHA-256 of `state.bin` (from
/// `SHA256SUMS`, checked against the data).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchiveMeta {
    /// Archive format version ([`FORMAT_VERSION`]).
    pub format_version: u32,
    /// The snapshot's index.
    pub index: u64,
    /// The snapshot's term.
    pub term: u64,
    /// The snapshot's conf state.
    pub conf_state: ConfStateJson,
    /// Bytes of `state.bin`.
    pub size: u64,
    /// When the archive was written (seconds since the Unix epoch).
    pub created_unix_secs: u64,
    /// Hex SHA-256 of `state.bin`, as listed in `SHA256SUMS` (not stored in `meta.json`).
    pub state_sha256: String,
}

/// `meta.json` exactly as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct MetaJson {
    format_version: u32,
    index: u64,
    term: u64,
    conf_state: ConfStateJson,
    size: u64,
    created_unix_secs: u64,
}

/// Just the version, read first so that a newer format is reported as such.
#[derive(Deserialize)]
struct VersionOnly {
    format_version: u32,
}

impl MetaJson {
    fn into_meta(self, state_sha256: String) -> ArchiveMeta {
        ArchiveMeta {
            format_version: self.format_version,
            index: self.index,
            term: self.term,
            conf_state: self.conf_state,
            size: self.size,
            created_unix_secs: self.created_unix_secs,
            state_sha256,
        }
    }
}

/// A verified archive.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ArchiveStatus {
    /// What the archive describes.
    pub meta: ArchiveMeta,
    /// Hex SHA-256 of the whole archive file.
    pub archive_sha256: String,
    /// Size of the archive file.
    pub archive_bytes: u64,
}

/// What `restore` changes besides installing the snapshot.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RestoreOptions {
    /// Stored as `MetaInfo::RaftId` (must not be 0).
    pub raft_id: Option<u64>,
    /// Replaces the snapshot's membership: these voters, no learners, no joint state.
    pub voters: Option<Vec<u64>>,
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn invalid(path: &Path, reason: impl Into<String>) -> Error {
    Error::InvalidArchive {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

// ---------------------------------------------------------------------------------------------
// writing
// ---------------------------------------------------------------------------------------------

/// Streams exactly `left` bytes out of a snapshot reader, hashing them; the read after the last
/// byte confirms that the reader ends there (and so that its checksum passed).
struct StateSource<'a, 'p> {
    reader: &'a mut SnapshotReader,
    left: u64,
    sha: Sha256,
    progress: &'p mut dyn FnMut(u64),
    /// The first error, kept to be turned into a typed error.
    failure: Option<io::Error>,
    done: bool,
}

impl StateSource<'_, '_> {
    fn fail(&mut self, e: io::Error) -> io::Error {
        let copy = io::Error::new(e.kind(), e.to_string());
        if self.failure.is_none() {
            self.failure = Some(e);
        }
        copy
    }
}

impl Read for StateSource<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.left == 0 {
            if !self.done {
                let mut probe = [0u8; 1];
                match self.reader.read(&mut probe) {
                    Ok(0) => self.done = true,
                    Ok(_) => {
                        return Err(self.fail(io::Error::new(
                            io::ErrorKind::InvalidData,
                            "the snapshot holds more data than its declared length",
                        )))
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => return Err(e),
                    Err(e) => return Err(self.fail(e)),
                }
            }
            return Ok(0);
        }
        let want = buf.len().min(self.left.min(usize::MAX as u64) as usize);
        let n = match self.reader.read(&mut buf[..want]) {
            Ok(0) => {
                let left = self.left;
                return Err(self.fail(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("the snapshot data ended {left} bytes before its declared length"),
                )));
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Err(e),
            Err(e) => return Err(self.fail(e)),
        };
        self.sha.update(&buf[..n]);
        self.left -= n as u64;
        (self.progress)(n as u64);
        Ok(n)
    }
}

fn member_header(size: u64, mtime: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(size);
    h.set_mode(0o644);
    h.set_mtime(mtime);
    h
}

/// An error writing the archive; the caller knows the path (see `save_dir_snapshot`).
fn write_error(e: io::Error) -> Error {
    Error::io("write archive", PathBuf::new(), e)
}

/// Writes a tar.gz archive of the snapshot streamed by `reader` to `out`, in bounded memory.
/// Members in this order: `meta.json`, `state.bin`, `SHA256SUMS` (`sha256sum` format:
/// `"<hex>  meta.json\n<hex>  state.bin\n"`). `progress(n)` is called with each `n` bytes of
/// state written. The reader is read to its end, so damaged snapshot data is an error (naming
/// the snapshot file). Errors writing to `out` are `Error::Io` with an empty path.
pub fn write_archive<W: Write>(
    out: W,
    reader: &mut SnapshotReader,
    progress: &mut dyn FnMut(u64),
) -> Result<ArchiveMeta, Error> {
    let md = reader.metadata().clone();
    if md.index == 0 {
        return Err(Error::EmptySnapshot(
            "an archive needs a snapshot with an index above 0".to_string(),
        ));
    }
    let size = reader.len();
    let created_unix_secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let meta_json = MetaJson {
        format_version: FORMAT_VERSION,
        index: md.index,
        term: md.term,
        conf_state: ConfStateJson::from(md.get_conf_state()),
        size,
        created_unix_secs,
    };
    let mut meta_bytes = serde_json::to_vec_pretty(&meta_json)
        .map_err(|e| Error::InvalidArgument(format!("encode meta.json: {e}")))?;
    meta_bytes.push(b'\n');
    let meta_sha = sha256_hex(&meta_bytes);

    let gz = GzEncoder::new(
        BufWriter::with_capacity(CHUNK, out),
        Compression::new(GZIP_LEVEL),
    );
    let mut tar = tar::Builder::new(gz);
    let mut h = member_header(meta_bytes.len() as u64, created_unix_secs);
    tar.append_data(&mut h, META_MEMBER, &meta_bytes[..])
        .map_err(write_error)?;

    let mut source = StateSource {
        reader,
        left: size,
        sha: Sha256::new(),
        progress,
        failure: None,
        done: false,
    };
    let mut h = member_header(size, created_unix_secs);
    let appended = tar.append_data(&mut h, STATE_MEMBER, &mut source);
    if let Some(e) = source.failure.take() {
        return Err(source.reader.error_from(e));
    }
    appended.map_err(write_error)?;
    if source.left != 0 || !source.done {
        return Err(Error::InvalidArgument(format!(
            "state.bin: {} bytes of the snapshot were not written",
            source.left
        )));
    }
    let state_sha = hex::encode(source.sha.finalize());

    let sums = format!("{meta_sha}  {META_MEMBER}\n{state_sha}  {STATE_MEMBER}\n");
    let mut h = member_header(sums.len() as u64, created_unix_secs);
    tar.append_data(&mut h, SUMS_MEMBER, sums.as_bytes())
        .map_err(write_error)?;
    let gz = tar.into_inner().map_err(write_error)?;
    let buf = gz.finish().map_err(write_error)?;
    buf.into_inner()
        .map_err(|e| write_error(e.into_error()))?
        .flush()
        .map_err(write_error)?;
    Ok(meta_json.into_meta(state_sha))
}

/// Saves the snapshot of the WAL directory `dir` (read-only, via [`Inspector`]) as a new archive
/// `out`: written as `out.tmp` (which must not exist), fsynced, then moved to `out` without ever
/// replacing an existing file, and the directory fsynced. An existing `out` is refused
/// (`Error::Io` of kind `AlreadyExists`); a directory without a snapshot is `Error::NoSnapshot`.
pub fn save_dir_snapshot(
    dir: &Path,
    out: &Path,
    progress: &mut dyn FnMut(u64),
) -> Result<ArchiveMeta, Error> {
    save_dir_snapshot_with_key(dir, None, out, progress)
}

/// [`save_dir_snapshot`] for a store encrypted at rest, opened with `key`. The archive holds
/// the snapshot data in plaintext (as every archive does): protect it as the data itself.
pub fn save_dir_snapshot_with_key(
    dir: &Path,
    key: Option<[u8; 32]>,
    out: &Path,
    progress: &mut dyn FnMut(u64),
) -> Result<ArchiveMeta, Error> {
    fsutil::refuse_existing(out)?;
    let inspector = Inspector::open_with_key(dir, key)?;
    let mut reader = inspector.snapshot_reader()?;
    let mut new = fsutil::NewFile::create(out)?;
    let meta = write_archive(new.file(), &mut reader, progress)
        .map_err(|e| with_path(e, new.tmp_path()))?;
    new.commit()?;
    Ok(meta)
}

/// Saves the current snapshot of group `group_id` of the engine root `root` (read-only, via
/// [`EngineInspector`](crate::inspect::engine::EngineInspector): the snapshot as an opened
/// engine would serve it, one installed through the journal included) as a new archive `out`,
/// as [`save_dir_snapshot`] does for a WAL directory. `Error::UnknownGroup` when the root has
/// no such group; `Error::NoSnapshot` when the group has no snapshot.
pub fn save_engine_group_snapshot(
    root: &Path,
    group_id: u64,
    key: Option<[u8; 32]>,
    out: &Path,
    progress: &mut dyn FnMut(u64),
) -> Result<ArchiveMeta, Error> {
    fsutil::refuse_existing(out)?;
    let inspector = crate::inspect::engine::EngineInspector::open_group(root, key, group_id)?;
    let mut reader = inspector.snapshot_reader()?;
    let mut new = fsutil::NewFile::create(out)?;
    let meta = write_archive(new.file(), &mut reader, progress)
        .map_err(|e| with_path(e, new.tmp_path()))?;
    new.commit()?;
    Ok(meta)
}

/// An `Error::Io` with an empty path (from [`write_archive`]) given `path`.
fn with_path(e: Error, path: &Path) -> Error {
    match e {
        Error::Io {
            op,
            path: p,
            source,
        } if p.as_os_str().is_empty() => Error::Io {
            op,
            path: path.to_path_buf(),
            source,
        },
        other => other,
    }
}

// ---------------------------------------------------------------------------------------------
// reading
// ---------------------------------------------------------------------------------------------

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
struct ArchiveReader {
    path: PathBuf,
    gz: GzDecoder<BufReader<FileTap>>,
    /// Member being read, its data bytes left and the padding after them.
    member: &'static str,
    left: u64,
    pad: u64,
}

/// What the end of an archive proves.
struct Finished {
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
    fn open(path: &Path, hash_file: bool) -> Result<ArchiveReader> {
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

    fn invalid(&self, reason: impl Into<String>) -> Error {
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
    fn next_member(&mut self, expected: &'static str, position: usize) -> Result<u64> {
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
    fn read_data(&mut self, buf: &mut [u8]) -> Result<usize> {
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
    fn read_meta(&mut self) -> Result<(Vec<u8>, String)> {
        self.next_member(META_MEMBER, 0)?;
        let bytes = self.read_small(META_LIMIT)?;
        let sha = sha256_hex(&bytes);
        Ok((bytes, sha))
    }

    /// Once all of `state.bin` is read: its padding, then `SHA256SUMS` checked against
    /// `meta_sha` and `state_sha`, then [`ArchiveReader::finish`].
    fn finish_with_sums(mut self, meta_sha: &str, state_sha: &str) -> Result<Finished> {
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
    Ok(meta)
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
struct Verified {
    status: ArchiveStatus,
    meta_sha: String,
}

/// Verifies the whole archive; `hash_file` asks for the whole file's SHA-256 too (empty
/// otherwise).
fn verify_full(path: &Path, hash_file: bool, progress: &mut dyn FnMut(u64)) -> Result<Verified> {
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

// ---------------------------------------------------------------------------------------------
// restore
// ---------------------------------------------------------------------------------------------

/// `state.bin` streamed out of the archive (second pass) into `install_snapshot_from`: its
/// SHA-256 is checked again when it ends, and a mismatch is an error from the read that would
/// have returned end of data, so a changed archive is never installed.
struct StateStream<'a, 'p> {
    r: &'a mut ArchiveReader,
    sha: Sha256,
    expected: &'a str,
    progress: &'p mut dyn FnMut(u64),
    /// The first error, typed (the engine wraps what `read` returns as an I/O error).
    failure: Option<Error>,
}

impl StateStream<'_, '_> {
    fn fail(&mut self, e: Error) -> io::Error {
        let copy = io::Error::new(io::ErrorKind::InvalidData, e.to_string());
        if self.failure.is_none() {
            self.failure = Some(e);
        }
        copy
    }
}

impl Read for StateStream<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        match self.r.read_data(buf) {
            Ok(0) => {
                let now = hex::encode(self.sha.clone().finalize());
                if now != self.expected {
                    let e = self.r.invalid(format!(
                        "state.bin changed since it was verified: its SHA-256 is now {now}, was {}",
                        self.expected
                    ));
                    return Err(self.fail(e));
                }
                Ok(0)
            }
            Ok(n) => {
                self.sha.update(&buf[..n]);
                (self.progress)(n as u64);
                Ok(n)
            }
            Err(e) => Err(self.fail(e)),
        }
    }
}

/// State of a restore target before restore touches it.
enum Target {
    /// It does not exist; these are it and its missing ancestors, deepest first.
    Missing(Vec<PathBuf>),
    /// An empty directory.
    Empty,
}

fn refused(dir: &Path, why: &str) -> Error {
    Error::io(
        "refuse to restore into",
        dir,
        io::Error::new(io::ErrorKind::AlreadyExists, why.to_string()),
    )
}

fn check_target(dir: &Path) -> Result<Target> {
    match fs::symlink_metadata(dir) {
        Ok(m) if m.is_dir() => {
            let mut rd = fs::read_dir(dir).map_err(|e| Error::io("read directory", dir, e))?;
            match rd.next() {
                None => Ok(Target::Empty),
                Some(Ok(_)) => Err(refused(
                    dir,
                    "the directory is not empty (restore never overwrites)",
                )),
                Some(Err(e)) => Err(Error::io("read directory", dir, e)),
            }
        }
        Ok(_) => Err(refused(dir, "it exists and is not a directory")),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let mut missing = vec![dir.to_path_buf()];
            let mut p = dir.parent();
            while let Some(a) = p.filter(|a| !a.as_os_str().is_empty()) {
                if fs::symlink_metadata(a).is_ok() {
                    break;
                }
                missing.push(a.to_path_buf());
                p = a.parent();
            }
            Ok(Target::Missing(missing))
        }
        Err(e) => Err(Error::io("stat", dir, e)),
    }
}

/// Removes what a failed restore created.
fn undo(dir: &Path, target: &Target) {
    match target {
        Target::Missing(created) => {
            let _ = fs::remove_dir_all(dir);
            for a in created.iter().skip(1) {
                let _ = fs::remove_dir(a);
            }
        }
        Target::Empty => {
            if let Ok(rd) = fs::read_dir(dir) {
                for ent in rd.flatten() {
                    let p = ent.path();
                    let is_dir = ent.file_type().map(|t| t.is_dir()).unwrap_or(false);
                    let _ = if is_dir {
                        fs::remove_dir_all(&p)
                    } else {
                        fs::remove_file(&p)
                    };
                }
            }
        }
    }
}

fn check_options(opts: &RestoreOptions) -> Result<()> {
    if opts.raft_id == Some(0) {
        return Err(Error::InvalidArgument(
            "raft id 0 is not a valid raft id".to_string(),
        ));
    }
    if let Some(voters) = &opts.voters {
        if voters.is_empty() {
            return Err(Error::InvalidArgument(
                "a restore with new membership needs at least one voter".to_string(),
            ));
        }
        if voters.contains(&0) {
            return Err(Error::InvalidArgument(
                "voter id 0 is not a valid raft id".to_string(),
            ));
        }
        let mut sorted = voters.clone();
        sorted.sort_unstable();
        sorted.dedup();
        if sorted.len() != voters.len() {
            return Err(Error::InvalidArgument(format!(
                "voters {voters:?} name a node twice"
            )));
        }
    }
    if let (Some(id), Some(voters)) = (opts.raft_id, &opts.voters) {
        if !voters.contains(&id) {
            return Err(Error::InvalidArgument(format!(
                "raft id {id} is not among the voters {voters:?}: the restored node would not be a member of its own cluster"
            )));
        }
    }
    Ok(())
}

/// Restores the archive into a fresh WAL directory `new_dir`. In order: the options are checked;
/// `new_dir` must be missing or an empty directory (never overwritten: `Error::Io` of kind
/// `AlreadyExists` otherwise); the whole archive is verified (nothing is written if it fails);
/// then a WAL directory is created with [`DiskStorage::open`] (default [`Options`]; see
/// [`restore_with_store_options`]), the snapshot installed with
/// `install_snapshot_from` streaming `state.bin` out of the archive a second time (the hashes of
/// all three members and the archive's structure checked again: a changed file fails the
/// restore), with the conf state replaced by `voters` (as voters only) when given,
/// `MetaInfo::RaftId` set when given, and the hard state set to term = snapshot term, commit =
/// snapshot index, so raft-rs starts from the snapshot. If anything fails once the directory
/// exists, what restore created is removed. `progress(n)` is told of each `n` bytes of
/// `state.bin` read, in both passes (2 × size in all). Returns the archive's metadata (with its
/// own conf state, whatever `voters` says).
pub fn restore(
    archive: &Path,
    new_dir: &Path,
    opts: &RestoreOptions,
    progress: &mut dyn FnMut(u64),
) -> Result<ArchiveMeta, Error> {
    restore_with_store_options(archive, new_dir, opts, &Options::default(), progress)
}

/// [`restore`] creating the new directory with `store` options: with an `encryption_key`, the
/// restored store is encrypted at rest under it (and needs it to open).
pub fn restore_with_store_options(
    archive: &Path,
    new_dir: &Path,
    opts: &RestoreOptions,
    store: &Options,
    progress: &mut dyn FnMut(u64),
) -> Result<ArchiveMeta, Error> {
    check_options(opts)?;
    check_target(new_dir)?;
    let verified = verify_full(archive, false, progress)?;
    let target = check_target(new_dir)?;
    if let Target::Missing(_) = target {
        if let Err(e) = fs::create_dir_all(new_dir) {
            undo(new_dir, &target);
            return Err(Error::io("create directory", new_dir, e));
        }
    }
    match install(archive, new_dir, opts, store, &verified, progress) {
        Ok(()) => {
            fsutil::sync_dir(&fsutil::parent_dir(new_dir))?;
            Ok(verified.status.meta)
        }
        Err(e) => {
            undo(new_dir, &target);
            Err(e)
        }
    }
}

fn install(
    archive: &Path,
    new_dir: &Path,
    opts: &RestoreOptions,
    store: &Options,
    verified: &Verified,
    progress: &mut dyn FnMut(u64),
) -> Result<()> {
    let meta = &verified.status.meta;
    // The members' hashes are checked again; the whole file's is not needed for that.
    let mut r = ArchiveReader::open(archive, false)?;
    let (_, meta_sha) = r.read_meta()?;
    if meta_sha != verified.meta_sha {
        return Err(r.invalid("meta.json changed since the archive was verified"));
    }
    let size = r.next_member(STATE_MEMBER, 1)?;
    if size != meta.size {
        return Err(r.invalid("state.bin changed size since the archive was verified"));
    }

    let mut md = SnapshotMetadata::default();
    md.index = meta.index;
    md.term = meta.term;
    let cs = match &opts.voters {
        Some(voters) => ConfState {
            voters: voters.clone(),
            ..Default::default()
        },
        None => ConfState::from(&meta.conf_state),
    };
    md.set_conf_state(cs);

    let storage = DiskStorage::open_with(new_dir, store.clone())?;
    let mut stream = StateStream {
        r: &mut r,
        sha: Sha256::new(),
        expected: &meta.state_sha256,
        progress,
        failure: None,
    };
    if let Err(e) = storage.install_snapshot_from(&md, &mut stream) {
        return Err(stream.failure.take().unwrap_or(e));
    }
    r.finish_with_sums(&verified.meta_sha, &meta.state_sha256)?;

    if let Some(id) = opts.raft_id {
        storage.set_uint(MetaInfo::RaftId, id);
    }
    let mut hs = HardState::default();
    hs.term = meta.term;
    hs.commit = meta.index;
    storage.save(&hs, &[], &Snapshot::default())?;
    storage.close()
}
