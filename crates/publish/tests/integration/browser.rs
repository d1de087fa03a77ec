//! The generated site in a real browser: headless Chromium (Debian package `chromium`), from
//! `file://` and from a static HTTP server on 127.0.0.1.
//!
//! The page under test exposes what the player drew as plain text (`#player-text`) and its state
//! (`data-state` on `#player`); `--dump-dom` after a virtual-time budget shows both. Screenshots of
//! each page type are kept under `target/test-artifacts/browser/`.
//!
//! Skips (saying so) when Chromium is missing, unless `QA_REQUIRE_CHROMIUM` is set, as in CI.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

use qa_core::Verdict;
use qa_core::redact::Redactor;

use crate::helpers::{artifacts_dir, make_run, step};

/// What the passing step prints: colours, a carriage-return progress line, a cursor move back
/// over text, and a line longer than the terminal is wide.
const HELLO: &str = "hello world\n\u{1b}[1;32mgreen\u{1b}[0m and \u{1b}[38;5;208morange\u{1b}[0m and \u{1b}[38;2;10;20;30mtruecolor\u{1b}[0m\nprogress 10%\rprogress 55%\rprogress 100%\nabcXYZ\u{1b}[3Ddef\n\u{1b}[2K\rcleared line replaced\n";
const HELLO_SHOWN: &str =
    "hello world\ngreen and orange and truecolor\nprogress 100%\nabcdef\ncleared line replaced";

/// What the failing step prints: markup and escape junk that must stay text.
const EVIL: &str = "<script>document.title='pwned'</script>\n\"><img src=x onerror=\"document.documentElement.setAttribute('data-pwned','1')\">\n\u{1b}]0;<script>document.title='osc'</script>\u{7}\u{1b}[999;999Hjunk\u{1b}[?1049h\n";

fn chromium() -> Option<PathBuf> {
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        if crate::helpers::have(name) {
            return Some(PathBuf::from(name));
        }
    }
    if std::env::var_os("QA_REQUIRE_CHROMIUM").is_some() {
        panic!(
            "QA_REQUIRE_CHROMIUM is set but no chromium is installed (Debian package: chromium)"
        );
    }
    eprintln!(
        "SKIPPED: chromium not found (install Debian package `chromium`, or set QA_REQUIRE_CHROMIUM to make this a failure)"
    );
    None
}

