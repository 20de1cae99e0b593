//! The gateway's listeners (docs/api.md, §4 `[server]`, §6): HTTPS with rustls (HTTP/1.1 and
//! HTTP/2 by ALPN), the unix socket, graceful stop, and dropping root for `server-user`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::{TokioExecutor, TokioIo};
use launcher_gateway::config::GatewayConfig;
use launcher_tests::{
    init_tracing, shell_job, unique_loopback, wait_until, write_key, ClusterOpts, ProcessCluster,
    TestGateway, DEADLINE,
};
use reqwest::Method;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A self-signed certificate for `names` (IP addresses or DNS names): (cert PEM, key PEM).
fn self_signed(names: &[&str]) -> anyhow::Result<(String, String)> {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let ck = rcgen::generate_simple_self_signed(names)?;
    Ok((ck.cert.pem(), ck.signing_key.serialize_pem()))
}

/// Writes the pair into `dir` and points `cfg` at it with `enable-ssl` on.
fn enable_tls(cfg: &mut GatewayConfig, dir: &Path, cert: &str, key: &str) {
    let (cert_file, key_file) = (dir.join("gateway.crt"), dir.join("gateway.key"));
    std::fs::write(&cert_file, cert).expect("write certificate");
    std::fs::write(&key_file, key).expect("write key");
    cfg.server.enable_ssl = true;
    cfg.server.certificate_file = Some(cert_file);
    cfg.server.certificate_key_file = Some(key_file);
}

/// One HTTP/1.1 request over the unix socket at `socket`: status, headers, body.
async fn unix_request(
    socket: &Path,
    path: &str,
    token: Option<&str>,
) -> anyhow::Result<(u16, hyper::HeaderMap, Bytes)> {
    let exchange = async {
        let stream = tokio::net::UnixStream::connect(socket).await?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        let driver = tokio::spawn(conn);
        let mut req = hyper::Request::get(path).header("host", "localhost");
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let resp = sender.send_request(req.body(Empty::<Bytes>::new())?).await?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await?.to_bytes();
        drop(sender);
        let _ = driver.await;
        anyhow::Ok((status, headers, body))
    };
    tokio::time::timeout(DEADLINE, exchange).await?
}

/// The `launcher-node` cookie a response sets (the client key the gateway chose).
fn node_cookie(headers: &hyper::HeaderMap) -> Option<String> {
    headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|c| c.strip_prefix("launcher-node="))
        .map(|c| c.split(';').next().unwrap_or_default().to_string())
}

