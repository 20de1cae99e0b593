//! Jepsen-style history of client operations, for the chaos tests and their checker.
//!
//! Every client operation is recorded twice: an `invoke` event when the client sends it, then
//! one completion: `ok` (it happened, with what the system answered), `fail` (it certainly did
//! not happen) or `info` (unknown outcome: a timeout or a broken connection; it may have taken
//! effect, or may still take effect later). Plugin-side launch records (one per job run, e.g.
//! the scripted plugin's launch log) and free-form notes (faults injected) come alongside.
//!
//! A history is written as JSON lines, so a failing run can dump it with its seed and the
//! checker can be run on it again ([`History::to_jsonl`], [`History::from_jsonl`]).

use std::io::BufRead;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use ustr::Ustr;

/// A client of the history (Jepsen's "process"); each runs one operation at a time.
pub type Process = u32;

/// What an event says about its operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventType {
    /// The client sent the operation.
    Invoke,
    /// It took effect; the outcome is what the system answered.
    Ok,
    /// It certainly did not take effect.
    Fail,
    /// Unknown outcome: it may or may not have taken effect, now or later.
    Info,
}

/// Consistency a read asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Consistency {
    /// The default: reflects every write acknowledged before the read began.
    #[default]
    Linearizable,
    /// The answering node's own state (`consistency=stale`).
    Stale,
}

/// How a read was asked to be served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Read {
    #[serde(default)]
    pub consistency: Consistency,
    /// The requested floor (`X-Launcher-Min-Index`); 0 = none.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub min_index: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

impl Read {
    /// A linearizable read without a floor.
    pub fn linearizable() -> Read {
        Read::default()
    }
    /// A stale read that must reflect at least `min_index`.
    pub fn stale(min_index: u64) -> Read {
        Read {
            consistency: Consistency::Stale,
            min_index,
        }
    }
    /// Whether the read is linearizable.
    pub fn is_linearizable(&self) -> bool {
        self.consistency == Consistency::Linearizable
    }
}

/// What the client asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "f", rename_all = "snake_case")]
pub enum Call {
    /// `POST /jobs` / SubmitJob of a job named `name` by `user`, with or without an Idempotency-Key.
    Submit {
        name: String,
        user: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        key: Option<String>,
    },
    /// `GET /jobs/{id}` / GetJob.
    Get { id: String, read: Read },
    /// A listing of every job of every user (`GET /jobs?user=*`, unfiltered).
    List { read: Read },
    /// `POST /jobs/{id}/control`.
    Control { id: String, operation: String },
    /// `GET /jobs/{id}/status` (one answer, not a stream); an `ok` not-found answer is
    /// [`Outcome::Error`] with code 3.
    StatusRead { id: String, read: Read },
}

impl Call {
    /// The read options of a read; `None` for writes.
    pub fn read(&self) -> Option<Read> {
        match self {
            Call::Get { read, .. } | Call::List { read } | Call::StatusRead { read, .. } => Some(*read),
            Call::Submit { .. } | Call::Control { .. } => None,
        }
    }
}

/// A job as a read saw it.
///
/// Its strings are interned ([`Ustr`]: one pointer each, the text kept once per process): a long
/// run records every job of every listing, tens of millions of views that repeat a few thousand
/// ids and a handful of statuses, and the whole history must fit in memory to be checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobView {
    pub id: Ustr,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<Ustr>,
    pub status: Ustr,
    #[serde(default, rename = "exitCode", skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i64>,
}

impl JobView {
    /// The view of a job from its JSON (`id`, `name`, `status`, `exitCode`).
    pub fn from_json(v: &serde_json::Value) -> Option<JobView> {
        Some(JobView {
            id: Ustr::from(v.get("id")?.as_str()?),
            name: v.get("name").and_then(|n| n.as_str()).map(Ustr::from),
            status: Ustr::from(v.get("status")?.as_str()?),
            exit_code: v.get("exitCode").and_then(|c| c.as_i64()),
        })
    }

