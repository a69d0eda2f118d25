//! The web console (`console` in the configuration; docs/console.md): a page and
//! a small JSON API served by the agent over plain HTTP, off unless configured.
//!
//! - `routes`: the HTTP routes and how each request is authorised;
//! - `auth`: the password hash and the bearer token;
//! - `session`: browser sessions and their CSRF tokens;
//! - `limit`: the limit on failed logins;
//! - `timeline`: the ring buffer of recent transitions and notes, fed by the
//!   failover actor;
//! - `page`: the page itself (HTML, CSS and script embedded in the binary, so it
//!   works with no network beyond the agent).
//!
//! The console has no TLS: it listens on loopback by default, and is meant to be
//! reached through an SSH tunnel or a TLS reverse proxy, or on a management
//! network.

mod auth;
mod limit;
mod page;
mod routes;
mod session;
mod timeline;

#[cfg(test)]
mod tests;

use std::net::SocketAddr;

use tokio::{net::TcpListener, sync::watch};

pub use self::{
    auth::{AuthError, Credentials, hash_password},
    routes::{App, COOKIE, CSRF_HEADER, admin_event, router},
    timeline::{Entry, Kind, Timeline},
};

/// Serves the console on `listener` until `stop` turns true (or its sender is
/// gone).
pub async fn serve(
    listener: TcpListener,
    app: App,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let shutdown = async move {
        // An error means the sender is gone: the agent is stopping too.
        let _ = stop.wait_for(|s| *s).await;
    };
    axum::serve(
        listener,
        router(app).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}
