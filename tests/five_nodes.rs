//! The five-node example (`examples/five_nodes.rs`, raft-rs's `five_mem_node` on `DiskStorage`)
//! in both of its flows: nodes 2-5 added by conf changes (each starts from a snapshot built on
//! demand), 100 proposals, all five restarted from their directories with their state rebuilt
//! and checked, 20 more proposals. The example's file is included as it is, so this runs its
//! code; every wait in it is on a condition, with a limit that fails the run.

#[path = "../examples/five_nodes.rs"]
mod five_nodes;

use five_nodes::{run, Flow};

fn check(flow: Flow) {
    let dir = tempfile::tempdir().unwrap();
    let r = run(dir.path(), flow, &mut |line| println!("{line}")).unwrap();
    assert_eq!(r.first.len(), 5);
    // Each of nodes 2..5 joined through a snapshot the leader built for it.
    let built: u64 = r.first.iter().map(|s| s.snapshots_built).sum();
    assert!(built >= 1, "no snapshot was built for the new nodes");
    for s in r.first.iter().chain(&r.second) {
        assert_eq!(s.kv.conf.voters.len(), 5, "node {}", s.id);
    }
    if flow == Flow::Async {
        // Several Readies per sync() on some node: the async flow batches.
        let readies: u64 = r.first.iter().map(|s| s.readies).sum();
        let syncs: u64 = r.first.iter().map(|s| s.syncs).sum();
        assert!(
            syncs > 0 && syncs <= readies,
            "{syncs} syncs for {readies} readies"
        );
    } else {
        assert!(r.first.iter().all(|s| s.syncs == 0));
    }
}

#[test]
fn five_nodes_sync_ready() {
    check(Flow::Sync);
}

#[test]
fn five_nodes_async_ready() {
    check(Flow::Async);
}
