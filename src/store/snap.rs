//! Snapshot data files: `snap/<term>-<index>.snap`, written and read as streams.
//!
//! Owns: the layout of a snapshot file (a 4 KiB header block holding a checksummed
//! `SnapshotEnvelope`, then the data) and its format versions, its durable creation (temporary
//! name, fsync, rename, directory fsync) from any `Read` in bounded memory, verified streaming
//! reads, and the housekeeping of `snap/` (older files removed, damaged ones renamed `.broken`).
//! Must never: name a file in the meta page (that is `storage`, and only once the file is
//! durable), let a reader finish without its checksum checked, or write a conf state in
//! plaintext with a key.
//!
//! Header block (little-endian):
//! ```text
//! 0      magic "RWALSNAP"        8
//! 8      format version u32      4   (2; 1 still read)
//! 12     envelope length u32     4
//! 16     envelope                n   (protobuf SnapshotEnvelope: index, term, conf state,
//!                                     data length, data CRC32C)
//! 16+n   CRC32C u32              4   (over bytes [0, 16+n))
//! ..4096 zero
//! 4096   data
//! ```
//!
//! In an encrypted store the data is sealed in chunks, and (format version 2) so is the conf
//! state: the envelope keeps index, term, lengths, CRC and the `sealed` flag in plaintext (so
//! the stored bytes are checked without the key), and holds the conf state only as
//! `sealed_conf_state`, bound to the snapshot's index and term, opened (so authenticated)
//! whenever the file is opened with the key. A version-1 file of an encrypted store, written
//! before, holds its conf state in plaintext and still reads.

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use prost::Message;

use crate::error::{Error, Result};
use crate::store::header::Checks;
use crate::sys::crypto::{self, Cipher};
use crate::sys::fsutil;
use raft::prelude::{ConfState, SnapshotMetadata};

use crate::proto::{ConfStateRecord, SnapshotEnvelope, SnapshotRecord};
use crate::sys::le;

/// Directory of snapshot files inside a WAL directory.
pub(crate) const SNAP_DIR: &str = "snap";
const MAGIC: &[u8; 8] = b"RWALSNAP";
/// Version of the snapshot file layout that new files get: 2, whose envelope in an encrypted
/// store holds the conf state sealed (`sealed_conf_state`), not in plaintext (`conf_state`).
const SNAP_FORMAT_VERSION: u32 = 2;
/// The last version whose encrypted envelopes hold the conf state in plaintext.
const SNAP_VERSION_PLAIN_CONF: u32 = 1;
/// Size of the header block; data starts here.
pub(crate) const HEADER_BLOCK: usize = 4096;
// Header fields: each offset is the previous one plus the previous field's size; the CRC32C
// follows the envelope (`H_ENVELOPE + n`).
const H_MAGIC: usize = 0;
const H_VERSION: usize = H_MAGIC + 8;
const H_ENVELOPE_LEN: usize = H_VERSION + 4;
const H_ENVELOPE: usize = H_ENVELOPE_LEN + 4;
/// Bytes of the header's CRC32C.
const H_CRC_LEN: usize = 4;
/// Buffer size for streaming data in and out.
const CHUNK: usize = 256 << 10;

/// File name of the snapshot at `term`/`index`.
pub(crate) fn file_name(term: u64, index: u64) -> String {
    format!("{term:016x}-{index:016x}.snap")
}

/// The term and index a snapshot file's name says (canonical names only).
pub(crate) fn parse_file_name(name: &str) -> Option<(u64, u64)> {
    let (term, index) = name.strip_suffix(".snap")?.split_once('-')?;
    let hex = |s: &str| {
        (s.len() == 16
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
        .then(|| u64::from_str_radix(s, 16).ok())
        .flatten()
    };
    Some((hex(term)?, hex(index)?))
}

/// Path of the snapshot file for `term`/`index`.
pub(crate) fn path(dir: &Path, term: u64, index: u64) -> PathBuf {
    dir.join(SNAP_DIR).join(file_name(term, index))
}

/// What a durable snapshot file holds.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Written {
    /// Bytes stored after the header (sealed chunks in an encrypted store).
    pub data_len: u64,
    pub data_crc32c: u32,
    /// Bytes of data before sealing.
    pub plain_len: u64,
}

