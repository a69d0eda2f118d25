//! Tests of the `docker` checker's keys, with and without the `docker` feature.

use super::*;

/// The full example's `worker` checker, on line 42.
const WORKER: &str = "{ name: worker, process: app-worker, scope: application }";
const WORKER_LINE: u64 = 42;

fn with_worker(f: &Fixture, worker: &str) -> String {
    f.full().replace(WORKER, worker)
}

#[cfg(feature = "docker")]
#[test]
fn docker_checkers_name_a_container_and_a_socket() {
    let f = Fixture::new();
    let kind = |text: &str| {
        f.parse(text)
            .expect("valid")
            .application
            .expect("application")
            .checkers[2]
            .kind
            .clone()
    };
    assert_eq!(
        kind(&f.full_with_docker()),
        CheckerKind::Docker {
            container: "app-worker-1".into(),
            socket: PathBuf::from("/run/docker.sock"),
        }
    );
    // The socket defaults to dockerd's; ids (full or short) are names too.
    for container in ["tandem-pg", "pg_db.1", "4f0a9c2e1b3d", &"ab12".repeat(16)] {
        let text = with_worker(&f, &format!("{{ name: worker, docker: {container} }}"));
        assert_eq!(
            kind(&text),
            CheckerKind::Docker {
                container: container.to_owned(),
                socket: PathBuf::from(DEFAULT_DOCKER_SOCKET),
            }
        );
    }
}

#[cfg(feature = "docker")]
#[test]
fn docker_keys_are_checked() {
    let f = Fixture::new();
    let key = "application.checkers[2].docker";
    let socket_key = "application.checkers[2].docker_socket";
    let cases: &[(&str, &str, &str)] = &[
        (
            "{ name: worker, docker: /tandem-pg }",
            key,
            "is not a container name or id",
        ),
        (
            "{ name: worker, docker: \"a b\" }",
            key,
            "is not a container name or id",
        ),
        (
            "{ name: worker, docker: a/b }",
            key,
            "starting with a letter or digit",
        ),
        (
            "{ name: worker, docker: -pg }",
            key,
            "is not a container name or id",
        ),
        (
            "{ name: worker, docker: \"\" }",
            key,
            "is not a container name or id",
        ),
        (
            "{ name: worker, docker: pg, docker_socket: docker.sock }",
            socket_key,
            "must be an absolute path",
        ),
        (
            "{ name: worker, docker: pg, docker_socket: /run/../docker.sock }",
            socket_key,
            "must not contain `..`",
        ),
        (
            "{ name: worker, process: app-worker, docker_socket: /run/docker.sock }",
            socket_key,
            "is only for a `docker` checker",
        ),
        (
            "{ name: worker, process: app-worker, docker: pg }",
            key,
            "this one also has `process`",
        ),
    ];
    for (worker, key, says) in cases {
        let e = f.errors(&with_worker(&f, worker));
        assert_eq!(e.len(), 1, "{worker}: {e:#?}");
        let err = only(&e, key);
        assert_eq!(err.line, Some(WORKER_LINE), "{err}");
        assert!(err.message.contains(says), "{worker}: {err}");
    }
    let long = with_worker(
        &f,
        &format!("{{ name: worker, docker: {} }}", "a".repeat(256)),
    );
    assert!(only(&f.errors(&long), key).message.contains("1 to 255"));
    let long_socket = with_worker(
        &f,
        &format!(
            "{{ name: worker, docker: pg, docker_socket: /{} }}",
            "s".repeat(120)
        ),
    );
    let e = f.errors(&long_socket);
    assert!(
        only(&e, socket_key).message.contains("Unix socket path"),
        "{e:#?}"
    );
}

/// A binary built without the feature reads the keys (no "unknown field") and
/// rejects the checker with one line that names the feature.
#[cfg(not(feature = "docker"))]
#[test]
fn without_the_feature_a_docker_checker_is_one_clear_error() {
    let f = Fixture::new();
    for worker in [
        "{ name: worker, docker: app-worker-1, docker_socket: /run/docker.sock }",
        "{ name: worker, docker: /bad name, docker_socket: relative }",
    ] {
        let e = f.errors(&with_worker(&f, worker));
        assert_eq!(e.len(), 1, "{worker}: {e:#?}");
        let err = only(&e, "application.checkers[2].docker");
        assert_eq!(err.line, Some(WORKER_LINE), "{err}");
        assert!(
            err.message.contains("built without the `docker` feature"),
            "{err}"
        );
        assert!(!err.to_string().contains('\n'), "{err}");
    }
}
