//! Tests of reading and validating configuration files.

use std::{
    collections::BTreeSet,
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    time::Duration,
};

use std::os::unix::fs::PermissionsExt;

use super::*;

/// The argon2id hash of "correct horse battery staple" (tandem console
/// hash-password).
const PASSWORD_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$C0DOmAzuXM2yTnoQ2bqa3A$Ho9wbd+VijFSWPeKkOrqQL0FJPRv4OslG3UFq3p75PM";

/// A directory with readable certificate and key files, and a full example.
struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        for name in ["node1.crt", "node1.key", "node2.crt"] {
            std::fs::write(dir.path().join(name), "-----BEGIN TEST-----\n").expect("write");
        }
        std::fs::write(
            dir.path().join("hb.secret"),
            "correct horse battery staple\n",
        )
        .expect("write");
        let token = dir.path().join("console.token");
        std::fs::write(&token, "0123456789abcdef0123456789abcdef\n").expect("write");
        std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        Self { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn origin(&self) -> PathBuf {
        self.path("tandem.yaml")
    }

    /// Every key of the schema (with a certificate pin). The tests below refer to
    /// its line numbers.
    fn full(&self) -> String {
        format!(
            "\
node: node1
listen: 10.213.7.11:7400
identity:
  certificate: {crt}
  key: {key}
peer:
  name: node2
  address: 10.213.7.12:7400
  certificate: {peer}
state_dir: /var/lib/tandem/app
control_socket: /run/tandem/app.sock
role: primary
replicated:
  - name: data
    path: /srv/app/data
  - {{ name: logs, path: /srv/app/logs }}
heartbeat:
  interval: 200ms
  timeout: 2s
  secret_file: {secret}
  networks:
    - name: lan
      local: 10.213.7.11:7401
      peer: 10.213.7.12:7401
    - {{ name: direct, local: \"[fd00::1]:7401\", peer: \"[fd00::2]:7401\" }}
resync:
  block_size: 131072
application:
  start: systemctl start app
  stop: systemctl stop app
  timeout: 1m
  max_restarts: 5
  restart_window: 30m
  checkers:
    - name: web
      tcp: 127.0.0.1:8080
      interval: 2s
      timeout: 500ms
      failures: 4
      action: failover
    - {{ name: db, command: pg_isready -q, action: restart }}
    - {{ name: worker, process: app-worker, scope: application }}
vip:
  address: 10.213.7.50/24
  interface: eth0
  announce_count: 3
  announce_interval: 100ms
  refresh: 30s
  probe_wait: 300ms
failover:
  preferred: node2
  boot_wait: 5s
  witnesses: [10.213.7.1, 10.213.7.2]
metrics:
  listen: 127.0.0.1:9400
console:
  listen: 127.0.0.1:7480
  password_hash: \"{hash}\"
  token_file: {token}
  test_hooks: false
",
            hash = PASSWORD_HASH,
            token = self.path("console.token").display(),
            crt = self.path("node1.crt").display(),
            key = self.path("node1.key").display(),
            peer = self.path("node2.crt").display(),
            secret = self.path("hb.secret").display(),
        )
    }

    /// The same with a fingerprint pin.
    fn full_with_fingerprint(&self) -> String {
        let peer = format!("  certificate: {}\n", self.path("node2.crt").display());
        self.full().replace(
            &peer,
            &format!("  fingerprint: sha256:{}\n", "AB".repeat(32)),
        )
    }

    /// The same with the `worker` checker asking Docker (on the same line, so
    /// that line numbers do not move).
    fn full_with_docker(&self) -> String {
        self.full().replace(
            "{ name: worker, process: app-worker, scope: application }",
            "{ name: worker, docker: app-worker-1, docker_socket: /run/docker.sock, scope: application }",
        )
    }

    /// Only the required keys; identity paths relative to the file.
    fn minimal(&self) -> String {
        "\
node: node1
listen: 10.213.7.11:7400
identity: { certificate: node1.crt, key: node1.key }
peer: { name: node2, address: 10.213.7.12:7400, certificate: node2.crt }
state_dir: /var/lib/tandem/app
replicated:
  - { name: data, path: /srv/app/data }
"
        .to_owned()
    }

    fn parse(&self, text: &str) -> Result<Config, ConfigErrors> {
        Config::parse(text, &self.origin())
    }

    fn errors(&self, text: &str) -> Vec<ConfigError> {
        match self.parse(text) {
            Ok(c) => panic!("expected errors, got {c:#?}"),
            Err(e) => e.0,
        }
    }

    /// The errors for `text` with `from` replaced by `to` (which must occur).
    fn errors_with(&self, base: &str, from: &str, to: &str) -> Vec<ConfigError> {
        assert!(base.contains(from), "{from:?} not in the example");
        self.errors(&base.replacen(from, to, 1))
    }
}

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("socket address")
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("IP address")
}

/// The single error for `key`, with its position checked to be known.
fn only<'e>(errors: &'e [ConfigError], key: &str) -> &'e ConfigError {
    let matching: Vec<&ConfigError> = errors.iter().filter(|e| e.key == key).collect();
    assert_eq!(matching.len(), 1, "errors for {key}: {errors:#?}");
    matching[0]
}