/// Plaintext bytes per sealed chunk of an encrypted snapshot.
const SEAL_CHUNK: usize = 64 << 10;

/// Associated data of a sealed snapshot chunk: which snapshot, which chunk, and whether it is the
/// last one (so chunks cannot be reordered, dropped or moved between snapshots undetected).
fn chunk_aad(index: u64, term: u64, chunk: u64, last: bool) -> [u8; 25] {
    let mut aad = [0u8; 25];
    aad[..8].copy_from_slice(&index.to_le_bytes());
    aad[8..16].copy_from_slice(&term.to_le_bytes());
    aad[16..24].copy_from_slice(&chunk.to_le_bytes());
    aad[24] = last as u8;
    aad
}

/// Associated data of a sealed conf state: what it is, and the snapshot (index, term) whose
/// envelope holds it, so a sealed conf state copied into another snapshot's header fails to open.
fn conf_aad(index: u64, term: u64) -> [u8; 37] {
    let mut aad = [0u8; 37];
    aad[..21].copy_from_slice(b"raftwal-snapshot-conf");
    aad[21..29].copy_from_slice(&index.to_le_bytes());
    aad[29..37].copy_from_slice(&term.to_le_bytes());
    aad
}

/// What may stop a snapshot write part way: [`write_from`] runs each step that touches the
/// files through [`Gate::pass`], and never reads the data inside one (an application's reader
/// may block for as long as it likes without holding anything up).
pub(crate) trait Gate {
    /// Runs `step`, or refuses it with an error: the write stops there, touching no file
    /// again.
    fn pass<T>(&self, step: impl FnOnce() -> Result<T>) -> Result<T>;

    /// Called inside a step: the write's `.tmp` file now exists (`true`), or is gone or
    /// renamed (`false`). Whoever refuses a write's steps removes the `.tmp` it left.
    fn tmp_file(&self, _tmp: &Path, _exists: bool) {}
}

/// A write nothing stops (a `DiskStorage`'s: the store lives as long as the handle writing).
pub(crate) struct Unstoppable;

impl Gate for Unstoppable {
    fn pass<T>(&self, step: impl FnOnce() -> Result<T>) -> Result<T> {
        step()
    }
}

