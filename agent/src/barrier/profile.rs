//! Seccomp profiles (Docker's and the OCI runtime spec's JSON form) that make a
//! container's durability calls reach the barrier through runc's seccomp agent
//! socket ([`super::runc`]).
//!
//! The rules mirror the barrier's own filter ([`super::filter`]): `SCMP_ACT_NOTIFY`
//! for fsync, fdatasync, syncfs and sync; for msync only with `MS_SYNC`, for
//! sync_file_range only with `SYNC_FILE_RANGE_WAIT_AFTER`, for pwritev2 only with
//! `RWF_SYNC` or `RWF_DSYNC`; `SCMP_ACT_ERRNO(ENOSYS)` for io_uring_setup.
//!
//! Two ways to use them:
//! - [`docker_profile`]: a complete profile for `docker run --security-opt
//!   seccomp=FILE`. Its default action is `SCMP_ACT_ALLOW`: Docker's default
//!   allow-list is some 400 lines of per-version, per-architecture and
//!   per-capability conditions that the daemon resolves itself, and a copy embedded
//!   here would drift from the daemon's. A profile given with `--security-opt`
//!   replaces Docker's default, so containers run with this profile lose Docker's
//!   syscall hardening (they keep capabilities, AppArmor and namespaces). Docker
//!   passes `listenerPath` to runc only from Docker 23.0 on; 20.10 drops it, and runc
//!   then refuses to start the container ("listenerPath is not set").
//! - [`add_barrier_rules`]: merges the rules into a seccomp section that the daemon
//!   already resolved, i.e. into the `linux.seccomp` of a bundle's `config.json`.
//!   This is what the OCI runtime wrapper ([`super::oci`]) does, which keeps Docker's
//!   default profile and works on Docker 20.10.

use std::path::Path;

use serde_json::{Map, Value, json};

/// `MS_SYNC` (msync flags, args\[2\]).
const MS_SYNC: u64 = libc::MS_SYNC as u64;
/// `SYNC_FILE_RANGE_WAIT_AFTER` (sync_file_range flags, args\[3\]).
const WAIT_AFTER: u64 = libc::SYNC_FILE_RANGE_WAIT_AFTER as u64;
/// pwritev2 flags (args\[5\]) that make the write a durability point.
const RWF_DSYNC: u64 = libc::RWF_DSYNC as u64;
const RWF_SYNC: u64 = libc::RWF_SYNC as u64;

const NOTIFY: &str = "SCMP_ACT_NOTIFY";
const ALLOW: &str = "SCMP_ACT_ALLOW";

/// Every system call whose treatment the barrier decides.
pub const BARRIER_SYSCALLS: [&str; 8] = [
    "fsync",
    "fdatasync",
    "syncfs",
    "sync",
    "msync",
    "sync_file_range",
    "pwritev2",
    "io_uring_setup",
];

/// A complete Docker seccomp profile (see the module doc for its default action)
/// whose durability calls go to the runc seccomp agent socket at `listener_path`.
pub fn docker_profile(listener_path: &Path) -> Value {
    let mut profile = json!({
        "defaultAction": ALLOW,
        "architectures": ["SCMP_ARCH_X86_64"],
        "listenerPath": listener_path.to_string_lossy(),
        "listenerMetadata": "tandem",
        "syscalls": [],
    });
    // An ALLOW profile names none of the barrier's calls, so every one is added.
    let _untouched = add_barrier_rules(&mut profile);
    profile
}

/// The barrier's rules for one system call. `deny_by_default` adds ALLOW rules for
/// the flag combinations the barrier doesn't hold, which a profile whose default
/// action refuses calls would otherwise refuse.
pub fn barrier_rules(syscall: &str, deny_by_default: bool) -> Vec<Value> {
    let masked = |index: u32, mask: u64, value: u64| json!({"index": index, "value": mask, "valueTwo": value, "op": "SCMP_CMP_MASKED_EQ"});
    let rule = |action: &str, args: Vec<Value>| json!({"names": [syscall], "action": action, "args": args});
    let flagged = |index: u32, flags: &[u64]| {
        let mut rules: Vec<Value> = flags
            .iter()
            .map(|f| rule(NOTIFY, vec![masked(index, *f, *f)]))
            .collect();
        if deny_by_default {
            let all = flags.iter().fold(0, |a, f| a | f);
            rules.push(rule(ALLOW, vec![masked(index, all, 0)]));
        }
        rules
    };
    match syscall {
        "fsync" | "fdatasync" | "syncfs" | "sync" => vec![rule(NOTIFY, Vec::new())],
        "msync" => flagged(2, &[MS_SYNC]),
        "sync_file_range" => flagged(3, &[WAIT_AFTER]),
        "pwritev2" => flagged(5, &[RWF_DSYNC, RWF_SYNC]),
        "io_uring_setup" => vec![json!({
            "names": [syscall],
            "action": "SCMP_ACT_ERRNO",
            "errnoRet": libc::ENOSYS,
            "args": [],
        })],
        _ => Vec::new(),
    }
}

