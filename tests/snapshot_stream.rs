//! Snapshots as streams, in bounded memory, and damage to snapshot files.
//!
//! * A large snapshot (256 MiB by default; `RAFTWAL_STREAM_MIB` overrides) is created with
//!   `create_snapshot_from` from a generator that produces deterministic pseudo-random bytes
//!   without buffering them, read back with `snapshot_reader` (compared byte for byte with a
//!   second generator, and by SHA-256), saved to a backup archive, verified, restored, and read
//!   back from the restored directory — while a counting global allocator checks that the peak
//!   of live heap stays under 16 MiB.
//! * A damaged snapshot file is found: at open (naming the file), as a stale extra file in
//!   `snap/` (renamed `.broken`), and when damaged after open (the read that reaches the end
//!   fails; damaged data is never handed out as good).
//!
//! Tests in this file run one at a time (a shared lock), so the heap peak is this test's own.

use std::fs::{self, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use raft::prelude::*;
use raft::Storage;
use raftwal::archive::{self, RestoreOptions};
use raftwal::{DiskStorage, Error, MetaInfo};
use sha2::{Digest, Sha256};

#[path = "common/counting_alloc.rs"]
mod counting_alloc;
#[path = "common/entries.rs"]
mod entries;
#[path = "common/layout.rs"]
mod layout;

use counting_alloc::{LIVE, PEAK};
use entries::text_entry;
use layout::SNAP_DATA_AT;

/// Tests here run one at a time, so that heap figures are not mixed up.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

const HEAP_LIMIT: usize = 16 << 20;

// ---------------------------------------------------------------------------------------------
// a generator of deterministic pseudo-random bytes
// ---------------------------------------------------------------------------------------------

/// `len` bytes of a splitmix64 stream, produced as they are read: nothing is buffered.
struct Gen {
    state: u64,
    left: u64,
    /// Bytes of the current 8-byte word not handed out yet.
    word: [u8; 8],
    used: usize,
}

impl Gen {
    fn new(seed: u64, len: u64) -> Gen {
        Gen {
            state: seed,
            left: len,
            word: [0; 8],
            used: 8,
        }
    }

    fn next_word(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

impl Read for Gen {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len().min(self.left.min(usize::MAX as u64) as usize);
        let mut at = 0;
        // Finish the current word, then whole words, then start a new one.
        while at < n && self.used < 8 {
            buf[at] = self.word[self.used];
            self.used += 1;
            at += 1;
        }
        while n - at >= 8 {
            let w = self.next_word().to_le_bytes();
            buf[at..at + 8].copy_from_slice(&w);
            at += 8;
        }
        if at < n {
            self.word = self.next_word().to_le_bytes();
            self.used = 0;
            while at < n {
                buf[at] = self.word[self.used];
                self.used += 1;
                at += 1;
            }
        }
        self.left -= n as u64;
        Ok(n)
    }
}

fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

// ---------------------------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------------------------

const SEED: u64 = 0x005e_ed0f_5aa5;

/// A store with entries 1..=20 (term 1 then 2 from 11), voters 1,2,3, and a snapshot at 15.
fn store_with_snapshot(dir: &Path, data: impl Read) -> DiskStorage {
    let s = DiskStorage::open(dir).unwrap();
    let es: Vec<Entry> = (1..=20)
        .map(|i| text_entry(i, if i <= 10 { 1 } else { 2 }))
        .collect();
    let mut hs = HardState::default();
    hs.term = 2;
    hs.commit = 20;
    s.save(&hs, &es, &Snapshot::default()).unwrap();
    let mut cs = ConfState::default();
    cs.voters = vec![1, 2, 3];
    s.set_conf_state(&cs).unwrap();
    s.create_snapshot_from(15, None, data).unwrap();
    s
}

/// Reads `r` to its end in chunks, comparing with `expect` (another generator); returns the
/// SHA-256 of what was read.
fn read_compare(r: &mut impl Read, expect: &mut Gen, chunk: usize) -> (String, u64) {
    let mut got = vec![0u8; chunk];
    let mut want = vec![0u8; chunk];
    let mut sha = Sha256::new();
    let mut total = 0u64;
    loop {
        let n = r.read(&mut got).unwrap();
        if n == 0 {
            break;
        }
        expect.read_exact(&mut want[..n]).unwrap();
        assert!(got[..n] == want[..n], "bytes differ at offset {total}+");
        sha.update(&got[..n]);
        total += n as u64;
    }
    assert_eq!(
        expect.read(&mut want).unwrap(),
        0,
        "read back too few bytes"
    );
    (hex(&sha.finalize()), total)
}

fn snap_file(dir: &Path) -> PathBuf {
    let mut files: Vec<PathBuf> = fs::read_dir(dir.join("snap"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "snap"))
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    files.remove(0)
}

fn flip_byte(path: &Path, at: u64) {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, at).unwrap();
    b[0] ^= 0x40;
    f.write_all_at(&b, at).unwrap();
    f.sync_all().unwrap();
}

// ---------------------------------------------------------------------------------------------
// the large snapshot
// ---------------------------------------------------------------------------------------------

fn stream_len() -> u64 {
    let mib = std::env::var("RAFTWAL_STREAM_MIB")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(256);
    mib << 20
}

#[test]
fn large_snapshot_streams_through_create_read_save_verify_restore_in_bounded_heap() {
    let _serial = serial();
    let len = stream_len();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let out = tmp.path().join("backup.tar.gz");
    let restored = tmp.path().join("restored");

    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let mut phase_peaks = Vec::new();
    let mut mark = |name: &str, t: Instant| {
        let peak = PEAK.load(Ordering::Relaxed).saturating_sub(base);
        println!("{name}: {:.2?}, heap peak so far {peak} bytes", t.elapsed());
        phase_peaks.push((name.to_string(), peak));
    };

    let t = Instant::now();
    let s = store_with_snapshot(&dir, Gen::new(SEED, len));
    mark("create_snapshot_from", t);

    let t = Instant::now();
    let mut r = s.snapshot_reader().unwrap();
    assert_eq!(r.len(), len);
    assert_eq!(r.metadata().index, 15);
    assert_eq!(r.metadata().term, 2);
    let (sha, n) = read_compare(&mut r, &mut Gen::new(SEED, len), 256 << 10);
    assert_eq!(n, len);
    drop(r);
    mark("snapshot_reader read back", t);

    let t = Instant::now();
    let mut saved = 0u64;
    let meta = archive::save_dir_snapshot(&dir, &out, &mut |n| saved += n).unwrap();
    assert_eq!(saved, len);
    assert_eq!(meta.size, len);
    assert_eq!(meta.state_sha256, sha);
    mark("save_dir_snapshot", t);
    s.close().unwrap();

    let t = Instant::now();
    let status = archive::verify_archive(&out, &mut |_| {}).unwrap();
    assert_eq!(status.meta, meta);
    assert_eq!(status.archive_bytes, fs::metadata(&out).unwrap().len());
    mark("verify_archive", t);

    let t = Instant::now();
    let mut seen = 0u64;
    let opts = RestoreOptions {
        raft_id: Some(7),
        voters: None,
    };
    archive::restore(&out, &restored, &opts, &mut |n| seen += n).unwrap();
    assert_eq!(seen, 2 * len);
    mark("restore", t);

    let t = Instant::now();
    let s = DiskStorage::open(&restored).unwrap();
    assert_eq!(s.uint(MetaInfo::RaftId), 7);
    assert_eq!(s.first_index().unwrap(), 16);
    assert_eq!(s.term(15).unwrap(), 2);
    let mut r = s.snapshot_reader().unwrap();
    let (sha2, n) = read_compare(&mut r, &mut Gen::new(SEED, len), 64 << 10);
    assert_eq!((sha2.as_str(), n), (sha.as_str(), len));
    drop(r);
    drop(s);
    mark("open restored + read back", t);

    let peak = PEAK.load(Ordering::Relaxed).saturating_sub(base);
    println!("heap peak over all phases: {peak} bytes (limit {HEAP_LIMIT})");
    assert!(
        peak < HEAP_LIMIT,
        "heap peaked at {peak} bytes with a {len}-byte snapshot: {phase_peaks:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// damaged snapshot files
// ---------------------------------------------------------------------------------------------

const DAMAGE_LEN: u64 = 3 << 20;

#[test]
fn a_flipped_byte_in_the_snapshot_data_fails_open_naming_the_file() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    store_with_snapshot(dir, Gen::new(SEED, DAMAGE_LEN))
        .close()
        .unwrap();
    let file = snap_file(dir);
    for at in [
        SNAP_DATA_AT,
        SNAP_DATA_AT + DAMAGE_LEN / 2,
        SNAP_DATA_AT + DAMAGE_LEN - 1,
    ] {
        flip_byte(&file, at);
        match DiskStorage::open(dir) {
            Err(Error::Corrupt { path, .. }) => assert_eq!(path, file, "flip at {at}"),
            Err(e) => panic!("flip at {at}: expected Corrupt naming {file:?}, got {e:?}"),
            Ok(_) => panic!("flip at {at}: open accepted a damaged snapshot"),
        }
        // The read-only inspector refuses to hand it out as good too.
        let insp = raftwal::inspect::Inspector::open(dir).unwrap();
        let mut r = insp.snapshot_reader().unwrap();
        assert!(io::copy(&mut r, &mut io::sink()).is_err(), "flip at {at}");
        // And no archive is made of it.
        let out = dir.join("backup.tar.gz");
        let e = archive::save_dir_snapshot(dir, &out, &mut |_| {}).unwrap_err();
        assert!(
            matches!(&e, Error::Corrupt { path, .. } if *path == file),
            "{e:?}"
        );
        assert!(!out.exists());
        assert!(!dir.join("backup.tar.gz.tmp").exists());
        flip_byte(&file, at); // undo
        DiskStorage::open(dir).unwrap().close().unwrap();
    }
}

#[test]
fn a_damaged_header_of_the_snapshot_file_fails_open_naming_the_file() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    store_with_snapshot(dir, Gen::new(SEED, 100_000))
        .close()
        .unwrap();
    let file = snap_file(dir);
    // Magic, format version, envelope length, envelope.
    for at in [0, 9, 13, 20] {
        flip_byte(&file, at);
        match DiskStorage::open(dir) {
            Err(Error::Corrupt { path, .. }) => assert_eq!(path, file, "flip at {at}"),
            // The engine reads the version field before the header checksum, so a flip there
            // reads as a newer format (still an error naming the file).
            Err(Error::UnsupportedVersion { path, .. }) if at == 9 => assert_eq!(path, file),
            Err(e) => panic!("flip at {at}: expected Corrupt naming {file:?}, got {e:?}"),
            Ok(_) => panic!("flip at {at}: open accepted a damaged snapshot header"),
        }
        flip_byte(&file, at);
    }
    // A truncated file.
    let len = fs::metadata(&file).unwrap().len();
    let f = OpenOptions::new().write(true).open(&file).unwrap();
    f.set_len(len - 1).unwrap();
    drop(f);
    match DiskStorage::open(dir) {
        Err(Error::Corrupt { path, .. }) => assert_eq!(path, file),
        other => panic!("expected Corrupt naming {file:?}, got {:?}", other.err()),
    }
}

#[test]
fn a_stale_damaged_snapshot_file_is_renamed_broken_and_listed() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    store_with_snapshot(dir, Gen::new(SEED, 200_000))
        .close()
        .unwrap();
    let current = snap_file(dir);
    // Two stale files named like older snapshots: one whole (removed), one damaged (kept aside).
    let snap_dir = dir.join("snap");
    let stale_good = snap_dir.join(format!("{:016x}-{:016x}.snap", 1, 5));
    let stale_bad = snap_dir.join(format!("{:016x}-{:016x}.snap", 1, 7));
    fs::copy(&current, &stale_good).unwrap();
    fs::copy(&current, &stale_bad).unwrap();
    flip_byte(&stale_bad, SNAP_DATA_AT + 100_000);

    let s = DiskStorage::open(dir).unwrap();
    let broken = s.broken_snapshot_files();
    let expect = snap_dir.join(format!("{:016x}-{:016x}.snap.broken", 1, 7));
    assert_eq!(broken, vec![expect.clone()]);
    assert!(expect.exists());
    assert!(!stale_bad.exists());
    assert!(
        !stale_good.exists(),
        "a whole stale snapshot file is removed"
    );
    assert!(current.exists());
    // The current snapshot is intact and readable.
    let mut r = s.snapshot_reader().unwrap();
    let (_, n) = read_compare(&mut r, &mut Gen::new(SEED, 200_000), 4096);
    assert_eq!(n, 200_000);
    drop(r);
    s.close().unwrap();
    // A second open keeps the .broken file and does not list it again as new damage.
    let s = DiskStorage::open(dir).unwrap();
    assert!(expect.exists());
    assert!(s.broken_snapshot_files().is_empty());
}

