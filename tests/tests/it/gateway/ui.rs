//! The web status page (`GET /`, `/ui/*`, `POST /ui/login`; issue 9): in headless Chromium
//! against a real cluster, and its files and cookie login over plain HTTP(S).

use std::path::Path;
use std::time::Duration;

use launcher_gateway::config::GatewayConfig;
use launcher_gateway::ui::CONTENT_SECURITY_POLICY;
use launcher_tests::browser::{Browser, Page};
use launcher_tests::{
    init_tracing, wait_until, ClusterOpts, Http, ProcessCluster, TestGateway, TestPlugin, DEADLINE,
};
use reqwest::Method;
use serde_json::{json, Value};

/// Viewport of the screenshots, in CSS pixels at device scale 1.
const WIDTH: u32 = 1280;
const HEIGHT: u32 = 900;
/// Deadline of one condition in the page (each is a few seconds at most when all is well).
const PAGE_WAIT: Duration = Duration::from_secs(30);

/// Test jobs are simulated: `exit N` ends at once, `sleep S` runs S seconds.
fn scripted() -> ClusterOpts {
    ClusterOpts {
        plugin: TestPlugin::Scripted("pending-seconds=0.3\n".into()),
        ..Default::default()
    }
}

async fn submit(client: &Http, name: &str, command: &str, tags: &[&str]) -> anyhow::Result<String> {
    let body = json!({"name": name, "cluster": "Local", "command": command, "tags": tags});
    let (st, job) = client.post("/jobs", &body).await?;
    anyhow::ensure!(st == 201, "submitting {name}: {st} {job}");
    Ok(job["id"].as_str().unwrap_or_default().to_string())
}

async fn wait_terminal(client: &Http, id: &str) -> anyhow::Result<Value> {
    wait_until(&format!("job {id} to end"), DEADLINE, || async {
        let (_, j) = client.get(&format!("/jobs/{id}")).await?;
        let done = matches!(
            j["status"].as_str(),
            Some("Finished" | "Failed" | "Killed" | "Canceled")
        );
        Ok(done.then_some(j))
    })
    .await
}

/// Takes a screenshot named `name` into `dir` and checks it: a PNG of the viewport's size that
/// decodes, with more than a few colours in it (the page was drawn, not a blank frame).
/// `LAUNCHER_UI_SCREENSHOTS=<dir>` keeps a copy for a person to look at.
async fn screenshot(page: &Page, dir: &Path, name: &str) -> anyhow::Result<u64> {
    let path = dir.join(format!("{name}.png"));
    let bytes = page.screenshot(&path).await?;
    assert!(!bytes.is_empty(), "{name}.png is empty");
    assert_eq!(
        std::fs::metadata(&path)?.len(),
        bytes.len() as u64,
        "{name}.png written whole"
    );
    let mut reader = png::Decoder::new(std::io::Cursor::new(&bytes)).read_info()?;
    let mut pixels = vec![0; reader.output_buffer_size().expect("a PNG of sane size")];
    let frame = reader.next_frame(&mut pixels)?;
    assert_eq!(
        (frame.width, frame.height),
        (WIDTH, HEIGHT),
        "{name}.png has the viewport's size"
    );
    let step = frame.color_type.samples() * usize::from(frame.bit_depth as u8).div_ceil(8);
    let colours: std::collections::HashSet<&[u8]> = pixels[..frame.buffer_size()].chunks(step).collect();
    assert!(
        colours.len() > 16,
        "{name}.png has {} colours: nothing was drawn",
        colours.len()
    );
    if let Some(keep) = std::env::var_os("LAUNCHER_UI_SCREENSHOTS") {
        std::fs::create_dir_all(&keep)?;
        std::fs::copy(&path, Path::new(&keep).join(format!("{name}.png")))?;
    }
    Ok(bytes.len() as u64)
}

/// A JavaScript expression for the jobs table's row of `id` (or null).
fn row(id: &str) -> String {
    format!("document.querySelector('#jobs-table tbody tr[data-job-id=\"{id}\"]')")
}

/// The ids of the jobs table's rows, in order.
const ROW_IDS: &str = "[...document.querySelectorAll('#jobs-table tbody tr')].map(r => r.dataset.jobId)";