#[test]
fn full_example_is_typed() {
    let f = Fixture::new();
    let c = f.parse(&f.full()).expect("valid");
    assert_eq!(c.node, "node1");
    assert_eq!(
        c.listen,
        "10.213.7.11:7400".parse::<SocketAddr>().expect("addr")
    );
    assert_eq!(c.identity.certificate, f.path("node1.crt"));
    assert_eq!(c.identity.key, f.path("node1.key"));
    assert_eq!(c.peer.name, "node2");
    assert_eq!(
        c.peer.address,
        "10.213.7.12:7400".parse::<SocketAddr>().expect("addr")
    );
    assert_eq!(c.peer.pin, PeerPinSpec::Certificate(f.path("node2.crt")));
    assert_eq!(c.state_dir, Path::new("/var/lib/tandem/app"));
    assert_eq!(c.control_socket, Path::new("/run/tandem/app.sock"));
    assert_eq!(c.role, Role::Primary);
    assert_eq!(
        c.replicated,
        [
            Replicated {
                name: "data".into(),
                path: "/srv/app/data".into()
            },
            Replicated {
                name: "logs".into(),
                path: "/srv/app/logs".into()
            },
        ]
    );
    assert_eq!(c.heartbeat.interval, Duration::from_millis(200));
    assert_eq!(c.heartbeat.timeout, Duration::from_secs(2));
    assert_eq!(c.resync.block_size, 131_072);
    assert_eq!(c.heartbeat.secret_file, Some(f.path("hb.secret")));
    assert_eq!(
        c.heartbeat.networks,
        [
            HeartbeatNetwork {
                name: "lan".into(),
                local: addr("10.213.7.11:7401"),
                peer: addr("10.213.7.12:7401"),
            },
            HeartbeatNetwork {
                name: "direct".into(),
                local: addr("[fd00::1]:7401"),
                peer: addr("[fd00::2]:7401"),
            },
        ]
    );
    assert_eq!(c.resync.block_size, 131_072);
    let app = c.application.expect("application");
    assert_eq!(app.start, "systemctl start app");
    assert_eq!(app.stop, "systemctl stop app");
    assert_eq!(app.timeout, Duration::from_secs(60));
    assert_eq!(app.max_restarts, 5);
    assert_eq!(app.restart_window, Duration::from_secs(30 * 60));
    assert_eq!(
        app.checkers,
        [
            Checker {
                name: "web".into(),
                scope: CheckerScope::Application,
                kind: CheckerKind::Tcp(addr("127.0.0.1:8080")),
                interval: Duration::from_secs(2),
                timeout: Duration::from_millis(500),
                failures: 4,
                action: CheckerAction::Failover,
            },
            Checker {
                name: "db".into(),
                scope: CheckerScope::Application,
                kind: CheckerKind::Command("pg_isready -q".into()),
                interval: DEFAULT_CHECK_INTERVAL,
                timeout: DEFAULT_CHECK_INTERVAL,
                failures: DEFAULT_CHECK_FAILURES,
                action: CheckerAction::Restart,
            },
            Checker {
                name: "worker".into(),
                scope: CheckerScope::Application,
                kind: CheckerKind::Process("app-worker".into()),
                interval: DEFAULT_CHECK_INTERVAL,
                timeout: DEFAULT_CHECK_INTERVAL,
                failures: DEFAULT_CHECK_FAILURES,
                action: CheckerAction::Restart,
            },
        ]
    );
    assert_eq!(
        c.vip,
        Some(Vip {
            address: ip("10.213.7.50"),
            prefix_len: 24,
            interface: "eth0".into(),
            announce_count: 3,
            announce_interval: Duration::from_millis(100),
            refresh: Some(Duration::from_secs(30)),
            probe_wait: Duration::from_millis(300),
        })
    );
    assert_eq!(
        c.failover,
        Failover {
            preferred: Some("node2".into()),
            boot_wait: Duration::from_secs(5),
            witnesses: vec![ip("10.213.7.1"), ip("10.213.7.2")],
        }
    );
    assert_eq!(
        c.metrics,
        Some(Metrics {
            listen: addr("127.0.0.1:9400")
        })
    );
}

#[test]
fn minimal_example_gets_defaults_and_relative_paths() {
    let f = Fixture::new();
    let c = f.parse(&f.minimal()).expect("valid");
    assert_eq!(c.identity.certificate, f.path("node1.crt"));
    assert_eq!(c.peer.pin, PeerPinSpec::Certificate(f.path("node2.crt")));
    assert_eq!(
        c.control_socket,
        Path::new("/var/lib/tandem/app/control.sock")
    );
    assert_eq!(c.role, Role::Auto);
    assert_eq!(c.heartbeat.interval, DEFAULT_HEARTBEAT_INTERVAL);
    assert_eq!(c.heartbeat.timeout, DEFAULT_HEARTBEAT_TIMEOUT);
    assert_eq!(c.heartbeat.secret_file, None);
    assert_eq!(
        c.heartbeat.networks,
        [HeartbeatNetwork {
            name: DEFAULT_HEARTBEAT_NETWORK.into(),
            local: addr("10.213.7.11:7401"),
            peer: addr("10.213.7.12:7401"),
        }]
    );
    assert_eq!(c.resync.block_size, DEFAULT_BLOCK_SIZE);
    assert_eq!(c.application, None);
    assert_eq!(c.vip, None);
    assert_eq!(
        c.failover,
        Failover {
            preferred: None,
            boot_wait: DEFAULT_BOOT_WAIT,
            witnesses: Vec::new(),
        }
    );
    // Metrics are served only when asked for.
    assert_eq!(c.metrics, None);
    // An application with only its commands gets the restart defaults.
    let c = f
        .parse(&format!(
            "{}application: {{ start: a, stop: b }}\n",
            f.minimal()
        ))
        .expect("valid");
    let app = c.application.expect("application");
    assert_eq!(app.timeout, DEFAULT_APPLICATION_TIMEOUT);
    assert_eq!(app.max_restarts, DEFAULT_MAX_RESTARTS);
    assert_eq!(app.restart_window, DEFAULT_RESTART_WINDOW);
    assert_eq!(app.checkers, []);
    // A VIP with only its required keys gets the announce defaults.
    let c = f
        .parse(&format!(
            "{}vip: {{ address: \"fd00::50/64\", interface: bond0.12 }}\n",
            f.minimal()
        ))
        .expect("valid");
    let vip = c.vip.expect("vip");
    assert_eq!((vip.address, vip.prefix_len), (ip("fd00::50"), 64));
    assert_eq!(vip.interface, "bond0.12");
    assert_eq!(vip.announce_count, DEFAULT_ANNOUNCE_COUNT);
    assert_eq!(vip.announce_interval, DEFAULT_ANNOUNCE_INTERVAL);
    assert_eq!(vip.refresh, None);
    assert_eq!(vip.probe_wait, DEFAULT_PROBE_WAIT);
}

#[test]
fn fingerprint_pin_is_normalised() {
    let f = Fixture::new();
    let c = f.parse(&f.full_with_fingerprint()).expect("valid");
    assert_eq!(c.peer.pin, PeerPinSpec::Fingerprint("ab".repeat(32)));
    assert_eq!(c.peer.pin.sha256(), Some([0xab; 32]));
    let e = f.errors_with(&f.full_with_fingerprint(), "sha256:AB", "sha1:AB");
    assert_eq!(only(&e, "peer.fingerprint").line, Some(9));
    let e = f.errors_with(&f.full_with_fingerprint(), "sha256:AB", "sha256:XY");
    assert!(
        only(&e, "peer.fingerprint")
            .message
            .contains("64 hex digits")
    );
}

#[test]
fn unknown_key_is_rejected_with_its_line() {
    let f = Fixture::new();
    let e = f.errors_with(&f.full(), "  address: 10.213.7.12", "  adress: 10.213.7.12");
    assert_eq!(e.len(), 1, "{e:#?}");
    assert_eq!(e[0].line, Some(8));
    assert_eq!(e[0].column, Some(3));
    assert_eq!(e[0].key, "peer.adress");
    assert!(e[0].message.contains("adress"), "{}", e[0].message);

    let e = f.errors(&format!("{}colour: blue\n", f.minimal()));
    assert_eq!(e.len(), 1, "{e:#?}");
    assert_eq!((e[0].line, e[0].key.as_str()), (Some(8), "colour"));
}

#[test]
fn syntax_and_shape_errors_have_positions() {
    let f = Fixture::new();
    let e = f.errors_with(
        &f.minimal(),
        "state_dir: /var/lib/tandem/app",
        "state_dir: [a, b]",
    );
    assert_eq!(
        (e[0].line, e[0].key.as_str()),
        (Some(5), "state_dir"),
        "{e:#?}"
    );
    let e = f.errors_with(&f.minimal(), "node: node1", "node: \"node1");
    assert!(e[0].line.is_some(), "{e:#?}");
}

