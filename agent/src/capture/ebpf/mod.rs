//! Loads Tandem's kernel-side capture programs (`agent-ebpf/src/bpf/capture.bpf.c`)
//! with aya, feeds them the watched trees, and reads the changes they report.
//!
//! The kernel side reports into one ring buffer; data events do not wake a
//! sleeping consumer (that costs more than the event itself at high rates), so the
//! owner must call [`Probes::drain`] on a short timer (a millisecond or a few) as
//! well as when [`Probes::ring_fd`] polls readable, which durability points force.

use std::{
    io,
    os::fd::{AsFd, BorrowedFd},
    path::Path,
};

use agent_common::abi::{self, Event, Key, PathEvent};
use aya::{
    Btf, Ebpf, EbpfLoader,
    maps::{Array, HashMap, MapData, MapError, PerCpuArray, RingBuf},
    programs::{BtfTracePoint, ProgramError, TracePoint, trace_point::TracePointError},
};
use nix::{errno::Errno, mount::MsFlags};

/// Syscalls with a `sys_enter_<name>` program of the same name in the object.
/// pwrite64 and pwritev have none: their exit reads the arguments it needs from
/// the registers saved at syscall entry, which saves an enter program on every
/// call (see "the hot path" in capture.bpf.c).
const OWN_EXIT_ENTERS: &[&str] = &["write", "writev", "pwritev2", "truncate"];

/// (program, syscalls) pairs for the exits of the write system calls, which have
/// their own programs because they run on every write on the machine.
const WRITE_EXITS: &[(&str, &[&str])] = &[
    ("sys_exit_write", &["write", "writev"]),
    ("sys_exit_pwrite", &["pwrite64", "pwritev"]),
    ("sys_exit_pwritev2", &["pwritev2"]),
];

/// Syscalls whose exit is handled by the shared `sys_exit_file` program: every
/// syscall above whose enter stashes per-thread state, except the write system
/// calls (above) and truncate(2), which has its own exit because it reports a path.
const FILE_EXIT_SYSCALLS: &[&str] = &[
    "ftruncate",
    "fallocate",
    "copy_file_range",
    "splice",
    "sendfile64",
    "fsync",
    "fdatasync",
    "sync_file_range",
    "syncfs",
    "mmap",
    "msync",
    "munmap",
    "open",
    "openat",
    "openat2",
    "creat",
];

/// Syscalls that can move a subtree or recycle a dentry: their successful exit
/// invalidates the kernel-side verdict cache.
const NAMESPACE_EXIT_SYSCALLS: &[&str] = &[
    "rename",
    "renameat",
    "renameat2",
    "rmdir",
    "unlink",
    "unlinkat",
    "link",
    "linkat",
];

/// (program, BTF tracepoint) pairs.
const BTF_PROGRAMS: &[(&str, &str)] = &[
    ("uring_submit", "io_uring_submit_req"),
    ("uring_complete", "io_uring_complete"),
    ("dirty_folio", "writeback_dirty_folio"),
];

const PROG_EXIT_FILE: &str = "sys_exit_file";
const PROG_EXIT_NAMESPACE: &str = "sys_exit_namespace";
const PROG_EXIT_TRUNCATE: &str = "sys_exit_truncate";
const PROG_EXIT_SYNC: &str = "sys_exit_sync";
const SYSCALLS: &str = "syscalls";
const TRACEFS: &str = "/sys/kernel/tracing";
const DEBUGFS_TRACING: &str = "/sys/kernel/debug/tracing";

const MAP_EVENTS: &str = "EVENTS";
const MAP_WATCHED: &str = "WATCHED";
const MAP_EXCLUDED: &str = "EXCLUDED";
const MAP_CAPTURED_TIDS: &str = "CAPTURED_TIDS";
const MAP_GEN: &str = "GEN";
const MAP_STATS: &str = "STATS";
const MAP_LOST: &str = "LOST";

/// What user space adds to GEN when it invalidates verdicts. The kernel side adds
/// 1 with an atomic add that a read-modify-write from here could race with; adding
/// a step far larger than any number of kernel bumps between our read and our
/// write still moves the generation to a value never used before, which is all
/// that invalidation needs.
const USER_GEN_STEP: u64 = 1 << 32;

