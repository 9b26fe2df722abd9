//! The `wal.meta` page: raft id, group id, checkpoint, hard state, conf state, snapshot metadata
//! (and, with the same layout, an engine root's `engine.meta`).
//!
//! Owns: the byte layout of `wal.meta` and its crash-atomic update, and whether its encryption
//! fits the key it is opened with. The file holds two copies ("regions") of the state, each with
//! a sequence number and a CRC32C; an update writes the copy that does not hold the newest
//! state, so a torn write can only damage the older copy, and on open the newest valid copy
//! wins. A file is made with the state in both copies, so a copy of all zeros is damage (the
//! copy left may be the older state), never a copy not yet written (but in a file as versions
//! before 2026-12-08 made it). A store's or a root's page always exists, so its flag (bit 0:
//! the record sealed) is what tells an encrypted store or root from a plaintext one: a sealed
//! page without a key, a plaintext page with one, or a key that does not open the record is
//! `Error::Encryption` naming the file. Must never: overwrite the copy holding the newest
//! durable state, or decide what the state means for the log (that is `storage`).
//!
//! Region layout (little-endian), regions at offsets 0 and `file_len / 2`:
//! ```text
//! 0   magic "RWALMETA"      8
//! 8   format version u32    4
//! 12  flags u32             4   (bit 0: the record is sealed; 0: plaintext)
//! 16  sequence u64          8   (newest valid copy wins)
//! 24  record length u32     4
//! 28  CRC32C u32            4   (over bytes [0, 28) and the record)
//! 32  record                    (protobuf MetaRecord or EngineRecord, proto/raftwal.proto;
//!                               sealed: nonce, ciphertext, tag)
//! ```

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::proto::{EngineRecord, MetaRecord};
use crate::store::header::Checks;
use crate::sys::crypto::Cipher;
use crate::sys::fsutil;
use crate::sys::le;
use crate::sys::map::PageMap;

/// Name of the meta page file in a WAL directory.
pub(crate) const META_FILE: &str = "wal.meta";
/// Version of the meta page layout (and of the directory's format as a whole).
pub(crate) const META_FORMAT_VERSION: u32 = 1;
/// A record kept in a two-copy page file: a group's `wal.meta` (`MetaRecord`) or an engine
/// root's `engine.meta` (`EngineRecord`). Both use the region layout above, with their own magic.
pub(crate) trait PageRecord: prost::Message + Default + Clone {
    /// The region magic.
    const MAGIC: &'static [u8; 8];
    /// The file's name in its directory.
    const FILE: &'static str;
    /// The start of a sealed record's associated data (then the sequence number): a record
    /// sealed for one kind of page does not open as the other's.
    const SEAL_LABEL: &'static [u8; 12];
    /// Why a sealed page is refused when no key is given.
    const SEALED_WITHOUT_KEY: &'static str = "the store is encrypted: open it with its key";
    /// Why a plaintext page is refused when a key is given.
    const PLAIN_WITH_KEY: &'static str =
        "the store is not encrypted: refusing to open it with a key";
}

impl PageRecord for MetaRecord {
    const MAGIC: &'static [u8; 8] = b"RWALMETA";
    const FILE: &'static str = META_FILE;
    const SEAL_LABEL: &'static [u8; 12] = b"raftwal-meta";
}

impl PageRecord for EngineRecord {
    const MAGIC: &'static [u8; 8] = b"RWALROOT";
    const FILE: &'static str = "engine.meta";
    const SEAL_LABEL: &'static [u8; 12] = b"raftwal-root";
    const SEALED_WITHOUT_KEY: &'static str =
        "the engine root is encrypted (engine.meta is sealed): open it with its key";
    // A root that an earlier raftwal made with a key has groups and journal segments sealed but
    // an `engine.meta` in plaintext: nothing in it tells it from a plaintext root (with no
    // group, nothing proves the key), so it is refused, and the message says so.
    const PLAIN_WITH_KEY: &'static str = "the engine root is not encrypted (engine.meta is not sealed): refusing to open it with a key (a root made with a key by a raftwal that did not seal engine.meta looks the same, and this version does not open it: docs/FORMAT.md, \"Encryption\")";
}
/// Region flag: the record is sealed with the store's key (AES-256-GCM).
const FLAG_ENCRYPTED: u32 = 1;
/// The largest sequence number a valid copy holds (a store a nanosecond would take 146 years
/// to reach it); past it, the copy is damaged.
pub(crate) const MAX_SEQ: u64 = 1 << 62;
/// Smallest region: one page.
const MIN_REGION: usize = 4096;

