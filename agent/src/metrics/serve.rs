//! The `/metrics` endpoint: plain HTTP (axum) on the configured address.
//!
//! There is no authentication: the metrics say how the pair is doing, not what it
//! holds, and Prometheus scrapes plain HTTP. The endpoint is off unless
//! `metrics.listen` is set, so that an agent never opens a TCP port nobody asked
//! for on a shared host.

use axum::{Router, extract::State, http::header, response::IntoResponse, routing::get};
use tokio::{net::TcpListener, sync::watch};

use super::Metrics;
use crate::status::Shared;

/// The OpenMetrics text format that prometheus-client writes.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone)]
struct Scrape {
    metrics: Metrics,
    status: Shared,
}

/// The routes: `GET /metrics`; anything else is 404.
pub fn router(metrics: Metrics, status: Shared) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .with_state(Scrape { metrics, status })
}

async fn scrape(State(s): State<Scrape>) -> impl IntoResponse {
    let text = s.metrics.encode(&s.status.get());
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], text)
}

/// Serves `/metrics` on `listener` until `stop` turns true (or its sender is
/// gone); scrapes in progress then finish.
pub async fn serve(
    listener: TcpListener,
    metrics: Metrics,
    status: Shared,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let shutdown = async move {
        // An error means the sender is gone: the agent is stopping too.
        let _ = stop.wait_for(|s| *s).await;
    };
    axum::serve(listener, router(metrics, status))
        .with_graceful_shutdown(shutdown)
        .await
}