/// Why the capture probes cannot be loaded or driven.
#[derive(Debug, thiserror::Error)]
pub enum EbpfError {
    #[error(
        "the eBPF object is empty: this tandem was built with TANDEM_BPF_SKIP=1 and cannot \
         capture; rebuild it with clang and libbpf-dev installed"
    )]
    EmptyObject,
    #[error("loading eBPF programs needs root (CAP_BPF and CAP_PERFMON)")]
    NotPermitted,
    #[error("cannot read the kernel's BTF (/sys/kernel/btf/vmlinux; needs CONFIG_DEBUG_INFO_BTF)")]
    Btf(#[source] aya::BtfError),
    #[error("cannot load the eBPF object")]
    Object(#[source] Box<aya::EbpfError>),
    #[error("tracefs is not mounted at /sys/kernel/tracing and mounting it failed")]
    Tracefs {
        #[source]
        source: io::Error,
    },
    #[error("the eBPF object has no program {name}")]
    MissingProgram { name: String },
    #[error("the eBPF object has no map {name}")]
    MissingMap { name: &'static str },
    #[error("the kernel has no tracepoint {tracepoint}, which capture needs")]
    MissingTracepoint { tracepoint: String },
    #[error("the kernel refused eBPF program {program}: {reason}")]
    Verifier { program: String, reason: String },
    #[error("cannot load eBPF program {program}")]
    Load {
        program: String,
        #[source]
        source: Box<ProgramError>,
    },
    #[error("cannot attach eBPF program {program} to {tracepoint}")]
    Attach {
        program: String,
        tracepoint: String,
        #[source]
        source: Box<ProgramError>,
    },
    #[error("eBPF map {map} failed")]
    Map {
        map: &'static str,
        #[source]
        source: Box<MapError>,
    },
}

/// One record read from the ring buffer.
#[derive(Clone, Debug)]
pub enum Record {
    Event(Event),
    /// Boxed: a truncate(2) by path is rare and six times the size of an event.
    Path(Box<PathEvent>),
}

/// Kernel-side counters, summed over CPUs.
#[derive(Clone, Copy, Debug, Default, Eq, PartialEq)]
pub struct Stats {
    /// Events written to the ring buffer.
    pub emitted: u64,
    /// Events lost because the ring buffer was full; their files are in LOST.
    pub dropped: u64,
    /// Changes to files outside the watched trees.
    pub filtered: u64,
    /// Filter verdicts answered by the verdict cache.
    pub cache_hits: u64,
}

/// Verifier figures for one loaded program.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct ProgramStats {
    pub name: String,
    pub verified_insns: u32,
    pub translated_bytes: u32,
}

/// The loaded and attached capture programs and the maps user space drives.
///
/// Dropping it detaches every program.
pub struct Probes {
    ring: RingBuf<MapData>,
    watched: HashMap<MapData, Key, u32>,
    excluded: HashMap<MapData, u32, u32>,
    captured_tids: HashMap<MapData, u32, u32>,
    generation: Array<MapData, u64>,
    stats: PerCpuArray<MapData, u64>,
    lost: HashMap<MapData, Key, u32>,
    // Owns the programs and their links: kept last so that it is dropped (and the
    // programs detached) after the maps above are released.
    ebpf_obj: Ebpf,
}

// === impl Probes ===

impl Probes {
    /// Loads the capture object and attaches every program.
    pub fn load() -> Result<Self, EbpfError> {
        if agent_ebpf::CAPTURE_OBJ.is_empty() {
            return Err(EbpfError::EmptyObject);
        }
        ensure_tracefs()?;
        let btf = Btf::from_sys_fs().map_err(EbpfError::Btf)?;
        let mut ebpf = EbpfLoader::new()
            .btf(Some(&btf))
            .load(agent_ebpf::CAPTURE_OBJ)
            .map_err(object_error)?;

        // Exits first: an enter whose exit is not attached yet would leave a stash
        // behind (harmless, the exit checks the syscall number, but pointless).
        for (program, syscalls) in WRITE_EXITS {
            attach_tracepoint(&mut ebpf, program, syscalls, "sys_exit_")?;
        }
        attach_tracepoint(&mut ebpf, PROG_EXIT_FILE, FILE_EXIT_SYSCALLS, "sys_exit_")?;
        attach_tracepoint(
            &mut ebpf,
            PROG_EXIT_NAMESPACE,
            NAMESPACE_EXIT_SYSCALLS,
            "sys_exit_",
        )?;
        attach_tracepoint(&mut ebpf, PROG_EXIT_TRUNCATE, &["truncate"], "sys_exit_")?;
        attach_tracepoint(&mut ebpf, PROG_EXIT_SYNC, &["sync"], "sys_exit_")?;
        // Every syscall of the shared exit stashes at its enter, as do the write
        // system calls and truncate(2), which have exits of their own.
        for syscall in OWN_EXIT_ENTERS.iter().chain(FILE_EXIT_SYSCALLS) {
            let program = format!("sys_enter_{syscall}");
            attach_tracepoint(&mut ebpf, &program, &[syscall], "sys_enter_")?;
        }
        for (program, tracepoint) in BTF_PROGRAMS {
            attach_btf(&mut ebpf, &btf, program, tracepoint)?;
        }

        Ok(Self {
            ring: RingBuf::try_from(take_map(&mut ebpf, MAP_EVENTS)?)
                .map_err(map_err(MAP_EVENTS))?,
            watched: HashMap::try_from(take_map(&mut ebpf, MAP_WATCHED)?)
                .map_err(map_err(MAP_WATCHED))?,
            excluded: HashMap::try_from(take_map(&mut ebpf, MAP_EXCLUDED)?)
                .map_err(map_err(MAP_EXCLUDED))?,
            captured_tids: HashMap::try_from(take_map(&mut ebpf, MAP_CAPTURED_TIDS)?)
                .map_err(map_err(MAP_CAPTURED_TIDS))?,
            generation: Array::try_from(take_map(&mut ebpf, MAP_GEN)?).map_err(map_err(MAP_GEN))?,
            stats: PerCpuArray::try_from(take_map(&mut ebpf, MAP_STATS)?)
                .map_err(map_err(MAP_STATS))?,
            lost: HashMap::try_from(take_map(&mut ebpf, MAP_LOST)?).map_err(map_err(MAP_LOST))?,
            ebpf_obj: ebpf,
        })
    }

    /// Reports changes under the directory (or to the file) `key`, with `tag`.
    ///
    /// Takes effect for files whose verdict is cached only after
    /// [`Probes::invalidate_verdicts`], which this does.
    pub fn watch(&mut self, key: Key, tag: u32) -> Result<(), EbpfError> {
        self.watched
            .insert(key, tag, 0)
            .map_err(map_err(MAP_WATCHED))?;
        self.invalidate_verdicts()
    }

    /// Stops reporting changes under `key`; a key not watched is not an error.
    pub fn unwatch(&mut self, key: Key) -> Result<(), EbpfError> {
        match self.watched.remove(&key) {
            Ok(()) | Err(MapError::KeyNotFound) => {}
            Err(e) => return Err(map_err(MAP_WATCHED)(e)),
        }
        self.invalidate_verdicts()
    }

    /// Stops reporting writes made by the process `tgid` (the agent's own applier).
    pub fn exclude_tgid(&mut self, tgid: u32) -> Result<(), EbpfError> {
        self.excluded
            .insert(tgid, 1, 0)
            .map_err(map_err(MAP_EXCLUDED))
    }

    /// Reports the writes of thread `tid` although its process is excluded: the
    /// barrier's proxy thread writes for applications (see `barrier::proxy`).
    pub fn capture_thread(&mut self, tid: u32) -> Result<(), EbpfError> {
        self.captured_tids
            .insert(tid, 1, 0)
            .map_err(map_err(MAP_CAPTURED_TIDS))
    }

    /// Makes every cached filter verdict stale, so that the next change to each
    /// file walks its ancestors again.
    pub fn invalidate_verdicts(&mut self) -> Result<(), EbpfError> {
        let current = self.generation.get(&0, 0).map_err(map_err(MAP_GEN))?;
        self.generation
            .set(0, current.wrapping_add(USER_GEN_STEP), 0)
            .map_err(map_err(MAP_GEN))
    }

    /// The ring buffer's fd: readable when a durability point is waiting (data
    /// events alone do not make it readable; drain on a timer too).
    pub fn ring_fd(&self) -> BorrowedFd<'_> {
        self.ring.as_fd()
    }

    /// Hands every record in the ring buffer to `f`, without blocking; returns how
    /// many there were. Records too short to decode are skipped (they cannot come
    /// from the matching kernel object).
    pub fn drain(&mut self, mut f: impl FnMut(Record)) -> usize {
        let mut n = 0;
        while let Some(item) = self.ring.next() {
            if let Some(record) = decode(&item) {
                f(record);
                n += 1;
            }
        }
        n
    }

    /// The kernel-side counters, summed over CPUs.
    pub fn stats(&self) -> Result<Stats, EbpfError> {
        let sum = |idx: u32| -> Result<u64, EbpfError> {
            let values = self.stats.get(&idx, 0).map_err(map_err(MAP_STATS))?;
            Ok(values.iter().fold(0u64, |a, v| a.wrapping_add(*v)))
        };
        Ok(Stats {
            emitted: sum(abi::STAT_EMITTED)?,
            dropped: sum(abi::STAT_DROPPED)?,
            filtered: sum(abi::STAT_FILTERED)?,
            cache_hits: sum(abi::STAT_CACHE_HIT)?,
        })
    }

    /// For each loaded program: its name, the instructions the verifier processed
    /// and the translated size in bytes (diagnostics for `tandem capture` and tests).
    pub fn program_stats(&self) -> Vec<ProgramStats> {
        self.ebpf_obj
            .programs()
            .filter_map(|(name, program)| {
                let info = program.info().ok()?;
                Some(ProgramStats {
                    name: name.to_owned(),
                    verified_insns: info.verified_instruction_count().unwrap_or(0),
                    translated_bytes: info.size_translated().unwrap_or(0),
                })
            })
            .collect()
    }

    /// Removes and returns the files whose events were lost (ring buffer full):
    /// they must be verified by content. A key of (0, 0) means an event without
    /// a file (truncate by path, flush) was lost: verify everything.
    pub fn take_lost(&mut self) -> Result<Vec<Key>, EbpfError> {
        let keys = self
            .lost
            .keys()
            .collect::<Result<Vec<Key>, MapError>>()
            .map_err(map_err(MAP_LOST))?;
        for key in &keys {
            match self.lost.remove(key) {
                Ok(()) | Err(MapError::KeyNotFound) => {}
                Err(e) => return Err(map_err(MAP_LOST)(e)),
            }
        }
        Ok(keys)
    }
}

