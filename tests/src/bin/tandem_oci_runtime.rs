//! A stand-in for the future `tandem oci-runtime` subcommand, for the Docker tests:
//! an OCI runtime that puts containers under the barrier and then runs runc
//! ([`tandem::barrier::oci`]).
//!
//! Usage (as Docker's `runtimeArgs` prefix): `tandem-oci-runtime --listener SOCKET
//! --runc RUNC -- RUNC-ARGS...`.

use std::{ffi::OsString, path::PathBuf};

fn main() {
    let mut args = std::env::args_os().skip(1);
    let mut listener: Option<PathBuf> = None;
    let mut runc: Option<PathBuf> = None;
    while let Some(arg) = args.next() {
        match arg.to_str() {
            Some("--listener") => listener = args.next().map(PathBuf::from),
            Some("--runc") => runc = args.next().map(PathBuf::from),
            Some("--") => break,
            _ => usage(),
        }
    }
    let (Some(listener), Some(runc)) = (listener, runc) else {
        usage()
    };
    let rest: Vec<OsString> = args.collect();
    let error = tandem::barrier::oci::run_oci_runtime(&runc, &listener, &rest);
    // runc's caller (containerd's shim) shows stderr in Docker's error message.
    eprintln!("tandem-oci-runtime: {error}");
    let mut source = std::error::Error::source(&error);
    while let Some(e) = source {
        eprintln!("  caused by: {e}");
        source = e.source();
    }
    std::process::exit(1);
}

fn usage() -> ! {
    eprintln!("usage: tandem-oci-runtime --listener SOCKET --runc RUNC -- RUNC-ARGS...");
    std::process::exit(2);
}
