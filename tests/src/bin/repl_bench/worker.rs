//! The workloads, run as separate processes (`repl-bench worker KIND ARGS`) inside a
//! node's namespace, either directly or under `tandem exec` (the durability barrier):
//! the same program does the replicated and the unreplicated run, so the only
//! difference is the directory and the barrier. Each prints one JSON line at the end.

use std::{
    fs::{File, OpenOptions},
    io::Write,
    net::UdpSocket,
    os::fd::AsRawFd,
    os::unix::fs::FileExt,
    time::{Duration, Instant},
};

use serde_json::json;

use super::util::Res;

/// Entry point of `repl-bench worker ARGS`.
pub(crate) fn main(args: &[String]) -> Res<()> {
    let arg = |i: usize| -> Res<&str> {
        args.get(i)
            .map(String::as_str)
            .ok_or_else(|| format!("worker {args:?}: argument {i} missing"))
    };
    let int = |i: usize| -> Res<u64> {
        arg(i)?
            .parse()
            .map_err(|e| format!("worker argument {}: {e}", i))
    };
    let out = match arg(0)? {
        "seq" => sequential(arg(1)?, int(2)?, int(3)?)?,
        "lat" => latency(
            arg(1)?,
            int(2)?,
            int(3)?,
            match arg(4) {
                Ok("syncfs") => Durable::Syncfs,
                Ok("dsync") => Durable::ODsync,
                _ => Durable::Fsync,
            },
        )?,
        "stream" => stream(arg(1)?, int(2)?, int(3)?, int(4)?)?,
        "udp-echo" => udp_echo(arg(1)?)?,
        "udp-ping" => udp_ping(arg(1)?, int(2)?)?,
        other => return Err(format!("unknown worker {other}")),
    };
    println!("{out}");
    Ok(())
}

/// A buffer of pseudo-random bytes: the agent does not compress, but the data should
/// not be trivially repetitive either.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

fn create(path: &str) -> Res<File> {
    OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(path)
        .map_err(|e| format!("{path}: {e}"))
}

/// Writes `total` bytes in `chunk`-byte writes, then one fsync; times both.
fn sequential(path: &str, total: u64, chunk: u64) -> Res<serde_json::Value> {
    let mut buf = noise(usize::try_from(chunk).map_err(|e| e.to_string())?, total);
    let mut f = create(path)?;
    let t0 = Instant::now();
    let mut done = 0u64;
    while done < total {
        // A different stamp per chunk: every MiB of the file is distinct.
        buf[..8].copy_from_slice(&done.to_le_bytes());
        f.write_all(&buf).map_err(|e| format!("write: {e}"))?;
        done += chunk;
    }
    let t1 = Instant::now();
    f.sync_all().map_err(|e| format!("fsync: {e}"))?;
    let t2 = Instant::now();
    Ok(json!({
        "bytes": done,
        "write_secs": (t1 - t0).as_secs_f64(),
        "fsync_secs": (t2 - t1).as_secs_f64(),
        "secs": (t2 - t0).as_secs_f64(),
    }))
}

/// How each 4 KiB write of the latency workload is made durable.
#[derive(Clone, Copy, PartialEq)]
enum Durable {
    Fsync,
    /// A diagnostic: syncfs of the whole filesystem, which is what the secondary
    /// does to make replicated data durable.
    Syncfs,
    /// The file is opened with `O_DSYNC`: the write itself is durable when it returns.
    ODsync,
}