/// Decodes one ring-buffer record by its kind.
fn decode(bytes: &[u8]) -> Option<Record> {
    let event = Event::from_bytes(bytes)?;
    if event.kind == abi::EV_TRUNCATE_PATH {
        PathEvent::from_bytes(bytes).map(|p| Record::Path(Box::new(p)))
    } else {
        Some(Record::Event(event))
    }
}

/// aya finds tracepoint ids through tracefs; systemd mounts it at boot, minimal
/// systems (this VM, some containers) do not, so mount it where the kernel
/// documents it rather than refuse to capture.
fn ensure_tracefs() -> Result<(), EbpfError> {
    let events = Path::new(TRACEFS).join("events");
    if events.is_dir() || Path::new(DEBUGFS_TRACING).join("events").is_dir() {
        return Ok(());
    }
    nix::mount::mount(
        Some("tracefs"),
        TRACEFS,
        Some("tracefs"),
        MsFlags::empty(),
        None::<&str>,
    )
    .map_err(|errno| match errno {
        Errno::EPERM | Errno::EACCES => EbpfError::NotPermitted,
        _ => EbpfError::Tracefs {
            source: io::Error::from(errno),
        },
    })
}

fn take_map(ebpf: &mut Ebpf, name: &'static str) -> Result<aya::maps::Map, EbpfError> {
    ebpf.take_map(name).ok_or(EbpfError::MissingMap { name })
}

