//! The run, shared by `cargo run --example multiraft` and `tests/multiraft.rs`: start three
//! nodes, wait for every group to have a leader, propose to every group, stop node 2 and keep
//! proposing, reopen node 2 and time its catch-up, propose again, settle, stop every node, then
//! check: every group's state machine identical on the three nodes, every acknowledged proposal
//! applied with its value on all of them, and the same state rebuilt from each reopened engine.
//!
//! Owns: the phases, their limits, the report and the checks. Must never: decide anything from
//! timing (every wait is on a condition, with a limit that fails the run with an account of
//! what was missing).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use raft::{GetEntriesContext, Storage};
use raftwal::{Engine, MetaInfo};

use crate::cluster::{all_led, caught_up, leader_of, Cluster, Phase};
use crate::node::{Stats, PEERS};
use crate::sm::{value_of, StateMachine};

/// The node stopped and restarted.
pub const RESTARTED: u64 = 2;

#[derive(Clone, Debug)]
pub struct Options {
    /// Where the nodes' engine roots go (`node1`, `node2`, `node3`).
    pub root: PathBuf,
    pub groups: u64,
    /// Proposals in each of the three phases.
    pub proposals: u64,
    /// Proposals outstanding per group.
    pub window: usize,
    pub tick: Duration,
    /// Entries applied between a group's snapshots (log compaction); 0: never.
    pub compact_every: u64,
    /// Limit of each wait and each phase.
    pub limit: Duration,
}

/// What a run measured and found.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub phases: Vec<(String, Phase)>,
    /// Time from the restarted node's start until it applied every leader's commit index.
    pub catch_up: Duration,
    /// Entries it had to catch up, over all groups.
    pub behind: u64,
    /// Snapshots it installed while catching up.
    pub snapshots: u64,
    pub open_time: Duration,
    pub start_time: Duration,
    /// The workload's wall time (first proposal to last phase's end, restart included).
    pub workload: Duration,
    /// Per node: figures over the workload.
    pub nodes: Vec<Stats>,
    pub acked: u64,
    /// What the checks found wrong (empty: all good).
    pub problems: Vec<String>,
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1e3)
}

fn led_by(c: &Cluster) -> Vec<usize> {
    let views = c.board.views();
    let mut led = vec![0; PEERS.len()];
    for i in 0..c.groups as usize {
        if let Some((id, _)) = leader_of(&views, i) {
            led[(id - 1) as usize] += 1;
        }
    }
    led
}

fn phase(
    c: &mut Cluster,
    r: &mut Report,
    name: &str,
    from: u64,
    o: &Options,
) -> Result<(), String> {
    let p = c.propose(from..from + o.proposals, o.window, o.limit)?;
    println!(
        "  {name}: {} proposals in {} -> {:.0} writes/s applied ({} resent)",
        p.proposals,
        secs(p.took),
        p.proposals as f64 / p.took.as_secs_f64(),
        p.retries
    );
    r.phases.push((name.to_string(), p));
    Ok(())
}

