//! A client of one node's launcher service, with the internal credential, for tests.

use futures::StreamExt;
use launcher_node::auth::InternalAuth;
use launcher_node::network::{LauncherRpc, Peers};
use launcher_proto::launcher::{
    Caller, ClusterInfoRequest, ControlJobReply, ControlJobRequest, GetJobRequest, JobNetwork, JobReply,
    JobRequest, LeaveRequest, ListJobsRequest, OutputRequest, ReadOptions, StatusReply, StatusRequest,
    SubmitJobRequest,
};
use tonic::Status;

/// A test client of one node.
#[derive(Clone)]
pub struct NodeClient {
    peers: Peers,
    /// The node's gRPC address.
    pub addr: String,
}

/// Admin caller used by tests unless a test is about isolation.
pub fn admin() -> Caller {
    Caller {
        user: "admin".into(),
        admin: true,
    }
}

/// A non-admin caller.
pub fn user(name: &str) -> Caller {
    Caller {
        user: name.into(),
        admin: false,
    }
}

impl NodeClient {
    /// A client of `addr` signing with `key`, bound to `cluster_id` (empty: learn it from Status).
    pub fn new(addr: &str, key: &[u8], cluster_id: &str) -> Self {
        NodeClient {
            peers: Peers::new(InternalAuth::new(key, cluster_id.into())),
            addr: addr.into(),
        }
    }

    /// The raw gRPC client.
    pub fn rpc(&self) -> LauncherRpc {
        self.peers.launcher(&self.addr)
    }

    /// Learns the cluster id from the node's status (status is callable unbound).
    pub async fn bind(&self) -> anyhow::Result<()> {
        let st = self.status().await?;
        anyhow::ensure!(!st.cluster_id.is_empty(), "node reports no cluster id yet");
        self.peers.auth().set_cluster_id(&st.cluster_id);
        Ok(())
    }

    /// Cluster status as this node reports it.
    pub async fn status(&self) -> Result<StatusReply, Status> {
        Ok(self.rpc().status(StatusRequest {}).await?.into_inner())
    }

    /// Submits `job` as `caller`.
    pub async fn submit_as(
        &self,
        caller: Caller,
        job: &serde_json::Value,
        idempotency_key: Option<&str>,
    ) -> Result<JobReply, Status> {
        let req = SubmitJobRequest {
            caller: Some(caller),
            job: serde_json::to_vec(job).expect("json"),
            idempotency_key: idempotency_key.unwrap_or_default().into(),
        };
        Ok(self.rpc().submit_job(req).await?.into_inner())
    }

    /// Submits `job` as user `alice`.
    pub async fn submit(&self, job: &serde_json::Value) -> Result<JobReply, Status> {
        self.submit_as(user("alice"), job, None).await
    }

