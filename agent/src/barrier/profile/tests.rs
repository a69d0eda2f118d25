//! Unit tests of the seccomp profile generator and merger.

use std::ops::Range;

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

/// The range of a container whose hard descriptor limit is 20,000.
const RESERVED: Range<u32> = 19_936..20_000;
const NONE: Range<u32> = 0..0;

#[test]
fn docker_profile_holds_every_durability_call() {
    let p = docker_profile(Path::new("/var/lib/tandem/seccomp.sock"), &NONE);
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
    // Without a reserved range, opens and writes are none of its business.
    for s in RESERVED_SYSCALLS {
        assert!(rules_for(&p, s).is_empty(), "{s}");
    }
    assert_eq!(
        reserved_from_metadata(p["listenerMetadata"].as_str().expect("metadata")),
        NONE
    );
}

#[test]
fn with_a_reserved_range_synchronous_opens_and_reserved_descriptors_are_held() {
    let p = docker_profile(Path::new("/s"), &RESERVED);
    assert_eq!(p["listenerMetadata"], "tandem fds=19936-20000");
    let dsync = libc::O_DSYNC as u64;
    assert_eq!(
        rules_for(&p, "open")[0]["args"][0],
        json!({"index": 1, "value": dsync, "valueTwo": dsync, "op": "SCMP_CMP_MASKED_EQ"})
    );
    assert_eq!(rules_for(&p, "openat")[0]["args"][0]["index"], 2);
    assert_eq!(rules_for(&p, "openat2")[0]["args"], json!([]));
    // runc refuses NOTIFY for write.
    assert!(rules_for(&p, "write").is_empty());
    assert_eq!(reserved_in_rules(&p), Some(RESERVED));
    for s in ["pwrite64", "writev", "pwritev", "dup", "fcntl"] {
        let r = rules_for(&p, s);
        assert_eq!(r.len(), 1, "{s}");
        assert_eq!(r[0]["action"], "SCMP_ACT_NOTIFY");
        assert_eq!(
            r[0]["args"],
            json!([{"index": 0, "value": 19_936, "op": "SCMP_CMP_GE"}])
        );
    }
    // pwritev2: either flag, or a reserved descriptor.
    let pw = rules_for(&p, "pwritev2");
    assert_eq!(pw.len(), 3);
    assert_eq!(pw[2]["args"][0]["op"], "SCMP_CMP_GE");
    assert!(rules_for(&p, "read").is_empty());
}

#[test]
fn metadata_names_the_range_and_nothing_else_passes() {
    assert_eq!(
        reserved_from_metadata(&listener_metadata(&RESERVED)),
        RESERVED
    );
    for bad in [
        "tandem",
        "",
        "tandem fds=",
        "tandem fds=20000-19936",
        "tandem fds=0-4096",
        "fds=a-b",
    ] {
        assert_eq!(reserved_from_metadata(bad), NONE, "{bad}");
    }
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
    // The deny profile does not allow open, write and the others: they stay refused.
    assert_eq!(
        add_barrier_rules(&mut p, &RESERVED),
        RESERVED_SYSCALLS.to_vec()
    );
    assert_eq!(p["syscalls"][0]["names"], json!(["read"]));
    // Flagged, or on a reserved descriptor: held; neither: allowed.
    let pw = rules_for(&p, "pwritev2");
    assert_eq!(pw.len(), 4);
    assert_eq!(pw[3]["action"], "SCMP_ACT_ALLOW");
    assert_eq!(
        pw[3]["args"],
        json!([
            {"index": 5, "value": libc::RWF_DSYNC | libc::RWF_SYNC, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"},
            {"index": 0, "value": 19_936, "op": "SCMP_CMP_LT"},
        ])
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
    let untouched = add_barrier_rules(&mut p, &RESERVED);
    assert_eq!(untouched, BARRIER_SYSCALLS.to_vec());
    assert_eq!(p, before);
    assert_eq!(
        add_barrier_rules(&mut json!("x"), &RESERVED),
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
                                "sync_file_range", "pwritev2", "io_uring_setup", "io_uring_enter",
                                "open", "openat", "openat2", "pwrite64", "writev",
                                "pwritev", "dup", "fcntl", "read", "write"],
                      "action": "SCMP_ACT_ALLOW", "args": [], "comment": "", "includes": {}, "excludes": {}}],
    });
    let mut without_range = p.clone();
    assert!(add_barrier_rules(&mut p, &RESERVED).is_empty());
    assert!(uses_notify(&p));
    assert_eq!(
        p["syscalls"][0]["names"],
        json!(["accept", "io_uring_enter", "read", "write"])
    );
    // Ordinary writes stay allowed below the range.
    let write = rules_for(&p, "pwrite64");
    assert_eq!(write.len(), 2);
    assert_eq!(write[1]["action"], "SCMP_ACT_ALLOW");
    assert_eq!(
        write[1]["args"],
        json!([{"index": 0, "value": 19_936, "op": "SCMP_CMP_LT"}])
    );
    // Without a range, open and write keep Docker's own rule.
    assert!(add_barrier_rules(&mut without_range, &NONE).is_empty());
    assert!(
        without_range["syscalls"][0]["names"]
            .as_array()
            .expect("names")
            .iter()
            .any(|n| n == "pwrite64")
    );
}
