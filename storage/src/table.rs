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

// ---- apply ------------------------------------------------------------------------------------

/// Applies one command. Deterministic: reads only the table and the command.
pub fn apply_command<T: KvTree>(tx: &mut Overlay<'_, T>, cmd: &Command) -> Result<Response, ApplyError> {
    match cmd {
        Command::V1(CommandV1::Batch(cmds)) => {
            let mut responses = Vec::with_capacity(cmds.len());
            for c in cmds {
                responses.push(apply_v1(tx, c)?);
            }
            Ok(Response::Batch { responses })
        }
        Command::V1(c) => apply_v1(tx, c),
        Command::Unknown { version, .. } => Err(ApplyError::UnknownVersion(*version)),
    }
}

fn apply_v1<T: KvTree>(tx: &mut Overlay<'_, T>, cmd: &CommandV1) -> Result<Response, ApplyError> {
    match cmd {
        CommandV1::Submit {
            job,
            owner,
            idempotency,
        } => submit(tx, job, *owner, idempotency.as_ref()),
        CommandV1::LaunchIntent {
            id,
            node,
            epoch,
            time,
        } => launch_intent(tx, id, *node, *epoch, time),
        CommandV1::Update(u) => update(tx, u),
        CommandV1::Control { id, operation, time } => control(tx, id, *operation, time),
        CommandV1::ControlDone { id, node, epoch, seq } => control_done(tx, id, *node, *epoch, *seq),
        CommandV1::Delete { id } => delete(tx, id),
        CommandV1::Expire { cutoff, now } => expire(tx, cutoff, now),
        CommandV1::NodeLost { node, time, adopters } => node_lost(tx, *node, time, adopters),
        CommandV1::RegisterNode {
            id,
            addr,
            clusters,
            version,
        } => register_node(tx, *id, addr, clusters, version),
        CommandV1::AllocateNodeId { .. } => allocate_node_id(tx),
        CommandV1::SetDraining { node, draining } => set_draining(tx, *node, *draining),
        CommandV1::RemoveNode { node } => remove_node(tx, *node),
        // Unpacked by `apply_command`; the leader never nests them, and a nested one is refused.
        CommandV1::Batch(_) => Ok(Response::error(
            ErrorCode::InvalidRequest,
            "a batch cannot hold a batch",
        )),
    }
}

fn submit<T: KvTree>(
    tx: &mut Overlay<'_, T>,
    job: &Job,
    owner: NodeId,
    idem: Option<&Idempotency>,
) -> Result<Response, ApplyError> {
    let (Some(id), Some(user), Some(_)) = (&job.id, &job.user, &job.submission_time) else {
        return Ok(Response::error(
            ErrorCode::InvalidRequest,
            "submit is missing its leader-stamped id, user or time",
        ));
    };
    if let Err(msg) = job.validate_submission() {
        return Ok(Response::error(ErrorCode::InvalidRequest, msg));
    }
    if let Some(idem) = idem {
        let key = idem_key(user, &idem.key);
        if let Some(rec) = get_json::<IdempotencyRecord>(tx, &key)? {
            if rec.fingerprint != idem.fingerprint {
                return Ok(Response::error(
                    ErrorCode::InvalidJobState,
                    format!(
                        "Idempotency-Key '{}' was already used for a different request (job {})",
                        idem.key, rec.job_id
                    ),
                ));
            }
            return Ok(match load_job(tx, &rec.job_id)? {
                Some((existing, _)) => job_response(&existing, false),
                None => Response::error(
                    ErrorCode::InvalidJobState,
                    format!(
                        "job {} created under this Idempotency-Key has since been deleted",
                        rec.job_id
                    ),
                ),
            });
        }
    }
    if tx.get(&job_key(id))?.is_some() {
        return Ok(Response::error(
            ErrorCode::InvalidRequest,
            format!("job id {id} is already in use"),
        ));
    }
    let node = get_json::<NodeRecord>(tx, &node_key(owner))?;
    let Some(hosted) = node
        .as_ref()
        .filter(|n| !n.removed)
        .and_then(|n| n.hosts(&job.cluster))
        .cloned()
    else {
        return Ok(Response::error(
            ErrorCode::InvalidRequest,
            format!(
                "node {owner} cannot own the job: it is not a member hosting cluster '{}'",
                job.cluster
            ),
        ));
    };
    let mut stored = job.clone();
    stored.status = Some(JobStatus::Pending);
    if stored.last_update_time.is_none() {
        stored.last_update_time = stored.submission_time.clone();
    }
    let meta = JobMeta {
        owner,
        epoch: 1,
        shared: hosted.shared,
        ..Default::default()
    };
    store_job(tx, None, &stored, &meta)?;
    if let Some(idem) = idem {
        let rec = IdempotencyRecord {
            job_id: id.clone(),
            fingerprint: idem.fingerprint.clone(),
            expires_at: idem.expires_at.clone(),
        };
        tx.put(idem_key(user, &idem.key), encode(&rec));
    }
    Ok(job_response(&stored, true))
}

