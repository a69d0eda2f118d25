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