/// Over HTTPS the gateway answers `GET /status` and an authenticated `GET /jobs` to a client
/// that trusts its certificate, over HTTP/1.1 and (by ALPN) HTTP/2, with `Secure` cookies; plain
/// HTTP to the same port
/// fails; and clients whose handshake stalls or fails do not hold up anyone else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_http1_and_h2() -> anyhow::Result<()> {
    init_tracing();
    let cluster = ProcessCluster::start(1, ClusterOpts::default()).await?;
    let certs = tempfile::tempdir()?;
    let mut cert_pem = String::new();
    let gw = TestGateway::start(&cluster, |c| {
        let (cert, key) = self_signed(&[c.server.address.as_str(), "localhost"]).expect("certificate");
        enable_tls(c, certs.path(), &cert, &key);
        cert_pem = cert;
    })
    .await?;
    let addr = gw.handle.addr.expect("a TCP listener");
    let base = format!("https://{addr}");

    // Clients that never finish a handshake: one silent, one speaking garbage.
    let _silent = tokio::net::TcpStream::connect(addr).await?;
    let mut garbage = tokio::net::TcpStream::connect(addr).await?;
    garbage
        .write_all(b"\x16\x03\x01\x00\x05hello, not really TLS")
        .await?;

    let trusting = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cert_pem.as_bytes())?)
        .timeout(DEADLINE)
        .build()?;
    let user = launcher_tests::Http {
        base: base.clone(),
        token: Some(gw.token("alice")),
        inner: trusting.clone(),
    };
    let r = trusting.get(format!("{base}/status")).send().await?;
    assert_eq!(r.version(), reqwest::Version::HTTP_11);
    assert_eq!(r.status(), 200);
    let st: serde_json::Value = r.json().await?;
    assert!(st["status"].is_string(), "{st}");
    let (st, jobs) = user.get("/jobs").await?;
    assert_eq!((st, jobs.is_array()), (200, true), "{jobs}");
    let anonymous = trusting.get(format!("{base}/jobs")).send().await?;
    assert_eq!(anonymous.status(), 401, "authentication still applies over TLS");

    // The garbage client's handshake failed and the server closed its connection.
    let mut buf = [0u8; 256];
    let closed = tokio::time::timeout(DEADLINE, async {
        loop {
            match garbage.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {} // a TLS alert
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "the server closes a connection whose handshake failed"
    );

    // HTTP/2, negotiated by ALPN.
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::pem::PemObject::pem_slice_iter(cert_pem.as_bytes()) {
        roots.add(cert?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls));
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = rustls::pki_types::ServerName::try_from(addr.ip().to_string())?;
    let stream = tokio::time::timeout(DEADLINE, connector.connect(name, tcp)).await??;
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut h2, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    for (path, token, want) in [
        ("/status", None, 200),
        ("/jobs", Some(gw.token("alice")), 200),
        ("/jobs", None, 401),
    ] {
        let mut req = hyper::Request::get(format!("{base}{path}"));
        if let Some(t) = &token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let resp =
            tokio::time::timeout(DEADLINE, h2.send_request(req.body(Empty::<Bytes>::new())?)).await??;
        assert_eq!(resp.version(), hyper::Version::HTTP_2);
        assert_eq!(resp.status().as_u16(), want, "{path} over h2");
        if want == 200 && token.is_some() {
            let cookies: Vec<_> = resp.headers().get_all("set-cookie").iter().collect();
            assert!(!cookies.is_empty());
            for c in cookies {
                assert!(
                    c.to_str()?.ends_with("; Secure"),
                    "over TLS every cookie is Secure: {c:?}"
                );
            }
        }
        let body = resp.into_body().collect().await?.to_bytes();
        serde_json::from_slice::<serde_json::Value>(&body)?;
    }

    let plain = reqwest::Client::builder()
        .timeout(DEADLINE)
        .build()?
        .get(format!("http://{addr}/status"))
        .send()
        .await;
    assert!(plain.is_err(), "plain HTTP to the TLS port must fail: {plain:?}");
    let untrusting = reqwest::Client::builder().timeout(DEADLINE).build()?;
    assert!(
        untrusting.get(format!("{base}/status")).send().await.is_err(),
        "a client that does not trust the certificate is refused"
    );
    // Still serving after all of that.
    let (st, _) = user.get("/jobs").await?;
    assert_eq!(st, 200);
    gw.handle.shutdown().await?;
    Ok(())
}

/// With `enable-ssl`, a missing certificate file makes `start` fail with a message naming the
/// key and the file (and nothing is left listening: the files are read before binding).
#[tokio::test]
async fn missing_certificate_file_fails_start() -> anyhow::Result<()> {
    init_tracing();
    let dir = tempfile::tempdir()?;
    let mut cfg = GatewayConfig::new(dir.path().to_path_buf());
    cfg.server.address = unique_loopback();
    cfg.server.port = 0;
    write_key(&cfg.server.secure_cookie_key_file)?;
    // Never contacted: start fails before it looks at the nodes.
    cfg.server.nodes = vec!["127.0.0.1:1".into()];
    let (_, key) = self_signed(&["localhost"])?;
    enable_tls(&mut cfg, dir.path(), "unused", &key);
    let missing = dir.path().join("no-such-cert.pem");
    cfg.server.certificate_file = Some(missing.clone());
    let err = match launcher_gateway::start(cfg.clone()).await {
        Ok(_) => anyhow::bail!("start succeeded without its certificate file"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        err.contains("certificate-file") && err.contains(&missing.display().to_string()),
        "{err}"
    );
    assert!(err.contains("No such file"), "{err}");

    // A key file without a key is named likewise.
    let (cert, _) = self_signed(&["localhost"])?;
    enable_tls(&mut cfg, dir.path(), &cert, "not a key\n");
    let err = match launcher_gateway::start(cfg).await {
        Ok(_) => anyhow::bail!("start succeeded without a private key"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        err.contains("certificate-key-file") && err.contains("gateway.key") && err.contains("no private key"),
        "{err}"
    );
    Ok(())
}

/// With `unix-socket` the gateway also serves on that path: a socket with mode 0660 answering
/// `GET /status` and an authenticated `GET /jobs`. Its clients have no source address, so all of
/// them share one client key (the same `launcher-node` cookie, unlike a TCP client's); the TCP
/// listener keeps serving; after `shutdown()` the socket file is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unix_socket_serves_and_is_removed() -> anyhow::Result<()> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    init_tracing();
    let cluster = ProcessCluster::start(1, ClusterOpts::default()).await?;
    let dir = tempfile::tempdir()?;
    let socket = dir.path().join("gateway.sock");
    let gw = TestGateway::start(&cluster, |c| c.server.unix_socket = Some(socket.clone())).await?;
    assert_eq!(gw.handle.unix_socket.as_deref(), Some(socket.as_path()));
    let meta = std::fs::symlink_metadata(&socket)?;
    assert!(meta.file_type().is_socket(), "{meta:?}");
    assert_eq!(meta.mode() & 0o777, 0o660);

    let (st, _, body) = unix_request(&socket, "/status", None).await?;
    assert_eq!(st, 200);
    let status: serde_json::Value = serde_json::from_slice(&body)?;
    assert!(status["status"].is_string(), "{status}");
    let token = gw.token("alice");
    let (st, headers, body) = unix_request(&socket, "/jobs", Some(&token)).await?;
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&body));
    assert!(serde_json::from_slice::<serde_json::Value>(&body)?.is_array());
    let (st, _, _) = unix_request(&socket, "/jobs", None).await?;
    assert_eq!(st, 401, "authentication applies on the unix socket too");

    let first = node_cookie(&headers).expect("a new client gets a launcher-node cookie");
    let (_, headers, _) = unix_request(&socket, "/jobs", Some(&token)).await?;
    assert_eq!(node_cookie(&headers).as_deref(), Some(first.as_str()));
    let tcp = gw.client("alice").req(Method::GET, "/jobs").send().await?;
    assert_eq!(tcp.status(), 200, "the TCP listener serves as well");
    let tcp_cookie = node_cookie(tcp.headers()).expect("cookie over TCP");
    assert_ne!(tcp_cookie, first, "a TCP client is keyed by its address");

    gw.handle.shutdown().await?;
    assert!(
        std::fs::symlink_metadata(&socket).is_err(),
        "the socket file is removed on stop"
    );
    Ok(())
}

