//! Tests of reading and validating configuration files.

use std::{
    collections::BTreeSet,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use super::*;

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
        Self { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn origin(&self) -> PathBuf {
        self.path("tandem.yaml")
    }

    /// Every key of the schema (with a certificate pin).
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
resync:
  block_size: 131072
application:
  start: systemctl start app
  stop: systemctl stop app
  timeout: 1m
",
            crt = self.path("node1.crt").display(),
            key = self.path("node1.key").display(),
            peer = self.path("node2.crt").display(),
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

    /// Only the required keys; identity paths relative to the file.
    fn minimal(&self) -> String {
        "\
node: node1
listen: 0.0.0.0:7400
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
    let app = c.application.expect("application");
    assert_eq!(app.start, "systemctl start app");
    assert_eq!(app.stop, "systemctl stop app");
    assert_eq!(app.timeout, Duration::from_secs(60));
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
    assert_eq!(c.resync.block_size, DEFAULT_BLOCK_SIZE);
    assert_eq!(c.application, None);
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
        ("resync.block_size", 21, 15),
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
        assert_eq!(only(&e, "application.timeout").line, Some(25), "{bad}");
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
    assert_eq!(only(&e, "application.stop").line, Some(23));
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
    for text in [f.full(), f.full_with_fingerprint()] {
        f.parse(&text).expect("valid");
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

/// The node configurations in packaging/examples are valid files (with certificate
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
                n.starts_with("node") && n.ends_with(".yaml")
            }) {
                let text = std::fs::read_to_string(&path).expect("read example");
                // Parsed as if it were in the fixture's directory, where the
                // certificate files exist.
                let c = Config::parse(&text, &f.origin())
                    .unwrap_or_else(|e| panic!("{}:\n{e}", path.display()));
                assert!(c.application.is_some(), "{}", path.display());
                checked.push(path);
            }
        }
    }
    assert!(checked.len() >= 2, "no node examples found: {checked:?}");
}
