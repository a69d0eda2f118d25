//! The demo's sample service (`tandem lab service`, hidden): a tiny TCP "database"
//! that the failover engine starts on the primary, listening on every address of
//! its namespace (the VIP included, once the engine adds it).
//!
//! One request per connection:
//! - `WRITE <id>` appends the line `<id> <node>` to [`WRITES_FILE`] in the
//!   replicated directory, `fdatasync`s it and only then answers `OK <node> <id>`.
//!   The agent starts the application under the durability barrier, so the
//!   `fdatasync` returns only once the peer holds the line: an `OK` is a promise
//!   that the write survives the loss of this node.
//! - `WHO`, an empty line, or nothing at all answers the node's name, so a probe
//!   (or a checker that only connects) sees who serves.

use std::{
    io::{BufRead, BufReader, ErrorKind, Read, Write},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use anyhow::Context;

/// The file, in the replicated directory, that acknowledged writes are appended to.
pub const WRITES_FILE: &str = "demo-writes.log";

/// How long a connection may take to send its request line.
const READ_TIMEOUT: Duration = Duration::from_millis(500);
/// How long the answer may take to leave.
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest request line read.
const MAX_LINE: u64 = 128;
/// Connections served at once; more are refused, so a flood cannot exhaust threads.
const MAX_CONNECTIONS: usize = 64;

/// A parsed request.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Request {
    /// Append write `id`.
    Write(u64),
    /// Say who serves.
    Who,
    /// Anything else.
    Invalid,
}

/// Parses one request line (without its newline).
pub(crate) fn parse(line: &str) -> Request {
    let mut words = line.split_whitespace();
    match (words.next(), words.next(), words.next()) {
        (None | Some("WHO"), None, None) => Request::Who,
        (Some("WRITE"), Some(id), None) => id.parse().map_or(Request::Invalid, Request::Write),
        _ => Request::Invalid,
    }
}

/// Serves forever on `0.0.0.0:port`, as node `name`, writing into `data`.
pub fn serve(name: &str, port: u16, data: &Path) -> anyhow::Result<()> {
    let listener = TcpListener::bind(("0.0.0.0", port))
        .with_context(|| format!("cannot listen on port {port}"))?;
    eprintln!(
        "demo service {name}: listening on port {port}, writing to {}",
        data.join(WRITES_FILE).display()
    );
    let name: Arc<str> = Arc::from(name);
    let file: Arc<Path> = Arc::from(data.join(WRITES_FILE));
    let busy = Arc::new(AtomicUsize::new(0));
    for conn in listener.incoming() {
        let conn = match conn {
            Ok(c) => c,
            // A connection that failed before it was accepted concerns only its
            // client; keep serving the others.
            Err(e) => {
                eprintln!("demo service {name}: accept: {e}");
                continue;
            }
        };
        if busy.fetch_add(1, Ordering::AcqRel) >= MAX_CONNECTIONS {
            busy.fetch_sub(1, Ordering::AcqRel);
            let _ = (&conn).write_all(b"ERR busy\n");
            continue;
        }
        let (name, file, busy) = (name.clone(), file.clone(), busy.clone());
        // One thread per connection: a write held by the barrier (up to the
        // heartbeat timeout while the peer disappears) must not stall the probes
        // answered meanwhile.
        let spawned = std::thread::Builder::new()
            .name("demo-conn".into())
            .spawn(move || {
                if let Err(e) = handle(conn, &name, &file) {
                    eprintln!("demo service {name}: {e}");
                }
                busy.fetch_sub(1, Ordering::AcqRel);
            });
        if let Err(e) = spawned {
            eprintln!("demo service: cannot start a connection thread: {e}");
        }
    }
    Ok(())
}

/// Reads one request from `conn` and answers it.
fn handle(conn: TcpStream, name: &str, file: &Path) -> std::io::Result<()> {
    conn.set_read_timeout(Some(READ_TIMEOUT))?;
    conn.set_write_timeout(Some(WRITE_TIMEOUT))?;
    let mut line = String::new();
    match BufReader::new((&conn).take(MAX_LINE)).read_line(&mut line) {
        Ok(_) => {}
        // A client that says nothing gets the node's name, like `WHO`.
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
            line.clear();
        }
        Err(e) => return Err(e),
    }
    let reply = match parse(line.trim()) {
        Request::Who => format!("{name}\n"),
        Request::Write(id) => match append(file, id, name) {
            Ok(()) => format!("OK {name} {id}\n"),
            // Not durable, so not acknowledged: the client must not count it.
            Err(e) => format!("ERR {e}\n"),
        },
        Request::Invalid => "ERR expected `WRITE <id>` or `WHO`\n".to_owned(),
    };
    (&conn).write_all(reply.as_bytes())
}

/// Appends `<id> <node>` to `file` and makes it durable.
fn append(file: &Path, id: u64, node: &str) -> std::io::Result<()> {
    // Opened per write: while this node was away, a resync may have replaced the
    // file under its name.
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(file)?;
    // One write(2) per line, so concurrent connections never interleave a line.
    f.write_all(format!("{id} {node}\n").as_bytes())?;
    // fdatasync: held by the barrier until the peer has the line.
    f.sync_data()
}

/// The write ids recorded in a copy of [`WRITES_FILE`] under `data` (none when the
/// file does not exist yet).
pub(crate) fn recorded_ids(data: &Path) -> anyhow::Result<std::collections::HashSet<u64>> {
    let path: PathBuf = data.join(WRITES_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    Ok(text
        .lines()
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse() {
        assert_eq!(parse("WRITE 42"), Request::Write(42));
        assert_eq!(parse("WHO"), Request::Who);
        assert_eq!(parse(""), Request::Who);
        assert_eq!(parse("WRITE"), Request::Invalid);
        assert_eq!(parse("WRITE x"), Request::Invalid);
        assert_eq!(parse("WRITE 1 2"), Request::Invalid);
        assert_eq!(parse("DROP TABLE"), Request::Invalid);
    }

    #[test]
    fn a_write_is_recorded_and_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        append(&dir.path().join(WRITES_FILE), 7, "node1").unwrap();
        append(&dir.path().join(WRITES_FILE), 8, "node1").unwrap();
        let ids = recorded_ids(dir.path()).unwrap();
        assert_eq!(ids, [7, 8].into_iter().collect());
        let empty = tempfile::tempdir().unwrap();
        assert!(recorded_ids(empty.path()).unwrap().is_empty());
    }

    #[test]
    fn the_service_answers_over_tcp() {
        let dir = tempfile::tempdir().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let file = dir.path().join(WRITES_FILE);
        let server = std::thread::spawn(move || {
            for _ in 0..2 {
                let (c, _) = listener.accept().unwrap();
                handle(c, "node9", &file).unwrap();
            }
        });
        let ask = |req: &str| {
            let mut s = TcpStream::connect(addr).unwrap();
            s.write_all(req.as_bytes()).unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).unwrap();
            out
        };
        assert_eq!(ask("WRITE 5\n"), "OK node9 5\n");
        assert_eq!(ask("WHO\n"), "node9\n");
        server.join().unwrap();
        assert!(recorded_ids(dir.path()).unwrap().contains(&5));
    }
}
