//! Writing a backup archive: the snapshot streamed out of a [`SnapshotReader`] into the three
//! members of a gzip'd tar (`meta.json`, `state.bin`, `SHA256SUMS`), and saving one as a new
//! file for a WAL directory or an engine group.
//!
//! Owns: the members' order and headers as written; hashing `state.bin` while it streams;
//! creating the archive file (`out.tmp`, fsynced, then moved to `out`).
//! Must never: hold `state.bin` whole in memory, overwrite an existing archive, or finish an
//! archive whose `state.bin` is not exactly the snapshot's data, read to its end.

use std::io::{self, BufWriter, Read, Write};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use flate2::write::GzEncoder;
use flate2::Compression;
use sha2::{Digest, Sha256};

use super::{
    sha256_hex, ArchiveMeta, ConfStateJson, FirstError, MetaJson, CHUNK, FORMAT_VERSION,
    GZIP_LEVEL, META_MEMBER, STATE_MEMBER, SUMS_MEMBER,
};
use crate::error::Error;
use crate::store::snap::SnapshotReader;
use crate::sys::fsutil;
use crate::tools::inspect::Inspector;

/// Streams exactly `left` bytes out of a snapshot reader, hashing them; the read after the last
/// byte confirms that the reader ends there (and so that its checksum passed).
struct StateSource<'a, 'p> {
    reader: &'a mut SnapshotReader,
    left: u64,
    sha: Sha256,
    progress: &'p mut dyn FnMut(u64),
    /// The first error, kept to be turned into a typed error.
    failure: FirstError<io::Error>,
    done: bool,
}

impl StateSource<'_, '_> {
    fn fail(&mut self, e: io::Error) -> io::Error {
        let kind = e.kind();
        self.failure.keep(e, kind)
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

/// Where an archive is written, for the errors writing it: a file raftwal made (named), or a
/// stream the caller handed in (which names no file: `op` says what was being written).
pub(crate) enum Dest<'a> {
    File(&'a Path),
    Stream(&'static str),
}

impl Dest<'_> {
    fn error(&self, e: io::Error) -> Error {
        match *self {
            Dest::File(path) => Error::io("write archive", path, e),
            Dest::Stream(op) => Error::Stream { op, source: e },
        }
    }
}

/// Writes a tar.gz archive of the snapshot streamed by `reader` to `out`, in bounded memory.
/// Members in this order: `meta.json`, `state.bin`, `SHA256SUMS` (`sha256sum` format:
/// `"<hex>  meta.json\n<hex>  state.bin\n"`). `progress(n)` is called with each `n` bytes of
/// state written. The reader is read to its end, so damaged snapshot data is an error (naming
/// the snapshot file). Errors writing to `out` are `Error::Stream` (raftwal knows no name for
/// it; the caller does).
pub fn write_archive<W: Write>(
    out: W,
    reader: &mut SnapshotReader,
    progress: &mut dyn FnMut(u64),
) -> Result<ArchiveMeta, Error> {
    write_archive_to(out, &Dest::Stream("write the archive"), reader, progress)
}

/// [`write_archive`] to `out`, which `dest` describes in the errors writing to it.
pub(crate) fn write_archive_to<W: Write>(
    out: W,
    dest: &Dest<'_>,
    reader: &mut SnapshotReader,
    progress: &mut dyn FnMut(u64),
) -> Result<ArchiveMeta, Error> {
    let write_error = |e: io::Error| dest.error(e);
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
        .map_err(|e| Error::invariant(format!("encode meta.json: {e}")))?;
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
        failure: FirstError(None),
        done: false,
    };
    let mut h = member_header(size, created_unix_secs);
    let appended = tar.append_data(&mut h, STATE_MEMBER, &mut source);
    if let Some(e) = source.failure.take() {
        return Err(source.reader.error_from(e));
    }
    appended.map_err(write_error)?;
    if source.left != 0 || !source.done {
        return Err(Error::invariant(format!(
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
    let tmp = new.tmp_path().to_path_buf();
    let meta = write_archive_to(new.file(), &Dest::File(&tmp), &mut reader, progress)?;
    new.commit()?;
    Ok(meta)
}

/// Saves the current snapshot of group `group_id` of the engine root `root` (read-only, via
/// [`EngineInspector`](crate::tools::inspect::engine::EngineInspector): the snapshot as an opened
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
    let inspector =
        crate::tools::inspect::engine::EngineInspector::open_group(root, key, group_id)?;
    let mut reader = inspector.snapshot_reader()?;
    let mut new = fsutil::NewFile::create(out)?;
    let tmp = new.tmp_path().to_path_buf();
    let meta = write_archive_to(new.file(), &Dest::File(&tmp), &mut reader, progress)?;
    new.commit()?;
    Ok(meta)
}