#[test]
fn several_errors_are_reported_at_once_with_positions() {
    let f = Fixture::new();
    let text = f
        .full()
        .replace("node: node1", "node: Node_1")
        .replace("listen: 10.213.7.11:7400", "listen: nowhere")
        .replace("interval: 200ms", "interval: 200")
        .replace("block_size: 131072", "block_size: 5000")
        .replace("role: primary", "role: leader");
    let e = f.errors(&text);
    let expected = [
        ("node", 1, 7),
        ("listen", 2, 9),
        ("role", 12, 7),
        ("heartbeat.interval", 18, 13),
        ("resync.block_size", 27, 15),
    ];
    assert_eq!(e.len(), expected.len(), "{e:#?}");
    for (key, line, column) in expected {
        let err = only(&e, key);
        assert_eq!((err.line, err.column), (Some(line), Some(column)), "{err}");
    }
    // One line per error, each naming the file, position and key.
    let shown = ConfigErrors(e).to_string();
    let lines: Vec<&str> = shown.lines().collect();
    assert_eq!(lines.len(), expected.len());
    let origin = f.origin().display().to_string();
    assert!(
        lines[0].starts_with(&format!("{origin}:1:7: node: ")),
        "{}",
        lines[0]
    );
    assert!(
        lines[1].starts_with(&format!("{origin}:2:9: listen: ")),
        "{}",
        lines[1]
    );
}

#[test]
fn missing_required_keys_are_all_reported() {
    let f = Fixture::new();
    let e = f.errors("");
    let keys: Vec<&str> = e.iter().map(|e| e.key.as_str()).collect();
    for key in [
        "node",
        "listen",
        "identity",
        "peer",
        "state_dir",
        "replicated",
    ] {
        assert!(keys.contains(&key), "{key} missing from {keys:?}");
    }
    let e = f.errors_with(&f.full(), "  name: node2\n", "");
    assert_eq!(
        only(&e, "peer.name").line,
        Some(7),
        "placed at the peer mapping"
    );
}

#[test]
fn missing_files_are_reported() {
    let f = Fixture::new();
    std::fs::remove_file(f.path("node1.key")).expect("rm");
    std::fs::remove_file(f.path("node2.crt")).expect("rm");
    let e = f.errors(&f.full());
    assert_eq!(e.len(), 2, "{e:#?}");
    let key = only(&e, "identity.key");
    assert_eq!(key.line, Some(5));
    assert!(key.message.contains("cannot read"), "{}", key.message);
    assert_eq!(only(&e, "peer.certificate").line, Some(9));
    let dir = f.path("");
    let e = f.errors_with(
        &f.full(),
        &f.path("node1.crt").display().to_string(),
        &dir.display().to_string(),
    );
    assert!(
        only(&e, "identity.certificate")
            .message
            .contains("not a regular file")
    );
}

#[test]
fn peer_must_differ_from_this_node() {
    let f = Fixture::new();
    let e = f.errors_with(&f.full(), "name: node2", "name: node1");
    assert!(only(&e, "peer.name").message.contains("differ"));
    let e = f.errors_with(
        &f.full(),
        "address: 10.213.7.12:7400",
        "address: 10.213.7.11:7400",
    );
    assert!(only(&e, "peer.address").message.contains("differ"));
    let e = f.errors_with(
        &f.full(),
        "address: 10.213.7.12:7400",
        "address: 0.0.0.0:7400",
    );
    only(&e, "peer.address");
    let e = f.errors_with(
        &f.full(),
        "listen: 10.213.7.11:7400",
        "listen: 10.213.7.11:0",
    );
    only(&e, "listen");
}

#[test]
fn exactly_one_peer_pin() {
    let f = Fixture::new();
    let both = f.full().replace(
        "state_dir:",
        &format!("  fingerprint: sha256:{}\nstate_dir:", "0".repeat(64)),
    );
    let e = f.errors(&both);
    assert!(only(&e, "peer.fingerprint").message.contains("not both"));
    let crt = format!("  certificate: {}\n", f.path("node2.crt").display());
    let e = f.errors_with(&f.full(), &crt, "");
    let err = only(&e, "peer");
    assert_eq!(err.line, Some(7));
}

#[test]
fn replicated_directories_are_unique_and_disjoint() {
    let f = Fixture::new();
    let e = f.errors_with(&f.full(), "name: logs", "name: data");
    assert!(
        only(&e, "replicated[1].name")
            .message
            .contains("replicated[0]")
    );
    for (path, relation) in [
        ("/srv/app/data/logs", "is inside"),
        ("/srv/app", "contains"),
        ("/srv/app/./data/", "is the same directory as"),
    ] {
        let e = f.errors_with(&f.full(), "path: /srv/app/logs", &format!("path: {path}"));
        let err = only(&e, "replicated[1].path");
        assert!(err.message.contains(relation), "{path}: {}", err.message);
        assert_eq!(err.line, Some(16));
    }
    let e = f.errors_with(&f.full(), "path: /srv/app/logs", "path: srv/logs");
    assert!(only(&e, "replicated[1].path").message.contains("absolute"));
    let e = f.errors_with(&f.full(), "path: /srv/app/logs", "path: /srv/app/../logs");
    only(&e, "replicated[1].path");
    let e = f.errors_with(&f.full(), "name: logs", "name: my logs");
    only(&e, "replicated[1].name");
    let e = f.errors_with(
        &f.minimal(),
        "  - { name: data, path: /srv/app/data }\n",
        "",
    );
    only(&e, "replicated");
}

#[test]
fn agent_files_stay_outside_replicated_directories() {
    let f = Fixture::new();
    let e = f.errors_with(
        &f.full(),
        "state_dir: /var/lib/tandem/app",
        "state_dir: /srv/app/data/state",
    );
    assert_eq!(only(&e, "state_dir").line, Some(10));
    let e = f.errors_with(
        &f.full(),
        "state_dir: /var/lib/tandem/app",
        "state_dir: /srv",
    );
    assert_eq!(e.len(), 2, "contains both directories: {e:#?}");
    let e = f.errors_with(
        &f.full(),
        "control_socket: /run/tandem/app.sock",
        "control_socket: /srv/app/logs/c.sock",
    );
    assert_eq!(only(&e, "control_socket").line, Some(11));
    let long = format!("control_socket: /run/{}.sock", "x".repeat(120));
    let e = f.errors_with(&f.full(), "control_socket: /run/tandem/app.sock", &long);
    assert!(only(&e, "control_socket").message.contains("107"));
}