fn map_err(map: &'static str) -> impl Fn(MapError) -> EbpfError {
    move |source| EbpfError::Map {
        map,
        source: Box::new(source),
    }
}

/// Loads `program` and attaches it to `syscalls/<prefix><name>` for every name.
fn attach_tracepoint(
    ebpf: &mut Ebpf,
    program: &str,
    syscalls: &[&str],
    prefix: &str,
) -> Result<(), EbpfError> {
    let prog: &mut TracePoint = ebpf
        .program_mut(program)
        .ok_or_else(|| EbpfError::MissingProgram {
            name: program.to_owned(),
        })?
        .try_into()
        .map_err(|source| EbpfError::Load {
            program: program.to_owned(),
            source: Box::new(source),
        })?;
    prog.load().map_err(|e| load_error(program, e))?;
    for syscall in syscalls {
        let tracepoint = format!("{prefix}{syscall}");
        prog.attach(SYSCALLS, &tracepoint)
            .map_err(|source| match &source {
                ProgramError::TracePointError(TracePointError::FileError { io_error, .. })
                    if io_error.kind() == io::ErrorKind::NotFound =>
                {
                    EbpfError::MissingTracepoint {
                        tracepoint: format!("{SYSCALLS}/{tracepoint}"),
                    }
                }
                _ if is_eperm_program(&source) => EbpfError::NotPermitted,
                _ => EbpfError::Attach {
                    program: program.to_owned(),
                    tracepoint: format!("{SYSCALLS}/{tracepoint}"),
                    source: Box::new(source),
                },
            })?;
    }
    Ok(())
}

