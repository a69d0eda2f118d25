//! The agent's side of the barrier tests: a control socket in a temporary
//! directory, the re-executed child process, and what it printed.

use std::{
    collections::HashMap,
    env,
    io::{BufRead, BufReader},
    os::unix::net::UnixListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use super::{CHILD_ENV, CHILD_TEST, DIR_ENV, SOCKET_ENV, STAGE_ENV};
use crate::barrier::{ListenerConfig, Registrar, handle_connection};

/// A temporary directory with the agent's control socket, removed on drop.
pub(super) struct Agent {
    pub(super) dir: tempfile::TempDir,
    pub(super) socket: PathBuf,
    pub(super) server: UnixListener,
}

/// The child process; killed (by its own pid) if the test fails first.
pub(super) struct ChildGuard(Child);

/// What the child printed: `RESULT name a b c` lines and `INFO` lines.
#[derive(Debug, Default)]
pub(super) struct Output {
    results: HashMap<String, (i64, i64, u64)>,
    pub(super) info: Vec<String>,
    /// Everything, for failure messages.
    lines: Vec<String>,
}

impl Agent {
    pub(super) fn new(base: &Path) -> Self {
        let dir = tempfile::tempdir_in(base).expect("tempdir");
        let socket = dir.path().join("ctl.sock");
        let server = UnixListener::bind(&socket).expect("bind");
        Self {
            dir,
            socket,
            server,
        }
    }

    /// Serves one attach on a thread, registering with `registrar`.
    pub(super) fn serve_one(&self, registrar: Registrar) -> thread::JoinHandle<u32> {
        let server = self.server.try_clone().expect("clone listener");
        thread::spawn(move || {
            let (stream, _) = server.accept().expect("accept");
            handle_connection(&stream, &registrar).expect("attach")
        })
    }

    pub(super) fn spawn(&self, scenario: &str) -> ChildGuard {
        let child = Command::new(env::current_exe().expect("current_exe"))
            .args(["--exact", CHILD_TEST, "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, scenario)
            .env(SOCKET_ENV, &self.socket)
            .env(DIR_ENV, self.dir.path())
            .env_remove(STAGE_ENV)
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn child");
        ChildGuard(child)
    }
}

impl ChildGuard {
    /// Waits for the child to exit successfully and parses what it printed.
    pub(super) fn finish(mut self, limit: Duration) -> Output {
        let stdout = self.0.stdout.take().expect("stdout");
        let reader = thread::spawn(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .collect::<Vec<_>>()
        });
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(s) = self.0.try_wait().expect("try_wait") {
                break s;
            }
            assert!(
                Instant::now() < deadline,
                "child still running after {limit:?}"
            );
            thread::sleep(Duration::from_millis(10));
        };
        let lines = reader.join().expect("reader");
        assert!(
            status.success(),
            "child failed: {status}; output: {lines:#?}"
        );
        let mut out = Output {
            lines: lines.clone(),
            ..Output::default()
        };
        for line in lines {
            // libtest's "test ... " prefix can share a line with our first output.
            let Some(start) = ["RESULT ", "INFO "]
                .iter()
                .filter_map(|m| line.find(m))
                .min()
            else {
                continue;
            };
            let line = &line[start..];
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                ["RESULT", name, a, b, c] => {
                    let parsed = (
                        a.parse().expect("a"),
                        b.parse().expect("b"),
                        c.parse().expect("c"),
                    );
                    out.results.insert((*name).to_owned(), parsed);
                }
                ["INFO", ..] => out.info.push(line.to_owned()),
                _ => {}
            }
        }
        out
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

impl Output {
    pub(super) fn result(&self, name: &str) -> (i64, i64, Duration) {
        let (ret, errno, ns) = *self
            .results
            .get(name)
            .unwrap_or_else(|| panic!("no result {name} in {:#?}", self.lines));
        (ret, errno, Duration::from_nanos(ns))
    }
}

pub(super) fn config(release_after: Duration) -> ListenerConfig {
    ListenerConfig {
        release_after,
        shutdown_grace: Duration::from_secs(5),
    }
}
