//! Encryption at rest: `Options { encryption_key: Some(key), .. }` seals payloads, the meta
//! page's record and snapshot data with AES-256-GCM. Checked here: everything round-trips; no
//! plaintext reaches the disk; a wrong or missing key (or a key for a plaintext store) is a clear
//! error at open; altered ciphertext never reads back, even with its CRC fixed up; a nonce is
//! never reused, also when a conflicting append rewrites an entry.

use std::io::Read;
use std::path::Path;

use bytes::Bytes;
use raft::prelude::*;
use raft::{GetEntriesContext, Storage};
use raftwal::{DiskStorage, Error, Options};

const KEY: [u8; 32] = [0x42; 32];
const MARKER: &[u8] = b"PLAINTEXT-MARKER-7f3a";

fn keyed(key: [u8; 32]) -> Options {
    Options {
        encryption_key: Some(key),
        ..Default::default()
    }
}

fn entry(index: u64, term: u64) -> Entry {
    let mut e = Entry::default();
    e.index = index;
    e.term = term;
    e.entry_type = match index % 3 {
        0 => EntryType::EntryNormal,
        1 => EntryType::EntryNormal,
        _ => EntryType::EntryConfChange,
    };
    e.data = Bytes::from([MARKER, &index.to_le_bytes()[..], &term.to_le_bytes()[..]].concat());
    if index % 4 == 0 {
        e.context = Bytes::from([b"ctx-".as_slice(), MARKER].concat());
    }
    e
}

fn all(s: &DiskStorage) -> Vec<Entry> {
    let (lo, hi) = (s.first_index().unwrap(), s.last_index().unwrap() + 1);
    s.entries(lo, hi, None, GetEntriesContext::empty(false))
        .unwrap()
}

fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn build(dir: &Path) -> Vec<Entry> {
    let s = DiskStorage::open_with(dir, keyed(KEY)).unwrap();
    let es: Vec<Entry> = (1..=200).map(|i| entry(i, 1)).collect();
    let mut hs = HardState::default();
    hs.term = 1;
    hs.commit = 150;
    s.save(&hs, &es, &Snapshot::default()).unwrap();
    let mut cs = ConfState::default();
    cs.voters = vec![1, 2, 3];
    s.set_conf_state(&cs).unwrap();
    let state = [MARKER; 20_000].concat(); // > several 64 KiB chunks
    s.create_snapshot(100, None, state).unwrap();
    s.close().unwrap();
    es
}

#[test]
fn encrypted_store_round_trips_and_writes_no_plaintext() {
    let dir = tempfile::tempdir().unwrap();
    let es = build(dir.path());
    for f in files_under(dir.path()) {
        let bytes = std::fs::read(&f).unwrap();
        assert!(
            !contains(&bytes, MARKER),
            "plaintext found in {}",
            f.display()
        );
    }
    let s = DiskStorage::open_with(dir.path(), keyed(KEY)).unwrap();
    assert_eq!(all(&s), es[100..].to_vec());
    assert_eq!(s.term(100).unwrap(), 1);
    let rs = s.initial_state().unwrap();
    assert_eq!(rs.hard_state.commit, 150);
    assert_eq!(rs.conf_state.voters, vec![1, 2, 3]);
    let snap = s.snapshot(0, 0).unwrap();
    assert_eq!(snap.get_metadata().index, 100);
    assert_eq!(snap.data, Bytes::from([MARKER; 20_000].concat()));
    let mut r = s.snapshot_reader().unwrap();
    assert_eq!(r.len(), (MARKER.len() * 20_000) as u64);
    let mut streamed = Vec::new();
    r.read_to_end(&mut streamed).unwrap();
    assert_eq!(streamed, [MARKER; 20_000].concat());
    // Truncated data stays consistent in an encrypted store too.
    s.truncate_entries_until(120).unwrap();
    drop(s);
    let s = DiskStorage::open_with(dir.path(), keyed(KEY)).unwrap();
    for e in all(&s) {
        let want = entry(e.index, 1);
        if e.index < 120 && want.entry_type == EntryType::EntryNormal {
            assert!(e.data.is_empty());
        } else {
            assert_eq!(e.data, want.data);
        }
        assert_eq!(e.context, want.context);
    }
}

#[test]
fn wrong_missing_or_unexpected_key_is_a_clear_error_at_open() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path());
    for opts in [keyed([0x43; 32]), Options::default()] {
        match DiskStorage::open_with(dir.path(), opts) {
            Err(Error::Encryption { reason, .. }) => assert!(!reason.is_empty()),
            Err(e) => panic!("wrong error: {e}"),
            Ok(_) => panic!("opened with the wrong key (or none)"),
        }
    }
    let plain = tempfile::tempdir().unwrap();
    DiskStorage::open(plain.path()).unwrap().close().unwrap();
    assert!(matches!(
        DiskStorage::open_with(plain.path(), keyed(KEY)),
        Err(Error::Encryption { .. })
    ));
    // The right key still opens it: failed attempts changed nothing.
    DiskStorage::open_with(dir.path(), keyed(KEY)).unwrap();
}

