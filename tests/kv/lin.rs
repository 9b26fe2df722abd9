//! A linearizability checker for raftwal-kv's keys: each key is a versioned register, checked
//! on its own (linearizability is local: a history is linearizable iff each key's is), with
//! the Wing-Gong search and Lowe's memo of visited (operations linearized, state) pairs.
//!
//! It owns the register model and the search; it knows nothing of clusters or sockets.
//!
//! The model. A key holds a value and a version, the raft index of the write that set it; an
//! absent key has version 0. What each answer asserts at the operation's linearization point:
//!
//! * a strong read `Value(Some((v, n)))`: the key holds `v` at version `n`; `Value(None)`: the
//!   key is absent;
//! * `Written(n)` for a write or delete: its `expected` version (if any) was current, and it
//!   took effect as raft index `n`. Indexes grow along the log, so `n` is above the index of
//!   every earlier write or delete of the key;
//! * `CasFailed { current }`: the key's version was `current` (not the expected one); nothing
//!   changed;
//! * `Unknown` (the client gave up, or lost its connection): the operation took effect once,
//!   at any point after its invocation, or never. Its index is not known: a later answer that
//!   shows its version tells it.
//!
//! Two checks span keys, since versions are one log's indexes: no two operations are
//! acknowledged at the same index, and an operation acknowledged before another was invoked
//! has the lower index.
//!
//! Every written value must be unique per key (the workload makes them so): a read's value
//! names the write it saw.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

/// What a client asked of one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Call {
    /// A strong (linearizable) read.
    Read,
    /// A write of `value`; `expected`: a compare-and-swap's version (0: the key is absent).
    Write {
        value: String,
        expected: Option<u64>,
    },
    /// A delete; `expected` as for a write.
    Delete { expected: Option<u64> },
}

/// What the client was told.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ret {
    /// A read's answer: the value and its version, or absent.
    Value(Option<(String, u64)>),
    /// The write or delete took effect at raft index `.0`.
    Written(u64),
    /// The compare-and-swap did not apply: the key's version was `current`.
    CasFailed { current: u64 },
    /// No definite answer.
    Unknown,
}

/// One operation of a history. Times are nanoseconds on one clock: `invoke` before the request
/// left, `complete` after its answer came (ignored for `Ret::Unknown`).
#[derive(Clone, Debug)]
pub struct Op {
    pub key: String,
    pub client: u64,
    pub call: Call,
    pub ret: Ret,
    pub invoke: u64,
    pub complete: u64,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let end = match self.ret {
            Ret::Unknown => "...".to_string(),
            _ => format!("{:.3}", self.complete as f64 / 1e9),
        };
        write!(
            f,
            "client {} {:?} {:?} -> {:?} [{:.3} s, {end} s]",
            self.client,
            self.key,
            self.call,
            self.ret,
            self.invoke as f64 / 1e9
        )
    }
}

/// What a check covered.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub keys: usize,
    pub ops: usize,
    pub unknown: usize,
    /// Stretches searched on their own (cut where no operation was pending), and the most
    /// operations one held.
    pub stretches: usize,
    pub longest: usize,
    /// Operations linearized during the search, backtracking included.
    pub steps: u64,
}

/// Checks `ops`; the error names the operations that cannot be ordered.
pub fn check(ops: &[Op]) -> Result<Report, String> {
    check_indexes(ops)?;
    let mut by_key: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    for op in ops {
        by_key.entry(op.key.as_str()).or_default().push(op);
    }
    let mut report = Report {
        keys: by_key.len(),
        ops: ops.len(),
        unknown: ops.iter().filter(|o| o.ret == Ret::Unknown).count(),
        ..Report::default()
    };
    for (key, ops) in by_key {
        check_key(&ops, &mut report).map_err(|e| format!("key {key:?}: {e}"))?;
    }
    Ok(report)
}