/// Stopping finishes requests in flight: a streaming output request that began before the stop
/// receives the rest of its output, while new connections are already refused, and `shutdown`
/// returns within the drain bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_drains_requests_in_flight() -> anyhow::Result<()> {
    use futures::StreamExt;
    init_tracing();
    let cluster = ProcessCluster::start(1, ClusterOpts::default()).await?;
    let gw = TestGateway::start(&cluster, |_| {}).await?;
    let admin = gw.client("admin");
    let (st, job) = admin
        .post("/jobs", &shell_job("drain", "echo start; sleep 3; echo done"))
        .await?;
    assert_eq!(st, 201, "{job}");
    let id = job["id"].as_str().expect("id").to_string();
    // Output can be followed once the job runs (before that the answer is 409, JobNotRunning).
    wait_until("the job to run", DEADLINE, || {
        let (admin, id) = (admin.clone(), id.clone());
        async move {
            let (_, st) = admin.get(&format!("/jobs/{id}/status")).await?;
            Ok((st["status"] != "Pending").then_some(()))
        }
    })
    .await?;
    let resp = admin
        .req(Method::GET, &format!("/jobs/{id}/output?type=stdout&follow=true"))
        .send()
        .await?;
    assert_eq!(resp.status(), 200);
    let mut body = resp.bytes_stream();
    let mut seen = String::new();
    tokio::time::timeout(DEADLINE, async {
        while !seen.contains("start\n") {
            match body.next().await {
                Some(chunk) => seen.push_str(&String::from_utf8_lossy(&chunk?)),
                None => anyhow::bail!("the output ended early: {seen:?}"),
            }
        }
        anyhow::Ok(())
    })
    .await??;
    let addr = gw.handle.addr.expect("a TCP listener");
    let began = Instant::now();
    let shutdown = tokio::spawn(gw.handle.shutdown());
    wait_until("new connections to be refused", DEADLINE, || async move {
        Ok(tokio::net::TcpStream::connect(addr).await.is_err().then_some(()))
    })
    .await?;
    assert!(
        !seen.contains("done"),
        "the stop began while the job still ran: {seen:?}"
    );
    tokio::time::timeout(DEADLINE, async {
        while let Some(chunk) = body.next().await {
            seen.push_str(&String::from_utf8_lossy(&chunk?));
        }
        anyhow::Ok(())
    })
    .await??;
    assert_eq!(seen, "start\ndone\n", "the request in flight completes");
    shutdown.await??;
    assert!(
        began.elapsed() < launcher_gateway::listeners::DRAIN_TIMEOUT + Duration::from_secs(5),
        "{:?}",
        began.elapsed()
    );
    Ok(())
}