#[test]
fn heartbeat_timeout_exceeds_three_intervals() {
    let f = Fixture::new();
    let e = f.errors_with(&f.full(), "timeout: 2s", "timeout: 600ms");
    let err = only(&e, "heartbeat.timeout");
    assert_eq!(err.line, Some(19));
    assert!(err.message.contains("3 x"), "{}", err.message);
    f.parse(&f.full().replace("timeout: 2s", "timeout: 601ms"))
        .expect("just above 3 x");
    let e = f.errors_with(&f.full(), "interval: 200ms", "interval: 0ms");
    only(&e, "heartbeat.interval");
    // Only an interval: the default timeout (1 s) must still exceed 3 x interval.
    let e = f.errors(&format!(
        "{}heartbeat: {{ interval: 500ms }}\n",
        f.minimal()
    ));
    only(&e, "heartbeat.timeout");
}

#[test]
fn durations_are_parsed_or_rejected_in_place() {
    let f = Fixture::new();
    for bad in ["30", "1.5s", "3d", "s"] {
        let e = f.errors_with(&f.full(), "timeout: 1m", &format!("timeout: {bad}"));
        assert_eq!(only(&e, "application.timeout").line, Some(31), "{bad}");
    }
    let c = f
        .parse(&f.full().replace("timeout: 1m", "timeout: 1m30s"))
        .expect("valid");
    assert_eq!(
        c.application.map(|a| a.timeout),
        Some(Duration::from_secs(90))
    );
}

#[test]
fn block_size_is_a_power_of_two_in_range() {
    let f = Fixture::new();
    for good in ["4096", "16777216"] {
        f.parse(
            &f.full()
                .replace("block_size: 131072", &format!("block_size: {good}")),
        )
        .expect(good);
    }
    for bad in ["2048", "33554432", "65537", "64KiB", "-4096"] {
        let e = f.errors_with(
            &f.full(),
            "block_size: 131072",
            &format!("block_size: {bad}"),
        );
        only(&e, "resync.block_size");
    }
}

#[test]
fn application_commands_are_required_when_present() {
    let f = Fixture::new();
    let e = f.errors_with(&f.full(), "  stop: systemctl stop app\n", "");
    assert_eq!(only(&e, "application.stop").line, Some(29));
    let e = f.errors_with(&f.full(), "start: systemctl start app", "start: \"  \"");
    only(&e, "application.start");
}

#[test]
fn load_reads_files_and_reports_unreadable_ones() {
    let f = Fixture::new();
    std::fs::write(f.origin(), f.minimal()).expect("write");
    let c = Config::load(&f.origin()).expect("valid");
    assert_eq!(c.origin, f.origin());
    let missing = f.path("absent.yaml");
    let e = Config::load(&missing).expect_err("absent");
    assert_eq!(e.0.len(), 1);
    assert!(
        e.to_string()
            .starts_with(&format!("{}: cannot read", missing.display())),
        "{e}"
    );
}

/// The examples above use every key, and only keys listed in [`KEYS`].
#[test]
fn keys_list_matches_the_schema() {
    let f = Fixture::new();
    let mut seen = BTreeSet::new();
    // The full example keeps its line numbers for the tests of error positions, so
    // `heartbeat.nice` comes with the minimal one.
    let nice = format!("{}heartbeat:\n  nice: -5\n", f.minimal());
    for text in [
        f.full(),
        f.full_with_fingerprint(),
        f.full_with_docker(),
        nice,
    ] {
        // Without the feature the docker example is rejected (tests/docker.rs).
        if cfg!(feature = "docker") || !text.contains("docker:") {
            f.parse(&text).expect("valid");
        }
        for k in locate::scan(&text) {
            let generic: Vec<String> = k
                .path
                .iter()
                .map(|s| {
                    if s.starts_with('[') {
                        "[]".to_owned()
                    } else {
                        s.clone()
                    }
                })
                .collect();
            seen.insert(locate::join(&generic));
        }
    }
    let listed: BTreeSet<String> = KEYS.iter().map(|k| (*k).to_owned()).collect();
    assert_eq!(seen, listed);
}

/// docs/configuration.md documents every key, written as `key` in a heading.
#[test]
fn every_key_is_documented() {
    let doc = include_str!("../../../docs/configuration.md");
    let missing: Vec<&&str> = KEYS
        .iter()
        .filter(|k| {
            !doc.lines()
                .any(|l| l.starts_with('#') && l.contains(&format!("`{k}`")))
        })
        .collect();
    assert!(missing.is_empty(), "undocumented keys: {missing:?}");
}

#[test]
fn a_file_of_comments_is_reported_as_missing_keys() {
    let f = Fixture::new();
    let e = f.errors("# nothing yet\n\n");
    assert!(
        e.iter()
            .any(|e| e.key == "node" && e.message == "is required"),
        "{e:#?}"
    );
}

/// A bad value and the one error it gives: replace `from` by `to` in the full
/// example; expect exactly one error, for `key`, on `line`, saying `says`.
struct Bad {
    from: &'static str,
    to: &'static str,
    key: &'static str,
    line: u64,
    says: &'static str,
}

const fn bad(
    from: &'static str,
    to: &'static str,
    key: &'static str,
    line: u64,
    says: &'static str,
) -> Bad {
    Bad {
        from,
        to,
        key,
        line,
        says,
    }
}

fn check_bad_values(f: &Fixture, cases: &[Bad]) {
    for case in cases {
        let e = f.errors_with(&f.full(), case.from, case.to);
        assert_eq!(e.len(), 1, "{:?}: {e:#?}", case.to);
        let err = only(&e, case.key);
        assert_eq!(err.line, Some(case.line), "{:?}: {err}", case.to);
        assert!(err.column.is_some(), "{err}");
        assert!(
            err.message.contains(case.says),
            "{:?}: {:?} lacks {:?}",
            case.to,
            err.message,
            case.says
        );
        assert_eq!(err.to_string().lines().count(), 1, "{err}");
    }
}

/// The line of the first line of `text` that contains `what`.
fn line_of(text: &str, what: &str) -> u64 {
    let index = text.lines().position(|l| l.contains(what)).expect(what);
    u64::try_from(index).expect("line") + 1
}