const R_MAGIC: usize = 0;
const R_VERSION: usize = R_MAGIC + 8;
const R_FLAGS: usize = R_VERSION + 4;
const R_SEQ: usize = R_FLAGS + 4;
const R_LEN: usize = R_SEQ + 8;
const R_CRC: usize = R_LEN + 4;
const R_RECORD: usize = R_CRC + 4;

/// Keys of the integer values kept in the meta page.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MetaInfo {
    /// This node's raft id.
    RaftId,
    /// The raft group this log belongs to.
    GroupId,
    /// The application's checkpoint (typically the applied index).
    CheckpointIndex,
    /// Index of the current snapshot (read-only: set by snapshots).
    SnapshotIndex,
    /// Term of the current snapshot (read-only: set by snapshots).
    SnapshotTerm,
}

/// The copy of the meta state that open did not use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum OtherCopy {
    /// Valid, holding an older state (this sequence number).
    Older { seq: u64 },
    /// All zero: never written (region 1 of a file as versions before 2026-12-08 created it,
    /// never updated since; the files made now hold two copies from the start).
    Blank,
    /// Written but invalid (`reason`, at `offset` in the file): a damaged copy, or an update
    /// torn by a crash before it was acknowledged (the two look the same on disk).
    Damaged { offset: u64, reason: String },
}

/// Which copy of the meta state is in use, and what the other one holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Copies {
    /// Region (0 or 1) holding the state in use.
    pub current: usize,
    /// Its sequence number.
    pub seq: u64,
    pub other: OtherCopy,
}

impl Copies {
    /// `e`, an error about the log found with the state of this copy, with a note when the
    /// other copy is damaged: the state in use may be older than the log files, which is then
    /// what is really wrong.
    pub(crate) fn explain(&self, e: Error) -> Error {
        let OtherCopy::Damaged { .. } = &self.other else {
            return e;
        };
        let note = format!(
            " (wal.meta's copy {} is damaged, so this is the state of copy {}, sequence {}, which may be older than the log files)",
            2 - self.current,
            self.current + 1,
            self.seq
        );
        match e {
            Error::Corrupt {
                path,
                offset,
                reason,
            } => Error::Corrupt {
                path,
                offset,
                reason: reason + &note,
            },
            Error::MissingFile { path, reason } => Error::MissingFile {
                path,
                reason: reason + &note,
            },
            other => other,
        }
    }

    /// The damage in the other copy, as an error naming `wal.meta` at `path` and the copy.
    pub(crate) fn damage(&self, path: &Path) -> Option<Error> {
        let OtherCopy::Damaged { offset, reason } = &self.other else {
            return None;
        };
        Some(Error::corrupt(
            path,
            *offset,
            format!(
                "copy {} of the meta state is damaged ({reason}); the state in use is copy {} (sequence {}). A crash that tore an update never acknowledged looks the same, but if copy {} held the newest state, that state is lost",
                2 - self.current,
                self.current + 1,
                self.seq,
                2 - self.current
            ),
        ))
    }
}

/// The mapped `wal.meta` file (or, with `R = EngineRecord`, an engine root's `engine.meta`).
pub(crate) struct MetaFile<R: PageRecord = MetaRecord> {
    dir: PathBuf,
    path: PathBuf,
    /// `None` once detached ([`MetaFile::detach`]): a descriptor is opened for each flush.
    file: Option<File>,
    /// Mapped at the first store of a file that keeps its descriptor (a `DiskStorage`'s): open
    /// reads a file of up to [`READ_AT_OPEN`] bytes with `pread` (docs/PERFORMANCE.md,
    /// "Reopen: fewer maps"), and a detached file is stored with `pwrite`, never mapped. A
    /// larger file (a record of half a MiB or more, say a very large conf state; or a damaged
    /// length) is mapped at open to be read, and then stored through that map.
    map: Option<PageMap>,
    /// The file's length: both copies.
    len: usize,
    /// Which copy holds the newest state, and what the other holds.
    copies: Copies,
    dirty: bool,
    /// Seals the record when the store is encrypted.
    cipher: Option<Cipher>,
    record: std::marker::PhantomData<R>,
}

