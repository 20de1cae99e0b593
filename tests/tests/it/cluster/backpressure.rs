//! Writes on a leader that cannot commit: a bounded queue and a deadline on every write.

use std::time::{Duration, Instant};

use super::metrics::{scrape, value};
use launcher_tests::client::error_code;
use launcher_tests::{init_tracing, job, wait_until, ClusterOpts, ProcessCluster, DEADLINE};

/// The value of the unlabelled series `name` in node `addr`'s `/metrics` (0 when absent).
async fn metric(addr: &str, name: &str) -> anyhow::Result<f64> {
    Ok(value(&scrape(addr).await?, name))
}

const MAX_PENDING: usize = 20;
const WRITE_TIMEOUT: Duration = Duration::from_secs(3);

/// A leader cut off from both followers (each SIGSTOPped, so its connections stay open and
/// nobody is elected) holds no write longer than `write-timeout-seconds` and no more than
/// `max-pending-writes` at a time: many concurrent submits are all answered 503 by the
/// deadline, each Unavailable (13: not committed in time, or refused at once because the leader
/// has heard from no majority) or Overloaded (17: the queue was full), and once they are
/// answered nothing is left in its queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_without_a_quorum_answers_every_write_by_its_deadline() -> anyhow::Result<()> {
    init_tracing();
    let opts = ClusterOpts {
        node_lost_timeout_seconds: 600,
        node_lines: vec![
            format!("max-pending-writes={MAX_PENDING}"),
            format!("write-timeout-seconds={}", WRITE_TIMEOUT.as_secs()),
        ],
        ..Default::default()
    };
    let mut cluster = ProcessCluster::start(3, opts).await?;
    let leader = cluster.wait_one_leader().await? as usize;
    for f in (1..=3).filter(|i| *i != leader) {
        cluster.pause(f).await?;
    }
    let addr = cluster.nodes[leader - 1].addr();
    let client = cluster.client(leader);

    // Watch the leader's queue while the submits are out.
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let watch_addr = addr.clone();
    let watcher = tokio::spawn(async move {
        let mut most = 0.0f64;
        loop {
            if let Ok(n) = metric(&watch_addr, "launcher_node_pending_writes").await {
                most = most.max(n);
            }
            tokio::select! {
                _ = stopped.changed() => return most,
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
        }
    });

    let started = Instant::now();
    let submits = (0..5 * MAX_PENDING).map(|i| {
        let c = client.clone();
        async move {
            // A hung write shows as this deadline, far beyond the write timeout.
            tokio::time::timeout(DEADLINE, c.submit(&job(&format!("cut-off-{i}"), &[]))).await
        }
    });
    let answers = futures::future::join_all(submits).await;
    let took = started.elapsed();
    let _ = stop.send(true);
    let most = watcher.await?;

    let mut codes = std::collections::BTreeMap::<i32, usize>::new();
    for (i, a) in answers.into_iter().enumerate() {
        let a = a.map_err(|_| anyhow::anyhow!("submit {i} was still waiting after {DEADLINE:?}"))?;
        let e = a
            .err()
            .ok_or_else(|| anyhow::anyhow!("submit {i} was committed without a quorum"))?;
        *codes.entry(error_code(&e)).or_default() += 1;
    }
    assert!(
        codes.keys().all(|c| *c == 13 || *c == 17),
        "every answer is Unavailable or Overloaded: {codes:?}"
    );
    assert!(
        codes.get(&17).is_some_and(|n| *n > 0),
        "more writes than the queue holds: some are Overloaded ({codes:?})"
    );
    assert!(
        took < WRITE_TIMEOUT + Duration::from_secs(5),
        "all answered by the write deadline (took {took:?}; {codes:?})"
    );
    assert!(
        most <= MAX_PENDING as f64,
        "the queue held {most} writes (max-pending-writes={MAX_PENDING})"
    );
    wait_until("the leader's queue to empty", DEADLINE, || {
        let addr = addr.clone();
        async move { Ok((metric(&addr, "launcher_node_pending_writes").await? == 0.0).then_some(())) }
    })
    .await?;
    // Once it has heard from no majority for longer than an election takes, the leader
    // refuses at once instead of holding the write for the whole deadline.
    let asked = Instant::now();
    let e = client
        .submit(&job("refused-at-once", &[]))
        .await
        .expect_err("no quorum");
    assert_eq!(error_code(&e), 13, "{e:?}");
    assert!(
        asked.elapsed() < WRITE_TIMEOUT,
        "answered at once: {:?}",
        asked.elapsed()
    );
    Ok(())
}

/// A write on a node whose Raft has shut down (the node is stopping) is answered at once with
/// "stopping", whatever leader it last knew: it used to wait out its whole deadline (the Raft
/// metrics channel, closed, woke the wait loop at once and forever) and then blame the cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_on_a_stopping_node_is_answered_at_once() -> anyhow::Result<()> {
    use launcher_node::writes::WriteRequest;
    use launcher_storage::command::ControlOp;
    init_tracing();
    let mut c = launcher_tests::inproc::InProcCluster::start(3).await?;
    let leader = c.wait_for_leader(1).await? as usize;
    let follower = (1..=3).find(|&i| i != leader).expect("a follower");
    for i in (1..=3).filter(|&i| i != follower) {
        c.kill(i).await?;
    }
    let state = c.shared(follower);
    state.raft.shutdown().await?;
    for req in [
        WriteRequest::Control {
            id: "no-such-job".into(),
            operation: ControlOp::Kill,
        },
        WriteRequest::Submit {
            caller: launcher_node::writes::Caller {
                user: "admin".into(),
                admin: true,
            },
            job: serde_json::to_string(&job("late", &[]))?,
            idempotency_key: Some("late".into()),
        },
    ] {
        let e = state
            .write(req)
            .await
            .expect_err("no write succeeds on a stopped node");
        assert!(e.message.contains("stopping"), "{e:?}");
    }
    Ok(())
}
