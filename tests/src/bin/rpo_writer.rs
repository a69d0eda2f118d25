//! The RPO test's application: appends numbered 64-byte records to a file, makes each
//! durable, and only then prints its number. Every number printed is a write the
//! application was told is durable, so it must survive on the peer.
//!
//! Usage: `rpo-writer [--how fdatasync|o-dsync|rwf-dsync] FILE` (runs until killed or
//! until a write or durability call fails). How each record is made durable:
//! - `fdatasync` (the default): a plain write, then fdatasync;
//! - `o-dsync`: the file is opened with `O_DSYNC`, so each write is durable when it
//!   returns;
//! - `rwf-dsync`: each record is one pwritev2 with `RWF_DSYNC` at the file position.

use std::{
    fs::{File, OpenOptions},
    io::Write,
    os::{fd::AsRawFd, unix::fs::OpenOptionsExt},
};

#[derive(Clone, Copy, PartialEq)]
enum How {
    Fdatasync,
    ODsync,
    RwfDsync,
}

fn main() {
    let mut args: Vec<_> = std::env::args_os().skip(1).collect();
    let mut how = How::Fdatasync;
    if args.first().is_some_and(|a| a == "--how") {
        how = match args.get(1).and_then(|h| h.to_str()) {
            Some("fdatasync") => How::Fdatasync,
            Some("o-dsync") => How::ODsync,
            Some("rwf-dsync") => How::RwfDsync,
            other => {
                eprintln!("rpo-writer: unknown --how {other:?} (fdatasync, o-dsync, rwf-dsync)");
                std::process::exit(2);
            }
        };
        args.drain(..2);
    }
    let [path] = args.as_slice() else {
        eprintln!("usage: rpo-writer [--how fdatasync|o-dsync|rwf-dsync] FILE");
        std::process::exit(2);
    };
    let flags = if how == How::ODsync { libc::O_DSYNC } else { 0 };
    let mut f = match OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o644)
        .custom_flags(flags)
        .open(path)
    {
        Ok(f) => f,
        Err(e) => {
            eprintln!("rpo-writer: {}: {e}", std::path::Path::new(path).display());
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
        let durable = match how {
            How::Fdatasync => f.write_all(rec.as_bytes()).and_then(|()| f.sync_data()),
            How::ODsync => f.write_all(rec.as_bytes()),
            How::RwfDsync => write_dsync(&f, rec.as_bytes()),
        };
        if let Err(e) = durable {
            eprintln!("rpo-writer: record {i}: {e}");
            std::process::exit(1);
        }
        if writeln!(out, "{i}").and_then(|()| out.flush()).is_err() {
            std::process::exit(1);
        }
    }
}

/// One pwritev2 with `RWF_DSYNC` at the file position (the file is in append mode).
fn write_dsync(f: &File, buf: &[u8]) -> std::io::Result<()> {
    let iov = libc::iovec {
        iov_base: buf.as_ptr().cast_mut().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: the iovec points to `buf`, which outlives the call; pwritev2 only reads it.
    let n = unsafe { libc::pwritev2(f.as_raw_fd(), &raw const iov, 1, -1, libc::RWF_DSYNC) };
    match usize::try_from(n) {
        Ok(n) if n == buf.len() => Ok(()),
        Ok(n) => Err(std::io::Error::other(format!("short write of {n} bytes"))),
        Err(_) => Err(std::io::Error::last_os_error()),
    }
}