/// The checks across keys: acknowledged indexes are distinct and follow real time.
fn check_indexes(ops: &[Op]) -> Result<(), String> {
    let mut acked: Vec<(u64, &Op)> = ops
        .iter()
        .filter_map(|o| match o.ret {
            Ret::Written(n) => Some((n, o)),
            _ => None,
        })
        .collect();
    acked.sort_by_key(|(n, _)| *n);
    for w in acked.windows(2) {
        if w[0].0 == w[1].0 {
            return Err(format!(
                "two operations acknowledged at index {}: {} and {}",
                w[0].0, w[0].1, w[1].1
            ));
        }
    }
    // Sweep by time: the highest index acknowledged before each invocation must be lower.
    let mut by_complete: Vec<(u64, &Op)> = acked.iter().map(|&(n, o)| (n, o)).collect();
    by_complete.sort_by_key(|(_, o)| o.complete);
    let mut by_invoke = acked.clone();
    by_invoke.sort_by_key(|(_, o)| o.invoke);
    let mut done = 0;
    let mut highest: Option<(u64, &Op)> = None;
    for &(n, op) in &by_invoke {
        while done < by_complete.len() && by_complete[done].1.complete < op.invoke {
            let (m, o) = by_complete[done];
            match highest {
                Some((h, _)) if h >= m => {}
                _ => highest = Some((m, o)),
            }
            done += 1;
        }
        if let Some((h, before)) = highest.filter(|(h, _)| *h > n) {
            return Err(format!(
                "{op} is at index {n}, below index {h} of an operation acknowledged before it began: {before}"
            ));
        }
    }
    Ok(())
}

/// One key's register. Values are named by the index of the operation that wrote them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Reg {
    value: Option<usize>,
    /// `None`: set by a write with no definite answer whose index no answer has shown yet.
    version: Option<u64>,
    /// The index of the last write or delete (a lower bound after one with no definite answer).
    last: u64,
}

impl Reg {
    const ABSENT: Reg = Reg {
        value: None,
        version: Some(0),
        last: 0,
    };

    /// This state, if its version can be `n`; an unknown version becomes `n`.
    fn at_version(self, n: u64) -> Option<Reg> {
        match (self.value, self.version) {
            (None, _) => (n == 0).then_some(self),
            (Some(_), Some(v)) => (v == n).then_some(self),
            (Some(_), None) => (n > self.last).then_some(Reg {
                version: Some(n),
                last: n,
                ..self
            }),
        }
    }

    fn describe(&self, ops: &[&Op]) -> String {
        let version = self
            .version
            .map_or("an unknown version".to_string(), |v| format!("version {v}"));
        match self.value.map(|id| &ops[id].call) {
            Some(Call::Write { value, .. }) => format!("{value:?} at {version}"),
            _ => format!("nothing (last written at index {})", self.last),
        }
    }

    /// This state, if a compare-and-swap expecting `expected` may apply to it.
    fn expecting(self, expected: Option<u64>) -> Option<Reg> {
        expected.map_or(Some(self), |e| self.at_version(e))
    }
}

/// The states an operation can leave `s` in (empty: it cannot be linearized there).
fn step(s: Reg, op: &Op, id: usize, value_of: &HashMap<&str, usize>) -> Vec<Reg> {
    let one = |r: Option<Reg>| r.into_iter().collect::<Vec<_>>();
    match (&op.call, &op.ret) {
        (Call::Read, Ret::Value(None)) => one(s.value.is_none().then_some(s)),
        (Call::Read, Ret::Value(Some((v, n)))) => one(value_of
            .get(v.as_str())
            .filter(|&&w| s.value == Some(w))
            .and_then(|_| s.at_version(*n))),
        (Call::Write { expected, .. }, Ret::Written(n)) => {
            one(s.expecting(*expected).filter(|p| *n > p.last).map(|_| Reg {
                value: Some(id),
                version: Some(*n),
                last: *n,
            }))
        }
        (Call::Delete { expected }, Ret::Written(n)) => {
            one(s.expecting(*expected).filter(|p| *n > p.last).map(|_| Reg {
                last: *n,
                ..Reg::ABSENT
            }))
        }
        (
            Call::Write {
                expected: Some(e), ..
            }
            | Call::Delete { expected: Some(e) },
            Ret::CasFailed { current },
        ) if current != e => one(s.at_version(*current)),
        (Call::Write { expected, .. }, Ret::Unknown) => {
            let mut out = vec![s];
            out.extend(s.expecting(*expected).map(|p| Reg {
                value: Some(id),
                version: None,
                last: p.last,
            }));
            out
        }
        (Call::Delete { expected }, Ret::Unknown) => {
            let mut out = vec![s];
            out.extend(s.expecting(*expected).map(|p| Reg {
                last: p.last,
                ..Reg::ABSENT
            }));
            out
        }
        // An answer of the wrong kind (a read told Written, an unconditional write told
        // CasFailed, a CasFailed naming the expected version) holds in no state.
        _ => Vec::new(),
    }
}

/// A set of possible states, sorted and without repeats: operations with no definite answer
/// make the register's state one of several.
type States = Vec<Reg>;

