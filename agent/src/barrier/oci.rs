//! An OCI runtime wrapper that puts containers under the barrier on Docker versions
//! that can't pass a seccomp `listenerPath` to runc (Docker < 23.0, e.g. 20.10).
//!
//! Docker 20.10 accepts `SCMP_ACT_NOTIFY` in a `--security-opt seccomp=` profile but
//! drops its `listenerPath` (its profile struct lacks the field; moby added it in
//! 23.0), so runc refuses such a container: "listenerPath is not set". Docker does
//! let an administrator register extra runtimes in `/etc/docker/daemon.json`:
//!
//! ```json
//! {"runtimes": {"tandem": {"path": "/usr/local/bin/tandem",
//!   "runtimeArgs": ["oci-runtime", "--listener", "/var/lib/tandem/seccomp.sock",
//!                   "--runc", "/usr/sbin/runc", "--"]}}}
//! ```
//!
//! Containers started with `docker run --runtime tandem` (or every container, with
//! `"default-runtime": "tandem"`) then reach [`run_oci_runtime`]: on `create` and
//! `run` it rewrites the bundle's `config.json`, which already holds the seccomp
//! profile the daemon resolved (Docker's default one unless the user chose another):
//! it adds the barrier's rules ([`profile::add_barrier_rules`]) and the
//! `listenerPath`, then execs the real runc with the unchanged arguments. Every other
//! runc command passes straight through. A container run `--security-opt
//! seccomp=unconfined` or `--privileged` has no seccomp section; it gets one that
//! allows everything but the barrier's calls.
//!
//! One more rewrite serves the lab: a container whose process environment holds
//! `TANDEM_NETNS=/run/netns/NAME` (and that Docker gave a network namespace of its
//! own, `--network none`) joins that named network namespace instead
//! ([`set_network_namespace`]). That is how a Compose stack runs inside a lab node's
//! namespace, where the VIP lives; in production containers use Docker's networking.

use std::{
    ffi::{OsStr, OsString},
    fs, io,
    os::unix::{ffi::OsStrExt, fs::PermissionsExt, process::CommandExt},
    path::{Path, PathBuf},
    process::Command,
};

use serde_json::{Value, json};

use super::profile;

