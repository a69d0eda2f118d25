//! Processes the benchmark starts inside a lab namespace, and the rule that it
//! only ever signals those: every one is held as a `Child`, signalled by its own
//! pid, and reaped here.

use std::{
    os::unix::process::CommandExt,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::Context;
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};

/// A process started inside a namespace; SIGKILLed (by its pid) and reaped when
/// dropped.
pub(crate) struct NsProc {
    child: Option<Child>,
    what: String,
}

impl NsProc {
    /// Starts `argv` in namespace `ns` with `ip netns exec`, which enters the
    /// namespace and then execs `argv` in place, so the child's pid is the
    /// program's own. Standard output and error are piped when `piped`.
    ///
    /// The child gets SIGKILL if this process dies first (PR_SET_PDEATHSIG), so a
    /// benchmark killed without a chance to clean up leaves nothing running.
    pub(crate) fn spawn(ns: &str, argv: &[String], piped: bool) -> anyhow::Result<NsProc> {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns])
            .args(argv)
            .stdin(Stdio::null());
        if piped {
            c.stdout(Stdio::piped()).stderr(Stdio::piped());
        } else {
            c.stdout(Stdio::null()).stderr(Stdio::inherit());
        }
        // SAFETY: the closure runs in the forked child before exec and only makes
        // the prctl(2) system call, which is async-signal-safe; it touches no
        // memory of the parent.
        unsafe {
            c.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)
            });
        }
        let what = format!("`{}` in {ns}", argv.join(" "));
        let child = c.spawn().with_context(|| format!("cannot start {what}"))?;
        Ok(NsProc {
            child: Some(child),
            what,
        })
    }

    /// The process's pid.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The child itself, to take its pipes.
    pub(crate) fn child_mut(&mut self) -> Option<&mut Child> {
        self.child.as_mut()
    }

    /// Whether it is still running (not exited, or exited but not reaped).
    pub(crate) fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Sends `sig` to it.
    pub(crate) fn signal(&self, sig: Signal) -> anyhow::Result<()> {
        let pid = self.pid().context("the process was already reaped")?;
        let pid = i32::try_from(pid).context("pid out of range")?;
        kill(Pid::from_raw(pid), sig).with_context(|| format!("cannot signal {}", self.what))
    }

    /// Waits for it to exit, up to `grace`, then SIGKILLs it; reaps it.
    pub(crate) fn stop(&mut self, first: Signal, grace: Duration) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if matches!(child.try_wait(), Ok(None)) {
            if let Ok(pid) = i32::try_from(child.id()) {
                let _ = kill(Pid::from_raw(pid), first);
            }
            let end = Instant::now() + grace;
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < end {
                std::thread::sleep(Duration::from_millis(20));
            }
            // `Child::kill` signals this child's own pid and does nothing once it
            // has been reaped.
            let _ = child.kill();
        }
        let _ = child.wait();
    }

    /// Reaps it after it was killed (blocks until it has exited).
    pub(crate) fn reap(&mut self) -> anyhow::Result<()> {
        if let Some(mut c) = self.child.take() {
            c.wait()
                .with_context(|| format!("cannot reap {}", self.what))?;
        }
        Ok(())
    }
}

impl Drop for NsProc {
    fn drop(&mut self) {
        self.stop(Signal::SIGKILL, Duration::ZERO);
    }
}
