//! Unit tests of the seccomp profile generator and merger.

use serde_json::json;

use super::*;

fn rules_for<'a>(profile: &'a Value, syscall: &str) -> Vec<&'a Value> {
    profile["syscalls"]
        .as_array()
        .expect("syscalls")
        .iter()
        .filter(|r| {
            r["names"]
                .as_array()
                .is_some_and(|n| n.iter().any(|n| n == syscall))
        })
        .collect()
}

#[test]
fn docker_profile_holds_every_durability_call() {
    let p = docker_profile(Path::new("/var/lib/tandem/seccomp.sock"));
    assert_eq!(p["defaultAction"], "SCMP_ACT_ALLOW");
    assert_eq!(p["listenerPath"], "/var/lib/tandem/seccomp.sock");
    for s in ["fsync", "fdatasync", "syncfs", "sync"] {
        let r = rules_for(&p, s);
        assert_eq!(r.len(), 1, "{s}");
        assert_eq!(r[0]["action"], "SCMP_ACT_NOTIFY");
        assert_eq!(r[0]["args"], json!([]));
    }
    let msync = rules_for(&p, "msync");
    assert_eq!(msync.len(), 1);
    assert_eq!(
        msync[0]["args"][0],
        json!({"index": 2, "value": 4, "valueTwo": 4, "op": "SCMP_CMP_MASKED_EQ"})
    );
    let sfr = rules_for(&p, "sync_file_range");
    assert_eq!(sfr[0]["args"][0]["index"], 3);
    assert_eq!(sfr[0]["args"][0]["value"], libc::SYNC_FILE_RANGE_WAIT_AFTER);
    // pwritev2: one NOTIFY rule per flag (libseccomp ORs rules, not conditions).
    let pw = rules_for(&p, "pwritev2");
    let flags: Vec<&Value> = pw.iter().map(|r| &r["args"][0]["value"]).collect();
    assert_eq!(flags, [&json!(libc::RWF_DSYNC), &json!(libc::RWF_SYNC)]);
    assert!(
        pw.iter()
            .all(|r| r["action"] == "SCMP_ACT_NOTIFY" && r["args"][0]["index"] == 5)
    );
    let uring = rules_for(&p, "io_uring_setup");
    assert_eq!(uring[0]["action"], "SCMP_ACT_ERRNO");
    assert_eq!(uring[0]["errnoRet"], libc::ENOSYS);
    // No ALLOW rules in an ALLOW profile: runc would only skip them.
    assert!(!p.to_string().contains("\"action\":\"SCMP_ACT_ALLOW\""));
}

#[test]
fn merging_into_a_deny_profile_keeps_the_other_flag_combinations_allowed() {
    let mut p = json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "syscalls": [
            {"names": ["read", "fsync", "pwritev2", "msync", "sync_file_range", "fdatasync",
                       "syncfs", "sync", "io_uring_setup"], "action": "SCMP_ACT_ALLOW", "args": []},
        ],
    });
    assert!(add_barrier_rules(&mut p).is_empty());
    assert_eq!(p["syscalls"][0]["names"], json!(["read"]));
    let pw = rules_for(&p, "pwritev2");
    assert_eq!(pw.len(), 3);
    assert_eq!(pw[2]["action"], "SCMP_ACT_ALLOW");
    assert_eq!(
        pw[2]["args"][0],
        json!({"index": 5, "value": libc::RWF_DSYNC | libc::RWF_SYNC, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"})
    );
    assert_eq!(rules_for(&p, "msync")[1]["args"][0]["valueTwo"], 0);
    assert_eq!(rules_for(&p, "fsync").len(), 1);
}

#[test]
fn never_widens_a_profile() {
    let mut p = json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "syscalls": [
            {"names": ["fsync"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_ADMIN"]}},
            {"name": "msync", "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_EQ"}]},
            {"names": ["sync"], "action": "SCMP_ACT_KILL"},
        ],
    });
    let before = p.clone();
    let untouched = add_barrier_rules(&mut p);
    assert_eq!(untouched, BARRIER_SYSCALLS.to_vec());
    assert_eq!(p, before);
    assert_eq!(
        add_barrier_rules(&mut json!("x")),
        BARRIER_SYSCALLS.to_vec()
    );
}

#[test]
fn dockers_own_default_profile_gets_all_rules() {
    // Docker 20.10.24's profiles/seccomp/default.json allows all eight calls in its
    // first, unconditional rule; a shortened copy of that shape.
    let mut p = json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "archMap": [{"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"]}],
        "syscalls": [{"names": ["accept", "fsync", "fdatasync", "syncfs", "sync", "msync",
                                "sync_file_range", "pwritev2", "io_uring_setup", "io_uring_enter"],
                      "action": "SCMP_ACT_ALLOW", "args": [], "comment": "", "includes": {}, "excludes": {}}],
    });
    assert!(add_barrier_rules(&mut p).is_empty());
    assert!(uses_notify(&p));
    assert_eq!(
        p["syscalls"][0]["names"],
        json!(["accept", "io_uring_enter"])
    );
}
