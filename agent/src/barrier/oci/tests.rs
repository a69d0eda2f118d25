//! Unit tests of the OCI runtime wrapper: finding the bundle in runc's command line
//! and patching a config.json.

use std::{ffi::OsString, path::PathBuf};

use serde_json::json;

use super::*;

fn args(line: &str) -> Vec<OsString> {
    line.split_whitespace().map(OsString::from).collect()
}

#[test]
fn finds_the_bundle_of_create_and_run_only() {
    // The command line containerd's runc shim uses (v2 shim, Docker 20.10).
    let shim = "--root /var/run/docker/runtime-runc/moby --log /run/x/log.json --log-format json \
                create --bundle /run/b1 --pid-file /run/b1/init.pid abc";
    assert_eq!(bundle_to_patch(&args(shim)), Some(PathBuf::from("/run/b1")));
    assert_eq!(
        bundle_to_patch(&args("--debug run -b=/x id")),
        Some(PathBuf::from("/x"))
    );
    assert_eq!(
        bundle_to_patch(&args("create id")),
        Some(PathBuf::from("."))
    );
    // A global option's value that looks like a command is not the command.
    assert_eq!(bundle_to_patch(&args("--root create start id")), None);
    for other in [
        "start id",
        "--root /r delete -f id",
        "state id",
        "kill id 9",
        "exec --process p id",
        "",
    ] {
        assert_eq!(bundle_to_patch(&args(other)), None, "{other}");
    }
}

#[test]
fn patch_spec_adds_rules_and_listener_and_keeps_the_rest() {
    let mut spec = json!({
        "ociVersion": "1.0.2-dev",
        "process": {"args": ["sh"]},
        "linux": {"seccomp": {
            "defaultAction": "SCMP_ACT_ERRNO",
            "architectures": ["SCMP_ARCH_X86_64"],
            "syscalls": [{"names": ["read", "fsync", "msync"], "action": "SCMP_ACT_ALLOW"}],
        }},
    });
    let untouched = patch_spec(&mut spec, Path::new("/run/t.sock")).expect("patch");
    // sync, syncfs, ... are refused by this profile: the barrier leaves them refused.
    assert!(untouched.contains(&"sync") && !untouched.contains(&"fsync"));
    let seccomp = &spec["linux"]["seccomp"];
    assert_eq!(seccomp["listenerPath"], "/run/t.sock");
    assert_eq!(seccomp["syscalls"][0]["names"], json!(["read"]));
    assert_eq!(spec["process"]["args"], json!(["sh"]));
    // Patching twice (runc retried by the shim) changes nothing more.
    let once = spec.clone();
    patch_spec(&mut spec, Path::new("/run/t.sock")).expect("again");
    assert_eq!(spec, once);
}

#[test]
fn unconfined_containers_get_an_allow_profile() {
    let mut spec = json!({"linux": {}});
    let untouched = patch_spec(&mut spec, Path::new("/s")).expect("patch");
    assert!(untouched.is_empty());
    assert_eq!(spec["linux"]["seccomp"]["defaultAction"], "SCMP_ACT_ALLOW");
    assert!(profile::uses_notify(&spec["linux"]["seccomp"]));
    assert!(patch_spec(&mut json!([1]), Path::new("/s")).is_err());
    assert!(patch_spec(&mut json!({"linux": 3}), Path::new("/s")).is_err());
}

#[test]
fn patch_bundle_config_rewrites_the_file_keeping_its_mode() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("config.json");
    fs::write(&config, br#"{"linux":{}}"#).expect("write");
    fs::set_permissions(&config, fs::Permissions::from_mode(0o640)).expect("chmod");
    patch_bundle_config(&config, Path::new("/s")).expect("patch");
    let spec: Value = serde_json::from_slice(&fs::read(&config).expect("read")).expect("json");
    assert_eq!(spec["linux"]["seccomp"]["listenerPath"], "/s");
    let mode = fs::metadata(&config).expect("stat").permissions().mode();
    assert_eq!(mode & 0o777, 0o640);
    fs::write(&config, b"garbage").expect("write");
    assert!(matches!(
        patch_bundle_config(&config, Path::new("/s")),
        Err(OciError::Spec { .. })
    ));
}

