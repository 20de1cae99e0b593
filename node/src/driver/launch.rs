//! Launch and tracking: the launch intent, the plugin submit, adoption by tag after an
//! unknown outcome, and the plugin's statuses turned into job updates.

use super::*;

impl Worker {
    /// Commits the launch intent, then submits. Returns false if the job must not be launched.
    pub(super) async fn launch(&mut self, plugin: &Arc<PluginHost>) -> bool {
        let intent = CommandV1::LaunchIntent {
            id: self.id.clone(),
            node: self.shared.id,
            epoch: self.meta.epoch,
            time: String::new(),
        };
        match self.propose(intent).await {
            Some(Response::Job { .. }) => {}
            Some(Response::Error { code, message }) => {
                // A retried intent that had in fact been committed is ours; anything else
                // (canceled, owner changed) means this node must not launch. Judged from a
                // table that has caught up with the leader, not from this node's lagging one.
                if let Err(e) = self.shared.read_barrier(ReadMode::default()).await {
                    tracing::info!(job_id = %self.id, error = %e, "cannot catch up to judge the launch intent; not launching now");
                    return false;
                }
                let ours = self.reload().await
                    && self
                        .meta
                        .launch
                        .as_ref()
                        .is_some_and(|l| l.node == self.shared.id && l.epoch == self.meta.epoch);
                if !ours {
                    tracing::info!(job_id = %self.id, ?code, %message, "not launching");
                    return false;
                }
            }
            Some(_) => {}
            None => return false,
        }
        self.meta.launch = Some(launcher_storage::table::LaunchRecord {
            node: self.shared.id,
            epoch: self.meta.epoch,
            time: String::new(),
        });
        // A cancel committed once the intent was (it is recorded only then) is in the table
        // even if the node that took it could not tell us: then nothing is submitted at all.
        let cancel_committed = self.reload().await
            && self
                .meta
                .controls
                .iter()
                .any(|c| c.operation == ControlOp::Cancel);
        if self.take_cancel() || cancel_committed {
            self.report(
                Some(JobStatus::Canceled),
                Some("Canceled by user".into()),
                None,
                None,
            )
            .await;
            return true;
        }
        let user = self.job.user.clone().unwrap_or_default();
        let req = SubmitJobRequest {
            request_username: user.clone(),
            username: user,
            job: plugin_job(&self.job, &self.id),
        };
        loop {
            match plugin
                .call::<_, JobStateResponse>(RequestType::SubmitJob, &req)
                .await
            {
                Ok(r) => match r.jobs.into_iter().next() {
                    Some(pj) => {
                        self.adopted(plugin, pj).await;
                        return true;
                    }
                    None => {
                        self.report(
                            Some(JobStatus::Failed),
                            Some("launch failed: the plugin answered the submit without a job".into()),
                            None,
                            None,
                        )
                        .await;
                        return true;
                    }
                },
                Err(PluginError::Plugin { code, message }) => {
                    tracing::info!(job_id = %self.id, code, %message, "the plugin refused the job");
                    self.report(
                        Some(JobStatus::Failed),
                        Some(format!("launch failed: {message}")),
                        None,
                        None,
                    )
                    .await;
                    return true;
                }
                // Not sent at all: the plugin is restarting. Submitting later is still the first submit.
                Err(PluginError::Unavailable(_)) if !self.stopping() => {
                    self.wait_for_plugin(plugin).await;
                }
                Err(e) => {
                    // Sent, outcome unknown: never resubmit; find it by its tag instead.
                    tracing::warn!(job_id = %self.id, error = %e, "launch outcome unknown; looking the job up by tag");
                    self.adopt(plugin).await;
                    return true;
                }
            }
            if self.stopping() {
                return false;
            }
        }
    }

    pub(super) async fn wait_for_plugin(&self, plugin: &Arc<PluginHost>) {
        let mut g = plugin.generations();
        let mut stop = self.stop.clone();
        tokio::select! {
            _ = g.changed() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.changed() => {}
        }
    }

    /// After a crash or an unknown outcome between intent and result: the plugin has the job
    /// (by its tag) → adopt it; it does not → the launch was interrupted.
    pub(super) async fn adopt(&mut self, plugin: &Arc<PluginHost>) {
        let req = GetJobRequest {
            request_username: "*".into(),
            username: "*".into(),
            job_id: pm::ALL_JOBS.into(),
            encoded_job_id: pm::ALL_JOBS.into(),
            tags: Some(vec![launcher_job_tag(&self.id)]),
            ..Default::default()
        };
        loop {
            match plugin
                .call::<_, JobStateResponse>(RequestType::GetJob, &req)
                .await
            {
                Ok(r) => {
                    match r.jobs.into_iter().next() {
                        Some(pj) => {
                            tracing::info!(job_id = %self.id, "adopted the job the plugin already had");
                            self.adopted(plugin, pj).await;
                        }
                        None => {
                            self.report(
                                Some(JobStatus::Failed),
                                Some("launch interrupted".into()),
                                None,
                                None,
                            )
                            .await;
                        }
                    }
                    return;
                }
                Err(e) => {
                    tracing::info!(job_id = %self.id, error = %e, "cannot look the job up in the plugin yet");
                    if self.stopping() {
                        return;
                    }
                    self.wait_for_plugin(plugin).await;
                }
            }
        }
    }

