//! Snapshot data files: `snap/<term>-<index>.snap`.
//!
//! Owns: the layout of a snapshot file (a 4 KiB header block holding a checksummed
//! `SnapshotEnvelope`, then the data) and its durable creation (temporary name, fsync, rename,
//! directory fsync). Must never: name a file in the meta page (that is `storage`, and only once
//! the file is durable), or hand out data whose checksum failed.
//!
//! Header block (little-endian):
//! ```text
//! 0      magic "RWALSNAP"        8
//! 8      format version u32      4
//! 12     envelope length u32     4
//! 16     envelope                n   (protobuf SnapshotEnvelope: index, term, conf state,
//!                                     data length, data CRC32C)
//! 16+n   CRC32C u32              4   (over bytes [0, 16+n))
//! ..4096 zero
//! 4096   data
//! ```

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use prost::Message;

use crate::error::{Error, Result};
use crate::fsutil;
use crate::proto::{ConfStateRecord, SnapshotEnvelope};

/// Directory of snapshot files inside a WAL directory.
pub(crate) const SNAP_DIR: &str = "snap";
const MAGIC: &[u8; 8] = b"RWALSNAP";
const SNAP_FORMAT_VERSION: u32 = 1;
/// Size of the header block; data starts here.
const HEADER_BLOCK: usize = 4096;

/// File name of the snapshot at `term`/`index`.
pub(crate) fn file_name(term: u64, index: u64) -> String {
    format!("{term:016x}-{index:016x}.snap")
}

/// Writes a snapshot file durably and returns the data's CRC32C.
pub(crate) fn write(
    dir: &Path,
    index: u64,
    term: u64,
    conf_state: &ConfStateRecord,
    data: &[u8],
) -> Result<u32> {
    let snap_dir = dir.join(SNAP_DIR);
    if !snap_dir.exists() {
        fs::create_dir(&snap_dir).map_err(|e| Error::io("create directory", &snap_dir, e))?;
        fsutil::sync_dir(dir)?;
    }
    let data_crc32c = crc32c::crc32c(data);
    let envelope = SnapshotEnvelope {
        index,
        term,
        conf_state: Some(conf_state.clone()),
        data_len: data.len() as u64,
        data_crc32c,
    }
    .encode_to_vec();
    if 16 + envelope.len() + 4 > HEADER_BLOCK {
        return Err(Error::InvalidArgument(format!(
            "snapshot conf state too large for the header block ({} bytes)",
            envelope.len()
        )));
    }
    let mut header = vec![0u8; HEADER_BLOCK];
    header[..8].copy_from_slice(MAGIC);
    header[8..12].copy_from_slice(&SNAP_FORMAT_VERSION.to_le_bytes());
    header[12..16].copy_from_slice(&(envelope.len() as u32).to_le_bytes());
    header[16..16 + envelope.len()].copy_from_slice(&envelope);
    let crc = crc32c::crc32c(&header[..16 + envelope.len()]);
    header[16 + envelope.len()..20 + envelope.len()].copy_from_slice(&crc.to_le_bytes());

    let name = file_name(term, index);
    let tmp = snap_dir.join(format!("{name}.tmp"));
    let path = snap_dir.join(&name);
    {
        let mut f = File::create(&tmp).map_err(|e| Error::io("create", &tmp, e))?;
        f.write_all(&header)
            .and_then(|_| f.write_all(data))
            .map_err(|e| Error::io("write", &tmp, e))?;
        f.sync_all().map_err(|e| Error::io("fsync", &tmp, e))?;
    }
    fs::rename(&tmp, &path).map_err(|e| Error::io("rename", &tmp, e))?;
    fsutil::sync_dir(&snap_dir)?;
    Ok(data_crc32c)
}

/// Path of the snapshot file for `term`/`index`.
pub(crate) fn path(dir: &Path, term: u64, index: u64) -> PathBuf {
    dir.join(SNAP_DIR).join(file_name(term, index))
}

