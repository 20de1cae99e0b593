//! Fencing: a process the cluster took away from this node is stopped, whatever order the
//! events came in (ARCHITECTURE.md, Fencing).

use super::*;

/// Fencing (DESIGN §1): kills what the plugin still runs for jobs this node no longer owns
/// (declared lost while it was away, deleted, ended). Shared-scheduler clusters are left alone:
/// their jobs belong to whichever node adopted them.
pub(super) async fn fence_strays(shared: &Arc<NodeState>, plugin: &Arc<PluginHost>) {
    let cluster = plugin.cluster().to_string();
    let shared_scheduler = shared
        .config
        .cluster(&cluster)
        .is_some_and(|c| c.shared_scheduler);
    if shared_scheduler {
        return;
    }
    let req = GetJobRequest {
        request_username: "*".into(),
        username: "*".into(),
        job_id: pm::ALL_JOBS.into(),
        encoded_job_id: pm::ALL_JOBS.into(),
        statuses: Some(vec!["Pending".into(), "Running".into(), "Suspended".into()]),
        ..Default::default()
    };
    let jobs = match plugin
        .call::<_, JobStateResponse>(RequestType::GetJob, &req)
        .await
    {
        Ok(r) => r.jobs,
        Err(e) => {
            tracing::warn!(%cluster, error = %e, "cannot list the plugin's jobs to fence strays");
            return;
        }
    };
    for pj in jobs {
        let Some(ours) = pj
            .tags
            .iter()
            .find_map(|t| t.strip_prefix(LAUNCHER_JOB_TAG_PREFIX))
            .map(str::to_string)
        else {
            continue;
        };
        let key = ours.clone();
        let record = match shared.table(move |sm| sm.job_with_meta(&key)).await {
            Ok(r) => r,
            Err(_) => return,
        };
        if taken_from(shared.id, None, record.as_ref().map(|(j, m)| (j, m))) == Some(true) {
            let Some(pid) = pj.id.clone() else { continue };
            tracing::warn!(job_id = %ours, plugin_job_id = %pid, %cluster,
                "fencing: the plugin still runs a job this node no longer owns; killing it");
            kill_in_plugin(
                plugin,
                &pid,
                pj.user.as_deref().unwrap_or("*"),
                pj.status.as_deref(),
            )
            .await;
        }
    }
}

/// Whether the cluster took the job in `record` away from node `me`, which drives it in owner
/// epoch `epoch` (`None`: no worker drives it, as when a plugin stream opens): another owner, a
/// later epoch, an end the table decided (node lost, launch interrupted), or the job deleted
/// (only ended jobs are). A shared-scheduler job belongs to whichever node adopted it: `None`
/// when another node did (nothing here may stop it), and not taken when this node adopted it
/// again in a later epoch (its new worker drives the same process).
pub(super) fn taken_from(me: NodeId, epoch: Option<u64>, record: Option<(&Job, &JobMeta)>) -> Option<bool> {
    match record {
        None => Some(true),
        Some((_, meta)) if meta.shared && meta.owner != me => None,
        Some((job, meta)) if meta.shared => Some(job.status().is_terminal()),
        Some((job, meta)) => {
            Some(meta.owner != me || epoch.is_some_and(|e| e != meta.epoch) || job.status().is_terminal())
        }
    }
}

/// Whether a worker of node `me` that drove the job in `epoch` must stop its process as it
/// ends: the plugin has not reported the job's end, and the cluster took the job (judged from
/// the table as it is now, whatever order the events came in).
pub(super) fn must_fence(
    me: NodeId,
    epoch: u64,
    plugin_status: Option<JobStatus>,
    record: Option<(&Job, &JobMeta)>,
) -> bool {
    !plugin_status.is_some_and(|s| s.is_terminal()) && taken_from(me, Some(epoch), record) == Some(true)
}

pub(super) async fn kill_in_plugin(plugin: &PluginHost, plugin_id: &str, user: &str, status: Option<&str>) {
    let call = |op: pm::ControlOperation| {
        let req = ControlJobRequest {
            request_username: user.into(),
            username: user.into(),
            job_id: plugin_id.into(),
            encoded_job_id: plugin_id.into(),
            operation: op as i32,
        };
        async move {
            plugin
                .call::<_, ControlJobResponse>(RequestType::ControlJob, &req)
                .await
        }
    };
    // A job last seen Pending may have started since: then the cancel is refused, and it is
    // killed instead.
    if status == Some("Pending") && call(pm::ControlOperation::Cancel).await.is_ok() {
        return;
    }
    if let Err(e) = call(pm::ControlOperation::Kill).await {
        tracing::debug!(plugin_job_id = plugin_id, error = %e, "fencing kill not needed or failed");
    }
}