fn launch_intent<T: KvTree>(
    tx: &mut Overlay<'_, T>,
    id: &str,
    node: NodeId,
    epoch: u64,
    time: &str,
) -> Result<Response, ApplyError> {
    let Some((job, mut meta)) = load_job(tx, id)? else {
        return Ok(Response::error(
            ErrorCode::JobNotFound,
            format!("job {id} not found"),
        ));
    };
    if meta.owner != node || meta.epoch != epoch {
        return Ok(Response::error(
            ErrorCode::InvalidJobState,
            format!("node {node} (epoch {epoch}) no longer owns job {id}"),
        ));
    }
    if job.status() != JobStatus::Pending || meta.launch.is_some() {
        return Ok(Response::error(
            ErrorCode::InvalidJobState,
            format!("job {id} is {} and cannot be launched again", job.status()),
        ));
    }
    meta.launch = Some(LaunchRecord {
        node,
        epoch,
        time: time.to_string(),
    });
    tx.put(meta_key(id), encode(&meta));
    Ok(job_response(&job, false))
}

fn bump_ignored<T: KvTree>(tx: &mut Overlay<'_, T>) -> Result<Response, ApplyError> {
    let n = get_u64(tx, KEY_IGNORED_UPDATES)? + 1;
    tx.put(KEY_IGNORED_UPDATES, encode(&n));
    Ok(applied(false))
}

fn update<T: KvTree>(tx: &mut Overlay<'_, T>, u: &JobUpdate) -> Result<Response, ApplyError> {
    let Some((old, old_meta)) = load_job(tx, &u.id)? else {
        return Ok(Response::error(
            ErrorCode::JobNotFound,
            format!("job {} not found", u.id),
        ));
    };
    let current = old.status();
    let stale = old_meta.owner != u.node || old_meta.epoch != u.epoch || u.seq <= old_meta.seq;
    let backwards = matches!(u.status, Some(next) if next != current && !current.may_become(next));
    if stale || backwards || current.is_terminal() {
        return bump_ignored(tx);
    }
    let mut job = old.clone();
    let mut meta = old_meta.clone();
    meta.seq = u.seq;
    if let Some(next) = u.status {
        job.status = Some(next);
        if next.is_terminal() {
            meta.controls.clear();
        }
    }
    if u.status_message.is_some() {
        job.status_message = u.status_message.clone();
    }
    if u.status_code.is_some() {
        job.status_code = u.status_code.clone();
    }
    if u.pid.is_some() {
        job.pid = u.pid;
    }
    if u.exit_code.is_some() {
        job.exit_code = u.exit_code;
    }
    if u.plugin_job_id.is_some() {
        job.plugin_job_id = u.plugin_job_id.clone();
    }
    if u.host.is_some() {
        job.host = u.host.clone();
    }
    job.last_update_time = Some(later(&old.last_update_time, &u.time));
    store_job(tx, Some((&old, &old_meta)), &job, &meta)?;
    Ok(applied(true))
}