    /// The view of canonical job bytes.
    pub fn from_bytes(bytes: &[u8]) -> Option<JobView> {
        Self::from_json(&serde_json::from_slice(bytes).ok()?)
    }

    /// The views of a listing's jobs (those that have an id and a status), stored tight: a
    /// history keeps every listing.
    pub fn all<B: AsRef<[u8]>>(jobs: &[B]) -> Vec<JobView> {
        let mut views: Vec<JobView> = jobs.iter().filter_map(|j| Self::from_bytes(j.as_ref())).collect();
        views.shrink_to_fit();
        views
    }
}

/// What the system answered (or the error a client saw).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "r", rename_all = "snake_case")]
pub enum Outcome {
    /// A submit's job id and the log index it was applied at; `created` is false when an
    /// idempotent retry found the original job (gRPC tells, HTTP answers 201 either way).
    Submitted { id: String, index: u64, created: bool },
    /// A get: the job, or `None` for not found (code 3), at `index` when the answer said.
    Got {
        job: Option<JobView>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        index: Option<u64>,
    },
    /// A listing taken by `node` at applied `index`: every job in listing order, and optionally
    /// a digest (SHA-256, hex) of the canonical bytes so byte-level differences show too.
    Listed {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        node: Option<String>,
        index: u64,
        jobs: Vec<JobView>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        digest: Option<String>,
        /// Jobs left out of this copy (history excerpts keep only the jobs they are about).
        #[serde(default, skip_serializing_if = "is_zero_usize")]
        omitted: usize,
    },
    /// A control request's answer.
    Controlled { message: String, complete: bool },
    /// A status read.
    Status { status: String, index: u64 },
    /// What went wrong (launcher error code when known).
    Error {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        code: Option<i32>,
        message: String,
    },
}

fn is_zero_usize(v: &usize) -> bool {
    *v == 0
}

impl Outcome {
    /// An error outcome.
    pub fn error(code: Option<i32>, message: impl std::fmt::Display) -> Outcome {
        Outcome::Error {
            code,
            message: message.to_string(),
        }
    }

    /// The digest of a listing's canonical job bytes, as [`Outcome::Listed`] keeps it.
    pub fn digest<B: AsRef<[u8]>>(jobs: &[B]) -> String {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        for j in jobs {
            h.update((j.as_ref().len() as u64).to_be_bytes());
            h.update(j.as_ref());
        }
        hex::encode(h.finalize())
    }

    /// The applied index the answer reflects, if it carries one.
    pub fn index(&self) -> Option<u64> {
        match self {
            Outcome::Submitted { index, .. }
            | Outcome::Listed { index, .. }
            | Outcome::Status { index, .. } => Some(*index),
            Outcome::Got { index, .. } => *index,
            Outcome::Controlled { .. } | Outcome::Error { .. } => None,
        }
    }
}

/// One event of the history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Position in the history (recording order, which is also time order).
    pub seq: u64,
    /// Microseconds since the recorder started (monotonic clock).
    pub time_us: u64,
    pub process: Process,
    /// The operation this event belongs to (an invoke and its completion share it).
    pub op: u64,
    #[serde(rename = "type")]
    pub kind: EventType,
    /// What was asked (repeated on the completion, so excerpts read on their own).
    pub call: Call,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
}

impl Event {
    /// This event with listings cut down to the jobs in `keep` (all when `keep` is `None`).
    pub fn focused(&self, keep: Option<&[&str]>) -> Event {
        let mut e = self.clone();
        if let (Some(keep), Some(Outcome::Listed { jobs, omitted, .. })) = (keep, e.outcome.as_mut()) {
            let before = jobs.len();
            jobs.retain(|j| keep.contains(&j.id.as_str()));
            *omitted += before - jobs.len();
        }
        e
    }
}

/// A plugin-side record of one job run (e.g. a line of the scripted plugin's launch log).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Launch {
    /// Our job id (from the `launcher-job:<id>` tag).
    pub job_id: String,
    /// 1 for the first run of this job the plugin saw, 2 for the second, …
    pub run: u32,
    /// The plugin's own id of this run.
    pub plugin_job_id: String,
}