impl Worker {
    /// The worker is done with the job. If the plugin may still run it (it never reported
    /// the job ended) and the cluster took the job from this node (another owner, a later
    /// epoch: declared lost while this node was paused or cut off; or ended by the job table,
    /// e.g. `launch interrupted` while the plugin's answer to the submit was on its way), its
    /// process is stopped: fencing. Jobs of a shared scheduler that another node adopted are
    /// left alone: they run on for their new owner.
    pub(super) async fn fence_if_taken(&mut self, plugin: &Arc<PluginHost>) {
        let Some(pid) = self.plugin_id.clone() else { return };
        let key = self.id.clone();
        let record = match self.shared.table(move |sm| sm.job_with_meta(&key)).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(job_id = %self.id, error = %e, "cannot read the job to decide on fencing");
                return;
            }
        };
        let fence = must_fence(
            self.shared.id,
            self.driving_epoch,
            self.plugin_status,
            record.as_ref().map(|(j, m)| (j, m)),
        );
        if let Some((job, meta)) = record {
            self.job = job;
            self.meta = meta;
        }
        if fence {
            tracing::warn!(job_id = %self.id, plugin_job_id = %pid, status = %self.job.status(),
                message = ?self.job.status_message,
                "fencing: the cluster ended or moved this job while the plugin runs it; stopping its process");
            let user = self.job.user.clone().unwrap_or_else(|| "*".into());
            let status = self.plugin_status.map(|s| s.to_string());
            kill_in_plugin(plugin, &pid, &user, status.as_deref()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What can happen to a job while a worker of node 1 drives it in epoch 5.
    #[derive(Debug, Clone, Copy)]
    enum Step {
        /// The plugin reports a status; the worker's update is applied unless the job was taken.
        Plugin(JobStatus),
        /// The leader declares node 1 lost: the job fails ("node lost"), the epoch moves on.
        FailedAsLost,
        /// A launch intent judged interrupted: the job fails, the epoch moves on.
        LaunchInterrupted,
        /// A shared-scheduler cluster's job is adopted by node `n` (maybe node 1 again).
        AdoptedBy(NodeId),
        /// An ended job is deleted.
        Deleted,
    }

    fn step() -> impl proptest::strategy::Strategy<Value = Step> {
        use proptest::prelude::*;
        prop_oneof![
            prop_oneof![
                Just(JobStatus::Running),
                Just(JobStatus::Suspended),
                Just(JobStatus::Finished),
                Just(JobStatus::Killed),
            ]
            .prop_map(Step::Plugin),
            Just(Step::FailedAsLost),
            Just(Step::LaunchInterrupted),
            (1u64..=3).prop_map(Step::AdoptedBy),
            Just(Step::Deleted),
        ]
    }

    proptest::proptest! {
        /// Fencing does not depend on the order of events: for every sequence of plugin
        /// reports and table changes, the worker that ends stops the process exactly when the
        /// cluster took the job (failed it, which also moves its epoch on, or deleted it) while
        /// the plugin has not reported its end, and never stops a shared scheduler's job that
        /// another node adopted, nor one this node adopted back in a later epoch.
        #[test]
        fn fencing_holds_for_every_order_of_events(
            shared_scheduler: bool,
            steps in proptest::collection::vec(step(), 0..12),
        ) {
            const ME: NodeId = 1;
            const EPOCH: u64 = 5;
            let mut job = Job { status: Some(JobStatus::Running), ..Job::default() };
            let mut meta = JobMeta { owner: ME, epoch: EPOCH, shared: shared_scheduler, ..JobMeta::default() };
            let mut exists = true;
            let mut plugin_status: Option<JobStatus> = None;
            let mut taken = false;
            for st in steps {
                let live = exists && !job.status().is_terminal();
                match st {
                    Step::Plugin(s) if !plugin_status.is_some_and(|p| p.is_terminal()) => {
                        plugin_status = Some(s);
                        // The update carries epoch 5: applied only while it is current.
                        if live && meta.epoch == EPOCH {
                            job.status = Some(s);
                        }
                    }
                    Step::FailedAsLost | Step::LaunchInterrupted if !shared_scheduler && live => {
                        job.status = Some(JobStatus::Failed);
                        meta.epoch += 1;
                        taken = true;
                    }
                    Step::AdoptedBy(n) if shared_scheduler && live => {
                        meta.owner = n;
                        meta.epoch += 1;
                        // Adopted back by this node, the job is its own again.
                        taken = n != ME;
                    }
                    Step::Deleted if exists && job.status().is_terminal() => exists = false,
                    _ => {}
                }
            }
            let record = exists.then_some((&job, &meta));
            let fenced = must_fence(ME, EPOCH, plugin_status, record);
            let ended_in_plugin = plugin_status.is_some_and(|s| s.is_terminal());
            // A job this node drove to its end and that was then deleted is not taken.
            let deleted_after_our_end = !exists && !taken;
            let adopted_elsewhere = shared_scheduler && exists && meta.owner != ME;
            let expected = !ended_in_plugin
                && (taken || deleted_after_our_end)
                && !adopted_elsewhere;
            proptest::prop_assert_eq!(fenced, expected, "job {:?} meta {:?} plugin {:?}", job.status, meta, plugin_status);
        }
    }
}