/// Runs headless Chromium on `url` with a fresh profile; `mode` is `--dump-dom` or
/// `--screenshot=<path>`.
fn browse(browser: &Path, url: &str, mode: &str, window: &str) -> String {
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            "--run-all-compositor-stages-before-draw",
            "--virtual-time-budget=60000",
        ])
        .arg(format!("--window-size={window}"))
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(mode)
        .arg(url)
        .output()
        .expect("chromium runs");
    assert!(
        out.status.success(),
        "chromium failed on {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A site with two runs of one plan, written under target/test-artifacts/browser/<name>.
fn site(name: &str) -> PathBuf {
    let root = artifacts_dir(&format!("browser/{name}"));
    let _ = std::fs::remove_dir_all(root.join("results"));
    let _ = std::fs::remove_dir_all(root.join("site"));
    let results = root.join("results");
    make_run(
        &results,
        "run-1",
        "nightly",
        "2026-11-19T10:00:00Z",
        &[
            step("hello", Verdict::Pass, HELLO),
            step("evil", Verdict::Pass, "fine\n"),
        ],
    );
    make_run(
        &results,
        "run-2",
        "nightly",
        "2026-11-20T10:00:00Z",
        &[
            step("hello", Verdict::Pass, HELLO),
            step("evil", Verdict::Fail, EVIL),
        ],
    );
    let site = root.join("site");
    let summary = qa_publish::site::rebuild_with(&results, &site, &Redactor::default()).unwrap();
    assert_eq!(summary.runs, 2);
    site
}

fn file_url(p: &Path) -> String {
    format!("file://{}", p.canonicalize().unwrap().display())
}

/// The text content of the element with `id`, from a `--dump-dom` (entities decoded).
fn element_text(dom: &str, id: &str) -> Option<String> {
    let at = dom.find(&format!("id=\"{id}\""))?;
    let open_end = at + dom[at..].find('>')? + 1;
    let close = open_end + dom[open_end..].find("</pre>")?;
    let raw = &dom[open_end..close];
    Some(
        raw.replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&#39;", "'")
            .replace("&amp;", "&"),
    )
}

fn player_state(dom: &str) -> Option<String> {
    let at = dom.find("id=\"player\"")?;
    let tag_end = at + dom[at..].find('>')?;
    let tag = &dom[at..tag_end];
    let s = tag.find("data-state=\"")? + "data-state=\"".len();
    Some(tag[s..s + tag[s..].find('"')?].to_string())
}

fn title(dom: &str) -> String {
    let s = dom.find("<title>").map(|i| i + 7).unwrap_or(0);
    dom[s..s + dom[s..].find("</title>").unwrap_or(0)].to_string()
}

fn check_run_page(browser: &Path, base: &str) {
    // The passing step's recording replays to exactly what the step printed.
    let dom = browse(
        browser,
        &format!("{base}/runs/run-2/index.html#play=0&speed=4"),
        "--dump-dom",
        "1280,1800",
    );
    assert_eq!(
        player_state(&dom).as_deref(),
        Some("ended"),
        "the player did not finish:\n{dom}"
    );
    assert_eq!(
        element_text(&dom, "player-text").as_deref(),
        Some(HELLO_SHOWN),
        "rendered terminal text"
    );
    assert!(
        dom.contains("style=\"color: rgb(13, 188, 121); font-weight: bold;\">green</span>"),
        "SGR 1;32 drawn as bold green:\n{dom}"
    );
    assert!(dom.contains("rgb(255, 135, 0)"), "256-colour 208 drawn");
    assert!(dom.contains("rgb(10, 20, 30)"), "truecolor drawn");
    assert!(
        dom.contains("<span class=\"v v-FAIL\">FAIL</span>")
            && dom.contains("<span class=\"v v-PASS\">PASS</span>")
    );

    // The hostile step: its recording plays as text, nothing in it runs.
    let dom = browse(
        browser,
        &format!("{base}/runs/run-2/index.html#play=1&speed=4"),
        "--dump-dom",
        "1280,1800",
    );
    assert_eq!(player_state(&dom).as_deref(), Some("ended"));
    let shown = element_text(&dom, "player-text").unwrap();
    assert!(
        shown.starts_with("<script>document.title='pwned'</script>\n\"><img src=x"),
        "{shown}"
    );
    assert!(
        !title(&dom).contains("pwned") && !title(&dom).contains("osc"),
        "a planted script ran: {}",
        title(&dom)
    );
    let html_tag = &dom[dom.find("<html").unwrap()..];
    let html_tag = &html_tag[..html_tag.find('>').unwrap()];
    assert!(
        !html_tag.contains("data-pwned"),
        "a planted handler ran: {html_tag}"
    );
    assert!(!dom.contains("<img"), "a planted element was created");
    assert!(
        dom.contains("&lt;script&gt;document.title='pwned'&lt;/script&gt;"),
        "the failing tail is shown as text"
    );
}

#[test]
fn site_works_in_chromium_from_file_urls() {
    let Some(browser) = chromium() else { return };
    let site = site("file");
    let base = file_url(&site);
    check_run_page(&browser, &base);

    // Opened without a choice, the page loads the failing step's recording, paused at the start.
    let dom = browse(
        &browser,
        &format!("{base}/runs/run-2/index.html"),
        "--dump-dom",
        "1280,1800",
    );
    let player_tag = &dom[dom.find("id=\"player\"").unwrap()..];
    let player_tag = &player_tag[..player_tag.find('>').unwrap()];
    assert!(
        player_tag.contains("data-key=\"1\"") && player_tag.contains("data-state=\"paused\""),
        "{player_tag}"
    );
    assert!(!player_tag.contains("hidden"), "{player_tag}");

    let index = browse(
        &browser,
        &format!("{base}/index.html"),
        "--dump-dom",
        "1280,1000",
    );
    let row = |run: &str| {
        index
            .lines()
            .find(|l| l.contains(&format!("runs/{run}/index.html")))
            .unwrap_or_default()
            .to_string()
    };
    assert!(
        row("run-2").contains("v-FAIL\">FAIL<") && row("run-2").contains("1 PASS, 1 FAIL"),
        "{}",
        row("run-2")
    );
    assert!(
        row("run-1").contains("v-PASS\">PASS<") && row("run-1").contains("2 PASS"),
        "{}",
        row("run-1")
    );
    assert!(
        index.find("runs/run-2/").unwrap() < index.find("runs/run-1/").unwrap(),
        "newest first"
    );

    let history = browse(
        &browser,
        &format!("{base}/history/nightly.html"),
        "--dump-dom",
        "1280,1000",
    );
    let evil_row = history.lines().find(|l| l.contains(">evil</th>")).unwrap();
    assert!(
        evil_row.contains("<a href=\"../runs/run-2/index.html\">run-2</a>"),
        "{evil_row}"
    );

    let shots = artifacts_dir("browser/screenshots");
    for (name, url, window) in [
        ("index", format!("{base}/index.html"), "1280,900"),
        (
            "run",
            format!("{base}/runs/run-2/index.html#play=0&speed=4"),
            "1280,1800",
        ),
        (
            "history",
            format!("{base}/history/nightly.html"),
            "1280,900",
        ),
        (
            "run-phone",
            format!("{base}/runs/run-2/index.html"),
            "390,1600",
        ),
        ("index-phone", format!("{base}/index.html"), "390,844"),
    ] {
        let path = shots.join(format!("{name}.png"));
        let _ = std::fs::remove_file(&path);
        browse(
            &browser,
            &url,
            &format!("--screenshot={}", path.display()),
            window,
        );
        let png = std::fs::read(&path).unwrap_or_default();
        assert!(
            png.len() > 1000 && png.starts_with(b"\x89PNG"),
            "no screenshot of the {name} page"
        );
    }
}

#[test]
fn site_works_in_chromium_from_a_local_http_server() {
    let Some(browser) = chromium() else { return };
    let site = site("http");
    let (port, _server) = serve(site.clone());
    check_run_page(&browser, &format!("http://127.0.0.1:{port}"));
    let index = browse(
        &browser,
        &format!("http://127.0.0.1:{port}/index.html"),
        "--dump-dom",
        "1280,1000",
    );
    assert!(index.contains("runs/run-2/index.html"));
}

/// A static file server on 127.0.0.1 for `root`, in a background thread (one request per
/// connection; enough for a browser and for this test).
fn serve(root: PathBuf) -> (u16, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let root = root.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    return;
                }
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).map(|n| n == 0).unwrap_or(true) || h == "\r\n" {
                        break;
                    }
                }
                let path = line
                    .split_whitespace()
                    .nth(1)
                    .unwrap_or("/")
                    .split(['?', '#'])
                    .next()
                    .unwrap_or("/")
                    .to_string();
                let rel = path.trim_start_matches('/');
                let safe = !rel.split('/').any(|c| c == "..");
                let mut file = root.join(if rel.is_empty() { "index.html" } else { rel });
                if file.is_dir() {
                    file = file.join("index.html");
                }
                let body = if safe {
                    std::fs::File::open(&file).ok()
                } else {
                    None
                };
                let _ = match body {
                    Some(mut f) => {
                        let mut bytes = Vec::new();
                        f.read_to_end(&mut bytes).unwrap();
                        let ctype = match file.extension().and_then(|e| e.to_str()) {
                            Some("html") => "text/html; charset=utf-8",
                            Some("js") => "text/javascript; charset=utf-8",
                            Some("css") => "text/css; charset=utf-8",
                            Some("json") => "application/json",
                            _ => "text/plain; charset=utf-8",
                        };
                        write!(conn, "HTTP/1.1 200 OK\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", bytes.len()).and_then(|_| conn.write_all(&bytes))
                    }
                    None => conn.write_all(
                        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    ),
                };
            });
        }
    });
    (port, handle)
}

