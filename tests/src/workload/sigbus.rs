//! Stores through a shared mapping that another worker's truncate cut short.
//!
//! Workers share files (through `shared/`, hard links and moves between subtrees),
//! so a file one worker has mapped can be truncated by another while the stores
//! run. The kernel answers a store past the new end of file with SIGBUS, which
//! killed the worker process and failed the oracle run for a reason that had
//! nothing to do with capture. A store there has no effect on the file in any
//! case (the pages past the end are gone), so the handler below replaces the
//! faulting page of a registered mapping with an anonymous one and lets the store
//! complete there; a SIGBUS anywhere else keeps its default action.

use std::sync::{
    Once,
    atomic::{AtomicUsize, Ordering},
};

/// More than any run has workers (threads of one process store at once).
const SLOTS: usize = 64;

/// A slot being filled in.
const RESERVED: usize = usize::MAX;

/// Start addresses of the mappings being stored through (0: a free slot).
static STARTS: [AtomicUsize; SLOTS] = [const { AtomicUsize::new(0) }; SLOTS];
/// Their lengths, valid while the slot's start is set.
static LENS: [AtomicUsize; SLOTS] = [const { AtomicUsize::new(0) }; SLOTS];
static PAGE: AtomicUsize = AtomicUsize::new(4096);
static INSTALL: Once = Once::new();

/// A mapping registered with the handler until dropped (drop it before `munmap`).
pub(super) struct Guard(Option<usize>);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(i) = self.0 {
            STARTS[i].store(0, Ordering::SeqCst);
        }
    }
}

/// Registers `[addr, addr + len)` so that a SIGBUS there is absorbed. With every
/// slot taken the mapping is not registered, and a SIGBUS in it kills the process
/// as before.
pub(super) fn register(addr: usize, len: usize) -> Guard {
    install();
    for i in 0..SLOTS {
        // Reserve the slot first (RESERVED matches no address), then set the
        // length, then the start: the handler never sees a start with a stale
        // length.
        if STARTS[i]
            .compare_exchange(0, RESERVED, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            LENS[i].store(len, Ordering::SeqCst);
            STARTS[i].store(addr, Ordering::SeqCst);
            return Guard(Some(i));
        }
    }
    Guard(None)
}

fn install() {
    INSTALL.call_once(|| {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        if let Ok(p) = usize::try_from(page)
            && p.is_power_of_two()
        {
            PAGE.store(p, Ordering::SeqCst);
        }
        // SAFETY: a zeroed sigaction is a valid empty one; the handler has the
        // SA_SIGINFO signature and only touches atomics and calls mmap and signal.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_sigbus as *const () as usize;
            sa.sa_flags = libc::SA_SIGINFO;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(libc::SIGBUS, &sa, std::ptr::null_mut());
        }
    });
}

extern "C" fn on_sigbus(_sig: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler.
    let addr = unsafe { (*info).si_addr() } as usize;
    let page = PAGE.load(Ordering::SeqCst);
    let ours = (0..SLOTS).any(|i| {
        let start = STARTS[i].load(Ordering::SeqCst);
        start != 0
            && start != RESERVED
            && addr >= start
            && addr - start < LENS[i].load(Ordering::SeqCst)
    });
    if ours {
        // SAFETY: the page lies inside a mapping this process made and still holds
        // (registered until just before its munmap); MAP_FIXED replaces that one
        // page with anonymous memory, which the later munmap of the whole range
        // removes too.
        let r = unsafe {
            libc::mmap(
                (addr & !(page - 1)) as *mut libc::c_void,
                page,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                -1,
                0,
            )
        };
        if r != libc::MAP_FAILED {
            return;
        }
    }
    // Not ours (or not repairable): the default action, when the store faults again.
    // SAFETY: signal is async-signal-safe.
    unsafe { libc::signal(libc::SIGBUS, libc::SIG_DFL) };
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;

    #[test]
    fn a_store_past_a_cut_end_of_file_is_absorbed() {
        let f = tempfile::tempfile().expect("temp file");
        f.set_len(8192).expect("set_len");
        // SAFETY: a fresh shared mapping of an open file, aliasing no Rust object.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                8192,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                f.as_raw_fd(),
                0,
            )
        };
        assert_ne!(addr, libc::MAP_FAILED);
        let guard = super::register(addr as usize, 8192);
        f.set_len(0).expect("truncate");
        // SAFETY: inside the mapping; the page past the end faults with SIGBUS,
        // which the registered guard absorbs.
        unsafe { addr.cast::<u8>().add(5000).write_volatile(7) };
        drop(guard);
        // SAFETY: exactly the mapping made above.
        assert_eq!(unsafe { libc::munmap(addr, 8192) }, 0);
        assert_eq!(f.metadata().expect("metadata").len(), 0);
    }
}