/// Streams `data` into a new snapshot file for `term`/`index` and makes it durable. Memory use is
/// one buffer, whatever the size of the data. Empty data leaves no file (`data_len` 0). Every
/// step that touches the files goes through `gate`, and holds the file's descriptor only while
/// it runs: a write waiting for its data holds none (many groups' builds streaming at once stay
/// within an engine's `max_open_files`). The last step's `fsync` covers every step's writes:
/// it flushes the file, not what one descriptor wrote, and the file's checksum is checked
/// whenever it is read.
pub(crate) fn write_from(
    dir: &Path,
    index: u64,
    term: u64,
    conf_state: &ConfStateRecord,
    mut data: impl Read,
    cipher: Option<&Cipher>,
    gate: &impl Gate,
) -> Result<Written> {
    let snap_dir = dir.join(SNAP_DIR);
    let name = file_name(term, index);
    let tmp = snap_dir.join(format!("{name}.tmp"));
    let path = snap_dir.join(&name);
    gate.pass(|| {
        if !snap_dir.exists() {
            fs::create_dir(&snap_dir).map_err(|e| Error::io("create directory", &snap_dir, e))?;
            fsutil::sync_dir(dir)?;
        }
        File::create(&tmp).map_err(|e| Error::io("create", &tmp, e))?;
        gate.tmp_file(&tmp, true);
        Ok(())
    })?;
    let reopen = || {
        fs::OpenOptions::new()
            .write(true)
            .open(&tmp)
            .map_err(|e| Error::io("open", &tmp, e))
    };
    let result = (|| {
        gate.pass(|| {
            reopen()?
                .write_all_at(&[0u8; HEADER_BLOCK], 0)
                .map_err(|e| Error::io("write", &tmp, e))
        })?;
        let mut crc = 0u32;
        let mut len = 0u64;
        let mut plain_len = 0u64;
        let mut store = |bytes: &[u8]| -> Result<()> {
            crc = crc32c::crc32c_append(crc, bytes);
            let at = HEADER_BLOCK as u64 + len;
            len += bytes.len() as u64;
            gate.pass(|| {
                reopen()?
                    .write_all_at(bytes, at)
                    .map_err(|e| Error::io("write", &tmp, e))
            })
        };
        let read_err = |e| Error::io("read snapshot data for", &path, e);
        match cipher {
            None => {
                let mut buf = vec![0u8; CHUNK];
                loop {
                    let n = fsutil::read_full(&mut data, &mut buf).map_err(read_err)?;
                    if n == 0 {
                        break;
                    }
                    plain_len += n as u64;
                    store(&buf[..n])?;
                }
            }
            Some(cipher) => {
                // One chunk read ahead, so each sealed chunk knows whether it is the last.
                let mut cur = vec![0u8; SEAL_CHUNK];
                let mut next = vec![0u8; SEAL_CHUNK];
                let mut n = fsutil::read_full(&mut data, &mut cur).map_err(read_err)?;
                let mut chunk = 0u64;
                while n > 0 {
                    let m = fsutil::read_full(&mut data, &mut next).map_err(read_err)?;
                    let aad = chunk_aad(index, term, chunk, m == 0);
                    store(&cipher.seal(&aad, &[&cur[..n]]))?;
                    plain_len += n as u64;
                    chunk += 1;
                    std::mem::swap(&mut cur, &mut next);
                    n = m;
                }
            }
        }
        let written = Written {
            data_len: len,
            data_crc32c: crc,
            plain_len,
        };
        let header = encode_header(index, term, conf_state, written, cipher)?;
        gate.pass(|| {
            let f = reopen()?;
            f.write_all_at(&header, 0)
                .map_err(|e| Error::io("write header", &tmp, e))?;
            f.sync_all().map_err(|e| Error::io("fsync", &tmp, e))
        })?;
        Ok(written)
    })();
    let written = match result {
        Ok(w) if w.data_len > 0 => w,
        Ok(w) => {
            gate.pass(|| {
                fs::remove_file(&tmp).map_err(|e| Error::io("remove", &tmp, e))?;
                gate.tmp_file(&tmp, false);
                Ok(())
            })?;
            return Ok(w);
        }
        Err(e) => {
            let _ = gate.pass(|| {
                let _ = fs::remove_file(&tmp);
                gate.tmp_file(&tmp, false);
                Ok(())
            });
            return Err(e);
        }
    };
    gate.pass(|| {
        fs::rename(&tmp, &path).map_err(|e| Error::io("rename", &tmp, e))?;
        gate.tmp_file(&tmp, false);
        fsutil::sync_dir(&snap_dir)
    })?;
    Ok(written)
}

/// Whether a snapshot at `index`, `term` with `conf_state` and `plain_len` bytes of data fits a
/// new file's header block (sealed with `encrypted`: a sealed conf state is longer, and so is
/// the stored data), whatever its checksum: what a restore checks before it writes anything,
/// and the archive tools check for a plaintext store (an archive they pass restores into one).
#[cfg(feature = "archive")]
pub(crate) fn check_header_fits(
    index: u64,
    term: u64,
    conf_state: &ConfStateRecord,
    plain_len: u64,
    encrypted: bool,
) -> Result<()> {
    // Each sealed chunk (the last one may be short) carries a nonce and a tag.
    let chunks = plain_len.div_ceil(SEAL_CHUNK as u64);
    let data_len = match encrypted {
        false => plain_len,
        true => plain_len.saturating_add(chunks.saturating_mul(crypto::OVERHEAD as u64)),
    };
    let w = Written {
        data_len,
        // The longest a checksum encodes to.
        data_crc32c: u32::MAX,
        plain_len,
    };
    // A seal is as long under any key: this one only measures.
    let measure = Cipher::new(&[0; 32]);
    encode_header(index, term, conf_state, w, encrypted.then_some(&measure)).map(|_| ())
}