/// Guards the guard: the way the tests above watch for planted code (title, attribute on the
/// root element) does see code that runs when it is not escaped.
#[test]
fn the_script_watch_sees_a_script_that_runs() {
    let Some(browser) = chromium() else { return };
    let d = tempfile::tempdir().unwrap();
    let page = d.path().join("planted.html");
    std::fs::write(&page, format!("<!DOCTYPE html><html><head><title>clean</title></head><body><pre>{EVIL}</pre></body></html>")).unwrap();
    let dom = browse(&browser, &file_url(&page), "--dump-dom", "800,600");
    assert_ne!(
        title(&dom),
        "clean",
        "planted scripts did not run unescaped, so the watch proves nothing"
    );
    let html_tag = &dom[dom.find("<html").unwrap()..];
    assert!(
        html_tag[..html_tag.find('>').unwrap()].contains("data-pwned=\"1\""),
        "the planted handler did not run unescaped: {dom}"
    );
}

/// The terminal emulator and the player's seeking, exercised directly in the browser through a
/// test page that loads the shipped player.js and reports results into the DOM.
#[test]
fn player_terminal_semantics_and_seeking() {
    let Some(browser) = chromium() else { return };
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("player.js"), qa_publish::site::PLAYER_JS).unwrap();
    let harness = r#"<!DOCTYPE html><html><head><title>harness</title></head><body>