fn control<T: KvTree>(
    tx: &mut Overlay<'_, T>,
    id: &str,
    op: ControlOp,
    time: &str,
) -> Result<Response, ApplyError> {
    let Some((old, old_meta)) = load_job(tx, id)? else {
        return Ok(Response::error(
            ErrorCode::JobNotFound,
            format!("job {id} not found"),
        ));
    };
    let status = old.status();
    if status.is_terminal() {
        return Ok(Response::error(
            ErrorCode::InvalidJobState,
            format!("job {id} has already ended ({status})"),
        ));
    }
    let allowed = match op {
        ControlOp::Cancel => status == JobStatus::Pending,
        ControlOp::Suspend => status == JobStatus::Running,
        ControlOp::Resume => status == JobStatus::Suspended,
        ControlOp::Stop | ControlOp::Kill => matches!(status, JobStatus::Running | JobStatus::Suspended),
    };
    if !allowed {
        let (code, why) = match op {
            ControlOp::Cancel => (
                ErrorCode::InvalidJobState,
                "only a Pending job can be canceled; use stop or kill",
            ),
            ControlOp::Resume => (ErrorCode::InvalidJobState, "only a Suspended job can be resumed"),
            _ => (ErrorCode::JobNotRunning, "the job is not running"),
        };
        return Ok(Response::error(
            code,
            format!("cannot {op:?} job {id} ({status}): {why}").to_lowercase(),
        ));
    }
    let mut job = old.clone();
    let mut meta = old_meta.clone();
    if op == ControlOp::Cancel && meta.launch.is_none() {
        // Not yet handed to a plugin: nothing runs, so the table alone ends it.
        job.status = Some(JobStatus::Canceled);
        job.status_message = Some("Canceled by user".into());
        job.last_update_time = Some(later(&old.last_update_time, time));
        store_job(tx, Some((&old, &old_meta)), &job, &meta)?;
        return Ok(Response::Applied {
            changed: true,
            count: 1,
        });
    }
    meta.control_seq += 1;
    meta.controls.push(ControlRecord {
        seq: meta.control_seq,
        operation: op,
        time: time.to_string(),
    });
    tx.put(meta_key(id), encode(&meta));
    Ok(Response::Applied {
        changed: true,
        count: 0,
    })
}

fn control_done<T: KvTree>(
    tx: &mut Overlay<'_, T>,
    id: &str,
    node: NodeId,
    epoch: u64,
    seq: u64,
) -> Result<Response, ApplyError> {
    let Some((_, mut meta)) = load_job(tx, id)? else {
        return Ok(Response::error(
            ErrorCode::JobNotFound,
            format!("job {id} not found"),
        ));
    };
    if meta.owner != node || meta.epoch != epoch {
        return Ok(Response::error(
            ErrorCode::InvalidJobState,
            format!("node {node} (epoch {epoch}) no longer owns job {id}"),
        ));
    }
    let before = meta.controls.len();
    meta.controls.retain(|c| c.seq > seq);
    let removed = (before - meta.controls.len()) as u64;
    if removed > 0 {
        tx.put(meta_key(id), encode(&meta));
    }
    Ok(Response::Applied {
        changed: removed > 0,
        count: removed,
    })
}

fn delete<T: KvTree>(tx: &mut Overlay<'_, T>, id: &str) -> Result<Response, ApplyError> {
    let Some((job, meta)) = load_job(tx, id)? else {
        return Ok(Response::error(
            ErrorCode::JobNotFound,
            format!("job {id} not found"),
        ));
    };
    if !job.status().is_terminal() {
        return Ok(Response::error(
            ErrorCode::InvalidJobState,
            format!(
                "job {id} is {}; only a job that has ended can be deleted",
                job.status()
            ),
        ));
    }
    remove_job(tx, &job, &meta)?;
    Ok(applied(true))
}

