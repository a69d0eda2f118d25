//! The web console in the lab, seen from the client's namespace as an
//! administrator's browser would: the API refuses requests without a credential
//! and state changes without the session's CSRF token; headless Chromium (Debian's
//! package) loads the page, which shows both nodes' states, and a swap clicked in
//! the page exchanges the roles. A screenshot of the page after the swap is saved
//! under the target directory and its path printed.
//!
//! The click is made by the page's own script (`console.test_hooks`: the URL
//! fragment `#autotest=swap&token=...` makes it log in with the token and click
//! Swap once both nodes are ready), so that the test needs no DevTools client.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    os::{fd::AsFd, unix::fs::PermissionsExt},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;
use tandem_tests::lab::Lab;

use super::{layout_str, pair_edited, serial};

/// The console's port on node1.
const PORT: u16 = 7480;
/// The token in the token file, accepted as a bearer and by the login form.
const TOKEN: &str = "lab-console-token-0123456789abcdef";
/// The password whose hash is configured.
const PASSWORD: &str = "lab password";
/// How long one Chromium run may take before it is killed.
const BROWSER_PATIENCE: Duration = Duration::from_secs(40);

#[test]
fn console_shows_both_nodes_and_a_click_swaps_them() {
    let _g = serial();
    let chromium = chromium();
    let secrets = tempfile::tempdir().expect("tempdir");
    let token_file = secrets.path().join("console.token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).expect("write the token");
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600))
        .expect("chmod the token");
    let hash = password_hash();
    let lab = pair_edited("web", |i, text| {
        if i != 0 {
            return text;
        }
        // Every address of node1's namespace: the lab's own network only.
        format!(
            "{text}console:\n  listen: 0.0.0.0:{PORT}\n  password_hash: \"{hash}\"\n  token_file: {}\n  test_hooks: true\n",
            token_file.display()
        )
    });
    let ns = layout_str(&lab, "/namespaces/client");
    let addr: SocketAddr = format!("{}:{PORT}", console_ip(&lab))
        .parse()
        .expect("address");
    let bearer = format!("Authorization: Bearer {TOKEN}");

    // --- the API, without and with credentials and CSRF tokens
    let a = http(&ns, addr, "GET", "/api/v1/status", &[], "");
    assert_eq!(a.code, 401, "status without credentials: {}", a.body);
    let a = http(
        &ns,
        addr,
        "GET",
        "/api/v1/events",
        &["Authorization: Bearer wrong"],
        "",
    );
    assert_eq!(a.code, 401, "events with a wrong token: {}", a.body);
    let a = http(&ns, addr, "GET", "/api/v1/status", &[&bearer], "");
    assert_eq!(a.code, 200, "{}", a.body);
    let s: Value = serde_json::from_str(&a.body).expect("status json");
    assert_eq!(s["state"], "PRIM", "{s}");
    assert_eq!(s["peer"]["state"], "SECOND", "{s}");
    let login = http(
        &ns,
        addr,
        "POST",
        "/api/v1/login",
        &["Content-Type: application/json"],
        &serde_json::json!({ "secret": PASSWORD }).to_string(),
    );
    assert_eq!(login.code, 200, "login with the password: {}", login.body);
    let cookie = login
        .headers
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: "))
        .and_then(|c| c.split(';').next())
        .map(|c| format!("Cookie: {c}"))
        .expect("a session cookie");
    let csrf = serde_json::from_str::<Value>(&login.body).expect("json")["csrf"]
        .as_str()
        .expect("a csrf token")
        .to_string();
    let a = http(&ns, addr, "POST", "/api/v1/actions/stop", &[&cookie], "");
    assert_eq!(a.code, 403, "a stop without the CSRF token: {}", a.body);
    let a = http(&ns, addr, "GET", "/api/v1/session", &[&cookie], "");
    assert!(a.code == 200 && a.body.contains(&csrf), "{}", a.body);
    let csrf_header = format!("X-CSRF-Token: {csrf}");
    let a = http(
        &ns,
        addr,
        "POST",
        "/api/v1/actions/reboot",
        &[&cookie, &csrf_header],
        "",
    );
    assert_eq!(a.code, 404, "{}", a.body);
    let s = lab.status(0).expect("status");
    assert_eq!(s["state"], "PRIM", "a refused request changed nothing: {s}");

    // --- the page in Chromium: it shows both nodes and clicks Swap
    let base = format!("http://{addr}/");
    let profile = tempfile::tempdir().expect("tempdir");
    // Without credentials the page offers the login form and shows no state.
    let dom = browse(
        &chromium,
        &ns,
        profile.path(),
        &["--dump-dom", "--virtual-time-budget=3000"],
        &base,
    );
    assert!(
        dom.contains("<section id=\"login\">"),
        "no login form:\n{dom}"
    );
    assert!(dom.contains("<main id=\"dashboard\" hidden=\"\">"), "{dom}");
    assert_eq!(node_state(&dom, "node-self"), "", "{dom}");
    let dom = browse(
        &chromium,
        &ns,
        profile.path(),
        &["--dump-dom", "--virtual-time-budget=8000"],
        &format!("{base}#autotest=swap&token={TOKEN}"),
    );
    // The page showed both nodes ready when it clicked; it polls on meanwhile.
    assert!(
        dom.contains("autotest: swap clicked (node1 PRIM, node2 SECOND)"),
        "the page did not click Swap with both nodes shown ready:\n{dom}"
    );
    assert!(dom.contains(">node1<") && dom.contains(">node2<"), "{dom}");
    lab.wait_state(1, "PRIM", true, Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("the swap clicked in the page: {e}\n{}", lab.log_tail(1, 30)));
    lab.wait_state(0, "SECOND", true, Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("the swap clicked in the page: {e}\n{}", lab.log_tail(0, 30)));
    let a = http(&ns, addr, "GET", "/api/v1/events", &[&bearer], "");
    let events: Value = serde_json::from_str(&a.body).expect("events json");
    let to_second = events["events"]
        .as_array()
        .expect("a list")
        .iter()
        .any(|e| e["kind"] == "transition" && e["from"] == "PRIM" && e["to"] == "SECOND");
    assert!(to_second, "the timeline lacks PRIM -> SECOND: {events}");

    // --- after the swap: the page shows the exchanged roles; a screenshot
    let shot = screenshot_path();
    let _ = std::fs::remove_file(&shot);
    browse(
        &chromium,
        &ns,
        profile.path(),
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1280,1100",
            "--virtual-time-budget=5000",
        ],
        &format!("{base}#autotest=login&token={TOKEN}"),
    );
    assert!(
        shot.exists(),
        "Chromium wrote no screenshot at {}",
        shot.display()
    );
    let dom = browse(
        &chromium,
        &ns,
        profile.path(),
        &["--dump-dom", "--virtual-time-budget=5000"],
        &format!("{base}#autotest=login&token={TOKEN}"),
    );
    assert_eq!(node_state(&dom, "node-self"), "SECOND", "{dom}");
    assert_eq!(node_state(&dom, "node-peer"), "PRIM", "{dom}");
    eprintln!("console screenshot after the swap: {}", shot.display());
}

