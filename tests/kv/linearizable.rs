//! raftwal-kv checked from outside, as Jepsen would: clients on a few keys record every
//! operation (invocation, completion, answer) while a nemesis kills, pauses and restarts nodes;
//! then every key's history is checked for linearizability (`lin.rs`), and an audit reads the
//! stopped nodes' logs and finds every acknowledged write at its version.
//!
//! It owns the workload, the fault schedule and the audit. It reads a node's directory only
//! once every node is stopped.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use raft::eraftpb::Entry;

use crate::client::Client;
use crate::lin::{self, Call, Ret};
use crate::procs::LocalCluster;
use crate::proxy::Proxy;
use crate::state::{Command, Op};
use crate::wire::{Consistency, Request, Response, Session};
use crate::{cluster, e2s, link_proxied_cluster_with, Result};

const CLIENTS: u64 = 10;
const KEYS: u64 = 4;

/// One operation as recorded, and the session a write or delete carried (for the audit).
struct Record {
    op: lin::Op,
    session: Option<Session>,
}

/// splitmix64: a small seeded generator, so a run's choices can be replayed from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The seed: `KV_LIN_SEED` to replay a run's choices, else the clock.
fn seed() -> u64 {
    std::env::var("KV_LIN_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        })
}

fn since(origin: Instant) -> u64 {
    origin.elapsed().as_nanos() as u64
}

/// Client `n`: until `stop`, one operation at a time on a random key: strong reads (40%),
/// writes (20%), compare-and-swaps from the last version it saw of the key (25%), deletes
/// (8%) and conditional deletes (7%). Every written value is unique. A write is retried under
/// its session until a definite answer or the client's deadline (then its outcome is unknown).
async fn client(
    n: u64,
    addrs: Vec<std::net::SocketAddr>,
    seed: u64,
    origin: Instant,
    stop: Arc<AtomicBool>,
) -> Result<Vec<Record>> {
    let mut client = Client::new(addrs);
    client.deadline = Duration::from_secs(15);
    client.attempt_timeout = Duration::from_secs(1);
    let mut rng = Rng(seed ^ n.wrapping_mul(0x1000_0000_01b3));
    let mut known = [0u64; KEYS as usize];
    let mut seq = 0;
    let mut out = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let k = rng.below(KEYS);
        let key = format!("lin/{k}");
        let expected = Some(known[k as usize]);
        let call = match rng.below(100) {
            0..40 => Call::Read,
            40..60 => Call::Write {
                value: format!("c{n}-{}", seq + 1),
                expected: None,
            },
            60..85 => Call::Write {
                value: format!("c{n}-{}", seq + 1),
                expected,
            },
            85..93 => Call::Delete { expected: None },
            _ => Call::Delete { expected },
        };
        let session = (call != Call::Read).then(|| {
            seq += 1;
            Session { client: n, seq }
        });
        let request = match &call {
            Call::Read => Request::Read {
                key: key.clone(),
                consistency: Consistency::Strong,
            },
            Call::Write { value, expected } => Request::Write {
                key: key.clone(),
                value: value.clone(),
                expected_version: *expected,
                session,
            },
            Call::Delete { expected } => Request::Delete {
                key: key.clone(),
                expected_version: *expected,
                session,
            },
        };
        let invoke = since(origin);
        let answer = client.call(request).await;
        let complete = since(origin);
        let ret = match (answer, &call) {
            (Ok(Response::Value { item, .. }), Call::Read) => {
                Ret::Value(item.map(|i| (i.value, i.version)))
            }
            (Ok(Response::Written { version }), Call::Write { .. } | Call::Delete { .. }) => {
                Ret::Written(version)
            }
            (Ok(Response::CasFailed { current, .. }), Call::Write { .. } | Call::Delete { .. }) => {
                Ret::CasFailed { current }
            }
            (Ok(other), _) => {
                return Err(format!(
                    "client {n}: {call:?} on {key:?} was answered {other:?}"
                ))
            }
            (Err(_), _) => Ret::Unknown,
        };
        match (&call, &ret) {
            (_, Ret::Value(v)) => known[k as usize] = v.as_ref().map_or(0, |(_, n)| *n),
            (Call::Write { .. }, Ret::Written(v)) => known[k as usize] = *v,
            (Call::Delete { .. }, Ret::Written(_)) => known[k as usize] = 0,
            (_, Ret::CasFailed { current }) => known[k as usize] = *current,
            _ => {}
        }
        out.push(Record {
            op: lin::Op {
                key,
                client: n,
                call,
                ret,
                invoke,
                complete,
            },
            session,
        });
    }
    Ok(out)
}

/// A running node other than `not`, chosen by `rng`.
fn other_than(c: &LocalCluster, not: u64, rng: &mut Rng) -> u64 {
    let others: Vec<u64> = c.ids().into_iter().filter(|&i| i != not).collect();
    others[rng.below(others.len() as u64) as usize]
}

/// The node of a cluster of three that is neither `a` nor `b`.
fn third(c: &LocalCluster, a: u64, b: u64) -> u64 {
    c.ids().into_iter().find(|&i| i != a && i != b).unwrap_or(a)
}

