//! Control requests: carried out by the job's worker in commit order, coalesced when several
//! wait, marked done in Raft, and answered to the callers that wait.

use super::*;

/// Waits until the owner-side worker of `id` (on this node) carried out the control request
/// `op` committed at log index `committed_at` (0: unknown, then everything committed so far
/// is waited for), and returns the plugin's answer to it.
pub async fn control(
    shared: &NodeState,
    id: &str,
    op: ControlOp,
    committed_at: u64,
) -> NodeResult<ControlJobResponse> {
    // The worker works from this node's table, which must hold the request first.
    if committed_at > 0 {
        shared.wait_applied(committed_at).await?;
    } else {
        shared.read_barrier(ReadMode::default()).await?;
    }
    let launching = shared.jobs.plugin_id(id).is_none()
        && shared
            .jobs
            .workers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(id);
    if op == ControlOp::Cancel && launching {
        // Its worker is busy launching it: the cancel is carried out as soon as the plugin has it.
        shared.jobs.request_cancel(id);
        return Ok(ControlJobResponse {
            status_message:
                "Cancel requested: the job is being launched and will be canceled as soon as it is".into(),
            operation_complete: false,
        });
    }
    let (tx, rx) = oneshot::channel();
    let handed = shared.jobs.send(id, Event::Control(op, tx)).is_ok();
    if handed {
        if let Ok(answer) = rx.await {
            return answer;
        }
    }
    // No worker took it (between two workers, or the worker ended before answering). The
    // request is committed: it stays queued and is carried out when the job is driven again,
    // unless the job has ended, which clears its queue.
    let key = id.to_string();
    match shared.table(move |sm| sm.job_with_meta(&key)).await? {
        Some((job, _)) if !job.status().is_terminal() => Ok(recorded_not_done()),
        Some((job, _)) => Err(NodeError::new(
            ErrorCode::JobNotRunning,
            format!(
                "job {id} ended ({}) before the request was carried out",
                job.status()
            ),
        )),
        None => Err(NodeError::job_not_found(id)),
    }
}

/// The answer to a committed control request that is not carried out yet.
pub(super) fn recorded_not_done() -> ControlJobResponse {
    ControlJobResponse {
        status_message:
            "The request was recorded; it is carried out as soon as the job's node drives the job again"
                .into(),
        operation_complete: false,
    }
}

/// The one request among `pending` (oldest first) whose effect decides the job's state, and
/// the highest sequence number among them (the whole batch is done once it is). A job that is
/// to end ends: a kill wins (a stop followed by a kill is an escalation), else the first stop
/// or cancel; otherwise the last suspend or resume, as carrying them all out in order would
/// leave the job as the last one says.
pub(super) fn coalesce(pending: &[ControlRecord]) -> Option<(ControlRecord, u64)> {
    let last_seq = pending.iter().map(|c| c.seq).max()?;
    let ends = |op: ControlOp| matches!(op, ControlOp::Stop | ControlOp::Kill | ControlOp::Cancel);
    let chosen = pending
        .iter()
        .find(|c| c.operation == ControlOp::Kill)
        .or_else(|| pending.iter().find(|c| ends(c.operation)))
        .or_else(|| pending.last())?;
    Some((chosen.clone(), last_seq))
}

/// Whether the effect of `op` shows in `status`, so that it must not be sent again.
pub(super) fn already_done(op: ControlOp, status: JobStatus) -> bool {
    match op {
        ControlOp::Suspend => status == JobStatus::Suspended,
        ControlOp::Resume => status == JobStatus::Running,
        ControlOp::Stop | ControlOp::Kill | ControlOp::Cancel => status.is_terminal(),
    }
}

impl Worker {
    pub(super) async fn control(
        &mut self,
        plugin: &Arc<PluginHost>,
        op: ControlOp,
    ) -> NodeResult<ControlJobResponse> {
        if self.plugin_id.is_none() {
            return Err(NodeError::new(
                ErrorCode::JobNotRunning,
                format!("job {} has not reached its plugin yet; retry shortly", self.id),
            ));
        }
        self.send_control(plugin, op)
            .await
            .map_err(|e| e.into_node_error(plugin.cluster()))
    }