/// The `launcher-gateway` binary of this cargo profile, built once per test process.
fn gateway_binary() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let exe = std::env::current_exe().expect("own binary path");
        let mut profile_dir = exe.parent().expect("binary dir").to_path_buf();
        if profile_dir.file_name().is_some_and(|n| n == "deps") {
            profile_dir.pop();
        }
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = std::process::Command::new(cargo);
        cmd.args([
            "build",
            "--quiet",
            "-p",
            "launcher-gateway",
            "--bins",
            "--manifest-path",
        ]);
        cmd.arg(&manifest);
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        assert!(
            cmd.status().expect("cargo runs").success(),
            "building launcher-gateway failed"
        );
        let bin = profile_dir.join("launcher-gateway");
        assert!(bin.exists(), "{} missing after build", bin.display());
        bin
    })
    .clone()
}

/// A gateway process, killed if the test ends early.
struct GatewayProcess {
    child: std::process::Child,
    stderr: PathBuf,
}

impl GatewayProcess {
    fn spawn(dir: &Path, conf: &str) -> anyhow::Result<GatewayProcess> {
        let conf_file = dir.join("launcher.conf");
        std::fs::write(&conf_file, conf)?;
        let stderr = dir.join("gateway.stderr");
        let child = std::process::Command::new(gateway_binary())
            .arg("--config")
            .arg(&conf_file)
            .env("RUST_LOG", "info")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&stderr)?)
            .spawn()?;
        Ok(GatewayProcess { child, stderr })
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Waits for the process to exit; its exit code.
    async fn exit_code(&mut self) -> anyhow::Result<Option<i32>> {
        let child = &mut self.child;
        let end = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status.code());
            }
            anyhow::ensure!(
                Instant::now() < end,
                "the gateway did not exit within {DEADLINE:?}"
            );
            // Poll interval of a deadline-bound wait for the exit.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `(uid, gid)` fields of every thread of `pid` from /proc: (real, effective, saved, fs) each.
fn thread_ids(pid: u32) -> anyhow::Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let status = std::fs::read_to_string(task?.path().join("status"))?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
                .unwrap_or_default()
        };
        out.push((field("Uid:"), field("Gid:")));
    }
    Ok(out)
}