impl<R: PageRecord> MetaFile<R> {
    fn region_size(&self) -> usize {
        self.len / 2
    }

    /// A map of the file on its descriptor, for a `MetaFile` that keeps one (a detached page
    /// is stored with `pwrite`, never mapped). The file must still be the length open found:
    /// only this process writes it, and a store that outgrows it replaces the file and this
    /// `MetaFile` whole.
    fn map_file(&self) -> Result<PageMap> {
        let Some(f) = &self.file else {
            return Err(Error::invariant(format!(
                "a detached meta file, {}, about to be mapped",
                self.path.display()
            )));
        };
        let map = PageMap::new(f, &self.path)?;
        if map.len() != self.len {
            return Err(Error::corrupt(
                &self.path,
                map.len() as u64,
                format!(
                    "the meta file is {} bytes, but was {} when opened",
                    map.len(),
                    self.len
                ),
            ));
        }
        Ok(map)
    }

    /// Which copy is in use, and what the other one holds (as found at open, then as written).
    pub(crate) fn copies(&self) -> &Copies {
        &self.copies
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Creates the file holding `record` (durably: temporary file, fsync, rename, dir fsync),
    /// in both copies (sequences 2 and 1), so that no copy of the file is ever all zeros.
    pub(crate) fn create(dir: &Path, record: &R, cipher: Option<&Cipher>) -> Result<MetaFile<R>> {
        Self::write_new(dir, record, 2, cipher)?;
        let (meta, _) = Self::open(dir, cipher)?;
        Ok(meta)
    }

    /// Writes a fresh file with `record` in region 0 under sequence `seq` (at least 2) and in
    /// region 1 under `seq - 1`: the same state in both, the copy in region 0 the newest. A copy
    /// of all zeros is then damage, never a copy not yet written (docs/FORMAT.md, `wal.meta`).
    fn write_new(dir: &Path, record: &R, seq: u64, cipher: Option<&Cipher>) -> Result<()> {
        let body = record_body(record, seq, cipher);
        let older = record_body(record, seq - 1, cipher);
        let region = (R_RECORD + body.len().max(older.len()))
            .next_power_of_two()
            .max(MIN_REGION);
        let mut bytes = vec![0u8; region * 2];
        let sealed = cipher.is_some();
        encode_region::<R>(&mut bytes[..region], seq, &body, sealed);
        encode_region::<R>(&mut bytes[region..], seq - 1, &older, sealed);
        fsutil::write_atomic(dir, R::FILE, &bytes)
    }

    /// Opens the file and returns it with the newest valid copy of the state.
    pub(crate) fn open(dir: &Path, cipher: Option<&Cipher>) -> Result<(MetaFile<R>, R)> {
        let path = dir.join(R::FILE);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io("open", &path, e))?;
        let len = file
            .metadata()
            .map_err(|e| Error::io("stat", &path, e))?
            .len();
        check_len(&path, len)?;
        // Small files (a record under half a MiB: every usual one) are read; a larger one is
        // mapped, so that a damaged length is never an allocation.
        let mut map = None;
        let read;
        let bytes: &[u8] = if len <= READ_AT_OPEN {
            let mut b = vec![0u8; len as usize];
            file.read_exact_at(&mut b, 0)
                .map_err(|e| Error::io("read", &path, e))?;
            read = b;
            &read
        } else {
            map.insert(PageMap::new(&file, &path)?).bytes()
        };
        let (copies, record) = newest_copy::<R>(&path, bytes, cipher)?;
        Ok((
            MetaFile {
                dir: dir.to_path_buf(),
                path,
                file: Some(file),
                map,
                len: len as usize,
                copies,
                dirty: false,
                cipher: cipher.cloned(),
                record: std::marker::PhantomData,
            },
            record,
        ))
    }

    /// Drops the descriptor: an engine group's meta page, whose engine caps descriptors (and
    /// the maps each group holds). Stores and flushes then open one for the moment.
    pub(crate) fn detach(&mut self) {
        self.file = None;
    }