    /// Carries out the job's committed control requests, at most once each. The requests
    /// waiting at one time are coalesced into the one that decides the job's state (see
    /// [`coalesce`]): requests piled up while the owner was down or unreachable (a client
    /// retrying) cost one plugin call, not one each, so a live caller is answered in time. One
    /// whose effect is already there (carried out before a crash, its completion not yet
    /// committed) is not sent again. The batch is marked done in Raft before the next is sent,
    /// so at most one request can be in that state after a crash.
    pub(super) async fn run_controls(&mut self, plugin: &Arc<PluginHost>) {
        self.controls_retry = false;
        let mut synced = false;
        loop {
            if self.stopping() || !self.reload().await {
                return;
            }
            if self.job.status().is_terminal() {
                // The job's end cleared its queue: nothing is left to carry out.
                self.controls_through = self.meta.control_seq;
                return;
            }
            let through = self.controls_through;
            let pending: Vec<_> = self
                .meta
                .controls
                .iter()
                .filter(|c| c.seq > through)
                .cloned()
                .collect();
            let Some((c, last_seq)) = coalesce(&pending) else {
                return;
            };
            if self.plugin_id.is_none() {
                // Still launching or being looked up by its tag: carried out once the plugin has it.
                self.controls_retry = true;
                return;
            }
            if !synced {
                // What the plugin shows now decides whether a request was already carried out.
                self.sync(plugin).await;
                synced = true;
                continue;
            }
            let (outcome, answer) = if already_done(c.operation, self.job.status()) {
                let answer = ControlJobResponse {
                    status_message: format!("The job is already {}", self.job.status()),
                    operation_complete: true,
                };
                (ControlOutcome::AlreadyDone, Ok(answer))
            } else {
                match self.send_control(plugin, c.operation).await {
                    Ok(r) => (ControlOutcome::CarriedOut, Ok(r)),
                    // Not sent, or its fate unknown: try again later; by then what the plugin
                    // shows tells whether it took effect.
                    Err(
                        e @ (PluginError::Unavailable(_) | PluginError::Restarted | PluginError::Timeout(_)),
                    ) => {
                        tracing::info!(job_id = %self.id, seq = c.seq, error = %e,
                            "cannot carry out the control request yet; trying again");
                        self.controls_retry = true;
                        return;
                    }
                    Err(e) if c.operation == ControlOp::Cancel => {
                        // Canceled while it was being launched, and it started meanwhile: the
                        // caller was told it would be canceled, so it is killed instead.
                        tracing::info!(job_id = %self.id, error = %e, "the job started before the cancel; killing it");
                        match self.send_control(plugin, ControlOp::Kill).await {
                            Ok(r) => (ControlOutcome::CarriedOut, Ok(r)),
                            Err(e) => (ControlOutcome::Refused, Err(e.into_node_error(plugin.cluster()))),
                        }
                    }
                    Err(e) => (ControlOutcome::Refused, Err(e.into_node_error(plugin.cluster()))),
                }
            };
            self.shared.jobs.count_control(c.operation, outcome);
            // The plugin answers once the operation took effect; its new status is committed
            // before the caller hears of it, so a read after the answer sees it.
            if answer.as_ref().is_ok_and(|a| a.operation_complete) && outcome != ControlOutcome::AlreadyDone {
                self.sync(plugin).await;
            }
            self.controls_through = last_seq;
            for other in pending.iter().filter(|p| p.seq != c.seq) {
                // Superseded: its caller (if it still waits) hears what was done instead.
                self.answers.push_back((
                    other.seq,
                    other.operation,
                    Ok(ControlJobResponse {
                        status_message: format!(
                            "Superseded by a later {} request, which was carried out instead; the job is {}",
                            op_label(c.operation),
                            self.job.status()
                        ),
                        operation_complete: false,
                    }),
                ));
            }
            self.answers.push_back((c.seq, c.operation, answer));
            self.answers.make_contiguous().sort_by_key(|(seq, _, _)| *seq);
            while self.answers.len() > ANSWERS_KEPT {
                self.answers.pop_front();
            }
            if !self.done() {
                self.control_done(last_seq).await;
            }
        }
    }

    /// Takes the control requests up to `seq` off the job's queue in Raft.
    pub(super) async fn control_done(&mut self, seq: u64) {
        let done = CommandV1::ControlDone {
            id: self.id.clone(),
            node: self.shared.id,
            epoch: self.meta.epoch,
            seq,
        };
        match self.propose(done).await {
            Some(Response::Applied { .. }) | None => {}
            Some(Response::Error { code, message }) => {
                // An older member cannot apply it yet, or the job left this node: this worker
                // still remembers what it carried out.
                tracing::info!(job_id = %self.id, seq, ?code, %message, "control request not marked done");
            }
            Some(other) => tracing::warn!(job_id = %self.id, ?other, "unexpected answer to ControlDone"),
        }
    }