/// Debian's Chromium; the test fails (never skips) without it.
fn chromium() -> PathBuf {
    let path = PathBuf::from("/usr/bin/chromium");
    assert!(
        path.exists(),
        "the console test needs Debian's Chromium: apt-get install -y chromium"
    );
    path
}

/// node1's public address in the lab (the client's network).
fn console_ip(lab: &Lab) -> String {
    lab.nodes[0]
        .address
        .split('/')
        .next()
        .unwrap_or_default()
        .to_string()
}

/// The argon2 hash of [`PASSWORD`], made by the binary under test.
fn password_hash() -> String {
    let mut child = Command::new(tandem_tests::lab::tandem_bin())
        .args(["console", "hash-password"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run tandem console hash-password");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(format!("{PASSWORD}\n").as_bytes())
        .expect("write the password");
    let out = child.wait_with_output().expect("hash-password");
    assert!(out.status.success(), "tandem console hash-password failed");
    let hash = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    hash
}

/// Where the screenshot goes: the target directory of this build.
fn screenshot_path() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"),
        PathBuf::from,
    );
    target.join("console-after-swap.png")
}

/// The state shown in the page's node card `id`.
fn node_state(dom: &str, id: &str) -> String {
    let card = dom
        .split(&format!("id=\"{id}\""))
        .nth(1)
        .and_then(|rest| rest.split("</article>").next())
        .unwrap_or_else(|| panic!("no {id} card in the page:\n{dom}"));
    card.split("<p class=\"state\">")
        .nth(1)
        .and_then(|rest| rest.split("</p>").next())
        .unwrap_or_default()
        .to_string()
}

/// Runs headless Chromium in namespace `ns` on `url`; its standard output. It is
/// killed (by its pid, as our child) if it outlives [`BROWSER_PATIENCE`].
fn browse(chromium: &Path, ns: &str, profile: &Path, args: &[&str], url: &str) -> String {
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns])
        .arg(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-dev-shm-usage",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromium");
    let mut stdout = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        let _ = stdout.read_to_string(&mut out);
        out
    });
    let deadline = Instant::now() + BROWSER_PATIENCE;
    loop {
        match child.try_wait().expect("wait for chromium") {
            Some(_) => break,
            None if Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("chromium did not finish within {BROWSER_PATIENCE:?} on {url}");
            }
            None => std::thread::sleep(Duration::from_millis(100)),
        }
    }
    reader.join().expect("chromium's output")
}

struct Answer {
    code: u16,
    headers: String,
    body: String,
}

/// One HTTP/1.1 request to `addr` from namespace `ns` (a thread of ours enters
/// it, as the lab's client does).
fn http(
    ns: &str,
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[&str],
    body: &str,
) -> Answer {
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for h in headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    req.push_str(body);
    let netns = format!("/run/netns/{ns}");
    let raw = std::thread::spawn(move || -> Result<String, String> {
        let f = std::fs::File::open(&netns).map_err(|e| format!("{netns}: {e}"))?;
        nix::sched::setns(f.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|e| format!("setns {netns}: {e}"))?;
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .map_err(|e| format!("connect {addr}: {e}"))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(|e| e.to_string())?;
        s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
        let mut raw = String::new();
        s.read_to_string(&mut raw).map_err(|e| e.to_string())?;
        Ok(raw)
    })
    .join()
    .expect("the request thread")
    .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((raw.as_str(), ""));
    Answer {
        code: head.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0),
        headers: head.to_ascii_lowercase(),
        body: body.to_string(),
    }
}