/// The header block of a new file (format version [`SNAP_FORMAT_VERSION`]): with `cipher`, the
/// conf state sealed, none of it in plaintext.
fn encode_header(
    index: u64,
    term: u64,
    conf_state: &ConfStateRecord,
    w: Written,
    cipher: Option<&Cipher>,
) -> Result<Vec<u8>> {
    let (plain_conf, sealed_conf) = match cipher {
        None => (Some(conf_state.clone()), Vec::new()),
        Some(c) => (
            None,
            c.seal(&conf_aad(index, term), &[&conf_state.encode_to_vec()]),
        ),
    };
    let envelope = SnapshotEnvelope {
        index,
        term,
        conf_state: plain_conf,
        data_len: w.data_len,
        data_crc32c: w.data_crc32c,
        sealed: cipher.is_some(),
        plain_len: w.plain_len,
        sealed_conf_state: sealed_conf,
    }
    .encode_to_vec();
    if H_ENVELOPE + envelope.len() + H_CRC_LEN > HEADER_BLOCK {
        return Err(Error::InvalidArgument(format!(
            "snapshot conf state too large for the header block ({} bytes)",
            envelope.len()
        )));
    }
    let mut header = vec![0u8; HEADER_BLOCK];
    let crc_at = H_ENVELOPE + envelope.len();
    header[H_MAGIC..H_VERSION].copy_from_slice(MAGIC);
    header[H_VERSION..H_ENVELOPE_LEN].copy_from_slice(&SNAP_FORMAT_VERSION.to_le_bytes());
    header[H_ENVELOPE_LEN..H_ENVELOPE].copy_from_slice(&(envelope.len() as u32).to_le_bytes());
    header[H_ENVELOPE..crc_at].copy_from_slice(&envelope);
    let crc = crc32c::crc32c(&header[..crc_at]);
    header[crc_at..crc_at + H_CRC_LEN].copy_from_slice(&crc.to_le_bytes());
    Ok(header)
}

/// Checks a header block and returns its envelope and format version. Where the conf state
/// lies is checked against the version and the `sealed` flag (an encrypted envelope of version
/// 2 holds it sealed and only sealed; any other holds no sealed one); the sealed one is opened
/// by [`FileReader::open`], which has the key.
fn decode_header(path: &Path, h: &[u8]) -> Result<(SnapshotEnvelope, u32)> {
    let check = Checks {
        path,
        at: 0,
        name: "snapshot header",
    };
    check.magic(h.get(H_MAGIC..H_VERSION), &MAGIC[..])?;
    let n = le::u32_at(h, H_ENVELOPE_LEN) as usize;
    let crc_at = H_ENVELOPE + n;
    if crc_at + H_CRC_LEN > h.len() {
        return Err(Error::corrupt(
            path,
            H_ENVELOPE_LEN as u64,
            format!("envelope length {n} exceeds the header"),
        ));
    }
    // The checksum first: a damaged version field is damage, not a newer format.
    check.checksum(
        crc32c::crc32c(&h[..crc_at]) == le::u32_at(h, crc_at),
        crc_at,
    )?;
    let version = le::u32_at(h, H_VERSION);
    check.version(version, SNAP_FORMAT_VERSION)?;
    // The checksum does not cover the rest of the block, which the writer leaves zero: a byte
    // set there is damage too.
    let padding = crc_at + H_CRC_LEN;
    if let Some(k) = h[padding..].iter().position(|&b| b != 0) {
        return Err(Error::corrupt(
            path,
            (padding + k) as u64,
            "snapshot header padding is not zero",
        ));
    }
    let env = SnapshotEnvelope::decode(&h[H_ENVELOPE..crc_at])
        .map_err(|e| Error::corrupt(path, H_ENVELOPE as u64, format!("snapshot envelope: {e}")))?;
    let conf_sealed = env.sealed && version > SNAP_VERSION_PLAIN_CONF;
    let misplaced = if conf_sealed {
        if env.conf_state.is_some() {
            Some("holds its conf state in plaintext")
        } else if env.sealed_conf_state.len() < crypto::OVERHEAD {
            Some("holds no sealed conf state")
        } else {
            None
        }
    } else if !env.sealed_conf_state.is_empty() {
        Some("holds a sealed conf state")
    } else {
        None
    };
    if let Some(what) = misplaced {
        let kind = if env.sealed {
            "an encrypted"
        } else {
            "a plaintext"
        };
        return Err(Error::corrupt(
            path,
            H_ENVELOPE as u64,
            format!("the envelope of {kind} snapshot of format version {version} {what}"),
        ));
    }
    Ok((env, version))
}

