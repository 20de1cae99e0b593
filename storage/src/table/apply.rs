//! `apply`: each command's deterministic effect on the table (reads only the table and the
//! command, so every node computes the same table).

use super::*;

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

pub(super) fn apply_v1<T: KvTree>(tx: &mut Overlay<'_, T>, cmd: &CommandV1) -> Result<Response, ApplyError> {
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

pub(super) fn submit<T: KvTree>(
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

pub(super) fn launch_intent<T: KvTree>(
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

pub(super) fn bump_ignored<T: KvTree>(tx: &mut Overlay<'_, T>) -> Result<Response, ApplyError> {
    let n = get_u64(tx, KEY_IGNORED_UPDATES)? + 1;
    tx.put(KEY_IGNORED_UPDATES, encode(&n));
    Ok(applied(false))
}

pub(super) fn update<T: KvTree>(tx: &mut Overlay<'_, T>, u: &JobUpdate) -> Result<Response, ApplyError> {
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

pub(super) fn control<T: KvTree>(
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

pub(super) fn control_done<T: KvTree>(
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

pub(super) fn delete<T: KvTree>(tx: &mut Overlay<'_, T>, id: &str) -> Result<Response, ApplyError> {
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

pub(super) fn expire<T: KvTree>(
    tx: &mut Overlay<'_, T>,
    cutoff: &str,
    now: &str,
) -> Result<Response, ApplyError> {
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

pub(super) fn node_lost<T: KvTree>(
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

pub(super) fn bump_node_counter<T: KvTree>(
    tx: &mut Overlay<'_, T>,
    at_least: NodeId,
) -> Result<(), ApplyError> {
    let next = get_u64(tx, KEY_NEXT_NODE_ID)?.max(1);
    if at_least >= next {
        tx.put(KEY_NEXT_NODE_ID, encode(&(at_least + 1)));
    }
    Ok(())
}

pub(super) fn register_node<T: KvTree>(
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

pub(super) fn allocate_node_id<T: KvTree>(tx: &mut Overlay<'_, T>) -> Result<Response, ApplyError> {
    let id = get_u64(tx, KEY_NEXT_NODE_ID)?.max(1);
    tx.put(KEY_NEXT_NODE_ID, encode(&(id + 1)));
    Ok(Response::NodeId { id })
}

pub(super) fn set_draining<T: KvTree>(
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

pub(super) fn remove_node<T: KvTree>(tx: &mut Overlay<'_, T>, node: NodeId) -> Result<Response, ApplyError> {
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
