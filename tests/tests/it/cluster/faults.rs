//! In-process clusters under the deterministic fault plan of `launcher_tests::faults`: messages
//! of chosen kinds between chosen nodes dropped, delayed (reordered) or duplicated, seeded.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use launcher_node::faults::Kind;
use launcher_storage::NodeId;
use launcher_tests::client::{admin, job_id};
use launcher_tests::faults::{Action, Plan, Rule};
use launcher_tests::inproc::InProcCluster;
use launcher_tests::{init_tracing, job, wait_until, DEADLINE};

/// The voter sets of a node's membership (two while it is joint), and whether it is joint.
type View = (Vec<BTreeSet<NodeId>>, bool);

/// The voters of node `i`'s membership, and whether it is a joint one.
fn membership(c: &InProcCluster, i: usize) -> View {
    let m = c.shared(i).raft.metrics();
    let m = m.borrow();
    let joint = m.membership_config.membership().get_joint_config().clone();
    let configs: Vec<BTreeSet<NodeId>> = joint.into_iter().collect();
    let is_joint = configs.len() > 1;
    (configs, is_joint)
}

/// The leader dies while a membership change is half done: it appended the joint
/// configuration and replicated it to one follower only, so the joint configuration is not
/// committed. The survivors must end in one uniform configuration (the change finished or
/// rolled back), agree on it, and commit writes; the caller of the change gets an answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_lost_during_a_joint_membership_change_leaves_one_uniform_membership() -> anyhow::Result<()>
{
    init_tracing();
    let plan = Arc::new(Plan::new(23));
    let mut c = InProcCluster::start_with_faults(5, plan.clone()).await?;
    let leader = c.wait_for_leader(1).await? as usize;
    let followers: Vec<usize> = (1..=5).filter(|i| *i != leader).collect();
    let (carrier, removed) = (followers[0], followers[1]);
    let ip = |i: usize| c.ip(i);
    let others: Vec<_> = followers.iter().map(|&i| ip(i)).collect();
    let not_carrier: Vec<_> = followers
        .iter()
        .filter(|&&i| i != carrier)
        .map(|&i| ip(i))
        .collect();
    // From now on the leader's log reaches the carrier only.
    plan.add(Rule::between(&[ip(leader)], &not_carrier, Action::Drop).kinds(&[Kind::Append]));
    let change = {
        let s = c.shared(leader);
        tokio::spawn(async move { s.remove_member(removed as NodeId).await })
    };
    wait_until("the carrier to hold the joint configuration", DEADLINE, || {
        let joint = membership(&c, carrier).1;
        async move { Ok(joint.then_some(())) }
    })
    .await?;
    assert!(
        membership(&c, leader).1,
        "the leader is in the joint configuration"
    );
    // The leader is cut off and stops: nothing more of it reaches anybody.
    plan.partition(&[ip(leader)], &others);
    c.stop(leader).await?;
    let answer = tokio::time::timeout(Duration::from_secs(30), change)
        .await
        .context("the membership change never answered")??;
    tracing::info!(?answer, "the interrupted change answered");

    let live: Vec<usize> = followers.clone();
    let before: BTreeSet<NodeId> = (1..=5).collect();
    let after: BTreeSet<NodeId> = before
        .iter()
        .copied()
        .filter(|n| *n != removed as NodeId)
        .collect();
    // The survivors that are members of the leader's configuration agree on it, uniform.
    let settled = wait_until(
        "one uniform membership on the surviving members",
        DEADLINE,
        || {
            let views: Vec<(usize, View)> = live.iter().map(|&i| (i, membership(&c, i))).collect();
            let leader = live
                .iter()
                .find(|&&i| c.shared(i).leader() == Some(i as NodeId))
                .copied();
            async move {
                let Some(leader) = leader else { return Ok(None) };
                let (_, (configs, joint)) = views.iter().find(|(i, _)| *i == leader).expect("leader's view");
                if *joint {
                    return Ok(None);
                }
                let config = configs[0].clone();
                let agreed = views
                    .iter()
                    .filter(|(i, _)| config.contains(&(*i as NodeId)))
                    .all(|(_, v)| v.0 == [config.clone()] && !v.1);
                Ok(agreed.then_some(config))
            }
        },
    )
    .await?;
    assert!(
        settled == before || settled == after,
        "the change either finished ({after:?}) or rolled back ({before:?}); got {settled:?}"
    );
    if settled == after {
        // Finished: the removed member learns it and stops by itself.
        wait_until("the removed member to stop", DEADLINE, || {
            let done = c.nodes[removed - 1].as_ref().is_none_or(|h| h.is_finished());
            async move { Ok(done.then_some(())) }
        })
        .await?;
    }
    // And the cluster takes writes.
    let writer = c.client(carrier).await?;
    let r = writer
        .submit_as(admin(), &job("after-the-change", &[]), None)
        .await?;
    assert!(!job_id(&r.job).is_empty());
    tracing::info!(?settled, decisions = plan.decisions().len(), "settled");
    Ok(())
}

