//! Checks a [`History`] against the invariants of docs/guarantees.md, and the job table's
//! linearizability with a Wing & Gong search (Lowe's memoized variant).
//!
//! What is checked (issue 7):
//! 1. **Lost job** (§7.1): a job that was acknowledged (an `ok` submit) or seen by any read is
//!    in every later listing: every linearizable listing begun after that, and every listing
//!    (stale ones too) taken at an applied index at or above one that already had it.
//! 2. **Status order** (§7.2): per job, statuses only move forward (Pending → Running ⇄
//!    Suspended → terminal), both in applied-index order and, for linearizable reads, in real
//!    time; a terminal status and an exit code never change once seen.
//! 3. **Identical listings** (§7.3): listings at the same applied index are identical (jobs,
//!    order, statuses, exit codes, and the canonical bytes' digest when recorded).
//! 4. **At-most-once launch** (§7.4): no job has two launch records.
//! 5. **Idempotency** (§7.5): one Idempotency-Key (per user) never maps to two job ids.
//! 6. **Reads never go back**: a read never answers below its `min-index` floor, and a
//!    linearizable read never reflects an index below one already returned to anybody before
//!    it began (which covers a client's successive reads).
//! 7. **Linearizability** of submit/get/list against a set-of-jobs model (see [`JobSet`]),
//!    checked one job at a time (P-compositionality), so its cost depends on the concurrency
//!    around each job, not on the length of the history; each job's search is bounded by a
//!    [`Budget`] and reports [`Linearizability::Unknown`] beyond it.
//!
//! Every violation is a [`Violation`] that prints the invariant, the job and the excerpt of
//! the history it concerns.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::hash::Hash;

use ustr::Ustr;

use crate::history::{Call, Event, EventType, History, JobView, Launch, Note, Operation, Outcome};

/// The invariant a violation breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Invariant {
    /// §7.1: an acknowledged (or once seen) job is missing from a listing that must show it.
    LostJob,
    /// §7.2: a job's status moved backwards.
    StatusRegressed,
    /// §7.2: a terminal status or an exit code changed.
    TerminalChanged,
    /// §7.3: two listings at one applied index differ.
    ListingsDiffer,
    /// §7.4: a job was launched more than once.
    DuplicateLaunch,
    /// §7.5: one Idempotency-Key maps to two jobs.
    IdempotencyKey,
    /// A read answered below its `min-index` floor.
    BelowMinIndex,
    /// A linearizable read reflected an index older than one returned before it began.
    IndexWentBack,
    /// The job-table operations have no linearization.
    NotLinearizable,
}

impl Invariant {
    /// What the invariant says, with its DESIGN reference.
    pub fn describe(self) -> &'static str {
        match self {
            Invariant::LostJob => "§7.1 no acknowledged job is ever lost",
            Invariant::StatusRegressed => "§7.2 a job's status only moves forward",
            Invariant::TerminalChanged => "§7.2 terminal status and exit code never change",
            Invariant::ListingsDiffer => "§7.3 listings at the same applied index are identical",
            Invariant::DuplicateLaunch => "§7.4 a job is launched at most once",
            Invariant::IdempotencyKey => "§7.5 an Idempotency-Key never maps to two jobs",
            Invariant::BelowMinIndex => "reads never answer below X-Launcher-Min-Index",
            Invariant::IndexWentBack => "linearizable reads never go back in time",
            Invariant::NotLinearizable => "submit/get/list are linearizable",
        }
    }
}

/// One broken invariant, with the part of the history that shows it.
#[derive(Debug, Clone)]
pub struct Violation {
    pub invariant: Invariant,
    /// The job concerned, if one is.
    pub job: Option<String>,
    /// What happened.
    pub message: String,
    /// The events involved (listings cut down to the jobs concerned), in history order.
    pub excerpt: Vec<Event>,
    /// Launch records involved.
    pub launches: Vec<Launch>,
    /// Notes (faults injected) recorded while the excerpt's events happened.
    pub notes: Vec<Note>,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "VIOLATION of {:?} ({})",
            self.invariant,
            self.invariant.describe()
        )?;
        if let Some(job) = &self.job {
            write!(f, " for job {job}")?;
        }
        writeln!(f, ": {}", self.message)?;
        writeln!(f, "  history excerpt:")?;
        let mut notes = self.notes.iter().peekable();
        for e in &self.excerpt {
            while let Some(n) = notes.next_if(|n| n.seq < e.seq) {
                writeln!(f, "    note at t={}us: {}", n.time_us, n.text)?;
            }
            writeln!(
                f,
                "    {}",
                serde_json::to_string(e).unwrap_or_else(|_| format!("{e:?}"))
            )?;
        }
        for l in &self.launches {
            writeln!(
                f,
                "    launch: {}",
                serde_json::to_string(l).unwrap_or_else(|_| format!("{l:?}"))
            )?;
        }
        Ok(())
    }
}

/// Bounds of the linearizability search.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    /// Larger histories (after pruning) are not searched at all.
    pub max_ops: usize,
    /// Search steps (one per entry visited) before giving up.
    pub max_steps: u64,
    /// Memoized (linearized set, state) pairs before giving up.
    pub max_memo: usize,
}

impl Default for Budget {
    fn default() -> Self {
        Budget {
            max_ops: 20_000,
            max_steps: 5_000_000,
            max_memo: 500_000,
        }
    }
}

/// The verdict of the linearizability search.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Linearizability {
    /// A linearization exists.
    Linearizable { ops: usize, steps: u64 },
    /// None exists (a [`Invariant::NotLinearizable`] violation says more).
    NotLinearizable { ops: usize, steps: u64 },
    /// The search exceeded its budget: no verdict.
    Unknown { ops: usize, steps: u64, reason: String },
}

/// Counts of what a history holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub operations: usize,
    pub ok: usize,
    pub fail: usize,
    pub info: usize,
    pub acknowledged_submits: usize,
    pub listings: usize,
    pub jobs_seen: usize,
    pub launches: usize,
}

/// The result of checking a history.
#[derive(Debug, Clone)]
pub struct Report {
    pub violations: Vec<Violation>,
    /// Violations found beyond the cap kept per invariant.
    pub suppressed: usize,
    pub linearizability: Linearizability,
    pub stats: Stats,
}

impl Report {
    /// No invariant is broken (an `Unknown` linearizability verdict is not a violation).
    pub fn is_valid(&self) -> bool {
        self.violations.is_empty()
    }
    /// The violations of `invariant`.
    pub fn of(&self, invariant: Invariant) -> Vec<&Violation> {
        self.violations
            .iter()
            .filter(|v| v.invariant == invariant)
            .collect()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.stats;
        writeln!(
            f,
            "{} operations ({} ok, {} fail, {} info), {} acknowledged submits, {} listings, {} jobs seen, {} launches; linearizability: {:?}; {} violations{}",
            s.operations,
            s.ok,
            s.fail,
            s.info,
            s.acknowledged_submits,
            s.listings,
            s.jobs_seen,
            s.launches,
            self.linearizability,
            self.violations.len(),
            if self.suppressed > 0 {
                format!(" (and {} more not shown)", self.suppressed)
            } else {
                String::new()
            }
        )?;
        for v in &self.violations {
            write!(f, "{v}")?;
        }
        Ok(())
    }
}

/// Violations kept per invariant; the rest are counted.
const MAX_PER_INVARIANT: usize = 10;

/// Checks `history` with the default budget.
pub fn check(history: &History) -> Report {
    check_with(history, Budget::default())
}

/// Checks `history`, bounding the linearizability search by `budget`.
pub fn check_with(history: &History, budget: Budget) -> Report {
    let ops = history.operations();
    let cx = Cx::new(history, &ops);
    let mut found = Vec::new();
    cx.lost_jobs(&mut found);
    cx.status_order(&mut found);
    cx.identical_listings(&mut found);
    cx.launches(&mut found);
    cx.idempotency(&mut found);
    cx.read_indexes(&mut found);
    let linearizability = cx.linearizability(budget, &mut found);

    let mut kept: Vec<Violation> = Vec::new();
    let mut per: HashMap<Invariant, usize> = HashMap::new();
    let mut suppressed = 0;
    for v in found {
        let n = per.entry(v.invariant).or_default();
        *n += 1;
        if *n > MAX_PER_INVARIANT {
            suppressed += 1;
        } else {
            kept.push(v);
        }
    }
    Report {
        violations: kept,
        suppressed,
        linearizability,
        stats: cx.stats(),
    }
}

/// A job's status as one read saw it.
///
/// Kept small (48 bytes): a long run has one per job per listing, tens of millions. The times of
/// the read are its operation's ([`Cx::ops`]).
#[derive(Debug, Clone, Copy)]
struct Obs {
    /// The read, as an index into [`Cx::ops`].
    op: u32,
    linearizable: bool,
    status: Ustr,
    exit_code: Option<i64>,
    index: Option<u64>,
}

/// Where a status stands in the forward order.
fn rank(status: &str) -> Option<u8> {
    match status {
        "Pending" => Some(0),
        "Running" | "Suspended" => Some(1),
        "Finished" | "Failed" | "Killed" | "Canceled" => Some(2),
        _ => None,
    }
}

/// The history prepared for the checks.
struct Cx<'h> {
    history: &'h History,
    ops: &'h [Operation<'h>],
    /// Per job id, its status observations: every one made by a get or a status read, and of a
    /// run of listings that showed it alike, the few that stand for the run (see [`Run`]).
    obs: BTreeMap<&'h str, Vec<Obs>>,
    /// `ok` listings: (op, index, jobs).
    listings: Vec<(usize, u64, &'h [JobView])>,
    /// Per listing (in the order of `listings`), the jobs it shows, by their number in `number`.
    shown: Vec<Bits>,
    /// The number of each job id that a listing shows.
    number: HashMap<&'h str, u32>,
}

/// Consecutive listings that showed one job alike (same status and exit code, read the same
/// way). Of such a run, four observations decide every check the others could: the status
/// checks compare ranks, which are equal within the run, so only the extremes of applied index
/// and of time matter (the lowest and highest index, the earliest end and the latest start). A
/// long run lists every job hundreds of times alike, so this keeps the checker's memory to the
/// size of the history.
struct Run {
    key: (Ustr, Option<i64>),
    lowest: Obs,
    highest: Obs,
    first_end: (u64, Obs),
    last_start: (u64, Obs),
}

impl Run {
    fn new(o: Obs, invoked: u64, completed: u64) -> Run {
        Run {
            key: (o.status, o.exit_code),
            lowest: o,
            highest: o,
            first_end: (completed, o),
            last_start: (invoked, o),
        }
    }