    /// Writes `record` into the copy that does not hold the newest state (through the map, or
    /// with `pwrite` when detached; durable after [`MetaFile::flush`]). A record too large for
    /// a region rewrites the file larger, durably.
    pub(crate) fn store(&mut self, record: &R) -> Result<()> {
        let seq = self.copies.seq + 1;
        let body = record_body(record, seq, self.cipher.as_ref());
        let region = self.region_size();
        if R_RECORD + body.len() > region {
            // Flush first so that the file swap never replaces unflushed state with older state.
            self.flush()?;
            let cipher = self.cipher.clone();
            Self::write_new(&self.dir, record, seq, cipher.as_ref())?;
            let detached = self.file.is_none();
            let (mut grown, _) = Self::open(&self.dir, cipher.as_ref())?;
            if detached {
                grown.detach();
            }
            *self = grown;
            return Ok(());
        }
        let next = 1 - self.copies.current;
        let sealed = self.cipher.is_some();
        if self.map.is_none() && self.file.is_none() {
            // A detached page (an engine group's) is written with `pwrite`, never mapped: the
            // maps a group holds bound how many groups one process can host
            // (docs/PERFORMANCE.md, "How many groups a process can host"). The same bytes as
            // through a map: the record and its header, the rest of the region as it was.
            let mut bytes = vec![0u8; R_RECORD + body.len()];
            encode_region::<R>(&mut bytes, seq, &body, sealed);
            let f = OpenOptions::new()
                .write(true)
                .open(&self.path)
                .map_err(|e| Error::io("open", &self.path, e))?;
            f.write_all_at(&bytes, (next * region) as u64)
                .map_err(|e| Error::io("write", &self.path, e))?;
        } else {
            let map = match self.map.take() {
                Some(m) => m,
                None => self.map_file()?,
            };
            let map = self.map.insert(map);
            encode_region::<R>(
                map.bytes_mut(next * region..(next + 1) * region),
                seq,
                &body,
                sealed,
            );
        }
        self.copies = Copies {
            current: next,
            seq,
            other: OtherCopy::Older {
                seq: self.copies.seq,
            },
        };
        self.dirty = true;
        Ok(())
    }

    /// Flushes the file whether or not this process stored anything: a state that a killed
    /// process stored but did not flush (still in the page cache) becomes durable before it is
    /// acted on (a vote, say).
    pub(crate) fn sync(&mut self) -> Result<()> {
        self.dirty = true;
        self.flush()
    }

    /// Makes the last stored state durable.
    pub(crate) fn flush(&mut self) -> Result<()> {
        if self.dirty {
            let timer = crate::metrics::Timer::start();
            let synced = match &self.file {
                Some(f) => f.sync_data(),
                None => OpenOptions::new()
                    .write(true)
                    .open(&self.path)
                    .and_then(|f| f.sync_data()),
            };
            synced.map_err(|e| Error::io("fdatasync", &self.path, e))?;
            timer.fsync(crate::metrics::Synced::Meta);
            self.dirty = false;
        }
        Ok(())
    }
}

/// Reads the newest valid state of `dir`'s `wal.meta` without mapping or changing anything,
/// and which copy holds it.
pub(crate) fn read_only<R: PageRecord>(dir: &Path, cipher: Option<&Cipher>) -> Result<(R, Copies)> {
    let path = dir.join(R::FILE);
    let bytes = std::fs::read(&path).map_err(|e| Error::io("read", &path, e))?;
    check_len(&path, bytes.len() as u64)?;
    let (copies, record) = newest_copy::<R>(&path, &bytes, cipher)?;
    Ok((record, copies))
}

/// Meta files up to this length are read at open, not mapped (see `MetaFile::map`).
const READ_AT_OPEN: u64 = 1 << 20;

fn check_len(path: &Path, len: u64) -> Result<()> {
    if len < (2 * MIN_REGION) as u64 || !len.is_multiple_of(2) || len > (1 << 40) {
        return Err(Error::corrupt(
            path,
            len,
            format!(
                "the meta page file is {len} bytes; it must be an even size of at least {}",
                2 * MIN_REGION
            ),
        ));
    }
    Ok(())
}