/// Sets a filter input and fires the event the page listens to.
fn set_filter(id: &str, value: &str, event: &str) -> String {
    format!(
        "(() => {{ const e = document.getElementById('{id}'); e.value = {}; \
         e.dispatchEvent(new Event('{event}')); return true; }})()",
        json!(value)
    )
}

/// Signs in through the page's own form.
async fn sign_in(page: &Page, token: &str) -> anyhow::Result<()> {
    page.wait_for(
        "the sign-in form",
        "!document.getElementById('login-view').hidden",
        PAGE_WAIT,
    )
    .await?;
    page.eval(&format!(
        "document.getElementById('token').value = {}; \
         document.getElementById('login-form').requestSubmit(); true",
        json!(token)
    ))
    .await?;
    page.wait_for(
        "the dashboard after signing in",
        "!document.getElementById('dashboard-view').hidden",
        PAGE_WAIT,
    )
    .await?;
    Ok(())
}

/// The page in headless Chromium over a 3-node cluster: signed out it shows the cluster's
/// health and the sign-in form; signing in through the form sets an HttpOnly, SameSite=Strict
/// cookie that scripts cannot read; an admin sees the members (role, applied index, health), a
/// row per job with its status and exit code, filters by tag, status and user; a running job's
/// status cell turns Finished in the open page, pushed by its Server-Sent Events stream, without a
/// reload; a job's view shows its output, followed while it runs; signing out ends access; a
/// non-admin sees the members from `/status`, no user filter, and only their own jobs. Nothing
/// in the page throws or breaks the Content-Security-Policy, and every view's screenshot is a
/// PNG of the viewport that decodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_shows_the_cluster_and_follows_jobs_live() -> anyhow::Result<()> {
    init_tracing();
    // The browser starts while the cluster does.
    let (cluster, browser) = tokio::join!(
        ProcessCluster::start(3, scripted()),
        Browser::launch(WIDTH, HEIGHT)
    );
    let (cluster, browser) = (cluster?, browser?);
    let gw = TestGateway::start(&cluster, |_| {}).await?;
    let (admin, alice) = (gw.client("admin"), gw.client("alice"));
    let shots = tempfile::tempdir()?;
    let mut sizes = Vec::new();

    let done = submit(&admin, "ui-done", "exit 0", &["ui", "quick"]).await?;
    let failed = submit(&admin, "ui-exit-3", "exit 3", &["ui", "quick"]).await?;
    let alices = submit(&alice, "ui-alice", "exit 0", &["ui"]).await?;
    // Runs long enough for the page to open its stream while it is active.
    let live = submit(&admin, "ui-live", "sleep 15", &["ui", "live"]).await?;
    for id in [&done, &failed, &alices] {
        wait_terminal(&admin, id).await?;
    }

    let page = browser.new_page().await?;
    page.goto(&format!("{}/", gw.url)).await?;
    page.wait_for(
        "the cluster's health while signed out",
        "document.getElementById('health-status').textContent === 'Green'",
        PAGE_WAIT,
    )
    .await?;
    let summary = page
        .eval("document.getElementById('health-summary').textContent")
        .await?;
    assert!(
        summary.as_str().is_some_and(|s| s.contains("3/3 healthy")),
        "{summary}"
    );
    sign_in_form_is_shown(&page).await?;
    sizes.push(("signed-out", screenshot(&page, shots.path(), "signed-out").await?));

    // A wrong token is refused with the API's message, and the form stays.
    page.eval(
        "document.getElementById('token').value = 'admin|1|nope'; \
         document.getElementById('login-form').requestSubmit(); true",
    )
    .await?;
    page.wait_for(
        "the refusal of a malformed token",
        "(e => !e.hidden && e.textContent.includes('malformed token'))(document.getElementById('login-error'))",
        PAGE_WAIT,
    )
    .await?;

    sign_in(&page, &gw.token("admin")).await?;
    let cookies = page.cookies(&gw.url).await?;
    let token = cookies
        .iter()
        .find(|c| c["name"] == "launcher-token")
        .unwrap_or_else(|| panic!("the browser keeps the launcher-token cookie: {cookies:?}"));
    assert_eq!(
        (&token["httpOnly"], &token["sameSite"], &token["path"]),
        (&json!(true), &json!("Strict"), &json!("/")),
        "{token}"
    );
    assert_eq!(
        page.eval("document.cookie.includes('launcher-token')").await?,
        json!(false),
        "scripts cannot read the token"
    );
    let who = page
        .eval("document.getElementById('session-user').textContent")
        .await?;
    assert_eq!(who, json!("admin (admin)"));

    // Members, from GET /members for an admin.
    let members = page
        .wait_for(
            "three members from GET /members",
            "(() => { const rows = [...document.querySelectorAll('#members-table tbody tr[data-node-id]')]; \
             if (rows.length !== 3 || !document.getElementById('members-source').textContent.includes('/members')) \
             return null; return rows.map(r => [...r.cells].map(c => c.textContent)); })()",
            PAGE_WAIT,
        )
        .await?;
    // The table is GET /members as the page's own node (its launcher-node cookie) answers it.
    let pin = page
        .cookies(&gw.url)
        .await?
        .into_iter()
        .find(|c| c["name"] == "launcher-node")
        .and_then(|c| c["value"].as_str().map(str::to_string))
        .expect("the page is pinned to a node");
    let r = admin
        .req(Method::GET, "/members")
        .header("cookie", format!("launcher-node={pin}"))
        .send()
        .await?;
    let api: Value = r.json().await?;
    let want: Vec<Value> = api
        .as_array()
        .expect("members")
        .iter()
        .map(|m| {
            json!([
                m["id"].to_string(),
                m["address"],
                m["role"],
                if m["voter"] == true { "yes" } else { "no" }
            ])
        })
        .collect();
    let members = members.as_array().expect("rows");
    let shown: Vec<Value> = members.iter().map(|m| json!([m[0], m[1], m[2], m[3]])).collect();
    assert_eq!(shown, want, "the members table is GET /members");
    assert_eq!(
        members.iter().filter(|r| r[2] == "leader").count(),
        1,
        "one leader: {members:?}"
    );
    for m in members {
        assert!(m[4] == "healthy" || m[4] == "down", "{m}");
        assert!(
            m[5].as_str().is_some_and(|i| i.parse::<u64>().is_ok()),
            "applied index: {m}"
        );
    }
    // A row for each of the admin's jobs (newest first), not alice's.
    let ids = page
        .wait_for(
            "rows for the admin's jobs",
            &format!("(ids => ids.length === 3 ? ids : null)({ROW_IDS})"),
            PAGE_WAIT,
        )
        .await?;
    assert_eq!(ids, json!([live, failed, done]));
    let exit = page
        .wait_for(
            "the exit code of ui-exit-3",
            &format!("{}.querySelector('td.c-exit').textContent", row(&failed)),
            PAGE_WAIT,
        )
        .await?;
    assert_eq!(exit, json!("3"));

    // The running job is followed by its own stream. The window and the row are marked, so that
    // a reload or a rebuilt table would show.
    let live_row = row(&live);
    page.wait_for(
        "the live job streamed while active",
        &format!(
            "(r => r && r.dataset.live === 'sse' && ['Pending', 'Running'].includes(r.dataset.status))({live_row})"
        ),
        PAGE_WAIT,
    )
    .await?;
    page.eval(&format!(
        "window.uiTestMark = 42; {live_row}.uiTestMark = 42; true"
    ))
    .await?;
    sizes.push(("jobs", screenshot(&page, shots.path(), "jobs").await?));
    let seen = page
        .wait_for(
            "the live job's status cell to turn Finished",
            &format!(
                "(r => r.querySelector('td.c-status .status').textContent === 'Finished' && \
                 {{mark: window.uiTestMark, same: r.uiTestMark, source: r.dataset.statusSource, \
                 events: Number(r.dataset.sseEvents || 0), live: r.dataset.live || null}})({live_row})"
            ),
            DEADLINE,
        )
        .await?;
    assert_eq!(
        seen,
        json!({"mark": 42, "same": 42, "source": "sse", "events": seen["events"], "live": null}),
        "updated in place, by the stream, which then closed"
    );
    assert!(seen["events"].as_u64() >= Some(2), "{seen}");
    sizes.push((
        "jobs-finished",
        screenshot(&page, shots.path(), "jobs-finished").await?,
    ));

    // Filters: by tag, by user (admins), by status; the hash keeps them.
    page.eval(&set_filter("filter-tags", "live", "input")).await?;
    page.wait_for(
        "the tag filter",
        &format!("(ids => ids.length === 1 && ids[0] === '{live}' && location.hash.includes('tags=live'))({ROW_IDS})"),
        PAGE_WAIT,
    )
    .await?;
    page.eval(&set_filter("filter-tags", "", "input")).await?;
    page.eval(&set_filter("filter-user", "*", "input")).await?;
    page.wait_for(
        "everyone's jobs",
        &format!("(ids => ids.length === 4 && ids.includes('{alices}'))({ROW_IDS})"),
        PAGE_WAIT,
    )
    .await?;
    page.eval(&set_filter(
        "filter-status",
        "Pending,Running,Suspended",
        "change",
    ))
    .await?;
    page.wait_for(
        "no active jobs",
        &format!("{ROW_IDS}.length === 0 && !document.getElementById('jobs-empty').hidden"),
        PAGE_WAIT,
    )
    .await?;
    page.eval(&set_filter("filter-status", "", "change")).await?;
    page.eval(&set_filter("filter-user", "", "input")).await?;

    // A job's view: details and output.
    page.wait_for("ui-done's row", &row(&done), PAGE_WAIT).await?;
    page.eval(&format!(
        "{}.querySelector('td.c-name a').click(); true",
        row(&done)
    ))
    .await?;
    page.wait_for(
        "ui-done's output",
        "(o => o.dataset.complete === 'true' && o.textContent)(document.getElementById('job-output'))",
        PAGE_WAIT,
    )
    .await?;
    let view = page
        .eval(
            "({title: document.getElementById('job-title').textContent, \
              output: document.getElementById('job-output').textContent, \
              status: document.querySelector('#job-details dd[data-field=status]').textContent, \
              exit: document.querySelector('#job-details dd[data-field=exitCode]').textContent, \
              hash: location.hash})",
        )
        .await?;
    assert_eq!(
        view,
        json!({"title": "ui-done", "output": "output of ui-done\nerrors of ui-done\n",
               "status": "Finished", "exit": "0", "hash": format!("#/jobs/{done}")})
    );
    sizes.push(("job", screenshot(&page, shots.path(), "job").await?));

    // The output of a running job is followed until it ends.
    let follow = submit(&admin, "ui-follow", "sleep 5", &["ui"]).await?;
    page.eval(&format!("location.hash = '#/jobs/{follow}'; true"))
        .await?;
    page.wait_for(
        "ui-follow's output followed while it runs",
        "document.getElementById('output-state').textContent === 'following…'",
        PAGE_WAIT,
    )
    .await?;
    let out = page
        .wait_for(
            "ui-follow's output to complete",
            "(o => o.dataset.complete === 'true' && o.textContent)(document.getElementById('job-output'))",
            DEADLINE,
        )
        .await?;
    assert_eq!(out, json!("output of ui-follow\nerrors of ui-follow\n"));
    page.wait_for(
        "ui-follow's status to turn Finished in its view",
        "document.getElementById('job-status').textContent === 'Finished'",
        PAGE_WAIT,
    )
    .await?;

    page.eval("document.getElementById('back').click(); true").await?;
    page.wait_for(
        "the dashboard again",
        "!document.getElementById('dashboard-view').hidden && location.hash === '#/'",
        PAGE_WAIT,
    )
    .await?;

    // Signing out clears the cookie: the API refuses the page's calls.
    page.eval("document.getElementById('logout').click(); true")
        .await?;
    sign_in_form_is_shown(&page).await?;
    assert_eq!(page.eval("fetch('/jobs').then(r => r.status)").await?, json!(401));
    assert!(
        !page
            .cookies(&gw.url)
            .await?
            .iter()
            .any(|c| c["name"] == "launcher-token"),
        "the cookie is gone"
    );

    // A user who is not an admin: members from /status, no user filter, only their own jobs.
    sign_in(&page, &gw.token("alice")).await?;
    page.wait_for(
        "alice's view",
        &format!(
            "(ids => ids.length === 1 && ids[0] === '{alices}' && \
             document.getElementById('members-source').textContent.includes('/status') && \
             document.querySelectorAll('#members-table tbody tr').length === 3 && \
             document.getElementById('filter-user-label').hidden)({ROW_IDS})"
        ),
        PAGE_WAIT,
    )
    .await?;
    // /status asks the leader, which hears every member: all healthy, each with its index.
    let rows = page
        .eval("[...document.querySelectorAll('#members-table tbody tr')].map(r => [...r.cells].map(c => c.textContent))")
        .await?;
    for m in rows.as_array().expect("rows") {
        assert_eq!(m[4], "healthy", "{m}");
        assert!(
            m[5].as_str()
                .and_then(|i| i.parse::<u64>().ok())
                .is_some_and(|i| i > 0),
            "applied index: {m}"
        );
    }
    sizes.push(("user", screenshot(&page, shots.path(), "user").await?));

    let problems = page.problems();
    assert!(problems.is_empty(), "the page reported problems: {problems:#?}");
    println!("screenshots (bytes): {sizes:?}");
    let group = browser.process_group();
    drop(page);
    drop(browser);
    // Killed at once; the wait is for their parent to reap them.
    wait_until("no browser process to be left", DEADLINE, || async {
        Ok(
            nix::sys::signal::killpg(nix::unistd::Pid::from_raw(group as i32), None)
                .is_err()
                .then_some(()),
        )
    })
    .await?;
    gw.handle.shutdown().await?;
    Ok(())
}