/// `warmup + iters` appends of 4 KiB, each made durable `how`; the timed ones are
/// returned in microseconds.
fn latency(path: &str, iters: u64, warmup: u64, how: Durable) -> Res<serde_json::Value> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut buf = noise(4096, iters);
    let f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .custom_flags(if how == Durable::ODsync {
            libc::O_DSYNC
        } else {
            0
        })
        .open(path)
        .map_err(|e| format!("{path}: {e}"))?;
    let mut samples = Vec::with_capacity(usize::try_from(iters).unwrap_or(0));
    // A cap, so that a run whose every fsync waits out the barrier's timeout ends.
    let end = Instant::now() + Duration::from_secs(120);
    for i in 0..warmup + iters {
        if Instant::now() > end {
            break;
        }
        buf[..8].copy_from_slice(&i.to_le_bytes());
        let t = Instant::now();
        f.write_all_at(&buf, i * 4096)
            .map_err(|e| format!("pwrite: {e}"))?;
        match how {
            Durable::Syncfs => {
                // SAFETY: syncfs takes a descriptor we own and touches no memory of ours.
                if unsafe { libc::syncfs(f.as_raw_fd()) } != 0 {
                    return Err(format!("syncfs: {}", std::io::Error::last_os_error()));
                }
            }
            Durable::Fsync => f.sync_all().map_err(|e| format!("fsync: {e}"))?,
            Durable::ODsync => {}
        }
        if i >= warmup {
            samples.push(t.elapsed().as_secs_f64() * 1e6);
        }
    }
    Ok(json!({ "samples_us": samples }))
}

/// Writes `chunk`-byte blocks round and round a `size`-byte file for `secs` seconds,
/// with no fsync; prints `start` when it begins so the caller can time it.
fn stream(path: &str, size: u64, chunk: u64, secs: u64) -> Res<serde_json::Value> {
    let mut buf = noise(usize::try_from(chunk).map_err(|e| e.to_string())?, size);
    let f = create(path)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "start")
        .and_then(|()| out.flush())
        .map_err(|e| e.to_string())?;
    let t0 = Instant::now();
    let end = t0 + Duration::from_secs(secs);
    let (mut off, mut written, mut n) = (0u64, 0u64, 0u64);
    while Instant::now() < end {
        buf[..8].copy_from_slice(&n.to_le_bytes());
        f.write_all_at(&buf, off)
            .map_err(|e| format!("pwrite: {e}"))?;
        written += chunk;
        n += 1;
        off = (off + chunk) % size;
    }
    Ok(json!({ "bytes": written, "secs": t0.elapsed().as_secs_f64() }))
}

/// Echoes UDP datagrams until nobody has sent one for 30 s (or it is killed).
fn udp_echo(addr: &str) -> Res<serde_json::Value> {
    let s = UdpSocket::bind(addr).map_err(|e| format!("bind {addr}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    println!("ready");
    let mut buf = [0u8; 2048];
    let mut n = 0u64;
    while let Ok((len, from)) = s.recv_from(&mut buf) {
        let _ = s.send_to(&buf[..len], from);
        n += 1;
    }
    Ok(json!({ "echoed": n }))
}

/// Sends `count` 64-byte datagrams one at a time and times each round trip.
fn udp_ping(addr: &str, count: u64) -> Res<serde_json::Value> {
    let s = UdpSocket::bind("0.0.0.0:0").map_err(|e| e.to_string())?;
    s.connect(addr)
        .map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .map_err(|e| e.to_string())?;
    let mut samples = Vec::new();
    let mut lost = 0u64;
    let mut buf = [0u8; 64];
    for i in 0..count + 200 {
        let msg = i.to_le_bytes();
        let mut payload = [0u8; 64];
        payload[..8].copy_from_slice(&msg);
        let t = Instant::now();
        s.send(&payload).map_err(|e| format!("send: {e}"))?;
        loop {
            match s.recv(&mut buf) {
                Ok(len) if len >= 8 && buf[..8] == msg => {
                    // The first 200 are warm-up (ARP, caches, wake-up paths).
                    if i >= 200 {
                        samples.push(t.elapsed().as_secs_f64() * 1e6);
                    }
                    break;
                }
                Ok(_) => {}
                Err(_) => {
                    lost += 1;
                    break;
                }
            }
        }
    }
    Ok(json!({ "samples_us": samples, "lost": lost }))
}