fn step_all(states: &States, op: &Op, id: usize, value_of: &HashMap<&str, usize>) -> States {
    let mut out: States = states
        .iter()
        .flat_map(|&s| step(s, op, id, value_of))
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// An event of the search's list: an operation's call or its return.
#[derive(Clone, Copy)]
struct Event {
    op: usize,
    is_call: bool,
    /// For a call, the position of its return.
    partner: usize,
    prev: usize,
    next: usize,
}

const NIL: usize = usize::MAX;

/// Checks one key's operations, adding what it searched to `report`.
///
/// The history is cut where no operation is pending (every earlier one completed before the
/// next began) and each stretch is searched on its own, from the state the previous one must
/// have ended in: writes and deletes take effect in index order, so a stretch ends in the
/// effect of its highest acknowledged index. A stretch never ends after an operation with no
/// definite answer (it stays pending to the end). This keeps each search's memo small.
fn check_key(ops: &[&Op], report: &mut Report) -> Result<(), String> {
    // A read with no answer asserts nothing.
    let ops: Vec<&Op> = ops
        .iter()
        .copied()
        .filter(|o| !(o.call == Call::Read && o.ret == Ret::Unknown))
        .collect();
    let mut value_of: HashMap<&str, usize> = HashMap::new();
    for (id, op) in ops.iter().enumerate() {
        if let Call::Write { value, .. } = &op.call {
            if value_of.insert(value.as_str(), id).is_some() {
                return Err(format!(
                    "the value {value:?} is written twice (values must be unique)"
                ));
            }
        }
    }
    let end = |op: &Op| {
        if op.ret == Ret::Unknown {
            u64::MAX
        } else {
            op.complete
        }
    };
    let mut order: Vec<usize> = (0..ops.len()).collect();
    order.sort_by_key(|&i| ops[i].invoke);
    let mut start = Reg::ABSENT;
    let mut stretch: Vec<usize> = Vec::new();
    let mut reach = 0;
    let mut searched = |stretch: &[usize], start: Reg| -> Result<(), String> {
        report.steps += search(&ops, stretch, start, &value_of)?;
        report.stretches += 1;
        report.longest = report.longest.max(stretch.len());
        Ok(())
    };
    for i in order {
        if !stretch.is_empty() && reach < ops[i].invoke {
            searched(&stretch, start)?;
            start = stretch
                .iter()
                .filter_map(|&j| match (&ops[j].call, &ops[j].ret) {
                    (Call::Write { .. }, Ret::Written(n)) => Some((*n, Some(j))),
                    (Call::Delete { .. }, Ret::Written(n)) => Some((*n, None)),
                    _ => None,
                })
                .max()
                .map_or(start, |(n, value)| Reg {
                    value,
                    version: Some(if value.is_some() { n } else { 0 }),
                    last: n,
                });
            stretch.clear();
        }
        stretch.push(i);
        reach = reach.max(end(ops[i]));
    }
    if !stretch.is_empty() {
        searched(&stretch, start)?;
    }
    Ok(())
}

/// Wing-Gong search, with Lowe's memo, over the operations `stretch` (indexes into `ops`, the
/// key's operations) from state `start`. Returns the steps taken.
fn search(
    ops: &[&Op],
    stretch: &[usize],
    start: Reg,
    value_of: &HashMap<&str, usize>,
) -> Result<u64, String> {
    // Events by time; a call before a return at the same instant (they may overlap). Events
    // and the memo's bits name an operation by its place in `stretch`.
    let mut times: Vec<(u64, bool, usize)> = Vec::with_capacity(2 * stretch.len());
    for (id, &i) in stretch.iter().enumerate() {
        let op = ops[i];
        let end = if op.ret == Ret::Unknown {
            u64::MAX
        } else {
            op.complete
        };
        times.push((op.invoke, true, id));
        times.push((end, false, id));
    }
    times.sort_by_key(|&(t, is_call, id)| (t, !is_call, id));
    // Position 0 is the list's head; events follow at 1..
    let n = times.len();
    let mut ev = vec![
        Event {
            op: 0,
            is_call: false,
            partner: NIL,
            prev: NIL,
            next: if n > 0 { 1 } else { NIL },
        };
        n + 1
    ];
    let mut return_at = vec![0; stretch.len()];
    for (i, &(_, is_call, id)) in times.iter().enumerate() {
        let p = i + 1;
        ev[p] = Event {
            op: id,
            is_call,
            partner: NIL,
            prev: p - 1,
            next: if p < n { p + 1 } else { NIL },
        };
        if !is_call {
            return_at[id] = p;
        }
    }
    for p in 1..=n {
        if ev[p].is_call {
            ev[p].partner = return_at[ev[p].op];
        }
    }
    let lift = |ev: &mut Vec<Event>, p: usize| {
        for q in [p, ev[p].partner] {
            let (prev, next) = (ev[q].prev, ev[q].next);
            ev[prev].next = next;
            if next != NIL {
                ev[next].prev = prev;
            }
        }
    };
    let unlift = |ev: &mut Vec<Event>, p: usize| {
        for q in [ev[p].partner, p] {
            let (prev, next) = (ev[q].prev, ev[q].next);
            ev[prev].next = q;
            if next != NIL {
                ev[next].prev = q;
            }
        }
    };

    let mut states: States = vec![start];
    let mut done = vec![0u64; stretch.len().div_ceil(64)];
    let mut seen: HashSet<(Vec<u64>, States)> = HashSet::new();
    let mut stack: Vec<(usize, States)> = Vec::new();
    let mut steps = 0u64;
    // The deepest point reached, for the error: (linearized count, states, the calls open there).
    let mut deepest: (usize, States, Vec<usize>) = (0, states.clone(), Vec::new());
    let mut p = ev[0].next;
    while ev[0].next != NIL {
        // The list always ends with a return (each call's return follows it), which stops the
        // walk before it can run off the end.
        let Some(&e) = ev.get(p) else {
            return Err("the search ran off the end of its list".into());
        };
        if e.is_call {
            let next = step_all(&states, ops[stretch[e.op]], stretch[e.op], value_of);
            let mut fresh = false;
            if !next.is_empty() {
                done[e.op / 64] |= 1 << (e.op % 64);
                fresh = seen.insert((done.clone(), next.clone()));
                if !fresh {
                    done[e.op / 64] &= !(1 << (e.op % 64));
                }
            }
            if fresh {
                steps += 1;
                stack.push((p, std::mem::replace(&mut states, next)));
                lift(&mut ev, p);
                p = ev[0].next;
            } else {
                p = e.next;
            }
        } else {
            if stack.len() >= deepest.0 {
                let mut open = Vec::new();
                let mut q = ev[0].next;
                while q != NIL && ev[q].is_call {
                    open.push(ev[q].op);
                    q = ev[q].next;
                }
                deepest = (stack.len(), states.clone(), open);
            }
            let Some((call, before)) = stack.pop() else {
                let (count, states, open) = deepest;
                let states: Vec<String> = states.iter().map(|r| r.describe(ops)).collect();
                let open: Vec<String> = open
                    .iter()
                    .map(|&i| format!("  {}", ops[stretch[i]]))
                    .collect();
                let first = stretch.iter().map(|&i| ops[i].invoke).min().unwrap_or(0);
                return Err(format!(
                    "not linearizable: of the {} operations from {:.3} s (none pending then), at most {count} can be ordered; the key then holds {} and none of these can come next:\n{}",
                    stretch.len(),
                    first as f64 / 1e9,
                    states.join(" or "),
                    open.join("\n")
                ));
            };
            let op = ev[call].op;
            done[op / 64] &= !(1 << (op % 64));
            states = before;
            unlift(&mut ev, call);
            p = ev[call].next;
        }
    }
    Ok(steps)
}

// ---- the checker's own tests -------------------------------------------------------------

/// Builds hand-made histories: `w("a", 1)` writes "a" and is acknowledged at index 1, etc.
mod build {
    use super::{Call, Op, Ret};

    pub fn op(call: Call, ret: Ret, invoke: u64, complete: u64) -> Op {
        Op {
            key: "k".into(),
            client: invoke,
            call,
            ret,
            invoke,
            complete,
        }
    }
    pub fn write(v: &str, expected: Option<u64>, ret: Ret, t: (u64, u64)) -> Op {
        op(
            Call::Write {
                value: v.into(),
                expected,
            },
            ret,
            t.0,
            t.1,
        )
    }
    pub fn delete(expected: Option<u64>, ret: Ret, t: (u64, u64)) -> Op {
        op(Call::Delete { expected }, ret, t.0, t.1)
    }
    pub fn read(seen: Option<(&str, u64)>, t: (u64, u64)) -> Op {
        op(
            Call::Read,
            Ret::Value(seen.map(|(v, n)| (v.to_string(), n))),
            t.0,
            t.1,
        )
    }
}

/// The checker on hand-made histories: each linearizable one passes, each other one fails.
pub fn check_hand_made_histories() -> Result<(), String> {
    use build::*;
    use Ret::{CasFailed, Unknown, Written};
    let linearizable: Vec<(&str, Vec<Op>)> = vec![
        (
            "sequential writes, compare-and-swaps, a delete and reads",
            vec![
                write("a", None, Written(1), (0, 1)),
                read(Some(("a", 1)), (2, 3)),
                write("b", Some(1), Written(2), (4, 5)),
                write("x", Some(1), CasFailed { current: 2 }, (6, 7)),
                delete(Some(2), Written(4), (8, 9)),
                read(None, (10, 11)),
                write("c", Some(0), Written(6), (12, 13)),
                delete(Some(0), CasFailed { current: 6 }, (14, 15)),
            ],
        ),
        (
            "reads overlapping a write see the value before or after it",
            vec![
                write("a", None, Written(2), (0, 10)),
                read(None, (1, 3)),
                read(Some(("a", 2)), (2, 4)),
                read(Some(("a", 2)), (5, 12)),
                read(Some(("a", 2)), (11, 12)),
            ],
        ),
        (
            "two overlapping writes take effect in index order",
            vec![
                write("a", None, Written(3), (0, 10)),
                write("b", None, Written(4), (1, 9)),
                read(Some(("b", 4)), (11, 12)),
            ],
        ),
        (
            "a write with no answer that took effect, seen later with its version",
            vec![
                write("a", None, Written(1), (0, 1)),
                write("x", None, Unknown, (2, 0)),
                read(Some(("a", 1)), (3, 4)),
                read(Some(("x", 7)), (5, 6)),
                write("y", Some(7), Written(9), (7, 8)),
            ],
        ),
        (
            "a write and a delete with no answer that never took effect",
            vec![
                write("a", None, Written(1), (0, 1)),
                write("x", None, Unknown, (2, 0)),
                delete(None, Unknown, (2, 0)),
                read(Some(("a", 1)), (3, 4)),
                read(Some(("a", 1)), (30, 40)),
            ],
        ),
    ];
    let not_linearizable: Vec<(&str, Vec<Op>)> = vec![
        (
            "a stale read after a completed write",
            vec![
                write("a", None, Written(1), (0, 1)),
                write("b", None, Written(2), (2, 3)),
                read(Some(("a", 1)), (4, 5)),
            ],
        ),
        (
            "a lost acknowledged write",
            vec![write("a", None, Written(1), (0, 1)), read(None, (2, 3))],
        ),
        (
            "a compare-and-swap that succeeded against a version that was never current",
            vec![
                write("a", None, Written(1), (0, 1)),
                write("b", Some(7), Written(2), (2, 3)),
            ],
        ),
        (
            "two compare-and-swaps that succeeded from the same version",
            vec![
                write("a", None, Written(1), (0, 1)),
                write("b", Some(1), Written(2), (2, 3)),
                write("c", Some(1), Written(3), (4, 5)),
            ],
        ),
        (
            "two writes acknowledged at the same version",
            vec![
                write("a", None, Written(5), (0, 1)),
                write("b", None, Written(5), (2, 3)),
            ],
        ),
        (
            "a failed compare-and-swap that names a version that was not current",
            vec![
                write("a", None, Written(1), (0, 1)),
                write("b", Some(0), CasFailed { current: 3 }, (2, 3)),
            ],
        ),
        (
            "a read of a value never written",
            vec![read(Some(("z", 4)), (0, 1))],
        ),
        (
            "overlapping writes read back against their index order",
            vec![
                write("a", None, Written(3), (0, 10)),
                write("b", None, Written(4), (1, 9)),
                read(Some(("a", 3)), (11, 12)),
            ],
        ),
        (
            "a write with no answer cannot bring back an overwritten value",
            vec![
                write("a", None, Written(1), (0, 1)),
                write("x", None, Unknown, (2, 0)),
                read(Some(("x", 3)), (5, 6)),
                read(Some(("a", 1)), (7, 8)),
            ],
        ),
        (
            "an unconditional write told its compare-and-swap failed",
            vec![write("a", None, CasFailed { current: 0 }, (0, 1))],
        ),
    ];
    for (name, ops) in &linearizable {
        check(ops).map_err(|e| format!("{name}: rejected: {e}"))?;
    }
    for (name, ops) in &not_linearizable {
        if check(ops).is_ok() {
            return Err(format!("{name}: accepted"));
        }
    }
    // Across keys: an operation acknowledged before another began has the lower index.
    let mut other = write("b", None, Written(4), (2, 3));
    other.key = "other".into();
    let across = vec![write("a", None, Written(9), (0, 1)), other];
    if check(&across).is_ok() {
        return Err("indexes against real time across keys: accepted".into());
    }
    let mut twice = write("b", None, Written(9), (2, 3));
    twice.key = "other".into();
    if check(&[write("a", None, Written(9), (0, 1)), twice]).is_ok() {
        return Err("one index acknowledged on two keys: accepted".into());
    }
    Ok(())
}
