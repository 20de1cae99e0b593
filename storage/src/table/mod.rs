//! The replicated job table: key layout, deterministic `apply` and indexed queries.
//!
//! Everything lives in one ordered key space so a whole batch of applied
//! entries (jobs, indexes, `last_applied`) is written with one atomic batch:
//!
//! | prefix | key | value |
//! |---|---|---|
//! | `j/` | job id | canonical job JSON (what the API returns) |
//! | `m/` | job id | [`JobMeta`] JSON (owner, epoch, sequence, launch intent) |
//! | `xt/` | `<submissionTime>\0<id>` | — (listing order) |
//! | `xu/` | `<user>\0<submissionTime>\0<id>` | — |
//! | `xs/` | `<status>\0<submissionTime>\0<id>` | — |
//! | `xg/` | `<tag>\0<submissionTime>\0<id>` | — |
//! | `xo/` | `<owner:be64><id>` | — (non-terminal jobs per owner) |
//! | `xe/` | `<lastUpdateTime>\0<id>` | — (terminal jobs, for expiry) |
//! | `k/` | `<user>\0<key>` | [`IdempotencyRecord`] JSON |
//! | `n/` | `<node:be64>` | [`NodeRecord`] JSON |
//! | `s/` | state name | last applied log id, membership, counters |
//! | `s/count/` | `<cluster>\0<status>` | number of stored jobs (JSON u64; absent = 0) |
//!
//! Times are the leader-stamped fixed-width RFC 3339 strings
//! (`YYYY-MM-DDTHH:MM:SS.ffffffZ`), so byte order is time order.

use std::collections::BTreeMap;
use std::ops::Bound;

use serde::{Deserialize, Serialize};

use crate::command::{Command, CommandV1, ControlOp, HostedCluster, Idempotency, JobUpdate, Response};
use crate::engine::{prefix_end, EngineError, KvPairs, KvTree};
use crate::error::ErrorCode;
use crate::job::{Job, JobStatus};
use crate::NodeId;

mod apply;
mod query;

pub use apply::apply_command;
pub use query::*;

pub(crate) const KEY_LAST_APPLIED: &[u8] = b"s/last_applied";
pub(crate) const KEY_MEMBERSHIP: &[u8] = b"s/membership";
const KEY_NEXT_NODE_ID: &[u8] = b"s/next_node_id";
const KEY_IGNORED_UPDATES: &[u8] = b"s/ignored_updates";

/// Most jobs one `Expire` command removes, so no single log entry grows without bound.
pub const EXPIRE_BATCH_LIMIT: u64 = 1000;

/// Internal per-job state that is not part of the API's job object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct JobMeta {
    /// The node that runs the job.
    pub owner: NodeId,
    /// Owner epoch: bumped whenever ownership is taken away, fencing late reports of the old owner.
    pub epoch: u64,
    /// Highest update sequence number applied.
    pub seq: u64,
    /// Set once the owner committed its intent to launch (ARCHITECTURE.md, at-most-once launch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launch: Option<LaunchRecord>,
    /// The job's cluster is a shared scheduler: adopt instead of failing when the owner is lost.
    #[serde(default)]
    pub shared: bool,
    /// Control requests not yet carried out, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub controls: Vec<ControlRecord>,
    /// Control requests ever recorded (their sequence numbers).
    #[serde(default)]
    pub control_seq: u64,
}

/// A committed launch intent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaunchRecord {
    pub node: NodeId,
    pub epoch: u64,
    pub time: String,
}

/// A recorded control request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlRecord {
    pub seq: u64,
    pub operation: ControlOp,
    pub time: String,
}

/// What an `Idempotency-Key` maps to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdempotencyRecord {
    pub job_id: String,
    pub fingerprint: String,
    pub expires_at: String,
}

/// A member as the job table knows it (placement and bookkeeping, not Raft membership itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub id: NodeId,
    pub addr: String,
    pub clusters: Vec<HostedCluster>,
    #[serde(default)]
    pub draining: bool,
    /// Removed members keep a tombstone: their id is never handed out or accepted again.
    #[serde(default)]
    pub removed: bool,
    #[serde(default)]
    pub version: String,
}

impl NodeRecord {
    /// Whether this node hosts `cluster`.
    pub fn hosts(&self, cluster: &str) -> Option<&HostedCluster> {
        self.clusters.iter().find(|c| c.name == cluster)
    }
}