/// The first of `ids` to say it leads, polled closely: its followers can then be paused before
/// it commits much, so its proposals carry its process's first request numbers.
async fn first_leader(c: &LocalCluster, ids: &[u64]) -> Result<u64> {
    let start = Instant::now();
    loop {
        for &id in ids {
            if c.status(id).await.is_some_and(|s| s.role == "Leader") {
                return Ok(id);
            }
        }
        if start.elapsed() > Duration::from_secs(20) {
            return Err("no node became leader in 20 s".into());
        }
        sleep_ms(5).await;
    }
}

async fn sleep_ms(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

/// The faults, one after another with the clients running; returns what was done.
async fn nemesis(c: &mut LocalCluster, rng: &mut Rng) -> Result<Vec<String>> {
    let mut done = Vec::new();
    let leader_wait = Duration::from_secs(20);
    sleep_ms(1000).await;

    let l = c.wait_leader(leader_wait).await?;
    c.kill(l);
    sleep_ms(1000).await;
    c.start(l).map_err(e2s)?;
    done.push(format!("SIGKILL leader {l}, restart 1 s later"));
    sleep_ms(1000).await;

    let l = c.wait_leader(leader_wait).await?;
    let f = other_than(c, l, rng);
    c.pause(f).map_err(e2s)?;
    sleep_ms(1500).await;
    c.resume(f).map_err(e2s)?;
    done.push(format!("SIGSTOP follower {f} for 1.5 s"));
    sleep_ms(1000).await;

    // Longer than an election timeout: the others elect a new leader, and this one comes back
    // deposed, with requests pending.
    let l = c.wait_leader(leader_wait).await?;
    c.pause(l).map_err(e2s)?;
    sleep_ms(2000).await;
    c.resume(l).map_err(e2s)?;
    done.push(format!("SIGSTOP leader {l} for 2 s"));
    sleep_ms(1000).await;

    let l = c.wait_leader(leader_wait).await?;
    let f = other_than(c, l, rng);
    c.kill(f);
    c.start(f).map_err(e2s)?;
    done.push(format!("SIGKILL follower {f}, restart at once"));
    sleep_ms(1000).await;

    // The fresh-leader cycle of issue 12: every process new (request numbers restart at 1), a
    // leader whose proposals cannot commit (both followers paused), killed with one follower
    // and restarted at once; clients gather on it while it waits for a quorum. The other
    // follower goes on, the old leader's appends waiting in its socket.
    for id in c.ids() {
        c.kill(id);
    }
    c.start_all().map_err(e2s)?;
    let l = first_leader(c, &c.ids()).await?;
    let f1 = other_than(c, l, rng);
    let f2 = third(c, l, f1);
    c.pause(f1).map_err(e2s)?;
    c.pause(f2).map_err(e2s)?;
    sleep_ms(400).await;
    c.kill(l);
    c.kill(f1);
    c.start(l).map_err(e2s)?;
    sleep_ms(1500).await;
    c.resume(f2).map_err(e2s)?;
    sleep_ms(1000).await;
    c.start(f1).map_err(e2s)?;
    done.push(format!(
        "SIGKILL all, restart; SIGSTOP followers {f1} and {f2} of leader {l}; 0.4 s later SIGKILL {l} and {f1}, restart {l} at once; SIGCONT {f2} 1.5 s later; restart {f1} 1 s after that"
    ));
    sleep_ms(1500).await;

    // The same cycle, where the restarted leader's only possible voter lagged behind: nothing
    // commits until that node has caught up, while the leader's new process already takes
    // writes; then the previous process's proposals commit below them (this is the race that
    // gave a write another write's answer).
    for _ in 0..2 {
        let l = c.wait_leader(leader_wait).await?;
        let lagging = other_than(c, l, rng);
        c.kill(lagging);
        sleep_ms(5000).await;
        let rest: Vec<u64> = c.ids().into_iter().filter(|&i| i != lagging).collect();
        for &id in &rest {
            c.kill(id);
        }
        for &id in &rest {
            c.start(id).map_err(e2s)?;
        }
        let l = first_leader(c, &rest).await?;
        let f = third(c, l, lagging);
        c.kill(f);
        sleep_ms(400).await;
        c.kill(l);
        c.start(l).map_err(e2s)?;
        sleep_ms(1500).await;
        c.start(lagging).map_err(e2s)?;
        sleep_ms(1000).await;
        c.start(f).map_err(e2s)?;
        done.push(format!(
            "SIGKILL {lagging}, 5 s later SIGKILL the others and restart them; SIGKILL follower {f} of leader {l}, 0.4 s later SIGKILL {l} and restart it at once; restart {lagging} 1.5 s later, {f} 1 s after that"
        ));
        sleep_ms(1500).await;
    }

    for id in c.ids() {
        c.kill(id);
    }
    c.start_all().map_err(e2s)?;
    done.push("SIGKILL all, restart".into());
    sleep_ms(2000).await;
    Ok(done)
}

/// Kills node `id` and waits until the leader's log starts past what it holds (returned), so it
/// can only catch up by snapshot.
async fn kill_until_compacted_past(c: &mut LocalCluster, id: u64) -> Result<u64> {
    c.kill(id);
    let held = raftwal::inspect::Inspector::open(c.dir(id))
        .map_err(e2s)?
        .summary()
        .last_index;
    let start = Instant::now();
    loop {
        let leader = c.wait_leader(Duration::from_secs(20)).await?;
        if c.status(leader)
            .await
            .is_some_and(|s| s.snapshot_index > held)
        {
            return Ok(held);
        }
        if start.elapsed() > Duration::from_secs(20) {
            return Err(format!(
                "the leader never compacted past node {id}'s last index {held}"
            ));
        }
        sleep_ms(20).await;
    }
}

/// Kills node `id` and keeps it down until the leader's log starts past what it holds, so it
/// can only catch up by snapshot; restarts it and waits until it has, by a snapshot.
async fn kill_past_compaction(c: &mut LocalCluster, id: u64) -> Result<u64> {
    let wait = Duration::from_secs(20);
    let held = kill_until_compacted_past(c, id).await?;
    c.start(id).map_err(e2s)?;
    let leader = c.wait_leader(wait).await?;
    let commit = c.status(leader).await.map_or(0, |s| s.commit);
    let start = Instant::now();
    loop {
        c.check_alive()?;
        if let Some(s) = c.status(id).await.filter(|s| s.applied >= commit) {
            if s.snapshots_installed == 0 {
                return Err(format!(
                    "node {id} was down past the leader's compaction yet caught up without a snapshot"
                ));
            }
            return Ok(held);
        }
        if start.elapsed() > wait {
            return Err(format!("node {id} did not catch up to {commit}"));
        }
        sleep_ms(20).await;
    }
}

/// Faults around snapshot installs (the log is compacted every 200 entries).
async fn nemesis_with_snapshots(c: &mut LocalCluster, rng: &mut Rng) -> Result<Vec<String>> {
    let mut done = Vec::new();
    let leader_wait = Duration::from_secs(20);
    sleep_ms(1000).await;

    let l = c.wait_leader(leader_wait).await?;
    let f = other_than(c, l, rng);
    let held = kill_past_compaction(c, f).await?;
    done.push(format!(
        "SIGKILL follower {f} (log to {held}) until the leader compacted past it, restart: caught up by snapshot"
    ));
    sleep_ms(1000).await;

    let l = c.wait_leader(leader_wait).await?;
    let held = kill_past_compaction(c, l).await?;
    done.push(format!(
        "SIGKILL leader {l} (log to {held}) until the new leader compacted past it, restart: caught up by snapshot"
    ));
    sleep_ms(1000).await;

    let l = c.wait_leader(leader_wait).await?;
    c.pause(l).map_err(e2s)?;
    sleep_ms(2000).await;
    c.resume(l).map_err(e2s)?;
    done.push(format!("SIGSTOP leader {l} for 2 s"));
    sleep_ms(1000).await;

    // The lagging-voter cycle, the voter behind the leader's compaction: the restarted leader
    // must send it a snapshot before anything commits.
    let l = c.wait_leader(leader_wait).await?;
    let lagging = other_than(c, l, rng);
    let held = kill_until_compacted_past(c, lagging).await?;
    sleep_ms(2000).await;
    let rest: Vec<u64> = c.ids().into_iter().filter(|&i| i != lagging).collect();
    for &id in &rest {
        c.kill(id);
    }
    for &id in &rest {
        c.start(id).map_err(e2s)?;
    }
    let l = first_leader(c, &rest).await?;
    let f = third(c, l, lagging);
    c.kill(f);
    sleep_ms(400).await;
    c.kill(l);
    c.start(l).map_err(e2s)?;
    sleep_ms(1500).await;
    c.start(lagging).map_err(e2s)?;
    sleep_ms(1000).await;
    c.start(f).map_err(e2s)?;
    done.push(format!(
        "SIGKILL {lagging} (log to {held}); once the leader compacted past it and 2 s more, SIGKILL the others and restart them; SIGKILL follower {f} of leader {l}, 0.4 s later SIGKILL {l} and restart it at once; restart {lagging} 1.5 s later, {f} 1 s after that"
    ));
    sleep_ms(1500).await;

    for id in c.ids() {
        c.kill(id);
    }
    c.start_all().map_err(e2s)?;
    done.push("SIGKILL all, restart".into());
    sleep_ms(2000).await;
    Ok(done)
}

/// Polls the members `ids` until they all name one leader among them, and returns it.
async fn member_leader(c: &LocalCluster, ids: &[u64]) -> Result<u64> {
    let start = Instant::now();
    loop {
        let mut seen = Vec::new();
        for &id in ids {
            seen.push(c.status(id).await.map_or(0, |s| s.leader));
        }
        if let Some(&l) = seen.first() {
            if ids.contains(&l) && !c.is_paused(l) && seen.iter().all(|&x| x == l) {
                return Ok(l);
            }
        }
        if start.elapsed() > Duration::from_secs(20) {
            return Err(format!(
                "members {ids:?} agreed on no leader among them in 20 s: {seen:?}"
            ));
        }
        sleep_ms(20).await;
    }
}

/// Waits until every node of `ids` sees exactly `ids` as the voters.
async fn wait_voters(c: &LocalCluster, ids: &[u64]) -> Result<()> {
    let mut want = ids.to_vec();
    want.sort_unstable();
    let start = Instant::now();
    loop {
        let mut seen = Vec::new();
        for &id in ids {
            seen.push((id, c.status(id).await.map(|s| s.voters)));
        }
        if seen.iter().all(|(_, v)| v.as_ref() == Some(&want)) {
            return Ok(());
        }
        if start.elapsed() > Duration::from_secs(20) {
            return Err(format!(
                "the members did not all see voters {want:?} in 20 s: {seen:?}"
            ));
        }
        sleep_ms(20).await;
    }
}

/// A client of the members `ids` for membership changes.
fn admin(c: &LocalCluster, ids: &[u64]) -> Client {
    let mut a = Client::new(ids.iter().map(|&i| c.addr(i)).collect());
    a.deadline = Duration::from_secs(20);
    a.attempt_timeout = Duration::from_secs(8);
    a
}

/// Adds node `id` through the members `ids` until a change is acknowledged that lists it (a
/// change refused, or whose outcome is unknown, is asked again: adding a voter twice changes
/// nothing).
async fn add_until_member(c: &LocalCluster, ids: &[u64], id: u64) -> Result<u64> {
    let start = Instant::now();
    loop {
        match admin(c, ids).add_node(id, &c.addr(id).to_string()).await {
            Ok((index, voters)) if voters.contains(&id) => return Ok(index),
            Ok((index, voters)) => {
                return Err(format!(
                    "adding node {id} was acknowledged at {index} with voters {voters:?}"
                ))
            }
            Err(e) if start.elapsed() > Duration::from_secs(30) => {
                return Err(format!("node {id} could not be added in 30 s: {e}"))
            }
            Err(_) => sleep_ms(100).await,
        }
    }
}

/// Removes node `id` through the members `ids`; the answer must leave it out.
async fn remove_member(c: &LocalCluster, ids: &[u64], id: u64) -> Result<u64> {
    let (index, voters) = admin(c, ids)
        .remove_node(id)
        .await
        .map_err(|e| format!("remove node {id}: {e}"))?;
    if voters.contains(&id) {
        return Err(format!(
            "removing node {id} was acknowledged at {index} with voters {voters:?}"
        ));
    }
    Ok(index)
}

/// Runs node `id`, no longer a member, with its old directory for `ms` while the members `ids`
/// serve: it must not disturb them (their leader and term stay) nor lead.
async fn run_removed(
    c: &mut LocalCluster,
    id: u64,
    ids: &[u64],
    ms: u64,
    problems: &mut Vec<String>,
) -> Result<()> {
    let l = member_leader(c, ids).await?;
    let term = c.status(l).await.map_or(0, |s| s.term);
    c.start(id).map_err(e2s)?;
    let end = Instant::now() + Duration::from_millis(ms);
    // The highest term the removed node was seen in.
    let mut its_term = 0;
    while Instant::now() < end {
        if let Some(s) = c.status(id).await {
            its_term = its_term.max(s.term);
            if s.role == "Leader" {
                problems.push(format!("removed node {id} leads (term {})", s.term));
                break;
            }
        }
        sleep_ms(50).await;
    }
    let now = member_leader(c, ids).await?;
    let now_term = c.status(now).await.map_or(0, |s| s.term);
    // An election of the members' own (a heartbeat late on a busy machine) is not the removed
    // node's doing unless it reached that term itself: nobody tells a removed node of a term.
    if (now, now_term) != (l, term) && its_term >= now_term {
        problems.push(format!(
            "while removed node {id} ran (reaching term {its_term}), the members' leader went from {l} (term {term}) to {now} (term {now_term})"
        ));
    }
    c.kill(id);
    Ok(())
}

/// Membership changes with the clients running: a node added while a follower is paused (it
/// joins by snapshot and must make the quorum); the leader removing itself; the leader killed
/// right after a membership change reached it; removed nodes restarted from their old
/// directories (one that applied its removal, one that never heard of it); a SIGKILL of
/// every member at the end. Node ids 4 and 5 are reserved in `c` for the nodes added.
async fn nemesis_membership(
    c: &mut LocalCluster,
    rng: &mut Rng,
    problems: &mut Vec<String>,
) -> Result<Vec<String>> {
    let mut done = Vec::new();
    let mut members = vec![1, 2, 3];
    sleep_ms(1000).await;

    let l = member_leader(c, &members).await?;
    let f = *members.iter().find(|&&i| i != l).unwrap_or(&l);
    c.pause(f).map_err(e2s)?;
    // Asked of the others: SIGSTOP takes a moment to stop every thread of a busy process, and
    // a paused node that forwarded the change just before stopping holds its answer (while
    // the change, applied, leaves a quorum only with node 4, started once it is answered).
    let running: Vec<u64> = members.iter().copied().filter(|&i| i != f).collect();
    let index = add_until_member(c, &running, 4).await?;
    c.start(4).map_err(e2s)?;
    members.push(4);
    sleep_ms(1500).await;
    c.resume(f).map_err(e2s)?;
    wait_voters(c, &members).await?;
    done.push(format!(
        "SIGSTOP follower {f}, add node 4 (at {index}), SIGCONT {f} 1.5 s later"
    ));
    sleep_ms(1000).await;

    let removed_leader = member_leader(c, &members).await?;
    let index = remove_member(c, &members, removed_leader).await?;
    members.retain(|&i| i != removed_leader);
    sleep_ms(2000).await;
    c.kill(removed_leader);
    wait_voters(c, &members).await?;
    done.push(format!(
        "leader {removed_leader} removes itself (at {index}), SIGKILL it 2 s later"
    ));
    sleep_ms(1000).await;

    let l = member_leader(c, &members).await?;
    let (ids, addr) = (members.clone(), c.addr(5).to_string());
    let mut a = admin(c, &ids);
    a.deadline = Duration::from_secs(3);
    let first = tokio::spawn(async move { a.add_node(5, &addr).await });
    let after = rng.below(40);
    sleep_ms(after).await;
    c.kill(l);
    sleep_ms(1000).await;
    c.start(l).map_err(e2s)?;
    let first = first.await.map_err(e2s)?;
    let index = add_until_member(c, &members, 5).await?;
    c.start(5).map_err(e2s)?;
    members.push(5);
    wait_voters(c, &members).await?;
    done.push(format!(
        "add node 5, SIGKILL leader {l} {after} ms later, restart it 1 s later (first answer: {}), added at {index}",
        match first {
            Ok((i, _)) => format!("added at {i}"),
            Err(e) => format!("{e}"),
        }
    ));
    sleep_ms(1000).await;

    run_removed(c, removed_leader, &members, 3000, problems).await?;
    done.push(format!(
        "restart removed node {removed_leader} from its directory for 3 s"
    ));
    sleep_ms(500).await;

    let l = member_leader(c, &members).await?;
    let others: Vec<u64> = members.iter().copied().filter(|&i| i != l).collect();
    let f = others[rng.below(others.len() as u64) as usize];
    c.pause(f).map_err(e2s)?;
    let running: Vec<u64> = members.iter().copied().filter(|&i| i != f).collect();
    let index = remove_member(c, &running, f).await?;
    members.retain(|&i| i != f);
    c.kill(f);
    wait_voters(c, &members).await?;
    run_removed(c, f, &members, 3000, problems).await?;
    done.push(format!(
        "SIGSTOP follower {f}, remove it (at {index}), SIGKILL it, restart it from its directory (it never heard of its removal) for 3 s"
    ));
    sleep_ms(500).await;

    for &id in &members {
        c.kill(id);
    }
    for &id in &members {
        c.start(id).map_err(e2s)?;
    }
    done.push(format!("SIGKILL the members {members:?}, restart them"));
    sleep_ms(2000).await;
    Ok(done)
}

/// Every proxy of a link-proxied cluster (tests/kv.rs `link_proxied_cluster`), keyed
/// `(from, to)`.
type Links = BTreeMap<(u64, u64), Proxy>;

/// How long the network nemesis runs its faults.
const NETWORK_FAULTS_FOR: Duration = Duration::from_secs(30);

/// What the network nemesis saw besides the faults it made: the problems (a leader that kept
/// leading cut off from every peer) and the largest memory a node had.
#[derive(Default)]
struct Watched {
    problems: Vec<String>,
    max_rss_kib: u64,
}

/// A node's resident memory (KiB), from /proc.
fn rss_kib(c: &LocalCluster, id: u64) -> u64 {
    let Some(pid) = c.pid(id) else { return 0 };
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
        })
        .unwrap_or(0)
}

