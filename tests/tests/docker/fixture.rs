//! Docker fixtures that clean up after themselves: a tiny image imported from host
//! binaries (no registry is needed), named containers, and a temporary runtime entry
//! in `/etc/docker/daemon.json`.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::{Duration, Instant},
};

use serde_json::{Value, json};

const DAEMON_JSON: &str = "/etc/docker/daemon.json";
const DOCKERD_PID: &str = "/var/run/docker.pid";

/// A name unique to this test process and call.
pub(crate) fn unique(kind: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "tandem-{kind}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Runs `docker ARGS`.
pub(crate) fn docker(args: &[&str]) -> Output {
    Command::new("docker")
        .args(args)
        .output()
        .expect("run the docker client")
}

/// `docker ARGS`, which must succeed; returns its trimmed stdout.
pub(crate) fn docker_ok(args: &[&str]) -> String {
    let out = docker(args);
    assert!(
        out.status.success(),
        "docker {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The daemon's major version (20 for 20.10.24).
pub(crate) fn server_major() -> u32 {
    let v = docker_ok(&["version", "--format", "{{.Server.Version}}"]);
    v.split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .expect("server version")
}

/// An image holding `/bin/sh`, coreutils' `dd`, `date` and `sleep`, util-linux's
/// `unshare`, the tests' `barrier-probe` and the shared libraries they need, imported from a tarball. Removed on drop.
pub(crate) struct Image {
    pub(crate) tag: String,
}

impl Image {
    pub(crate) fn build() -> Self {
        let tag = format!("{}:latest", unique("barrier-img"));
        let root = tempfile::tempdir().expect("image root");
        for bin in [
            "/bin/sh",
            "/bin/dd",
            "/bin/date",
            "/bin/sleep",
            "/usr/bin/unshare",
        ] {
            copy_into(root.path(), Path::new(bin));
            copy_libs(root.path(), Path::new(bin));
        }
        let probe = Path::new(env!("CARGO_BIN_EXE_barrier-probe"));
        let in_image = root.path().join("bin/barrier-probe");
        fs::copy(probe, &in_image).expect("copy barrier-probe");
        copy_libs(root.path(), probe);
        fs::create_dir_all(root.path().join("data")).expect("mkdir data");
        let image = Self { tag };
        let mut tar = Command::new("tar")
            .arg("-C")
            .arg(root.path())
            .args(["-c", "."])
            .stdout(Stdio::piped())
            .spawn()
            .expect("tar");
        let stdin = tar.stdout.take().expect("tar stdout");
        let import = Command::new("docker")
            .args(["import", "-", &image.tag])
            .stdin(stdin)
            .output()
            .expect("docker import");
        assert!(tar.wait().expect("tar").success());
        assert!(
            import.status.success(),
            "docker import: {}",
            String::from_utf8_lossy(&import.stderr)
        );
        image
    }
}

impl Drop for Image {
    fn drop(&mut self) {
        let _ = docker(&["rmi", "-f", &self.tag]);
    }
}

/// Copies the shared libraries `ldd` lists for `bin` to the same paths under `root`.
fn copy_libs(root: &Path, bin: &Path) {
    let ldd = Command::new("ldd").arg(bin).output().expect("ldd");
    for lib in String::from_utf8_lossy(&ldd.stdout)
        .split_whitespace()
        .filter(|w| w.starts_with('/'))
    {
        copy_into(root, Path::new(lib));
    }
}

fn copy_into(root: &Path, file: &Path) {
    let rel = file.strip_prefix("/").expect("absolute path");
    let to = root.join(rel);
    fs::create_dir_all(to.parent().expect("parent")).expect("mkdir");
    // Follow symlinks: the image gets the file under the name the loader asks for.
    fs::copy(file, &to).unwrap_or_else(|e| panic!("copy {}: {e}", file.display()));
}

/// A container name that is force-removed on drop, whatever state it is in.
pub(crate) struct ContainerName(pub(crate) String);

impl ContainerName {
    pub(crate) fn new() -> Self {
        Self::of_kind("barrier-ctr")
    }

    /// A name `tandem-KIND-PID-N`, so that each test's containers are recognisable.
    pub(crate) fn of_kind(kind: &str) -> Self {
        Self(unique(kind))
    }
}

impl Drop for ContainerName {
    fn drop(&mut self) {
        let _ = docker(&["rm", "-f", &self.0]);
    }
}

/// An extra Docker runtime, registered for the lifetime of this value by adding it
/// to `daemon.json` and asking dockerd to reload (SIGHUP; Docker reloads its
/// `runtimes` without a restart). Drop puts the file back byte for byte and makes
/// the daemon forget the runtime again.
pub(crate) struct Runtime {
    pub(crate) name: String,
    original: Option<Vec<u8>>,
}

impl Runtime {
    pub(crate) fn register(program: &Path, args: &[&str]) -> Self {
        Self::register_as(&unique("runtime"), program, args)
    }

    /// [`Runtime::register`] under a name of the caller's choice (which must be
    /// unique to the test).
    pub(crate) fn register_as(name: &str, program: &Path, args: &[&str]) -> Self {
        let name = name.to_owned();
        let original = fs::read(DAEMON_JSON).ok();
        let runtime = Self {
            name: name.clone(),
            original,
        };
        let mut config = runtime.original_config();
        let runtimes = config
            .as_object_mut()
            .expect("daemon.json is an object")
            .entry("runtimes")
            .or_insert_with(|| json!({}));
        runtimes[&name] = json!({"path": program, "runtimeArgs": args});
        write_config(&config);
        assert!(
            reload_until(|rts| rts.contains(&format!("\"{name}\""))),
            "dockerd did not register the test runtime"
        );
        runtime
    }

    fn original_config(&self) -> Value {
        match &self.original {
            Some(bytes) => serde_json::from_slice(bytes).expect("daemon.json is JSON"),
            None => json!({}),
        }
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        // Docker only replaces its runtimes on reload if the file sets the key; an
        // explicit (original or empty) set makes it drop ours, then the original
        // bytes go back.
        let mut config = self.original_config();
        if let Some(obj) = config.as_object_mut() {
            obj.entry("runtimes").or_insert_with(|| json!({}));
        }
        write_config(&config);
        let name = self.name.clone();
        let _ = reload_until(move |rts| !rts.contains(&format!("\"{name}\"")));
        match &self.original {
            Some(bytes) => {
                let _ = fs::write(DAEMON_JSON, bytes);
            }
            None => {
                let _ = fs::remove_file(DAEMON_JSON);
            }
        }
    }
}

fn write_config(config: &Value) {
    let text = serde_json::to_vec_pretty(config).expect("serialise");
    fs::write(DAEMON_JSON, text).expect("write daemon.json");
}

/// Sends dockerd SIGHUP until `done(runtimes JSON)` holds (10 s at most); returns
/// whether it did.
fn reload_until(done: impl Fn(&str) -> bool) -> bool {
    let pid: i32 = fs::read_to_string(DOCKERD_PID)
        .expect("dockerd pid file")
        .trim()
        .parse()
        .expect("dockerd pid");
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        // SIGHUP is dockerd's documented "reload daemon.json"; it stops nothing.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGHUP,
        );
        thread::sleep(Duration::from_millis(300));
        let rts = docker(&["info", "--format", "{{json .Runtimes}}"]);
        if done(&String::from_utf8_lossy(&rts.stdout)) {
            return true;
        }
        if Instant::now() > end {
            eprintln!("dockerd did not pick up the runtime change in time");
            return false;
        }
    }
}

/// The OCI runtime wrapper: `tandem oci-runtime` of the binary under test.
pub(crate) fn wrapper_binary() -> PathBuf {
    tandem_tests::lab::tandem_bin()
}