fn expire<T: KvTree>(tx: &mut Overlay<'_, T>, cutoff: &str, now: &str) -> Result<Response, ApplyError> {
    let mut removed = 0u64;
    let end = Bound::Excluded([b"xe/", cutoff.as_bytes()].concat());
    for (k, _) in tx.range_items(Bound::Included(b"xe/".to_vec()), end)? {
        if removed >= EXPIRE_BATCH_LIMIT {
            break;
        }
        let Some(pos) = k.iter().position(|b| *b == 0) else {
            continue;
        };
        let id = String::from_utf8_lossy(&k[pos + 1..]).into_owned();
        if let Some((job, meta)) = load_job(tx, &id)? {
            remove_job(tx, &job, &meta)?;
            removed += 1;
        } else {
            tx.delete(k);
        }
    }
    for (k, v) in tx.prefix_items(b"k/")? {
        let rec: IdempotencyRecord = decode(&k, &v)?;
        if rec.expires_at.as_str() <= now {
            tx.delete(k);
        }
    }
    Ok(Response::Applied {
        changed: removed > 0,
        count: removed,
    })
}

fn node_lost<T: KvTree>(
    tx: &mut Overlay<'_, T>,
    node: NodeId,
    time: &str,
    adopters: &[(String, NodeId)],
) -> Result<Response, ApplyError> {
    if get_json::<NodeRecord>(tx, &node_key(node))?.is_none() {
        return Ok(Response::error(
            ErrorCode::InvalidRequest,
            format!("node {node} is not a member"),
        ));
    }
    let prefix = idx_owner_prefix(node);
    let mut count = 0;
    for (k, _) in tx.prefix_items(&prefix)? {
        let id = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
        let Some((old, old_meta)) = load_job(tx, &id)? else {
            continue;
        };
        if old.status().is_terminal() {
            continue;
        }
        let mut job = old.clone();
        let mut meta = old_meta.clone();
        meta.epoch += 1;
        let adopter = adopters
            .iter()
            .find(|(c, n)| *c == old.cluster && *n != node)
            .map(|(_, n)| *n);
        match (meta.shared, adopter) {
            (true, Some(new_owner)) => {
                meta.owner = new_owner;
                // The adopter looks the job up in the shared scheduler by its tag; the old intent stands.
            }
            _ => {
                job.status = Some(JobStatus::Failed);
                job.status_message = Some("node lost".into());
                job.last_update_time = Some(later(&old.last_update_time, time));
                meta.controls.clear();
            }
        }
        store_job(tx, Some((&old, &old_meta)), &job, &meta)?;
        count += 1;
    }
    Ok(Response::Applied {
        changed: count > 0,
        count,
    })
}

fn bump_node_counter<T: KvTree>(tx: &mut Overlay<'_, T>, at_least: NodeId) -> Result<(), ApplyError> {
    let next = get_u64(tx, KEY_NEXT_NODE_ID)?.max(1);
    if at_least >= next {
        tx.put(KEY_NEXT_NODE_ID, encode(&(at_least + 1)));
    }
    Ok(())
}

fn register_node<T: KvTree>(
    tx: &mut Overlay<'_, T>,
    id: NodeId,
    addr: &str,
    clusters: &[HostedCluster],
    version: &str,
) -> Result<Response, ApplyError> {
    if id == 0 {
        return Ok(Response::error(
            ErrorCode::InvalidRequest,
            "node id 0 is not valid; ids are positive",
        ));
    }
    let existing = get_json::<NodeRecord>(tx, &node_key(id))?;
    if existing.as_ref().is_some_and(|n| n.removed) {
        return Ok(Response::error(
            ErrorCode::InvalidRequest,
            format!("node {id} was removed from the cluster; wipe its data dir to rejoin under a new id"),
        ));
    }
    let rec = NodeRecord {
        id,
        addr: addr.to_string(),
        clusters: clusters.to_vec(),
        draining: existing.as_ref().is_some_and(|n| n.draining),
        removed: false,
        version: version.to_string(),
    };
    let changed = existing.as_ref() != Some(&rec);
    tx.put(node_key(id), encode(&rec));
    bump_node_counter(tx, id)?;
    Ok(applied(changed))
}

