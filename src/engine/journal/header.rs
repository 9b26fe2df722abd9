//! A journal segment's header page: its fields, how it is written and how it is read back.
//!
//! Owns: the header's byte layout (magic, version, flags, segment id, first sequence number,
//! CRC32C; docs/FORMAT.md "Engine roots") and what a header found on disk means (valid, blank,
//! recycled). Must never: decide what a segment's place in the journal means (module `open`).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::error::{Error, Result};
use crate::store::header::Checks;
use crate::sys::le;

const MAGIC: &[u8; 8] = b"RWALJNL\0";
const VERSION: u32 = 1;
const FLAG_SEALED: u32 = 1;
/// The segment was started while records of the segments before it were not flushed
/// (`sync_writes: false`): a power loss may leave it with records missing before it.
const FLAG_PREV_UNFLUSHED: u32 = 2;

// Header fields: each offset is the previous one plus the previous field's size.
const H_MAGIC: usize = 0;
const H_VERSION: usize = H_MAGIC + 8;
const H_FLAGS: usize = H_VERSION + 4;
pub(crate) const H_ID: usize = H_FLAGS + 4;
pub(crate) const H_FIRST_SEQ: usize = H_ID + 8;
const H_CRC: usize = H_FIRST_SEQ + 8;
pub(super) const H_LEN: usize = H_CRC + 4;

pub(super) fn encode_header(
    id: u64,
    first_seq: u64,
    sealed: bool,
    prev_unflushed: bool,
) -> [u8; H_LEN] {
    let mut h = [0u8; H_LEN];
    h[H_MAGIC..H_MAGIC + 8].copy_from_slice(MAGIC);
    h[H_VERSION..H_VERSION + 4].copy_from_slice(&VERSION.to_le_bytes());
    let mut flags = if sealed { FLAG_SEALED } else { 0 };
    if prev_unflushed {
        flags |= FLAG_PREV_UNFLUSHED;
    }
    h[H_FLAGS..H_FLAGS + 4].copy_from_slice(&flags.to_le_bytes());
    h[H_ID..H_ID + 8].copy_from_slice(&id.to_le_bytes());
    h[H_FIRST_SEQ..H_FIRST_SEQ + 8].copy_from_slice(&first_seq.to_le_bytes());
    let crc = crc32c::crc32c(&h[..H_CRC]);
    h[H_CRC..H_CRC + 4].copy_from_slice(&crc.to_le_bytes());
    h
}

/// What a segment file's header says.
pub(crate) enum Header {
    /// Its first sequence number, and whether it was started while records before it were not
    /// flushed.
    Valid {
        first_seq: u64,
        prev_unflushed: bool,
    },
    /// All zero: never written.
    Blank,
    /// A valid header of another segment (its id and first sequence number): the file was
    /// recycled (the spare renamed to the next id and its header rewritten), and the rename or
    /// the new header is not on disk.
    Recycled { id: u64, first_seq: u64 },
}

/// The header of segment `id` at `path`. A header that is there but wrong is an error naming
/// the file.
pub(crate) fn read_header(path: &Path, id: u64, sealed: bool) -> Result<Header> {
    let file = File::open(path).map_err(|e| Error::io("open", path, e))?;
    read_header_of(&file, path, id, sealed)
}

/// [`read_header`] of segment `path`, opened as `file`.
pub(crate) fn read_header_of(file: &File, path: &Path, id: u64, sealed: bool) -> Result<Header> {
    let mut h = [0u8; H_LEN];
    match file.read_exact_at(&mut h, 0) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(Header::Blank),
        Err(e) => return Err(Error::io("read header", path, e)),
    }
    if h.iter().all(|&b| b == 0) {
        return Ok(Header::Blank);
    }
    let u32_at = |o: usize| le::u32_at(&h, o);
    let u64_at = |o: usize| le::u64_at(&h, o);
    let check = Checks {
        path,
        at: 0,
        name: "journal segment header",
    };
    check.magic(h.get(H_MAGIC..H_MAGIC + 8), MAGIC)?;
    check.checksum(crc32c::crc32c(&h[..H_CRC]) == u32_at(H_CRC), H_CRC)?;
    check.version(u32_at(H_VERSION), VERSION)?;
    check.flags(u32_at(H_FLAGS), FLAG_SEALED | FLAG_PREV_UNFLUSHED, H_FLAGS)?;
    check.sealed(
        u32_at(H_FLAGS) & FLAG_SEALED != 0,
        sealed,
        "journal segment",
        "engine",
    )?;
    if u64_at(H_ID) != id {
        return Ok(Header::Recycled {
            id: u64_at(H_ID),
            first_seq: u64_at(H_FIRST_SEQ),
        });
    }
    Ok(Header::Valid {
        first_seq: u64_at(H_FIRST_SEQ),
        prev_unflushed: u32_at(H_FLAGS) & FLAG_PREV_UNFLUSHED != 0,
    })
}