    /// A listing: applied index and canonical job bytes.
    pub async fn list(&self, mut req: ListJobsRequest) -> Result<(u64, Vec<Vec<u8>>), Status> {
        if req.caller.is_none() {
            req.caller = Some(admin());
            if req.user.is_empty() {
                req.user = "*".into();
            }
        }
        let mut stream = self.rpc().list_jobs(req).await?.into_inner();
        let mut index = 0;
        let mut jobs = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            index = chunk.applied_index;
            jobs.extend(chunk.jobs);
        }
        Ok((index, jobs))
    }

    /// Every job of every user, linearizable.
    pub async fn list_all(&self) -> Result<(u64, Vec<Vec<u8>>), Status> {
        self.list(ListJobsRequest::default()).await
    }

    /// Every job, stale read at or after `min_index`.
    pub async fn list_stale(&self, min_index: u64) -> Result<(u64, Vec<Vec<u8>>), Status> {
        let read = ReadOptions {
            consistency: 1,
            min_index,
        };
        self.list(ListJobsRequest {
            read: Some(read),
            ..Default::default()
        })
        .await
    }

    /// One job as `caller`.
    pub async fn get_as(&self, caller: Caller, id: &str) -> Result<JobReply, Status> {
        let req = GetJobRequest {
            caller: Some(caller),
            id: id.into(),
            ..Default::default()
        };
        Ok(self.rpc().get_job(req).await?.into_inner())
    }

    /// A control operation as `caller`.
    pub async fn control_as(&self, caller: Caller, id: &str, op: &str) -> Result<ControlJobReply, Status> {
        let req = ControlJobRequest {
            caller: Some(caller),
            id: id.into(),
            operation: op.into(),
        };
        Ok(self.rpc().control_job(req).await?.into_inner())
    }

    /// Deletes a job as admin.
    pub async fn delete(&self, id: &str) -> Result<u64, Status> {
        let req = JobRequest {
            caller: Some(admin()),
            id: id.into(),
            read: None,
        };
        Ok(self.rpc().delete_job(req).await?.into_inner().applied_index)
    }

    /// One job as admin, parsed.
    pub async fn job(&self, id: &str) -> Result<serde_json::Value, Status> {
        let reply = self.get_as(admin(), id).await?;
        Ok(serde_json::from_slice(&reply.job).expect("job JSON"))
    }

    /// Waits until job `id` satisfies `done`, returning it.
    pub async fn wait_job(
        &self,
        id: &str,
        what: &str,
        done: impl Fn(&serde_json::Value) -> bool,
    ) -> anyhow::Result<serde_json::Value> {
        let done = &done;
        crate::wait_until(&format!("job {id}: {what}"), crate::DEADLINE, || async move {
            let j = self.job(id).await?;
            Ok(done(&j).then_some(j))
        })
        .await
    }

    /// The job's output of `kind` (stdout, stderr, both), concatenated, until the stream ends.
    pub async fn output(&self, id: &str, kind: &str, follow: bool) -> Result<String, Status> {
        let req = OutputRequest {
            caller: Some(admin()),
            id: id.into(),
            output_type: kind.into(),
            follow,
        };
        let mut stream = self.rpc().stream_output(req).await?.into_inner();
        let mut out = String::new();
        while let Some(chunk) = stream.next().await {
            out.push_str(&chunk?.output);
        }
        Ok(out)
    }

    /// The first `n` resource-use samples of a running job.
    pub async fn resource_use(&self, id: &str, n: usize) -> Result<Vec<serde_json::Value>, Status> {
        let req = JobRequest {
            caller: Some(admin()),
            id: id.into(),
            read: None,
        };
        let mut stream = self.rpc().stream_resource_use(req).await?.into_inner();
        let mut out = Vec::new();
        while out.len() < n {
            match stream.next().await {
                Some(u) => out.push(serde_json::from_slice(&u?.usage).expect("usage JSON")),
                None => break,
            }
        }
        Ok(out)
    }

    /// Where the job runs.
    pub async fn network(&self, id: &str) -> Result<JobNetwork, Status> {
        let req = JobRequest {
            caller: Some(admin()),
            id: id.into(),
            read: None,
        };
        Ok(self.rpc().get_job_network(req).await?.into_inner())
    }

    /// Every cluster's info.
    pub async fn cluster_info(&self) -> Result<Vec<serde_json::Value>, Status> {
        let req = ClusterInfoRequest {
            caller: Some(admin()),
            cluster: String::new(),
        };
        let reply = self.rpc().cluster_info(req).await?.into_inner();
        Ok(serde_json::from_slice(&reply.clusters).expect("cluster info JSON"))
    }

    /// `members remove <id>`.
    pub async fn remove_member(&self, node_id: u64) -> Result<u64, Status> {
        let req = LeaveRequest {
            caller: Some(admin()),
            node_id,
        };
        Ok(self.rpc().leave(req).await?.into_inner().applied_index)
    }
}

/// The `id` of canonical job bytes.
pub fn job_id(bytes: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(bytes).expect("job JSON");
    v["id"].as_str().expect("job id").to_string()
}

/// The launcher error code a failed call carries.
pub fn error_code(s: &Status) -> i32 {
    s.metadata()
        .get(launcher_node::error::ERROR_CODE_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(-1)
}
