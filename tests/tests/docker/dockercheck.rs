//! The `docker` checker against the real daemon: a container whose health check
//! tests a file in a bind-mounted directory, so the test flips its health from
//! the host, and a container without a health check, paused and resumed. The
//! checker must follow: not healthy while `starting` or `unhealthy`, healthy once
//! `healthy`, not healthy when paused, and not healthy once the container is gone.

use std::{
    fs,
    path::Path,
    time::{Duration, Instant},
};

use tandem::{
    config::DEFAULT_DOCKER_SOCKET,
    runtime::docker::{ContainerState, DockerError, container_healthy, inspect},
};

use crate::{ContainerName, Image, docker, docker_ok, serial};

/// How long Docker may take to run a health check and record its result.
const FLIP: Duration = Duration::from_secs(30);

/// The checker's verdict, polled until it is `want` (at most [`FLIP`]).
async fn wait_for(name: &str, want: bool, why: &str) {
    let socket = Path::new(DEFAULT_DOCKER_SOCKET);
    let start = Instant::now();
    loop {
        if container_healthy(socket, name).await == want {
            eprintln!("{why}: {want} after {:?}", start.elapsed());
            return;
        }
        assert!(
            start.elapsed() < FLIP,
            "{why}: the checker did not say {want} within {FLIP:?}; last state {:?}",
            inspect(socket, name).await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Runs `body` on a runtime of its own while the Docker tests' lock is held.
fn with_docker<F: Future<Output = ()>>(body: impl FnOnce(Image) -> F) {
    let Some(_serial) = serial() else { return };
    let image = Image::build();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(body(image));
}

#[test]
fn dockercheck_follows_the_containers_health_and_its_removal() {
    with_docker(follows_health_and_removal);
}

#[test]
fn dockercheck_without_a_health_check_needs_a_running_unpaused_container() {
    with_docker(without_health_check);
}

async fn follows_health_and_removal(image: Image) {
    let dir = tempfile::tempdir().expect("tempdir");
    let flag = dir.path().join("ok");
    let name = ContainerName::of_kind("test-dockercheck");
    let volume = format!("{}:/data", dir.path().display());
    docker_ok(&[
        "run",
        "-d",
        "--name",
        &name.0,
        "-v",
        &volume,
        "--health-cmd",
        "test -f /data/ok",
        "--health-interval",
        "1s",
        "--health-timeout",
        "5s",
        "--health-retries",
        "1",
        &image.tag,
        "/bin/sleep",
        "600",
    ]);
    // Before its first health check the container is `starting`, which is not
    // healthy; with no flag file the check fails and it becomes `unhealthy`.
    let socket = Path::new(DEFAULT_DOCKER_SOCKET);
    let first = inspect(socket, &name.0)
        .await
        .expect("state of a running container");
    assert!(first.running, "{first:?}");
    assert!(
        matches!(first.health.as_deref(), Some("starting" | "unhealthy")),
        "{first:?}"
    );
    assert!(!first.healthy());
    let start = Instant::now();
    while docker_ok(&["inspect", "--format", "{{.State.Health.Status}}", &name.0]) != "unhealthy" {
        assert!(
            start.elapsed() < FLIP,
            "the container never became unhealthy"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(!container_healthy(socket, &name.0).await);

    fs::write(&flag, b"").expect("flag");
    wait_for(&name.0, true, "flag written").await;
    fs::remove_file(&flag).expect("rm flag");
    wait_for(&name.0, false, "flag removed").await;
    fs::write(&flag, b"").expect("flag");
    wait_for(&name.0, true, "flag written again").await;

    assert!(docker(&["rm", "-f", &name.0]).status.success());
    assert!(!container_healthy(socket, &name.0).await);
    let gone = inspect(socket, &name.0).await;
    assert!(
        matches!(gone, Err(DockerError::NoSuchContainer)),
        "{gone:?}"
    );
}

async fn without_health_check(image: Image) {
    let name = ContainerName::of_kind("test-dockercheck");
    docker_ok(&[
        "run",
        "-d",
        "--name",
        &name.0,
        &image.tag,
        "/bin/sleep",
        "600",
    ]);
    let socket = Path::new(DEFAULT_DOCKER_SOCKET);
    let running = inspect(socket, &name.0).await.expect("state");
    assert_eq!(
        running,
        ContainerState {
            running: true,
            paused: false,
            health: None
        }
    );
    assert!(container_healthy(socket, &name.0).await);
    // By id as well as by name.
    let id = docker_ok(&["inspect", "--format", "{{.Id}}", &name.0]);
    assert!(container_healthy(socket, &id).await);
    assert!(container_healthy(socket, &id[..12]).await);

    docker_ok(&["pause", &name.0]);
    assert!(!container_healthy(socket, &name.0).await);
    docker_ok(&["unpause", &name.0]);
    assert!(container_healthy(socket, &name.0).await);

    docker_ok(&["stop", "--time", "1", &name.0]);
    let stopped = inspect(socket, &name.0).await.expect("state");
    assert!(!stopped.running, "{stopped:?}");
    assert!(!container_healthy(socket, &name.0).await);
}