/// Reads `r` chunk by chunk; returns how many reads succeeded and the bytes they returned, and
/// the error that ended it (or `None` if it reached Ok(0)).
fn read_until_end(r: &mut impl Read, chunk: usize) -> (u64, Option<io::Error>) {
    let mut buf = vec![0u8; chunk];
    let mut total = 0u64;
    loop {
        match r.read(&mut buf) {
            Ok(0) => return (total, None),
            Ok(n) => total += n as u64,
            Err(e) => return (total, Some(e)),
        }
    }
}

#[test]
fn a_snapshot_damaged_after_open_fails_on_the_read_that_reaches_its_end() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let s = store_with_snapshot(dir, Gen::new(SEED, DAMAGE_LEN));
    let file = snap_file(dir);
    for (at, chunk) in [
        (SNAP_DATA_AT + 10, 64 << 10),
        (SNAP_DATA_AT + DAMAGE_LEN - 1, 100_000),
        (SNAP_DATA_AT + DAMAGE_LEN / 3, 777),
    ] {
        // The reader checked the header when it was made; the data is damaged afterwards.
        let mut r = s.snapshot_reader().unwrap();
        flip_byte(&file, at);
        let (read, err) = read_until_end(&mut r, chunk);
        let err = err.unwrap_or_else(|| panic!("damage at {at} was read to the end as good"));
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
        // Every byte but those of the last read came out: the error is on the read that
        // reaches the end, so the last bytes (and the end) are never returned as good.
        assert!(read < DAMAGE_LEN, "{read}");
        assert!(DAMAGE_LEN - read <= chunk as u64, "{read}");
        drop(r);
        // raft's snapshot() refuses it too, and so does an archive of it.
        assert!(s.snapshot(0, 0).is_err());
        let out = dir.join("backup.tar.gz");
        let e = archive::save_dir_snapshot(dir, &out, &mut |_| {}).unwrap_err();
        assert!(
            matches!(&e, Error::Corrupt { path, .. } if *path == file),
            "{e:?}"
        );
        assert!(!out.exists());
        flip_byte(&file, at); // undo
        let mut r = s.snapshot_reader().unwrap();
        assert_eq!(read_until_end(&mut r, chunk).0, DAMAGE_LEN);
    }
}
