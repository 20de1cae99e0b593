//! Job updates from the owner's worker reach the table even when its sequence numbers fall
//! behind the table's.

use launcher_node::writes::WriteRequest;
use launcher_storage::command::JobUpdate;
use launcher_storage::CommandV1;
use launcher_tests::client::{admin, job_id};
use launcher_tests::inproc::InProcCluster;
use launcher_tests::{init_tracing, shell_job, TestPlugin};

/// An update the table ignores for an old sequence number, while the worker still owns the
/// job in its epoch, is sent again, not dropped: the plugin reports each change once. Here a
/// change of the same owner and epoch with a much later sequence number is committed behind
/// the worker's back (as a second worker of the job, or one started from a lagging table,
/// would) while the job is Pending in the plugin; its start, reported afterwards by the plugin,
/// must still reach the table. (Before, the worker took the ignored update for done and the job
/// stayed Pending until it ended; a 30-minute chaos run met it as a long job stuck in Pending.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_ignored_for_an_old_sequence_number_is_sent_again() -> anyhow::Result<()> {
    init_tracing();
    let c = InProcCluster::start_with_plugin(3, TestPlugin::Scripted("pending-seconds=3\n".into())).await?;
    let client = c.client(1).await?;
    let id = job_id(
        &client
            .submit_as(admin(), &shell_job("starts-later", "sleep 600"), None)
            .await?
            .job,
    );
    let launched = client
        .wait_job(&id, "launched", |j| j["pluginJobId"].is_string())
        .await?;
    assert_eq!(launched["status"], "Pending", "{launched}");
    let key = id.clone();
    let (_, meta) = c
        .shared(1)
        .table(move |sm| sm.job_with_meta(&key))
        .await?
        .ok_or_else(|| anyhow::anyhow!("job {id} not in the table"))?;
    let ahead = JobUpdate {
        id: id.clone(),
        node: meta.owner,
        epoch: meta.epoch,
        seq: meta.seq + 1000,
        status_message: Some("written by another worker of the job".into()),
        ..Default::default()
    };
    let command = CommandV1::Update(ahead).into();
    c.shared(1).write(WriteRequest::Command { command }).await?;
    client
        .wait_job(&id, "running", |j| j["status"] == "Running")
        .await?;
    client.control_as(admin(), &id, "kill").await?;
    Ok(())
}