    /// Adds `o` when it is alike; gives it back otherwise.
    fn add(&mut self, o: Obs, invoked: u64, completed: u64) -> Result<(), Obs> {
        if self.key != (o.status, o.exit_code) {
            return Err(o);
        }
        if o.index < self.lowest.index {
            self.lowest = o;
        }
        if o.index > self.highest.index {
            self.highest = o;
        }
        if completed < self.first_end.0 {
            self.first_end = (completed, o);
        }
        if invoked > self.last_start.0 {
            self.last_start = (invoked, o);
        }
        Ok(())
    }

    /// The observations that stand for the run, each once, in operation order.
    fn into_obs(self) -> impl Iterator<Item = Obs> {
        let mut kept = [self.lowest, self.highest, self.first_end.1, self.last_start.1];
        kept.sort_by_key(|o| o.op);
        let mut last = None;
        kept.into_iter().filter(move |o| {
            let new = last != Some(o.op);
            last = Some(o.op);
            new
        })
    }
}

impl<'h> Cx<'h> {
    fn new(history: &'h History, ops: &'h [Operation<'h>]) -> Self {
        let mut obs: BTreeMap<&str, Vec<Obs>> = BTreeMap::new();
        // The open run of each job's listing observations, per kind of read.
        let mut runs: HashMap<(&str, bool), Run> = HashMap::new();
        let mut listings = Vec::new();
        let mut number: HashMap<&str, u32> = HashMap::new();
        for (i, op) in ops.iter().enumerate() {
            let (Some(outcome), Some(completed)) = (op.ok(), op.completed_at()) else {
                continue;
            };
            let linearizable = op.call.read().is_some_and(|r| r.is_linearizable());
            let at = |status: Ustr, exit_code: Option<i64>, index: Option<u64>| Obs {
                op: u32::try_from(i).expect("fewer than 2^32 operations"),
                linearizable,
                status,
                exit_code,
                index,
            };
            match (op.call, outcome) {
                (Call::Get { .. }, Outcome::Got { job: Some(j), index }) => {
                    obs.entry(j.id.as_str())
                        .or_default()
                        .push(at(j.status, j.exit_code, *index));
                }
                (Call::List { .. }, Outcome::Listed { index, jobs, .. }) => {
                    let invoked = op.invoked_at();
                    for j in jobs {
                        let id = j.id.as_str();
                        let next = number.len() as u32;
                        number.entry(id).or_insert(next);
                        let o = at(j.status, j.exit_code, Some(*index));
                        match runs.entry((id, linearizable)) {
                            std::collections::hash_map::Entry::Vacant(v) => {
                                v.insert(Run::new(o, invoked, completed));
                            }
                            std::collections::hash_map::Entry::Occupied(mut run) => {
                                if let Err(o) = run.get_mut().add(o, invoked, completed) {
                                    let done =
                                        std::mem::replace(run.get_mut(), Run::new(o, invoked, completed));
                                    obs.entry(id).or_default().extend(done.into_obs());
                                }
                            }
                        }
                    }
                    listings.push((i, *index, jobs.as_slice()));
                }
                (Call::StatusRead { id, .. }, Outcome::Status { status, index }) => {
                    obs.entry(id)
                        .or_default()
                        .push(at(Ustr::from(status), None, Some(*index)));
                }
                _ => {}
            }
        }
        for ((id, _), run) in runs {
            obs.entry(id).or_default().extend(run.into_obs());
        }
        for o in obs.values_mut() {
            o.sort_by_key(|o| o.op);
            o.shrink_to_fit();
        }
        let shown = listings
            .iter()
            .map(|(_, _, jobs)| {
                let mut b = Bits::new(number.len());
                for j in *jobs {
                    b.set(number[j.id.as_str()]);
                }
                b
            })
            .collect();
        Cx {
            history,
            ops,
            obs,
            listings,
            shown,
            number,
        }
    }

    fn stats(&self) -> Stats {
        let mut s = Stats {
            operations: self.ops.len(),
            listings: self.listings.len(),
            launches: self.history.launches.len(),
            ..Default::default()
        };
        let mut seen: HashSet<&str> = self.obs.keys().copied().collect();
        for op in self.ops {
            match op.kind() {
                EventType::Ok => s.ok += 1,
                EventType::Fail => s.fail += 1,
                EventType::Info | EventType::Invoke => s.info += 1,
            }
            if let (Call::Submit { .. }, Some(Outcome::Submitted { id, .. })) = (op.call, op.ok()) {
                s.acknowledged_submits += 1;
                seen.insert(id);
            }
        }
        s.jobs_seen = seen.len();
        s
    }

    /// The events of `ops`, listings cut down to `jobs`, in history order.
    fn excerpt(&self, ops: &[usize], jobs: Option<&[&str]>) -> Vec<Event> {
        let mut events: Vec<Event> = ops
            .iter()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .flat_map(|&i| self.ops[i].events())
            .map(|e| e.focused(jobs))
            .collect();
        events.sort_by_key(|e| e.seq);
        events
    }

    fn violation(
        &self,
        invariant: Invariant,
        job: Option<&str>,
        message: String,
        ops: &[usize],
    ) -> Violation {
        let jobs = job.map(|j| [j]);
        let excerpt = self.excerpt(ops, jobs.as_ref().map(|j| &j[..]));
        let notes = match (excerpt.first(), excerpt.last()) {
            (Some(first), Some(last)) => self
                .history
                .notes
                .iter()
                .filter(|n| (first.seq..=last.seq).contains(&n.seq))
                .cloned()
                .collect(),
            _ => Vec::new(),
        };
        Violation {
            invariant,
            job: job.map(str::to_string),
            message,
            excerpt,
            launches: Vec::new(),
            notes,
        }
    }

    /// (1) Every acknowledged or seen job is in every listing that must reflect it.
    fn lost_jobs(&self, out: &mut Vec<Violation>) {
        // Per job: earliest evidence in time (completion of an ok op showing it) and the lowest
        // index known to include it (its submit's log index, or a listing that had it).
        struct Evidence {
            time: u64,
            time_op: usize,
            index: Option<(u64, usize)>,
        }
        let mut ev: BTreeMap<&str, Evidence> = BTreeMap::new();
        let mut note = |id: &'h str, time: u64, op: usize, index: Option<u64>| {
            let e = ev.entry(id).or_insert(Evidence {
                time,
                time_op: op,
                index: None,
            });
            if time < e.time {
                e.time = time;
                e.time_op = op;
            }
            if let Some(i) = index {
                if e.index.is_none_or(|(j, _)| i < j) {
                    e.index = Some((i, op));
                }
            }
        };
        for (i, op) in self.ops.iter().enumerate() {
            let (Some(outcome), Some(t)) = (op.ok(), op.completed_at()) else {
                continue;
            };
            match (op.call, outcome) {
                (Call::Submit { .. }, Outcome::Submitted { id, index, .. }) => note(id, t, i, Some(*index)),
                (Call::Get { .. }, Outcome::Got { job: Some(j), .. }) => note(&j.id, t, i, None),
                (Call::StatusRead { id, .. }, Outcome::Status { .. }) => note(id, t, i, None),
                (Call::List { .. }, Outcome::Listed { index, jobs, .. }) => {
                    for j in jobs {
                        note(&j.id, t, i, Some(*index));
                    }
                }
                _ => {}
            }
        }
        for (id, e) in &ev {
            let number = self.number.get(id).copied();
            let mut missing = Vec::new();
            for (&(l, index, _), shown) in self.listings.iter().zip(&self.shown) {
                let op = &self.ops[l];
                let linearizable = op.call.read().is_some_and(|r| r.is_linearizable());
                let by_time = linearizable && op.invoked_at() > e.time;
                let by_index = e.index.is_some_and(|(i, _)| index >= i);
                if (by_time || by_index) && !number.is_some_and(|n| shown.get(n)) {
                    missing.push((l, by_time, index));
                }
            }
            let Some(&(l, by_time, index)) = missing.first() else {
                continue;
            };
            let why = if by_time {
                format!(
                    "known since t={}us (op {}), but a linearizable listing begun at t={}us (index {index}) lacks it",
                    e.time,
                    self.ops[e.time_op].op,
                    self.ops[l].invoked_at()
                )
            } else {
                let (i, _) = e.index.expect("by index");
                format!("present at index {i}, but a listing at index {index} lacks it")
            };
            let mut involved = vec![e.time_op, l];
            if let Some((_, op)) = e.index {
                involved.push(op);
            }
            out.push(self.violation(
                Invariant::LostJob,
                Some(id),
                format!("{why} ({} listings lack it in all)", missing.len()),
                &involved,
            ));
        }
    }

    /// (2) Statuses move forward; terminal status and exit code never change.
    fn status_order(&self, out: &mut Vec<Violation>) {
        for (id, obs) in &self.obs {
            // Terminal status and exit code: every observation agrees with the first.
            let first_terminal = obs.iter().find(|o| rank(&o.status) == Some(2));
            let first_exit = obs.iter().find(|o| o.exit_code.is_some());
            let changed_terminal = first_terminal.and_then(|t| {
                obs.iter()
                    .find(|o| rank(&o.status) == Some(2) && o.status != t.status)
                    .map(|o| (t, o))
            });
            let changed_exit = first_exit.and_then(|t| {
                obs.iter()
                    .find(|o| o.exit_code.is_some() && o.exit_code != t.exit_code)
                    .map(|o| (t, o))
            });
            if let Some((a, b)) = changed_terminal.or(changed_exit) {
                out.push(self.violation(
                    Invariant::TerminalChanged,
                    Some(id),
                    format!(
                        "seen {} (exit code {:?}) and {} (exit code {:?})",
                        a.status, a.exit_code, b.status, b.exit_code
                    ),
                    &[a.op as usize, b.op as usize],
                ));
                continue;
            }
            if let Some((a, b, how)) = regression(obs, self.ops) {
                out.push(self.violation(
                    Invariant::StatusRegressed,
                    Some(id),
                    format!(
                        "{} (index {:?}) then {} (index {:?}) {how}",
                        a.status, a.index, b.status, b.index
                    ),
                    &[a.op as usize, b.op as usize],
                ));
            }
        }
    }

