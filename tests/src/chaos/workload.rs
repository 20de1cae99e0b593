//! The clients of the chaos tests: each runs a seeded random mix of submits (with and without
//! Idempotency-Key), gets, listings, status reads and control requests, directly against a
//! node over gRPC or through the gateway over HTTP, and records every operation.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::client::{admin, error_code};
use crate::history::{Call, JobView, Outcome, Pending, Read, Recorder};
use crate::{Http, NodeClient};
use futures::StreamExt;
use launcher_proto::launcher::{GetJobRequest, JobRequest, ListJobsRequest, ReadOptions};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::Method;

/// Owner of every job the clients submit (admins submit on its behalf).
const OWNER: &str = "alice";
/// Who the clients are: an admin, so listings with `user=*` see every job.
const CALLER: &str = "admin";
/// Deadline of a write from the client's side (a node's own write deadline is 10 s).
const WRITE_TIMEOUT: Duration = Duration::from_secs(12);
/// Deadline of a read from the client's side (a node's read deadline is 5 s).
const READ_TIMEOUT: Duration = Duration::from_secs(8);
/// Attempts of a submit under an Idempotency-Key whose outcome stays unknown.
const KEYED_ATTEMPTS: usize = 3;

/// State the clients and the test share.
pub struct RunState {
    pub recorder: Recorder,
    pub stop: AtomicBool,
    /// Acknowledged submits so far.
    pub acked: AtomicUsize,
    /// Ids of acknowledged jobs (what gets, status reads and controls pick from).
    pub known: Mutex<Vec<String>>,
    pub seed: u64,
}

impl RunState {
    /// Shared state of a run with `seed`.
    pub fn new(seed: u64) -> Arc<RunState> {
        Arc::new(RunState {
            recorder: Recorder::new(seed),
            stop: AtomicBool::new(false),
            acked: AtomicUsize::new(0),
            known: Mutex::new(Vec::new()),
            seed,
        })
    }

    /// Acknowledged submits so far.
    pub fn acked(&self) -> usize {
        self.acked.load(Ordering::SeqCst)
    }

    fn ack(&self, id: &str, visibility: Visibility) {
        if visibility == Visibility::Shared {
            self.known.lock().expect("known ids").push(id.to_string());
        }
        self.acked.fetch_add(1, Ordering::SeqCst);
    }

    fn pick(&self, rng: &mut StdRng) -> Option<String> {
        let known = self.known.lock().expect("known ids");
        (!known.is_empty()).then(|| known[rng.gen_range(0..known.len())].clone())
    }
}

/// Whether the random clients may pick an acknowledged job for their gets and controls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Visibility {
    Shared,
    /// Only the test acts on it (a job a fault is aimed at must not be killed by a client).
    Private,
}

/// How a client reaches the cluster.
pub enum Target {
    /// gRPC to `nodes[at]`; it moves to the next node after an error, as a client with a
    /// list of addresses would.
    Direct { nodes: Vec<NodeClient>, at: usize },
    /// HTTP through the gateway.
    Gateway(Http),
}

/// One client: process `p` of the history.
pub struct Client {
    p: u32,
    target: Target,
    shared: Arc<RunState>,
    rng: StdRng,
    /// Submits so far (names are unique per client).
    n: u64,
    /// Highest applied index this client was told (its floor for stale reads).
    told: u64,
}

/// What happened to a write whose answer did not come back as a success.
enum Failure {
    /// Certainly not applied (a validation or state error).
    Definite(Outcome),
    /// It may have been applied.
    Unknown(Outcome),
}

