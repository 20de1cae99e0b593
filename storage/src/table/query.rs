//! Indexed queries of the table: one job, the nodes, a node's active jobs, pending controls,
//! counts for expiry, and listings by filter.

use super::*;

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
