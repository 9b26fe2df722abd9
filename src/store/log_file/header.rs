//! The file header codec: the 36 bytes at `HEADER_OFFSET` (magic, version, flags, file id, base
//! index, CRC32C), and reading a header without mapping the file (`peek_header`, `peek_base`).
//!
//! The format version says how the file's sealed payloads are bound to their slots
//! ([`seal_binding`]): a new file is written at [`LOG_FORMAT_VERSION`]; a file of an older
//! version is read (and appended to) as that version, for the life of the file; a newer one is
//! refused.
//!
//! Owns: the header's byte layout, its flags, its versions and its checks. Must never: write a
//! header into a file (the `LogFile` lifecycle in `mod.rs` does), or decide what a missing or
//! failing header means for the log (that is `recovery`).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::slot::{SealBinding, SLOT_AREA};
use super::{MAX_INDEX, PAYLOAD_START};
use crate::error::{Error, Result};
use crate::store::header::Checks;
use crate::sys::le;

// File header fields, stored at HEADER_OFFSET.
pub(crate) const HEADER_OFFSET: usize = SLOT_AREA;
const HDR_MAGIC: usize = 0;
const HDR_VERSION: usize = HDR_MAGIC + 8;
const HDR_FLAGS: usize = HDR_VERSION + 4;
const HDR_FILE_ID: usize = HDR_FLAGS + 4;
const HDR_BASE_INDEX: usize = HDR_FILE_ID + 8;
const HDR_CRC: usize = HDR_BASE_INDEX + 8;
pub(super) const HEADER_SIZE: usize = HDR_CRC + 4;
const _: () = assert!(HEADER_OFFSET + HEADER_SIZE <= PAYLOAD_START as usize);
// The header sits in one 512-byte sector, so a crash writes all of it or none of it.
const _: () = assert!(HEADER_OFFSET % 512 + HEADER_SIZE <= 512);

const FILE_MAGIC: &[u8; 8] = b"RWALLOG\0";
/// Header flag: payloads are sealed with the store's key.
const HDR_FLAG_ENCRYPTED: u32 = 1;
/// Header flag: this file was created before the file ahead of it was flushed (a rotation
/// without `sync_writes`), so a power loss may have left that file's end unwritten: recovery may
/// treat it as tail. Cleared once everything before it is durable.
const HDR_FLAG_PREV_UNFLUSHED: u32 = 2;
/// Version of the log file layout that new files get: 2, whose seals bind the data length too
/// ([`SealBinding::WithDataLen`]).
pub(crate) const LOG_FORMAT_VERSION: u32 = 2;
/// The last version whose seals bind index, term and type alone ([`SealBinding::IndexTermType`]).
const LOG_VERSION_UNBOUND_LEN: u32 = 1;

/// How the sealed payloads of a file of format `version` (one [`decode_header`] accepted) are
/// bound to their slots. Versions up to 1 (0 was never written, and is read as 1 has always
/// read it) bind index, term and type; version 2 binds the data length too.
pub(super) fn seal_binding(version: u32) -> SealBinding {
    if version <= LOG_VERSION_UNBOUND_LEN {
        SealBinding::IndexTermType
    } else {
        SealBinding::WithDataLen
    }
}

/// What a checked header says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Decoded {
    /// The index slot 0 holds.
    pub base: u64,
    /// `HDR_FLAG_PREV_UNFLUSHED`.
    pub prev_unflushed: bool,
    /// The format version (at most [`LOG_FORMAT_VERSION`]); a rewritten header keeps it.
    pub version: u32,
}

/// The header of file `id` at format `version`: [`LOG_FORMAT_VERSION`] for a new file, the
/// file's own for a header rewritten in place.
pub(super) fn encode_header(
    version: u32,
    id: u64,
    base: u64,
    encrypted: bool,
    prev_unflushed: bool,
) -> [u8; HEADER_SIZE] {
    let mut flags = if encrypted { HDR_FLAG_ENCRYPTED } else { 0 };
    if prev_unflushed {
        flags |= HDR_FLAG_PREV_UNFLUSHED;
    }
    let mut h = [0u8; HEADER_SIZE];
    h[HDR_MAGIC..HDR_MAGIC + 8].copy_from_slice(FILE_MAGIC);
    h[HDR_VERSION..HDR_VERSION + 4].copy_from_slice(&version.to_le_bytes());
    h[HDR_FLAGS..HDR_FLAGS + 4].copy_from_slice(&flags.to_le_bytes());
    h[HDR_FILE_ID..HDR_FILE_ID + 8].copy_from_slice(&id.to_le_bytes());
    h[HDR_BASE_INDEX..HDR_BASE_INDEX + 8].copy_from_slice(&base.to_le_bytes());
    let crc = crc32c::crc32c(&h[..HDR_CRC]);
    h[HDR_CRC..].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Checks a file header (including that it is encrypted exactly when a key is given) and
/// returns what it says.
pub(super) fn decode_header(path: &Path, h: &[u8], id: u64, encrypted: bool) -> Result<Decoded> {
    let at = HEADER_OFFSET as u64;
    let u32_at = |o: usize| le::u32_at(h, o);
    let u64_at = |o: usize| le::u64_at(h, o);
    let check = Checks {
        path,
        at,
        name: "log file header",
    };
    check.magic(h.get(HDR_MAGIC..HDR_MAGIC + 8), FILE_MAGIC)?;
    check.checksum(crc32c::crc32c(&h[..HDR_CRC]) == u32_at(HDR_CRC), HDR_CRC)?;
    let version = u32_at(HDR_VERSION);
    check.version(version, LOG_FORMAT_VERSION)?;
    let flags = u32_at(HDR_FLAGS);
    check.flags(
        flags,
        HDR_FLAG_ENCRYPTED | HDR_FLAG_PREV_UNFLUSHED,
        HDR_FLAGS,
    )?;
    check.sealed(
        flags & HDR_FLAG_ENCRYPTED != 0,
        encrypted,
        "log file",
        "store",
    )?;
    let file_id = u64_at(HDR_FILE_ID);
    if file_id != id {
        return Err(Error::corrupt(
            path,
            at + HDR_FILE_ID as u64,
            format!("header names file id {file_id}, the file name says {id}"),
        ));
    }
    let base = u64_at(HDR_BASE_INDEX);
    if base == 0 || base > MAX_INDEX {
        return Err(Error::corrupt(
            path,
            at + HDR_BASE_INDEX as u64,
            format!("base index {base} outside [1, {MAX_INDEX}]"),
        ));
    }
    Ok(Decoded {
        base,
        prev_unflushed: flags & HDR_FLAG_PREV_UNFLUSHED != 0,
        version,
    })
}

/// What a log file's header says, read without mapping the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HeaderPeek {
    /// No header: the file is shorter than its slot area, or its header bytes are all zero (a
    /// file created, or made from the spare, whose header never reached the disk). The header
    /// lies in one 512-byte sector, so a crash leaves all of it or none of it.
    Absent,
    /// A valid header; `prev_unflushed` as in `HDR_FLAG_PREV_UNFLUSHED`.
    Present { prev_unflushed: bool },
}