impl Client {
    /// Client `p` of a run.
    pub fn new(p: u32, target: Target, shared: Arc<RunState>) -> Client {
        let rng = StdRng::seed_from_u64(shared.seed ^ (u64::from(p) + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        Client {
            p,
            target,
            shared,
            rng,
            n: 0,
            told: 0,
        }
    }

    /// Runs random operations until the test says stop.
    pub async fn run(mut self) {
        while !self.shared.stop.load(Ordering::SeqCst) {
            match self.rng.gen_range(0..100) {
                0..=34 => self.submit().await,
                35..=54 => self.get().await,
                55..=74 => self.list().await,
                75..=87 => self.status_read().await,
                _ => self.control().await,
            }
            // Think time between operations (Jepsen's stagger), which also keeps the history
            // and the job table to a size a 2-core machine checks quickly.
            let pause = self.rng.gen_range(20..120);
            tokio::time::sleep(Duration::from_millis(pause)).await;
        }
    }

    fn told(&mut self, index: u64) {
        self.told = self.told.max(index);
    }

    fn invoke(&self, call: Call) -> Pending {
        self.shared.recorder.invoke(self.p, call)
    }

    /// The node a direct client talks to now, and a label for it.
    fn node(&self) -> Option<(NodeClient, String)> {
        match &self.target {
            Target::Direct { nodes, at } => Some((nodes[*at].clone(), nodes[*at].addr.clone())),
            Target::Gateway(_) => None,
        }
    }

    fn move_on(&mut self) {
        if let Target::Direct { nodes, at } = &mut self.target {
            *at = (*at + 1) % nodes.len();
        }
    }

    fn http(&self) -> Option<Http> {
        match &self.target {
            Target::Gateway(h) => Some(h.clone()),
            Target::Direct { .. } => None,
        }
    }

    async fn submit(&mut self) {
        self.n += 1;
        let name = format!("chaos-{}-{}", self.p, self.n);
        let key = self
            .rng
            .gen_bool(0.5)
            .then(|| format!("key-{}-{}-{}", self.shared.seed, self.p, self.n));
        let command = ["exit 0", "exit 3", "sleep 0.5", "sleep 2", "run"][self.rng.gen_range(0..5)];
        // Without a key a second attempt would be a second job: only keyed submits are retried,
        // and they give up sooner (a client that retries elsewhere instead of waiting out a
        // failover), so their retries race the first attempt.
        let (attempts, timeout) = if key.is_some() {
            (
                KEYED_ATTEMPTS,
                Duration::from_millis(self.rng.gen_range(1500..5000)),
            )
        } else {
            (1, WRITE_TIMEOUT)
        };
        self.submit_attempts(&name, command, key, attempts, timeout, Visibility::Shared)
            .await;
    }

    /// Submits one job running `command` under an Idempotency-Key, from the test itself (e.g.
    /// long jobs a fault is aimed at): up to `attempts` tries, each on the next node, and
    /// recorded like every submit. `visibility` says whether the random clients may pick the
    /// job for their gets and controls. Returns the job id once acknowledged.
    pub async fn submit_command(
        &mut self,
        name: &str,
        command: &str,
        attempts: usize,
        visibility: Visibility,
    ) -> Option<String> {
        self.submit_within(name, command, attempts, WRITE_TIMEOUT, visibility)
            .await
    }

    /// [`Client::submit_command`] with a client-side deadline of `timeout` per attempt.
    pub async fn submit_within(
        &mut self,
        name: &str,
        command: &str,
        attempts: usize,
        timeout: Duration,
        visibility: Visibility,
    ) -> Option<String> {
        let key = format!("key-{}-{}-{name}", self.shared.seed, self.p);
        self.submit_attempts(name, command, Some(key), attempts, timeout, visibility)
            .await
    }

    async fn submit_attempts(
        &mut self,
        name: &str,
        command: &str,
        key: Option<String>,
        mut attempts: usize,
        timeout: Duration,
        visibility: Visibility,
    ) -> Option<String> {
        let body = serde_json::json!({"name": name, "cluster": "Local", "command": command, "user": OWNER});
        let random = visibility == Visibility::Shared;
        let mut acked: Option<String> = None;
        while attempts > 0 {
            attempts -= 1;
            let call = Call::Submit {
                name: name.to_string(),
                user: CALLER.into(),
                key: key.clone(),
            };
            let pending = self.invoke(call);
            let answer = tokio::time::timeout(timeout, self.send_submit(&body, key.as_deref())).await;
            match answer {
                Ok(Ok((id, index, created))) => {
                    pending.ok(Outcome::Submitted {
                        id: id.clone(),
                        index,
                        created,
                    });
                    self.told(index);
                    let first = acked.is_none();
                    if first {
                        self.shared.ack(&id, visibility);
                    }
                    acked = Some(id);
                    // Now and then a client resends an acknowledged submit under its key anyway
                    // (to another node; a lost answer, as far as it knows): same job expected.
                    attempts = 0;
                    if random && first && key.is_some() && self.rng.gen_bool(0.15) {
                        attempts = 1;
                        self.move_on();
                    }
                    continue;
                }
                Ok(Err(Failure::Definite(o))) => {
                    pending.fail(o);
                    return acked;
                }
                Ok(Err(Failure::Unknown(o))) => pending.info(o),
                Err(_) => pending.info(Outcome::error(None, "client-side timeout")),
            }
            if acked.is_some() {
                return acked;
            }
            self.move_on();
        }
        acked
    }

    async fn send_submit(
        &self,
        body: &serde_json::Value,
        key: Option<&str>,
    ) -> Result<(String, u64, bool), Failure> {
        if let Some((node, _)) = self.node() {
            return match node.submit_as(admin(), body, key).await {
                Ok(r) => {
                    let id = JobView::from_bytes(&r.job)
                        .map(|v| v.id.to_string())
                        .ok_or_else(|| {
                            Failure::Unknown(Outcome::error(None, "submit answer without an id"))
                        })?;
                    Ok((id, r.applied_index, r.created))
                }
                Err(s) => {
                    let code = error_code(&s);
                    let o = Outcome::error(Some(code), s.message());
                    // 2 InvalidRequest and 8 (key reused with another body) are decided before
                    // anything is proposed; anything else may have reached the log.
                    Err(if matches!(code, 2 | 8) {
                        Failure::Definite(o)
                    } else {
                        Failure::Unknown(o)
                    })
                }
            };
        }
        let http = self.http().expect("a gateway client");
        let mut req = http.req(Method::POST, "/jobs").json(body);
        if let Some(k) = key {
            req = req.header("Idempotency-Key", k);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| Failure::Unknown(Outcome::error(None, e)))?;
        let status = resp.status().as_u16();
        let index = header_index(&resp);
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| Failure::Unknown(Outcome::error(None, e)))?;
        if status == 201 {
            let id = JobView::from_bytes(&bytes)
                .map(|v| v.id.to_string())
                .ok_or_else(|| Failure::Unknown(Outcome::error(None, "201 without a job id")))?;
            return Ok((id, index.unwrap_or(0), true));
        }
        let (code, message) = error_body(&bytes);
        let o = Outcome::error(code, format!("HTTP {status}: {message}"));
        Err(if (400..500).contains(&status) {
            Failure::Definite(o)
        } else {
            Failure::Unknown(o)
        })
    }

    /// A read's options: linearizable mostly, else stale at this client's floor.
    fn read_mode(&mut self) -> Read {
        if self.rng.gen_bool(0.7) {
            Read::linearizable()
        } else {
            Read::stale(self.told)
        }
    }

    /// Records how a read ended: an answer raises the client's floor to its index; an error or
    /// a node that does not answer (paused, partitioned) fails it, and the client tries the next
    /// node.
    fn read_done(
        &mut self,
        pending: Pending,
        answer: Result<Result<Outcome, Outcome>, tokio::time::error::Elapsed>,
    ) {
        match answer {
            Ok(Ok(o)) => {
                if let Some(i) = o.index() {
                    self.told(i);
                }
                pending.ok(o);
            }
            Ok(Err(o)) => {
                pending.fail(o);
                self.move_on();
            }
            Err(_) => {
                pending.fail(Outcome::error(None, "client-side timeout"));
                self.move_on();
            }
        }
    }

    async fn get(&mut self) {
        let id = match self.shared.pick(&mut self.rng) {
            Some(id) if self.rng.gen_bool(0.9) => id,
            // An id nobody submitted: must never be found.
            _ => format!(
                "0190dead-beef-7000-8000-{:012x}",
                self.rng.gen::<u64>() & 0xffff_ffff_ffff
            ),
        };
        let read = self.read_mode();
        let pending = self.invoke(Call::Get { id: id.clone(), read });
        let answer = tokio::time::timeout(READ_TIMEOUT, self.send_get(&id, read))
            .await
            .map(|r| r.map(|(job, index)| Outcome::Got { job, index }));
        self.read_done(pending, answer);
    }

    async fn send_get(&self, id: &str, read: Read) -> Result<(Option<JobView>, Option<u64>), Outcome> {
        if let Some((node, _)) = self.node() {
            let req = GetJobRequest {
                caller: Some(admin()),
                id: id.into(),
                fields: vec![],
                read: Some(read_options(read)),
            };
            return match node.rpc().get_job(req).await {
                Ok(r) => {
                    let r = r.into_inner();
                    Ok((JobView::from_bytes(&r.job), Some(r.applied_index)))
                }
                Err(s) if error_code(&s) == 3 => Ok((None, None)),
                Err(s) => Err(Outcome::error(Some(error_code(&s)), s.message())),
            };
        }
        let http = self.http().expect("a gateway client");
        let path = format!("/jobs/{id}{}", query(read, false));
        let (status, index, bytes) = http_get(&http, &path, read).await?;
        match status {
            200 => Ok((JobView::from_bytes(&bytes), index)),
            404 if error_body(&bytes).0 == Some(3) => Ok((None, None)),
            _ => Err(http_error(status, &bytes)),
        }
    }

    async fn list(&mut self) {
        let read = self.read_mode();
        let pending = self.invoke(Call::List { read });
        let answer = tokio::time::timeout(READ_TIMEOUT, self.send_list(read)).await;
        self.read_done(pending, answer);
    }

    async fn send_list(&self, read: Read) -> Result<Outcome, Outcome> {
        if let Some((node, label)) = self.node() {
            return list_node(&node, &label, read).await;
        }
        let http = self.http().expect("a gateway client");
        let path = format!("/jobs{}", query(read, true));
        let r = http_request(&http, &path, read).await?;
        let status = r.status().as_u16();
        let index = header_index(&r);
        let node = r
            .headers()
            .get("x-launcher-node")
            .and_then(|v| v.to_str().ok())
            .map(|v| format!("node {v} via gateway"));
        let bytes = r.bytes().await.map_err(|e| Outcome::error(None, e))?;
        if status != 200 {
            return Err(http_error(status, &bytes));
        }
        // Keep each job's exact bytes: the digest must match a node's own listing.
        let raw: Vec<Box<serde_json::value::RawValue>> =
            serde_json::from_slice(&bytes).map_err(|e| Outcome::error(None, format!("listing: {e}")))?;
        let jobs: Vec<&[u8]> = raw.iter().map(|j| j.get().as_bytes()).collect();
        Ok(Outcome::Listed {
            node,
            index: index.ok_or_else(|| Outcome::error(None, "listing without X-Launcher-Index"))?,
            jobs: JobView::all(&jobs),
            digest: Some(Outcome::digest(&jobs)),
            omitted: 0,
        })
    }

    async fn status_read(&mut self) {
        let Some(id) = self.shared.pick(&mut self.rng) else {
            return;
        };
        let read = Read {
            min_index: self.told,
            ..Read::linearizable()
        };
        let pending = self.invoke(Call::StatusRead { id: id.clone(), read });
        let answer = tokio::time::timeout(READ_TIMEOUT, self.send_status_read(&id, read)).await;
        self.read_done(pending, answer);
    }

    async fn send_status_read(&self, id: &str, read: Read) -> Result<Outcome, Outcome> {
        let not_found = || Outcome::error(Some(3), "job not found");
        if let Some((node, _)) = self.node() {
            let req = JobRequest {
                caller: Some(admin()),
                id: id.into(),
                read: Some(read_options(read)),
            };
            let mut stream = match node.rpc().stream_status(req).await {
                Ok(s) => s.into_inner(),
                Err(s) if error_code(&s) == 3 => return Ok(not_found()),
                Err(s) => return Err(Outcome::error(Some(error_code(&s)), s.message())),
            };
            // The node sends the current status first.
            return match stream.next().await {
                Some(Ok(ev)) => status_outcome(&ev.event, Some(ev.applied_index)),
                Some(Err(s)) if error_code(&s) == 3 => Ok(not_found()),
                Some(Err(s)) => Err(Outcome::error(Some(error_code(&s)), s.message())),
                None => Err(Outcome::error(None, "the status stream ended at once")),
            };
        }
        let http = self.http().expect("a gateway client");
        let (status, index, bytes) = http_get(&http, &format!("/jobs/{id}/status"), read).await?;
        match status {
            200 => status_outcome(&bytes, index),
            404 if error_body(&bytes).0 == Some(3) => Ok(not_found()),
            _ => Err(http_error(status, &bytes)),
        }
    }

    async fn control(&mut self) {
        let Some(id) = self.shared.pick(&mut self.rng) else {
            return;
        };
        let operation = ["kill", "kill", "stop", "cancel", "suspend", "resume"][self.rng.gen_range(0..6)];
        let _ = self.control_job(&id, operation).await;
    }

    /// Sends one control request (never retried: docs/api.md) and records it.
    pub async fn control_job(&mut self, id: &str, operation: &str) -> Result<Outcome, Outcome> {
        let pending = self.invoke(Call::Control {
            id: id.into(),
            operation: operation.into(),
        });
        let answer = tokio::time::timeout(WRITE_TIMEOUT, self.send_control(id, operation)).await;
        match answer {
            Ok(Ok(o)) => {
                pending.ok(o.clone());
                Ok(o)
            }
            Ok(Err(Failure::Definite(o))) => {
                pending.fail(o.clone());
                Err(o)
            }
            Ok(Err(Failure::Unknown(o))) => {
                pending.info(o.clone());
                self.move_on();
                Err(o)
            }
            Err(_) => {
                let o = Outcome::error(None, "client-side timeout");
                pending.info(o.clone());
                self.move_on();
                Err(o)
            }
        }
    }

    async fn send_control(&self, id: &str, operation: &str) -> Result<Outcome, Failure> {
        // 3 not found, 6 not running, 8 invalid state: refused before anything is proposed.
        let definite = |code: Option<i32>| matches!(code, Some(3 | 6 | 8));
        if let Some((node, _)) = self.node() {
            return match node.control_as(admin(), id, operation).await {
                Ok(r) => Ok(Outcome::Controlled {
                    message: r.status_message,
                    complete: r.operation_complete,
                }),
                Err(s) => {
                    let code = Some(error_code(&s));
                    let o = Outcome::error(code, s.message());
                    Err(if definite(code) {
                        Failure::Definite(o)
                    } else {
                        Failure::Unknown(o)
                    })
                }
            };
        }
        let http = self.http().expect("a gateway client");
        let resp = http
            .req(Method::POST, &format!("/jobs/{id}/control"))
            .json(&serde_json::json!({ "operation": operation }))
            .send()
            .await
            .map_err(|e| Failure::Unknown(Outcome::error(None, e)))?;
        let status = resp.status().as_u16();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| Failure::Unknown(Outcome::error(None, e)))?;
        if status == 200 {
            let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
            return Ok(Outcome::Controlled {
                message: v["statusMessage"].as_str().unwrap_or_default().into(),
                complete: v["operationComplete"].as_bool().unwrap_or(false),
            });
        }
        let (code, message) = error_body(&bytes);
        let o = Outcome::error(code, format!("HTTP {status}: {message}"));
        Err(if definite(code) {
            Failure::Definite(o)
        } else {
            Failure::Unknown(o)
        })
    }
}