/// Picks the newest valid copy, and says what the other one holds.
fn newest_copy<R: PageRecord>(
    path: &Path,
    bytes: &[u8],
    cipher: Option<&Cipher>,
) -> Result<(Copies, R)> {
    let region = bytes.len() / 2;
    let a = decode_region(path, &bytes[..region], 0, cipher);
    let b = decode_region(path, &bytes[region..], region as u64, cipher);
    // A copy written by a newer format is refused, even when the other copy is readable:
    // falling back to it would roll the state back. A key that does not fit is reported as
    // such, not as damage.
    for r in [&a, &b] {
        match r {
            Err(Error::UnsupportedVersion {
                path,
                found,
                supported,
            }) => {
                return Err(Error::UnsupportedVersion {
                    path: path.clone(),
                    found: *found,
                    supported: *supported,
                })
            }
            Err(Error::Encryption { path, reason }) => {
                return Err(Error::Encryption {
                    path: path.clone(),
                    reason: reason.clone(),
                })
            }
            _ => {}
        }
    }
    // A copy of all zeros was never written only in a file as versions before 2026-12-08
    // created it (region 0 under sequence 1, region 1 zeros) and never updated since. Anywhere
    // else it is damage (zeros where a copy was): the other copy may be the older state.
    let other_of = |r: std::result::Result<&(u64, R), &Error>, at: usize, seq: u64| match r {
        Ok((seq, _)) => OtherCopy::Older { seq: *seq },
        Err(_) if bytes[at..at + region].iter().all(|&b| b == 0) => {
            if at == region && seq == 1 {
                OtherCopy::Blank
            } else {
                OtherCopy::Damaged {
                    offset: at as u64,
                    reason: format!(
                        "all zeros where a copy was written (the copy at offset {} holds sequence {seq})",
                        region - at
                    ),
                }
            }
        }
        Err(Error::Corrupt { offset, reason, .. }) => OtherCopy::Damaged {
            offset: *offset,
            reason: reason.clone(),
        },
        Err(e) => OtherCopy::Damaged {
            offset: at as u64,
            reason: e.to_string(),
        },
    };
    let pick = |current: usize, seq: u64, other: OtherCopy| Copies {
        current,
        seq,
        other,
    };
    match (a, b) {
        (Ok((sa, ra)), Ok((sb, rb))) => Ok(if sa >= sb {
            (pick(0, sa, OtherCopy::Older { seq: sb }), ra)
        } else {
            (pick(1, sb, OtherCopy::Older { seq: sa }), rb)
        }),
        (Ok((sa, ra)), b @ Err(_)) => Ok((pick(0, sa, other_of(b.as_ref(), region, sa)), ra)),
        (a @ Err(_), Ok((sb, rb))) => Ok((pick(1, sb, other_of(a.as_ref(), 0, sb)), rb)),
        (Err(_), Err(_)) => Err(Error::corrupt(
            path,
            0,
            "neither copy of the meta state is valid (bad magic or checksum in both regions)",
        )),
    }
}

/// The record bytes a region stores: the protobuf record, sealed when the store is encrypted.
fn record_body<R: PageRecord>(record: &R, seq: u64, cipher: Option<&Cipher>) -> Vec<u8> {
    let plain = record.encode_to_vec();
    match cipher {
        Some(c) => c.seal(&meta_aad::<R>(seq), &[&plain]),
        None => plain,
    }
}

/// Associated data of a sealed meta record: binds it to its kind of page and its sequence
/// number.
fn meta_aad<R: PageRecord>(seq: u64) -> [u8; 20] {
    let mut aad = [0u8; 20];
    aad[..12].copy_from_slice(R::SEAL_LABEL);
    aad[12..].copy_from_slice(&seq.to_le_bytes());
    aad
}

fn encode_region<R: PageRecord>(r: &mut [u8], seq: u64, body: &[u8], encrypted: bool) {
    let flags = if encrypted { FLAG_ENCRYPTED } else { 0 };
    let mut h = [0u8; R_RECORD];
    h[R_MAGIC..R_MAGIC + 8].copy_from_slice(R::MAGIC);
    h[R_VERSION..R_VERSION + 4].copy_from_slice(&META_FORMAT_VERSION.to_le_bytes());
    h[R_FLAGS..R_FLAGS + 4].copy_from_slice(&flags.to_le_bytes());
    h[R_SEQ..R_SEQ + 8].copy_from_slice(&seq.to_le_bytes());
    h[R_LEN..R_LEN + 4].copy_from_slice(&(body.len() as u32).to_le_bytes());
    let crc = crc32c::crc32c_append(crc32c::crc32c(&h[..R_CRC]), body);
    h[R_CRC..R_CRC + 4].copy_from_slice(&crc.to_le_bytes());
    // Record first, header (with the checksum that covers it) second.
    r[R_RECORD..R_RECORD + body.len()].copy_from_slice(body);
    r[..R_RECORD].copy_from_slice(&h);
}