/// Runs the whole flow, printing as it goes; `Err` for a run that could not finish, `Ok` with
/// the report otherwise (its `problems` say whether the checks passed).
pub fn run(o: &Options) -> Result<Report, String> {
    let mut r = Report::default();
    println!(
        "raftwal multiraft: 3 nodes x {} groups in one process, one Engine per node (sync_writes), \
         channels for transport",
        o.groups
    );
    println!("  engine roots under {}", o.root.display());
    let t = Instant::now();
    let mut c = Cluster::start(o.root.clone(), o.groups, o.tick, o.compact_every);
    let took = c
        .board
        .wait("every group to elect a leader", o.limit, all_led)?;
    println!(
        "\n[start] every group has a leader {} after start (groups led by node 1, 2, 3: {:?})",
        ms(took.max(t.elapsed())),
        led_by(&c)
    );

    let before: Vec<Stats> = PEERS.iter().map(|&id| c.board.stats(id)).collect();
    let work = Instant::now();
    println!("\n[proposals] puts of 64..1024-byte values to every group's leader, {} outstanding per group", o.window);
    phase(&mut c, &mut r, "phase 1, all nodes up ", 0, o)?;

    let led = led_by(&c)[(RESTARTED - 1) as usize];
    let t = Instant::now();
    c.stop(RESTARTED)?;
    println!(
        "\n[restart] node {RESTARTED} stopped in {} (engine closed, raft nodes dropped; it led {led} groups)",
        ms(t.elapsed())
    );
    phase(&mut c, &mut r, "phase 2, node 2 down  ", o.proposals, o)?;

    let views = c.board.views();
    let down_at: Vec<u64> = views[(RESTARTED - 1) as usize]
        .groups
        .iter()
        .map(|g| g.applied)
        .collect();
    let target: Vec<u64> = (0..o.groups as usize)
        .map(|i| leader_of(&views, i).map_or(0, |(_, l)| l.commit))
        .collect();
    r.behind = target
        .iter()
        .zip(&down_at)
        .map(|(t, d)| t.saturating_sub(*d))
        .sum();
    let installed = c.board.stats(RESTARTED).snapshots_installed;
    let t = Instant::now();
    c.restart(RESTARTED);
    let all: Vec<u64> = target.clone();
    c.board
        .wait("the restarted node to catch up", o.limit, |v| {
            caught_up(v, RESTARTED, &all)
        })?;
    r.catch_up = t.elapsed();
    let s = c.board.stats(RESTARTED);
    r.open_time = s.open_time;
    r.start_time = s.start_time;
    r.snapshots = s.snapshots_installed - installed;
    println!(
        "  node {RESTARTED} reopened: Engine::open {}, {} raft nodes rebuilt in {}; caught up in {} \
         (every group applied to its leader's commit index; {} entries behind at restart; {} \
         of {} groups caught up by installing their leader's snapshot, the rest by appends)",
        ms(r.open_time),
        o.groups,
        ms(r.start_time),
        ms(r.catch_up),
        r.behind,
        r.snapshots,
        o.groups
    );

    println!();
    phase(&mut c, &mut r, "phase 3, all nodes up ", 2 * o.proposals, o)?;
    r.workload = work.elapsed();
    let attempts = c.quiesce(o.limit)?;
    let after: Vec<Stats> = PEERS.iter().map(|&id| c.board.stats(id)).collect();
    let total: u64 = r.phases.iter().map(|(_, p)| p.proposals).sum();
    println!(
        "  overall: {total} proposals in {} including the restart -> {:.0} writes/s",
        secs(r.workload),
        total as f64 / r.workload.as_secs_f64()
    );

    println!("\n[commits] one Engine::write per batch of Readies, per node, during the workload");
    println!(
        "  {:<5} {:>8} {:>10} {:>14} {:>10} {:>15} {:>7} {:>14} {:>16}",
        "node",
        "commits",
        "commits/s",
        "groups/commit",
        "max groups",
        "entries/commit",
        "MiB/s",
        "write latency",
        "snapshots taken"
    );
    for (i, (b, a)) in before.iter().zip(&after).enumerate() {
        let d = during(b, a);
        let n = d.commits.max(1) as f64;
        println!(
            "  {:<5} {:>8} {:>10.0} {:>14.1} {:>10} {:>15.1} {:>7.1} {:>11.2} ms {:>16}",
            i + 1,
            d.commits,
            d.commits as f64 / r.workload.as_secs_f64(),
            d.groups as f64 / n,
            d.max_groups(),
            d.entries as f64 / n,
            d.bytes as f64 / r.workload.as_secs_f64() / (1 << 20) as f64,
            d.write_time.as_secs_f64() * 1e3 / n,
            d.snapshots_taken
        );
        r.nodes.push(d);
    }

    let t = Instant::now();
    let sms = c.stop_all()?;
    println!(
        "\n[stop] cluster quiet ({attempts} attempt(s)): every node applied every group's log; \
         every node stopped, engines closed, in {}",
        ms(t.elapsed())
    );
    r.acked = c.acked.len() as u64;
    check(o, &c, &sms, &mut r)?;
    Ok(r)
}

/// A node's figures between two readings of them (`before`, then `after`); the most groups
/// in one commit is over the commits between them, not since the node started.
pub fn during(b: &Stats, a: &Stats) -> Stats {
    let groups_per_commit = a
        .groups_per_commit
        .iter()
        .filter_map(|(g, n)| {
            let before = b.groups_per_commit.get(g).copied().unwrap_or(0);
            (*n > before).then(|| (*g, n - before))
        })
        .collect();
    Stats {
        commits: a.commits - b.commits,
        parts: a.parts - b.parts,
        groups: a.groups - b.groups,
        groups_per_commit,
        entries: a.entries - b.entries,
        bytes: a.bytes - b.bytes,
        write_time: a.write_time - b.write_time,
        snapshots_taken: a.snapshots_taken - b.snapshots_taken,
        snapshots_installed: a.snapshots_installed - b.snapshots_installed,
        ..Stats::default()
    }
}

