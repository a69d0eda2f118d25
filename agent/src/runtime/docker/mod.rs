//! The `docker` checker (cargo feature `docker`): asks the Docker Engine API,
//! over its unix socket, whether a container runs and is healthy.
//!
//! One request per check, `GET /containers/NAME/json` in HTTP/1.1 with
//! `Connection: close`, on a new connection; the response is read up to
//! [`MAX_RESPONSE_BYTES`] and only `State` is looked at. The path carries no API
//! version: the daemon then answers in its own, and `State.Running`,
//! `State.Paused` and `State.Health.Status` have kept their meaning since API
//! 1.24, while a fixed version would be refused by daemons whose minimum has
//! moved past it.
//!
//! Healthy means running, not paused, and, when the container has a health check
//! (`State.Health` present), `healthy`: `starting` and `unhealthy` are not. A
//! paused container is not healthy because Docker stops running its health check
//! while it is paused, so its last status would otherwise stand. Every failure
//! (no daemon, no such container, a malformed answer) is "not healthy"; the
//! checker loop applies the checker's timeout around the whole exchange.

mod http;

use std::{
    io,
    path::{Path, PathBuf},
};

use serde::Deserialize;

use crate::config::is_container_name;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::UnixStream,
};

pub use self::http::HttpError;

/// The largest response read. An inspect document is a few KiB, more with many
/// labels, mounts or environment variables.
pub const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

/// Why a container's state could not be had.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    /// The name would not be a single path segment of the URL (configuration
    /// validates names, so only a direct caller can get this).
    #[error("`{0}` is not a container name or id")]
    InvalidName(String),
    #[error("cannot connect to the Docker daemon at {}: {source}", socket.display())]
    Connect {
        socket: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot talk to the Docker daemon: {0}")]
    Io(#[source] io::Error),
    #[error(transparent)]
    Http(#[from] HttpError),
    #[error("no such container")]
    NoSuchContainer,
    #[error("the Docker daemon answered with HTTP status {0}")]
    Status(u16),
    #[error("the Docker daemon's answer is not a container's state: {0}")]
    Json(#[source] serde_json::Error),
}

/// What the checker reads of a container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerState {
    /// `State.Running`.
    pub running: bool,
    /// `State.Paused`.
    pub paused: bool,
    /// `State.Health.Status` (`starting`, `healthy`, `unhealthy`); `None` when
    /// the container has no health check.
    pub health: Option<String>,
}

impl ContainerState {
    /// Whether the checker passes.
    #[must_use]
    pub fn healthy(&self) -> bool {
        self.running && !self.paused && self.health.as_deref().is_none_or(|h| h == "healthy")
    }
}

/// The check: `container` runs and is healthy, as the daemon at `socket` says.
pub async fn container_healthy(socket: &Path, container: &str) -> bool {
    match inspect(socket, container).await {
        Ok(state) => {
            let healthy = state.healthy();
            if !healthy {
                tracing::debug!(container, ?state, "docker checker: not healthy");
            }
            healthy
        }
        Err(e) => {
            tracing::debug!(container, error = %e, "docker checker: no state");
            false
        }
    }
}

/// Asks the daemon at `socket` for `container`'s state.
pub async fn inspect(socket: &Path, container: &str) -> Result<ContainerState, DockerError> {
    if !is_container_name(container) {
        return Err(DockerError::InvalidName(container.to_owned()));
    }
    let mut stream = UnixStream::connect(socket)
        .await
        .map_err(|source| DockerError::Connect {
            socket: socket.to_path_buf(),
            source,
        })?;
    let request = format!(
        "GET /containers/{container}/json HTTP/1.1\r\nHost: docker\r\nUser-Agent: tandem\r\n\
         Accept: application/json\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(DockerError::Io)?;
    let response = read_response(&mut stream).await?;
    state_from(&response)
}

/// The state in a response to `GET /containers/NAME/json`.
fn state_from(response: &http::Response) -> Result<ContainerState, DockerError> {
    match response.status {
        200 => parse_state(&response.body),
        404 => Err(DockerError::NoSuchContainer),
        other => Err(DockerError::Status(other)),
    }
}

/// Reads until the response is complete (not necessarily until the daemon
/// closes), at most [`MAX_RESPONSE_BYTES`].
async fn read_response(stream: &mut UnixStream) -> Result<http::Response, DockerError> {
    let mut buf = Vec::with_capacity(16 * 1024);
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = stream.read(&mut chunk).await.map_err(DockerError::Io)?;
        if n == 0 {
            return http::parse(&buf, true)?.ok_or(DockerError::Http(HttpError::Truncated));
        }
        if buf.len() + n > MAX_RESPONSE_BYTES {
            return Err(HttpError::TooLarge(MAX_RESPONSE_BYTES).into());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(response) = http::parse(&buf, false)? {
            return Ok(response);
        }
    }
}

/// The parts of an inspect document the checker reads; serde skips the rest.
#[derive(Deserialize)]
struct Inspect {
    #[serde(rename = "State")]
    state: State,
}

#[derive(Deserialize)]
struct State {
    #[serde(rename = "Running")]
    running: bool,
    #[serde(rename = "Paused", default)]
    paused: bool,
    #[serde(rename = "Health", default)]
    health: Option<Health>,
}

#[derive(Deserialize)]
struct Health {
    #[serde(rename = "Status")]
    status: String,
}

/// A container's state from its inspect document (`GET /containers/NAME/json`).
pub fn parse_state(body: &[u8]) -> Result<ContainerState, DockerError> {
    let doc: Inspect = serde_json::from_slice(body).map_err(DockerError::Json)?;
    Ok(ContainerState {
        running: doc.state.running,
        paused: doc.state.paused,
        health: doc.state.health.map(|h| h.status),
    })
}

#[cfg(test)]
mod tests;
