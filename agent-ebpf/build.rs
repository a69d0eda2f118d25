//! Compiles the C eBPF programs in `src/bpf/` with clang into `$OUT_DIR`.
//!
//! `TANDEM_BPF_SKIP=1` writes empty objects instead, so that `cargo check`, clippy
//! and docs work on a machine without clang; such a binary refuses to capture with a
//! one-line error. `CLANG` overrides the compiler.

use std::{env, path::PathBuf, process::Command};

const PROGRAMS: &[&str] = &["capture"];
const HEADERS: &[&str] = &["tandem_abi.h", "vmlinux/x86_64/vmlinux.h"];

fn main() -> Result<(), String> {
    let out = PathBuf::from(env::var("OUT_DIR").map_err(|e| e.to_string())?);
    let src = PathBuf::from("src/bpf");
    println!("cargo:rerun-if-env-changed=TANDEM_BPF_SKIP");
    println!("cargo:rerun-if-env-changed=CLANG");
    for h in HEADERS {
        println!("cargo:rerun-if-changed={}", src.join(h).display());
    }
    let skip = env::var("TANDEM_BPF_SKIP").is_ok_and(|v| v == "1");
    let clang = env::var("CLANG").unwrap_or_else(|_| "clang".to_owned());
    let arch = match env::var("CARGO_CFG_TARGET_ARCH").as_deref() {
        Ok("x86_64") => "x86",
        Ok("aarch64") => "arm64",
        Ok(other) => return Err(format!("unsupported target architecture for eBPF: {other}")),
        Err(e) => return Err(e.to_string()),
    };
    for prog in PROGRAMS {
        let c = src.join(format!("{prog}.bpf.c"));
        let obj = out.join(format!("{prog}.bpf.o"));
        println!("cargo:rerun-if-changed={}", c.display());
        if skip {
            std::fs::write(&obj, b"").map_err(|e| e.to_string())?;
            continue;
        }
        let status = Command::new(&clang)
            .args(["-g", "-O2", "-target", "bpfel", "-Wall", "-Werror"])
            .arg(format!("-D__TARGET_ARCH_{arch}"))
            .arg("-I")
            .arg(src.join("vmlinux/x86_64"))
            .arg("-I")
            .arg(&src)
            .arg("-c")
            .arg(&c)
            .arg("-o")
            .arg(&obj)
            .status()
            .map_err(|e| {
                format!(
                    "cannot run {clang} ({e}); install clang and libbpf-dev \
                     (scripts/setup.sh does), or set TANDEM_BPF_SKIP=1 for a check build"
                )
            })?;
        if !status.success() {
            return Err(format!("{clang} failed on {}", c.display()));
        }
    }
    Ok(())
}