/// Slot fields of slot `k` in a log file's bytes: (offset, data_len).
fn slot(bytes: &[u8], k: usize) -> (usize, usize) {
    let s = &bytes[k * 32..k * 32 + 32];
    let mut off = [0u8; 8];
    off[..6].copy_from_slice(&s[16..22]);
    (
        u64::from_le_bytes(off) as usize,
        u32::from_le_bytes([s[24], s[25], s[26], s[27]]) as usize,
    )
}

/// Recomputes slot `k`'s CRC32C over its fields and its (possibly altered) sealed payload.
fn fix_crc(bytes: &mut [u8], k: usize) {
    let (off, _) = slot(bytes, k);
    let ctx_len = u32::from_le_bytes([bytes[off], bytes[off + 1], bytes[off + 2], bytes[off + 3]]);
    let data_len = slot(bytes, k).1;
    let end = off + 4 + 28 + data_len + ctx_len as usize;
    let crc = crc32c::crc32c_append(
        crc32c::crc32c(&bytes[k * 32..k * 32 + 28]),
        &bytes[off..end],
    );
    bytes[k * 32 + 28..k * 32 + 32].copy_from_slice(&crc.to_le_bytes());
}

#[test]
fn altered_ciphertext_never_reads_back_even_with_its_crc_fixed() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path());
    let wal = dir.path().join("00001.wal");
    let original = std::fs::read(&wal).unwrap();

    // A flipped ciphertext byte in entry 150 (slot 149), CRC recomputed to match.
    let mut bytes = original.clone();
    let (off, _) = slot(&bytes, 149);
    bytes[off + 4 + 12 + 3] ^= 0x01;
    fix_crc(&mut bytes, 149);
    std::fs::write(&wal, &bytes).unwrap();
    let s = DiskStorage::open_with(dir.path(), keyed(KEY)).unwrap();
    assert!(s
        .entries(150, 151, None, GetEntriesContext::empty(false))
        .is_err());
    assert_eq!(
        s.entries(149, 150, None, GetEntriesContext::empty(false))
            .unwrap()[0],
        entry(149, 1)
    );
    drop(s);

    // Entry 151's sealed payload placed under slot 150 (both CRCs fixed): the associated data
    // binds a payload to its index, so it does not open there.
    let mut bytes = original.clone();
    let (a, _) = slot(&bytes, 149);
    let (b, _) = slot(&bytes, 150);
    let len_a = b - a;
    let (c, _) = slot(&bytes, 151);
    let len_b = c - b;
    if len_a == len_b {
        let moved = bytes[b..b + len_b].to_vec();
        bytes[a..a + len_a].copy_from_slice(&moved);
        fix_crc(&mut bytes, 149);
        std::fs::write(&wal, &bytes).unwrap();
        let s = DiskStorage::open_with(dir.path(), keyed(KEY)).unwrap();
        assert!(s
            .entries(150, 151, None, GetEntriesContext::empty(false))
            .is_err());
    }
}

#[test]
fn a_rewritten_entry_never_reuses_a_nonce() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options {
        sync_writes: false,
        ..keyed(KEY)
    };
    let s = DiskStorage::open_with(dir.path(), opts).unwrap();
    let es: Vec<Entry> = (1..=100).map(|i| entry(i, 1)).collect();
    s.save(&HardState::default(), &es, &Snapshot::default())
        .unwrap();
    s.sync().unwrap();
    let before = std::fs::read(dir.path().join("00001.wal")).unwrap();
    // The same entries again from 50 on (a conflicting append with identical content).
    s.save(&HardState::default(), &es[49..], &Snapshot::default())
        .unwrap();
    s.sync().unwrap();
    let after = std::fs::read(dir.path().join("00001.wal")).unwrap();
    let nonce = |bytes: &[u8], k: usize| {
        let (off, _) = slot(bytes, k);
        bytes[off + 4..off + 16].to_vec()
    };
    let mut seen = std::collections::HashSet::new();
    for k in 0..100 {
        assert!(seen.insert(nonce(&before, k)), "nonce reused at slot {k}");
    }
    for k in 49..100 {
        assert!(
            seen.insert(nonce(&after, k)),
            "rewrite of slot {k} reused a nonce"
        );
    }
    assert_eq!(all(&s), es);
}
