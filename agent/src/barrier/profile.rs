//! Seccomp profiles (Docker's and the OCI runtime spec's JSON form) that make a
//! container's durability calls reach the barrier through runc's seccomp agent
//! socket ([`super::runc`]).
//!
//! The rules mirror the barrier's own filter ([`super::filter`]): `SCMP_ACT_NOTIFY`
//! for fsync, fdatasync, syncfs and sync; for msync only with `MS_SYNC`, for
//! sync_file_range only with `SYNC_FILE_RANGE_WAIT_AFTER`, for pwritev2 only with
//! `RWF_SYNC` or `RWF_DSYNC`; `SCMP_ACT_ERRNO(ENOSYS)` for io_uring_setup. Given a
//! reserved descriptor range ([`super::filter::reserved_fds`]), also for open and
//! openat with `O_DSYNC`, every openat2, and pwrite64, writev, pwritev, pwritev2,
//! dup and fcntl on a descriptor at or above the range's start; the range travels
//! to the agent in `listenerMetadata` ([`listener_metadata`]). Not write: runc
//! refuses `SCMP_ACT_NOTIFY` for it ("cannot be used for the write syscall"), since
//! its init process writes to runc after installing the filter and before the
//! agent has the listener. So in a container a synchronous file's `write(2)`s are
//! not held; its pwrite/writev/pwritev ones are (databases write their logs with
//! pwrite).
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

use std::{ops::Range, path::Path};

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

/// `O_DSYNC` (open flags; part of `O_SYNC`).
const O_DSYNC: u64 = libc::O_DSYNC as u64;

/// Every system call whose treatment the barrier decides.
pub const BARRIER_SYSCALLS: [&str; 16] = [
    "fsync",
    "fdatasync",
    "syncfs",
    "sync",
    "msync",
    "sync_file_range",
    "pwritev2",
    "io_uring_setup",
    "open",
    "openat",
    "openat2",
    "pwrite64",
    "writev",
    "pwritev",
    "dup",
    "fcntl",
];

/// The calls that are the barrier's only with a reserved descriptor range.
const RESERVED_SYSCALLS: [&str; 8] = [
    "open", "openat", "openat2", "pwrite64", "writev", "pwritev", "dup", "fcntl",
];

/// The `listenerMetadata` naming the reserved descriptor range, which runc hands
/// to the agent with the container's listener: `tandem fds=START-END`.
#[must_use]
pub fn listener_metadata(reserved: &Range<u32>) -> String {
    format!("tandem fds={}-{}", reserved.start, reserved.end)
}

/// The reserved range a profile's rules were made for: the start of the
/// `SCMP_CMP_GE` condition of its NOTIFY rule for pwrite64.
#[must_use]
pub fn reserved_in_rules(seccomp: &Value) -> Option<Range<u32>> {
    let rules = seccomp.get("syscalls")?.as_array()?;
    rules
        .iter()
        .filter_map(Value::as_object)
        .filter(|r| action_of(r) == NOTIFY && names_of(r).any(|n| n == "pwrite64"))
        .filter_map(|r| r.get("args")?.as_array())
        .flatten()
        .find(|a| a.get("index") == Some(&json!(0)) && a.get("op") == Some(&json!("SCMP_CMP_GE")))
        .and_then(|a| a.get("value")?.as_u64())
        .and_then(|start| u32::try_from(start).ok())
        .map(|start| start..start.saturating_add(super::filter::RESERVED_COUNT))
}

/// The reserved range named by a `listenerMetadata`; empty for any other text
/// (older profiles said only `tandem`).
#[must_use]
pub fn reserved_from_metadata(metadata: &str) -> Range<u32> {
    let parsed = metadata
        .split_whitespace()
        .find_map(|w| w.strip_prefix("fds="))
        .and_then(|r| r.split_once('-'))
        .and_then(|(a, b)| Some((a.parse::<u32>().ok()?, b.parse::<u32>().ok()?)));
    match parsed {
        Some((start, end)) if start <= end && end - start <= super::filter::RESERVED_COUNT => {
            start..end
        }
        _ => 0..0,
    }
}