/// Reads and verifies the snapshot file for `term`/`index`, which must hold `data_len` bytes
/// with CRC32C `data_crc`.
pub(crate) fn read(
    dir: &Path,
    index: u64,
    term: u64,
    data_len: u64,
    data_crc: u32,
) -> Result<Bytes> {
    let path = path(dir, term, index);
    let mut f = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::MissingFile {
                path,
                reason: format!("the meta page names this file for the snapshot at index {index}"),
            })
        }
        Err(e) => return Err(Error::io("open", &path, e)),
    };
    let len = f.metadata().map_err(|e| Error::io("stat", &path, e))?.len();
    if len != HEADER_BLOCK as u64 + data_len {
        return Err(Error::corrupt(
            &path,
            len,
            format!(
                "snapshot file is {len} bytes, expected {} (header + {data_len} bytes of data)",
                HEADER_BLOCK as u64 + data_len
            ),
        ));
    }
    let mut header = vec![0u8; HEADER_BLOCK];
    f.read_exact(&mut header)
        .map_err(|e| Error::io("read", &path, e))?;
    let env = decode_header(&path, &header)?;
    if env.index != index
        || env.term != term
        || env.data_len != data_len
        || env.data_crc32c != data_crc
    {
        return Err(Error::corrupt(
            &path,
            16,
            format!(
                "snapshot header says index {} term {} len {} crc {:#x}; the meta page expects index {index} term {term} len {data_len} crc {data_crc:#x}",
                env.index, env.term, env.data_len, env.data_crc32c
            ),
        ));
    }
    let mut data = Vec::with_capacity(data_len as usize);
    f.read_to_end(&mut data)
        .map_err(|e| Error::io("read", &path, e))?;
    let crc = crc32c::crc32c(&data);
    if data.len() as u64 != data_len || crc != data_crc {
        return Err(Error::corrupt(
            &path,
            HEADER_BLOCK as u64,
            format!(
                "snapshot data checksum mismatch: stored {data_crc:#010x}, computed {crc:#010x}"
            ),
        ));
    }
    Ok(Bytes::from(data))
}

fn decode_header(path: &Path, h: &[u8]) -> Result<SnapshotEnvelope> {
    if &h[..8] != MAGIC {
        return Err(Error::corrupt(path, 0, "bad snapshot file magic"));
    }
    let version = u32::from_le_bytes([h[8], h[9], h[10], h[11]]);
    if version > SNAP_FORMAT_VERSION {
        return Err(Error::UnsupportedVersion {
            path: path.to_path_buf(),
            found: version,
            supported: SNAP_FORMAT_VERSION,
        });
    }
    let n = u32::from_le_bytes([h[12], h[13], h[14], h[15]]) as usize;
    if 16 + n + 4 > h.len() {
        return Err(Error::corrupt(
            path,
            12,
            format!("envelope length {n} exceeds the header"),
        ));
    }
    let stored = u32::from_le_bytes([h[16 + n], h[17 + n], h[18 + n], h[19 + n]]);
    if crc32c::crc32c(&h[..16 + n]) != stored {
        return Err(Error::corrupt(
            path,
            16 + n as u64,
            "snapshot header checksum mismatch",
        ));
    }
    SnapshotEnvelope::decode(&h[16..16 + n])
        .map_err(|e| Error::corrupt(path, 16, format!("snapshot envelope: {e}")))
}

/// Removes every snapshot file (and leftover temporary file) except `keep`.
pub(crate) fn remove_others(dir: &Path, keep: Option<&str>) -> Result<()> {
    let snap_dir = dir.join(SNAP_DIR);
    let rd = match fs::read_dir(&snap_dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io("read directory", &snap_dir, e)),
    };
    let mut removed = false;
    for ent in rd {
        let ent = ent.map_err(|e| Error::io("read directory", &snap_dir, e))?;
        let name = ent.file_name();
        let Some(name) = name.to_str() else { continue };
        let ours = name.ends_with(".snap") || name.ends_with(".snap.tmp");
        if ours && Some(name) != keep {
            let p = snap_dir.join(name);
            fs::remove_file(&p).map_err(|e| Error::io("remove", &p, e))?;
            removed = true;
        }
    }
    if removed {
        fsutil::sync_dir(&snap_dir)?;
    }
    Ok(())
}