/// A full listing from one node, as an outcome.
pub async fn list_node(node: &NodeClient, label: &str, read: Read) -> Result<Outcome, Outcome> {
    let req = ListJobsRequest {
        read: Some(read_options(read)),
        ..Default::default()
    };
    match node.list(req).await {
        Ok((index, jobs)) => Ok(Outcome::Listed {
            node: Some(label.to_string()),
            index,
            jobs: JobView::all(&jobs),
            digest: Some(Outcome::digest(&jobs)),
            omitted: 0,
        }),
        Err(s) => Err(Outcome::error(Some(error_code(&s)), s.message())),
    }
}

/// Records one full listing of `node` by process `p`; returns it when it succeeded.
pub async fn record_list(
    shared: &RunState,
    p: u32,
    node: &NodeClient,
    label: &str,
    read: Read,
) -> Option<Outcome> {
    let pending = shared.recorder.invoke(p, Call::List { read });
    match tokio::time::timeout(READ_TIMEOUT, list_node(node, label, read)).await {
        Ok(Ok(o)) => {
            pending.ok(o.clone());
            Some(o)
        }
        Ok(Err(o)) => {
            pending.fail(o);
            None
        }
        Err(_) => {
            pending.fail(Outcome::error(None, "client-side timeout"));
            None
        }
    }
}