/// A snapshot file's data as a stream. Its header was checked on open; the data's length and
/// CRC32C are checked as it is read, and a mismatch is an error from the read that reaches the
/// end (so a consumer that reads to the end never takes damaged data for good).
pub(crate) struct FileReader {
    path: PathBuf,
    file: File,
    envelope: SnapshotEnvelope,
    /// Stored bytes not read yet.
    left: u64,
    crc: u32,
    /// For sealed data: the key, and the opened chunk being served.
    cipher: Option<Cipher>,
    chunk: Vec<u8>,
    chunk_pos: usize,
    chunk_no: u64,
    plain_left: u64,
}

impl FileReader {
    /// Opens `path` and checks its header (and, when given, that it matches what the meta page
    /// expects: index, term, length, CRC).
    /// Sealed data needs `cipher` (the store's key); without one only the stored bytes' length
    /// and CRC can be checked ([`FileReader::verify_to_end`]).
    pub(crate) fn open(
        path: &Path,
        expect: Option<(u64, u64, u64, u32)>,
        cipher: Option<&Cipher>,
    ) -> Result<FileReader> {
        Self::open_inner(path, expect, cipher, true)
    }

    /// Opens a snapshot file to check its header and stored bytes (length, CRC32C) only: no
    /// key needed, sealed or not.
    pub(crate) fn open_unkeyed(path: &Path) -> Result<FileReader> {
        Self::open_inner(path, None, None, false)
    }