fn spec_with_env(env: &[&str], namespaces: Value) -> Value {
    json!({
        "process": {"args": ["postgres"], "env": env},
        "linux": {"namespaces": namespaces},
    })
}

fn docker_namespaces() -> Value {
    // What Docker 20.10 writes for `--network none`: a new network namespace.
    json!([{"type": "mount"}, {"type": "network"}, {"type": "uts"}, {"type": "pid"}, {"type": "ipc"}])
}

#[test]
fn tandem_netns_makes_the_container_join_the_named_namespace() {
    let mut spec = spec_with_env(
        &["PATH=/bin", "TANDEM_NETNS=/run/netns/lab-node1"],
        docker_namespaces(),
    );
    let untouched = spec.clone();
    let joined =
        set_network_namespace(&mut spec, |p| p == Path::new("/run/netns/lab-node1")).expect("join");
    assert_eq!(joined, Some(PathBuf::from("/run/netns/lab-node1")));
    assert_eq!(
        spec["linux"]["namespaces"][1],
        json!({"type": "network", "path": "/run/netns/lab-node1"})
    );
    // Nothing else changes: the other namespaces, the process (env included).
    for i in [0, 2, 3, 4] {
        assert_eq!(
            spec["linux"]["namespaces"][i],
            untouched["linux"]["namespaces"][i]
        );
    }
    assert_eq!(spec["process"], untouched["process"]);
    // Done twice (runc retried), the same result.
    let once = spec.clone();
    set_network_namespace(&mut spec, |_| true).expect("again");
    assert_eq!(spec, once);
    // /var/run/netns is the same place under its other name.
    let mut spec = spec_with_env(&["TANDEM_NETNS=/var/run/netns/x"], docker_namespaces());
    assert!(set_network_namespace(&mut spec, |_| true).is_ok());
    assert_eq!(spec["linux"]["namespaces"][1]["path"], "/var/run/netns/x");
}

#[test]
fn without_tandem_netns_the_spec_is_left_alone() {
    for env in [
        json!([
            "PATH=/bin",
            "TANDEM_NETNS_X=/run/netns/a",
            "X=TANDEM_NETNS=/run/netns/a"
        ]),
        json!([]),
    ] {
        let mut spec =
            json!({"process": {"env": env}, "linux": {"namespaces": docker_namespaces()}});
        let before = spec.clone();
        assert_eq!(
            set_network_namespace(&mut spec, |_| true).expect("no-op"),
            None
        );
        assert_eq!(spec, before);
    }
    let mut spec = json!({"linux": {}});
    assert_eq!(
        set_network_namespace(&mut spec, |_| true).expect("no process"),
        None
    );
}

#[test]
fn tandem_netns_refuses_paths_outside_the_netns_directories() {
    for bad in [
        "lab-node1",
        "/proc/1/ns/net",
        "/run/netns",
        "/run/netns/",
        "/run/netns/a/b",
        "/run/netns/../netns/a",
        "/run/netns/..",
        "/run/netns/.",
        "/run/netns//a",
        "/run/netns/a/",
        "/tmp/run/netns/a",
        "",
    ] {
        let mut spec = spec_with_env(&[&format!("TANDEM_NETNS={bad}")], docker_namespaces());
        let before = spec.clone();
        let err = set_network_namespace(&mut spec, |_| true).expect_err(bad);
        assert!(matches!(err, OciError::Netns { .. }), "{bad}: {err}");
        assert_eq!(spec, before, "{bad}");
    }
    // A name that does not exist.
    let mut spec = spec_with_env(&["TANDEM_NETNS=/run/netns/gone"], docker_namespaces());
    let err = set_network_namespace(&mut spec, |_| false).expect_err("missing");
    assert!(
        err.to_string().contains("no such network namespace"),
        "{err}"
    );
    // Host networking (no network namespace entry): refused, not silently joined.
    let host = json!([{"type": "mount"}, {"type": "pid"}]);
    let mut spec = spec_with_env(&["TANDEM_NETNS=/run/netns/a"], host);
    let err = set_network_namespace(&mut spec, |_| true).expect_err("host network");
    assert!(err.to_string().contains("--network none"), "{err}");
}