/// Sleeps `ms`, sampling the nodes' memory every 250 ms.
async fn hold(c: &LocalCluster, ms: u64, watched: &mut Watched) {
    let end = Instant::now() + Duration::from_millis(ms);
    while Instant::now() < end {
        for id in c.ids() {
            watched.max_rss_kib = watched.max_rss_kib.max(rss_kib(c, id));
        }
        let left = end.saturating_duration_since(Instant::now());
        tokio::time::sleep(left.min(Duration::from_millis(250))).await;
    }
}

/// If `id` led when it was cut off from every peer (`was_leader`), it must have stepped down
/// (check-quorum: an election timeout is 0.5 to 1 s here) after `ms` of the cut.
async fn cut_off(
    c: &LocalCluster,
    id: u64,
    was_leader: bool,
    ms: u64,
    what: &str,
    watched: &mut Watched,
) {
    let check_after = 2000;
    if !was_leader || ms < check_after + 200 {
        hold(c, ms, watched).await;
        return;
    }
    hold(c, check_after, watched).await;
    if let Some(s) = c.status(id).await.filter(|s| s.role == "Leader") {
        watched.problems.push(format!(
            "node {id} still led (term {}) {check_after} ms after {what}",
            s.term
        ));
    }
    hold(c, ms - check_after, watched).await;
}

