//! Micro-benchmarks of the job state machine: `apply` of submits and of a whole job lifecycle,
//! and the listing query with each kind of filter, on sled in a temp dir.
//!
//! `cargo bench -p launcher-storage` (criterion; `-- --quick` for a short run).

use std::sync::atomic::{AtomicU64, Ordering};

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use launcher_storage::command::{HostedCluster, JobUpdate};
use launcher_storage::engine::{SledEngine, SledOptions};
use launcher_storage::table::ListFilter;
use launcher_storage::{Command, CommandV1, Job, JobStatus, StateMachine, TypeConfig};
use openraft::storage::RaftStateMachine;
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId};

/// Jobs in the table the benchmarks run against.
const TABLE_JOBS: u64 = 10_000;
const USERS: u64 = 10;
const TAGS: u64 = 10;

struct Fixture {
    _dir: tempfile::TempDir,
    sm: StateMachine<SledEngine>,
    rt: tokio::runtime::Runtime,
    next_index: AtomicU64,
    next_job: AtomicU64,
}

/// A fixed-width stamped time, `k` microseconds after a base (byte order = time order).
fn time(k: u64) -> String {
    let (s, us) = (k / 1_000_000, k % 1_000_000);
    format!(
        "2026-01-01T{:02}:{:02}:{:02}.{us:06}Z",
        s / 3600,
        (s / 60) % 60,
        s % 60
    )
}

fn job_id(k: u64) -> String {
    format!("0199aaaa-0000-7000-8000-{k:012}")
}

fn submit(k: u64) -> CommandV1 {
    let job = Job {
        id: Some(job_id(k)),
        name: format!("job {k}"),
        cluster: "Local".into(),
        user: Some(format!("user{}", k % USERS)),
        command: Some("echo hello".into()),
        tags: vec![format!("t{}", k % TAGS), "bench".into()],
        submission_time: Some(time(k * 1000)),
        ..Default::default()
    };
    CommandV1::Submit {
        job: Box::new(job),
        owner: 1,
        idempotency: None,
    }
}

/// What the owner commits after a submit whose launch fails: intent, then the Failed status.
fn lifecycle(k: u64) -> [CommandV1; 3] {
    let t = time(k * 1000 + 1);
    [
        submit(k),
        CommandV1::LaunchIntent {
            id: job_id(k),
            node: 1,
            epoch: 1,
            time: t.clone(),
        },
        CommandV1::Update(JobUpdate {
            id: job_id(k),
            node: 1,
            epoch: 1,
            seq: 1,
            time: t,
            status: Some(JobStatus::Failed),
            status_message: Some("launch failed: no such user".into()),
            ..Default::default()
        }),
    ]
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().expect("temp dir");
        let engine = SledEngine::open(&dir.path().join("db"), &SledOptions::default()).expect("sled");
        let sm = StateMachine::open(engine, dir.path().join("snap")).expect("state machine");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let f = Fixture {
            _dir: dir,
            sm,
            rt,
            next_index: AtomicU64::new(1),
            next_job: AtomicU64::new(0),
        };
        f.apply(vec![CommandV1::RegisterNode {
            id: 1,
            addr: "127.0.0.1:1".into(),
            clusters: vec![HostedCluster {
                name: "Local".into(),
                shared: false,
            }],
            version: "bench".into(),
        }]);
        // A table of TABLE_JOBS jobs, one in four left Pending, the rest Failed.
        let mut batch = Vec::new();
        for _ in 0..TABLE_JOBS {
            let k = f.next_job.fetch_add(1, Ordering::Relaxed);
            if k.is_multiple_of(4) {
                batch.push(submit(k));
            } else {
                batch.extend(lifecycle(k));
            }
            if batch.len() >= 300 {
                f.apply(std::mem::take(&mut batch));
            }
        }
        f.apply(batch);
        f
    }

    fn entries(&self, cmds: Vec<CommandV1>) -> Vec<Entry<TypeConfig>> {
        cmds.into_iter()
            .map(|c| Entry {
                log_id: LogId::new(
                    CommittedLeaderId::new(1, 1),
                    self.next_index.fetch_add(1, Ordering::Relaxed),
                ),
                payload: EntryPayload::Normal(Command::V1(c)),
            })
            .collect()
    }

    fn apply(&self, cmds: Vec<CommandV1>) {
        let entries = self.entries(cmds);
        let mut sm = self.sm.clone();
        let out = self.rt.block_on(sm.apply(entries)).expect("apply");
        debug_assert!(out
            .iter()
            .all(|r| !matches!(r, launcher_storage::Response::Error { .. })));
    }

    fn new_job(&self) -> u64 {
        self.next_job.fetch_add(1, Ordering::Relaxed)
    }
}

fn bench_apply(c: &mut Criterion) {
    let f = Fixture::new();
    let mut g = c.benchmark_group("apply");
    for batch in [1u64, 64] {
        g.throughput(Throughput::Elements(batch));
        g.bench_with_input(BenchmarkId::new("submit", batch), &batch, |b, &n| {
            b.iter_batched(
                || f.entries((0..n).map(|_| submit(f.new_job())).collect()),
                |entries| {
                    let mut sm = f.sm.clone();
                    f.rt.block_on(sm.apply(entries)).expect("apply")
                },
                BatchSize::SmallInput,
            )
        });
    }
    // Per job, the three entries a submit with a failed launch costs, applied as one batch.
    g.throughput(Throughput::Elements(1));
    g.bench_function("submit+intent+failed (one job)", |b| {
        b.iter_batched(
            || f.entries(lifecycle(f.new_job()).into()),
            |entries| {
                let mut sm = f.sm.clone();
                f.rt.block_on(sm.apply(entries)).expect("apply")
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn bench_list(c: &mut Criterion) {
    let f = Fixture::new();
    let mid = TABLE_JOBS / 2;
    let cases: Vec<(&str, ListFilter)> = vec![
        ("all", ListFilter::default()),
        (
            "tag (1/10)",
            ListFilter {
                tags: vec!["t3".into()],
                ..Default::default()
            },
        ),
        (
            "user (1/10)",
            ListFilter {
                user: Some("user3".into()),
                ..Default::default()
            },
        ),
        (
            "status Pending (1/4)",
            ListFilter {
                statuses: vec![JobStatus::Pending],
                ..Default::default()
            },
        ),
        (
            "user + status (1/20)",
            ListFilter {
                user: Some("user4".into()),
                statuses: vec![JobStatus::Pending],
                ..Default::default()
            },
        ),
        (
            "time range (1/10)",
            ListFilter {
                start_time: Some(time(mid * 1000)),
                end_time: Some(time((mid + TABLE_JOBS / 10) * 1000 - 1)),
                ..Default::default()
            },
        ),
        (
            "page of 100 after the middle",
            ListFilter {
                after: Some(job_id(mid)),
                limit: Some(100),
                ..Default::default()
            },
        ),
        (
            "tag + user, disjoint (0)",
            ListFilter {
                tags: vec!["t1".into()],
                user: Some("user2".into()),
                ..Default::default()
            },
        ),
    ];
    let mut g = c.benchmark_group(format!("list of {TABLE_JOBS} jobs"));
    for (name, filter) in &cases {
        let (_, n) = f.sm.list(filter).expect("list");
        g.throughput(Throughput::Elements(n.len().max(1) as u64));
        g.bench_with_input(BenchmarkId::new(*name, n.len()), filter, |b, filter| {
            b.iter(|| f.sm.list(filter).expect("list"))
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = bench_apply, bench_list
}
criterion_main!(benches);