#[test]
fn patch_bundle_config_refuses_a_missing_namespace_and_leaves_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("config.json");
    let spec = spec_with_env(
        &["TANDEM_NETNS=/run/netns/tandem-unit-test-no-such-namespace"],
        docker_namespaces(),
    );
    let text = serde_json::to_vec(&spec).expect("json");
    fs::write(&config, &text).expect("write");
    let err = patch_bundle_config(&config, Path::new("/s")).expect_err("missing namespace");
    assert!(matches!(err, OciError::Netns { .. }), "{err}");
    assert_eq!(fs::read(&config).expect("read"), text);
}

#[test]
fn finds_runcs_log_file_among_the_global_options() {
    let shim = "--root /var/run/docker/runtime-runc/moby --log /run/x/log.json --log-format json \
                create --bundle /run/b1 --pid-file /run/b1/init.pid abc";
    assert_eq!(
        runc_log(&args(shim)),
        Some((PathBuf::from("/run/x/log.json"), true))
    );
    assert_eq!(
        runc_log(&args("--log=/l --log-format=text create id")),
        Some((PathBuf::from("/l"), false))
    );
    assert_eq!(runc_log(&args("create --log /l id")), None);
    assert_eq!(runc_log(&args("--root /r create id")), None);
}

#[test]
fn a_refused_container_is_reported_in_runcs_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("log.json");
    let error = OciError::Netns {
        value: "/run/netns/x".into(),
        why: "no such network namespace",
    };
    let line = format!("--log {} --log-format json create id", log.display());
    report_to_runc_log(&args(&line), &error);
    let text = fs::read_to_string(&log).expect("log");
    let entry: Value = serde_json::from_str(text.trim()).expect("one JSON line");
    assert_eq!(entry["level"], "error");
    assert_eq!(
        entry["msg"],
        "tandem oci-runtime: TANDEM_NETNS=\"/run/netns/x\": no such network namespace"
    );
}

#[test]
fn the_reserved_range_follows_the_containers_descriptor_limit() {
    let mut spec = json!({
        "process": {"args": ["sh"], "rlimits": [
            {"type": "RLIMIT_NOFILE", "hard": 20000, "soft": 1024},
        ]},
        "linux": {"seccomp": {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": []}},
    });
    patch_spec(&mut spec, Path::new("/s")).expect("patch");
    let seccomp = &spec["linux"]["seccomp"];
    assert_eq!(seccomp["listenerMetadata"], "tandem fds=19936-20000");
    assert_eq!(profile::reserved_in_rules(seccomp), Some(19_936..20_000));
    // The soft limit is raised to cover the range, as the launcher does.
    assert_eq!(spec["process"]["rlimits"][0]["soft"], 20000);
    // A generated profile's range survives a second patch (runc retried, or
    // Docker 20.10 dropping the metadata).
    spec["linux"]["seccomp"]
        .as_object_mut()
        .expect("object")
        .remove("listenerMetadata");
    patch_spec(&mut spec, Path::new("/s")).expect("again");
    assert_eq!(
        spec["linux"]["seccomp"]["listenerMetadata"],
        "tandem fds=19936-20000"
    );
    let mut bad = json!({"process": {"rlimits": 3}, "linux": {}});
    assert!(patch_spec(&mut bad, Path::new("/s")).is_err());
}
