//! The lab's "application": a TCP service that answers every connection with its
//! node's name, so that a client probing the VIP sees which node serves it.
//!
//! Usage: `lab-service NAME PORT [LEDGER]`. It listens on every address of its
//! network namespace (the VIP included, once added) until killed. With a ledger
//! file it also takes acknowledged writes on PORT + 1: a connection sends one
//! decimal number and a newline; the service appends the line to the ledger,
//! makes it durable with fdatasync (which Tandem's barrier holds until the peer
//! has it) and answers `NAME N`, or `NAME -` when the write or the sync failed.
//! A client that got `NAME N` may count on N surviving any failover.

use std::{
    fs::{File, OpenOptions},
    io::{BufRead, BufReader, Write},
    net::{TcpListener, TcpStream},
    path::PathBuf,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(name), Some(port)) = (args.next(), args.next()) else {
        eprintln!("usage: lab-service NAME PORT [LEDGER]");
        std::process::exit(2);
    };
    let Ok(port) = port.parse::<u16>() else {
        eprintln!("lab-service: {port:?} is not a port");
        std::process::exit(2);
    };
    let listener = bind(port);
    if let Some(ledger) = args.next().map(PathBuf::from) {
        let writes = bind(port.saturating_add(1));
        let file = match OpenOptions::new().create(true).append(true).open(&ledger) {
            Ok(f) => Arc::new(Mutex::new(f)),
            Err(e) => {
                eprintln!("lab-service: cannot open {}: {e}", ledger.display());
                std::process::exit(1);
            }
        };
        let name = name.clone();
        std::thread::spawn(move || {
            for conn in writes.incoming().flatten() {
                let (file, name) = (file.clone(), name.clone());
                std::thread::spawn(move || serve_write(conn, &file, &name));
            }
        });
    }
    let answer = format!("{name}\n");
    for conn in listener.incoming().flatten() {
        let mut conn = conn;
        let _ = conn.write_all(answer.as_bytes());
    }
}

fn bind(port: u16) -> TcpListener {
    match TcpListener::bind(("0.0.0.0", port)) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("lab-service: cannot listen on port {port}: {e}");
            std::process::exit(1);
        }
    }
}

/// One acknowledged write. Writes are serialised on the ledger so that lines
/// never interleave; the answer goes out only after fdatasync returned.
fn serve_write(conn: TcpStream, file: &Mutex<File>, name: &str) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
    let mut line = String::new();
    let Ok(mut reader) = conn.try_clone().map(BufReader::new) else {
        return;
    };
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let Ok(n) = line.trim().parse::<u64>() else {
        return;
    };
    let durable = {
        let mut f = file.lock().unwrap_or_else(PoisonError::into_inner);
        f.write_all(format!("{n}\n").as_bytes()).is_ok() && f.sync_data().is_ok()
    };
    let answer = if durable {
        format!("{name} {n}\n")
    } else {
        format!("{name} -\n")
    };
    let mut conn = conn;
    let _ = conn.write_all(answer.as_bytes());
}
