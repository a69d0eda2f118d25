//! Tests of the `docker` checker's client: responses captured from Docker 20.10
//! (in `testdata/`, chunked as dockerd sends them), hand-written states, and a
//! fake daemon on a unix socket for the exchange itself.

use std::time::Duration;

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::UnixListener,
};

use super::*;

const HEALTHY: &[u8] = include_bytes!("testdata/inspect-healthy.http");
const UNHEALTHY: &[u8] = include_bytes!("testdata/inspect-unhealthy.http");
const EXITED: &[u8] = include_bytes!("testdata/inspect-exited.http");

fn state_of(raw: &[u8]) -> Result<ContainerState, DockerError> {
    let response = http::parse(raw, true)?.ok_or(HttpError::Truncated)?;
    state_from(&response)
}

fn state_json(state: &str) -> Result<ContainerState, DockerError> {
    parse_state(format!(r#"{{"Id":"abc","State":{state},"Name":"/x"}}"#).as_bytes())
}

#[test]
fn captured_answers_of_docker_20_10() {
    let healthy = state_of(HEALTHY).expect("healthy");
    assert_eq!(
        healthy,
        ContainerState {
            running: true,
            paused: false,
            health: Some("healthy".into())
        }
    );
    assert!(healthy.healthy());
    let unhealthy = state_of(UNHEALTHY).expect("unhealthy");
    assert_eq!(
        (unhealthy.running, unhealthy.health.as_deref()),
        (true, Some("unhealthy"))
    );
    assert!(!unhealthy.healthy());
    let exited = state_of(EXITED).expect("exited");
    assert!(!exited.running);
    assert!(!exited.healthy());
}

#[test]
fn healthy_means_running_unpaused_and_healthy_if_checked() {
    let cases = [
        (r#"{"Running":true,"Health":{"Status":"healthy"}}"#, true),
        (r#"{"Running":true,"Health":{"Status":"starting"}}"#, false),
        (r#"{"Running":true,"Health":{"Status":"unhealthy"}}"#, false),
        (r#"{"Running":false,"Health":{"Status":"healthy"}}"#, false),
        // No health check: running is enough.
        (r#"{"Running":true,"Paused":false}"#, true),
        (r#"{"Running":true,"Health":null}"#, true),
        (r#"{"Running":false}"#, false),
        // Docker pauses the health check with the container.
        (
            r#"{"Running":true,"Paused":true,"Health":{"Status":"healthy"}}"#,
            false,
        ),
    ];
    for (state, healthy) in cases {
        let s = state_json(state).unwrap_or_else(|e| panic!("{state}: {e}"));
        assert_eq!(s.healthy(), healthy, "{state}");
    }
}

#[test]
fn garbage_is_an_error() {
    for body in [
        &b""[..],
        b"not json",
        b"[]",
        b"{}",
        br#"{"State":{}}"#,
        br#"{"State":{"Running":"yes"}}"#,
        br#"{"State":{"Running":true,"Health":{"Status":3}}}"#,
        b"\xff\xfe",
    ] {
        assert!(
            matches!(parse_state(body), Err(DockerError::Json(_))),
            "{}",
            String::from_utf8_lossy(body)
        );
    }
    let not_found =
        b"HTTP/1.1 404 Not Found\r\nContent-Length: 42\r\n\r\n{\"message\":\"No such container: nonexist\"}\n";
    assert!(matches!(
        state_of(not_found),
        Err(DockerError::NoSuchContainer)
    ));
    let error = b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 2\r\n\r\n{}";
    assert!(matches!(state_of(error), Err(DockerError::Status(500))));
}

/// A fake daemon answering one connection with `answer`, written in pieces of
/// `piece` bytes, and keeping the connection open for `linger` afterwards.
/// Returns the request it read.
fn serve(
    listener: UnixListener,
    answer: Vec<u8>,
    piece: usize,
    linger: Duration,
) -> tokio::task::JoinHandle<String> {
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.expect("accept");
        let mut request = Vec::new();
        let mut b = [0u8; 1024];
        while !request.ends_with(b"\r\n\r\n") {
            let n = s.read(&mut b).await.expect("read request");
            if n == 0 {
                break;
            }
            request.extend_from_slice(&b[..n]);
        }
        for part in answer.chunks(piece.max(1)) {
            if s.write_all(part).await.is_err() {
                break;
            }
            tokio::task::yield_now().await;
        }
        tokio::time::sleep(linger).await;
        String::from_utf8_lossy(&request).into_owned()
    })
}

#[tokio::test]
async fn the_exchange_with_a_daemon() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sock = dir.path().join("docker.sock");

    // A chunked answer arriving in small pieces.
    let listener = UnixListener::bind(&sock).expect("bind");
    let server = serve(listener, HEALTHY.to_vec(), 7, Duration::ZERO);
    assert!(container_healthy(&sock, "tandem-pg").await);
    let request = server.await.expect("server");
    assert!(
        request.starts_with("GET /containers/tandem-pg/json HTTP/1.1\r\n"),
        "{request}"
    );
    assert!(request.contains("\r\nConnection: close\r\n"), "{request}");
    assert!(request.contains("\r\nHost: docker\r\n"), "{request}");

    // A complete answer is used at once, even if the daemon keeps the connection.
    std::fs::remove_file(&sock).expect("rm");
    let listener = UnixListener::bind(&sock).expect("bind");
    let server = serve(listener, UNHEALTHY.to_vec(), 4096, Duration::from_secs(30));
    let state = tokio::time::timeout(Duration::from_secs(5), inspect(&sock, "abc123"))
        .await
        .expect("no wait for the close")
        .expect("state");
    assert_eq!(state.health.as_deref(), Some("unhealthy"));
    server.abort();

    // An answer beyond the bound is refused without reading all of it.
    std::fs::remove_file(&sock).expect("rm");
    let listener = UnixListener::bind(&sock).expect("bind");
    let mut huge = b"HTTP/1.1 200 OK\r\nContent-Length: 4194304\r\n\r\n".to_vec();
    huge.resize(huge.len() + 4 * 1024 * 1024, b' ');
    let server = serve(listener, huge, 64 * 1024, Duration::ZERO);
    let e = inspect(&sock, "c").await.expect_err("too large");
    assert!(
        matches!(
            e,
            DockerError::Http(HttpError::TooLarge(MAX_RESPONSE_BYTES))
        ),
        "{e}"
    );
    server.abort();

    // A daemon that hangs up early.
    std::fs::remove_file(&sock).expect("rm");
    let listener = UnixListener::bind(&sock).expect("bind");
    let server = serve(
        listener,
        HEALTHY[..HEALTHY.len() / 2].to_vec(),
        4096,
        Duration::ZERO,
    );
    let e = inspect(&sock, "c").await.expect_err("truncated");
    assert!(matches!(e, DockerError::Http(HttpError::Truncated)), "{e}");
    server.await.expect("server");

    // Nobody listening, or no socket at all.
    std::fs::remove_file(&sock).expect("rm");
    let e = inspect(&sock, "c").await.expect_err("no socket");
    assert!(matches!(e, DockerError::Connect { .. }), "{e}");
    assert!(e.to_string().contains(&sock.display().to_string()), "{e}");
    assert!(!container_healthy(&sock, "c").await);
}

#[tokio::test]
async fn names_that_are_not_one_path_segment_are_refused_before_connecting() {
    let nowhere = Path::new("/nonexistent/docker.sock");
    for name in [
        "",
        "a/b",
        "../x",
        "a b",
        "-a",
        ".a",
        "a?b",
        "a%2F",
        "a\r\nHost: x",
    ] {
        let e = inspect(nowhere, name).await.expect_err(name);
        assert!(matches!(e, DockerError::InvalidName(_)), "{name}: {e}");
    }
}