fn allocate_node_id<T: KvTree>(tx: &mut Overlay<'_, T>) -> Result<Response, ApplyError> {
    let id = get_u64(tx, KEY_NEXT_NODE_ID)?.max(1);
    tx.put(KEY_NEXT_NODE_ID, encode(&(id + 1)));
    Ok(Response::NodeId { id })
}

fn set_draining<T: KvTree>(
    tx: &mut Overlay<'_, T>,
    node: NodeId,
    draining: bool,
) -> Result<Response, ApplyError> {
    let Some(mut rec) = get_json::<NodeRecord>(tx, &node_key(node))?.filter(|n| !n.removed) else {
        return Ok(Response::error(
            ErrorCode::InvalidRequest,
            format!("node {node} is not a member"),
        ));
    };
    let changed = rec.draining != draining;
    rec.draining = draining;
    tx.put(node_key(node), encode(&rec));
    Ok(applied(changed))
}

fn remove_node<T: KvTree>(tx: &mut Overlay<'_, T>, node: NodeId) -> Result<Response, ApplyError> {
    let mut rec = get_json::<NodeRecord>(tx, &node_key(node))?.unwrap_or(NodeRecord {
        id: node,
        addr: String::new(),
        clusters: vec![],
        draining: false,
        removed: false,
        version: String::new(),
    });
    let changed = !rec.removed;
    rec.removed = true;
    rec.draining = true;
    tx.put(node_key(node), encode(&rec));
    bump_node_counter(tx, node)?;
    Ok(applied(changed))
}

// ---- queries ----------------------------------------------------------------------------------

/// One job's canonical bytes.
pub fn get_job_bytes(r: &impl TableRead, id: &str) -> Result<Option<Vec<u8>>, EngineError> {
    r.get(&job_key(id))
}

/// Every member record, including tombstones of removed members.
pub fn nodes(r: &impl TableRead) -> Result<Vec<NodeRecord>, ApplyError> {
    r.prefix_items(b"n/")?.iter().map(|(k, v)| decode(k, v)).collect()
}

/// Ids of the non-terminal jobs a node owns.
pub fn active_job_ids(r: &impl TableRead, owner: NodeId) -> Result<Vec<String>, EngineError> {
    let prefix = idx_owner_prefix(owner);
    Ok(r.prefix_items(&prefix)?
        .into_iter()
        .map(|(k, _)| String::from_utf8_lossy(&k[prefix.len()..]).into_owned())
        .collect())
}

/// Non-terminal jobs (of `owner`, or of every node) with control requests not yet carried
/// out, and how many each has. Only non-terminal jobs can have any: a job's end clears them.
pub fn pending_controls(
    r: &impl TableRead,
    owner: Option<NodeId>,
) -> Result<Vec<(String, usize)>, ApplyError> {
    let prefix = owner.map_or_else(|| b"xo/".to_vec(), idx_owner_prefix);
    let mut out = Vec::new();
    for (k, _) in r.prefix_items(&prefix)? {
        // Owner index keys are `xo/<owner:be64><id>`.
        let Some(id) = k.get(3 + 8..) else { continue };
        let id = String::from_utf8_lossy(id).into_owned();
        if let Some(meta) = get_json::<JobMeta>(r, &meta_key(&id))? {
            if !meta.controls.is_empty() {
                out.push((id, meta.controls.len()));
            }
        }
    }
    Ok(out)
}

/// Number of stale or backwards updates `apply` has ignored.
pub fn ignored_updates(r: &impl TableRead) -> Result<u64, ApplyError> {
    get_u64(r, KEY_IGNORED_UPDATES)
}