async fn sign_in_form_is_shown(page: &Page) -> anyhow::Result<()> {
    page.wait_for(
        "the sign-in form",
        "!document.getElementById('login-view').hidden && document.getElementById('dashboard-view').hidden \
         && document.getElementById('session').hidden",
        PAGE_WAIT,
    )
    .await?;
    Ok(())
}

/// One answer: status, headers, body text.
async fn fetch(r: reqwest::RequestBuilder) -> anyhow::Result<(u16, reqwest::header::HeaderMap, String)> {
    let r = tokio::time::timeout(DEADLINE, r.send()).await??;
    let (status, headers) = (r.status().as_u16(), r.headers().clone());
    Ok((status, headers, tokio::time::timeout(DEADLINE, r.text()).await??))
}

fn header<'a>(h: &'a reqwest::header::HeaderMap, name: &str) -> &'a str {
    h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

/// The `Set-Cookie` attributes of the token cookie: (value, attributes lowercased).
fn token_cookie(h: &reqwest::header::HeaderMap) -> Option<(String, Vec<String>)> {
    h.get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with("launcher-token="))
        .map(|c| {
            let mut parts = c.split(';').map(str::trim);
            let value = parts.next().unwrap_or("")["launcher-token=".len()..].to_string();
            (value, parts.map(str::to_ascii_lowercase).collect())
        })
}