#[test]
fn default_heartbeat_network_joins_the_replication_endpoints() {
    let f = Fixture::new();
    let networks = |text: &str| f.parse(text).expect("valid").heartbeat.networks;
    let default = |local: &str, peer: &str| {
        vec![HeartbeatNetwork {
            name: DEFAULT_HEARTBEAT_NETWORK.into(),
            local: addr(local),
            peer: addr(peer),
        }]
    };
    // Each end on its own replication port + 1.
    let text = f
        .minimal()
        .replace("address: 10.213.7.12:7400", "address: 10.213.7.12:7500");
    assert_eq!(
        networks(&text),
        default("10.213.7.11:7401", "10.213.7.12:7501")
    );
    let v6 = f
        .minimal()
        .replace("listen: 10.213.7.11:7400", "listen: \"[fd00::11]:7400\"")
        .replace("address: 10.213.7.12:7400", "address: \"[fd00::12]:7400\"");
    assert_eq!(networks(&v6), default("[fd00::11]:7401", "[fd00::12]:7401"));
    // Listening on every address leaves the default network without an address.
    for any in ["0.0.0.0:7400", "\"[::]:7400\""] {
        let e = f.errors_with(
            &f.minimal(),
            "listen: 10.213.7.11:7400",
            &format!("listen: {any}"),
        );
        assert_eq!(e.len(), 1, "{e:#?}");
        let err = only(&e, "listen");
        assert_eq!((err.line, err.column), (Some(2), Some(9)));
        assert!(
            err.message.contains("heartbeat.networks"),
            "{}",
            err.message
        );
    }
    // ... which listed networks give it.
    let listed = format!(
        "{}heartbeat:\n  networks:\n    - {{ name: lan, local: 10.213.7.11:7401, peer: 10.213.7.12:7401 }}\n",
        f.minimal()
            .replace("listen: 10.213.7.11:7400", "listen: 0.0.0.0:7400")
    );
    assert_eq!(
        f.parse(&listed).expect("valid").heartbeat.networks[0].name,
        "lan"
    );
    // A listed network must not take the replication socket, also when
    // listening on every address.
    let e = f.errors_with(
        &listed,
        "local: 10.213.7.11:7401",
        "local: 10.213.7.11:7400",
    );
    let err = only(&e, "heartbeat.networks[0].local");
    assert!(err.message.contains("replication endpoint"), "{err}");
    // No port above 65535.
    let e = f.errors_with(
        &f.minimal(),
        "listen: 10.213.7.11:7400",
        "listen: 10.213.7.11:65535",
    );
    assert_eq!(e.len(), 1, "{e:#?}");
    assert!(only(&e, "listen").message.contains("port 65535"));
    let e = f.errors_with(
        &f.minimal(),
        "address: 10.213.7.12:7400",
        "address: 10.213.7.12:65535",
    );
    assert_eq!(e.len(), 1, "{e:#?}");
    assert_eq!(only(&e, "peer.address").line, Some(4));
    // Both ends of one family.
    let e = f.errors_with(
        &f.minimal(),
        "address: 10.213.7.12:7400",
        "address: \"[fd00::12]:7400\"",
    );
    assert_eq!(e.len(), 1, "{e:#?}");
    assert!(only(&e, "listen").message.contains("address family"));
    // An invalid endpoint has its own error and no second one about networks.
    let e = f.errors_with(&f.minimal(), "listen: 10.213.7.11:7400", "listen: here");
    assert_eq!(e.len(), 1, "{e:#?}");
}

#[test]
fn heartbeat_networks_are_checked() {
    let f = Fixture::new();
    let direct = "{ name: direct, local: \"[fd00::1]:7401\", peer: \"[fd00::2]:7401\" }";
    check_bad_values(
        &f,
        &[
            bad(
                "name: lan",
                "name: LAN",
                "heartbeat.networks[0].name",
                22,
                "not a network name",
            ),
            bad(
                "name: direct",
                "name: lan",
                "heartbeat.networks[1].name",
                25,
                "already the name of heartbeat.networks[0]",
            ),
            bad(
                "local: 10.213.7.11:7401",
                "local: 0.0.0.0:7401",
                "heartbeat.networks[0].local",
                23,
                "not an address a node can reach",
            ),
            bad(
                "local: 10.213.7.11:7401",
                "local: 10.213.7.11:0",
                "heartbeat.networks[0].local",
                23,
                "port must not be 0",
            ),
            bad(
                "local: 10.213.7.11:7401",
                "local: eth0",
                "heartbeat.networks[0].local",
                23,
                "not an IP address and port",
            ),
            bad(
                "local: 10.213.7.11:7401",
                "local: 10.213.7.11:7400",
                "heartbeat.networks[0].local",
                23,
                "replication endpoint (`listen",
            ),
            bad(
                "local: \"[fd00::1]:7401\"",
                "local: 10.213.7.11:7401",
                "heartbeat.networks[1].local",
                25,
                "already the local address of heartbeat.networks[0]",
            ),
            bad(
                "peer: 10.213.7.12:7401",
                "peer: \"[fd00::2]:7401\"",
                "heartbeat.networks[0].peer",
                24,
                "same address family",
            ),
            bad(
                "peer: 10.213.7.12:7401",
                "peer: 10.213.7.11:7401",
                "heartbeat.networks[0].peer",
                24,
                "must differ from `local`",
            ),
            bad(
                "peer: 10.213.7.12:7401",
                "peer: 10.213.7.12:7400",
                "heartbeat.networks[0].peer",
                24,
                "`peer.address`",
            ),
            bad(
                direct,
                "{ name: direct, local: 10.213.7.11:7402, peer: 10.213.7.12:7401 }",
                "heartbeat.networks[1].peer",
                25,
                "already the peer address of heartbeat.networks[0]",
            ),
            bad(
                "      peer: 10.213.7.12:7401\n",
                "",
                "heartbeat.networks[0].peer",
                22,
                "is required",
            ),
            bad(
                direct,
                "{ name: direct, peer: \"[fd00::2]:7401\" }",
                "heartbeat.networks[1].local",
                25,
                "is required",
            ),
            bad(
                "local: 10.213.7.11:7401",
                "address: 10.213.7.11:7401",
                "heartbeat.networks[0].address",
                23,
                "address",
            ),
        ],
    );
    let listed = format!(
        "    - name: lan\n      local: 10.213.7.11:7401\n      peer: 10.213.7.12:7401\n    - {direct}\n"
    );
    let e = f.errors_with(
        &f.full(),
        &format!("  networks:\n{listed}"),
        "  networks: []\n",
    );
    assert_eq!(only(&e, "heartbeat.networks").line, Some(21));
}

#[test]
fn heartbeat_secret_file_is_readable_and_not_empty() {
    let f = Fixture::new();
    let absolute = format!("secret_file: {}", f.path("hb.secret").display());
    let c = f
        .parse(&f.full().replace(&absolute, "secret_file: hb.secret"))
        .expect("relative to the configuration's directory");
    assert_eq!(c.heartbeat.secret_file, Some(f.path("hb.secret")));

    std::fs::write(f.path("hb.secret"), "").expect("truncate");
    let e = f.errors(&f.full());
    assert_eq!(e.len(), 1, "{e:#?}");
    let err = only(&e, "heartbeat.secret_file");
    assert_eq!((err.line, err.column), (Some(20), Some(16)));
    assert!(err.message.contains("is empty"), "{err}");

    std::fs::remove_file(f.path("hb.secret")).expect("rm");
    let e = f.errors(&f.full());
    assert_eq!(e.len(), 1, "{e:#?}");
    assert!(
        only(&e, "heartbeat.secret_file")
            .message
            .contains("cannot read")
    );
}