/// A free-form note at a point of the history (a fault injected, a phase of the test).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Note {
    pub seq: u64,
    pub time_us: u64,
    pub text: String,
}

/// One line of a history file.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "line", rename_all = "snake_case")]
enum Line {
    Meta { seed: u64 },
    Event(Event),
    Launch(Launch),
    Note(Note),
}

/// A [`Line`] to write, borrowing what it shows (a long history is written without a copy).
#[derive(Serialize)]
#[serde(tag = "line", rename_all = "snake_case")]
enum LineRef<'a> {
    Meta { seed: u64 },
    Event(&'a Event),
    Launch(&'a Launch),
    Note(&'a Note),
}

/// A complete history.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct History {
    /// The seed of the run that produced it.
    pub seed: u64,
    pub events: Vec<Event>,
    pub launches: Vec<Launch>,
    pub notes: Vec<Note>,
}

/// An operation: an invocation paired with its completion.
#[derive(Debug, Clone)]
pub struct Operation<'h> {
    pub op: u64,
    pub process: Process,
    pub call: &'h Call,
    pub invoke: &'h Event,
    /// `None` when the history ends before the operation completed (treated as `info`).
    pub completion: Option<&'h Event>,
}

impl<'h> Operation<'h> {
    /// How it completed (`Info` when it never did).
    pub fn kind(&self) -> EventType {
        self.completion.map_or(EventType::Info, |c| c.kind)
    }
    /// The outcome of an `ok` operation.
    pub fn ok(&self) -> Option<&'h Outcome> {
        self.completion
            .filter(|c| c.kind == EventType::Ok)
            .and_then(|c| c.outcome.as_ref())
    }
    /// When it was invoked.
    pub fn invoked_at(&self) -> u64 {
        self.invoke.time_us
    }
    /// When it completed, if it completed definitely (`ok` or `fail`); `info` never does.
    pub fn completed_at(&self) -> Option<u64> {
        self.completion
            .filter(|c| c.kind != EventType::Info)
            .map(|c| c.time_us)
    }
    /// Its events (invoke and completion).
    pub fn events(&self) -> Vec<&'h Event> {
        std::iter::once(self.invoke).chain(self.completion).collect()
    }
}