<div id="player" hidden><p class="player-title"></p><button class="pp"></button><input class="seek" type="range"><span class="clock"></span><select class="speed"><option value="1" selected>1</option></select><pre class="term"></pre><pre class="term-text"></pre></div>
<pre id="results"></pre>
<script src="player.js"></script>
<script>
function text(cols, rows, data) { var t = new QaTerm(cols, rows); t.write(data); return t.text(); }
var r = {};
r.wrap = text(10, 5, "abcdefghijklmnopqrstuvwxy\nz");
r.back = text(80, 5, "abc\u001b[2Dx");
r.eraseToEnd = text(80, 5, "hello world\u001b[6D\u001b[K!");
r.eraseAll = text(80, 5, "a\nb\u001b[2J\u001b[Hc");
r.scrollback = text(80, 3, "1\n2\n3\n4\n5\n");
r.moveUp = text(80, 5, "line1\nline2\n\u001b[1A\u001b[2Kreplaced\n");
r.position = text(20, 5, "\u001b[3;5Hx\u001b[1;1Hy");
r.split = (function () { var t = new QaTerm(80, 5); t.write("a\u001b["); t.write("31mred\u001b[0"); t.write("m b"); return t.text(); })();
r.osc = text(80, 5, "\u001b]0;window title\u0007after\u001b]8;;http://x\u001b\\link\u001b]8;;\u001b\\");
r.tabs = text(80, 5, "a\tb");
var p = new QaPlayer(document.getElementById('player'));
p.load("k", { header: { width: 40, height: 10 }, events: [[0, "o", "one\n"], [1, "o", "two\n"], [2, "o", "three\n"], [2.5, "i", "typed"]] }, "label");
p.seekTo(1.5); r.seekMiddle = p.term.text();
p.seekTo(0.5); r.seekBack = p.term.text();
p.seekTo(99); r.seekEnd = p.term.text(); r.stateEnd = document.getElementById('player').getAttribute('data-state');
var t = new QaTerm(80, 5); t.write("\u001b[38;5;196mX\u001b[48;2;1;2;3mY\u001b[0m"); var pre = document.createElement('pre'); t.render(pre);
r.colors = pre.innerHTML;
document.getElementById('results').textContent = JSON.stringify(r);
</script></body></html>"#;
    std::fs::write(d.path().join("harness.html"), harness).unwrap();
    let dom = browse(
        &browser,
        &file_url(&d.path().join("harness.html")),
        "--dump-dom",
        "800,600",
    );
    let s = dom.find("<pre id=\"results\">").expect("results") + "<pre id=\"results\">".len();
    let raw = &dom[s..s + dom[s..].find("</pre>").unwrap()];
    let raw = raw
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&amp;", "&");
    let r: serde_json::Value = serde_json::from_str(&raw).unwrap_or_else(|e| panic!("{e}: {raw}"));
    let get = |k: &str| {
        r[k].as_str()
            .unwrap_or_else(|| panic!("no {k} in {r}"))
            .to_string()
    };
    assert_eq!(
        get("wrap"),
        "abcdefghijklmnopqrstuvwxy\nz",
        "wrapped lines are one line of text"
    );
    assert_eq!(get("back"), "axc");
    assert_eq!(get("eraseToEnd"), "hello!");
    assert_eq!(get("eraseAll"), "c");
    assert_eq!(
        get("scrollback"),
        "1\n2\n3\n4\n5",
        "lines scrolled off the screen are kept"
    );
    assert_eq!(get("moveUp"), "line1\nreplaced");
    assert_eq!(get("position"), "y\n\n    x");
    assert_eq!(
        get("split"),
        "ared b",
        "escape sequences split across events"
    );
    assert_eq!(get("osc"), "afterlink");
    assert_eq!(get("tabs"), "a       b");
    assert_eq!(get("seekMiddle"), "one\ntwo");
    assert_eq!(get("seekBack"), "one");
    assert_eq!(
        get("seekEnd"),
        "one\ntwo\nthree",
        "input events are not drawn"
    );
    assert_eq!(get("stateEnd"), "ended");
    let colors = get("colors");
    assert!(
        colors.contains("color: rgb(255, 0, 0)")
            && colors.contains("background-color: rgb(1, 2, 3)"),
        "{colors}"
    );
}