    /// (3) Listings at one applied index are identical.
    fn identical_listings(&self, out: &mut Vec<Violation>) {
        let mut by_index: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
        for &(op, index, _) in &self.listings {
            by_index.entry(index).or_default().push(op);
        }
        for (index, group) in by_index {
            let first = group[0];
            let Some(Outcome::Listed {
                jobs: a,
                digest: da,
                node: na,
                ..
            }) = self.ops[first].ok()
            else {
                continue;
            };
            for &other in &group[1..] {
                let Some(Outcome::Listed {
                    jobs: b,
                    digest: db,
                    node: nb,
                    ..
                }) = self.ops[other].ok()
                else {
                    continue;
                };
                let digests_differ = matches!((da, db), (Some(x), Some(y)) if x != y);
                if a == b && !digests_differ {
                    continue;
                }
                let ids_a: BTreeSet<&str> = a.iter().map(|j| j.id.as_str()).collect();
                let ids_b: BTreeSet<&str> = b.iter().map(|j| j.id.as_str()).collect();
                let mut differ: Vec<&str> = ids_a.symmetric_difference(&ids_b).copied().collect();
                for j in a {
                    if b.iter().any(|k| k.id == j.id && k != j) {
                        differ.push(&j.id);
                    }
                }
                let what = if differ.is_empty() && a != b {
                    "the same jobs in another order".to_string()
                } else if differ.is_empty() {
                    "the same jobs with different canonical bytes".to_string()
                } else {
                    format!("jobs {differ:?} differ")
                };
                let mut v = self.violation(
                    Invariant::ListingsDiffer,
                    differ.first().copied(),
                    format!("listings at index {index} from node {na:?} and node {nb:?}: {what}"),
                    &[first, other],
                );
                if !differ.is_empty() {
                    v.excerpt = self.excerpt(&[first, other], Some(&differ));
                }
                out.push(v);
                break;
            }
        }
    }

    /// (4) At most one launch per job.
    fn launches(&self, out: &mut Vec<Violation>) {
        let mut by_job: BTreeMap<&str, Vec<&Launch>> = BTreeMap::new();
        for l in &self.history.launches {
            by_job.entry(&l.job_id).or_default().push(l);
        }
        for (job, runs) in by_job {
            if runs.len() < 2 {
                continue;
            }
            let ops: Vec<usize> = self
                .ops
                .iter()
                .enumerate()
                .filter(|(_, op)| matches!(op.ok(), Some(Outcome::Submitted { id, .. }) if id == job))
                .map(|(i, _)| i)
                .collect();
            let mut v = self.violation(
                Invariant::DuplicateLaunch,
                Some(job),
                format!(
                    "launched {} times (plugin ids {:?})",
                    runs.len(),
                    runs.iter().map(|l| l.plugin_job_id.as_str()).collect::<Vec<_>>()
                ),
                &ops,
            );
            v.launches = runs.into_iter().cloned().collect();
            out.push(v);
        }
    }

    /// (5) One Idempotency-Key, one job.
    fn idempotency(&self, out: &mut Vec<Violation>) {
        let mut by_key: BTreeMap<(&str, &str), BTreeMap<&str, usize>> = BTreeMap::new();
        for (i, op) in self.ops.iter().enumerate() {
            if let (
                Call::Submit {
                    user, key: Some(key), ..
                },
                Some(Outcome::Submitted { id, .. }),
            ) = (op.call, op.ok())
            {
                by_key.entry((user, key)).or_default().entry(id).or_insert(i);
            }
        }
        for ((user, key), ids) in by_key {
            if ids.len() < 2 {
                continue;
            }
            let jobs: Vec<&str> = ids.keys().copied().collect();
            let ops: Vec<usize> = ids.values().copied().collect();
            let mut v = self.violation(
                Invariant::IdempotencyKey,
                Some(jobs[0]),
                format!("user {user}'s Idempotency-Key {key:?} answered with jobs {jobs:?}"),
                &ops,
            );
            v.excerpt = self.excerpt(&ops, Some(&jobs));
            out.push(v);
        }
    }

    /// (6) Floors are honoured; linearizable reads never reflect an older index than one
    /// already returned before they began.
    fn read_indexes(&self, out: &mut Vec<Violation>) {
        // Completed ok operations with an index, by completion time.
        let mut told: Vec<(u64, u64, usize)> = Vec::new();
        for (i, op) in self.ops.iter().enumerate() {
            let (Some(outcome), Some(t)) = (op.ok(), op.completed_at()) else {
                continue;
            };
            let Some(index) = outcome.index() else { continue };
            told.push((t, index, i));
            if let Some(read) = op.call.read() {
                if read.min_index > 0 && index < read.min_index {
                    out.push(self.violation(
                        Invariant::BelowMinIndex,
                        None,
                        format!("asked for index at least {}, answered at {index}", read.min_index),
                        &[i],
                    ));
                }
            }
        }
        told.sort();
        let mut reads: Vec<(u64, u64, usize)> = self
            .ops
            .iter()
            .enumerate()
            .filter(|(_, op)| op.call.read().is_some_and(|r| r.is_linearizable()))
            .filter_map(|(i, op)| Some((op.invoked_at(), op.ok()?.index()?, i)))
            .collect();
        reads.sort();
        let mut best: Option<(u64, usize)> = None;
        let mut k = 0;
        for (invoked, index, i) in reads {
            while k < told.len() && told[k].0 < invoked {
                if best.is_none_or(|(b, _)| told[k].1 > b) {
                    best = Some((told[k].1, told[k].2));
                }
                k += 1;
            }
            if let Some((b, by)) = best {
                if index < b {
                    let same = self.ops[by].process == self.ops[i].process;
                    out.push(self.violation(
                        Invariant::IndexWentBack,
                        None,
                        format!(
                            "a linearizable read answered at index {index}, but index {b} had been returned before it began (to {} process)",
                            if same { "the same" } else { "another" }
                        ),
                        &[by, i],
                    ));
                }
            }
        }
    }

    /// (7) Submit/get/list against the set-of-jobs model, one job at a time.
    ///
    /// Every operation touches the set through single jobs: a submit adds one (or, outcome
    /// unknown, maybe one of its candidates), a get reads one, and a listing reads each job's
    /// presence. A set is P-compositional (Horn & Kroening): the history is linearizable when
    /// the history of each job is, with a listing projected onto each job as a read of that
    /// job's presence. So the search runs once per job, over that job's submits and gets and
    /// the listings that could have seen it change, and its cost grows with the concurrency
    /// around one job rather than with the length of the run: a long chaos run gets a verdict.
    /// What a projection loses (one listing's atomicity across jobs) is checked by (1), (3) and
    /// (6) through applied indexes.
    fn linearizability(&self, budget: Budget, out: &mut Vec<Violation>) -> Linearizability {
        let (universe, lin_ops, tags) = self.job_set_ops();
        let n = lin_ops.len();
        let mut steps = 0u64;
        let mut unknown: Option<String> = None;
        let mut violated = false;
        for group in job_groups(universe.len(), &lin_ops) {
            let (sub, sub_tags) = project(&lin_ops, &group);
            let model = JobSet {
                universe: group.len(),
            };
            let names: Vec<&str> = group.iter().map(|&g| universe[g as usize]).collect();
            let name = names[0];
            match search(&model, &sub, budget) {
                Search::Linearizable { steps: s } => steps += s,
                Search::Unknown { steps: s, reason } => {
                    steps += s;
                    unknown.get_or_insert_with(|| format!("jobs {names:?}: {reason}"));
                }
                Search::NotLinearizable {
                    steps: s,
                    prefix,
                    stuck,
                    state,
                } => {
                    steps += s;
                    violated = true;
                    let mut chosen: Vec<usize> = stuck.iter().map(|&k| tags[sub_tags[k]]).collect();
                    chosen.extend(
                        prefix
                            .iter()
                            .rev()
                            .filter(|&&k| !matches!(sub[k].op, JobOp::List { .. }))
                            .take(8)
                            .map(|&k| tags[sub_tags[k]]),
                    );
                    let present: Vec<&str> = (0..group.len() as u32)
                        .filter(|&i| state.present.get(i))
                        .map(|i| names[i as usize])
                        .collect();
                    let mut v = self.violation(
                        Invariant::NotLinearizable,
                        Some(name),
                        format!(
                            "no linearization of the operations on jobs {names:?}: after the longest linearizable prefix ({} of {}), none of the {} pending operations fits (the model holds {present:?})",
                            prefix.len(),
                            sub.len(),
                            stuck.len()
                        ),
                        &chosen,
                    );
                    v.excerpt = self.excerpt(&chosen, Some(&names));
                    out.push(v);
                }
            }
        }
        if violated {
            Linearizability::NotLinearizable { ops: n, steps }
        } else if let Some(reason) = unknown {
            Linearizability::Unknown {
                ops: n,
                steps,
                reason,
            }
        } else {
            Linearizability::Linearizable { ops: n, steps }
        }
    }

