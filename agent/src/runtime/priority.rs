//! The agent's scheduling priority. Heartbeats are only as punctual as the
//! threads that send and hear them: on a machine whose every CPU is busy, an
//! agent at the default priority can wait longer than a tuned heartbeat timeout
//! for a core, and its peer then declares it lost (measured: several false
//! losses in ten minutes with a 150 ms timeout). Corosync runs real time for the
//! same reason; a negative nice value keeps the agent well ahead of ordinary work
//! without letting a busy agent starve the machine.
//!
//! Linux keeps the nice value per thread, and threads inherit it: the value is
//! set once on the main thread before the runtime's threads exist. The
//! application and checker commands the agent runs get back the value the agent
//! started with, so that Tandem never favours the application over the rest of
//! the machine.

use std::sync::atomic::{AtomicI32, Ordering};

/// The nice value the agent started with; `i32::MIN` until [`favour`] ran.
static STARTED_WITH: AtomicI32 = AtomicI32::new(i32::MIN);

/// Sets this thread's (and its future threads') nice value to `nice`, and
/// remembers the previous one for [`restore_in_child`].
pub fn favour(nice: i32) -> std::io::Result<()> {
    let before = current()?;
    STARTED_WITH.store(before, Ordering::Relaxed);
    // SAFETY: setpriority only reads its integer arguments; `0` names the
    // calling thread.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// This thread's nice value.
pub fn current() -> std::io::Result<i32> {
    // getpriority can return -1 as a value: errno tells an error apart.
    // SAFETY: errno is thread-local; writing it and calling getpriority with
    // integer arguments touches no other memory.
    unsafe {
        *libc::__errno_location() = 0;
        let v = libc::getpriority(libc::PRIO_PROCESS, 0);
        if v == -1 && *libc::__errno_location() != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(v)
    }
}

/// Makes `cmd`'s process run at the nice value the agent started with.
pub fn restore_in_child(cmd: &mut tokio::process::Command) {
    let nice = STARTED_WITH.load(Ordering::Relaxed);
    if nice == i32::MIN {
        return;
    }
    // SAFETY: the closure runs in the forked child before exec and makes one
    // async-signal-safe system call with integer arguments; it touches no memory
    // of the parent.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setpriority(libc::PRIO_PROCESS, 0, nice) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn children_get_the_starting_value_back() {
        // In a thread of its own, since the value is per thread.
        let handle = std::thread::spawn(|| {
            let before = current().expect("getpriority");
            // Raising the value needs no privilege, so this test runs anywhere.
            let favoured = (before + 2).min(19);
            favour(favoured).expect("setpriority");
            assert_eq!(current().expect("getpriority"), favoured);
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            let child_nice = rt.block_on(async {
                let mut cmd = tokio::process::Command::new("/bin/sh");
                cmd.args(["-c", "cut -d' ' -f19 /proc/self/stat"]);
                restore_in_child(&mut cmd);
                let out = cmd.output().await.expect("sh");
                String::from_utf8_lossy(&out.stdout).trim().to_string()
            });
            (before, child_nice)
        });
        let (before, child_nice) = handle.join().expect("thread");
        assert_eq!(child_nice, before.to_string());
    }
}
