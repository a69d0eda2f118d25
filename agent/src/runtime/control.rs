//! The control socket: a unix socket only root can use (mode 0600 in a 0700 state
//! directory), one JSON request line per connection.
//!
//! - `{"op":"status"}` answers the status as one JSON line (`tandem status`).
//! - `{"op":"barrier-attach"}` hands a process's seccomp listener to the barrier
//!   (`tandem exec`, see `barrier::attach`).
//! - `{"op":"prim","force":false}`, `second`, `swap`, `stop`, `start`: the
//!   administrator's commands, handed to the failover engine; the answer
//!   (`{"ok":true}`) says the engine has them, not that they are done.

use std::{
    io::Write,
    os::unix::{
        fs::PermissionsExt,
        net::{UnixListener, UnixStream},
    },
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use anyhow::Context;

use crate::{
    barrier::{
        Registrar,
        attach::{ATTACH_OP, read_request_line, serve_attach},
    },
    failover::Event,
    status::{Shared, Status},
};

/// The running control server.
pub struct Control {
    stop: Arc<AtomicBool>,
    path: PathBuf,
}

impl Control {
    /// Stops accepting and removes the socket.
    pub fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop so it sees the flag.
        let _ = UnixStream::connect(&self.path);
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Binds the socket (replacing a stale one) and serves it on a thread.
pub fn serve(
    path: &Path,
    status: Shared,
    registrar: Registrar,
    admin: tokio::sync::mpsc::Sender<Event>,
) -> anyhow::Result<Control> {
    // A predecessor that is still exiting may answer for a moment; a live one
    // answers throughout.
    let mut tries = 0;
    while UnixStream::connect(path).is_ok() {
        tries += 1;
        if tries > 40 {
            anyhow::bail!("another agent already answers on {}", path.display());
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let _ = std::fs::remove_file(path);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let listener =
        UnixListener::bind(path).with_context(|| format!("cannot bind {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot restrict {}", path.display()))?;
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    std::thread::Builder::new()
        .name("control".into())
        .spawn(move || {
            for conn in listener.incoming() {
                if flag.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                let status = status.clone();
                let registrar = registrar.clone();
                let admin = admin.clone();
                let _ = std::thread::Builder::new()
                    .name("control-conn".into())
                    .spawn(move || handle(&conn, &status, &registrar, &admin));
            }
        })
        .context("cannot start the control thread")?;
    Ok(Control {
        stop,
        path: path.to_path_buf(),
    })
}

#[derive(serde::Deserialize)]
struct Request {
    op: String,
    #[serde(default)]
    force: bool,
}

/// The administrator's command named `op`, if it is one.
fn admin_event(op: &str, force: bool) -> Option<Event> {
    Some(match op {
        "prim" => Event::AdminPrim { force },
        "second" => Event::AdminSecond,
        "swap" => Event::AdminSwap,
        "stop" => Event::Stop,
        "start" => Event::Start,
        _ => return None,
    })
}

fn handle(
    conn: &UnixStream,
    status: &Shared,
    registrar: &Registrar,
    admin: &tokio::sync::mpsc::Sender<Event>,
) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    let Ok(line) = read_request_line(conn) else {
        return;
    };
    let req = serde_json::from_str::<Request>(&line);
    let force = req.as_ref().is_ok_and(|r| r.force);
    let op = req.map(|r| r.op);
    let mut w = conn;
    if let Some(ev) = op.as_deref().ok().and_then(|op| admin_event(op, force)) {
        tracing::info!(command = ?ev, "administrator command");
        let answer: &[u8] = if admin.blocking_send(ev).is_ok() {
            b"{\"ok\":true}\n"
        } else {
            b"{\"error\":\"the agent is stopping\"}\n"
        };
        let _ = w.write_all(answer);
        return;
    }
    match op.as_deref() {
        Ok("status") => {
            let mut text = serde_json::to_string(&status.get()).unwrap_or_default();
            text.push('\n');
            let _ = w.write_all(text.as_bytes());
        }
        Ok(op) if op == ATTACH_OP => match serve_attach(conn, registrar) {
            Ok(pid) => tracing::info!(pid, "process attached to the durability barrier"),
            Err(e) => tracing::warn!(error = %e, "barrier attach failed"),
        },
        _ => {
            let _ = w.write_all(b"{\"error\":\"unknown request\"}\n");
        }
    }
}

/// Asks the agent at `path` for its status.
pub fn query_status(path: &Path) -> anyhow::Result<Status> {
    use std::io::{BufRead, BufReader};
    let mut s = UnixStream::connect(path)
        .with_context(|| format!("no agent answers on {}", path.display()))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(b"{\"op\":\"status\"}\n")?;
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line)?;
    serde_json::from_str(&line).context("the agent's status is not valid JSON")
}

/// Sends an administrator command (`prim`, `second`, `swap`, `stop`, `start`) to the
/// agent at `path`.
pub fn send_admin(path: &Path, op: &str, force: bool) -> anyhow::Result<()> {
    use std::io::{BufRead, BufReader};
    let mut s = UnixStream::connect(path)
        .with_context(|| format!("no agent answers on {}", path.display()))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let req = serde_json::json!({ "op": op, "force": force });
    s.write_all(format!("{req}\n").as_bytes())?;
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line)?;
    let v: serde_json::Value =
        serde_json::from_str(&line).context("the agent's answer is not valid JSON")?;
    match v.get("error").and_then(serde_json::Value::as_str) {
        Some(e) => anyhow::bail!("the agent refused: {e}"),
        None => Ok(()),
    }
}
