//! The web console (`/ui/`) in a real headless Chromium, driven through
//! chromedriver (WebDriver, the `fantoccini` crate) against a real replica:
//! sign-in, live updates, pause with a note, run now into the timeline,
//! what a read-only token sees, and phone width. Screenshots are written to
//! `<target>/console-screenshots/` for people to look at.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`.ci/run` installs
//! them); skipped with a note when chromedriver is missing, required under
//! `CI`. `SPINE_CHROMEDRIVER` and `SPINE_CHROMIUM` name other binaries.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::elements::Element;
use fantoccini::key::Key;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

use crate::api_replica::{assert_error, start_api_replica, Http, Reply, ADMIN, PIPELINE, READER};
use crate::harness::{eventually, external_tool, wait_for, TestDb};
use crate::replica::temp_dir;

/// How long the page may take to show a change (it polls every 4 s).
const UI_WAIT: Duration = Duration::from_secs(20);
/// The browser's time zone (neither UTC nor the schedules' zone).
const VIEWER_ZONE: &str = "Europe/Berlin";

/// A chromedriver process on a loopback port, killed on drop.
struct Chromedriver {
    child: Child,
    url: String,
}

impl Chromedriver {
    async fn start(binary: &Path, dir: &Path) -> Chromedriver {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let log = std::fs::File::create(dir.join("chromedriver.log")).expect("chromedriver log");
        let child = Command::new(binary)
            // The browser inherits it: times must show in the viewer's zone.
            .env("TZ", VIEWER_ZONE)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start chromedriver");
        let driver = Chromedriver {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let client = spine_scheduler::pipeline::http::build_client().expect("HTTP client");
        let status = format!("{}/status", driver.url);
        eventually(Duration::from_secs(20), "chromedriver ready", || {
            let request = client.get(&status).timeout(Duration::from_secs(5)).send();
            async move {
                match request.await {
                    Ok(r) => r.text().await.is_ok_and(|t| {
                        serde_json::from_str::<Value>(&t).is_ok_and(|v| v["value"]["ready"] == true)
                    }),
                    Err(_) => false,
                }
            }
        })
        .await;
        driver
    }
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A headless Chromium session of `width`×`height` through `driver`.
async fn browser(driver: &Chromedriver, profile: &Path, width: u32, height: u32) -> Client {
    let args = vec![
        "--headless=new".to_string(),
        "--disable-gpu".into(),
        "--disable-dev-shm-usage".into(),
        "--no-first-run".into(),
        format!("--window-size={width},{height}"),
        format!("--user-data-dir={}", profile.display()),
        "--lang=en-US".into(),
        // Chromium's sandbox refuses to run as root, as CI machines do; the
        // browser only ever loads this test's own loopback page.
        "--no-sandbox".into(),
    ];
    let mut options = json!({ "args": args });
    if let Some(chromium) = external_tool("SPINE_CHROMIUM", "chromium") {
        options["binary"] = json!(chromium.display().to_string());
    }
    let mut caps = serde_json::Map::new();
    caps.insert("browserName".into(), json!("chrome"));
    caps.insert("goog:chromeOptions".into(), options);
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("a chromium session")
}

/// Runs `script` (a function body) until it returns something other than
/// `null` or `false`, and returns that.
async fn until(c: &Client, what: &str, script: &str) -> Value {
    wait_for(UI_WAIT, Duration::from_millis(100), what, || async {
        match c.execute(script, vec![]).await {
            Ok(Value::Null) | Ok(Value::Bool(false)) | Err(_) => None,
            Ok(v) => Some(v),
        }
    })
    .await
}

async fn find(c: &Client, css: &str) -> Element {
    c.wait()
        .at_most(UI_WAIT)
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no element {css}: {e}"))
}

/// Where the screenshots go: `<target>/console-screenshots/`.
fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let dir = target.join("console-screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot folder");
    dir
}

async fn screenshot(c: &Client, name: &str) {
    let png = c.screenshot().await.expect("screenshot");
    let path = screenshot_dir().join(format!("{name}.png"));
    std::fs::write(&path, png).expect("write screenshot");
    eprintln!("screenshot: {}", path.display());
}

async fn sign_in(c: &Client, base: &str, token: &str) {
    c.goto(&format!("{base}/ui/"))
        .await
        .expect("open the console");
    let input = find(c, "input#token").await;
    input.send_keys(token).await.expect("type the token");
    find(c, "form button[type=submit]")
        .await
        .click()
        .await
        .expect("sign in");
    until(
        c,
        "the schedules page after sign-in",
        "return document.querySelector('h1#page-title')?.textContent === 'Schedules'",
    )
    .await;
}

/// The texts of the write buttons on the page (none for a read-only token).
async fn write_buttons(c: &Client) -> Value {
    c.execute(
        "return [...document.querySelectorAll('.actions button')].map(b => b.textContent)",
        vec![],
    )
    .await
    .expect("read the buttons")
}

/// Whether the page is wider than the window (a horizontal scrollbar).
async fn overflows(c: &Client) -> Value {
    c.execute(
        "return document.documentElement.scrollWidth > window.innerWidth + 1 \
         ? [document.documentElement.scrollWidth, window.innerWidth] : false",
        vec![],
    )
    .await
    .expect("measure the page")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_signs_in_updates_live_pauses_runs_and_hides_writes_from_readers() {
    let Some(chromedriver) = external_tool("SPINE_CHROMEDRIVER", "chromedriver") else {
        return;
    };
    let db = TestDb::migrated().await;
    let dir = temp_dir("console");
    let node = start_api_replica(&db.url, &dir, "console").await;
    let base = node.base.clone();
    let http = Http::new();
    let driver = Chromedriver::start(&chromedriver, &dir).await;
    // This run's screenshots only.
    let _ = std::fs::remove_dir_all(screenshot_dir());

    // A wrong token is refused on the sign-in form.
    let c = browser(&driver, &dir.join("profile-admin"), 1280, 900).await;
    c.goto(&format!("{base}/ui/"))
        .await
        .expect("open the console");
    find(&c, "input#token")
        .await
        .send_keys("not-a-token-at-all-0000")
        .await
        .expect("type");
    find(&c, "form button[type=submit]")
        .await
        .click()
        .await
        .expect("submit");
    until(
        &c,
        "the refusal",
        "return document.querySelector('.login [role=alert]')?.textContent.includes('not accepted')",
    )
    .await;

    // Ticks every 2 s, so the cluster page has a fire lag to show; a
    // monthly schedule in New York, whose next 10 fires cross a change of
    // daylight saving time whenever the test runs.
    for body in [
        json!({"name": "every-2s", "pipeline": PIPELINE, "interval": "2s"}),
        json!({"name": "month-open", "pipeline": PIPELINE, "cron": "0 6 1 * *",
               "timezone": "America/New_York"}),
    ] {
        let created = http.create_schedule(&base, body).await;
        assert_eq!(created.status, 201, "{}", created.text);
    }

    sign_in(&c, &base, ADMIN).await;
    let zone = c
        .execute(
            "return document.querySelector('header .who')?.innerText",
            vec![],
        )
        .await
        .expect("header");
    assert!(
        zone.as_str().is_some_and(|z| z.contains(VIEWER_ZONE)),
        "viewer zone in the header: {zone}"
    );
    // The token is in sessionStorage, not in the address.
    let url = c.current_url().await.expect("url").to_string();
    assert!(!url.contains(ADMIN), "token in the URL: {url}");

    // Readings of our cron dialect (5 fields, 6 with seconds, @names,
    // cronie's day rule) and of the other triggers.
    let readings = c
        .execute_async(
            "const done = arguments[arguments.length - 1];
             import('./format.js').then(f => done([
               {schedule_type: 'cron', cron: '0 6 * * 1-5'},
               {schedule_type: 'cron', cron: '*/10 * * * * *'},
               {schedule_type: 'cron', cron: '@weekly'},
               {schedule_type: 'cron', cron: '0 0 * * 7'},
               {schedule_type: 'cron', cron: '0 6 */2 * 1'},
               {schedule_type: 'interval', interval_seconds: 5400},
             ].map(f.describeTrigger)))",
            vec![],
        )
        .await
        .expect("describe triggers");
    assert_eq!(
        readings,
        json!([
            "At 06:00, Monday through Friday",
            "Every 10 seconds",
            "At 00:00, only on Sunday",
            "At 00:00, only on Sunday",
            "At 06:00, every 2 days in a month, and on Monday (only days that match both)",
            "Every 90 minutes",
        ])
    );

    // A schedule created through the API appears without a reload.
    c.execute("window.__sameDocument = true; return true", vec![])
        .await
        .expect("mark the document");
    let created = http
        .create_schedule(
            &base,
            json!({"name": "weekday-report", "pipeline": PIPELINE, "cron": "0 6 * * 1-5",
                   "timezone": "America/New_York", "description": "the 06:00 report"}),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    let row_text = until(
        &c,
        "the new schedule's row",
        "return document.querySelector('tr[data-schedule=\"weekday-report\"]')?.innerText || null",
    )
    .await;
    let row_text = row_text.as_str().unwrap_or_default();
    assert!(
        row_text.contains("At 06:00, Monday through Friday"),
        "the human reading: {row_text}"
    );
    assert!(row_text.contains("America/New_York"), "{row_text}");
    // Next fire in the viewer's zone, UTC in its title.
    let next_run: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(created.json()["next_run"].clone()).expect("next_run");
    let tz: chrono_tz::Tz = VIEWER_ZONE.parse().expect("zone");
    let shown = next_run.with_timezone(&tz).format("%H:%M:%S").to_string();
    assert!(
        row_text.contains(&shown),
        "next fire at {shown} in {VIEWER_ZONE}: {row_text}"
    );
    let title = c
        .execute(
            "return document.querySelector('tr[data-schedule=\"weekday-report\"] time')?.title",
            vec![],
        )
        .await
        .expect("title");
    assert_eq!(
        title,
        json!(next_run.format("%Y-%m-%d %H:%M:%S UTC").to_string()),
        "UTC on hover"
    );
    assert_eq!(
        c.execute("return window.__sameDocument === true", vec![])
            .await
            .expect("check the document"),
        json!(true),
        "the page reloaded"
    );
    screenshot(&c, "01-schedules-admin-1280").await;

    // Pause with a note: the dialog opens, Escape closes it and focus
    // returns to the button; then the pause goes through and the note shows.
    let row = "tr[data-schedule=\"weekday-report\"]";
    let pause = find(&c, &format!("{row} .actions button")).await;
    assert!(pause.text().await.expect("text").starts_with("Pause"));
    pause.click().await.expect("open the pause dialog");
    let note = find(&c, "dialog[open] textarea#pause-note").await;
    note.send_keys(&char::from(Key::Escape).to_string())
        .await
        .expect("escape");
    until(
        &c,
        "focus back on the Pause button",
        "return !document.querySelector('dialog[open]') && \
         document.activeElement?.textContent.startsWith('Pause')",
    )
    .await;
    find(&c, &format!("{row} .actions button"))
        .await
        .click()
        .await
        .expect("open the pause dialog again");
    find(&c, "dialog[open] textarea#pause-note")
        .await
        .send_keys("database upgrade, back at 07:00")
        .await
        .expect("type the note");
    screenshot(&c, "02-pause-dialog").await;
    find(&c, "dialog[open] button[type=submit]")
        .await
        .click()
        .await
        .expect("pause");
    until(
        &c,
        "the pause note in the row",
        "return document.querySelector('tr[data-schedule=\"weekday-report\"]')\
         ?.innerText.includes('database upgrade, back at 07:00')",
    )
    .await;
    let stored = http
        .get(&base, "/v1/schedules/weekday-report", Some(READER))
        .await
        .json();
    assert_eq!(stored["enabled"], false);
    assert_eq!(stored["pause"]["note"], "database upgrade, back at 07:00");

    // The schedule's page: run it now; the run appears in the timeline.
    find(&c, &format!("{row} td a"))
        .await
        .click()
        .await
        .expect("open the schedule");
    until(
        &c,
        "the schedule page",
        "return document.querySelector('h1#page-title')?.textContent === 'weekday-report' \
         && document.querySelector('.timeline, .definition') !== null",
    )
    .await;
    assert_eq!(
        c.execute(
            "return document.querySelectorAll('.timeline a.cell').length",
            vec![]
        )
        .await
        .expect("count cells"),
        json!(0)
    );
    // Its changes: the pause, by the token that made it, with its note.
    let pause_row = until(
        &c,
        "the pause in the schedule's changes",
        "return [...document.querySelectorAll('table.changes tbody tr')]\
         .map(r => r.textContent).find(t => t.includes('pause')) || null",
    )
    .await;
    let pause_row = pause_row.as_str().unwrap_or_default().to_string();
    assert!(
        pause_row.contains("token admin") && pause_row.contains("note: database upgrade"),
        "{pause_row}"
    );
    let run_now = until(
        &c,
        "the Run now button",
        "return [...document.querySelectorAll('section > .actions button')]\
         .some(b => b.textContent === 'Run now')",
    )
    .await;
    assert_eq!(run_now, json!(true));
    c.execute(
        "[...document.querySelectorAll('section > .actions button')]\
         .find(b => b.textContent === 'Run now').focus(); return true",
        vec![],
    )
    .await
    .expect("focus Run now");
    // Keyboard: Enter on the focused button opens the dialog.
    c.active_element()
        .await
        .expect("focused")
        .send_keys(&char::from(Key::Enter).to_string())
        .await
        .expect("press Enter");
    find(&c, "dialog[open] button[type=submit]")
        .await
        .click()
        .await
        .expect("run now");
    let run_id = until(
        &c,
        "a completed run in the timeline",
        "return document.querySelector('.timeline a.cell.s-completed')?.dataset.run || null",
    )
    .await;
    let run_id = run_id.as_str().expect("run id").to_string();
    let run = http
        .get(&base, &format!("/v1/runs/{run_id}"), Some(READER))
        .await
        .json();
    assert_eq!(run["schedule"], "weekday-report");
    assert_eq!(run["trigger"], "manual");
    let title = until(
        &c,
        "the cell's title",
        &format!("return document.querySelector('a.cell[data-run=\"{run_id}\"]')?.title || null"),
    )
    .await;
    assert!(
        title
            .as_str()
            .is_some_and(|t| t.contains("completed") && t.contains("UTC")),
        "cell title: {title}"
    );
    let next = c
        .execute(
            "return document.querySelectorAll('.fires li').length",
            vec![],
        )
        .await
        .expect("count fires");
    assert_eq!(next, json!(0), "a paused schedule lists no fire times");
    screenshot(&c, "03-schedule-admin-1280").await;

    // The run's page: status, node, attempt chain.
    find(&c, &format!("a.cell[data-run=\"{run_id}\"]"))
        .await
        .click()
        .await
        .expect("open the run");
    until(
        &c,
        "the run page",
        "return document.querySelector('.chain li') !== null && document.body.innerText.includes('Replica')",
    )
    .await;
    screenshot(&c, "04-run-admin-1280").await;

    // Daylight saving changes are marked among the next fire times.
    c.goto(&format!("{base}/ui/#/schedules/month-open"))
        .await
        .expect("month-open");
    let mark = until(
        &c,
        "a DST mark among the next fire times",
        "return document.querySelector('.fires .dst-mark')?.textContent || null",
    )
    .await;
    assert!(
        mark.as_str()
            .is_some_and(|m| m.contains("-05:00 → -04:00") || m.contains("-04:00 → -05:00")),
        "{mark}"
    );
    assert_eq!(
        c.execute(
            "return document.querySelectorAll('.fires li').length",
            vec![]
        )
        .await
        .expect("fires"),
        json!(10)
    );
    screenshot(&c, "05-schedule-dst-1280").await;

    // A busy timeline is one tab stop; arrow keys move between its cells.
    c.goto(&format!("{base}/ui/#/schedules/every-2s"))
        .await
        .expect("every-2s");
    until(
        &c,
        "three runs in the timeline",
        "return document.querySelectorAll('.timeline a.cell').length >= 3",
    )
    .await;
    assert_eq!(
        c.execute(
            "return document.querySelectorAll('.timeline a.cell[tabindex=\"0\"]').length",
            vec![]
        )
        .await
        .expect("tab stops"),
        json!(1)
    );
    let newest = c
        .execute(
            "const a = document.querySelector('.timeline a.cell[tabindex=\"0\"]'); a.focus(); return a.dataset.run",
            vec![],
        )
        .await
        .expect("focus the timeline");
    c.active_element()
        .await
        .expect("focused")
        .send_keys(&char::from(Key::Left).to_string())
        .await
        .expect("arrow left");
    let moved = until(
        &c,
        "focus on the run before",
        "const a = document.activeElement; return a?.classList.contains('cell') \
         && document.querySelector('.cell-detail').textContent === a.title ? a.dataset.run : null",
    )
    .await;
    assert_ne!(moved, newest, "the arrow key moved focus");
    screenshot(&c, "06-schedule-busy-1280").await;

    // A refused action: the API's words in the dialog, which stays open;
    // Cancel returns focus to the button that opened it. (A day of a 2 s
    // interval is over a backfill's tick limit.)
    c.execute(
        "const b = [...document.querySelectorAll('section > .actions button')]\
         .find(b => b.textContent === 'Backfill'); b.focus(); b.click(); return true",
        vec![],
    )
    .await
    .expect("open the backfill dialog");
    find(&c, "dialog[open] button[type=submit]")
        .await
        .click()
        .await
        .expect("submit the backfill");
    let refusal = until(
        &c,
        "the refusal in the dialog",
        "return document.querySelector('dialog[open] [role=alert]')?.textContent || null",
    )
    .await;
    assert!(
        refusal.as_str().is_some_and(|t| t.contains("allow_large")),
        "the API's message: {refusal}"
    );
    screenshot(&c, "06b-backfill-refused").await;
    find(&c, "dialog[open] button[type=button]")
        .await
        .click()
        .await
        .expect("cancel");
    until(
        &c,
        "focus back on Backfill",
        "return !document.querySelector('dialog[open]') && document.activeElement?.textContent === 'Backfill'",
    )
    .await;

    // The cluster page: this replica alive and leading, fire-lag figures.
    c.goto(&format!("{base}/ui/#/cluster"))
        .await
        .expect("cluster");
    until(
        &c,
        "the leader and a fire lag on the cluster page",
        "return document.querySelector('table.nodes')?.innerText.includes('leader') \
         && /\\d/.test(document.querySelector('.stat-value')?.textContent || '')",
    )
    .await;
    screenshot(&c, "07-cluster-1280").await;
    c.goto(&format!("{base}/ui/#/runs")).await.expect("runs");
    find(&c, &format!("tr[data-run=\"{run_id}\"]")).await;
    screenshot(&c, "08-runs-1280").await;
    // Phone width with the write controls.
    c.set_window_size(390, 844).await.expect("resize");
    c.goto(&format!("{base}/ui/#/schedules"))
        .await
        .expect("schedules");
    find(&c, "tr[data-schedule=\"weekday-report\"] .actions button").await;
    assert_eq!(
        overflows(&c).await,
        json!(false),
        "schedules at 390 px, admin"
    );
    screenshot(&c, "09-schedules-admin-390").await;
    c.close().await.expect("close the admin session");

    // A read-only token: the same pages without a single write control.
    let r = browser(&driver, &dir.join("profile-reader"), 1280, 900).await;
    sign_in(&r, &base, READER).await;
    find(&r, "tr[data-schedule=\"weekday-report\"]").await;
    assert_eq!(
        write_buttons(&r).await,
        json!([]),
        "write buttons on the list"
    );
    r.goto(&format!("{base}/ui/#/schedules/weekday-report"))
        .await
        .expect("schedule page");
    find(&r, "a.cell").await;
    assert_eq!(
        write_buttons(&r).await,
        json!([]),
        "write buttons on the schedule"
    );
    r.goto(&format!("{base}/ui/#/runs/{run_id}"))
        .await
        .expect("run page");
    find(&r, ".chain li").await;
    assert_eq!(
        write_buttons(&r).await,
        json!([]),
        "write buttons on the run"
    );
    screenshot(&r, "10-run-reader-1280").await;

    // Phone width: nothing wider than the screen.
    r.set_window_size(390, 844).await.expect("resize");
    let width = r
        .execute("return window.innerWidth", vec![])
        .await
        .expect("width");
    assert!(
        width.as_u64().is_some_and(|w| w <= 400),
        "inner width {width}"
    );
    for (page, wait, name) in [
        ("#/schedules", "tr[data-schedule]", "11-schedules-390"),
        ("#/schedules/weekday-report", "a.cell", "12-schedule-390"),
        ("#/runs", "tr[data-run]", "13-runs-390"),
        ("#/cluster", "table.nodes", "14-cluster-390"),
    ] {
        r.goto(&format!("{base}/ui/{page}")).await.expect("page");
        find(&r, wait).await;
        assert_eq!(overflows(&r).await, json!(false), "{page} at 390 px");
        screenshot(&r, name).await;
    }
    r.close().await.expect("close the reader session");
    drop(driver);
    assert!(node.replica.terminate(Duration::from_secs(30)));
}

/// The files a page or module refers to: `src="…"`/`href="…"` in HTML,
/// `from './…'` in modules (relative to `/ui/`).
fn references(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for marker in ["src=\"", "href=\"", "from './"] {
        for piece in text.split(marker).skip(1) {
            let end = piece.find(['"', '\'']).unwrap_or(piece.len());
            let target = piece[..end].trim_start_matches("./");
            if !target.is_empty() && !target.starts_with('#') {
                out.push(target.to_string());
            }
        }
    }
    out
}

fn assert_console_headers(what: &str, r: &Reply) {
    let csp = r.header("content-security-policy").unwrap_or_default();
    for part in [
        "default-src 'none'",
        "script-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(part), "{what}: CSP {csp:?} lacks {part}");
    }
    assert!(!csp.contains("unsafe-inline"), "{what}: {csp}");
    assert_eq!(
        r.header("x-content-type-options"),
        Some("nosniff"),
        "{what}"
    );
    assert_eq!(r.header("cache-control"), Some("no-cache"), "{what}");
    assert!(
        r.header("etag").is_some_and(|e| e.starts_with('"')),
        "{what}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_files_are_open_typed_and_cached_and_whoami_names_the_role() {
    let db = TestDb::migrated().await;
    let dir = temp_dir("console-files");
    let node = start_api_replica(&db.url, &dir, "console-files").await;
    let base = node.base.clone();
    let http = Http::new();

    let r = http.get(&base, "/ui", None).await;
    assert_eq!(r.status, 308);
    assert_eq!(r.header("location"), Some("/ui/"));

    // The page and everything it loads, without a token, each with its type.
    let page = http.get(&base, "/ui/", None).await;
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert_console_headers("/ui/", &page);
    let mut pending = references(&page.text);
    let mut seen = Vec::new();
    while let Some(file) = pending.pop() {
        if seen.contains(&file) {
            continue;
        }
        let r = http.get(&base, &format!("/ui/{file}"), None).await;
        assert_eq!(r.status, 200, "/ui/{file}: {}", r.text);
        assert_console_headers(&file, &r);
        let expected = match file.rsplit('.').next() {
            Some("js") => "text/javascript; charset=utf-8",
            Some("css") => "text/css; charset=utf-8",
            Some("svg") => "image/svg+xml",
            _ => panic!("unexpected reference {file}"),
        };
        assert_eq!(r.header("content-type"), Some(expected), "{file}");
        if file.ends_with(".js") {
            for f in references(&r.text) {
                // Modules import relative to their own folder.
                let folder = file.rsplit_once('/').map(|(d, _)| format!("{d}/"));
                pending.push(format!("{}{f}", folder.unwrap_or_default()));
            }
        }
        seen.push(file);
    }
    for needed in [
        "app.js",
        "style.css",
        "vendor/cronstrue.min.js",
        "vendor/htm-preact-standalone.module.js",
        "cluster.js",
    ] {
        assert!(
            seen.iter().any(|f| f == needed),
            "{needed} not reached from the page: {seen:?}"
        );
    }

    // Revalidation: the same ETag is a 304 without a body.
    let etag = page.header("etag").expect("etag").to_string();
    let again = http
        .call(
            reqwest::Method::GET,
            &format!("{base}/ui/"),
            None,
            &[("if-none-match", &etag)],
            crate::api_replica::Body::None,
        )
        .await;
    assert_eq!(again.status, 304);
    assert!(again.text.is_empty());

    // A file that is not there: 404 in the API's error shape.
    let missing = http.get(&base, "/ui/nope.js", None).await;
    assert_error("/ui/nope.js", &missing, 404, "not_found");

    // whoami: the role of the token, an object; 401 without one.
    assert_error(
        "whoami",
        &http.get(&base, "/v1/whoami", None).await,
        401,
        "unauthorized",
    );
    assert_eq!(
        http.get(&base, "/v1/whoami", Some(READER)).await.json(),
        json!({"role": "read_only", "name": "read-only"})
    );
    assert_eq!(
        http.get(&base, "/v1/whoami", Some(ADMIN)).await.json(),
        json!({"role": "admin", "name": "admin"})
    );

    // The cluster view carries the answering replica's clock offset and fire lag.
    let cluster = http.get(&base, "/v1/cluster", Some(READER)).await.json();
    let me = cluster["nodes"]
        .as_array()
        .and_then(|n| n.iter().find(|n| n["is_self"] == true))
        .expect("the answering node")
        .clone();
    assert!(me["clock_offset_seconds"].is_f64(), "{me}");
    assert_eq!(cluster["fire_lag"]["node_id"], me["node_id"]);
    assert!(cluster["fire_lag"]["count"].is_u64(), "{cluster}");
    assert!(node.replica.terminate(Duration::from_secs(30)));
}