    /// The plugin knows the job as `pj`: remember its id and report what it says.
    pub(super) async fn adopted(&mut self, plugin: &Arc<PluginHost>, pj: pm::Job) {
        let Some(pid) = pj.id.clone() else {
            self.report(
                Some(JobStatus::Failed),
                Some("launch failed: the plugin returned a job without an id".into()),
                None,
                None,
            )
            .await;
            return;
        };
        let early = self.shared.jobs.claim(plugin.cluster(), &pid, &self.id);
        self.plugin_id = Some(pid.clone());
        let status = pj.status.as_deref().and_then(parse_status);
        self.plugin_status = status.or(self.plugin_status);
        let update = JobUpdate {
            status: status.filter(|s| *s != JobStatus::Pending),
            status_message: pj.status_message.clone(),
            status_code: pj.status_code.clone(),
            pid: pj.pid,
            exit_code: pj.exit_code,
            plugin_job_id: Some(pid),
            host: Some(pj.host.clone().unwrap_or_else(hostname)),
            ..Default::default()
        };
        self.send_update(update).await;
        if let Some(st) = early {
            self.on_status(plugin, st).await;
        }
        if self.take_cancel() {
            // Canceled while launching: cancel it now, or kill it if it already started.
            let r = self.control(plugin, ControlOp::Cancel).await;
            if r.is_err() && !self.done() {
                let _ = self.control(plugin, ControlOp::Kill).await;
            }
        }
    }

    pub(super) fn take_cancel(&self) -> bool {
        self.shared.jobs.take_cancel(&self.id)
    }

    /// Re-reads the job from the plugin (after a restart, or when taking it over).
    pub(super) async fn sync(&mut self, plugin: &Arc<PluginHost>) {
        let Some(pid) = self.plugin_id.clone() else { return };
        let req = GetJobRequest {
            request_username: "*".into(),
            username: "*".into(),
            job_id: pid.clone(),
            encoded_job_id: pid.clone(),
            ..Default::default()
        };
        match plugin
            .call::<_, JobStateResponse>(RequestType::GetJob, &req)
            .await
        {
            Ok(r) => {
                if let Some(pj) = r.jobs.into_iter().next() {
                    self.apply_plugin_job(pj).await;
                }
            }
            Err(PluginError::Plugin { code: 3, .. }) => {
                self.report(
                    Some(JobStatus::Failed),
                    Some("the plugin no longer knows this job".into()),
                    None,
                    None,
                )
                .await;
            }
            Err(e) => {
                tracing::debug!(job_id = %self.id, error = %e, "cannot re-read the job from the plugin now")
            }
        }
    }

    pub(super) async fn apply_plugin_job(&mut self, pj: pm::Job) {
        let Some(status) = pj.status.as_deref().and_then(parse_status) else {
            return;
        };
        self.plugin_status = Some(status);
        if self
            .reported
            .is_some_and(|(s, e)| s == status && (e.is_some() || pj.exit_code.is_none()))
        {
            return;
        }
        let update = JobUpdate {
            status: Some(status),
            status_message: pj.status_message,
            status_code: pj.status_code,
            pid: pj.pid,
            exit_code: pj.exit_code,
            host: pj.host,
            ..Default::default()
        };
        self.send_update(update).await;
    }

    pub(super) async fn on_status(&mut self, plugin: &Arc<PluginHost>, st: JobStatusResponse) {
        let Some(status) = parse_status(&st.status) else {
            tracing::warn!(job_id = %self.id, status = %st.status, "the plugin reported an unknown status");
            return;
        };
        self.plugin_status = Some(status);
        if self.reported.is_some_and(|(s, _)| s == status) {
            return;
        }
        // Plugins need not put pid and exit code on status messages; fetch the job for them.
        let needs_details = (status.is_terminal() && st.exit_code.is_none())
            || (status == JobStatus::Running && st.pid.is_none());
        if needs_details {
            self.sync(plugin).await;
            if self.reported.is_some_and(|(s, _)| s == status) {
                return;
            }
        }
        let update = JobUpdate {
            status: Some(status),
            status_message: st.status_message,
            status_code: st.status_code,
            pid: st.pid,
            exit_code: st.exit_code,
            ..Default::default()
        };
        self.send_update(update).await;
    }
}