/// Network faults with the clients running, for [`NETWORK_FAULTS_FOR`]: black-holed single
/// directions (the connections open now; new ones pass), partitions of one direction, of a
/// node's incoming links, of a node both ways (lasting: new connections black-holed too, until
/// healed), with a SIGKILL and restart or a SIGSTOP and SIGCONT of a node among them. Every
/// link is healed at the end.
async fn nemesis_network(
    c: &mut LocalCluster,
    links: &Links,
    rng: &mut Rng,
    watched: &mut Watched,
) -> Result<Vec<String>> {
    let mut done = Vec::new();
    let start = Instant::now();
    let ids = c.ids();
    let pick = |rng: &mut Rng| ids[rng.below(ids.len() as u64) as usize];
    let mut processes = 0;
    hold(c, 1000, watched).await;
    let mut round = 0u64;
    while start.elapsed() < NETWORK_FAULTS_FOR {
        round += 1;
        let ms = 1000 + rng.below(3000);
        let leader = c
            .status(ids[0])
            .await
            .map_or(0, |s| s.leader)
            .max(c.status(ids[1]).await.map_or(0, |s| s.leader));
        // The leader half the time, when one is known.
        let n = if leader != 0 && rng.below(2) == 0 {
            leader
        } else {
            pick(rng)
        };
        let at = start.elapsed().as_secs_f64();
        // A process fault in every fourth round at least once.
        let kind = if round.is_multiple_of(4) && processes == 0 {
            4 + rng.below(2)
        } else {
            rng.below(6)
        };
        match kind {
            0 => {
                let to = other_than(c, n, rng);
                links[&(n, to)].black_hole();
                done.push(format!("{at:.1} s: black-hole {n}->{to}"));
                hold(c, ms, watched).await;
            }
            1 => {
                let to = other_than(c, n, rng);
                links[&(n, to)].partition();
                hold(c, ms, watched).await;
                links[&(n, to)].heal();
                done.push(format!("{at:.1} s: partition {n}->{to} for {ms} ms"));
            }
            2 => {
                for from in ids.iter().filter(|&&i| i != n) {
                    links[&(*from, n)].partition();
                }
                let what = format!("its incoming links were cut ({at:.1} s)");
                cut_off(c, n, n == leader, ms, &what, watched).await;
                for from in ids.iter().filter(|&&i| i != n) {
                    links[&(*from, n)].heal();
                }
                done.push(format!(
                    "{at:.1} s: partition the links into {n}{} for {ms} ms",
                    if n == leader { " (leader)" } else { "" }
                ));
            }
            3 => {
                for other in ids.iter().filter(|&&i| i != n) {
                    links[&(*other, n)].partition();
                    links[&(n, *other)].partition();
                }
                let what = format!("it was partitioned away ({at:.1} s)");
                cut_off(c, n, n == leader, ms, &what, watched).await;
                for other in ids.iter().filter(|&&i| i != n) {
                    links[&(*other, n)].heal();
                    links[&(n, *other)].heal();
                }
                done.push(format!(
                    "{at:.1} s: partition {n}{} both ways for {ms} ms",
                    if n == leader { " (leader)" } else { "" }
                ));
            }
            4 => {
                processes += 1;
                c.kill(n);
                hold(c, ms, watched).await;
                c.start(n).map_err(e2s)?;
                done.push(format!("{at:.1} s: SIGKILL {n}, restart {ms} ms later"));
            }
            _ => {
                processes += 1;
                c.pause(n).map_err(e2s)?;
                hold(c, ms, watched).await;
                c.resume(n).map_err(e2s)?;
                done.push(format!("{at:.1} s: SIGSTOP {n} for {ms} ms"));
            }
        }
        c.check_alive()?;
        hold(c, 300 + rng.below(1200), watched).await;
    }
    for p in links.values() {
        p.heal();
    }
    Ok(done)
}

