//! A `launcher-gateway` running inside the test's runtime (port 0 on its own loopback address)
//! in front of a [`ProcessCluster`], and an HTTP client with tokens.

use launcher_gateway::config::GatewayConfig;
use launcher_gateway::GatewayHandle;

use crate::process::ProcessCluster;

/// A gateway in front of a test cluster.
pub struct TestGateway {
    pub handle: GatewayHandle,
    /// `http://127.a.b.c:port`
    pub url: String,
    key: Vec<u8>,
}

impl TestGateway {
    /// Starts a gateway over every node of `cluster`; `tweak` adjusts its configuration.
    pub async fn start(
        cluster: &ProcessCluster,
        tweak: impl FnOnce(&mut GatewayConfig),
    ) -> anyhow::Result<Self> {
        let mut cfg = GatewayConfig::new(cluster.root.path().to_path_buf());
        cfg.server.address = crate::unique_loopback();
        cfg.server.port = 0;
        cfg.server.secure_cookie_key_file = cluster.key_path.clone();
        cfg.server.nodes = cluster.nodes.iter().map(|n| n.addr()).collect();
        cfg.server.admin_users = vec!["admin".into()];
        tweak(&mut cfg);
        let handle = launcher_gateway::start(cfg).await?;
        let addr = handle
            .addr
            .ok_or_else(|| anyhow::anyhow!("the test gateway serves TCP"))?;
        let url = format!("http://{addr}");
        Ok(TestGateway {
            handle,
            url,
            key: cluster.key.clone(),
        })
    }

    /// A cluster of `n` node processes whose plugin is the scripted one configured by
    /// `plugin_conf` (jobs are simulated: nothing runs), and a gateway in front of it.
    pub async fn with_scripted_cluster(
        n: usize,
        plugin_conf: &str,
    ) -> anyhow::Result<(ProcessCluster, TestGateway)> {
        let opts = crate::ClusterOpts {
            plugin: crate::TestPlugin::Scripted(plugin_conf.to_string()),
            ..Default::default()
        };
        let cluster = ProcessCluster::start(n, opts).await?;
        let gw = TestGateway::start(&cluster, |_| {}).await?;
        Ok((cluster, gw))
    }

    /// A token for `user`, valid for an hour.
    pub fn token(&self, user: &str) -> String {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock after 1970")
            .as_secs();
        launcher_gateway::auth::mint_token(&self.key, user, now + 3600)
    }

    /// A client that sends `user`'s token (no cookies kept).
    pub fn client(&self, user: &str) -> Http {
        Http {
            base: self.url.clone(),
            token: Some(self.token(user)),
            inner: reqwest::Client::new(),
        }
    }

    /// A client with no token.
    pub fn anonymous(&self) -> Http {
        Http {
            base: self.url.clone(),
            token: None,
            inner: reqwest::Client::new(),
        }
    }
}

/// A small HTTP client for tests.
#[derive(Clone)]
pub struct Http {
    pub base: String,
    pub token: Option<String>,
    pub inner: reqwest::Client,
}

impl Http {
    /// A request builder for `path` with the token.
    pub fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let r = self.inner.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    /// GET `path`: status and JSON body.
    pub async fn get(&self, path: &str) -> anyhow::Result<(u16, serde_json::Value)> {
        let r = self.req(reqwest::Method::GET, path).send().await?;
        let status = r.status().as_u16();
        let body = r.bytes().await?;
        Ok((
            status,
            serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
        ))
    }

    /// POST `path` with a JSON body: status and JSON body.
    pub async fn post(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> anyhow::Result<(u16, serde_json::Value)> {
        let r = self.req(reqwest::Method::POST, path).json(body).send().await?;
        let status = r.status().as_u16();
        let body = r.bytes().await?;
        Ok((
            status,
            serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
        ))
    }
}