/// Checks one region and decodes its record; `at` is the region's offset in the file.
fn decode_region<R: PageRecord>(
    path: &Path,
    r: &[u8],
    at: u64,
    cipher: Option<&Cipher>,
) -> Result<(u64, R)> {
    let u32_at = |o: usize| le::u32_at(r, o);
    let check = Checks {
        path,
        at,
        name: "meta copy",
    };
    check.magic(r.get(R_MAGIC..R_MAGIC + 8), R::MAGIC)?;
    let len = u32_at(R_LEN) as usize;
    if R_RECORD + len > r.len() {
        return Err(Error::corrupt(
            path,
            at + R_LEN as u64,
            format!("record length {len} exceeds the region"),
        ));
    }
    let crc = crc32c::crc32c_append(crc32c::crc32c(&r[..R_CRC]), &r[R_RECORD..R_RECORD + len]);
    check.checksum(crc == u32_at(R_CRC), R_CRC)?;
    check.version(u32_at(R_VERSION), META_FORMAT_VERSION)?;
    let flags = u32_at(R_FLAGS);
    check.flags(flags, FLAG_ENCRYPTED, R_FLAGS)?;
    let seq = le::u64_at(r, R_SEQ);
    if seq > MAX_SEQ {
        // Updates count up from 1, one a store: no page written by raftwal gets here, and
        // the next update could not follow it (the newer copy must have the larger number).
        return Err(Error::corrupt(
            path,
            at + R_SEQ as u64,
            format!("meta copy sequence {seq} is past {MAX_SEQ}: no update can follow it"),
        ));
    }
    let body = &r[R_RECORD..R_RECORD + len];
    let plain;
    let body = match (flags & FLAG_ENCRYPTED != 0, cipher) {
        (false, None) => body,
        (true, Some(c)) => {
            plain = c
                .open(&meta_aad::<R>(seq), body)
                .ok_or_else(|| Error::Encryption {
                    path: path.to_path_buf(),
                    reason: "the key does not open the meta page (wrong key, or altered data)"
                        .to_string(),
                })?;
            &plain[..]
        }
        (true, None) => {
            return Err(Error::Encryption {
                path: path.to_path_buf(),
                reason: R::SEALED_WITHOUT_KEY.to_string(),
            })
        }
        (false, Some(_)) => {
            return Err(Error::Encryption {
                path: path.to_path_buf(),
                reason: R::PLAIN_WITH_KEY.to_string(),
            })
        }
    };
    let record = R::decode(body)
        .map_err(|e| Error::corrupt(path, at + R_RECORD as u64, format!("meta record: {e}")))?;
    Ok((seq, record))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(raft_id: u64) -> MetaRecord {
        MetaRecord {
            raft_id,
            ..Default::default()
        }
    }

    #[test]
    fn newest_valid_copy_wins() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = MetaFile::create(dir.path(), &record(1), None).unwrap();
        m.store(&record(2)).unwrap();
        m.store(&record(3)).unwrap();
        m.flush().unwrap();
        drop(m);
        let (_, r) = MetaFile::<MetaRecord>::open(dir.path(), None).unwrap();
        assert_eq!(r.raft_id, 3);
    }

    /// A meta page file of a size no page has is refused naming that file, whichever it is
    /// (the message once said `wal.meta` for `engine.meta` too).
    #[test]
    fn a_page_file_of_the_wrong_size_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(EngineRecord::FILE);
        std::fs::write(&path, [0u8; 100]).unwrap();
        let Err(err) = read_only::<EngineRecord>(dir.path(), None) else {
            panic!("a 100-byte page file was read");
        };
        let msg = err.to_string();
        assert!(
            msg.contains("engine.meta") && !msg.contains("wal.meta"),
            "{msg}"
        );
    }

    /// An engine root's page is sealed like a group's, checked against the key the same way
    /// (with its own reasons), and under its own associated data: a sealed `engine.meta` copy
    /// relabelled as a `wal.meta` one (magic and checksum fixed) does not open.
    #[test]
    fn a_sealed_engine_page_needs_its_key_and_opens_as_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let (key, other) = (Cipher::new(&[1; 32]), Cipher::new(&[2; 32]));
        let root = EngineRecord {
            checkpoint_seq: 7,
            next_incarnation: 3,
            open: false,
            journal_begun: true,
        };
        MetaFile::create(dir.path(), &root, Some(&key)).unwrap();
        let (got, _) = read_only::<EngineRecord>(dir.path(), Some(&key)).unwrap();
        assert_eq!(got, root);
        for (cipher, words) in [(None, "is encrypted"), (Some(&other), "does not open")] {
            match read_only::<EngineRecord>(dir.path(), cipher) {
                Err(Error::Encryption { path, reason }) => {
                    assert!(path.ends_with(EngineRecord::FILE));
                    assert!(reason.contains(words), "{reason}");
                }
                got => panic!("{words}: {:?}", got.map(|(r, _)| r)),
            }
        }
        let mut bytes = std::fs::read(dir.path().join(EngineRecord::FILE)).unwrap();
        bytes[R_MAGIC..R_MAGIC + 8].copy_from_slice(MetaRecord::MAGIC);
        let len = le::u32_at(&bytes, R_LEN) as usize;
        let crc = crc32c::crc32c_append(
            crc32c::crc32c(&bytes[..R_CRC]),
            &bytes[R_RECORD..R_RECORD + len],
        );
        bytes[R_CRC..R_CRC + 4].copy_from_slice(&crc.to_le_bytes());
        std::fs::write(dir.path().join(META_FILE), &bytes).unwrap();
        assert!(matches!(
            read_only::<MetaRecord>(dir.path(), Some(&key)),
            Err(Error::Encryption { .. })
        ));
    }

    #[test]
    fn torn_newest_copy_falls_back_to_previous() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = MetaFile::create(dir.path(), &record(1), None).unwrap();
        m.store(&record(2)).unwrap();
        m.flush().unwrap();
        let newest = m.copies.current * m.region_size();
        drop(m);
        let path = dir.path().join(META_FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[newest + R_RECORD] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        let (_, r) = MetaFile::<MetaRecord>::open(dir.path(), None).unwrap();
        assert_eq!(r.raft_id, 1);
    }

    /// A valid copy whose sequence number leaves no room for the next update (a forged or
    /// miswritten page) is a damaged copy: the other one is used, and updates after open take
    /// sequence numbers that win at the next open. (Such a copy once opened; the next update
    /// overflowed its sequence, a panic in a debug build, and in a release build wrapped to 0
    /// so that the next open went back to the older state.)
    #[test]
    fn a_copy_with_no_sequence_left_is_damaged() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = MetaFile::create(dir.path(), &record(1), None).unwrap();
        m.store(&record(2)).unwrap();
        m.flush().unwrap();
        let (newest, region) = (m.copies.current, m.region_size());
        drop(m);
        // The older copy (raft id 1) rewritten with a valid checksum and sequence u64::MAX.
        let path = dir.path().join(META_FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        let older = &mut bytes[(1 - newest) * region..(2 - newest) * region];
        older[R_SEQ..R_SEQ + 8].copy_from_slice(&u64::MAX.to_le_bytes());
        let len = u32::from_le_bytes(older[R_LEN..R_LEN + 4].try_into().unwrap()) as usize;
        let crc = crc32c::crc32c_append(
            crc32c::crc32c(&older[..R_CRC]),
            &older[R_RECORD..R_RECORD + len],
        );
        older[R_CRC..R_CRC + 4].copy_from_slice(&crc.to_le_bytes());
        std::fs::write(&path, &bytes).unwrap();
        let (mut m, r) = MetaFile::<MetaRecord>::open(dir.path(), None).unwrap();
        assert_eq!(r.raft_id, 2, "the copy past the last sequence was used");
        assert!(
            matches!(m.copies.other, OtherCopy::Damaged { .. }),
            "the copy past the last sequence is not reported damaged: {:?}",
            m.copies.other
        );
        m.store(&record(3)).unwrap();
        m.flush().unwrap();
        drop(m);
        let (_, r) = MetaFile::<MetaRecord>::open(dir.path(), None).unwrap();
        assert_eq!(r.raft_id, 3);
    }

    #[test]
    fn large_record_grows_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = MetaFile::create(dir.path(), &record(1), None).unwrap();
        let mut big = record(5);
        big.conf_state = Some(crate::proto::ConfStateRecord {
            voters: (0..2000).collect(),
            ..Default::default()
        });
        m.store(&big).unwrap();
        m.store(&record(6)).unwrap();
        m.flush().unwrap();
        drop(m);
        let (_, r) = MetaFile::<MetaRecord>::open(dir.path(), None).unwrap();
        assert_eq!(r.raft_id, 6);
    }
}