    fn open_inner(
        path: &Path,
        expect: Option<(u64, u64, u64, u32)>,
        cipher: Option<&Cipher>,
        check_key: bool,
    ) -> Result<FileReader> {
        let mut file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(Error::MissingFile {
                    path: path.to_path_buf(),
                    reason: "the meta page names this snapshot file".to_string(),
                })
            }
            Err(e) => return Err(Error::io("open", path, e)),
        };
        let len = file
            .metadata()
            .map_err(|e| Error::io("stat", path, e))?
            .len();
        if len < HEADER_BLOCK as u64 {
            return Err(Error::corrupt(
                path,
                len,
                format!(
                    "snapshot file is {len} bytes, shorter than its {HEADER_BLOCK}-byte header"
                ),
            ));
        }
        let mut header = vec![0u8; HEADER_BLOCK];
        file.read_exact(&mut header)
            .map_err(|e| Error::io("read", path, e))?;
        let (env, version) = decode_header(path, &header)?;
        if let Some((index, term, data_len, data_crc)) = expect {
            if (env.index, env.term, env.data_len, env.data_crc32c)
                != (index, term, data_len, data_crc)
            {
                return Err(Error::corrupt(
                    path,
                    16,
                    format!(
                        "snapshot header says index {} term {} len {} crc {:#x}; the meta page expects index {index} term {term} len {data_len} crc {data_crc:#x}",
                        env.index, env.term, env.data_len, env.data_crc32c
                    ),
                ));
            }
        }
        if Some(len) != (HEADER_BLOCK as u64).checked_add(env.data_len) {
            return Err(Error::corrupt(
                path,
                len,
                format!(
                    "snapshot file is {len} bytes, its header says {HEADER_BLOCK} + {} bytes of data",
                    env.data_len
                ),
            ));
        }
        if check_key && env.sealed && cipher.is_none() {
            return Err(Error::Encryption {
                path: path.to_path_buf(),
                reason: "the snapshot is encrypted: reading it needs the store's key".to_string(),
            });
        }
        if check_key && !env.sealed && cipher.is_some() {
            return Err(Error::Encryption {
                path: path.to_path_buf(),
                reason: "the snapshot is plaintext in a store opened with a key".to_string(),
            });
        }
        if let Some(c) = cipher.filter(|_| env.sealed && version > SNAP_VERSION_PLAIN_CONF) {
            // decode_header saw a sealed conf state; it must open, as a conf state.
            let opened = c
                .open(&conf_aad(env.index, env.term), &env.sealed_conf_state)
                .and_then(|p| ConfStateRecord::decode(&p[..]).ok());
            if opened.is_none() {
                return Err(Error::corrupt(
                    path,
                    H_ENVELOPE as u64,
                    "the snapshot's sealed conf state fails authentication (altered, moved from another snapshot, or another key)",
                ));
            }
        }
        Ok(FileReader {
            path: path.to_path_buf(),
            file,
            left: env.data_len,
            plain_left: env.plain_len,
            envelope: env,
            crc: 0,
            cipher: cipher.cloned(),
            chunk: Vec::new(),
            chunk_pos: 0,
            chunk_no: 0,
        })
    }

    /// Reads (and so verifies) the rest of the stored bytes, discarding them: length and CRC32C
    /// (and, for sealed data, every chunk's authentication when the key is known).
    pub(crate) fn verify_to_end(&mut self) -> Result<()> {
        let mut buf = vec![0u8; CHUNK];
        loop {
            let r = if self.envelope.sealed && self.cipher.is_none() {
                self.read_stored(&mut buf)
            } else {
                self.read(&mut buf)
            };
            match r {
                Ok(0) => return Ok(()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.error_from(e)),
            }
        }
    }

    /// Turns an error from `read` back into a typed error naming the file.
    pub(crate) fn error_from(&self, e: io::Error) -> Error {
        if e.kind() == io::ErrorKind::InvalidData {
            Error::corrupt(&self.path, HEADER_BLOCK as u64, e.to_string())
        } else {
            Error::io("read", &self.path, e)
        }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

impl FileReader {
    /// Reads stored bytes (plaintext data, or sealed chunks), checking the CRC at the end.
    fn read_stored(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let want = buf.len().min(self.left.min(usize::MAX as u64) as usize);
        let n = self.file.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{} ended {} bytes early", self.path.display(), self.left),
            ));
        }
        self.crc = crc32c::crc32c_append(self.crc, &buf[..n]);
        self.left -= n as u64;
        if self.left == 0 && self.crc != self.envelope.data_crc32c {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "snapshot data checksum mismatch in {}: stored {:#010x}, computed {:#010x}",
                    self.path.display(),
                    self.envelope.data_crc32c,
                    self.crc
                ),
            ));
        }
        Ok(n)
    }

    /// Reads and opens (with `self.cipher`) the next sealed chunk into `self.chunk`.
    fn next_chunk(&mut self) -> io::Result<()> {
        let plain = self.plain_left.min(SEAL_CHUNK as u64) as usize;
        let mut sealed = vec![0u8; plain + crypto::OVERHEAD];
        let mut got = 0;
        while got < sealed.len() {
            let n = self.read_stored(&mut sealed[got..])?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}: sealed data ends early", self.path.display()),
                ));
            }
            got += n;
        }
        let last = self.plain_left <= SEAL_CHUNK as u64;
        let aad = chunk_aad(self.envelope.index, self.envelope.term, self.chunk_no, last);
        let opened = self.cipher.as_ref().and_then(|c| c.open(&aad, &sealed));
        match opened {
            Some(p) if p.len() == plain => {
                self.chunk = p;
                self.chunk_pos = 0;
                self.chunk_no += 1;
                self.plain_left -= plain as u64;
                Ok(())
            }
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{}: snapshot chunk {} fails authentication (altered, or another key)",
                    self.path.display(),
                    self.chunk_no
                ),
            )),
        }
    }
}

impl Read for FileReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.cipher.is_none() {
            return self.read_stored(buf);
        }
        if self.chunk_pos == self.chunk.len() {
            if self.plain_left == 0 {
                // Every chunk was opened; the stored bytes must be used up too (and the CRC
                // checked on the way).
                return match self.left {
                    0 => Ok(0),
                    n => Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "{}: {n} stored bytes after the last chunk",
                            self.path.display()
                        ),
                    )),
                };
            }
            self.next_chunk()?;
        }
        let n = buf.len().min(self.chunk.len() - self.chunk_pos);
        buf[..n].copy_from_slice(&self.chunk[self.chunk_pos..self.chunk_pos + n]);
        self.chunk_pos += n;
        Ok(n)
    }
}

