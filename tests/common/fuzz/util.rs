//! Helpers shared by both fuzz targets: a byte reader that decodes fuzz input by hand (no
//! `arbitrary`, so `tests/fuzz_corpus.rs` can include this code with the main crate's
//! dependencies only), a scratch-directory root, and a minimal protobuf codec for the engine's
//! records (`proto/raftwal.proto`), used to forge checksummed meta pages and snapshot envelopes.

use std::path::PathBuf;

/// Reads fuzz input front to back. Past the end every read yields zeroes, so any input decodes.
pub struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(data: &'a [u8]) -> Reader<'a> {
        Reader { data, pos: 0 }
    }

    pub fn is_empty(&self) -> bool {
        self.pos >= self.data.len()
    }

    pub fn u8(&mut self) -> u8 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        b
    }

    pub fn bool(&mut self) -> bool {
        self.u8() & 1 == 1
    }

    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    pub fn u64(&mut self) -> u64 {
        u64::from(self.u32()) | (u64::from(self.u32()) << 32)
    }

    /// Up to `n` bytes (fewer at the end of the input).
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let start = self.pos.min(self.data.len());
        let end = self.pos.saturating_add(n).min(self.data.len());
        self.pos = self.pos.saturating_add(n);
        &self.data[start..end]
    }
}

/// Where scratch directories go: `$RAFTWAL_FUZZ_TMPDIR`, else `/dev/shm` (tmpfs: the fuzzers
/// write a few MiB per input), else the system temporary directory.
pub fn scratch_root() -> PathBuf {
    static ROOT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    ROOT.get_or_init(find_scratch_root).clone()
}

fn find_scratch_root() -> PathBuf {
    if let Some(d) = std::env::var_os("RAFTWAL_FUZZ_TMPDIR") {
        return PathBuf::from(d);
    }
    let shm = PathBuf::from("/dev/shm");
    if shm.is_dir() {
        let probe = tempfile::Builder::new()
            .prefix("raftwal-fuzz-probe")
            .tempdir_in(&shm);
        if probe.is_ok() {
            return shm;
        }
    }
    std::env::temp_dir()
}

/// A fresh scratch directory (removed on drop).
pub fn scratch_dir(prefix: &str) -> tempfile::TempDir {
    let root = scratch_root();
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(&root)
        .or_else(|_| tempfile::Builder::new().prefix(prefix).tempdir())
        .expect("create a scratch directory")
}

/// SplitMix64: deterministic pseudo-random numbers from a seed.
pub fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

// ---------------------------------------------------------------------------------------------
// minimal protobuf codec (varint and length-delimited fields are all the records use)
// ---------------------------------------------------------------------------------------------

/// One protobuf field value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PbVal {
    Varint(u64),
    Fixed64(u64),
    Bytes(Vec<u8>),
    Fixed32(u32),
}

/// A decoded message: fields in wire order (unknown fields kept).
pub type PbMsg = Vec<(u32, PbVal)>;

fn read_varint(b: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..70).step_by(7) {
        let byte = *b.get(*pos)?;
        *pos += 1;
        if shift < 64 {
            v |= u64::from(byte & 0x7f) << shift;
        }
        if byte & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

fn write_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Decodes a message; `None` for anything that is not well-formed protobuf.
pub fn pb_decode(b: &[u8]) -> Option<PbMsg> {
    let mut pos = 0;
    let mut out = Vec::new();
    while pos < b.len() {
        let key = read_varint(b, &mut pos)?;
        let field = u32::try_from(key >> 3).ok()?;
        let val = match key & 7 {
            0 => PbVal::Varint(read_varint(b, &mut pos)?),
            1 => {
                let s = b.get(pos..pos + 8)?;
                pos += 8;
                PbVal::Fixed64(u64::from_le_bytes(s.try_into().ok()?))
            }
            2 => {
                let n = usize::try_from(read_varint(b, &mut pos)?).ok()?;
                let end = pos.checked_add(n)?;
                let s = b.get(pos..end)?;
                pos = end;
                PbVal::Bytes(s.to_vec())
            }
            5 => {
                let s = b.get(pos..pos + 4)?;
                pos += 4;
                PbVal::Fixed32(u32::from_le_bytes(s.try_into().ok()?))
            }
            _ => return None,
        };
        out.push((field, val));
    }
    Some(out)
}

pub fn pb_encode(m: &PbMsg) -> Vec<u8> {
    let mut out = Vec::new();
    for (field, val) in m {
        let wt = match val {
            PbVal::Varint(_) => 0,
            PbVal::Fixed64(_) => 1,
            PbVal::Bytes(_) => 2,
            PbVal::Fixed32(_) => 5,
        };
        write_varint(&mut out, (u64::from(*field) << 3) | wt);
        match val {
            PbVal::Varint(v) => write_varint(&mut out, *v),
            PbVal::Fixed64(v) => out.extend_from_slice(&v.to_le_bytes()),
            PbVal::Bytes(b) => {
                write_varint(&mut out, b.len() as u64);
                out.extend_from_slice(b);
            }
            PbVal::Fixed32(v) => out.extend_from_slice(&v.to_le_bytes()),
        }
    }
    out
}

/// The last varint value of `field` (proto3: the last one wins), 0 when absent.
pub fn pb_varint(m: &PbMsg, field: u32) -> u64 {
    m.iter()
        .rev()
        .find_map(|(f, v)| match v {
            PbVal::Varint(x) if *f == field => Some(*x),
            _ => None,
        })
        .unwrap_or(0)
}

/// The sub-message in `field` (last occurrence), if present and well-formed.
pub fn pb_sub(m: &PbMsg, field: u32) -> Option<PbMsg> {
    m.iter().rev().find_map(|(f, v)| match v {
        PbVal::Bytes(b) if *f == field => pb_decode(b),
        _ => None,
    })
}

/// Replaces every occurrence of `field` with one varint.
pub fn pb_set_varint(m: &mut PbMsg, field: u32, v: u64) {
    m.retain(|(f, _)| *f != field);
    m.push((field, PbVal::Varint(v)));
}

/// Replaces every occurrence of `field` with one sub-message (or removes it with `None`).
pub fn pb_set_sub(m: &mut PbMsg, field: u32, sub: Option<&PbMsg>) {
    m.retain(|(f, _)| *f != field);
    if let Some(s) = sub {
        m.push((field, PbVal::Bytes(pb_encode(s))));
    }
}