    /// The model operations of the history: the job ids (universe), the operations, and for
    /// each the index of its history operation.
    fn job_set_ops(&self) -> (Vec<&'h str>, Vec<LinOp<JobOp>>, Vec<usize>) {
        let mut universe: Vec<&str> = Vec::new();
        let mut index: HashMap<&str, u32> = HashMap::new();
        let mut intern = |id: &'h str, universe: &mut Vec<&'h str>| -> u32 {
            *index.entry(id).or_insert_with(|| {
                universe.push(id);
                universe.len() as u32 - 1
            })
        };
        let mut keys: HashMap<(&str, &str), u32> = HashMap::new();
        // Names of jobs as reads saw them, and who claimed which id.
        let mut by_name: HashMap<&str, BTreeSet<&str>> = HashMap::new();
        for obs_op in self.ops.iter().filter_map(|o| o.ok()) {
            let jobs: &[JobView] = match obs_op {
                Outcome::Listed { jobs, .. } => jobs,
                Outcome::Got { job: Some(j), .. } => std::slice::from_ref(j),
                _ => &[],
            };
            for j in jobs {
                if let Some(name) = &j.name {
                    by_name.entry(name).or_default().insert(&j.id);
                }
            }
        }
        let mut claimed: HashMap<&str, Vec<Option<(&str, &str)>>> = HashMap::new();
        for op in self.ops {
            if let (Call::Submit { user, key, .. }, Some(Outcome::Submitted { id, .. })) = (op.call, op.ok())
            {
                claimed
                    .entry(id)
                    .or_default()
                    .push(key.as_deref().map(|k| (user.as_str(), k)));
            }
        }

        let mut lin: Vec<LinOp<JobOp>> = Vec::new();
        let mut tags: Vec<usize> = Vec::new();
        let mut candidates_of: Vec<(usize, Vec<&str>)> = Vec::new();
        for (i, op) in self.ops.iter().enumerate() {
            let call_t = op.invoked_at();
            let ret_t = op.completed_at();
            let read_ok = op.call.read().is_some_and(|r| r.is_linearizable()) && op.kind() == EventType::Ok;
            let lop = match (op.call, op.kind(), op.ok()) {
                (Call::Submit { user, key, .. }, EventType::Ok, Some(Outcome::Submitted { id, .. })) => {
                    let fresh = keys.len() as u32;
                    let key = key
                        .as_deref()
                        .map(|k| *keys.entry((user.as_str(), k)).or_insert(fresh));
                    JobOp::Submit {
                        key,
                        ids: vec![intern(id, &mut universe)],
                    }
                }
                (Call::Submit { name, user, key }, EventType::Info, _) => {
                    let scope = key.as_deref().map(|k| (user.as_str(), k));
                    // Jobs by this name that no other submit accounts for: what it may have created.
                    let cands: Vec<&str> = by_name
                        .get(name.as_str())
                        .map(|ids| {
                            ids.iter()
                                .copied()
                                .filter(|id| {
                                    claimed
                                        .get(id)
                                        .is_none_or(|c| scope.is_some() && c.iter().all(|s| *s == scope))
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    if cands.is_empty() {
                        // Never seen: as if it took effect after everything else, or never.
                        continue;
                    }
                    let fresh = keys.len() as u32;
                    let key = scope.map(|s| *keys.entry(s).or_insert(fresh));
                    candidates_of.push((lin.len(), cands.clone()));
                    JobOp::Submit {
                        key,
                        ids: cands.into_iter().map(|c| intern(c, &mut universe)).collect(),
                    }
                }
                (Call::Get { id, .. }, _, Some(Outcome::Got { job, .. })) if read_ok => JobOp::Get {
                    id: intern(id, &mut universe),
                    found: job.is_some(),
                },
                (Call::StatusRead { id, .. }, _, Some(Outcome::Status { .. })) if read_ok => JobOp::Get {
                    id: intern(id, &mut universe),
                    found: true,
                },
                // A status read's not-found answer (code 3).
                (Call::StatusRead { id, .. }, _, Some(Outcome::Error { code: Some(3), .. })) if read_ok => {
                    JobOp::Get {
                        id: intern(id, &mut universe),
                        found: false,
                    }
                }
                (Call::List { .. }, _, Some(Outcome::Listed { jobs, .. })) if read_ok => {
                    let ids: Vec<u32> = jobs.iter().map(|j| intern(&j.id, &mut universe)).collect();
                    JobOp::List {
                        ids: Bits::from_iter(ids),
                    }
                }
                _ => continue,
            };
            lin.push(LinOp {
                op: lop,
                call: call_t,
                ret: if op.kind() == EventType::Info { None } else { ret_t },
            });
            tags.push(i);
        }
        // Sets were built before the universe was complete: widen them all to its size.
        let size = universe.len();
        for l in &mut lin {
            if let JobOp::List { ids } = &mut l.op {
                ids.resize(size);
            }
        }
        // An unknown-outcome submit that is the only possible creator of the one job it may
        // have created must have taken effect before the first linearizable read showed it.
        let mut creators: HashMap<u32, usize> = HashMap::new();
        for l in &lin {
            if let JobOp::Submit { ids, .. } = &l.op {
                for &c in ids {
                    *creators.entry(c).or_default() += 1;
                }
            }
        }
        for (at, cands) in candidates_of {
            let [only] = cands[..] else { continue };
            let c = index[only];
            if creators.get(&c) != Some(&1) {
                continue;
            }
            let first_seen = lin
                .iter()
                .filter(|l| match &l.op {
                    JobOp::Get { id, found } => *found && *id == c,
                    JobOp::List { ids } => ids.get(c),
                    JobOp::Submit { .. } => false,
                })
                .filter_map(|l| l.ret)
                .min();
            if let Some(t) = first_seen {
                lin[at].ret = Some(t.max(lin[at].call));
            }
        }
        (universe, lin, tags)
    }
}

/// The jobs of `universe` (ids `0..universe`) in groups that no operation spans: the
/// candidates of one unknown-outcome submit, and the jobs created under one Idempotency-Key,
/// share a group (a submit creates one job, a key maps to one job); every other job is a group
/// of its own.
fn job_groups(universe: usize, ops: &[LinOp<JobOp>]) -> Vec<Vec<u32>> {
    fn root(parent: &mut [u32], mut i: u32) -> u32 {
        while parent[i as usize] != i {
            parent[i as usize] = parent[parent[i as usize] as usize];
            i = parent[i as usize];
        }
        i
    }
    let mut parent: Vec<u32> = (0..universe as u32).collect();
    let mut by_key: HashMap<u32, u32> = HashMap::new();
    for l in ops {
        let JobOp::Submit { key, ids } = &l.op else {
            continue;
        };
        let Some(&first) = ids.first() else { continue };
        let mut linked: Vec<u32> = ids[1..].to_vec();
        if let Some(k) = key {
            linked.push(*by_key.entry(*k).or_insert(first));
        }
        for other in linked {
            let (a, b) = (root(&mut parent, first), root(&mut parent, other));
            parent[a.max(b) as usize] = a.min(b);
        }
    }
    let mut groups: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    for j in 0..universe as u32 {
        let r = root(&mut parent, j);
        groups.entry(r).or_default().push(j);
    }
    groups.into_values().collect()
}

/// The operations of `ops` on the jobs `group`, as operations of a [`JobSet`] of those jobs
/// only (job `group[i]` is id `i`), with the index in `ops` of each. Listings that cannot tell
/// anything about the group are left out: one that shows none of its jobs and ended before any
/// submit that may create one began, and one that shows them all and began after every such
/// submit was acknowledged.
fn project(ops: &[LinOp<JobOp>], group: &[u32]) -> (Vec<LinOp<JobOp>>, Vec<usize>) {
    let local = |id: u32| group.iter().position(|&g| g == id).map(|p| p as u32);
    let creators = ops
        .iter()
        .filter(|l| matches!(&l.op, JobOp::Submit { ids, .. } if ids.iter().any(|i| local(*i).is_some())));
    let first_call = creators.clone().map(|l| l.call).min();
    // When every creator was acknowledged: the latest acknowledgement.
    let all_acked: Option<u64> = creators
        .map(|l| l.ret)
        .try_fold(0u64, |acc, r| r.map(|r| acc.max(r)));
    let mut sub = Vec::new();
    let mut at = Vec::new();
    for (k, l) in ops.iter().enumerate() {
        let op = match &l.op {
            JobOp::Submit { key, ids } => {
                let ids: Vec<u32> = ids.iter().filter_map(|&i| local(i)).collect();
                if ids.is_empty() {
                    continue;
                }
                JobOp::Submit { key: *key, ids }
            }
            JobOp::Get { id, found } => match local(*id) {
                Some(id) => JobOp::Get { id, found: *found },
                None => continue,
            },
            JobOp::List { ids } => {
                let mut shown = Bits::new(group.len());
                let mut count = 0;
                for (i, &g) in group.iter().enumerate() {
                    if ids.get(g) {
                        shown.set(i as u32);
                        count += 1;
                    }
                }
                let before = count == 0 && first_call.is_none_or(|c| l.ret.is_some_and(|r| r < c));
                let after =
                    count == group.len() && all_acked.is_some_and(|d| first_call.is_some() && l.call > d);
                if before || after {
                    continue;
                }
                JobOp::List { ids: shown }
            }
        };
        sub.push(LinOp {
            op,
            call: l.call,
            ret: l.ret,
        });
        at.push(k);
    }
    (sub, at)
}

/// A pair of observations of one job that shows a regression, and how they are ordered.
fn regression(obs: &[Obs], ops: &[Operation<'_>]) -> Option<(Obs, Obs, &'static str)> {
    // By applied index: nothing at a higher index may rank below something at a lower one.
    let mut by_index: Vec<Obs> = obs
        .iter()
        .filter(|o| o.index.is_some() && rank(&o.status).is_some())
        .copied()
        .collect();
    by_index.sort_by_key(|o| o.index);
    let mut best: Option<Obs> = None;
    let mut group_best: Option<Obs> = None;
    let mut group_index = None;
    for o in &by_index {
        if group_index != Some(o.index) {
            if let Some(g) = group_best.take() {
                if best.is_none_or(|b| rank(&g.status) > rank(&b.status)) {
                    best = Some(g);
                }
            }
            group_index = Some(o.index);
        }
        if let Some(b) = best {
            if rank(&o.status) < rank(&b.status) {
                return Some((b, *o, "at a higher applied index"));
            }
        }
        if group_best.is_none_or(|g| rank(&o.status) > rank(&g.status)) {
            group_best = Some(*o);
        }
    }
    // In real time, among linearizable reads: a read begun after another ended ranks no lower.
    let invoked = |o: &Obs| ops[o.op as usize].invoked_at();
    let completed = |o: &Obs| ops[o.op as usize].completed_at().unwrap_or(u64::MAX);
    let mut lin: Vec<Obs> = obs
        .iter()
        .filter(|o| o.linearizable && rank(&o.status).is_some())
        .copied()
        .collect();
    let mut ends = lin.clone();
    ends.sort_by_key(completed);
    lin.sort_by_key(invoked);
    let mut best: Option<Obs> = None;
    let mut k = 0;
    for o in &lin {
        while k < ends.len() && completed(&ends[k]) < invoked(o) {
            if best.is_none_or(|b| rank(&ends[k].status) > rank(&b.status)) {
                best = Some(ends[k]);
            }
            k += 1;
        }
        if let Some(b) = best {
            if rank(&o.status) < rank(&b.status) {
                return Some((b, *o, "in a linearizable read begun after the first ended"));
            }
        }
    }
    None
}

// ---------------------------------------------------------------------------------------------
// Linearizability: Wing & Gong's search with Lowe's memoization.

/// A sequential specification for the linearizability search.
pub trait Model {
    /// The model's state; memoized with the set of operations linearized so far.
    type State: Clone + Eq + Hash + fmt::Debug;
    /// An operation with its observed result; equal operations have equal effects.
    type Op: fmt::Debug + PartialEq;
    /// The initial state.
    fn init(&self) -> Self::State;
    /// Every state `op` (with its result) can lead to from `state`; empty when it cannot
    /// happen there. Several states model an operation whose effect the history leaves open.
    fn step(&self, state: &Self::State, op: &Self::Op) -> Vec<Self::State>;
    /// Whether `op` never changes the state, whatever the state (a read). The search
    /// linearizes such an operation as soon as it may come next and fits, without trying the
    /// orders that would put it later: they cannot succeed where this one fails.
    fn is_read(&self, _op: &Self::Op) -> bool {
        false
    }
}

/// An operation for the search: it took effect at some instant in `[call, ret]`; with
/// `ret = None` (unknown outcome) at some instant after `call`, or never.
#[derive(Debug, Clone)]
pub struct LinOp<O> {
    pub op: O,
    pub call: u64,
    pub ret: Option<u64>,
}

/// What the search found.
#[derive(Debug, Clone)]
pub enum Search<S> {
    Linearizable {
        steps: u64,
    },
    /// `prefix` is the longest linearizable sequence found (operation indexes, in order),
    /// `stuck` the operations none of which could come next, `state` the model state there.
    NotLinearizable {
        steps: u64,
        prefix: Vec<usize>,
        stuck: Vec<usize>,
        state: S,
    },
    Unknown {
        steps: u64,
        reason: String,
    },
}

/// A fixed-size bit set.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Bits(Vec<u64>);

impl Bits {
    /// `n` clear bits.
    pub fn new(n: usize) -> Bits {
        Bits(vec![0; n.div_ceil(64)])
    }
    fn from_iter(ids: Vec<u32>) -> Bits {
        let mut b = Bits::new(ids.iter().max().map_or(0, |m| *m as usize + 1));
        for i in ids {
            b.set(i);
        }
        b
    }
    fn resize(&mut self, n: usize) {
        self.0.resize(n.div_ceil(64), 0);
    }
    /// Whether bit `i` is set.
    pub fn get(&self, i: u32) -> bool {
        self.0
            .get(i as usize / 64)
            .is_some_and(|w| w & (1 << (i % 64)) != 0)
    }
    /// Sets bit `i`.
    pub fn set(&mut self, i: u32) {
        self.0[i as usize / 64] |= 1 << (i % 64);
    }
    /// Clears bit `i`.
    pub fn clear(&mut self, i: u32) {
        self.0[i as usize / 64] &= !(1 << (i % 64));
    }
}

/// Searches for a linearization of `ops` under `model`, within `budget`.
///
/// The history is a doubly linked list of call and return entries in time order (a call
/// before a return at the same instant: such operations count as concurrent). The search
/// walks it: at a call it tries to apply the operation to the model; on success it lifts the
/// call and its return out of the list and starts over from the head; at a return whose call
/// is still in the list it backtracks. A (linearized set, state) pair already explored is not
/// explored again (Lowe). Unknown-outcome operations return at infinity: once the walk meets
/// one of those returns, every operation that did complete has been linearized.
///
/// Operations whose outcome is unknown may take effect or not, so two cuts keep their
/// combinations from multiplying (a client retrying under one Idempotency-Key through a long
/// fault leaves dozens of them): one that would change nothing is never taken (taking it makes
/// no other operation possible), and of equal ones the one called first is taken first (any
/// linearization that takes a later one can take the earlier one in its place).
///
/// A read that may come next and fits the state is linearized at once, and the search never
/// tries another operation in its place: if a linearization exists from here, one exists with
/// that read first (a read changes no state, and nothing had to come before it), so when the
/// read leads nowhere, neither does the position before it. This keeps long histories of
/// listings, each concurrent with many others, from multiplying the orders to try.
pub fn search<M: Model>(model: &M, ops: &[LinOp<M::Op>], budget: Budget) -> Search<M::State> {
    let n = ops.len();
    if n > budget.max_ops {
        return Search::Unknown {
            steps: 0,
            reason: format!("{n} operations exceed the budget of {}", budget.max_ops),
        };
    }
    #[derive(Clone, Copy)]
    enum Entry {
        Call(usize),
        Ret(usize),
    }
    // Entries 1..=2n; 0 is the head, 2n+1 the tail.
    let mut order: Vec<(u64, u8, usize, Entry)> = Vec::with_capacity(2 * n);
    for (i, op) in ops.iter().enumerate() {
        order.push((op.call, 0, i, Entry::Call(i)));
        order.push((op.ret.unwrap_or(u64::MAX), 1, i, Entry::Ret(i)));
    }
    order.sort_by_key(|&(t, k, i, _)| (t, k, i));
    let (head, tail) = (0usize, 2 * n + 1);
    let mut kinds = vec![Entry::Call(0); 2 * n + 2];
    let mut call_at = vec![0usize; n];
    let mut ret_at = vec![0usize; n];
    for (pos, &(_, _, _, e)) in order.iter().enumerate() {
        let at = pos + 1;
        kinds[at] = e;
        match e {
            Entry::Call(i) => call_at[i] = at,
            Entry::Ret(i) => ret_at[i] = at,
        }
    }
    // For each unknown-outcome operation, the equal one called just before it, if any.
    let mut twin_before: Vec<Option<usize>> = vec![None; n];
    {
        let mut unknown: Vec<usize> = (0..n).filter(|&i| ops[i].ret.is_none()).collect();
        unknown.sort_by_key(|&i| (ops[i].call, i));
        for (k, &i) in unknown.iter().enumerate() {
            twin_before[i] = unknown[..k]
                .iter()
                .rev()
                .copied()
                .find(|&j| ops[j].op == ops[i].op);
        }
    }
    let mut next: Vec<usize> = (1..=2 * n + 2).collect();
    let mut prev: Vec<usize> = (0..2 * n + 2).map(|i| i.saturating_sub(1)).collect();
    let unlink = |x: usize, next: &mut Vec<usize>, prev: &mut Vec<usize>| {
        let (p, q) = (prev[x], next[x]);
        next[p] = q;
        prev[q] = p;
    };
    let relink = |x: usize, next: &mut Vec<usize>, prev: &mut Vec<usize>| {
        let (p, q) = (prev[x], next[x]);
        next[p] = x;
        prev[q] = x;
    };

    // Undoes the last choice that leaves another to try (forced reads are undone on the way):
    // where to walk on from, and the alternative to start at; None when none is left.
    let backtrack = |stack: &mut Vec<Frame<M::State>>,
                     state: &mut M::State,
                     linearized: &mut Bits,
                     next: &mut Vec<usize>,
                     prev: &mut Vec<usize>| {
        while let Some(f) = stack.pop() {
            *state = f.before;
            linearized.clear(f.op as u32);
            relink(ret_at[f.op], next, prev);
            relink(call_at[f.op], next, prev);
            if !f.forced {
                return Some((f.entry, f.alt + 1));
            }
        }
        None
    };
    let stuck = |deepest: Option<(Vec<usize>, Vec<usize>, M::State)>, steps: u64| {
        let (prefix, stuck, state) = deepest.expect("recorded before backtracking");
        Search::NotLinearizable {
            steps,
            prefix,
            stuck,
            state,
        }
    };

    struct Frame<S> {
        entry: usize,
        op: usize,
        alt: usize,
        before: S,
        /// A read linearized as soon as it could be: no other choice is tried in its place.
        forced: bool,
    }
    let mut state = model.init();
    let mut linearized = Bits::new(n);
    let mut memo: HashSet<(Bits, M::State)> = HashSet::new();
    let mut stack: Vec<Frame<M::State>> = Vec::new();
    let mut deepest: Option<(Vec<usize>, Vec<usize>, M::State)> = None;
    let mut entry = next[head];
    let mut alt_start = 0;
    let mut steps = 0u64;
    loop {
        steps += 1;
        if steps > budget.max_steps {
            return Search::Unknown {
                steps,
                reason: format!("the search exceeded {} steps", budget.max_steps),
            };
        }
        if entry == tail {
            return Search::Linearizable { steps };
        }
        match kinds[entry] {
            Entry::Call(i) => {
                let unknown = ops[i].ret.is_none();
                let alts = if unknown && twin_before[i].is_some_and(|j| !linearized.get(j as u32)) {
                    Vec::new()
                } else {
                    let mut alts = model.step(&state, &ops[i].op);
                    if unknown {
                        alts.retain(|a| *a != state);
                    }
                    alts
                };
                let forced = model.is_read(&ops[i].op) && alts.len() == 1 && alts[0] == state;
                let mut moved = false;
                for (a, next_state) in alts.into_iter().enumerate().skip(alt_start) {
                    linearized.set(i as u32);
                    if memo.insert((linearized.clone(), next_state.clone())) {
                        if memo.len() > budget.max_memo {
                            return Search::Unknown {
                                steps,
                                reason: format!("the search memoized over {} states", budget.max_memo),
                            };
                        }
                        let before = std::mem::replace(&mut state, next_state);
                        stack.push(Frame {
                            entry,
                            op: i,
                            alt: a,
                            before,
                            forced,
                        });
                        unlink(call_at[i], &mut next, &mut prev);
                        unlink(ret_at[i], &mut next, &mut prev);
                        entry = next[head];
                        alt_start = 0;
                        moved = true;
                        break;
                    }
                    linearized.clear(i as u32);
                }
                if !moved && forced {
                    // Already explored with this read linearized here, and it failed: so does
                    // this position.
                    match backtrack(&mut stack, &mut state, &mut linearized, &mut next, &mut prev) {
                        Some((e, a)) => (entry, alt_start) = (e, a),
                        None => return stuck(deepest, steps),
                    }
                } else if !moved {
                    entry = next[entry];
                    alt_start = 0;
                }
            }
            Entry::Ret(i) => {
                if ops[i].ret.is_none() {
                    return Search::Linearizable { steps };
                }
                if deepest.as_ref().is_none_or(|(p, _, _)| stack.len() > p.len()) {
                    // The calls still waiting before this return (its own among them).
                    let mut stuck = Vec::new();
                    let mut e = next[head];
                    while e != entry {
                        if let Entry::Call(j) = kinds[e] {
                            stuck.push(j);
                        }
                        e = next[e];
                    }
                    deepest = Some((stack.iter().map(|f| f.op).collect(), stuck, state.clone()));
                }
                match backtrack(&mut stack, &mut state, &mut linearized, &mut next, &mut prev) {
                    Some((e, a)) => (entry, alt_start) = (e, a),
                    None => return stuck(deepest, steps),
                }
            }
        }
    }
}

/// The job table as a set of job ids, with the Idempotency-Keys that created them.
///
/// Statuses are left out (their order is checked separately): a listing or get of any status
/// counts as presence. Jobs are never deleted in the histories this checks.
#[derive(Debug, Clone)]
pub struct JobSet {
    /// How many distinct job ids the history names.
    pub universe: usize,
}

/// State of [`JobSet`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct JobSetState {
    pub present: Bits,
    /// (key, job) pairs, sorted by key.
    pub keys: Vec<(u32, u32)>,
}

/// An operation of [`JobSet`] with its result.
#[derive(Debug, Clone, PartialEq)]
pub enum JobOp {
    /// A submit (under key `key`) that created or returned one of `ids` (one id when it was
    /// acknowledged; for an unknown outcome, every job it may have created).
    Submit { key: Option<u32>, ids: Vec<u32> },
    /// A get of `id` that found it or not.
    Get { id: u32, found: bool },
    /// A listing of exactly `ids`.
    List { ids: Bits },
}

impl Model for JobSet {
    type State = JobSetState;
    type Op = JobOp;

    fn init(&self) -> JobSetState {
        JobSetState {
            present: Bits::new(self.universe),
            keys: Vec::new(),
        }
    }

    fn step(&self, s: &JobSetState, op: &JobOp) -> Vec<JobSetState> {
        match op {
            JobOp::Submit { key, ids } => {
                let mapped = key.and_then(|k| {
                    s.keys
                        .binary_search_by_key(&k, |&(k, _)| k)
                        .ok()
                        .map(|at| s.keys[at].1)
                });
                ids.iter()
                    .filter_map(|&id| match mapped {
                        // A retry returns the job its key created, and changes nothing.
                        Some(m) => (m == id).then(|| s.clone()),
                        // A new submit creates a job with a fresh id.
                        None if s.present.get(id) => None,
                        None => {
                            let mut t = s.clone();
                            t.present.set(id);
                            if let Some(k) = key {
                                let at = t.keys.partition_point(|&(x, _)| x < *k);
                                t.keys.insert(at, (*k, id));
                            }
                            Some(t)
                        }
                    })
                    .collect()
            }
            JobOp::Get { id, found } => {
                if s.present.get(*id) == *found {
                    vec![s.clone()]
                } else {
                    vec![]
                }
            }
            JobOp::List { ids } => {
                if *ids == s.present {
                    vec![s.clone()]
                } else {
                    vec![]
                }
            }
        }
    }

    fn is_read(&self, op: &JobOp) -> bool {
        matches!(op, JobOp::Get { .. } | JobOp::List { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{HistoryBuilder, Read};

    fn submit(name: &str, key: Option<&str>) -> Call {
        Call::Submit {
            name: name.into(),
            user: "admin".into(),
            key: key.map(str::to_string),
        }
    }
    fn submitted(id: &str, index: u64) -> Outcome {
        Outcome::Submitted {
            id: id.into(),
            index,
            created: true,
        }
    }
    fn view(id: &str, status: &str, exit_code: Option<i64>) -> JobView {
        JobView {
            id: id.into(),
            name: Some(format!("name-{id}").as_str().into()),
            status: status.into(),
            exit_code,
        }
    }
    fn list(read: Read) -> Call {
        Call::List { read }
    }
    fn listed(node: &str, index: u64, jobs: Vec<JobView>) -> Outcome {
        Outcome::Listed {
            node: Some(node.into()),
            index,
            jobs,
            digest: None,
            omitted: 0,
        }
    }
    fn get(id: &str) -> Call {
        Call::Get {
            id: id.into(),
            read: Read::linearizable(),
        }
    }
    fn got(job: Option<JobView>, index: u64) -> Outcome {
        Outcome::Got {
            job,
            index: Some(index),
        }
    }
    use EventType::Ok;

    fn only(report: &Report, invariant: Invariant) -> Violation {
        assert!(
            !report.violations.is_empty() && report.violations.iter().all(|v| v.invariant == invariant),
            "expected only {invariant:?} violations:\n{report}"
        );
        report.violations[0].clone()
    }

    /// A healthy run: concurrent submits (one retried under its key), reads on three nodes,
    /// statuses moving forward, one launch each.
    fn good() -> HistoryBuilder {
        let mut b = HistoryBuilder::new();
        let s1 = b.invoke(1, submit("name-a", None));
        let s2 = b.invoke(2, submit("name-b", Some("kb")));
        b.ok(s1, submitted("a", 3));
        b.info(s2);
        let s2b = b.invoke(2, submit("name-b", Some("kb")));
        let l = b.invoke(3, list(Read::linearizable()));
        b.ok(
            s2b,
            Outcome::Submitted {
                id: "b".into(),
                index: 4,
                created: false,
            },
        );
        b.ok(
            l,
            listed(
                "1",
                4,
                vec![view("a", "Pending", None), view("b", "Pending", None)],
            ),
        );
        b.call(1, get("a"), Ok, got(Some(view("a", "Running", None)), 6));
        b.call(
            3,
            list(Read::stale(4)),
            Ok,
            listed(
                "2",
                6,
                vec![view("a", "Running", None), view("b", "Pending", None)],
            ),
        );
        b.call(
            2,
            list(Read::stale(0)),
            Ok,
            listed(
                "3",
                6,
                vec![view("a", "Running", None), view("b", "Pending", None)],
            ),
        );
        b.call(
            3,
            Call::StatusRead {
                id: "b".into(),
                read: Read::linearizable(),
            },
            Ok,
            Outcome::Status {
                status: "Running".into(),
                index: 7,
            },
        );
        b.call(
            1,
            Call::Control {
                id: "b".into(),
                operation: "suspend".into(),
            },
            Ok,
            Outcome::Controlled {
                message: "Job suspended".into(),
                complete: true,
            },
        );
        b.call(2, get("b"), Ok, got(Some(view("b", "Suspended", None)), 8));
        b.call(2, get("zz"), Ok, got(None, 8));
        b.call(
            1,
            list(Read::linearizable()),
            Ok,
            listed(
                "1",
                9,
                vec![view("a", "Finished", Some(0)), view("b", "Running", None)],
            ),
        );
        b.call(
            1,
            list(Read::linearizable()),
            Ok,
            listed(
                "2",
                12,
                vec![view("a", "Finished", Some(0)), view("b", "Killed", Some(137))],
            ),
        );
        b.launch("a", "sp-1").launch("b", "sp-2");
        b
    }

    #[test]
    fn a_good_history_passes() {
        let report = check(&good().build());
        assert!(report.is_valid(), "{report}");
        assert!(
            matches!(
                report.linearizability,
                Linearizability::Linearizable { ops: 10, .. }
            ),
            "{report}"
        );
        assert_eq!(report.stats.acknowledged_submits, 2);
        assert_eq!(report.stats.jobs_seen, 2);
    }

    #[test]
    fn a_good_history_passes_after_a_json_round_trip() {
        let h = good().build();
        let back = History::from_jsonl(&h.to_jsonl()).unwrap();
        assert!(check(&back).is_valid());
    }

    #[test]
    fn a_lost_acknowledged_job_is_found() {
        let mut b = HistoryBuilder::new();
        b.call(1, submit("name-a", None), Ok, submitted("a", 3));
        b.call(1, submit("name-b", None), Ok, submitted("b", 4));
        // Stale, at an index above a's submit: must still hold it.
        b.call(
            2,
            list(Read::stale(0)),
            Ok,
            listed("2", 5, vec![view("b", "Pending", None)]),
        );
        let report = check(&b.build());
        let v = report
            .of(Invariant::LostJob)
            .first()
            .copied()
            .cloned()
            .unwrap_or_else(|| panic!("{report}"));
        assert_eq!(v.job.as_deref(), Some("a"));
        let text = v.to_string();
        assert!(
            text.contains("LostJob") && text.contains("\"id\":\"a\""),
            "{text}"
        );
        // The listing is cut down to the lost job: b is omitted.
        assert!(text.contains("\"omitted\":1"), "{text}");
    }

    #[test]
    fn a_job_missing_from_a_later_linearizable_listing_is_lost_even_at_a_lower_index() {
        let mut b = HistoryBuilder::new();
        b.call(1, submit("name-a", None), Ok, submitted("a", 3));
        // A linearizable listing begun after the ack, claiming an old index and missing the job.
        b.call(2, list(Read::linearizable()), Ok, listed("2", 2, vec![]));
        let report = check(&b.build());
        assert!(!report.of(Invariant::LostJob).is_empty(), "{report}");
        assert!(!report.of(Invariant::IndexWentBack).is_empty(), "{report}");
        assert!(!report.of(Invariant::NotLinearizable).is_empty(), "{report}");
    }

    #[test]
    fn excerpts_show_the_notes_recorded_among_their_events() {
        let r = crate::history::Recorder::new(1);
        let s = r.invoke(1, submit("name-a", None));
        s.ok(submitted("a", 3));
        r.note("nemesis: SIGKILL node 1");
        let l = r.invoke(2, list(Read::linearizable()));
        l.ok(listed("2", 4, vec![]));
        r.note("after the excerpt");
        let report = check(&r.history());
        let v = report.of(Invariant::LostJob)[0].to_string();
        assert!(v.contains("note at t=") && v.contains("SIGKILL node 1"), "{v}");
        assert!(!v.contains("after the excerpt"), "{v}");
    }

    #[test]
    fn a_regressed_status_is_found() {
        let mut b = HistoryBuilder::new();
        b.call(1, submit("name-a", None), Ok, submitted("a", 3));
        b.call(2, get("a"), Ok, got(Some(view("a", "Running", None)), 5));
        b.call(2, get("a"), Ok, got(Some(view("a", "Pending", None)), 6));
        let v = only(&check(&b.build()), Invariant::StatusRegressed);
        assert_eq!(v.job.as_deref(), Some("a"));
        assert_eq!(v.excerpt.len(), 4, "{v}");
    }

    /// Listings that show a job alike are kept as a few observations per run (the checker's
    /// memory on long runs): a regression against any member of the run is still found, by
    /// index and in real time.
    #[test]
    fn a_regression_against_the_middle_of_a_long_run_of_alike_listings_is_found() {
        // By index: a stale listing at index 15 shows Running after Finished was listed at
        // 10, 12, …, 30; only the run's lowest index (10) shows the regression.
        let mut b = HistoryBuilder::new();
        b.call(1, submit("name-a", None), Ok, submitted("a", 3));
        for index in (10..=30).step_by(2) {
            b.call(
                2,
                list(Read::stale(0)),
                Ok,
                listed("2", index, vec![view("a", "Finished", Some(0))]),
            );
        }
        b.call(
            3,
            list(Read::stale(0)),
            Ok,
            listed("3", 15, vec![view("a", "Running", None)]),
        );
        let v = only(&check(&b.build()), Invariant::StatusRegressed);
        assert!(v.message.contains("at a higher applied index"), "{v:?}");

        // In real time: one linearizable listing shows Finished (index 45) and ends; four more
        // begin and show Finished at other indexes, but end only after a linearizable listing
        // begun meanwhile shows Running at index 39 (below all: no regression by index). Only
        // the run's earliest end orders it before the Running one.
        let mut b = HistoryBuilder::new();
        b.call(1, submit("name-a", None), Ok, submitted("a", 3));
        b.call(
            2,
            list(Read::linearizable()),
            Ok,
            listed("2", 45, vec![view("a", "Finished", Some(0))]),
        );
        let later: Vec<(u64, u64)> = [40, 50, 46, 47]
            .into_iter()
            .map(|index| (b.invoke(2, list(Read::linearizable())), index))
            .collect();
        b.call(
            3,
            list(Read::linearizable()),
            Ok,
            listed("3", 39, vec![view("a", "Running", None)]),
        );
        for (op, index) in later {
            b.ok(op, listed("2", index, vec![view("a", "Finished", Some(0))]));
        }
        let report = check(&b.build());
        assert!(
            report
                .of(Invariant::StatusRegressed)
                .iter()
                .any(|v| v.message.contains("linearizable read begun after")),
            "{report}"
        );

        // Alike listings alone stay valid, however many.
        let mut b = HistoryBuilder::new();
        b.call(1, submit("name-a", None), Ok, submitted("a", 3));
        for index in 10..=300 {
            b.call(
                2,
                list(Read::stale(0)),
                Ok,
                listed("2", index, vec![view("a", "Finished", Some(0))]),
            );
        }
        let report = check(&b.build());
        assert!(report.is_valid(), "{report}");
    }

    #[test]
    fn a_stale_read_behind_in_time_but_not_in_index_is_no_regression() {
        let mut b = HistoryBuilder::new();
        b.call(1, submit("name-a", None), Ok, submitted("a", 3));
        b.call(2, get("a"), Ok, got(Some(view("a", "Running", None)), 5));
        // A lagging follower, read stale afterwards, still at index 4: allowed.
        b.call(
            3,
            list(Read::stale(0)),
            Ok,
            listed("3", 4, vec![view("a", "Pending", None)]),
        );
        let report = check(&b.build());
        assert!(report.is_valid(), "{report}");
    }

    #[test]
    fn a_changed_exit_code_is_found() {
        let mut b = HistoryBuilder::new();
        b.call(1, submit("name-a", None), Ok, submitted("a", 3));
        b.call(2, get("a"), Ok, got(Some(view("a", "Finished", Some(0))), 5));
        b.call(2, get("a"), Ok, got(Some(view("a", "Finished", Some(1))), 6));
        let v = only(&check(&b.build()), Invariant::TerminalChanged);
        assert_eq!(v.job.as_deref(), Some("a"));
    }

    #[test]
    fn a_changed_terminal_status_is_found() {
        let mut b = HistoryBuilder::new();
        b.call(1, submit("name-a", None), Ok, submitted("a", 3));
        b.call(2, get("a"), Ok, got(Some(view("a", "Finished", Some(0))), 5));
        b.call(2, get("a"), Ok, got(Some(view("a", "Killed", Some(0))), 6));
        only(&check(&b.build()), Invariant::TerminalChanged);
    }

    #[test]
    fn two_listings_at_one_index_that_differ_are_found() {
        let mut b = HistoryBuilder::new();
        b.call(1, submit("name-a", None), Ok, submitted("a", 3));
        b.call(
            2,
            list(Read::stale(0)),
            Ok,
            listed("1", 5, vec![view("a", "Running", None)]),
        );
        b.call(
            3,
            list(Read::stale(0)),
            Ok,
            listed("2", 5, vec![view("a", "Pending", None)]),
        );
        let report = check(&b.build());
        let v = only(&report, Invariant::ListingsDiffer);
        assert_eq!(v.job.as_deref(), Some("a"));
        assert!(v.message.contains("index 5"), "{v}");
    }

    #[test]
    fn listings_with_different_canonical_bytes_differ() {
        let mut b = HistoryBuilder::new();
        let digested = |d: &str| Outcome::Listed {
            node: None,
            index: 2,
            jobs: vec![],
            digest: Some(d.into()),
            omitted: 0,
        };
        b.call(2, list(Read::stale(0)), Ok, digested("aa"));
        b.call(3, list(Read::stale(0)), Ok, digested("bb"));
        only(&check(&b.build()), Invariant::ListingsDiffer);
    }

    #[test]
    fn a_duplicate_launch_is_found() {
        let mut h = good();
        h.launch("a", "sp-7");
        let report = check(&h.build());
        let v = only(&report, Invariant::DuplicateLaunch);
        assert_eq!(v.job.as_deref(), Some("a"));
        assert_eq!(v.launches.len(), 2);
        assert!(v.to_string().contains("sp-7"), "{v}");
    }

    #[test]
    fn one_idempotency_key_with_two_jobs_is_found() {
        let mut b = HistoryBuilder::new();
        b.call(1, submit("name-a", Some("k")), Ok, submitted("a", 3));
        b.call(2, submit("name-a", Some("k")), Ok, submitted("a2", 4));
        let report = check(&b.build());
        let v = report.of(Invariant::IdempotencyKey);
        assert_eq!(v.len(), 1, "{report}");
        assert!(v[0].message.contains("\"k\""), "{}", v[0]);
        // The second id is also a new job where the key's job should have come back.
        assert!(!report.of(Invariant::NotLinearizable).is_empty(), "{report}");
    }

    #[test]
    fn the_same_key_of_two_users_is_two_keys() {
        let mut b = HistoryBuilder::new();
        b.call(1, submit("name-a", Some("k")), Ok, submitted("a", 3));
        let other = Call::Submit {
            name: "name-b".into(),
            user: "bob".into(),
            key: Some("k".into()),
        };
        b.call(2, other, Ok, submitted("b", 4));
        assert!(check(&b.build()).is_valid());
    }

    #[test]
    fn a_read_below_its_min_index_is_found() {
        let mut b = HistoryBuilder::new();
        b.call(1, submit("name-a", None), Ok, submitted("a", 3));
        b.call(
            2,
            list(Read::stale(9)),
            Ok,
            listed("2", 7, vec![view("a", "Pending", None)]),
        );
        let v = only(&check(&b.build()), Invariant::BelowMinIndex);
        assert!(v.message.contains("at least 9"), "{v}");
    }

    #[test]
    fn a_linearizable_read_going_back_in_time_is_found() {
        let mut b = HistoryBuilder::new();
        b.call(1, submit("name-a", None), Ok, submitted("a", 3));
        b.call(1, get("a"), Ok, got(Some(view("a", "Pending", None)), 8));
        b.call(1, get("a"), Ok, got(Some(view("a", "Pending", None)), 6));
        let v = only(&check(&b.build()), Invariant::IndexWentBack);
        assert!(v.message.contains("the same process"), "{v}");
    }

    #[test]
    fn a_get_that_misses_a_completed_submit_is_not_linearizable() {
        let mut b = HistoryBuilder::new();
        b.call(1, submit("name-a", None), Ok, submitted("a", 3));
        b.call(2, get("a"), Ok, got(None, 4));
        let report = check(&b.build());
        let v = only(&report, Invariant::NotLinearizable);
        assert_eq!(v.job.as_deref(), Some("a"));
        assert!(
            matches!(report.linearizability, Linearizability::NotLinearizable { .. }),
            "{report}"
        );
        // The excerpt shows the get that missed the job and the submit before it.
        let fs: Vec<&Call> = v.excerpt.iter().map(|e| &e.call).collect();
        assert_eq!(fs.len(), 4, "{v}");
        assert!(
            matches!(fs[0], Call::Submit { .. }) && matches!(fs[3], Call::Get { .. }),
            "{v}"
        );
    }

    #[test]
    fn a_get_concurrent_with_the_submit_may_miss_it() {
        let mut b = HistoryBuilder::new();
        let s = b.invoke(1, submit("name-a", None));
        let g = b.invoke(2, get("a"));
        b.ok(s, submitted("a", 3));
        b.ok(g, got(None, 2));
        assert!(check(&b.build()).is_valid());
    }

    #[test]
    fn a_job_seen_then_unseen_by_linearizable_reads_is_not_linearizable() {
        let mut b = HistoryBuilder::new();
        let s = b.invoke(1, submit("name-a", None));
        b.info(s);
        b.call(2, get("a"), Ok, got(Some(view("a", "Pending", None)), 4));
        b.call(3, get("a"), Ok, got(None, 5));
        let report = check(&b.build());
        assert!(!report.of(Invariant::NotLinearizable).is_empty(), "{report}");
    }

    #[test]
    fn an_unknown_submit_that_later_appears_is_fine() {
        let mut b = HistoryBuilder::new();
        let s = b.invoke(1, submit("name-a", None));
        b.call(2, list(Read::linearizable()), Ok, listed("1", 2, vec![]));
        b.info(s);
        b.call(2, list(Read::linearizable()), Ok, listed("1", 2, vec![]));
        // Took effect well after its client gave up on it.
        b.call(
            3,
            list(Read::linearizable()),
            Ok,
            listed("2", 4, vec![view("a", "Pending", None)]),
        );
        b.call(2, get("a"), Ok, got(Some(view("a", "Running", None)), 5));
        let report = check(&b.build());
        assert!(report.is_valid(), "{report}");
        assert!(
            matches!(
                report.linearizability,
                Linearizability::Linearizable { ops: 5, .. }
            ),
            "{report}"
        );
    }

    #[test]
    fn an_unknown_submit_that_never_appears_is_fine() {
        let mut b = HistoryBuilder::new();
        let s = b.invoke(1, submit("name-a", None));
        b.info(s);
        b.call(2, list(Read::linearizable()), Ok, listed("1", 2, vec![]));
        b.call(2, get("nothing"), Ok, got(None, 2));
        let report = check(&b.build());
        assert!(report.is_valid(), "{report}");
    }

    /// A client retrying one keyed submit through a long fault leaves many attempts of unknown
    /// outcome, each concurrent with everything after it. The search takes none that would
    /// change nothing and the earliest of equal ones first, so it decides at once instead of
    /// trying every subset of the attempts (2^40 here).
    #[test]
    fn many_unknown_retries_under_one_key_are_decided_at_once() {
        let mut b = HistoryBuilder::new();
        let first = b.invoke(1, submit("name-a", Some("k")));
        b.info(first);
        for round in 0..40u64 {
            let again = b.invoke(1, submit("name-a", Some("k")));
            b.call(
                2,
                list(Read::linearizable()),
                Ok,
                listed("1", 2 + round, vec![view("a", "Pending", None)]),
            );
            b.info(again);
        }
        let ok = b.invoke(1, submit("name-a", Some("k")));
        b.ok(ok, submitted("a", 50));
        let report = check(&b.build());
        assert!(
            matches!(report.linearizability, Linearizability::Linearizable { steps, .. } if steps < 10_000),
            "{report}"
        );
        // The same attempts, but a listing that misses the job after one showed it.
        b.call(2, list(Read::linearizable()), Ok, listed("1", 60, vec![]));
        let report = check(&b.build());
        assert!(
            matches!(report.linearizability, Linearizability::NotLinearizable { steps, .. } if steps < 10_000),
            "{report}"
        );
    }

    #[test]
    fn an_unknown_submit_retried_under_its_key_may_have_created_the_job_first() {
        let mut b = HistoryBuilder::new();
        let s = b.invoke(1, submit("name-a", Some("k")));
        b.info(s);
        // The first attempt took effect: a listing shows it before the retry even began.
        b.call(
            2,
            list(Read::linearizable()),
            Ok,
            listed("2", 3, vec![view("a", "Pending", None)]),
        );
        b.call(
            1,
            submit("name-a", Some("k")),
            Ok,
            Outcome::Submitted {
                id: "a".into(),
                index: 3,
                created: false,
            },
        );
        let report = check(&b.build());
        assert!(report.is_valid(), "{report}");
    }

    #[test]
    fn a_failed_submit_that_appears_is_not_linearizable() {
        let mut b = HistoryBuilder::new();
        let s = b.invoke(1, submit("name-a", None));
        b.fail(s);
        b.call(
            2,
            list(Read::linearizable()),
            Ok,
            listed("2", 3, vec![view("a", "Pending", None)]),
        );
        let report = check(&b.build());
        assert!(!report.of(Invariant::NotLinearizable).is_empty(), "{report}");
    }

    /// The search runs per job (P-compositionality), so a history far longer than one
    /// search's budget still gets a verdict, either way.
    #[test]
    fn a_long_history_is_decided_job_by_job() {
        // A search of the whole history would visit 1,202 call and return entries at least.
        let budget = Budget {
            max_ops: 400,
            max_steps: 1000,
            max_memo: 10_000,
        };
        let build = |lose: Option<usize>| {
            let mut b = HistoryBuilder::new();
            let mut seen: Vec<JobView> = Vec::new();
            for i in 0..300usize {
                let id = format!("j{i}");
                let s = b.invoke(1, submit(&format!("name-{i}"), None));
                // A listing concurrent with the submit may or may not show the new job.
                let l = b.invoke(2, list(Read::linearizable()));
                b.ok(s, submitted(&id, i as u64 + 2));
                let mut jobs = seen.clone();
                let mut at = i as u64 + 1;
                if i % 2 == 0 {
                    jobs.push(view(&id, "Pending", None));
                    at += 1;
                }
                b.ok(l, listed("1", at, jobs));
                seen.push(view(&id, "Pending", None));
                if lose == Some(i) {
                    seen.pop();
                }
            }
            b.call(3, list(Read::linearizable()), Ok, listed("1", 400, seen));
            b.build()
        };
        let report = check_with(&build(None), budget);
        assert!(
            matches!(
                report.linearizability,
                Linearizability::Linearizable { ops: 601, .. }
            ),
            "{report}"
        );
        let report = check_with(&build(Some(120)), budget);
        assert!(
            matches!(report.linearizability, Linearizability::NotLinearizable { .. }),
            "{report}"
        );
        assert_eq!(
            report.of(Invariant::NotLinearizable)[0].job.as_deref(),
            Some("j120"),
            "{report}"
        );
    }

    /// Linearizability by definition, for small histories: some order of all completed
    /// operations and any of the unknown-outcome ones, each placed after every operation that
    /// returned before it was called, that the model accepts step by step.
    fn linearizable_by_definition(model: &JobSet, ops: &[LinOp<JobOp>]) -> bool {
        fn go(model: &JobSet, ops: &[LinOp<JobOp>], done: &mut Vec<bool>, state: &JobSetState) -> bool {
            if ops.iter().zip(done.iter()).all(|(o, d)| *d || o.ret.is_none()) {
                return true;
            }
            for i in 0..ops.len() {
                // Next may be any operation not taken yet that no pending completed operation
                // had to precede.
                let blocked =
                    (0..ops.len()).any(|j| !done[j] && j != i && ops[j].ret.is_some_and(|r| r < ops[i].call));
                if done[i] || blocked {
                    continue;
                }
                for next in model.step(state, &ops[i].op) {
                    done[i] = true;
                    if go(model, ops, done, &next) {
                        return true;
                    }
                    done[i] = false;
                }
            }
            false
        }
        go(model, ops, &mut vec![false; ops.len()], &model.init())
    }

    #[test]
    fn the_search_gives_the_verdict_of_the_definition() {
        use rand::{Rng, SeedableRng};
        let verdict = |s: Search<JobSetState>| match s {
            Search::Linearizable { .. } => "linearizable",
            Search::NotLinearizable { .. } => "not linearizable",
            Search::Unknown { .. } => "unknown",
        };
        let mut seen = HashMap::new();
        for seed in 0..3000u64 {
            // Random short histories of three jobs: submits (some with an unknown outcome, some
            // under a key), gets and listings with random results over overlapping intervals.
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let ops: Vec<LinOp<JobOp>> = (0..rng.gen_range(2..9))
                .map(|_| {
                    let call = rng.gen_range(0..20u64);
                    let ret = (rng.gen_range(0..6) > 0).then(|| call + rng.gen_range(0..8u64));
                    let op = match rng.gen_range(0..3) {
                        0 => JobOp::Submit {
                            key: rng.gen_bool(0.3).then_some(0),
                            ids: vec![rng.gen_range(0..3u32)],
                        },
                        1 => JobOp::Get {
                            id: rng.gen_range(0..3u32),
                            found: rng.gen_bool(0.5),
                        },
                        _ => JobOp::List {
                            ids: Bits::from_iter((0..3u32).filter(|_| rng.gen_bool(0.4)).collect()),
                        },
                    };
                    let ret = match op {
                        JobOp::Submit { .. } => ret,
                        _ => Some(ret.unwrap_or(call)),
                    };
                    LinOp { op, call, ret }
                })
                .collect();
            let ops: Vec<LinOp<JobOp>> = ops
                .into_iter()
                .map(|mut o| {
                    if let JobOp::List { ids } = &mut o.op {
                        ids.resize(3);
                    }
                    o
                })
                .collect();
            let model = JobSet { universe: 3 };
            let fast = verdict(search(&model, &ops, Budget::default()));
            let defined = if linearizable_by_definition(&model, &ops) {
                "linearizable"
            } else {
                "not linearizable"
            };
            assert_eq!(fast, defined, "seed {seed}: {ops:?}");
            *seen.entry(fast).or_insert(0) += 1;
        }
        // Both verdicts are well represented, so the comparison means something.
        assert!(seen.get("linearizable").is_some_and(|&n| n > 300), "{seen:?}");
        assert!(seen.get("not linearizable").is_some_and(|&n| n > 300), "{seen:?}");
    }

    #[test]
    fn concurrent_reads_are_decided_at_once_and_the_search_gives_up_within_its_budget() {
        // Mutually concurrent gets of an absent job, then a get that finds it though nobody
        // submitted it. Without linearizing each fitting read at once, the search would try
        // every order of the twelve gets (thousands of steps) before it could say no.
        let mut b = HistoryBuilder::new();
        let gets: Vec<u64> = (0..12).map(|p| b.invoke(p, get("x"))).collect();
        for g in gets {
            b.ok(g, got(None, 1));
        }
        b.call(99, get("x"), Ok, got(Some(view("x", "Pending", None)), 1));
        let report = check(&b.build());
        assert!(
            matches!(report.linearizability, Linearizability::NotLinearizable { steps, .. } if steps < 100),
            "{report}"
        );
        let tiny = Budget {
            max_ops: 100,
            max_steps: 5,
            max_memo: 1000,
        };
        let report = check_with(&b.build(), tiny);
        assert!(
            matches!(report.linearizability, Linearizability::Unknown { .. }),
            "{report}"
        );
        let capped = Budget { max_ops: 5, ..tiny };
        let report = check_with(&b.build(), capped);
        assert!(
            matches!(&report.linearizability, Linearizability::Unknown { reason, .. } if reason.contains("exceed")),
            "{report}"
        );
    }

    /// Checks a history dumped by a chaos run again (`LAUNCHER_CHAOS_REPLAY=<file.jsonl> cargo
    /// test -p launcher-tests --lib replay_a_dumped_history -- --ignored --nocapture`).
    #[test]
    #[ignore = "needs LAUNCHER_CHAOS_REPLAY=<history.jsonl>"]
    fn replay_a_dumped_history() {
        let path = std::env::var_os("LAUNCHER_CHAOS_REPLAY").expect("LAUNCHER_CHAOS_REPLAY names a history");
        let h = History::load(std::path::Path::new(&path)).expect("a history file");
        let report = check(&h);
        println!("seed {}: {report}", h.seed);
        assert!(report.is_valid(), "seed {}: {report}", h.seed);
    }

    /// A generic model: a register with write/read, to test the search on its own.
    struct Register;
    #[derive(Debug, PartialEq)]
    enum RegOp {
        Write(u8),
        Read(u8),
    }
    impl Model for Register {
        type State = u8;
        type Op = RegOp;
        fn init(&self) -> u8 {
            0
        }
        fn step(&self, s: &u8, op: &RegOp) -> Vec<u8> {
            match op {
                RegOp::Write(v) => vec![*v],
                RegOp::Read(v) if v == s => vec![*s],
                RegOp::Read(_) => vec![],
            }
        }
    }

    fn op(op: RegOp, call: u64, ret: Option<u64>) -> LinOp<RegOp> {
        LinOp { op, call, ret }
    }

    #[test]
    fn the_search_finds_orders_and_rejects_impossible_ones() {
        let b = Budget::default();
        // w1 and w2 concurrent, then reads 2 then 1: impossible; 1 then 2 or 2 alone: fine.
        let ok = [
            op(RegOp::Write(1), 0, Some(10)),
            op(RegOp::Write(2), 1, Some(11)),
            op(RegOp::Read(1), 12, Some(13)),
        ];
        assert!(matches!(search(&Register, &ok, b), Search::Linearizable { .. }));
        let bad = [
            op(RegOp::Write(1), 0, Some(10)),
            op(RegOp::Write(2), 1, Some(11)),
            op(RegOp::Read(2), 12, Some(13)),
            op(RegOp::Read(1), 14, Some(15)),
        ];
        match search(&Register, &bad, b) {
            Search::NotLinearizable { prefix, stuck, .. } => {
                assert_eq!(prefix, vec![0, 1, 2]);
                assert_eq!(stuck, vec![3]);
            }
            other => panic!("{other:?}"),
        }
        // An unknown-outcome write explains a later read, or nothing at all.
        let info = [
            op(RegOp::Write(3), 0, None),
            op(RegOp::Read(0), 1, Some(2)),
            op(RegOp::Read(3), 5, Some(6)),
        ];
        assert!(matches!(search(&Register, &info, b), Search::Linearizable { .. }));
        let never = [op(RegOp::Write(3), 0, None), op(RegOp::Read(0), 5, Some(6))];
        assert!(matches!(
            search(&Register, &never, b),
            Search::Linearizable { .. }
        ));
    }
}
