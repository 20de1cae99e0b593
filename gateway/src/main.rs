//! launcher-gateway: the HTTP API on port 5559 (DESIGN §2).
//!
//! Skeleton: the gateway issue fills in the API, auth, TLS and routing. Today it
//! only proves a node's `Status` answers, so deployments can be wired up.
#![forbid(unsafe_code)]

use clap::Parser;
use launcher_proto::launcher::launcher_client::LauncherClient;
use launcher_proto::launcher::StatusRequest;

/// Command-line options.
#[derive(Parser, Debug)]
#[command(version, about = "Launcher HTTP gateway (skeleton)")]
struct Args {
    /// A node's gRPC address to query.
    #[arg(long, default_value = "http://127.0.0.1:5560")]
    node: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_writer(std::io::stderr).init();
    let args = Args::parse();
    let mut client = LauncherClient::connect(args.node.clone()).await?;
    let status = client.status(StatusRequest {}).await?.into_inner();
    println!(
        "{} leader={} applied={}",
        status.status, status.leader, status.applied_index
    );
    anyhow::bail!("the HTTP API is not implemented yet (see the gateway issue)")
}