/// Records one linearizable get of job `id` from `node` by process `p`; returns the whole job
/// (with fields the history leaves out, such as `statusMessage`) when it was found.
pub async fn record_get(shared: &RunState, p: u32, node: &NodeClient, id: &str) -> Option<serde_json::Value> {
    let read = Read::linearizable();
    let pending = shared.recorder.invoke(p, Call::Get { id: id.into(), read });
    let req = GetJobRequest {
        caller: Some(admin()),
        id: id.into(),
        fields: vec![],
        read: Some(read_options(read)),
    };
    match tokio::time::timeout(READ_TIMEOUT, node.rpc().get_job(req)).await {
        Ok(Ok(r)) => {
            let r = r.into_inner();
            let job: Option<serde_json::Value> = serde_json::from_slice(&r.job).ok();
            pending.ok(Outcome::Got {
                job: job.as_ref().and_then(JobView::from_json),
                index: Some(r.applied_index),
            });
            job
        }
        Ok(Err(s)) if error_code(&s) == 3 => {
            pending.ok(Outcome::Got {
                job: None,
                index: None,
            });
            None
        }
        Ok(Err(s)) => {
            pending.fail(Outcome::error(Some(error_code(&s)), s.message()));
            None
        }
        Err(_) => {
            pending.fail(Outcome::error(None, "client-side timeout"));
            None
        }
    }
}

