//! The console's routes over real HTTP on loopback: what each credential may do,
//! CSRF on every state change made with a session, and the login limit.

use std::{net::SocketAddr, time::Duration};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::{mpsc, watch},
};

use super::*;
use crate::{
    failover::Event,
    status::{Shared, State, Status},
};

const TOKEN: &str = "test-token-0123456789";
const PASSWORD: &str = "correct horse battery staple";

struct Server {
    addr: SocketAddr,
    admin: mpsc::Receiver<Event>,
    timeline: Timeline,
    _stop: watch::Sender<bool>,
}

async fn server(test_hooks: bool) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (admin_tx, admin) = mpsc::channel(8);
    let timeline = Timeline::new();
    let status = Shared::new(Status {
        node: "node1".into(),
        state: State::Prim,
        ..Default::default()
    });
    let hash = hash_password(PASSWORD).expect("hash");
    let app = App::new(
        status,
        timeline.clone(),
        admin_tx,
        Credentials::new(Some(hash), Some(TOKEN)),
        test_hooks,
    );
    let (stop, stop_rx) = watch::channel(false);
    tokio::spawn(serve(listener, app, stop_rx));
    Server {
        addr,
        admin,
        timeline,
        _stop: stop,
    }
}

struct Answer {
    code: u16,
    headers: String,
    body: String,
}

async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[&str],
    body: &str,
) -> Answer {
    let mut s = TcpStream::connect(addr).await.expect("connect");
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
    s.write_all(req.as_bytes()).await.expect("write");
    let mut raw = String::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut raw))
        .await
        .expect("answered in time")
        .expect("read");
    let (head, body) = raw.split_once("\r\n\r\n").expect("a head");
    let code = head[9..12].parse().expect("a status code");
    Answer {
        code,
        headers: head.to_ascii_lowercase(),
        body: body.to_string(),
    }
}

/// Logs in with `secret`; the session cookie and the CSRF token.
async fn login(addr: SocketAddr, secret: &str) -> (String, String) {
    let a = request(
        addr,
        "POST",
        "/api/v1/login",
        &["Content-Type: application/json"],
        &serde_json::json!({ "secret": secret }).to_string(),
    )
    .await;
    assert_eq!(a.code, 200, "{}", a.body);
    assert!(a.headers.contains("httponly"), "{}", a.headers);
    assert!(a.headers.contains("samesite=strict"), "{}", a.headers);
    let cookie = a
        .headers
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: "))
        .and_then(|c| c.split(';').next())
        .expect("a cookie")
        .to_string();
    let v: serde_json::Value = serde_json::from_str(&a.body).expect("json");
    (cookie, v["csrf"].as_str().expect("csrf").to_string())
}

#[tokio::test]
async fn reads_need_a_credential() {
    let s = server(false).await;
    s.timeline.transition("WAIT", "PRIM", "the peer is SECOND");
    assert_eq!(
        request(s.addr, "GET", "/api/v1/status", &[], "").await.code,
        401
    );
    assert_eq!(
        request(s.addr, "GET", "/api/v1/events", &[], "").await.code,
        401
    );
    let wrong = request(
        s.addr,
        "GET",
        "/api/v1/status",
        &["Authorization: Bearer nope"],
        "",
    )
    .await;
    assert_eq!(wrong.code, 401);
    let bearer = format!("Authorization: Bearer {TOKEN}");
    let a = request(s.addr, "GET", "/api/v1/status", &[&bearer], "").await;
    assert_eq!(a.code, 200);
    let v: serde_json::Value = serde_json::from_str(&a.body).expect("json");
    assert_eq!(v["state"], "PRIM");
    let (cookie, _) = login(s.addr, PASSWORD).await;
    let a = request(
        s.addr,
        "GET",
        "/api/v1/events?after=",
        &[&format!("Cookie: {cookie}")],
        "",
    )
    .await;
    assert_eq!(a.code, 200);
    assert!(a.body.contains("the peer is SECOND"), "{}", a.body);
    // The page itself needs nothing, and forbids other sources.
    let page = request(s.addr, "GET", "/", &[], "").await;
    assert_eq!(page.code, 200);
    assert!(
        page.headers
            .contains("content-security-policy: default-src 'none'")
    );
    assert!(page.body.contains("data-test-hooks=\"off\""));
}