/// Adds the barrier's rules to a seccomp profile or OCI `linux.seccomp` section.
///
/// A call is taken over only if the profile allows it unconditionally (by default
/// action or by an argument-free ALLOW rule): it is removed from those rules and the
/// barrier's rules are added. Calls the profile refuses or restricts are left as
/// they are, since the barrier must never widen a profile; calls that already have
/// a NOTIFY rule (e.g. from [`docker_profile`]) are left too. Returns the calls left
/// as they were. Non-object input is returned untouched with every call listed.
pub fn add_barrier_rules(seccomp: &mut Value) -> Vec<&'static str> {
    let Some(obj) = seccomp.as_object_mut() else {
        return BARRIER_SYSCALLS.to_vec();
    };
    let default = obj
        .get("defaultAction")
        .and_then(Value::as_str)
        .unwrap_or(ALLOW)
        .to_owned();
    let default_allows = default == ALLOW || default == "SCMP_ACT_LOG";
    let mut rules: Vec<Value> = match obj.get_mut("syscalls").map(Value::take) {
        Some(Value::Array(rules)) => rules,
        _ => Vec::new(),
    };
    let mut untouched = Vec::new();
    for syscall in BARRIER_SYSCALLS {
        let naming: Vec<&Map<String, Value>> = rules
            .iter()
            .filter_map(Value::as_object)
            .filter(|r| names_of(r).any(|n| n == syscall))
            .collect();
        let already_ours = naming.iter().any(|r| action_of(r) == NOTIFY);
        let allowed = if naming.is_empty() {
            default_allows
        } else {
            naming
                .iter()
                .all(|r| action_of(r) == ALLOW && args_empty(r) && filters_empty(r))
        };
        if already_ours || !allowed {
            untouched.push(syscall);
            continue;
        }
        rules.retain_mut(|rule| strip_name(rule, syscall));
        rules.extend(barrier_rules(syscall, !default_allows));
    }
    obj.insert("syscalls".to_owned(), Value::Array(rules));
    untouched
}

/// Sets `listenerPath` (runc connects there) in a profile or `linux.seccomp`.
pub fn set_listener_path(seccomp: &mut Value, listener_path: &Path) {
    if let Some(obj) = seccomp.as_object_mut() {
        obj.insert(
            "listenerPath".to_owned(),
            Value::String(listener_path.to_string_lossy().into_owned()),
        );
    }
}

/// Whether any rule of a profile or `linux.seccomp` section uses `SCMP_ACT_NOTIFY`.
pub fn uses_notify(seccomp: &Value) -> bool {
    seccomp
        .get("syscalls")
        .and_then(Value::as_array)
        .is_some_and(|rules| {
            rules
                .iter()
                .filter_map(Value::as_object)
                .any(|r| action_of(r) == NOTIFY)
        })
}

/// The `names` of a rule, plus Docker's older single `name`.
fn names_of(rule: &Map<String, Value>) -> impl Iterator<Item = &str> {
    let many = rule
        .get("names")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str);
    many.chain(rule.get("name").and_then(Value::as_str))
}

fn action_of(rule: &Map<String, Value>) -> &str {
    rule.get("action").and_then(Value::as_str).unwrap_or("")
}

fn args_empty(rule: &Map<String, Value>) -> bool {
    match rule.get("args") {
        None | Some(Value::Null) => true,
        Some(Value::Array(a)) => a.is_empty(),
        Some(_) => false,
    }
}

/// Docker profile rules may apply only for some capabilities, architectures or
/// kernels; such a rule is a condition, not an unconditional allow.
fn filters_empty(rule: &Map<String, Value>) -> bool {
    ["includes", "excludes"].iter().all(|k| match rule.get(*k) {
        None | Some(Value::Null) => true,
        Some(Value::Object(o)) => o.values().all(|v| match v {
            Value::Null => true,
            Value::Array(a) => a.is_empty(),
            _ => false,
        }),
        Some(_) => false,
    })
}

/// Removes `syscall` from a rule; returns whether the rule still names something.
fn strip_name(rule: &mut Value, syscall: &str) -> bool {
    let Some(obj) = rule.as_object_mut() else {
        return true;
    };
    if obj.get("name").and_then(Value::as_str) == Some(syscall) {
        obj.remove("name");
    }
    if let Some(Value::Array(names)) = obj.get_mut("names") {
        names.retain(|n| n.as_str() != Some(syscall));
    }
    names_of(obj).next().is_some()
}

#[cfg(test)]
mod tests;