/// Tidies `snap/` once `keep` (the current snapshot file, if any) is durable and named by the
/// meta page: other snapshot files and leftover temporary files are removed, but a file that
/// fails its checks (its header; with `deep`, its data too) is renamed `<name>.broken` and
/// returned instead, for an operator to look at. Only files named like ours are touched.
pub(crate) fn tidy(dir: &Path, keep: Option<&str>, deep: bool) -> Result<Vec<PathBuf>> {
    let snap_dir = dir.join(SNAP_DIR);
    let rd = match fs::read_dir(&snap_dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("read directory", &snap_dir, e)),
    };
    let mut broken = Vec::new();
    let mut changed = false;
    for ent in rd {
        let ent = ent.map_err(|e| Error::io("read directory", &snap_dir, e))?;
        if !ent.file_type().map(|t| t.is_file()).unwrap_or(false) {
            continue;
        }
        let name = ent.file_name();
        let Some(name) = name.to_str() else { continue };
        if Some(name) == keep {
            continue;
        }
        let p = snap_dir.join(name);
        if name.ends_with(".snap.tmp") {
            fs::remove_file(&p).map_err(|e| Error::io("remove", &p, e))?;
            changed = true;
        } else if name.ends_with(".snap") {
            let damaged = FileReader::open_unkeyed(&p).and_then(|mut r| {
                if deep {
                    r.verify_to_end()
                } else {
                    Ok(())
                }
            });
            if damaged.is_err() {
                let to = snap_dir.join(format!("{name}.broken"));
                fs::rename(&p, &to).map_err(|e| Error::io("rename", &p, e))?;
                broken.push(to);
            } else {
                fs::remove_file(&p).map_err(|e| Error::io("remove", &p, e))?;
            }
            changed = true;
        }
    }
    if changed {
        fsutil::sync_dir(&snap_dir)?;
    }
    Ok(broken)
}

/// The current snapshot of a WAL directory: metadata, and the data as a stream whose length and
/// CRC32C are checked as it is read (a read that reaches the end of damaged data fails with
/// `io::ErrorKind::InvalidData` instead of returning its last bytes).
pub struct SnapshotReader {
    metadata: SnapshotMetadata,
    len: u64,
    file: Option<FileReader>,
}

impl SnapshotReader {
    /// Opens the snapshot `record` describes in `dir` (no file when its data is empty).
    pub(crate) fn open(
        dir: &Path,
        record: &SnapshotRecord,
        cipher: Option<&Cipher>,
    ) -> Result<SnapshotReader> {
        let mut metadata = SnapshotMetadata {
            index: record.index,
            term: record.term,
            ..Default::default()
        };
        metadata.set_conf_state(
            record
                .conf_state
                .as_ref()
                .map(ConfState::from)
                .unwrap_or_default(),
        );
        let file = if record.data_len > 0 {
            Some(FileReader::open(
                &path(dir, record.term, record.index),
                Some((
                    record.index,
                    record.term,
                    record.data_len,
                    record.data_crc32c,
                )),
                cipher,
            )?)
        } else {
            None
        };
        Ok(SnapshotReader {
            metadata,
            len: if cipher.is_some() {
                record.plain_len
            } else {
                record.data_len
            },
            file,
        })
    }

    /// Index, term and conf state of the snapshot.
    pub fn metadata(&self) -> &SnapshotMetadata {
        &self.metadata
    }

    /// Bytes of data.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True for a snapshot without data.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The snapshot file, if the snapshot has data.
    pub fn path(&self) -> Option<&Path> {
        self.file.as_ref().map(FileReader::path)
    }

    /// Turns an error from `read` into a typed error naming the file.
    pub(crate) fn error_from(&self, e: io::Error) -> Error {
        match &self.file {
            Some(f) => f.error_from(e),
            // A snapshot without data has no file, and its reader reads nothing: it cannot fail.
            None => Error::invariant(format!(
                "a read error from a snapshot without data (index {}): {e}",
                self.metadata.index
            )),
        }
    }
}