/// Filters of a job listing (docs/api.md). Times must be normalised to the stored format.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListFilter {
    /// Only this user's jobs; `None` means every user.
    pub user: Option<String>,
    /// Any of these statuses (empty: all).
    pub statuses: Vec<JobStatus>,
    /// All of these tags.
    pub tags: Vec<String>,
    /// submissionTime ≥ this.
    pub start_time: Option<String>,
    /// submissionTime ≤ this.
    pub end_time: Option<String>,
    /// Paging: start after this job id (in listing order).
    pub after: Option<String>,
    /// Paging: at most this many jobs.
    pub limit: Option<usize>,
}

/// Fields of a stored job needed to filter without decoding all of it.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct JobKeys {
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    status: Option<JobStatus>,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    submission_time: Option<String>,
}

/// A failure while applying that must stop the node (it would otherwise diverge).
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("stored record {key} is corrupt: {source}")]
    Corrupt { key: String, source: serde_json::Error },
    #[error(
        "log entry uses command version {0}, which this launcher-node does not know; \
         upgrade this node to the version the rest of the cluster runs"
    )]
    UnknownVersion(u64),
}

/// Reads of the table, from the committed tree or through an [`Overlay`].
pub trait TableRead {
    /// The value at `key`.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError>;
    /// Keys (with values) in `[start, end)`, ascending.
    fn range_items(&self, start: Bound<Vec<u8>>, end: Bound<Vec<u8>>) -> Result<KvPairs, EngineError>;

    /// Keys with `prefix`, ascending.
    fn prefix_items(&self, prefix: &[u8]) -> Result<KvPairs, EngineError> {
        let end = prefix_end(prefix)
            .map(Bound::Excluded)
            .unwrap_or(Bound::Unbounded);
        self.range_items(Bound::Included(prefix.to_vec()), end)
    }
}

impl<T: KvTree> TableRead for T {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        KvTree::get(self, key)
    }
    fn range_items(&self, start: Bound<Vec<u8>>, end: Bound<Vec<u8>>) -> Result<KvPairs, EngineError> {
        self.range(start, end).collect()
    }
}

/// Uncommitted writes layered over the committed tree: `apply` of a batch of
/// entries reads its own writes, then commits them as one atomic batch.
pub struct Overlay<'a, T: KvTree> {
    base: &'a T,
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

impl<'a, T: KvTree> Overlay<'a, T> {
    /// An empty overlay over `base`.
    pub fn new(base: &'a T) -> Self {
        Overlay {
            base,
            writes: BTreeMap::new(),
        }
    }
    /// Writes `value` at `key`.
    pub fn put(&mut self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.writes.insert(key.into(), Some(value.into()));
    }
    /// Deletes `key`.
    pub fn delete(&mut self, key: impl Into<Vec<u8>>) {
        self.writes.insert(key.into(), None);
    }
    /// The batch to commit.
    pub fn into_batch(self) -> crate::engine::WriteBatch {
        crate::engine::WriteBatch {
            ops: self.writes.into_iter().collect(),
        }
    }
}

impl<T: KvTree> TableRead for Overlay<'_, T> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        match self.writes.get(key) {
            Some(v) => Ok(v.clone()),
            None => KvTree::get(self.base, key),
        }
    }

    fn range_items(&self, start: Bound<Vec<u8>>, end: Bound<Vec<u8>>) -> Result<KvPairs, EngineError> {
        let mut merged: BTreeMap<Vec<u8>, Vec<u8>> = self
            .base
            .range(start.clone(), end.clone())
            .collect::<Result<_, _>>()?;
        for (k, v) in self.writes.range::<Vec<u8>, _>((start, end)) {
            match v {
                Some(v) => merged.insert(k.clone(), v.clone()),
                None => merged.remove(k),
            };
        }
        Ok(merged.into_iter().collect())
    }
}

// ---- keys -------------------------------------------------------------------------------------