/// Run as root, the `launcher-gateway` binary binds its listeners and then runs as
/// `server-user` in every thread (real, effective, saved and fs ids), with the unix socket handed
/// to that user (mode 0660) and still served; SIGTERM stops it cleanly and removes the socket. A
/// `server-user` that does not exist stops start-up with an error naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_drops_root_for_server_user() -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt;
    init_tracing();
    // Dropping privileges is what is tested: without root there is nothing to drop, and a pass
    // would only hide that the test did not run.
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root: run it as root, as CI does"
    );
    let name = launcher_tests::job_user();
    let user = nix::unistd::User::from_name(&name)?.expect("the test user exists");
    let dir = tempfile::tempdir()?;
    // The unprivileged gateway must be able to remove its socket from this directory on stop.
    nix::unistd::chown(dir.path(), Some(user.uid), Some(user.gid))?;
    let key = dir.path().join("secure-cookie-key");
    write_key(&key)?;
    let socket = dir.path().join("gateway.sock");
    let conf = |server_user: &str| {
        format!(
            "[server]\naddress={}\nport=0\nunix-socket={}\nserver-user={server_user}\n\
             secure-cookie-key-file={}\nnodes=127.0.0.1:1\n",
            unique_loopback(),
            socket.display(),
            key.display()
        )
    };
    let mut gw = GatewayProcess::spawn(dir.path(), &conf(&name))?;
    let pid = gw.child.id();
    let (uid, gid) = (user.uid.to_string(), user.gid.to_string());
    let want = ([uid.as_str(); 4].join(" "), [gid.as_str(); 4].join(" "));
    let log = gw.stderr.clone();
    wait_until("the gateway to run as server-user", DEADLINE, || {
        let want = want.clone();
        let log = log.clone();
        async move {
            let ids = thread_ids(pid).map_err(|e| {
                anyhow::anyhow!("{e}; log: {}", std::fs::read_to_string(&log).unwrap_or_default())
            })?;
            Ok((!ids.is_empty() && ids.iter().all(|ids| *ids == want)).then_some(()))
        }
    })
    .await?;
    let meta = std::fs::symlink_metadata(&socket)?;
    assert_eq!((meta.uid(), meta.gid()), (user.uid.as_raw(), user.gid.as_raw()));
    assert_eq!(meta.mode() & 0o777, 0o660);
    let (st, _, body) = unix_request(&socket, "/status", None).await?;
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&body));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    )?;
    assert_eq!(gw.exit_code().await?, Some(0), "{}", gw.log());
    assert!(gw.log().contains("dropped root privileges"), "{}", gw.log());
    assert!(
        std::fs::symlink_metadata(&socket).is_err(),
        "socket removed on stop"
    );

    let mut gw = GatewayProcess::spawn(dir.path(), &conf("launcher-no-such-user"))?;
    assert_eq!(gw.exit_code().await?, Some(1), "{}", gw.log());
    assert!(
        gw.log()
            .contains("server-user launcher-no-such-user: no such user"),
        "{}",
        gw.log()
    );
    assert!(
        std::fs::symlink_metadata(&socket).is_err(),
        "a failed start leaves no socket behind"
    );
    Ok(())
}

/// `port=0` with `unix-socket` in the file serves on the socket only: no TCP listener is bound,
/// the socket answers. The hook given to `start_with` (where the binary gives up root) runs
/// after the socket is bound and before it answers anything: a failing hook leaves nothing
/// listening and its error is `start_with`'s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unix_socket_only_and_the_hook_before_serving() -> anyhow::Result<()> {
    init_tracing();
    let cluster = ProcessCluster::start(1, ClusterOpts::default()).await?;
    let dir = tempfile::tempdir()?;
    let socket = dir.path().join("only.sock");
    let text = format!(
        "[server]\nport=0\nunix-socket={}\nnodes={}\nsecure-cookie-key-file={}\n",
        socket.display(),
        cluster.nodes[0].addr(),
        cluster.key_path.display()
    );
    let cfg = launcher_gateway::config::parse(&text, "launcher.conf", dir.path(), |_| None)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    assert!(!cfg.tcp);

    let refused = launcher_gateway::server::start_with(cfg.clone(), |_| {
        // Bound already, not serving yet.
        assert!(
            std::fs::symlink_metadata(&socket).is_ok(),
            "bound before the hook"
        );
        Err(launcher_gateway::error::StartError::Privileges(
            "no such user".into(),
        ))
    })
    .await;
    let err = format!("{:#}", refused.err().expect("the hook's failure stops the start"));
    assert!(err.contains("no such user"), "{err}");
    assert!(
        unix_request(&socket, "/status", None).await.is_err(),
        "nothing answers after a failed start"
    );

    let gw = launcher_gateway::server::start_with(cfg, |_| Ok(())).await?;
    assert_eq!(gw.addr, None, "no TCP listener");
    let (st, _, _) = unix_request(&socket, "/status", None).await?;
    assert_eq!(st, 200);
    gw.shutdown().await?;
    Ok(())
}