#[test]
fn vip_is_checked() {
    let f = Fixture::new();
    check_bad_values(
        &f,
        &[
            bad(
                "address: 10.213.7.50/24",
                "address: 10.213.7.50",
                "vip.address",
                44,
                "prefix length",
            ),
            bad(
                "address: 10.213.7.50/24",
                "address: 10.213.7.50/ab",
                "vip.address",
                44,
                "such as 10.0.0.50/24",
            ),
            bad(
                "address: 10.213.7.50/24",
                "address: vip.example/24",
                "vip.address",
                44,
                "such as 10.0.0.50/24",
            ),
            bad(
                "address: 10.213.7.50/24",
                "address: 10.213.7.50/33",
                "vip.address",
                44,
                "more than 32",
            ),
            bad(
                "address: 10.213.7.50/24",
                "address: fd00::50/129",
                "vip.address",
                44,
                "more than 128",
            ),
            bad(
                "address: 10.213.7.50/24",
                "address: 10.213.7.50/0",
                "vip.address",
                44,
                "at least 1",
            ),
            bad(
                "address: 10.213.7.50/24",
                "address: 10.213.7.11/24",
                "vip.address",
                44,
                "this node's address (`listen`)",
            ),
            bad(
                "address: 10.213.7.50/24",
                "address: 10.213.7.12/24",
                "vip.address",
                44,
                "the peer's address (`peer.address`)",
            ),
            bad(
                "address: 10.213.7.50/24",
                "address: 10.213.7.0/24",
                "vip.address",
                44,
                "network address",
            ),
            bad(
                "address: 10.213.7.50/24",
                "address: 10.213.7.255/24",
                "vip.address",
                44,
                "broadcast address",
            ),
            bad(
                "address: 10.213.7.50/24",
                "address: 127.0.0.50/8",
                "vip.address",
                44,
                "loopback",
            ),
            bad(
                "interface: eth0",
                "interface: eth0/1",
                "vip.interface",
                45,
                "not an interface name",
            ),
            bad(
                "interface: eth0",
                "interface: abcdefghijklmnop",
                "vip.interface",
                45,
                "1 to 15 characters",
            ),
            bad(
                "interface: eth0",
                "interface: \"eth 0\"",
                "vip.interface",
                45,
                "not an interface name",
            ),
            bad(
                "interface: eth0",
                "interface: \"eth0:1\"",
                "vip.interface",
                45,
                "not an interface name",
            ),
            bad(
                "interface: eth0",
                "interface: \"\"",
                "vip.interface",
                45,
                "not an interface name",
            ),
            bad(
                "  interface: eth0\n",
                "",
                "vip.interface",
                44,
                "is required",
            ),
            bad(
                "announce_count: 3",
                "announce_count: 0",
                "vip.announce_count",
                46,
                "from 1 to 100",
            ),
            bad(
                "announce_count: 3",
                "announce_count: 101",
                "vip.announce_count",
                46,
                "from 1 to 100",
            ),
            bad(
                "announce_count: 3",
                "announce_count: many",
                "vip.announce_count",
                46,
                "from 1 to 100",
            ),
            bad(
                "announce_interval: 100ms",
                "announce_interval: 100",
                "vip.announce_interval",
                47,
                "not a duration",
            ),
            bad(
                "refresh: 30s",
                "refresh: 0s",
                "vip.refresh",
                48,
                "longer than 0",
            ),
            bad(
                "probe_wait: 300ms",
                "probe_wait: 1d",
                "vip.probe_wait",
                49,
                "unknown unit",
            ),
            bad(
                "probe_wait: 300ms",
                "probe_delay: 300ms",
                "vip.probe_delay",
                49,
                "probe_delay",
            ),
        ],
    );
    // Nor an address of the nodes on a heartbeat network.
    let text = f
        .full()
        .replace("peer: 10.213.7.12:7401", "peer: 10.213.7.22:7401");
    let e = f.errors_with(&text, "address: 10.213.7.50/24", "address: 10.213.7.22/24");
    assert_eq!(e.len(), 1, "{e:#?}");
    assert!(
        only(&e, "vip.address")
            .message
            .contains("the peer's address on heartbeat network `lan`")
    );
    // The largest interface name, and an IPv6 VIP with an IPv6 witness.
    f.parse(
        &f.full()
            .replace("interface: eth0", "interface: abcdefghijklmno"),
    )
    .expect("15 characters");
    let c = f
        .parse(
            &f.full()
                .replace("address: 10.213.7.50/24", "address: fd00::50/64")
                .replace("[10.213.7.1, 10.213.7.2]", "[\"fd00::1:1\"]"),
        )
        .expect("IPv6 VIP");
    assert_eq!(c.failover.witnesses, [ip("fd00::1:1")]);
}

#[test]
fn failover_policy_is_checked() {
    let f = Fixture::new();
    let witnesses = "witnesses: [10.213.7.1, 10.213.7.2]";
    check_bad_values(
        &f,
        &[
            bad(
                "preferred: node2",
                "preferred: node3",
                "failover.preferred",
                51,
                "neither this node (`node1`) nor the peer (`node2`)",
            ),
            bad(
                "preferred: node2",
                "preferred: Node2",
                "failover.preferred",
                51,
                "not a node name",
            ),
            bad(
                "boot_wait: 5s",
                "boot_wait: 5",
                "failover.boot_wait",
                52,
                "not a duration",
            ),
            bad(
                witnesses,
                "witnesses: [10.213.7.1, 10.213.7.1]",
                "failover.witnesses[1]",
                53,
                "already failover.witnesses[0]",
            ),
            bad(
                witnesses,
                "witnesses: [10.213.7.1, gateway]",
                "failover.witnesses[1]",
                53,
                "not an IP address",
            ),
            bad(
                witnesses,
                "witnesses: [10.213.7.50]",
                "failover.witnesses[0]",
                53,
                "is the VIP",
            ),
            bad(
                witnesses,
                "witnesses: [10.213.7.12]",
                "failover.witnesses[0]",
                53,
                "the peer's address (`peer.address`)",
            ),
            bad(
                witnesses,
                "witnesses: [\"fd00::2\"]",
                "failover.witnesses[0]",
                53,
                "the peer's address on heartbeat network `direct`",
            ),
            bad(
                witnesses,
                "witnesses: [\"fd00::9\"]",
                "failover.witnesses[0]",
                53,
                "address family",
            ),
            bad(
                witnesses,
                "witnesses: [0.0.0.0]",
                "failover.witnesses[0]",
                53,
                "unspecified",
            ),
            bad(
                witnesses,
                "witnesses: 10.213.7.1",
                "failover.witnesses",
                53,
                "sequence",
            ),
        ],
    );
    // This node may be the preferred one too.
    let c = f
        .parse(&f.full().replace("preferred: node2", "preferred: node1"))
        .expect("valid");
    assert_eq!(c.failover.preferred.as_deref(), Some("node1"));
    // Witnesses need a VIP (they are probed on its network); none without is fine.
    let vip_block = f
        .full()
        .lines()
        .skip_while(|l| *l != "vip:")
        .take_while(|l| *l != "failover:")
        .map(|l| format!("{l}\n"))
        .collect::<String>();
    let no_vip = f.full().replace(&vip_block, "");
    let e = f.errors(&no_vip);
    assert_eq!(e.len(), 1, "{e:#?}");
    let err = only(&e, "failover.witnesses");
    assert_eq!(err.line, Some(line_of(&no_vip, "witnesses:")));
    assert!(err.message.contains("needs `vip`"), "{err}");
    let c = f
        .parse(&no_vip.replace(witnesses, "witnesses: []"))
        .expect("no witnesses");
    assert_eq!((c.vip, c.failover.witnesses), (None, Vec::new()));
}