/// The checks of the end state; what fails goes to `r.problems`.
fn check(
    o: &Options,
    c: &Cluster,
    sms: &[Vec<StateMachine>],
    r: &mut Report,
) -> Result<(), String> {
    let mut identical = 0;
    for g in 0..o.groups as usize {
        let first = &sms[0][g];
        match sms.iter().position(|n| n[g] != *first) {
            None => identical += 1,
            Some(n) => r.problems.push(format!(
                "group {}: node {} differs from node 1 (applied {} vs {}, {} vs {} keys)",
                g + 1,
                n + 1,
                sms[n][g].applied,
                first.applied,
                sms[n][g].kv.len(),
                first.kv.len()
            )),
        }
    }
    let (on_every_node, missing) = acknowledged_on_every_node(&c.acked, sms, o.groups);
    for (id, n, g) in missing.into_iter().take(5) {
        r.problems.push(format!(
            "proposal {id} acknowledged but not on node {} (group {})",
            n + 1,
            g + 1
        ));
    }
    let entries: u64 = sms[0].iter().map(|s| s.applied).sum();
    println!(
        "[check] state machines identical on all 3 nodes: {identical} of {} groups ({entries} entries each); \
         acknowledged proposals on every node with their values: {} of {}",
        o.groups,
        on_every_node,
        r.acked
    );
    // Every node's engine, opened again: each group's log up to its durable commit index
    // rebuilds the state machine the node ended with.
    let mut rebuilt = 0;
    for (n, node) in sms.iter().enumerate() {
        let id = n as u64 + 1;
        let engine = Engine::open(c.node_root(id)).map_err(|e| format!("reopen node {id}: {e}"))?;
        for (g, live) in node.iter().enumerate() {
            let sm = rebuild(&engine, g as u64 + 1)
                .map_err(|e| format!("node {id} group {}: {e}", g + 1))?;
            if sm == *live {
                rebuilt += 1;
            } else {
                r.problems.push(format!(
                    "node {id} group {}: rebuilt from the reopened engine to applied {}, the node ended at {}",
                    g + 1,
                    sm.applied,
                    live.applied
                ));
            }
        }
        engine
            .close()
            .map_err(|e| format!("close node {id}: {e}"))?;
    }
    println!(
        "[check] state rebuilt from each reopened engine (snapshot, then the log up to the durable \
         commit index) equals the live state: {rebuilt} of {} groups",
        o.groups * PEERS.len() as u64
    );
    println!(
        "[check] {}",
        if r.problems.is_empty() {
            "all good".to_string()
        } else {
            format!("FAILED: {}", r.problems.join("; "))
        }
    );
    Ok(())
}

/// A group's state machine as its storage has it: snapshot, then every entry up to the durable
/// commit index.
fn rebuild(engine: &Engine, gid: u64) -> Result<StateMachine, String> {
    let s = engine.group(gid).ok_or("no such group")?;
    let mut sm = StateMachine::default();
    if s.uint(MetaInfo::SnapshotIndex) > 0 {
        let snap = s.snapshot(0, 0).map_err(|e| e.to_string())?;
        sm = StateMachine::decode(&snap.data)?;
        sm.applied = snap.get_metadata().index;
    }
    let commit = s
        .initial_state()
        .map_err(|e| e.to_string())?
        .hard_state
        .commit;
    if commit > sm.applied {
        let entries = s
            .entries(
                sm.applied + 1,
                commit + 1,
                None,
                GetEntriesContext::empty(false),
            )
            .map_err(|e| e.to_string())?;
        for e in &entries {
            sm.apply(e)?;
        }
    }
    Ok(sm)
}

/// Of the proposals `acked` (proposal `id` goes to group `id % groups`), how many every node's
/// state machine holds with their value, and each copy missing: (proposal, node, group) in
/// proposal order. A proposal missing from several nodes counts once in the first (the report
/// once took the copies missing for proposals, and said 1 of 4 where 3 of 4 were whole).
fn acknowledged_on_every_node(
    acked: &std::collections::HashSet<u64>,
    sms: &[Vec<StateMachine>],
    groups: u64,
) -> (u64, Vec<(u64, usize, usize)>) {
    let mut ids: Vec<u64> = acked.iter().copied().collect();
    ids.sort_unstable();
    let (mut whole, mut missing) = (0, Vec::new());
    for id in ids {
        let g = (id % groups) as usize;
        let want = value_of(id);
        let before = missing.len();
        for (n, node) in sms.iter().enumerate() {
            if node[g].kv.get(&id).map(|v| &v[..]) != Some(&want[..]) {
                missing.push((id, n, g));
            }
        }
        whole += u64::from(missing.len() == before);
    }
    (whole, missing)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Four proposals acknowledged in one group, one of them on no node: 3 of 4 are on every
    /// node, and each of the 3 copies missing is listed.
    #[test]
    fn a_proposal_missing_from_every_node_counts_once() {
        let mut sm = StateMachine::default();
        for id in [0, 2, 4] {
            sm.kv.insert(id, bytes::Bytes::from(value_of(id)));
        }
        let sms = vec![vec![sm.clone()], vec![sm.clone()], vec![sm]];
        let acked = [0, 2, 4, 6].into_iter().collect();
        let (whole, missing) = acknowledged_on_every_node(&acked, &sms, 1);
        assert_eq!(whole, 3);
        assert_eq!(missing, vec![(6, 0, 0), (6, 1, 0), (6, 2, 0)]);
    }
}