/// A complete Docker seccomp profile (see the module doc for its default action)
/// whose durability calls go to the runc seccomp agent socket at `listener_path`.
/// `reserved` is [`super::filter::reserved_fds`] of the containers' hard
/// descriptor limit (Docker gives them its daemon's unless `--ulimit` says
/// otherwise); empty, synchronous opens are not taken over.
pub fn docker_profile(listener_path: &Path, reserved: &Range<u32>) -> Value {
    let mut profile = json!({
        "defaultAction": ALLOW,
        "architectures": ["SCMP_ARCH_X86_64"],
        "listenerPath": listener_path.to_string_lossy(),
        "listenerMetadata": listener_metadata(reserved),
        "syscalls": [],
    });
    // An ALLOW profile names none of the barrier's calls, so every one is added.
    let _untouched = add_barrier_rules(&mut profile, reserved);
    profile
}

/// The barrier's rules for one system call. `deny_by_default` adds ALLOW rules for
/// the flag combinations the barrier doesn't hold, which a profile whose default
/// action refuses calls would otherwise refuse.
/// `reserved` is the range synchronous files are placed in; with an empty one the
/// calls of [`RESERVED_SYSCALLS`] get no rules.
pub fn barrier_rules(syscall: &str, deny_by_default: bool, reserved: &Range<u32>) -> Vec<Value> {
    let masked = |index: u32, mask: u64, value: u64| json!({"index": index, "value": mask, "valueTwo": value, "op": "SCMP_CMP_MASKED_EQ"});
    let fd_at_least = |start: u32, op: &str| json!({"index": 0, "value": start, "op": op});
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
    // A descriptor at or above the range's start: libseccomp compares the whole
    // register, so "below the end" as a second condition on the same argument is
    // left out; descriptors above the range exist only near the limit anyway, and
    // the agent lets an ordinary one through after a flag check.
    let reserved_fd = |rules: &mut Vec<Value>, others_allowed: Vec<Value>| {
        rules.push(rule(
            NOTIFY,
            vec![fd_at_least(reserved.start, "SCMP_CMP_GE")],
        ));
        if deny_by_default {
            let mut args = others_allowed;
            args.push(fd_at_least(reserved.start, "SCMP_CMP_LT"));
            rules.push(rule(ALLOW, args));
        }
    };
    if reserved.is_empty() && RESERVED_SYSCALLS.contains(&syscall) {
        return Vec::new();
    }
    match syscall {
        "fsync" | "fdatasync" | "syncfs" | "sync" => vec![rule(NOTIFY, Vec::new())],
        "msync" => flagged(2, &[MS_SYNC]),
        "sync_file_range" => flagged(3, &[WAIT_AFTER]),
        "pwritev2" if reserved.is_empty() => flagged(5, &[RWF_DSYNC, RWF_SYNC]),
        "pwritev2" => {
            // Flagged writes, and any write on a reserved descriptor; the ALLOW rule
            // of a deny profile needs both "no flag" and "not reserved".
            let mut rules: Vec<Value> = [RWF_DSYNC, RWF_SYNC]
                .iter()
                .map(|f| rule(NOTIFY, vec![masked(5, *f, *f)]))
                .collect();
            reserved_fd(&mut rules, vec![masked(5, RWF_DSYNC | RWF_SYNC, 0)]);
            rules
        }
        "open" => flagged(1, &[O_DSYNC]),
        "openat" => flagged(2, &[O_DSYNC]),
        "openat2" => vec![rule(NOTIFY, Vec::new())],
        "pwrite64" | "writev" | "pwritev" | "dup" | "fcntl" => {
            let mut rules = Vec::new();
            reserved_fd(&mut rules, Vec::new());
            rules
        }
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
pub fn add_barrier_rules(seccomp: &mut Value, reserved: &Range<u32>) -> Vec<&'static str> {
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
        let ours = barrier_rules(syscall, !default_allows, reserved);
        // Nothing to hold (no reserved range): the profile's own rule stays.
        if ours.is_empty() {
            continue;
        }
        rules.retain_mut(|rule| strip_name(rule, syscall));
        rules.extend(ours);
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