#[test]
fn application_restarts_and_checkers_are_checked() {
    let f = Fixture::new();
    check_bad_values(
        &f,
        &[
            bad(
                "max_restarts: 5",
                "max_restarts: -1",
                "application.max_restarts",
                32,
                "whole number, at least 0",
            ),
            bad(
                "restart_window: 30m",
                "restart_window: 30",
                "application.restart_window",
                33,
                "not a duration",
            ),
            bad(
                "name: web",
                "name: db",
                "application.checkers[1].name",
                41,
                "already the name of application.checkers[0]",
            ),
            bad(
                "name: web",
                "name: Web",
                "application.checkers[0].name",
                35,
                "not a checker name",
            ),
            bad(
                "{ name: worker, process: app-worker,",
                "{ process: app-worker,",
                "application.checkers[2].name",
                42,
                "is required",
            ),
            bad(
                "      tcp: 127.0.0.1:8080\n",
                "",
                "application.checkers[0]",
                35,
                "needs one of `tcp`, `command`, `process` or `docker`",
            ),
            bad(
                "      tcp: 127.0.0.1:8080\n",
                "      tcp: 127.0.0.1:8080\n      process: app\n",
                "application.checkers[0].process",
                37,
                "only one of `tcp`, `command`, `process` and `docker` (this one also has `tcp`)",
            ),
            bad(
                "{ name: db, command: pg_isready -q, action: restart }",
                "{ name: db, command: pg_isready -q, process: postgres, tcp: 127.0.0.1:5432 }",
                "application.checkers[1].command",
                41,
                "this one also has `tcp`",
            ),
            bad(
                "tcp: 127.0.0.1:8080",
                "tcp: 127.0.0.1",
                "application.checkers[0].tcp",
                36,
                "not an IP address and port",
            ),
            bad(
                "tcp: 127.0.0.1:8080",
                "tcp: 0.0.0.0:8080",
                "application.checkers[0].tcp",
                36,
                "not an address a node can reach",
            ),
            bad(
                "command: pg_isready -q",
                "command: \" \"",
                "application.checkers[1].command",
                41,
                "must not be empty",
            ),
            bad(
                "process: app-worker",
                "process: app-worker-process",
                "application.checkers[2].process",
                42,
                "write its first 15: `app-worker-proc`",
            ),
            bad(
                "interval: 2s",
                "interval: 2",
                "application.checkers[0].interval",
                37,
                "not a duration",
            ),
            bad(
                "timeout: 500ms",
                "timeout: 0ms",
                "application.checkers[0].timeout",
                38,
                "longer than 0",
            ),
            bad(
                "failures: 4",
                "failures: 0",
                "application.checkers[0].failures",
                39,
                "at least 1",
            ),
            bad(
                "action: failover",
                "action: stop",
                "application.checkers[0].action",
                40,
                "use restart or failover",
            ),
            bad(
                "failures: 4",
                "retries: 4",
                "application.checkers[0].retries",
                39,
                "retries",
            ),
        ],
    );
    let c = f
        .parse(&f.full().replace("max_restarts: 5", "max_restarts: 0"))
        .expect("no local restarts");
    assert_eq!(c.application.map(|a| a.max_restarts), Some(0));
}

/// `scope: node` makes a node checker, whose only action is `failover` (also its
/// default); the application's checkers keep `restart` as their default.
#[test]
fn node_checkers_fail_over_and_cannot_restart() {
    let f = Fixture::new();
    let checkers = |text: &str| {
        f.parse(text)
            .expect("valid")
            .application
            .expect("application")
            .checkers
    };
    let c = checkers(&f.full().replace("scope: application", "scope: node"));
    assert_eq!(
        (c[2].scope, c[2].action),
        (CheckerScope::Node, CheckerAction::Failover)
    );
    let c = checkers(&f.full().replace(", scope: application", ""));
    assert_eq!(
        (c[2].scope, c[2].action),
        (CheckerScope::Application, CheckerAction::Restart)
    );
    let c = checkers(&f.full().replace(
        "action: failover\n",
        "action: failover\n      scope: node\n",
    ));
    assert_eq!(
        (c[0].scope, c[0].action),
        (CheckerScope::Node, CheckerAction::Failover)
    );
    check_bad_values(
        &f,
        &[
            bad(
                "scope: application",
                "scope: host",
                "application.checkers[2].scope",
                42,
                "`host` is not a scope: use application or node",
            ),
            bad(
                "{ name: db, command: pg_isready -q, action: restart }",
                "{ name: db, command: pg_isready -q, action: restart, scope: node }",
                "application.checkers[1].action",
                41,
                "cannot restart the application",
            ),
        ],
    );
    // Both at once, with the line and column of each.
    let text = f
        .full()
        .replace("scope: application", "scope: always")
        .replace("action: restart }", "action: restart, scope: node }");
    let e = f.errors(&text);
    assert_eq!(e.len(), 2, "{e:#?}");
    assert_eq!(only(&e, "application.checkers[1].action").column, Some(51));
    assert_eq!(only(&e, "application.checkers[2].scope").column, Some(51));
}

#[test]
fn several_errors_in_the_failover_keys_are_reported_at_once() {
    let f = Fixture::new();
    let text = f
        .full()
        .replace("name: lan", "name: LAN")
        .replace("max_restarts: 5", "max_restarts: some")
        .replace("action: failover", "action: reboot")
        .replace("interface: eth0", "interface: eth0/1")
        .replace("[10.213.7.1, 10.213.7.2]", "[10.213.7.1, 10.213.7.50]");
    let e = f.errors(&text);
    let expected = [
        ("heartbeat.networks[0].name", 22, 13),
        ("application.max_restarts", 32, 17),
        ("application.checkers[0].action", 40, 15),
        ("vip.interface", 45, 14),
        ("failover.witnesses[1]", 53, 27),
    ];
    assert_eq!(e.len(), expected.len(), "{e:#?}");
    for (key, line, column) in expected {
        let err = only(&e, key);
        assert_eq!((err.line, err.column), (Some(line), Some(column)), "{err}");
    }
    let shown = ConfigErrors(e).to_string();
    let lines: Vec<&str> = shown.lines().collect();
    assert_eq!(lines.len(), expected.len());
    let origin = f.origin().display().to_string();
    assert_eq!(
        lines[4],
        format!(
            "{origin}:53:27: failover.witnesses[1]: 10.213.7.50 is the VIP; a witness is another machine on its network"
        )
    );
}