    /// Answers the callers whose request was carried out (or, at the end, never will be).
    pub(super) fn answer_waiting(&mut self, ending: bool) {
        let through = self.controls_through;
        let terminal = self.job.status().is_terminal();
        let waiting = std::mem::take(&mut self.waiting);
        for (op, upto, reply) in waiting {
            if upto > through && !terminal {
                if ending || self.controls_retry {
                    // Committed but not carried out yet (the worker stops, or the plugin cannot
                    // take it now and it is tried again): it stays queued, and the caller hears
                    // that it was taken, not done.
                    let _ = reply.send(Ok(recorded_not_done()));
                } else {
                    self.waiting.push((op, upto, reply));
                }
                continue;
            }
            // Its own request is the latest of its kind at or below `upto`.
            let answer = self
                .answers
                .iter()
                .rev()
                .find(|(seq, o, _)| *o == op && *seq <= upto)
                .map(|(_, _, a)| a.clone());
            let answer = match answer {
                Some(a) => a,
                None if upto <= through && !terminal => Ok(ControlJobResponse {
                    status_message: "The request was carried out".into(),
                    operation_complete: true,
                }),
                None => Err(NodeError::new(
                    ErrorCode::JobNotRunning,
                    format!(
                        "job {} ended ({}) before the request was carried out",
                        self.id,
                        self.job.status()
                    ),
                )),
            };
            let _ = reply.send(answer);
        }
    }

    /// Sends `op` to the plugin.
    pub(super) async fn send_control(
        &self,
        plugin: &Arc<PluginHost>,
        op: ControlOp,
    ) -> Result<ControlJobResponse, PluginError> {
        let Some(pid) = self.plugin_id.clone() else {
            return Err(PluginError::Unavailable(
                "the job has not reached its plugin yet".into(),
            ));
        };
        let user = self.job.user.clone().unwrap_or_else(|| "*".into());
        let operation = match op {
            ControlOp::Suspend => pm::ControlOperation::Suspend,
            ControlOp::Resume => pm::ControlOperation::Resume,
            ControlOp::Stop => pm::ControlOperation::Stop,
            ControlOp::Kill => pm::ControlOperation::Kill,
            ControlOp::Cancel => pm::ControlOperation::Cancel,
        };
        let req = ControlJobRequest {
            request_username: user.clone(),
            username: user,
            job_id: pid.clone(),
            encoded_job_id: pid,
            operation: operation as i32,
        };
        plugin
            .call::<_, ControlJobResponse>(RequestType::ControlJob, &req)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue(ops: &[ControlOp]) -> Vec<ControlRecord> {
        ops.iter()
            .enumerate()
            .map(|(i, op)| ControlRecord {
                seq: i as u64 + 10,
                operation: *op,
                time: String::new(),
            })
            .collect()
    }

    fn chosen(ops: &[ControlOp]) -> Option<(ControlOp, u64, u64)> {
        coalesce(&queue(ops)).map(|(c, last)| (c.operation, c.seq, last))
    }

    /// Requests piled up while the owner was away cost one plugin call; the job ends up as
    /// carrying them out one by one would leave it.
    #[test]
    fn a_queue_of_controls_coalesces_into_the_one_that_decides() {
        use ControlOp::*;
        assert_eq!(chosen(&[]), None);
        assert_eq!(chosen(&[Suspend]), Some((Suspend, 10, 10)));
        // Retries of one request: the last one, and all of them are done with it.
        assert_eq!(chosen(&[Suspend, Suspend, Suspend]), Some((Suspend, 12, 12)));
        // Toggles: the last word counts.
        assert_eq!(chosen(&[Suspend, Resume]), Some((Resume, 11, 11)));
        assert_eq!(
            chosen(&[Resume, Suspend, Resume, Suspend]),
            Some((Suspend, 13, 13))
        );
        // A job that is to end ends, whatever came after.
        assert_eq!(chosen(&[Suspend, Stop, Resume]), Some((Stop, 11, 12)));
        assert_eq!(chosen(&[Cancel, Suspend]), Some((Cancel, 10, 11)));
        // A kill is an escalation of a stop, in either order.
        assert_eq!(chosen(&[Stop, Kill]), Some((Kill, 11, 11)));
        assert_eq!(chosen(&[Kill, Stop, Suspend]), Some((Kill, 10, 12)));
    }
}
