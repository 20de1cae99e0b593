//! Headless Chromium driven over the DevTools protocol, for tests of the web status page.
//!
//! [`Browser::launch`] starts Debian's `chromium` with a profile of its own in a temporary
//! directory, no proxy, no name resolution (so it cannot reach past loopback by name) and no
//! background traffic, under `timeout` so that it cannot outlive a test process that was killed
//! hard, and in a process group of its own, which dropping the [`Browser`] kills whatever the
//! test's outcome. [`Page`] sends commands with a deadline and keeps the page's exceptions and
//! console errors for the test to check.

use std::collections::HashMap;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use futures::stream::SplitSink;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::wait_until;

/// The browser command (Debian's `chromium` package).
pub const CHROMIUM: &str = "chromium";
/// Deadline of one DevTools command.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long Chromium may take to open its DevTools endpoint.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Chromium is killed after this long whatever happens to the test process.
pub const LIFETIME: Duration = Duration::from_secs(600);
/// Events kept per browser (the oldest are dropped beyond it).
const MAX_EVENTS: usize = 10_000;

type Sink = SplitSink<WebSocketStream<MaybeTlsStream<TcpStream>>, Message>;

/// One DevTools connection: commands by id, events in arrival order.
struct Conn {
    next_id: AtomicU64,
    sink: tokio::sync::Mutex<Sink>,
    pending: Mutex<HashMap<u64, oneshot::Sender<Result<Value, String>>>>,
    /// (session id, method, params) of every event.
    events: Mutex<Vec<(Option<String>, String, Value)>>,
}

impl Conn {
    async fn call(&self, session: Option<&str>, method: &str, params: Value) -> anyhow::Result<Value> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut msg = json!({"id": id, "method": method, "params": params});
        if let Some(s) = session {
            msg["sessionId"] = Value::from(s);
        }
        let (tx, rx) = oneshot::channel();
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, tx);
        let sent = tokio::time::timeout(CALL_TIMEOUT, async {
            self.sink.lock().await.send(Message::text(msg.to_string())).await
        })
        .await;
        let answer = match sent {
            Ok(Ok(())) => tokio::time::timeout(CALL_TIMEOUT, rx).await,
            Ok(Err(e)) => Err(anyhow::anyhow!("sending {method} to Chromium failed: {e}"))?,
            Err(_) => Err(anyhow::anyhow!("sending {method} to Chromium timed out"))?,
        };
        self.pending.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
        match answer {
            Ok(Ok(Ok(v))) => Ok(v),
            Ok(Ok(Err(e))) => anyhow::bail!("{method} failed in Chromium: {e}"),
            Ok(Err(_)) => anyhow::bail!("Chromium closed the DevTools connection during {method}"),
            Err(_) => anyhow::bail!("Chromium did not answer {method} within {CALL_TIMEOUT:?}"),
        }
    }
}

/// The browser's process group: killed when dropped.
struct Process {
    child: std::process::Child,
}

