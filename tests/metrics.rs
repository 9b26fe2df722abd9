//! The metrics raftwal emits (feature `metrics`, src/metrics.rs), read back through a Prometheus
//! recorder scoped to the test's thread: every durable `save` and engine write is counted and
//! its fsyncs measured, snapshots and opens are timed, the gauges follow the files and groups.
//! (tests/kv.rs scrapes a live node over HTTP.)
#![cfg(feature = "metrics")]

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusRecorder};
use raft::prelude::*;
use raftwal::{DiskStorage, Engine, WriteBatch};
use tempfile::TempDir;

#[path = "common/entries.rs"]
mod entries;

use entries::filled_entry;

/// Every entry written here: 100 bytes of data, no context (the byte counts below rely on it).
const DATA_LEN: usize = 100;

fn hs(commit: u64) -> HardState {
    let mut hs = HardState::default();
    hs.term = 1;
    hs.commit = commit;
    hs
}

/// The value of the sample `name` whose labels contain `label` (`""`: any), or 0 when absent.
fn sample(recorder: &PrometheusRecorder, name: &str, label: &str) -> f64 {
    let text = recorder.handle().render();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(['{', ' ']) && rest.contains(label))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn disk_storage_counts_saves_entries_bytes_fsyncs_files_snapshots_and_opens() {
    let recorder = PrometheusBuilder::new().build_recorder();
    let tmp = TempDir::new().unwrap();
    metrics::with_local_recorder(&recorder, || {
        let store = DiskStorage::open(tmp.path().join("a")).unwrap();
        for i in 1..=10 {
            store
                .save(
                    &hs(i - 1),
                    &[filled_entry(i, 1, 7, DATA_LEN)],
                    &Snapshot::default(),
                )
                .unwrap();
        }
        store.create_snapshot(5, None, b"state".to_vec()).unwrap();
        // A follower installs it.
        let follower = DiskStorage::open(tmp.path().join("b")).unwrap();
        let snap = store.snapshot(5, 0).unwrap();
        follower.save(&hs(5), &[], &snap).unwrap();
        drop(follower);
        drop(store);
    });
    let m = |name: &str, label: &str| sample(&recorder, name, label);
    assert_eq!(m("raftwal_save_duration_seconds_count", ""), 11.0);
    assert_eq!(m("raftwal_appended_entries_total", ""), 10.0);
    assert_eq!(m("raftwal_appended_bytes_total", ""), 1000.0);
    let log_fsyncs = m("raftwal_fsync_duration_seconds_count", "file=\"log\"");
    assert!(
        log_fsyncs >= 10.0,
        "{log_fsyncs} log fsyncs for 10 synced saves"
    );
    assert!(m("raftwal_fsync_duration_seconds_count", "file=\"meta\"") >= 10.0);
    assert_eq!(m("raftwal_snapshot_create_duration_seconds_count", ""), 1.0);
    assert_eq!(
        m("raftwal_snapshot_install_duration_seconds_count", ""),
        1.0
    );
    assert_eq!(
        m(
            "raftwal_recovery_duration_seconds_count",
            "kind=\"disk_storage\""
        ),
        2.0
    );
    // Both stores dropped: their files are no longer counted.
    assert_eq!(m("raftwal_log_files", ""), 0.0);
}

#[test]
fn the_log_files_gauge_follows_the_open_stores() {
    let recorder = PrometheusBuilder::new().build_recorder();
    let tmp = TempDir::new().unwrap();
    metrics::with_local_recorder(&recorder, || {
        let a = DiskStorage::open(tmp.path().join("a")).unwrap();
        let b = DiskStorage::open(tmp.path().join("b")).unwrap();
        a.save(
            &hs(0),
            &[filled_entry(1, 1, 7, DATA_LEN)],
            &Snapshot::default(),
        )
        .unwrap();
        b.save(
            &hs(0),
            &[filled_entry(1, 1, 7, DATA_LEN)],
            &Snapshot::default(),
        )
        .unwrap();
        let open = (a.num_log_files() + b.num_log_files()) as f64;
        assert_eq!(sample(&recorder, "raftwal_log_files", ""), open);
        drop(a);
        let open = b.num_log_files() as f64;
        assert_eq!(sample(&recorder, "raftwal_log_files", ""), open);
    });
}

#[test]
fn the_engine_counts_writes_commits_journal_fsyncs_and_groups() {
    let recorder = PrometheusBuilder::new().build_recorder();
    let tmp = TempDir::new().unwrap();
    metrics::with_local_recorder(&recorder, || {
        let engine = Engine::open(tmp.path()).unwrap();
        engine.create_group(1, 1).unwrap();
        engine.create_group(2, 1).unwrap();
        assert_eq!(sample(&recorder, "raftwal_engine_groups", ""), 2.0);
        for i in 1..=5 {
            let mut batch = WriteBatch::new();
            batch.save(
                1,
                &hs(i - 1),
                &[filled_entry(i, 1, 7, DATA_LEN)],
                &Snapshot::default(),
            );
            batch.save(
                2,
                &hs(i - 1),
                &[filled_entry(i, 1, 7, DATA_LEN)],
                &Snapshot::default(),
            );
            engine.write(&mut batch).unwrap();
        }
        engine.remove_group(2).unwrap();
        assert_eq!(sample(&recorder, "raftwal_engine_groups", ""), 1.0);
        engine.close().unwrap();
    });
    let m = |name: &str, label: &str| sample(&recorder, name, label);
    assert_eq!(m("raftwal_engine_groups", ""), 0.0);
    assert_eq!(m("raftwal_engine_write_duration_seconds_count", ""), 5.0);
    // One writer: every write is its own group commit.
    assert_eq!(m("raftwal_engine_commits_total", ""), 5.0);
    assert_eq!(m("raftwal_appended_entries_total", ""), 10.0);
    assert_eq!(m("raftwal_appended_bytes_total", ""), 1000.0);
    let journal = m("raftwal_fsync_duration_seconds_count", "file=\"journal\"");
    assert!(
        journal >= 5.0,
        "{journal} journal fsyncs for 5 synced writes"
    );
    assert_eq!(
        m("raftwal_recovery_duration_seconds_count", "kind=\"engine\""),
        1.0
    );
}