fn job_key(id: &str) -> Vec<u8> {
    [b"j/", id.as_bytes()].concat()
}
fn meta_key(id: &str) -> Vec<u8> {
    [b"m/", id.as_bytes()].concat()
}
fn time_id(time: &str, id: &str) -> Vec<u8> {
    [time.as_bytes(), b"\0", id.as_bytes()].concat()
}
fn idx_time(time: &str, id: &str) -> Vec<u8> {
    [b"xt/".as_slice(), &time_id(time, id)].concat()
}
fn idx_user_prefix(user: &str) -> Vec<u8> {
    [b"xu/", user.as_bytes(), b"\0"].concat()
}
fn idx_status_prefix(status: JobStatus) -> Vec<u8> {
    [b"xs/", status.as_str().as_bytes(), b"\0"].concat()
}
fn idx_tag_prefix(tag: &str) -> Vec<u8> {
    [b"xg/", tag.as_bytes(), b"\0"].concat()
}
fn idx_owner(owner: NodeId, id: &str) -> Vec<u8> {
    [b"xo/".as_slice(), &owner.to_be_bytes(), id.as_bytes()].concat()
}
fn idx_owner_prefix(owner: NodeId) -> Vec<u8> {
    [b"xo/".as_slice(), &owner.to_be_bytes()].concat()
}
fn idx_expiry(time: &str, id: &str) -> Vec<u8> {
    [b"xe/".as_slice(), &time_id(time, id)].concat()
}
fn idem_key(user: &str, key: &str) -> Vec<u8> {
    [b"k/", user.as_bytes(), b"\0", key.as_bytes()].concat()
}
fn node_key(id: NodeId) -> Vec<u8> {
    [b"n/".as_slice(), &id.to_be_bytes()].concat()
}

fn decode<V: for<'de> Deserialize<'de>>(key: &[u8], bytes: &[u8]) -> Result<V, ApplyError> {
    serde_json::from_slice(bytes).map_err(|source| ApplyError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        source,
    })
}

fn encode<V: Serialize>(v: &V) -> Vec<u8> {
    serde_json::to_vec(v).expect("table records always serialise")
}

fn get_json<V: for<'de> Deserialize<'de>>(r: &impl TableRead, key: &[u8]) -> Result<Option<V>, ApplyError> {
    match r.get(key)? {
        Some(b) => decode(key, &b).map(Some),
        None => Ok(None),
    }
}

fn get_u64(r: &impl TableRead, key: &[u8]) -> Result<u64, ApplyError> {
    Ok(get_json::<u64>(r, key)?.unwrap_or(0))
}

/// Reads a job and its meta.
pub fn load_job(r: &impl TableRead, id: &str) -> Result<Option<(Job, JobMeta)>, ApplyError> {
    let Some(job) = get_json::<Job>(r, &job_key(id))? else {
        return Ok(None);
    };
    let meta = get_json::<JobMeta>(r, &meta_key(id))?.unwrap_or_default();
    Ok(Some((job, meta)))
}

/// Index keys a job occupies; recomputed from the job so writes and deletes stay symmetric.
fn index_keys(job: &Job, meta: &JobMeta) -> Vec<Vec<u8>> {
    let id = job.id.as_deref().unwrap_or_default();
    let time = job.submission_time.as_deref().unwrap_or_default();
    let ti = time_id(time, id);
    let mut keys = vec![idx_time(time, id)];
    if let Some(user) = &job.user {
        keys.push([idx_user_prefix(user), ti.clone()].concat());
    }
    keys.push([idx_status_prefix(job.status()), ti.clone()].concat());
    let mut tags: Vec<&String> = job.tags.iter().collect();
    tags.sort();
    tags.dedup();
    for tag in tags {
        keys.push([idx_tag_prefix(tag), ti.clone()].concat());
    }
    if job.status().is_terminal() {
        keys.push(idx_expiry(
            job.last_update_time.as_deref().unwrap_or_default(),
            id,
        ));
    } else {
        keys.push(idx_owner(meta.owner, id));
    }
    keys
}

const COUNT_PREFIX: &[u8] = b"s/count/";

fn count_key(job: &Job) -> Vec<u8> {
    [
        COUNT_PREFIX,
        job.cluster.as_bytes(),
        b"\0",
        job.status().as_str().as_bytes(),
    ]
    .concat()
}

/// Adds `delta` to the stored-job count of `job`'s cluster and status (a zero count is deleted,
/// so the key space holds only live pairs).
fn bump_count<T: KvTree>(tx: &mut Overlay<'_, T>, job: &Job, delta: i64) -> Result<(), ApplyError> {
    let key = count_key(job);
    let n = get_u64(tx, &key)?.saturating_add_signed(delta);
    if n == 0 {
        tx.delete(key);
    } else {
        tx.put(key, encode(&n));
    }
    Ok(())
}