#[tokio::test]
async fn a_session_changes_state_only_with_its_csrf_token() {
    let mut s = server(false).await;
    let (cookie, csrf) = login(s.addr, PASSWORD).await;
    let cookie = format!("Cookie: {cookie}");
    let none = request(s.addr, "POST", "/api/v1/actions/swap", &[&cookie], "").await;
    assert_eq!(none.code, 403, "{}", none.body);
    let wrong = request(
        s.addr,
        "POST",
        "/api/v1/actions/swap",
        &[&cookie, &format!("X-CSRF-Token: {}", "0".repeat(64))],
        "",
    )
    .await;
    assert_eq!(wrong.code, 403);
    assert!(s.admin.try_recv().is_err(), "nothing reached the engine");
    let header = format!("X-CSRF-Token: {csrf}");
    let ok = request(
        s.addr,
        "POST",
        "/api/v1/actions/prim-force",
        &[&cookie, &header],
        "",
    )
    .await;
    assert_eq!(ok.code, 202, "{}", ok.body);
    assert!(matches!(
        s.admin.try_recv(),
        Ok(Event::AdminPrim { force: true })
    ));
    let unknown = request(
        s.addr,
        "POST",
        "/api/v1/actions/reboot",
        &[&cookie, &header],
        "",
    )
    .await;
    assert_eq!(unknown.code, 404);
    // Another session's token does not do.
    let (_, other) = login(s.addr, TOKEN).await;
    let a = request(
        s.addr,
        "POST",
        "/api/v1/actions/stop",
        &[&cookie, &format!("X-CSRF-Token: {other}")],
        "",
    )
    .await;
    assert_eq!(a.code, 403);
    // A bearer needs no CSRF token: browsers never send that header by themselves.
    let bearer = format!("Authorization: Bearer {TOKEN}");
    let a = request(s.addr, "POST", "/api/v1/actions/swap", &[&bearer], "").await;
    assert_eq!(a.code, 202);
    assert!(matches!(s.admin.try_recv(), Ok(Event::AdminSwap)));
    // After logout the cookie opens nothing.
    let out = request(s.addr, "POST", "/api/v1/logout", &[&cookie, &header], "").await;
    assert_eq!(out.code, 200);
    let a = request(s.addr, "GET", "/api/v1/session", &[&cookie], "").await;
    assert_eq!(a.code, 401);
}

#[tokio::test]
async fn failed_logins_are_limited() {
    let s = server(false).await;
    let body = serde_json::json!({ "secret": "guess" }).to_string();
    for _ in 0..5 {
        let a = request(s.addr, "POST", "/api/v1/login", &[], &body).await;
        assert_eq!(a.code, 401);
    }
    let a = request(s.addr, "POST", "/api/v1/login", &[], &body).await;
    assert_eq!(a.code, 429);
    // Even the right password waits out the window.
    let right = serde_json::json!({ "secret": PASSWORD }).to_string();
    let a = request(s.addr, "POST", "/api/v1/login", &[], &right).await;
    assert_eq!(a.code, 429);
    let garbage = request(s.addr, "POST", "/api/v1/login", &[], "{").await;
    assert_eq!(garbage.code, 429);
}

#[tokio::test]
async fn the_test_hooks_are_announced_only_when_configured() {
    let s = server(true).await;
    let page = request(s.addr, "GET", "/", &[], "").await;
    assert!(page.body.contains("data-test-hooks=\"on\""));
    let js = request(s.addr, "GET", "/console.js", &[], "").await;
    assert_eq!(js.code, 200);
    assert!(js.headers.contains("content-type: text/javascript"));
}

#[test]
fn actions_are_the_cli_commands() {
    assert!(matches!(admin_event("swap"), Some(Event::AdminSwap)));
    assert!(matches!(admin_event("stop"), Some(Event::Stop)));
    assert!(matches!(admin_event("start"), Some(Event::Start)));
    assert!(matches!(
        admin_event("prim"),
        Some(Event::AdminPrim { force: false })
    ));
    assert!(
        admin_event("second").is_none(),
        "not offered by the console"
    );
}