/// The Example of docs/configuration.md uses only keys of the schema and is valid
/// but for the files it names, which do not exist here.
#[test]
fn documented_example_is_valid() {
    let doc = include_str!("../../../docs/configuration.md");
    let example = doc
        .split("## Example\n")
        .nth(1)
        .and_then(|rest| rest.split("```yaml\n").nth(1))
        .and_then(|block| block.split("```").next())
        .expect("an Example section with a yaml block");
    for k in locate::scan(example) {
        let generic: Vec<String> = k
            .path
            .iter()
            .map(|s| {
                if s.starts_with('[') {
                    "[]".to_owned()
                } else {
                    s.clone()
                }
            })
            .collect();
        let key = locate::join(&generic);
        assert!(KEYS.contains(&key.as_str()), "{key} is not in KEYS");
    }
    let files = [
        "identity.certificate",
        "identity.key",
        "peer.certificate",
        "heartbeat.secret_file",
    ];
    match Config::parse(example, Path::new("/nonexistent/tandem.yaml")) {
        Ok(_) => {}
        Err(e) => {
            for err in e.errors() {
                assert!(
                    files.contains(&err.key.as_str()) && err.message.contains("cannot read"),
                    "{err}"
                );
            }
        }
    }
}

/// The configurations in packaging/examples (`*.yaml`) are valid files (with certificate
/// files where their relative paths point), so that an example cannot drift from
/// the schema: a key that does not exist would be rejected here.
#[test]
fn packaging_examples_are_valid() {
    let f = Fixture::new();
    std::fs::write(f.path("node2.key"), "-----BEGIN TEST-----\n").expect("write");
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/examples");
    let mut checked = Vec::new();
    let mut dirs = vec![examples];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("read packaging/examples") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.file_name().is_some_and(|n| {
                let n = n.to_string_lossy();
                n.ends_with(".yaml")
            }) {
                let text = std::fs::read_to_string(&path).expect("read example");
                // Parsed as if it were in the fixture's directory, where the
                // certificate files exist.
                match Config::parse(&text, &f.origin()) {
                    Ok(c) => assert!(c.application.is_some(), "{}", path.display()),
                    // A binary without the feature says so, and nothing else.
                    Err(e)
                        if !cfg!(feature = "docker")
                            && e.errors()
                                .iter()
                                .all(|e| e.message.contains("`docker` feature")) => {}
                    Err(e) => panic!("{}:\n{e}", path.display()),
                }
                checked.push(path);
            }
        }
    }
    assert!(checked.len() >= 3, "no examples found: {checked:?}");
}

#[test]
fn metrics_endpoint_is_checked() {
    let f = Fixture::new();
    let full = f.full();
    let line = line_of(&full, "listen: 127.0.0.1:9400");
    check_bad_values(
        &f,
        &[
            bad(
                "listen: 127.0.0.1:9400",
                "listen: localhost:9400",
                "metrics.listen",
                line,
                "is not an IP address and port",
            ),
            bad(
                "listen: 127.0.0.1:9400",
                "listen: 127.0.0.1:0",
                "metrics.listen",
                line,
                "the port must not be 0",
            ),
        ],
    );
    // The section is there only to turn the endpoint on: its address is required.
    let e = f.errors_with(&full, "  listen: 127.0.0.1:9400\n", "  {}\n");
    assert_eq!(e.len(), 1, "{e:#?}");
    let err = only(&e, "metrics.listen");
    assert_eq!(err.message, "is required");
    assert!(err.line.is_some(), "{err}");
    // Any address may be chosen, every address included.
    let c = f
        .parse(&full.replace("listen: 127.0.0.1:9400", "listen: \"[::]:9400\""))
        .expect("valid");
    assert_eq!(c.metrics.map(|m| m.listen), Some(addr("[::]:9400")));
    let e = f.errors_with(
        &full,
        "  listen: 127.0.0.1:9400",
        "  listen: 127.0.0.1:9400\n  path: /metrics",
    );
    assert!(
        e.iter().any(|e| e.message.contains("unknown field")),
        "{e:#?}"
    );
}

#[test]
fn console_is_checked() {
    let f = Fixture::new();
    let full = f.full();
    let c = f.parse(&full).expect("valid").console.expect("a console");
    assert_eq!(c.listen, addr("127.0.0.1:7480"));
    assert_eq!(c.password_hash.as_deref(), Some(PASSWORD_HASH));
    assert_eq!(c.token_file, Some(f.path("console.token")));
    assert!(!c.test_hooks);
    let line = line_of(&full, "password_hash:");
    check_bad_values(
        &f,
        &[
            bad(
                "password_hash: \"$argon2id$v=19$m=19456,t=2,p=1$C0DOmAzuXM2yTnoQ2bqa3A$Ho9wbd+VijFSWPeKkOrqQL0FJPRv4OslG3UFq3p75PM\"",
                "password_hash: hunter2",
                "console.password_hash",
                line,
                "is not a PHC string",
            ),
            bad(
                "test_hooks: false",
                "test_hooks: yes",
                "console.test_hooks",
                line + 2,
                "is not true or false",
            ),
        ],
    );
    // A section alone listens on loopback, but needs a credential.
    let e = f.errors(&format!("{}console: {{}}\n", f.minimal()));
    let err = only(&e, "console");
    assert!(err.message.contains("password_hash"), "{err}");
    let c = f
        .parse(&format!(
            "{}console:\n  password_hash: \"{PASSWORD_HASH}\"\n",
            f.minimal()
        ))
        .expect("valid")
        .console
        .expect("a console");
    assert_eq!(c.listen, DEFAULT_CONSOLE_LISTEN);
    assert_eq!(c.token_file, None);
    assert_eq!(f.parse(&f.minimal()).expect("valid").console, None);
    // A token file every user can read, or too short, is refused; all at once.
    let token = f.path("console.token");
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let e = f.errors(&full);
    let err = only(&e, "console.token_file");
    assert!(err.message.contains("readable by every user"), "{err}");
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    std::fs::write(&token, "short\n").expect("write");
    let e = f.errors(&full);
    assert!(
        only(&e, "console.token_file")
            .message
            .contains("at least 16"),
        "{e:#?}"
    );
}

#[test]
fn heartbeat_nice_defaults_and_bounds() {
    let f = Fixture::new();
    assert_eq!(
        f.parse(&f.minimal()).expect("valid").heartbeat.nice,
        DEFAULT_NICE
    );
    let with = |v: &str| format!("{}heartbeat:\n  nice: {v}\n", f.minimal());
    assert_eq!(f.parse(&with("0")).expect("valid").heartbeat.nice, 0);
    assert_eq!(f.parse(&with("-20")).expect("valid").heartbeat.nice, -20);
    for bad in ["-21", "20", "high"] {
        let e = f.errors(&with(bad));
        let err = only(&e, "heartbeat.nice");
        assert!(err.to_string().contains("from -20 to 19"), "{bad}: {err}");
    }
}

mod docker;
