//! The lab's agent processes: started detached inside a node's namespace, found
//! again by pid, and stopped only while their command line is still the one we
//! started (a recorded pid may have been reused by an unrelated process).

use std::{
    fs::File,
    os::unix::process::CommandExt,
    path::Path,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::Context;
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};

/// How often a stopping process is looked at.
const POLL: Duration = Duration::from_millis(20);
/// How long a process gets to vanish after SIGKILL.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// Starts `argv` inside namespace `ns` as a new session, with standard output and
/// error appended to `log`, and returns its pid.
///
/// `ip netns exec` enters the namespace and then replaces itself with `argv`
/// (it does not fork), so the pid returned is the command's own.
pub(crate) fn start(ns: &str, argv: &[String], log: &Path) -> anyhow::Result<u32> {
    let out = File::options()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("cannot open {}", log.display()))?;
    let err = out.try_clone().context("cannot duplicate the log file")?;
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns])
        .args(argv)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    // SAFETY: the closure runs in the forked child before exec and only calls
    // setsid(2), which is async-signal-safe; it touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start `{}` in {ns}", argv.join(" ")))?;
    let pid = child.id();
    // The agent outlives a `tandem lab up` (it is re-parented to init); while this
    // process lives, a thread reaps it so that a stopped agent leaves no zombie.
    thread::spawn(move || {
        let _ = child.wait();
    });
    Ok(pid)
}

/// Whether `pid` is a live (not zombie) process whose command line is `argv`.
pub(crate) fn is_ours(pid: u32, argv: &[String]) -> bool {
    is_alive(pid) && cmdline(pid).is_some_and(|c| c == argv)
}

/// Whether `pid` exists and is not a zombie.
pub(crate) fn is_alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state follows the command name, which is in parentheses and may itself
    // contain spaces or parentheses: take the text after the last ')'.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next());
    !matches!(state, None | Some("Z" | "X"))
}

/// The command line of `pid`, split at its NULs.
pub(crate) fn cmdline(pid: u32) -> Option<Vec<String>> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let text = String::from_utf8_lossy(&raw);
    Some(
        text.strip_suffix('\0')
            .unwrap_or(&text)
            .split('\0')
            .map(str::to_owned)
            .collect(),
    )
}

/// Stops `pid` if it is still running `argv`: SIGTERM, then SIGKILL after `grace`.
/// Returns whether a process was stopped.
pub(crate) fn stop(pid: u32, argv: &[String], grace: Duration) -> anyhow::Result<bool> {
    if !is_ours(pid, argv) {
        return Ok(false);
    }
    let target = Pid::from_raw(i32::try_from(pid).context("pid out of range")?);
    send(target, Signal::SIGTERM)?;
    if wait_gone(pid, grace) {
        return Ok(true);
    }
    // Check again: between the two signals the pid may have been reused.
    if is_ours(pid, argv) {
        send(target, Signal::SIGKILL)?;
    }
    if wait_gone(pid, KILL_WAIT) {
        Ok(true)
    } else {
        anyhow::bail!("process {pid} did not exit after SIGKILL")
    }
}

fn send(pid: Pid, signal: Signal) -> anyhow::Result<()> {
    match kill(pid, signal) {
        // Already gone: that is what we wanted.
        Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot send {signal} to {pid}")),
    }
}

/// Waits until `pid` has exited (or is a zombie) for at most `limit`.
fn wait_gone(pid: u32, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if !is_alive(pid) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(POLL);
    }
}