impl Drop for Process {
    fn drop(&mut self) {
        // `timeout` leads the group (process_group(0)); Chromium and its helpers are in it.
        let group = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

/// A headless Chromium with its DevTools connection.
pub struct Browser {
    conn: Arc<Conn>,
    reader: tokio::task::JoinHandle<()>,
    width: u32,
    height: u32,
    /// Dropped after the reader stops and the process group is killed (fields drop in order).
    process: Process,
    profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// Where `name` is on `PATH`, if anywhere.
fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

impl Browser {
    /// Starts Chromium with pages of `width` x `height` CSS pixels (device scale 1), and connects
    /// to it. Fails with what to install when Chromium is missing.
    pub async fn launch(width: u32, height: u32) -> anyhow::Result<Browser> {
        let exe = on_path(CHROMIUM).ok_or_else(|| {
            anyhow::anyhow!(
                "`{CHROMIUM}` is not on PATH: install Debian's package with \
                 `apt-get update && apt-get install -y chromium` (tests/run-all.sh should do this)"
            )
        })?;
        let profile = tempfile::Builder::new().prefix("chromium-").tempdir()?;
        let log = std::fs::File::create(profile.path().join("chromium.log"))?;
        let mut cmd = std::process::Command::new("timeout");
        cmd.arg("--signal=KILL")
            .arg(LIFETIME.as_secs().to_string())
            .arg(&exe)
            .args([
                "--headless",
                "--remote-debugging-port=0",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-domain-reliability",
                "--disable-client-side-phishing-detection",
                "--disable-sync",
                "--disable-extensions",
                "--disable-default-apps",
                "--disable-breakpad",
                "--disable-features=Translate,MediaRouter,OptimizationHints,DialMediaRouteProvider",
                "--no-pings",
                "--metrics-recording-only",
                "--password-store=basic",
                "--use-mock-keychain",
                "--hide-scrollbars",
                "--mute-audio",
                "--force-color-profile=srgb",
                // Loopback only: no proxy, and nothing resolves but 127.* addresses (tests use
                // IP addresses), so no request can leave the machine.
                "--no-proxy-server",
                "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.*",
            ])
            .arg(format!("--window-size={width},{height}"))
            .arg(format!("--user-data-dir={}", profile.path().display()));
        // Chromium's sandbox refuses to run as root; a test page needs none.
        if nix::unistd::geteuid().is_root() {
            cmd.arg("--no-sandbox");
        }
        cmd.arg("about:blank")
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0);
        let process = Process {
            child: cmd
                .spawn()
                .with_context(|| format!("starting {}", exe.display()))?,
        };
        let port_file = profile.path().join("DevToolsActivePort");
        let url = wait_until("Chromium's DevTools endpoint", START_TIMEOUT, || {
            let port_file = port_file.clone();
            async move {
                let text = std::fs::read_to_string(&port_file).unwrap_or_default();
                let mut lines = text.lines();
                Ok(match (lines.next(), lines.next()) {
                    (Some(port), Some(path)) if !port.is_empty() && path.starts_with('/') => {
                        Some(format!("ws://127.0.0.1:{port}{path}"))
                    }
                    _ => None,
                })
            }
        })
        .await
        .with_context(|| format!("Chromium's log:\n{}", tail(&profile.path().join("chromium.log"))))?;
        let (ws, _) = tokio::time::timeout(CALL_TIMEOUT, tokio_tungstenite::connect_async(url.as_str()))
            .await
            .context("connecting to Chromium's DevTools endpoint timed out")??;
        let (sink, mut stream) = ws.split();
        let conn = Arc::new(Conn {
            next_id: AtomicU64::new(1),
            sink: tokio::sync::Mutex::new(sink),
            pending: Mutex::new(HashMap::new()),
            events: Mutex::new(Vec::new()),
        });
        let weak = Arc::downgrade(&conn);
        let reader = tokio::spawn(async move {
            while let Some(Ok(msg)) = stream.next().await {
                let Message::Text(text) = msg else { continue };
                let Ok(v) = serde_json::from_str::<Value>(&text) else {
                    continue;
                };
                let Some(conn) = weak.upgrade() else { break };
                if let Some(id) = v["id"].as_u64() {
                    let tx = conn.pending.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
                    if let Some(tx) = tx {
                        let answer = match v.get("error") {
                            Some(e) => Err(e.to_string()),
                            None => Ok(v["result"].clone()),
                        };
                        let _ = tx.send(answer);
                    }
                } else if let Some(method) = v["method"].as_str() {
                    let mut events = conn.events.lock().unwrap_or_else(|p| p.into_inner());
                    if events.len() >= MAX_EVENTS {
                        events.remove(0);
                    }
                    let session = v["sessionId"].as_str().map(str::to_string);
                    events.push((session, method.to_string(), v["params"].clone()));
                }
            }
        });
        Ok(Browser {
            conn,
            reader,
            width,
            height,
            process,
            profile,
        })
    }

    /// A new tab, attached, with the Page, Runtime and Log domains on and the set viewport.
    pub async fn new_page(&self) -> anyhow::Result<Page> {
        let target = self
            .conn
            .call(None, "Target.createTarget", json!({"url": "about:blank"}))
            .await?;
        let target_id = target["targetId"]
            .as_str()
            .context("Target.createTarget gave no targetId")?;
        let attached = self
            .conn
            .call(
                None,
                "Target.attachToTarget",
                json!({"targetId": target_id, "flatten": true}),
            )
            .await?;
        let session = attached["sessionId"]
            .as_str()
            .context("Target.attachToTarget gave no sessionId")?
            .to_string();
        let page = Page {
            conn: self.conn.clone(),
            session,
        };
        for domain in ["Page.enable", "Runtime.enable", "Log.enable", "Network.enable"] {
            page.call(domain, json!({})).await?;
        }
        page.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": self.width, "height": self.height, "deviceScaleFactor": 1, "mobile": false}),
        )
        .await?;
        Ok(page)
    }

    /// The last lines of Chromium's own log (for failure messages).
    pub fn log_tail(&self) -> String {
        tail(&self.profile.path().join("chromium.log"))
    }

    /// The process id of the group leader (`timeout`), whose group holds every browser process.
    pub fn process_group(&self) -> u32 {
        self.process.child.id()
    }
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// One tab.
pub struct Page {
    conn: Arc<Conn>,
    session: String,
}

impl Page {
    /// Sends a DevTools command to this tab.
    pub async fn call(&self, method: &str, params: Value) -> anyhow::Result<Value> {
        self.conn.call(Some(&self.session), method, params).await
    }

    /// Opens `url` and waits until the document has loaded.
    pub async fn goto(&self, url: &str) -> anyhow::Result<()> {
        let r = self.call("Page.navigate", json!({"url": url})).await?;
        if let Some(e) = r["errorText"].as_str() {
            anyhow::bail!("Chromium cannot open {url}: {e}");
        }
        self.wait_for(
            &format!("{url} to load"),
            "document.readyState === 'complete'",
            CALL_TIMEOUT,
        )
        .await?;
        Ok(())
    }

    /// The value of a JavaScript expression (promises awaited), or the exception it threw.
    pub async fn eval(&self, expression: &str) -> anyhow::Result<Value> {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
            )
            .await?;
        if let Some(e) = r.get("exceptionDetails") {
            let what = e["exception"]["description"]
                .as_str()
                .or(e["text"].as_str())
                .unwrap_or("an exception");
            anyhow::bail!("evaluating `{expression}` threw {what}");
        }
        Ok(r["result"]["value"].clone())
    }

    /// Waits until `expression` is truthy and returns its value; the failure tells what the page
    /// showed instead.
    pub async fn wait_for(&self, what: &str, expression: &str, deadline: Duration) -> anyhow::Result<Value> {
        let waited = wait_until(what, deadline, || async {
            let v = self.eval(expression).await?;
            let truthy = match &v {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::Number(n) => n.as_f64() != Some(0.0),
                Value::String(s) => !s.is_empty(),
                _ => true,
            };
            Ok(truthy.then_some(v))
        })
        .await;
        match waited {
            Ok(v) => Ok(v),
            Err(e) => {
                let text = self
                    .eval("document.body ? document.body.innerText.slice(0, 3000) : ''")
                    .await
                    .unwrap_or_default();
                Err(e.context(format!(
                    "the page showed:\n{}\nproblems: {:?}",
                    text.as_str().unwrap_or_default(),
                    self.problems()
                )))
            }
        }
    }

    /// A PNG of the viewport, also written to `path`.
    pub async fn screenshot(&self, path: &Path) -> anyhow::Result<Vec<u8>> {
        use base64::Engine;
        let r = self
            .call(
                "Page.captureScreenshot",
                json!({"format": "png", "captureBeyondViewport": false}),
            )
            .await?;
        let data = r["data"]
            .as_str()
            .context("Page.captureScreenshot gave no data")?;
        let png = base64::engine::general_purpose::STANDARD.decode(data)?;
        std::fs::write(path, &png).with_context(|| format!("writing {}", path.display()))?;
        Ok(png)
    }

    /// The cookies the browser would send to `url` (HttpOnly ones too).
    pub async fn cookies(&self, url: &str) -> anyhow::Result<Vec<Value>> {
        let r = self.call("Network.getCookies", json!({"urls": [url]})).await?;
        Ok(r["cookies"].as_array().cloned().unwrap_or_default())
    }

    /// What went wrong in the page so far: uncaught exceptions, `console.error` calls and
    /// console errors other than failed network requests (Content-Security-Policy violations
    /// among them). A request the API refused (401 before signing in) is not a problem.
    pub fn problems(&self) -> Vec<String> {
        let events = self.conn.events.lock().unwrap_or_else(|p| p.into_inner());
        events
            .iter()
            .filter(|(s, _, _)| s.as_deref() == Some(self.session.as_str()))
            .filter_map(|(_, method, p)| match method.as_str() {
                "Runtime.exceptionThrown" => Some(format!(
                    "exception: {}",
                    p["exceptionDetails"]["exception"]["description"]
                        .as_str()
                        .or(p["exceptionDetails"]["text"].as_str())
                        .unwrap_or_default()
                )),
                "Runtime.consoleAPICalled" if p["type"] == "error" => {
                    Some(format!("console.error: {}", p["args"]))
                }
                "Log.entryAdded" if p["entry"]["level"] == "error" && p["entry"]["source"] != "network" => {
                    Some(format!(
                        "{} error: {}",
                        p["entry"]["source"].as_str().unwrap_or("log"),
                        p["entry"]["text"].as_str().unwrap_or_default()
                    ))
                }
                _ => None,
            })
            .collect()
    }
}