fn attach_btf(
    ebpf: &mut Ebpf,
    btf: &Btf,
    program: &str,
    tracepoint: &str,
) -> Result<(), EbpfError> {
    let prog: &mut BtfTracePoint = ebpf
        .program_mut(program)
        .ok_or_else(|| EbpfError::MissingProgram {
            name: program.to_owned(),
        })?
        .try_into()
        .map_err(|source| EbpfError::Load {
            program: program.to_owned(),
            source: Box::new(source),
        })?;
    prog.load(tracepoint, btf).map_err(|source| match source {
        // The kernel's BTF has no btf_trace_<tracepoint>: the tracepoint is missing.
        ProgramError::Btf(_) => EbpfError::MissingTracepoint {
            tracepoint: tracepoint.to_owned(),
        },
        other => load_error(program, other),
    })?;
    prog.attach().map_err(|source| {
        if is_eperm_program(&source) {
            EbpfError::NotPermitted
        } else {
            EbpfError::Attach {
                program: program.to_owned(),
                tracepoint: tracepoint.to_owned(),
                source: Box::new(source),
            }
        }
    })?;
    Ok(())
}

/// Turns a program load failure into EPERM's operator message or the verifier's
/// last words, which name the problem.
fn load_error(program: &str, source: ProgramError) -> EbpfError {
    if is_eperm_program(&source) {
        return EbpfError::NotPermitted;
    }
    if let ProgramError::LoadError { verifier_log, .. } = &source {
        let log = verifier_log.to_string();
        tracing::debug!(program, log = %log, "The verifier refused an eBPF program.");
        // The last lines are statistics; the reason is just above them.
        let reason: Vec<&str> = log
            .lines()
            .map(str::trim)
            .filter(|l| {
                !l.is_empty() && !l.starts_with("verification time") && !l.starts_with("processed")
            })
            .rev()
            .take(2)
            .collect();
        if !reason.is_empty() {
            let reason = reason.into_iter().rev().collect::<Vec<_>>().join(" / ");
            return EbpfError::Verifier {
                program: program.to_owned(),
                reason,
            };
        }
    }
    EbpfError::Load {
        program: program.to_owned(),
        source: Box::new(source),
    }
}

fn is_eperm(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::EPERM)
}

fn is_eperm_program(e: &ProgramError) -> bool {
    match e {
        ProgramError::LoadError { io_error, .. } => is_eperm(io_error),
        ProgramError::SyscallError(s) => is_eperm(&s.io_error),
        ProgramError::IOError(io_error) => is_eperm(io_error),
        _ => false,
    }
}

/// Map creation happens when the object is loaded: that is where a process
/// without CAP_BPF first fails.
fn object_error(e: aya::EbpfError) -> EbpfError {
    match &e {
        aya::EbpfError::MapError(MapError::CreateError { io_error, .. }) if is_eperm(io_error) => {
            EbpfError::NotPermitted
        }
        _ => EbpfError::Object(Box::new(e)),
    }
}

#[cfg(test)]
mod tests;