/// A seeded storm on every link: appends and votes dropped, messages of every kind delayed by
/// up to 40 ms (so reordered), appends and forwarded writes delivered twice. Clients submit
/// under Idempotency-Keys and retry until acknowledged. Once the network heals, every node
/// lists the same jobs at the same index: each acknowledged job exactly once, no other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seeded_storm_of_drops_delays_and_duplicates_loses_and_doubles_nothing() -> anyhow::Result<()> {
    init_tracing();
    let seed = std::env::var("LAUNCHER_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1923);
    let plan = Arc::new(Plan::new(seed));
    let c = InProcCluster::start_with_faults(3, plan.clone()).await?;
    let delay = Action::Delay {
        min: Duration::ZERO,
        max: Duration::from_millis(40),
    };
    plan.add(
        Rule::between(&[], &[], Action::Drop)
            .kinds(&[Kind::Append])
            .probability(0.1),
    );
    plan.add(
        Rule::between(&[], &[], Action::Drop)
            .kinds(&[Kind::Vote])
            .probability(0.2),
    );
    plan.add(
        Rule::between(&[], &[], Action::Duplicate)
            .kinds(&[Kind::Append, Kind::Forward])
            .probability(0.2),
    );
    plan.add(Rule::between(&[], &[], delay).probability(0.5));

    let mut tasks = Vec::new();
    for client in 1..=3usize {
        let node = c.client(client).await?;
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for n in 0..20 {
                let key = format!("storm-{client}-{n}");
                let body = job(&key, &[]);
                let id = wait_until(&format!("submit {key} to be acknowledged"), DEADLINE, || {
                    let node = node.clone();
                    let body = body.clone();
                    let key = key.clone();
                    async move {
                        match node.submit_as(admin(), &body, Some(&key)).await {
                            Ok(r) => Ok(Some(job_id(&r.job))),
                            Err(e) => {
                                tracing::info!(%key, error = %e, "submit failed; retrying under its key");
                                Ok(None)
                            }
                        }
                    }
                })
                .await?;
                acked.push(id);
            }
            anyhow::Ok(acked)
        }));
    }
    let mut acked = BTreeSet::new();
    for t in tasks {
        for id in t.await?? {
            assert!(acked.insert(id.clone()), "job {id} acknowledged twice");
        }
    }
    let decisions = plan.decisions();
    plan.heal();
    assert!(
        decisions
            .iter()
            .any(|d| d.4 == launcher_node::faults::Fault::Duplicate)
            && decisions
                .iter()
                .any(|d| d.4 == launcher_node::faults::Fault::Drop),
        "the storm dropped and duplicated messages (seed {seed})"
    );
    // Every node, caught up with the leader, lists exactly the acknowledged jobs.
    let leader = c.wait_for_leader(1).await? as usize;
    let (index, _) = c.client(leader).await?.list_all().await?;
    for i in 1..=3 {
        c.wait_applied(i, index).await?;
        let (_, jobs) = c.client(i).await?.list_stale(index).await?;
        let ids: Vec<String> = jobs.iter().map(|j| job_id(j)).collect();
        let listed: BTreeSet<String> = ids.iter().cloned().collect();
        assert_eq!(
            listed.len(),
            ids.len(),
            "node {i} lists a job twice (seed {seed})"
        );
        assert_eq!(
            listed, acked,
            "node {i} lists exactly the acknowledged jobs (seed {seed})"
        );
    }
    tracing::info!(
        seed,
        faults = decisions.len(),
        jobs = acked.len(),
        "storm survived"
    );
    Ok(())
}
