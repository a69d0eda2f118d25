//! The RPO test's application: appends numbered 64-byte records to a file, makes each
//! durable with fdatasync, and only then prints its number. Every number printed is a
//! write the application was told is durable, so it must survive on the peer.
//!
//! Usage: `rpo-writer FILE` (runs until killed or until a durability call fails).

use std::{fs::OpenOptions, io::Write, os::unix::fs::OpenOptionsExt};

fn main() {
    let Some(path) = std::env::args_os().nth(1) else {
        eprintln!("usage: rpo-writer FILE");
        std::process::exit(2);
    };
    let mut f = match OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o644)
        .open(&path)
    {
        Ok(f) => f,
        Err(e) => {
            eprintln!("rpo-writer: {}: {e}", std::path::Path::new(&path).display());
            std::process::exit(1);
        }
    };
    let mut out = std::io::stdout().lock();
    for i in 0u64.. {
        let mut rec = format!("record {i:>20} ");
        while rec.len() < 63 {
            rec.push('.');
        }
        rec.push('\n');
        if let Err(e) = f.write_all(rec.as_bytes()).and_then(|()| f.sync_data()) {
            eprintln!("rpo-writer: record {i}: {e}");
            std::process::exit(1);
        }
        if writeln!(out, "{i}").and_then(|()| out.flush()).is_err() {
            std::process::exit(1);
        }
    }
}
