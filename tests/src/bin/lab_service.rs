//! The lab's "application": a TCP service that answers every connection with its
//! node's name, so that a client probing the VIP sees which node serves it.
//!
//! Usage: `lab-service NAME PORT`. It listens on every address of its network
//! namespace (the VIP included, once added) until killed.

use std::{io::Write, net::TcpListener};

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(name), Some(port)) = (args.next(), args.next()) else {
        eprintln!("usage: lab-service NAME PORT");
        std::process::exit(2);
    };
    let Ok(port) = port.parse::<u16>() else {
        eprintln!("lab-service: {port:?} is not a port");
        std::process::exit(2);
    };
    let listener = match TcpListener::bind(("0.0.0.0", port)) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("lab-service: cannot listen on port {port}: {e}");
            std::process::exit(1);
        }
    };
    let answer = format!("{name}\n");
    for conn in listener.incoming().flatten() {
        let mut conn = conn;
        let _ = conn.write_all(answer.as_bytes());
    }
}