/// Why the wrapper could not prepare or start the container.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    /// Reading or writing the bundle's `config.json` failed.
    #[error("cannot {step} {path}")]
    Io {
        step: &'static str,
        path: PathBuf,
        #[source]
        error: io::Error,
    },
    /// `config.json` is not a JSON object with an object `linux` section.
    #[error("{path} is not an OCI runtime spec: {what}")]
    Spec { path: PathBuf, what: &'static str },
    /// `TANDEM_NETNS` names no usable network namespace, or the container cannot
    /// join one.
    #[error("TANDEM_NETNS={value:?}: {why}")]
    Netns { value: String, why: &'static str },
    /// The real runtime could not be executed.
    #[error("cannot execute the OCI runtime {program:?}")]
    Exec {
        program: PathBuf,
        #[source]
        error: io::Error,
    },
}

/// runc's global options that take a value (as the next argument, or after `=`).
const GLOBAL_WITH_VALUE: [&str; 5] = ["--root", "--log", "--log-format", "--criu", "--rootless"];

/// Patches the bundle if `args` (runc's arguments, without the program name) start
/// a container, then replaces this process with `runc args...`. Returns only on error.
pub fn run_oci_runtime(runc: &Path, listener: &Path, args: &[OsString]) -> OciError {
    if let Some(bundle) = bundle_to_patch(args)
        && let Err(e) = patch_bundle_config(&bundle.join("config.json"), listener)
    {
        report_to_runc_log(args, &e);
        return e;
    }
    let error = Command::new(runc).args(args).exec();
    OciError::Exec {
        program: runc.to_owned(),
        error,
    }
}

/// Appends `error` to the log file runc was given (`--log`), as runc itself would:
/// containerd's shim reads the last error of that file and makes it Docker's
/// message ("OCI runtime create failed: ..."); without it Docker only says the
/// runtime "did not terminate successfully". Best effort: the error also goes to
/// stderr.
fn report_to_runc_log(args: &[OsString], error: &OciError) {
    let Some((path, json)) = runc_log(args) else {
        return;
    };
    let msg = format!("tandem oci-runtime: {error}");
    let line = if json {
        format!("{}\n", json!({"level": "error", "msg": msg}))
    } else {
        format!("level=error msg={msg:?}\n")
    };
    if let Ok(mut file) = fs::OpenOptions::new().create(true).append(true).open(path) {
        let _ = io::Write::write_all(&mut file, line.as_bytes());
    }
}

/// runc's `--log` file among the global options, and whether `--log-format` is
/// `json`.
pub fn runc_log(args: &[OsString]) -> Option<(PathBuf, bool)> {
    let mut log = None;
    let mut json = false;
    let mut rest = args.iter().map(OsString::as_os_str);
    while let Some(arg) = rest.next() {
        let Some(text) = arg.to_str() else { break };
        let (key, value) = match text.split_once('=') {
            Some((k, v)) if k.starts_with("--") => (k, Some(OsString::from(v))),
            _ => (text, None),
        };
        if GLOBAL_WITH_VALUE.contains(&key) {
            let value = match value {
                Some(v) => v,
                None => rest.next()?.to_owned(),
            };
            match key {
                "--log" => log = Some(PathBuf::from(value)),
                "--log-format" => json = value == "json",
                _ => {}
            }
        } else if !text.starts_with('-') {
            break;
        }
    }
    log.map(|l| (l, json))
}

/// The bundle directory of a `create` or `run` command line; `None` for every other
/// runc command. runc's default bundle is the current directory.
pub fn bundle_to_patch(args: &[OsString]) -> Option<PathBuf> {
    let mut rest = args.iter().map(OsString::as_os_str);
    // Global options come before the command.
    let command = loop {
        let arg = rest.next()?;
        let text = arg.to_str()?;
        if GLOBAL_WITH_VALUE.contains(&text) {
            rest.next()?;
        } else if !text.starts_with('-') {
            break text;
        }
    };
    if command != "create" && command != "run" {
        return None;
    }
    while let Some(arg) = rest.next() {
        let bytes = arg.as_bytes();
        if arg == "--bundle" || arg == "-b" {
            return rest.next().map(PathBuf::from);
        }
        for prefix in [&b"--bundle="[..], &b"-b="[..]] {
            if let Some(value) = bytes.strip_prefix(prefix) {
                return Some(PathBuf::from(OsStr::from_bytes(value)));
            }
        }
    }
    Some(PathBuf::from("."))
}

/// Adds the barrier's seccomp rules and `listenerPath` to an OCI `config.json`, in
/// place (written to a temporary file and renamed, keeping the file's mode).
/// Returns the barrier calls the container's profile refuses or restricts, which the
/// barrier leaves alone.
pub fn patch_bundle_config(config: &Path, listener: &Path) -> Result<Vec<&'static str>, OciError> {
    let io_err = |step: &'static str, path: &Path| {
        let path = path.to_owned();
        move |error| OciError::Io { step, path, error }
    };
    let text = fs::read(config).map_err(io_err("read", config))?;
    let mode = fs::metadata(config)
        .map_err(io_err("stat", config))?
        .permissions()
        .mode();
    let mut spec: Value = serde_json::from_slice(&text).map_err(|_| OciError::Spec {
        path: config.to_owned(),
        what: "not JSON",
    })?;
    set_network_namespace(&mut spec, |p| p.exists())?;
    let untouched = patch_spec(&mut spec, listener).map_err(|what| OciError::Spec {
        path: config.to_owned(),
        what,
    })?;
    let out = serde_json::to_vec(&spec).map_err(|_| OciError::Spec {
        path: config.to_owned(),
        what: "cannot serialise",
    })?;
    let tmp = config.with_extension("json.tandem-tmp");
    fs::write(&tmp, out).map_err(io_err("write", &tmp))?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(mode & 0o7777))
        .map_err(io_err("chmod", &tmp))?;
    fs::rename(&tmp, config).map_err(io_err("replace", config))?;
    Ok(untouched)
}

/// The in-memory part of [`patch_bundle_config`].
pub fn patch_spec(spec: &mut Value, listener: &Path) -> Result<Vec<&'static str>, &'static str> {
    let linux = spec
        .as_object_mut()
        .ok_or("not an object")?
        .entry("linux")
        .or_insert_with(|| json!({}));
    let linux = linux.as_object_mut().ok_or("linux is not an object")?;
    let seccomp = linux.entry("seccomp").or_insert_with(|| {
        json!({"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64"], "syscalls": []})
    });
    if !seccomp.is_object() {
        return Err("linux.seccomp is not an object");
    }
    // A profile that holds the barrier's calls already (Docker's `--security-opt`
    // with a generated profile) keeps its rules; the metadata naming their range is
    // set again, since Docker 20.10 drops `listenerMetadata` as it drops
    // `listenerPath`.
    let made_for = profile::uses_notify(seccomp).then(|| {
        profile::reserved_in_rules(seccomp).unwrap_or_else(|| {
            let metadata = seccomp.get("listenerMetadata").and_then(Value::as_str);
            profile::reserved_from_metadata(metadata.unwrap_or_default())
        })
    });
    let reserved = reserve_fds(spec)?;
    let seccomp = spec
        .pointer_mut("/linux/seccomp")
        .ok_or("linux.seccomp vanished")?;
    let (untouched, reserved) = match made_for {
        Some(rules_range) => (profile::add_barrier_rules(seccomp, &(0..0)), rules_range),
        None => (profile::add_barrier_rules(seccomp, &reserved), reserved),
    };
    // runc refuses a NOTIFY rule without a listener, and needs none without one.
    if profile::uses_notify(seccomp) {
        profile::set_listener_path(seccomp, listener);
        if let Some(obj) = seccomp.as_object_mut() {
            obj.insert(
                "listenerMetadata".to_owned(),
                Value::String(profile::listener_metadata(&reserved)),
            );
        }
    }
    Ok(untouched)
}