impl History {
    /// The operations, in invocation order. A completion without an invocation is ignored.
    pub fn operations(&self) -> Vec<Operation<'_>> {
        let mut by_op: std::collections::HashMap<u64, usize> = std::collections::HashMap::new();
        let mut ops: Vec<Operation<'_>> = Vec::new();
        for e in &self.events {
            match e.kind {
                EventType::Invoke => {
                    by_op.insert(e.op, ops.len());
                    ops.push(Operation {
                        op: e.op,
                        process: e.process,
                        call: &e.call,
                        invoke: e,
                        completion: None,
                    });
                }
                _ => {
                    if let Some(&i) = by_op.get(&e.op) {
                        if ops[i].completion.is_none() {
                            ops[i].completion = Some(e);
                        }
                    }
                }
            }
        }
        ops
    }

    /// The history as JSON lines: a meta line with the seed, then events, notes and launches.
    pub fn to_jsonl(&self) -> String {
        let mut out = Vec::new();
        self.write(&mut out).expect("writing to memory does not fail");
        String::from_utf8(out).expect("JSON is UTF-8")
    }

    /// Writes the history as JSON lines (see [`History::to_jsonl`]) to `w`, one line at a time.
    pub fn write(&self, mut w: impl std::io::Write) -> std::io::Result<()> {
        let lines = std::iter::once(LineRef::Meta { seed: self.seed })
            .chain(self.events.iter().map(LineRef::Event))
            .chain(self.notes.iter().map(LineRef::Note))
            .chain(self.launches.iter().map(LineRef::Launch));
        for line in lines {
            serde_json::to_writer(&mut w, &line)?;
            w.write_all(b"\n")?;
        }
        w.flush()
    }

    /// Reads a history written by [`History::to_jsonl`].
    pub fn from_jsonl(text: &str) -> anyhow::Result<History> {
        Self::read(text.as_bytes())
    }

    /// Reads JSON lines from `r`.
    pub fn read(r: impl std::io::Read) -> anyhow::Result<History> {
        let mut h = History::default();
        for (no, line) in std::io::BufReader::new(r).lines().enumerate() {
            let line = line?;
            if line.trim().is_empty() {
                continue;
            }
            let parsed: Line =
                serde_json::from_str(&line).map_err(|e| anyhow::anyhow!("history line {}: {e}", no + 1))?;
            match parsed {
                Line::Meta { seed } => h.seed = seed,
                Line::Event(e) => h.events.push(e),
                Line::Launch(l) => h.launches.push(l),
                Line::Note(n) => h.notes.push(n),
            }
        }
        h.events.sort_by_key(|e| e.seq);
        Ok(h)
    }

    /// Writes the history to `path`.
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        self.write(std::io::BufWriter::new(std::fs::File::create(path)?))?;
        Ok(())
    }

    /// Loads a history from `path`.
    pub fn load(path: &Path) -> anyhow::Result<History> {
        Self::read(std::fs::File::open(path)?)
    }

    /// Adds launch records from a launch log of `<plugin job id> launcher-job:<id>` lines (the
    /// scripted plugin's `launch-log`); runs are numbered per job in log order. Lines without
    /// our tag are skipped.
    pub fn add_launch_log(&mut self, text: &str) {
        for line in text.lines() {
            let mut parts = line.split_whitespace();
            let (Some(plugin_job_id), Some(tag)) = (parts.next(), parts.next()) else {
                continue;
            };
            let Some(job_id) = tag.strip_prefix("launcher-job:") else {
                continue;
            };
            let run = 1 + self.launches.iter().filter(|l| l.job_id == job_id).count() as u32;
            self.launches.push(Launch {
                job_id: job_id.to_string(),
                run,
                plugin_job_id: plugin_job_id.to_string(),
            });
        }
    }
}

/// Records a history from concurrent clients; clone the handle for each client.
#[derive(Clone)]
pub struct Recorder {
    inner: Arc<Mutex<Recording>>,
}

struct Recording {
    start: Instant,
    next_op: u64,
    history: History,
}

impl Recording {
    /// Appends an event; the time is taken under the lock, so `seq` order is time order.
    fn push(&mut self, process: Process, op: u64, kind: EventType, call: Call, outcome: Option<Outcome>) {
        let seq = self.history.events.len() as u64 + self.history.notes.len() as u64;
        let time_us = self.start.elapsed().as_micros() as u64;
        self.history.events.push(Event {
            seq,
            time_us,
            process,
            op,
            kind,
            call,
            outcome,
        });
    }
}