fn max_age(attrs: &[String]) -> Option<u64> {
    attrs
        .iter()
        .find_map(|a| a.strip_prefix("max-age="))
        .and_then(|v| v.parse().ok())
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// The page's files need no token and carry the strict Content-Security-Policy, `nosniff`, the
/// right types and cache rules (the page revalidated, assets named by their hash cached for good);
/// `POST /ui/login` checks the token as the API does: a good one (JSON, form, or the
/// Authorization header of a request without a body) sets the
/// `launcher-token` cookie HttpOnly, SameSite=Strict, Path=/, with a Max-Age no later than the
/// token's expiry (Secure over HTTPS), and that cookie alone then authenticates API calls; a bad
/// one is 401 with the API's error body and sets nothing; a cross-site post is 403;
/// `POST /ui/logout` clears the cookie. Every answer carries X-Launcher-Index.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_and_its_login_answer_as_documented() -> anyhow::Result<()> {
    init_tracing();
    let cluster = ProcessCluster::start(1, scripted()).await?;
    let gw = TestGateway::start(&cluster, |_| {}).await?;
    let anon = gw.anonymous();
    let get = |path: &str| fetch(anon.req(Method::GET, path));

    let (st, h, page) = get("/").await?;
    assert_eq!(st, 200);
    assert_eq!(header(&h, "content-type"), "text/html; charset=utf-8");
    assert_eq!(header(&h, "content-security-policy"), CONTENT_SECURITY_POLICY);
    assert_eq!(header(&h, "x-content-type-options"), "nosniff");
    assert_eq!(header(&h, "cache-control"), "no-cache");
    assert!(h.contains_key("x-launcher-index"));
    for path in ["/ui", "/ui/index.html"] {
        let (st, _, same) = get(path).await?;
        assert_eq!((st, same == page), (200, true), "{path}");
    }
    for (file, kind) in [
        ("app.js", "text/javascript; charset=utf-8"),
        ("style.css", "text/css; charset=utf-8"),
        ("favicon.svg", "image/svg+xml"),
    ] {
        let start = page
            .find(&format!("/ui/{file}?v="))
            .unwrap_or_else(|| panic!("the page links {file} with its hash"));
        let url = &page[start..start + page[start..].find('"').expect("quoted")];
        let (st, h, body) = get(url).await?;
        assert_eq!((st, header(&h, "content-type")), (200, kind), "{url}");
        assert_eq!(
            header(&h, "cache-control"),
            "public, max-age=31536000, immutable",
            "{url}"
        );
        assert_eq!(header(&h, "content-security-policy"), CONTENT_SECURITY_POLICY);
        assert!(!body.is_empty() && h.contains_key("x-launcher-index"));
        let (st, h, _) = get(&format!("/ui/{file}?v=old")).await?;
        assert_eq!(
            (st, header(&h, "cache-control")),
            (200, "no-cache"),
            "{file} of another version"
        );
    }
    let (st, _, body) = get("/ui/nothing.js").await?;
    let e: Value = serde_json::from_str(&body)?;
    assert_eq!((st, &e["error"]["code"]), (404, &json!(3)), "{e}");

    // Login with JSON: 204 and the cookie, which alone then authenticates.
    let token = gw.token("alice");
    let login = |body: Value| fetch(anon.req(Method::POST, "/ui/login").json(&body));
    let (st, h, _) = login(json!({"token": token})).await?;
    assert_eq!(st, 204);
    assert!(h.contains_key("x-launcher-index"));
    let (value, attrs) = token_cookie(&h).expect("Set-Cookie: launcher-token");
    assert_eq!(value, token);
    for a in ["httponly", "samesite=strict", "path=/"] {
        assert!(attrs.iter().any(|x| x == a), "{a} in {attrs:?}");
    }
    assert!(!attrs.iter().any(|x| x == "secure"), "plain HTTP: not Secure");
    let age = max_age(&attrs).expect("Max-Age");
    assert!(
        (3500..=3600).contains(&age),
        "Max-Age {age} within the token's hour"
    );
    let cookie = format!("launcher-token={value}");
    let (st, _, body) = fetch(anon.req(Method::GET, "/ui/session").header("cookie", &cookie)).await?;
    let session: Value = serde_json::from_str(&body)?;
    assert_eq!(
        (st, &session["user"], &session["admin"]),
        (200, &json!("alice"), &json!(false)),
        "{session}"
    );
    assert!(
        session["expiresAt"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{session}"
    );
    let (st, _, body) = fetch(anon.req(Method::GET, "/jobs").header("cookie", &cookie)).await?;
    assert_eq!((st, body.as_str()), (200, "[]"));

    // Without a body, the Authorization header's token; without either, 401.
    let (st, h, _) = fetch(anon.req(Method::POST, "/ui/login").bearer_auth(&token)).await?;
    assert_eq!((st, token_cookie(&h).map(|c| c.0)), (204, Some(token.clone())));
    let (st, _, body) = fetch(anon.req(Method::POST, "/ui/login")).await?;
    let e: Value = serde_json::from_str(&body)?;
    assert_eq!((st, &e["error"]["code"]), (401, &json!(11)), "{e}");

    // Max-Age never outlives the token.
    let short = launcher_gateway::auth::mint_token(&cluster.key, "alice", now() + 120);
    let (st, h, _) = login(json!({"token": short})).await?;
    let age = token_cookie(&h).and_then(|(_, a)| max_age(&a));
    assert!(
        st == 204 && age.is_some_and(|a| (100..=120).contains(&a)),
        "{st} {age:?}"
    );

    // A form post: the cookie, and a page that goes back to the status page.
    let (st, h, body) = fetch(
        anon.req(Method::POST, "/ui/login")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("token={}", token.replace('|', "%7C"))),
    )
    .await?;
    assert_eq!(
        (st, header(&h, "content-type")),
        (200, "text/html; charset=utf-8")
    );
    assert!(body.contains("url=/"), "{body}");
    assert_eq!(token_cookie(&h).map(|c| c.0), Some(token.clone()));

    // Bad tokens: 401 with the API's error body and no cookie, as the API itself answers.
    // The signature's last digit changed (to another one, whatever it was).
    let last = if token.ends_with('0') { '1' } else { '0' };
    let forged = format!("{}{last}", &token[..token.len() - 1]);
    let expired = launcher_gateway::auth::mint_token(&cluster.key, "alice", now() - 10);
    let far = launcher_gateway::auth::mint_token(&cluster.key, "alice", now() + 10 * 86_400);
    for bad in [forged.as_str(), expired.as_str(), far.as_str(), "alice", ""] {
        let (st, h, body) = login(json!({"token": bad})).await?;
        let e: Value = serde_json::from_str(&body)?;
        assert_eq!((st, &e["error"]["code"]), (401, &json!(11)), "{bad}: {e}");
        assert!(token_cookie(&h).is_none(), "{bad}: no cookie");
        if !bad.is_empty() {
            let (_, _, api) = fetch(anon.req(Method::GET, "/jobs").bearer_auth(bad)).await?;
            let api: Value = serde_json::from_str(&api)?;
            assert_eq!(
                e["error"]["message"], api["error"]["message"],
                "as the API: {bad}"
            );
        }
        assert!(h.contains_key("x-launcher-index"));
    }
    for (label, req) in [
        (
            "no token field",
            anon.req(Method::POST, "/ui/login")
                .json(&json!({"user": "alice"})),
        ),
        (
            "not JSON",
            anon.req(Method::POST, "/ui/login")
                .header("content-type", "application/json")
                .body("{"),
        ),
        (
            "no content type",
            anon.req(Method::POST, "/ui/login")
                .body(format!("{{\"token\":\"{token}\"}}")),
        ),
    ] {
        let (st, _, body) = fetch(req).await?;
        let e: Value = serde_json::from_str(&body)?;
        assert_eq!((st, &e["error"]["code"]), (400, &json!(2)), "{label}: {e}");
    }
    let (st, h, body) = fetch(
        anon.req(Method::POST, "/ui/login")
            .header("sec-fetch-site", "cross-site")
            .json(&json!({"token": token})),
    )
    .await?;
    let e: Value = serde_json::from_str(&body)?;
    assert_eq!(
        (st, &e["error"]["code"]),
        (403, &json!(12)),
        "a cross-site login: {e}"
    );
    assert!(token_cookie(&h).is_none());

    // Logout clears the cookie.
    let (st, h, _) = fetch(anon.req(Method::POST, "/ui/logout").header("cookie", &cookie)).await?;
    let (value, attrs) = token_cookie(&h).expect("Set-Cookie clears launcher-token");
    assert_eq!((st, value.as_str(), max_age(&attrs)), (204, "", Some(0)));
    let (st, _, _) = fetch(anon.req(Method::GET, "/ui/session")).await?;
    assert_eq!(st, 401);
    gw.handle.shutdown().await?;

    // Over HTTPS the cookie is Secure.
    let certs = tempfile::tempdir()?;
    let mut cert_pem = String::new();
    let tls = TestGateway::start(&cluster, |c: &mut GatewayConfig| {
        let ck = rcgen::generate_simple_self_signed(vec![c.server.address.clone()]).expect("certificate");
        let (cert, key) = (certs.path().join("gw.crt"), certs.path().join("gw.key"));
        cert_pem = ck.cert.pem();
        std::fs::write(&cert, &cert_pem).expect("write certificate");
        std::fs::write(&key, ck.signing_key.serialize_pem()).expect("write key");
        c.server.enable_ssl = true;
        c.server.certificate_file = Some(cert);
        c.server.certificate_key_file = Some(key);
    })
    .await?;
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cert_pem.as_bytes())?)
        .timeout(DEADLINE)
        .build()?;
    let https = tls.url.replace("http://", "https://");
    let (st, h, _) = fetch(
        client
            .post(format!("{https}/ui/login"))
            .json(&json!({"token": token})),
    )
    .await?;
    let attrs = token_cookie(&h).map(|c| c.1).unwrap_or_default();
    assert!(st == 204 && attrs.iter().any(|a| a == "secure"), "{st} {attrs:?}");
    tls.handle.shutdown().await?;
    Ok(())
}