/// The container's reserved descriptor range ([`super::filter::reserved_fds`] of its
/// hard `RLIMIT_NOFILE`, from `process.rlimits` or else inherited from us, as runc
/// would), with the soft limit in the spec raised to cover it, as the launcher does.
fn reserve_fds(spec: &mut Value) -> Result<std::ops::Range<u32>, &'static str> {
    let own_hard = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map(|(_, hard)| hard)
        .unwrap_or(0);
    let Some(process) = spec.get_mut("process").and_then(Value::as_object_mut) else {
        return Ok(super::filter::reserved_fds(own_hard));
    };
    let Some(rlimits) = process.get_mut("rlimits") else {
        return Ok(super::filter::reserved_fds(own_hard));
    };
    let rlimits = rlimits
        .as_array_mut()
        .ok_or("process.rlimits is not an array")?;
    let nofile = rlimits
        .iter_mut()
        .find(|r| r.get("type").and_then(Value::as_str) == Some("RLIMIT_NOFILE"));
    let Some(nofile) = nofile else {
        return Ok(super::filter::reserved_fds(own_hard));
    };
    let hard = nofile
        .get("hard")
        .and_then(Value::as_u64)
        .ok_or("RLIMIT_NOFILE without hard")?;
    let soft = nofile.get("soft").and_then(Value::as_u64).unwrap_or(hard);
    let reserved = super::filter::reserved_fds(hard);
    if soft < u64::from(reserved.end) {
        nofile["soft"] = json!(reserved.end);
    }
    Ok(reserved)
}

/// The process environment variable that names a network namespace to join.
pub const NETNS_ENV: &str = "TANDEM_NETNS";

/// If the spec's `process.env` holds `TANDEM_NETNS=PATH`, makes the container join
/// the network namespace at PATH: the `linux.namespaces` entry of type `network`
/// gets `"path": PATH`. PATH must be absolute, directly under `/run/netns` or
/// `/var/run/netns` (where `ip netns` keeps named namespaces), and `exists(PATH)`;
/// the spec must already give the container a network namespace of its own (Docker
/// does for `--network none`), since joining one is only a choice between
/// namespaces, never a way out of host networking. Returns the path joined, if any.
pub fn set_network_namespace(
    spec: &mut Value,
    exists: impl Fn(&Path) -> bool,
) -> Result<Option<PathBuf>, OciError> {
    let prefix = format!("{NETNS_ENV}=");
    let value = spec
        .pointer("/process/env")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .filter_map(|e| e.strip_prefix(&prefix))
        .next_back()
        .map(str::to_owned);
    let Some(value) = value else {
        return Ok(None);
    };
    let refuse = |why| OciError::Netns {
        value: value.clone(),
        why,
    };
    let path = Path::new(&value);
    let name = path
        .file_name()
        .and_then(OsStr::to_str)
        .filter(|n| !n.is_empty() && *n != "." && *n != "..")
        .ok_or_else(|| refuse("not a namespace name under /run/netns or /var/run/netns"))?;
    let parent = path.parent().and_then(Path::to_str);
    if !matches!(parent, Some("/run/netns" | "/var/run/netns"))
        || path.to_str() != Some(&format!("{}/{name}", parent.unwrap_or_default()))
    {
        return Err(refuse(
            "must be an absolute path directly under /run/netns or /var/run/netns",
        ));
    }
    if !exists(path) {
        return Err(refuse("no such network namespace"));
    }
    let entry = spec
        .pointer_mut("/linux/namespaces")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
        .find(|ns| ns.get("type").and_then(Value::as_str) == Some("network"))
        .and_then(Value::as_object_mut)
        .ok_or_else(|| {
            refuse(
                "the container has no network namespace of its own to replace \
                 (run it with --network none)",
            )
        })?;
    entry.insert("path".into(), Value::String(value.clone()));
    Ok(Some(PathBuf::from(value)))
}

#[cfg(test)]
mod tests;