fn read_options(read: Read) -> ReadOptions {
    ReadOptions {
        consistency: if read.is_linearizable() { 0 } else { 1 },
        min_index: read.min_index,
    }
}

/// The query string of a read through the gateway.
fn query(read: Read, all_users: bool) -> String {
    let mut q = Vec::new();
    if all_users {
        q.push("user=*");
    }
    if !read.is_linearizable() {
        q.push("consistency=stale");
    }
    if q.is_empty() {
        String::new()
    } else {
        format!("?{}", q.join("&"))
    }
}

async fn http_request(http: &Http, path: &str, read: Read) -> Result<reqwest::Response, Outcome> {
    let mut req = http.req(Method::GET, path);
    if read.min_index > 0 {
        req = req.header("X-Launcher-Min-Index", read.min_index.to_string());
    }
    req.send().await.map_err(|e| Outcome::error(None, e))
}

async fn http_get(http: &Http, path: &str, read: Read) -> Result<(u16, Option<u64>, Vec<u8>), Outcome> {
    let r = http_request(http, path, read).await?;
    let status = r.status().as_u16();
    let index = header_index(&r);
    let bytes = r.bytes().await.map_err(|e| Outcome::error(None, e))?;
    Ok((status, index, bytes.to_vec()))
}

fn header_index(r: &reqwest::Response) -> Option<u64> {
    r.headers()
        .get("x-launcher-index")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// The launcher error code and message of an error body.
fn error_body(bytes: &[u8]) -> (Option<i32>, String) {
    let v: serde_json::Value = serde_json::from_slice(bytes).unwrap_or_default();
    (
        v["error"]["code"].as_i64().map(|c| c as i32),
        v["error"]["message"].as_str().unwrap_or_default().to_string(),
    )
}

fn http_error(status: u16, bytes: &[u8]) -> Outcome {
    let (code, message) = error_body(bytes);
    Outcome::error(code, format!("HTTP {status}: {message}"))
}

fn status_outcome(bytes: &[u8], index: Option<u64>) -> Result<Outcome, Outcome> {
    let v: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| Outcome::error(None, format!("status: {e}")))?;
    let status = v["status"]
        .as_str()
        .ok_or_else(|| Outcome::error(None, format!("status answer without a status: {v}")))?;
    Ok(Outcome::Status {
        status: status.into(),
        index: index.ok_or_else(|| Outcome::error(None, "status answer without an index"))?,
    })
}
