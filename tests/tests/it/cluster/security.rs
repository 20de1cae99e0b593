use launcher_node::auth::InternalAuth;
use launcher_node::network::Peers;
use launcher_proto::launcher::launcher_client::LauncherClient;
use launcher_proto::launcher::{ListJobsRequest, StatusRequest};
use launcher_proto::raft::raft_client::RaftClient;
use launcher_proto::raft::RaftPayload;
use launcher_tests::client::admin;
use launcher_tests::{init_tracing, ClusterOpts, ProcessCluster};

/// Internal gRPC calls (Raft and launcher service) without the credential, with a credential
/// from another key, or for another cluster id are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_calls_need_credential_and_cluster_id() -> anyhow::Result<()> {
    init_tracing();
    let cluster = ProcessCluster::start(1, ClusterOpts::default()).await?;
    let addr = format!("http://{}", cluster.nodes[0].addr());

    // No credential at all.
    let mut raw = RaftClient::connect(addr.clone()).await?;
    let err = raw
        .append_entries(RaftPayload {
            payload: b"{}".to_vec(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");
    let mut raw = LauncherClient::connect(addr.clone()).await?;
    let err = raw.status(StatusRequest {}).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");

    // A credential made from another key.
    let wrong_key = Peers::new(InternalAuth::new(&[9u8; 48], cluster.cluster_id().into()));
    let err = wrong_key
        .raft(&cluster.nodes[0].addr())
        .vote(RaftPayload {
            payload: b"{}".to_vec(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");

    // The right key, another cluster.
    let other = Peers::new(InternalAuth::new(&cluster.key, "some-other-cluster".into()));
    let err = other
        .raft(&cluster.nodes[0].addr())
        .vote(RaftPayload {
            payload: b"{}".to_vec(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    let req = ListJobsRequest {
        caller: Some(admin()),
        user: "*".into(),
        ..Default::default()
    };
    let err = other
        .launcher(&cluster.nodes[0].addr())
        .list_jobs(req.clone())
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");

    // Right key, no cluster id: only discovery-type calls; job calls are refused.
    let unbound = Peers::new(InternalAuth::new(&cluster.key, String::new()));
    assert!(unbound
        .launcher(&cluster.nodes[0].addr())
        .status(StatusRequest {})
        .await
        .is_ok());
    let err = unbound
        .launcher(&cluster.nodes[0].addr())
        .list_jobs(req.clone())
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");

    // And the bound client with the right key works.
    assert!(cluster.client(1).list(req).await.is_ok());
    Ok(())
}

/// A node whose data dir belongs to another cluster refuses to start when the nodes it is
/// told to join belong to a different cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_of_another_cluster_is_refused() -> anyhow::Result<()> {
    init_tracing();
    let mut a = ProcessCluster::start(1, ClusterOpts::default()).await?;
    let b = ProcessCluster::start(1, ClusterOpts::default()).await?;
    a.terminate(1).await?;
    // Point A's node at B (same key so that only the cluster id differs).
    std::fs::copy(&b.key_path, &a.key_path)?;
    let conf = a.nodes[0].dir.join("launcher.conf");
    let text = std::fs::read_to_string(&conf)?;
    std::fs::write(
        &conf,
        text.replace("[node]\n", &format!("[node]\njoin={}\n", b.nodes[0].addr())),
    )?;
    a.spawn_raw(1, &[])?;
    let status = a.wait_exit(1).await?;
    assert!(!status.success());
    let log = a.log(1);
    assert!(
        log.contains("belongs to cluster"),
        "clear refusal expected:\n{log}"
    );
    Ok(())
}

/// A gRPC message over the configured size cap is refused with a status; the node keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_grpc_messages_are_refused() -> anyhow::Result<()> {
    init_tracing();
    let cluster = ProcessCluster::start(1, ClusterOpts::default()).await?;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", cluster.nodes[0].addr()))?
        .connect()
        .await?;
    let auth = InternalAuth::new(&cluster.key, cluster.cluster_id().into());
    let mut client = LauncherClient::with_interceptor(channel, auth).max_encoding_message_size(usize::MAX);
    let huge = launcher_proto::launcher::SubmitJobRequest {
        caller: Some(admin()),
        job: vec![b' '; launcher_node::network::MAX_GRPC_MESSAGE + 1024],
        idempotency_key: String::new(),
    };
    let err = client.submit_job(huge).await.unwrap_err();
    assert!(
        matches!(
            err.code(),
            tonic::Code::OutOfRange | tonic::Code::ResourceExhausted
        ),
        "oversize message refused with a status: {err:?}"
    );
    assert_eq!(
        cluster.client(1).status().await?.status,
        "Green",
        "the node still serves"
    );
    Ok(())
}

/// A read asking for an index the node cannot reach in time answers Unavailable (code 13)
/// instead of going back in time; a reachable index is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_index_reads_never_go_back() -> anyhow::Result<()> {
    init_tracing();
    let cluster = ProcessCluster::start(1, ClusterOpts::default()).await?;
    let r = cluster.client(1).submit(&launcher_tests::job("m", &[])).await?;
    let (index, jobs) = cluster.client(1).list_stale(r.applied_index).await?;
    assert!(index >= r.applied_index && jobs.len() == 1);
    let err = cluster
        .client(1)
        .list_stale(r.applied_index + 1_000_000)
        .await
        .unwrap_err();
    assert_eq!(launcher_tests::client::error_code(&err), 13, "{err:?}");
    Ok(())
}