/// Reads and checks the header of log file `id` at `path`; a header that is there but fails
/// its checks is an error naming the file.
pub(crate) fn peek_header(path: &Path, id: u64, encrypted: bool) -> Result<HeaderPeek> {
    Ok(match read_header(path)? {
        None => HeaderPeek::Absent,
        Some((h, _)) => {
            let d = decode_header(path, &h, id, encrypted)?;
            HeaderPeek::Present {
                prev_unflushed: d.prev_unflushed,
            }
        }
    })
}

/// The base index and length of log file `id` at `path`, from its header alone (the read-only
/// tools, which describe a file without copying its slot area); `None` when it has no header
/// (as [`HeaderPeek::Absent`]). A header that is there but fails its checks is an error.
pub(crate) fn peek_base(path: &Path, id: u64, encrypted: bool) -> Result<Option<(u64, u64)>> {
    let Some((h, len)) = read_header(path)? else {
        return Ok(None);
    };
    let d = decode_header(path, &h, id, encrypted)?;
    Ok(Some((d.base, len)))
}

/// The log file at `path`, opened to read without mapping it, and its length; `None` when it is
/// shorter than its slot area (and header).
pub(super) fn open_past_slot_area(path: &Path) -> Result<Option<(File, u64)>> {
    let file = File::open(path).map_err(|e| Error::io("open", path, e))?;
    let len = file
        .metadata()
        .map_err(|e| Error::io("stat", path, e))?
        .len();
    Ok((len >= PAYLOAD_START).then_some((file, len)))
}

/// The header bytes of the log file at `path` and the file's length, without mapping it;
/// `None` when the file is shorter than its slot area or its header bytes are all zero.
fn read_header(path: &Path) -> Result<Option<([u8; HEADER_SIZE], u64)>> {
    let Some((file, len)) = open_past_slot_area(path)? else {
        return Ok(None);
    };
    let mut h = [0u8; HEADER_SIZE];
    file.read_exact_at(&mut h, HEADER_OFFSET as u64)
        .map_err(|e| Error::io("read header", path, e))?;
    Ok((!h.iter().all(|&b| b == 0)).then_some((h, len)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The header of file 3 (base 60,001) at `version`, with its CRC.
    fn header(version: u32, encrypted: bool) -> [u8; HEADER_SIZE] {
        encode_header(version, 3, 60_001, encrypted, true)
    }

    #[test]
    fn a_header_keeps_its_version_and_a_newer_one_is_refused() {
        let path = Path::new("/x/00003.wal");
        for version in [0, 1, LOG_FORMAT_VERSION] {
            for encrypted in [false, true] {
                let h = header(version, encrypted);
                assert_eq!(le::u32_at(&h, HDR_VERSION), version);
                let d = decode_header(path, &h, 3, encrypted).expect("decode");
                assert_eq!(
                    d,
                    Decoded {
                        base: 60_001,
                        prev_unflushed: true,
                        version,
                    }
                );
            }
        }
        match decode_header(path, &header(LOG_FORMAT_VERSION + 1, true), 3, true) {
            Err(Error::UnsupportedVersion {
                path: p,
                found,
                supported,
            }) => {
                assert_eq!(p, path);
                assert_eq!((found, supported), (LOG_FORMAT_VERSION + 1, 2));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn version_2_binds_the_data_length_and_older_versions_do_not() {
        assert_eq!(LOG_FORMAT_VERSION, 2);
        assert_eq!(seal_binding(0), SealBinding::IndexTermType);
        assert_eq!(seal_binding(1), SealBinding::IndexTermType);
        assert_eq!(seal_binding(2), SealBinding::WithDataLen);
    }
}