/// Stored jobs by (cluster, status), in key order: maintained by `apply`, so reading them costs
/// one short prefix scan however many jobs are stored.
pub fn job_counts(r: &impl TableRead) -> Result<Vec<(String, JobStatus, u64)>, ApplyError> {
    let mut out = Vec::new();
    for (k, v) in r.prefix_items(COUNT_PREFIX)? {
        let rest = String::from_utf8_lossy(&k[COUNT_PREFIX.len()..]).into_owned();
        let Some((cluster, status)) = rest.split_once('\0') else {
            continue;
        };
        let Some(status) = JobStatus::parse(status) else {
            continue;
        };
        out.push((cluster.to_string(), status, decode::<u64>(&k, &v)?));
    }
    Ok(out)
}

/// Writes a job and its meta, moving its index entries from `old` (if any).
fn store_job<T: KvTree>(
    tx: &mut Overlay<'_, T>,
    old: Option<(&Job, &JobMeta)>,
    job: &Job,
    meta: &JobMeta,
) -> Result<(), ApplyError> {
    let id = job.id.as_deref().unwrap_or_default();
    let new_keys = index_keys(job, meta);
    if let Some((oj, om)) = old {
        for k in index_keys(oj, om) {
            if !new_keys.contains(&k) {
                tx.delete(k);
            }
        }
    }
    for k in new_keys {
        tx.put(k, Vec::new());
    }
    if old.map(|(oj, _)| count_key(oj)) != Some(count_key(job)) {
        if let Some((oj, _)) = old {
            bump_count(tx, oj, -1)?;
        }
        bump_count(tx, job, 1)?;
    }
    tx.put(job_key(id), job.to_canonical());
    tx.put(meta_key(id), encode(meta));
    Ok(())
}

fn remove_job<T: KvTree>(tx: &mut Overlay<'_, T>, job: &Job, meta: &JobMeta) -> Result<(), ApplyError> {
    let id = job.id.as_deref().unwrap_or_default();
    for k in index_keys(job, meta) {
        tx.delete(k);
    }
    bump_count(tx, job, -1)?;
    tx.delete(job_key(id));
    tx.delete(meta_key(id));
    Ok(())
}

/// Times never go backwards: a stamped time earlier than the stored one keeps the stored one.
fn later(stored: &Option<String>, stamped: &str) -> String {
    match stored {
        Some(s) if s.as_str() > stamped => s.clone(),
        _ => stamped.to_string(),
    }
}

fn job_response(job: &Job, created: bool) -> Response {
    Response::Job {
        job: String::from_utf8(job.to_canonical()).expect("JSON is UTF-8"),
        created,
    }
}