/// Counts the lines of node `id`'s log that contain `what`.
fn log_count(c: &LocalCluster, id: u64, what: &str) -> usize {
    std::fs::read_to_string(c.log(id))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(what))
        .count()
}

/// The clients of [`linearizable_under_kills_pauses_and_restarts`] on a cluster with a proxy
/// on each direction of each link, under network faults (`nemesis_network`): the history must
/// be linearizable, every acknowledged write in the log at its index, every node must apply
/// the same last index within 4 stall limits of the heal, a leader cut off from its peers must
/// step down, no node may die, and links may not be remade more than a few times a second.
pub async fn linearizable_under_network_faults() -> Result {
    run(Schedule::Network).await
}

/// The clients of [`linearizable_under_kills_pauses_and_restarts`] across membership changes
/// (`nemesis_membership`): nodes added (by snapshot) and removed, the leader among them, with
/// kills and pauses in between, removed nodes restarted from their old directories. The history
/// must be linearizable, every acknowledged write in a log at its index (or compacted by the
/// snapshots the additions take), and removed nodes must neither lead nor disturb the members.
pub async fn linearizable_across_membership_changes() -> Result {
    run(Schedule::Membership).await
}

/// Clients on 4 keys with kills, pauses and restarts around them (issue 12's fresh-leader
/// cycle among them); every key's history must be linearizable, and every acknowledged write
/// must be in the log at its version. The log is never compacted, so the audit reads them all.
pub async fn linearizable_under_kills_pauses_and_restarts() -> Result {
    run(Schedule::Faults).await
}