/// Terminal jobs last updated before `cutoff` (at most `limit`), for the leader's expiry pass.
pub fn expired_count(r: &impl TableRead, cutoff: &str, limit: usize) -> Result<usize, EngineError> {
    let end = Bound::Excluded([b"xe/", cutoff.as_bytes()].concat());
    Ok(r.range_items(Bound::Included(b"xe/".to_vec()), end)?
        .len()
        .min(limit))
}

/// Canonical bytes of the jobs matching `filter`, ordered by submissionTime then id.
///
/// Picks the most selective index (tag, then user, then status) and filters the rest.
pub fn list_jobs(r: &impl TableRead, filter: &ListFilter) -> Result<Vec<Vec<u8>>, ApplyError> {
    // Where to resume when paging: the (time, id) of the `after` job.
    let after = match &filter.after {
        Some(id) => match get_json::<Job>(r, &job_key(id))? {
            Some(j) => Some(time_id(j.submission_time.as_deref().unwrap_or_default(), id)),
            None => return Ok(Vec::new()),
        },
        None => None,
    };
    let prefixes: Vec<Vec<u8>> = if let Some(tag) = filter.tags.first() {
        vec![idx_tag_prefix(tag)]
    } else if let Some(user) = &filter.user {
        vec![idx_user_prefix(user)]
    } else if !filter.statuses.is_empty() {
        let mut s = filter.statuses.clone();
        s.sort();
        s.dedup();
        s.into_iter().map(idx_status_prefix).collect()
    } else {
        vec![b"xt/".to_vec()]
    };
    let mut candidates: Vec<Vec<u8>> = Vec::new();
    for p in &prefixes {
        let mut start = Bound::Included(p.clone());
        if let Some(t) = &filter.start_time {
            start = Bound::Included([p.as_slice(), t.as_bytes()].concat());
        }
        if let Some(a) = &after {
            let after_key = [p.as_slice(), a].concat();
            let past_start = match &start {
                Bound::Included(s) => after_key >= *s,
                _ => true,
            };
            if past_start {
                start = Bound::Excluded(after_key);
            }
        }
        let end = match &filter.end_time {
            // `<end>\x01` is past every `<end>\0<id>`: end time is inclusive.
            Some(t) => Bound::Excluded([p.as_slice(), t.as_bytes(), b"\x01"].concat()),
            None => prefix_end(p).map(Bound::Excluded).unwrap_or(Bound::Unbounded),
        };
        candidates.extend(
            r.range_items(start, end)?
                .into_iter()
                .map(|(k, _)| k[p.len()..].to_vec()),
        );
    }
    if prefixes.len() > 1 {
        candidates.sort();
        candidates.dedup();
    }
    let mut out = Vec::new();
    for ti in candidates {
        if filter.limit.is_some_and(|l| out.len() >= l) {
            break;
        }
        let Some(pos) = ti.iter().position(|b| *b == 0) else {
            continue;
        };
        let id = String::from_utf8_lossy(&ti[pos + 1..]).into_owned();
        let key = job_key(&id);
        let Some(bytes) = r.get(&key)? else { continue };
        let keys: JobKeys = decode(&key, &bytes)?;
        if let Some(user) = &filter.user {
            if keys.user.as_ref() != Some(user) {
                continue;
            }
        }
        let status = keys.status.unwrap_or(JobStatus::Pending);
        if !filter.statuses.is_empty() && !filter.statuses.contains(&status) {
            continue;
        }
        if !filter.tags.iter().all(|t| keys.tags.contains(t)) {
            continue;
        }
        let time = keys.submission_time.as_deref().unwrap_or_default();
        if filter.start_time.as_deref().is_some_and(|s| time < s)
            || filter.end_time.as_deref().is_some_and(|e| time > e)
        {
            continue;
        }
        out.push(bytes);
    }
    Ok(out)
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