fn applied(changed: bool) -> Response {
    Response::Applied {
        changed,
        count: u64::from(changed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{KvEngine, SledEngine, SledOptions};

    fn engine() -> (tempfile::TempDir, <SledEngine as KvEngine>::Tree) {
        let dir = tempfile::tempdir().unwrap();
        let e = SledEngine::open(dir.path(), &SledOptions::default()).unwrap();
        let t = e.open_tree("sm").unwrap();
        (dir, t)
    }

    fn run<T: KvTree>(t: &T, cmd: CommandV1) -> Response {
        let mut tx = Overlay::new(t);
        let r = apply_command(&mut tx, &Command::V1(cmd)).unwrap();
        t.write(tx.into_batch()).unwrap();
        r
    }

    fn time(s: u32) -> String {
        format!("2026-01-01T00:00:{s:02}.000000Z")
    }

    fn register<T: KvTree>(t: &T, id: NodeId) {
        let clusters = vec![
            HostedCluster {
                name: "Local".into(),
                shared: false,
            },
            HostedCluster {
                name: "Slurm".into(),
                shared: true,
            },
        ];
        let r = run(
            t,
            CommandV1::RegisterNode {
                id,
                addr: format!("n{id}"),
                clusters,
                version: "t".into(),
            },
        );
        assert!(matches!(r, Response::Applied { .. }), "{r:?}");
    }

    fn submit_job<T: KvTree>(
        t: &T,
        id: &str,
        user: &str,
        sec: u32,
        tags: &[&str],
        idem: Option<&str>,
    ) -> Response {
        let job = Job {
            id: Some(id.into()),
            name: format!("job {id}"),
            cluster: "Local".into(),
            user: Some(user.into()),
            command: Some("true".into()),
            tags: tags.iter().map(|s| s.to_string()).collect(),
            submission_time: Some(time(sec)),
            ..Default::default()
        };
        let idempotency = idem.map(|k| Idempotency {
            key: k.into(),
            fingerprint: "fp".into(),
            expires_at: "2026-01-02T00:00:00.000000Z".into(),
        });
        run(
            t,
            CommandV1::Submit {
                job: Box::new(job),
                owner: 1,
                idempotency,
            },
        )
    }

    fn upd(id: &str, seq: u64, status: JobStatus) -> CommandV1 {
        CommandV1::Update(JobUpdate {
            id: id.into(),
            node: 1,
            epoch: 1,
            seq,
            time: time(30 + seq as u32),
            status: Some(status),
            ..Default::default()
        })
    }

    fn ids(list: Vec<Vec<u8>>) -> Vec<String> {
        list.iter()
            .map(|b| Job::from_canonical(b).unwrap().id.unwrap())
            .collect()
    }

    fn submit_cmd(id: &str, sec: u32, idem: Option<&str>) -> CommandV1 {
        CommandV1::Submit {
            job: Box::new(Job {
                id: Some(id.into()),
                name: format!("job {id}"),
                cluster: "Local".into(),
                user: Some("alice".into()),
                command: Some("true".into()),
                submission_time: Some(time(sec)),
                ..Default::default()
            }),
            owner: 1,
            idempotency: idem.map(|k| Idempotency {
                key: k.into(),
                fingerprint: "fp".into(),
                expires_at: "2026-01-02T00:00:00.000000Z".into(),
            }),
        }
    }

    /// A batch applies its commands in order, each seeing the ones before it (an idempotent
    /// retry inside the same batch finds the first job), gives one response per command, a
    /// refused command leaves the others applied, and a nested batch is refused; the table
    /// ends as if the commands had been separate entries.
    #[test]
    fn a_batch_applies_like_consecutive_commands() {
        let (_d, batched) = engine();
        let (_e, single) = engine();
        register(&batched, 1);
        register(&single, 1);
        let cmds = vec![
            submit_cmd("a", 1, Some("k")),
            submit_cmd("b", 2, Some("k")),
            upd("a", 1, JobStatus::Running),
            CommandV1::Delete { id: "missing".into() },
            CommandV1::Batch(vec![submit_cmd("c", 3, None)]),
            submit_cmd("d", 4, None),
        ];
        let r = run(&batched, CommandV1::Batch(cmds.clone()));
        let Response::Batch { responses } = r else {
            panic!("a batch answers with a batch: {r:?}")
        };
        assert_eq!(responses.len(), cmds.len());
        assert!(
            matches!(&responses[0], Response::Job { created: true, .. }),
            "{responses:?}"
        );
        // Same key, same user: the retry finds job a, created nothing.
        match &responses[1] {
            Response::Job { job, created: false } => {
                assert_eq!(
                    Job::from_canonical(job.as_bytes()).unwrap().id.as_deref(),
                    Some("a")
                )
            }
            other => panic!("idempotent retry in a batch: {other:?}"),
        }
        assert!(
            matches!(&responses[2], Response::Applied { changed: true, .. }),
            "{responses:?}"
        );
        assert!(matches!(&responses[3], Response::Error { .. }), "{responses:?}");
        assert!(
            matches!(
                &responses[4],
                Response::Error {
                    code: ErrorCode::InvalidRequest,
                    ..
                }
            ),
            "{responses:?}"
        );
        assert!(
            matches!(&responses[5], Response::Job { created: true, .. }),
            "{responses:?}"
        );
        let one_by_one: Vec<Response> = cmds.into_iter().map(|c| run(&single, c)).collect();
        assert_eq!(&one_by_one[..4], &responses[..4]);
        assert_eq!(one_by_one[5], responses[5]);
        let all = |t: &<SledEngine as KvEngine>::Tree| ids(list_jobs(t, &ListFilter::default()).unwrap());
        assert_eq!(all(&batched), vec!["a", "d"]);
        // The nested batch's job exists only where it was applied alone.
        assert_eq!(all(&single), vec!["a", "c", "d"]);
    }

    #[test]
    fn submit_requires_a_hosting_owner() {
        let (_d, t) = engine();
        let r = submit_job(&t, "a", "alice", 1, &[], None);
        assert!(
            matches!(
                r,
                Response::Error {
                    code: ErrorCode::InvalidRequest,
                    ..
                }
            ),
            "{r:?}"
        );
        register(&t, 1);
        assert!(matches!(
            submit_job(&t, "a", "alice", 1, &[], None),
            Response::Job { created: true, .. }
        ));
        let dup = submit_job(&t, "a", "alice", 1, &[], None);
        assert!(
            matches!(
                dup,
                Response::Error {
                    code: ErrorCode::InvalidRequest,
                    ..
                }
            ),
            "{dup:?}"
        );
    }

    #[test]
    fn idempotent_retry_returns_first_job() {
        let (_d, t) = engine();
        register(&t, 1);
        let first = submit_job(&t, "a", "alice", 1, &[], Some("k1"));
        let Response::Job {
            job: j1,
            created: true,
        } = first
        else {
            panic!("{first:?}")
        };
        let again = submit_job(&t, "b", "alice", 2, &[], Some("k1"));
        assert_eq!(
            again,
            Response::Job {
                job: j1,
                created: false
            }
        );
        // another user's key space is separate
        assert!(matches!(
            submit_job(&t, "c", "bob", 3, &[], Some("k1")),
            Response::Job { created: true, .. }
        ));
        assert_eq!(
            ids(list_jobs(&t, &ListFilter::default()).unwrap()),
            vec!["a", "c"]
        );
    }

    #[test]
    fn updates_only_move_forward() {
        let (_d, t) = engine();
        register(&t, 1);
        submit_job(&t, "a", "alice", 1, &[], None);
        assert_eq!(run(&t, upd("a", 1, JobStatus::Running)), applied(true));
        assert_eq!(run(&t, upd("a", 2, JobStatus::Suspended)), applied(true));
        // late retry of an older update: ignored
        assert_eq!(run(&t, upd("a", 1, JobStatus::Running)), applied(false));
        assert_eq!(run(&t, upd("a", 3, JobStatus::Running)), applied(true));
        // backwards
        assert_eq!(run(&t, upd("a", 4, JobStatus::Pending)), applied(false));
        let mut fin = upd("a", 5, JobStatus::Finished);
        if let CommandV1::Update(u) = &mut fin {
            u.exit_code = Some(3);
        }
        assert_eq!(run(&t, fin), applied(true));
        // terminal never changes
        let mut again = upd("a", 6, JobStatus::Failed);
        if let CommandV1::Update(u) = &mut again {
            u.exit_code = Some(1);
        }
        assert_eq!(run(&t, again), applied(false));
        // stale epoch
        let mut stale = upd("a", 9, JobStatus::Running);
        if let CommandV1::Update(u) = &mut stale {
            u.epoch = 0;
        }
        assert_eq!(run(&t, stale), applied(false));
        let (job, _) = load_job(&t, "a").unwrap().unwrap();
        assert_eq!(job.status, Some(JobStatus::Finished));
        assert_eq!(job.exit_code, Some(3));
        assert_eq!(ignored_updates(&t).unwrap(), 4);
        assert_eq!(
            ids(list_jobs(
                &t,
                &ListFilter {
                    statuses: vec![JobStatus::Finished],
                    ..Default::default()
                }
            )
            .unwrap()),
            vec!["a"]
        );
        assert!(list_jobs(
            &t,
            &ListFilter {
                statuses: vec![JobStatus::Running],
                ..Default::default()
            }
        )
        .unwrap()
        .is_empty());
    }

    #[test]
    fn listing_filters_and_pages_through_indexes() {
        let (_d, t) = engine();
        register(&t, 1);
        submit_job(&t, "a", "alice", 1, &["x", "y"], None);
        submit_job(&t, "b", "bob", 2, &["x"], None);
        submit_job(&t, "c", "alice", 3, &["y"], None);
        submit_job(&t, "d", "alice", 4, &["x", "y"], None);
        run(&t, upd("b", 1, JobStatus::Running));
        let all = ListFilter::default();
        assert_eq!(ids(list_jobs(&t, &all).unwrap()), vec!["a", "b", "c", "d"]);
        let alice = ListFilter {
            user: Some("alice".into()),
            ..Default::default()
        };
        assert_eq!(ids(list_jobs(&t, &alice).unwrap()), vec!["a", "c", "d"]);
        let tags = ListFilter {
            tags: vec!["x".into(), "y".into()],
            ..Default::default()
        };
        assert_eq!(ids(list_jobs(&t, &tags).unwrap()), vec!["a", "d"]);
        let window = ListFilter {
            start_time: Some(time(2)),
            end_time: Some(time(3)),
            ..Default::default()
        };
        assert_eq!(ids(list_jobs(&t, &window).unwrap()), vec!["b", "c"]);
        let statuses = ListFilter {
            statuses: vec![JobStatus::Running, JobStatus::Pending],
            ..Default::default()
        };
        assert_eq!(ids(list_jobs(&t, &statuses).unwrap()), vec!["a", "b", "c", "d"]);
        let page = ListFilter {
            after: Some("b".into()),
            limit: Some(1),
            ..Default::default()
        };
        assert_eq!(ids(list_jobs(&t, &page).unwrap()), vec!["c"]);
        let page = ListFilter {
            user: Some("alice".into()),
            after: Some("a".into()),
            ..Default::default()
        };
        assert_eq!(ids(list_jobs(&t, &page).unwrap()), vec!["c", "d"]);
    }

    /// Control requests wait in the job's queue until its owner (at its current epoch) says
    /// they are done, in order; repeating that is harmless; the job's end clears the rest.
    #[test]
    fn controls_leave_the_queue_when_their_owner_marks_them_done() {
        let (_d, t) = engine();
        register(&t, 1);
        register(&t, 2);
        submit_job(&t, "a", "alice", 1, &[], None);
        run(&t, upd("a", 1, JobStatus::Running));
        for (op, sec) in [(ControlOp::Suspend, 2), (ControlOp::Kill, 3)] {
            let r = run(
                &t,
                CommandV1::Control {
                    id: "a".into(),
                    operation: op,
                    time: time(sec),
                },
            );
            assert_eq!(
                r,
                Response::Applied {
                    changed: true,
                    count: 0
                }
            );
        }
        assert_eq!(pending_controls(&t, None).unwrap(), vec![("a".to_string(), 2)]);
        assert_eq!(pending_controls(&t, Some(1)).unwrap().len(), 1);
        assert!(pending_controls(&t, Some(2)).unwrap().is_empty());
        let done = |node, epoch, seq| CommandV1::ControlDone {
            id: "a".into(),
            node,
            epoch,
            seq,
        };
        // Not the owner, or an old epoch of it: refused, nothing changes.
        for (node, epoch) in [(2, 1), (1, 2)] {
            let r = run(&t, done(node, epoch, 2));
            assert!(
                matches!(
                    r,
                    Response::Error {
                        code: ErrorCode::InvalidJobState,
                        ..
                    }
                ),
                "{r:?}"
            );
        }
        assert_eq!(
            run(&t, done(1, 1, 1)),
            Response::Applied {
                changed: true,
                count: 1
            }
        );
        assert_eq!(
            run(&t, done(1, 1, 1)),
            Response::Applied {
                changed: false,
                count: 0
            }
        );
        let meta = load_job(&t, "a").unwrap().unwrap().1;
        assert_eq!(meta.controls.len(), 1);
        assert_eq!(meta.controls[0].operation, ControlOp::Kill);
        run(&t, upd("a", 2, JobStatus::Killed));
        assert!(pending_controls(&t, None).unwrap().is_empty());
        assert!(matches!(
            run(&t, done(1, 1, 9)),
            Response::Applied { changed: false, .. }
        ));
        assert!(matches!(
            run(
                &t,
                CommandV1::ControlDone {
                    id: "gone".into(),
                    node: 1,
                    epoch: 1,
                    seq: 1
                }
            ),
            Response::Error {
                code: ErrorCode::JobNotFound,
                ..
            }
        ));
    }

    #[test]
    fn cancel_pending_and_delete_and_expire() {
        let (_d, t) = engine();
        register(&t, 1);
        submit_job(&t, "a", "alice", 1, &[], Some("k"));
        let r = run(&t, CommandV1::Delete { id: "a".into() });
        assert!(matches!(
            r,
            Response::Error {
                code: ErrorCode::InvalidJobState,
                ..
            }
        ));
        let r = run(
            &t,
            CommandV1::Control {
                id: "a".into(),
                operation: ControlOp::Suspend,
                time: time(2),
            },
        );
        assert!(
            matches!(
                r,
                Response::Error {
                    code: ErrorCode::JobNotRunning,
                    ..
                }
            ),
            "{r:?}"
        );
        run(
            &t,
            CommandV1::Control {
                id: "a".into(),
                operation: ControlOp::Cancel,
                time: time(2),
            },
        );
        assert_eq!(
            load_job(&t, "a").unwrap().unwrap().0.status,
            Some(JobStatus::Canceled)
        );
        // an owner update after the cancel cannot revive it
        assert_eq!(run(&t, upd("a", 1, JobStatus::Running)), applied(false));
        submit_job(&t, "b", "alice", 3, &[], None);
        run(
            &t,
            CommandV1::Control {
                id: "b".into(),
                operation: ControlOp::Cancel,
                time: time(4),
            },
        );
        let r = run(
            &t,
            CommandV1::Expire {
                cutoff: time(3),
                now: time(3),
            },
        );
        assert_eq!(
            r,
            Response::Applied {
                changed: true,
                count: 1
            }
        );
        assert!(load_job(&t, "a").unwrap().is_none());
        assert!(load_job(&t, "b").unwrap().is_some());
        // the idempotency key outlives the job until it expires itself
        let retry = submit_job(&t, "z", "alice", 9, &[], Some("k"));
        assert!(
            matches!(
                retry,
                Response::Error {
                    code: ErrorCode::InvalidJobState,
                    ..
                }
            ),
            "{retry:?}"
        );
        run(
            &t,
            CommandV1::Expire {
                cutoff: time(3),
                now: "2026-01-03T00:00:00.000000Z".into(),
            },
        );
        assert!(matches!(
            submit_job(&t, "z", "alice", 9, &[], Some("k")),
            Response::Job { created: true, .. }
        ));
        assert_eq!(
            ids(list_jobs(&t, &ListFilter::default()).unwrap()),
            vec!["b", "z"]
        );
        let counts = |t: &_| -> Vec<(String, JobStatus, u64)> { job_counts(t).unwrap() };
        let local = |status, n| ("Local".to_string(), status, n);
        assert_eq!(
            counts(&t),
            vec![local(JobStatus::Canceled, 1), local(JobStatus::Pending, 1)],
            "the counts follow every submit, status change and expiry"
        );
        run(&t, upd("z", 1, JobStatus::Running));
        run(&t, CommandV1::Delete { id: "b".into() });
        assert_eq!(ids(list_jobs(&t, &ListFilter::default()).unwrap()), vec!["z"]);
        assert_eq!(counts(&t), vec![local(JobStatus::Running, 1)], "and deletes");
    }

    #[test]
    fn node_lost_fails_local_and_hands_over_shared_jobs() {
        let (_d, t) = engine();
        register(&t, 1);
        register(&t, 2);
        submit_job(&t, "a", "alice", 1, &[], None);
        let slurm = Job {
            id: Some("s".into()),
            name: "s".into(),
            cluster: "Slurm".into(),
            user: Some("alice".into()),
            command: Some("x".into()),
            submission_time: Some(time(2)),
            ..Default::default()
        };
        run(
            &t,
            CommandV1::Submit {
                job: Box::new(slurm),
                owner: 1,
                idempotency: None,
            },
        );
        let r = run(
            &t,
            CommandV1::NodeLost {
                node: 1,
                time: time(5),
                adopters: vec![("Slurm".into(), 2)],
            },
        );
        assert_eq!(
            r,
            Response::Applied {
                changed: true,
                count: 2
            }
        );
        let (a, am) = load_job(&t, "a").unwrap().unwrap();
        assert_eq!(
            (a.status, a.status_message.as_deref(), am.epoch),
            (Some(JobStatus::Failed), Some("node lost"), 2)
        );
        let (s, sm) = load_job(&t, "s").unwrap().unwrap();
        assert_eq!((s.status, sm.owner, sm.epoch), (Some(JobStatus::Pending), 2, 2));
        // the old owner's late report is fenced off by the epoch
        assert_eq!(run(&t, upd("s", 1, JobStatus::Running)), applied(false));
        assert_eq!(active_job_ids(&t, 2).unwrap(), vec!["s"]);
        assert!(active_job_ids(&t, 1).unwrap().is_empty());
    }

    #[test]
    fn node_ids_are_never_reused() {
        let (_d, t) = engine();
        register(&t, 1);
        register(&t, 3);
        assert_eq!(
            run(&t, CommandV1::AllocateNodeId { addr: "x".into() }),
            Response::NodeId { id: 4 }
        );
        run(&t, CommandV1::RemoveNode { node: 4 });
        assert_eq!(
            run(&t, CommandV1::AllocateNodeId { addr: "y".into() }),
            Response::NodeId { id: 5 }
        );
        let r = run(
            &t,
            CommandV1::RegisterNode {
                id: 4,
                addr: "x".into(),
                clusters: vec![],
                version: "t".into(),
            },
        );
        assert!(matches!(r, Response::Error { .. }));
    }

    #[test]
    fn unknown_command_version_stops_apply() {
        let (_d, t) = engine();
        let mut tx = Overlay::new(&t);
        let cmd = Command::Unknown {
            version: 7,
            raw: serde_json::json!({"v":7}),
        };
        assert!(matches!(
            apply_command(&mut tx, &cmd),
            Err(ApplyError::UnknownVersion(7))
        ));
    }
}