/// The same clients while nodes fall behind the leader's compacted log (a snapshot every 200
/// entries) and catch up by snapshot, a lagging voter among them: retried writes stay
/// exactly-once across snapshot installs. The audit reads the acknowledged writes that are
/// still in a log.
pub async fn linearizable_across_snapshot_installs() -> Result {
    run(Schedule::Snapshots).await
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Schedule {
    Faults,
    Snapshots,
    Network,
    Membership,
}

async fn run(schedule: Schedule) -> Result {
    let root = tempfile::tempdir().map_err(e2s)?;
    let snapshot_every = match schedule {
        Schedule::Faults | Schedule::Network | Schedule::Membership => 1_000_000,
        Schedule::Snapshots => 200,
    };
    let (mut c, links) = if schedule == Schedule::Network {
        let (c, links, _, _) = link_proxied_cluster_with(root.path(), snapshot_every).await?;
        (c, links)
    } else {
        let mut c = cluster(root.path(), snapshot_every)?;
        c.start_all().map_err(e2s)?;
        (c, Links::new())
    };
    c.wait_leader(Duration::from_secs(20)).await?;
    if schedule == Schedule::Membership {
        // Nodes 4 and 5, added by the nemesis; the clients know their addresses from the start.
        for _ in 0..2 {
            c.reserve_node().map_err(e2s)?;
        }
    }
    let mut watched = Watched::default();
    let seed = seed();
    let origin = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = (1..=CLIENTS)
        .map(|n| tokio::spawn(client(n, c.addrs(), seed, origin, stop.clone())))
        .collect();
    let mut rng = Rng(seed);
    let faults = match schedule {
        Schedule::Faults => nemesis(&mut c, &mut rng).await,
        Schedule::Snapshots => nemesis_with_snapshots(&mut c, &mut rng).await,
        Schedule::Network => nemesis_network(&mut c, &links, &mut rng, &mut watched).await,
        Schedule::Membership => nemesis_membership(&mut c, &mut rng, &mut watched.problems).await,
    };
    let healed = Instant::now();
    stop.store(true, Ordering::Relaxed);
    let mut records = Vec::new();
    for t in tasks {
        records.extend(t.await.map_err(e2s)??);
    }
    let faults = faults.map_err(|e| format!("seed {seed}: {e}"))?;
    let ops: Vec<lin::Op> = records.iter().map(|r| r.op.clone()).collect();
    let definite = ops.iter().filter(|o| o.ret != Ret::Unknown).count();
    if definite < 200 {
        return Err(format!(
            "seed {seed}: only {definite} operations had a definite answer: the cluster barely worked"
        ));
    }
    let started = Instant::now();
    let verdict = lin::check(&ops);
    let check_secs = started.elapsed().as_secs_f64();

    // The audit (whatever the verdict): every node stopped, its committed log read back.
    let last = ops
        .iter()
        .filter_map(|o| match o.ret {
            Ret::Written(n) => Some(n),
            _ => None,
        })
        .max()
        .unwrap_or(0);
    let converge_within = match schedule {
        Schedule::Network => crate::stall::PEER_STALL * 4,
        _ => Duration::from_secs(20),
    };
    let converged = c
        .wait_converged(last, converge_within.saturating_sub(healed.elapsed()))
        .await
        .map_err(|e| {
            let tails: Vec<String> = c
                .ids()
                .into_iter()
                .map(|id| format!("  node {id}:\n{}", c.log_tail(id, 8)))
                .collect();
            format!(
                "seed {seed}: {e} ({:?} after the faults ended)\n{}",
                healed.elapsed(),
                tails.join("\n")
            )
        })?;
    let converged_after = healed.elapsed();
    c.check_alive()?;
    for id in c.ids() {
        c.kill(id);
    }
    if schedule == Schedule::Membership && !watched.problems.is_empty() {
        return Err(format!(
            "seed {seed}: {}\n    faults: {}",
            watched.problems.join("\n    "),
            faults.join("; ")
        ));
    }
    if schedule == Schedule::Network {
        let faults = faults.join("; ");
        if !watched.problems.is_empty() {
            return Err(format!(
                "seed {seed}: {}\n    faults: {faults}",
                watched.problems.join("\n    ")
            ));
        }
        let mut links_remade = Vec::new();
        for id in c.ids() {
            let silent = log_count(&c, id, "no answer to its");
            let remade = log_count(&c, id, "remade the connection");
            let dropped = log_count(&c, id, "dropped the connection");
            let secs = origin.elapsed().as_secs();
            // Storms: more than one link remade a second for want of answers (a stall limit is
            // 5 s, a node has 2 links) or because the peer connected again, or more than 10
            // connections dropped a second (one per link every 200 ms to a dead peer).
            if silent + remade > secs as usize || dropped > 10 * secs as usize {
                return Err(format!(
                    "seed {seed}: node {id} dropped its links {dropped} times ({silent} for want of answers) and remade them {remade} times because a peer connected again in {secs} s\n    faults: {faults}"
                ));
            }
            links_remade.push(format!(
                "node {id}: {dropped} dropped ({silent} unanswered), {remade} remade for the peer"
            ));
        }
        println!(
            "    network: converged at index {converged} {converged_after:.1?} after the heal; largest node RSS {} MiB; {}",
            watched.max_rss_kib >> 10,
            links_remade.join("; ")
        );
    }
    let log = committed_log(&c)?;
    let (report, (audited, compacted)) = match (verdict, audit(&records, &log)) {
        (Ok(report), Ok(audit))
            if matches!(schedule, Schedule::Snapshots | Schedule::Membership) || audit.1 == 0 =>
        {
            (report, audit)
        }
        (Ok(_), Ok((_, compacted))) => {
            return Err(format!(
                "seed {seed}: audit: {compacted} acknowledged writes are in no log although none was compacted"
            ))
        }
        (verdict, audited) => {
            let mut errors = vec![format!("seed {seed}")];
            errors.extend(verdict.err());
            errors.extend(audited.err().map(|e| format!("audit: {e}")));
            return Err(errors.join("\n    "));
        }
    };

    let count = |f: &dyn Fn(&lin::Op) -> bool| ops.iter().filter(|o| f(o)).count();
    println!(
        "    seed {seed}: {} operations by {CLIENTS} clients on {KEYS} keys ({} reads, {} writes, {} compare-and-swaps of which {} failed, {} deletes); {} with no definite answer",
        ops.len(),
        count(&|o| o.call == Call::Read),
        count(&|o| matches!(o.call, Call::Write { expected: None, .. })),
        count(&|o| matches!(o.call, Call::Write { expected: Some(_), .. } | Call::Delete { expected: Some(_) })),
        count(&|o| matches!(o.ret, Ret::CasFailed { .. })),
        count(&|o| matches!(o.call, Call::Delete { .. })),
        report.unknown,
    );
    println!("    faults: {}", faults.join("; "));
    println!(
        "    linearizable: every key ({} stretches with nothing pending between them, the longest {} operations; {} search steps, {check_secs:.2} s); audit: {audited} acknowledged writes and deletes found at their index among {} committed entries{}",
        report.stretches,
        report.longest,
        report.steps,
        log.entries.len(),
        if compacted > 0 {
            format!(" ({compacted} more were in a snapshot, compacted from the logs that held them)")
        } else {
            String::new()
        }
    );
    Ok(())
}

/// The committed entries the nodes' logs still hold (compaction removes those below a
/// snapshot), checked to agree across nodes.
struct CommittedLog {
    /// index -> (a node holding it, the entry)
    entries: BTreeMap<u64, (u64, Entry)>,
    /// Below this index some node compacted its log: an entry missing below it may be in
    /// that node's snapshot (compaction only covers committed entries).
    compacted_below: u64,
}

/// Every node's committed entries (up to its stored commit index).
fn committed_log(c: &LocalCluster) -> Result<CommittedLog> {
    let mut log: BTreeMap<u64, (u64, Entry)> = BTreeMap::new();
    let mut highest = 0;
    for id in c.ids() {
        let dir = c.dir(id);
        let inspector = raftwal::inspect::Inspector::open(&dir).map_err(e2s)?;
        let first = inspector.summary().first_index;
        highest = highest.max(first);
        let commit = inspector
            .hard_state()
            .commit
            .min(inspector.summary().last_index);
        let entries = inspector.entries(first, commit + 1).map_err(e2s)?;
        for e in entries {
            match log.get(&e.index) {
                Some((other, f)) if f.term != e.term || f.data != e.data => {
                    return Err(format!(
                        "nodes {other} and {id} hold different committed entries at index {}",
                        e.index
                    ))
                }
                Some(_) => {}
                None => {
                    log.insert(e.index, (id, e));
                }
            }
        }
    }
    Ok(CommittedLog {
        entries: log,
        compacted_below: highest,
    })
}

/// Every write or delete acknowledged at version `n`: entry `n` of the log is that very
/// command (key, value, expected version and session). Returns how many were checked, and how
/// many could not be because every node had compacted their entries away.
fn audit(records: &[Record], log: &CommittedLog) -> Result<(usize, usize)> {
    let mut checked = 0;
    let mut compacted = 0;
    for r in records {
        let Ret::Written(n) = r.op.ret else {
            continue;
        };
        let want = match &r.op.call {
            Call::Write { value, expected } => Op::Put {
                key: r.op.key.clone(),
                value: value.clone(),
                expected: *expected,
            },
            Call::Delete { expected } => Op::Delete {
                key: r.op.key.clone(),
                expected: *expected,
            },
            Call::Read => continue,
        };
        let Some((node, entry)) = log.entries.get(&n) else {
            // Not in a log that holds it as committed: in a snapshot, if a node compacted past
            // it. A node whose log starts lower may stop short of it (one removed from the
            // cluster, or left behind, before `n` committed).
            if n < log.compacted_below {
                compacted += 1;
                continue;
            }
            return Err(format!(
                "{} was acknowledged at index {n}, which no node's log holds as committed",
                r.op
            ));
        };
        let cmd: Option<Command> = serde_json::from_slice(&entry.data).ok();
        if cmd.as_ref().map(|c| (&c.op, c.session)) != Some((&want, r.session)) {
            return Err(format!(
                "{} (session {:?}) was acknowledged at index {n}, but entry {n} (on node {node}) holds {cmd:?}",
                r.op, r.session
            ));
        }
        checked += 1;
    }
    Ok((checked, compacted))
}
