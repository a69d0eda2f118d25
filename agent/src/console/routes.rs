//! The console's HTTP routes (axum) and how each request is authorised.
//!
//! ```text
//!  GET  /, /console.js, /console.css      the page (no credentials needed)
//!  POST /api/v1/login   {"secret": …}     password or token -> session cookie + CSRF token
//!  GET  /api/v1/session                   the CSRF token of the cookie's session
//!  POST /api/v1/logout                    closes the session
//!  GET  /api/v1/status                    this node's status, with what it knows of the peer
//!  GET  /api/v1/events?after=SEQ          the timeline
//!  POST /api/v1/actions/{swap,stop,start,prim,prim-force}
//! ```
//!
//! Everything under `/api/v1` but the login needs either the session cookie or
//! `Authorization: Bearer <token>`; a POST made with the cookie also needs the
//! session's CSRF token in `X-CSRF-Token`. A bearer request needs none: a
//! browser never adds that header on its own, so another site cannot forge it.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex, PoisonError},
    time::Instant,
};

use axum::{
    Router,
    body::Bytes,
    extract::{ConnectInfo, Path, State},
    http::{HeaderMap, HeaderValue, StatusCode, Uri, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use tokio::sync::mpsc;

use super::{
    auth::Credentials,
    limit::LoginLimiter,
    page,
    session::{SESSION_LIFETIME, Sessions, csrf_matches},
    timeline::Timeline,
};
use crate::{failover::Event, status::Shared};

/// The session cookie's name.
pub const COOKIE: &str = "tandem_session";
/// The header the page's script sends the CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// What the handlers share.
#[derive(Clone)]
pub struct App(Arc<Inner>);

struct Inner {
    status: Shared,
    timeline: Timeline,
    admin: mpsc::Sender<Event>,
    credentials: Credentials,
    sessions: Mutex<Sessions>,
    limiter: Mutex<LoginLimiter>,
    test_hooks: bool,
}

/// Who made a request.
enum Caller {
    Bearer,
    Session { id: String, csrf: String },
}

/// A refusal, answered as `{"error": "..."}` with its status code.
struct ApiError(StatusCode, &'static str);

// === impl App ===

impl App {
    #[must_use]
    pub fn new(
        status: Shared,
        timeline: Timeline,
        admin: mpsc::Sender<Event>,
        credentials: Credentials,
        test_hooks: bool,
    ) -> Self {
        Self(Arc::new(Inner {
            status,
            timeline,
            admin,
            credentials,
            sessions: Mutex::new(Sessions::default()),
            limiter: Mutex::new(LoginLimiter::default()),
            test_hooks,
        }))
    }

    /// Who sent `headers`, if anyone we know; for a POST made with the session
    /// cookie, only with the session's CSRF token.
    fn authorize(&self, headers: &HeaderMap, changes_state: bool) -> Result<Caller, ApiError> {
        if let Some(token) = bearer(headers) {
            return if self.0.credentials.token_matches(token) {
                Ok(Caller::Bearer)
            } else {
                Err(ApiError(StatusCode::UNAUTHORIZED, "wrong token"))
            };
        }
        let Some(id) = session_cookie(headers) else {
            return Err(ApiError(StatusCode::UNAUTHORIZED, "log in first"));
        };
        let csrf = self
            .0
            .sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .csrf_of(id, Instant::now())
            .ok_or(ApiError(
                StatusCode::UNAUTHORIZED,
                "the session has expired; log in again",
            ))?;
        if changes_state {
            let presented = headers
                .get(CSRF_HEADER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if !csrf_matches(&csrf, presented) {
                return Err(ApiError(
                    StatusCode::FORBIDDEN,
                    "missing or wrong CSRF token",
                ));
            }
        }
        Ok(Caller::Session {
            id: id.to_string(),
            csrf,
        })
    }
}

/// The routes.
pub fn router(app: App) -> Router {
    Router::new()
        .route("/", get(index))
        .route(
            "/console.js",
            get(|| async { asset(page::SCRIPT, "text/javascript") }),
        )
        .route(
            "/console.css",
            get(|| async { asset(page::STYLE, "text/css") }),
        )
        .route("/api/v1/login", post(login))
        .route("/api/v1/logout", post(logout))
        .route("/api/v1/session", get(session))
        .route("/api/v1/status", get(status))
        .route("/api/v1/events", get(events))
        .route("/api/v1/actions/{action}", post(action))
        .with_state(app)
}

async fn index(State(app): State<App>) -> Response {
    let mut r = asset(&page::html(app.0.test_hooks), "text/html; charset=utf-8");
    // The page loads only its own script and style, and no site may frame it.
    r.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'",
        ),
    );
    r.headers_mut()
        .insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    r
}

fn asset(body: &str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body.to_string(),
    )
        .into_response()
}

#[derive(serde::Deserialize)]
struct Login {
    secret: String,
}

async fn login(
    State(app): State<App>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Bytes,
) -> Response {
    let ip = peer.ip();
    let allowed = app
        .0
        .limiter
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .allows(ip, Instant::now());
    if !allowed {
        return ApiError(
            StatusCode::TOO_MANY_REQUESTS,
            "too many failed logins; wait a minute",
        )
        .into_response();
    }
    let Ok(Login { secret }) = serde_json::from_slice::<Login>(&body) else {
        return ApiError(StatusCode::BAD_REQUEST, "expected {\"secret\": \"...\"}").into_response();
    };
    // argon2 takes tens of milliseconds of CPU: not on the async threads.
    let credentials = app.0.credentials.clone();
    let ok = tokio::task::spawn_blocking(move || credentials.secret_matches(&secret))
        .await
        .unwrap_or(false);
    let now = Instant::now();
    let mut limiter = app.0.limiter.lock().unwrap_or_else(PoisonError::into_inner);
    if !ok {
        limiter.failed(ip, now);
        tracing::warn!(%ip, "console login failed");
        return ApiError(StatusCode::UNAUTHORIZED, "wrong password or token").into_response();
    }
    limiter.succeeded(ip);
    drop(limiter);
    let opened = app
        .0
        .sessions
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .open(now);
    let Ok(opened) = opened else {
        return ApiError(StatusCode::INTERNAL_SERVER_ERROR, "no random numbers").into_response();
    };
    tracing::info!(%ip, "console login");
    let cookie = format!(
        "{COOKIE}={}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}",
        opened.id,
        SESSION_LIFETIME.as_secs()
    );
    let mut r = json(StatusCode::OK, &serde_json::json!({ "csrf": opened.csrf }));
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

async fn logout(State(app): State<App>, headers: HeaderMap) -> Response {
    match app.authorize(&headers, true) {
        Ok(Caller::Session { id, .. }) => {
            app.0
                .sessions
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .close(&id);
            let mut r = json(StatusCode::OK, &serde_json::json!({ "ok": true }));
            let expired = format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0");
            if let Ok(v) = HeaderValue::from_str(&expired) {
                r.headers_mut().insert(header::SET_COOKIE, v);
            }
            r
        }
        Ok(Caller::Bearer) => json(StatusCode::OK, &serde_json::json!({ "ok": true })),
        Err(e) => e.into_response(),
    }
}

async fn session(State(app): State<App>, headers: HeaderMap) -> Response {
    match app.authorize(&headers, false) {
        Ok(Caller::Session { csrf, .. }) => {
            json(StatusCode::OK, &serde_json::json!({ "csrf": csrf }))
        }
        Ok(Caller::Bearer) => json(StatusCode::OK, &serde_json::json!({ "csrf": null })),
        Err(e) => e.into_response(),
    }
}

async fn status(State(app): State<App>, headers: HeaderMap) -> Response {
    match app.authorize(&headers, false) {
        Ok(_) => json(StatusCode::OK, &app.0.status.get()),
        Err(e) => e.into_response(),
    }
}

async fn events(State(app): State<App>, headers: HeaderMap, uri: Uri) -> Response {
    if let Err(e) = app.authorize(&headers, false) {
        return e.into_response();
    }
    let after = uri.query().and_then(|q| {
        q.split('&')
            .find_map(|kv| kv.strip_prefix("after="))
            .and_then(|v| v.parse::<u64>().ok())
    });
    json(
        StatusCode::OK,
        &serde_json::json!({ "events": app.0.timeline.since(after) }),
    )
}

async fn action(State(app): State<App>, headers: HeaderMap, Path(name): Path<String>) -> Response {
    if let Err(e) = app.authorize(&headers, true) {
        return e.into_response();
    }
    let Some(ev) = admin_event(&name) else {
        return ApiError(StatusCode::NOT_FOUND, "no such action").into_response();
    };
    tracing::info!(command = ?ev, "administrator command from the console");
    if app.0.admin.send(ev).await.is_err() {
        return ApiError(StatusCode::SERVICE_UNAVAILABLE, "the agent is stopping").into_response();
    }
    // Accepted: the engine has the command; the status shows when it is done.
    json(StatusCode::ACCEPTED, &serde_json::json!({ "ok": true }))
}

/// The administrator's event an action names; the same as the CLI's.
#[must_use]
pub fn admin_event(action: &str) -> Option<Event> {
    Some(match action {
        "swap" => Event::AdminSwap,
        "stop" => Event::Stop,
        "start" => Event::Start,
        "prim" => Event::AdminPrim { force: false },
        "prim-force" => Event::AdminPrim { force: true },
        _ => return None,
    })
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
}

/// The session id of the request's cookie, if it sent one.
fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|kv| kv.trim().strip_prefix(COOKIE)?.strip_prefix('='))
}

fn json(code: StatusCode, value: &impl serde::Serialize) -> Response {
    let body = serde_json::to_string(value).unwrap_or_else(|_| "{}".into());
    (
        code,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

// === impl ApiError ===

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        json(self.0, &serde_json::json!({ "error": self.1 }))
    }
}