impl Read for SnapshotReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.file {
            Some(f) => f.read(buf),
            None => Ok(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf() -> ConfStateRecord {
        ConfStateRecord {
            voters: vec![0x0123_4567_89ab, 2, 3],
            learners: vec![0x0abc_def0_1234],
            ..Default::default()
        }
    }

    const WRITTEN: Written = Written {
        data_len: 100,
        data_crc32c: 7,
        plain_len: 72,
    };

    /// A header block holding `env` at format `version`, its CRC right.
    fn block(env: &SnapshotEnvelope, version: u32) -> Vec<u8> {
        let body = env.encode_to_vec();
        let mut h = vec![0u8; HEADER_BLOCK];
        h[H_MAGIC..H_VERSION].copy_from_slice(MAGIC);
        h[H_VERSION..H_ENVELOPE_LEN].copy_from_slice(&version.to_le_bytes());
        h[H_ENVELOPE_LEN..H_ENVELOPE].copy_from_slice(&(body.len() as u32).to_le_bytes());
        let crc_at = H_ENVELOPE + body.len();
        h[H_ENVELOPE..crc_at].copy_from_slice(&body);
        let crc = crc32c::crc32c(&h[..crc_at]);
        h[crc_at..crc_at + H_CRC_LEN].copy_from_slice(&crc.to_le_bytes());
        h
    }

    #[test]
    fn an_encrypted_header_holds_the_conf_state_sealed_and_bound_to_its_snapshot() {
        let path = Path::new("/x/snap/a.snap");
        let c = Cipher::new(&[9; 32]);
        let h = encode_header(40, 5, &conf(), WRITTEN, Some(&c)).expect("encode");
        let (env, version) = decode_header(path, &h).expect("decode");
        assert_eq!(version, SNAP_FORMAT_VERSION);
        assert!(env.sealed && env.conf_state.is_none());
        let plain = c
            .open(&conf_aad(40, 5), &env.sealed_conf_state)
            .expect("opens");
        assert_eq!(
            ConfStateRecord::decode(&plain[..]).expect("decodes"),
            conf()
        );
        // Bound to index and term: under another snapshot's, it does not open.
        assert!(c.open(&conf_aad(41, 5), &env.sealed_conf_state).is_none());
        assert!(c.open(&conf_aad(40, 6), &env.sealed_conf_state).is_none());
        // Neither distinctive member id in plaintext anywhere in the block.
        for id in [conf().voters[0], conf().learners[0]] {
            let mut v = Vec::new();
            prost::encoding::encode_varint(id, &mut v);
            assert!(!h.windows(v.len()).any(|w| w == v), "{id:#x} in plaintext");
        }
        // A plaintext store's header: the conf state as it is, nothing sealed.
        let h = encode_header(40, 5, &conf(), WRITTEN, None).expect("encode");
        let (env, version) = decode_header(path, &h).expect("decode");
        assert_eq!(version, SNAP_FORMAT_VERSION);
        assert_eq!((env.sealed, env.conf_state), (false, Some(conf())));
        assert!(env.sealed_conf_state.is_empty());
    }

    #[test]
    fn a_conf_state_where_the_version_does_not_put_it_is_damage() {
        let path = Path::new("/x/snap/a.snap");
        let c = Cipher::new(&[9; 32]);
        let sealed_conf = c.seal(&conf_aad(40, 5), &[&conf().encode_to_vec()]);
        let env = |sealed: bool, plain: bool, sealed_conf: &[u8]| SnapshotEnvelope {
            index: 40,
            term: 5,
            conf_state: plain.then(conf),
            data_len: 100,
            data_crc32c: 7,
            sealed,
            plain_len: 72,
            sealed_conf_state: sealed_conf.to_vec(),
        };
        // (envelope, version, accepted)
        for (e, version, ok) in [
            (env(true, false, &sealed_conf), 2, true),
            (env(true, true, &[]), 1, true),
            (env(false, true, &[]), 1, true),
            (env(false, true, &[]), 2, true),
            (env(true, true, &[]), 2, false),
            (env(true, true, &sealed_conf), 2, false),
            (env(true, false, &[]), 2, false),
            (
                env(true, false, &sealed_conf[..crypto::OVERHEAD - 1]),
                2,
                false,
            ),
            (env(true, false, &sealed_conf), 1, false),
            (env(false, true, &sealed_conf), 2, false),
        ] {
            let what = format!("{e:?} at version {version}");
            match decode_header(path, &block(&e, version)) {
                Ok((got, v)) if ok => assert_eq!((got, v), (e, version), "{what}"),
                Err(Error::Corrupt {
                    path: p, offset, ..
                }) if !ok => assert_eq!((p.as_path(), offset), (path, H_ENVELOPE as u64), "{what}"),
                other => panic!("{what}: {other:?}"),
            }
        }
    }
}