impl Recorder {
    /// A new, empty history of a run with `seed`.
    pub fn new(seed: u64) -> Recorder {
        Recorder {
            inner: Arc::new(Mutex::new(Recording {
                start: Instant::now(),
                next_op: 0,
                history: History {
                    seed,
                    ..Default::default()
                },
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Recording> {
        // A client that panicked mid-record leaves a consistent history: events are whole.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records the invocation of `call` by `process`; complete it through the returned handle.
    /// A handle dropped without completing (e.g. a timed-out future) records `info`.
    pub fn invoke(&self, process: Process, call: Call) -> Pending {
        let mut r = self.lock();
        let op = r.next_op;
        r.next_op += 1;
        r.push(process, op, EventType::Invoke, call.clone(), None);
        Pending {
            recorder: self.clone(),
            process,
            op,
            call: Some(call),
        }
    }

    /// Records a note (a fault injected, a phase).
    pub fn note(&self, text: impl Into<String>) {
        let mut r = self.lock();
        let seq = r.history.events.len() as u64 + r.history.notes.len() as u64;
        let time_us = r.start.elapsed().as_micros() as u64;
        r.history.notes.push(Note {
            seq,
            time_us,
            text: text.into(),
        });
    }

    /// Adds launch records from a launch log (see [`History::add_launch_log`]).
    pub fn add_launch_log(&self, text: &str) {
        self.lock().history.add_launch_log(text);
    }

    /// A copy of the history so far.
    pub fn history(&self) -> History {
        self.lock().history.clone()
    }

    /// The history so far, moved out: what is recorded later starts a new one. The end of a long
    /// run takes its history rather than copying it (it may hold gigabytes of listings).
    pub fn take(&self) -> History {
        let mut r = self.lock();
        let seed = r.history.seed;
        std::mem::replace(
            &mut r.history,
            History {
                seed,
                ..Default::default()
            },
        )
    }

    /// Microseconds since the recorder started.
    pub fn now_us(&self) -> u64 {
        self.lock().start.elapsed().as_micros() as u64
    }
}

/// An invoked operation waiting for its completion.
pub struct Pending {
    recorder: Recorder,
    process: Process,
    op: u64,
    call: Option<Call>,
}

impl Pending {
    fn complete(mut self, kind: EventType, outcome: Outcome) {
        if let Some(call) = self.call.take() {
            self.recorder
                .lock()
                .push(self.process, self.op, kind, call, Some(outcome));
        }
    }
    /// It happened, with this answer.
    pub fn ok(self, outcome: Outcome) {
        self.complete(EventType::Ok, outcome)
    }
    /// It certainly did not happen.
    pub fn fail(self, outcome: Outcome) {
        self.complete(EventType::Fail, outcome)
    }
    /// Unknown outcome.
    pub fn info(self, outcome: Outcome) {
        self.complete(EventType::Info, outcome)
    }
    /// The operation's id.
    pub fn op(&self) -> u64 {
        self.op
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(call) = self.call.take() {
            self.recorder.lock().push(
                self.process,
                self.op,
                EventType::Info,
                call,
                Some(Outcome::error(None, "abandoned before an answer")),
            );
        }
    }
}

/// Builds histories by hand with a logical clock (each event one tick after the last), for
/// tests of the checker and for reduced replays.
#[derive(Debug, Default)]
pub struct HistoryBuilder {
    history: History,
    calls: std::collections::HashMap<u64, (Process, Call)>,
    next_op: u64,
    clock: u64,
}

impl HistoryBuilder {
    /// An empty history.
    pub fn new() -> Self {
        Self::default()
    }

    fn push(&mut self, process: Process, op: u64, kind: EventType, call: Call, outcome: Option<Outcome>) {
        self.clock += 1;
        self.history.events.push(Event {
            seq: self.history.events.len() as u64,
            time_us: self.clock,
            process,
            op,
            kind,
            call,
            outcome,
        });
    }

    /// Invokes `call` on `process`; returns the operation id.
    pub fn invoke(&mut self, process: Process, call: Call) -> u64 {
        let op = self.next_op;
        self.next_op += 1;
        self.calls.insert(op, (process, call.clone()));
        self.push(process, op, EventType::Invoke, call, None);
        op
    }

    /// Completes `op`.
    pub fn complete(&mut self, op: u64, kind: EventType, outcome: Outcome) -> &mut Self {
        let (process, call) = self.calls.remove(&op).expect("completing an invoked operation");
        self.push(process, op, kind, call, Some(outcome));
        self
    }

    /// Completes `op` with `ok`.
    pub fn ok(&mut self, op: u64, outcome: Outcome) -> &mut Self {
        self.complete(op, EventType::Ok, outcome)
    }

    /// Completes `op` with `info`.
    pub fn info(&mut self, op: u64) -> &mut Self {
        self.complete(op, EventType::Info, Outcome::error(Some(13), "timed out"))
    }

    /// Completes `op` with `fail`.
    pub fn fail(&mut self, op: u64) -> &mut Self {
        self.complete(op, EventType::Fail, Outcome::error(Some(2), "refused"))
    }

    /// Invokes and at once completes an operation (no concurrency).
    pub fn call(&mut self, process: Process, call: Call, kind: EventType, outcome: Outcome) -> u64 {
        let op = self.invoke(process, call);
        self.complete(op, kind, outcome);
        op
    }

    /// Adds a launch record.
    pub fn launch(&mut self, job_id: &str, plugin_job_id: &str) -> &mut Self {
        let run = 1 + self
            .history
            .launches
            .iter()
            .filter(|l| l.job_id == job_id)
            .count() as u32;
        self.history.launches.push(Launch {
            job_id: job_id.into(),
            run,
            plugin_job_id: plugin_job_id.into(),
        });
        self
    }

    /// The history.
    pub fn build(&self) -> History {
        self.history.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> History {
        let mut b = HistoryBuilder::new();
        let s = b.invoke(
            1,
            Call::Submit {
                name: "a".into(),
                user: "admin".into(),
                key: Some("k1".into()),
            },
        );
        b.ok(
            s,
            Outcome::Submitted {
                id: "j1".into(),
                index: 5,
                created: true,
            },
        );
        b.call(
            2,
            Call::List { read: Read::stale(5) },
            EventType::Ok,
            Outcome::Listed {
                node: Some("2".into()),
                index: 6,
                jobs: vec![JobView {
                    id: "j1".into(),
                    name: Some("a".into()),
                    status: "Finished".into(),
                    exit_code: Some(0),
                }],
                digest: Some(Outcome::digest(&[b"{}"])),
                omitted: 0,
            },
        );
        let g = b.invoke(
            3,
            Call::Get {
                id: "j1".into(),
                read: Read::linearizable(),
            },
        );
        b.info(g);
        b.launch("j1", "sp-1");
        let mut h = b.build();
        h.seed = 42;
        h
    }

    #[test]
    fn histories_round_trip_through_json_lines() {
        let h = sample();
        let text = h.to_jsonl();
        assert!(text.starts_with("{\"line\":\"meta\",\"seed\":42}\n"), "{text}");
        assert_eq!(History::from_jsonl(&text).unwrap(), h);
    }

    #[test]
    fn operations_pair_invocations_with_completions() {
        let h = sample();
        let ops = h.operations();
        assert_eq!(ops.len(), 3);
        assert_eq!(ops[0].kind(), EventType::Ok);
        assert!(matches!(ops[0].ok(), Some(Outcome::Submitted { .. })));
        assert_eq!(ops[2].kind(), EventType::Info);
        assert_eq!(ops[2].completed_at(), None);
    }

    #[test]
    fn the_recorder_orders_events_and_marks_abandoned_operations_info() {
        let r = Recorder::new(7);
        let handles: Vec<_> = (0..4)
            .map(|p| {
                let r = r.clone();
                std::thread::spawn(move || {
                    for i in 0..50 {
                        let call = Call::Get {
                            id: format!("j{i}"),
                            read: Read::linearizable(),
                        };
                        let pending = r.invoke(p, call);
                        if i % 2 == 0 {
                            pending.ok(Outcome::Got {
                                job: None,
                                index: Some(i),
                            });
                        } // odd ones are dropped: info
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        r.note("done");
        let h = r.history();
        assert_eq!(h.events.len(), 400);
        assert!(h
            .events
            .windows(2)
            .all(|w| w[0].seq < w[1].seq && w[0].time_us <= w[1].time_us));
        let ops = h.operations();
        assert_eq!(ops.iter().filter(|o| o.kind() == EventType::Info).count(), 100);
        assert_eq!(h.notes[0].seq, 400);
    }

    #[test]
    fn launch_logs_number_runs_per_job() {
        let mut h = History::default();
        h.add_launch_log("sp-1 launcher-job:a\nsp-2 launcher-job:b\nsp-1 -\nsp-3 launcher-job:a\n");
        let runs: Vec<(&str, u32)> = h.launches.iter().map(|l| (l.job_id.as_str(), l.run)).collect();
        assert_eq!(runs, vec![("a", 1), ("b", 1), ("a", 2)]);
    }
}
